"""The README's "Reliability" table: each fault case, what certsync does, and the tests proving it.

Render it with `python3 -m tests.e2e.reliability`; tests/test_readme.py checks that README.md
holds exactly this table between the markers and that every test named here exists.
"""

from __future__ import annotations

from typing import NamedTuple

from scripts.readme_tables import block, markdown_table

START_MARKER = "<!-- reliability:start -->"
END_MARKER = "<!-- reliability:end -->"
TEST_FILES = (
    "tests/e2e/test_faults.py",
    "tests/e2e/test_deploy.py",
    "tests/e2e/test_starting_states.py",
    "tests/e2e/test_alerts.py",
    "tests/e2e/test_metrics.py",
    "tests/e2e/test_hostile.py",
    "tests/e2e/test_rollout.py",
    "tests/e2e/test_sudo.py",
    "tests/unit/test_transaction.py",
    "tests/unit/test_parity.py",
    "tests/unit/test_wire.py",
    "tests/e2e/test_dane.py",
    "tests/unit/test_dane.py",
    "tests/e2e/test_crash.py",
    "tests/unit/test_layout.py",
    "tests/unit/test_records.py",
    "tests/unit/test_rules.py",
    "tests/unit/test_plan.py",
    "tests/unit/test_tlsa.py",
    "tests/unit/test_stateschema.py",
    "tests/unit/test_state.py",
    "tests/unit/test_faults.py",
    "tests/unit/test_boot.py",
    "tests/unit/test_appdir.py",
    "tests/unit/test_files.py",
    "tests/unit/test_rollout_gate.py",
    "tests/e2e/test_propagation.py",
)


class Row(NamedTuple):
    case: str
    behaviour: str
    tests: tuple[str, ...]


ROWS: tuple[Row, ...] = (
    Row(
        "mox has what it had before certsync: a self-signed placeholder made at setup (newer than"
        " Caddy's certificate), an expired certificate, one for other names, a file that does"
        " not parse",
        "replaced by Caddy's pair; the preview says what it replaces. Only a certificate that"
        " certsync installed, still valid now, for the name, with a matching key, is kept from a"
        " downgrade (the mox user can put any other there, one of a CA of its own too)",
        ("test_first_sync_replaces_whatever_mox_had_and_says_what",),
    ),
    Row(
        "A wildcard name (`*.example.com`); names that do not resolve; `certsync_verify_address`"
        " unset",
        "mox's files are `wildcard_.example.com.crt`/`.key`; the check after the restart"
        " connects to the addresses of mox.conf's listeners for those files (loopback for"
        " 0.0.0.0 and ::), with a name under the wildcard as SNI",
        ("test_wildcard_name_is_synced_and_checked_on_mox_listeners",),
    ),
    Row(
        "mox's files equal Caddy's, but mox serves another certificate (files copied by hand, a"
        " sync killed before its restart)",
        "the state read sees what mox serves: planned and shown as a restart, then checked like"
        " an install; no backup (nothing installed)",
        (
            "test_files_equal_but_mox_serving_another_certificate_is_restarted",
            "test_mox_serving_another_certificate_than_its_files_is_restarted",
        ),
    ),
    Row(
        "mox's files are symlinks (into Caddy's storage), or one of the pair is missing",
        "replaced by certsync's links into a generation folder; a rollback puts back exactly"
        " the links that were there (with their targets); a pair missing its key is not put back"
        " (mox could not start with it): Caddy's stays, exit 4; when a restore cannot be done:"
        ' exit 4, never "restored"',
        (
            "test_rollback_puts_back_exactly_what_mox_had",
            "test_a_restore_that_fails_is_never_reported_as_restored",
        ),
    ),
    Row(
        "The `mox` user writes lines into its `.crt` that look like the state's structure",
        "the state is one JSON document printed by the host program: file contents are parsed"
        " as certificates or called unparseable, never read as structure",
        ("test_lines_in_mox_crt_cannot_pass_for_the_state",),
    ),
    Row(
        "The `mox` user swaps a hard link in between the check of its files and the owner and"
        " mode repair",
        "owner and mode are set through the descriptor whose contents were checked, and only on"
        " a file with one link; otherwise Caddy's pair is installed anew by rename",
        ("test_a_hard_link_swapped_in_before_the_repair_is_never_chowned",),
    ),
    Row(
        "The mox binary, or a folder above it, can be written by another user than root",
        "the preview and the run warn that running it as root for `mox config test` trusts that"
        " user (mox's own service does the same): a warning, not a refusal",
        ("test_first_sync_replaces_whatever_mox_had_and_says_what",),
    ),
    Row(
        "The preview and the sync on the same state",
        "one decision in one place: the preview shows the plan the host program makes, with the"
        " same code the sync runs; a test compares the two for every case of this table that a"
        " folder can hold",
        ("test_sync_does_what_state_planned",),
    ),
    Row(
        "Caddy has no certificate for a name, or its data dir does not exist",
        "that name is refused with the reason; the host's other names still sync; exit 1",
        (
            "test_name_missing_from_caddy_is_refused_and_the_others_still_sync",
            "test_missing_caddy_data_dir_is_refused",
        ),
    ),
    Row(
        "Caddy is mid-renewal: new key beside the old certificate, truncated `.crt`, empty `.key`",
        "skipped without touching mox (exit 1); the next run, once the pair is whole, syncs it",
        ("test_incomplete_caddy_pair_is_skipped_and_synced_once_whole",),
    ),
    Row(
        "Expired, not yet valid, expiring within the minimum, wrong name",
        "refused with the reason (dates, names); mox keeps its files; exit 1",
        ("test_invalid_caddy_certificate_is_refused",),
    ),
    Row(
        "Self-signed or unknown CA while `certsync_require_trusted_chain` is on",
        "`openssl verify` on the host against `certsync_trusted_ca_file` (certificates only)"
        ' refuses it: "not trusted"; exit 1',
        ("test_untrusted_chain_is_refused_when_a_trusted_chain_is_required",),
    ),
    Row(
        "Caddy's certificate is older than mox's (a stale issuer folder)",
        "refused: no downgrade; mox is not restarted",
        ("test_older_caddy_certificate_than_mox_is_not_installed",),
    ),
    Row(
        "`mox config test` fails (whatever bytes it prints); mox does not come back; mox serves"
        " another certificate; any unexpected error after the first file changed",
        "backup restored, mox restarted (unless it never was), old certificate served again;"
        ' "rolled back" and the real reason; exit 3 (4 if the restore fails)',
        (
            "test_failed_install_is_rolled_back_and_the_old_certificate_served",
            "test_a_restart_command_that_does_not_split_into_words_rolls_back",
            "test_an_unexpected_error_after_the_install_rolls_back",
        ),
    ),
    Row(
        "Disk full or read-only certificate folder while installing",
        "new files are staged beside the old ones first: the old files stay whole and served,"
        " no staged file (it would hold the new key) is left behind; exit 3",
        ("test_full_or_read_only_cert_folder_keeps_the_old_files",),
    ),
    Row(
        "Two syncs at once (the cron job and a deploy)",
        "a lock (flock) serializes them: the second waits, says so in the log, then finds the"
        " name in sync; one install, one restart",
        (
            "test_a_sync_waits_for_the_lock_and_completes_after_release",
            "test_cron_job_and_deploy_at_once_install_exactly_once",
        ),
    ),
    Row(
        "The SSH connection drops mid-sync",
        "the host program ignores SIGHUP and a closed output: the transaction ends installed"
        " (or rolled back), never half; exit status unchanged",
        ("test_ssh_drop_during_verify_ends_fully_synced",),
    ),
    Row(
        "The host program is killed (SIGKILL: the OOM killer, a power loss) at any step of a"
        " sync with a key change: each file staged or renamed, the generation made, the switch,"
        " before or after `mox config test`, the restart or the check, any step of a rollback,"
        " any step of the first run's move to the layout",
        "mox's `.crt` and `.key` are links into a generation folder (owned by mox before it is"
        " filled) that one rename switches: at every instant they hold a pair that loads (`mox"
        " config test`, openssl); the next run of the cron job (also at boot) converges and"
        " removes staged files (its records' too), unused generations and links",
        (
            "test_a_sync_killed_at_every_step_leaves_a_pair_that_loads_and_the_next_run_converges",
            "test_regular_files_become_links_and_one_rename_switches_both",
            "test_what_a_crash_leaves_is_removed_and_the_pair_in_use_kept",
            "test_half_migrated_files_are_read_through_the_link_that_is_certsyncs",
            "test_a_generation_folder_is_owned_like_its_files_before_it_is_filled",
            "test_staged_records_a_crash_left_are_removed_under_the_lock",
        ),
    ),
    Row(
        "The host program is killed between the switch and mox's restart (mox still serves the"
        " previous pair), and the next run's install fails",
        "the generation switched away from is remembered (`previous.json`, written before the"
        " switch) and kept until a run ends with the name synced; the next run switches back to"
        " it, installs anew and rolls back to it: mox's previous pair, served (exit 3)",
        ("test_a_crash_between_switch_and_restart_keeps_the_previous_pair_to_roll_back_to",),
    ),
    Row(
        "SIGTERM (a shutdown) or SIGINT during a sync, or while it waits for the lock",
        "waiting for the lock or before the switch: `interrupted by SIGTERM; nothing changed`;"
        " after the switch and before the restart: each previous pair switched back (one"
        " rename), `switched back: nothing changed`; after the restart: ends installed or rolled"
        " back. Exit 1, no back-off try counted, no alert, no watcher started",
        (
            "test_sigterm_before_the_switch_changes_nothing_and_backs_nothing_off",
            "test_sigterm_during_the_backup_changes_nothing",
            "test_sigterm_after_the_switch_before_the_restart_switches_back",
            "test_sigterm_after_the_restart_lets_the_sync_finish",
            "test_sigterm_after_a_restart_that_fails_records_no_back_off",
            "test_sigterm_while_waiting_for_the_lock_gives_up_at_once",
            "test_an_interrupted_sync_starts_no_watcher_and_exits_1",
            "test_a_sync_killed_at_every_step_leaves_a_pair_that_loads_and_the_next_run_converges",
        ),
    ),
    Row(
        "The install of one name fails (disk full) before its switch, after another name's",
        "the other name is rolled back; this one is `failed: ...; its files unchanged` (exit 3),"
        " never `restore failed`",
        ("test_a_failed_install_of_a_second_name_says_its_files_are_unchanged",),
    ),
    Row(
        "The host boots: the cron job's `@reboot` run starts while mox is still starting",
        "`sync --boot` waits (60 s at most) for mox to answer on one of its checked ports before"
        " reading the state, so a mox still starting is not judged down",
        (
            "test_the_boot_run_waits_for_mox_to_answer",
            "test_the_boot_wait_is_bounded",
            "test_the_reboot_line_of_the_cron_job_passes_boot",
        ),
    ),
    Row(
        "The mox user points certsync's links (`..<name>.data`, a generation folder) elsewhere",
        "certsync reads only links exactly as it makes them, and never follows one: anything"
        " else is foreign, read as a link and replaced by rename",
        ("test_links_that_are_not_exactly_certsyncs_are_read_as_links_never_followed",),
    ),
    Row(
        "mox is stopped (answers on none of its checked ports) while its files equal Caddy's",
        "never `in sync`: planned and shown as a restart; `mox config test`, restart, check; when"
        " mox's config does not load, nothing is restarted and the run fails with the reason"
        " (exit 3, alerted)",
        (
            "test_mox_stopped_is_restarted_by_the_next_run_and_never_in_sync",
            "test_mox_stopped_that_cannot_start_fails_loudly",
            "test_mox_answering_on_none_of_its_ports_is_a_restart",
        ),
    ),
    Row(
        "A rollback whose previous pair would not load (its key missing, or not the certificate's)",
        'Caddy\'s pair, which mox can start with, is kept; "restore failed" says why (exit 4)',
        ("test_a_rollback_never_restores_a_pair_that_does_not_load",),
    ),
    Row(
        "The check after the restart fails at every run (a verify address that cannot be"
        " reached, a port mox does not serve)",
        "back-off: the cron job tries the same certificate of Caddy's again after 1 h, 4 h, then"
        " daily (one try: its restart and its rollback's); the held runs repeat the failure and"
        " say when the next try is; a deploy, `--force` or a new certificate tries at once",
        ("test_a_check_that_fails_at_every_run_restarts_mox_once_per_back_off_step",),
    ),
    Row(
        "certsync's state folder (`/var/lib/certsync`) writable by another user (mox), or the"
        " backup folder not made yet in a folder another user can write (sticky too), the lock"
        " file replaced, `alerts.json` or another record with wrong contents of any shape",
        "every name refused, naming the folder and who can write it; a replaced lock refused;"
        " records read as empty with a warning, never a traceback (a field an earlier version"
        " did not write is read with its default); records updated under the lock, a lock file"
        " unlinked or replaced while a run waited is taken anew; a run that cannot take the lock"
        " still writes the metrics (`last_run_ok 0`)",
        (
            "test_certsyncs_state_folder_of_another_user_is_refused",
            "test_a_state_folder_another_user_can_write_refuses_every_name",
            "test_a_backup_folder_to_be_made_where_another_user_can_write_refuses_every_name",
            "test_a_replaced_lock_file_is_refused",
            "test_alerts_json_of_a_wrong_shape_reads_as_empty_with_a_warning",
            "test_runs_json_of_the_previous_version_without_held_is_read",
            "test_a_lock_file_replaced_while_a_run_waited_is_not_the_lock_taken",
            "test_a_run_that_cannot_take_the_lock_still_writes_the_metrics",
        ),
    ),
    Row(
        "The cron job stops, a host stops reporting, the served certificate nears its expiry, a"
        " DANE change is held; a scrape gap of 10 minutes",
        "the shipped alerting rules (`certsync/files/certsync.rules.yml`) fire, also when a"
        " host's series go absent for 15 minutes (a gap fires nothing); a DANE hold fires its own"
        ' alert once it lasts a day, never "no success"; checked by `promtool test rules` on'
        " the series the host writes",
        ("test_each_alert_fires_on_the_series_the_host_program_writes_and_only_then",),
    ),
    Row(
        "The state cannot be read on one host: its shell fails (`certsync_python` is missing),"
        " the SSH connection drops, sudo refuses",
        "that host fails with the reason, in the preview and in the run, and nothing changes on"
        " it; the other hosts go on",
        ("test_a_host_whose_state_cannot_be_read_fails_alone_with_the_reason",),
    ),
    Row(
        "A link, or another user's file, at certsync's own paths (host program, `config.json`,"
        " cron file), or a folder above them that another user than root can write (the folder"
        " they are written in, or made in, even when sticky as `/tmp`)",
        "the host fails, naming the path and who else can write it; nothing is written there, and"
        " `--diff` never shows what a link points to",
        (
            "test_certsyncs_own_files_must_be_roots_alone",
            "test_a_file_of_roots_in_a_folder_others_can_write_is_reported_even_when_sticky",
        ),
    ),
    Row(
        "The alert mail's relay (`certsync_alert_smtp`) is down or refuses the mail",
        "logged (`alert mail to ... failed: ...`); the sync's outcome and exit status are"
        " unchanged; the cron job's failure then goes to cron's own mail (stderr) instead",
        ("test_a_failed_cron_run_mails_the_alert_once",),
    ),
    Row(
        "The metrics folder belongs to another user (mox) who plants a link at `certsync.prom`",
        "the textfile is replaced by rename, root's and 0644; the link's target is never written",
        ("test_metrics_after_a_deploy_and_after_a_failed_cron_run",),
    ),
    Row(
        "The `mox` user plants a symlink at `<name>.crt`, `<name>.key` or a temporary file",
        "links are never followed: replaced by rename; the target is neither written nor chowned",
        ("test_symlink_planted_by_mox_is_neither_written_nor_chowned",),
    ),
    Row(
        "The mox user moves a folder of root's that holds something into the place of its"
        " certificate folder",
        "every name refused, in the preview and the sync, naming the folder and its owner; its"
        " owner and mode untouched (it becomes mox's when empty, as mox could make it); exit 1",
        (
            "test_a_folder_of_roots_moved_into_the_place_of_mox_s_folder_is_not_handed_over",
            "test_a_folder_of_roots_in_place_of_mox_s_folder_is_made_mox_s_only_when_safe",
            "test_sync_does_what_state_planned",
        ),
    ),
    Row(
        "`certsync_mox_cert_dir` names, by mistake, a folder of root's in a folder only root can"
        " write that holds more than mox's certificate files of the host's names (`/etc`,"
        " `/etc/ssl/private`), or that is empty and certsync did not make it (`/var/tmp`)",
        "every name refused, in the preview and the sync, naming the folder and up to 3 of the"
        " entries that are not mox's; the folder's owner, mode and entries untouched (were it"
        " handed to mox, mox could replace what it holds). A folder of mox's certificate files"
        " an admin made, or one certsync made (a crash may leave it empty, with no permission),"
        " becomes mox's; exit 1",
        (
            "test_a_mox_cert_dir_naming_a_folder_of_roots_that_holds_more_is_not_handed_over",
            "test_a_folder_of_roots_in_place_of_mox_s_folder_is_made_mox_s_only_when_safe",
            "test_sync_does_what_state_planned",
        ),
    ),
    Row(
        "A rollback puts mox's own symlinks back, and the mox user renames a hard link to a"
        " file of root's over each new link",
        "links are made by their owner (never chowned by name): the file keeps its owner; the"
        ' run says "restore failed", exit 4',
        ("test_a_hard_link_swapped_in_for_a_restored_symlink_is_never_chowned",),
    ),
    Row(
        "`mox config test` (run as root) quotes a file that the mox user pointed mox.conf at",
        "what it printed is neither shown nor logged (a private key, too, could be quoted); the"
        " outcome says the command to run to see it; rolled back, exit 3",
        ("test_a_failing_config_test_with_non_utf8_output_rolls_back",),
    ),
    Row(
        "The alert relay (mox on the host) never ends its reply, or trickles it",
        "cut off after 100 reply lines of at most 4 kB, and at 30 s for the whole conversation;"
        " logged as a failed alert, the sync's outcome unchanged",
        ("test_a_reply_that_is_not_one_ends_the_conversation",),
    ),
    Row(
        "A symlink in place of mox's certificate folder, or the backup, lock or log folder",
        "every name refused: `<folder> is a symlink; refusing`; nothing changed; exit 1",
        ("test_symlinked_folder_is_refused_for_every_name",),
    ),
    Row(
        "Hostile settings: `name;touch /tmp/pwned`, paths with `..`, spaces or quotes, port 99999",
        "refused on the controller, naming host and setting, before anything runs on any host",
        (
            "test_invalid_settings_are_refused_before_anything_runs",
            "test_hostile_paths_are_refused_and_nothing_reaches_the_host",
        ),
    ),
    Row(
        "Private key bytes",
        "never printed (`-vvv`, `--debug`, `--diff`), never logged; on the host only in mox's"
        " folder (0700) and the root-only 0700 backups",
        (
            "test_private_keys_never_appear_in_output_or_log",
            "test_private_key_bytes_are_in_no_other_file_of_the_host",
        ),
    ),
    Row(
        "The `mox` user writes, as a name's `.key` (or Caddy's folder holds), a key that costs"
        " OpenSSL minutes to decode: a PKCS#8 DSA key with huge parameters, label `PRIVATE KEY`",
        "key files over 16 kB and certificate files over 64 kB are refused unread; a key's"
        " algorithm is read from its DER before OpenSSL sees it: only RSA up to 8192 bits, EC"
        " P-256/P-384 (named curves) and Ed25519 are decoded, any other refused for that name at"
        " once, naming it (a mox key: replaced by Caddy's pair); the other hosts sync",
        ("test_a_huge_dsa_key_is_refused_at_once_and_the_other_hosts_sync",),
    ),
    Row(
        "A compromised host answers the state read with terminal escapes (`ESC]52`, `ESC[1A"
        " ESC[2K`), a malformed date, wrong types, fields missing or of another shape than the"
        " preview and status read (a DANE decision, a served port without its certificate, a"
        " file without its owner), JSON nested past Python's stack or larger than 4 MB",
        "the state is checked against its schema on the controller (every field the preview and"
        " `certsync status` read, with the invariants they rely on) and every string made"
        " printable there: a state that does not fit, or that no check foresaw, is that host's"
        " error; the preview and `certsync status` (table and `--json`) show the others, without"
        " a control character or a traceback",
        (
            "test_a_host_answering_a_poisoned_state_fails_alone_and_nothing_reaches_the_terminal",
            "test_a_host_whose_state_cannot_be_reported_is_that_hosts_line",
            "test_an_answer_that_cannot_be_read_is_the_hosts_error",
        ),
    ),
    Row(
        "A compromised host's sync (or the writing of certsync's files) fails printing terminal"
        " escapes; `--diff` cannot read a file the state says is there",
        "its output is shown when it fails, a line at a time, made printable (never pyinfra's raw"
        " output), and that host fails alone; `--diff` says it cannot read the file, the others"
        " sync",
        ("test_a_failing_sync_is_shown_printable_and_fails_its_host_alone",),
    ),
    Row(
        "A host's state read never ends",
        "ended after `certsync_state_timeout_seconds` on the host (`timeout`) and on the"
        " controller: that host fails alone, the others are shown and synced; the sync's wait is"
        " bounded too (`certsync_sync_timeout_seconds`)",
        ("test_a_host_whose_state_read_never_ends_fails_alone_within_its_deadline",),
    ),
    Row(
        "The installed program's unpacked folder (`app-<sha256>/`, which the state read runs) is"
        " missing, torn by a power loss, a module missing, added or of another size, its"
        " bytecode another python3's (python3 upgraded) or missing, or not root's alone (a link,"
        " the mox user's folder, its bytecode folder)",
        "the state read imports nothing from it: it answers that this version is not installed,"
        " and the same fact reads again with the program carried in the command; the folder is"
        " written to disk before it is renamed into place, and the zipapp's own run (the cron"
        " job, the sync) checks its sources byte for byte and makes root's folder anew",
        (
            "test_the_program_is_carried_only_to_a_host_without_this_version",
            "test_a_torn_or_changed_folder_is_never_imported_by_the_installed_read",
            "test_a_folder_root_does_not_own_is_never_imported_by_the_installed_read",
            "test_root_s_folder_changed_is_made_anew",
            "test_a_folder_without_this_python3_s_bytecode_is_made_anew",
        ),
    ),
    Row(
        "A folder above the installed program's unpacked folder can be renamed by another user"
        " (the mox user's, writable by every user without the sticky bit, by a group other than"
        " root's, or through an access ACL), or a link on the way there can; a deploy replaces"
        " `certsync.pyz` while a run reads or unpacks it; a new version replaces the one a"
        " running sync imports from",
        "root imports nothing from the unpacked folder (the state read carries the program, the"
        " cron job runs the zipapp itself), and neither removes nor remakes it; a link that only"
        " root can change is followed to the real folder, whose every level is checked; a run"
        " unpacks the bytes it read, and only when they hold its own version's sources; another"
        " version's folder is removed a day after the new one became the installed one, once no"
        " run of the old one can still import from it; the deploy warns of such a folder above"
        " the program; an install_dir root's group may write (as the deploy's check allows) is"
        " used",
        (
            "test_a_folder_above_that_another_user_can_rename_keeps_root_from_importing",
            "test_a_folder_above_whose_acl_lets_another_user_write_keeps_root_from_importing",
            "test_a_link_on_the_way_that_another_user_can_replace_keeps_root_from_importing",
            "test_a_link_above_that_only_root_can_change_is_followed_to_the_real_folder",
            "test_a_sticky_folder_above_is_no_bar",
            "test_a_folder_above_that_fails_is_neither_removed_nor_unpacked_again",
            "test_the_folder_is_unpacked_from_the_bytes_that_named_it",
            "test_bytes_of_another_version_never_replace_a_folder",
            "test_other_versions_folders_are_removed_a_day_after_this_one_was_put_in_place",
            "test_a_folder_whose_acl_lets_another_user_write_is_named",
            "test_a_folder_holding_it_that_is_not_root_s_alone_is_not_remade_at_every_run",
            "test_a_default_acl_above_leaves_the_folder_root_s_alone",
            "test_a_folder_holding_it_that_root_s_group_may_write_is_used",
        ),
    ),
    Row(
        "`certsync_deploy()` is called from an operation (e.g. `python.call`), while pyinfra runs"
        " operations",
        "refused on each host, naming it and saying to call it from the deploy's code; nothing"
        " on the hosts changes",
        ("test_certsync_deploy_from_an_operation_is_refused_and_changes_nothing",),
    ),
    Row(
        "With `_sudo`, the `mox` user creates pyinfra's upload names first"
        " (`/tmp/pyinfra-<sha1 of the path>`, mode 0666), with `fs.protected_regular` 0 and 2",
        "certsync uploads nothing through a file: the contents go on the command's standard"
        " input, written by root beside each path and renamed (`--diff` too); the planted files"
        " stay untouched and the host syncs",
        ("test_upload_names_the_mox_user_made_first_stay_untouched_and_the_host_syncs",),
    ),
    Row(
        "A deploy of your own, calling `certsync_deploy()` from the same place for every host,"
        " runs operations on the canary hosts only (or the others only) before or after it, or"
        " calls it twice; hosts disagree on `certsync_canary_group`",
        "the canary sync still comes first, with and without `--no-wait`, and the run ends;"
        " hosts that disagree on the canary group are refused before anything runs, named",
        (
            "test_canary_first_holds_whatever_else_the_deploy_runs",
            "test_hosts_that_disagree_on_the_canary_group_are_refused_before_anything_runs",
        ),
    ),
    Row(
        "The canary hosts and the others call `certsync_deploy()` from two lines of the deploy,"
        " and a canary host fails",
        "the others wait for every canary host's canary sync that comes before theirs in the"
        " run's order, whichever line called it, and are held back untouched, the canary named;"
        " where a canary host's sync comes after theirs, they are held back, saying so",
        (
            "test_a_failed_canary_holds_back_hosts_that_call_certsync_deploy_elsewhere",
            "test_a_canary_host_whose_sync_comes_after_the_gate_holds_it_back",
        ),
    ),
    Row(
        "An operation of your own changes the host before `certsync_deploy()` (removes the cron"
        " job), with the preview or `--yes`; the deploy's code changes a host's data after the"
        " call",
        "certsync reads the host's state again when its operation runs (a read from before an"
        " earlier operation is not used), and reinstalls what that operation removed; the call's"
        " settings are the ones used",
        (
            "test_an_operation_before_certsync_is_seen_by_its_state_read",
            "test_names_the_deploys_code_gives_each_host_at_its_turn_are_that_hosts",
        ),
    ),
    Row(
        "The deploy writes the cron job during the second in which cron looks at `/etc/cron.d`"
        " (cron rereads it when the folder's mtime, in whole seconds, changed)",
        "after writing its files, the deploy sets each folder's mtime again in a later second:"
        " cron reads the new job at its next look, and a renewal is served within two minutes"
        " with a cron job every minute",
        (
            "test_the_cron_folder_is_changed_in_a_later_second_than_the_job_written_into_it",
            "test_real_cron_serves_a_renewed_certificate_within_two_minutes",
        ),
    ),
    Row(
        "`--no-wait` and a host that fails (a canary)",
        "the run exits 1, the failed and the held-back hosts named, without a traceback"
        " (pyinfra 3.10's `--no-wait` alone exits 0)",
        ("test_with_no_wait_a_failed_canary_fails_the_run_naming_it_without_tracebacks",),
    ),
    Row(
        "Backups",
        "never more than `certsync_backups_keep`; the one just taken is never pruned; root, 0700;"
        " written under a temporary name and renamed once whole (a half-made one never counts"
        " and is removed); none pruned while a `restore failed` is not resolved",
        (
            "test_backups_are_pruned_to_the_setting_and_the_newest_is_kept",
            "test_a_backup_a_crash_left_half_made_never_counts_and_is_removed",
            "test_old_backups_are_not_pruned_while_a_restore_failed",
        ),
    ),
    Row(
        "DANE: Caddy (2.7 and later) renews with a new key, and the name has TLSA records at"
        " `_<port>._tcp.<name>` (each of `certsync_dane_ports`)",
        "held for DANE, exit 0: mox keeps its certificate; the preview, the log, `certsync"
        " status` (check `dane`), the alert (once, a reminder a day) and `certsync_dane_held`"
        " name the record to publish and since when; installed two TTLs after the first run that"
        " saw `3 1 1 <new key>` at every authoritative server and the host's resolver",
        (
            "test_held_until_published_with_nsupdate_then_installed_after_two_ttls",
            "test_a_key_change_is_held_until_published_everywhere_then_two_ttls",
            "test_every_dane_port_must_have_the_record",
        ),
    ),
    Row(
        "DANE: a key change with TLSA records while mox answers on none of its ports, or while"
        " mox's pair does not load (a file missing, the key not the certificate's)",
        "not held while mox answers with nothing to keep: installed at once, `installed"
        " without waiting for DANE (<why>): publish ...`, alerted, naming the record to"
        " publish; a pair that does not load while mox still serves the pinned key stays held"
        " until mox stops answering (the cron job's run at boot then installs)",
        (
            "test_a_pair_that_does_not_load_is_held_while_mox_serves_and_installed_once_mox_is_down",
            "test_a_key_change_is_not_held_for_dane_while_mox_answers_on_none_of_its_ports",
        ),
    ),
    Row(
        "DANE, unattended: `certsync_dane_publish_command` (`scripts/dane-nsupdate`: nsupdate,"
        " TSIG); the command fails",
        "the records to add are handed over once per new key; installed two TTLs after they"
        " show; the old key's record is deleted once mox serves the new key. A failed add is"
        " retried at the next run and alerted; a failed delete is retried until it succeeds",
        (
            "test_the_publish_command_completes_the_change_and_deletes_the_old_record",
            "test_the_publish_command_adds_once_and_deletes_the_old_record_after_the_install",
            "test_a_failing_publish_command_is_retried_and_so_is_the_delete",
        ),
    ),
    Row(
        "DANE: a renewal that keeps the key (`reuse_private_keys`, Caddy 2.6); a run that finds"
        " the name in sync; `certsync_dane: off`; a wildcard name",
        "never held, and no DNS lookup at all (the DNS servers silent change nothing)",
        (
            "test_a_renewal_that_keeps_the_key_is_never_held_nor_looked_up",
            "test_a_renewal_that_keeps_the_key_and_an_in_sync_run_look_nothing_up",
            "test_dane_off_or_a_wildcard_looks_nothing_up",
        ),
    ),
    Row(
        "DANE: the record is still missing when mox's certificate expires within"
        " `certsync_dane_deadline_days`",
        "installed anyway (an expired certificate breaks IMAP, submission and MTA-STS); the"
        " alert names the record still missing",
        (
            "test_the_deadline_installs_anyway_with_the_alert",
            "test_the_deadline_installs_anyway_with_an_alert_naming_the_record",
        ),
    ),
    Row(
        "DANE: the DNS servers are down or silent, the resolver fails",
        "held with the reason, never installed blindly; every lookup of a run shares 20 s, so"
        " the run ends in bounds; exit 0",
        (
            "test_dns_down_or_silent_holds_with_the_reason_in_bounds",
            "test_a_dns_failure_holds_with_the_reason",
        ),
    ),
    Row(
        "DANE: a name without TLSA records (NXDOMAIN or no data)",
        "not using DANE: installed as before",
        (
            "test_a_name_without_tlsa_records_is_installed_as_before",
            "test_no_tlsa_records_means_no_dane_and_an_install",
        ),
    ),
    Row(
        "DANE: the resolver answers no TLSA records (a stale cache, a split view, a forged"
        " answer) while a zone server has them; an NS target at 0.0.0.0 or a multicast address",
        "every authoritative server is asked directly: a record anywhere holds; so does the"
        " address (an error)",
        (
            "test_a_resolver_without_records_is_checked_at_the_servers",
            "test_an_unspecified_or_multicast_server_address_is_an_error",
        ),
    ),
    Row(
        "DANE: the TTL lowered together with the new record; the deadline comes during the two"
        " TTLs; times in `dane.json` out of range",
        "waits two of the largest TTLs seen since the hold began (7 days at most); at the"
        " deadline installed with an alert that says the TTLs had not passed; a time outside"
        " [1, now] starts that count anew",
        (
            "test_a_ttl_lowered_during_the_hold_does_not_shorten_the_wait",
            "test_the_deadline_cutting_the_ttl_wait_short_is_told",
            "test_times_in_the_record_outside_one_to_now_start_anew",
        ),
    ),
    Row(
        "DANE: mox's files were written by the `mox` user with Caddy's new key while mox"
        " serves the old one; a first sync from `mox quickstart` (no files of certsync's, mox"
        " serves its own key, which the TLSA records pin); mox's files missing and nothing to"
        " probe",
        "the key mox serves decides: held for DANE (installed at the deadline of the served"
        " certificate); the key not known: held",
        (
            "test_files_certsync_did_not_install_are_judged_by_the_key_mox_serves",
            "test_a_first_sync_from_mox_quickstart_is_judged_by_the_key_mox_serves",
            "test_a_key_change_with_records_is_held_when_the_key_mox_has_is_not_known",
        ),
    ),
    Row(
        "DANE deletes: a pending delete pins the key mox serves, names another name or port,"
        " is malformed; `certsync_dane: off`; the install could not be checked (no listener)",
        "never sent (dropped); nothing sent while off; the old record is deleted only once a"
        " check saw mox serve the new key",
        (
            "test_pending_deletes_never_delete_a_key_in_use_nor_anything_but_a_configured_record",
            "test_pending_deletes_wait_while_dane_is_off",
            "test_a_pending_delete_of_the_key_mox_serves_is_dropped_whatever_its_files_hold",
            "test_the_old_record_is_deleted_only_once_a_check_saw_the_new_key_served",
        ),
    ),
    Row(
        "DANE: the publish command hangs (and leaves helpers running), prints bytes that are"
        " not UTF-8",
        "killed with its whole session after 60 s: `timed out after 60 s`, without the command"
        " line; its output's end, decoded with replacement, in the reason",
        (
            "test_the_publish_command_is_killed_whole_at_the_timeout_and_not_quoted",
            "test_the_publish_commands_output_is_bytes_and_only_its_end_is_kept",
        ),
    ),
)


def render(rows: tuple[Row, ...] = ROWS) -> str:
    """The Markdown table, one line per case."""
    return markdown_table(
        ("Case", "What certsync does", "Proven by"),
        ((row.case, row.behaviour, "<br>".join(f"`{name}`" for name in row.tests)) for row in rows),
    )


def render_block() -> str:
    return block(START_MARKER, END_MARKER, render())


if __name__ == "__main__":
    print(render_block())

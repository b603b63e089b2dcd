"""The sync: for each name its plan (plan.py), carried out under the lock: repair owner and mode,
or back up, install, `mox config test`, restart mox once, check what it serves, and roll back on
any failure after the first file changed."""

from __future__ import annotations

import datetime as dt
import os
import shlex
import stat
import subprocess
import time
from collections.abc import Sequence

from . import backoff, layout, records
from .backup import take_backup
from .crashpoint import step
from .dane import DaneRun, run_publish
from .errors import printable, reason
from .files import (
    FILE,
    LINK,
    FileState,
    NotTheCheckedFile,
    open_dir,
    put_entries,
    repair_owner_mode,
    trust_warning,
    writable_by_others,
)
from .moxconf import Target
from .names import server_name, storage_name
from .outcome import HELD, INTERRUPTED, Outcome
from .output import Log, stopping
from .owners import UNCLAIMED_MODE
from .plan import (
    CERT_MODE,
    DIR_MODE,
    HOLD,
    IN_SYNC,
    INSTALL,
    INSTALLED,
    KEY_MODE,
    REFUSE,
    REPAIR,
    RESTART,
    NamePlan,
    foreign_folder,
    mox_ids,
    plan_or_refusal,
    probe,
    verify_targets,
)
from .probe import PROBE_ERRORS, served_fingerprint
from .settings import Config
from .validity import describe
from .x509 import check_key_matches, parse_chain

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

COMMAND_TIMEOUT = 120
PREVIOUS = "previous.json"  # records.py
PROBE_SECONDS = 5.0  # one check of one port, at most (and never past the verify timeout)


class StepFailed(Exception):
    """A step of the transaction failed; the message says which and why."""


class CommandFailed(StepFailed):
    def __init__(self, what: str, status: int, output: str) -> None:
        super().__init__(f"{what} failed (exit {status}): {output}")
        self.status = status


def run_command(what: str, argv: list[str]) -> None:
    try:
        result = subprocess.run(
            argv, stdin=subprocess.DEVNULL, capture_output=True, timeout=COMMAND_TIMEOUT
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        raise StepFailed(f"{what} failed: {reason(error)}") from error
    if result.returncode != 0:
        output = (result.stdout + result.stderr).decode("utf-8", "replace")
        raise CommandFailed(what, result.returncode, " ".join(output.split())[-400:])


class Sync:
    """One sync run on this host, under the lock."""

    def __init__(self, config: Config, force: bool, log: Log, cron: bool = False) -> None:
        self.config = config
        self.force = force
        self.log = log
        self.cron = cron
        self.uid, self.gid = mox_ids(config)
        self.switching: set[str] = set()  # names whose new pair an install began to switch in

    def run(self, names: Sequence[str]) -> list[Outcome]:
        """Sync `names`; every failure becomes an Outcome with its reason, never an exception."""
        now = dt.datetime.now(dt.timezone.utc)
        folder = self.config.mox_cert_dir
        try:
            # Refuse early, before anything changes, when a folder certsync writes is unsafe.
            os.close(open_dir(self.config.backup_dir, create_mode=DIR_MODE))
            dir_fd = open_dir(folder, create_mode=UNCLAIMED_MODE)
        except (OSError, ValueError) as error:
            return [Outcome(name, "refused", reason(error)) for name in names]
        try:
            try:
                refusal = foreign_folder(self.config, dir_fd, self.uid)
                if refusal is None:
                    info = os.fstat(dir_fd)
                    if (info.st_uid, info.st_gid) != (self.uid, self.gid):
                        os.fchown(dir_fd, self.uid, self.gid)
                    if stat.S_IMODE(info.st_mode) != DIR_MODE:
                        os.fchmod(dir_fd, DIR_MODE)
            except OSError as error:
                refusal = f"cannot set owner and mode of {folder} ({reason(error)})"
            if refusal is not None:
                return [Outcome(name, "refused", refusal) for name in names]
            previous = records.load(self.config, PREVIOUS)
            self._clean(dir_fd, names, previous)
            self._switch_back_unrestarted(dir_fd, names, previous)
            dane = DaneRun(self.config, now)
            plans = [
                plan_or_refusal(self.config, n, dir_fd, now, self.force, dane=dane) for n in names
            ]
            self._publish(dane, plans)
            outcomes = self._carry_out(dir_fd, plans)
            self._after_installs(dane, plans, outcomes)
            self._clean(dir_fd, names, self._forget_previous(dir_fd, outcomes))
            for plan in plans:
                if not outcomes[plan.name].ok and plan.current is not None:
                    outcomes[plan.name].kept = plan.current.describe()
        finally:
            os.close(dir_fd)
        return [outcomes[name] for name in names]

    def _clean(self, dir_fd: int, names: Sequence[str], previous: dict[str, Any]) -> None:
        """What a crash or an earlier run left in mox's folder: staged files, old generations
        (not the one an install switched away from while it is `previous`)."""
        for name in names:
            entry = previous.get(name)
            keep = (entry["generation"],) if entry else ()
            try:
                problems = layout.clean(dir_fd, storage_name(name), keep)
            except OSError as error:
                problems = [reason(error)]
            for problem in problems:
                self.log.line(f"warning: {name}: left in {self.config.mox_cert_dir}: {problem}")

    def _switch_back_unrestarted(
        self, dir_fd: int, names: Sequence[str], previous: dict[str, Any]
    ) -> None:
        """A run that died between its switch and mox's restart left mox serving the previous
        pair from the generation it switched away from: switch back to it (one rename; mox,
        not restarted, serves it) so that this run installs anew, with a rollback to it."""
        for name in names:
            entry, stored = previous.get(name), storage_name(name)
            if entry is None:
                continue
            try:
                crt, _, gen = layout.read_pair(dir_fd, stored)
                if gen is None or gen == entry["generation"] or crt.data is None:
                    continue
                if parse_chain(crt.data)[0].fingerprint != entry["sha256"]:
                    continue  # (not what that run switched in: someone else's change)
                before = layout.read_generation(dir_fd, stored, entry["generation"])
                if before is None or before[0].data is None or before[1].data is None:
                    continue
                check_key_matches(before[0].data, before[1].data)
                targets = verify_targets(self.config, name)[0]
                served = probe(targets, name)
                if served is None or served.sha256 in (None, entry["sha256"]):
                    continue  # restarted since (or not known): what its files hold stays
                layout.switch(dir_fd, stored, entry["generation"], self.uid, self.gid)
            except (OSError, ValueError) as error:
                self.log.line(f"warning: {name}: previous generation not checked: {reason(error)}")
                continue
            self.log.line(
                f"{name}: a sync died between its switch and mox's restart: switched back to"
                f" the pair mox serves ({entry['generation']}), installing anew"
            )

    def _forget_previous(self, dir_fd: int, outcomes: dict[str, Outcome]) -> dict[str, Any]:
        """Drop the previous generation of the names synced, or switched back to it; the
        record that stays."""
        previous = records.load(self.config, PREVIOUS)
        kept = {
            name: entry
            for name, entry in previous.items()
            if not (name in outcomes and outcomes[name].ok)
            and not self._is_current(dir_fd, name, entry["generation"])
        }
        if kept != previous:
            try:
                records.save(self.config, PREVIOUS, kept)
            except (OSError, ValueError) as error:
                self.log.line(f"warning: {PREVIOUS} not written: {reason(error)}")
                return previous
        return kept

    def _is_current(self, dir_fd: int, name: str, gen: str) -> bool:
        try:
            return layout.generation(dir_fd, storage_name(name)) == gen
        except OSError:
            return False

    def _remember_previous(self, name: str, before: str | None, sha256: str) -> None:
        """Before the switch: the generation switched away from (raises OSError, ValueError)."""
        previous = records.load(self.config, PREVIOUS)
        if before is None:
            if previous.pop(name, None) is not None:
                records.save(self.config, PREVIOUS, previous)
            return
        previous[name] = {"generation": before, "sha256": sha256}
        records.save(self.config, PREVIOUS, previous)

    def _carry_out(self, dir_fd: int, plans: list[NamePlan]) -> dict[str, Outcome]:
        outcomes: dict[str, Outcome] = {}
        installs: list[NamePlan] = []
        restarts: list[NamePlan] = []
        for plan in plans:
            held = self._held(plan) if plan.action in (INSTALL, RESTART) else None
            if held is not None:
                outcomes[plan.name] = held
            elif plan.action == REFUSE:
                outcomes[plan.name] = Outcome(plan.name, "refused", plan.detail)
            elif plan.action == IN_SYNC:
                outcomes[plan.name] = Outcome(plan.name, "in sync", plan.detail)
            elif plan.action == HOLD:
                assert plan.dane is not None
                detail = plan.dane.failure or plan.detail
                outcomes[plan.name] = Outcome(plan.name, HELD, detail, notify=plan.dane.operator)
            elif plan.action == INSTALL:
                installs.append(plan)
            else:
                try:
                    self._repair(dir_fd, plan)
                except NotTheCheckedFile as why:
                    plan.action, plan.detail = INSTALL, f"{why}; installing Caddy's pair anew"
                    installs.append(plan)
                    continue
                except OSError as error:
                    outcomes[plan.name] = Outcome(
                        plan.name, "failed", f"repairing owner and mode failed ({reason(error)})"
                    )
                    continue
                if plan.action == REPAIR:
                    outcomes[plan.name] = Outcome(plan.name, "repaired", plan.detail)
                else:
                    restarts.append(plan)
        if installs or restarts:
            outcomes.update(self._change(dir_fd, installs, restarts))
        tried = {p.name: p.pair.info.fingerprint for p in installs + restarts if p.pair}
        if stopping():  # (a shutdown is not a failed try of Caddy's certificate)
            tried = {}
        try:
            backoff.note(self.config, tried, outcomes, dt.datetime.now(dt.timezone.utc))
        except (OSError, ValueError) as error:
            self.log.line(f"warning: {backoff.BACKOFF_FILE} not written: {reason(error)}")
        self._remember_installed(plans, outcomes)
        return outcomes

    def _publish(self, dane: DaneRun, plans: list[NamePlan]) -> None:
        """Hand the records of the held key changes to the publish command: once per new key
        when it exits 0 (again after a day if the records are still not answered), at every run
        while it fails."""
        command = self.config.dane_publish_command
        due = [
            p
            for p in plans
            if p.action == HOLD
            and p.dane is not None
            and p.dane.add
            and p.dane.operator  # (not: added and waiting for the records to show)
        ]
        lines = dane.lines([line for p in due if p.dane for line in p.dane.add], set())
        if not command or not lines:
            return
        dane.added.update(lines)
        failure = run_publish(self.config, lines)
        for plan in due:
            assert plan.dane is not None
            if failure is None:
                # the first time, the records are on their way; sent again a day later, they
                # did not show: that waits for the operator (told)
                plan.dane.operator = plan.dane.added is not None
                plan.dane.memory["added"] = dane.now
                self.log.line(f"the DANE publish command took: {'; '.join(plan.dane.add)}")
            else:
                plan.dane.failure = f"{plan.detail}; {failure}"

    def _after_installs(
        self, dane: DaneRun, plans: list[NamePlan], outcomes: dict[str, Outcome]
    ) -> None:
        """Remember the holds; once a check saw mox serve a new key, delete the old key's
        records through the publish command (retried at later runs until it exits 0; never one
        pinning a key mox or Caddy has or a hold waits for); an install made at the deadline
        with a record still missing is told."""
        command = self.config.dane_publish_command
        held = dict(dane.held())
        deletes = dane.pending_deletes()
        for plan in plans:
            outcome = outcomes[plan.name]
            if plan.action == HOLD and plan.dane is not None:
                held[plan.name] = plan.dane.memory
                continue
            if not outcome.ok:
                continue  # (a failed install: the hold's record stays for the next run)
            before = held.pop(plan.name, None)
            lines: list[str] = []
            if plan.dane is not None and outcome.status == "installed":
                if plan.dane.alert:
                    outcome.detail += f"; {plan.dane.detail}"
                    outcome.notify = True
                lines = plan.dane.deletes
                if lines and not plan.targets and plan.pair is not None and command:
                    # not checked (no listener to ask): deleted once a probe shows the new key
                    spki = plan.pair.info.spki_sha256
                    held[plan.name] = {"spki": spki, "installed": True, "deletes": lines}
                    continue
            elif (
                isinstance(before, dict)
                and plan.pair is not None
                and before.get("spki") == plan.pair.info.spki_sha256
            ):
                # mox has the key of a hold that was waiting out its TTLs (the run that installed
                # it died before it remembered the deletes), or of an install not checked
                checked = bool(plan.targets) and outcome.status in ("installed", "restarted")
                served = plan.served.sha256 if plan.served is not None else None
                if not checked and served != plan.pair.info.fingerprint and command:
                    held[plan.name] = before
                    continue
                found = before.get("deletes")
                lines = [
                    line
                    for line in (found if isinstance(found, list) else [])
                    if isinstance(line, str) and line.startswith("delete ")
                ]
            if self.config.dane_publish_command:
                deletes += [line for line in lines if line not in deletes]
        held_keys = [entry.get("spki") for entry in held.values() if isinstance(entry, dict)]
        keep = {key for key in held_keys if isinstance(key, str)}
        for plan in plans:  # the keys of mox's files and what it serves after this run; Caddy's
            if plan.pair is not None:
                keep.add(plan.pair.info.spki_sha256)
            if plan.targets and outcomes[plan.name].status in ("installed", "restarted"):
                continue  # (the check saw the new key served)
            for info in (plan.current and plan.current.info, plan.served and plan.served.info):
                if info:
                    keep.add(info.spki_sha256)
        deletes = dane.lines(deletes, keep)
        if deletes and self.config.dane_publish_command:
            failure = run_publish(self.config, deletes)
            told = "; ".join(deletes)
            if failure is None:
                self.log.line(f"the DANE publish command took: {told}")
                deletes = []
            else:
                self.log.line(f"warning: {failure}; retried at the next run: {told}")
        try:
            dane.save(held, deletes)
        except (OSError, ValueError) as error:
            self.log.line(f"warning: DANE record not written: {reason(error)}")

    def _held(self, plan: NamePlan) -> Outcome | None:
        """The outcome of a change the cron job holds back (backoff.py), or None."""
        if not self.cron or self.force or plan.pair is None:
            return None
        now = dt.datetime.now(dt.timezone.utc)
        entry = backoff.held(self.config, plan.name, plan.pair.info.fingerprint, now)
        if entry is None:
            return None
        return Outcome(plan.name, entry["status"], f"held back: {backoff.describe(entry)}")

    def _remember_installed(self, plans: list[NamePlan], outcomes: dict[str, Outcome]) -> None:
        """Record which certificate of Caddy's mox's files now hold, per name: the one certsync
        keeps from a downgrade (plan.current_files). Written only when it changes."""
        installed = records.load(self.config, INSTALLED)
        now = dict(installed)
        for plan in plans:
            if plan.pair is not None and outcomes[plan.name].ok:
                now[plan.name] = plan.pair.info.fingerprint
        if now != installed:
            try:
                records.save(self.config, INSTALLED, now)
            except (OSError, ValueError) as error:
                self.log.line(f"warning: {INSTALLED} not written: {reason(error)}")

    def _repair(self, dir_fd: int, plan: NamePlan) -> None:
        """Owner and mode of both files, through the descriptors their contents are checked on;
        regular files (certsync before its layout) become the layout, holding the same pair."""
        pair, current = plan.pair, plan.current
        assert pair is not None and current is not None
        stored = storage_name(plan.name)
        if current.generation is None:
            new = self._new_pair(plan)
            layout.migrate(dir_fd, stored, *new)
            if layout.read_pair(dir_fd, stored) != (*new, layout.generation(dir_fd, stored)):
                raise NotTheCheckedFile(f"{stored}.crt or .key changed")
            return
        gen_fd = os.open(
            current.generation, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=dir_fd
        )
        try:
            repair_owner_mode(gen_fd, stored + ".crt", pair.cert, self.uid, self.gid, CERT_MODE)
            repair_owner_mode(gen_fd, stored + ".key", pair.key, self.uid, self.gid, KEY_MODE)
        finally:
            os.close(gen_fd)

    def _new_pair(self, plan: NamePlan) -> tuple[FileState, FileState]:
        pair = plan.pair
        assert pair is not None
        return (
            FileState(FILE, pair.cert, None, self.uid, self.gid, CERT_MODE),
            FileState(FILE, pair.key, None, self.uid, self.gid, KEY_MODE),
        )

    def _install(
        self, dir_fd: int, installs: list[NamePlan], befores: dict[str, str | None]
    ) -> None:
        """Each name's new pair, switched in by one rename; `befores`: name -> the generation
        holding its previous pair (None: not one certsync can switch back to)."""
        for plan in installs:
            assert plan.current is not None
            stored, old = storage_name(plan.name), (plan.current.crt, plan.current.key)
            before = layout.prepare(dir_fd, stored, old, self.uid, self.gid)
            befores[plan.name] = before
            assert plan.pair is not None

            def switching(
                _: str,
                name: str = plan.name,
                before: str | None = before,
                sha256: str = plan.pair.info.fingerprint,
            ) -> None:
                self._remember_previous(name, before, sha256)
                self.switching.add(name)

            layout.switch_to(dir_fd, stored, self._new_pair(plan), switching)

    def _change(
        self, dir_fd: int, installs: list[NamePlan], restarts: list[NamePlan]
    ) -> dict[str, Outcome]:
        olds: dict[str, FileState] = {}
        for plan in installs:
            assert plan.current is not None
            stored = storage_name(plan.name)
            olds[stored + ".crt"], olds[stored + ".key"] = plan.current.crt, plan.current.key
        if stopping():
            return self._interrupted(installs + restarts, "nothing changed")
        backup = note = ""
        if installs:
            try:
                backup, note = take_backup(
                    self.config.backup_dir, olds, self.config.backups_keep, self._restore_failed()
                )
            except OSError as error:
                detail = (
                    f"backup failed ({reason(error)}); mox's files unchanged, mox not restarted"
                )
                return {
                    plan.name: Outcome(plan.name, "failed", detail) for plan in installs + restarts
                }
        restarted = False
        befores: dict[str, str | None] = {}
        step("backup")
        if stopping():  # (the backup taken: kept, as any backup)
            return self._interrupted(installs + restarts, "nothing changed")
        try:
            if installs:
                try:
                    self._install(dir_fd, installs, befores)
                except OSError as error:
                    if self._unchanged(dir_fd, olds):
                        detail = f"install failed ({reason(error)}); mox's files unchanged"
                        return {
                            p.name: Outcome(p.name, "failed", detail) for p in installs + restarts
                        }
                    raise StepFailed(f"install failed ({reason(error)})") from error
            try:
                self._config_test()
            except StepFailed as error:
                if installs:
                    raise
                detail = f"{error}; mox not restarted, its files unchanged"
                return {p.name: Outcome(p.name, "failed", detail) for p in restarts}
            argv = shlex.split(self.config.restart_command)
            if stopping():  # before the restart: the previous pairs switched back
                return self._stop_before_restart(dir_fd, olds, befores, installs, restarts)
            restarted = True  # from here on mox may be down, or serving the new files
            step("restart")
            run_command("restart", argv)
            step("restarted")
            self._verify(
                {
                    p.name: (p.pair.info.fingerprint, p.targets)
                    for p in installs + restarts
                    if p.pair
                }
            )
            step("checked")
        except Exception as error:  # whatever it is, mox's previous files go back
            why = (
                str(error)
                if isinstance(error, StepFailed)
                else f"unexpected error ({type(error).__name__}: {error})"
            )
            return self._roll_back(dir_fd, why, olds, befores, installs, restarts, restarted)
        outcomes = {}
        for plan in installs + restarts:
            pair = plan.pair
            assert pair is not None
            checked = "" if plan.targets else f" (not checked: {'; '.join(plan.warnings)})"
            if plan.action == INSTALL:
                detail = f"{describe(pair.info)} from {pair.issuer}, backup {backup}{note}{checked}"
                outcomes[plan.name] = Outcome(plan.name, "installed", detail)
            else:
                outcomes[plan.name] = Outcome(plan.name, "restarted", f"{plan.detail}{checked}")
        return outcomes

    def _interrupted(self, plans: list[NamePlan], detail: str) -> dict[str, Outcome]:
        why = stopping() or "interrupted"
        return {p.name: Outcome(p.name, INTERRUPTED, f"{why}; {detail}") for p in plans}

    def _stop_before_restart(
        self,
        dir_fd: int,
        olds: dict[str, FileState],
        befores: dict[str, str | None],
        installs: list[NamePlan],
        restarts: list[NamePlan],
    ) -> dict[str, Outcome]:
        """Stopped after the switch, before the restart: each name's previous pair switched back
        (mox, not restarted, still serves it): nothing changed."""
        why = stopping() or "interrupted"
        outcomes = self._roll_back(dir_fd, why, olds, befores, installs, [], False)
        outcomes.update(self._interrupted(restarts, "nothing changed"))
        for name, outcome in list(outcomes.items()):
            if outcome.status in ("rolled back", "failed"):
                outcomes[name] = self._interrupted(
                    [p for p in installs if p.name == name], "switched back: nothing changed"
                )[name]
        return outcomes

    def _restore_failed(self) -> str:
        """Why old backups must stay: a "restore failed" not yet resolved (alerts.json holds the
        last failure of each name until a run succeeds), whose files are in a backup."""
        from .alert import ALERTS_FILE

        failed = sorted(
            name
            for name, entry in records.load(self.config, ALERTS_FILE).items()
            if entry.get("status") == "restore failed"
        )
        return f"a restore failed for {', '.join(failed)}" if failed else ""

    def _config_test(self) -> None:
        """`mox config test`, as root. What it prints is neither shown nor logged: run as root,
        it may quote any file that mox.conf points to (the mox user can point it at a key)."""
        binary, mox_config = self.config.mox_binary, self.config.mox_config
        warnings = writable_by_others(binary)
        if warnings:
            self.log.line(f"warning: {trust_warning(binary, warnings)}")
        argv = [binary, "-config", mox_config, "config", "test"]
        try:
            step("config-test")
            run_command("mox config test", argv)
            step("config-tested")
        except CommandFailed as failed:
            raise StepFailed(
                f"mox config test failed (exit {failed.status}); to see why, run as root:"
                f" {shlex.join(argv)}"
            ) from None

    def _roll_back(
        self,
        dir_fd: int,
        why: str,
        olds: dict[str, FileState],
        befores: dict[str, str | None],
        installs: list[NamePlan],
        restarts: list[NamePlan],
        restarted: bool,
    ) -> dict[str, Outcome]:
        outcomes = {
            p.name: Outcome(p.name, "failed", f"{why}; mox's files unchanged") for p in restarts
        }
        for plan in installs:
            if plan.name not in self.switching and self._unchanged(
                dir_fd, {e: s for e, s in olds.items() if e[:-4] == storage_name(plan.name)}
            ):  # (a failure before its switch: its files were never touched)
                outcomes[plan.name] = Outcome(plan.name, "failed", f"{why}; its files unchanged")
        installs = [p for p in installs if p.name not in outcomes]
        if not installs:
            return outcomes
        ok, how, kept_new = self._restore(dir_fd, olds, befores, installs, restarted)
        for plan in installs:
            if plan.name in kept_new:
                detail = (
                    f"{why}; mox's previous pair would not load ({kept_new[plan.name]}): kept"
                    f" Caddy's pair, the one mox can start with; {how}"
                )
                outcomes[plan.name] = Outcome(plan.name, "restore failed", detail)
            elif ok:
                outcomes[plan.name] = Outcome(
                    plan.name, "rolled back", f"{why}; rolled back: {how}"
                )
            else:
                outcomes[plan.name] = Outcome(plan.name, "restore failed", f"{why}; {how}")
        return outcomes

    def _unchanged(self, dir_fd: int, olds: dict[str, FileState]) -> bool:
        """Whether mox's files are exactly the old ones again (links with their targets, files
        read through certsync's links; the modes without set-id bits, which certsync never
        writes)."""

        def bare(state: FileState) -> FileState:
            return state.replace(mode=state.mode & 0o777)

        try:
            for entry, state in olds.items():
                stored, suffix = entry[:-4], entry[-4:]
                crt, key, _ = layout.read_pair(dir_fd, stored)
                if bare(crt if suffix == ".crt" else key) != bare(state):
                    return False
        except OSError:
            return False
        return True

    def _restore(
        self,
        dir_fd: int,
        olds: dict[str, FileState],
        befores: dict[str, str | None],
        installs: list[NamePlan],
        restarted: bool,
    ) -> tuple[bool, str, dict[str, str]]:
        """Put back what mox had, when it is a pair that loads (by switching back to its
        generation: one rename) or something certsync cannot read (links: put back as they
        were); keep Caddy's pair for a name whose previous pair would not load. Restart and check
        it serves what it should if it was restarted. (ok, what happened, name -> why its
        previous pair was kept out)."""
        kept_new: dict[str, str] = {}
        expected = {}
        restored: dict[str, FileState] = {}
        try:
            for plan in installs:
                current, stored = plan.current, storage_name(plan.name)
                assert current is not None and plan.pair is not None
                before = befores.get(plan.name)
                links = LINK in (current.crt.kind, current.key.kind)  # someone else's: unread
                if before is not None and (
                    current.pair_loads or (links and current.generation == before)
                ):
                    step("restore")
                    layout.switch(dir_fd, stored, before, self.uid, self.gid)
                elif links:
                    step("restore")
                    put_entries(
                        dir_fd, {stored + ".crt": current.crt, stored + ".key": current.key}
                    )
                else:
                    kept_new[plan.name] = current.unusable or current.describe()
                    if layout.read_pair(dir_fd, stored)[:2] == self._new_pair(plan):
                        expected[plan.name] = (plan.pair.info.fingerprint, plan.targets)
                    continue
                restored[stored + ".crt"] = olds[stored + ".crt"]
                restored[stored + ".key"] = olds[stored + ".key"]
                # Restarted, mox serves what its restored files hold, even if it served another
                # certificate before (files copied by hand without a restart); when they hold
                # none that certsync can read (links), what it served before.
                old = current.info.fingerprint if current.info is not None else None
                if old is None and plan.served is not None:
                    old = plan.served.sha256
                if old is not None:
                    expected[plan.name] = (old, plan.targets)
        except OSError as error:
            return (
                False,
                (
                    f"restoring mox's previous files FAILED ({reason(error)});"
                    f" they are in the newest backup under {self.config.backup_dir}"
                ),
                kept_new,
            )
        step("restored")
        if not self._unchanged(dir_fd, restored):
            return (
                False,
                (
                    "mox's previous files could not be put back as they were; they are in the"
                    f" newest backup under {self.config.backup_dir}"
                ),
                kept_new,
            )
        if not restarted:
            return (
                True,
                "mox's previous files restored (mox was not restarted: it still serves them)"
                if restored
                else "mox was not restarted: it still serves what it served",
                kept_new,
            )
        try:
            self._config_test()
            step("restore-restart")
            run_command("restart", shlex.split(self.config.restart_command))
            step("restore-restarted")
            self._verify(expected)
        except Exception as error:
            what = "mox's previous files restored" if restored else "Caddy's pair kept"
            return False, f"{what}, but after restarting mox: {error}", kept_new
        if not expected:
            return (
                True,
                "mox's previous files restored (mox served nothing for it before)",
                kept_new,
            )
        if not restored:
            return True, "mox restarted and serves Caddy's pair", kept_new
        return True, "mox's previous files restored and served again", kept_new

    def _verify(self, expected: dict[str, tuple[str, list[Target]]]) -> None:
        """Wait, for a bounded time, until every target serves the expected certificate."""
        timeout = self.config.verify_timeout_seconds
        deadline = time.monotonic() + timeout
        pending = {(name, target) for name, (_, targets) in expected.items() for target in targets}
        last: dict[tuple[str, Target], str] = {}
        while True:
            for name, target in sorted(pending, key=lambda item: (item[0], str(item[1]))):
                left = deadline - time.monotonic()
                if left <= 0:
                    last.setdefault((name, target), f"{name} {target}: not checked in time")
                    continue
                try:
                    served = served_fingerprint(target, server_name(name), min(PROBE_SECONDS, left))
                except PROBE_ERRORS as error:
                    last[(name, target)] = f"{name} {target}: {printable(reason(error))}"
                    continue
                if served == expected[name][0]:
                    pending.discard((name, target))
                else:
                    last[(name, target)] = f"{name} {target} serves sha256={served[:16]}"
            if not pending:
                return
            if time.monotonic() >= deadline:
                details = "; ".join(sorted(last[key] for key in pending))
                raise StepFailed(
                    f"mox does not serve the expected certificate after {timeout} s: {details}"
                )
            time.sleep(0.2)

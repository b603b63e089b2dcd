"""`certsync status`'s pyinfra command line, and the report's hosts from what the read found."""

from __future__ import annotations

from typing import Any

from certsync.fleetread import END_FILE, STOPPED, PyinfraOptions, collect, pyinfra_arguments


def test_pyinfra_runs_dry_without_change_detection_with_the_options_passed_on():
    options = PyinfraOptions(
        data=["certsync_names=a.example"], limit=["mail-1", "canary"], user="admin", sudo=True
    )

    argv = pyinfra_arguments("inventory.py", "deploy.py", options)

    flags, positional = argv[: argv.index("--")], argv[argv.index("--") + 1 :]
    assert {"--dry", "--yes"} <= set(flags)  # no operation executes, none is even evaluated
    assert flags[flags.index("--fail-percent") + 1] == "100"  # an unreachable host fails alone
    assert positional == ["inventory.py", "deploy.py", str(END_FILE)]
    for pair in (
        ["--data", "certsync_names=a.example"],
        ["--limit", "mail-1"],
        ["--limit", "canary"],
        ["--user", "admin"],
        ["--config", "config.py"],
    ):
        assert any(flags[i : i + 2] == pair for i in range(len(flags))), pair
    assert "--sudo" in flags and "--use-sudo-password" not in flags
    no_deploy = pyinfra_arguments("h1,h2", None, PyinfraOptions())
    assert no_deploy[no_deploy.index("--") + 1 :] == ["h1,h2", str(END_FILE)]


def test_each_targeted_host_is_checked_unreachable_stopped_or_left_out():
    settings = {"values": {"names": ["mail.a.example"]}, "names": ["mail.a.example"]}
    state: dict[str, Any] = {"certsync_state": 1, "error": None, "names": {}}
    records: list[dict[str, Any]] = [
        {"event": "target", "host": host}
        for host in ("read", "refused", "down", "no-names", "not-certsyncs", "stopped")
    ] + [
        {"event": "read", "host": "read", "settings": settings, "state": state, "error": None},
        {"event": "read", "host": "refused", "settings": None, "state": None, "error": "bad"},
        {"event": "unreachable", "host": "down", "reason": "Could not connect"},
        {"event": "skipped", "host": "no-names"},
        {"event": "loaded", "host": "no-names"},
        {"event": "loaded", "host": "not-certsyncs"},
        {"event": "loaded", "host": "read"},
    ]

    fleet = collect(records)

    assert fleet.states == {
        "read": state,
        "refused": "bad",
        "down": "unreachable: Could not connect",
        "stopped": STOPPED,
    }
    assert list(fleet.settings) == list(fleet.states)
    assert fleet.settings["read"].names == ["mail.a.example"]

"""`certsync status`: per host and name, the seven checks of what is true now, from the host's
state (read-only, every verify port probed): as a table for a person, or as JSON for monitoring.

    {"ok": bool, "hosts": {HOST: {"ok": bool, "error": str|null,
        "names": {NAME: {"ok": bool, "checks": [{"check": str, "ok": bool, "detail": str}]}}}}}

Only public facts: fingerprints, dates, names, owners and modes, the key's DANE hash.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
from typing import Any

from certsync.certview import expiry, short, tlsa_record
from certsync.host.actions import HOLD, REFUSE
from certsync.host.errors import printable
from certsync.host.output import ago, parse_utc
from certsync.host.plan import CERT_MODE, DIR_MODE, KEY_MODE, mox_files
from certsync.hostdata import HostSettings
from certsync.operations import files_to_install, host_files, host_problem
from certsync.preview import dane_fields

EXIT_OK, EXIT_FAILED, EXIT_UNKNOWN = 0, 1, 2
# (check, how the table names it when it fails), in the order of the issues' checks:
# Caddy holds a valid certificate; mox's files exist with the right owner and modes; they equal
# Caddy's newest valid pair; mox.conf names them in a listener's KeyCerts; mox serves that
# certificate on every verify port; the cron job is installed and its last run succeeded; and
# every TLSA RRset of the name has a record for the key mox serves, no key change waiting for
# the operator.
CHECKS = (
    ("caddy", "Caddy's certificate"),
    ("mox_files", "mox's files"),
    ("mox_equals_caddy", "mox's files vs Caddy's"),
    ("mox_conf", "mox.conf"),
    ("served", "what mox serves"),
    ("cron", "cron job"),
    ("dane", "DANE"),
)
TITLES = dict(CHECKS)


def _check(check: str, ok: bool, detail: str) -> dict[str, Any]:
    return {"check": check, "ok": ok, "detail": detail}


def check_caddy(plan: dict[str, Any], now: dt.datetime) -> dict[str, Any]:
    cert = plan["caddy"]["cert"]
    if cert is None:
        return _check("caddy", False, plan["detail"])
    issuer = plan["caddy"]["issuer"]
    detail = f"sha256={short(cert['sha256'])} from {issuer}, expires {expiry(cert, now)}"
    return _check("caddy", True, detail)


def _file_problems(what: str, meta: dict[str, Any], owner: str, mode: int) -> list[str]:
    if meta["kind"] != "file":
        target = f" to {meta['target']}" if meta.get("target") else ""
        kind = "missing" if meta["kind"] == "missing" else f"a {meta['kind']}{target}, not a file"
        return [f"{what} is {kind}"]
    problems = []
    if f"{meta['user']}:{meta['group']}" != owner:
        problems.append(f"{what} is owned by {meta['user']}:{meta['group']}, not {owner}")
    if meta["mode"] != format(mode, "04o"):
        problems.append(f"{what} has mode {meta['mode']}, not {mode:04o}")
    return problems


def check_mox_files(
    settings: HostSettings, state: dict[str, Any], name: str, plan: dict[str, Any]
) -> dict[str, Any]:
    mox = plan.get("mox")
    if mox is None:
        return _check("mox_files", False, plan["detail"])
    owner = f"{settings.mox_user}:{settings.mox_group}"
    crt, key = mox_files(settings.mox_cert_dir, name)
    problems = []
    folder = state.get("mox_dir") or {}
    if folder.get("kind") == "missing":
        problems.append(f"{settings.mox_cert_dir} is missing")
    elif not folder.get("right"):
        problems.append(f"{settings.mox_cert_dir} is not {owner} {DIR_MODE:04o}")
    problems += _file_problems(crt, mox["crt"], owner, CERT_MODE)
    problems += _file_problems(key, mox["key"], owner, KEY_MODE)
    if problems:
        return _check("mox_files", False, "; ".join(problems))
    return _check("mox_files", True, f"{crt} {CERT_MODE:04o}, .key {KEY_MODE:04o}, {owner}")


def check_equal(plan: dict[str, Any]) -> dict[str, Any]:
    caddy = plan["caddy"]["cert"]
    if plan.get("files_equal"):
        return _check("mox_equals_caddy", True, f"sha256={short(caddy['sha256'])}")
    if caddy is None:
        return _check("mox_equals_caddy", False, "no valid pair of Caddy's to compare with")
    mox = plan.get("mox") or {}
    has = mox.get("replaces") or "nothing"
    if plan["action"] == HOLD:  # on purpose: the `dane` check tells whether it waits for you
        return _check("mox_equals_caddy", True, f"mox keeps {has}: {HOLD} (see the dane check)")
    if plan["action"] == REFUSE:  # Caddy's pair is valid, yet not installed: say why
        return _check("mox_equals_caddy", False, f"mox has {has}: {plan['detail']}")
    return _check(
        "mox_equals_caddy",
        False,
        f"mox has {has}, Caddy sha256={short(caddy['sha256'])}: the next sync installs it",
    )


def check_mox_conf(plan: dict[str, Any]) -> dict[str, Any]:
    mox_conf = plan.get("mox_conf") or {"names_files": None, "detail": plan["detail"]}
    return _check("mox_conf", mox_conf["names_files"] is True, mox_conf["detail"])


def check_served(plan: dict[str, Any]) -> dict[str, Any]:
    """Every verify port serves Caddy's certificate (mox's own when Caddy has none, or while a
    key change is held for DANE); and the DANE hash of the key mox serves."""
    mox_cert = (plan.get("mox") or {}).get("cert")
    # held for DANE: mox keeps serving its own certificate, on purpose
    expected = mox_cert if plan["action"] == HOLD else plan["caddy"]["cert"] or mox_cert
    served = plan.get("served_all") or []
    if not served:
        why = "; ".join(plan.get("warnings") or []) or "no port to check"
        return _check("served", False, f"not checked: {why}")
    problems = []
    for entry in served:
        if entry["error"] is not None:
            problems.append(f"{entry['target']}: {entry['error']}")
        elif expected is None or entry["sha256"] != expected["sha256"]:
            want = f", not sha256={short(expected['sha256'])}" if expected else ""
            problems.append(f"{entry['target']} serves sha256={short(entry['sha256'])}{want}")
    keys = served_keys(plan)
    dane = f"; TLSA 3 1 1 {', '.join(keys)}" if keys else ""
    if problems:
        return _check("served", False, "; ".join(problems) + dane)
    ports = ", ".join(str(entry["port"]) for entry in served)
    return _check("served", True, f"{ports} serve sha256={short(served[0]['sha256'])}{dane}")


def check_dane(plan: dict[str, Any]) -> dict[str, Any]:
    """Every TLSA RRset of the name has a record for the key mox serves (`dane_served`, looked
    up on the host), and no key change waits for the operator (waiting out TTLs is fine)."""
    served = plan.get("dane_served")
    if not isinstance(served, dict) or not isinstance(served.get("detail"), str):
        served = {"ok": served is None, "detail": "not checked" if served is None else "bad state"}
    dane = plan.get("dane")
    if plan["action"] == HOLD and dane is not None:
        dane = dane_fields(dane)
        since = f"{HOLD} since {dane['since']}"
        if dane["operator"]:
            return _check("dane", False, f"{since}: {plan['detail']}")
        waits = f"installed from {dane['until']} on" if dane["until"] else "records being published"
        return _check("dane", served["ok"] is True, f"{since} ({waits}); {served['detail']}")
    return _check("dane", served["ok"] is True, served["detail"])


def cron_problem(settings: HostSettings, state: dict[str, Any]) -> str | None:
    """What is wrong with the host's cron job and the files it runs (for every name of it)."""
    problem = host_problem(state)  # e.g. another user can replace what root's cron job runs
    if problem:
        return problem
    stale = files_to_install(state, host_files(settings))
    if not stale:
        return None
    kinds = {path: state["files"].get(path, {}).get("kind") for path in stale}
    which = ", ".join(
        f"{path} {'missing' if kinds[path] == 'missing' else 'differs'}" for path in stale
    )
    return f"{which}: run the deploy"


def check_cron(
    settings: HostSettings, state: dict[str, Any], name: str, now: dt.datetime, problem: str | None
) -> dict[str, Any]:
    if problem:
        return _check("cron", False, problem)
    run = state["last_runs"].get(name)
    if run is None:
        return _check("cron", True, f"installed ({settings.cron_schedule}); no run logged yet")
    when = run["time"]
    with contextlib.suppress(ValueError):  # a log line's time is whatever the log holds
        when = f"{when} ({ago(now - parse_utc(when))} ago)"
    detail = f"last run {when}: {run['status']}"
    if not run["ok"]:
        detail += f": {run['detail']}"
    return _check("cron", bool(run["ok"]), detail)


def name_report(
    settings: HostSettings,
    state: dict[str, Any],
    name: str,
    now: dt.datetime,
    cron: str | None,
) -> dict[str, Any]:
    """The seven checks of `name`; `cron`: what is wrong with the host's cron job (cron_problem)."""
    plan = state["names"][name]
    checks = [
        check_caddy(plan, now),
        check_mox_files(settings, state, name, plan),
        check_equal(plan),
        check_mox_conf(plan),
        check_served(plan),
        check_cron(settings, state, name, now, cron),
        check_dane(plan),
    ]
    return {"ok": all(c["ok"] for c in checks), "checks": checks}


def host_report(
    settings: HostSettings, state: dict[str, Any] | str, now: dt.datetime
) -> dict[str, Any]:
    if isinstance(state, str) or state["error"] is not None:
        error = state if isinstance(state, str) else state["error"]
        return {"ok": False, "error": error, "names": {}}
    try:
        cron = cron_problem(settings, state)
        names = {name: name_report(settings, state, name, now, cron) for name in state["names"]}
    except Exception as error:  # a state the schema let through yet no check foresaw: this host's
        return {"ok": False, "error": unreportable(error), "names": {}}
    return {"ok": all(n["ok"] for n in names.values()), "error": None, "names": names}


def unreportable(error: Exception) -> str:
    return printable(f"its state cannot be reported ({type(error).__name__}: {error})")


def fleet_report(
    settings: dict[str, HostSettings], states: dict[str, dict[str, Any] | str], now: dt.datetime
) -> dict[str, Any]:
    hosts = {host: host_report(settings[host], state, now) for host, state in states.items()}
    return {"ok": all(h["ok"] for h in hosts.values()), "hosts": hosts}


def exit_status(report: dict[str, Any]) -> int:
    if any(host["error"] is not None for host in report["hosts"].values()):
        return EXIT_UNKNOWN
    return EXIT_OK if report["ok"] else EXIT_FAILED


def as_json(report: dict[str, Any]) -> str:
    return json.dumps(report, indent=2)


def _verdict(name: dict[str, Any]) -> str:
    failed = [c for c in name["checks"] if not c["ok"]]
    if not failed:
        return "ok"
    more = f" (+{len(failed) - 1} more)" if len(failed) > 1 else ""
    return f"FAIL {TITLES[failed[0]['check']]}: {failed[0]['detail']}{more}"


def served_keys(plan: dict[str, Any]) -> list[str]:
    """The DANE `3 1 1` hashes of the keys mox serves for the name (one, when all is well)."""
    return sorted({e["spki_sha256"] for e in plan.get("served_all") or [] if e["error"] is None})


def _host_rows(
    host: str, result: dict[str, Any], state: dict[str, Any], now: dt.datetime
) -> tuple[list[tuple[str, str, str, str]], list[tuple[str, str]]]:
    rows, records = [], []
    for name, checks in result["names"].items():
        plan = state["names"][name]
        cert = plan["caddy"]["cert"]
        rows.append((host, name, expiry(cert, now) if cert else "-", _verdict(checks)))
        records += [(host, tlsa_record(name, key)) for key in served_keys(plan)]
    return rows, records


def as_table(
    report: dict[str, Any], states: dict[str, dict[str, Any] | str], now: dt.datetime
) -> str:
    """A line per host and name (the first failed check spelled out), then the DANE records of
    the keys mox serves."""
    rows = [("HOST", "NAME", "CADDY'S CERTIFICATE EXPIRES", "STATUS")]
    records = []
    for host, result in report["hosts"].items():
        state = states[host]
        if result["error"] is not None or isinstance(state, str):
            rows.append((host, "-", "-", f"UNKNOWN {result['error']}"))
            continue
        try:
            found = _host_rows(host, result, state, now)
        except Exception as error:  # as in host_report: this host's line, never a traceback
            rows.append((host, "-", "-", f"UNKNOWN {unreportable(error)}"))
            continue
        rows += found[0]
        records += found[1]
    # escaped: a link's target or a certificate's names are what the mox user wrote
    rows = [(printable(a), printable(b), printable(c), printable(d)) for a, b, c, d in rows]
    widths = [max(len(row[column]) for row in rows) for column in range(3)]
    lines = ["  ".join([*(row[i].ljust(w) for i, w in enumerate(widths)), row[3]]) for row in rows]
    if records:
        lines += [
            "",
            "DANE: the TLSA 3 1 1 records of the keys mox serves"
            " (publish those of the names MX records name):",
        ]
        lines += [f"  {host.ljust(widths[0])}  {record}" for host, record in records]
    return "\n".join(lines) + "\n"

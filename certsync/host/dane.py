"""DANE-safe key changes (RFC 7671 §8.1): a new key is installed only once its TLSA `3 1 1`
record is answered by every authoritative server of the zone and by the host's resolver, and two
TTLs of the RRset later. A name without TLSA records is not using DANE and is installed as
always; a DNS failure holds the change (never installs blindly); once mox's certificate expires
within `dane_deadline_days` the change is installed anyway, with an alert naming the record.

What a hold remembers across runs (when it started, when its record was first seen everywhere,
when the publish command added it, the old records to delete once mox serves the new key) is a
root-only record beside the lock (records.py), written by the sync under the lock only; the
state read computes the same decision without writing. A wildcard name is skipped:
`_25._tcp.*.example.com` is not where any sender looks.
"""

from __future__ import annotations

import datetime as dt
import re
import subprocess
import time

from . import records
from .errors import printable, reason
from .output import TIME_FORMAT
from .record import Record
from .settings import Config

TYPE_CHECKING = False  # typing's costs an import on every run
if TYPE_CHECKING:
    from typing import Any

    from .tlsa import TlsaLookup
    from .x509 import CertInfo

DANE_FILE = "dane.json"  # {"held": {name: {...}}, "delete": [line, ...]}
DNS_BUDGET_SECONDS = 20.0  # every DNS lookup of one run together
PUBLISH_TIMEOUT = 60  # one run of the publish command
REPUBLISH_SECONDS = 24 * 3600  # an add that exited 0 yet is not visible is sent again after this
MAX_DELETES = 64  # old records waiting to be deleted (the record is bounded)
MAX_TTL = 7 * 24 * 3600  # a TTL larger than this is taken as this (what resolvers cap it at)
OUTPUT_TAIL = 4096  # bytes of the publish command's output kept
LINE = re.compile(r"(add|delete) (_[0-9]{1,5}\._tcp\.[a-z0-9.-]+\.) TLSA 3 1 1 ([0-9a-f]{64})")


def lookup(owner: str, deadline: float) -> TlsaLookup:
    """The TLSA RRset at `owner` as the authoritative servers and the resolver answer it."""
    from .tlsa import lookup_tlsa

    return lookup_tlsa(owner, deadline)


def tlsa_311(spki_sha256: str) -> str:
    """`3 1 1 <hex>`: the DANE-EE record that pins the key whose SPKI hashes to this."""
    from .tlsa import record_text

    return record_text(3, 1, 1, bytes.fromhex(spki_sha256))


def _same(a: str, b: str) -> bool:
    return a.split() == b.lower().split()


def _has(records_: list[str], text: str) -> bool:
    return any(_same(text, found) for found in records_)


def _stamp(seconds: int | float | None) -> str | None:
    if seconds is None:
        return None
    return dt.datetime.fromtimestamp(int(seconds), dt.timezone.utc).strftime(TIME_FORMAT)


class Dane(Record):
    """The DANE decision for one name's key change."""

    held: bool
    detail: str  # why held; for an install, what the operator must still do ("" when nothing)
    operator: bool  # waits for the operator (a record to publish, a DNS lookup that fails)
    since: int  # held since (Unix time); the state read's own time when not held yet
    until: int | None  # waiting out two TTLs: installed from then on
    publish: list[str]  # the records to publish, `<owner> IN TLSA 3 1 1 <hex>`
    add: list[str]  # what the publish command gets while held
    deletes: list[str]  # what it gets once mox serves the new key
    alert: bool  # installed anyway (the deadline), with a record still missing: tell
    memory: dict[str, Any]  # what the sync remembers for the name while held
    added: int | None  # when the publish command last added the records (exit 0)
    failure: str | None = None  # the hold's detail with why the publish command failed
    published: bool = False  # the new key's record was answered everywhere (checked in DNS)

    def to_json(self) -> dict[str, Any]:
        return {
            "held": self.held,
            "detail": self.detail,
            "operator": self.operator,
            "since": _stamp(self.since),
            "until": _stamp(self.until),
            "publish": self.publish,
            "added": _stamp(self.added),
            "published": self.published,
        }


class DaneRun:
    """The DANE decisions of one run: every DNS lookup of the run shares DNS_BUDGET_SECONDS,
    counted from the first lookup (a run that changes no key looks nothing up)."""

    def __init__(self, config: Config, now: dt.datetime) -> None:
        self.config = config
        self.now = int(now.timestamp())
        self._deadline: float | None = None
        self._memory: dict[str, Any] | None = None
        self.added: set[str] = set()  # the add lines the publish command was given this run

    @property
    def memory(self) -> dict[str, Any]:
        if self._memory is None:
            self._memory = records.load(self.config, DANE_FILE)
        return self._memory

    def held(self) -> dict[str, Any]:
        held = self.memory.get("held")
        return held if isinstance(held, dict) else {}

    def pending_deletes(self) -> list[str]:
        found = self.memory.get("delete")
        return [line for line in found if isinstance(line, str)] if isinstance(found, list) else []

    def deadline(self) -> float:
        if self._deadline is None:
            self._deadline = time.monotonic() + DNS_BUDGET_SECONDS
        return self._deadline

    def lookups(self, name: str) -> list[TlsaLookup] | None:
        """The TLSA RRsets of `name` on each DANE port; None when DANE is off for it."""
        if self.config.dane == "off" or name.startswith("*."):
            return None
        from .tlsa import tlsa_owner

        return [lookup(tlsa_owner(port, name), self.deadline()) for port in self.config.dane_ports]

    def decide(self, name: str, new_spki: str, current: CertInfo | None) -> Dane | None:
        """Whether the key change of `name` to the key `new_spki` waits; None: install as ever
        (DANE off, a wildcard, or no TLSA records on any DANE port). `current`: the certificate
        mox has (its files, or what it serves when the files are not certsync's); None when
        neither is known: a name with TLSA records is then held (no deadline to count from)."""
        found = self.lookups(name)
        if found is None:
            return None
        want = tlsa_311(new_spki)
        errors = [
            f"DNS lookup of {f.owner} failed ({printable(str(f.error))})" for f in found if f.error
        ]
        used = [f for f in found if f.error is None and f.exists]
        if not errors and not used:
            return None
        before = self.held().get(name)
        before = before if isinstance(before, dict) and before.get("spki") == new_spki else {}
        since = self._time(before.get("since")) or self.now
        added = self._time(before.get("added"))
        # the largest TTL seen since the hold began: a TTL lowered with the new record does not
        # shorten the wait for what resolvers cached under the old one
        ttl = max([_ttl(before.get("ttl"))] + [min(f.ttl, MAX_TTL) for f in found if not f.error])
        old = tlsa_311(current.spki_sha256) if current is not None else None
        deletes = [
            f"delete {f.owner} TLSA {old}"
            for f in used
            if old is not None and not _same(old, want) and _everywhere_any(f, old)
        ]
        missing = [f for f in used if not _published(f, want)]
        publish = [f"{f.owner} IN TLSA {want}" for f in missing]
        add = [f"add {f.owner} TLSA {want}" for f in missing]
        memory: dict[str, Any] = {"spki": new_spki, "since": since, "added": added, "ttl": ttl}
        expires = current.not_after if current is not None else None
        days = self.config.dane_deadline_days
        late = expires is not None and expires - dt.timedelta(days=days) <= self._now_dt()
        if current is None:
            errors.append("the key mox has is not known (no files of certsync's, nothing served)")
        if errors or missing:
            problems = errors + [
                f"publish {f.owner} IN TLSA {want} (not answered by {_where(f, want)})"
                for f in missing
            ]
            if late:
                assert expires is not None
                when = f"certificate expires {expires.strftime('%Y-%m-%d')}, within {days} days"
                detail = f"installed without waiting for DANE (mox's {when}): " + "; ".join(
                    problems
                )
                return Dane(False, detail, True, since, None, publish, add, [], True, {}, added)
            operator = bool(errors) or not (
                self.config.dane_publish_command
                and added is not None
                and self.now - added < REPUBLISH_SECONDS
            )
            if missing and added is not None and self.now - added >= REPUBLISH_SECONDS:
                problems.append(
                    f"the publish command took these records at {_stamp(added)} and they are"
                    " still not answered everywhere"
                )
            detail = "; ".join(problems)
            return Dane(True, detail, operator, since, None, publish, add, [], False, memory, added)
        seen = self._time(before.get("seen")) or self.now
        until = seen + 2 * ttl
        if self.now >= until:
            return Dane(
                False, "", False, since, None, [], [], deletes, False, {}, added, None, True
            )
        if late:
            assert expires is not None
            detail = (
                f"installed before two TTLs ({2 * ttl} s) of {want} passed, at {_stamp(until)}"
                f" (mox's certificate expires {expires.strftime('%Y-%m-%d')}, within {days}"
                " days): resolvers may still answer the old records"
            )
            return Dane(
                False, detail, True, since, None, [], [], deletes, True, {}, added, None, True
            )
        memory.update(seen=seen, ttl=ttl, deletes=deletes)  # for a run that dies installing
        detail = (
            f"{want} is answered everywhere for {', '.join(f.owner for f in used)}; waiting two"
            f" TTLs ({2 * ttl} s) before installing the new key"
        )
        return Dane(True, detail, False, since, until, [], [], deletes, False, memory, added)

    def _time(self, value: Any) -> int | None:
        """A time from the record: a Unix time in [1, now], else None (start anew)."""
        value = _int(value)
        return value if value is not None and 1 <= value <= self.now else None

    def _now_dt(self) -> dt.datetime:
        return dt.datetime.fromtimestamp(self.now, dt.timezone.utc)

    def served_check(self, name: str, served_spkis: list[str]) -> dict[str, Any]:
        """For `certsync status`: whether every TLSA RRset of `name` has a record for each key
        mox serves, everywhere."""
        if self.config.dane == "off":
            return {"ok": True, "detail": "not checked (certsync_dane is off)"}
        if name.startswith("*."):
            return {"ok": True, "detail": "not checked for a wildcard name"}
        if not served_spkis:
            return {"ok": False, "detail": "not checked: mox serves no key to check"}
        try:
            found = self.lookups(name) or []
        except Exception as error:  # a bug: said, never a crash of the state read
            return {"ok": False, "detail": f"unexpected error ({type(error).__name__}: {error})"}
        problems, fine = [], []
        for f in found:
            if f.error:
                problems.append(f"DNS lookup of {f.owner} failed ({printable(str(f.error))})")
            elif not f.exists:
                fine.append(f"{f.owner}: no TLSA records (DANE not used)")
            else:
                for spki in served_spkis:
                    want = tlsa_311(spki)
                    if _published(f, want):
                        fine.append(f"{f.owner} IN TLSA {want}")
                    else:
                        problems.append(
                            f"{f.owner} has no {want} for the key mox serves"
                            f" (not answered by {_where(f, want)})"
                        )
        if problems:
            return {"ok": False, "detail": "; ".join(problems)}
        return {"ok": True, "detail": "; ".join(fine)}

    def lines(self, lines: list[str], keep: set[str]) -> list[str]:
        """The lines of `lines` the publish command may get: `add` or `delete` of a `3 1 1`
        record at a DANE port of a configured name, once each; no delete of a record that pins
        a key of `keep` (SPKI hashes: mox's, Caddy's, held changes') or that an add of this run
        sent. Nothing while DANE is off. (The record of pending deletes is root's, yet a line
        is checked where it is used.)"""
        if self.config.dane == "off":
            return []
        from .tlsa import tlsa_owner

        owners = {
            tlsa_owner(port, name)
            for name in self.config.names
            if "*" not in name
            for port in self.config.dane_ports
        }
        chosen: list[str] = []
        for line in lines:
            match = LINE.fullmatch(line)
            if match is None or match[2] not in owners or line in chosen:
                continue
            undoes = f"add {match[2]} TLSA 3 1 1 {match[3]}" in self.added
            if match[1] == "delete" and (match[3] in keep or undoes):
                continue
            chosen.append(line)
        return chosen

    def save(self, held: dict[str, Any], deletes: list[str]) -> None:
        """Remember the holds of this run's names and the deletes still to do (when changed)."""
        record = {"held": held, "delete": deletes[-MAX_DELETES:]}
        if record != {"held": self.held(), "delete": self.pending_deletes()}:
            records.save(self.config, DANE_FILE, record)
            self._memory = record


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _ttl(value: Any) -> int:
    value = _int(value)
    return min(value, MAX_TTL) if value is not None and value > 0 else 0


def _published(found: TlsaLookup, want: str) -> bool:
    from .tlsa import published_everywhere

    return published_everywhere(found, want)


def _everywhere_any(found: TlsaLookup, text: str) -> bool:
    """Whether any server (or the resolver) answers `text` at this owner."""
    return _has(found.resolver_records, text) or any(
        _has(answers, text) for answers in found.servers.values()
    )


def _where(found: TlsaLookup, want: str) -> str:
    places = [
        f"{address} (authoritative)"
        for address, answers in sorted(found.servers.items())
        if not _has(answers, want)
    ]
    if not _has(found.resolver_records, want):
        places.append("the host's resolver")
    return ", ".join(places) or "every server"


def run_publish(config: Config, lines: list[str]) -> str | None:
    """Run the publish command with `lines` on its standard input; why it failed, or None. It
    runs in a session of its own, killed whole at the timeout; what is said never quotes the
    command line (it may hold a TSIG secret)."""
    import contextlib
    import os
    import shlex
    import signal

    try:
        process = subprocess.Popen(
            shlex.split(config.dane_publish_command),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    except (OSError, ValueError) as error:
        return f"the DANE publish command failed: {printable(reason(error))}"
    try:
        output, _ = process.communicate(
            "".join(line + "\n" for line in lines).encode(), timeout=PUBLISH_TIMEOUT
        )
    except subprocess.TimeoutExpired:
        with contextlib.suppress(OSError):  # (gone already)
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        return f"the DANE publish command timed out after {PUBLISH_TIMEOUT} s"
    finally:
        for pipe in (process.stdin, process.stdout):
            if pipe is not None:
                pipe.close()
    if process.returncode != 0:
        text = " ".join(output[-OUTPUT_TAIL:].decode(errors="replace").split())[-300:]
        return f"the DANE publish command failed (exit {process.returncode}): {printable(text)}"
    return None

"""The decision for one name, made the same way for the preview (`state`) and the sync: in sync,
repair (owner or mode), install, restart (mox serves something else than its files) or refuse."""

from __future__ import annotations

import datetime as dt
import errno
import hashlib
import os
import stat

from . import backoff, records
from .actions import HOLD, IN_SYNC, INSTALL, REFUSE, REPAIR, RESTART  # noqa: F401 (plan's API too)
from .caddy import Choice, Pair, choose_pair
from .dane import Dane, DaneRun
from .errors import printable, reason
from .files import FILE, LINK, MISSING, FileState, open_dir
from .layout import read_pair
from .moxconf import MAX_CONFIG_BYTES, Target, listener_targets, protocol_of_port
from .names import server_name, storage_name
from .output import TIME_FORMAT
from .owners import (  # noqa: F401 (CERT_MODE, DIR_MODE, file_meta_json: plan's API too)
    CERT_MODE,
    DIR_MODE,
    KEY_MODE,
    file_meta_json,
    foreign_folder,
    mox_ids,
)
from .probe import PROBE_ERRORS, served_certificate, served_fingerprint
from .record import Record
from .settings import Config
from .validity import describe, downgrade_problem, unprotected_because
from .x509 import CertInfo, cert_info, check_key_matches, parse_chain

TYPE_CHECKING = False  # typing's costs an import on every run
if TYPE_CHECKING:
    from typing import Any


class Current(Record):
    """mox's files for a name as found, and what they hold."""

    crt: FileState
    key: FileState
    info: CertInfo | None
    unprotected: str | None  # why it may be replaced even by an older certificate; None: keep it
    generation: str | None = None  # both files are certsync's links into this folder (layout.py)
    unusable: str | None = "no certificate"  # why mox could not start with this pair; None: it can

    @property
    def pair_loads(self) -> bool:
        """A certificate and the key that belongs to it: mox can start with it."""
        return self.unusable is None

    def describe(self) -> str:
        if self.crt.kind != FILE:
            return self.crt.describe()
        if self.info is None:
            return self.unprotected or "a certificate file"
        what = f"{describe(self.info)}"
        return f"{self.unprotected} ({what})" if self.unprotected else what


class Served(Record):
    target: Target
    sha256: str | None
    error: str | None
    info: CertInfo | None = None  # None when it does not parse


class MoxConf(Record):
    """Whether mox.conf names the name's two files in a listener's TLS KeyCerts (None: mox.conf
    cannot be read), and what was found."""

    names_files: bool | None
    detail: str

    def to_json(self) -> dict[str, Any]:
        return {"names_files": self.names_files, "detail": self.detail}


class NamePlan(Record):
    name: str
    action: str
    detail: str
    choice: Choice | None
    current: Current | None
    targets: list[Target]
    served: Served | None
    warnings: list[str] = []
    mox_conf: MoxConf | None = None
    files_equal: bool | None = None  # mox's files byte for byte Caddy's chosen pair (None: no pair)
    dane: Dane | None = None  # a key change's DANE decision (None: none made)

    @property
    def pair(self) -> Pair | None:
        return self.choice.pair if self.choice else None

    @property
    def key_changes(self) -> bool:
        new = self.pair
        old = self.current.info if self.current else None
        return bool(new and (old is None or old.spki_sha256 != new.info.spki_sha256))

    def to_json(self) -> dict[str, Any]:
        """Everything public: no key bytes, not even their hash."""
        pair, current = self.pair, self.current
        return {
            "action": self.action,
            "detail": self.detail,
            "caddy": {
                "issuer": pair.issuer if pair else None,
                "cert": pair.info.to_json() if pair else None,
                "candidates": [
                    c.to_json() for c in (self.choice.candidates if self.choice else [])
                ],
            },
            "mox": None
            if current is None
            else {
                "crt": file_meta_json(current.crt),
                "key": file_meta_json(current.key),
                "cert": current.info.to_json() if current.info else None,
                "unprotected": current.unprotected,
                "replaces": current.describe(),
                # the generation folder both files link into (layout.py); None: not that layout
                "generation": current.generation,
            },
            "key_changes": self.key_changes,
            "targets": [str(t) for t in self.targets],
            "served": None
            if self.served is None
            else {
                "target": str(self.served.target),
                "sha256": self.served.sha256,
                "error": self.served.error,
            },
            "warnings": self.warnings,
            "mox_conf": self.mox_conf.to_json() if self.mox_conf else None,
            "files_equal": self.files_equal,
            "dane": self.dane.to_json() if self.dane else None,
        }


LAYOUT_NOTE = "into a generation folder that one rename switches"
INSTALLED = "installed.json"  # name -> sha256 of the certificate certsync last put in place


def current_files(
    dir_fd: int | None, name: str, now: dt.datetime, installed: str | None = None
) -> Current:
    """mox's files for `name`; `installed`: the fingerprint of the certificate certsync last
    installed for it (or found equal to Caddy's). Only that one is kept from a downgrade: the
    mox user can write anything else there, a certificate of a CA of its own making too."""
    stored = storage_name(name)
    if dir_fd is None:
        return Current(FileState(MISSING), FileState(MISSING), None, "nothing")
    crt, key, gen = read_pair(dir_fd, stored)
    if crt.kind != FILE or crt.data is None:
        return Current(crt, key, None, crt.describe(), gen, f"its certificate is {crt.describe()}")
    try:
        info = parse_chain(crt.data)[0]
    except ValueError as error:
        why = f"a certificate file that does not parse ({error})"
        return Current(crt, key, None, why, gen, why)
    try:
        if key.kind != FILE or key.data is None:
            raise ValueError(f"its key is {key.describe()}")
        check_key_matches(crt.data, key.data)
        unusable = None
    except ValueError as error:
        unusable = f"a certificate whose key is unusable ({error})"
    unprotected = unprotected_because(info, name, now) or unusable
    if unprotected is None and info.fingerprint != installed:
        unprotected = "a certificate certsync did not install"
    return Current(crt, key, info, unprotected, gen, unusable)


def read_mox_config(path: str) -> str:
    """mox.conf's text (its first MB). It may be the mox user's file: a link on the way (to
    /proc/kmsg, say), a FIFO or a device planted there is refused, without blocking on it."""
    dir_fd = open_dir(os.path.dirname(path))
    try:
        flags = os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC
        fd = os.open(os.path.basename(path), flags, dir_fd=dir_fd)
    except OSError as error:
        if error.errno == errno.ELOOP:
            raise OSError(errno.ELOOP, "is a symlink; not read", path) from None
        raise
    finally:
        os.close(dir_fd)
    with os.fdopen(fd, "rb") as file:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, "not a regular file", path)
        return file.read(MAX_CONFIG_BYTES).decode("utf-8", "replace")


def mox_files(cert_dir: str, name: str) -> tuple[str, str]:
    """The paths of mox's certificate and key files for `name` in mox's folder `cert_dir`."""
    stored = os.path.join(cert_dir, storage_name(name))
    return stored + ".crt", stored + ".key"


def verify_targets(config: Config, name: str) -> tuple[list[Target], list[str], MoxConf]:
    """Where to check what mox serves for `name`, warnings when that cannot be known, and whether
    mox.conf names the name's files at all."""
    ports = list(config.verify_ports)
    cert_file, key_file = mox_files(config.mox_cert_dir, name)
    pair = f"{cert_file} and {key_file}"
    try:
        text = read_mox_config(config.mox_config)
    except OSError as error:
        problem = f"cannot read {config.mox_config} to find mox's listeners ({reason(error)})"
        found, mox_conf = None, MoxConf(None, problem)
    else:
        found = listener_targets(
            text, os.path.dirname(config.mox_config), cert_file, key_file, ports
        )
        if found is None:
            problem = (
                f"no listener in {config.mox_config} names {pair} in TLS KeyCerts:"
                " mox does not serve these files"
            )
            mox_conf = MoxConf(False, problem)
        else:
            mox_conf = MoxConf(True, f"a listener in {config.mox_config} names {pair}")
    if config.verify_address:
        return [Target(config.verify_address, p, protocol_of_port(p)) for p in ports], [], mox_conf
    if found is None:
        return [], [mox_conf.detail], mox_conf
    if not found:
        warning = (
            f"mox's listeners with {cert_file} enable none of the ports {ports}: nothing to check"
        )
        return [], [warning], mox_conf
    return found, [], mox_conf


def probe(targets: list[Target], name: str) -> Served | None:
    if not targets:
        return None
    try:
        der = served_certificate(targets[0], server_name(name))
    except PROBE_ERRORS as error:
        return Served(targets[0], None, printable(reason(error)))
    try:
        info: CertInfo | None = cert_info(der)
    except ValueError:
        info = None
    return Served(targets[0], hashlib.sha256(der).hexdigest(), None, info)


def answers(targets: list[Target], name: str) -> bool:
    """Whether mox serves a certificate on one of `targets` at least."""
    for target in targets:
        try:
            served_fingerprint(target, server_name(name))
        except PROBE_ERRORS:
            continue
        return True
    return False


def probe_all(targets: list[Target], name: str) -> list[dict[str, Any]]:
    """What every target serves: its certificate's sha256, public key hash (DANE `3 1 1`) and
    expiry, or why nothing usable answers (for the status report and the metrics)."""
    result = []
    for target in targets:
        entry: dict[str, Any] = {"target": str(target), "port": target.port, "error": None}
        try:
            info = cert_info(served_certificate(target, server_name(name)))
        except PROBE_ERRORS as error:
            entry["error"] = printable(reason(error))  # a server's reply may be in it
        except ValueError as error:
            entry["error"] = f"what it serves does not parse ({error})"
        else:
            entry.update(
                sha256=info.fingerprint,
                spki_sha256=info.spki_sha256,
                not_after=info.not_after.strftime(TIME_FORMAT),
            )
        result.append(entry)
    return result


def _cannot_wait(current: Current, served: Any, targets: list[Target], name: str) -> str | None:
    """Why a DANE hold must not keep mox's pair: mox answers on none of its ports, or its pair
    does not load (mox would not start with it) and mox serves nothing that the hold keeps. While
    mox still serves the key the records pin, the hold keeps it: should mox stop, the next run
    (the cron job's at boot) finds it answering on none of its ports and installs."""
    up = served is not None and (served.sha256 is not None or answers(targets[1:], name))
    if served is not None and not up:
        return f"mox answers on none of its checked ports: {served.error}"
    if not current.pair_loads and LINK not in (current.crt.kind, current.key.kind) and not up:
        return f"mox's pair does not load: {current.unusable}"
    return None


def plan_or_refusal(config: Config, name: str, *args: Any, **kwargs: Any) -> NamePlan:
    """plan_name; an error that no check foresaw refuses that name alone, nothing changed."""
    try:
        return plan_name(config, name, *args, **kwargs)
    except Exception as error:
        why = f"unexpected error while reading its state ({type(error).__name__}: {error})"
        return NamePlan(name, REFUSE, printable(why), None, None, [], None)


def plan_name(
    config: Config,
    name: str,
    dir_fd: int | None,
    now: dt.datetime,
    force: bool = False,
    dir_right: bool = True,
    check_served: bool = True,
    dane: DaneRun | None = None,
) -> NamePlan:
    """What a sync does for `name` now. `dir_fd`: mox's certificate folder (None: missing).
    `dane`: the run's DANE decisions (their DNS lookups share one time budget)."""
    choice = choose_pair(
        config.caddy_data_dir,
        name,
        now,
        dt.timedelta(hours=config.min_validity_hours),
        config.trusted_ca_file if config.require_trusted_chain else None,
    )
    current = current_files(dir_fd, name, now, records.load(config, INSTALLED).get(name))
    targets, warnings, mox_conf = verify_targets(config, name)
    served = probe(targets, name) if check_served else None
    if served is not None and served.error is not None:
        warnings.append(f"mox does not answer on {served.target}: {served.error}")
    pair = choice.pair
    same = pair is not None and current.crt.data == pair.cert and current.key.data == pair.key

    def plan(action: str, detail: str) -> NamePlan:
        if action in (INSTALL, RESTART) and pair is not None:
            entry = backoff.held(config, name, pair.info.fingerprint, now)
            if entry is not None:
                warnings.append(backoff.describe(entry))
        return NamePlan(
            name,
            action,
            detail,
            choice,
            current,
            targets,
            served,
            warnings,
            mox_conf,
            same if pair is not None else None,
        )

    if pair is None:
        return plan(REFUSE, choice.refusal or "no certificate")
    new = f"{describe(pair.info)} from {pair.issuer}"
    if same and not force:
        uid, gid = mox_ids(config)
        drift = [
            f"{storage_name(name)}{suffix}"
            for suffix, state, mode in (
                (".crt", current.crt, CERT_MODE),
                (".key", current.key, KEY_MODE),
            )
            if (state.uid, state.gid, state.mode) != (uid, gid, mode)
        ]
        if not dir_right:
            drift.insert(0, config.mox_cert_dir)
        fixes = [f"owner or mode of {', '.join(drift)}"] if drift else []
        if current.generation is None:
            fixes.append(f"{storage_name(name)}.crt and .key become links ({LAYOUT_NOTE})")
        fix = "".join(f"; {f}" for f in fixes)
        if (
            served is not None
            and served.sha256 is not None
            and served.sha256 != pair.info.fingerprint
        ):
            return plan(
                RESTART,
                f"mox serves sha256={served.sha256[:16]} on {served.target},"
                f" not its files' {new}{fix}",
            )
        if served is not None and served.sha256 is None and not answers(targets[1:], name):
            return plan(
                RESTART,
                f"mox answers on none of its checked ports ({', '.join(map(str, targets))}):"
                f" {served.error}; its files hold {new}{fix}",
            )
        if fixes:
            return plan(REPAIR, f"{'; '.join(fixes)} ({new})")
        return plan(IN_SYNC, new)
    if current.info is not None and current.unprotected is None:
        problem = downgrade_problem(pair.info, current.info)
        if problem:
            return plan(REFUSE, problem)
    checked = "; chain checked on the host" if config.require_trusted_chain else ""
    forced = "forced; " if same else ""
    result = plan(INSTALL, f"{forced}{new}, replacing {current.describe()}{checked}")
    # mox's files are its user's to write: when certsync did not install them, what mox serves
    # tells the key that DANE records pin
    basis = current.info
    if basis is None or current.unprotected is not None:
        basis = served.info if served is not None else None
    changes = basis is None or basis.spki_sha256 != pair.info.spki_sha256
    if (changes or result.key_changes) and not force:  # --force installs a held key change now
        decision = (dane or DaneRun(config, now)).decide(name, pair.info.spki_sha256, basis)
        result.dane = decision
        urgent = _cannot_wait(current, served, targets, name)
        if decision is not None and decision.held and urgent:
            # holding would keep mox with nothing to serve (at its next start, or now): the
            # new key now, told with the record still to publish
            decision.held, decision.alert, decision.memory = False, True, {}
            decision.detail = f"installed without waiting for DANE ({urgent}): {decision.detail}"
        if decision is not None and decision.held:
            result.action, result.detail = (
                HOLD,
                f"{decision.detail} (mox keeps {current.describe()})",
            )
        elif decision is not None and decision.detail:
            result.detail += f"; {decision.detail}"
    return result

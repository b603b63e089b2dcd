#!/usr/bin/env python3
"""certsync host program: make mox's certificate files equal to Caddy's, on this host.

Runs on the mail host with nothing but Python's standard library. The pyinfra deploy and the cron
job both run `certsync.py sync --config /etc/certsync/config.json`; this file is the one
implementation of the transaction: pick Caddy's newest valid pair, validate it, back up mox's
files, install atomically, `mox config test`, restart mox once, verify what mox serves, and roll
back on any failure.

Private keys are read and written here only: never printed, logged or passed on.
The pure functions near the top (names, validity, choice) are also imported by the controller.

Exit status (the last line printed says it too when it is not 0):
  0  every name is in sync, installed or repaired
  1  some names were refused (no valid pair in Caddy, a symlinked folder...): nothing changed for
     them; the other names were synced
  2  usage or settings error: nothing was done
  3  an install or repair failed; mox's previous files were kept or restored (rolled back)
  4  an install failed and restoring mox's previous files (or serving them again) failed too:
     look at the host now; the previous files are in the newest backup

A dropped SSH session does not stop a sync half-way: SIGHUP is ignored and output to a closed
stdout is dropped, so the transaction ends as it would have (installed, or rolled back).
"""

from __future__ import annotations

import argparse
import base64
import binascii
import contextlib
import dataclasses
import datetime as dt
import errno
import fcntl
import grp
import hashlib
import imaplib
import json
import os
import pwd
import re
import shlex
import signal
import smtplib
import socket
import ssl
import stat
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence

CERT_MODE = 0o644
KEY_MODE = 0o600
DIR_MODE = 0o700
STARTTLS_SMTP_PORTS = frozenset({25, 587})
STARTTLS_IMAP_PORTS = frozenset({143})
BACKUP_TIME_FORMAT = "%Y%m%dT%H%M%S%fZ"
LOCK_WAIT_SECONDS = 300

EXIT_OK = 0
EXIT_REFUSED = 1
EXIT_USAGE = 2
EXIT_ROLLED_BACK = 3
EXIT_RESTORE_FAILED = 4
EXIT_MEANINGS = {
    EXIT_REFUSED: "some names were refused; nothing changed for them",
    EXIT_USAGE: "usage or settings error; nothing was done",
    EXIT_ROLLED_BACK: "an install failed; mox's previous files were kept or restored",
    EXIT_RESTORE_FAILED: "an install failed and restoring mox's previous files failed too",
}

HOST_NAME_RE = re.compile(
    r"(\*\.)?(?=.{1,253}\Z)[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*",
    re.IGNORECASE | re.ASCII,
)
PEM_BLOCK_RE = re.compile(
    rb"-----BEGIN ([A-Z0-9 ]+)-----\r?\n([A-Za-z0-9+/=\r\n]*?)-----END \1-----\r?\n?"
)


class Refused(Exception):
    """A name that cannot be synced; the message says why."""


class SymlinkedFolder(OSError):
    """A folder on the way to one certsync writes is a symlink: certsync refuses to follow it."""

    def __init__(self, path: str) -> None:
        super().__init__(errno.ELOOP, f"{path} is a symlink; refusing")
        self.path = path

    def __str__(self) -> str:
        return str(self.strerror)


def reason(error: BaseException) -> str:
    """A short text for an error: `strerror` of an OSError (with its file), else str()."""
    if isinstance(error, SymlinkedFolder):
        return str(error)
    if isinstance(error, OSError) and error.strerror:
        where = f": {error.filename}" if error.filename else ""
        return f"{error.strerror}{where}"
    return str(error) or type(error).__name__


# --- names and validity (shared with the controller) ------------------------------------------


def is_host_name(name: str) -> bool:
    return HOST_NAME_RE.fullmatch(name) is not None


def storage_name(name: str) -> str:
    """The folder and file name Caddy (certmagic) stores a certificate name under."""
    name = name.lower()
    return "wildcard_." + name[2:] if name.startswith("*.") else name


def name_covered(name: str, sans: Sequence[str]) -> bool:
    """Whether a certificate with these DNS SANs is valid for `name` (RFC 6125 wildcards)."""
    name = name.lower()
    for san in (s.lower() for s in sans):
        if san == name:
            return True
        if san.startswith("*.") and not name.startswith("*."):
            label, _, rest = name.partition(".")
            if label and rest == san[2:]:
                return True
    return False


@dataclasses.dataclass(frozen=True)
class CertInfo:
    """What certsync needs to know of a leaf certificate."""

    fingerprint: str  # sha256 of the leaf's DER, hex
    sans: tuple[str, ...]
    not_before: dt.datetime
    not_after: dt.datetime
    serial: str


def validity_problem(
    info: CertInfo, name: str, now: dt.datetime, min_validity: dt.timedelta
) -> str | None:
    if not name_covered(name, info.sans):
        return f"certificate is not valid for {name} (names: {', '.join(info.sans) or 'none'})"
    if info.not_before > now:
        return f"certificate is not valid yet (not before {info.not_before:%Y-%m-%d %H:%M} UTC)"
    if info.not_after <= now:
        return f"certificate expired at {info.not_after:%Y-%m-%d %H:%M} UTC"
    if info.not_after - now < min_validity:
        hours = int(min_validity.total_seconds() // 3600)
        return (
            f"certificate expires at {info.not_after:%Y-%m-%d %H:%M} UTC,"
            f" within the minimum validity of {hours} h"
        )
    return None


def downgrade_problem(new: CertInfo, current: CertInfo | None) -> str | None:
    if current is not None and new.not_before < current.not_before:
        return (
            f"Caddy's certificate (issued {new.not_before:%Y-%m-%d %H:%M} UTC) is older than"
            f" mox's (issued {current.not_before:%Y-%m-%d %H:%M} UTC); not downgrading"
        )
    return None


# --- PEM and X.509 with the standard library ---------------------------------------------------


def pem_blocks(data: bytes) -> list[tuple[str, bytes]]:
    """The PEM blocks of `data` as (label, DER); raises ValueError unless all of it is PEM."""
    blocks: list[tuple[str, bytes]] = []
    pos = 0
    for match in PEM_BLOCK_RE.finditer(data):
        if data[pos : match.start()].strip():
            raise ValueError("text outside PEM blocks")
        try:
            der = base64.b64decode(re.sub(rb"\s", b"", match.group(2)), validate=True)
        except binascii.Error as error:
            raise ValueError("invalid base64 in PEM block") from error
        if not der:
            raise ValueError("empty PEM block")
        blocks.append((match.group(1).decode(), der))
        pos = match.end()
    if not data.strip():
        raise ValueError("empty file")
    if not blocks and b"-----BEGIN " not in data:
        raise ValueError("no PEM block")
    if not blocks or data[pos:].strip():
        raise ValueError("incomplete PEM block (truncated file?)")
    return blocks


@contextlib.contextmanager
def memory_file(data: bytes) -> Iterator[str]:
    """A path to `data` that lives in memory only (for APIs that take a file name)."""
    fd = os.memfd_create("certsync", os.MFD_CLOEXEC)
    try:
        os.write(fd, data)
        yield f"/proc/self/fd/{fd}"
    finally:
        os.close(fd)


def _decode_cert(der: bytes) -> dict:
    pem = ssl.DER_cert_to_PEM_cert(der).encode()
    with memory_file(pem) as path:
        # The standard library's only X.509 parser; stable since Python 2.7.
        return ssl._ssl._test_decode_cert(path)  # type: ignore[attr-defined]


def _cert_time(value: str) -> dt.datetime:
    return dt.datetime.fromtimestamp(ssl.cert_time_to_seconds(value), dt.timezone.utc)


def parse_chain(data: bytes) -> tuple[CertInfo, list[bytes]]:
    """The leaf's CertInfo and every certificate's DER; raises ValueError for a bad chain."""
    blocks = pem_blocks(data)
    if any(label != "CERTIFICATE" for label, _ in blocks):
        raise ValueError("certificate file holds something else than certificates")
    ders = [der for _, der in blocks]
    try:
        decoded = [_decode_cert(der) for der in ders]
    except ssl.SSLError as error:
        raise ValueError(f"certificate does not parse ({ssl_reason(error)})") from error
    for index in range(1, len(decoded)):
        if decoded[index - 1].get("issuer") != decoded[index].get("subject"):
            raise ValueError("certificate chain is out of order (the leaf must come first)")
    leaf = decoded[0]
    info = CertInfo(
        fingerprint=hashlib.sha256(ders[0]).hexdigest(),
        sans=tuple(value for kind, value in leaf.get("subjectAltName", ()) if kind == "DNS"),
        not_before=_cert_time(leaf["notBefore"]),
        not_after=_cert_time(leaf["notAfter"]),
        serial=format(int(leaf.get("serialNumber", "0"), 16), "x"),  # as the controller writes it
    )
    return info, ders


def ssl_reason(error: ssl.SSLError) -> str:
    return getattr(error, "reason", None) or str(error)


def check_key_matches(cert_pem: bytes, key_pem: bytes) -> None:
    """Raise ValueError unless `key_pem` is the private key of the leaf of `cert_pem`."""
    blocks = pem_blocks(key_pem)
    if len(blocks) != 1 or not blocks[0][0].endswith("PRIVATE KEY"):
        raise ValueError("key file is not a single PEM private key")
    label, der = blocks[0]
    if label == "ED25519 PRIVATE KEY":  # Caddy's own label for PKCS#8 Ed25519 bytes
        label = "PRIVATE KEY"
    body = base64.encodebytes(der)
    normalized = f"-----BEGIN {label}-----\n".encode() + body + f"-----END {label}-----\n".encode()
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    with memory_file(cert_pem) as cert_path, memory_file(normalized) as key_path:
        try:
            # OpenSSL checks the key against the certificate (SSL_CTX_check_private_key).
            context.load_cert_chain(cert_path, key_path, password=lambda: b"")
        except ssl.SSLError as error:
            # NO_CERTIFICATE_ASSIGNED: a key of another type than the certificate's.
            if error.reason in ("KEY_VALUES_MISMATCH", "NO_CERTIFICATE_ASSIGNED"):
                raise ValueError("private key does not match the certificate") from error
            raise ValueError(f"private key does not load ({ssl_reason(error)})") from error


def untrusted_chain_problem(ders: Sequence[bytes], ca_file: str) -> str | None:
    """Why `openssl verify` does not trust the chain (leaf first) up to a CA of `ca_file`.

    Only certificates go to openssl, in memory: the leaf on stdin, the rest of the chain as
    -untrusted through a memfd. The private key is never involved.
    """
    leaf = ssl.DER_cert_to_PEM_cert(ders[0]).encode()
    rest = "".join(ssl.DER_cert_to_PEM_cert(der) for der in ders[1:]).encode()
    argv = ["openssl", "verify", "-CAfile", ca_file]
    chain_fd = None
    try:
        if rest:
            chain_fd = os.memfd_create("certsync-chain", 0)
            os.write(chain_fd, rest)
            argv += ["-untrusted", f"/proc/self/fd/{chain_fd}"]
        result = subprocess.run(
            argv,
            input=leaf,
            capture_output=True,
            pass_fds=(chain_fd,) if chain_fd is not None else (),
            timeout=60,
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        return f"the chain could not be checked (openssl verify: {reason(error)})"
    finally:
        if chain_fd is not None:
            os.close(chain_fd)
    if result.returncode == 0:
        return None
    lines = (result.stdout + result.stderr).decode(errors="replace").splitlines()
    why = next((line for line in lines if line.startswith("error ")), lines[-1] if lines else "")
    why = re.sub(r"^error \d+ at \d+ depth lookup: ", "", why)
    return f"certificate chain is not trusted by {ca_file} ({why.strip()[:200]})"


# --- files, never following links --------------------------------------------------------------


def open_dir(path: str, create_mode: int | None = None) -> int:
    """Open a directory by absolute path without following any symlink on the way."""
    if not os.path.isabs(path):
        raise ValueError(f"{path} is not an absolute path")
    fd = os.open("/", os.O_RDONLY | os.O_DIRECTORY)
    parts = [p for p in path.split("/") if p]
    try:
        for index, part in enumerate(parts):
            if part in (".", ".."):
                raise ValueError(f"{path} has a '.' or '..' component")
            last = index == len(parts) - 1
            if last and create_mode is not None:
                with contextlib.suppress(FileExistsError):
                    os.mkdir(part, create_mode, dir_fd=fd)
            try:
                next_fd = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
            except OSError as error:
                where = "/" + "/".join(parts[: index + 1])
                if error.errno in (errno.ELOOP, errno.ENOTDIR) and _is_link(fd, part):
                    raise SymlinkedFolder(where) from None
                error.filename = where
                raise
            os.close(fd)
            fd = next_fd
    except BaseException:
        os.close(fd)
        raise
    return fd


def _is_link(dir_fd: int, name: str) -> bool:
    try:
        return stat.S_ISLNK(os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode)
    except OSError:
        return False


@dataclasses.dataclass(frozen=True)
class FileState:
    data: bytes | None  # None: missing or not a regular file
    exists: bool
    uid: int = -1
    gid: int = -1
    mode: int = 0

    @property
    def is_regular(self) -> bool:
        return self.data is not None


def read_file(dir_fd: int, name: str) -> FileState:
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=dir_fd)
    except FileNotFoundError:
        return FileState(None, False)
    except OSError as error:
        if error.errno == errno.ELOOP:  # a symlink: never followed, replaced on install
            return FileState(None, True)
        raise
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            return FileState(None, True)
        chunks = []
        while chunk := os.read(fd, 1 << 16):
            chunks.append(chunk)
        return FileState(
            b"".join(chunks), True, info.st_uid, info.st_gid, stat.S_IMODE(info.st_mode)
        )
    finally:
        os.close(fd)


def stage_file(dir_fd: int, name: str, data: bytes, uid: int, gid: int, mode: int) -> str:
    """Write `data` to a new temporary file beside `name`, fsynced; return the temporary name."""
    temp = f".{name}.certsync-{os.getpid()}.tmp"
    with contextlib.suppress(FileNotFoundError):
        os.unlink(temp, dir_fd=dir_fd)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(temp, flags, 0o600, dir_fd=dir_fd)
    try:
        os.fchown(fd, uid, gid)
        os.fchmod(fd, mode)
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp, dir_fd=dir_fd)
        raise
    finally:
        os.close(fd)
    return temp


def replace_files(dir_fd: int, files: dict[str, tuple[bytes, int, int, int]]) -> None:
    """Replace each named file by (data, uid, gid, mode): all staged first, then renamed.

    A failure while staging (disk full, read-only) leaves every file as it was.
    """
    staged: dict[str, str] = {}
    try:
        for name, (data, uid, gid, mode) in files.items():
            staged[name] = stage_file(dir_fd, name, data, uid, gid, mode)
    except BaseException:
        for temp in staged.values():
            with contextlib.suppress(OSError):
                os.unlink(temp, dir_fd=dir_fd)
        raise
    for name, temp in staged.items():
        # rename() replaces a symlink planted at `name` instead of following it.
        os.rename(temp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    os.fsync(dir_fd)


def fix_owner_mode(dir_fd: int, name: str, uid: int, gid: int, mode: int) -> None:
    fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=dir_fd)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, f"{name} is not a regular file")
        os.fchown(fd, uid, gid)
        os.fchmod(fd, mode)
    finally:
        os.close(fd)


# --- settings ----------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Config:
    host: str
    names: tuple[str, ...]
    caddy_data_dir: str
    mox_cert_dir: str
    mox_user: str
    mox_group: str
    mox_binary: str
    mox_config: str
    restart_command: str
    verify_address: str
    verify_ports: tuple[int, ...]
    verify_timeout_seconds: int
    min_validity_hours: int
    backups_keep: int
    backup_dir: str
    lock_file: str
    log_file: str
    alert_command: str
    require_trusted_chain: bool = False
    trusted_ca_file: str = "/etc/ssl/certs/ca-certificates.crt"

    @classmethod
    def load(cls, path: str) -> Config:
        with open(path, encoding="utf-8") as file:
            raw = json.load(file)
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = set(raw) - fields
        if unknown:
            raise ValueError(f"{path}: unknown settings {sorted(unknown)}")
        if not isinstance(raw.get("names"), list):
            raise ValueError(f"{path}: names: not a list")
        raw["names"] = tuple(raw["names"])
        raw["verify_ports"] = tuple(int(p) for p in raw["verify_ports"])
        missing = fields - set(raw) - {"require_trusted_chain", "trusted_ca_file"}
        if missing:
            raise ValueError(f"{path}: missing settings {sorted(missing)}")
        if not isinstance(raw.get("require_trusted_chain", False), bool):
            raise ValueError(f"{path}: require_trusted_chain: not true or false")
        config = cls(**raw)
        for name in config.names:
            if not is_host_name(name):
                raise ValueError(f"{path}: names: {name!r} is not a host name")
        return config


# --- the transaction ---------------------------------------------------------------------------


@dataclasses.dataclass
class Pair:
    cert: bytes
    key: bytes
    info: CertInfo
    source: str


@dataclasses.dataclass
class Outcome:
    name: str
    # in sync | installed | repaired (exit 0) | refused (1) | failed | rolled back (3)
    # | restore failed (4)
    status: str
    detail: str = ""

    @property
    def ok(self) -> bool:
        return self.status in ("in sync", "installed", "repaired")

    @property
    def exit_status(self) -> int:
        return {
            "refused": EXIT_REFUSED,
            "failed": EXIT_ROLLED_BACK,
            "rolled back": EXIT_ROLLED_BACK,
            "restore failed": EXIT_RESTORE_FAILED,
        }.get(self.status, EXIT_OK)


def caddy_pair(config: Config, name: str, now: dt.datetime) -> Pair:
    """The newest valid pair for `name` across all of Caddy's issuer folders."""
    stored = storage_name(name)
    certificates = os.path.join(config.caddy_data_dir, "certificates")
    try:
        issuers = sorted(os.listdir(certificates))
    except FileNotFoundError:
        raise Refused(f"Caddy's storage {certificates} does not exist") from None
    except OSError as error:
        raise Refused(f"Caddy's storage {certificates}: {reason(error)}") from None
    min_validity = dt.timedelta(hours=config.min_validity_hours)
    best: Pair | None = None
    problems: list[str] = []
    for issuer in issuers:
        folder = os.path.join(certificates, issuer, stored)
        try:
            # Caddy's own folders may be links (a data dir moved to another disk); its files
            # are still read without following links.
            folder_fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
        except (FileNotFoundError, NotADirectoryError):
            continue
        except OSError as error:
            problems.append(f"{issuer}: {error.strerror}")
            continue
        try:
            cert = read_file(folder_fd, stored + ".crt").data
            key = read_file(folder_fd, stored + ".key").data
        except OSError as error:
            problems.append(f"{issuer}: {reason(error)}")
            continue
        finally:
            os.close(folder_fd)
        try:
            if cert is None or key is None:
                raise ValueError("certificate or key file is missing")
            info, ders = parse_chain(cert)
            check_key_matches(cert, key)
        except ValueError as error:
            problems.append(f"{issuer}: {error}")
            continue
        problem = validity_problem(info, name, now, min_validity)
        if problem:
            problems.append(f"{issuer}: {problem}")
            continue
        if best is not None and info.not_before <= best.info.not_before:
            continue
        if config.require_trusted_chain:
            problem = untrusted_chain_problem(ders, config.trusted_ca_file)
            if problem:
                problems.append(f"{issuer}: {problem}")
                continue
        best = Pair(cert, key, info, issuer)
    if best is None:
        if not problems:
            raise Refused(f"Caddy has no certificate for it under {certificates}/*/{stored}")
        raise Refused("; ".join(problems))
    return best


def current_info(cert: bytes | None) -> CertInfo | None:
    if cert is None:
        return None
    try:
        return parse_chain(cert)[0]
    except ValueError:
        return None


Files = dict[str, FileState]  # mox's current files of the names being installed, by file name


class Host:
    """One sync run on this host."""

    def __init__(self, config: Config, force: bool) -> None:
        self.config = config
        self.force = force
        self.uid, self.gid = _user_ids(config.mox_user, config.mox_group)

    def sync(self, names: Sequence[str]) -> list[Outcome]:
        """Sync `names`; every failure becomes an Outcome with its reason, never an exception."""
        now = dt.datetime.now(dt.timezone.utc)
        folder = self.config.mox_cert_dir
        try:
            # Refuse early, before anything changes, when a folder certsync writes is unsafe.
            os.close(open_dir(self.config.backup_dir, create_mode=DIR_MODE))
            dir_fd = open_dir(folder, create_mode=DIR_MODE)
        except (OSError, ValueError) as error:
            return [Outcome(name, "refused", reason(error)) for name in names]
        try:
            try:
                info = os.fstat(dir_fd)
                if (info.st_uid, info.st_gid) != (self.uid, self.gid):
                    os.fchown(dir_fd, self.uid, self.gid)
                if stat.S_IMODE(info.st_mode) != DIR_MODE:
                    os.fchmod(dir_fd, DIR_MODE)
            except OSError as error:
                detail = f"cannot set owner and mode of {folder} ({reason(error)})"
                return [Outcome(name, "refused", detail) for name in names]
            outcomes: dict[str, Outcome] = {}
            installs: dict[str, Pair] = {}
            olds: Files = {}
            for name in names:
                stored = storage_name(name)
                try:
                    pair = caddy_pair(self.config, name, now)
                    try:
                        cert_now = read_file(dir_fd, stored + ".crt")
                        key_now = read_file(dir_fd, stored + ".key")
                    except OSError as error:
                        raise Refused(
                            f"cannot read mox's files in {folder} ({reason(error)})"
                        ) from None
                    if cert_now.data == pair.cert and key_now.data == pair.key and not self.force:
                        outcomes[name] = self._repair(dir_fd, name, cert_now, key_now, pair)
                        continue
                    problem = downgrade_problem(pair.info, current_info(cert_now.data))
                    if problem:
                        raise Refused(problem)
                except Refused as refusal:
                    outcomes[name] = Outcome(name, "refused", str(refusal))
                    continue
                installs[name] = pair
                olds.update({stored + ".crt": cert_now, stored + ".key": key_now})
            if installs:
                outcomes.update(self._install(dir_fd, installs, olds))
        finally:
            os.close(dir_fd)
        return [outcomes[name] for name in names]

    def _repair(
        self, dir_fd: int, name: str, cert: FileState, key: FileState, pair: Pair
    ) -> Outcome:
        stored = storage_name(name)
        wanted = ((stored + ".crt", cert, CERT_MODE), (stored + ".key", key, KEY_MODE))
        drift = [
            file
            for file, state, mode in wanted
            if (state.uid, state.gid, state.mode) != (self.uid, self.gid, mode)
        ]
        if not drift:
            return Outcome(name, "in sync", describe(pair.info))
        try:
            for file, _, mode in wanted:
                fix_owner_mode(dir_fd, file, self.uid, self.gid, mode)
        except OSError as error:
            return Outcome(
                name,
                "failed",
                f"repairing owner and mode of {', '.join(drift)} failed"
                f" ({reason(error)}); the files' contents are unchanged",
            )
        return Outcome(name, "repaired", f"owner and mode of {', '.join(drift)}")

    def _install(self, dir_fd: int, installs: dict[str, Pair], olds: Files) -> dict[str, Outcome]:
        def all_names(status: str, detail: str) -> dict[str, Outcome]:
            return {name: Outcome(name, status, detail) for name in installs}

        try:
            backup, note = self._backup(olds)
        except OSError as error:
            return all_names("failed", f"backup failed ({reason(error)}); mox's files unchanged")
        new_files = {}
        for name, pair in installs.items():
            stored = storage_name(name)
            new_files[stored + ".crt"] = (pair.cert, self.uid, self.gid, CERT_MODE)
            new_files[stored + ".key"] = (pair.key, self.uid, self.gid, KEY_MODE)
        try:
            replace_files(dir_fd, new_files)
        except OSError as error:
            why = f"install failed ({reason(error)})"
            if self._unchanged(dir_fd, olds):
                return all_names("failed", f"{why}; mox's files unchanged")
            return self._rolled_back(why, self._restore(dir_fd, olds, restart=False), installs)
        mox_test = [self.config.mox_binary, "-config", self.config.mox_config, "config", "test"]
        try:
            self._run("mox config test", mox_test)
        except RuntimeError as error:
            restored = self._restore(dir_fd, olds, restart=False)
            return self._rolled_back(str(error), restored, installs)
        try:
            self._run("restart", shlex.split(self.config.restart_command))
            self._verify({name: pair.info.fingerprint for name, pair in installs.items()})
        except RuntimeError as error:
            return self._rolled_back(str(error), self._restore(dir_fd, olds, True), installs)
        return {
            name: Outcome(
                name,
                "installed",
                f"{describe(pair.info)} from {pair.source}, backup {backup}{note}",
            )
            for name, pair in installs.items()
        }

    @staticmethod
    def _rolled_back(
        why: str, restored: tuple[bool, str], installs: dict[str, Pair]
    ) -> dict[str, Outcome]:
        ok, how = restored
        status = "rolled back" if ok else "restore failed"
        detail = f"{why}; rolled back: {how}" if ok else f"{why}; {how}"
        return {name: Outcome(name, status, detail) for name in installs}

    def _unchanged(self, dir_fd: int, olds: Files) -> bool:
        """Whether mox's files are still exactly the old ones (after a failed install)."""
        try:
            return all(read_file(dir_fd, file) == state for file, state in olds.items())
        except OSError:
            return False

    def _backup(self, olds: Files) -> tuple[str, str]:
        """Copy mox's current files to a new backup folder; (its path, a note on pruning)."""
        root_fd = open_dir(self.config.backup_dir, create_mode=DIR_MODE)
        try:
            info = os.fstat(root_fd)
            if (info.st_uid, info.st_gid) != (0, 0):
                os.fchown(root_fd, 0, 0)
            if stat.S_IMODE(info.st_mode) != DIR_MODE:
                os.fchmod(root_fd, DIR_MODE)
            stamp = dt.datetime.now(dt.timezone.utc).strftime(BACKUP_TIME_FORMAT)
            os.mkdir(stamp, DIR_MODE, dir_fd=root_fd)
            try:
                folder_fd = os.open(
                    stamp, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=root_fd
                )
                try:
                    replace_files(
                        folder_fd,
                        {
                            file: (state.data, 0, 0, state.mode)
                            for file, state in olds.items()
                            if state.data is not None
                        },
                    )
                finally:
                    os.close(folder_fd)
            except OSError:
                _remove_backup(root_fd, stamp)
                raise
            note = ""
            try:
                self._prune_backups(root_fd, keep=stamp)
            except OSError as error:
                note = f" (pruning old backups failed: {reason(error)})"
        finally:
            os.close(root_fd)
        return os.path.join(self.config.backup_dir, stamp), note

    def _prune_backups(self, root_fd: int, keep: str) -> None:
        """Remove the oldest backups beyond backups_keep; never `keep`, the one just taken."""
        stamps = sorted(
            e for e in os.listdir(root_fd) if re.fullmatch(r"\d{8}T\d{12}Z", e) and e != keep
        )
        for stamp in stamps[: max(len(stamps) + 1 - self.config.backups_keep, 0)]:
            _remove_backup(root_fd, stamp)

    def _restore(self, dir_fd: int, olds: Files, restart: bool) -> tuple[bool, str]:
        """Put mox's previous files back; restart and check it serves them if it was restarted.

        Returns (whether mox has its previous files and serves them, what happened)."""
        try:
            replace_files(
                dir_fd,
                {
                    file: (state.data, state.uid, state.gid, state.mode)
                    for file, state in olds.items()
                    if state.data is not None
                },
            )
            for file, state in olds.items():
                if not state.exists:
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(file, dir_fd=dir_fd)
        except OSError as error:
            return False, (
                f"restoring mox's previous files FAILED ({reason(error)});"
                f" they are in the newest backup under {self.config.backup_dir}"
            )
        if not restart:
            return (
                True,
                "mox's previous files restored (mox was not restarted: it still serves them)",
            )
        expected: dict[str, str] = {}
        for file, state in olds.items():
            info = current_info(state.data) if file.endswith(".crt") else None
            if info is not None:
                expected[file.removesuffix(".crt").replace("wildcard_.", "*.", 1)] = (
                    info.fingerprint
                )
        try:
            self._run("restart", shlex.split(self.config.restart_command))
            self._verify(expected)
        except RuntimeError as error:
            return False, f"mox's previous files restored, but after restarting mox: {error}"
        if not expected:
            return True, "mox had no previous files for it; the new ones were removed"
        return True, "mox's previous files restored and served again"

    def _run(self, what: str, argv: list[str]) -> None:
        try:
            result = subprocess.run(
                argv, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=120
            )
        except (OSError, subprocess.TimeoutExpired) as error:
            raise RuntimeError(f"{what} failed: {error}") from error
        if result.returncode != 0:
            output = " ".join((result.stdout + result.stderr).split())[-400:]
            raise RuntimeError(f"{what} failed (exit {result.returncode}): {output}")

    def _verify(self, expected: dict[str, str]) -> None:
        """Wait, for a bounded time, until every port serves the expected certificate per name."""
        deadline = time.monotonic() + self.config.verify_timeout_seconds
        pending = {(name, port) for name in expected for port in self.config.verify_ports}
        last: dict[tuple[str, int], str] = {}
        while True:
            for name, port in sorted(pending):
                address = self.config.verify_address or sni(name)
                try:
                    served = served_fingerprint(address, port, sni(name))
                except (OSError, ssl.SSLError, smtplib.SMTPException, imaplib.IMAP4.error) as error:
                    last[(name, port)] = f"{name} port {port}: {error}"
                    continue
                if served == expected[name]:
                    pending.discard((name, port))
                else:
                    last[(name, port)] = f"{name} port {port} serves sha256={served[:16]}"
            if not pending:
                return
            if time.monotonic() >= deadline:
                details = "; ".join(last[key] for key in sorted(pending))
                raise RuntimeError(
                    f"mox does not serve the expected certificate after"
                    f" {self.config.verify_timeout_seconds} s: {details}"
                )
            time.sleep(0.2)


def _remove_backup(root_fd: int, stamp: str) -> None:
    folder_fd = os.open(stamp, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=root_fd)
    try:
        for entry in os.listdir(folder_fd):
            os.unlink(entry, dir_fd=folder_fd)
    finally:
        os.close(folder_fd)
    os.rmdir(stamp, dir_fd=root_fd)


def describe(info: CertInfo) -> str:
    return f"sha256={info.fingerprint[:16]} not_after={info.not_after:%Y-%m-%d}"


def sni(name: str) -> str:
    return name.replace("*.", "certsync.", 1)


def served_fingerprint(address: str, port: int, server_name: str, timeout: float = 5.0) -> str:
    """sha256 of the leaf certificate served on address:port (STARTTLS on 25, 587 and 143)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # identity is checked by fingerprint
    if port in STARTTLS_SMTP_PORTS:
        with smtplib.SMTP(
            address, port, local_hostname="certsync.invalid", timeout=timeout
        ) as smtp:
            smtp._host = server_name  # type: ignore[attr-defined]  # smtplib sends it as SNI
            smtp.starttls(context=context)
            der = smtp.sock.getpeercert(binary_form=True)  # type: ignore[union-attr]
    elif port in STARTTLS_IMAP_PORTS:
        imap = imaplib.IMAP4(address, port, timeout=timeout)
        try:
            imap.host = server_name
            imap.starttls(ssl_context=context)
            der = imap.sock.getpeercert(binary_form=True)  # type: ignore[attr-defined]
        finally:
            with contextlib.suppress(OSError, imaplib.IMAP4.error):
                imap.logout()
    else:
        raw = socket.create_connection((address, port), timeout=timeout)
        with context.wrap_socket(raw, server_hostname=server_name) as tls:
            der = tls.getpeercert(binary_form=True)
    if not der:
        raise ssl.SSLError("no certificate served")
    return hashlib.sha256(der).hexdigest()


def _user_ids(user: str, group: str) -> tuple[int, int]:
    try:
        return pwd.getpwnam(user).pw_uid, grp.getgrnam(group).gr_gid
    except KeyError as error:
        raise ValueError(f"no such user or group: {error}") from None


# --- output, lock, alert ------------------------------------------------------------------------


def emit(text: str, failed: bool = False) -> None:
    """Print a line to stdout (stderr if `failed`); if the reader is gone, drop this and later
    output instead of failing, also at exit, when Python flushes what is left."""
    stream = sys.stderr if failed else sys.stdout
    try:
        print(text, file=stream, flush=True)
    except (OSError, ValueError):
        _silence(stream)


def _silence(stream: object) -> None:
    """Point a broken stream's file descriptor at /dev/null (its buffer then flushes there)."""
    with contextlib.suppress(OSError, ValueError, AttributeError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(devnull, stream.fileno())  # type: ignore[attr-defined]
        finally:
            os.close(devnull)


class Log:
    """One line per name per run: to stdout (pyinfra, a terminal) and to the log file."""

    def __init__(self, config: Config) -> None:
        self.config = config

    def line(self, message: str, failed: bool = False, log_file: bool = True) -> None:
        """Log a line; a failure goes to stderr, which cron mails (stdout goes to /dev/null)."""
        stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        text = f"{stamp} certsync {self.config.host}: {message}"
        emit(text, failed)  # the SSH session may be gone: finish all the same
        if not log_file:
            return
        with contextlib.suppress(OSError, ValueError):
            log_dir = os.path.dirname(self.config.log_file)
            dir_fd = open_dir(log_dir, create_mode=0o750)
            try:
                fd = os.open(
                    os.path.basename(self.config.log_file),
                    os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC,
                    0o640,
                    dir_fd=dir_fd,
                )
                with os.fdopen(fd, "a", encoding="utf-8") as file:
                    file.write(text + "\n")
            finally:
                os.close(dir_fd)

    def alert(self, failures: list[Outcome]) -> None:
        """Hand the failures to the configured alert command, if any."""
        if not self.config.alert_command:
            return
        message = "\n".join(
            f"certsync {self.config.host}: {o.name}: {o.status}: {o.detail}" for o in failures
        )
        with contextlib.suppress(OSError, subprocess.TimeoutExpired):
            subprocess.run(
                shlex.split(self.config.alert_command),
                input=message + "\n",
                text=True,
                capture_output=True,
                timeout=60,
            )


class LockTimeout(Exception):
    pass


@contextlib.contextmanager
def locked(path: str, on_wait: Callable[[], None] | None = None) -> Iterator[None]:
    """Hold an exclusive lock so that a cron run and a deploy never interleave.

    Calls `on_wait` once if another sync holds the lock; raises LockTimeout after
    LOCK_WAIT_SECONDS, and OSError (SymlinkedFolder...) when the lock cannot be opened."""
    dir_fd = open_dir(os.path.dirname(path), create_mode=DIR_MODE)
    try:
        fd = os.open(
            os.path.basename(path),
            os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC,
            0o600,
            dir_fd=dir_fd,
        )
    finally:
        os.close(dir_fd)
    try:
        deadline = time.monotonic() + LOCK_WAIT_SECONDS
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise LockTimeout(
                        f"another sync holds {path} for over {LOCK_WAIT_SECONDS} s; nothing changed"
                    ) from None
                if on_wait is not None:
                    on_wait()
                    on_wait = None
                time.sleep(0.1)
        yield
    finally:
        os.close(fd)


def run_sync(config: Config, names: list[str], force: bool, out: Log) -> list[Outcome]:
    """Check the folders, take the lock, sync: every failure is an Outcome, never an exception."""

    def refuse_all(detail: str) -> list[Outcome]:
        return [Outcome(name, "refused", detail) for name in names]

    try:
        # The log folder: refuse rather than silently log nowhere.
        os.close(open_dir(os.path.dirname(config.log_file), create_mode=0o750))
    except (OSError, ValueError) as error:
        return refuse_all(f"log folder: {reason(error)}")
    try:
        with locked(
            config.lock_file,
            on_wait=lambda: out.line(f"waiting for {config.lock_file}: another sync holds it"),
        ):
            return Host(config, force).sync(names)
    except LockTimeout as error:
        return refuse_all(str(error))
    except (OSError, ValueError) as error:
        # Only the lock can fail here (Host.sync reports its own errors): nothing was done.
        return refuse_all(f"lock {config.lock_file}: {reason(error)}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["sync"])
    parser.add_argument("--config", default="/etc/certsync/config.json")
    parser.add_argument("--name", action="append", help="only this name (repeatable)")
    parser.add_argument("--force", action="store_true", help="install and restart even if equal")
    args = parser.parse_args(argv)

    # A dropped SSH session must not stop a sync half-way: finish it, then exit.
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        config = Config.load(args.config)
    except (OSError, ValueError, TypeError, KeyError) as error:
        emit(f"certsync: settings error: {reason(error)}", failed=True)
        return EXIT_USAGE
    try:
        _user_ids(config.mox_user, config.mox_group)
    except ValueError as error:
        emit(f"certsync {config.host}: settings error: {error}", failed=True)
        return EXIT_USAGE
    # --name picks names for this run only (a deploy's one-off selection); cron syncs them all.
    names = [name.lower() for name in args.name] if args.name else list(config.names)
    bad = [name for name in names if not is_host_name(name)]
    if bad:
        emit(f"certsync {config.host}: {', '.join(map(repr, bad))}: not a host name", failed=True)
        return EXIT_USAGE
    out = Log(config)
    os.umask(0o077)
    try:
        outcomes = run_sync(config, names, args.force, out)
    except Exception as error:  # a bug: still report it per name, and say where to look
        detail = (
            f"unexpected error ({type(error).__name__}: {error}); check mox's files in"
            f" {config.mox_cert_dir} against the newest backup in {config.backup_dir}"
        )
        outcomes = [Outcome(name, "restore failed", detail) for name in names]
    for outcome in outcomes:
        detail = f": {outcome.detail}" if outcome.detail else ""
        out.line(f"{outcome.name}: {outcome.status}{detail}", failed=not outcome.ok)
    status = max((o.exit_status for o in outcomes), default=EXIT_OK)
    failures = [o for o in outcomes if not o.ok]
    if failures:
        out.alert(failures)
    if status != EXIT_OK:
        out.line(f"exit {status}: {EXIT_MEANINGS[status]}", failed=True, log_file=False)
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            _silence(stream)
    return status


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""certsync host program: make mox's certificate files equal to Caddy's, on this host.

Runs on the mail host with nothing but Python's standard library. The pyinfra deploy and the cron
job both run `certsync.py sync --config /etc/certsync/config.json`; this file is the one
implementation of the transaction: pick Caddy's newest valid pair, validate it, back up mox's
files, install atomically, `mox config test`, restart mox once, verify what mox serves, and roll
back on any failure.

Private keys are read and written here only: never printed, logged or passed on.
The pure functions near the top (names, validity, choice) are also imported by the controller.
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
from collections.abc import Iterator, Sequence

CERT_MODE = 0o644
KEY_MODE = 0o600
DIR_MODE = 0o700
STARTTLS_SMTP_PORTS = frozenset({25, 587})
STARTTLS_IMAP_PORTS = frozenset({143})
BACKUP_TIME_FORMAT = "%Y%m%dT%H%M%S%fZ"
LOCK_WAIT_SECONDS = 300

HOST_NAME_RE = re.compile(
    r"(\*\.)?(?=.{1,253}\Z)[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*",
    re.IGNORECASE | re.ASCII,
)
PEM_BLOCK_RE = re.compile(
    rb"-----BEGIN ([A-Z0-9 ]+)-----\r?\n([A-Za-z0-9+/=\r\n]*?)-----END \1-----\r?\n?"
)


class Refused(Exception):
    """A name that cannot be synced; the message says why."""


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
        serial=leaf.get("serialNumber", "").lower(),
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
            next_fd = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
            os.close(fd)
            fd = next_fd
    except BaseException:
        os.close(fd)
        raise
    return fd


@dataclasses.dataclass(frozen=True)
class FileState:
    data: bytes | None  # None: missing or not a regular file
    is_regular: bool
    exists: bool
    uid: int = -1
    gid: int = -1
    mode: int = 0


def read_file(dir_fd: int, name: str) -> FileState:
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=dir_fd)
    except FileNotFoundError:
        return FileState(None, False, False)
    except OSError as error:
        if error.errno == errno.ELOOP:  # a symlink: never followed, replaced on install
            return FileState(None, False, True)
        raise
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            return FileState(None, False, True)
        chunks = []
        while chunk := os.read(fd, 1 << 16):
            chunks.append(chunk)
        return FileState(
            b"".join(chunks), True, True, info.st_uid, info.st_gid, stat.S_IMODE(info.st_mode)
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
    status: str  # in sync | installed | repaired | refused | failed | rolled back
    detail: str = ""

    @property
    def ok(self) -> bool:
        return self.status in ("in sync", "installed", "repaired")


def caddy_pair(config: Config, name: str, now: dt.datetime) -> Pair:
    """The newest valid pair for `name` across all of Caddy's issuer folders."""
    stored = storage_name(name)
    certificates = os.path.join(config.caddy_data_dir, "certificates")
    try:
        issuers = sorted(os.listdir(certificates))
    except FileNotFoundError:
        raise Refused(f"Caddy's storage {certificates} does not exist") from None
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
        finally:
            os.close(folder_fd)
        try:
            if cert is None or key is None:
                raise ValueError("certificate or key file is missing")
            info, _ = parse_chain(cert)
            check_key_matches(cert, key)
        except ValueError as error:
            problems.append(f"{issuer}: {error}")
            continue
        problem = validity_problem(info, name, now, min_validity)
        if problem:
            problems.append(f"{issuer}: {problem}")
            continue
        if best is None or info.not_before > best.info.not_before:
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
        now = dt.datetime.now(dt.timezone.utc)
        dir_fd = open_dir(self.config.mox_cert_dir, create_mode=DIR_MODE)
        try:
            os.fchown(dir_fd, self.uid, self.gid)
            os.fchmod(dir_fd, DIR_MODE)
            outcomes: dict[str, Outcome] = {}
            installs: dict[str, Pair] = {}
            olds: Files = {}
            for name in names:
                stored = storage_name(name)
                try:
                    pair = caddy_pair(self.config, name, now)
                    cert_now = read_file(dir_fd, stored + ".crt")
                    key_now = read_file(dir_fd, stored + ".key")
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
        for file, _, mode in wanted:
            fix_owner_mode(dir_fd, file, self.uid, self.gid, mode)
        return Outcome(name, "repaired", f"owner and mode of {', '.join(drift)}")

    def _install(self, dir_fd: int, installs: dict[str, Pair], olds: Files) -> dict[str, Outcome]:
        def all_names(status: str, detail: str) -> dict[str, Outcome]:
            return {name: Outcome(name, status, detail) for name in installs}

        try:
            backup = self._backup(olds)
        except OSError as error:
            return all_names("failed", f"backup failed ({error}); nothing changed")
        new_files = {}
        for name, pair in installs.items():
            stored = storage_name(name)
            new_files[stored + ".crt"] = (pair.cert, self.uid, self.gid, CERT_MODE)
            new_files[stored + ".key"] = (pair.key, self.uid, self.gid, KEY_MODE)
        try:
            replace_files(dir_fd, new_files)
        except OSError as error:
            return all_names("failed", f"install failed ({error}); mox's files unchanged")
        try:
            self._run(
                "mox config test",
                [
                    self.config.mox_binary,
                    "-config",
                    self.config.mox_config,
                    "config",
                    "test",
                ],
            )
        except RuntimeError as error:
            return all_names("failed", f"{error}; {self._restore(dir_fd, olds, restart=False)}")
        try:
            self._run("restart", shlex.split(self.config.restart_command))
            self._verify({name: pair.info.fingerprint for name, pair in installs.items()})
        except RuntimeError as error:
            return all_names("rolled back", f"{error}; {self._restore(dir_fd, olds, restart=True)}")
        return {
            name: Outcome(
                name, "installed", f"{describe(pair.info)} from {pair.source}, backup {backup}"
            )
            for name, pair in installs.items()
        }

    def _backup(self, olds: Files) -> str:
        root_fd = open_dir(self.config.backup_dir, create_mode=DIR_MODE)
        try:
            os.fchown(root_fd, 0, 0)
            os.fchmod(root_fd, DIR_MODE)
            stamp = dt.datetime.now(dt.timezone.utc).strftime(BACKUP_TIME_FORMAT)
            os.mkdir(stamp, DIR_MODE, dir_fd=root_fd)
            folder_fd = os.open(stamp, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=root_fd)
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
            self._prune_backups(root_fd)
        finally:
            os.close(root_fd)
        return os.path.join(self.config.backup_dir, stamp)

    def _prune_backups(self, root_fd: int) -> None:
        stamps = sorted(e for e in os.listdir(root_fd) if re.fullmatch(r"\d{8}T\d{12}Z", e))
        for stamp in stamps[: max(len(stamps) - self.config.backups_keep, 0)]:
            folder_fd = os.open(stamp, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=root_fd)
            try:
                for entry in os.listdir(folder_fd):
                    os.unlink(entry, dir_fd=folder_fd)
            finally:
                os.close(folder_fd)
            os.rmdir(stamp, dir_fd=root_fd)

    def _restore(self, dir_fd: int, olds: Files, restart: bool) -> str:
        """Put mox's previous files back; restart and check it serves them if it was restarted."""
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
            return f"restoring mox's previous files FAILED ({error}); they are in the backup"
        if not restart:
            return "mox's previous files restored"
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
            return f"mox's previous files restored, but {error}"
        if not expected:
            return "mox had no previous files for it; the new ones were removed"
        return "mox's previous files restored and served again"

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
        raise SystemExit(f"certsync: no such user or group: {error}") from None


# --- output, lock, alert ------------------------------------------------------------------------


class Log:
    """One line per name per run: to stdout (pyinfra, a terminal) and to the log file."""

    def __init__(self, config: Config) -> None:
        self.config = config

    def line(self, message: str, failed: bool = False) -> None:
        """Log a line; a failure goes to stderr, which cron mails (stdout goes to /dev/null)."""
        stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        text = f"{stamp} certsync {self.config.host}: {message}"
        with contextlib.suppress(OSError):  # the SSH session may be gone: finish all the same
            print(text, file=sys.stderr if failed else sys.stdout, flush=True)
        with contextlib.suppress(OSError):
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


@contextlib.contextmanager
def locked(path: str) -> Iterator[None]:
    """Hold an exclusive lock so that a cron run and a deploy never interleave."""
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
                    raise SystemExit(
                        f"certsync: another sync holds {path} for over {LOCK_WAIT_SECONDS} s"
                    ) from None
                time.sleep(0.1)
        yield
    finally:
        os.close(fd)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["sync"])
    parser.add_argument("--config", default="/etc/certsync/config.json")
    parser.add_argument("--name", action="append", help="only this name (repeatable)")
    parser.add_argument("--force", action="store_true", help="install and restart even if equal")
    args = parser.parse_args(argv)

    # A dropped SSH session must not stop a sync half-way: finish it, then exit.
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    config = Config.load(args.config)
    names = args.name or list(config.names)
    unknown = [name for name in names if name not in config.names]
    if unknown:
        print(
            f"certsync {config.host}: {', '.join(unknown)}: not in {args.config}", file=sys.stderr
        )
        return 2
    out = Log(config)
    os.umask(0o077)
    with locked(config.lock_file):
        outcomes = Host(config, args.force).sync(names)
    for outcome in outcomes:
        detail = f": {outcome.detail}" if outcome.detail else ""
        out.line(f"{outcome.name}: {outcome.status}{detail}", failed=not outcome.ok)
    failures = [o for o in outcomes if not o.ok]
    if failures:
        out.alert(failures)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

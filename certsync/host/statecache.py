"""The state read's record of its last full check of a host where every name was in sync, and
the cheap answer from it: when nothing that check depends on has changed since, the state read
answers from the record without loading OpenSSL or connecting to mox.

What the check depends on, by inode, size, mtime and ctime (ctime no user can set back): Caddy's
storage folder and each issuer folder's files for the name; mox's folder, its links, the
generation folder they point to and its files (lstat, as layout.py reads them), and a digest of
the bytes of mox's .crt and .key (the mox user can rewrite them through mmap keeping all four);
mox.conf, the users and groups, the mox user's ids, certsync's record of installed certificates;
the host's addresses (which of mox's listeners are local); mox's listening sockets on the checked
ports (their inodes, from the kernel's sock_diag: a restarted or killed mox has other ones or none;
their queues of connections not accepted yet); the settings and the program's version. Time too:
the record is used before `until` only, the earliest instant a plan could change by time alone
(a certificate's not_before, not_after, or not_after minus certsync_min_validity_hours) and at
most a day after the check. A hung or stopped mox keeps its sockets (the kernel still accepts
connections): the record is used only when mox greets within a second on a plaintext port among
each name's check targets (SMTP's `220` on 25 or 587, IMAP's `* OK` on 143); no such port, no
record. Never with certsync_require_trusted_chain (the chain check depends on intermediates'
dates and the system's CA store).

The record is root's (0600) in certsync's state folder, root's alone (state.folder_refusal
checks it on every read), replaced whole by rename. Anything unexpected in it: the full read."""

from __future__ import annotations

import os
import struct
import time
import zlib

from . import jsontext
from .files import FILE, FileState, open_dir, put_entries, read_file
from .layout import data_link, generation, read_pair
from .names import storage_name
from .settings import Config

TYPE_CHECKING = False  # typing's costs an import on every run
if TYPE_CHECKING:
    from typing import Any

RECORD = "state-cache.json"
RECORD_VERSION = 1
MAX_AGE_SECONDS = 86400
MAX_RECORD_BYTES = 1 << 20
INSTALLED = "installed.json"  # plan.INSTALLED (plan.py loads ssl)
PASSWD_FILES = ("/etc/passwd", "/etc/group")
ADDRESS_FILES = ("/proc/net/fib_trie", "/proc/net/if_inet6")
NETLINK_SOCK_DIAG = 4
SOCK_DIAG_BY_FAMILY = 20
NLM_F_REQUEST_DUMP = 0x1 | 0x300
NLMSG_ERROR, NLMSG_DONE = 2, 3
TCP_LISTEN = 10
ANY_ADDRESS = "0" * 32


def _stat(path: str, dir_fd: int | None = None, follow: bool = False) -> list[int]:
    try:
        info = os.stat(path, dir_fd=dir_fd, follow_symlinks=follow)
    except OSError as error:
        return [-(error.errno or 1)]
    return _fields(info)


def _fields(info: os.stat_result) -> list[int]:
    """What of a file's status a change leaves different (the mode, owner and times too)."""
    return [
        info.st_dev,
        info.st_ino,
        info.st_mode,
        info.st_uid,
        info.st_gid,
        info.st_size,
        info.st_mtime_ns,
        info.st_ctime_ns,
    ]


def _readlink(path: str, dir_fd: int) -> str | None:
    try:
        return os.readlink(path, dir_fd=dir_fd)
    except OSError:
        return None


def _mox_files(dir_fd: int, stored: str) -> list[Any]:
    found: list[Any] = []
    for entry in (f"{stored}.crt", f"{stored}.key", data_link(stored)):
        found += [_stat(entry, dir_fd), _readlink(entry, dir_fd)]
    try:
        gen = generation(dir_fd, stored)
    except OSError as error:
        return [*found, -(error.errno or 1)]
    if gen is not None:
        found += [gen, _stat(gen, dir_fd)]
        found += [_stat(f"{gen}/{stored}{suffix}", dir_fd) for suffix in (".crt", ".key")]
    return found


def sha256_hex(data: bytes) -> str:
    """sha256 by the builtin module: hashlib would load OpenSSL."""
    try:
        import _sha256 as sha  # type: ignore[import-not-found,unused-ignore]
    except ImportError:  # Python 3.12+
        try:
            import _sha2 as sha  # type: ignore[import-not-found,no-redef,unused-ignore]
        except ImportError:  # a Python built without them (hashlib's OpenSSL only)
            import hashlib as sha  # type: ignore[no-redef,unused-ignore]
    return str(sha.sha256(data).hexdigest())


def _mox_bytes(dir_fd: int, stored: str) -> Any:
    """A digest of mox's .crt and .key bytes together, read as the full read reads them (the
    mox user can rewrite them in place through mmap, changing no inode, size, mtime or ctime).
    Only the digest is kept: of a private key, in a record root's alone (0600)."""
    try:
        crt, key = read_pair(dir_fd, stored)[:2]
    except (OSError, ValueError) as error:
        return str(error)
    parts = [b"%d:" % len(s.data) + s.data if s.data is not None else b"-" for s in (crt, key)]
    return sha256_hex(b"|".join(parts))


def _caddy_files(config: Config, stored: str) -> list[Any]:
    certificates = os.path.join(config.caddy_data_dir, "certificates")
    found: list[Any] = [_stat(certificates, follow=True)]
    try:
        issuers = sorted(os.listdir(certificates))
    except OSError:
        return found
    for issuer in issuers:
        folder = os.path.join(certificates, issuer, stored)
        found.append([issuer, _stat(folder, follow=True)])
        found += [_stat(os.path.join(folder, stored + suffix)) for suffix in (".crt", ".key")]
    return found


def _mox_config(path: str) -> list[Any]:
    """mox.conf's file, reached as plan.read_mox_config reaches it (no link on the way)."""
    try:
        dir_fd = open_dir(os.path.dirname(path))
    except (OSError, ValueError) as error:
        return [str(error)]
    try:
        return _stat(os.path.basename(path), dir_fd)
    finally:
        os.close(dir_fd)


def _crc(path: str) -> int:
    try:
        with open(path, "rb") as file:
            return zlib.crc32(file.read())
    except OSError:
        return -1


def packed(address: str) -> str | None:
    """An address as sock_diag gives it: 16 bytes in hex (IPv4's 4 first, then zeros)."""
    import _socket

    for family in (_socket.AF_INET, _socket.AF_INET6):
        try:
            return _socket.inet_pton(family, address).hex().ljust(32, "0")
        except OSError:
            continue
    return None


def listening(targets: list[list[Any]]) -> list[list[Any]]:
    """The listening TCP sockets in this network namespace that serve one of `targets` ([address,
    port]: on that port, on its address or on all): family, address, port, inode, and whether
    connections wait to be accepted (a hung mox's do); [] when they cannot be read (then no
    record is written: state._remember). Asked of the kernel by sock_diag netlink, for
    listeners only: reading /proc/net/tcp walks every socket's hash bucket (3 ms each file)."""
    import _socket  # socket.py's enums cost 5 ms

    wanted = {(packed(str(address)), int(port)) for address, port in targets}
    found = []
    try:
        sock = _socket.socket(_socket.AF_NETLINK, _socket.SOCK_DGRAM, NETLINK_SOCK_DIAG)
    except OSError:
        return []
    try:
        sock.settimeout(2)
        for family in (_socket.AF_INET, _socket.AF_INET6):
            request = struct.pack("=BBBBI48x", family, _socket.IPPROTO_TCP, 0, 0, 1 << TCP_LISTEN)
            header = struct.pack(
                "=IHHII", 16 + len(request), SOCK_DIAG_BY_FAMILY, NLM_F_REQUEST_DUMP, 1, 0
            )
            sock.send(header + request)
            found += _listeners(sock, {port for _, port in wanted})
    except (OSError, struct.error):
        return []
    finally:
        sock.close()
    return sorted(
        entry for entry in found if (entry[1], entry[2]) in wanted or entry[1] == ANY_ADDRESS
    )


def _listeners(sock: Any, wanted: set[int]) -> list[list[Any]]:
    found: list[list[Any]] = []
    while True:
        data = sock.recv(1 << 16)
        offset = 0
        while offset + 16 <= len(data):
            length, kind = struct.unpack_from("=IH", data, offset)
            if kind == NLMSG_DONE:
                return found
            if kind == NLMSG_ERROR or length < 16:
                raise OSError("sock_diag: error")
            # inet_diag_msg: family, state, timer, retrans, id (sport, dport: big-endian; src,
            # dst, if, cookie), expires, rqueue, wqueue, uid, inode
            family = data[offset + 16]
            port = int.from_bytes(data[offset + 20 : offset + 22], "big")
            address = data[offset + 24 : offset + 40].hex()
            _, rqueue, _, _, inode = struct.unpack_from("=IIIII", data, offset + 16 + 52)
            if port in wanted:
                found.append([family, address, port, inode, rqueue > 0])
            offset += (length + 3) & ~3
        if not data:
            raise OSError("sock_diag: no end")


GREETINGS = {"smtp": b"220", "imap": b"* OK"}  # what mox says first on a plaintext port
GREETING_SECONDS = 1.0


def greets(address: str, port: int, protocol: str) -> bool:
    """Whether mox answers its greeting on a plaintext port within GREETING_SECONDS: a hung or
    stopped mox keeps its listening socket (the kernel still accepts connections) but says
    nothing."""
    import _socket

    expected = GREETINGS.get(protocol)
    if expected is None:
        return False
    deadline = time.monotonic() + GREETING_SECONDS
    family = _socket.AF_INET6 if ":" in address else _socket.AF_INET
    try:
        sock = _socket.socket(family, _socket.SOCK_STREAM)
    except OSError:
        return False
    try:
        sock.settimeout(GREETING_SECONDS)
        sock.connect((address, port))
        said = b""
        while b"\n" not in said and len(said) < 512:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            sock.settimeout(left)
            data = sock.recv(512)
            if not data:
                break
            said += data
        return said.startswith(expected)
    except OSError:
        return False
    finally:
        sock.close()


def fingerprint(config: Config, dir_fd: int) -> list[Any]:
    """What the full check of an in-sync host depends on, but time and mox's sockets
    (listening): the files and the host's addresses (module docstring)."""
    names = {
        name: [
            _caddy_files(config, storage_name(name)),
            _mox_files(dir_fd, storage_name(name)),
            _mox_bytes(dir_fd, storage_name(name)),
        ]
        for name in config.names
    }
    state_folder = os.path.dirname(config.lock_file)
    return [
        names,
        _fstat(dir_fd),
        _mox_config(config.mox_config),
        [_stat(path, follow=True) for path in PASSWD_FILES],
        _stat(os.path.join(state_folder, INSTALLED)),
        [_crc(path) for path in ADDRESS_FILES],
    ]


def _fstat(fd: int) -> list[int]:
    return _fields(os.fstat(fd))


_VERSION: list[str | None] = []  # program_version's, once known (functools costs an import)


def program_version() -> str | None:
    """The running program's version: its unpacked folder's name (`app-<sha256 of the
    zipapp>`, whose sources appdir checked), or its sources' digest when run from a folder."""
    if not _VERSION:
        _VERSION.append(_program_version())
    return _VERSION[0]


def _program_version() -> str | None:
    package = os.path.dirname(os.path.abspath(__file__))
    parent = os.path.basename(os.path.dirname(package))
    if parent.startswith("app-"):
        return parent
    from .appdir import tree_digest

    try:
        sources = {}
        for entry in sorted(os.listdir(package)):
            if entry.endswith(".py"):
                with open(os.path.join(package, entry), "rb") as file:
                    sources[entry] = file.read()
    except OSError:  # imported from the zipapp in memory: no version known, no record
        return None
    return tree_digest(sources)


def _identity(config: Config) -> list[Any]:
    return [RECORD_VERSION, program_version(), jsontext.dumps(config.to_json(), sort_keys=True)]


def answer(
    config: Config, dir_fd: int, mox_dir: Any, ids: list[int], now: float | None = None
) -> Any:
    """The names' entries of the last full check when nothing it depends on has changed and mox
    greets on a plaintext port, else None. Never with certsync_require_trusted_chain: the chain
    check depends on intermediates' dates and the system's CA store."""
    now = time.time() if now is None else now
    if program_version() is None or config.require_trusted_chain:
        return None
    try:
        folder_fd = open_dir(os.path.dirname(config.lock_file))
    except (OSError, ValueError):
        return None
    try:
        state = read_file(folder_fd, RECORD, MAX_RECORD_BYTES)
    except OSError:
        return None
    finally:
        os.close(folder_fd)
    if (state.kind, state.uid, state.mode) != (FILE, 0, 0o600) or state.data is None:
        return None
    try:
        record = jsontext.loads(state.data)
        if not (
            record["identity"] == _identity(config)
            and record["written"] <= now < record["until"]
            and now - record["written"] < MAX_AGE_SECONDS
            and record["mox_dir"] == mox_dir
            and record["mox_ids"] == ids
            and record["fingerprint"] == fingerprint(config, dir_fd)
            and record["sockets"] == listening(record["targets"])
            and sorted(record["names"]) == sorted(config.names)
        ):
            return None
        names = record["names"]
        if not all(entry["action"] == "in sync" for entry in names.values()):
            return None
        greeters = record["greeters"]
        if not greeters or not all(greets(str(a), int(p), str(t)) for a, p, t in greeters):
            return None
        return names
    except (ValueError, KeyError, TypeError, RecursionError):
        return None


def until(names: dict[str, Any], now: float, min_validity_hours: int) -> float:
    """The earliest instant after `now` when a plan of these entries could change by time alone:
    a certificate (Caddy's candidates, mox's) becomes valid, expires, or comes within the minimum
    validity; at most a day away."""
    import datetime as dt

    from .output import TIME_FORMAT

    instants = [now + MAX_AGE_SECONDS]
    for entry in names.values():
        certs = [c["cert"] for c in entry["caddy"]["candidates"]]
        certs.append((entry.get("mox") or {}).get("cert"))
        for cert in filter(None, certs):
            for field, before in (
                ("not_before", 0),
                ("not_after", 0),
                ("not_after", min_validity_hours * 3600),
            ):
                when = dt.datetime.strptime(cert[field], TIME_FORMAT)
                instants.append(when.replace(tzinfo=dt.timezone.utc).timestamp() - before)
    return min(t for t in instants if t > now)


def save(config: Config, record: dict[str, Any]) -> None:
    """Replace the record (root's, 0600) in certsync's state folder when it exists; a failure
    leaves the previous one, which the next read checks the same way."""
    if program_version() is None or config.require_trusted_chain:
        return
    data = jsontext.dumps({**record, "identity": _identity(config)}, sort_keys=True).encode()
    try:
        dir_fd = open_dir(os.path.dirname(config.lock_file))
    except (OSError, ValueError):
        return
    try:
        put_entries(dir_fd, {RECORD: FileState(FILE, data, None, 0, 0, 0o600)})
    except (OSError, ValueError):
        pass
    finally:
        os.close(dir_fd)


def forget(config: Config) -> None:
    """Remove the record (a full read that found a name not in sync)."""
    try:
        dir_fd = open_dir(os.path.dirname(config.lock_file))
    except (OSError, ValueError):
        return
    try:
        os.unlink(RECORD, dir_fd=dir_fd)
    except OSError:
        pass
    finally:
        os.close(dir_fd)

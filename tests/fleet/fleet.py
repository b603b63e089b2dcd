"""`Fleet` of `TestHost`s: per host an sshd and a mox, each in its own mount namespace."""

from __future__ import annotations

import grp
import os
import pwd
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from . import rundirs
from .hostspec import (
    ADMIN_HOME,
    ADMIN_SUDOERS,
    ADMIN_USER,
    MOX_BINARY,
    MOX_CERT_DIR,
    MOX_CONFIG,
    MOX_HOME,
    PRIVATE_DIRS,
    HostSpec,
    default_host_specs,
    storage_name,
)
from .moxconf import domains_conf, mox_conf
from .requirements import mox_binary
from .sshkeys import sshd_config, write_ed25519_key
from .waiting import port_open, wait_for
from .x509util import self_signed_placeholder

if TYPE_CHECKING:
    from testinfra.host import Host as TestinfraHost

    from .pki import Pki

MOXCTL = Path(__file__).resolve().with_name("moxctl")
NSINIT = Path(__file__).resolve().with_name("nsinit.py")
MOX_PORTS = (25, 465, 587, 993)
START_TIMEOUT = 20.0
HOST_RUN_DIR = "/run/certsync-e2e"  # inside a host: its run_dir (moxctl's pid file and mox.log)
COPY_ATTEMPTS = 5  # of Caddy's storage, which Caddy may change while it is copied
MAX_KILL_ROUNDS = 5  # of what is left in a closed host's mount namespace
CROND_PID = Path("/run/crond.pid")  # Debian's cron locks it: each host has its own
# A host's resolv.conf unless its spec gives one: nothing answers there, so a DNS lookup fails at
# once instead of leaving the machine.
ROOT_BASHRC = Path("/root/.bashrc")
DEBIAN_ROOT_BASHRC = Path("/usr/share/base-files/dot.bashrc")  # what Debian gives root
NO_RESOLVER = "nameserver 127.0.0.1\noptions timeout:1 attempts:1\n"


def _chown(path: Path, user: str) -> None:
    os.chown(path, pwd.getpwnam(user).pw_uid, grp.getgrnam(user).gr_gid)


def _ensure_user(name: str, *useradd_args: str) -> None:
    """A global user (shared by all hosts: /etc/passwd is not private), created once."""
    try:
        pwd.getpwnam(name)
    except KeyError:
        subprocess.run(["useradd", "--no-create-home", *useradd_args, name], check=True)


def ensure_users() -> None:
    """`mox`, the system user mox drops to; `admin`, a login user that is not root. Its password
    field is `*`, not locked (`!`): sshd without PAM refuses a locked account's key logins."""
    _ensure_user(
        "mox", "--system", "--user-group", "--home-dir", MOX_HOME, "--shell", "/usr/sbin/nologin"
    )
    _ensure_user(
        ADMIN_USER,
        "--user-group",
        "--home-dir",
        ADMIN_HOME,
        "--shell",
        "/bin/sh",
        "--password",
        "*",
    )


def _only_child(process: subprocess.Popen[bytes]) -> int | None:
    children = Path(f"/proc/{process.pid}/task/{process.pid}/children").read_text().split()
    return int(children[0]) if len(children) == 1 else None


def _open_namespace(pid: int) -> int | None:
    """A descriptor of `pid`'s mount namespace (it keeps the namespace, and its number, alive),
    or None when the process is gone."""
    try:
        return os.open(f"/proc/{pid}/ns/mnt", os.O_RDONLY)
    except OSError:
        return None


class TestHost:
    """One mail host: `name` (mail-i), `address` (127.0.0.(10+i)), its own /home, mox and sshd."""

    __test__ = False  # not a pytest test class

    def __init__(
        self, spec: HostSpec, fleet_dir: Path, client_key: Path, authorized_keys: Path
    ) -> None:
        self.spec = spec
        self.name = spec.name
        self.address = spec.address
        self.cert_names = spec.cert_names
        self.caddy_data_dir = spec.caddy_data_dir
        self.client_key = client_key
        self.dir = fleet_dir / spec.name
        self.root = self.dir / "root"  # sources of the bind mounts, laid out like /
        self.run_dir = self.dir / "run"  # pid files and logs; HOST_RUN_DIR inside the host
        self.sshd_log = self.run_dir / "sshd.log"
        self.mox_log = self.run_dir / "mox.log"
        self._authorized_keys = authorized_keys
        self._unshare: subprocess.Popen[bytes] | None = None
        self._init_pid: int | None = None
        self.host_key_line = ""

    # -- paths -----------------------------------------------------------------------------------
    @property
    def private_dirs(self) -> tuple[str, ...]:
        return (*PRIVATE_DIRS, self.caddy_data_dir)

    def source_of(self, path: str) -> Path:
        """Where a path of the host (under private_dirs) lives on the real filesystem."""
        return self.root / path.lstrip("/")

    @property
    def restart_command(self) -> str:
        """The deploy's restart command on this host (in production: `systemctl restart mox`)."""
        return self.moxctl_command("restart")

    def moxctl_command(self, action: str) -> str:
        return f"{MOXCTL} {action}"

    # -- namespace -------------------------------------------------------------------------------
    @property
    def namespace_pid(self) -> int:
        """Real pid of the host's init (nsinit): nsenter -t <it> gets into the host."""
        assert self._init_pid is not None, f"{self.name} is not started"
        return self._init_pid

    @property
    def mount_namespace(self) -> str:
        namespace = rundirs.mount_namespace(self.namespace_pid)
        assert namespace is not None
        return namespace

    def processes(self) -> list[int]:
        """Real pids of all processes in the host's mount namespace."""
        return rundirs.pids_in_mount_namespace(self.mount_namespace)

    def _env(self) -> dict[str, str]:
        return {**os.environ, rundirs.RUN_ENV: str(self.dir.parent)}

    def _start_namespace(self) -> None:
        mounts = []
        for path in self.private_dirs:
            self.source_of(path).mkdir(parents=True, exist_ok=True)
            Path(path).mkdir(parents=True, exist_ok=True)  # the mount point on the real filesystem
            mounts.append(f"mount --bind '{self.source_of(path)}' '{path}'")
        Path(HOST_RUN_DIR).mkdir(exist_ok=True)
        mounts.append(f"mount --bind '{self.run_dir}' {HOST_RUN_DIR}")
        (self.dir / "crond.pid").touch()
        CROND_PID.touch(exist_ok=True)  # the mount point on the real filesystem
        mounts.append(f"mount --bind '{self.dir / 'crond.pid'}' {CROND_PID}")
        self.write_resolv_conf(self.spec.resolv_conf or NO_RESOLVER)
        mounts.append(f"mount --bind '{self.resolv_conf}' /etc/resolv.conf")
        if ROOT_BASHRC.exists():
            # bash sources root's ~/.bashrc for every command sshd runs: the controller's (pyenv
            # init...) cost 80 ms of CPU per command; a host's root has Debian's own
            bashrc = self.dir / "root.bashrc"
            bashrc.write_bytes(
                DEBIAN_ROOT_BASHRC.read_bytes() if DEBIAN_ROOT_BASHRC.exists() else b""
            )
            mounts.append(f"mount --bind '{bashrc}' {ROOT_BASHRC}")
        script = (
            "set -e\n" + "\n".join(mounts) + f"\necho ready\nexec '{sys.executable}' '{NSINIT}'\n"
        )
        # Own mount namespace (private folders) and PID namespace (its own `ps`, orphans reaped by
        # nsinit, and everything dies with nsinit); /proc is remounted to match.
        self._unshare = subprocess.Popen(
            [
                "unshare",
                "--mount",
                "--propagation",
                "private",
                "--pid",
                "--fork",
                "--mount-proc",
                "--",
                "sh",
                "-c",
                script,
            ],
            env=self._env(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        assert self._unshare.stdout is not None and self._unshare.stderr is not None
        if self._unshare.stdout.readline().strip() != b"ready":
            self._unshare.wait(timeout=10)
            raise RuntimeError(
                f"{self.name}: namespace setup failed: {self._unshare.stderr.read().decode()}"
            )
        unshare = self._unshare
        self._init_pid = wait_for(
            lambda: _only_child(unshare), 5, f"{self.name}: the namespace's init"
        )

    @property
    def resolv_conf(self) -> Path:
        """The file bind-mounted over the host's /etc/resolv.conf."""
        return self.dir / "resolv.conf"

    def write_resolv_conf(self, text: str) -> None:
        """The host's /etc/resolv.conf from now on (the file is written in place: a bind mount
        keeps the inode it was made with), e.g. dnsserver.resolv_conf() for the fleet's knot."""
        self.resolv_conf.write_text(text)

    def _nsenter(self, *argv: str) -> list[str]:
        return ["nsenter", "-t", str(self.namespace_pid), "-m", "-p", "--", *argv]

    def run(
        self, cmd: str, check: bool = False, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        """Run a shell command as root inside the host (its mount and PID namespaces)."""
        return subprocess.run(
            self._nsenter("sh", "-c", cmd),
            capture_output=True,
            text=True,
            check=check,
            timeout=timeout,
            cwd="/",
            env=self._env(),
        )

    # -- sshd ------------------------------------------------------------------------------------
    def _prepare_sshd(self) -> None:
        ssh_dir = self.dir / "ssh"
        ssh_dir.mkdir(mode=0o700)
        host_key = ssh_dir / "ssh_host_ed25519_key"
        self.host_key_line = write_ed25519_key(host_key, f"root@{self.name}")
        config = sshd_config(
            self.address, host_key, self._authorized_keys, self.run_dir / "sshd.pid"
        )
        (ssh_dir / "sshd_config").write_text(config)
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege separation dir

    def sshd_running(self) -> bool:
        return self.run(f"kill -0 $(cat {self.run_dir}/sshd.pid)").returncode == 0

    def start_sshd(self) -> None:
        """Start the host's sshd (it daemonizes; nsinit adopts it) and wait until it listens."""
        if self.sshd_running():
            return
        config = self.dir / "ssh" / "sshd_config"
        result = self.run(f"/usr/sbin/sshd -f {config} -E {self.sshd_log}")
        if result.returncode != 0:
            log = self.sshd_log.read_text()[-2000:]
            raise RuntimeError(f"{self.name}: sshd did not start: {result.stderr}{log}")
        wait_for(
            lambda: port_open(self.address, 22),
            START_TIMEOUT,
            f"sshd of {self.name} on {self.address}:22",
        )

    def stop_sshd(self) -> None:
        """Stop the listening sshd (open sessions live on, as with a real sshd)."""
        if not self.sshd_running():
            return
        self.run(f"kill $(cat {self.run_dir}/sshd.pid)", check=True)
        wait_for(
            lambda: not self.sshd_running() and not port_open(self.address, 22),
            START_TIMEOUT,
            f"sshd of {self.name} to stop",
        )

    # -- mox -------------------------------------------------------------------------------------
    def _install_mox(self) -> None:
        home = self.source_of(MOX_HOME)
        for folder, owner, mode in (
            (home, "mox", 0o755),
            (home / "config", "root", 0o755),
            (home / "data", "mox", 0o750),
            (self.source_of(MOX_CERT_DIR), "mox", 0o700),
        ):
            folder.mkdir(exist_ok=True)
            folder.chmod(mode)
            _chown(folder, owner) if owner == "mox" else os.chown(folder, 0, 0)
        self.source_of(MOX_CONFIG).write_text(mox_conf(self.spec))
        (home / "config" / "domains.conf").write_text(domains_conf(self.spec))
        for name in self.cert_names:
            self.write_placeholder(name)

    def _install_admin(self) -> None:
        """The `admin` user's home, and its sudo rights on this host (NOPASSWD: pyinfra's _sudo
        runs `sudo -n`)."""
        home = self.source_of(ADMIN_HOME)
        home.mkdir(mode=0o755, exist_ok=True)
        _chown(home, ADMIN_USER)
        self.grant_admin_sudo(True)

    def grant_admin_sudo(self, granted: bool) -> None:
        """Let `admin` run anything as root through sudo on this host, or nothing but `true`:
        then sudo refuses every other command at once ("not allowed to execute") instead of
        asking for a password that pyinfra would prompt for."""
        rules = f"{ADMIN_USER} ALL=(ALL:ALL) NOPASSWD: ALL\n"
        if not granted:
            rules = f"Defaults:{ADMIN_USER} !authenticate\n{ADMIN_USER} ALL=(root) /usr/bin/true\n"
        sudoers = self.source_of(ADMIN_SUDOERS)
        sudoers.write_text(rules)
        sudoers.chmod(0o440)

    def write_placeholder(self, name: str) -> None:
        """Placeholder pair for `name` in /home/mox/certs: crt 0644, key 0600, mox:mox."""
        pair = self_signed_placeholder(name)
        cert_dir = self.source_of(MOX_CERT_DIR)
        for suffix, content, mode in (
            (".crt", pair.cert_pem, 0o644),
            (".key", pair.key_pem, 0o600),
        ):
            path = cert_dir / f"{storage_name(name)}{suffix}"
            path.unlink(missing_ok=True)
            path.touch(mode=mode)
            path.write_bytes(content)
            path.chmod(mode)
            _chown(path, "mox")

    def mox_config_test(self) -> subprocess.CompletedProcess[str]:
        return self.run(f"{MOX_BINARY} -config {MOX_CONFIG} config test")

    def mox_pid(self) -> int | None:
        result = self.run(self.moxctl_command("pid"))
        return int(result.stdout) if result.returncode == 0 and result.stdout.strip() else None

    def mox_serving(self) -> bool:
        return all(port_open(self.address, port) for port in MOX_PORTS)

    def _moxctl(self, action: str) -> None:
        result = self.run(self.moxctl_command(action))
        if result.returncode != 0:
            raise RuntimeError(
                f"{self.name}: moxctl {action} failed: {result.stdout}{result.stderr}"
            )

    def wait_mox_serving(self, timeout: float = START_TIMEOUT) -> None:
        def serving() -> bool:
            if self.mox_pid() is None:
                raise RuntimeError(
                    f"{self.name}: mox is not running: {self.mox_log.read_text()[-3000:]}"
                )
            return self.mox_serving()

        wait_for(
            serving,
            timeout,
            f"mox of {self.name} on {self.address} ports {MOX_PORTS}",
            interval=0.1,
        )

    def start_mox(self) -> None:
        self._moxctl("start")
        self.wait_mox_serving()

    def stop_mox(self) -> None:
        self._moxctl("stop")

    def restart_mox(self) -> None:
        self._moxctl("restart")
        self.wait_mox_serving()

    # -- cron ------------------------------------------------------------------------------------
    def start_cron(self) -> None:
        """Start Debian's cron daemon in the host: it runs the host's own /etc/cron.d."""
        result = self.run("cron")
        if result.returncode != 0:
            raise RuntimeError(f"{self.name}: cron did not start: {result.stdout}{result.stderr}")
        wait_for(
            lambda: self.run("kill -0 $(cat /run/crond.pid)").returncode == 0,
            START_TIMEOUT,
            f"cron of {self.name}",
        )

    # -- caddy storage ---------------------------------------------------------------------------
    def copy_caddy_storage(self, pki: Pki) -> None:
        """Make the host's Caddy data dir a byte-identical copy of pki.data_dir (modes kept)."""
        target = self.source_of(self.caddy_data_dir)
        # Caddy may remove a file (a lock of its storage) while it is copied: copy again
        for attempt in range(COPY_ATTEMPTS):
            for entry in target.iterdir():
                if entry.is_dir() and not entry.is_symlink():
                    shutil.rmtree(entry)
                else:
                    entry.unlink()
            try:
                shutil.copytree(pki.data_dir, target, symlinks=True, dirs_exist_ok=True)
                return
            except (shutil.Error, FileNotFoundError):
                if attempt == COPY_ATTEMPTS - 1:
                    raise

    # -- whole host ------------------------------------------------------------------------------
    def copy_mox_binary(self, binary: Path) -> None:
        """Copy the mox binary to the host's /home/mox/mox. Done for all hosts before any of them
        starts: a binary still open for writing while another thread forks gives ETXTBSY."""
        self.dir.mkdir()
        self.run_dir.mkdir()
        home = self.source_of(MOX_HOME)
        home.mkdir(parents=True)
        shutil.copy2(binary, self.source_of(MOX_BINARY))

    def start(self) -> None:
        self._start_namespace()
        self._install_mox()
        self._install_admin()
        check = self.mox_config_test()
        if check.returncode != 0:
            raise RuntimeError(f"{self.name}: mox config test failed: {check.stdout}{check.stderr}")
        self._prepare_sshd()
        self.start_sshd()
        self.start_mox()

    def close(self) -> None:
        """Stop the host's init: the kernel kills the rest of its PID namespace; mounts go too."""
        if self._unshare is None:
            return
        if self._init_pid is not None:
            namespace = rundirs.mount_namespace(self._init_pid)
            # Anything that entered only the mount namespace, found while it lives: once freed,
            # its number goes to the next new namespace, maybe another test run's host. Held
            # open here, it is not freed while this looks for what is left in it (what one of
            # them forked after it was listed: an sshd session starting).
            held = _open_namespace(self._init_pid)
            try:
                entered = rundirs.pids_in_mount_namespace(namespace) if namespace else []
                rundirs.kill_pids([self._init_pid, *entered])
                for _ in range(MAX_KILL_ROUNDS if held is not None else 0):
                    left = rundirs.pids_in_mount_namespace(namespace) if namespace else []
                    if not left:
                        break
                    rundirs.kill_pids(left)
            finally:
                if held is not None:
                    os.close(held)
        rundirs.kill_pids([self._unshare.pid])
        self._unshare.wait()
        self._unshare = None
        self._init_pid = None

    def testinfra(self) -> TestinfraHost:
        """A testinfra host connected over real SSH (paramiko) with the fleet key."""
        import testinfra

        return testinfra.get_host(
            f"paramiko://root@{self.address}",
            ssh_identity_file=str(self.client_key),
            ssh_config=str(self.dir.parent / "ssh_config"),
        )

    def inventory_data(self) -> dict[str, Any]:
        return {
            "ssh_hostname": self.address,
            "ssh_user": "root",
            "ssh_key": str(self.client_key),
            "ssh_known_hosts_file": str(self.dir.parent / "known_hosts"),
            "ssh_strict_host_key_checking": "yes",
            "ssh_allow_agent": False,
            "ssh_look_for_keys": False,
            "certsync_names": list(self.cert_names),
            "certsync_restart_command": self.restart_command,
            "certsync_mox_binary": MOX_BINARY,
            "certsync_caddy_data_dir": self.caddy_data_dir,
            # a host without the fleet's DNS servers has no DNS at all: nothing to ask about
            # DANE (every lookup would fail, and a failed lookup holds a key change)
            **({"certsync_dane": "off"} if self.spec.resolv_conf is None else {}),
        }


class Fleet:
    """N test hosts: `Fleet(3)` or `Fleet([HostSpec(...), ...])`; `pki` = copy its storage in."""

    def __init__(self, hosts: int | Sequence[HostSpec] = 3, pki: Pki | None = None) -> None:
        self.specs = default_host_specs(hosts) if isinstance(hosts, int) else list(hosts)
        self.pki = pki
        self.timings: dict[str, float] = {}
        self.hosts: list[TestHost] = []
        rundirs.reap_stale_runs()
        for spec in self.specs:
            for port in (22, *MOX_PORTS):
                if port_open(spec.address, port):
                    raise RuntimeError(
                        f"{spec.address}:{port} is already in use: another fleet, or a system"
                        f" service listening on *:{port} (e.g. sshd: stop it or set ListenAddress)"
                    )
        self.dir = rundirs.new_run_dir("fleet")
        self.client_key = self.dir / "id_ed25519"
        self.known_hosts = self.dir / "known_hosts"

    def __enter__(self) -> Fleet:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __iter__(self) -> Iterator[TestHost]:
        return iter(self.hosts)

    def __len__(self) -> int:
        return len(self.hosts)

    def __getitem__(self, name: str) -> TestHost:
        for host in self.hosts:
            if host.name == name:
                return host
        raise KeyError(name)

    def start(self) -> None:
        started = time.monotonic()
        ensure_users()
        authorized_keys = self.dir / "authorized_keys"
        authorized_keys.write_text(write_ed25519_key(self.client_key, "certsync-e2e") + "\n")
        binary = mox_binary()
        self.hosts = [
            TestHost(spec, self.dir, self.client_key, authorized_keys) for spec in self.specs
        ]
        for host in self.hosts:
            host.copy_mox_binary(binary)
        with ThreadPoolExecutor(max_workers=max(1, len(self.hosts))) as pool:
            list(pool.map(TestHost.start, self.hosts))
        self.known_hosts.write_text(
            "".join(f"{host.address} {host.host_key_line}\n" for host in self.hosts)
        )
        # For `ssh -F <it> 127.0.0.11` and testinfra. testinfra's paramiko backend cannot read a
        # known_hosts file, so host keys are not checked there (pyinfra's inventory checks them).
        (self.dir / "ssh_config").write_text(
            "".join(
                f"Host {host.address}\n  User root\n  IdentityFile {self.client_key}\n"
                "  IdentitiesOnly yes\n"
                f"  UserKnownHostsFile {self.known_hosts}\n  StrictHostKeyChecking no\n"
                for host in self.hosts
            )
        )
        if self.pki is not None:
            self.copy_caddy_storage(self.pki)
        self.timings["fleet_start"] = time.monotonic() - started

    def copy_caddy_storage(self, pki: Pki) -> None:
        for host in self.hosts:
            host.copy_caddy_storage(pki)

    def close(self) -> None:
        errors = []
        for host in self.hosts:
            try:
                host.close()
            except Exception as error:  # clean up the other hosts anyway
                errors.append(error)
        rundirs.reap_run(self.dir)
        if errors:
            raise errors[0]

    def write_inventory(
        self,
        path: Path | str,
        extra_host_data: Mapping[str, Mapping[str, Any]] | None = None,
        groups: Mapping[str, Sequence[str]] | None = None,
    ) -> Path:
        """Write a pyinfra inventory: each host's data (plus extra_host_data[name]) in groups
        (default: one group `mail` with all hosts). A host may be in several groups."""
        extra_host_data = extra_host_data or {}
        groups = groups or {"mail": [host.name for host in self.hosts]}
        lines = ["# Written by tests/fleet: the certsync end-to-end test fleet.", "", "_hosts = {"]
        for host in self.hosts:
            data = {**host.inventory_data(), **extra_host_data.get(host.name, {})}
            lines.append(f"    {host.name!r}: ({host.name!r}, {data!r}),")
        lines += ["}", ""]
        for group, names in groups.items():
            unknown = set(names) - {host.name for host in self.hosts}
            if unknown:
                raise KeyError(f"group {group}: unknown hosts {sorted(unknown)}")
            lines.append(f"{group} = [{', '.join(f'_hosts[{name!r}]' for name in names)}]")
        path = Path(path)
        path.write_text("\n".join(lines) + "\n")
        return path

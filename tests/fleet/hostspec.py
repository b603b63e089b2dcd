"""What a test host is: its name, address, certificate names and the folders it keeps to itself."""

from __future__ import annotations

from dataclasses import dataclass

from .slot import loopback

DOCKER_CADDY_DATA_DIR = "/var/lib/docker/volumes/docker_caddy-data/_data/caddy"
DEBIAN_CADDY_DATA_DIR = "/var/lib/caddy/.local/share/caddy"

# Folders every host has its own copy of (bind-mounted from the host's folder in its own mount
# namespace). The host's Caddy data dir is added per host. Add paths the deploy writes here.
PRIVATE_DIRS: tuple[str, ...] = (
    "/home",
    "/etc/cron.d",
    "/etc/logrotate.d",
    "/var/lib/prometheus/node-exporter",
    "/etc/certsync",
    "/usr/local/lib/certsync",
    "/var/lib/certsync",
    "/var/log/certsync",
    "/etc/sudoers.d",
)

MOX_HOME = "/home/mox"
MOX_BINARY = f"{MOX_HOME}/mox"
MOX_CONFIG = f"{MOX_HOME}/config/mox.conf"
MOX_CERT_DIR = f"{MOX_HOME}/certs"

# A non-root user that logs in with the fleet's key; sudo rights per host (its own sudoers.d).
ADMIN_USER = "admin"
ADMIN_HOME = f"/home/{ADMIN_USER}"
ADMIN_SUDOERS = f"/etc/sudoers.d/{ADMIN_USER}"


def storage_name(name: str) -> str:
    """How Caddy names the folder and files of `name` (`*.example.com`: `wildcard_.example.com`);
    certsync names mox's files the same way."""
    name = name.lower()
    return "wildcard_." + name[2:] if name.startswith("*.") else name


@dataclass(frozen=True)
class HostSpec:
    index: int  # host i is mail-i on 127.0.s.(10+i), s the process's slot (0 when alone)
    cert_names: tuple[str, ...]
    caddy_data_dir: str = DOCKER_CADDY_DATA_DIR
    # the text of its /etc/resolv.conf (None: one naming no server; tests/fleet/dnsserver.py's
    # resolv_conf() names the fleet's knot servers)
    resolv_conf: str | None = None

    @property
    def name(self) -> str:
        return f"mail-{self.index}"

    @property
    def address(self) -> str:
        return loopback(10 + self.index)

    @property
    def mail_domain(self) -> str:
        return f"h{self.index}.test"


def default_host_specs(count: int) -> list[HostSpec]:
    """mail-i carries mail.hi.test, Caddy data at the Docker path; except: mail-2 uses Debian's
    Caddy path, and mail-3 carries three names (mail., mta-sts., autoconfig.) as mox quickstart."""
    specs = []
    for index in range(1, count + 1):
        domain = f"h{index}.test"
        names: tuple[str, ...] = (f"mail.{domain}",)
        if index == 3:
            names = (f"mail.{domain}", f"mta-sts.{domain}", f"autoconfig.{domain}")
        data_dir = DEBIAN_CADDY_DATA_DIR if index == 2 else DOCKER_CADDY_DATA_DIR
        specs.append(HostSpec(index=index, cert_names=names, caddy_data_dir=data_dir))
    return specs

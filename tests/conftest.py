"""Fixtures of the end-to-end test fleet (tests/fleet): `pki`, `fleet`, `make_fleet`; and of the
package as a user installs it: `certsync_wheel`, `certsync_venv` (tests/packaging.py).

The fleet needs root, pebble, caddy, sshd and mox (scripts/setup.sh installs them). When something
is missing they skip, unless CERTSYNC_REQUIRE_E2E=1 (CI), where they fail instead.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest

from tests.fleet import Fleet, HostSpec, Pki, default_host_specs, missing_components
from tests.fleet.dnsserver import DnsServers, zones_of
from tests.packaging import build_wheel, install_in_venv

REQUIRE_E2E_ENV = "CERTSYNC_REQUIRE_E2E"
DEFAULT_HOST_COUNT = 3

_missing: list[str] | None = None


def require_e2e() -> None:
    """Skip (or, with CERTSYNC_REQUIRE_E2E=1, fail) when this machine cannot run the fleet."""
    global _missing
    if _missing is None:
        _missing = missing_components()
    if _missing:
        reason = "end-to-end fleet unavailable: " + "; ".join(_missing)
        if os.environ.get(REQUIRE_E2E_ENV) == "1":
            pytest.fail(f"{reason} ({REQUIRE_E2E_ENV}=1)", pytrace=False)
        pytest.skip(reason)


@pytest.fixture(scope="session")
def pki() -> Iterator[Pki]:
    """pebble + caddy, with certificates issued for every name of the default hosts."""
    require_e2e()
    with Pki() as pki:
        pki.issue(
            name for spec in default_host_specs(DEFAULT_HOST_COUNT) for name in spec.cert_names
        )
        yield pki


@pytest.fixture
def make_fleet(pki: Pki) -> Iterator[Callable[..., Fleet]]:
    """Factory: make_fleet(hosts=3 or [HostSpec, ...]) -> a started Fleet holding copies of pki's
    storage (names it lacks are issued first). Closed after the test, also when it fails."""
    fleets: list[Fleet] = []

    def make(hosts: int | Sequence[HostSpec] = DEFAULT_HOST_COUNT) -> Fleet:
        specs = default_host_specs(hosts) if isinstance(hosts, int) else list(hosts)
        missing_names = [
            name for spec in specs for name in spec.cert_names if name not in pki.names
        ]
        if missing_names:
            pki.issue(missing_names)
        fleet = Fleet(specs, pki=pki)
        fleets.append(fleet)
        fleet.start()
        return fleet

    yield make
    for fleet in reversed(fleets):
        fleet.close()


@pytest.fixture
def fleet(make_fleet: Callable[..., Fleet]) -> Fleet:
    """A fresh fleet of the default hosts for each test (starting one takes about a second)."""
    return make_fleet()


@pytest.fixture
def dns_servers() -> Iterator[DnsServers]:
    """knot serving the default hosts' zones (hN.test.), primary and secondary
    (tests/fleet/dnsserver.py); no TLSA records yet."""
    require_e2e()
    with DnsServers(zones_of(default_host_specs(DEFAULT_HOST_COUNT))) as servers:
        yield servers


@pytest.fixture
def inventory(fleet: Fleet, tmp_path: Path) -> Path:
    """A pyinfra inventory of `fleet`: all hosts in group `mail`, mail-1 also in `canary`."""
    names = [host.name for host in fleet]
    return fleet.write_inventory(
        tmp_path / "inventory.py", groups={"canary": names[:1], "mail": names}
    )


@pytest.fixture(scope="session")
def certsync_wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """certsync's wheel, built once per test session from a copy of the repository."""
    return build_wheel(tmp_path_factory.mktemp("wheel"))


@pytest.fixture(scope="session")
def certsync_venv(certsync_wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The python of a fresh virtual environment where only the wheel was installed."""
    return install_in_venv(tmp_path_factory.mktemp("venv"), certsync_wheel)

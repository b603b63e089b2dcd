"""The fleet's DNS servers (knot, primary and secondary) and the host program's TLSA lookup
against them, for real: what the DANE checks see."""

from __future__ import annotations

import shlex
import subprocess
import time
from pathlib import Path

import pytest

from certsync.host import tlsa
from tests.fleet import Fleet
from tests.fleet.dnsserver import PRIMARY, SECONDARY, TTL, DnsServers, resolv_conf
from tests.fleet.fleet import NO_RESOLVER

OWNER = "_25._tcp.mail.h1.test."
OLD = "3 1 1 " + "aa" * 32
NEW = "3 1 1 " + "bb" * 32
DEADLINE = 4.0
MARGIN = 1.0


@pytest.fixture
def conf(tmp_path: Path) -> str:
    path = tmp_path / "resolv.conf"
    path.write_text(resolv_conf())
    return str(path)


def lookup(conf: str, timeout: float = DEADLINE) -> tlsa.TlsaLookup:
    started = time.monotonic()
    found = tlsa.lookup_tlsa(OWNER, started + timeout, conf)
    assert time.monotonic() - started < timeout + MARGIN
    return found


def test_absent_name(dns_servers: DnsServers, conf: str) -> None:
    found = lookup(conf)
    assert (found.exists, found.error, found.resolver_records) == (False, None, [])


def test_update_visible_everywhere(dns_servers: DnsServers, conf: str) -> None:
    dns_servers.add_tlsa(OWNER, OLD)
    found = lookup(conf)
    assert found.error is None and found.exists
    assert found.resolver_records == [OLD]
    assert found.servers == {PRIMARY: [OLD], SECONDARY: [OLD]}
    assert found.ttl == TTL
    assert tlsa.published_everywhere(found, OLD)

    dns_servers.add_tlsa(OWNER, NEW, ttl=7)
    found = lookup(conf)
    assert found.servers == {PRIMARY: [OLD, NEW], SECONDARY: [OLD, NEW]}
    assert found.ttl == 7  # an RRset has one TTL: the last update's
    assert tlsa.published_everywhere(found, NEW)

    dns_servers.delete_tlsa(OWNER, OLD)
    found = lookup(conf)
    assert found.servers == {PRIMARY: [NEW], SECONDARY: [NEW]}
    assert not tlsa.published_everywhere(found, OLD)


def test_update_not_yet_at_the_secondary(dns_servers: DnsServers, conf: str) -> None:
    dns_servers.add_tlsa(OWNER, OLD)
    with dns_servers.frozen(SECONDARY):
        dns_servers.add_tlsa(OWNER, NEW, wait=False)
        assert dns_servers.tlsa_records(PRIMARY, OWNER) == [OLD, NEW]
        found = lookup(conf)
        assert found.error is None
        assert found.servers[SECONDARY] == [OLD]
        assert not tlsa.published_everywhere(found, NEW)
        assert tlsa.published_everywhere(found, OLD)
    assert tlsa.published_everywhere(lookup(conf), NEW)


@pytest.mark.parametrize("server", [PRIMARY, SECONDARY], ids=["primary", "secondary"])
def test_a_server_stopped(dns_servers: DnsServers, conf: str, server: str) -> None:
    """Stopped: its port refuses; an error at once. Started again, it has the update still."""
    dns_servers.add_tlsa(OWNER, OLD)
    with dns_servers.stopped(server):
        found = lookup(conf)
        assert found.error == f"{server}: Connection refused"
        assert not tlsa.published_everywhere(found, OLD)
    assert tlsa.published_everywhere(lookup(conf), OLD)


def test_one_at_a_time(dns_servers: DnsServers) -> None:
    with pytest.raises(RuntimeError, match="in use"):
        DnsServers({"h1.test.": {}})


@pytest.mark.parametrize("server", [PRIMARY, SECONDARY], ids=["primary", "secondary"])
def test_a_server_silent(dns_servers: DnsServers, conf: str, server: str) -> None:
    """Silent (SIGSTOP): an error within the deadline, also when it is the first resolver."""
    dns_servers.add_tlsa(OWNER, OLD)
    with dns_servers.silent(server):
        found = lookup(conf)
    assert found.error is not None and f"{server}: timed out" in found.error
    assert not tlsa.published_everywhere(found, OLD)


def test_knsupdate_needs_the_key(dns_servers: DnsServers) -> None:
    script = f"server {PRIMARY} 53\nzone h1.test.\nupdate add {OWNER} 3 TLSA {NEW}\nsend\n"
    unsigned = subprocess.run(
        ["knsupdate", "-t", "5", "-r", "0"], input=script, capture_output=True, text=True
    )
    assert unsigned.returncode != 0
    assert dns_servers.tlsa_records(PRIMARY, OWNER) == []
    signed = subprocess.run(
        ["knsupdate", "-t", "5", "-r", "0", "-k", str(dns_servers.tsig_key_file)],
        input=script,
        capture_output=True,
        text=True,
    )
    assert signed.returncode == 0, signed.stderr
    assert dns_servers.tlsa_records(PRIMARY, OWNER) == [NEW]


def test_a_host_asks_the_servers(dns_servers: DnsServers, fleet: Fleet) -> None:
    """A test host's /etc/resolv.conf names the servers once written; the host program's lookup,
    run on the host, sees the records."""
    dns_servers.add_tlsa(OWNER, OLD)
    host = fleet["mail-1"]
    assert host.run("cat /etc/resolv.conf").stdout == NO_RESOLVER
    host.write_resolv_conf(resolv_conf())
    assert host.run("cat /etc/resolv.conf").stdout == resolv_conf()
    code = (
        "import time; from certsync.host import tlsa; "
        f"f = tlsa.lookup_tlsa({OWNER!r}, time.monotonic() + 5); "
        f"print(f.error, tlsa.published_everywhere(f, {OLD!r}))"
    )
    repo = Path(__file__).resolve().parent.parent
    got = host.run(f"PYTHONPATH={shlex.quote(str(repo))} python3 -c {shlex.quote(code)}")
    assert got.stdout.split() == ["None", "True"], got.stderr


def test_dane_nsupdate_sends_each_record_in_an_update_of_its_own(
    dns_servers: DnsServers,
) -> None:
    """scripts/dane-nsupdate with the records of two zones and one of a zone nobody serves: the
    two are added, the third is named and the exit status says it failed."""
    other = "_25._tcp.mail.h2.test."
    nowhere = "_25._tcp.mail.nowhere.test."
    lines = [f"add {OWNER} TLSA {NEW}", f"add {nowhere} TLSA {NEW}", f"add {other} TLSA {NEW}"]
    wrapper = Path(__file__).parent.parent / "scripts" / "dane-nsupdate"
    result = subprocess.run(
        [str(wrapper), "-s", PRIMARY, "-k", str(dns_servers.bind_key_file), "-t", "3"],
        input="".join(line + "\n" for line in lines),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1
    assert f"refused: add {nowhere} 3 IN TLSA {NEW}" in result.stderr
    assert result.stderr.count("refused:") == 1
    assert dns_servers.tlsa_records(PRIMARY, OWNER) == [NEW]
    assert dns_servers.tlsa_records(PRIMARY, other) == [NEW]

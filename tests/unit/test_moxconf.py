"""mox.conf: where mox serves a pair of certificate files (the check after a restart goes there).

data/mox.conf is laid out as `mox quickstart -existing-webserver` writes it (sconf.WriteDocs: a
comment above each field, DNSBLs commented out), with KeyCerts pointing at certsync's files.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from certsync.host.moxconf import Target, listener_targets, parse_sconf, protocol_of_port
from certsync.host.plan import MoxConf, verify_targets

QUICKSTART = (Path(__file__).parent / "data" / "mox.conf").read_text()
CONFIG_DIR = "/home/mox/config"
CERTS = "/home/mox/certs"
MAIL = (f"{CERTS}/mail.example.com.crt", f"{CERTS}/mail.example.com.key")


def targets(text: str, pair: tuple[str, str] = MAIL, ports=(993, 465, 587)) -> list[str] | None:
    found = listener_targets(text, CONFIG_DIR, pair[0], pair[1], list(ports))
    return None if found is None else [f"{t} {t.protocol}" for t in found]


def listener(body: str, ips: str = "\t\tIPs:\n\t\t\t- 127.0.0.10\n") -> str:
    """A mox.conf with one listener `public` serving MAIL, with `body` (tab-indented services)."""
    return (
        "Listeners:\n\tpublic:\n"
        + ips
        + "\t\tTLS:\n\t\t\tKeyCerts:\n\t\t\t\t-\n"
        + f"\t\t\t\t\tCertFile: {MAIL[0]}\n\t\t\t\t\tKeyFile: {MAIL[1]}\n"
        + body
    )


def test_parse_sconf_reads_the_quickstart_layout():
    conf = parse_sconf(QUICKSTART)
    assert conf["Hostname"] == "mail.example.com"
    assert "CheckUpdates" not in conf  # commented out by quickstart
    assert sorted(conf["Listeners"]) == ["internal", "public"]
    public = conf["Listeners"]["public"]
    assert public["IPs"] == ["0.0.0.0", "::"]
    assert public["TLS"]["KeyCerts"][1] == {
        "CertFile": "../certs/mta-sts.example.com.crt",
        "KeyFile": "../certs/mta-sts.example.com.key",
    }
    assert public["SMTP"] == {"Enabled": "true"}  # the commented-out DNSBLs are comments
    assert public["Submission"] == {"Enabled": "false", "Port": "0"}
    assert conf["Listeners"]["internal"]["AdminHTTP"]["Port"] == "1080"
    assert conf["HostTLSRPT"]["Localpart"] == "tls-reports"


def test_quickstart_listener_is_checked_on_loopback_on_each_enabled_tls_port():
    assert targets(QUICKSTART) == [
        "127.0.0.1:993 tls",
        "[::1]:993 tls",
        "127.0.0.1:465 tls",
        "[::1]:465 tls",
    ]  # Submission (587) is disabled there; the internal listener has no TLS


def test_relative_key_cert_paths_are_relative_to_mox_conf_folder():
    wildcard = (f"{CERTS}/wildcard_.example.com.crt", f"{CERTS}/wildcard_.example.com.key")
    assert targets(QUICKSTART, wildcard, [993]) == ["127.0.0.1:993 tls", "[::1]:993 tls"]
    assert listener_targets(QUICKSTART, "/etc/mox", *wildcard, [993]) is None


def test_smtp_is_checked_by_starttls():
    assert targets(QUICKSTART, MAIL, [25]) == ["127.0.0.1:25 smtp", "[::1]:25 smtp"]


@pytest.mark.parametrize(
    "pair",
    [
        (f"{CERTS}/www.example.com.crt", f"{CERTS}/www.example.com.key"),
        (MAIL[0], f"{CERTS}/mta-sts.example.com.key"),  # the certificate alone is not the pair
        (f"{CONFIG_DIR}/certs/mail.example.com.crt", f"{CONFIG_DIR}/certs/mail.example.com.key"),
    ],
)
def test_a_pair_no_listener_names_has_no_targets(pair):
    assert targets(QUICKSTART, pair) is None


def test_a_listener_with_a_pair_but_no_enabled_port_has_empty_targets():
    assert targets(QUICKSTART, MAIL, [143]) == []


def test_explicit_ports_and_addresses():
    body = (
        "\t\tSubmission:\n\t\t\tEnabled: true\n\t\t\tPort: 1587\n"
        "\t\tIMAP:\n\t\t\tEnabled: true\n\t\t\tPort: 1143\n"
        "\t\tIMAPS:\n\t\t\tEnabled: true\n\t\t\tPort: 1993\n"
    )
    ips = "\t\tIPs:\n\t\t\t- 127.0.0.10\n\t\t\t- ::1\n"
    assert targets(listener(body, ips), MAIL, [1993, 1587, 1143, 993]) == [
        "127.0.0.10:1993 tls",
        "[::1]:1993 tls",
        "127.0.0.10:1587 smtp",
        "[::1]:1587 smtp",
        "127.0.0.10:1143 imap",
        "[::1]:1143 imap",
    ]


def test_port_zero_is_mox_default_port():
    """mox's config.Port(port, fallback): 0, as `mox config describe-static` writes it, is the
    default port."""
    body = "\t\tIMAPS:\n\t\t\tEnabled: true\n\t\t\tPort: 0\n"
    assert targets(listener(body), MAIL, [993]) == ["127.0.0.10:993 tls"]


def test_only_ip_addresses_are_connected_to():
    """mox.conf is the mox user's: a host name there could send the check to another host."""
    ips = "\t\tIPs:\n\t\t\t- mail.evil.test\n\t\t\t- 127.0.0.10\n\t\t\t- 127.0.0.10;id\n"
    body = "\t\tIMAPS:\n\t\t\tEnabled: true\n"
    assert targets(listener(body, ips), MAIL, [993]) == ["127.0.0.10:993 tls"]


def test_malformed_lines_are_skipped_not_fatal():
    body = (
        "\t\tIMAPS:\n"
        "\t\t\t\t\tEnabled: false\n"  # deeper than sconf allows: skipped
        "\t\t\tnot a key\n"
        "\t\t\tEnabled: true\n"
        "\t\t\tPort: nine\n"
        "\t\tSubmissions:\n\t\t\tEnabled: true\n\t\t\tPort: 465\n"
    )
    assert targets(listener(body), MAIL, [993, 465]) == ["127.0.0.10:465 tls"]


@pytest.mark.parametrize("text", ["", "Listeners: none\n", "Listeners:\n\t- a\n", "\x00\xff"])
def test_a_config_without_listeners_names_no_pair(text):
    assert targets(text) is None


@pytest.mark.parametrize(("port", "protocol"), [(25, "smtp"), (587, "smtp"), (143, "imap")])
def test_protocol_of_port_is_starttls_on_the_plain_ports(port, protocol):
    assert protocol_of_port(port) == protocol
    assert protocol_of_port(993) == protocol_of_port(465) == protocol_of_port(8993) == "tls"


def test_target_shows_ipv6_in_brackets():
    assert str(Target("::1", 993, "tls")) == "[::1]:993"
    assert str(Target("127.0.0.1", 993, "tls")) == "127.0.0.1:993"


# --- verify_targets: the settings decide, or mox.conf ------------------------------------------


def test_verify_address_overrides_mox_conf(make_config):
    config = make_config(verify_address="192.0.2.7", verify_ports=[993, 587, 25, 143])
    targets, warnings, mox_conf = verify_targets(config, "mail.example.com")
    assert (targets, warnings) == (
        [
            Target("192.0.2.7", 993, "tls"),
            Target("192.0.2.7", 587, "smtp"),
            Target("192.0.2.7", 25, "smtp"),
            Target("192.0.2.7", 143, "imap"),
        ],
        [],
    )
    # whether mox reads the files at all is still mox.conf's to say (the status report asks)
    assert mox_conf.names_files is None and mox_conf.detail.startswith("cannot read ")


def test_without_verify_address_the_listeners_of_mox_conf_decide(make_config, tmp_path):
    config = make_config(verify_address="", verify_ports=[993])
    (tmp_path / "mox").mkdir()
    (tmp_path / "mox" / "mox.conf").write_text(
        "Listeners:\n\tpublic:\n\t\tIPs:\n\t\t\t- 0.0.0.0\n\t\tTLS:\n\t\t\tKeyCerts:\n"
        "\t\t\t\t-\n\t\t\t\t\tCertFile: certs/wildcard_.example.com.crt\n"
        "\t\t\t\t\tKeyFile: certs/wildcard_.example.com.key\n"
        "\t\tIMAPS:\n\t\t\tEnabled: true\n"
    )
    targets, warnings, mox_conf = verify_targets(config, "*.example.com")
    assert (targets, warnings) == ([Target("127.0.0.1", 993, "tls")], [])
    assert mox_conf.names_files is True
    found, warnings, mox_conf = verify_targets(config, "mail.example.com")
    assert found == []
    assert warnings == [
        f"no listener in {config.mox_config} names {config.mox_cert_dir}/mail.example.com.crt"
        f" and {config.mox_cert_dir}/mail.example.com.key in TLS KeyCerts:"
        " mox does not serve these files"
    ]
    assert mox_conf.names_files is False and mox_conf.detail == warnings[0]


def test_an_unreadable_mox_conf_is_a_warning(make_config):
    config = make_config(verify_address="")
    found, warnings, mox_conf = verify_targets(config, "mail.example.com")
    assert found == []
    assert warnings[0].startswith(f"cannot read {config.mox_config} to find mox's listeners")
    assert mox_conf.names_files is None


def test_a_fifo_planted_as_mox_conf_does_not_block_the_read(make_config, tmp_path):
    """mox.conf belongs to the mox user: a FIFO there must not hang the root program (and with
    it the lock, and every later sync)."""
    config = make_config(verify_address="")
    (tmp_path / "mox").mkdir()
    os.mkfifo(config.mox_config)
    result: list[tuple[list[Target], list[str], MoxConf]] = []
    reader = threading.Thread(
        target=lambda: result.append(verify_targets(config, "mail.example.com")), daemon=True
    )
    reader.start()
    reader.join(5)
    if reader.is_alive():
        with open(config.mox_config, "wb"):  # let the blocked reader go
            pass
        reader.join(5)
        pytest.fail("reading a FIFO at mox.conf blocked")
    (found, warnings, _) = result[0]
    assert found == [] and warnings[0].startswith(f"cannot read {config.mox_config}")


def test_addresses_of_other_hosts_and_scoped_ones_are_not_connected_to():
    """The mox user may write mox.conf: certsync checks what mox serves on this host only, and
    an IPv6 scope id (anything but `%`, escapes included) is no address to print or connect to."""
    ips = "\t\tIPs:\n\t\t\t- 192.0.2.10\n\t\t\t- fe80::1%\x1b[2K\n\t\t\t- 127.0.0.10\n"
    body = "\t\tIMAPS:\n\t\t\tEnabled: true\n"
    assert targets(listener(body, ips), MAIL, [993]) == ["127.0.0.10:993 tls"]


def test_a_deeply_nested_mox_conf_is_read_without_recursing_into_it():
    deep = "".join("\t" * depth + f"K{depth}:\n" for depth in range(3000))
    assert isinstance(parse_sconf(deep), dict)

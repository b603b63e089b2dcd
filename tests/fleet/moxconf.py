"""mox.conf and domains.conf for a test host (sconf format: tab indentation, no quoting)."""

from __future__ import annotations

from .hostspec import MOX_CERT_DIR, MOX_HOME, HostSpec, storage_name


def mox_conf(spec: HostSpec) -> str:
    key_certs = "".join(
        f"\t\t\t\t-\n"
        f"\t\t\t\t\tCertFile: {MOX_CERT_DIR}/{storage_name(name)}.crt\n"
        f"\t\t\t\t\tKeyFile: {MOX_CERT_DIR}/{storage_name(name)}.key\n"
        for name in spec.cert_names
    )
    return (
        f"DataDir: {MOX_HOME}/data\n"
        "LogLevel: info\n"
        "User: mox\n"
        f"Hostname: {spec.cert_names[0].replace('*.', 'mail.', 1)}\n"
        "Listeners:\n"
        "\tpublic:\n"
        "\t\tIPs:\n"
        f"\t\t\t- {spec.address}\n"
        "\t\tTLS:\n"
        "\t\t\tKeyCerts:\n"
        f"{key_certs}"
        "\t\tSMTP:\n"
        "\t\t\tEnabled: true\n"
        "\t\tSubmission:\n"
        "\t\t\tEnabled: true\n"
        "\t\tSubmissions:\n"
        "\t\t\tEnabled: true\n"
        "\t\tIMAPS:\n"
        "\t\t\tEnabled: true\n"
        "Postmaster:\n"
        "\tAccount: admin\n"
        "\tMailbox: Postmaster\n"
    )


def domains_conf(spec: HostSpec) -> str:
    return (
        "Domains:\n"
        f"\t{spec.mail_domain}: nil\n"
        "Accounts:\n"
        "\tadmin:\n"
        f"\t\tDomain: {spec.mail_domain}\n"
        "\t\tDestinations:\n"
        f"\t\t\tpostmaster@{spec.mail_domain}: nil\n"
    )

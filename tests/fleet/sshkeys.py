"""Ed25519 keys in OpenSSH format, and the sshd config of a test host."""

from __future__ import annotations

from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519


def write_ed25519_key(private_path: Path, comment: str) -> str:
    """Write an unencrypted OpenSSH private key (0600) and `<path>.pub`; return the public line."""
    key = ed25519.Ed25519PrivateKey.generate()
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption(),
    )
    private_path.touch(mode=0o600)
    private_path.write_bytes(private)
    public = key.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )
    line = f"{public.decode()} {comment}"
    private_path.with_name(private_path.name + ".pub").write_text(line + "\n")
    return line


def sshd_config(address: str, host_key: Path, authorized_keys: Path, pid_file: Path) -> str:
    return "\n".join(
        [
            f"ListenAddress {address}:22",
            f"HostKey {host_key}",
            f"PidFile {pid_file}",
            f"AuthorizedKeysFile {authorized_keys}",
            "PermitRootLogin prohibit-password",
            "PubkeyAuthentication yes",
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            "UsePAM no",
            "UseDNS no",
            # the key files live under /tmp, which is world-writable: StrictModes would refuse them
            "StrictModes no",
            "PrintMotd no",
            "MaxStartups 64:30:128",
            "MaxSessions 64",
            "Subsystem sftp internal-sftp",
            "LogLevel VERBOSE",
            "",
        ]
    )

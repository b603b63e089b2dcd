"""The certsync state of a host, read in one command.

For each certificate name: Caddy's candidate pairs (one per issuer folder) and mox's files. Only
public material leaves the host: certificate PEM blocks, sha256 of certificate files, owners and
modes. Private keys are compared on the host (against the certificate's public key, and against
mox's key) and only the yes/no answers are printed.
"""

from __future__ import annotations

import dataclasses

from pyinfra.api import FactBase, QuoteString, StringCommand

from files.certsync import storage_name

# POSIX sh; arguments: caddy data dir, mox cert dir, files to hash..., "--", name stored-name...
# Every file is read with dd's nofollow: a symlink someone planted is never followed.
STATE_SCRIPT = r"""
set -u
rd() { dd if="$1" iflag=nofollow,nonblock status=none 2>/dev/null; }
meta() {
  if [ -L "$1" ]; then echo link; elif [ -f "$1" ]; then stat -c 'file %U %G %a' "$1";
  elif [ -d "$1" ]; then stat -c 'dir %U %G %a' "$1"; elif [ -e "$1" ]; then echo other;
  else echo missing; fi
}
sha() {
  if [ -f "$1" ] && [ ! -L "$1" ]; then rd "$1" | sha256sum | cut -d' ' -f1; else echo -; fi
}
certs() { rd "$1" | sed -n '/^-----BEGIN CERTIFICATE-----/,/^-----END CERTIFICATE-----/p'; }
cert_pub() { rd "$1" | openssl x509 -noout -pubkey 2>/dev/null; }
key_pub() {
  rd "$1" | sed -e 's/^-----\(BEGIN\|END\) ED25519 PRIVATE KEY-----/-----\1 PRIVATE KEY-----/' \
    | openssl pkey -pubout -passin pass: 2>/dev/null
}
data=$1 moxdir=$2
shift 2
for tool in python3 openssl; do
  command -v "$tool" >/dev/null 2>&1 || echo "missing-tool $tool"
done
echo "mox-dir $(meta "$moxdir")"
echo "caddy-storage $(meta "$data/certificates")"
while [ "$1" != "--" ]; do echo "file $1 $(sha "$1") $(meta "$1")"; shift; done
shift
while [ $# -gt 0 ]; do
  name=$1 stored=$2
  shift 2
  mcrt="$moxdir/$stored.crt" mkey="$moxdir/$stored.key"
  echo "name $name"
  echo "mox-key $(meta "$mkey")"
  echo "mox-crt $(sha "$mcrt") $(meta "$mcrt")"
  certs "$mcrt"
  mkey_sum=$(sha "$mkey")
  for dir in "$data"/certificates/*/"$stored"; do
    [ -d "$dir" ] || continue
    crt="$dir/$stored.crt" key="$dir/$stored.key" issuer=${dir%/*}
    matches=no; a=$(cert_pub "$crt"); [ -n "$a" ] && [ "$a" = "$(key_pub "$key")" ] && matches=yes
    same=no; [ "$(sha "$key")" = "$mkey_sum" ] && [ "$mkey_sum" != - ] && same=yes
    echo "candidate ${issuer##*/} $(sha "$crt") key-matches=$matches key-same-as-mox=$same"
    certs "$crt"
  done
done
"""


@dataclasses.dataclass
class FileMeta:
    """Owner, group and mode of a path; kind is file, dir, link, other or missing."""

    kind: str
    user: str = ""
    group: str = ""
    mode: int = 0

    @classmethod
    def parse(cls, words: list[str]) -> FileMeta:
        if words[0] in ("file", "dir") and len(words) == 4:
            return cls(words[0], words[1], words[2], int(words[3], 8))
        return cls(words[0])

    def is_(self, kind: str, user: str, group: str, mode: int) -> bool:
        return (self.kind, self.user, self.group, self.mode) == (kind, user, group, mode)


@dataclasses.dataclass
class Certificates:
    """A certificate file: its sha256 ('-' when unreadable) and its certificate PEM blocks."""

    sha256: str
    pem: str = ""


@dataclasses.dataclass
class Candidate:
    """Caddy's pair for a name in one issuer folder."""

    issuer: str
    cert: Certificates
    key_matches: bool
    key_same_as_mox: bool


@dataclasses.dataclass
class NameState:
    name: str
    mox_cert: Certificates
    mox_cert_meta: FileMeta
    mox_key_meta: FileMeta
    candidates: list[Candidate] = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class InstalledFile:
    sha256: str  # '-' when missing
    meta: FileMeta


@dataclasses.dataclass
class HostState:
    missing_tools: list[str]
    mox_dir: FileMeta
    caddy_storage: FileMeta
    files: dict[str, InstalledFile]  # certsync's own files on the host, by path
    names: dict[str, NameState]


class CertsyncState(FactBase[HostState]):
    """Caddy's and mox's certificates for `names`, and the sha256 of certsync's own files."""

    def command(  # type: ignore[override]
        self, names: list[str], caddy_data_dir: str, mox_cert_dir: str, files: list[str]
    ) -> StringCommand:
        args = [caddy_data_dir, mox_cert_dir, *files, "--"]
        for name in names:
            args += [name, storage_name(name)]
        return StringCommand(
            "sh", "-c", QuoteString(STATE_SCRIPT), "certsync-state", *map(QuoteString, args)
        )

    def process(self, output: list[str]) -> HostState:  # type: ignore[override]
        state = HostState([], FileMeta("missing"), FileMeta("missing"), {}, {})
        pem: Certificates | None = None  # where the PEM lines that follow belong
        current: NameState | None = None
        for line in output:
            if line.startswith("-----") or " " not in line:
                if pem is not None:
                    pem.pem += line + "\n"
                continue
            keyword, *words = line.split()
            pem = None
            if keyword == "missing-tool":
                state.missing_tools += words
            elif keyword == "mox-dir":
                state.mox_dir = FileMeta.parse(words)
            elif keyword == "caddy-storage":
                state.caddy_storage = FileMeta.parse(words)
            elif keyword == "file":
                state.files[words[0]] = InstalledFile(words[1], FileMeta.parse(words[2:]))
            elif keyword == "name":
                current = NameState(
                    words[0], Certificates("-"), FileMeta("missing"), FileMeta("missing")
                )
                state.names[words[0]] = current
            elif keyword == "mox-key" and current:
                current.mox_key_meta = FileMeta.parse(words)
            elif keyword == "mox-crt" and current:
                current.mox_cert = pem = Certificates(words[0])
                current.mox_cert_meta = FileMeta.parse(words[1:])
            elif keyword == "candidate" and current:
                pem = Certificates(words[1])
                current.candidates.append(
                    Candidate(
                        issuer=words[0],
                        cert=pem,
                        key_matches=words[2] == "key-matches=yes",
                        key_same_as_mox=words[3] == "key-same-as-mox=yes",
                    )
                )
        return state

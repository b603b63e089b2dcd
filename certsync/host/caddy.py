"""Caddy's pairs for a name, one per issuer folder, and the choice among them: the valid one with
the latest NotBefore (as Caddy itself chooses), the first issuer folder in name order on a tie."""

from __future__ import annotations

import datetime as dt
import os

from .errors import Refused, reason
from .files import OTHER, read_file
from .keykind import MAX_CERT_BYTES, MAX_KEY_BYTES
from .names import storage_name
from .record import Record
from .validity import validity_problem
from .x509 import CertInfo, check_key_matches, parse_chain, untrusted_chain_problem

TYPE_CHECKING = False  # typing's costs an import on every run
if TYPE_CHECKING:
    from typing import Any


class Pair(Record):
    """A whole, valid pair of Caddy's. `key` stays on the host: never printed nor sent."""

    cert: bytes
    key: bytes
    info: CertInfo
    issuer: str


class Candidate(Record):
    """What one issuer folder holds for the name: its certificate, or why it is not usable."""

    issuer: str
    info: CertInfo | None
    problem: str | None

    def to_json(self) -> dict[str, Any]:
        return {
            "issuer": self.issuer,
            "cert": self.info.to_json() if self.info else None,
            "problem": self.problem,
        }


class Choice(Record):
    pair: Pair | None
    candidates: list[Candidate]
    refusal: str | None  # why there is no pair


def choose_pair(
    caddy_data_dir: str,
    name: str,
    now: dt.datetime,
    min_validity: dt.timedelta,
    trusted_ca_file: str | None,
) -> Choice:
    """The newest valid pair for `name` across all of Caddy's issuer folders."""
    stored = storage_name(name)
    certificates = os.path.join(caddy_data_dir, "certificates")
    try:
        issuers = sorted(os.listdir(certificates))
    except FileNotFoundError:
        return Choice(None, [], f"Caddy's storage {certificates} does not exist")
    except OSError as error:
        return Choice(None, [], f"Caddy's storage {certificates}: {reason(error)}")
    best: Pair | None = None
    candidates: list[Candidate] = []
    for issuer in issuers:
        folder = os.path.join(certificates, issuer, stored)
        try:
            # Caddy's own folders may be links (a data dir moved to another disk); its files
            # are still read without following links.
            folder_fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
        except (FileNotFoundError, NotADirectoryError):
            continue
        except OSError as error:
            candidates.append(Candidate(issuer, None, reason(error)))
            continue
        try:
            crt_file = read_file(folder_fd, stored + ".crt", MAX_CERT_BYTES)
            key_file = read_file(folder_fd, stored + ".key", MAX_KEY_BYTES)
        except OSError as error:
            candidates.append(Candidate(issuer, None, reason(error)))
            continue
        finally:
            os.close(folder_fd)
        info = None
        cert, key = crt_file.data, key_file.data
        try:
            for file, suffix, cap in (
                (crt_file, ".crt", MAX_CERT_BYTES),
                (key_file, ".key", MAX_KEY_BYTES),
            ):
                if file.kind == OTHER:
                    raise Refused(f"{stored}{suffix} is not a regular file of at most {cap} bytes")
            if cert is None or key is None:
                raise Refused("certificate or key file is missing")
            info, ders = parse_chain(cert)
            check_key_matches(cert, key)
            problem = validity_problem(info, name, now, min_validity)
            if problem is None and trusted_ca_file is not None:
                problem = untrusted_chain_problem(ders, trusted_ca_file)
            if problem:
                raise Refused(problem)
        except (ValueError, Refused) as error:
            candidates.append(Candidate(issuer, info, str(error)))
            continue
        candidates.append(Candidate(issuer, info, None))
        if best is None or info.not_before > best.info.not_before:
            best = Pair(cert, key, info, issuer)
    if best is not None:
        return Choice(best, candidates, None)
    if not candidates:
        return Choice(None, [], f"Caddy has no certificate for it under {certificates}/*/{stored}")
    return Choice(None, candidates, "; ".join(f"{c.issuer}: {c.problem}" for c in candidates))

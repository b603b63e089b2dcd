"""The controller reads certificates with cryptography, into the host program's CertInfo."""

from __future__ import annotations

import hashlib

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from files.certsync import CertInfo


def cert_info(pem: str) -> CertInfo | None:
    """The leaf (first certificate) of a PEM chain; None if there is none or it does not parse."""
    try:
        leaf = x509.load_pem_x509_certificates(pem.encode())[0]
    except (ValueError, IndexError):
        return None
    try:
        sans = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        dns_names = tuple(sans.get_values_for_type(x509.DNSName))
    except x509.ExtensionNotFound:
        dns_names = ()
    return CertInfo(
        fingerprint=hashlib.sha256(leaf.public_bytes(Encoding.DER)).hexdigest(),
        sans=dns_names,
        not_before=leaf.not_valid_before_utc,
        not_after=leaf.not_valid_after_utc,
        serial=f"{leaf.serial_number:x}",
    )

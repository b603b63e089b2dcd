"""The certsync end-to-end test fleet: pebble + Caddy issue real certificates, N SSH hosts run mox.

Entry points: `Pki` (pebble + caddy), `Fleet` (the SSH hosts), `served_certificate` (what a
port serves).
"""

from .fleet import Fleet, TestHost
from .hostspec import (
    DEBIAN_CADDY_DATA_DIR,
    DOCKER_CADDY_DATA_DIR,
    PRIVATE_DIRS,
    HostSpec,
    default_host_specs,
)
from .pki import Pki
from .probe import served_certificate
from .requirements import missing_components

__all__ = [
    "DEBIAN_CADDY_DATA_DIR",
    "DOCKER_CADDY_DATA_DIR",
    "PRIVATE_DIRS",
    "Fleet",
    "HostSpec",
    "Pki",
    "TestHost",
    "default_host_specs",
    "missing_components",
    "served_certificate",
]

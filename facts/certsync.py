"""certsync's fact, where pyinfra deploys keep their own (it lives in the certsync package)."""

from certsync.facts import CertsyncState

__all__ = ["CertsyncState"]

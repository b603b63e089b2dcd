"""certsync's operation, where pyinfra deploys keep their own (it lives in the certsync package)."""

from certsync.operations import synced

__all__ = ["synced"]

"""certsync: keep mox's certificates equal to Caddy's on every host of the inventory.

pyinfra inventory.py deploy.py --dry      # preview, per host and name
pyinfra inventory.py deploy.py            # converge: the canary group first, then the rest
"""

from pyinfra import host, inventory, state

from operations import certsync
from operations.settings import settings_of_hosts

CANARY_GROUP = "canary"

# Every targeted host's settings are checked before anything runs on any host.
settings = settings_of_hosts(inventory)[host.name]


def failed_canaries() -> str | None:
    failed = sorted(h.name for h in state.failed_hosts if CANARY_GROUP in h.groups)
    return f"canary host {', '.join(failed)} failed" if failed else None


# Operations run one after the other across the fleet: every canary host is synced before any
# other host; the other hosts are held back (and fail, untouched) if a canary failed.
if CANARY_GROUP in host.groups:
    certsync.synced(name="certsync: canary hosts", settings=settings)
else:
    certsync.synced(name="certsync: the other hosts", settings=settings, hold_back=failed_canaries)

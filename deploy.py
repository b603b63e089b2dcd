"""certsync: keep mox's certificates equal to Caddy's on every host of the inventory.

pyinfra inventory.py deploy.py --dry      # preview, per host and name
pyinfra inventory.py deploy.py            # converge: the canary group first, then the rest
"""

from pyinfra import host, inventory, state

from operations import certsync
from operations.settings import settings_of_hosts

CANARY_GROUP = "canary"

# Every targeted host's settings are checked before anything runs on any host.
settings = settings_of_hosts(inventory.iter_activated_hosts())[host.name]


def canaries_succeeded() -> bool:
    return not any(CANARY_GROUP in failed.groups for failed in state.failed_hosts)


# Operations run one after the other across the fleet: every canary host is synced before any
# other host, and the other hosts only if no canary failed.
if CANARY_GROUP in host.groups:
    certsync.synced(name="certsync: canary hosts", settings=settings)
else:
    certsync.synced(name="certsync: the other hosts", settings=settings, _if=canaries_succeeded)

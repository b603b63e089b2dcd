"""certsync: keep mox's certificates equal to Caddy's on every host of the inventory.

pyinfra inventory.py deploy.py --dry      # preview, per host and name
pyinfra inventory.py deploy.py            # converge the fleet: canary group first, then the rest
"""

from pyinfra import host, inventory

from operations import certsync
from operations.settings import settings_from_data, settings_of_inventory

# Every host's settings are checked before anything runs on any host.
settings_of_inventory(inventory)
settings = settings_from_data(host.name, host.data)

# Operations run in order across hosts: every canary host is done before any other host starts.
if "canary" in host.groups:
    certsync.synced(name="certsync: canary hosts", settings=settings)
else:
    certsync.synced(name="certsync: all other hosts", settings=settings)

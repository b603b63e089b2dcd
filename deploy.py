"""certsync: keep mox's certificates equal to Caddy's on every host of the inventory.

pyinfra inventory.py deploy.py --dry      # preview, per host and name
pyinfra inventory.py deploy.py            # converge: the canary group first, then the rest
"""

from certsync.deploy import certsync_deploy

certsync_deploy()

"""pyinfra settings for the certsync deploy (pyinfra runs config.py from this folder)."""

from pyinfra import config

# With --yes: stop the whole run once more than this share of the targeted hosts has failed
# (unreachable hosts included). Without --yes, pyinfra ignores it (and --fail-percent) and asks at
# the first failure whether to go on. A failed canary host holds back the others by itself.
config.FAIL_PERCENT = 50

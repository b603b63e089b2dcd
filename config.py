"""pyinfra settings for the certsync deploy (pyinfra runs config.py from this folder)."""

from pyinfra import config

# Stop the whole run once more than this share of the fleet has failed (unreachable hosts
# included). A failing canary host holds back the rest of the fleet by itself (deploy.py).
# Without --yes, pyinfra asks whether to go on after any failure instead.
config.FAIL_PERCENT = 50

"""pyinfra settings for the certsync deploy (pyinfra loads config.py from this folder)."""

# Stop the whole run once more than this share of the fleet has failed (unreachable hosts
# included). A failing canary host stops the rollout by itself (deploy.py).
# Without --yes, pyinfra asks whether to go on after any failure instead.
FAIL_PERCENT = 50

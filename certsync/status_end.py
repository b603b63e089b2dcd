"""The last deploy file while `certsync status` reads (certsync/statusrun.py): without a deploy
of the user's, certsync_deploy() with data only; then the host's deploy has run through."""

from certsync.statusrun import host_loaded

host_loaded()

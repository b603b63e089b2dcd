"""The certsync host program: the sync transaction, run on each mail host.

Standard library only, Python 3.9 or newer: the hosts need nothing but python3 and openssl. The
deploy ships this package as one zipapp (`certsync.program`); the cron job and the deploy both run
it. Modules use relative imports so that the same files work as `certsync.host` on the controller
and as `certsync_host` inside the zipapp.
"""

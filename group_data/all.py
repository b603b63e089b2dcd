"""Settings for every host. certsync's defaults live in the package (certsync/host/settings.py;
README's settings table lists them all): set here only what differs for your whole fleet, e.g.

    certsync_alert_email = "postmaster@example.com"
"""

"""An example fleet. Replace the hosts with yours; any setting of group_data/all.py can be set
per group (group_data/<group>.py) or per host (here). Precedence: host > group > all."""

# Synced first: if more than FAIL_PERCENT (config.py) of them fail, the rest is not touched.
canary = [
    ("mail.example.com", {"certsync_names": ["mail.example.com"]}),
]

# Caddy runs in Docker on these (the default data dir).
docker_caddy = [
    (
        "mx1.example.org",
        {
            # What `mox quickstart` sets up: three names on one host.
            "certsync_names": [
                "mx1.example.org",
                "mta-sts.example.org",
                "autoconfig.example.org",
            ],
        },
    ),
]

# Caddy from Debian's package on these (group_data/debian_caddy.py).
debian_caddy = [
    ("mail.example.net", {"certsync_names": ["mail.example.net"], "ssh_user": "admin"}),
]

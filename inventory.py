"""An example fleet. Replace the hosts with yours. Any certsync setting (README's settings table)
can be set for all hosts (group_data/all.py), per group (group_data/<group>.py) or per host
(here). Precedence, highest first (README, "Settings"): the deploy's own host.data.certsync_x =
... > --data > host (here) > group (the last group defined here wins) > all > the arguments of
certsync_deploy(...) > certsync's defaults."""

# Synced first: the other hosts start only once every canary host has finished, and only if none
# of them failed (one failed canary host holds back all the others, whatever FAIL_PERCENT says).
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
    # Not root: pyinfra runs every command through sudo (README: "Not as root").
    (
        "mail.example.net",
        {"certsync_names": ["mail.example.net"], "ssh_user": "admin", "_sudo": True},
    ),
]

"""Hosts whose Caddy is Debian's package (it runs as user caddy, with XDG data in its home)."""

certsync_caddy_data_dir = "/var/lib/caddy/.local/share/caddy"

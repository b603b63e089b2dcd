"""certsync's settings, with their defaults. Override any of them per group or per host."""

# Certificate names whose files mox serves (required per host), e.g. ["mail.example.com"].
certsync_names: list[str] = []
# Caddy's data dir (holding `certificates/`); Debian's caddy: /var/lib/caddy/.local/share/caddy.
certsync_caddy_data_dir = "/var/lib/docker/volumes/docker_caddy-data/_data/caddy"
# mox's certificate folder: certsync writes <name>.crt and <name>.key here.
certsync_mox_cert_dir = "/home/mox/certs"
# Owner and group of mox's certificate files and folder.
certsync_mox_user = "mox"
certsync_mox_group = "mox"
# The mox binary and its config; `mox config test` runs before every restart.
certsync_mox_binary = "/home/mox/mox"
certsync_mox_config = "/home/mox/config/mox.conf"
# How to restart mox (it has no reload); run without a shell, split like a shell would.
certsync_restart_command = "systemctl restart mox"
# Where to connect to check what mox serves; empty: the certificate name itself.
certsync_verify_address = ""
# Ports to check after a restart; 25 and 587 use SMTP STARTTLS, 143 IMAP STARTTLS, others TLS.
certsync_verify_ports = [993, 465, 587]
# How long mox may take to serve the new certificate after a restart before certsync rolls back.
certsync_verify_timeout_seconds = 60
# Refuse a certificate that expires sooner than this.
certsync_min_validity_hours = 24
# How many backups of mox's previous files to keep (root-only folder, 0700).
certsync_backups_keep = 5
certsync_backup_dir = "/var/lib/certsync/backups"
# The cron job that syncs between deploy runs (cron syntax: five fields or @daily and the like).
certsync_cron_schedule = "17 */6 * * *"
# Where failures are reported: cron mails the job's errors to this address (empty: cron's default).
certsync_alert_email = ""
# Also run this command with the failure report on its standard input (empty: none).
certsync_alert_command = ""
# One line per name per run.
certsync_log_file = "/var/log/certsync/certsync.log"
# Refuse a certificate whose chain `openssl verify` does not trust (checked on the host).
certsync_require_trusted_chain = False
# The CA certificates that chain must lead to (PEM bundle on the host).
certsync_trusted_ca_file = "/etc/ssl/certs/ca-certificates.crt"
# Install and restart even when mox's files already equal Caddy's.
certsync_force = False
# Where the deploy puts the host program, its settings and the lock; the python3 that runs it.
certsync_install_dir = "/usr/local/lib/certsync"
certsync_config_file = "/etc/certsync/config.json"
certsync_cron_file = "/etc/cron.d/certsync"
certsync_lock_file = "/var/lib/certsync/lock"
certsync_python = "/usr/bin/python3"

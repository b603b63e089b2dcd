#!/bin/sh
# Prepare a Debian 12 machine (as root) for certsync's tests, including the end-to-end test fleet
# (tests/fleet): pebble, Debian's caddy (2.6), openssh, the Python tools, and mox and Caddy 2.11
# built from the Go module proxy. Idempotent: each step is skipped when what it provides is
# already there, so a second run touches nothing.
#
# Environment:
#   PYTHON        interpreter to install the Python packages for (default: python3)
#   MOX_DEST      where mox and Caddy are installed (default: /usr/local/lib/certsync-test/bin;
#                 the fleet looks there, or at $CERTSYNC_MOX and $CERTSYNC_CADDY)
set -eu

PYTHON=${PYTHON:-python3}
MOX_VERSION=v0.0.17
# The test fleet's Caddy (tests/fleet/pki.py); Debian's caddy 2.6 runs a few tests of its own.
CADDY_VERSION=v2.11.9
MOX_DEST=${MOX_DEST:-/usr/local/lib/certsync-test/bin}
# sudo: the test hosts' non-root user (pyinfra's _sudo); python3-venv: the package test
# installs the built wheel into a fresh virtual environment.
APT_PACKAGES="caddy pebble openssh-server openssh-client openssl python3 python3-pip
    python3-venv sudo ca-certificates util-linux procps iproute2 passwd cron"
# setuptools and wheel: `pip wheel --no-build-isolation .` builds with what is installed.
# pytest-xdist: scripts/test.sh runs the tests in parallel processes (most of a test waits).
PIP_PACKAGES="pyinfra>=3.10,<3.11 cryptography pytest pytest-testinfra pytest-xdist paramiko ruff
    mypy setuptools>=68 wheel"
# logrotate, aiosmtpd, prometheus_client: the tests of the log rotation, alert mail and metrics.
APT_PACKAGES="$APT_PACKAGES logrotate"
# knot, knot-dnsutils (kdig, knsupdate): the test fleet's authoritative DNS server for the DANE
# tests; prometheus (promtool): the test of the alerting rules (certsync/files/certsync.rules.yml).
# Their services do not start (policy-rc.d).
APT_PACKAGES="$APT_PACKAGES knot knot-dnsutils prometheus"
PIP_PACKAGES="$PIP_PACKAGES aiosmtpd prometheus_client"
# bind9-dnsutils: nsupdate, which scripts/dane-nsupdate (certsync_dane_publish_command) runs.
APT_PACKAGES="$APT_PACKAGES bind9-dnsutils"

log() { printf '==> %s\n' "$*"; }

if [ "$(id -u)" != 0 ]; then
    echo "setup.sh: run as root" >&2
    exit 1
fi

install_debian_packages() {
    missing=""
    for package in $APT_PACKAGES; do
        dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" \
            || missing="$missing $package"
    done
    if [ -z "$missing" ]; then
        log "Debian packages: all present"
        return
    fi
    log "Debian packages: installing$missing"
    # Keep the packages' services (caddy on :80, sshd on :22, cron) from starting during the install;
    # a system sshd on 0.0.0.0:22 would take the port the test hosts' sshd need.
    created_policy=""
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
        chmod 755 /usr/sbin/policy-rc.d
        created_policy=yes
    fi
    DEBIAN_FRONTEND=noninteractive apt-get update
    # shellcheck disable=SC2086  # word splitting wanted
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $missing
    [ -z "$created_policy" ] || rm -f /usr/sbin/policy-rc.d
}

warn_about_system_services() {
    # The fleet's hosts listen on 127.0.0.1x:22 (sshd) and 25/465/587/993 (mox).
    if command -v ss >/dev/null && ss -Hltn 'sport = :22' | grep -qE '(0\.0\.0\.0|\*|\[::\]):22'; then
        log "WARNING: something listens on *:22 (a system sshd?); the test hosts need 127.0.0.11+:22."
        log "         Stop it, or make it listen on specific addresses only (ListenAddress)."
    fi
}

install_python_packages() {
    if "$PYTHON" - <<'PY' 2>/dev/null
import importlib.metadata as md
import shutil
for dist in ("aiosmtpd", "prometheus_client"):
    md.version(dist)
assert md.version("pyinfra").startswith("3.10.")  # the pyinfra certsync is tested with
for dist in ("cryptography", "pytest", "pytest-testinfra", "pytest-xdist", "paramiko", "ruff",
             "mypy", "wheel"):
    md.version(dist)
assert int(md.version("setuptools").split(".")[0]) >= 68
PY
    then
        log "Python packages: all present for $PYTHON"
        return
    fi
    log "Python packages: installing for $PYTHON"
    extra=""
    # Debian's own python3 refuses pip installs (PEP 668) unless told otherwise.
    if "$PYTHON" -c 'import os, sys, sysconfig; sys.exit(not os.path.exists(os.path.join(sysconfig.get_path("stdlib"), "EXTERNALLY-MANAGED")))'; then
        extra="--break-system-packages"
    fi
    # shellcheck disable=SC2086  # word splitting wanted
    "$PYTHON" -m pip install $extra $PIP_PACKAGES
}

go_is_new_enough() {  # $1: the minor version of Go 1.x needed
    command -v go >/dev/null || return 1
    version=$(go env GOVERSION 2>/dev/null | sed -n 's/^go\([0-9]*\)\.\([0-9]*\).*/\1 \2/p')
    [ -n "$version" ] || return 1
    set -- "$1" $version
    [ "$2" -gt 1 ] || { [ "$2" -eq 1 ] && [ "$3" -ge "$1" ]; }
}

use_go() {  # $1: what needs it, $2: the minor version of Go 1.x it needs
    PATH=$PATH:/usr/local/go/bin
    export PATH
    if ! go_is_new_enough "$2"; then
        echo "setup.sh: $1 needs Go >= 1.$2 on PATH (found: $(go env GOVERSION 2>/dev/null || echo none))" >&2
        exit 1
    fi
    log "Go: $(go env GOVERSION) present"
}

install_mox() {
    if "$MOX_DEST/mox" version 2>/dev/null | grep -q "^$MOX_VERSION"; then
        log "mox: $("$MOX_DEST/mox" version | head -n1) present in $MOX_DEST"
        return
    fi
    use_go "mox $MOX_VERSION" 25
    log "mox: building $MOX_VERSION into $MOX_DEST (about 80 s)"
    # `go install github.com/mjl-/mox@$MOX_VERSION` fails where the module proxy refuses the
    # @v/list lookup; installing from a throw-away module that requires mox works.
    build=$(mktemp -d)
    printf 'module moxbuild\n\ngo 1.25\n\nrequire github.com/mjl-/mox %s\n' "$MOX_VERSION" >"$build/go.mod"
    mkdir -p "$MOX_DEST"
    (cd "$build" && go mod download github.com/mjl-/mox \
        && GOFLAGS=-mod=mod GOBIN="$MOX_DEST" go install github.com/mjl-/mox)
    rm -rf "$build"
    "$MOX_DEST/mox" version
}

install_caddy() {
    if "$MOX_DEST/caddy" version 2>/dev/null | grep -q "^$CADDY_VERSION "; then
        log "caddy: $("$MOX_DEST/caddy" version) present in $MOX_DEST"
        return
    fi
    use_go "Caddy $CADDY_VERSION" 26  # its go.mod says go 1.26.0
    log "caddy: building $CADDY_VERSION into $MOX_DEST (a few minutes, about 80 MB)"
    # Caddy's own recipe for a custom build (what xcaddy generates): a throw-away module whose
    # main calls caddycmd.Main() with the standard modules.
    build=$(mktemp -d)
    printf 'module caddybuild\n\ngo 1.26\n\nrequire github.com/caddyserver/caddy/v2 %s\n' \
        "$CADDY_VERSION" >"$build/go.mod"
    cat >"$build/main.go" <<'GO'
package main

import (
	caddycmd "github.com/caddyserver/caddy/v2/cmd"

	_ "github.com/caddyserver/caddy/v2/modules/standard"
)

func main() {
	caddycmd.Main()
}
GO
    mkdir -p "$MOX_DEST"
    (cd "$build" && go mod tidy && go build -o "$MOX_DEST/caddy.new" . \
        && mv "$MOX_DEST/caddy.new" "$MOX_DEST/caddy")
    rm -rf "$build"
    "$MOX_DEST/caddy" version
}

ensure_mox_user() {
    if id mox >/dev/null 2>&1; then
        log "user mox: present"
    else
        log "user mox: creating"
        useradd --system --user-group --home-dir /home/mox --no-create-home \
            --shell /usr/sbin/nologin mox
    fi
}

install_debian_packages
warn_about_system_services
install_python_packages
install_mox
install_caddy
ensure_mox_user
log "done: bash scripts/demo.sh runs the demo fleet, bash scripts/test.sh the whole suite (in 3 processes)"

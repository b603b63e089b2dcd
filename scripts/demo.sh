#!/usr/bin/env bash
# Set everything up, bring up a local demo fleet of three SSH hosts running real mox (with real
# Caddy + pebble issuing certificates), and run the certsync deploy on it: preview, rollout, result.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
python3 -m scripts.demo "$@"

#!/usr/bin/env bash
# Set everything up (Debian packages, Python packages, mox, Caddy 2.11) and run the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
ruff check .
mypy .
python3 -m pytest "$@"

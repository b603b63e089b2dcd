#!/usr/bin/env bash
# Set everything up (Debian packages, Python packages, mox, Caddy 2.11) and run the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
ruff check .
mypy .
# In CERTSYNC_TEST_PROCESSES processes (3: most of an end-to-end test waits for sshd, mox, Caddy
# or cron; each process runs its own pebble, Caddy and fleets on a loopback block of its own), a
# test file's tests in one process (they share its module fixtures). `-n 0`: in pytest's own
# process (which -s and --pdb need).
# Without arguments, the crash test (it restarts mox some 150 times, each against a time bound)
# runs after the others, alone.
workers=${CERTSYNC_TEST_PROCESSES:-3}
if [ "$#" -gt 0 ]; then
    exec python3 -m pytest -n "$workers" --dist loadfile "$@"
fi
status=0
python3 -m pytest -n "$workers" --dist loadfile --ignore=tests/e2e/test_crash.py || status=$?
python3 -m pytest -n 0 tests/e2e/test_crash.py || status=$?
exit "$status"

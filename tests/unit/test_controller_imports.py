"""What a deploy imports on the controller: the host program's modules it reads from (settings,
actions, output...), none of its planning, which only the hosts run (each is a few tenths of a
millisecond on every run of the controller)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PLANNING = ("plan", "dane", "probe", "x509", "pem", "keykind", "validity", "caddy", "moxconf")


def test_a_deploy_imports_none_of_the_host_program_s_planning():
    code = (
        "import json, sys; import certsync.deploy;"
        " print(json.dumps(sorted(m for m in sys.modules if m.startswith('certsync.host.'))))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    loaded = {name.removeprefix("certsync.host.") for name in json.loads(result.stdout)}
    assert "actions" in loaded  # what the deploy reads of the host program is still there
    assert loaded.isdisjoint(PLANNING), sorted(loaded & set(PLANNING))

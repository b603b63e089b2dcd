"""At boot (the cron job's @reboot line passes --boot), mox may not have started yet when the
sync reads its state: wait, for a bounded time, until mox answers on one of its checked ports,
so that a mox still starting is not judged down (and restarted, or a DANE hold skipped)."""

from __future__ import annotations

import time
from collections.abc import Sequence

from .output import stopping
from .settings import Config

BOOT_WAIT_SECONDS = 60


def wait_for_mox(config: Config, names: Sequence[str], seconds: float = BOOT_WAIT_SECONDS) -> bool:
    """Whether mox answers for one of `names` within `seconds` (True at once when there is
    nothing to ask)."""
    from .plan import answers, verify_targets

    targets = {name: verify_targets(config, name)[0] for name in names}
    targets = {name: found for name, found in targets.items() if found}
    if not targets:
        return True
    deadline = time.monotonic() + seconds
    while True:
        if any(answers(found, name) for name, found in targets.items()):
            return True
        if time.monotonic() >= deadline or stopping():
            return False
        time.sleep(1)

"""PID 1 of a test host's PID namespace: reaps orphans (mox after moxctl, sshd after it daemonizes).

When it exits, the kernel kills every process of the namespace: that is how a host is torn down.
Run as a script; stdlib only.
"""

import os
import signal


def main() -> None:
    # PID 1 only receives signals it has handlers for; block them and take them with sigwait.
    for number in (signal.SIGCHLD, signal.SIGTERM, signal.SIGINT):
        signal.signal(number, lambda *_: None)
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGCHLD, signal.SIGTERM, signal.SIGINT})
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            pid = 0
        if (
            pid == 0
            and signal.sigwait({signal.SIGCHLD, signal.SIGTERM, signal.SIGINT}) != signal.SIGCHLD
        ):
            return


if __name__ == "__main__":
    main()

"""Process helpers shared by the tests that start PostgreSQL or servers."""

from __future__ import annotations

import os
import signal
from pathlib import Path


def default_sigint() -> None:
    """Give a child the default SIGINT handling, for tests that press Ctrl-C.

    A shell running commands in the background starts them with SIGINT ignored, and Python
    then installs no KeyboardInterrupt handler: without this, such a test would hang there.
    """
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def pid_alive(pid: int) -> bool:
    """Return whether a process with this pid exists."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def postmaster_pid(datadir: Path) -> int:
    """Return the pid of the PostgreSQL server running on ``datadir``."""
    return int((datadir / "postmaster.pid").read_text().splitlines()[0])

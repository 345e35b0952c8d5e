"""Process helpers shared by the tests that start PostgreSQL or servers."""

from __future__ import annotations

import os
from pathlib import Path


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

"""Process helpers shared by the tests that start PostgreSQL or servers."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest


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


def find_program(name: str) -> str:
    """Return Debian's ``name`` executable (in PATH or /usr/sbin), or skip the test
    ("skipped: no <name>"); in CI (``CI=true``), where .ci/run installs it, fail instead."""
    found = shutil.which(name) or shutil.which(name, path="/usr/sbin")
    if found:
        return found
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI needs {name}: .ci/run installs Debian's {name} package.")
    pytest.skip(f"skipped: no {name}")


def wait_listening(
    process: subprocess.Popen[bytes], port: int, log: Callable[[], str], timeout: float = 15
) -> None:
    """Wait until ``process`` accepts connections on 127.0.0.1:``port``; fail with ``log()``
    if it exits or takes longer than ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"{process.args!r} exited: {log()}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{process.args!r} did not start: {log()}") from None
            time.sleep(0.05)


def stop(process: subprocess.Popen[bytes], timeout: float = 10) -> None:
    """Terminate ``process`` and wait for it; kill it if it takes longer than ``timeout``."""
    process.terminate()
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()

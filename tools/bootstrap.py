"""Create the project's virtual environment and keep it in step with the requirements.

Used by ./run and ./test; needs nothing but Python 3.11+.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV = ROOT / ".venv"


def _fail(message: str) -> None:
    sys.exit(f"minicloud: {message}")


def _requirements_digest(files: list[str]) -> str:
    digest = hashlib.sha256(sys.version.encode())
    for name in files:
        path = ROOT / name
        digest.update(path.read_bytes())
        # Follow "-r other.txt" includes so that editing them triggers a reinstall.
        for line in path.read_text().splitlines():
            if line.startswith("-r "):
                digest.update((ROOT / line[3:].strip()).read_bytes())
    return digest.hexdigest()


def ensure_venv(requirements: list[str]) -> str:
    """Return the venv's python, creating the venv and installing requirements if needed."""
    if sys.version_info < (3, 11):  # noqa: UP036 (run by whatever python3 is on PATH)
        _fail(f"Python 3.11 or newer is needed; this is {sys.version.split()[0]}.")
    python = VENV / "bin" / "python"
    if not python.exists():
        print("minicloud: creating .venv ...", flush=True)
        result = subprocess.run([sys.executable, "-m", "venv", str(VENV)])
        if result.returncode != 0:
            _fail("could not create .venv (on Debian/Ubuntu: apt-get install python3-venv).")
    stamp = VENV / ".requirements.sha256"
    digest = _requirements_digest(requirements)
    if not stamp.exists() or stamp.read_text() != digest:
        print("minicloud: installing requirements into .venv ...", flush=True)
        args = [str(python), "-m", "pip", "install", "--disable-pip-version-check", "-q"]
        for name in requirements:
            args += ["-r", str(ROOT / name)]
        if subprocess.run(args).returncode != 0:
            _fail("installing the requirements failed (see pip's output above).")
        stamp.write_text(digest)
    os.environ["VIRTUAL_ENV"] = str(VENV)
    os.environ["PATH"] = f"{VENV / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}"
    return str(python)


def find_interpreter(version: str) -> str | None:
    """Return a working ``python<version>``: on PATH, or in pyenv's version directories."""
    candidates = [shutil.which(f"python{version}")]
    root = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv"))
    pattern = f"versions/{version}.*/bin/python{version}"
    with contextlib.suppress(OSError):  # another user's pyenv, say: not ours to use
        candidates += sorted(str(path) for path in root.glob(pattern))
    for candidate in filter(None, candidates):
        # pyenv's shims exist for every installed version but run only the selected ones.
        try:
            probe = subprocess.run([candidate, "--version"], capture_output=True)
        except OSError:
            continue
        if probe.returncode == 0:
            return candidate
    return None


def interpreter_path(versions: list[str]) -> list[str]:
    """Return the directories of a working ``python<version>`` for each version found."""
    found = (find_interpreter(version) for version in versions)
    return [str(Path(python).parent) for python in found if python]

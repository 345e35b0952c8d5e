"""files_app builds as a wheel of its own: code, migrations, templates, py.typed; no project."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_wheel_contains_the_app_and_nothing_else(tmp_path: Path) -> None:
    # Build from a copy: setuptools writes build/ and *.egg-info next to pyproject.toml.
    source = tmp_path / "source"
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(".*", "__pycache__"))
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "-q",
            "-w",
            str(tmp_path),
            str(source),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    (wheel,) = tmp_path.glob("django_files_app-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
    assert "files_app/py.typed" in names
    assert "files_app/migrations/0001_initial.py" in names
    assert "files_app/management/commands/files_sweep.py" in names
    assert "files_app/templates/admin/files_app/storedfile/change_list.html" in names
    assert "files_app/static/files_app/upload-progress.js" in names
    assert not [n for n in names if n.startswith(("minicloud/", "tests/", "bench/"))]

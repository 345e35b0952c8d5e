"""files_app builds as a wheel of its own: code, migrations, templates, py.typed; no project."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _build(tmp_path: Path, *command: str) -> None:
    """Run a build ``command`` (its output into ``tmp_path``) on a copy of the repository:
    setuptools writes build/ and *.egg-info next to pyproject.toml."""
    source = tmp_path / "source"
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(".*", "__pycache__"))
    result = subprocess.run(
        [sys.executable, "-m", *command, str(source)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr


def _check_publishable(distribution: Path) -> None:
    """What PyPI would say of the metadata: twine's check, warnings as errors (the long
    description renders, the metadata is complete)."""
    result = subprocess.run(
        [sys.executable, "-m", "twine", "check", "--strict", str(distribution)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "PASSED" in result.stdout


@pytest.mark.slow
def test_wheel_contains_the_app_and_nothing_else(tmp_path: Path) -> None:
    _build(tmp_path, "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path))
    (wheel,) = tmp_path.glob("django_files_app-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
    assert "files_app/py.typed" in names
    assert "files_app/migrations/0001_initial.py" in names
    assert "files_app/management/commands/files_sweep.py" in names
    assert "files_app/templates/admin/files_app/storedfile/change_list.html" in names
    assert "files_app/static/files_app/upload-progress.js" in names
    assert not [n for n in names if n.startswith(("minicloud/", "tests/", "bench/"))]
    # The licence the metadata declares ships with it (PEP 639).
    (license_file,) = [n for n in names if n.endswith("/licenses/LICENSE")]
    with zipfile.ZipFile(wheel) as archive:
        assert b"MIT License" in archive.read(license_file)
        metadata = archive.read(next(n for n in names if n.endswith("/METADATA"))).decode()
    assert "License-Expression: MIT" in metadata
    assert "License-File: LICENSE" in metadata
    # The description on an index is written for adopters: no repository commands.
    assert "Description-Content-Type: text/markdown" in metadata
    description = metadata.split("\n\n", 1)[1]
    assert description.startswith("# Adopting files_app in your own project")
    assert "./test" not in description and "./run" not in description
    _check_publishable(wheel)


@pytest.mark.slow
def test_the_sdist_has_the_app_and_its_licence_and_no_half_test_suite(tmp_path: Path) -> None:
    _build(tmp_path, "build", "--sdist", "--outdir", str(tmp_path))
    (sdist,) = tmp_path.glob("django_files_app-*.tar.gz")
    with tarfile.open(sdist) as archive:
        names = [name.split("/", 1)[1] for name in archive.getnames() if "/" in name]
    assert "LICENSE" in names
    _check_publishable(sdist)
    assert "files_app/storage.py" in names
    assert "files_app/migrations/0001_initial.py" in names
    # No test file without the conftest, settings and data it needs: no tests at all.
    assert not [n for n in names if n.startswith(("tests/", "bench/", "minicloud/"))]

"""The proof of reuse: files_app's wheel in a brand-new project on the newest supported Django.

Build the wheel; in a fresh virtual environment on Python 3.12+ install it with the psycopg
extra and the newest Django; `django-admin startproject`; add files_app and an app whose
model has a LargeObjectField of its own; migrate against the test PostgreSQL; store a file;
download a range of it through a real server (gunicorn).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import textwrap
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.db import connection

from tests.servers import ROOT, database_url, free_port

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

NEWEST_DJANGO = "Django>=6.1,<6.2"
sys.path.insert(0, str(ROOT / "tools"))
from bootstrap import find_interpreter  # noqa: E402


def _python() -> str:
    python = find_interpreter("3.13") or find_interpreter("3.12")
    if python:
        return python
    if os.environ.get("CI"):
        pytest.fail("CI needs Python 3.12 or 3.13 (pyenv) for the newest Django.")
    pytest.skip("skipped: no Python 3.12+ for Django 6.1")


def _run(*args: str, cwd: Path, env: dict[str, str] | None = None) -> str:
    result = subprocess.run(
        args, cwd=cwd, env=env, capture_output=True, text=True, timeout=600, check=False
    )
    assert result.returncode == 0, f"{args!r} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout


@pytest.fixture
def scratch_database() -> Iterator[str]:
    name = f"reuse_{os.getpid()}"
    with connection.cursor() as cursor:
        cursor.execute(f'CREATE DATABASE "{name}"')
    yield name
    with connection.cursor() as cursor:
        cursor.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


MODELS = """
from django.db import models

from files_app.fields import LargeObjectField


class Invoice(models.Model):
    number = models.CharField(max_length=20)
    pdf = LargeObjectField(null=True, blank=True)
"""

SETTINGS = """
import dj_database_url  # noqa: E402 (appended by the test)

INSTALLED_APPS += ["files_app", "invoices"]
DATABASES = {{"default": dj_database_url.parse({url!r})}}
STORAGES = {{
    "default": {{"BACKEND": "files_app.storage.LargeObjectStorage"}},
    "staticfiles": {{"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"}},
}}
ALLOWED_HOSTS = ["127.0.0.1"]
"""

STORE = """
from django.core.files.base import ContentFile
from invoices.models import Invoice

invoice = Invoice(number="2026-001")
invoice.pdf.save("invoice.pdf", ContentFile(bytes(range(256)) * 4096))
print(invoice.pdf.url)
"""


def test_a_new_project_on_the_newest_django_uses_the_wheel(
    tmp_path: Path, scratch_database: str
) -> None:
    python = _python()
    # The wheel, built from a copy (setuptools writes next to pyproject.toml).
    source = tmp_path / "source"
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(".*", "__pycache__"))
    _run(python, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(source),
         cwd=tmp_path)  # fmt: skip
    (wheel,) = tmp_path.glob("django_files_app-*.whl")

    venv = tmp_path / "venv"
    _run(python, "-m", "venv", str(venv), cwd=tmp_path)
    bin_ = venv / "bin"
    _run(str(bin_ / "pip"), "install", "-q", f"{wheel}[psycopg]", NEWEST_DJANGO,
         "dj-database-url", "gunicorn", cwd=tmp_path)  # fmt: skip
    version = _run(str(bin_ / "python"), "-m", "django", "--version", cwd=tmp_path)
    assert version.startswith("6.1."), version

    project = tmp_path / "project"
    project.mkdir()
    _run(str(bin_ / "django-admin"), "startproject", "shop", str(project), cwd=tmp_path)
    (project / "invoices").mkdir()
    (project / "invoices" / "__init__.py").write_text("")
    (project / "invoices" / "models.py").write_text(textwrap.dedent(MODELS))
    settings = dict(connection.settings_dict, NAME=scratch_database)
    with open(project / "shop" / "settings.py", "a") as f:
        f.write(SETTINGS.format(url=database_url(settings)))
    with open(project / "shop" / "urls.py", "a") as f:
        f.write("\nfrom django.urls import include\n")
        f.write('urlpatterns += [path("files/", include("files_app.urls"))]\n')

    env = {key: value for key, value in os.environ.items() if not key.startswith("DJANGO")}
    env.pop("PYTHONPATH", None)  # nothing of this repository: only the wheel
    manage = [str(bin_ / "python"), "manage.py"]
    _run(*manage, "makemigrations", "invoices", cwd=project, env=env)
    _run(*manage, "migrate", "--no-input", cwd=project, env=env)
    _run(*manage, "check", cwd=project, env=env)
    url = _run(*manage, "shell", "-c", STORE, cwd=project, env=env).strip().splitlines()[-1]
    assert url.startswith("/files/lo/")  # a signed link; the oid column keeps no name

    port = free_port()
    server = subprocess.Popen(
        [str(bin_ / "gunicorn"), "shop.wsgi", f"--bind=127.0.0.1:{port}", "--threads=2"],
        cwd=project,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}{url}", headers={"Range": "bytes=1000-1999"}
        )
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(request, timeout=10) as response:
                    status, body = response.status, response.read()
                    content_range = response.headers["Content-Range"]
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
    finally:
        server.terminate()
        server.wait(30)
    data = bytes(range(256)) * 4096
    assert status == 206
    assert content_range == f"bytes 1000-1999/{len(data)}"
    assert hashlib.sha256(body).digest() == hashlib.sha256(data[1000:2000]).digest()

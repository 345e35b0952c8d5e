"""The proof of reuse: files_app's wheel in a brand-new project on the newest supported Django.

Build the wheel; in a fresh virtual environment on Python 3.12+ install it with the psycopg
extra and the newest Django; `django-admin startproject`; add files_app and an app whose
model has a LargeObjectField of its own; migrate against the test PostgreSQL; store a file;
download a range of it through a real server (gunicorn).
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

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


@pytest.fixture(scope="module")
def adopter_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtual environment with files_app's wheel (psycopg extra), the newest
    Django, and what an adopter's project adds: Pillow, gunicorn, pytest-django."""
    python = _python()
    tmp_path = tmp_path_factory.mktemp("wheel")
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
         "dj-database-url", "gunicorn", "Pillow", "pytest", "pytest-django",
         cwd=tmp_path)  # fmt: skip
    version = _run(str(bin_ / "python"), "-m", "django", "--version", cwd=tmp_path)
    assert version.startswith("6.1."), version
    return bin_


def _clean_env() -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("DJANGO")}
    env.pop("PYTHONPATH", None)  # nothing of this repository: only the wheel
    return env


def _get(url: str, headers: dict[str, str] | None = None) -> tuple[int, bytes, Any]:
    """GET without following redirects, retrying while the server starts."""

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args: Any, **kwargs: Any) -> None:
            return None

    opener = urllib.request.build_opener(NoRedirect)
    request = urllib.request.Request(url, headers=headers or {})
    deadline = time.monotonic() + 30
    while True:
        try:
            with opener.open(request, timeout=10) as response:
                return response.status, response.read(), response.headers
        except urllib.error.HTTPError as error:
            return error.code, error.read(), error.headers
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


@contextmanager
def _gunicorn(bin_: Path, project: Path, env: dict[str, str]) -> Iterator[int]:
    """Run the project under gunicorn; yield its port."""
    port = free_port()
    server = subprocess.Popen(
        [str(bin_ / "gunicorn"), "shop.wsgi", f"--bind=127.0.0.1:{port}", "--threads=2"],
        cwd=project,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        yield port
    finally:
        server.terminate()
        server.wait(30)


def _startproject(bin_: Path, tmp_path: Path) -> Path:
    """Return a new ``django-admin startproject shop`` in ``tmp_path``."""
    project = tmp_path / "project"
    project.mkdir()
    _run(str(bin_ / "django-admin"), "startproject", "shop", str(project), cwd=tmp_path)
    return project


def test_a_new_project_on_the_newest_django_uses_the_wheel(
    tmp_path: Path, scratch_database: str, adopter_venv: Path
) -> None:
    bin_ = adopter_venv
    project = _startproject(bin_, tmp_path)
    (project / "invoices").mkdir()
    (project / "invoices" / "__init__.py").write_text("")
    (project / "invoices" / "models.py").write_text(textwrap.dedent(MODELS))
    settings = dict(connection.settings_dict, NAME=scratch_database)
    with open(project / "shop" / "settings.py", "a") as f:
        f.write(SETTINGS.format(url=database_url(settings)))
    with open(project / "shop" / "urls.py", "a") as f:
        f.write("\nfrom django.urls import include\n")
        f.write('urlpatterns += [path("files/", include("files_app.urls"))]\n')

    env = _clean_env()
    manage = [str(bin_ / "python"), "manage.py"]
    _run(*manage, "makemigrations", "invoices", cwd=project, env=env)
    _run(*manage, "migrate", "--no-input", cwd=project, env=env)
    _run(*manage, "check", cwd=project, env=env)
    url = _run(*manage, "shell", "-c", STORE, cwd=project, env=env).strip().splitlines()[-1]
    assert url.startswith("/files/lo/")  # a signed link; the oid column keeps no name

    with _gunicorn(bin_, project, env) as port:
        status, body, headers = _get(
            f"http://127.0.0.1:{port}{url}", headers={"Range": "bytes=1000-1999"}
        )
        content_range = headers["Content-Range"]
    data = bytes(range(256)) * 4096
    assert status == 206
    assert content_range == f"bytes 1000-1999/{len(data)}"
    assert hashlib.sha256(body).digest() == hashlib.sha256(data[1000:2000]).digest()


# The adopter's project (issue 21): a model of its own with a FileField and an ImageField on
# the default storage, files_app's upload handler for every upload, the lean path on, and
# files_app's download route wrapped in login_required before files_app's URLs.

ADOPTER_MODELS = """
from django.db import models

from files_app.fields import LargeObjectField, LargeObjectImageField


class Product(models.Model):
    name = models.CharField(max_length=100)
    manual = models.FileField(upload_to="manuals/")
    photo = models.ImageField(upload_to="photos/", blank=True)
    leaflet = LargeObjectField(null=True, blank=True)
    poster = LargeObjectImageField(
        null=True, blank=True, width_field="poster_width", height_field="poster_height"
    )
    poster_width = models.PositiveIntegerField(null=True, blank=True)
    poster_height = models.PositiveIntegerField(null=True, blank=True)
"""

ADOPTER_ADMIN = """
from django.contrib import admin

from catalog.models import Product

admin.site.register(Product)
"""

ADOPTER_VIEWS = """
from django.views.generic import CreateView

from catalog.models import Product


class ProductCreateView(CreateView):
    model = Product
    fields = ["name", "manual", "photo"]
    template_name = "catalog/product_form.html"
    success_url = "/products/add/"
"""

ADOPTER_URLS = """
from django.contrib import admin
from django.contrib.auth.decorators import login_required
from django.urls import include, path

from catalog.models import Product
from catalog.views import ProductCreateView
from files_app.views import FieldFileView, StoredFileView

urlpatterns = [
    path("admin/", admin.site.urls),
    path("products/<int:pk>/manual", FieldFileView.as_view(model=Product, field="manual")),
    path("products/<int:pk>/leaflet", FieldFileView.as_view(model=Product, field="leaflet")),
    # The host's rule for downloads: signed-in users only, even for public files.
    path("files/<uuid:uuid>/<path:filename>", login_required(StoredFileView.as_view())),
    path("files/", include("files_app.urls")),
    path("products/add/", ProductCreateView.as_view()),
]
"""

ADOPTER_SETTINGS = (
    SETTINGS.replace('"invoices"', '"catalog"')
    + """
# A second database for some files (LargeObjectStorage(using="files")).
DATABASES["files"] = dj_database_url.parse({files_url!r})
FILE_UPLOAD_HANDLERS = ["files_app.uploadhandler.LargeObjectUploadHandler"]
MIDDLEWARE.insert(
    MIDDLEWARE.index("django.middleware.security.SecurityMiddleware") + 1,
    "files_app.middleware.FileServingMiddleware",
)
ALLOWED_HOSTS = ["127.0.0.1", "testserver"]
"""
)

ADOPTER_WSGI = """
import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "shop.settings")

from files_app.wsgi import get_wsgi_application  # noqa: E402

application = get_wsgi_application()
"""

ADOPTER_TESTS = """
import io

from django.contrib.auth.models import User
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import call_command
from django.test import TestCase, TransactionTestCase
from PIL import Image

from catalog.models import Product
from files_app.models import StoredFile
from files_app.storage import LargeObjectStorage

MANUAL = b"%PDF-1.4 a lamp's manual " * 4000


def png():
    buffer = io.BytesIO()
    Image.new("RGB", (3, 2), "red").save(buffer, "PNG")
    return buffer.getvalue()


def form():
    return {
        "name": "Lamp",
        "manual": SimpleUploadedFile("lamp.pdf", MANUAL, "application/pdf"),
        "photo": SimpleUploadedFile("lamp.png", png(), "image/png"),
    }


class Uploads(TestCase):
    def assert_stored(self):
        product = Product.objects.get()
        assert product.manual.storage.exists(product.manual.name), product.manual.name
        with product.manual.open("rb") as manual:
            assert manual.read() == MANUAL
        assert (product.photo.width, product.photo.height) == (3, 2)

    def test_admin_upload(self):
        admin = User.objects.create_superuser("admin", "admin@example.com", "secret")
        self.client.force_login(admin)
        with self.captureOnCommitCallbacks(execute=True):
            response = self.client.post("/admin/catalog/product/add/", form())
        assert response.status_code == 302, response.content.decode()[:3000]
        self.assert_stored()

    def test_model_form_upload(self):
        with self.captureOnCommitCallbacks(execute=True):
            response = self.client.post("/products/add/", form())
        assert response.status_code == 302, response.content.decode()[:3000]
        self.assert_stored()


class StorageContract(TestCase):
    def test_a_saved_file_lives_until_deleted(self):
        name = default_storage.save("thumbs/a.jpg", ContentFile(b"a thumbnail"))
        call_command("files_sweep", grace=0)
        assert default_storage.exists(name)
        with default_storage.open(name) as thumb:
            assert thumb.read() == b"a thumbnail"
        default_storage.delete(name)
        assert not default_storage.exists(name)

    def test_deleting_one_of_two_deduplicated_files_keeps_the_other(self):
        first = StoredFile.objects.create(file=ContentFile(MANUAL, name="a.pdf"))
        second = StoredFile.objects.create(file=ContentFile(MANUAL, name="b.pdf"))
        assert first.file.name == second.file.name  # dedupe: one large object, shared
        first.file.delete(save=False)
        second = StoredFile.objects.get(pk=second.pk)
        with second.file.open("rb") as kept:
            assert kept.read() == MANUAL


class OwnModelsFiles(TestCase):
    def test_the_manual_and_the_leaflet_are_served_with_ranges(self):
        product = Product.objects.create(name="Lamp", manual=ContentFile(MANUAL, name="lamp.pdf"))
        product.leaflet.save("spring leaflet.pdf", ContentFile(MANUAL[:5000]))
        url = f"/products/{product.pk}/manual"
        response = self.client.get(url)
        assert response.status_code == 200
        assert response["Content-Type"] == "application/pdf"
        assert b"".join(response.streaming_content) == MANUAL
        response = self.client.get(url, headers={"Range": "bytes=100-199"})
        assert response.status_code == 206
        assert b"".join(response.streaming_content) == MANUAL[100:200]
        response = self.client.get(
            f"/products/{product.pk}/leaflet", headers={"Range": "bytes=10-19"}
        )
        assert response.status_code == 206
        assert b"".join(response.streaming_content) == MANUAL[10:20]
        # The leaflet's name and type are kept with its object, its column holds the OID.
        assert response["Content-Type"] == "application/pdf"
        assert response["Content-Disposition"] == 'inline; filename="spring_leaflet.pdf"'
        product = Product.objects.get(pk=product.pk)
        assert str(product.leaflet) == "spring_leaflet.pdf"  # Django made the name valid
        assert product.leaflet.name == str(product.leaflet.oid)
        response = self.client.get(product.leaflet.url)
        assert b"".join(response.streaming_content) == MANUAL[:5000]
        admin = User.objects.create_superuser("admin", "admin@example.com", "secret")
        self.client.force_login(admin)
        page = self.client.get(f"/admin/catalog/product/{product.pk}/change/")
        assert b">spring_leaflet.pdf</a>" in page.content

    def test_a_poster_on_large_objects_knows_its_size(self):
        product = Product(name="Lamp", manual=ContentFile(MANUAL, name="lamp.pdf"))
        product.poster.save("poster.png", ContentFile(png()))
        product = Product.objects.get(pk=product.pk)
        assert (product.poster_width, product.poster_height) == (3, 2)
        assert (product.poster.width, product.poster.content_type) == (3, "image/png")

    def test_a_legacy_name_keeps_the_admin_page(self):
        product = Product.objects.create(name="Old", manual="manuals/legacy.pdf")
        admin = User.objects.create_superuser("admin", "admin@example.com", "secret")
        self.client.force_login(admin)
        response = self.client.get(f"/admin/catalog/product/{product.pk}/change/")
        assert response.status_code == 200
        assert b"manuals/legacy.pdf" in response.content


class SecondDatabase(TestCase):
    databases = {"default", "files"}

    def test_a_link_of_another_alias_downloads(self):
        storage = LargeObjectStorage(using="files")
        name = storage.save("docs/a.txt", ContentFile(b"from the second database"))
        response = self.client.get(storage.url(name))
        assert response.status_code == 200
        assert b"".join(response.streaming_content) == b"from the second database"


class Flushes(TransactionTestCase):
    # Emptied with TRUNCATE afterwards: files_app's pytest plugin frees the objects.
    def test_a_committed_product(self):
        Product.objects.create(name="Lamp", manual=ContentFile(MANUAL, name="lamp.pdf"))
        Product.objects.create(name="Lamp 2", manual=ContentFile(b"other", name="b.pdf"))


def test_a_test_that_deletes_what_it_stores_passes(no_large_object_leaks):
    name = default_storage.save("tmp/x.txt", ContentFile(b"x"))
    default_storage.delete(name)


class HostRules(TestCase):
    def test_a_public_file_behind_login_required(self):
        stored = StoredFile.objects.create(
            file=ContentFile(MANUAL, name="lamp.pdf"), name="lamp.pdf", public=True
        )
        response = self.client.get(stored.get_absolute_url())
        assert response.status_code == 302
        assert response["Location"].startswith("/accounts/login/")
        self.client.force_login(User.objects.create_user("reader", password="secret"))
        response = self.client.get(stored.get_absolute_url())
        assert response.status_code == 200
        assert b"".join(response.streaming_content) == MANUAL
"""

LEFTOVERS = """
from django.db import connections
from django.db.utils import load_backend

from files_app.testing import unreferenced_large_objects

settings = dict(connections["default"].settings_dict, NAME={name!r})
connections["test"] = load_backend(settings["ENGINE"]).DatabaseWrapper(settings, "test")
print(f"unreferenced={{len(unreferenced_large_objects('test'))}}", "ok")
"""

LEAKING_TEST = """
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage


def test_a_file_stored_and_forgotten(no_large_object_leaks):
    default_storage.save("tmp/forgotten.txt", ContentFile(b"forgotten"))
"""

ADOPTER_FIXTURE = """
from django.core.files.base import ContentFile
from datetime import timedelta

from files_app.models import StoredFile
from files_app.sharing import make_share_url

stored = StoredFile.objects.create(
    file=ContentFile(b"public bytes" * 1000, name="p.txt"), name="p.txt", public=True
)
print(stored.get_absolute_url())
print(make_share_url(stored.uuid, stored.name, timedelta(hours=1)))
"""


def _migrate_and_test(bin_: Path, project: Path, expected: str) -> dict[str, str]:
    """Make the catalog app's migrations, check the project and run its own pytest-django
    tests, which must report ``expected``; return the environment they ran in."""
    (project / "pytest.ini").write_text("[pytest]\nDJANGO_SETTINGS_MODULE = shop.settings\n")
    env = _clean_env()
    manage = [str(bin_ / "python"), "manage.py"]
    _run(*manage, "makemigrations", "catalog", cwd=project, env=env)
    _run(*manage, "check", cwd=project, env=env)
    result = subprocess.run(
        [str(bin_ / "pytest"), "-p", "no:cacheprovider", "-rA", "catalog"],
        cwd=project, env=env, capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert expected in result.stdout, result.stdout
    return env


def test_an_adopters_project_keeps_its_files_and_its_rules(
    tmp_path: Path, scratch_database: str, adopter_venv: Path
) -> None:
    bin_ = adopter_venv
    project = _startproject(bin_, tmp_path)
    app = project / "catalog"
    (app / "templates" / "catalog").mkdir(parents=True)
    (app / "tests").mkdir()
    for path, text in {
        "__init__.py": "",
        "models.py": ADOPTER_MODELS,
        "admin.py": ADOPTER_ADMIN,
        "views.py": ADOPTER_VIEWS,
        "templates/catalog/product_form.html": "<form>{{ form }}</form>",
        "tests/__init__.py": "",
        "tests/test_files.py": ADOPTER_TESTS,
    }.items():
        (app / path).write_text(textwrap.dedent(text))
    settings = dict(connection.settings_dict, NAME=scratch_database)
    with open(project / "shop" / "settings.py", "a") as f:
        files = dict(settings, NAME=f"{scratch_database}_files")  # pytest-django makes test_…
        f.write(ADOPTER_SETTINGS.format(url=database_url(settings), files_url=database_url(files)))
    (project / "shop" / "urls.py").write_text(ADOPTER_URLS)
    (project / "shop" / "wsgi.py").write_text(ADOPTER_WSGI)
    # The adopter's own pytest-django tests, in TestCase (one outer transaction each).
    env = _migrate_and_test(bin_, project, "11 passed")
    manage = [str(bin_ / "python"), "manage.py"]

    # Twice on a reused test database: nothing a flush orphaned is left, however many runs.
    reuse = [str(bin_ / "pytest"), "-p", "no:cacheprovider", "--reuse-db", "-q"]
    for _ in range(2):
        _run(*reuse, "catalog", cwd=project, env=env)
    test_db = f"test_{scratch_database}"
    left = _run(*manage, "shell", "-c", LEFTOVERS.format(name=test_db), cwd=project, env=env)
    assert left.split()[-2:] == ["unreferenced=0", "ok"], left
    # The leak fixture fails a test that stores a file and keeps no row of it (and frees it).
    (app / "leaks").mkdir()
    (app / "leaks" / "__init__.py").write_text("")
    (app / "leaks" / "test_leak.py").write_text(textwrap.dedent(LEAKING_TEST))
    leaking = subprocess.run(
        [*reuse, "catalog/leaks"], cwd=project, env=env, capture_output=True, text=True,
        timeout=600, check=False,
    )  # fmt: skip
    assert leaking.returncode == 1, leaking.stdout + leaking.stderr
    assert "left behind that no row references" in leaking.stdout, leaking.stdout
    left = _run(*manage, "shell", "-c", LEFTOVERS.format(name=test_db), cwd=project, env=env)
    assert left.split()[-2:] == ["unreferenced=0", "ok"], left
    with connection.cursor() as cursor:
        for name in (test_db, f"{test_db}_files"):
            cursor.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    # From outside: gunicorn with the lean path on (files_app.wsgi and the middleware).
    _run(*manage, "migrate", "--no-input", cwd=project, env=env)
    download, share = _run(*manage, "shell", "-c", ADOPTER_FIXTURE, cwd=project, env=env).split()[
        -2:
    ]
    with _gunicorn(bin_, project, env) as port:
        status, body, headers = _get(f"http://127.0.0.1:{port}{download}")
        assert status == 302, (status, body[:200])
        assert headers["Location"].startswith("/accounts/login/")
        status, body, headers = _get(
            f"http://127.0.0.1:{port}{share}", headers={"Range": "bytes=0-11"}
        )
        assert (status, body) == (206, b"public bytes")


GUIDE = ROOT / "docs" / "adopting.md"


def _guide_files() -> list[tuple[str, bool, str]]:
    """Return the guide's Python blocks that name a file: (path, appended, code)."""
    blocks = re.findall(r"```python\n(.*?)```", GUIDE.read_text(), re.S)
    files = []
    for block in blocks:
        first, _, code = block.partition("\n")
        match = re.fullmatch(r"# (\S+\.py)( \(add\))?", first)
        if match:
            files.append((match[1], bool(match[2]), code))
    return files


def test_every_code_block_of_the_guide_names_its_file() -> None:
    blocks = re.findall(r"```python\n(.*?)```", GUIDE.read_text(), re.S)
    assert len(_guide_files()) == len(blocks) == 4


def test_the_adopting_guide_builds_a_working_project(
    tmp_path: Path, scratch_database: str, adopter_venv: Path
) -> None:
    """docs/adopting.md, block by block, in a new project: its tests pass."""
    bin_ = adopter_venv
    project = _startproject(bin_, tmp_path)
    for package in ("catalog", "catalog/tests"):
        (project / package).mkdir()
        (project / package / "__init__.py").write_text("")
    for path, appended, code in _guide_files():
        with open(project / path, "a" if appended else "w") as f:
            f.write("\n" + code)
    # This machine's database, in place of the guide's "shop" on localhost.
    settings = dict(connection.settings_dict, NAME=scratch_database)
    with open(project / "shop" / "settings.py", "a") as f:
        f.write(f"\nimport dj_database_url\n\nDATABASES = {{'default': dj_database_url.parse("
                f"{database_url(settings)!r})}}\n")  # fmt: skip
    _migrate_and_test(bin_, project, "2 passed")

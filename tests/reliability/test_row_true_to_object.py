"""Issue 11, point 0: every route that creates or changes a StoredFile leaves its row true to
its large object (size, SHA-256, type), or fails loudly; the view never serves a size the
object does not have.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Callable

import pytest
from django.core.files.base import ContentFile
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import call_command
from django.db import IntegrityError, connection, models, transaction
from django.test import Client

from files_app import largeobjects
from files_app.models import StoredFile
from files_app.storage import LargeObjectStorage

pytestmark = pytest.mark.django_db(transaction=True)

DATA = b"<p>ten thousand bytes</p>\n" * 385  # 10,010 bytes
DIGEST = hashlib.sha256(DATA).hexdigest()


def _true_to_its_object(stored: StoredFile, data: bytes = DATA) -> None:
    stored.refresh_from_db()
    assert stored.size == len(data)
    assert stored.sha256 == hashlib.sha256(data).hexdigest()
    assert stored.content_type
    with stored.file.open("rb") as f:
        assert f.read() == data
    served = Client().get(stored.get_absolute_url())
    assert served.status_code == 200
    assert served["Content-Length"] == str(len(data))
    assert served.getvalue() == data
    assert served["ETag"] == f'"{stored.sha256}"'
    ranged = Client().get(stored.get_absolute_url(), HTTP_RANGE="bytes=100-199")
    assert ranged.status_code == 206
    assert ranged.getvalue() == data[100:200]


def test_fieldfile_save_without_save_then_model_save() -> None:
    # The README's own idiom: this stored 10,000 bytes and served Content-Length: 0.
    stored = StoredFile(public=True)
    stored.file.save("page.html", ContentFile(DATA), save=False)
    stored.save()
    _true_to_its_object(stored)
    assert stored.name == "page.html"
    assert stored.content_type == "text/html"


def test_fieldfile_save_with_save() -> None:
    stored = StoredFile(public=True)
    stored.file.save("page.html", ContentFile(DATA))
    _true_to_its_object(stored)


def test_fieldfile_save_replacing_a_saved_file() -> None:
    stored = StoredFile.objects.create(file=ContentFile(b"old", name="old.txt"), public=True)
    stored.file.save("new.html", ContentFile(DATA), save=False)
    stored.save()
    _true_to_its_object(stored)
    assert stored.name == "new.html"


def test_assignment_and_objects_create() -> None:
    stored = StoredFile(public=True)
    stored.file = SimpleUploadedFile("a.html", DATA, "text/html")
    stored.save()
    _true_to_its_object(stored)
    created = StoredFile.objects.create(file=ContentFile(DATA, name="b.html"), public=True)
    _true_to_its_object(created)


def test_assigning_an_existing_object_by_name_reads_what_it_holds() -> None:
    name = LargeObjectStorage().save("x/raw.html", ContentFile(DATA))
    stored = StoredFile.objects.create(file=name, public=True)
    _true_to_its_object(stored)
    copy = StoredFile.objects.create(file=stored.file.name, public=True, size=1, sha256="0")
    _true_to_its_object(copy)  # what the caller claimed does not count


def test_bulk_create_computes_every_row() -> None:
    rows = StoredFile.objects.bulk_create(
        [StoredFile(file=ContentFile(DATA, name=f"{i}.html"), public=True) for i in range(3)]
    )
    for row in rows:
        _true_to_its_object(row)


def test_bulk_update_of_the_file_computes_the_rows() -> None:
    stored = StoredFile.objects.create(file=ContentFile(b"old", name="old.txt"), public=True)
    stored.file = ContentFile(DATA, name="new.html")
    StoredFile.objects.bulk_update([stored], ["file"])
    _true_to_its_object(stored)


@pytest.mark.parametrize(
    "change",
    [{"size": 0}, {"sha256": "0" * 64}, {"file": "12345"}],
    ids=["size", "sha256", "file"],
)
def test_update_of_what_describes_the_object_fails_loudly(change: dict[str, object]) -> None:
    stored = StoredFile.objects.create(file=ContentFile(DATA, name="a.html"), public=True)
    with pytest.raises(ValueError, match="must describe its large object"):
        StoredFile.objects.filter(pk=stored.pk).update(**change)
    if "file" not in change:  # bulk_update() of the file describes it (above)
        for name, value in change.items():
            setattr(stored, name, value)
        with pytest.raises(ValueError, match="must describe its large object"):
            StoredFile.objects.bulk_update([stored], list(change))
    _true_to_its_object(stored)


def test_save_with_update_fields_of_the_size_fails_loudly() -> None:
    stored = StoredFile.objects.create(file=ContentFile(DATA, name="a.html"), public=True)
    stored.size = 0
    with pytest.raises(ValueError, match="must describe its large object"):
        stored.save(update_fields=["size"])


def test_the_database_refuses_a_size_that_is_not_the_objects(lo_count: Callable[[], int]) -> None:
    # Raw SQL and other programs bypass save(): the table's trigger still checks the size.
    stored = StoredFile.objects.create(file=ContentFile(DATA, name="a.html"), public=True)
    refused = pytest.raises(IntegrityError, match="does not match its large object")
    with refused, transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("UPDATE files_app_storedfile SET size = 0 WHERE id = %s", [stored.pk])
    bypass = StoredFile(file=stored.file.name, size=5, sha256="x", public=True)
    refused = pytest.raises(IntegrityError, match="does not match its large object")
    with refused, transaction.atomic():
        models.Model.save(bypass)
    missing = StoredFile(file="4000000000", size=0, public=True)
    with pytest.raises(IntegrityError, match="does not exist"), transaction.atomic():
        models.Model.save(missing)
    _true_to_its_object(stored)


def test_the_commands_store_true_rows(tmp_path: object) -> None:
    from pathlib import Path

    path = Path(str(tmp_path)) / "page.html"
    path.write_bytes(DATA)
    call_command("files_import", str(path), "--public", stdout=io.StringIO())
    _true_to_its_object(StoredFile.objects.get(name="page.html"))


def test_the_view_never_serves_a_size_the_object_does_not_have(
    caplog: pytest.LogCaptureFixture,
) -> None:
    stored = StoredFile.objects.create(file=ContentFile(DATA, name="a.txt"), public=True)
    # A row made untrue behind the app's back (the trigger switched off, as a restore with
    # --disable-triggers would): the view serves what the object holds.
    with connection.cursor() as cursor:
        cursor.execute("ALTER TABLE files_app_storedfile DISABLE TRIGGER USER")
        try:
            cursor.execute("UPDATE files_app_storedfile SET size = 0 WHERE id = %s", [stored.pk])
        finally:
            cursor.execute("ALTER TABLE files_app_storedfile ENABLE TRIGGER USER")
    url = stored.get_absolute_url()
    full = Client().get(url)
    assert full.status_code == 200
    assert full["Content-Length"] == str(len(DATA))
    assert full.getvalue() == DATA
    assert "ETag" not in full  # the row's validators describe other bytes
    ranged = Client().get(url, HTTP_RANGE="bytes=10-19")
    assert ranged.status_code == 206
    assert ranged["Content-Range"] == f"bytes 10-19/{len(DATA)}"
    assert ranged.getvalue() == DATA[10:20]
    head = Client().head(url)
    assert head["Content-Length"] == str(len(DATA))
    assert "holds 10010 bytes, not 0" in caplog.text
    assert largeobjects.exists(stored.file.oid, "default")


def test_a_cleared_content_type_is_taken_from_the_object_again() -> None:
    stored = StoredFile.objects.create(file=ContentFile(DATA, name="page.html"), public=True)
    stored.content_type = "application/x-custom"
    stored.save()
    assert StoredFile.objects.get(pk=stored.pk).content_type == "application/x-custom"
    stored = StoredFile.objects.get(pk=stored.pk)
    stored.content_type = ""
    stored.save()
    assert StoredFile.objects.get(pk=stored.pk).content_type == "text/html"

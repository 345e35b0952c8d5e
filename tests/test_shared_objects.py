"""A shared large object goes with its last reference, on every route (issue 21, point 1).

Deduplicated stored files share one object; a name assigned to a second row (of any model
with a LargeObjectField) shares it too. Django's own file API — ``FieldFile.delete()``,
``Storage.delete()`` — must not unlink an object another row still holds: the unlink trigger
frees it when the last row lets go, whatever the route (ORM, queryset, raw SQL, replace,
clear, files_move).
"""

from __future__ import annotations

import io
import random
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.core.management import call_command
from django.db import connection, connections, transaction
from django.test import Client

from files_app import largeobjects
from files_app.models import StoredFile
from tests.testapp.models import Document, Photo

pytestmark = pytest.mark.django_db(transaction=True)

DATA = random.Random(2121).randbytes(200_000)


def _twins(count: int = 2) -> list[StoredFile]:
    files = []
    for index in range(count):
        stored = StoredFile(file=ContentFile(DATA, name=f"twin{index}.bin"), public=True)
        stored.save()
        files.append(stored)
    assert len({stored.file.oid for stored in files}) == 1
    return files


def _download(stored: StoredFile) -> bytes:
    response = Client().get(stored.get_absolute_url())
    assert response.status_code == 200, response
    return b"".join(response.streaming_content)  # type: ignore[attr-defined]


def _fresh(stored: StoredFile) -> StoredFile:
    return StoredFile.objects.get(pk=stored.pk)


def test_field_file_delete_without_save_keeps_the_twins_bytes(
    lo_count: Callable[[], int],
) -> None:
    before = lo_count()
    first, second = _twins()
    oid = first.file.oid
    first.file.delete(save=False)  # what a developer, or django-cleanup, calls
    assert _download(second) == DATA
    assert default_storage.exists(str(oid))
    StoredFile.objects.filter(pk=first.pk).delete()
    assert _download(second) == DATA
    second.delete()
    assert not largeobjects.exists(oid, "default")  # the last reference took it
    assert lo_count() == before


def test_storage_delete_keeps_the_twins_bytes() -> None:
    first, second = _twins()
    first.file.storage.delete(first.file.name)
    assert _download(second) == DATA
    assert _download(_fresh(first)) == DATA  # its row still holds the object too
    StoredFile.objects.all().delete()


def test_field_file_delete_with_save_refuses_and_keeps_both() -> None:
    first, second = _twins()
    with pytest.raises(ValueError, match="has no file"):
        first.file.delete()  # a stored file needs a file: its save refuses
    assert _download(_fresh(first)) == DATA
    assert _download(second) == DATA
    StoredFile.objects.all().delete()


def test_deleting_one_twin_by_each_route_keeps_the_others(lo_count: Callable[[], int]) -> None:
    before = lo_count()
    files = _twins(5)
    oid = files[0].file.oid
    files[0].delete()  # Model.delete()
    StoredFile.objects.filter(pk=files[1].pk).delete()  # QuerySet.delete()
    with connection.cursor() as cursor:  # raw SQL: the trigger
        cursor.execute("DELETE FROM files_app_storedfile WHERE id = %s", [files[2].pk])
    files[3].file = ContentFile(b"other bytes", name="other.txt")  # replaced
    files[3].save()
    assert _download(files[4]) == DATA
    assert _download(files[3]) == b"other bytes"
    StoredFile.objects.all().delete()
    assert not largeobjects.exists(oid, "default")
    assert lo_count() == before


def test_a_name_shared_with_another_model_outlives_the_stored_file() -> None:
    (stored,) = _twins(1)
    document = Document.objects.create(title="shares it", attachment=stored.file.name)
    stored.delete()
    assert largeobjects.exists(document.attachment.oid, "default")
    with document.attachment.open() as opened:
        assert opened.read() == DATA
    document.attachment.delete()  # save=True: the row lets go, and it was the last
    assert not largeobjects.exists(int(stored.file.name), "default")


def test_clearing_one_of_two_fields_keeps_the_object_for_the_other() -> None:
    first = Document(title="first")
    first.attachment.save("a.bin", ContentFile(DATA))
    second = Document.objects.create(title="second", attachment=first.attachment.name)
    oid = first.attachment.oid
    first.attachment = None
    first.save()
    assert largeobjects.exists(oid, "default")
    second.attachment.delete()
    assert not largeobjects.exists(oid, "default")
    Document.objects.all().delete()


def test_a_file_field_delete_of_the_only_reference_frees_at_once(
    lo_count: Callable[[], int],
) -> None:
    # FileField columns keep names (no trigger): deleting through them deletes, as on any
    # storage. And a LargeObjectField row that lets go of its only object frees it.
    before = lo_count()
    photo = Photo()
    photo.attachment.save("a.txt", ContentFile(b"named"), save=False)
    photo.image.save("i.png", ContentFile(b"not really a png"), save=False)
    photo.save()
    photo.attachment.delete(save=False)
    photo.image.delete()
    document = Document(title="alone")
    document.attachment.save("b.txt", ContentFile(b"alone"))
    document.attachment.delete()
    assert lo_count() == before
    photo.delete()
    document.delete()


def test_moving_one_twin_away_and_back_keeps_the_others_bytes(
    settings: Any, tmp_path: Path
) -> None:
    settings.STORAGES = {
        **settings.STORAGES,
        "elsewhere": {
            "BACKEND": "django.core.files.storage.FileSystemStorage",
            "OPTIONS": {"location": str(tmp_path)},
        },
    }
    first, second = _twins()
    out = io.StringIO()
    call_command("files_move", "--to", "elsewhere", "--uuid", str(first.uuid), stdout=out)
    moved = _fresh(first)
    assert moved.storage == "elsewhere" and not moved.file
    assert _download(second) == DATA
    assert _download(moved) == DATA
    call_command("files_move", "--to", "large-objects", "--uuid", str(first.uuid), stdout=out)
    back = _fresh(first)
    assert _download(back) == DATA and _download(second) == DATA
    StoredFile.objects.all().delete()


def test_concurrent_storage_deletes_and_row_deletes_leave_nothing_and_lose_nothing(
    lo_count: Callable[[], int],
) -> None:
    # Each thread deletes "its" twin through Django's file API, then its row; whatever
    # the interleaving, the object lives while any row holds it and goes with the last.
    before = lo_count()
    files = _twins(4)
    oid = files[0].file.oid
    start = threading.Barrier(3)
    errors: list[BaseException] = []

    def delete(stored: StoredFile) -> None:
        try:
            start.wait()
            with transaction.atomic():
                stored.file.storage.delete(stored.file.name)
                StoredFile.objects.filter(pk=stored.pk).delete()
        except BaseException as exc:  # noqa: BLE001 (reported by the main thread)
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=delete, args=(stored,)) for stored in files[:3]]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert _download(files[3]) == DATA
    files[3].file.storage.delete(files[3].file.name)
    assert largeobjects.exists(oid, "default")  # its row still holds it
    files[3].delete()
    assert lo_count() == before

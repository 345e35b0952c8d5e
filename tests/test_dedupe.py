"""Content dedupe (FILES_APP_DEDUPE, issue 15): stored files with the same bytes share one
large object, whatever route stored them; deleting or replacing one never touches
another's bytes; the object goes with its last reference, under concurrent deletes too."""

from __future__ import annotations

import base64
import io
import random
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.core.files.base import ContentFile
from django.core.management import call_command
from django.db import connections
from django.test import Client

from files_app.models import StoredFile

pytestmark = pytest.mark.django_db(transaction=True)

DATA = random.Random(1515).randbytes(300_000)


def _save(data: bytes, name: str = "same.bin") -> StoredFile:
    stored = StoredFile(file=ContentFile(data, name=name), public=True)
    stored.save()
    return stored


def _body(client: Client, stored: StoredFile) -> bytes:
    response = client.get(stored.get_absolute_url())
    assert response.status_code == 200
    return b"".join(response.streaming_content)  # type: ignore[attr-defined]


def test_same_bytes_share_one_object_until_the_last_goes(
    client: Client, lo_count: Callable[[], int]
) -> None:
    objects = lo_count()
    first, second = _save(DATA, "a.bin"), _save(DATA, "b.bin")
    assert first.file.oid == second.file.oid
    assert lo_count() == objects + 1
    other = _save(DATA[::-1], "c.bin")
    assert other.file.oid != first.file.oid
    first.delete()
    assert _body(client, second) == DATA  # the other still downloads, byte-exact
    assert lo_count() == objects + 2
    second.delete()
    other.delete()
    assert lo_count() == objects  # zero objects left of theirs


def test_replacing_one_leaves_the_others_bytes(client: Client) -> None:
    first, second = _save(DATA), _save(DATA)
    first.file = ContentFile(b"new bytes", name="new.txt")
    first.save()
    assert first.file.oid != second.file.oid
    assert _body(client, second) == DATA
    assert _body(client, first) == b"new bytes"
    StoredFile.objects.all().delete()


def test_off_keeps_a_copy_each(settings: Any, lo_count: Callable[[], int]) -> None:
    settings.FILES_APP_DEDUPE = False
    objects = lo_count()
    first, second = _save(DATA), _save(DATA)
    assert first.file.oid != second.file.oid
    assert lo_count() == objects + 2
    StoredFile.objects.all().delete()


def test_imports_and_tus_uploads_share_too(
    tmp_path: Path, django_user_model: type[User], lo_count: Callable[[], int]
) -> None:
    objects = lo_count()
    existing = _save(DATA)
    (tmp_path / "copy.bin").write_bytes(DATA)
    call_command("files_import", str(tmp_path / "copy.bin"), stdout=io.StringIO())
    staff = Client()
    staff.force_login(django_user_model.objects.create_superuser("boss", password="pw"))
    tus: dict[str, Any] = {"HTTP_TUS_RESUMABLE": "1.0.0"}
    name = base64.b64encode(b"tus.bin").decode()
    created = staff.post(
        "/files/uploads/",
        DATA,
        content_type="application/offset+octet-stream",
        HTTP_UPLOAD_LENGTH=str(len(DATA)),
        HTTP_UPLOAD_METADATA=f"filename {name}",
        **tus,
    )
    assert created.status_code == 201
    oids = set(StoredFile.objects.values_list("file", flat=True))
    assert StoredFile.objects.count() == 3 and oids == {str(existing.file.oid)}
    assert lo_count() == objects + 1
    out = io.StringIO()
    call_command("files_stats", stdout=out)
    assert "Stored files:        3, 878.9 KiB (900000 bytes)" in out.getvalue()
    assert "in large objects:  293.0 KiB (300000 bytes)" in out.getvalue()
    StoredFile.objects.all().delete()
    assert lo_count() == objects


def _in_thread(work: Callable[[], Any], results: list[Any]) -> threading.Thread:
    def run() -> None:
        try:
            results.append(work())
        except BaseException as exc:  # reported by the test
            results.append(exc)
        finally:
            connections.close_all()

    return threading.Thread(target=run)


def test_concurrent_deletes_never_lose_a_shared_object(lo_count: Callable[[], int]) -> None:
    objects = lo_count()
    for round_ in range(12):
        data = DATA + bytes([round_])
        twin = _save(data, "twin.bin")
        start = threading.Barrier(2)
        results: list[Any] = []

        def share(data: bytes = data, start: threading.Barrier = start) -> StoredFile:
            start.wait()
            return _save(data, "new.bin")

        def delete(twin: StoredFile = twin, start: threading.Barrier = start) -> None:
            start.wait()
            StoredFile.objects.filter(pk=twin.pk).delete()

        threads = [_in_thread(share, results), _in_thread(delete, results)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert not [r for r in results if isinstance(r, BaseException)], results
        [new] = [r for r in results if isinstance(r, StoredFile)]
        with StoredFile.objects.get(pk=new.pk).file.open() as opened:
            assert opened.read() == data  # whichever won, the new file kept its bytes
        new.delete()
    assert lo_count() == objects


def test_concurrent_identical_saves_all_keep_their_bytes(lo_count: Callable[[], int]) -> None:
    objects = lo_count()
    start = threading.Barrier(4)
    results: list[Any] = []

    def save() -> StoredFile:
        start.wait()
        return _save(DATA, "same.bin")

    threads = [_in_thread(save, results) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert all(isinstance(r, StoredFile) for r in results), results
    for stored in StoredFile.objects.all():
        with stored.file.open() as opened:
            assert opened.read() == DATA
    assert objects < lo_count() <= objects + 4
    StoredFile.objects.all().delete()
    assert lo_count() == objects

"""The files_sweep command: by default frees only what files_app knows is garbage (the
objects of uploads nothing adopted, the queues, expired uploads); a file that
Storage.save() handed out lives until Storage.delete(). --unreferenced, an explicit opt-in,
also frees files_app's objects that no column of the database names."""

from __future__ import annotations

import dataclasses
import io
import time
from collections.abc import Callable

import pytest
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import CommandError, call_command
from django.db import connection
from django.test import RequestFactory

from files_app import largeobjects, maintenance
from files_app.models import PendingUnlink, StoredFile
from files_app.storage import LargeObjectUploadedFile, oid_from_name
from files_app.uploadhandler import LargeObjectUploadHandler
from tests.testapp.models import Document, Photo

pytestmark = pytest.mark.django_db(transaction=True)


def _sweep(*args: str) -> str:
    out = io.StringIO()
    call_command("files_sweep", *args, stdout=out)
    return out.getvalue()


def _age(oid: int, seconds: float, *, unadopted: bool = False) -> None:
    """Make files_app's comment on ``oid`` say it was created ``seconds`` ago (its key,
    name and type kept), marked unadopted or not."""
    described = largeobjects.describe(oid, "default")
    assert described is not None
    aged = dataclasses.replace(
        described, created_ms=int((time.time() - seconds) * 1000), unadopted=unadopted
    )
    with connection.cursor() as cursor:
        cursor.execute(f"COMMENT ON LARGE OBJECT {oid:d} IS '{aged.comment()}'")


def _orphan(data: bytes = b"orphan", *, unadopted: bool = False) -> int:
    oid = largeobjects.create("default", unadopted=unadopted)
    largeobjects.write(oid, 0, data, "default")
    return oid


def _unadopted_upload(data: bytes = b"upload") -> int:
    """Return the object of an upload that a request wrote and nothing saved, as a
    process killed before the request's files were closed leaves it."""
    request = RequestFactory().post("/", {"file": SimpleUploadedFile("u.bin", data)})
    request.upload_handlers = [LargeObjectUploadHandler(request)]
    upload = request.FILES["file"]
    assert isinstance(upload, LargeObjectUploadedFile)
    upload._released = True  # the process died: close() never runs
    upload.close()
    return upload.oid


def test_a_file_storage_save_handed_out_outlives_the_default_sweep() -> None:
    # What thumbnail libraries do: save through default_storage, keep the name elsewhere.
    name = default_storage.save("thumbs/a.jpg", ContentFile(b"a thumbnail"))
    _age(oid_from_name(name) or 0, 7 * 86400)
    out = _sweep("--grace", "0")
    assert "Found 0 unadopted upload large object(s)" in out
    assert default_storage.exists(name)
    with default_storage.open(name) as opened:
        assert opened.read() == b"a thumbnail"
    default_storage.delete(name)
    assert not default_storage.exists(name)


def test_the_default_sweep_frees_old_unadopted_uploads_only() -> None:
    upload, young = _unadopted_upload(b"never saved"), _unadopted_upload(b"young")
    handed_out = _orphan(b"Storage.save() result")
    for oid in (handed_out, upload):
        _age(oid, 3600, unadopted=oid == upload)
    out = _sweep("--grace", "60")
    assert "Found 1 unadopted upload large object(s), 11 bytes; freed 1." in out
    assert not largeobjects.exists(upload, "default")
    assert largeobjects.exists(handed_out, "default") and largeobjects.exists(young, "default")
    for oid in (handed_out, young):
        largeobjects.unlink(oid, "default")


def test_an_unadopted_mark_left_on_a_referenced_object_does_not_free_it() -> None:
    stored = StoredFile(file=ContentFile(b"kept", name="kept.txt"))
    stored.save()
    _age(stored.file.oid, 3600, unadopted=True)  # as if adopting had been lost
    assert "freed 0." in _sweep("--grace", "0")
    assert largeobjects.exists(stored.file.oid, "default")
    stored.delete()


def test_frees_old_unreferenced_objects_and_keeps_referenced_ones() -> None:
    stored = StoredFile(file=ContentFile(b"kept", name="kept.txt"))
    stored.save()
    doc = Document(title="d")
    doc.attachment.save("d.txt", ContentFile(b"kept too"))
    photo = Photo()
    photo.attachment.save("a.txt", ContentFile(b"named"), save=False)
    photo.image.save("i.png", ContentFile(b"not really a png"), save=False)
    Photo.objects.bulk_create([photo])
    orphans = [_orphan() for _ in range(3)]
    kept = [stored.file.oid, doc.attachment.oid]
    kept += [oid_from_name(photo.attachment.name), oid_from_name(photo.image.name)]
    for oid in orphans + kept:
        _age(oid, 3600)

    out = _sweep("--unreferenced", "--grace", "60")

    assert "Found 3 unreferenced large object(s), 18 bytes; freed 3." in out
    for column in (
        "files_app_storedfile.file (OIDs)",
        "testapp_document.attachment (OIDs)",
        "testapp_photo.image (names)",
        "testapp_photo.attachment (names)",
    ):
        assert f"  {column}\n" in out
    assert not any(largeobjects.exists(oid, "default") for oid in orphans)
    assert all(largeobjects.exists(oid, "default") for oid in kept)
    StoredFile.objects.all().delete()
    Document.objects.all().delete()
    for p in Photo.objects.all():
        p.attachment.delete(save=False)
        p.image.delete(save=False)
    Photo.objects.all().delete()


def test_dry_run_lists_each_object_and_changes_nothing() -> None:
    oid = _orphan(b"12345")
    _age(oid, 3600)
    out = _sweep("--unreferenced", "--dry-run", "--grace", "60")
    assert f"Would free large object {oid}: 5 bytes, created " in out
    assert "Found 1 unreferenced large object(s), 5 bytes; nothing freed (--dry-run)." in out
    assert largeobjects.exists(oid, "default")
    largeobjects.unlink(oid, "default")


def test_young_objects_are_left_alone() -> None:
    oid = _orphan()
    out = _sweep("--unreferenced", "--grace", "3600")
    assert "Found 0" in out
    assert largeobjects.exists(oid, "default")
    _sweep("--unreferenced", "--grace", "0")
    assert not largeobjects.exists(oid, "default")


def test_objects_not_created_by_files_app_are_never_touched() -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT lo_create(0)")
        foreign = int(cursor.fetchone()[0])
    _sweep("--unreferenced", "--grace", "0")
    assert largeobjects.exists(foreign, "default")
    largeobjects.unlink(foreign, "default")


def test_truncate_leftovers_are_swept_when_asked(lo_count: Callable[[], int]) -> None:
    before = lo_count()
    for i in range(3):
        StoredFile(file=ContentFile(b"t" * i, name=f"{i}.txt")).save()
    with connection.cursor() as cursor:
        # Bypasses the unlink trigger; CASCADE: the versions' table refers to this one.
        cursor.execute("TRUNCATE files_app_storedfile CASCADE")
    assert lo_count() == before + 3
    _sweep("--grace", "0")
    assert lo_count() == before + 3  # not by default: nothing says they are garbage
    _sweep("--unreferenced", "--grace", "0")
    assert lo_count() == before


def test_works_in_bounded_batches() -> None:
    orphans = [_orphan() for _ in range(7)]
    out = io.StringIO()
    call_command(
        "files_sweep", "--unreferenced", "--grace", "0", "--batch-size", "3", "-v", "2", stdout=out
    )
    assert out.getvalue().count("Freed ") == 3  # 3 + 3 + 1
    assert not any(largeobjects.exists(oid, "default") for oid in orphans)


def test_each_query_looks_at_a_bounded_window(monkeypatch: pytest.MonkeyPatch) -> None:
    # The cost of a query must not grow with the catalogue (bench/catalogue.py measures it
    # at a million files): every query looks at the next WINDOW objects only.
    monkeypatch.setattr(maintenance, "WINDOW", 2)
    orphans = [_orphan() for _ in range(2)]
    kept = StoredFile(file=ContentFile(b"kept", name="kept.txt"))
    kept.save()
    orphans += [_orphan() for _ in range(3)]

    found = list(maintenance.unreferenced("default", grace=0))

    assert found and all(1 <= len(batch) <= 2 for batch in found)
    flat = [oid for batch in found for oid in batch]
    assert flat == sorted(flat) and set(orphans) <= set(flat)
    assert kept.file.oid not in flat
    assert "freed 5." in _sweep("--unreferenced", "--grace", "0")
    assert largeobjects.exists(kept.file.oid, "default")
    kept.delete()


def test_free_skips_objects_gone_meanwhile() -> None:
    gone, there = _orphan(b"gone"), _orphan(b"there!")
    largeobjects.unlink(gone, "default")
    assert largeobjects.unlink_many([gone, there], "default", dry_run=True) == (0, 6)
    assert largeobjects.exists(there, "default")
    assert largeobjects.unlink_many([gone, there], "default") == (1, 6)
    assert not largeobjects.exists(there, "default")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--batch-size", "0"], "--batch-size must be from 1 to 1000"),
        (["--batch-size", "5000"], "--batch-size must be from 1 to 1000"),
        (["--grace", "-1"], "--grace must be 0 or more"),
        (["--database", "nope"], "Unknown database 'nope'"),
    ],
)
def test_bad_options_are_command_errors(args: list[str], message: str) -> None:
    with pytest.raises(CommandError, match=message):
        call_command("files_sweep", *args)


def test_an_object_is_past_a_zero_grace_at_once() -> None:
    # Regression (a flake): the creation time was written rounded to the nearest
    # millisecond by the app's clock, so it could lie just after a cutoff taken at once.
    for _ in range(200):
        oid = _orphan()
        found = [
            found for batch in maintenance.unreferenced("default", grace=0) for found in batch
        ]
        assert oid in found
        largeobjects.unlink(oid, "default")


def test_the_queue_table_the_trigger_writes_is_the_models() -> None:
    # maintenance sits below the models (pyproject.toml, [tool.importlinter]): it names the
    # queue's table itself, and this keeps the two names one.
    assert PendingUnlink._meta.db_table == maintenance.PENDING_UNLINK_TABLE

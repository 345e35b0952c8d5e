"""The files_sweep command: frees files_app's unreferenced large objects, nothing else."""

from __future__ import annotations

import io
import time
from collections.abc import Callable

import pytest
from django.core.files.base import ContentFile
from django.core.management import CommandError, call_command
from django.db import connection

from files_app import lo, maintenance
from files_app.models import StoredFile
from tests.testapp.models import Document, Photo

pytestmark = pytest.mark.django_db(transaction=True)


def _sweep(*args: str) -> str:
    out = io.StringIO()
    call_command("files_sweep", *args, stdout=out)
    return out.getvalue()


def _age(oid: int, seconds: float) -> None:
    with connection.cursor() as cursor:
        cursor.execute(
            f"COMMENT ON LARGE OBJECT {oid:d} IS "
            f"'{lo.OWNER_TAG} created={time.time() - seconds:.3f}'"
        )


def _orphan(data: bytes = b"orphan") -> int:
    oid = lo.create("default")
    lo.write(oid, 0, data, "default")
    return oid


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
    kept += [int(photo.attachment.name.split("/")[-2]), int(photo.image.name.split("/")[-2])]
    for oid in orphans + kept:
        _age(oid, 3600)

    out = _sweep("--grace", "60")

    assert "Found 3 unreferenced large object(s), 18 bytes; freed 3." in out
    assert not any(lo.exists(oid, "default") for oid in orphans)
    assert all(lo.exists(oid, "default") for oid in kept)
    StoredFile.objects.all().delete()
    Document.objects.all().delete()
    for p in Photo.objects.all():
        p.attachment.delete(save=False)
        p.image.delete(save=False)
    Photo.objects.all().delete()


def test_dry_run_changes_nothing() -> None:
    oid = _orphan(b"12345")
    _age(oid, 3600)
    out = _sweep("--dry-run", "--grace", "60")
    assert "Found 1 unreferenced large object(s), 5 bytes; nothing freed (--dry-run)." in out
    assert lo.exists(oid, "default")
    lo.unlink(oid, "default")


def test_young_objects_are_left_alone() -> None:
    oid = _orphan()
    out = _sweep("--grace", "3600")
    assert "Found 0" in out
    assert lo.exists(oid, "default")
    _sweep("--grace", "0")
    assert not lo.exists(oid, "default")


def test_objects_not_created_by_files_app_are_never_touched() -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT lo_create(0)")
        foreign = int(cursor.fetchone()[0])
    _sweep("--grace", "0")
    assert lo.exists(foreign, "default")
    lo.unlink(foreign, "default")


def test_truncate_leftovers_are_swept(lo_count: Callable[[], int]) -> None:
    before = lo_count()
    for i in range(3):
        StoredFile(file=ContentFile(b"t" * i, name=f"{i}.txt")).save()
    with connection.cursor() as cursor:
        cursor.execute("TRUNCATE files_app_storedfile")  # bypasses the unlink trigger
    assert lo_count() == before + 3
    _sweep("--grace", "0")
    assert lo_count() == before


def test_works_in_bounded_batches() -> None:
    orphans = [_orphan() for _ in range(7)]
    out = io.StringIO()
    call_command("files_sweep", "--grace", "0", "--batch-size", "3", "-v", "2", stdout=out)
    assert out.getvalue().count("Freed ") == 3  # 3 + 3 + 1
    assert not any(lo.exists(oid, "default") for oid in orphans)


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
    assert "freed 5." in _sweep("--grace", "0")
    assert lo.exists(kept.file.oid, "default")
    kept.delete()


def test_free_skips_objects_gone_meanwhile() -> None:
    gone, there = _orphan(b"gone"), _orphan(b"there!")
    lo.unlink(gone, "default")
    assert maintenance.free([gone, there], "default", dry_run=True) == (0, 6)
    assert lo.exists(there, "default")
    assert maintenance.free([gone, there], "default") == (1, 6)
    assert not lo.exists(there, "default")


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

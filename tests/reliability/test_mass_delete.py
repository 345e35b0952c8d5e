"""Issue 11, point 9: deleting 100,000 stored files in one statement works with PostgreSQL's
default settings (max_locks_per_transaction = 64) and leaves no orphan: the trigger unlinks
the first objects itself and queues the rest, which are unlinked in bounded batches after
commit.
"""

from __future__ import annotations

import io
import time

import pytest
from django.contrib.auth.models import User
from django.core.management import call_command
from django.db import connection

from files_app import largeobjects, maintenance
from files_app.models import PendingUnlink, StoredFile
from tests.testapp.models import Document

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

COUNT = 100_000


def _create_rows(count: int, owner: User | None = None) -> None:
    # Empty objects, made in SQL: the point is the number of them, not their bytes.
    with connection.cursor() as cursor:
        cursor.execute("SHOW max_locks_per_transaction")
        assert cursor.fetchone()[0] == "64"  # PostgreSQL's default
        cursor.execute(
            "INSERT INTO files_app_storedfile "
            "(uuid, file, name, content_type, size, sha256, created, updated, public, owner_id) "
            "SELECT gen_random_uuid(), lo_create(0), 'f' || g, 'text/plain', 0, "
            "'e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855', now(), now(), "
            "false, %s FROM generate_series(1, %s) AS g",
            [owner.pk if owner else None, count],
        )


def test_one_queryset_delete_of_100000_files(lo_count: object) -> None:
    before = maintenance.count("default")
    _create_rows(COUNT)
    assert maintenance.count("default") == before + COUNT
    started = time.monotonic()
    deleted, _ = StoredFile.objects.all().delete()
    assert deleted == COUNT
    assert maintenance.count("default") == before
    assert not PendingUnlink.objects.exists()
    print(f"deleted {COUNT} stored files in {time.monotonic() - started:.1f} s")


def test_a_cascade_from_a_deleted_owner_drains_too() -> None:
    before = maintenance.count("default")
    owner = User.objects.create_user("many-files")
    _create_rows(5_000, owner)
    owner.delete()
    assert not StoredFile.objects.exists()
    assert maintenance.count("default") == before
    assert not PendingUnlink.objects.exists()


def test_raw_sql_leaves_a_queue_that_the_sweeper_frees() -> None:
    before = maintenance.count("default")
    _create_rows(2_000)
    with connection.cursor() as cursor:
        cursor.execute("DELETE FROM files_app_storedfile")
    assert PendingUnlink.objects.count() == 2_000 - maintenance.IMMEDIATE_UNLINKS
    assert maintenance.count("default") == before + PendingUnlink.objects.count()
    out = io.StringIO()
    call_command("files_sweep", stdout=out)
    queued = 2_000 - maintenance.IMMEDIATE_UNLINKS
    assert f"Freed {queued} large object(s) queued" in out.getvalue()
    assert maintenance.count("default") == before
    assert not PendingUnlink.objects.exists()


def test_a_queued_object_that_is_used_again_is_not_unlinked() -> None:
    from files_app.maintenance import drain_unlinks as drain

    oid = largeobjects.create("default")
    PendingUnlink.objects.create(oid=oid)
    document = Document.objects.create(attachment=str(oid))
    assert drain("default") == 0
    assert largeobjects.exists(oid, "default")
    assert not PendingUnlink.objects.exists()
    document.delete()
    assert not largeobjects.exists(oid, "default")


def test_other_apps_large_object_fields_queue_and_drain_as_well() -> None:
    before = maintenance.count("default")
    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO testapp_document (title, attachment) "
            "SELECT 'd' || g, lo_create(0) FROM generate_series(1, 1500) AS g"
        )
        cursor.execute("DELETE FROM testapp_document")
    assert PendingUnlink.objects.count() == 1500 - maintenance.IMMEDIATE_UNLINKS
    from files_app.maintenance import drain_unlinks as drain

    assert drain("default") == 1500 - maintenance.IMMEDIATE_UNLINKS
    assert maintenance.count("default") == before

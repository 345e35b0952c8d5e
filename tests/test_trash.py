"""The trash (issue 25, point 1): with FILES_APP_TRASH_DAYS, deleting a stored file — from
code, a queryset or the admin — moves it to the trash: not downloadable by any URL (views
and lean path), listed in the admin's trash view with who deleted it and when, restorable
with the same UUID and links, deleted for good by files_sweep after the retention. Raw SQL
still frees at once."""

from __future__ import annotations

import io
from collections.abc import Callable
from datetime import timedelta

import pytest
from django.contrib.auth.models import User
from django.core.management import call_command
from django.db import connection
from django.test import Client
from django.urls import reverse
from django.utils import timezone
from pytest_django.fixtures import Settings as SettingsWrapper

from files_app.models import StoredFile, TrashedFile
from files_app.sharing import make_share_url
from files_app.storage import oid_from_name

pytestmark = pytest.mark.django_db(transaction=True)

DATA = b"kept for a while\n" * 100


@pytest.fixture
def trash(settings: SettingsWrapper) -> SettingsWrapper:
    settings.FILES_APP_TRASH_DAYS = 30
    return settings


def _object_exists(stored: StoredFile) -> bool:
    oid = oid_from_name(stored.file.name)
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_largeobject_metadata WHERE oid = %s", [oid])
        return bool(cursor.fetchone()[0])


def _urls(stored: StoredFile, owner: User) -> list[str]:
    return [
        stored.get_absolute_url(),
        make_share_url(stored.uuid, stored.download_name, timedelta(hours=1)),
        stored.signed_url(owner),
    ]


def test_a_deleted_file_goes_to_the_trash_and_comes_back(
    store: Callable[..., StoredFile], trash: SettingsWrapper, door: str
) -> None:
    owner = User.objects.create_user("owner")
    stored = store(DATA, "kept.txt", owner=owner)
    urls = _urls(stored, owner)
    assert [Client().get(url).status_code for url in urls] == [200, 200, 200]

    assert stored.delete(by=owner) == (1, {"files_app.StoredFile": 1})
    assert not StoredFile.objects.filter(pk=stored.pk).exists()  # gone from the app
    in_trash = TrashedFile.objects.get(pk=stored.pk)
    assert in_trash.trashed_by == owner and in_trash.trashed is not None
    assert _object_exists(stored)  # nothing freed
    # No URL downloads it: its own, a share link, a signed URL.
    assert [Client().get(url).status_code for url in urls] == [404, 404, 404]

    in_trash.restore()
    restored = StoredFile.objects.get(pk=stored.pk)
    assert (restored.uuid, restored.trashed, restored.trashed_by) == (stored.uuid, None, None)
    assert [Client().get(url).status_code for url in urls] == [200, 200, 200]


def test_querysets_trash_and_the_trash_deletes_for_good(
    store: Callable[..., StoredFile], trash: SettingsWrapper, lo_count: Callable[[], int]
) -> None:
    before = lo_count()
    files = [store(DATA + bytes([n]), f"{n}.txt") for n in range(3)]
    assert lo_count() == before + 3
    assert StoredFile.objects.filter(pk__in=[f.pk for f in files]).delete()[0] == 3
    assert StoredFile.objects.count() == 0 and TrashedFile.objects.count() == 3
    assert lo_count() == before + 3
    # Deleting what is in the trash deletes it.
    TrashedFile.objects.filter(pk=files[0].pk).delete()
    assert StoredFile.everything.count() == 2 and lo_count() == before + 2
    # A queryset over everything: the trashed are deleted, the live (none here) trashed.
    live = store(b"live", "live.txt")
    StoredFile.everything.all().delete()
    assert list(StoredFile.everything.values_list("pk", flat=True)) == [live.pk]
    assert TrashedFile.objects.get().pk == live.pk
    assert lo_count() == before + 1


def test_files_sweep_empties_the_trash_after_the_retention(
    store: Callable[..., StoredFile],
    trash: SettingsWrapper,
    lo_count: Callable[[], int],
) -> None:
    before = lo_count()
    old, recent = store(DATA, "old.txt"), store(DATA + b"!", "recent.txt")
    old.delete()
    recent.delete()
    StoredFile.everything.filter(pk=old.pk).update(
        trashed=timezone.now() - timedelta(days=30, minutes=1)
    )
    out = io.StringIO()
    call_command("files_sweep", stdout=out)
    assert "Deleted 1 stored file(s) from the trash." in out.getvalue()
    assert list(StoredFile.everything.values_list("name", flat=True)) == ["recent.txt"]
    assert lo_count() == before + 1
    # 0 turns the trash off: the sweep empties it.
    trash.FILES_APP_TRASH_DAYS = 0
    call_command("files_sweep", stdout=io.StringIO())
    assert not StoredFile.everything.exists() and lo_count() == before


def test_a_trashed_twin_keeps_the_shared_object(
    store: Callable[..., StoredFile], trash: SettingsWrapper
) -> None:
    first, second = store(DATA, "a.txt"), store(DATA, "b.txt")  # dedupe: one object
    assert first.file.name.split("/")[0] == second.file.name.split("/")[0]
    first.delete()
    TrashedFile.objects.all().delete()
    assert _object_exists(second)
    response = Client().get(second.get_absolute_url())
    assert b"".join(response.streaming_content) == DATA  # type: ignore[attr-defined]


def test_without_the_setting_deleting_deletes(
    store: Callable[..., StoredFile], lo_count: Callable[[], int]
) -> None:
    before = lo_count()
    stored = store(DATA, "a.txt")
    stored.delete()
    assert not StoredFile.everything.exists() and lo_count() == before


def test_raw_sql_still_frees_at_once(
    store: Callable[..., StoredFile], trash: SettingsWrapper, lo_count: Callable[[], int]
) -> None:
    before = lo_count()
    stored = store(DATA, "a.txt")
    with connection.cursor() as cursor:
        cursor.execute("DELETE FROM files_app_storedfile WHERE id = %s", [stored.pk])
    assert lo_count() == before


def test_the_admin_trashes_lists_restores_and_empties(
    store: Callable[..., StoredFile], trash: SettingsWrapper, lo_count: Callable[[], int]
) -> None:
    admin = User.objects.create_superuser("admin", password="x")
    client = Client()
    client.force_login(admin)
    before = lo_count()
    one, two = store(DATA, "one.txt"), store(DATA + b"2", "two.txt")
    client.post(reverse("admin:files_app_storedfile_delete", args=[one.pk]), {"post": "yes"})
    client.post(
        reverse("admin:files_app_storedfile_changelist"),
        {"action": "delete_selected", "post": "yes", "_selected_action": [str(two.pk)]},
    )
    assert StoredFile.objects.count() == 0
    assert set(TrashedFile.objects.values_list("trashed_by__username", flat=True)) == {"admin"}
    page = client.get(reverse("admin:files_app_trashedfile_changelist"))
    assert page.status_code == 200
    assert b"one.txt" in page.content and b"two.txt" in page.content
    client.post(
        reverse("admin:files_app_trashedfile_changelist"),
        {"action": "restore_files", "_selected_action": [str(one.pk)]},
    )
    assert list(StoredFile.objects.values_list("name", flat=True)) == ["one.txt"]
    client.post(
        reverse("admin:files_app_trashedfile_changelist"),
        {"action": "delete_selected", "post": "yes", "_selected_action": [str(two.pk)]},
    )
    assert not TrashedFile.objects.exists() and lo_count() == before + 1
    # Staff without the delete permission see no trash.
    staff = User.objects.create_user("staff", is_staff=True)
    client.force_login(staff)
    assert client.get(reverse("admin:files_app_trashedfile_changelist")).status_code == 403


def test_the_setting_is_checked(settings: SettingsWrapper) -> None:
    from files_app.checks import check_settings

    settings.FILES_APP_TRASH_DAYS = -1
    assert [error.id for error in check_settings()] == ["files_app.E014"]

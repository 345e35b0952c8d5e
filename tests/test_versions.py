"""Versions (issue 25, point 2): with FILES_APP_VERSIONS, replacing a stored file — by
code, Django's file API, a bulk update or the admin — keeps its earlier content as a
version (N kept), listed on the change page with size, SHA-256, date and who replaced it;
any version downloads with ranges and its own ETag, and restores as current. Versions with
the same bytes as another row share its large object."""

from __future__ import annotations

import hashlib
import io
from collections.abc import Callable
from typing import Any

import pytest
from django.contrib.auth.models import Permission, User
from django.core.files.base import ContentFile
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import call_command
from django.db import connection
from django.test import Client
from django.urls import reverse
from pytest_django.fixtures import Settings as SettingsWrapper

from files_app.models import FileVersion, StoredFile
from files_app.storage import oid_from_name

pytestmark = pytest.mark.django_db(transaction=True)

FIRST, SECOND, THIRD = (f"content {n}\n".encode() * 300 for n in (1, 2, 3))


@pytest.fixture
def versions(settings: SettingsWrapper) -> SettingsWrapper:
    settings.FILES_APP_VERSIONS = 3
    return settings


def _replace(stored: StoredFile, data: bytes, name: str, by: User | None = None) -> None:
    stored.file = ContentFile(data, name=name)
    stored.save(by=by)


def _body(response: Any) -> bytes:
    return b"".join(response.streaming_content)


def _oid(row: StoredFile | FileVersion) -> int:
    oid = oid_from_name(row.file.name)
    assert oid is not None
    return oid


def test_replacing_keeps_the_earlier_content_as_a_version(
    store: Callable[..., StoredFile], versions: SettingsWrapper, lo_count: Callable[[], int]
) -> None:
    owner = User.objects.create_user("owner")
    before = lo_count()
    stored = store(FIRST, "one.txt", owner=owner)
    first_oid, first_updated = _oid(stored), stored.updated
    _replace(stored, SECOND, "two.txt", by=owner)

    [version] = stored.versions.all()
    assert (version.number, version.name, version.size) == (1, "one.txt", len(FIRST))
    assert version.sha256 == hashlib.sha256(FIRST).hexdigest()
    assert (version.modified, version.replaced_by) == (first_updated, owner)
    assert _oid(version) == first_oid  # the same object: nothing copied, nothing freed
    assert lo_count() == before + 2
    stored.refresh_from_db()
    assert (stored.name, stored.size) == ("two.txt", len(SECOND))
    with stored.file.open() as current, version.file.open() as earlier:
        assert (current.read(), earlier.read()) == (SECOND, FIRST)


def test_only_the_newest_versions_are_kept_and_the_others_freed(
    store: Callable[..., StoredFile], versions: SettingsWrapper, lo_count: Callable[[], int]
) -> None:
    versions.FILES_APP_VERSIONS = 2
    before = lo_count()
    stored = store(b"0" * 100, "f.txt")
    for n in range(1, 6):
        _replace(stored, bytes([48 + n]) * 100, "f.txt")
    assert list(stored.versions.values_list("number", flat=True)) == [5, 4]
    sizes = {bytes(v.file.open().read()[:1]) for v in stored.versions.all()}
    assert sizes == {b"4", b"3"}
    assert lo_count() == before + 3  # the current content and two versions


def test_nothing_is_kept_without_the_setting_or_for_the_same_bytes(
    store: Callable[..., StoredFile],
    versions: SettingsWrapper,
    lo_count: Callable[[], int],
) -> None:
    before = lo_count()
    stored = store(FIRST, "one.txt")
    _replace(stored, FIRST, "one.txt")  # the same bytes again: no new content
    assert not stored.versions.exists() and lo_count() == before + 1
    versions.FILES_APP_VERSIONS = 0
    _replace(stored, SECOND, "two.txt")
    assert not FileVersion.objects.exists() and lo_count() == before + 1


def test_every_route_of_replacing_keeps_a_version(
    store: Callable[..., StoredFile], versions: SettingsWrapper
) -> None:
    stored = store(FIRST, "one.txt")
    stored.file.save("two.txt", ContentFile(SECOND))  # Django's FieldFile API, save=True
    other = StoredFile.objects.get(pk=stored.pk)
    other.file = ContentFile(THIRD, name="three.txt")
    StoredFile.objects.bulk_update([other], ["file"])
    assert list(stored.versions.values_list("number", "name")) == [(2, "two.txt"), (1, "one.txt")]


def test_a_version_downloads_with_ranges_and_its_own_validators(
    store: Callable[..., StoredFile], versions: SettingsWrapper, door: str
) -> None:
    owner = User.objects.create_user("owner")
    stored = store(FIRST, "one.txt", owner=owner)  # a public file
    _replace(stored, SECOND, "two.txt", by=owner)
    version = stored.versions.get()
    url = version.get_absolute_url()
    assert url == f"/files/versions/{stored.uuid}/1/one.txt"
    client = Client()
    client.force_login(owner)

    whole = client.get(url)
    assert whole.status_code == 200 and _body(whole) == FIRST
    etag = f'"{version.sha256}"'
    assert whole["ETag"] == etag and whole["ETag"] != f'"{stored.sha256}"'
    assert "one.txt" in whole["Content-Disposition"]
    part = client.get(url, headers={"range": "bytes=10-19"})
    assert part.status_code == 206 and _body(part) == FIRST[10:20]
    assert client.get(url, headers={"if-none-match": etag}).status_code == 304
    spliced = client.get(url, headers={"range": "bytes=0-9", "if-range": f'"{stored.sha256}"'})
    assert spliced.status_code == 200  # another content's ETag: the whole version

    # Not the public's, even of a public file; nor another user's; staff who may view
    # every file may.
    assert Client().get(url).status_code == 404
    stranger = Client()
    stranger.force_login(User.objects.create_user("stranger"))
    assert stranger.get(url).status_code == 404
    viewer = User.objects.create_user("viewer")
    viewer.user_permissions.add(Permission.objects.get(codename="view_storedfile"))
    allowed = Client()
    allowed.force_login(viewer)
    assert allowed.get(url).status_code == 200
    assert client.get(url.replace("/1/", "/2/")).status_code == 404
    # A file in the trash has no downloadable versions.
    versions.FILES_APP_TRASH_DAYS = 30
    stored.delete()
    assert client.get(url).status_code == 404


def test_restoring_a_version_keeps_what_it_replaces(
    store: Callable[..., StoredFile], versions: SettingsWrapper, lo_count: Callable[[], int]
) -> None:
    owner = User.objects.create_user("owner")
    before = lo_count()
    stored = store(FIRST, "one.txt", owner=owner)
    _replace(stored, SECOND, "two.txt")
    stored.restore_version(1, by=owner)

    assert (stored.name, stored.sha256) == ("one.txt", hashlib.sha256(FIRST).hexdigest())
    response = Client().get(stored.get_absolute_url())
    assert _body(response) == FIRST
    [version] = stored.versions.all()  # version 1 is current again; the second content is 2
    assert (version.number, version.name, version.replaced_by) == (2, "two.txt", owner)
    assert lo_count() == before + 2
    with pytest.raises(FileVersion.DoesNotExist):
        stored.restore_version(1)


def test_versions_share_bytes_with_files_and_each_other(
    store: Callable[..., StoredFile], versions: SettingsWrapper, lo_count: Callable[[], int]
) -> None:
    before = lo_count()
    stored = store(FIRST, "one.txt")
    _replace(stored, SECOND, "two.txt")
    _replace(stored, FIRST, "one again.txt")  # back to the first bytes: the same object
    assert lo_count() == before + 2
    assert _oid(stored) == _oid(stored.versions.get(number=1))
    twin = store(SECOND, "copy.txt")  # a new file with a version's bytes shares it
    assert lo_count() == before + 2 and _oid(twin) == _oid(stored.versions.get(number=2))
    twin.delete()
    assert lo_count() == before + 2  # the version still holds it


def test_deleting_a_file_frees_its_versions_by_any_route(
    store: Callable[..., StoredFile], versions: SettingsWrapper, lo_count: Callable[[], int]
) -> None:
    owner = User.objects.create_user("owner")
    before = lo_count()
    one, two = store(FIRST, "one.txt"), store(b"x" * 10, "two.txt")
    three = store(b"y" * 10, "three.txt", owner=owner)
    for stored, data in ((one, SECOND), (two, THIRD), (three, b"z" * 10)):
        _replace(stored, data, stored.name)
    assert lo_count() == before + 6
    one.delete()  # the ORM
    assert lo_count() == before + 4
    with connection.cursor() as cursor:  # raw SQL: the database's cascade and triggers
        cursor.execute("DELETE FROM files_app_storedfile WHERE id = %s", [two.pk])
    assert lo_count() == before + 2
    owner.delete()  # a cascade: still a fast delete, no row loaded (test_internals)
    assert lo_count() == before and not FileVersion.objects.exists()


def test_files_sweep_drops_versions_beyond_a_lowered_setting(
    store: Callable[..., StoredFile], versions: SettingsWrapper, lo_count: Callable[[], int]
) -> None:
    before = lo_count()
    stored = store(FIRST, "one.txt")
    _replace(stored, SECOND, "two.txt")
    _replace(stored, THIRD, "three.txt")
    versions.FILES_APP_VERSIONS = 1
    out = io.StringIO()
    call_command("files_sweep", stdout=out)
    assert "Deleted 1 earlier version(s)" in out.getvalue()
    assert list(stored.versions.values_list("number", flat=True)) == [2]
    assert lo_count() == before + 2


def test_the_admin_lists_downloads_and_restores_versions(
    store: Callable[..., StoredFile], versions: SettingsWrapper
) -> None:
    admin = User.objects.create_superuser("admin", password="x")
    client = Client()
    client.force_login(admin)
    stored = store(FIRST, "one.txt", owner=admin)
    change = reverse("admin:files_app_storedfile_change", args=[stored.pk])
    page = client.get(change)
    assert b"None yet: replacing the file keeps the 3 latest" in page.content
    response = client.post(
        change,
        {
            "file": SimpleUploadedFile("two.txt", SECOND, "text/plain"),
            "name": "",
            "content_type": "",
            "public": "on",
            "owner": admin.pk,
        },
    )
    assert response.status_code == 302, response.content
    version = stored.versions.get()
    assert (version.name, version.replaced_by) == ("one.txt", admin)
    text = client.get(change).content.decode()
    assert version.get_absolute_url() in text and version.sha256 in text
    restore = reverse("admin:files_app_storedfile_restore_version", args=[stored.pk, 1])
    assert restore in text
    assert b"Yes, restore it" in client.get(restore).content
    assert b"nothing is lost" in client.get(restore).content
    versions.FILES_APP_VERSIONS = 0  # restoring would drop what the file holds: it says so
    assert b"Restoring replaces it for good" in client.get(restore).content
    versions.FILES_APP_VERSIONS = 3
    assert client.post(restore).status_code == 302
    stored.refresh_from_db()
    assert stored.name == "one.txt"
    assert list(stored.versions.values_list("number", "name")) == [(2, "two.txt")]
    # Staff who may only view get no restore.
    staff = User.objects.create_user("staff", is_staff=True)
    staff.user_permissions.add(Permission.objects.get(codename="view_storedfile"))
    client.force_login(staff)
    second = reverse("admin:files_app_storedfile_restore_version", args=[stored.pk, 2])
    assert client.post(second).status_code == 403
    missing = reverse("admin:files_app_storedfile_restore_version", args=[stored.pk, 9])
    client.force_login(admin)
    assert client.get(missing).status_code == 404


def test_the_setting_is_checked(settings: SettingsWrapper) -> None:
    from files_app.checks import check_settings

    settings.FILES_APP_VERSIONS = -1
    assert [error.id for error in check_settings()] == ["files_app.E015"]

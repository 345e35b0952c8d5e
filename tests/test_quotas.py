"""Quotas (issue 25, point 4): a user's quota limits the bytes they store (logical: files,
in the trash too, versions, uploads in progress), the site's cap the bytes the database
holds (physical: an object shared by dedupe once); both are checked before bytes move —
the admin's upload by its declared length and as bytes arrive, tus at creation and each
PATCH — and over is a clear 413 with nothing stored. The change list shows them."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from django.contrib.auth.models import Permission, User
from django.core.files.base import ContentFile
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from django.urls import reverse
from pytest_django.fixtures import Settings as SettingsWrapper

from files_app import quotas
from files_app.models import StoredFile, UserQuota
from tests.test_tus import TUS, patch

pytestmark = pytest.mark.django_db(transaction=True)

ADD = "/admin/files_app/storedfile/add/"
KB = 1000


@pytest.fixture
def uploader() -> User:
    user = User.objects.create_user("uploader", is_staff=True)
    user.user_permissions.add(*Permission.objects.filter(codename__endswith="_storedfile"))
    return user


@pytest.fixture
def client_of(uploader: User) -> Client:
    client = Client()
    client.force_login(uploader)
    return client


def _store(owner: User | None, data: bytes, name: str = "f.bin") -> StoredFile:
    stored = StoredFile(file=ContentFile(data, name=name), owner=owner)
    stored.save()
    return stored


def _tus_create(client: Client, length: int) -> Any:
    return client.post("/files/uploads/", HTTP_UPLOAD_LENGTH=str(length), **TUS)


def test_stored_counts_files_trash_versions_and_uploads_held_counts_objects_once(
    uploader: User, client_of: Client, settings: SettingsWrapper
) -> None:
    settings.FILES_APP_TRASH_DAYS = 30
    settings.FILES_APP_VERSIONS = 5
    before = quotas.held()
    one = _store(uploader, b"a" * 3 * KB)
    _store(uploader, b"a" * 3 * KB, "twin.bin")  # dedupe: one object
    trashed = _store(uploader, b"b" * 2 * KB)
    trashed.delete()  # in the trash: still stored
    one.file = ContentFile(b"c" * 4 * KB, name="f.bin")
    one.save()  # the 3 KB content is a version now
    _store(None, b"d" * KB)  # nobody's: held, stored by no user
    assert _tus_create(client_of, 5 * KB).status_code == 201  # reserved
    assert quotas.stored_by(uploader) == (4 + 3 + 2 + 3 + 5) * KB
    assert quotas.held() - before == (3 + 2 + 4 + 1 + 5) * KB
    assert quotas.stored_by(None) == 0


def test_a_users_own_quota_wins_over_the_setting(
    uploader: User, settings: SettingsWrapper
) -> None:
    settings.FILES_APP_USER_QUOTA = 10 * KB
    assert quotas.user_limit(uploader) == 10 * KB
    UserQuota.objects.create(user=uploader, limit=None)
    assert quotas.user_limit(uploader) is None
    UserQuota.objects.filter(user=uploader).update(limit=KB)
    assert quotas.user_limit(uploader) == KB
    _store(uploader, b"x" * 800)
    quotas.check(uploader, 200)
    with pytest.raises(quotas.QuotaExceeded, match="Over your quota: 800 bytes of 1000 bytes"):
        quotas.check(uploader, 201)


@pytest.mark.parametrize("size", [200 * KB, 40 * KB], ids=["declared", "as it arrives"])
def test_an_admin_upload_over_the_quota_is_413_and_stores_nothing(
    uploader: User,
    client_of: Client,
    settings: SettingsWrapper,
    lo_count: Callable[[], int],
    size: int,
) -> None:
    # 200 KB is refused by the request's length before a byte is read; 40 KB is within
    # the form's slack (64 KiB) over the room left, so its bytes are counted as they come.
    settings.FILES_APP_USER_QUOTA = 20 * KB
    _store(uploader, b"x" * 5 * KB)
    before = lo_count()
    response = client_of.post(ADD, {"file": SimpleUploadedFile("big.bin", b"y" * size)})
    assert response.status_code == 413
    text = response.content.decode()
    assert "Over your quota: 4.9 KB of 19.5 KB used" in text and "Nothing was stored" in text
    assert StoredFile.objects.count() == 1 and lo_count() == before
    # Several files of one upload count together.
    two = [SimpleUploadedFile(f"{n}.bin", b"z" * 8 * KB) for n in range(2)]
    assert client_of.post(ADD, {"file": two}).status_code == 413
    assert StoredFile.objects.count() == 1 and lo_count() == before
    # What fits is stored.
    fits = client_of.post(ADD, {"file": SimpleUploadedFile("ok.bin", b"o" * 14 * KB)})
    assert fits.status_code == 302 and StoredFile.objects.count() == 2


def test_an_upload_that_fit_when_it_started_is_checked_again_as_it_is_saved(
    uploader: User,
    client_of: Client,
    settings: SettingsWrapper,
    lo_count: Callable[[], int],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Another upload of the same user is saved while this one's body streams in: the
    # handler saw the room before it, the save sees it taken.
    settings.FILES_APP_USER_QUOTA = 20 * KB
    real_room = quotas.room

    def room_then_another_upload_lands(user: Any) -> Any:
        seen = real_room(user)
        _store(uploader, b"a" * 12 * KB, "other.bin")
        return seen

    monkeypatch.setattr(quotas, "room", room_then_another_upload_lands)
    before = lo_count()
    response = client_of.post(ADD, {"file": SimpleUploadedFile("late.bin", b"l" * 12 * KB)})
    assert response.status_code == 200  # the form again, with the reason
    errors = response.context["adminform"].form.errors["file"]
    assert errors == [
        "Over your quota: 11.7 KB of 19.5 KB used, and this upload needs 11.7 KB more. "
        "Nothing was stored."
    ]
    assert list(StoredFile.objects.values_list("name", flat=True)) == ["other.bin"]
    assert lo_count() == before + 1  # the other upload's; this one's object is gone
    # A replacement is checked the same way; the file keeps its content.
    stored = StoredFile.objects.get()
    change = reverse("admin:files_app_storedfile_change", args=[stored.pk])
    replaced = client_of.post(
        change,
        {
            "file": SimpleUploadedFile("new.bin", b"n" * 6 * KB),
            "name": "other.bin",
            "content_type": "",
            "owner": uploader.pk,
        },
    )
    assert replaced.status_code == 200 and "Over your quota" in replaced.content.decode()
    stored.refresh_from_db()
    assert stored.size == 12 * KB and StoredFile.objects.count() == 2


def test_a_change_without_a_file_is_not_refused_over_the_quota(
    uploader: User, client_of: Client, settings: SettingsWrapper
) -> None:
    stored = _store(uploader, b"x" * 5 * KB)
    settings.FILES_APP_USER_QUOTA = KB  # over it already
    change = reverse("admin:files_app_storedfile_change", args=[stored.pk])
    response = client_of.post(
        change, {"name": "renamed.bin", "content_type": "", "owner": uploader.pk}
    )
    assert response.status_code == 302
    stored.refresh_from_db()
    assert stored.name == "renamed.bin"


def test_tus_checks_creation_and_every_patch(
    uploader: User, client_of: Client, settings: SettingsWrapper
) -> None:
    settings.FILES_APP_USER_QUOTA = 10 * KB
    refused = _tus_create(client_of, 11 * KB)
    assert refused.status_code == 413
    assert refused.content.decode().startswith("Over your quota: 0 bytes of 9.8")
    first = _tus_create(client_of, 6 * KB)
    assert first.status_code == 201
    # The first upload's length is reserved: a second that fits alone does not fit now.
    assert _tus_create(client_of, 5 * KB).status_code == 413
    url = first["Location"]
    assert patch(client_of, url, 0, b"p" * 2 * KB).status_code == 204
    settings.FILES_APP_USER_QUOTA = 5 * KB  # lowered meanwhile: the next piece waits
    stopped = patch(client_of, url, 2 * KB, b"p" * 2 * KB)
    assert stopped.status_code == 413 and b"may resume once there is room" in stopped.content
    settings.FILES_APP_USER_QUOTA = 10 * KB
    assert patch(client_of, url, 2 * KB, b"p" * 4 * KB).status_code == 204
    assert StoredFile.objects.get().size == 6 * KB


def test_the_sites_cap_limits_what_the_database_holds(
    uploader: User, client_of: Client, settings: SettingsWrapper, lo_count: Callable[[], int]
) -> None:
    base = quotas.held()
    _store(None, b"s" * 6 * KB)
    _store(uploader, b"s" * 6 * KB, "same.bin")  # dedupe: held once
    settings.FILES_APP_TOTAL_QUOTA = base + 10 * KB
    assert _tus_create(client_of, 4 * KB).status_code == 201
    refused = _tus_create(client_of, KB)
    assert refused.status_code == 413
    assert b"Over the site's storage cap" in refused.content
    before = lo_count()
    response = client_of.post(ADD, {"file": SimpleUploadedFile("b.bin", b"b" * 2 * KB)})
    assert response.status_code == 413 and lo_count() == before


def test_the_change_list_shows_the_users_usage(
    uploader: User, client_of: Client, settings: SettingsWrapper
) -> None:
    _store(uploader, b"x" * 3 * KB)
    page = client_of.get(reverse("admin:files_app_storedfile_changelist")).content.decode()
    assert "Your files store 2.9\xa0KB." in page
    settings.FILES_APP_USER_QUOTA = 10 * KB
    settings.FILES_APP_TOTAL_QUOTA = 10**9
    page = client_of.get(reverse("admin:files_app_storedfile_changelist")).content.decode()
    assert "Your files store 2.9\xa0KB of your quota of 9.8\xa0KB." in page
    assert "The database holds" not in page  # adding it up reads every row: not per page
    admin = User.objects.create_superuser("admin", password="x")
    client_of.force_login(admin)
    UserQuota.objects.create(user=uploader, limit=KB)
    quota_list = client_of.get(reverse("admin:files_app_userquota_changelist")).content.decode()
    assert "uploader" in quota_list and "1000\xa0bytes" in quota_list and "2.9\xa0KB" in quota_list
    assert "The database holds " in quota_list and "of its cap of 953.7\xa0MB" in quota_list
    assert "Users without a quota here may store 9.8\xa0KB" in quota_list


def test_the_patches_of_an_upload_may_reuse_a_recent_figure_of_the_cap(
    settings: SettingsWrapper,
) -> None:
    settings.FILES_APP_TOTAL_QUOTA = 10**9
    first = quotas.usage_of(None)["total"].used
    _store(None, b"n" * 7 * KB)
    assert quotas.usage_of(None, fresh=False)["total"].used == first  # within HELD_REUSE
    assert quotas.usage_of(None)["total"].used == first + 7 * KB
    assert quotas.usage_of(None, fresh=False)["total"].used == first + 7 * KB


@pytest.mark.parametrize(
    ("setting", "check_id"),
    [("FILES_APP_USER_QUOTA", "files_app.E017"), ("FILES_APP_TOTAL_QUOTA", "files_app.E018")],
)
def test_the_settings_are_checked(setting: str, check_id: str, settings: SettingsWrapper) -> None:
    from files_app.checks import check_settings

    setattr(settings, setting, -1)
    assert [error.id for error in check_settings()] == [check_id]
    setattr(settings, setting, 0)  # nothing may be uploaded: allowed
    assert check_settings() == []

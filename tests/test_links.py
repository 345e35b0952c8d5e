"""Managed share links (issue 25, point 3): links are rows, made with an expiry (or none) and
an optional download limit; a download is a 200 or a 206 from the first byte, and the other
ranges of that download do not count; a link is listed per file and per user, revocable at
once on every door (the lean path answers what does not count, and checks the link at each
request); old signed share links keep working."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import timedelta

import pytest
from django.contrib.auth.models import Permission, User
from django.db import connection
from django.test import Client
from django.urls import reverse
from pytest_django.fixtures import Settings as SettingsWrapper

from files_app import responder
from files_app.models import ShareLink, StoredFile
from files_app.ranges import ByteRange
from files_app.sharing import make_share_url
from tests.lean import ENTRIES, fetch

pytestmark = pytest.mark.django_db(transaction=True)

DATA = bytes(range(256)) * 40  # 10 KiB


@pytest.fixture
def private(store: Callable[..., StoredFile]) -> StoredFile:
    return store(DATA, "report.pdf", public=False)


def _downloads(link: ShareLink) -> int:
    link.refresh_from_db()
    return link.downloads


def test_what_starts_a_download() -> None:
    whole = responder.Plan(200, [], [ByteRange(0, 10)])
    first = responder.Plan(206, [], [ByteRange(0, 10)])
    later = responder.Plan(206, [], [ByteRange(10, 20)])
    multipart = responder.Plan(206, [], [b"--b\r\n\r\n", ByteRange(0, 5), b"--b--"])
    assert [responder.starts_a_download("GET", plan) for plan in (whole, first, later)] == [
        True,
        True,
        False,
    ]
    assert responder.starts_a_download("GET", multipart)
    assert not responder.starts_a_download("HEAD", whole)
    assert not responder.starts_a_download("GET", responder.Plan(304, []))
    assert not responder.starts_a_download("GET", responder.Plan(416, [], [b"no"]))


@pytest.mark.parametrize("entry", ENTRIES)
def test_a_link_counts_downloads_not_ranges_on_every_door(
    entry: str, lean: None, lean_answers: list[str], private: StoredFile
) -> None:
    owner = User.objects.create_user("owner")
    link = private.share(by=owner, expires=timedelta(days=1), label="for Bob")
    url = link.get_absolute_url()
    assert url == f"/files/links/{link.token}/report.pdf"
    assert fetch(entry, "GET", f"/files/{private.uuid}/report.pdf")[0] == 404  # private

    status, headers, body = fetch(entry, "GET", url)
    assert (status, body) == (200, DATA) and _downloads(link) == 1
    etag = headers.get("ETag")
    assert etag == f'"{private.sha256}"'
    assert headers.get("Cache-Control") == "private, no-cache"
    # A player: the first range counts, its seeks do not; neither do HEAD and 304.
    assert fetch(entry, "GET", url, {"Range": "bytes=0-"})[0] == 206
    assert _downloads(link) == 2
    status, _, body = fetch(entry, "GET", url, {"Range": "bytes=5000-5099"})
    assert (status, body) == (206, DATA[5000:5100])
    assert fetch(entry, "HEAD", url)[0] == 200
    assert fetch(entry, "GET", url, {"If-None-Match": etag})[0] == 304
    assert _downloads(link) == 2
    # The lean path answered what counted nothing; the view counted the rest.
    assert lean_answers == [link.token] * 3


@pytest.mark.parametrize("entry", ENTRIES)
def test_a_used_up_link_still_answers_its_downloads_ranges_for_a_while(
    entry: str, lean: None, private: StoredFile, settings: SettingsWrapper
) -> None:
    link = private.share(max_downloads=2)
    url = link.get_absolute_url()
    assert fetch(entry, "GET", url, {"Range": "bytes=0-99"})[0] == 206
    assert fetch(entry, "GET", url)[0] == 200
    status, _, body = fetch(entry, "GET", url)
    assert (status, body) == (410, b"This link has been used up: it allows no more downloads.\n")
    assert fetch(entry, "GET", url, {"Range": "bytes=0-9"})[0] == 410  # a new download
    assert _downloads(link) == 2
    # The seeks and the resume of a download it counted go on (FILES_APP_LINK_RESUME)...
    status, _, body = fetch(entry, "GET", url, {"Range": "bytes=100-"})
    assert (status, body) == (206, DATA[100:])
    # ...until that time is over.
    settings.FILES_APP_LINK_RESUME = 0
    assert fetch(entry, "GET", url, {"Range": "bytes=100-"})[0] == 410


@pytest.mark.parametrize("entry", ENTRIES)
def test_revoked_and_expired_links_are_refused_at_once(
    entry: str, lean: None, private: StoredFile
) -> None:
    link = private.share()  # no expiry, no limit
    url = link.get_absolute_url()
    ranged = {"Range": "bytes=10-19"}
    assert fetch(entry, "GET", url, ranged)[0] == 206  # the lean path's
    link.revoke()
    assert fetch(entry, "GET", url, ranged)[:3:2] == (410, b"This link was revoked.\n")
    assert fetch(entry, "GET", url)[0] == 410
    expired = private.share(expires=timedelta(seconds=-1))
    assert fetch(entry, "GET", expired.get_absolute_url(), ranged)[0] == 410
    assert fetch(entry, "GET", f"/files/links/{'x' * 22}/report.pdf")[0] == 404
    assert fetch(entry, "GET", "/files/links/not%20a%20token/report.pdf")[0] == 404


def test_a_link_to_a_file_in_the_trash_answers_404(
    private: StoredFile, settings: SettingsWrapper, door: str
) -> None:
    settings.FILES_APP_TRASH_DAYS = 30
    link = private.share()
    url = link.get_absolute_url()
    assert Client().get(url, headers={"range": "bytes=1-2"}).status_code == 206
    private.delete()
    assert Client().get(url, headers={"range": "bytes=1-2"}).status_code == 404
    private.restore()
    assert Client().get(url, headers={"range": "bytes=1-2"}).status_code == 206


def test_the_last_download_goes_to_one_of_two_clients(private: StoredFile) -> None:
    link = private.share(max_downloads=1)
    # Both found the link usable; only one may count the last download.
    assert ShareLink.objects.count_download(link.pk)
    assert not ShareLink.objects.count_download(link.pk)
    assert _downloads(link) == 1


def test_bad_limits_are_refused(private: StoredFile) -> None:
    with pytest.raises(ValueError, match="max_downloads must be 1 or more"):
        private.share(max_downloads=0)


def test_deleting_a_file_deletes_its_links_by_any_route(
    store: Callable[..., StoredFile],
) -> None:
    owner = User.objects.create_user("owner")
    one, two, three = (store(DATA, f"{n}.txt", owner=owner) for n in range(3))
    for stored in (one, two, three):
        stored.share()
    one.delete()
    with connection.cursor() as cursor:
        cursor.execute("DELETE FROM files_app_storedfile WHERE id = %s", [two.pk])
    assert ShareLink.objects.count() == 1
    owner.delete()  # a cascade: still a fast delete
    assert not ShareLink.objects.exists()


def test_old_signed_share_links_keep_working(private: StoredFile) -> None:
    old = make_share_url(private.uuid, "report.pdf", timedelta(hours=1))
    assert Client().get(old, headers={"range": "bytes=0-9"}).status_code == 206


def test_the_admin_makes_lists_and_revokes_links(private: StoredFile) -> None:
    admin = User.objects.create_superuser("admin", password="x")
    client = Client()
    client.force_login(admin)
    changelist = reverse("admin:files_app_storedfile_changelist")
    done = client.post(
        changelist,
        {
            "action": "create_share_links",
            "_selected_action": [private.pk],
            "expires_in": "3600",
            "max_downloads": "1",
        },
        follow=True,
    )
    assert "valid for 1 hour, for 1 download(s)" in done.content.decode()
    (url,) = re.findall(r'class="share-link" href="([^"]+)"', done.content.decode())
    link = ShareLink.objects.get()
    assert (link.created_by, link.max_downloads) == (admin, 1)
    assert link.expires is not None
    bad = client.post(
        changelist,
        {"action": "create_share_links", "_selected_action": [private.pk], "max_downloads": "0"},
        follow=True,
    )
    assert "No links made" in bad.content.decode() and ShareLink.objects.count() == 1

    # Per file: the change page lists it with its downloads; per user: the links' list.
    anonymous = Client()
    assert anonymous.get(url.removeprefix("http://testserver")).status_code == 200
    page = client.get(reverse("admin:files_app_storedfile_change", args=[private.pk]))
    text = page.content.decode()
    assert link.get_absolute_url() in text and "1 of 1" in text and "used up" in text
    links = client.get(
        reverse("admin:files_app_sharelink_changelist") + f"?created_by__id__exact={admin.pk}"
    )
    assert link.get_absolute_url() in links.content.decode()

    # Made on its own page (from the file's "Make a share link"), then revoked.
    add = reverse("admin:files_app_sharelink_add")
    assert client.get(f"{add}?stored_file={private.pk}").status_code == 200
    made = client.post(add, {"stored_file": private.pk, "label": "for Ann", "max_downloads": ""})
    assert made.status_code == 302
    ann = ShareLink.objects.get(label="for Ann")
    assert ann.created_by == admin and ann.expires is None and ann.max_downloads is None
    ann_url = ann.get_absolute_url()
    assert anonymous.get(ann_url, headers={"range": "bytes=5-9"}).status_code == 206
    client.post(
        reverse("admin:files_app_sharelink_changelist"),
        {"action": "revoke_links", "_selected_action": [ann.pk]},
    )
    assert anonymous.get(ann_url, headers={"range": "bytes=5-9"}).status_code == 410

    # Staff who may only view links revoke none.
    viewer = User.objects.create_user("viewer", is_staff=True)
    viewer.user_permissions.add(Permission.objects.get(codename="view_sharelink"))
    client.force_login(viewer)
    client.post(
        reverse("admin:files_app_sharelink_changelist"),
        {"action": "revoke_links", "_selected_action": [link.pk]},
    )
    link.refresh_from_db()
    assert link.revoked is None


def test_the_setting_is_checked(settings: SettingsWrapper) -> None:
    from files_app.checks import check_settings

    settings.FILES_APP_LINK_RESUME = -5
    assert [error.id for error in check_settings()] == ["files_app.E016"]

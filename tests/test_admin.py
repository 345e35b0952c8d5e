"""The stored-file admin: streaming uploads, listing, preview, replace, actions, limits."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from datetime import timedelta
from html import unescape
from typing import Any
from unittest import mock
from urllib.parse import urljoin, urlsplit

import pytest
from django.contrib import admin
from django.contrib.auth.models import User
from django.core.files.base import ContentFile
from django.core.files.uploadedfile import SimpleUploadedFile, TemporaryUploadedFile
from django.test import Client, override_settings
from django.urls import path
from django.utils.html import escape

from files_app import largeobjects
from files_app.models import StoredFile
from files_app.sharing import make_share_url

pytestmark = pytest.mark.django_db(transaction=True)

ADD_URL = "/admin/files_app/storedfile/"


@pytest.fixture
def admin_user() -> User:
    return User.objects.create_superuser("admin", password="pw")


@pytest.fixture
def client(admin_user: User) -> Client:
    client = Client()
    client.force_login(admin_user)
    return client


def _store(data: bytes = b"data", name: str = "a.txt", **kwargs: object) -> StoredFile:
    stored = StoredFile(file=ContentFile(data, name=name), **kwargs)
    stored.save()
    return stored


def _no_temporary_files() -> mock._patch[mock.MagicMock]:
    # Django's default handlers spill uploads over 2.5 MB to a temporary file on disk.
    return mock.patch.object(
        TemporaryUploadedFile, "__init__", side_effect=AssertionError("temporary file used")
    )


def test_upload_streams_into_a_large_object(
    client: Client, admin_user: User, lo_count: Callable[[], int]
) -> None:
    data = bytes(range(256)) * 16_384  # 4 MiB: more than the in-memory upload limit
    before = lo_count()
    with _no_temporary_files():
        response = client.post(
            f"{ADD_URL}add/",
            {"file": SimpleUploadedFile("big.bin", data, "application/octet-stream")},
        )
    assert response.status_code == 302, response.content[:2000]
    stored = StoredFile.objects.get()
    assert (stored.name, stored.size) == ("big.bin", len(data))
    assert stored.sha256 == hashlib.sha256(data).hexdigest()
    assert stored.owner == admin_user
    assert lo_count() == before + 1
    with stored.file.open() as f:
        assert hashlib.sha256(f.read()).hexdigest() == stored.sha256


def test_several_files_at_once(client: Client, lo_count: Callable[[], int]) -> None:
    before = lo_count()
    files = [SimpleUploadedFile(f"{i}.txt", f"file {i}".encode(), "text/plain") for i in range(3)]
    response = client.post(f"{ADD_URL}add/", {"file": files, "public": "on"})
    assert response.status_code == 302
    stored = StoredFile.objects.order_by("name")
    assert [s.name for s in stored] == ["0.txt", "1.txt", "2.txt"]
    assert all(s.public for s in stored)
    assert lo_count() == before + 3


def test_a_form_error_after_the_upload_leaves_no_object(
    client: Client, lo_count: Callable[[], int]
) -> None:
    before = lo_count()
    response = client.post(
        f"{ADD_URL}add/", {"file": SimpleUploadedFile("a.txt", b"abc"), "name": "x" * 300}
    )
    assert response.status_code == 200
    assert "at most 255 characters" in response.content.decode()
    assert not StoredFile.objects.exists()
    assert lo_count() == before


@override_settings(FILES_APP_MAX_UPLOAD_SIZE=10_000)
def test_an_upload_over_the_limit_is_413_and_leaves_nothing(
    client: Client, lo_count: Callable[[], int]
) -> None:
    before = lo_count()
    response = client.post(
        f"{ADD_URL}add/", {"file": SimpleUploadedFile("big.bin", b"x" * 50_000)}
    )
    assert response.status_code == 413
    assert "larger than the limit of 9.8\xa0KB" in response.content.decode()
    assert not StoredFile.objects.exists()
    assert lo_count() == before


@override_settings(FILES_APP_MAX_UPLOAD_SIZE=100_000)
def test_an_upload_under_the_limit_is_stored(client: Client) -> None:
    response = client.post(f"{ADD_URL}add/", {"file": SimpleUploadedFile("ok.bin", b"x" * 5000)})
    assert response.status_code == 302
    assert StoredFile.objects.get().size == 5000


def test_replacing_the_file_in_the_change_form(
    client: Client, lo_count: Callable[[], int]
) -> None:
    stored = _store(b"old", "old.txt")
    old_oid = stored.file.oid
    before = lo_count()
    change_url = f"{ADD_URL}{stored.pk}/change/"
    page = client.get(change_url)
    assert page.status_code == 200
    # "Currently" names the file and links to its download, not to its OID.
    current = re.search(r'Currently:\s*<a href="([^"]+)">([^<]+)</a>', page.content.decode())
    assert current is not None
    link, name = current.groups()
    assert name == "old.txt"
    # A signed URL for the admin's user: it downloads without the session.
    assert unescape(link).startswith("/files/signed/") and link.endswith("/old.txt")
    downloaded = Client().get(unescape(link))
    assert b"".join(downloaded.streaming_content) == b"old"  # type: ignore[attr-defined]
    response = client.post(
        change_url,
        {
            "file": SimpleUploadedFile("new.txt", b"new content", "text/plain"),
            "name": "old.txt",
            "content_type": "text/plain",
        },
    )
    assert response.status_code == 302, response.content[:3000]
    stored.refresh_from_db()
    assert (stored.name, stored.size) == ("new.txt", 11)
    assert not largeobjects.exists(old_oid, "default")
    assert lo_count() == before


def test_change_list_shows_files_totals_and_escapes_names(client: Client) -> None:
    _store(b"x" * 2048, "<img src=x onerror=alert(1)>.txt")
    _store(b"y" * 1024, "photo.png", public=True)
    page = client.get(ADD_URL).content.decode()
    assert "2 files, 3.0\xa0KB in total" in page
    assert "<img src=x onerror" not in page
    assert "&lt;img src=x onerror=alert(1)&gt;.txt" in page
    assert "photo.png" in page and "download</a>" in page
    filtered = client.get(ADD_URL, {"public__exact": "1"}).content.decode()
    assert "1 file, 1.0\xa0KB in total for this selection" in filtered
    searched = client.get(ADD_URL, {"q": "photo"}).content.decode()
    assert "1 file, 1.0\xa0KB in total for this selection" in searched


@pytest.mark.parametrize(
    ("content_type", "element"),
    [
        ("image/png", "<img"),
        ("video/mp4", "<video"),
        ("audio/mpeg", "<audio"),
        ("application/pdf", "<iframe"),
        ("text/plain", "<iframe"),
        ("image/svg+xml", "not previewed inline"),
        ("application/zip", "No preview"),
    ],
)
def test_change_form_previews_through_a_signed_url(
    client: Client, content_type: str, element: str
) -> None:
    stored = _store(b"content", "f", content_type=content_type)
    page = client.get(f"{ADD_URL}{stored.pk}/change/").content.decode()
    assert element in page
    if element.startswith("<"):
        # The preview plays and seeks by a signed URL: no session query per range.
        (src,) = re.findall(r'class="files-app-preview" src="([^"]+)"', page) or re.findall(
            r'<audio src="([^"]+)"', page
        )
        assert unescape(src).startswith("/files/signed/") and src.endswith("/f")
        preview = Client().get(unescape(src), headers={"Range": "bytes=1-3"})
        body = b"".join(preview.streaming_content)  # type: ignore[attr-defined]
        assert (preview.status_code, body) == (206, b"ont")


def test_make_public_and_private_actions(client: Client) -> None:
    files = [_store(), _store()]
    ids = [f.pk for f in files]
    client.post(ADD_URL, {"action": "make_public", "_selected_action": ids})
    assert StoredFile.objects.filter(public=True).count() == 2
    client.post(ADD_URL, {"action": "make_private", "_selected_action": ids})
    assert StoredFile.objects.filter(public=True).count() == 0


def test_share_link_action_makes_working_links(client: Client) -> None:
    stored = _store(b"secret bytes", "secret.txt")
    response = client.post(
        ADD_URL,
        {"action": "create_share_links", "_selected_action": [stored.pk], "expires_in": "3600"},
        follow=True,
    )
    page = response.content.decode()
    assert "valid for 1 hour" in page
    (link,) = re.findall(r'class="share-link" href="([^"]+)"', page)
    anonymous = Client()
    assert anonymous.get(f"/files/{stored.uuid}/secret.txt").status_code == 404
    shared = anonymous.get(link.removeprefix("http://testserver"))
    assert shared.status_code == 200
    assert b"".join(shared.streaming_content) == b"secret bytes"  # type: ignore[attr-defined]


def test_share_links_expire_and_resist_tampering() -> None:
    stored = _store(b"secret", "s.txt")
    anonymous = Client()
    expired = make_share_url(stored.uuid, "s.txt", timedelta(seconds=-1))
    response = anonymous.get(expired)
    assert response.status_code == 410
    assert b"secret" not in response.content
    valid = make_share_url(stored.uuid, "s.txt", timedelta(hours=1))
    token = valid.split("/")[-2]
    tampered = valid.replace(token, token[:-2] + ("AA" if token[-2:] != "AA" else "BB"))
    assert anonymous.get(tampered).status_code == 404
    assert anonymous.get("/files/share/garbage/s.txt").status_code == 404


def test_share_link_to_a_deleted_file_is_404() -> None:
    stored = _store()
    link = make_share_url(stored.uuid, "a.txt", timedelta(hours=1))
    stored.delete()
    assert Client().get(link).status_code == 404


def test_staff_without_permissions_cannot_see_the_admin_pages() -> None:
    staff = User.objects.create_user("staff", password="pw", is_staff=True)
    client = Client()
    client.force_login(staff)
    assert client.get(ADD_URL).status_code == 403


def test_the_add_form_offers_the_resumable_uploader(client: Client, settings: Any) -> None:
    page = client.get(f"{ADD_URL}add/").content.decode()
    assert 'data-endpoint="/files/uploads/"' in page
    assert "files_app/uppy/uppy.min.js" in page and "files_app/admin-uppy.js" in page
    assert 'id="id_file"' in page  # the plain form stays, for browsers without JavaScript
    # Where files_app.urls is not routed, there is no endpoint: the plain form alone.
    settings.ROOT_URLCONF = "tests.test_admin"
    page = client.get(f"{ADD_URL}add/").content.decode()
    assert "uppy" not in page and 'id="id_file"' in page


# HTML, both quotes, a newline, a right-to-left override and as long as a name may be.
HOSTILE = "\"'><script>alert(1)</script>\n<img src=x onerror=alert(2)>\u202etxt.exe "
HOSTILE += "&amp; long " * ((255 - len(HOSTILE)) // 11)
HOSTILE += "x" * (255 - len(HOSTILE))
RAW_MARKUP = ("<script>alert(1)", "<img src=x onerror")


def _links(url: str, html: str) -> set[str]:
    """Return the admin URLs that ``html`` (served at ``url``) links to."""
    found = set()
    for href in re.findall(r'href="([^"]*)"', html):
        target = urljoin(url, unescape(href)).partition("#")[0]
        if urlsplit(target).path.startswith("/admin/") and "/logout/" not in target:
            found.add(target)
    return found


def _assert_escaped(url: str, html: str) -> None:
    for markup in RAW_MARKUP:
        assert markup not in html, f"{url} shows the name unescaped"


def test_every_admin_page_of_a_file_with_a_hostile_name_is_200_and_escaped(
    client: Client, store: Callable[..., StoredFile]
) -> None:
    """Regression: the history page was a 500 (the change list's paginator on LogEntry)."""
    assert len(HOSTILE) == 255
    stored = store(b"hostile", name=HOSTILE)
    assert stored.name == HOSTILE
    change = f"{ADD_URL}{stored.pk}/change/"
    form = {"name": HOSTILE, "content_type": "text/plain", "public": "on"}
    assert client.post(change, form).status_code == 302  # an entry for the history page
    own = f"{ADD_URL}{stored.pk}/"
    # Crawl from the change list (plain and searched) and the change page: every admin
    # link they hold, and on, from the pages of this file and of the change list.
    seeds = [ADD_URL, f"{ADD_URL}?q={HOSTILE[:20]}", change]
    queue, seen, shown = list(seeds), set(seeds), []
    while queue:
        url = queue.pop(0)
        response = client.get(url, follow=True)  # "View on site" redirects to the file
        assert response.status_code == 200, url
        if response.streaming:
            assert urlsplit(response.redirect_chain[-1][0]).path == stored.get_absolute_url()
            assert b"".join(response.streaming_content) == b"hostile"  # type: ignore[attr-defined]
            continue
        html = response.content.decode()
        _assert_escaped(url, html)
        path, query = urlsplit(url).path, urlsplit(url).query
        if path.startswith(own) or url in seeds:
            shown.append(path)
            assert escape(HOSTILE[:60]) in html, f"{url} does not show the name"
        # Sorting and filter links of the change list lead to more of the same: visited,
        # not followed further. The searched list is followed: its links carry the search
        # (the name) on to the file's pages as "_changelist_filters".
        if path.startswith(ADD_URL) and not (path == ADD_URL and query and url not in seeds):
            for link in sorted(_links(url, html) - seen):
                seen.add(link)
                queue.append(link)
    for view in ("change/", "history/", "delete/"):
        assert f"{own}{view}" in shown, f"no link to {own}{view}"
    assert any("_changelist_filters=q" in link for link in seen)
    assert any("?public__exact=" in link for link in seen)  # the filters were visited
    assert f"{ADD_URL}add/" in seen
    # The pages that only a POST reaches: the bulk-delete confirmation, the actions.
    selected = {"_selected_action": [stored.pk], "index": "0"}
    confirm = client.post(ADD_URL, {**selected, "action": "delete_selected"})
    assert confirm.status_code == 200
    _assert_escaped("delete_selected", confirm.content.decode())
    assert escape(HOSTILE[:60]) in confirm.content.decode()
    for action in ("make_private", "make_public", "create_share_links"):
        done = client.post(ADD_URL, {**selected, "action": action}, follow=True)
        assert done.status_code == 200, action
        _assert_escaped(action, done.content.decode())
    assert escape(HOSTILE[:60]) in done.content.decode()  # the share links name the file
    # The upload pages: a file uploaded under that name, and the form it lands on.
    upload = client.post(
        f"{ADD_URL}add/", {"file": SimpleUploadedFile(HOSTILE, b"x", "text/plain")}, follow=True
    )
    assert upload.status_code == 200
    _assert_escaped("add", upload.content.decode())
    assert StoredFile.objects.get(pk=stored.pk).name == HOSTILE  # nothing changed it


urlpatterns = [path("admin/", admin.site.urls)]

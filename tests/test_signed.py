"""Signed URLs of private files (issue 24, point 1): a short-lived URL that downloads,
plays and seeks without a session, served by the lean path with one query and no user
query, revoked by the row's changes, answered by the view as the lean path would."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from django.contrib.auth.models import Permission, User
from django.core.files.base import ContentFile
from django.db import connection
from django.template import Context, Template
from django.test import Client, RequestFactory
from django.test.utils import CaptureQueriesContext
from pytest_django.fixtures import Settings as SettingsWrapper

from files_app.models import StoredFile
from files_app.sharing import (
    LinkState,
    SignedGrant,
    make_share_url,
    make_signed_url,
    read_signed_token,
)
from tests.lean import LEAN, spy_lean_answers

pytestmark = pytest.mark.django_db(transaction=True)

DATA = bytes(range(256)) * 64  # 16 KiB


@pytest.fixture
def owner() -> User:
    return User.objects.create_user("owner", password="x")


@pytest.fixture
def other() -> User:
    return User.objects.create_user("other", password="x")


def _body(response: Any) -> bytes:
    if hasattr(response, "streaming_content"):
        return b"".join(response.streaming_content)
    return bytes(response.content)


def test_a_signed_url_downloads_a_private_file_with_ranges_and_no_session(
    store: Callable[..., StoredFile], owner: User, door: str
) -> None:
    secret = store(DATA, "diary.bin", public=False, owner=owner)
    url = secret.signed_url(owner)
    assert url.startswith("/files/signed/") and url.endswith("/diary.bin")
    anonymous = Client()
    assert anonymous.get(secret.get_absolute_url()).status_code == 404  # private
    full = anonymous.get(url)
    assert (full.status_code, _body(full)) == (200, DATA)
    assert full["Cache-Control"] == "private, no-cache"
    assert full["ETag"] == secret.etag
    part = anonymous.get(url, headers={"Range": "bytes=100-199,-10"})
    assert part.status_code == 206
    assert part["Content-Type"].startswith("multipart/byteranges")
    body = _body(part)
    assert DATA[100:200] in body and DATA[-10:] in body
    assert anonymous.get(url, headers={"If-None-Match": secret.etag}).status_code == 304
    assert anonymous.head(url).status_code == 200


def test_the_lean_path_answers_with_one_query_and_asks_for_no_user(
    store: Callable[..., StoredFile],
    owner: User,
    settings: SettingsWrapper,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings.MIDDLEWARE = [LEAN, *settings.MIDDLEWARE]
    answers = spy_lean_answers(monkeypatch)
    secret = store(DATA, "diary.bin", public=False, owner=owner)
    url = secret.signed_url(owner)
    client = Client()
    client.force_login(owner)  # a session cookie too: the lean path never reads it
    for _ in range(2):  # the first request compiles the rule, the second reuses it
        with CaptureQueriesContext(connection) as queries:
            response = client.get(url, headers={"Range": "bytes=0-99"})
            assert _body(response) == DATA[:100]
        (query,) = queries.captured_queries
        assert "lo_open" in query["sql"] and "auth_user" not in query["sql"]
        assert "django_session" not in query["sql"]
    assert len(answers) == 2
    assert "vary" not in {name.lower() for name in response.headers}


GROUNDS = ["owner", "staff", "public"]


def _grounds(kind: str, owner: User, other: User) -> tuple[Any, StoredFile | None]:
    if kind == "owner":
        return owner, None
    if kind == "staff":
        other.user_permissions.add(Permission.objects.get(codename="view_storedfile"))
        return User.objects.get(pk=other.pk), None  # a fresh user: no permission cache
    return None, None  # anyone, for a public file


@pytest.mark.parametrize("grounds", GROUNDS)
def test_a_signed_url_follows_the_row_it_was_made_for(
    store: Callable[..., StoredFile], owner: User, other: User, door: str, grounds: str
) -> None:
    """Replaced, deleted or no longer visible on its grounds: 404, from both doors."""
    user, _ = _grounds(grounds, owner, other)
    stored = store(DATA, "a.bin", public=grounds == "public", owner=owner)
    url = stored.signed_url(user)
    anyone = Client()
    assert anyone.get(url).status_code == 200

    # Renamed: still the same file, under the name the URL was made with.
    StoredFile.objects.filter(pk=stored.pk).update(name="renamed.bin")
    assert anyone.get(url).status_code == 200

    # No longer visible on the URL's grounds: a public file made private, a private one
    # given to someone else. The staff's URL keeps working: their grounds still hold.
    if grounds == "public":
        StoredFile.objects.filter(pk=stored.pk).update(public=False)
    else:
        StoredFile.objects.filter(pk=stored.pk).update(
            owner=other if grounds == "owner" else owner
        )
    expected = 200 if grounds == "staff" else 404
    assert anyone.get(url).status_code == expected
    StoredFile.objects.filter(pk=stored.pk).update(public=True, owner=owner)
    assert anyone.get(url).status_code == 200

    # Replaced: the URL named the old content.
    stored.refresh_from_db()
    stored.file = ContentFile(b"new content", name="a.bin")
    stored.save()
    assert anyone.get(url).status_code == 404
    fresh = stored.signed_url(user)
    assert _body(anyone.get(fresh)) == b"new content"

    # Deleted.
    stored.delete()
    assert anyone.get(fresh).status_code == 404


def test_a_signed_url_made_for_someone_who_may_not_download_serves_nothing(
    store: Callable[..., StoredFile], owner: User, other: User, door: str
) -> None:
    secret = store(DATA, "a.bin", public=False, owner=owner)
    assert Client().get(secret.signed_url(other)).status_code == 404
    assert Client().get(secret.signed_url(None)).status_code == 404


def test_expired_tampered_and_renamed_urls(
    store: Callable[..., StoredFile], owner: User, door: str
) -> None:
    secret = store(DATA, "a.bin", public=False, owner=owner)
    client = Client()
    expired = secret.signed_url(owner, expires=timedelta(seconds=-1))
    gone = client.get(expired)
    assert (gone.status_code, gone.content) == (410, b"This link has expired.\n")
    url = secret.signed_url(owner, expires=60)
    token = url.split("/")[-2]
    assert client.get(url.replace(token, token[:-2] + "xx")).status_code == 404
    # The name is inside the signature: the same token under another name is nothing.
    assert client.get(url.replace("/a.bin", "/evil.html")).status_code == 404
    # A share link's token is not a signed URL's, nor the other way round.
    share = re.sub(r"/signed/", "/share/", url)
    assert client.get(share).status_code == 404


def test_the_grant_says_what_the_url_was_made_on(
    store: Callable[..., StoredFile], owner: User
) -> None:
    secret = store(DATA, "my diary.bin", public=False, owner=owner)
    before = time.time()
    url = secret.signed_url(owner, expires=120)
    state, grant = read_signed_token(url.split("/")[-2])
    assert state is LinkState.VALID and grant is not None
    assert (grant.uuid, grant.version, grant.name, grant.user, grant.every) == (
        secret.uuid,
        secret.sha256,
        "my diary.bin",
        str(owner.pk),
        False,
    )
    assert before + 119 <= grant.expires <= time.time() + 121


def test_the_default_lifetime_is_the_setting(
    store: Callable[..., StoredFile], owner: User, settings: SettingsWrapper
) -> None:
    settings.FILES_APP_SIGNED_URL_EXPIRY = 30
    url = store(DATA, "a.bin", owner=owner).signed_url(owner)
    _, grant = read_signed_token(url.split("/")[-2])
    assert grant is not None and grant.expires <= time.time() + 31


def test_a_hand_made_grant_for_another_file_serves_nothing(
    store: Callable[..., StoredFile], owner: User, door: str
) -> None:
    """A grant names its file's version: made (with the key) for one file's UUID and
    another's SHA-256, it matches neither row."""
    first = store(b"first", "a.bin", public=False, owner=owner)
    second = store(b"second", "b.bin", public=False, owner=owner)
    grant = SignedGrant(
        first.uuid, second.sha256, "a.bin", str(owner.pk), False, int(time.time()) + 60
    )
    assert Client().get(make_signed_url(grant)).status_code == 404


def test_the_template_tag_makes_urls_for_the_pages_user(
    store: Callable[..., StoredFile], owner: User
) -> None:
    secret = store(DATA, "a.bin", public=False, owner=owner)
    request = RequestFactory().get("/")
    request.user = owner
    template = Template(
        "{% load files_app %}{% signed_url file %}|{% signed_url file expires=5 as short %}"
        "{{ short }}"
    )
    url, short = template.render(Context({"file": secret, "request": request})).split("|")
    assert _body(Client().get(url)) == DATA
    _, grant = read_signed_token(short.split("/")[-2])
    assert grant is not None and grant.expires <= time.time() + 6
    # Without a user on the page, a URL serves public files only.
    anonymous = Template("{% load files_app %}{% signed_url file %}").render(
        Context({"file": secret})
    )
    assert Client().get(anonymous).status_code == 404


# FILES_APP_SIGNED_REDIRECT: a private file's own URL sends its user to a signed URL.


@pytest.fixture
def redirecting(settings: SettingsWrapper) -> SettingsWrapper:
    settings.FILES_APP_SIGNED_REDIRECT = True
    settings.FILES_APP_SIGNED_URL_EXPIRY = 600
    return settings


def _client_of(user: User) -> Client:
    client = Client()
    client.force_login(user)
    return client


def test_a_private_files_url_redirects_its_user_to_a_signed_url(
    store: Callable[..., StoredFile], owner: User, door: str, redirecting: SettingsWrapper
) -> None:
    secret = store(DATA, "diary.bin", public=False, owner=owner)
    client = _client_of(owner)
    for method in (client.get, client.head):
        moved = method(secret.get_absolute_url(), headers={"Range": "bytes=0-99"})
        assert moved.status_code == 302
        # Reusable by the browser alone, for half the URL's lifetime; another session
        # (another user) must not reuse it.
        assert moved["Cache-Control"] == "private, max-age=300"
        assert "Cookie" in moved["Vary"]
    location = moved["Location"]
    assert location.startswith("/files/signed/") and location.endswith("/diary.bin")
    _, grant = read_signed_token(location.split("/")[-2])
    assert grant is not None
    assert (grant.uuid, grant.user, grant.every) == (secret.uuid, str(owner.pk), False)
    assert time.time() + 590 < grant.expires <= time.time() + 601
    # The signed URL serves the ranges, without the session.
    part = Client().get(location, headers={"Range": "bytes=100-199"})
    assert (part.status_code, _body(part)) == (206, DATA[100:200])


def test_a_staff_user_is_redirected_on_the_permissions_grounds(
    store: Callable[..., StoredFile], owner: User, other: User, redirecting: SettingsWrapper
) -> None:
    secret = store(DATA, "a.bin", public=False, owner=owner)
    other.user_permissions.add(Permission.objects.get(codename="view_storedfile"))
    moved = _client_of(other).get(secret.get_absolute_url())
    assert moved.status_code == 302
    _, grant = read_signed_token(moved["Location"].split("/")[-2])
    assert grant is not None and (grant.user, grant.every) == (str(other.pk), True)


def test_who_may_not_download_is_not_redirected(
    store: Callable[..., StoredFile],
    owner: User,
    other: User,
    door: str,
    redirecting: SettingsWrapper,
) -> None:
    """The redirect comes after the access rule: anyone else still gets a 404, which says
    nothing of the file."""
    secret = store(DATA, "a.bin", public=False, owner=owner)
    assert Client().get(secret.get_absolute_url()).status_code == 404
    assert _client_of(other).get(secret.get_absolute_url()).status_code == 404


def test_public_files_shares_and_signed_urls_are_not_redirected(
    store: Callable[..., StoredFile], owner: User, door: str, redirecting: SettingsWrapper
) -> None:
    """A public file keeps its URL (anyone's, cached by anyone), even for a signed-in user;
    a share link and a signed URL serve the file themselves."""
    client = _client_of(owner)
    public = store(DATA, "open.bin", public=True, owner=owner)
    assert _body(client.get(public.get_absolute_url())) == DATA
    secret = store(DATA, "a.bin", public=False, owner=owner)
    share = make_share_url(secret.uuid, "a.bin", timedelta(minutes=5))
    for url in (share, secret.signed_url(owner)):
        assert (client.get(url).status_code, client.head(url).status_code) == (200, 200)


def test_the_redirect_is_off_unless_asked_for(
    store: Callable[..., StoredFile], owner: User, settings: SettingsWrapper
) -> None:
    from files_app.views import StoredFileView

    secret = store(DATA, "a.bin", public=False, owner=owner)
    request = RequestFactory().get(secret.get_absolute_url())
    request.user = owner
    kwargs = {"uuid": secret.uuid, "filename": "a.bin"}
    assert _body(StoredFileView.as_view()(request, **kwargs)) == DATA
    # A view of the project's may ask for it without the setting, or refuse it with it.
    assert StoredFileView.as_view(signed_redirect=True)(request, **kwargs).status_code == 302
    settings.FILES_APP_SIGNED_REDIRECT = True
    assert StoredFileView.as_view()(request, **kwargs).status_code == 302
    assert _body(StoredFileView.as_view(signed_redirect=False)(request, **kwargs)) == DATA


def test_the_setting_is_checked(settings: SettingsWrapper) -> None:
    from files_app.checks import check_settings

    settings.FILES_APP_SIGNED_REDIRECT = "yes"
    assert [error.id for error in check_settings()] == ["files_app.E013"]

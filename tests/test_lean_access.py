"""The lean path keeps the host's access rules (issue 21, point 4): a download URL that the
host routes to anything but the very view files_app.urls holds — decorated, wrapped,
subclassed, ``as_view(**kwargs)``, its own view — is answered by Django, and so is one
that a middleware's view rule (``LoginRequiredMiddleware``) covers.

Each case runs through every door: Django's handlers with the middleware (WSGI and ASGI)
and files_app's handlers before Django's (files_app.wsgi, files_app.asgi). Real servers:
test_servers.py.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from django.contrib.auth.decorators import login_not_required
from django.http import HttpRequest, HttpResponse, HttpResponseForbidden
from pytest_django.fixtures import Settings as SettingsWrapper

from files_app import urls as files_app_urls
from files_app.models import StoredFile
from files_app.sharing import make_share_url
from tests.lean import ENTRIES, LEAN, fetch
from tests.urls_wrapped import PASS_HEADER

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.urls("tests.urls_wrapped")]

DATA = b"a public file, for the host to guard\n"


@pytest.fixture
def public(store: Callable[..., StoredFile]) -> StoredFile:
    return store(DATA, "guarded.txt")


def _url(stored: StoredFile, kind: str) -> str:
    return f"/files/{stored.uuid}/{kind}/{stored.download_name}"


def _anonymous_login_redirect(status: int, location: str | None, path: str) -> bool:
    return status == 302 and location == f"/accounts/login/?next={path}"


# --- Decorated, wrapped and other views at files_app's URLs --------------------------------


@pytest.mark.parametrize("entry", ENTRIES)
@pytest.mark.parametrize("kind", ["login", "permission"])
def test_a_decorator_that_requires_a_login_is_kept(
    entry: str, kind: str, lean: None, lean_answers: list[str], public: StoredFile
) -> None:
    path = _url(public, kind)
    status, headers, body = fetch(entry, "GET", path, {"Range": "bytes=0-9"})
    assert _anonymous_login_redirect(status, headers.get("Location"), path), (status, body)
    assert lean_answers == []


@pytest.mark.parametrize("entry", ENTRIES)
def test_the_issues_login_required_route_before_the_include_is_kept(
    entry: str, lean: None, lean_answers: list[str], public: StoredFile
) -> None:
    path = public.get_absolute_url()  # /files/<uuid>/<name>: the host's login_required
    for method in ("GET", "HEAD"):
        status, headers, body = fetch(entry, method, path)
        assert _anonymous_login_redirect(status, headers.get("Location"), path), (status, body)
        assert DATA not in body
    assert lean_answers == []


@pytest.mark.parametrize("entry", ENTRIES)
def test_a_cache_control_decorator_is_kept(
    entry: str, lean: None, lean_answers: list[str], public: StoredFile
) -> None:
    status, headers, body = fetch(entry, "GET", _url(public, "cache"))
    assert (status, body) == (200, DATA)
    # The view answered: the host's Cache-Control, not the stock "public, max-age=300".
    cache_control = headers.get("Cache-Control") or ""
    assert set(cache_control.replace(" ", "").split(",")) == {"private", "max-age=7"}
    assert lean_answers == []


@pytest.mark.parametrize("entry", ENTRIES)
def test_a_hosts_own_wrapper_is_kept(
    entry: str, lean: None, lean_answers: list[str], public: StoredFile
) -> None:
    path = _url(public, "wrapper")
    assert fetch(entry, "GET", path)[0::2] == (403, b"No file without the pass.\n")
    assert fetch(entry, "GET", path, {PASS_HEADER: "yes"})[0::2] == (200, DATA)
    assert lean_answers == []


@pytest.mark.parametrize("entry", ENTRIES)
@pytest.mark.parametrize(
    ("kind", "body", "cache_control"),
    [
        ("host", b"the host's view\n", None),
        ("subclass", DATA, "public, max-age=9"),
        ("kwargs", DATA, "public, max-age=5"),
    ],
)
def test_another_view_at_the_url_answers(
    entry: str,
    kind: str,
    body: bytes,
    cache_control: str | None,
    lean: None,
    lean_answers: list[str],
    public: StoredFile,
) -> None:
    status, headers, got = fetch(entry, "GET", _url(public, kind))
    assert (status, got, headers.get("Cache-Control")) == (200, body, cache_control)
    assert lean_answers == []


@pytest.mark.parametrize("entry", ENTRIES)
def test_files_apps_own_views_are_still_lean_under_any_include(
    entry: str, lean: None, lean_answers: list[str], store: Callable[..., StoredFile]
) -> None:
    # A share link through files/ (files_app's own view; no host route covers it), and
    # a download through the second include, under the namespace "mirror".
    secret = store(b"shared", "shared.txt", public=False)
    public = store(DATA, "mirrored.txt")
    share = make_share_url(secret.uuid, secret.download_name, timedelta(hours=1))
    assert share.startswith("/files/share/")
    mirror = f"/mirror/{public.uuid}/{public.download_name}"
    assert fetch(entry, "GET", share)[0::2] == (200, b"shared")
    status, headers, body = fetch(entry, "GET", mirror)
    assert (status, body, headers.get("Vary")) == (200, DATA, None)
    assert lean_answers == [str(secret.uuid), str(public.uuid)]


# --- Middleware rules on views ---------------------------------------------------------------

LOGIN_REQUIRED = "django.contrib.auth.middleware.LoginRequiredMiddleware"


@pytest.fixture
def login_required_site(settings: SettingsWrapper) -> None:
    """Every view behind a login (Django 5.1+), but those marked login_not_required."""
    settings.ROOT_URLCONF = "tests.urls"
    settings.MIDDLEWARE = [LEAN, *settings.MIDDLEWARE, LOGIN_REQUIRED]


@pytest.mark.parametrize("entry", ENTRIES)
def test_login_required_middleware_is_kept(
    entry: str, login_required_site: None, lean_answers: list[str], public: StoredFile
) -> None:
    path = public.get_absolute_url()
    status, headers, body = fetch(entry, "GET", path)
    assert _anonymous_login_redirect(status, headers.get("Location"), path), (status, body)
    assert lean_answers == []


def test_login_not_required_on_files_apps_view_lets_the_lean_path_answer(
    login_required_site: None,
    lean_answers: list[str],
    public: StoredFile,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # What a host's login_not_required(view) does to files_app's own callable, undone after.
    (download,) = [p for p in files_app_urls.urlpatterns if p.name == "download"]
    monkeypatch.setattr(download.callback, "login_required", False, raising=False)
    assert login_not_required(download.callback) is download.callback  # the same mark
    assert fetch("wsgi-handler", "GET", public.get_absolute_url())[0::2] == (200, DATA)
    assert lean_answers == [str(public.uuid)]


class DenyingViewRuleMiddleware:
    """A host's rule on views (process_view) that refuses every download."""

    def __init__(self, get_response: Callable[[HttpRequest], Any]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> Any:
        return self.get_response(request)

    def process_view(self, request: HttpRequest, *args: Any) -> HttpResponse:
        return HttpResponseForbidden("Refused by the host's view rule.\n")


class RequirePassMiddleware:
    """A host's rule on every request, put ahead of FileServingMiddleware."""

    def __init__(self, get_response: Callable[[HttpRequest], Any]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> Any:
        if request.headers.get(PASS_HEADER) != "yes":
            return HttpResponseForbidden("No request without the pass.\n")
        return self.get_response(request)


@pytest.mark.parametrize("entry", ENTRIES)
def test_any_other_view_rule_of_a_middleware_is_kept(
    entry: str, settings: SettingsWrapper, lean_answers: list[str], public: StoredFile
) -> None:
    settings.ROOT_URLCONF = "tests.urls"
    rule = f"{__name__}.DenyingViewRuleMiddleware"
    settings.MIDDLEWARE = [LEAN, *settings.MIDDLEWARE, rule]
    status, _, body = fetch(entry, "GET", public.get_absolute_url())
    assert (status, body) == (403, b"Refused by the host's view rule.\n")
    assert lean_answers == []


@pytest.mark.parametrize("entry", ENTRIES)
def test_a_middleware_ahead_of_the_lean_one_runs_first_at_every_door(
    entry: str, settings: SettingsWrapper, lean_answers: list[str], public: StoredFile
) -> None:
    # files_app's handlers answer before any middleware; with one they cannot stand in
    # for ahead of FileServingMiddleware, they leave the request to Django's handler.
    settings.ROOT_URLCONF = "tests.urls"
    settings.MIDDLEWARE = [f"{__name__}.RequirePassMiddleware", LEAN, *settings.MIDDLEWARE]
    path = public.get_absolute_url()
    assert fetch(entry, "GET", path)[0::2] == (403, b"No request without the pass.\n")
    assert lean_answers == []
    assert fetch(entry, "GET", path, {PASS_HEADER: "yes"})[0::2] == (200, DATA)
    assert lean_answers == [str(public.uuid)]  # by the middleware, after the host's rule


class WrappedURLconfMiddleware:
    """A host's per-request URLconf (as django-hosts sets one), ahead of the lean path."""

    def __init__(self, get_response: Callable[[HttpRequest], Any]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> Any:
        request.urlconf = "tests.urls_wrapped"  # type: ignore[attr-defined]
        return self.get_response(request)


@pytest.mark.parametrize("entry", ENTRIES)
def test_a_urlconf_set_by_a_middleware_is_the_one_that_routes(
    entry: str, settings: SettingsWrapper, lean_answers: list[str], public: StoredFile
) -> None:
    settings.ROOT_URLCONF = "tests.urls"  # where the stock view would answer
    middleware = f"{__name__}.WrappedURLconfMiddleware"
    settings.MIDDLEWARE = [middleware, LEAN, *settings.MIDDLEWARE]
    path = public.get_absolute_url()
    status, headers, body = fetch(entry, "GET", path)
    assert _anonymous_login_redirect(status, headers.get("Location"), path), (status, body)
    assert lean_answers == []

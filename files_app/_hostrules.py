"""The host's rules that the lean path (files_app.fastpath) must keep although it answers
before them: its URLconf, its middleware's view rules and its security headers.

- A URL is the lean path's only where the host routes it to the very callable that
  files_app.urls holds. ``view_class`` is no proof: ``functools.wraps`` copies it onto
  every decorator (``login_required``, ``permission_required``, ``cache_control``, a
  host's own wrapper), and a host's subclass or ``as_view(**kwargs)`` is another view.
- A middleware's ``process_view`` is a rule on views (``LoginRequiredMiddleware`` is
  one) and runs after every middleware's ``__call__``, so after the lean path answered:
  where one could apply, Django answers.
- The views' answers pass through SecurityMiddleware, XFrameOptionsMiddleware and (Django
  6) ContentSecurityPolicyMiddleware wherever they are in ``MIDDLEWARE``; the lean path
  adds the headers they would add, by asking them (:func:`security_headers`).
- files_app.wsgi and files_app.asgi answer before Django's handler, so before the
  middleware listed ahead of FileServingMiddleware too: only if those are ones whose work
  the lean path does itself or that leave file answers alone (:func:`handler_may_answer`).

Internal to files_app, not part of its public API (docs/reference.md, "Public API").
"""

from __future__ import annotations

import functools
import uuid
from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.middleware.csrf import CsrfViewMiddleware
from django.urls import NoReverseMatch, Resolver404, URLPattern, get_resolver, resolve, reverse
from django.utils.module_loading import import_string

LEAN_MIDDLEWARE = "files_app.middleware.FileServingMiddleware"


def lean_path_on() -> bool:
    """Return whether the lean path is on: ``FileServingMiddleware`` in ``MIDDLEWARE``."""
    return LEAN_MIDDLEWARE in settings.MIDDLEWARE


_STOCK_NAMES = ("download", "share", "signed", "link")
_ZERO = uuid.UUID(int=0)
# Middleware that add headers to every answer, each only where the answer has none yet.
_HEADER_MIDDLEWARE = (
    "django.middleware.security.SecurityMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django.middleware.csp.ContentSecurityPolicyMiddleware",  # Django 6.0+
)
# Middleware that may come before FileServingMiddleware under files_app.wsgi/asgi: the lean
# path does their work (headers, SecurityMiddleware's HTTPS redirect: it leaves those
# requests to Django), or they leave its answers alone: GZipMiddleware skips short and
# LargeObjectResponse bodies, DatabaseUnavailableMiddleware acts on the views' errors,
# whitenoise answers below STATIC_URL only.
_BEFORE_HANDLER_OK = (
    *_HEADER_MIDDLEWARE,
    "django.middleware.gzip.GZipMiddleware",
    "files_app.middleware.DatabaseUnavailableMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
)


@functools.lru_cache(maxsize=16)
def prefixes(urlconf: Any, script_prefix: str) -> tuple[str, ...]:
    """Return the path_info prefixes of files_app's download and share URLs, in every
    instance of its namespace (a URLconf may include files_app.urls more than once)."""
    instances = get_resolver(urlconf).app_dict.get("files_app", [])
    found: list[str] = []
    for namespace in dict.fromkeys(["files_app", *instances]):
        for name, kwargs, marker in (
            ("download", {"uuid": _ZERO, "filename": "f"}, str(_ZERO)),
            ("share", {"token": "t", "filename": "f"}, "t/f"),
            ("signed", {"token": "t", "filename": "f"}, "t/f"),
            ("link", {"token": "t", "filename": "f"}, "t/f"),
        ):
            try:
                url = reverse(f"{namespace}:{name}", kwargs=kwargs, urlconf=urlconf)
            except NoReverseMatch:
                continue
            found.append("/" + url[len(script_prefix) : url.rindex(marker)])
    return tuple(dict.fromkeys(found))


@functools.lru_cache(maxsize=4096)
def route(urlconf: Any, path_info: str) -> tuple[str, str, str] | None:
    """Return ("download", uuid, filename), or ("share" | "signed" | "link", token,
    filename), if ``path_info`` goes to the very view that files_app.urls holds, and no
    middleware's view rule applies to it.

    Cached: players and download managers ask for the same URL again and again.
    """
    try:
        match = resolve(path_info, urlconf)
    except Resolver404:
        return None
    kind = stock_view(match.func)
    if kind is None or not view_rules_allow(match.func):
        return None
    key = str(match.kwargs["uuid" if kind == "download" else "token"])
    return kind, key, str(match.kwargs["filename"])


def stock_view(func: Callable[..., Any]) -> str | None:
    """Return "download", "share", "signed" or "link" if ``func`` is the very view
    files_app.urls routes there (``include("files_app.urls")``, once or more, under any
    namespace)."""
    from files_app import urls

    for pattern in urls.urlpatterns:
        if isinstance(pattern, URLPattern) and pattern.callback is func:
            return pattern.name if pattern.name in _STOCK_NAMES else None
    return None


@functools.cache
def _middleware() -> tuple[tuple[str, Any], ...]:
    # Classes, or the factory functions Django also accepts.
    return tuple((path, import_string(path)) for path in settings.MIDDLEWARE)


def view_rules_allow(func: Callable[..., Any]) -> bool:
    """Return whether no middleware's ``process_view`` could answer for ``func``:
    CsrfViewMiddleware exempts files_app's views, LoginRequiredMiddleware only those
    marked ``login_not_required``; any other rule is left to Django."""
    from django.contrib.auth.middleware import LoginRequiredMiddleware

    for _, middleware in _middleware():
        process_view = getattr(middleware, "process_view", None)
        if process_view is None or process_view is CsrfViewMiddleware.process_view:
            continue
        if process_view is LoginRequiredMiddleware.process_view:
            if getattr(func, "login_required", True):
                return False
            continue
        return False
    return True


@functools.cache
def handler_may_answer() -> bool:
    """Return whether files_app.wsgi/asgi may answer before Django's handler: every
    middleware ahead of FileServingMiddleware is one the lean path stands in for."""
    for path, middleware in _middleware():
        if path == LEAN_MIDDLEWARE:
            return True
        name = f"{middleware.__module__}.{getattr(middleware, '__qualname__', '')}"
        if name not in _BEFORE_HANDLER_OK:
            return False
    return False


class _Probe(HttpRequest):
    def __init__(self, secure: bool) -> None:
        super().__init__()
        self._secure = secure

    def is_secure(self) -> bool:
        return self._secure


def _header_middleware() -> tuple[type[Any], ...]:
    from django.middleware.clickjacking import XFrameOptionsMiddleware
    from django.middleware.security import SecurityMiddleware

    try:
        csp = import_string("django.middleware.csp.ContentSecurityPolicyMiddleware")
    except ImportError:  # Django before 6.0
        return SecurityMiddleware, XFrameOptionsMiddleware
    return SecurityMiddleware, XFrameOptionsMiddleware, csp


@functools.cache
def security_headers(secure: bool) -> tuple[tuple[str, str], ...]:
    """Return the headers that the security middleware in ``MIDDLEWARE`` add to an answer
    without them, over HTTPS or not: nosniff, Referrer-Policy, Cross-Origin-Opener-Policy,
    Strict-Transport-Security, X-Frame-Options, Content-Security-Policy(-Report-Only)."""
    known = _header_middleware()
    probe = _Probe(secure)
    response = HttpResponse()
    plain = set(response.headers)
    # In the order their process_response() runs: the last in MIDDLEWARE first.
    for _, middleware in reversed(_middleware()):
        if isinstance(middleware, type) and issubclass(middleware, known):
            middleware(_never).process_response(probe, response)
    return tuple((name, value) for name, value in response.items() if name not in plain)


def _never(request: HttpRequest) -> HttpResponse:
    raise AssertionError("A header probe never calls the next middleware.")


def forget() -> None:
    """Forget what was read from the settings (tests change them; a server never does)."""
    _middleware.cache_clear()
    prefixes.cache_clear()
    route.cache_clear()
    handler_may_answer.cache_clear()
    security_headers.cache_clear()

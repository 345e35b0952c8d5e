"""Middleware: files served before the rest of Django's stack, and a 503 with Retry-After
while the database cannot be reached."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction, sync_to_async
from django.core.exceptions import DisallowedHost
from django.db import InterfaceError, OperationalError
from django.http import HttpRequest, HttpResponse, HttpResponseBase

from files_app import fastpath
from files_app.firstread import Headers
from files_app.outage import RETRY_AFTER, unavailable

__all__ = ["DatabaseUnavailableMiddleware", "FileServingMiddleware"]

logger = logging.getLogger("files_app")


def _host(request: HttpRequest) -> str | None:
    try:
        return request.get_host()
    except DisallowedHost:
        return None


def _header_getter(request: HttpRequest) -> Headers:
    meta = request.META

    def header(name: str) -> str | None:
        value = meta.get("HTTP_" + name.upper().replace("-", "_"))
        return None if value is None else str(value)

    return header


class FileServingMiddleware:
    """Serve public files and share links before the rest of the middleware and the view.

    In the manner of whitenoise's ``WhiteNoiseMiddleware``: put it right after
    ``SecurityMiddleware``. A GET or HEAD of files_app's download or share URL, routed to
    the very view files_app.urls holds, is answered here with one query and the same
    status, headers and bytes as the view (files_app.fastpath says what it leaves to the
    view: private files, expired links, a view the host decorated, and the rest). The
    middleware after it does not run for those responses; the headers of Django's security
    middleware (``SecurityMiddleware``, ``XFrameOptionsMiddleware``, Django 6's
    ``ContentSecurityPolicyMiddleware``) are added anyway, from the same settings, wherever
    they are in ``MIDDLEWARE``. Under files_app's handlers (files_app.wsgi, files_app.asgi)
    the same requests are answered before Django's handler, if only middleware the lean
    path stands in for come before this one (files_app._hostrules).
    """

    sync_capable = True
    async_capable = True

    #: Seconds a client is asked to wait while the database is down.
    retry_after = RETRY_AFTER

    def __init__(self, get_response: Callable[[HttpRequest], Any]) -> None:
        self.get_response = get_response
        self.is_async = iscoroutinefunction(get_response)
        if self.is_async:
            markcoroutinefunction(self)

    def __call__(self, request: HttpRequest) -> Any:
        if self.is_async:
            return self.__acall__(request)
        target = self._target(request)
        if target is None:
            return self.get_response(request)
        try:
            answer = fastpath.serve(str(request.method), _header_getter(request), target)
        except (OperationalError, InterfaceError) as exc:
            return self._unavailable(request, exc, target)
        if answer is None:
            return self.get_response(request)
        return _response(answer, request)

    async def __acall__(self, request: HttpRequest) -> HttpResponseBase:
        target = self._target(request)
        if target is None:
            return await self.get_response(request)  # type: ignore[no-any-return]
        try:
            answer = await serve_from_event_loop(
                str(request.method), _header_getter(request), target
            )
        except (OperationalError, InterfaceError) as exc:
            return self._unavailable(request, exc, target)
        if answer is None:
            return await self.get_response(request)  # type: ignore[no-any-return]
        return _response(answer, request)

    @staticmethod
    def _target(request: HttpRequest) -> fastpath.Target | None:
        if request.method not in ("GET", "HEAD"):
            return None
        return fastpath.find_target(
            request.path_info,
            _host(request),
            request.is_secure(),
            urlconf=getattr(request, "urlconf", None),  # a middleware's, as Django's handler
        )

    def _unavailable(
        self, request: HttpRequest, exc: Exception, target: fastpath.Target
    ) -> HttpResponseBase:
        answer = fastpath.unavailable(
            str(request.method), request.path, exc, target, self.retry_after
        )
        return _response(answer, request)


async def serve_from_event_loop(method: str, header: Headers, target: fastpath.Target) -> Any:
    """Serve on the event loop with the async pool, or else in a worker thread."""
    from files_app import largeobjects_async

    if largeobjects_async.available():
        return await fastpath.aserve(method, header, target)
    # psycopg2, or no psycopg-pool: Django's connection in a worker thread.
    return await sync_to_async(fastpath.serve, thread_sensitive=True)(
        method, header, target, asgi=True
    )


def _response(answer: fastpath.Answer, request: HttpRequest) -> HttpResponseBase:
    """Return the Django response the view would have made for ``answer``."""
    from files_app.views import file_response

    return file_response(request, answer.status, answer.headers, answer.body)


class DatabaseUnavailableMiddleware:
    """Turn a view's database connection error into a short 503 with ``Retry-After``.

    Without it, a stopped PostgreSQL is a 500 (or, with ``DEBUG``, the debug page) after
    whatever the driver or the connection pool waited. Put it first in ``MIDDLEWARE``.
    Errors after a response started streaming cannot be answered: that body ends short.
    """

    #: Seconds a client is asked to wait before trying again.
    retry_after = RETRY_AFTER

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Callable[[HttpRequest], Any]) -> None:
        self.get_response = get_response
        if iscoroutinefunction(get_response):
            markcoroutinefunction(self)

    def __call__(self, request: HttpRequest) -> Any:
        # Under ASGI get_response is a coroutine function and this returns its coroutine:
        # no thread hand-off. Django's handler calls process_exception() either way.
        return self.get_response(request)

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        if not isinstance(exception, OperationalError | InterfaceError):
            return None
        return unavailable(str(request.method), request.path, exception, self.retry_after)

"""Middleware: answer 503 with Retry-After while the database cannot be reached."""

from __future__ import annotations

import logging
from collections.abc import Callable

from django.db import InterfaceError, OperationalError
from django.http import HttpRequest, HttpResponse, HttpResponseBase

__all__ = ["DatabaseUnavailableMiddleware"]

logger = logging.getLogger("files_app")


class DatabaseUnavailableMiddleware:
    """Turn a view's database connection error into a short 503 with ``Retry-After``.

    Without it, a stopped PostgreSQL is a 500 (or, with ``DEBUG``, the debug page) after
    whatever the driver or the connection pool waited. Put it first in ``MIDDLEWARE``.
    Errors after a response started streaming cannot be answered: that body ends short.
    """

    #: Seconds a client is asked to wait before trying again.
    retry_after = 5

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponseBase]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponseBase:
        return self.get_response(request)

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        if not isinstance(exception, OperationalError | InterfaceError):
            return None
        logger.error(
            "Database unavailable while serving %s %s: %s",
            request.method,
            request.path,
            str(exception).strip().splitlines()[0] if str(exception).strip() else exception,
        )
        response = HttpResponse(
            "Service unavailable: the database cannot be reached. Try again in a few seconds.\n",
            status=503,
            content_type="text/plain; charset=utf-8",
        )
        response["Retry-After"] = str(self.retry_after)
        response["Cache-Control"] = "no-store"
        return response

"""A WSGI handler that answers public files and share links before Django's handler.

With :class:`files_app.middleware.FileServingMiddleware` in ``MIDDLEWARE``, the requests
of files_app.fastpath's lean path are answered here, without building a Django request,
sending the request signals or running any middleware (so only while the middleware ahead
of FileServingMiddleware are ones the lean path stands in for, such as
``SecurityMiddleware``); everything else goes to Django's
:class:`~django.core.handlers.wsgi.WSGIHandler` as usual (and, if it reaches the middleware,
is answered there the same way). The counterpart of files_app.asgi's handler.

Use it in ``wsgi.py``::

    from files_app.wsgi import get_wsgi_application

    application = get_wsgi_application()
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from http import HTTPStatus
from typing import Any

import django
from django.core.handlers.wsgi import WSGIHandler, get_path_info, get_script_name
from django.db import InterfaceError, OperationalError, connections
from django.urls import set_script_prefix

from files_app import _hostrules, fastpath

__all__ = ["get_wsgi_application"]

logger = logging.getLogger("files_app")


class FilesWSGIHandler(WSGIHandler):
    """Django's WSGI handler, with files_app's lean path in front of it."""

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        if _hostrules.lean_path_on():
            served = self.serve_file(environ, start_response)
            if served is not None:
                return served
        return super().__call__(environ, start_response)

    def serve_file(
        self, environ: dict[str, Any], start_response: Callable[..., Any]
    ) -> Iterable[bytes] | None:
        """Answer a request of the lean path; None if it is not one (Django answers it)."""
        method = environ.get("REQUEST_METHOD", "")
        if method not in ("GET", "HEAD"):
            return None
        set_script_prefix(get_script_name(environ))

        def header(name: str) -> str | None:
            value = environ.get("HTTP_" + name.upper().replace("-", "_"))
            return None if value is None else str(value)

        scheme = str(environ.get("wsgi.url_scheme", "http"))
        server = f"{environ.get('SERVER_NAME', '')}:{environ.get('SERVER_PORT', '')}"
        target = fastpath.find_target(
            get_path_info(environ) or "/",
            fastpath.request_host(header, server),
            fastpath.request_is_secure(header, scheme),
            before_django=True,
        )
        if target is None:
            return None
        connection = connections[target.using]
        # What Django's request_started and request_finished signals do for a connection.
        connection.close_if_unusable_or_obsolete()
        try:
            answer = fastpath.serve(method, header, target)
        except (OperationalError, InterfaceError) as exc:
            from files_app.outage import RETRY_AFTER, unavailable

            connection.close_if_unusable_or_obsolete()
            path = f"{environ.get('SCRIPT_NAME', '')}{environ.get('PATH_INFO', '')}"
            response = unavailable(method, path, exc, RETRY_AFTER)
            answer = fastpath.Answer(503, list(response.items()), [response.content])
            answer.add_absent(target.headers)
        if answer is None:
            return None
        status = HTTPStatus(answer.status)
        start_response(f"{status.value} {status.phrase}", answer.headers)
        if isinstance(answer.body, list):
            connection.close_if_unusable_or_obsolete()
            return answer.body
        assert isinstance(answer.body, Iterator)
        return _Body(answer.body, connection.close_if_unusable_or_obsolete)


class _Body:
    """A streamed body that, once the server closes it, lets the connection go."""

    def __init__(self, chunks: Iterator[bytes], release: Callable[[], None]) -> None:
        self._chunks = chunks
        self._release = release

    def __iter__(self) -> Iterator[bytes]:
        return self._chunks

    def close(self) -> None:
        try:
            close = getattr(self._chunks, "close", None)
            if close is not None:
                close()
        finally:
            self._release()


def get_wsgi_application() -> FilesWSGIHandler:
    """Like :func:`django.core.wsgi.get_wsgi_application`, with files_app's lean path."""
    django.setup(set_prefix=False)
    return FilesWSGIHandler()

"""The doors of a download, called in-process: Django's handlers with the middleware (the
test clients, WSGI and ASGI) and files_app's handlers that answer before Django's
(files_app.wsgi, files_app.asgi), as a server would call them.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Sequence
from typing import Any
from urllib.parse import unquote
from wsgiref.util import setup_testing_defaults

from asgiref.sync import async_to_sync
from django.http import StreamingHttpResponse
from django.test import AsyncClient, Client

from files_app import largeobjects_async
from files_app.asgi import StreamingASGIHandler
from files_app.wsgi import FilesWSGIHandler
from tests.rangecases import Headers

LEAN = "files_app.middleware.FileServingMiddleware"
#: Django's handler with the middleware (WSGI, ASGI), files_app's handler (WSGI, ASGI).
ENTRIES = ("client", "async-client", "wsgi-handler", "asgi-handler")
Reply = tuple[int, Headers, bytes]
Request = tuple[str, str, dict[str, str]]  # method, path, headers


def client(method: str, path: str, headers: dict[str, str], *, secure: bool = False) -> Reply:
    """Ask through Django's WSGI handler and the whole MIDDLEWARE (the test client)."""
    response = Client().generic(method, path, headers=headers, secure=secure)
    if isinstance(response, StreamingHttpResponse):
        body = b"".join(response)
    else:
        body = bytes(response.content)
    return response.status_code, Headers(response.headers.items()), body


def wsgi_handler(
    method: str, path: str, headers: dict[str, str], *, secure: bool = False
) -> Reply:
    """Call files_app.wsgi's handler directly, as a WSGI server would."""
    environ: dict[str, Any] = {
        "REQUEST_METHOD": method,
        "PATH_INFO": unquote(path).encode().decode("latin-1"),
        "HTTP_HOST": "testserver",
        "wsgi.url_scheme": "https" if secure else "http",
        **{"HTTP_" + name.upper().replace("-", "_"): value for name, value in headers.items()},
    }
    setup_testing_defaults(environ)
    started: list[tuple[str, list[tuple[str, str]]]] = []

    def start_response(status: str, response_headers: list[tuple[str, str]]) -> None:
        started.append((status, response_headers))

    body = FilesWSGIHandler()(environ, start_response)
    try:
        data = b"".join(body)
    finally:
        close = getattr(body, "close", None)
        if close is not None:
            close()
    status, response_headers = started[0]
    return int(status.split()[0]), Headers(response_headers), data


def request_scope(
    method: str, path: str, headers: dict[str, str], *, secure: bool = False
) -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "https" if secure else "http",
        "path": unquote(path),
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [
            (b"host", b"testserver"),
            *(
                (name.lower().encode("latin-1"), value.encode("latin-1"))
                for name, value in headers.items()
            ),
        ],
        "client": ("127.0.0.1", 4321),
        "server": ("testserver", 443 if secure else 80),
    }


async def asgi(
    app: Any, method: str, path: str, headers: dict[str, str], *, secure: bool = False
) -> Reply:
    """Call an ASGI application directly, as a server would."""
    sent: list[dict[str, Any]] = []
    requested = False
    never = asyncio.get_running_loop().create_future()

    async def receive() -> dict[str, Any]:
        nonlocal requested
        if not requested:
            requested = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await never  # the client stays
        raise AssertionError("unreachable")

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(request_scope(method, path, headers, secure=secure), receive, send)
    start = next(message for message in sent if message["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    assert not sent[-1].get("more_body", False), "the body never ended"
    pairs = [(name.decode("latin-1"), value.decode("latin-1")) for name, value in start["headers"]]
    return start["status"], Headers(pairs), body


async def async_client(
    method: str, path: str, headers: dict[str, str], *, secure: bool = False
) -> Reply:
    """Ask through Django's ASGI handler and the whole MIDDLEWARE (the async test client)."""
    response = await AsyncClient().generic(method, path, headers=headers, secure=secure)
    if not isinstance(response, StreamingHttpResponse):
        body = bytes(response.content)
    elif hasattr(response.streaming_content, "__aiter__"):
        body = b"".join([chunk async for chunk in response.streaming_content])
    else:
        body = b"".join(response.streaming_content)
    return response.status_code, Headers(response.headers.items()), body


def fetch_all(entry: str, requests: Sequence[Request], *, secure: bool = False) -> list[Reply]:
    """Send ``requests`` one after the other through ``entry`` (one of :data:`ENTRIES`)."""
    if entry == "client":
        return [client(*request, secure=secure) for request in requests]
    if entry == "wsgi-handler":
        return [wsgi_handler(*request, secure=secure) for request in requests]
    app = StreamingASGIHandler()

    async def run() -> list[Reply]:
        try:
            if entry == "asgi-handler":
                return [await asgi(app, *request, secure=secure) for request in requests]
            assert entry == "async-client", entry
            return [await async_client(*request, secure=secure) for request in requests]
        finally:
            await largeobjects_async.close_pools()

    return async_to_sync(run)()


def fetch(
    entry: str, method: str, path: str, headers: dict[str, str] | None = None, **kwargs: Any
) -> Reply:
    """Send one request through ``entry``."""
    return fetch_all(entry, [(method, path, headers or {})], **kwargs)[0]


def normalized(reply: Reply) -> tuple[int, dict[str, str], bytes]:
    """The reply with its headers by lower-case name and its multipart boundary (random
    per response) replaced."""
    status, headers, body = reply
    values = dict(headers._values)
    match = re.search(r"boundary=(\S+)", values.get("content-type", ""))
    if match:
        values["content-type"] = values["content-type"].replace(match[1], "BOUNDARY")
        body = body.replace(match[1].encode(), b"BOUNDARY")
    return status, values, body


def spy_lean_answers(monkeypatch: Any) -> list[str]:
    """Record each answer the lean path planned (a spy: the real code runs); return the
    list it grows."""
    from files_app import fastpath

    planned = fastpath._planned
    answers: list[str] = []

    def spy(*args: Any, **kwargs: Any) -> Any:
        result = planned(*args, **kwargs)
        if result is not None:
            answers.append(str(args[2].key))  # the target
        return result

    monkeypatch.setattr(fastpath, "_planned", spy)
    return answers

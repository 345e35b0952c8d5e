"""An ASGI handler that streams large request bodies to Django instead of spooling them.

Django's :class:`~django.core.handlers.asgi.ASGIHandler` reads the whole request body
before the view runs, into a ``SpooledTemporaryFile`` that rolls over to disk past
``FILE_UPLOAD_MAX_MEMORY_SIZE``: a 2 GiB upload is first written to a 2 GiB temporary
file, and only then do the upload handlers see it. Under WSGI, the upload handlers read
the socket as the bytes arrive.

:class:`StreamingASGIHandler` gives ASGI the WSGI behaviour for the bodies Django would
have put on disk (a ``Content-Length`` above ``FILE_UPLOAD_MAX_MEMORY_SIZE``):
the request's stream pulls ASGI ``http.request`` messages as the view's code reads it, so
:class:`~files_app.uploadhandler.LargeObjectUploadHandler` writes each chunk into the
database as it arrives and nothing is held in memory or on disk. Smaller bodies are read
first, as Django does. A body of unknown length (``Transfer-Encoding: chunked`` without
``Content-Length``), which Django reads as empty anyway, is answered ``411 Length
Required`` before a byte of it is read: Django's handler would spool all of it to disk.

Sync code (every Django view, the admin, forms, middleware) runs in a worker thread under
ASGI and reads a streamed body from there. Async code must not read a streamed body on
the event loop: it gets a ``RuntimeError`` saying so (wrap the read in ``sync_to_async``).

This overrides three methods of Django's handler that are not public API (``handle``,
``read_body``, ``listen_for_disconnect``). Where :func:`supported` finds them changed,
bodies are read as Django reads them, with one warning; tests/test_internals.py fails.

Use it in ``asgi.py``::

    from files_app.asgi import get_asgi_application

    application = get_asgi_application()
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import io
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from contextlib import suppress
from typing import Any

import django
from django.conf import settings
from django.core.exceptions import RequestAborted
from django.core.handlers.asgi import ASGIHandler, get_script_prefix
from django.db import InterfaceError, OperationalError
from django.urls import set_script_prefix

__all__ = ["get_asgi_application"]

logger = logging.getLogger("files_app")

Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]


# The coroutine methods of Django's ASGIHandler that StreamingASGIHandler overrides, with
# their parameters, and the calls of them that must stay in Django's code: handle() hands
# its ``receive`` (our _Channel) to read_body() and to listen_for_disconnect().
_OVERRIDDEN = {
    "handle": ["self", "scope", "receive", "send"],
    "read_body": ["self", "receive"],
    "listen_for_disconnect": ["self", "receive"],
}
_CALLS = {
    "__call__": ["self.handle(scope, receive, send)"],
    "handle": ["self.read_body(receive)", "self.listen_for_disconnect(receive)"],
}


@functools.cache
def supported() -> bool:
    """Return whether Django's ASGIHandler has the internals StreamingASGIHandler overrides.

    Django offers no public way to read a request's body as it arrives under ASGI.
    """
    for name, parameters in _OVERRIDDEN.items():
        method = getattr(ASGIHandler, name, None)
        if not inspect.iscoroutinefunction(method):
            return False
        if list(inspect.signature(method).parameters) != parameters:
            return False
    try:
        sources = {name: inspect.getsource(getattr(ASGIHandler, name)) for name in _CALLS}
    except (OSError, TypeError):  # no source to read
        return False
    return all(call in sources[name] for name, calls in _CALLS.items() for call in calls)


class ASGIBodyStream(io.RawIOBase):
    """A readable binary stream over the ``http.request`` messages of one request.

    Reads block the calling thread until the event loop has received the next message;
    the end of the body, or a client disconnect, reads as end of file (as a WSGI
    server's input stream does). :attr:`done` is set once no more messages belong to
    the body.
    """

    def __init__(self, receive: Receive, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__()
        self._receive = receive
        self._loop = loop
        self._pending = memoryview(b"")  # slices of a memoryview copy nothing
        self.done = asyncio.Event()
        self.disconnected = False

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        while not self._pending and not self.done.is_set():
            self._pending = memoryview(self._next())
        count = min(len(view), len(self._pending))
        view[:count] = self._pending[:count]
        self._pending = self._pending[count:]
        return count

    def _next(self) -> bytes:
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is self._loop:
            raise RuntimeError(
                "This request body is streamed (files_app.asgi.StreamingASGIHandler) and "
                "cannot be read on the event loop: read it from sync code, e.g. through "
                "asgiref.sync.sync_to_async."
            )
        return asyncio.run_coroutine_threadsafe(self._receive_chunk(), self._loop).result()

    async def _receive_chunk(self) -> bytes:
        if self.done.is_set():
            return b""
        message = await self._receive()
        if message["type"] == "http.disconnect":
            self.disconnected = True
            self.done.set()
            return b""
        if not message.get("more_body", False):
            self.done.set()
        return bytes(message.get("body", b""))


class _Channel:
    """The ``receive`` callable of one request, carrying its scope and body stream."""

    def __init__(self, scope: Message, receive: Receive) -> None:
        self.scope = scope
        self.receive = receive
        self.stream: ASGIBodyStream | None = None

    def __call__(self) -> Awaitable[Message]:
        return self.receive()


class StreamingASGIHandler(ASGIHandler):
    """Django's ASGI handler, with large request bodies streamed to the view."""

    #: Django cuts every response chunk into ``http.response.body`` messages of this size,
    #: copying each piece. 1 MiB (the view's chunk) spares the copies; the benchmark sees
    #: no difference beyond noise (bench/RESULTS.md).
    chunk_size = 1024 * 1024

    def __init__(self) -> None:
        super().__init__()
        self.streaming = supported()
        if not self.streaming:
            logger.warning(
                "Django %s's ASGIHandler no longer has the handle(), read_body() and "
                "listen_for_disconnect() files_app.asgi overrides: request bodies are read "
                "as Django reads them, a large one into a temporary file first.",
                django.get_version(),
            )

    async def handle(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        from files_app._hostrules import lean_path_on

        if lean_path_on() and await self.serve_file(scope, receive, send):
            return
        if _length_unknown(scope):
            await _length_required(receive, send)
            return
        channel = _Channel(scope, receive) if self.streaming else receive
        await super().handle(scope, channel, send)

    async def serve_file(self, scope: dict[str, Any], receive: Receive, send: Any) -> bool:
        """Answer a request of files_app.fastpath's lean path before Django's handler, on
        the event loop; return False if the request is not one (Django answers it).

        On with :class:`files_app.middleware.FileServingMiddleware` in ``MIDDLEWARE``.
        """
        from files_app import fastpath, largeobjects_async
        from files_app.middleware import serve_from_event_loop

        method = scope.get("method", "")
        if method not in ("GET", "HEAD") or not largeobjects_async.available():
            # Without the async pool (psycopg2, or no psycopg-pool), the middleware serves
            # the lean path inside Django's handler, whose request signals look after the
            # worker thread's database connection.
            return False
        script_name = get_script_prefix(scope)
        set_script_prefix(script_name)
        path = scope["path"]
        path_info = path.removeprefix(script_name) if script_name else path
        headers = _scope_headers(scope)
        server = scope.get("server") or ("unknown", 0)
        host = fastpath.request_host(headers.get, f"{server[0]}:{server[1]}")
        secure = fastpath.request_is_secure(headers.get, scope.get("scheme", "http"))
        target = fastpath.find_target(path_info or "/", host, secure, before_django=True)
        if target is None:
            return False
        try:
            answer = await serve_from_event_loop(method, headers.get, target)
        except (OperationalError, InterfaceError) as exc:
            answer = fastpath.unavailable(method, path, exc, target)
        if answer is None:
            return False
        await send(
            {
                "type": "http.response.start",
                "status": answer.status,
                "headers": [(k.encode("latin-1"), v.encode("latin-1")) for k, v in answer.headers],
            }
        )
        if isinstance(answer.body, list):
            await send({"type": "http.response.body", "body": b"".join(answer.body)})
            return True
        await _send_body(answer.body, receive, send)
        return True

    async def read_body(self, receive: Any) -> Any:
        if not isinstance(receive, _Channel) or not self.streams(receive.scope):
            return await super().read_body(receive)
        raw = ASGIBodyStream(receive, asyncio.get_running_loop())
        receive.stream = raw
        return io.BufferedReader(raw, buffer_size=64 * 1024)

    async def listen_for_disconnect(self, receive: Any) -> None:
        stream = receive.stream if isinstance(receive, _Channel) else None
        if stream is not None:
            # The view owns the receive channel until it has read the whole body.
            await stream.done.wait()
            if stream.disconnected:
                raise RequestAborted()
        await super().listen_for_disconnect(receive)

    def streams(self, scope: Message) -> bool:
        """Whether to stream this request's body: when Django would spool it to disk.

        That is a body longer than ``FILE_UPLOAD_MAX_MEMORY_SIZE``. A request without a
        body is not streamed, so Django keeps listening for a disconnect while it
        answers; nor is one of unknown length (``Transfer-Encoding: chunked``), which
        Django's request parsing reads as empty anyway.
        """
        for name, value in scope.get("headers", ()):
            if name.lower() == b"content-length":
                try:
                    return int(value) > settings.FILE_UPLOAD_MAX_MEMORY_SIZE
                except ValueError:
                    return False  # Django answers 400
        return False


def _length_unknown(scope: Message) -> bool:
    """Whether the request has a body of unknown length: ``Transfer-Encoding`` (chunked)
    without ``Content-Length``."""
    names = {name.lower() for name, _ in scope.get("headers", ())}
    return b"transfer-encoding" in names and b"content-length" not in names


#: What the 411 for a body of unknown length reads of it afterwards, at most, and for how
#: long (as nginx's lingering close), where the server still hands it over: a client still
#: sending a short body then reads the answer instead of a reset. (uvicorn drops the rest
#: of a body itself once the answer is complete, and keeps the connection: the 411 does
#: not ask to close it, since closing with bytes unread resets it under the client.)
LINGER_BYTES = 1024 * 1024
LINGER_SECONDS = 5.0


async def _length_required(receive: Any, send: Any) -> None:
    """Answer 411 before reading the body. Django reads a body without ``Content-Length``
    as empty — under WSGI it never reads it — but its ASGI handler first spools all of it
    into a temporary file, which a client could make as large as it likes. Then read and
    drop up to ``LINGER_BYTES`` of it, for ``LINGER_SECONDS`` at most."""
    body = b"Length Required: send the request body with a Content-Length.\n"
    await send(
        {
            "type": "http.response.start",
            "status": 411,
            "headers": [
                (b"content-type", b"text/plain; charset=utf-8"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})

    async def linger() -> None:
        dropped = 0
        while dropped <= LINGER_BYTES:
            message = await receive()
            dropped += len(message.get("body", b""))
            if message["type"] != "http.request" or not message.get("more_body", False):
                return

    with suppress(TimeoutError):
        await asyncio.wait_for(linger(), LINGER_SECONDS)


def _scope_headers(scope: Message) -> dict[str, str]:
    """Return the request's headers by name (any case), repeated ones joined as Django does."""
    headers: dict[str, str] = {}
    for raw_name, raw_value in scope.get("headers", ()):
        name = raw_name.decode("latin-1").title()
        value = raw_value.decode("latin-1")
        headers[name] = f"{headers[name]},{value}" if name in headers else value
    return _Caseless(headers)


class _Caseless(dict[str, str]):
    def get(self, name: str, default: Any = None) -> Any:
        return super().get(name.title(), default)


async def _send_body(body: AsyncIterator[bytes], receive: Receive, send: Any) -> None:
    """Send a streamed body; stop reading it when the client goes away."""
    gone = asyncio.Event()

    async def watch() -> None:
        while (await receive())["type"] != "http.disconnect":
            pass
        gone.set()

    watcher = asyncio.ensure_future(watch())
    try:
        async for chunk in body:
            if gone.is_set():
                break
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        else:
            await send({"type": "http.response.body", "body": b""})
    finally:
        watcher.cancel()
        with suppress(asyncio.CancelledError):
            await watcher
        aclose = getattr(body, "aclose", None)
        if aclose is not None:
            await aclose()


def get_asgi_application() -> StreamingASGIHandler:
    """Like :func:`django.core.asgi.get_asgi_application`, streaming large bodies."""
    django.setup(set_prefix=False)
    return StreamingASGIHandler()

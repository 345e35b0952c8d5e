"""HTTP clients for the reliability suite: whole, slow, cut-off and raw requests."""

from __future__ import annotations

import http.client
import socket
import struct
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from django.test.client import encode_multipart

from tests.servers import Reachable, Server


@dataclass
class Download:
    """What a client got: status, headers, the bytes received, whether they were all."""

    status: int
    headers: dict[str, str]
    body: bytes
    complete: bool
    seconds: float = 0.0
    error: str = ""
    header_list: list[tuple[str, str]] = field(default_factory=list)


def download(
    server: Server,
    path: str,
    headers: Mapping[str, str] | None = None,
    *,
    method: str = "GET",
    rate: float | None = None,
    on_progress: object = None,
    timeout: float = 60.0,
    piece: int = 65536,
) -> Download:
    """GET ``path``, reading at most ``rate`` bytes per second; an early end is no error.

    ``on_progress(received)`` is called after each piece; if it returns True the client
    stops reading and resets the connection.
    """
    started = time.monotonic()
    conn = server.connection(timeout=timeout)
    try:
        conn.putrequest(method, path, skip_accept_encoding=True)
        for name, value in (headers or {}).items():
            conn.putheader(name, value.encode("latin-1"))
        conn.endheaders()
        response = conn.getresponse()
        result = Download(
            response.status,
            {name.lower(): value for name, value in response.getheaders()},
            b"",
            False,
            header_list=response.getheaders(),
        )
        received = bytearray()
        try:
            while True:
                chunk = response.read(piece)
                if not chunk:
                    break
                received += chunk
                if callable(on_progress) and on_progress(len(received)):
                    _reset(conn)
                    result.body = bytes(received)
                    return result
                if rate:
                    ahead = len(received) / rate - (time.monotonic() - started)
                    if ahead > 0:
                        time.sleep(ahead)
            result.complete = response.length in (None, 0)
        except (http.client.IncompleteRead, OSError) as exc:
            result.error = f"{type(exc).__name__}: {exc}"
        result.body = bytes(received)
        expected = result.headers.get("content-length")
        result.complete = result.complete and (
            expected is None or int(expected) == len(received) or method == "HEAD"
        )
        result.seconds = time.monotonic() - started
        return result
    finally:
        conn.close()


def _reset(conn: http.client.HTTPConnection) -> None:
    # Close with RST, as a client that vanishes does.
    if conn.sock is not None:
        conn.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    conn.close()


class Named:
    """A named file-like object, as ``encode_multipart`` wants a file."""

    def __init__(self, name: str, data: bytes) -> None:
        self.name, self.data = name, data

    def read(self) -> bytes:
        return self.data


ADD = "/admin/files_app/storedfile/add/"
BOUNDARY = "reliability-boundary"


def upload_body(token: str, name: str, data: bytes) -> tuple[bytes, str]:
    """Return the admin add form's multipart body for one file, and its Content-Type."""
    body = encode_multipart(BOUNDARY, {"csrfmiddlewaretoken": token, "file": Named(name, data)})
    return body, f"multipart/form-data; boundary={BOUNDARY}"


def admin_upload(server: Reachable, session: str, name: str, data: bytes) -> int:
    """Upload one file through the admin's add form with a logged-in session; return the
    status (302 when stored)."""
    return admin_post(server, session, ADD, {"file": Named(name, data)})


def admin_post(server: Reachable, session: str, path: str, fields: dict[str, Any]) -> int:
    """Post ``fields`` (a ``Named`` for a file) as multipart to an admin page with a
    logged-in session and its CSRF token; return the status (302 when done)."""
    token = "u" * 32
    body = encode_multipart(BOUNDARY, {"csrfmiddlewaretoken": token, **fields})
    content_type = f"multipart/form-data; boundary={BOUNDARY}"
    conn = server.connection(timeout=60)
    try:
        conn.request(
            "POST",
            path,
            body=body,
            headers={
                "Cookie": f"sessionid={session}; csrftoken={token}",
                "Content-Type": content_type,
            },
        )
        response = conn.getresponse()
        response.read()
        return response.status
    finally:
        conn.close()

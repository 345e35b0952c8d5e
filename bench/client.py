"""The client side of ``bench/run.py``: each command runs in its own process.

Every command prints one JSON object on stdout. HTTP is spoken over plain sockets (HTTP/1.1,
``Content-Length`` bodies only, read into one reused buffer and discarded) so that the client
costs as little CPU as possible; the raw peers talk to PostgreSQL with psycopg 3.

    python -m bench.client http-get  --port P --path /x [--min-seconds S] [--max-count N]
    python -m bench.client ttfb      --port P --path /x --offsets 0,N [--reps R]
    python -m bench.client ranged    --port P --path /x --size N [--clients 16] [--seconds 10]
    python -m bench.client upload    --port P --size N --name NAME [--plain /sink/]
    python -m bench.client raw-read  --dsn DSN --oid O --size N --chunk C [--text]
    python -m bench.client raw-ttfb  --dsn DSN --oid O --offsets 0,N [--reps R]
    python -m bench.client raw-ranged --dsn DSN --oid O --size N --start-at T [--seconds 10]
    python -m bench.client raw-write --dsn DSN --size N --chunk C --mode put|lowrite
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import re
import secrets
import socket
import struct
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

MiB = 1024 * 1024
HOST = "127.0.0.1"
RANGE_LENGTH = 64 * 1024
INV_WRITE = 0x20000
_BASE_BLOCK: bytes | None = None


def base_block() -> bytes:
    """Return the 1 MiB of pseudo-random bytes every benchmark file is made of."""
    global _BASE_BLOCK
    if _BASE_BLOCK is None:
        _BASE_BLOCK = random.Random(20261123).randbytes(MiB)
    return _BASE_BLOCK


def block(index: int) -> bytes:
    """Return MiB number ``index`` of a benchmark file: the base block, numbered."""
    return struct.pack(">Q", index) + base_block()[8:]


def blocks(size: int, chunk: int = MiB) -> Iterator[bytes]:
    """Yield the bytes of a benchmark file of ``size`` bytes, ``chunk`` bytes at a time."""
    if chunk == MiB:
        for index in range(size // MiB):
            yield block(index)
        if rest := size % MiB:
            yield block(size // MiB)[:rest]
        return
    offset = 0
    while offset < size:
        first, skip = divmod(offset, MiB)
        data = b"".join(block(first + i) for i in range((skip + chunk) // MiB + 1))
        piece = data[skip : skip + min(chunk, size - offset)]
        offset += len(piece)
        yield piece


# -- HTTP over plain sockets ---------------------------------------------------------------


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    length: int  # body bytes received (and discarded)
    ttfb: float  # seconds from connect() to the first body byte (or end of headers)
    seconds: float  # seconds from connect() to the last byte
    keep_alive: bool


class HTTPError(Exception):
    pass


def _connect(port: int) -> socket.socket:
    sock = socket.create_connection((HOST, port), timeout=120)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def _read_head(sock: socket.socket) -> tuple[int, dict[str, str], bytes, float]:
    received = bytearray()
    first_byte = 0.0
    while True:
        data = sock.recv(65536)
        if not data:
            raise HTTPError("connection closed before the end of the headers")
        if not first_byte:
            first_byte = time.perf_counter()
        received += data
        end = received.find(b"\r\n\r\n")
        if end >= 0:
            break
    head = bytes(received[:end]).decode("latin-1").split("\r\n")
    status = int(head[0].split()[1])
    headers = {}
    for line in head[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return status, headers, bytes(received[end + 4 :]), first_byte


def http_request(
    port: int,
    path: str,
    *,
    method: str = "GET",
    headers: dict[str, str] | None = None,
    sock: socket.socket | None = None,
    buffer: bytearray | None = None,
    close: bool = True,
) -> tuple[Reply, socket.socket | None]:
    """Send one request, read the response body into ``buffer`` and discard it.

    Returns the reply and the socket if the connection can be reused.
    """
    started = time.perf_counter()
    sock = sock or _connect(port)
    lines = [f"{method} {path} HTTP/1.1", f"Host: {HOST}:{port}"]
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    if close:
        lines.append("Connection: close")
    try:
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        status, reply_headers, rest, first = _read_head(sock)
        if "content-length" not in reply_headers:
            raise HTTPError(f"no Content-Length in a {status} response")
        expected = int(reply_headers["content-length"])
        view = memoryview(buffer if buffer is not None else bytearray(MiB))
        got = len(rest)
        if got == 0 and expected:
            got = sock.recv_into(view, min(len(view), expected))
            if got == 0:
                raise HTTPError("connection closed before the body")
            first = time.perf_counter()
        while got < expected:
            n = sock.recv_into(view, min(len(view), expected - got))
            if n == 0:
                raise HTTPError(f"connection closed after {got} of {expected} bytes")
            got += n
        ended = time.perf_counter()
    except BaseException:
        sock.close()
        raise
    keep = not close and reply_headers.get("connection", "").lower() != "close"
    if not keep:
        sock.close()
    reply = Reply(status, reply_headers, got, first - started, ended - started, keep)
    return reply, (sock if keep else None)


def cmd_http_get(args: argparse.Namespace) -> dict[str, Any]:
    """Download a URL again and again, one connection each; report bytes and seconds."""
    buffer = bytearray(MiB)
    total = seconds = 0.0
    count = errors = 0
    deadline = time.perf_counter() + args.min_seconds
    while count < args.max_count and (count < args.min_count or time.perf_counter() < deadline):
        reply, _ = http_request(args.port, args.path, buffer=buffer)
        if reply.status != 200 or (args.size and reply.length != args.size):
            errors += 1
        total += reply.length
        seconds += reply.seconds
        count += 1
    return {"bytes": total, "seconds": seconds, "count": count, "errors": errors}


def cmd_ttfb(args: argparse.Namespace) -> dict[str, Any]:
    """Time to first byte of a 64 KiB range at each offset, interleaved, new connection each."""
    offsets = [int(x) for x in args.offsets.split(",")]
    results: dict[str, list[float]] = {str(o): [] for o in offsets}
    errors = 0
    for _ in range(args.reps):
        for offset in offsets:
            header = {"Range": f"bytes={offset}-{offset + RANGE_LENGTH - 1}"}
            reply, _ = http_request(args.port, args.path, headers=header)
            if reply.status != 206 or reply.length != RANGE_LENGTH:
                errors += 1
            results[str(offset)].append(reply.ttfb)
    return {"ttfb": results, "errors": errors}


async def _ranged_client(
    port: int,
    path: str,
    size: int,
    deadline: float,
    keep_alive: bool,
    counts: list[int],
    cookie: str = "",
) -> None:
    rng = random.Random()
    reader: asyncio.StreamReader | None = None
    writer: asyncio.StreamWriter | None = None
    while time.perf_counter() < deadline:
        offset = rng.randrange(0, size - RANGE_LENGTH)
        request = (
            f"GET {path} HTTP/1.1\r\nHost: {HOST}:{port}\r\n"
            f"Range: bytes={offset}-{offset + RANGE_LENGTH - 1}\r\n"
            + (f"Cookie: {cookie}\r\n" if cookie else "")
            + ("" if keep_alive else "Connection: close\r\n")
            + "\r\n"
        ).encode("latin-1")
        try:
            if writer is None:
                reader, writer = await asyncio.open_connection(HOST, port)
            assert reader is not None
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            status = int(lines[0].split()[1])
            fields = {
                k.strip().lower(): v.strip()
                for k, _, v in (line.partition(":") for line in lines[1:] if line)
            }
            body = await reader.readexactly(int(fields.get("content-length", "0")))
            ok = status == 206 and len(body) == RANGE_LENGTH
            counts[0 if ok else 1] += 1
            if not keep_alive or fields.get("connection", "").lower() == "close":
                writer.close()
                writer = None
        except (OSError, asyncio.IncompleteReadError, ValueError, IndexError):
            counts[1] += 1
            if writer is not None:
                writer.close()
            writer = None
            await asyncio.sleep(0.01)
    if writer is not None:
        writer.close()


def cmd_ranged(args: argparse.Namespace) -> dict[str, Any]:
    """``--clients`` concurrent clients fetching random 64 KiB ranges for ``--seconds``."""
    counts = [0, 0]

    async def main() -> float:
        started = time.perf_counter()
        deadline = started + args.seconds
        await asyncio.gather(
            *(
                _ranged_client(
                    args.port, args.path, args.size, deadline, args.keep_alive, counts, args.cookie
                )
                for _ in range(args.clients)
            )
        )
        return time.perf_counter() - started

    seconds = asyncio.run(main())
    return {"ok": counts[0], "errors": counts[1], "seconds": seconds}


# -- admin upload ------------------------------------------------------------------------


def _cookies(headers: list[tuple[str, str]]) -> dict[str, str]:
    found = {}
    for name, value in headers:
        if name.lower() == "set-cookie":
            key, _, rest = value.partition("=")
            found[key.strip()] = rest.split(";", 1)[0]
    return found


def _simple(
    port: int, method: str, path: str, headers: dict[str, str], body: bytes = b""
) -> tuple[int, list[tuple[str, str]], bytes]:
    import http.client

    conn = http.client.HTTPConnection(HOST, port, timeout=120)
    try:
        conn.request(method, path, body=body or None, headers=headers)
        response = conn.getresponse()
        return response.status, response.getheaders(), response.read()
    finally:
        conn.close()


def _csrf_from_form(html: bytes) -> str:
    match = re.search(rb'name="csrfmiddlewaretoken" value="([^"]+)"', html)
    if not match:
        raise HTTPError("no CSRF token in the page")
    return match.group(1).decode()


def admin_login(port: int, username: str, password: str) -> dict[str, str]:
    """Log in to the admin; return the cookies (csrftoken, sessionid)."""
    from urllib.parse import urlencode

    status, headers, body = _simple(port, "GET", "/admin/login/", {})
    cookies = _cookies(headers)
    form = urlencode(
        {
            "csrfmiddlewaretoken": _csrf_from_form(body),
            "username": username,
            "password": password,
            "next": "/admin/",
        }
    ).encode()
    status, headers, body = _simple(
        port,
        "POST",
        "/admin/login/?next=/admin/",
        {
            "Content-Type": "application/x-www-form-urlencoded",
            "Cookie": "; ".join(f"{k}={v}" for k, v in cookies.items()),
        },
        form,
    )
    cookies.update(_cookies(headers))
    if status != 302 or "sessionid" not in cookies:
        raise HTTPError(f"admin login failed: {status}")
    return cookies


def cmd_upload(args: argparse.Namespace) -> dict[str, Any]:
    """Upload a generated file through the admin's add form, streaming the multipart body."""
    import http.client

    if args.plain:  # a view of bench/urls.py: no login, no CSRF
        add, cookie_header, token = args.plain, "", ""
    else:
        cookies = admin_login(args.port, args.username, args.password)
        cookie_header = "; ".join(f"{k}={v}" for k, v in cookies.items())
        add = "/admin/files_app/storedfile/add/"
        status, _, page = _simple(args.port, "GET", add, {"Cookie": cookie_header})
        if status != 200:
            raise HTTPError(f"GET {add}: {status}")
        token = _csrf_from_form(page)
    boundary = "----bench" + secrets.token_hex(16)
    fields = {
        "csrfmiddlewaretoken": token,
        "name": args.name,
        "content_type": "application/octet-stream",
        "public": "on",
        "owner": "",
        "_save": "Save",
    }
    head = b"".join(
        f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode()
        for k, v in fields.items()
    )
    head += (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; '
        f'filename="{args.name}"\r\nContent-Type: application/octet-stream\r\n\r\n'
    ).encode()
    tail = f"\r\n--{boundary}--\r\n".encode()
    conn = http.client.HTTPConnection(HOST, args.port, timeout=600)
    conn.putrequest("POST", add, skip_accept_encoding=True)
    conn.putheader("Content-Type", f"multipart/form-data; boundary={boundary}")
    conn.putheader("Content-Length", str(len(head) + args.size + len(tail)))
    if cookie_header:
        conn.putheader("Cookie", cookie_header)
    conn.endheaders()
    started = time.perf_counter()
    conn.send(head)
    for data in blocks(args.size, args.chunk):
        conn.send(data)
    conn.send(tail)
    sent = time.perf_counter()
    response = conn.getresponse()
    response.read()
    ended = time.perf_counter()
    conn.close()
    location = response.getheader("Location") or ""
    return {
        "status": response.status,
        "location": location,
        "seconds": ended - started,
        "send_seconds": sent - started,
        "bytes": args.size,
    }


# -- raw PostgreSQL peers ----------------------------------------------------------------


def _pg(dsn: str) -> Any:
    import psycopg

    return psycopg.connect(dsn, autocommit=True)


def cmd_raw_read(args: argparse.Namespace) -> dict[str, Any]:
    """Read the whole large object with lo_get in ``--chunk`` pieces, repeatedly."""
    conn = _pg(args.dsn)
    cursor = conn.cursor(binary=not args.text)
    sql = "SELECT lo_get(%s::oid, %s::int8, %s::int4)"
    cursor.execute(sql, (args.oid, 0, 1))  # connect and warm up outside the timing
    total = seconds = 0.0
    count = errors = 0
    deadline = time.perf_counter() + args.min_seconds
    while count < args.max_count and (count < args.min_count or time.perf_counter() < deadline):
        started = time.perf_counter()
        offset = 0
        while offset < args.size:
            cursor.execute(sql, (args.oid, offset, min(args.chunk, args.size - offset)))
            data = cursor.fetchone()[0]
            if not data:
                errors += 1
                break
            offset += len(data)
        seconds += time.perf_counter() - started
        total += offset
        count += 1
    conn.close()
    return {"bytes": total, "seconds": seconds, "count": count, "errors": errors}


def cmd_raw_ttfb(args: argparse.Namespace) -> dict[str, Any]:
    """Latency of one 64 KiB lo_get at each offset, interleaved, on one open connection."""
    conn = _pg(args.dsn)
    cursor = conn.cursor(binary=True)
    sql = "SELECT lo_get(%s::oid, %s::int8, %s::int4)"
    offsets = [int(x) for x in args.offsets.split(",")]
    results: dict[str, list[float]] = {str(o): [] for o in offsets}
    cursor.execute(sql, (args.oid, 0, 1))
    for _ in range(args.reps):
        for offset in offsets:
            started = time.perf_counter()
            cursor.execute(sql, (args.oid, offset, RANGE_LENGTH))
            cursor.fetchone()
            results[str(offset)].append(time.perf_counter() - started)
    conn.close()
    return {"ttfb": results, "errors": 0}


def cmd_raw_ranged(args: argparse.Namespace) -> dict[str, Any]:
    """One of the raw readers: lo_get 64 KiB at random offsets from ``--start-at`` on."""
    conn = _pg(args.dsn)
    cursor = conn.cursor(binary=True)
    sql = "SELECT lo_get(%s::oid, %s::int8, %s::int4)"
    cursor.execute(sql, (args.oid, 0, 1))
    rng = random.Random()
    time.sleep(max(0.0, args.start_at - time.time()))
    started = time.perf_counter()
    deadline = started + args.seconds
    ok = errors = 0
    while time.perf_counter() < deadline:
        offset = rng.randrange(0, args.size - RANGE_LENGTH)
        try:
            cursor.execute(sql, (args.oid, offset, RANGE_LENGTH))
            data = cursor.fetchone()[0]
        except Exception:
            errors += 1
            continue
        if len(data) == RANGE_LENGTH:
            ok += 1
        else:
            errors += 1
    seconds = time.perf_counter() - started
    conn.close()
    return {"ok": ok, "errors": errors, "seconds": seconds}


def cmd_raw_write(args: argparse.Namespace) -> dict[str, Any]:
    """Write a new large object of ``--size`` bytes, ``--chunk`` bytes per statement.

    ``put``: ``lo_put`` in autocommit, one statement (and commit) per chunk, as
    files_app's upload handler does; ``lowrite``: ``lo_open`` + ``lowrite`` in one transaction.
    """
    conn = _pg(args.dsn)
    cursor = conn.cursor()
    cursor.execute("SELECT lo_create(0)")
    oid = int(cursor.fetchone()[0])
    source = blocks(args.size, args.chunk)
    started = time.perf_counter()
    if args.mode == "put":
        offset = 0
        for data in source:
            cursor.execute("SELECT lo_put(%s::oid, %s::int8, %b)", (oid, offset, data))
            offset += len(data)
    else:
        with conn.transaction():
            cursor.execute("SELECT lo_open(%s::oid, %s)", (oid, INV_WRITE))
            fd = int(cursor.fetchone()[0])
            for data in source:
                cursor.execute("SELECT lowrite(%s, %b)", (fd, data))
            cursor.execute("SELECT lo_close(%s)", (fd,))
    seconds = time.perf_counter() - started
    cursor.execute("SELECT lo_unlink(%s::oid)", (oid,))
    conn.close()
    return {"bytes": args.size, "seconds": seconds}


COMMANDS: dict[str, Callable[[argparse.Namespace], dict[str, Any]]] = {
    "http-get": cmd_http_get,
    "ttfb": cmd_ttfb,
    "ranged": cmd_ranged,
    "upload": cmd_upload,
    "raw-read": cmd_raw_read,
    "raw-ttfb": cmd_raw_ttfb,
    "raw-ranged": cmd_raw_ranged,
    "raw-write": cmd_raw_write,
}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=sorted(COMMANDS))
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--path", default="/")
    parser.add_argument("--dsn", default="")
    parser.add_argument("--oid", type=int, default=0)
    parser.add_argument("--size", type=int, default=0)
    parser.add_argument("--chunk", type=int, default=MiB)
    parser.add_argument("--text", action="store_true", help="raw-read: text-format bytea")
    parser.add_argument("--min-seconds", type=float, default=0.0)
    parser.add_argument("--min-count", type=int, default=1)
    parser.add_argument("--max-count", type=int, default=1)
    parser.add_argument("--offsets", default="0")
    parser.add_argument("--reps", type=int, default=10)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--keep-alive", action="store_true")
    parser.add_argument("--cookie", default="", help="ranged: a Cookie header to send")
    parser.add_argument("--start-at", type=float, default=0.0)
    parser.add_argument("--mode", choices=["put", "lowrite"], default="put")
    parser.add_argument("--name", default="upload.bin")
    parser.add_argument("--plain", default="", help="upload: POST to this path, no login")
    parser.add_argument("--username", default="bench")
    parser.add_argument("--password", default="bench")
    args = parser.parse_args(argv)
    result = COMMANDS[args.command](args)
    sys.stdout.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()

"""Streaming a response body planned by files_app.responder: literal bytes, and reads of a
large object in chunks, the next read already running while a chunk goes out.

Below the views: they hand a plan and a reader (``LargeObjectIO.read_pieces``) over, and
send what comes back. A body is planned lazily, so nothing here grows with the file's size.

Internal to files_app, not part of its public API (docs/reference.md, "Public API").
"""

from __future__ import annotations

import asyncio
import inspect
import itertools
from collections.abc import AsyncIterator, Callable, Generator, Iterable, Iterator, Sequence
from contextlib import suppress

from asgiref.sync import sync_to_async

from files_app.responder import Segment

ReadPieces = Callable[[Iterable[tuple[int, int]]], Generator[bytes, None, None]]
AsyncReadPieces = Callable[[Iterable[tuple[int, int]]], AsyncIterator[bytes]]

Piece = bytes | tuple[int, int]


def _plan_reads(segments: Sequence[Segment], chunk: int) -> Iterator[Piece]:
    """Split the body into literal bytes and ``(offset, length)`` reads of ``chunk`` at most.

    Lazily: a body of many gigabytes in small chunks is many pieces.
    """
    for segment in segments:
        if isinstance(segment, bytes):
            yield segment
            continue
        for offset in range(segment.start, segment.stop, chunk):
            yield (offset, min(chunk, segment.stop - offset))


def body_reads(segments: Sequence[Segment], chunk: int) -> Iterator[tuple[int, int]]:
    """Return the ``(offset, length)`` reads of a body, in order, lazily."""
    return (item for item in _plan_reads(segments, chunk) if not isinstance(item, bytes))


def _checked(data: bytes | None, item: tuple[int, int]) -> bytes:
    if data is None or len(data) != item[1]:
        ended = item[0] + len(data or b"")
        raise OSError(f"The large object ended early at byte {ended}.")
    return data


def stream(
    read_pieces: ReadPieces, segments: Sequence[Segment], chunk: int, first: bytes
) -> Generator[bytes, None, None]:
    """Yield the body: ``first`` is the first read, already done; the rest read ahead."""
    rest = read_pieces(itertools.islice(body_reads(segments, chunk), 1, None))
    done = 0
    try:
        for item in _plan_reads(segments, chunk):
            if isinstance(item, bytes):
                yield item
                continue
            data = first if done == 0 else next(rest, None)
            done += 1
            yield _checked(data, item)
    finally:
        rest.close()


def _next_chunk(body: Iterator[bytes]) -> bytes | None:
    return next(body, None)


async def astream(
    read_pieces: ReadPieces, segments: Sequence[Segment], chunk: int, first: bytes
) -> AsyncIterator[bytes]:
    """:func:`stream` for ASGI, each read started in the request's thread before the
    previous chunk is sent. (Under ASGI a sync iterator would be read whole into memory
    before sending.) A body of one read needs no thread at all.
    """
    total = sum(
        -(-(segment.stop - segment.start) // chunk)
        for segment in segments
        if not isinstance(segment, bytes)
    )
    rest = read_pieces(itertools.islice(body_reads(segments, chunk), 1, None))
    step = sync_to_async(_next_chunk, thread_sensitive=True)
    pending: asyncio.Future[bytes | None] | None = None
    done = 0
    try:
        for item in _plan_reads(segments, chunk):
            if isinstance(item, bytes):
                yield item
                continue
            if done == 0:
                data: bytes | None = first
            else:
                pending = pending or asyncio.ensure_future(step(rest))
                # Shielded: if the response is cancelled (the client left), the read in
                # its thread still completes, and the generator is closed below.
                data = await asyncio.shield(pending)
                pending = None
            done += 1
            if done < total:
                pending = asyncio.ensure_future(step(rest))
            yield _checked(data, item)
    finally:
        if pending is not None:
            with suppress(Exception):
                await pending
        await _close(rest)


async def _close(rest: Generator[bytes, None, None]) -> None:
    """Close the reads' generator (and so its pipeline) in the request's thread, or here
    when that thread is gone; never leave it to the garbage collector, which may tear the
    database connection's objects down first."""
    if inspect.getgeneratorstate(rest) != inspect.GEN_SUSPENDED:
        rest.close()
        return
    try:
        await sync_to_async(rest.close, thread_sensitive=True)()
    except RuntimeError:  # no executor any more: the request is over
        rest.close()


async def astream_async(
    read_pieces: AsyncReadPieces, segments: Sequence[Segment], chunk: int, first: bytes
) -> AsyncIterator[bytes]:
    """:func:`stream` with async reads (files_app.largeobjects_async): no thread at all.
    ``read_pieces`` starts the next read before it hands a piece over."""
    rest = read_pieces(itertools.islice(body_reads(segments, chunk), 1, None))
    done = 0
    try:
        for item in _plan_reads(segments, chunk):
            if isinstance(item, bytes):
                yield item
                continue
            data = first if done == 0 else await anext(rest, b"")
            done += 1
            yield _checked(data, item)
    finally:
        aclose = getattr(rest, "aclose", None)
        if aclose is not None:
            await aclose()


async def empty() -> AsyncIterator[bytes]:
    """An async body without bytes (HEAD, 304) for ASGI."""
    nothing: tuple[bytes, ...] = ()
    for chunk in nothing:
        yield chunk

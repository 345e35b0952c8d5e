"""The first read of a download, guessed before its row is known, and the SQL that reads it
in the same statement as the row (the lean path's lookup, and the views' queryset).

Below the views and the lean path, which both use it: it knows no HTTP beyond the request
headers that decide the guess, and no Django: the callers give it their columns.

Internal to files_app, not part of its public API (docs/reference.md, "Public API").
"""

from __future__ import annotations

from collections.abc import Callable

from files_app import ranges

Headers = Callable[[str], str | None]
CONDITIONAL = ("If-Match", "If-None-Match", "If-Modified-Since", "If-Unmodified-Since")
_LARGEST = 2**62  # offsets past this are past the end of any large object (4 TB)


def first_read_guess(method: str, header: Headers, chunk: int) -> tuple[int, int]:
    """Guess the first read of the answer before the file is known: ``(start, length)``.

    A negative start counts from the end (a suffix range). A request that is likely to be
    answered without a body (HEAD, or a conditional request) reads nothing.
    """
    if method != "GET" or any(header(name) for name in CONDITIONAL):
        return 0, 0
    value = header("Range")
    specs = ranges.parse_range_header(value) if value is not None else None
    if not specs:
        return 0, chunk
    first, last = specs[0]
    if first is None:
        assert last is not None
        if last >= _LARGEST:
            return 0, chunk  # a suffix longer than any file: all of it
        return (-last, min(last, chunk)) if last else (0, 0)
    if first >= _LARGEST:
        return 0, 0  # past the end of any file
    if last is None:
        return first, chunk
    return first, min(last - first + 1, chunk)


def first_read_sql(file: str, size: str) -> str:
    """Return the SQL of the guessed first read of a row's object (``file`` and ``size`` are
    its columns): its parameters are :func:`first_read_params`."""
    return (
        f"lo_get({file}, CASE WHEN %s::int8 >= 0 THEN %s::int8 "
        f"ELSE greatest({size} + %s::int8, 0) END, %s::int4)"
    )


def first_read_params(guess: tuple[int, int]) -> list[int]:
    """Return the parameters of :func:`first_read_sql` for a :func:`first_read_guess`."""
    start, length = guess
    return [start, start, start, length]


def first_read_offset(guess: tuple[int, int], size: int) -> int:
    """Return where the guessed first read starts in a file of ``size`` bytes."""
    start = guess[0]
    return start if start >= 0 else max(size + start, 0)  # a suffix counts from the end

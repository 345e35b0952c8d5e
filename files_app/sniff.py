"""Work out a file's content type from what was declared, its first bytes and its name.

Internal to files_app, not part of its public API (docs/reference.md, "Public API").
"""

from __future__ import annotations

import mimetypes

import filetype

from files_app import mediatypes

SNIFF_BYTES = 8192
GENERIC_TYPES = frozenset({"", "application/octet-stream", "binary/octet-stream"})


def _looks_like_text(head: bytes) -> bool:
    if not head or b"\x00" in head:
        return False
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as exc:
        # A multi-byte character cut off at the end of the sample is still text.
        return exc.start >= len(head) - 3
    return True


def content_type_for(declared: str | None, head: bytes, name: str) -> str:
    """Return the content type: declared unless generic, else sniffed, guessed or generic.

    A declared type (an upload's, which the client chose) counts without its parameters, and
    not at all if it is not a media type.
    """
    parsed = mediatypes.parse(declared)
    declared = parsed.essence if parsed else ""
    if declared not in GENERIC_TYPES:
        return declared
    kind = filetype.guess(head[:SNIFF_BYTES]) if head else None
    if kind is not None:
        return str(kind.mime)
    guessed, _encoding = mimetypes.guess_type(name, strict=False)
    if guessed:
        return guessed
    if _looks_like_text(head[:SNIFF_BYTES]):
        return "text/plain"
    return "application/octet-stream"

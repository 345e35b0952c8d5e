"""Parse, normalise and classify media types (RFC 9110 §8.3.1). Imports nothing from Django.

A content type is stored and served only in its normalised form, and whether a browser may
show a file inline is decided on the parsed type, never by matching the raw string: a
``text/html ; charset=utf-8`` is HTML however it is spelled.

Internal to files_app, not part of its public API (docs/reference.md, "Public API").
"""

from __future__ import annotations

import re
from dataclasses import dataclass

MAX_LENGTH = 255

# RFC 9110 §5.6.2: token = 1*tchar.
_TOKEN = r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
_TOKEN_RE = re.compile(_TOKEN)
# §5.6.4: quoted-string = DQUOTE *( qdtext / quoted-pair ) DQUOTE, ASCII only here (obs-text
# is not accepted: a stored content type must be plain ASCII).
_QUOTED = r'"(?:[\t \x21\x23-\x5b\x5d-\x7e]|\\[\t \x21-\x7e])*"'
_OWS = r"[ \t]*"
_ESSENCE_RE = re.compile(rf"({_TOKEN})/({_TOKEN})")
# §5.6.6: parameters = *( OWS ";" OWS [ parameter ] ); parameter = name "=" value.
_PARAMETER_RE = re.compile(rf"{_OWS};{_OWS}(?:({_TOKEN})=({_TOKEN}|{_QUOTED}))?")

# Types a browser shows without running anything from them: served inline. Everything else
# (HTML, SVG, XML, scripts, unknown types) is sent as an attachment in a CSP sandbox.
PASSIVE_TYPES = frozenset(
    {
        "application/pdf",
        "image/apng",
        "image/avif",
        "image/bmp",
        "image/gif",
        "image/jpeg",
        "image/png",
        "image/vnd.microsoft.icon",
        "image/webp",
        "image/x-icon",
        "text/plain",
    }
)
PASSIVE_TOP_LEVEL = frozenset({"audio", "video"})


@dataclass(frozen=True)
class MediaType:
    """A parsed media type: lower-case type and subtype, and its parameters in order."""

    type: str
    subtype: str
    parameters: tuple[tuple[str, str], ...] = ()

    @property
    def essence(self) -> str:
        """Return ``type/subtype`` without parameters."""
        return f"{self.type}/{self.subtype}"

    def __str__(self) -> str:
        params = "".join(f"; {name}={_quote(value)}" for name, value in self.parameters)
        return self.essence + params


def _quote(value: str) -> str:
    if _TOKEN_RE.fullmatch(value):
        return value
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _unquote(value: str) -> str:
    if not value.startswith('"'):
        return value
    return re.sub(r"\\(.)", r"\1", value[1:-1])


def parse(value: str | None) -> MediaType | None:
    """Return the media type in ``value``, or None if it is not one.

    Types, subtypes and parameter names are case-insensitive (§8.3.1), and so is the value
    of ``charset``; they come back in lower case. Surrounding whitespace is ignored.
    """
    if not value or len(value) > 4 * MAX_LENGTH:
        return None
    value = value.strip(" \t")
    essence = _ESSENCE_RE.match(value)
    if essence is None:
        return None
    parameters: list[tuple[str, str]] = []
    position = essence.end()
    while position < len(value):
        match = _PARAMETER_RE.match(value, position)
        if match is None or match.end() == position:
            return None
        position = match.end()
        name, raw = match.group(1), match.group(2)
        if name is None:
            continue  # "text/plain;" and ";;" are allowed, and mean nothing
        name = name.lower()
        parameter = _unquote(raw)
        parameters.append((name, parameter.lower() if name == "charset" else parameter))
    return MediaType(essence.group(1).lower(), essence.group(2).lower(), tuple(parameters))


def normalize(value: str) -> str:
    """Return ``value`` in normal form; raise ValueError if it is not a media type."""
    media_type = parse(value)
    if media_type is None:
        raise ValueError(
            f"{value!r} is not a media type: expected type/subtype, optionally followed by "
            f"parameters such as '; charset=utf-8' (RFC 9110 §8.3.1)."
        )
    normal = str(media_type)
    if len(normal) > MAX_LENGTH:
        raise ValueError(f"The media type {value!r} is longer than {MAX_LENGTH} characters.")
    return normal


def is_passive(media_type: MediaType | None) -> bool:
    """Return whether a browser may show this type inline from the site's own origin."""
    if media_type is None or media_type.subtype.endswith("+xml"):
        return False  # browsers render any "+xml" type as an XML document, scripts and all
    return media_type.type in PASSIVE_TOP_LEVEL or media_type.essence in PASSIVE_TYPES

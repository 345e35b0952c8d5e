"""Signed, expiring share links for stored files (Django's signing; no table needed).

A link carries the file's UUID and its expiry time, signed with ``SECRET_KEY``: it survives
restarts and works in every process that shares the key.
"""

from __future__ import annotations

import time
import uuid
from datetime import timedelta
from enum import Enum

from django.core import signing
from django.urls import reverse

__all__ = ["make_share_url"]

SALT = "files_app.share"


class LinkState(Enum):
    VALID = "valid"
    EXPIRED = "expired"
    INVALID = "invalid"


def make_share_token(file_uuid: uuid.UUID, expires_in: timedelta) -> str:
    """Return a signed token for the file that expires after ``expires_in``."""
    expires = int(time.time() + expires_in.total_seconds())
    return signing.dumps({"u": str(file_uuid), "e": expires}, salt=SALT, compress=True)


def read_share_token(token: str) -> tuple[LinkState, uuid.UUID | None]:
    """Return whether the token is valid, expired or invalid, and the UUID it names."""
    try:
        payload = signing.loads(token, salt=SALT)
        file_uuid = uuid.UUID(str(payload["u"]))
        expires = int(payload["e"])
    except (signing.BadSignature, KeyError, TypeError, ValueError):
        return LinkState.INVALID, None
    if expires < time.time():
        return LinkState.EXPIRED, file_uuid
    return LinkState.VALID, file_uuid


def make_share_url(file_uuid: uuid.UUID, filename: str, expires_in: timedelta) -> str:
    """Return the path of a share link for the file."""
    token = make_share_token(file_uuid, expires_in)
    return reverse("files_app:share", kwargs={"token": token, "filename": filename})

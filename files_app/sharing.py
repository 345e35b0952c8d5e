"""Signed, expiring links to stored files (Django's signing; no table needed).

A share link carries the file's UUID and its expiry time, signed with ``SECRET_KEY``: it
survives restarts and works in every process that shares the key. A signed URL
(:class:`SignedGrant`) carries more: the file's version, its name, and on what grounds the
user it was made for could download it, which the download checks again against the row.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from datetime import timedelta
from enum import Enum
from typing import Any

from django.core import signing
from django.urls import reverse

__all__ = ["SignedGrant", "make_share_url", "make_signed_url", "read_signed_token"]

SALT = "files_app.share"
SIGNED_SALT = "files_app.signed"


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


@dataclass(frozen=True)
class SignedGrant:
    """What a signed URL of a stored file says: which file, in which version, under which
    name, for whom, until when.

    ``user`` (the user's primary key as text, None for anyone) and ``every`` (the user could
    download every file: ``files_app.view_storedfile``) are the grounds on which the user
    could download the file when the URL was made; the download checks them against the
    row again (:meth:`StoredFile.visible_by`), so a URL stops working when the file turns
    private to someone else, is replaced (``version``: its SHA-256, or ``oid:<n>``) or is
    deleted, without a query for the user.
    """

    uuid: uuid.UUID
    version: str
    name: str
    user: str | None
    every: bool
    expires: int  # Unix seconds

    def expired(self) -> bool:
        return self.expires < time.time()

    def rule_key(self) -> tuple[str, str | None, bool]:
        """Return what the row must match besides the UUID (a hashable key)."""
        return self.version, self.user, self.every


def make_signed_token(grant: SignedGrant) -> str:
    """Return the signed token of ``grant``."""
    payload: dict[str, Any] = {
        "u": str(grant.uuid),
        "v": grant.version,
        "n": grant.name,
        "e": grant.expires,
    }
    if grant.user is not None:
        payload["w"] = grant.user
    if grant.every:
        payload["a"] = 1
    return signing.dumps(payload, salt=SIGNED_SALT, compress=True)


def read_signed_token(token: str) -> tuple[LinkState, SignedGrant | None]:
    """Return whether a signed URL's token is valid, expired or invalid, and its grant."""
    try:
        payload = signing.loads(token, salt=SIGNED_SALT)
        grant = SignedGrant(
            uuid=uuid.UUID(str(payload["u"])),
            version=str(payload["v"]),
            name=str(payload["n"]),
            user=None if payload.get("w") is None else str(payload["w"]),
            every=payload.get("a") == 1,
            expires=int(payload["e"]),
        )
    except (signing.BadSignature, KeyError, TypeError, ValueError):
        return LinkState.INVALID, None
    if grant.expired():
        return LinkState.EXPIRED, grant
    return LinkState.VALID, grant


def make_signed_url(grant: SignedGrant) -> str:
    """Return the path of the signed URL of ``grant``: it ends with the file's name."""
    token = make_signed_token(grant)
    return reverse("files_app:signed", kwargs={"token": token, "filename": grant.name})

"""Quotas (issue 25, point 4): what a user may store, and what the database may hold,
checked before the bytes of an upload move.

Two measures of the same bytes, each limiting what it is fair to limit:

* **Stored (logical)**: the sizes of a user's stored files (those in the trash too), of
  their versions and of their uploads in progress (by ``Upload-Length``). A user's quota
  (``FILES_APP_USER_QUOTA``, or their :class:`~files_app.models.UserQuota`) limits this:
  it is what the user asked to keep, it does not change when someone else uploads or
  deletes the same bytes, and it tells nobody that someone else holds a file (a quota on
  bytes after dedupe would: a user's upload of another's file would cost them nothing).
* **Held (physical)**: the bytes of the distinct large objects that stored files and
  versions reference (an object shared by dedupe counts once), plus uploads in progress.
  The global cap (``FILES_APP_TOTAL_QUOTA``) limits this: it is what the database's disk
  holds, whoever asked. Files ``files_move`` took to another storage count as stored, not
  as held. Disk usage itself (``pg_largeobject``'s pages, compression, dead rows waiting
  for VACUUM) is ``files_stats``'s to report; it does not shrink when files are deleted,
  so no cap can be set on it.

Uploads are checked against the uploader: the admin's upload by the request's declared
length before a byte is read, again as bytes arrive, and a last time under :func:`lock`
in the transaction that saves it (two uploads in flight at once each fit the room they
saw; the second to save sees the first); a tus upload at creation by its
``Upload-Length`` (reserved under the lock from then on) and at every ``PATCH``. Saves
from code are not checked: call :func:`check` where your own code takes uploads.

Public API: :func:`check`, :func:`limited`, :func:`lock`, :func:`room`, :func:`usage_of`,
:func:`stored_by`, :func:`held`, :class:`QuotaExceeded`, :class:`Usage` (docs/reference.md,
"Public API").
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from django.db import connections, router
from django.db.models import Sum
from django.template.defaultfilters import filesizeformat

from files_app.conf import app_settings
from files_app.models import FileVersion, StoredFile, Upload, UserQuota
from files_app.references import column

# The advisory lock of quota checks (lock()): a key of its own, the bytes of "fa-quota".
QUOTA_LOCK = int.from_bytes(b"fa-quota", "big") - 2**63

__all__ = [
    "QuotaExceeded",
    "Usage",
    "check",
    "held",
    "limited",
    "lock",
    "room",
    "stored_by",
    "usage_of",
]


@dataclass(frozen=True)
class Usage:
    """Bytes in use under a limit (None: no limit)."""

    used: int
    limit: int | None

    @property
    def room(self) -> int | None:
        """Return the bytes left under the limit (0 when over it), or None for no limit."""
        return None if self.limit is None else max(self.limit - self.used, 0)


class QuotaExceeded(Exception):
    """An upload would go over a quota: ``which`` ("user" or "total"), with its usage."""

    def __init__(self, which: str, usage: Usage, adding: int) -> None:
        self.which, self.usage, self.adding = which, usage, adding
        whose = "your quota" if which == "user" else "the site's storage cap"
        super().__init__(
            f"Over {whose}: {size(usage.used)} of {size(usage.limit or 0)} used, and this "
            f"upload needs {size(adding)} more."
        )


def size(n: int) -> str:
    """Return ``n`` bytes for people to read, with plain spaces (for text answers too)."""
    return str(filesizeformat(n)).replace("\xa0", " ")


def _user_id(user: Any | None) -> Any | None:
    return user.pk if user is not None and getattr(user, "is_authenticated", False) else None


def user_limit(user: Any | None) -> int | None:
    """Return the bytes ``user`` may store: their ``UserQuota``, else
    ``FILES_APP_USER_QUOTA`` (None for no limit, and for no user)."""
    user_id = _user_id(user)
    if user_id is None:
        return None
    own = UserQuota.objects.filter(user_id=user_id).first()
    return own.limit if own is not None else app_settings.USER_QUOTA


def stored_by(user: Any, using: str | None = None) -> int:
    """Return the bytes ``user`` stores (logical): their files, in the trash too, the
    files' versions, and their uploads in progress at their full length."""
    user_id = _user_id(user)
    if user_id is None:
        return 0
    using = using or router.db_for_read(StoredFile)
    files = StoredFile.everything.using(using).filter(owner_id=user_id)
    versions = FileVersion.objects.using(using).filter(stored_file__owner_id=user_id)
    uploads = Upload.objects.using(using).filter(owner_id=user_id)
    return sum(
        queryset.aggregate(total=Sum(field))["total"] or 0
        for queryset, field in ((files, "size"), (versions, "size"), (uploads, "length"))
    )


def held(using: str | None = None) -> int:
    """Return the bytes the database holds for stored files (physical): each large object
    that a stored file or version references once, and uploads in progress at their full
    length. One statement; it reads every row's object and size (bench/catalogue.py)."""
    using = using or router.db_for_read(StoredFile)
    qn = connections[using].ops.quote_name
    files, versions, uploads = (
        qn(model._meta.db_table) for model in (StoredFile, FileVersion, Upload)
    )

    def col(model: Any, name: str) -> str:
        return column(model, name, qn)

    sql = (
        "SELECT coalesce((SELECT sum(size) FROM (SELECT max(size) AS size FROM ("
        f"SELECT {col(StoredFile, 'file')} AS oid, {col(StoredFile, 'size')} AS size "
        f"FROM {files} WHERE {col(StoredFile, 'file')} IS NOT NULL UNION ALL "
        f"SELECT {col(FileVersion, 'file')}, {col(FileVersion, 'size')} FROM {versions}"
        ") r GROUP BY oid) o), 0) + coalesce((SELECT sum("
        f"{col(Upload, 'length')}) FROM {uploads}), 0)"
    )
    with connections[using].cursor() as cursor:
        cursor.execute(sql)
        return int(cursor.fetchone()[0])


# Seconds a process may use the held bytes it last added up, where it says it may (the
# PATCHes of an upload in flight): adding them up reads every row (bench/RESULTS.md).
HELD_REUSE = 30.0
_last_held: dict[str, tuple[float, int]] = {}


def _held(using: str | None, *, fresh: bool) -> int:
    using = using or router.db_for_read(StoredFile)
    now = time.monotonic()
    if not fresh and (last := _last_held.get(using)) and now - last[0] < HELD_REUSE:
        return last[1]
    value = held(using)
    _last_held[using] = (now, value)
    return value


def usage_of(
    user: Any | None, *, fresh: bool = True, using: str | None = None
) -> dict[str, Usage]:
    """Return the limits that apply to ``user``'s uploads with what they use: "user" (their
    quota, on stored bytes) and "total" (the cap, on held bytes), each if set, read from
    ``using`` (the database for reading stored files by default). Without ``fresh``, the
    held bytes may be this process's figure of up to ``HELD_REUSE`` seconds ago (the
    user's stored bytes are always added up again)."""
    found: dict[str, Usage] = {}
    limit = user_limit(user)
    if limit is not None:
        found["user"] = Usage(stored_by(user, using), limit)
    if app_settings.TOTAL_QUOTA is not None:
        found["total"] = Usage(_held(using, fresh=fresh), app_settings.TOTAL_QUOTA)
    return found


def limited(user: Any | None) -> bool:
    """Return whether a quota or the site's cap applies to ``user``'s uploads (without
    adding anything up)."""
    return app_settings.TOTAL_QUOTA is not None or user_limit(user) is not None


def room(user: Any | None) -> tuple[str, Usage] | None:
    """Return the tightest limit on ``user``'s uploads — "user" or "total", with its
    usage (``usage.room`` is what they may still upload) — or None when none applies."""
    limits = [(which, usage) for which, usage in usage_of(user).items()]
    return min(limits, key=lambda item: item[1].room or 0, default=None)


def lock(using: str) -> None:
    """Hold the quota lock until the current transaction ends: what is checked and then
    reserved (a tus upload's length) in it is not checked by another at the same time."""
    with connections[using].cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(%s)", [QUOTA_LOCK])


def check(user: Any | None, adding: int, *, fresh: bool = True, using: str | None = None) -> None:
    """Raise :class:`QuotaExceeded` if storing ``adding`` more bytes for ``user`` would go
    over their quota or the site's cap (``adding`` 0: whether they are over it already;
    ``fresh`` and ``using``: see :func:`usage_of`). To check and then store without
    another upload passing the same check meanwhile, call :func:`lock` first in the
    transaction that stores, and pass its database as ``using``."""
    for which, usage in usage_of(user, fresh=fresh, using=using).items():
        if usage.limit is not None and usage.used + adding > usage.limit:
            raise QuotaExceeded(which, usage, adding)

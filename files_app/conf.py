"""Typed, lazily read settings of files_app (``FILES_APP_*``), with their defaults.

Internal to files_app, not part of its public API (docs/reference.md, "Public API").
"""

from __future__ import annotations

from typing import Any

from django.conf import settings

MiB = 1024 * 1024


class Settings:
    """Read ``FILES_APP_<NAME>`` from Django settings, falling back to a default."""

    @property
    def DATABASE(self) -> str:
        """The database alias that holds large objects by default."""
        return str(self._get("DATABASE", "default"))

    @property
    def DOWNLOAD_DATABASE(self) -> str | None:
        """The alias downloads read stored files from (a hot standby of the database that
        holds them), falling back to that database for a file not replicated yet; None
        reads them where they are stored."""
        return self._get("DOWNLOAD_DATABASE", None)  # type: ignore[no-any-return]

    @property
    def STANDBY_MAX_LAG(self) -> float | None:
        """Seconds a hot standby (``DOWNLOAD_DATABASE``) may lag behind the primary and still
        serve downloads: the oldest access decision (public, owner, deleted) it may act on;
        None for no bound."""
        return self._get("STANDBY_MAX_LAG", 5)  # type: ignore[no-any-return]

    @property
    def STANDBY_RETRY(self) -> float:
        """Seconds downloads keep away from a hot standby that could not be reached before
        they try it again."""
        return self._get("STANDBY_RETRY", 10)  # type: ignore[no-any-return]

    @property
    def PUBLIC_MAX_AGE(self) -> int:
        """Seconds browsers and caching proxies may keep a public file (its Cache-Control):
        how long a file made private or deleted may still be served from a cache."""
        return self._get("PUBLIC_MAX_AGE", 300)  # type: ignore[no-any-return]

    @property
    def CHUNK_SIZE(self) -> int:
        """How many bytes to read or write per large-object call."""
        return self._get("CHUNK_SIZE", MiB)  # type: ignore[no-any-return]

    @property
    def MAX_RANGES(self) -> int:
        """How many ranges one request may ask for before the Range header is ignored."""
        return self._get("MAX_RANGES", 100)  # type: ignore[no-any-return]

    @property
    def MAX_UPLOAD_SIZE(self) -> int | None:
        """The largest upload, in bytes, the upload handler and the tus endpoint accept; None
        for no limit."""
        return self._get("MAX_UPLOAD_SIZE", None)  # type: ignore[no-any-return]

    @property
    def SWEEP_GRACE(self) -> int:
        """Seconds an unreferenced large object is left alone before the sweeper frees it."""
        return self._get("SWEEP_GRACE", 24 * 3600)  # type: ignore[no-any-return]

    @property
    def PREPARE(self) -> bool:
        """Whether the lean path prepares its statements on the server (psycopg 3).

        Turn it off behind PgBouncer older than 1.22 in transaction mode, which cannot
        keep prepared statements.
        """
        return self._get("PREPARE", True)  # type: ignore[no-any-return]

    @property
    def UPLOAD_EXPIRY(self) -> int:
        """Seconds an unfinished resumable (tus) upload is kept after it was created;
        ``files_sweep`` then deletes it and frees its large object."""
        return self._get("UPLOAD_EXPIRY", 24 * 3600)  # type: ignore[no-any-return]

    @property
    def SIGNED_URL_EXPIRY(self) -> int:
        """Seconds a signed URL of a stored file (``StoredFile.signed_url``) stays valid
        unless its maker says otherwise."""
        return self._get("SIGNED_URL_EXPIRY", 3600)  # type: ignore[no-any-return]

    @property
    def TRASH_DAYS(self) -> int:
        """Days a deleted stored file stays in the trash before ``files_sweep`` deletes it;
        0: deleting deletes at once."""
        return self._get("TRASH_DAYS", 0)  # type: ignore[no-any-return]

    @property
    def USER_QUOTA(self) -> int | None:
        """Bytes each user may store (their files, the files' versions, their uploads in
        progress: logical bytes, before dedupe) unless their ``UserQuota`` says otherwise;
        None for no limit."""
        return self._get("USER_QUOTA", None)  # type: ignore[no-any-return]

    @property
    def TOTAL_QUOTA(self) -> int | None:
        """Bytes the database may hold in stored files' large objects, versions and uploads
        in progress (physical bytes: an object shared by dedupe counts once); None for no
        cap."""
        return self._get("TOTAL_QUOTA", None)  # type: ignore[no-any-return]

    @property
    def LINK_RESUME(self) -> int:
        """Seconds after its last counted download that a share link which reached its
        download limit still answers ranges that start no new download (a player's seeks,
        a resumed download); 0: none."""
        return self._get("LINK_RESUME", 3600)  # type: ignore[no-any-return]

    @property
    def VERSIONS(self) -> int:
        """How many earlier contents of a stored file replacing it keeps (its versions,
        newest first); 0: replacing a file frees what it held."""
        return self._get("VERSIONS", 0)  # type: ignore[no-any-return]

    @property
    def SIGNED_REDIRECT(self) -> bool:
        """Whether a private file's own URL answers a user who may download it with a
        redirect to a signed URL (which the lean path serves), instead of serving it."""
        return self._get("SIGNED_REDIRECT", False)  # type: ignore[no-any-return]

    @property
    def REDIRECT_STORAGES(self) -> dict[str, int]:
        """Storages (``STORAGES`` aliases, S3) whose moved files are answered with a
        redirect to a presigned URL valid this many seconds, instead of through Django."""
        return self._get("REDIRECT_STORAGES", {})  # type: ignore[no-any-return]

    @property
    def DEDUPE(self) -> bool:
        """Whether a stored file whose bytes (SHA-256 and size) another stored file already
        has shares that file's large object instead of keeping a second copy."""
        return self._get("DEDUPE", True)  # type: ignore[no-any-return]

    def _get(self, name: str, default: Any) -> Any:
        return getattr(settings, f"FILES_APP_{name}", default)


app_settings = Settings()

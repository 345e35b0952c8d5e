"""The stored-file model: one uploaded file, its metadata and its large object."""

from __future__ import annotations

import logging
import posixpath
import secrets
import time
import uuid
from collections.abc import Iterable
from collections.abc import Set as AbstractSet
from contextvars import ContextVar
from datetime import datetime, timedelta
from typing import Any, cast

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.files.base import File
from django.core.files.uploadedfile import UploadedFile
from django.core.validators import MinValueValidator
from django.db import connections, models, router, transaction
from django.db.models.expressions import RawSQL
from django.db.models.functions import Now, RowNumber
from django.urls import reverse
from django.utils import timezone

from files_app import external, firstread, largeobjects, mediatypes, references, responder
from files_app.conf import app_settings
from files_app.digests import Digest, digest_chunks
from files_app.fields import LargeObjectField, WrittenObject
from files_app.maintenance import LargeObjectQuerySet
from files_app.sharing import SignedGrant, make_signed_url
from files_app.sniff import GENERIC_TYPES, SNIFF_BYTES, content_type_for
from files_app.storage import oid_from_name

logger = logging.getLogger("files_app")

__all__ = [
    "FileVersion",
    "ShareLink",
    "ShareLinkQuerySet",
    "StoredFile",
    "StoredFileQuerySet",
    "TrashedFile",
    "Upload",
    "UserQuota",
]


NAME_LENGTH = 255
# Columns that describe the bytes of the file: only save() may set them (from the object).
DERIVED_FIELDS = frozenset({"file", "size", "sha256", "storage", "storage_name"})
# What describing a file (re)computes: saved with it.
DESCRIBED_FIELDS = ("name", "size", "sha256", "storage", "storage_name")


# Set while bulk_update() writes rows it has just described (it goes through update()).
_described_rows: ContextVar[bool] = ContextVar("files_app_described_rows", default=False)


def _fit(name: str, length: int) -> str:
    """Shorten a file name to ``length`` characters, keeping a short extension."""
    if len(name) <= length:
        return name
    root, ext = posixpath.splitext(name)
    if len(ext) > length // 4:
        return name[:length]
    return root[: length - len(ext)] + ext


def _upload_name(name: str) -> str:
    """Return the name a stored file takes from an uploaded file called ``name`` ("" if
    nothing is left): its last path segment, printable characters only, not ``.`` or
    ``..``, fitted to the column.

    Django's multipart parser has already done the same to the admin's uploads
    (``sanitize_file_name``, which also cuts at backslashes: old browsers sent Windows
    paths); this does it for the other routes (tus, ``File`` objects).
    """
    name = "".join(ch for ch in posixpath.basename(name) if ch.isprintable())
    return "" if name in {".", ".."} else _fit(name, NAME_LENGTH)


def validate_content_type(value: str) -> None:
    """Raise ValidationError unless ``value`` is a media type (RFC 9110 §8.3.1)."""
    try:
        mediatypes.normalize(value)
    except ValueError as exc:
        raise ValidationError(str(exc), code="invalid_content_type") from exc


class StoredFileQuerySet(LargeObjectQuerySet["StoredFile"]):
    """Stored files; the bulk routes keep every row true to its large object too."""

    def shared_object(
        self, sha256: str, size: int, *, besides_pk: int | None = None
    ) -> int | None:
        """Return a large object that a stored file (other than ``besides_pk``) or a version
        holds with these bytes, locked until the transaction ends (see
        :func:`shared_object`), or None. ``files_move --to large-objects`` points a file
        back at it instead of copying."""
        return shared_object(self.db, sha256, size, besides_pk=besides_pk)

    def bulk_create(self, objs: Iterable[StoredFile], *args: Any, **kwargs: Any) -> Any:
        objs = list(objs)
        with transaction.atomic(using=self.db):
            for obj in objs:
                obj.describe_file(self.db)
            return super().bulk_create(objs, *args, **kwargs)

    def _drain_after_commit(self, using: str) -> None:
        # Also the copies in other storages that deleted or moved-back rows let go of.
        super()._drain_after_commit(using)
        drain_removals_after_commit(using)

    def bulk_update(
        self, objs: Iterable[StoredFile], fields: Iterable[str], batch_size: int | None = None
    ) -> int:
        objs, fields = list(objs), list(fields)
        if {"file", "content_type"} & set(fields):
            with transaction.atomic(using=self.db):
                for obj in objs:
                    moved = obj.storage
                    obj.describe_file(self.db)
                    if moved and not obj.storage:
                        drain_removals_after_commit(self.db)
                described = ["file", "content_type", *DESCRIBED_FIELDS]
                fields += [name for name in described if name not in fields]
                token = _described_rows.set(True)
                try:
                    return super().bulk_update(objs, fields, batch_size)
                finally:
                    _described_rows.reset(token)
        if DERIVED_FIELDS & set(fields):
            raise ValueError(_derived_message(DERIVED_FIELDS & set(fields)))
        return super().bulk_update(objs, fields, batch_size)

    bulk_update.alters_data = True  # type: ignore[attr-defined]

    def update(self, **kwargs: Any) -> int:
        if _described_rows.get():
            return super().update(**kwargs)
        if derived := DERIVED_FIELDS & kwargs.keys():
            raise ValueError(_derived_message(derived))
        if "content_type" in kwargs:
            value = kwargs["content_type"]
            if not isinstance(value, str):
                raise ValueError(f"content_type must be a string, not {value!r}.")
            kwargs["content_type"] = mediatypes.normalize(value) if value else ""
        return super().update(**kwargs)

    update.alters_data = True  # type: ignore[attr-defined]

    def trash(self, by: Any | None = None) -> int:
        """Move the live files of this queryset to the trash (``FILES_APP_TRASH_DAYS``),
        noting ``by`` (a user) and the time; return how many moved. Nothing is freed: the
        rows keep their objects until ``files_sweep`` empties the trash."""
        return self.filter(trashed__isnull=True).update(
            trashed=timezone.now(), trashed_by=_user_or_none(by)
        )

    trash.alters_data = True  # type: ignore[attr-defined]

    def restore(self) -> int:
        """Take the files of this queryset out of the trash; return how many came back."""
        return self.filter(trashed__isnull=False).update(trashed=None, trashed_by=None)

    restore.alters_data = True  # type: ignore[attr-defined]

    def delete(self, *, by: Any | None = None) -> tuple[int, dict[str, int]]:
        """With ``FILES_APP_TRASH_DAYS``, move live files to the trash (noting ``by``, a
        user) and delete those already in it; without, delete (and free what no other row
        holds)."""
        if not app_settings.TRASH_DAYS:
            return super().delete()
        # Those already in the trash first: the ones trashed now must not be purged too.
        in_trash = self.filter(trashed__isnull=False)
        deleted, counts = super(StoredFileQuerySet, in_trash).delete()
        moved = self.trash(by)
        label = self.model._meta.label
        return deleted + moved, {**counts, label: counts.get(label, 0) + moved}

    delete.alters_data = True  # type: ignore[attr-defined]
    delete.queryset_only = True  # type: ignore[attr-defined]

    def with_first_read(self, guess: tuple[int, int]) -> StoredFileQuerySet:
        """Annotate each row with its object's size (NULL for a missing object) and the
        bytes of ``guess``, a :func:`files_app.firstread.first_read_guess`: the row, the
        check of its size and the answer's first read are one query."""
        qn = connections[self.db].ops.quote_name
        table = qn(self.model._meta.db_table)
        file, size = (
            f"{table}.{references.column(self.model, name, qn)}" for name in ("file", "size")
        )
        # A missing object reads as NULL (lo_open would raise, and abort a transaction).
        exists = (
            f"EXISTS (SELECT 1 FROM pg_catalog.pg_largeobject_metadata m WHERE m.oid = {file})"
        )
        return self.annotate(
            files_app_actual_size=RawSQL(
                f"CASE WHEN {exists} THEN {largeobjects.size_sql(file)} END", []
            ),
            files_app_first_read=RawSQL(
                f"CASE WHEN {exists} THEN {firstread.first_read_sql(file, size)} END",
                firstread.first_read_params(guess),
            ),
        )

    def relocate(self, stored: StoredFile, oid: int | None, storage: str, name: str) -> bool:
        """Point ``stored``'s row at the same bytes in another place — the large object
        ``oid``, or ``name`` in ``STORAGES[storage]`` — as ``files_move`` does once the copy
        is verified; return False, changing nothing, if the row no longer holds the bytes it
        was loaded with (replaced or deleted meanwhile). The place it leaves is freed after
        commit by the triggers' queues."""
        with transaction.atomic(using=self.db):
            unchanged = self.select_for_update().filter(
                pk=stored.pk,
                file=stored.file.oid if stored.file else None,
                storage=stored.storage,
                storage_name=stored.storage_name,
                size=stored.size,
                sha256=stored.sha256,
            )
            if not unchanged.exists():
                return False
            token = _described_rows.set(True)
            try:
                self.filter(pk=stored.pk).update(file=oid, storage=storage, storage_name=name)
            finally:
                _described_rows.reset(token)
            self._drain_after_commit(self.db)
        return True

    relocate.alters_data = True  # type: ignore[attr-defined]


def _derived_message(fields: AbstractSet[str]) -> str:
    names = ", ".join(sorted(fields))
    return (
        f"A stored file's {names} must describe its large object: assign the file and call "
        f"save() (or bulk_create()/bulk_update() with 'file'), which compute them."
    )


def _user_or_none(user: Any | None) -> Any | None:
    """A user to note as having trashed files: None for none, or an anonymous one."""
    return user if user is not None and getattr(user, "is_authenticated", False) else None


_StoredFileManager = models.Manager.from_queryset(StoredFileQuerySet)


class LiveFileManager(_StoredFileManager["StoredFile"]):
    """Stored files outside the trash: what the app shows, lists and serves."""

    def get_queryset(self) -> StoredFileQuerySet:
        return cast(StoredFileQuerySet, super().get_queryset().filter(trashed__isnull=True))


class TrashManager(_StoredFileManager["StoredFile"]):
    """Stored files in the trash."""

    def get_queryset(self) -> StoredFileQuerySet:
        return cast(StoredFileQuerySet, super().get_queryset().filter(trashed__isnull=False))


class StoredFile(models.Model):
    """A file kept in a large object, with the metadata to serve it."""

    uuid = models.UUIDField("UUID", default=uuid.uuid4, unique=True, editable=False)
    # NULL once files_move has taken the bytes to another storage (``storage``).
    file = LargeObjectField(upload_to="", null=True)
    name = models.CharField(
        max_length=NAME_LENGTH,
        blank=True,
        db_index=True,
        help_text="The file name shown and served.",
    )
    content_type = models.CharField(
        max_length=255,
        blank=True,
        db_index=True,
        help_text="Left empty, it is taken from the upload, the first bytes or the name.",
        validators=[validate_content_type],
    )
    size = models.BigIntegerField(default=0, editable=False)
    # Indexed: dedupe (FILES_APP_DEDUPE) looks a file's bytes up by their hash.
    sha256 = models.CharField("SHA-256", max_length=64, blank=True, editable=False, db_index=True)
    created = models.DateTimeField(auto_now_add=True, db_index=True)
    updated = models.DateTimeField(auto_now=True)
    public = models.BooleanField(
        default=False, db_index=True, help_text="Public files can be downloaded by anyone."
    )
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="stored_files",
    )

    # db_default: rows that other programs insert are in large objects too.
    storage = models.CharField(
        max_length=100,
        blank=True,
        default="",
        db_default="",
        editable=False,
        help_text="The STORAGES alias holding the file when it is not in a large object.",
    )
    storage_name = models.CharField(
        max_length=1024, blank=True, default="", db_default="", editable=False
    )
    # In the trash since (FILES_APP_TRASH_DAYS), and who put it there; NULL: a live file.
    trashed = models.DateTimeField(null=True, blank=True, editable=False, db_index=True)
    trashed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        editable=False,
        on_delete=models.SET_NULL,
        related_name="+",
    )

    #: Files outside the trash (the default manager: the admin, the views, your queries).
    objects = LiveFileManager()
    #: Every row, in the trash or not.
    everything = StoredFileQuerySet.as_manager()
    #: The trash.
    in_trash = TrashManager()

    # The name and content type as loaded or last saved (see from_db()).
    _loaded: tuple[str | None, str | None] = (None, None)
    # The object that size and sha256 describe, as loaded or last saved.
    _described_oid: int | None = None
    # Who is saving (save(by=)): noted with the version a replaced content becomes.
    _changed_by: Any = None

    class Meta:
        ordering = ["-created", "-pk"]
        verbose_name = "stored file"
        # Cascades (a deleted owner) go through StoredFileQuerySet too, and free the
        # objects a big delete queued; they see the trash too.
        base_manager_name = "everything"
        default_manager_name = "objects"
        indexes = [models.Index(fields=["public", "-created"], name="files_app_public_created")]
        constraints = [
            # A file lives in exactly one place: its large object or another storage.
            models.CheckConstraint(
                condition=(
                    models.Q(file__isnull=False, storage="", storage_name="")
                    | (
                        models.Q(file__isnull=True)
                        & ~models.Q(storage="")
                        & ~models.Q(storage_name="")
                    )
                ),
                name="files_app_storedfile_one_home",
            )
        ]

    def __str__(self) -> str:
        return self.name or str(self.uuid)

    def save(self, *args: Any, by: Any | None = None, **kwargs: Any) -> None:
        """Save the row, storing and describing a new file first; ``by`` (a user) is who
        replaced the file, noted with the version the old content becomes
        (``FILES_APP_VERSIONS``)."""
        using = kwargs.get("using") or router.db_for_write(type(self), instance=self)
        update_fields = kwargs.get("update_fields")
        self._changed_by = by
        # One transaction for the large object and the row: a failed INSERT or UPDATE
        # leaves no committed object behind (docs/design.md, "Large objects").
        with transaction.atomic(using=using):
            if update_fields is None or {"file", "content_type"} & set(update_fields):
                moved = self.storage
                self.describe_file(using)
                if moved and not self.storage:  # a moved file replaced: its copy goes
                    drain_removals_after_commit(using)
                if update_fields is not None:
                    kwargs["update_fields"] = {*update_fields, *DESCRIBED_FIELDS}
            elif DERIVED_FIELDS & set(update_fields):
                raise ValueError(_derived_message(DERIVED_FIELDS & set(update_fields)))
            super().save(*args, **kwargs)
        self._loaded = (self.name, self.content_type)

    save.alters_data = True  # type: ignore[attr-defined]

    def get_absolute_url(self) -> str:
        return reverse(
            "files_app:download", kwargs={"uuid": self.uuid, "filename": self.download_name}
        )

    def delete(
        self, using: Any = None, keep_parents: bool = False, *, by: Any | None = None
    ) -> tuple[int, dict[str, int]]:
        """With ``FILES_APP_TRASH_DAYS``, move the file to the trash (noting ``by``, a user):
        nothing is freed, and :meth:`restore` brings it back; a file already in the trash,
        or any file without the setting, is deleted (its object freed if no other row holds
        it)."""
        if app_settings.TRASH_DAYS and self.trashed is None:
            self.trashed, self.trashed_by = timezone.now(), _user_or_none(by)
            self.save(update_fields=["trashed", "trashed_by"], using=using)
            return 1, {self._meta.label: 1}
        return super().delete(using=using, keep_parents=keep_parents)

    delete.alters_data = True  # type: ignore[attr-defined]

    def restore(self) -> None:
        """Take the file out of the trash: the same UUID, URL, share links and signed URLs
        (those not expired) download it again."""
        self.trashed, self.trashed_by = None, None
        self.save(update_fields=["trashed", "trashed_by"])

    restore.alters_data = True  # type: ignore[attr-defined]

    @classmethod
    def from_db(
        cls, db: str | None, field_names: Any, values: Any, *args: Any, **kwargs: Any
    ) -> StoredFile:
        # *args, **kwargs: Django 6.1 passes fetch_mode too.
        instance = super().from_db(db, field_names, values, *args, **kwargs)
        # Remember what was loaded: a replaced file brings its own name and type unless
        # they were edited too.
        instance._loaded = (instance.__dict__.get("name"), instance.__dict__.get("content_type"))
        # Its size and hash describe the object it was loaded with.
        instance._described_oid = oid_from_name(instance.__dict__.get("file"))
        return instance

    @property
    def download_name(self) -> str:
        """Return the name a browser saves the file under."""
        return self.download_name_for(self.name)

    @staticmethod
    def download_name_for(name: str) -> str:
        """Return the name a browser saves a file of this ``name`` under."""
        # No path separators or control characters: the name is a URL path segment.
        name = "".join(ch if ch.isprintable() and ch != "/" else "_" for ch in name)
        return name.strip() or "download"

    @property
    def etag(self) -> str:
        """Return a strong ETag: the content hash (an object never changes once stored)."""
        return self.etag_for(self.sha256, oid_from_name(self.file.name))

    @staticmethod
    def etag_for(sha256: str, oid: int | None) -> str:
        """Return the ETag of a file with this hash and object."""
        return f'"{sha256}"' if sha256 else f'"{oid}"'

    @classmethod
    def visible_to(cls, user: Any | None, *, public: bool = True) -> models.Q:
        """Return the rule of who may download what, as a filter: public files to anyone,
        private ones to their owner and to users with ``files_app.view_storedfile``.

        ``user`` None stands for anyone at all: the lean path (files_app.fastpath), which
        knows no user, serves only what this allows then, compiled into its own query, and
        hands every other request to the views, which apply it with the request's user.
        ``public=False`` leaves public files to their owner and those users too: who may
        download a file's earlier versions (:class:`FileVersion`).
        """
        user_key, every = cls.grounds_of(user)
        return cls.visible_by(user_key, every=every, public=public)

    @staticmethod
    def grounds_of(user: Any | None) -> tuple[str | None, bool]:
        """Return on what grounds ``user`` may download files: their primary key as text
        (None for anyone: no user, or an anonymous one), and whether they may download every
        file (``files_app.view_storedfile``)."""
        if user is None:
            return None, False
        every = bool(user.has_perm("files_app.view_storedfile"))
        return (str(user.pk) if user.is_authenticated else None), every

    @classmethod
    def visible_by(
        cls, user_key: str | None, *, every: bool = False, public: bool = True
    ) -> models.Q:
        """Return the one rule of who may download what (see :meth:`visible_to`), from the
        grounds :meth:`grounds_of` gives: a signed URL keeps those, not the user."""
        if every:
            return cls.downloadable()
        visible = models.Q(public=True) if public else models.Q(pk__in=[])
        if user_key is not None:
            owner = cls._meta.get_field("owner").target_field  # type: ignore[union-attr]
            visible |= models.Q(owner=owner.to_python(user_key))
        return cls.downloadable() & visible

    @staticmethod
    def downloadable() -> models.Q:
        """Return the rows anyone may download at all, by any URL: those outside the trash
        (share links, whose holders may have any file, are held to this alone)."""
        return models.Q(trashed__isnull=True)

    @property
    def version(self) -> str:
        """Return what says which content this row holds: its SHA-256 (or object)."""
        return self.sha256 or f"oid:{oid_from_name(self.file.name) or 0}"

    @classmethod
    def signed_rule(cls, grant: SignedGrant) -> models.Q:
        """Return the rows a signed URL's ``grant`` still allows: that version of the file,
        visible on the grounds the URL was made on (:meth:`visible_by`)."""
        version = grant.version
        if version.startswith("oid:"):
            same = models.Q(file=int(version.removeprefix("oid:")), sha256="")
        else:
            same = models.Q(sha256=version)
        return same & cls.visible_by(grant.user, every=grant.every)

    def signed_url(self, user: Any | None, expires: int | float | timedelta | None = None) -> str:
        """Return a short-lived URL that downloads this file (ranges and all) without a
        session: for ``user``, on the grounds they may download it now (owner, the
        ``files_app.view_storedfile`` permission, or public), until ``expires`` (seconds or
        a timedelta; default ``FILES_APP_SIGNED_URL_EXPIRY``).

        The URL is checked on every request against the row, not the user: it stops working
        when it expires, when the file is replaced or deleted, or when the file is no longer
        visible on those grounds (made private, given to another owner). Like a presigned
        S3 URL it is a bearer capability: whoever holds it may download the file until
        then. A URL made for someone who may not download the file answers 404.
        """
        if expires is None:
            expires = app_settings.SIGNED_URL_EXPIRY
        if isinstance(expires, timedelta):
            expires = expires.total_seconds()
        user_key, every = self.grounds_of(user)
        grant = SignedGrant(
            uuid=self.uuid,
            version=self.version,
            name=self.download_name,
            user=user_key,
            every=every,
            expires=int(time.time() + expires),
        )
        return make_signed_url(grant)

    @classmethod
    def download_info_for(
        cls,
        *,
        oid: int | None,
        name: str,
        content_type: str,
        sha256: str,
        size: int,
        updated: Any,
        cache_control: str | None,
        as_attachment: bool = False,
    ) -> responder.FileInfo:
        """Return what the responder needs to answer a download of a file with these
        columns: the one description of a stored file's download, for the views
        (:meth:`download_info`) and the lean path, which reads the columns itself."""
        return responder.FileInfo(
            size=size,
            filename=cls.download_name_for(name),
            content_type=content_type or responder.DEFAULT_CONTENT_TYPE,
            etag=cls.etag_for(sha256, oid),
            last_modified=int(updated.timestamp()),
            as_attachment=as_attachment,
            cache_control=cache_control,
        )

    def download_info(
        self, *, cache_control: str | None, as_attachment: bool = False
    ) -> responder.FileInfo:
        """Return what the responder needs to answer a download of this file."""
        return self.download_info_for(
            oid=oid_from_name(self.file.name),
            name=self.name,
            content_type=self.content_type,
            sha256=self.sha256,
            size=self.size,
            updated=self.updated,
            cache_control=cache_control,
            as_attachment=as_attachment,
        )

    def describe_file(self, using: str) -> None:
        """Store an unsaved file, and make size, SHA-256, name and type describe the object.

        Whatever route the file took — assigned, saved through ``self.file.save()`` with or
        without ``save=True``, uploaded, or the name of an object that already exists — the
        row ends up true to the bytes it serves. Raise ValueError for a file-less row or a
        content type that is not a media type.
        """
        if "file" in self.get_deferred_fields():
            self._describe_type(None)  # the file is not being changed
            return
        file = self.file
        if not file and self.storage:
            self._describe_type(None)  # moved by files_move, which described it
            return
        if not file:
            raise ValueError(f"{self!r} has no file: a stored file needs one.")
        upload_type = ""
        if not file._committed:
            upload = file.file
            if isinstance(upload, UploadedFile):
                upload_type = upload.content_type or ""
            name = _upload_name(str(file.name or ""))
            file.save(name or "upload", upload, save=False)
            self.storage = self.storage_name = ""  # a moved file replaced: back in the database
        oid = file.oid
        written = file.written if file.written and file.written.oid == oid else None
        if oid == self._described_oid and written is None:
            self._describe_type(None)  # the same object as before: only the type may change
            return
        digest = written.digest if written is not None else self._digest_of_existing(using)
        self.size, self.sha256 = digest.size, digest.sha256
        loaded_name, _ = self._loaded
        if not self.name or self.name == loaded_name:
            given = _fit(written.name, NAME_LENGTH) if written else ""
            self.name = given or self.name or str(self.uuid)
        self._describe_type(digest.head, upload_type)
        if written is not None and oid is not None and app_settings.DEDUPE:
            oid = self._share_twin(using, oid, written)
        replaced = self.pk is not None and oid != self._described_oid
        if replaced and app_settings.VERSIONS and self._keep_version(using):
            FileVersion.objects.using(using).prune(self.pk, app_settings.VERSIONS)
        self._described_oid = oid

    def _keep_version(self, using: str) -> bool:
        """Keep what the row holds now as a version, unless it is in another storage or
        has the bytes this save gives it; return whether a version was kept.

        The row is locked (``FOR UPDATE``) until the transaction ends: replaces of one file
        number their versions one after another. The version is in before the row lets go
        of the object, so the unlink trigger finds it still referenced.
        """
        current = (
            type(self)
            ._base_manager.using(using)
            .select_for_update()
            .filter(pk=self.pk)
            .values_list("file", "name", "content_type", "size", "sha256", "updated")
            .first()
        )
        if current is None:
            return False
        file, name, content_type, size, sha256, updated = current
        if file is None or (sha256 and (sha256, size) == (self.sha256, self.size)):
            return False  # moved by files_move, or the same bytes again
        numbers = FileVersion.objects.using(using).filter(stored_file_id=self.pk)
        last = numbers.aggregate(last=models.Max("number"))["last"] or 0
        FileVersion.objects.using(using).create(
            stored_file_id=self.pk,
            number=last + 1,
            file=str(file),
            name=name,
            content_type=content_type,
            size=size,
            sha256=sha256,
            modified=updated,
            replaced_by=_user_or_none(self._changed_by),
        )
        return True

    def share(
        self,
        *,
        by: Any | None = None,
        expires: datetime | timedelta | None = None,
        max_downloads: int | None = None,
        label: str = "",
    ) -> ShareLink:
        """Make a managed share link of this file (:class:`ShareLink`): anyone holding its
        URL downloads the file until ``expires`` (a time, or how long from now; None: no
        expiry), at most ``max_downloads`` times (None: no limit), unless it is revoked.
        ``by`` (a user) and ``label`` are noted for the lists."""
        if isinstance(expires, timedelta):
            expires = timezone.now() + expires
        if max_downloads is not None and max_downloads < 1:
            raise ValueError(f"max_downloads must be 1 or more, or None, not {max_downloads!r}.")
        return ShareLink.objects.using(self._state.db).create(
            stored_file=self,
            created_by=_user_or_none(by),
            expires=expires,
            max_downloads=max_downloads,
            label=label,
        )

    def restore_version(self, number: int, *, by: Any | None = None) -> None:
        """Make version ``number`` (:class:`FileVersion`) the file's content again, with its
        name and type; what the file held becomes a version in turn (``by``, a user, noted
        as who replaced it). Raise ``FileVersion.DoesNotExist`` for no such version and
        FileNotFoundError if its large object is gone."""
        using = self._state.db or router.db_for_write(type(self), instance=self)
        with transaction.atomic(using=using):
            version = FileVersion.objects.using(using).get(stored_file_id=self.pk, number=number)
            oid = oid_from_name(version.file.name)
            if oid is None or not largeobjects.exists(oid, using):
                raise FileNotFoundError(f"The large object of {version} is gone.")
            self._changed_by = by
            self.sha256, self.size = version.sha256, version.size
            kept = bool(app_settings.VERSIONS) and self._keep_version(using)
            values = {
                "file": oid,
                "name": version.name,
                "content_type": version.content_type,
                "size": version.size,
                "sha256": version.sha256,
                "storage": "",
                "storage_name": "",
                "updated": timezone.now(),
            }
            token = _described_rows.set(True)
            try:
                type(self)._base_manager.using(using).filter(pk=self.pk).update(**values)
            finally:
                _described_rows.reset(token)
            # The row holds the object now: deleting the version frees nothing.
            version.delete()
            if kept:
                FileVersion.objects.using(using).prune(self.pk, app_settings.VERSIONS)
            drain_removals_after_commit(using)  # a moved file's copy, if it was one
        self.refresh_from_db(using=using)

    restore_version.alters_data = True  # type: ignore[attr-defined]

    def _share_twin(self, using: str, oid: int, written: WrittenObject) -> int:
        """Share the object of another stored file or version with the same bytes (an
        earlier version of this file too: its bytes come back), if there is one, and unlink
        the one just written; return the OID the row keeps (:func:`shared_object`)."""
        twin = shared_object(
            using, written.digest.sha256, written.digest.size, besides_oid=oid, besides_pk=self.pk
        )
        if twin is None:
            return oid
        largeobjects.unlink(oid, using)  # written by this save: nothing else has it
        self.file = str(twin)
        self.file.written = WrittenObject(twin, written.digest, written.name)
        return twin

    def _describe_type(self, head: bytes | None, upload_type: str = "") -> None:
        _, loaded_type = self._loaded
        changed = self.content_type != loaded_type
        if head is None and not changed:
            return  # neither the file nor the type changed: keep what the row says
        if changed and self.content_type:
            normal = mediatypes.normalize(self.content_type)  # ValueError: not a media type
            if normal.split(";")[0] not in GENERIC_TYPES:
                self.content_type = normal
                return
        if head is None:
            with self.open_content() as opened:
                head = opened.read(SNIFF_BYTES)
        self.content_type = content_type_for(upload_type, head, self.name)

    def open_content(self) -> File[bytes]:
        """Return the file's bytes opened for reading, wherever they are: its large object,
        or the storage ``files_move`` took them to (read by ranges, in constant memory)."""
        if self.storage:
            return external.ExternalFile(self.storage, self.storage_name, self.size)
        return self.file.open("rb")  # type: ignore[no-any-return]

    def _digest_of_existing(self, using: str) -> Digest:
        # Another row with the same object already describes it (rows are always true).
        twin = (
            type(self)
            ._default_manager.using(using)
            .filter(file=self.file.oid)
            .exclude(pk=self.pk)
            .exclude(sha256="")
            .values_list("size", "sha256")
            .first()
        )
        with self.file.open("rb") as opened:
            if twin is not None:
                return Digest(twin[0], twin[1], opened.read(SNIFF_BYTES))
            return digest_chunks(opened.chunks())


class TrashedFile(StoredFile):
    """The trash, for the admin's trash view: stored files deleted less than
    ``FILES_APP_TRASH_DAYS`` ago."""

    objects = TrashManager()  # type: ignore[assignment,misc]

    class Meta:
        proxy = True
        verbose_name = "trashed file"
        ordering = ["-trashed", "-pk"]
        default_manager_name = "objects"
        base_manager_name = "everything"


class FileVersionQuerySet(LargeObjectQuerySet["FileVersion"]):
    """Versions; deleting them frees the objects that no other row holds."""

    def prune(self, stored_file_id: int, keep: int) -> int:
        """Delete the versions of one stored file beyond the newest ``keep``; return how
        many went."""
        older = self.filter(stored_file_id=stored_file_id).order_by("-number")[keep:]
        pks = list(older.values_list("pk", flat=True))
        return self.filter(pk__in=pks).delete()[0] if pks else 0

    prune.alters_data = True  # type: ignore[attr-defined]

    def prune_all(self, keep: int) -> int:
        """Delete every stored file's versions beyond its newest ``keep`` (what lowering
        ``FILES_APP_VERSIONS`` leaves, for ``files_sweep``); return how many went."""
        ranked = self.annotate(
            rank=models.Window(
                RowNumber(), partition_by=models.F("stored_file_id"), order_by="-number"
            )
        ).filter(rank__gt=keep)
        pks = list(ranked.values_list("pk", flat=True))
        return self.filter(pk__in=pks).delete()[0] if pks else 0

    prune_all.alters_data = True  # type: ignore[attr-defined]


def shared_object(
    using: str,
    sha256: str,
    size: int,
    *,
    besides_oid: int | None = None,
    besides_pk: int | None = None,
) -> int | None:
    """Return the large object of a stored file (other than the row ``besides_pk``) or,
    failing that, of a version, with these bytes (SHA-256 and size) — not ``besides_oid``
    and still there — or None: what dedupe shares.

    The row found is locked (``FOR SHARE``) until the transaction ends: a concurrent delete
    of it waits, and its unlink trigger then sees the reference the caller adds.
    """
    qn = connections[using].ops.quote_name
    for model, extra in ((StoredFile, besides_pk), (FileVersion, None)):
        table = qn(model._meta.db_table)
        file, digest, length, pk = (
            references.column(model, name, qn) for name in ("file", "sha256", "size", "id")
        )
        with connections[using].cursor() as cursor:
            cursor.execute(
                f"SELECT t.{file} FROM {table} t WHERE t.{digest} = %s AND t.{length} = %s "
                f"AND t.{file} IS NOT NULL AND t.{file} IS DISTINCT FROM %s "
                f"AND t.{pk} IS DISTINCT FROM %s AND EXISTS (SELECT 1 FROM "
                f"pg_catalog.pg_largeobject_metadata m WHERE m.oid = t.{file}) "
                "LIMIT 1 FOR SHARE OF t",
                [sha256, size, besides_oid, extra],
            )
            row = cursor.fetchone()
        if row is not None:
            return int(row[0])
    return None


class FileVersion(models.Model):
    """An earlier content of a stored file, kept when the file was replaced
    (``FILES_APP_VERSIONS`` of them, newest first): its own large object — shared, not
    copied, with any row that has the same bytes — name, type, size and SHA-256.

    Download it at :meth:`get_absolute_url` (its owner and users with
    ``files_app.view_storedfile``), make it current again with
    :meth:`StoredFile.restore_version`.
    """

    # The database's own constraint cascades (migration 0009), not Django's collector:
    # deleting stored files by any route — a queryset, a cascade from their owner that stays
    # a fast delete (no row loaded: maintenance.raw_delete_supported), raw SQL — takes their
    # versions, and the unlink trigger frees what those held.
    stored_file = models.ForeignKey(
        StoredFile, on_delete=models.DO_NOTHING, related_name="versions", db_constraint=False
    )
    #: 1 for the first content replaced, then counting up (restoring one numbers anew).
    number = models.PositiveIntegerField()
    file = LargeObjectField(upload_to="")
    name = models.CharField(max_length=NAME_LENGTH, blank=True)
    content_type = models.CharField(max_length=255, blank=True)
    size = models.BigIntegerField()
    sha256 = models.CharField("SHA-256", max_length=64, blank=True, db_index=True)
    #: When this content became the file's (its Last-Modified).
    modified = models.DateTimeField()
    #: When it was replaced, and by whom.
    replaced = models.DateTimeField(default=timezone.now)
    replaced_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )

    objects = FileVersionQuerySet.as_manager()

    class Meta:
        verbose_name = "file version"
        ordering = ["stored_file", "-number"]
        base_manager_name = "objects"
        constraints = [
            models.UniqueConstraint(
                fields=["stored_file", "number"], name="files_app_fileversion_number"
            )
        ]

    def __str__(self) -> str:
        return f"version {self.number} of {self.name or self.stored_file_id}"

    def get_absolute_url(self) -> str:
        return reverse(
            "files_app:version",
            kwargs={
                "uuid": self.stored_file.uuid,
                "number": self.number,
                "filename": StoredFile.download_name_for(self.name),
            },
        )

    @classmethod
    def visible_to(cls, user: Any | None) -> models.Q:
        """Return the versions ``user`` may download: those of the live files they own, or
        of every live file with ``files_app.view_storedfile`` — never the public's, even
        of a public file (a replaced content may be one its owner meant to withdraw)."""
        files = StoredFile._base_manager.filter(StoredFile.visible_to(user, public=False))
        return models.Q(stored_file__in=files)

    def download_info(
        self, *, cache_control: str | None, as_attachment: bool = False
    ) -> responder.FileInfo:
        """Return what the responder needs to answer a download of this version: the one
        description of a stored file's download, with this content's columns."""
        return StoredFile.download_info_for(
            oid=oid_from_name(self.file.name),
            name=self.name,
            content_type=self.content_type,
            sha256=self.sha256,
            size=self.size,
            updated=self.modified,
            cache_control=cache_control,
            as_attachment=as_attachment,
        )


def new_link_token() -> str:
    """Return a new share link's token: 128 random bits, URL-safe."""
    return secrets.token_urlsafe(16)


class ShareLinkQuerySet(models.QuerySet["ShareLink"]):
    """Share links."""

    def revoke(self) -> int:
        """Revoke the links of this queryset not revoked yet; return how many. The next
        request by any of them is refused, in every process (nothing caches a link)."""
        return self.filter(revoked__isnull=True).update(revoked=timezone.now())

    revoke.alters_data = True  # type: ignore[attr-defined]

    def with_state(self) -> ShareLinkQuerySet:
        """Annotate each link with ``is_servable`` and ``is_usable``: whether it may answer
        a request now, and start a download (:meth:`ShareLink.servable`, ``usable``)."""
        boolean: models.BooleanField[bool, bool] = models.BooleanField()
        return self.annotate(
            is_servable=models.ExpressionWrapper(ShareLink.servable(), output_field=boolean),
            is_usable=models.ExpressionWrapper(ShareLink.usable(), output_field=boolean),
        )

    def count_download(self, pk: int) -> bool:
        """Count a download by link ``pk`` if it may start one now; return whether it did.
        One statement: concurrent downloads cannot go past the limit."""
        counted = self.filter(ShareLink.usable(), pk=pk).update(
            downloads=models.F("downloads") + 1, last_download=Now()
        )
        return counted == 1

    count_download.alters_data = True  # type: ignore[attr-defined]


class ShareLink(models.Model):
    """A managed share link of a stored file: its URL (``/files/links/<token>/<name>``)
    downloads the file, private or not, for anyone holding it, until it expires, reaches
    its download limit or is revoked.

    A *download* is what :func:`files_app.responder.starts_a_download` says: a GET
    answered with the whole file (200) or ranges from its first byte (206); other ranges of
    the same download do not count. A link that reached its limit still answers those for
    ``FILES_APP_LINK_RESUME`` seconds after its last counted download, so that the player
    seeking through it or the download manager resuming it goes on, but starts no new
    download. Nothing caches a link's state: revoking it refuses its next request in every
    process, on the views and on the lean path alike.
    """

    token = models.CharField(max_length=64, unique=True, default=new_link_token, editable=False)
    # The database's own constraint cascades (migration 0010), as for versions: deleting
    # stored files stays a fast delete.
    stored_file = models.ForeignKey(
        StoredFile,
        on_delete=models.DO_NOTHING,
        related_name="share_links",
        db_constraint=False,
        verbose_name="file",
    )
    label = models.CharField(
        max_length=200, blank=True, help_text="Who or what the link is for (shown in lists)."
    )
    created = models.DateTimeField(auto_now_add=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        editable=False,
        on_delete=models.SET_NULL,
        related_name="+",
    )
    expires = models.DateTimeField(
        null=True, blank=True, db_index=True, help_text="Empty: the link does not expire."
    )
    max_downloads = models.PositiveIntegerField(
        "download limit",
        null=True,
        blank=True,
        help_text="How many downloads the link allows (ranges of one download count once); "
        "empty: no limit.",
        validators=[MinValueValidator(1)],
    )
    downloads = models.PositiveIntegerField(default=0, editable=False)
    last_download = models.DateTimeField(null=True, blank=True, editable=False)
    revoked = models.DateTimeField(null=True, blank=True, editable=False)

    objects = ShareLinkQuerySet.as_manager()

    class Meta:
        verbose_name = "share link"
        ordering = ["-created", "-pk"]

    def __str__(self) -> str:
        return self.label or f"link {self.token[:8]}…"

    def get_absolute_url(self) -> str:
        return reverse(
            "files_app:link",
            kwargs={
                "token": self.token,
                "filename": StoredFile.download_name_for(self.stored_file.name),
            },
        )

    @staticmethod
    def _live() -> models.Q:
        return models.Q(revoked__isnull=True) & (
            models.Q(expires__isnull=True) | models.Q(expires__gt=Now())
        )

    @classmethod
    def usable(cls) -> models.Q:
        """Return the links that may start a download now: not revoked, not expired, under
        their limit."""
        under = models.Q(max_downloads__isnull=True) | models.Q(
            downloads__lt=models.F("max_downloads")
        )
        return cls._live() & under

    @classmethod
    def servable(cls) -> models.Q:
        """Return the links that may answer a request that starts no download: usable ones,
        and those at their limit whose last download was less than ``FILES_APP_LINK_RESUME``
        seconds ago. The one rule for the views and the lean path."""
        resume = timedelta(seconds=app_settings.LINK_RESUME)
        return cls.usable() | (
            cls._live() & models.Q(last_download__gt=Now() - models.Value(resume))
        )

    @property
    def state(self) -> str:
        """Return "revoked", "expired", "used up" or "active"."""
        if self.revoked is not None:
            return "revoked"
        if self.expires is not None and self.expires <= timezone.now():
            return "expired"
        if self.max_downloads is not None and self.downloads >= self.max_downloads:
            return "used up"
        return "active"

    def revoke(self) -> None:
        """Revoke the link: its next request is refused (410), in every process."""
        if self.revoked is None:
            self.revoked = timezone.now()
            self.save(update_fields=["revoked"])

    revoke.alters_data = True  # type: ignore[attr-defined]


class UserQuota(models.Model):
    """A user's own quota, instead of ``FILES_APP_USER_QUOTA``: the bytes they may store
    (logical: their files, the files' versions, their uploads in progress; see
    :mod:`files_app.quotas`)."""

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, primary_key=True, related_name="+"
    )
    limit = models.BigIntegerField(
        null=True,
        blank=True,
        validators=[MinValueValidator(0)],
        help_text="Bytes this user may store; empty: no limit for this user.",
    )

    class Meta:
        verbose_name = "user quota"

    def __str__(self) -> str:
        return f"quota of {self.user}"


class Upload(models.Model):
    """A resumable upload (tus 1.0) in progress, its bytes written straight into a large
    object as they arrive; it becomes a :class:`StoredFile` when the last byte is in.

    ``offset`` is what is durable: each piece of a ``PATCH`` is written and counted in one
    transaction, and ``sha256_state`` hashes exactly those bytes
    (:class:`files_app.digests.ResumableSHA256`). ``lease`` counts the requests that took
    the upload: only the last one writes (see :mod:`files_app.tus`). The object is the
    upload's until it finishes, then the stored file's: ``oid`` is a plain number, not a
    reference column with an unlink trigger. Termination and expiry (``files_sweep``)
    unlink it with the row; the sweeper leaves the objects of uploads in progress alone.
    """

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    oid = models.BigIntegerField(unique=True)
    length = models.BigIntegerField()
    offset = models.BigIntegerField(default=0)
    lease = models.BigIntegerField(default=0)
    sha256_state = models.BinaryField(default=bytes)
    # The first bytes, for the stored file's content type.
    head = models.BinaryField(default=bytes)
    # Upload-Metadata as sent (HEAD returns it), and decoded.
    metadata_header = models.TextField(blank=True)
    metadata = models.JSONField(default=dict)
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.CASCADE, related_name="+"
    )
    created = models.DateTimeField(auto_now_add=True)
    expires = models.DateTimeField(db_index=True)

    class Meta:
        verbose_name = "upload in progress"

    def __str__(self) -> str:
        return f"upload {self.id} ({self.offset} of {self.length} bytes)"


class PendingRemoval(models.Model):
    """A file of another storage that a row let go of (deleted, replaced, moved back): it
    is deleted from its storage after commit (see :func:`drain_removals`).

    A trigger fills the queue, whatever deleted or changed the row.
    """

    storage = models.CharField(max_length=100)
    name = models.CharField(max_length=1024)
    queued = models.DateTimeField(db_default=Now())

    class Meta:
        verbose_name = "moved file waiting to be deleted"

    def __str__(self) -> str:
        return f"{self.name} in {self.storage}"


class PendingUnlink(models.Model):
    """A large object whose last row was deleted by a statement that freed many: it is
    unlinked after that transaction commits (see :func:`files_app.maintenance.drain_unlinks`).
    """

    # Not an ``oid`` column: vacuumlo and pg_dump would take it for a reference.
    oid = models.BigIntegerField()
    queued = models.DateTimeField(db_default=Now())

    class Meta:
        verbose_name = "large object waiting to be unlinked"

    def __str__(self) -> str:
        return f"large object {self.oid}"


# Queued removals handled per transaction by drain_removals().
REMOVAL_BATCH = 100


def drain_removals(using: str, *, batch: int = REMOVAL_BATCH) -> int:
    """Delete the files that rows let go of (deleted, replaced or moved back) from their
    storages, unless a row names them again; return how many were deleted.

    A file whose storage fails stays queued for the next drain (``files_sweep``).
    """
    removed, failed = 0, set[int]()
    while True:
        with transaction.atomic(using=using):
            queued = list(
                PendingRemoval.objects.using(using)
                .exclude(pk__in=failed)
                .select_for_update(skip_locked=True)
                .order_by("pk")[:batch]
            )
            if not queued:
                return removed
            for item in queued:
                named = StoredFile._default_manager.using(using).filter(
                    storage=item.storage, storage_name=item.name
                )
                try:
                    if not named.exists():
                        external.get_storage(item.storage).delete(item.name)
                        removed += 1
                except Exception:  # a storage's own errors (network, permissions)
                    logger.exception(
                        "Could not delete %r from the storage %r; it stays queued.",
                        item.name,
                        item.storage,
                    )
                    failed.add(item.pk)
                    continue
                item.delete()


def drain_removals_after_commit(using: str) -> None:
    """Drain the queue of removals once the current transaction commits."""
    transaction.on_commit(lambda: drain_removals(using), using=using)

"""The stored-file model: one uploaded file, its metadata and its large object."""

from __future__ import annotations

import hashlib
import posixpath
import uuid
from collections.abc import Iterator
from typing import Any

from django.conf import settings
from django.core.files.base import File
from django.db import models, router, transaction
from django.urls import reverse

from files_app.fields import LargeObjectField
from files_app.sniff import SNIFF_BYTES, content_type_for

__all__ = ["HashingReader", "StoredFile"]


NAME_LENGTH = 255


def _fit(name: str, length: int) -> str:
    """Shorten a file name to ``length`` characters, keeping a short extension."""
    if len(name) <= length:
        return name
    root, ext = posixpath.splitext(name)
    if len(ext) > length // 4:
        return name[:length]
    return root[: length - len(ext)] + ext


class HashingReader(File):  # type: ignore[type-arg]
    """Wrap a file so that streaming it computes its SHA-256, size and first bytes."""

    def __init__(self, file: Any, name: str | None = None) -> None:
        super().__init__(file, name or getattr(file, "name", None))
        self.sha256 = hashlib.sha256()
        self.length = 0
        self.head = b""

    def chunks(self, chunk_size: int | None = None) -> Iterator[bytes]:
        assert self.file is not None
        source = self.file.chunks(chunk_size) if hasattr(self.file, "chunks") else None
        if source is None:
            source = File(self.file).chunks(chunk_size)
        for chunk in source:
            data = chunk.encode() if isinstance(chunk, str) else chunk
            self.sha256.update(data)
            self.length += len(data)
            if len(self.head) < SNIFF_BYTES:
                self.head += data[: SNIFF_BYTES - len(self.head)]
            yield data


class StoredFile(models.Model):
    """A file kept in a large object, with the metadata to serve it."""

    uuid = models.UUIDField("UUID", default=uuid.uuid4, unique=True, editable=False)
    file = LargeObjectField(upload_to="")
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
    )
    size = models.BigIntegerField(default=0, editable=False)
    sha256 = models.CharField("SHA-256", max_length=64, blank=True, editable=False)
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

    # The name and content type as loaded from the database (see from_db()).
    _loaded: tuple[str | None, str | None] = (None, None)

    class Meta:
        ordering = ["-created", "-pk"]
        verbose_name = "stored file"
        indexes = [models.Index(fields=["public", "-created"], name="files_app_public_created")]

    def __str__(self) -> str:
        return self.name or str(self.uuid)

    def save(self, *args: Any, **kwargs: Any) -> None:
        using = kwargs.get("using") or router.db_for_write(type(self), instance=self)
        # One transaction for the large object and the row: a failed INSERT or UPDATE
        # leaves no committed object behind (DESIGN.md, "Large objects").
        with transaction.atomic(using=using):
            if self.file and not self.file._committed:
                self._store_upload()
            super().save(*args, **kwargs)

    save.alters_data = True  # type: ignore[attr-defined]

    def get_absolute_url(self) -> str:
        return reverse(
            "files_app:download", kwargs={"uuid": self.uuid, "filename": self.download_name}
        )

    @classmethod
    def from_db(cls, db: str | None, field_names: Any, values: Any) -> StoredFile:
        instance = super().from_db(db, field_names, values)
        # Remember what was loaded: a replaced file brings its own name and type unless
        # they were edited too.
        instance._loaded = (instance.__dict__.get("name"), instance.__dict__.get("content_type"))
        return instance

    @property
    def download_name(self) -> str:
        """Return the name a browser saves the file under."""
        # No path separators or control characters: the name is a URL path segment.
        name = "".join(ch if ch.isprintable() and ch != "/" else "_" for ch in self.name)
        return name.strip() or "download"

    @property
    def etag(self) -> str:
        """Return a strong ETag: the content hash (an object never changes once stored)."""
        return f'"{self.sha256}"' if self.sha256 else f'"{self.file.name}"'

    def _store_upload(self) -> None:
        upload = self.file.file
        original_name = _fit(posixpath.basename(str(self.file.name or "")), NAME_LENGTH)
        if hasattr(upload, "adopt"):
            # LargeObjectUploadHandler already stored it, hashing on the way.
            self.file.save(original_name or "upload", upload, save=False)
            self.size, self.sha256, head = upload.size, upload.sha256, upload.head
        else:
            reader = HashingReader(upload, original_name)
            self.file.save(original_name or "upload", reader, save=False)
            self.size, self.sha256, head = reader.length, reader.sha256.hexdigest(), reader.head
        loaded_name, loaded_type = self._loaded
        if not self.name or self.name == loaded_name:
            self.name = original_name or str(self.uuid)
        declared = self.content_type if self.content_type != loaded_type else ""
        declared = declared or str(getattr(upload, "content_type", None) or "")
        self.content_type = content_type_for(declared, head, self.name)

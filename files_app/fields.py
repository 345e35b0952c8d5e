"""``LargeObjectField``: a FileField whose column is a PostgreSQL ``oid``."""

from __future__ import annotations

import posixpath
from collections.abc import Iterator
from contextlib import suppress
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from django.core import checks
from django.core.files.base import File
from django.core.files.storage import Storage, storages
from django.db import models
from django.db.models.fields.files import FieldFile, ImageFieldFile

from files_app.digests import Digest, Hasher
from files_app.storage import (
    LargeObjectStorage,
    LargeObjectUploadedFile,
    describe_name,
    name_parts,
    object_name,
    oid_from_name,
)

__all__ = [
    "LargeObjectField",
    "LargeObjectFieldFile",
    "LargeObjectImageField",
    "LargeObjectImageFieldFile",
]

if TYPE_CHECKING:
    from files_app.largeobjects import Description


class HashingReader(File):  # type: ignore[type-arg]
    """Wrap a file so that streaming it through :meth:`chunks` computes its digest."""

    def __init__(self, file: Any, name: str | None = None) -> None:
        super().__init__(file, name or getattr(file, "name", None))
        self._hasher = Hasher()

    def chunks(self, chunk_size: int | None = None) -> Iterator[bytes]:
        assert self.file is not None
        source = self.file if hasattr(self.file, "chunks") else File(self.file)
        for chunk in source.chunks(chunk_size):
            data = chunk.encode() if isinstance(chunk, str) else chunk
            self._hasher.update(data)
            yield data

    def digest(self) -> Digest:
        """Return the digest of what :meth:`chunks` yielded so far."""
        return self._hasher.digest()


_fallback_storage: LargeObjectStorage | None = None


def default_large_object_storage() -> Storage:
    """Return ``STORAGES["default"]`` if it keeps large objects, else a default one."""
    global _fallback_storage
    storage = storages["default"]
    if isinstance(storage, LargeObjectStorage):
        return storage
    if _fallback_storage is None:
        _fallback_storage = LargeObjectStorage()
    return _fallback_storage


@dataclass(frozen=True)
class WrittenObject:
    """What :meth:`LargeObjectFieldFile.save` wrote: the object, its digest, the name given."""

    oid: int
    digest: Digest
    name: str


class LargeObjectFieldFile(FieldFile):
    """The file in a :class:`LargeObjectField`; its name is the object's OID.

    The file name and media type it was saved with are kept with the object:
    :attr:`filename` and :attr:`content_type` read them (one query, then kept), ``str()``
    gives the file name (so forms and the admin show it) and :attr:`url` ends with it.
    """

    #: The object :meth:`save` wrote last, with the digest of its bytes computed on the way.
    written: WrittenObject | None = None
    _described: tuple[str, Description | None] | None = None

    def save(self, name: str, content: Any, save: bool = True) -> None:
        digest: Digest | None = None
        source: File[Any]
        if isinstance(content, LargeObjectUploadedFile):
            digest, source = content.digest, content  # hashed while it was uploaded
        else:
            source = HashingReader(content, name)
        super().save(name, source, save=False)
        # The column keeps only the OID: make the name what a reload would give.
        oid = oid_from_name(self.name)
        self.name = str(oid)
        # Keep this object (not just its name) on the instance, with what it wrote.
        setattr(self.instance, self.field.attname, self)
        if isinstance(source, HashingReader):
            digest = source.digest()
        if oid is not None and digest is not None:
            self.written = WrittenObject(oid, digest, posixpath.basename(name))
        if save:
            self.instance.save()

    save.alters_data = True  # type: ignore[attr-defined]

    @property
    def oid(self) -> int | None:
        """Return the large object's OID, or None when the field is empty."""
        return oid_from_name(self.name)

    def description(self) -> Description | None:
        """Return what files_app recorded with the object (None if there is no object)."""
        name = str(self.name or "")
        if self._described is None or self._described[0] != name:
            described = None
            if name and isinstance(self.storage, LargeObjectStorage):
                with suppress(FileNotFoundError):
                    described = self.storage.describe(name)[1]
            self._described = (name, described)
        return self._described[1]

    @property
    def filename(self) -> str | None:
        """Return the name the file was saved with (no directories), or None if unknown."""
        described = self.description()
        return described.name if described else None

    @property
    def content_type(self) -> str | None:
        """Return the media type recorded when the file was saved, or None if unknown."""
        described = self.description()
        return described.content_type if described else None

    def storage_name(self) -> str:
        """Return the storage name that says which object this is and what it is called:
        ``<oid>-<key>/<filename>`` when files_app recorded them, else the OID."""
        described = self.description()
        key = described.key if described else None
        if self.oid is None or described is None or key is None:
            return str(self.name or "")
        return object_name("", self.oid, key, described.name or "")

    @property
    def url(self) -> str:
        self._require_file()  # type: ignore[attr-defined]
        return str(self.storage.url(self.storage_name()))

    def __str__(self) -> str:
        return self.filename or self.name or ""


class LargeObjectField(models.FileField):
    """Store a file in a large object and keep its OID in an ``oid`` column."""

    attr_class = LargeObjectFieldFile
    description = "A file stored in a PostgreSQL large object"

    def __init__(
        self,
        verbose_name: str | None = None,
        name: str | None = None,
        upload_to: Any = "",
        storage: Any = None,
        **kwargs: Any,
    ) -> None:
        # The unlink trigger looks rows up by OID: index the column unless told not to.
        kwargs.setdefault("db_index", True)
        # The column holds only the OID: a name length limit would refuse files for nothing.
        kwargs.setdefault("max_length", None)
        self._default_storage = storage is None
        super().__init__(
            verbose_name,
            name,
            upload_to=upload_to,
            storage=storage or default_large_object_storage,
            **kwargs,
        )

    def check(self, **kwargs: Any) -> list[checks.CheckMessage]:
        errors = super().check(**kwargs)
        if not isinstance(self.storage, LargeObjectStorage):
            errors.append(
                checks.Error(
                    f"{self.__class__.__name__}'s storage must be a LargeObjectStorage, not "
                    f"{type(self.storage).__name__}.",
                    hint="Remove the storage argument, or pass a LargeObjectStorage.",
                    obj=self,
                    id="files_app.E101",
                )
            )
        return errors

    def deconstruct(self) -> Any:
        name, path, args, kwargs = super().deconstruct()
        if self._default_storage:
            kwargs.pop("storage", None)
        if getattr(self, "db_index", False):
            kwargs.pop("db_index", None)
        else:
            kwargs["db_index"] = False
        kwargs.pop("max_length", None)
        return name, path, args, kwargs

    def db_type(self, connection: Any) -> str:
        return "oid"

    def get_prep_value(self, value: Any) -> int | None:
        value = models.Field.get_prep_value(self, value)
        if value is None or isinstance(value, int):
            return value
        name = value.name if isinstance(value, FieldFile) else str(value)
        if not name:
            return None
        oid = oid_from_name(name)
        if oid is None:
            raise ValueError(f"{name!r} does not name a large object.")
        return oid

    def get_db_prep_value(self, value: Any, connection: Any, prepared: bool = False) -> Any:
        if not prepared:
            # A name with a key (dumpdata writes them) names one object: refuse to point a
            # row at another object that has its OID here (loaddata into another database,
            # a restore), whose bytes are someone else's and which the row would unlink.
            name = value.name if isinstance(value, FieldFile) else value
            parts = name_parts(name) if isinstance(name, str) else None
            if parts is not None and parts[1] is not None:
                try:
                    describe_name(str(name), connection.alias)
                except FileNotFoundError as exc:
                    raise ValueError(str(exc)) from None
        return super().get_db_prep_value(value, connection, prepared)

    def from_db_value(self, value: Any, expression: Any, connection: Any) -> str | None:
        return None if value is None else str(value)

    def value_to_string(self, obj: Any) -> str:
        # dumpdata: the OID with the object's key and file name ("<oid>-<key>/<name>"),
        # which loaddata checks against the object it finds at that OID.
        file = self.value_from_object(obj)
        return file.storage_name() if file else ""


class LargeObjectImageFieldFile(LargeObjectFieldFile, ImageFieldFile):
    """The image in a :class:`LargeObjectImageField`: ``width`` and ``height`` too."""


class LargeObjectImageField(LargeObjectField, models.ImageField):
    """A :class:`LargeObjectField` for images, as ``ImageField`` is a ``FileField`` for
    them: forms check that an upload is an image (Pillow), the file has ``width`` and
    ``height``, and ``width_field``/``height_field`` keep them in columns."""

    attr_class = LargeObjectImageFieldFile
    description = "An image stored in a PostgreSQL large object"

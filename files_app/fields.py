"""``LargeObjectField``: a FileField whose column is a PostgreSQL ``oid``."""

from __future__ import annotations

from typing import Any

from django.core import checks
from django.core.files.storage import Storage, storages
from django.db import models
from django.db.models.fields.files import FieldFile

from files_app.storage import LargeObjectStorage, oid_from_name

__all__ = ["LargeObjectField", "LargeObjectFieldFile"]

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


class LargeObjectFieldFile(FieldFile):
    """The file in a :class:`LargeObjectField`; its name is the object's OID."""

    def save(self, name: str, content: Any, save: bool = True) -> None:
        super().save(name, content, save=False)
        # The column keeps only the OID: make the name what a reload would give.
        self.name = str(oid_from_name(self.name))
        setattr(self.instance, self.field.attname, self.name)
        if save:
            self.instance.save()

    save.alters_data = True  # type: ignore[attr-defined]

    @property
    def oid(self) -> int | None:
        """Return the large object's OID, or None when the field is empty."""
        return oid_from_name(self.name)


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

    def from_db_value(self, value: Any, expression: Any, connection: Any) -> str | None:
        return None if value is None else str(value)

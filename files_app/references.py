"""Columns: those that reference large objects (the sweeper's map of what is in use), and a
model field's quoted column for hand-written SQL.

Internal to files_app, not part of its public API (docs/reference.md, "Public API").
"""

from __future__ import annotations

from collections.abc import Callable

from django.apps import apps
from django.db import router
from django.db.models import Field, FileField, Model

from files_app.fields import LargeObjectField
from files_app.storage import LargeObjectStorage


def reference_columns(using: str) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """Return the (table, column) pairs on ``using`` holding OIDs, and those holding names.

    OID columns are every :class:`LargeObjectField`; name columns are every other
    ``FileField`` (``ImageField`` included) whose storage keeps large objects there.
    """
    oid_columns: list[tuple[str, str]] = []
    name_columns: list[tuple[str, str]] = []
    for model in apps.get_models(include_auto_created=True):
        opts = model._meta
        if opts.proxy or not opts.managed or not router.allow_migrate_model(using, model):
            continue
        for field in opts.local_concrete_fields:
            if isinstance(field, LargeObjectField):
                oid_columns.append((opts.db_table, field.column))
            elif (
                isinstance(field, FileField)
                and isinstance(field.storage, LargeObjectStorage)
                and field.storage.using == using
            ):
                name_columns.append((opts.db_table, field.column))
    return oid_columns, name_columns


def column(model: type[Model], name: str, vendor_quote: Callable[[str], str]) -> str:
    """Return the quoted column of ``model``'s field ``name``."""
    field = model._meta.get_field(name)
    assert isinstance(field, Field) and field.column, name
    return vendor_quote(field.column)

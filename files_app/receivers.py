"""Signal receivers: keep the unlink triggers in place after every migrate.

Internal to files_app, not part of its public API (docs/reference.md, "Public API").
"""

from __future__ import annotations

from typing import Any

from django.apps import AppConfig
from django.db import connections, router
from django.db.models.signals import post_migrate
from django.dispatch import receiver

from files_app import maintenance
from files_app.fields import LargeObjectField


@receiver(post_migrate, dispatch_uid="files_app.install_unlink_triggers")
def install_unlink_triggers(sender: AppConfig, using: str = "default", **kwargs: Any) -> None:
    """Install the trigger that unlinks large objects for each LargeObjectField of ``sender``.

    Deleting or updating rows by any route (``Model.delete()``, ``QuerySet.delete()``,
    cascades, raw SQL) then frees the objects they referenced, in the same transaction,
    once no row of any reference column holds them
    (:func:`~files_app.maintenance.install_reference_function`, renewed here).
    """
    connection = connections[using]
    if connection.vendor != "postgresql":
        return
    # First what the triggers ask: which rows of any table still hold an object.
    maintenance.install_reference_function(using)
    tables = set(connection.introspection.table_names())
    for model in sender.get_models():
        opts = model._meta
        if opts.proxy or not opts.managed or opts.db_table not in tables:
            continue
        if not router.allow_migrate_model(using, model):
            continue
        for field in opts.local_concrete_fields:
            if isinstance(field, LargeObjectField):
                maintenance.install_unlink_trigger(opts.db_table, field.column, using)

"""Versions (FILES_APP_VERSIONS): the earlier contents of a replaced stored file.

The foreign key to the stored file is the database's own and cascades there, not in Django's
collector (on_delete=DO_NOTHING): a cascade from a deleted owner stays a fast delete that
loads no row, and a raw SQL DELETE of stored files (which the unlink trigger frees at once)
is not refused for their versions. The versions' own trigger frees what they held.
"""

from __future__ import annotations

import django.db.models.deletion
import django.utils.timezone
from django.conf import settings
from django.db import migrations, models

import files_app.fields


class Migration(migrations.Migration):
    dependencies = [
        ("files_app", "0008_stored_file_trash"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.CreateModel(
            name="FileVersion",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("number", models.PositiveIntegerField()),
                ("file", files_app.fields.LargeObjectField(upload_to="")),
                ("name", models.CharField(blank=True, max_length=255)),
                ("content_type", models.CharField(blank=True, max_length=255)),
                ("size", models.BigIntegerField()),
                (
                    "sha256",
                    models.CharField(
                        blank=True, db_index=True, max_length=64, verbose_name="SHA-256"
                    ),
                ),
                ("modified", models.DateTimeField()),
                ("replaced", models.DateTimeField(default=django.utils.timezone.now)),
                (
                    "replaced_by",
                    models.ForeignKey(
                        blank=True,
                        null=True,
                        on_delete=django.db.models.deletion.SET_NULL,
                        related_name="+",
                        to=settings.AUTH_USER_MODEL,
                    ),
                ),
                (
                    "stored_file",
                    models.ForeignKey(
                        db_constraint=False,
                        on_delete=django.db.models.deletion.DO_NOTHING,
                        related_name="versions",
                        to="files_app.storedfile",
                    ),
                ),
            ],
            options={
                "verbose_name": "file version",
                "ordering": ["stored_file", "-number"],
                "base_manager_name": "objects",
                "constraints": [
                    models.UniqueConstraint(
                        fields=("stored_file", "number"), name="files_app_fileversion_number"
                    )
                ],
            },
        ),
        migrations.RunSQL(
            "ALTER TABLE files_app_fileversion ADD CONSTRAINT "
            "files_app_fileversion_stored_file_id_fk FOREIGN KEY (stored_file_id) "
            "REFERENCES files_app_storedfile (id) ON DELETE CASCADE "
            "DEFERRABLE INITIALLY DEFERRED",
            "ALTER TABLE files_app_fileversion DROP CONSTRAINT "
            "files_app_fileversion_stored_file_id_fk",
        ),
    ]

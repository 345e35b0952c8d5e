"""Managed share links: rows with an expiry, a download limit, a count, revocation.

As for versions (0009), the foreign key to the stored file is the database's own and
cascades there, not in Django's collector: deleting stored files stays a fast delete.
"""

from __future__ import annotations

import django.core.validators
import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models

import files_app.models


class Migration(migrations.Migration):
    dependencies = [
        ("files_app", "0009_file_versions"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.CreateModel(
            name="ShareLink",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                (
                    "token",
                    models.CharField(
                        default=files_app.models.new_link_token,
                        editable=False,
                        max_length=64,
                        unique=True,
                    ),
                ),
                (
                    "label",
                    models.CharField(
                        blank=True,
                        help_text="Who or what the link is for (shown in lists).",
                        max_length=200,
                    ),
                ),
                ("created", models.DateTimeField(auto_now_add=True)),
                (
                    "expires",
                    models.DateTimeField(
                        blank=True,
                        db_index=True,
                        help_text="Empty: the link does not expire.",
                        null=True,
                    ),
                ),
                (
                    "max_downloads",
                    models.PositiveIntegerField(
                        blank=True,
                        help_text="How many downloads the link allows (ranges of one download count once); empty: no limit.",
                        null=True,
                        validators=[django.core.validators.MinValueValidator(1)],
                        verbose_name="download limit",
                    ),
                ),
                ("downloads", models.PositiveIntegerField(default=0, editable=False)),
                ("last_download", models.DateTimeField(blank=True, editable=False, null=True)),
                ("revoked", models.DateTimeField(blank=True, editable=False, null=True)),
                (
                    "created_by",
                    models.ForeignKey(
                        blank=True,
                        editable=False,
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
                        related_name="share_links",
                        to="files_app.storedfile",
                        verbose_name="file",
                    ),
                ),
            ],
            options={
                "verbose_name": "share link",
                "ordering": ["-created", "-pk"],
            },
        ),
        migrations.RunSQL(
            "ALTER TABLE files_app_sharelink ADD CONSTRAINT "
            "files_app_sharelink_stored_file_id_fk FOREIGN KEY (stored_file_id) "
            "REFERENCES files_app_storedfile (id) ON DELETE CASCADE "
            "DEFERRABLE INITIALLY DEFERRED",
            "ALTER TABLE files_app_sharelink DROP CONSTRAINT files_app_sharelink_stored_file_id_fk",
        ),
    ]

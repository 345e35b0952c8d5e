"""The trash (FILES_APP_TRASH_DAYS): when a stored file was trashed, by whom, and the
admin's view of it (TrashedFile)."""

from __future__ import annotations

import django.db.models.deletion
import django.db.models.manager
from django.conf import settings
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("files_app", "0007_upload_lease"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.CreateModel(
            name="TrashedFile",
            fields=[],
            options={
                "verbose_name": "trashed file",
                "ordering": ["-trashed", "-pk"],
                "proxy": True,
                "base_manager_name": "everything",
                "default_manager_name": "objects",
                "indexes": [],
                "constraints": [],
            },
            bases=("files_app.storedfile",),
            managers=[
                ("objects", django.db.models.manager.Manager()),
                ("everything", django.db.models.manager.Manager()),
            ],
        ),
        migrations.AlterModelOptions(
            name="storedfile",
            options={
                "base_manager_name": "everything",
                "default_manager_name": "objects",
                "ordering": ["-created", "-pk"],
                "verbose_name": "stored file",
            },
        ),
        migrations.AlterModelManagers(
            name="storedfile",
            managers=[
                ("objects", django.db.models.manager.Manager()),
                ("everything", django.db.models.manager.Manager()),
            ],
        ),
        migrations.AddField(
            model_name="storedfile",
            name="trashed",
            field=models.DateTimeField(blank=True, db_index=True, editable=False, null=True),
        ),
        migrations.AddField(
            model_name="storedfile",
            name="trashed_by",
            field=models.ForeignKey(
                blank=True,
                editable=False,
                null=True,
                on_delete=django.db.models.deletion.SET_NULL,
                related_name="+",
                to=settings.AUTH_USER_MODEL,
            ),
        ),
    ]

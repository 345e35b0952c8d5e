from __future__ import annotations

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("files_app", "0006_sha256_index"),
    ]

    operations = [
        migrations.AddField(
            model_name="upload",
            name="lease",
            field=models.BigIntegerField(default=0),
        ),
    ]

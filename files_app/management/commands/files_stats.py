"""Report how many files are stored, how much space they take, and what is orphaned."""

from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import connections
from django.db.models import Count, Sum

from files_app import maintenance, references
from files_app.management.options import add_database_argument, database_alias
from files_app.models import StoredFile
from files_app.progress import format_size


class Command(BaseCommand):
    help = (
        "Report the number of stored files and their total size, the largest ones, the large "
        "objects in the database (all of them, and those files_app created), how many of "
        "files_app's are referenced by nothing (and how many of those are uploads that nothing "
        "saved: what files_sweep frees once they are old enough), and the space "
        "pg_largeobject takes on disk."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--top",
            type=int,
            default=10,
            metavar="N",
            help="List the N largest stored files (default: 10; 0 lists none).",
        )
        parser.add_argument(
            "--json",
            action="store_true",
            help="Print the figures as one JSON object (sizes in bytes) instead of text.",
        )
        add_database_argument(parser, "report on")

    def handle(self, *args: Any, **options: Any) -> None:
        using = database_alias(options["database"], "it has no files")
        top = options["top"]
        if top < 0:
            raise CommandError(f"--top must be 0 or more, not {top!r}.")
        stats = self.collect(using, top)
        if options["json"]:
            self.stdout.write(json.dumps(stats, indent=2))
        else:
            self.stdout.write(self.render(stats))

    def collect(self, using: str, top: int) -> dict[str, Any]:
        """Return the figures as a JSON-ready dict."""
        files = StoredFile.objects.using(using)
        totals = files.aggregate(count=Count("pk"), size=Sum("size"))
        largest = files.order_by("-size", "pk").values("uuid", "name", "size")[:top]
        elsewhere = (
            files.exclude(storage="")
            .values("storage")
            .annotate(count=Count("pk"), size=Sum("size"))
            .order_by("storage")
        )
        return {
            "database": using,
            "stored_files": {"count": totals["count"], "bytes": totals["size"] or 0},
            # Bytes in large objects, each shared object (FILES_APP_DEDUPE) counted once.
            "large_object_bytes": self.physical_bytes(using),
            # Files files_move took out of large objects, by STORAGES alias.
            "moved_files": {
                row["storage"]: {"count": row["count"], "bytes": row["size"]} for row in elsewhere
            },
            "largest": [
                {"uuid": str(row["uuid"]), "name": row["name"], "bytes": row["size"]}
                for row in largest
            ],
            "large_objects": {
                "total": maintenance.count(using),
                "files_app": maintenance.count(using, owned=True),
                "unreferenced": self.count_unreferenced(using),
                "unadopted": self.count_unreferenced(using, unadopted_only=True),
            },
            "pg_largeobject_bytes": maintenance.disk_usage(using),
        }

    def physical_bytes(self, using: str) -> int:
        """Return the bytes of the stored files' large objects, each counted once."""
        qn = connections[using].ops.quote_name
        table = qn(StoredFile._meta.db_table)
        file, size = (references.column(StoredFile, name, qn) for name in ("file", "size"))
        with connections[using].cursor() as cursor:
            cursor.execute(
                f"SELECT coalesce(sum(s.size), 0) FROM (SELECT DISTINCT ON ({file}) {size} "
                f"AS size FROM {table} WHERE {file} IS NOT NULL ORDER BY {file}) s"
            )
            return int(cursor.fetchone()[0])

    def count_unreferenced(self, using: str, *, unadopted_only: bool = False) -> int:
        """Count files_app's large objects that nothing references, whatever their age
        (only those of uploads nothing adopted, with ``unadopted_only``)."""
        found = maintenance.unreferenced(using, grace=0, unadopted_only=unadopted_only)
        return sum(len(oids) for oids in found)

    def render(self, stats: dict[str, Any]) -> str:
        """Return the figures as text for people."""
        files, objects = stats["stored_files"], stats["large_objects"]
        disk = stats["pg_largeobject_bytes"]
        lines = [
            f"Database:            {stats['database']}",
            f"Stored files:        {files['count']}, {_size(files['bytes'])}",
            f"  in large objects:  {_size(stats['large_object_bytes'])} (files with the same "
            "bytes share one object)",
            *(
                f"  in storage {alias!r}: {moved['count']}, {_size(moved['bytes'])} "
                "(moved by files_move)"
                for alias, moved in stats["moved_files"].items()
            ),
            f"Large objects:       {objects['total']} in the database, "
            f"{objects['files_app']} created by files_app",
            f"Unreferenced:        {objects['unreferenced']} of files_app's large objects, "
            f"{objects['unadopted']} of them uploads that nothing saved (files_sweep frees "
            "those after the grace period; the rest only with --unreferenced)",
            f"pg_largeobject size: {_size(disk)} on disk",
        ]
        if stats["largest"]:
            lines.append(f"Largest {len(stats['largest'])} stored file(s):")
            width = max(len(format_size(row["bytes"])) for row in stats["largest"])
            for row in stats["largest"]:
                lines.append(
                    f"  {format_size(row['bytes']):>{width}}  {row['uuid']}  {row['name']}"
                )
        return "\n".join(lines)


def _size(size: int) -> str:
    human = format_size(size)
    return human if human.endswith(("bytes", "byte")) else f"{human} ({size} bytes)"

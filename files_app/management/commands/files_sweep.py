"""Free what files_app knows is garbage (and, asked to, every unreferenced object it made)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone

from files_app import largeobjects, maintenance, tus
from files_app.conf import app_settings
from files_app.management.options import add_database_argument, database_alias
from files_app.models import FileVersion, PendingRemoval, StoredFile, drain_removals
from files_app.references import reference_columns

# More unlinks than this in one transaction can exhaust the lock table (docs/design.md,
# "Large objects").
MAX_BATCH = 1000


class Command(BaseCommand):
    help = (
        "Free what files_app knows is garbage: large objects that a big delete queued, "
        "expired unfinished resumable uploads, moved files their rows let go of, stored "
        "files in the trash longer than FILES_APP_TRASH_DAYS (all of them with 0), versions "
        "beyond FILES_APP_VERSIONS, and the "
        "objects of uploads that no save adopted (older than the grace period). A file that "
        "Storage.save() handed out is never freed by default: it lives until "
        "Storage.delete(), as on any Django storage. --unreferenced also frees every large "
        "object files_app created that no LargeObjectField and no FileField on "
        "LargeObjectStorage of this database references (what TRUNCATE or 'manage.py "
        "flush' leave) — RISKY: names that other apps keep elsewhere (a thumbnail "
        "library's cache, another database, a setting) are not references it can see, and "
        "their files are freed. Run it with --dry-run first: it lists the columns it "
        "considers and every object it would free. Large objects not created by files_app "
        "are never touched."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        add_database_argument(parser, "sweep")
        parser.add_argument(
            "--dry-run",
            action="store_true",
            help="Only report what would be freed, object by object; change nothing.",
        )
        parser.add_argument(
            "--unreferenced",
            action="store_true",
            help=(
                "Also free files_app's large objects that no reference column of this "
                "database names, including files Storage.save() handed out to code that "
                "keeps their names elsewhere (risky: see above; try --dry-run first)."
            ),
        )
        parser.add_argument(
            "--grace",
            type=float,
            default=None,
            metavar="SECONDS",
            help=(
                "Leave objects younger than this alone: they may belong to an upload that is "
                "still being saved (default: FILES_APP_SWEEP_GRACE, one day)."
            ),
        )
        parser.add_argument(
            "--batch-size",
            type=int,
            default=MAX_BATCH,
            metavar="N",
            help=f"Free at most N objects per transaction (1 to {MAX_BATCH}; the default).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        using = database_alias(options["database"], "nothing to sweep")
        grace = app_settings.SWEEP_GRACE if options["grace"] is None else options["grace"]
        if grace < 0:
            raise CommandError(f"--grace must be 0 or more seconds, not {grace!r}.")
        batch_size = options["batch_size"]
        if not 1 <= batch_size <= MAX_BATCH:
            raise CommandError(f"--batch-size must be from 1 to {MAX_BATCH}, not {batch_size!r}.")
        dry_run, everything = options["dry_run"], options["unreferenced"]
        if not dry_run:
            self._drain_queues(using, batch_size)
        if everything:
            self._list_columns(using)
        what = "unreferenced" if everything else "unadopted upload"
        found = freed = total_bytes = 0
        candidates_by_window = maintenance.unreferenced(
            using, grace=grace, unadopted_only=not everything
        )
        for candidates in candidates_by_window:
            for start in range(0, len(candidates), batch_size):
                batch = candidates[start : start + batch_size]
                found += len(batch)
                if dry_run:
                    self._list_objects(batch, using)
                freed_now, size = largeobjects.unlink_many(batch, using, dry_run=dry_run)
                freed += freed_now
                total_bytes += size
                if options["verbosity"] >= 2 and not dry_run:
                    self.stdout.write(f"Freed {len(batch)} objects: {batch[0]}..{batch[-1]}")
        if dry_run:
            self.stdout.write(
                f"Found {found} {what} large object(s), {total_bytes} bytes; "
                "nothing freed (--dry-run)."
            )
        else:
            self.stdout.write(
                f"Found {found} {what} large object(s), {total_bytes} bytes; freed {freed}."
            )

    def _drain_queues(self, using: str, batch_size: int) -> None:
        # The trash's old files go first: what their rows held is freed below with the rest.
        cutoff = timezone.now() - timedelta(days=app_settings.TRASH_DAYS)
        # Counted first: a delete, even of nothing, drains the unlink queue itself, which
        # the next step does and reports.
        old = StoredFile.in_trash.using(using).filter(trashed__lte=cutoff)
        if purged := old.count():
            old.delete()
            self.stdout.write(f"Deleted {purged} stored file(s) from the trash.")
        # Versions beyond FILES_APP_VERSIONS (it was lowered): each replace keeps to it.
        if pruned := FileVersion.objects.using(using).prune_all(app_settings.VERSIONS):
            self.stdout.write(f"Deleted {pruned} earlier version(s) beyond FILES_APP_VERSIONS.")
        # Objects a big delete queued are freed first, whatever their age.
        drained = maintenance.drain_unlinks(using, batch=min(batch_size, maintenance.UNLINK_BATCH))
        if drained:
            self.stdout.write(f"Freed {drained} large object(s) queued by deletes.")
        expired = tus.delete_expired(using)
        if expired:
            self.stdout.write(f"Deleted {expired} expired unfinished upload(s).")
        removed = drain_removals(using)
        if removed:
            self.stdout.write(f"Deleted {removed} moved file(s) their rows let go of.")
        if left := PendingRemoval.objects.using(using).count():
            self.stderr.write(
                f"{left} moved file(s) could not be deleted from their storage yet "
                "(logged): they stay queued for the next sweep."
            )

    def _list_columns(self, using: str) -> None:
        oid_columns, name_columns = reference_columns(using)
        self.stdout.write("References considered (a name kept anywhere else is not seen):")
        for table, column in oid_columns:
            self.stdout.write(f"  {table}.{column} (OIDs)")
        for table, column in name_columns:
            self.stdout.write(f"  {table}.{column} (names)")
        self.stdout.write("  resumable uploads in progress")

    def _list_objects(self, oids: list[int], using: str) -> None:
        for oid, size, created in maintenance.describe(oids, using):
            when = (
                datetime.fromtimestamp(created, tz=UTC).isoformat(timespec="seconds")
                if created is not None
                else "unknown"
            )
            self.stdout.write(f"Would free large object {oid}: {size} bytes, created {when}")

"""Free large objects that files_app created and nothing references any more."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from files_app import external, maintenance, tus
from files_app.conf import app_settings
from files_app.management.options import add_database_argument, database_alias
from files_app.models import PendingRemoval

# More unlinks than this in one transaction can exhaust the lock table (docs/design.md,
# "Large objects").
MAX_BATCH = 1000


class Command(BaseCommand):
    help = (
        "Free the large objects that files_app created and that no LargeObjectField, and no "
        "FileField stored on LargeObjectStorage, references: what TRUNCATE, 'manage.py flush', "
        "or an interrupted upload left behind. Large objects not created by files_app are "
        "never touched."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        add_database_argument(parser, "sweep")
        parser.add_argument(
            "--dry-run",
            action="store_true",
            help="Only report what would be freed; change nothing.",
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
        dry_run = options["dry_run"]
        if not dry_run:
            # Objects a big delete queued are freed first, whatever their age.
            drained = maintenance.drain(using, batch=min(batch_size, maintenance.BATCH))
            if drained:
                self.stdout.write(f"Freed {drained} large object(s) queued by deletes.")
            expired = tus.delete_expired(using)
            if expired:
                self.stdout.write(f"Deleted {expired} expired unfinished upload(s).")
            removed = external.drain(using)
            if removed:
                self.stdout.write(f"Deleted {removed} moved file(s) their rows let go of.")
            if left := PendingRemoval.objects.using(using).count():
                self.stderr.write(
                    f"{left} moved file(s) could not be deleted from their storage yet "
                    "(logged): they stay queued for the next sweep."
                )
        found = freed = total_bytes = 0
        for candidates in maintenance.unreferenced(using, grace=grace):
            for start in range(0, len(candidates), batch_size):
                batch = candidates[start : start + batch_size]
                found += len(batch)
                freed_now, size = maintenance.free(batch, using, dry_run=dry_run)
                freed += freed_now
                total_bytes += size
                if options["verbosity"] >= 2:
                    verb = "Would free" if dry_run else "Freed"
                    self.stdout.write(f"{verb} {len(batch)} objects: {batch[0]}..{batch[-1]}")
        if dry_run:
            self.stdout.write(
                f"Found {found} unreferenced large object(s), {total_bytes} bytes; "
                "nothing freed (--dry-run)."
            )
        else:
            self.stdout.write(
                f"Found {found} unreferenced large object(s), {total_bytes} bytes; freed {freed}."
            )

"""Check that every stored file's large object still has the size and SHA-256 recorded."""

from __future__ import annotations

import hashlib
from collections import Counter
from typing import Any

from django.conf import settings
from django.core.files.base import File
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import DatabaseError
from django.db.models import QuerySet, Sum

from files_app.conf import app_settings
from files_app.external import StorageUnavailable
from files_app.management.options import (
    INTERRUPTED,
    add_database_argument,
    database_alias,
    pages,
    with_uuids,
)
from files_app.models import StoredFile
from files_app.progress import Progress, format_size
from files_app.storage import LargeObjectStorage


class Command(BaseCommand):
    help = (
        "Read the large object of every stored file (or of those given with --uuid), or its "
        "copy in another storage after files_move, recompute its size and SHA-256 and compare "
        "them with what was recorded when it was stored. Reports every missing large object, "
        "every file missing from its storage and every mismatch; the exit status is non-zero "
        "if there was any."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--uuid",
            action="append",
            default=[],
            metavar="UUID",
            help="Verify only the stored file with this UUID (repeat for several).",
        )
        add_database_argument(parser, "verify")

    def handle(self, *args: Any, **options: Any) -> None:
        using = database_alias(options["database"], "nothing to verify")
        self.using = using
        self.verbosity = options["verbosity"]
        queryset = with_uuids(StoredFile.everything.using(using), options["uuid"])
        total = queryset.aggregate(total=Sum("size"))["total"] or 0
        self.progress = Progress(self.stderr, total)
        try:
            counts = self._verify_all(queryset)
        finally:
            self.progress.close()
        failed = sum(n for problem, n in counts.items() if problem not in _NOT_FAILURES)
        if failed:
            raise CommandError(
                f"{failed} stored file(s) failed verification: {_failures(counts)}; "
                f"{counts['intact']} intact."
            )
        if self.verbosity >= 1:
            changed = counts["changed"]
            skipped = f" ({changed} changed while being read, not checked)" if changed else ""
            self.stdout.write(
                f"Verified {counts['intact']} stored file(s), {format_size(counts['bytes'])}: "
                f"all intact{skipped}.",
                style_func=self.style.SUCCESS,
            )

    def _verify_all(self, queryset: QuerySet[StoredFile]) -> Counter[str]:
        counts: Counter[str] = Counter()
        current: StoredFile | None = None
        try:
            for current in pages(queryset):
                self.progress.set_label(current.name)
                problem = self._verify(current)
                counts[problem or "intact"] += 1
                if problem == "changed":
                    self.progress.write(
                        self.stderr,
                        f"{current.uuid} {current.name!r} was replaced or deleted while it was "
                        "read; not checked.",
                        self.style.WARNING,
                    )
                elif problem is None:
                    counts["bytes"] += current.size
                    if self.verbosity >= 2:
                        self.progress.write(self.stdout, f"OK {current.uuid}  {current.name}")
        except KeyboardInterrupt:
            missing = sum(n for problem, n in counts.items() if problem.startswith("missing"))
            raise CommandError(
                f"Interrupted while verifying {str(current)!r}; {counts['intact']} file(s) "
                f"were intact so far, {missing} missing, {counts['mismatch']} damaged.",
                returncode=INTERRUPTED,
            ) from None
        except DatabaseError as exc:
            detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise CommandError(
                f"A database error stopped the verification at {str(current)!r}: "
                f"{detail.rstrip('.')}."
            ) from None
        return counts

    def _verify(self, stored: StoredFile) -> str | None:
        """Return None if intact, or the problem: "missing" (a large object), "missing
        from storage '<alias>'", "unreachable", "mismatch", or "changed" (edited meanwhile).
        """
        oid = stored.file.oid
        where = (
            f"its file {stored.storage_name!r} in the storage {stored.storage!r}"
            if stored.storage
            else f"its large object {oid}"
        )
        if stored.storage and stored.storage not in settings.STORAGES:
            self._report(
                stored,
                f"the storage {stored.storage!r} that holds it as {stored.storage_name!r} "
                "is not in STORAGES",
            )
            return "unreachable"
        try:
            if stored.storage:  # moved by files_move
                opened: File[bytes] = stored.open_content()
            elif oid is None:
                raise FileNotFoundError
            else:
                opened = LargeObjectStorage(using=self.using).open(str(oid))
            size = opened.size
            digest = self._hash(opened)
        except FileNotFoundError:
            if self._changed(stored):
                return "changed"
            if stored.storage:
                lost = f"missing from storage {stored.storage!r}"
                self._report(stored, f"{lost} as {stored.storage_name!r}")
                return lost
            self._report(stored, f"{where} does not exist")
            return "missing"
        except StorageUnavailable as exc:
            self._report(stored, f"{where} cannot be read: {str(exc).rstrip('.')}")
            return "unreachable"
        if size == stored.size and (not stored.sha256 or digest == stored.sha256):
            return None
        if self._changed(stored):
            return "changed"
        self._report(
            stored,
            f"{where} holds {size} bytes with SHA-256 {digest}; "
            f"{stored.size} bytes with SHA-256 {stored.sha256 or '(unknown)'} were stored",
        )
        return "mismatch"

    def _hash(self, opened: File[bytes]) -> str:
        digest = hashlib.sha256()
        with opened:
            for data in opened.chunks(app_settings.CHUNK_SIZE):
                digest.update(data)
                self.progress.advance(len(data))
        return digest.hexdigest()

    def _changed(self, stored: StoredFile) -> bool:
        # A file replaced or deleted while it was read is not damage: its row moved on.
        current = StoredFile.everything.using(self.using).filter(pk=stored.pk)
        return not current.filter(
            file=stored.file.oid, storage_name=stored.storage_name, size=stored.size
        ).exists()

    def _report(self, stored: StoredFile, problem: str) -> None:
        self.progress.write(
            self.stderr, f"{stored.uuid} {stored.name!r}: {problem}.", self.style.ERROR
        )


# What _verify_all counts besides failures.
_NOT_FAILURES = frozenset({"intact", "bytes", "changed"})


def _failures(counts: Counter[str]) -> str:
    """Say how many files failed, and how: large objects and mismatches always, each
    storage a file went missing from and unreachable storages when there are any."""
    parts = [f"{counts['missing']} with a missing large object"]
    parts += [
        f"{n} {problem}" for problem, n in sorted(counts.items()) if problem.startswith("missing ")
    ]
    if counts["unreachable"]:
        parts.append(f"{counts['unreachable']} in a storage that cannot be read")
    parts.append(f"{counts['mismatch']} whose content does not match")
    return ", ".join(parts)

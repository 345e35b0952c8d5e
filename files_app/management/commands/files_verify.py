"""Check that every stored file's large object — and every kept version's — still has the
size and SHA-256 recorded."""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
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
from files_app.models import FileVersion, StoredFile
from files_app.progress import Progress, format_size
from files_app.storage import LargeObjectStorage


class Command(BaseCommand):
    help = (
        "Read the large object of every stored file (or of those given with --uuid), or its "
        "copy in another storage after files_move, and of every version kept of them "
        "(FILES_APP_VERSIONS), recompute its size and SHA-256 and compare "
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
        files = with_uuids(StoredFile.everything.using(using), options["uuid"])
        versions = FileVersion.objects.using(using).select_related("stored_file")
        if options["uuid"]:
            versions = versions.filter(stored_file__in=files)
        total = sum(
            queryset.aggregate(total=Sum("size"))["total"] or 0 for queryset in (files, versions)
        )
        self.progress = Progress(self.stderr, total)
        try:
            counts = self._verify_all(_items(files, versions))
        finally:
            self.progress.close()
        checked = "stored file(s) and version(s)" if counts["versions"] else "stored file(s)"
        failed = sum(n for problem, n in counts.items() if problem not in _NOT_FAILURES)
        if failed:
            raise CommandError(
                f"{failed} {checked} failed verification: {_failures(counts)}; "
                f"{counts['intact']} intact."
            )
        if self.verbosity >= 1:
            changed = counts["changed"]
            skipped = f" ({changed} changed while being read, not checked)" if changed else ""
            intact_versions = counts["intact versions"]
            kept = f" and {intact_versions} version(s)" if intact_versions else ""
            self.stdout.write(
                f"Verified {counts['intact'] - intact_versions} stored file(s){kept}, "
                f"{format_size(counts['bytes'])}: all intact{skipped}.",
                style_func=self.style.SUCCESS,
            )

    def _verify_all(self, items: Iterator[Item]) -> Counter[str]:
        counts: Counter[str] = Counter()
        current: Item | None = None
        try:
            for current in items:
                self.progress.set_label(current.name)
                problem = self._verify(current)
                counts[problem or "intact"] += 1
                counts["versions"] += current.version is not None
                if problem == "changed":
                    self.progress.write(
                        self.stderr,
                        f"{current.label} was replaced or deleted while it was read; not checked.",
                        self.style.WARNING,
                    )
                elif problem is None:
                    counts["bytes"] += current.size
                    counts["intact versions"] += current.version is not None
                    if self.verbosity >= 2:
                        self.progress.write(self.stdout, f"OK {current.label}")
        except KeyboardInterrupt:
            missing = sum(n for problem, n in counts.items() if problem.startswith("missing"))
            raise CommandError(
                f"Interrupted while verifying {_shown(current)}; {counts['intact']} file(s) "
                f"were intact so far, {missing} missing, {counts['mismatch']} damaged.",
                returncode=INTERRUPTED,
            ) from None
        except DatabaseError as exc:
            detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise CommandError(
                f"A database error stopped the verification at {_shown(current)}: "
                f"{detail.rstrip('.')}."
            ) from None
        return counts

    def _verify(self, item: Item) -> str | None:
        """Return None if intact, or the problem: "missing" (a large object), "missing
        from storage '<alias>'", "unreachable", "mismatch", or "changed" (edited meanwhile).
        """
        oid = item.oid
        where = (
            f"its file {item.storage_name!r} in the storage {item.storage!r}"
            if item.storage
            else f"its large object {oid}"
        )
        if item.storage and item.storage not in settings.STORAGES:
            self._report(
                item,
                f"the storage {item.storage!r} that holds it as {item.storage_name!r} "
                "is not in STORAGES",
            )
            return "unreachable"
        try:
            if item.storage and item.open_moved:  # moved by files_move
                opened: File[bytes] = item.open_moved()
            elif oid is None:
                raise FileNotFoundError
            else:
                opened = LargeObjectStorage(using=self.using).open(str(oid))
            size = opened.size
            digest = self._hash(opened)
        except FileNotFoundError:
            if not item.unchanged(self.using):
                return "changed"
            if item.storage:
                lost = f"missing from storage {item.storage!r}"
                self._report(item, f"{lost} as {item.storage_name!r}")
                return lost
            self._report(item, f"{where} does not exist")
            return "missing"
        except StorageUnavailable as exc:
            self._report(item, f"{where} cannot be read: {str(exc).rstrip('.')}")
            return "unreachable"
        if size == item.size and (not item.sha256 or digest == item.sha256):
            return None
        if not item.unchanged(self.using):
            return "changed"
        self._report(
            item,
            f"{where} holds {size} bytes with SHA-256 {digest}; "
            f"{item.size} bytes with SHA-256 {item.sha256 or '(unknown)'} were stored",
        )
        return "mismatch"

    def _hash(self, opened: File[bytes]) -> str:
        digest = hashlib.sha256()
        with opened:
            for data in opened.chunks(app_settings.CHUNK_SIZE):
                digest.update(data)
                self.progress.advance(len(data))
        return digest.hexdigest()

    def _report(self, item: Item, problem: str) -> None:
        self.progress.write(self.stderr, f"{item.label}: {problem}.", self.style.ERROR)


@dataclass(frozen=True)
class Item:
    """What is verified: a stored file's content, or a version's (``version`` its number)."""

    label: str  # how reports name it: "<uuid> '<name>'" (and " version <n>")
    name: str  # how the progress bar and an interruption name it
    oid: int | None
    size: int
    sha256: str
    unchanged: Callable[[str], bool]  # whether its row still holds this content
    version: int | None = None
    storage: str = ""  # moved by files_move: the storage and the name there
    storage_name: str = ""
    open_moved: Callable[[], File[bytes]] | None = None


def _items(files: QuerySet[StoredFile], versions: QuerySet[FileVersion]) -> Iterator[Item]:
    """Yield what to verify: the stored files, then their kept versions, page by page."""
    for stored in pages(files):
        # A file replaced or deleted while it was read is not damage: its row moved on.
        row = {
            "pk": stored.pk,
            "file": stored.file.oid,
            "storage_name": stored.storage_name,
            "size": stored.size,
        }
        yield Item(
            label=f"{stored.uuid} {stored.name!r}",
            name=str(stored),
            oid=stored.file.oid,
            size=stored.size,
            sha256=stored.sha256,
            unchanged=partial(_file_unchanged, row),
            storage=stored.storage,
            storage_name=stored.storage_name,
            open_moved=stored.open_content,
        )
    for version in pages(versions):
        # A version pruned while it was read (FILES_APP_VERSIONS lowered, or its file
        # deleted for good) is not damage either.
        yield Item(
            label=f"{version.stored_file.uuid} {version.name!r} version {version.number}",
            name=str(version),
            oid=version.file.oid,
            size=version.size,
            sha256=version.sha256,
            unchanged=partial(_version_unchanged, version.pk),
            version=version.number,
        )


def _file_unchanged(row: dict[str, Any], using: str) -> bool:
    return StoredFile.everything.using(using).filter(**row).exists()


def _version_unchanged(pk: int, using: str) -> bool:
    return FileVersion.objects.using(using).filter(pk=pk).exists()


def _shown(item: Item | None) -> str:
    return repr(item.name) if item is not None else "the start"


# What _verify_all counts besides failures.
_NOT_FAILURES = frozenset({"intact", "bytes", "changed", "versions", "intact versions"})


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

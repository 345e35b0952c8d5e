"""Move stored files between large objects and another Django storage (S3, the file system)."""

from __future__ import annotations

import contextlib
import copy
import hashlib
import io
from collections.abc import Iterable, Iterator
from typing import Any

from django.core.files.base import File
from django.core.files.storage import Storage
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import DatabaseError, transaction
from django.db.models import QuerySet

from files_app import external
from files_app.conf import app_settings
from files_app.management.commands.files_export import safe_name
from files_app.management.options import (
    INTERRUPTED,
    add_database_argument,
    database_alias,
    listed,
    pages,
    with_uuids,
)
from files_app.models import PendingRemoval, StoredFile, drain_removals
from files_app.progress import Progress, format_size
from files_app.storage import LargeObjectStorage, oid_from_name

#: ``--to`` this to bring files back into large objects.
LARGE_OBJECTS = "large-objects"


class _Failed(Exception):
    """One file could not be moved; the message says why. It stays where it was."""


class _Copying(io.RawIOBase):
    """A read-once stream over ``chunks`` that hashes and counts what is read."""

    def __init__(self, chunks: Iterable[bytes], progress: Progress) -> None:
        self._chunks = iter(chunks)
        self._left = memoryview(b"")
        self.progress = progress
        self.hash = hashlib.sha256()
        self.size = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        while not self._left:
            data = next(self._chunks, None)
            if data is None:
                return 0
            self.hash.update(data)
            self.size += len(data)
            self.progress.advance(len(data))
            self._left = memoryview(data)
        count = min(len(view), len(self._left))
        view[:count] = self._left[:count]
        self._left = self._left[count:]
        return count


@contextlib.contextmanager
def _in_this_thread(storage: Storage) -> Iterator[None]:
    """Upload to an ``S3Storage`` without s3transfer's threads, for the time of a save: its
    worker thread would read the source, a large object, through a database connection of
    its own that nothing closes. One part in memory at a time, read as it is sent."""
    if not external.is_s3(storage):
        yield
        return
    s3: Any = storage
    config = s3.transfer_config
    s3.transfer_config = copy.copy(config)
    s3.transfer_config.use_threads = False
    try:
        yield
    finally:
        s3.transfer_config = config


class Command(BaseCommand):
    help = (
        "Move stored files out of their large objects into another Django storage (a "
        "STORAGES alias: S3 through django-storages, the file system), or back with "
        f"--to {LARGE_OBJECTS}. Each file is streamed, read back from where it went and "
        "checked against its SHA-256 before the row points there; only then is the old copy "
        "freed. Interrupted, it can be run again: files already moved are skipped, a partial "
        "copy is checked and replaced. Back in large objects, a file whose bytes another "
        "file or version holds already shares that object (FILES_APP_DEDUPE) instead of "
        "being copied. Prints '<uuid>  <storage>:<name>' per moved file."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--to",
            required=True,
            metavar="STORAGE",
            help=f"The STORAGES alias to move files to, or {LARGE_OBJECTS!r}.",
        )
        parser.add_argument(
            "--uuid",
            action="append",
            default=[],
            metavar="UUID",
            help="Move the stored file with this UUID (repeat for several); default: all.",
        )
        parser.add_argument(
            "--min-size",
            type=int,
            default=0,
            metavar="BYTES",
            help="Move only files of at least this many bytes.",
        )
        parser.add_argument(
            "--dry-run",
            action="store_true",
            help="List the files that would move, and their total size; change nothing.",
        )
        add_database_argument(parser, "move files of")

    def handle(self, *args: Any, **options: Any) -> None:
        self.using = using = database_alias(options["database"], "no files to move")
        self.target = target = options["to"]
        self.storage: Storage | None = None
        if target == LARGE_OBJECTS:
            self.large_objects = LargeObjectStorage(using=using)
        else:
            try:
                self.storage = external.get_storage(target)
            except FileNotFoundError:
                raise CommandError(
                    f"--to {target!r} is not in STORAGES (nor {LARGE_OBJECTS!r})."
                ) from None
            if isinstance(self.storage, LargeObjectStorage):
                raise CommandError(
                    f"STORAGES[{target!r}] keeps large objects: use --to {LARGE_OBJECTS}."
                )
            try:
                external.probe(self.storage)
            except external.StorageUnavailable as exc:
                raise CommandError(
                    f"STORAGES[{target!r}] cannot be reached: {exc}. Nothing was moved."
                ) from None
        if options["min_size"] < 0:
            raise CommandError(f"--min-size must be 0 or more, not {options['min_size']}.")
        queryset = with_uuids(StoredFile.objects.using(using), options["uuid"])
        queryset = queryset.filter(size__gte=options["min_size"])
        queryset = queryset.exclude(storage="" if target == LARGE_OBJECTS else target)
        count = total = 0
        for row in pages(queryset.only("pk", "size")):
            count, total = count + 1, total + row.size
        if options["dry_run"]:
            for row in pages(queryset):
                self.stdout.write(
                    f"{row.uuid}  {row.storage or LARGE_OBJECTS} -> {target}  "
                    f"{format_size(row.size)}  {row.name}"
                )
            self.stderr.write(f"Would move {count} file(s), {format_size(total)}, to {target!r}.")
            return
        self._move_all(queryset, count, total)

    def _move_all(self, queryset: QuerySet[StoredFile], count: int, total: int) -> None:
        # Each byte is read twice: copied, then read back from where it went.
        self.progress = progress = Progress(self.stderr, 2 * total)
        moved = moved_bytes = 0
        failures: list[str] = []
        current: StoredFile | None = None
        try:
            for current in pages(queryset):
                progress.set_label(current.name)
                try:
                    place = self._move(current)
                except _Failed as exc:
                    failures.append(str(current.uuid))
                    progress.write(
                        self.stderr,
                        f"Could not move {current.name!r} ({current.uuid}): {exc}; "
                        "it stays where it was.",
                        self.style.ERROR,
                    )
                    continue
                moved, moved_bytes = moved + 1, moved_bytes + current.size
                progress.write(self.stdout, f"{current.uuid}  {place}")
        except KeyboardInterrupt:
            raise CommandError(
                f"Interrupted while moving {str(current)!r}: it stays where it was; the "
                f"{moved} file(s) moved before it are in place. Run the command again to go on.",
                returncode=INTERRUPTED,
            ) from None
        except DatabaseError as exc:
            raise CommandError(
                f"A database error stopped the move at {str(current)!r}: "
                f"{str(exc).strip().splitlines()[0] if str(exc).strip() else exc}."
            ) from None
        finally:
            progress.close()
        if failures:
            raise CommandError(
                f"Could not move {len(failures)} of {count} file(s): {listed(failures)}."
            )
        self.stderr.write(
            f"Moved {moved} file(s), {format_size(moved_bytes)}, to {self.target!r}.",
            style_func=self.style.SUCCESS,
        )

    def _source_chunks(self, stored: StoredFile) -> Iterator[bytes]:
        try:
            with stored.open_content() as opened:
                yield from opened.chunks(app_settings.CHUNK_SIZE)
        except FileNotFoundError as exc:
            raise _Failed(f"its bytes are missing ({exc})") from None
        except external.StorageUnavailable as exc:
            raise _Failed(str(exc)) from None

    def _move(self, stored: StoredFile) -> str:
        """Copy one file, verify the copy, point its row there; return where it went."""
        source = _Copying(self._source_chunks(stored), self.progress)
        content = File(io.BufferedReader(source, app_settings.CHUNK_SIZE), stored.name)
        content.content_type = stored.content_type  # type: ignore[attr-defined]
        if self.storage is None:
            return self._move_into_large_object(stored, content, source)
        return self._move_out(stored, self.storage, content, source)

    def _check(self, stored: StoredFile, what: str, size: int, sha256: str) -> None:
        if size != stored.size or sha256 != stored.sha256:
            raise _Failed(
                f"{what} holds {size} bytes with SHA-256 {sha256}, but {stored.size} bytes "
                f"with SHA-256 {stored.sha256} were stored"
            )

    def _move_out(
        self, stored: StoredFile, storage: Storage, content: File[bytes], source: _Copying
    ) -> str:
        name = f"{stored.uuid}/{safe_name(stored.name, str(stored.uuid))}"
        # A removal queued for this name (the file moved back earlier) must not delete the
        # new copy: take it off the queue first, waiting for a drain that holds it.
        with transaction.atomic(using=self.using):
            queued = PendingRemoval.objects.using(self.using).filter(
                storage=self.target, name=name
            )
            list(queued.select_for_update())
            queued.delete()
        try:
            saved = self._reuse(stored, storage, name)
            if saved is None:
                with _in_this_thread(storage):
                    saved = storage.save(name, content)
                try:
                    self._check(stored, "its source", source.size, source.hash.hexdigest())
                    self._verify(stored, storage, saved)
                except _Failed:
                    storage.delete(saved)  # a copy that is not the file's bytes
                    raise
        except (OSError, external.StorageUnavailable) as exc:
            raise _Failed(f"the storage {self.target!r} failed: {exc}") from None
        except _Failed:
            raise
        except Exception as exc:  # the storage's own errors (boto3 and co.)
            raise _Failed(f"the storage {self.target!r} failed: {exc}") from None
        if not StoredFile.objects.using(self.using).relocate(stored, None, self.target, saved):
            # Queued, not deleted: the drain leaves it alone if a row holds it (another
            # files_move that moved the same file under the same name first).
            PendingRemoval.objects.using(self.using).create(storage=self.target, name=saved)
            drain_removals(self.using)
            raise _Failed("it was replaced or deleted while it was copied")
        return f"{self.target}:{saved}"

    def _reuse(self, stored: StoredFile, storage: Storage, name: str) -> str | None:
        """Return ``name`` if an interrupted run left a complete, verified copy there; delete
        any other file of that name."""
        if not storage.exists(name):
            return None
        try:
            self._verify(stored, storage, name)
        except (_Failed, FileNotFoundError):
            storage.delete(name)
            return None
        self.progress.advance(stored.size)  # not copied again
        return name

    def _verify(self, stored: StoredFile, storage: Storage, name: str) -> None:
        read = external.reader(storage, name)
        chunks = read.chunks(read.size(), app_settings.CHUNK_SIZE)
        self._check_copy(stored, f"the copy {name!r} in {self.target!r}", chunks)

    def _check_copy(self, stored: StoredFile, what: str, chunks: Iterable[bytes]) -> None:
        """Read a copy back (counted in the progress bar) and check it against the row."""
        digest, size = hashlib.sha256(), 0
        for data in chunks:
            digest.update(data)
            size += len(data)
            self.progress.advance(len(data))
        self._check(stored, what, size, digest.hexdigest())

    def _move_into_large_object(
        self, stored: StoredFile, content: File[bytes], source: _Copying
    ) -> str:
        # One transaction: interrupted, the new object is rolled back with the rest.
        with transaction.atomic(using=self.using):
            if app_settings.DEDUPE and stored.sha256:
                # Another file or version holds these bytes already (FILES_APP_DEDUPE):
                # share its object, as a save would, and copy nothing.
                files = StoredFile.everything.using(self.using)
                twin = files.shared_object(stored.sha256, stored.size, besides_pk=stored.pk)
                if twin is not None:
                    if not files.relocate(stored, twin, "", ""):
                        raise _Failed("it was replaced or deleted while it was copied")
                    self.progress.advance(2 * stored.size)  # not copied, nor read back
                    return f"{LARGE_OBJECTS}:{twin}"
            saved = self.large_objects.save(safe_name(stored.name, "file"), content)
            self._check(stored, "its source", source.size, source.hash.hexdigest())
            oid = oid_from_name(saved)
            assert oid is not None
            with self.large_objects.open(saved) as opened:
                self._check_copy(stored, f"large object {oid}", opened.chunks())
            if not StoredFile.objects.using(self.using).relocate(stored, oid, "", ""):
                raise _Failed("it was replaced or deleted while it was copied")
        return f"{LARGE_OBJECTS}:{oid}"

"""Export stored files to a directory, streaming each one and checking its SHA-256."""

from __future__ import annotations

import contextlib
import fnmatch
import hashlib
import os
import tempfile
from collections.abc import Iterator
from datetime import datetime, time, timedelta
from typing import IO, Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import DatabaseError
from django.db.models import QuerySet
from django.utils import timezone
from django.utils.dateparse import parse_date, parse_datetime

from files_app import external
from files_app.management.options import (
    INTERRUPTED,
    add_database_argument,
    database_alias,
    listed,
    pages,
    with_uuids,
)
from files_app.models import StoredFile
from files_app.progress import Progress, format_size
from files_app.storage import LargeObjectStorage

# Most file systems allow 255 bytes in one file name.
MAX_NAME_BYTES = 255


def safe_name(name: str, fallback: str) -> str:
    """Return ``name`` usable as one file name: no separators, no ".." and not too long."""
    cleaned = "".join("_" if ch in "/\\\0" or ord(ch) < 32 or ch == "\x7f" else ch for ch in name)
    cleaned = cleaned.strip()
    if cleaned in ("", ".", ".."):
        return fallback
    if len(cleaned.encode()) > MAX_NAME_BYTES:
        stem, ext = os.path.splitext(cleaned)
        if len(ext.encode()) > 32:
            stem, ext = cleaned, ""
        budget = MAX_NAME_BYTES - len(ext.encode()) - 16  # room for " (n)" and temp names
        stem = stem.encode()[:budget].decode(errors="ignore")
        cleaned = stem + ext
    return cleaned


def _numbered(name: str, number: int) -> str:
    stem, ext = os.path.splitext(name)
    return f"{stem} ({number}){ext}"


class _Failed(Exception):
    """One file could not be exported; the message says why."""


class Command(BaseCommand):
    help = (
        "Export stored files (all, or those the options select) into a directory, streaming "
        "each from its large object and checking its SHA-256 while it is written: a file is "
        "written under a temporary name and only renamed into place if its content matches. "
        "Prints one line per exported file: '<uuid>  <path>'. The exit status is non-zero if "
        "any file failed."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "directory",
            metavar="DIRECTORY",
            help="Where to write the files; created if it does not exist.",
        )
        parser.add_argument(
            "--uuid",
            action="append",
            default=[],
            metavar="UUID",
            help="Export the stored file with this UUID (repeat for several).",
        )
        parser.add_argument(
            "--name",
            metavar="PATTERN",
            help="Export only files whose name matches this case-sensitive glob, e.g. '*.pdf'.",
        )
        parser.add_argument(
            "--since",
            metavar="DATE",
            help=(
                "Export only files stored at or after DATE (YYYY-MM-DD, or an ISO 8601 date "
                "and time; the current time zone unless one is given)."
            ),
        )
        parser.add_argument(
            "--until",
            metavar="DATE",
            help=(
                "Export only files stored before the end of DATE (YYYY-MM-DD: that whole day "
                "included), or up to an ISO 8601 date and time."
            ),
        )
        parser.add_argument(
            "--layout",
            choices=["flat", "uuid"],
            default="flat",
            help=(
                "flat (the default): every file in DIRECTORY under its name, ' (2)', ' (3)'... "
                "added when the name is taken; existing files are never overwritten. uuid: "
                "each file as DIRECTORY/<uuid>/<name>, replacing an earlier export of it."
            ),
        )
        add_database_argument(parser, "export from")

    def handle(self, *args: Any, **options: Any) -> None:
        using = database_alias(options["database"], "nothing to export")
        self.verbosity = options["verbosity"]
        self.storage = LargeObjectStorage(using=using)
        queryset = self._select(using, options)
        directory = options["directory"]
        if os.path.lexists(directory) and not os.path.isdir(directory):
            raise CommandError(f"{directory!r} exists and is not a directory.")
        try:
            os.makedirs(directory, exist_ok=True)
        except OSError as exc:
            raise CommandError(
                f"Cannot create the directory {directory!r}: {exc.strerror or exc}."
            ) from None
        self.umask = os.umask(0)
        os.umask(self.umask)
        self._export_all(queryset, directory, options["name"], options["layout"])

    def _export_all(
        self, queryset: QuerySet[StoredFile], directory: str, pattern: str | None, layout: str
    ) -> None:
        def selected(queryset: QuerySet[StoredFile]) -> Iterator[StoredFile]:
            for stored in pages(queryset):
                if pattern is None or fnmatch.fnmatchcase(stored.name, pattern):
                    yield stored

        count = total = 0
        for stored in selected(queryset.only("pk", "name", "size")):
            count, total = count + 1, total + stored.size
        self.progress = progress = Progress(self.stderr, total)
        failures: list[str] = []
        exported = exported_bytes = 0
        current: StoredFile | None = None
        try:
            for current in selected(queryset):
                progress.set_label(current.name)
                path = self._export(current, directory, layout)
                if path is None:
                    failures.append(str(current.uuid))
                    continue
                exported, exported_bytes = exported + 1, exported_bytes + current.size
                progress.write(self.stdout, f"{current.uuid}  {path}")
        except KeyboardInterrupt:
            raise CommandError(
                f"Interrupted while exporting {str(current)!r}: its partial copy was removed; "
                f"the {exported} file(s) exported before it are complete.",
                returncode=INTERRUPTED,
            ) from None
        except DatabaseError as exc:
            raise CommandError(
                f"A database error stopped the export at {str(current)!r}: {_first_line(exc)}."
            ) from None
        finally:
            progress.close()
        if failures:
            raise CommandError(
                f"Could not export {len(failures)} of {count} file(s): {listed(failures)}."
            )
        if self.verbosity >= 1:
            self.stderr.write(
                f"Exported {exported} file(s), {format_size(exported_bytes)}, to {directory!r}.",
                style_func=self.style.SUCCESS,
            )

    def _select(self, using: str, options: dict[str, Any]) -> QuerySet[StoredFile]:
        queryset = with_uuids(StoredFile.objects.using(using), options["uuid"])
        if options["since"]:
            since, _ = self._moment(options["since"], "--since")
            queryset = queryset.filter(created__gte=since)
        if options["until"]:
            until, whole_day = self._moment(options["until"], "--until")
            if whole_day:  # up to the next midnight
                queryset = queryset.filter(created__lt=until + timedelta(days=1))
            else:
                queryset = queryset.filter(created__lte=until)
        return queryset

    def _moment(self, value: str, option: str) -> tuple[datetime, bool]:
        """Return the aware date-time ``value`` names, and whether it was a whole day."""
        try:
            # A date first: parse_datetime() would also take "2026-02-01", as midnight.
            day = parse_date(value)
            moment = datetime.combine(day, time.min) if day else parse_datetime(value)
        except ValueError:  # well-formed but impossible, like February 30
            day = moment = None
        if moment is None:
            raise CommandError(
                f"{option} must be a date (YYYY-MM-DD) or an ISO 8601 date and time, "
                f"not {value!r}."
            )
        if timezone.is_naive(moment):
            moment = timezone.make_aware(moment)
        return moment, day is not None

    def _target(self, stored: StoredFile, directory: str, layout: str) -> str:
        name = safe_name(stored.name, str(stored.uuid))
        if layout == "uuid":
            folder = os.path.join(directory, str(stored.uuid))
            os.makedirs(folder, exist_ok=True)
            return os.path.join(folder, name)
        target, number = os.path.join(directory, name), 1
        while os.path.lexists(target):
            number += 1
            target = os.path.join(directory, _numbered(name, number))
        return target

    def _export(self, stored: StoredFile, directory: str, layout: str) -> str | None:
        """Write one file; return its path, or None after reporting why it failed."""
        try:
            target = self._target(stored, directory, layout)
            # A temporary name in the same directory, so that the final rename is atomic.
            fd, temp = tempfile.mkstemp(
                dir=os.path.dirname(target), prefix=".files_export-", suffix=".part"
            )
        except OSError as exc:
            self._report(stored, f"cannot write into {directory!r}: {exc.strerror or exc}")
            return None
        try:
            os.fchmod(fd, 0o666 & ~self.umask)  # mkstemp makes it private (0600)
            with os.fdopen(fd, "wb") as out:
                self._copy(stored, out)
            os.replace(temp, target)
        except (_Failed, OSError) as exc:
            _remove(temp)
            if isinstance(exc, _Failed):
                self._report(stored, str(exc))
            else:
                self._report(stored, f"cannot write {target!r}: {exc.strerror or exc}")
            return None
        except BaseException:
            _remove(temp)
            raise
        return target

    def _copy(self, stored: StoredFile, out: IO[bytes]) -> None:
        digest, size = hashlib.sha256(), 0
        for chunk in self._read(stored):
            out.write(chunk)
            digest.update(chunk)
            size += len(chunk)
            self.progress.advance(len(chunk))
        if size != stored.size or (stored.sha256 and digest.hexdigest() != stored.sha256):
            raise _Failed(
                f"its content does not match what was stored: {size} bytes with SHA-256 "
                f"{digest.hexdigest()}, expected {stored.size} bytes with SHA-256 "
                f"{stored.sha256 or '(unknown)'}"
            )

    def _read(self, stored: StoredFile) -> Iterator[bytes]:
        if stored.storage:  # moved by files_move
            try:
                with stored.open_content() as source:
                    yield from source.chunks()
            except FileNotFoundError:
                raise _Failed(
                    f"{stored.storage_name!r} is missing from the storage {stored.storage!r}"
                ) from None
            except external.StorageUnavailable as exc:
                raise _Failed(str(exc)) from None
            return
        oid = stored.file.oid
        try:
            with self.storage.open(str(oid)) as source:
                yield from source.chunks()
        except FileNotFoundError:
            raise _Failed(f"its large object {oid} does not exist") from None

    def _report(self, stored: StoredFile, reason: str) -> None:
        self.progress.write(
            self.stderr, f"Could not export {stored.name!r} ({stored.uuid}): {reason}."
        )


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0].rstrip(".") if text else type(exc).__name__


def _remove(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)

"""Import files and directories from disk as stored files, streaming each one."""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Iterator
from typing import IO, Any
from urllib.parse import urlsplit

from django.contrib.auth import get_user_model
from django.core.exceptions import SuspiciousFileOperation
from django.core.files.base import File
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import DatabaseError, connections, router
from django.urls import NoReverseMatch

from files_app.conf import app_settings
from files_app.management.options import INTERRUPTED, listed
from files_app.models import StoredFile
from files_app.progress import Progress, format_size
from files_app.storage import LargeObjectStorage


class _ProgressFile(File):  # type: ignore[type-arg]
    """A file on disk that reports every chunk read from it to a progress bar."""

    def __init__(self, file: IO[bytes], name: str, progress: Progress) -> None:
        super().__init__(file, name)
        self.progress = progress

    def chunks(self, chunk_size: int | None = None) -> Iterator[bytes]:
        for chunk in super().chunks(chunk_size):
            self.progress.advance(len(chunk))
            yield chunk


def _display_name(path: str) -> str:
    # A file name that is not valid UTF-8 arrives with surrogate escapes (PEP 383), which
    # PostgreSQL refuses; keep what can be read of it.
    basename = os.path.basename(path)
    return basename.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


class Command(BaseCommand):
    help = (
        "Import files from disk as stored files (large objects). Directories are imported "
        "recursively. Each file is streamed into the database and hashed (SHA-256) on the "
        "way, in its own transaction: an interrupted import leaves no half-stored file. "
        "Prints one line per stored file: '<uuid>  <download URL>  <path>'. A file that "
        "cannot be read is reported and the rest are imported; the exit status is then "
        "non-zero."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "paths",
            nargs="+",
            metavar="PATH",
            help=(
                "A file to import, or a directory to import with everything below it "
                "(symbolic links to directories are not followed)."
            ),
        )
        parser.add_argument(
            "--public",
            action="store_true",
            help="Make the imported files public: anyone with the URL can download them.",
        )
        parser.add_argument(
            "--owner",
            metavar="USERNAME",
            help="Make this user the owner of the imported files (default: no owner).",
        )
        parser.add_argument(
            "--skip-existing",
            action="store_true",
            help=(
                "Do not import a file whose content (SHA-256) is already stored; each file is "
                "read once to hash it before it is stored."
            ),
        )
        parser.add_argument(
            "--base-url",
            metavar="URL",
            help=(
                "Print download URLs under this address, e.g. https://files.example.com "
                "(default: print the path of the download URL only)."
            ),
        )

    def handle(self, *args: Any, **options: Any) -> None:
        self._check_database()
        self.base_url = self._base_url(options["base_url"])
        owner = self._owner(options["owner"])
        files, walk_errors = self._collect(options["paths"])
        skip_existing = options["skip_existing"]
        self.verbosity = options["verbosity"]
        self.failures: list[str] = []
        self.stored = self.skipped = self.stored_bytes = 0
        # With --skip-existing every file is read twice: once to hash it, once to store it.
        total = sum(size for _, size in files) * (2 if skip_existing else 1)
        self.progress = Progress(self.stderr, total)
        for path, reason in walk_errors:
            self._fail(path, reason)
        current = None
        try:
            for path, size in files:
                current = path
                self.progress.set_label(path)
                self._import(path, size, options["public"], owner, skip_existing)
        except KeyboardInterrupt:
            # StoredFile.save() is atomic: the file being stored was rolled back whole.
            self.progress.close()
            raise CommandError(
                f"Interrupted while importing {current!r}: that file was not stored; "
                f"the {self.stored} file(s) imported before it are kept.",
                returncode=INTERRUPTED,
            ) from None
        except DatabaseError as exc:
            # The file being stored was rolled back; a broken connection fails every next
            # file the same way, so stop here.
            self.progress.close()
            detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise CommandError(
                f"A database error stopped the import at {current!r}: {detail.rstrip('.')}; "
                f"the {self.stored} file(s) imported before it are kept."
            ) from None
        self.progress.close()
        self._summary()

    # -- set-up -------------------------------------------------------------------------

    def _check_database(self) -> None:
        storage = StoredFile._meta.get_field("file").storage
        aliases = {router.db_for_write(StoredFile)}
        if isinstance(storage, LargeObjectStorage):
            aliases.add(storage.using)
        for using in sorted(aliases):
            if connections[using].vendor != "postgresql":
                raise CommandError(
                    f"The database {using!r} is not PostgreSQL: files cannot be stored there."
                )

    def _base_url(self, base_url: str | None) -> str:
        if base_url is None:
            return ""
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.netloc or parts.query:
            raise CommandError(
                f"--base-url must be an http:// or https:// address such as "
                f"'https://files.example.com', not {base_url!r}."
            )
        return base_url.rstrip("/")

    def _owner(self, username: str | None) -> Any:
        if username is None:
            return None
        user_model = get_user_model()
        using = router.db_for_read(user_model)
        try:
            return user_model._default_manager.db_manager(using).get_by_natural_key(username)
        except user_model.DoesNotExist:
            raise CommandError(f"Unknown user {username!r}: no user has that name.") from None

    def _collect(self, paths: list[str]) -> tuple[list[tuple[str, int]], list[tuple[str, str]]]:
        """Return (path, size) of every file to import, and (path, reason) of walk errors."""
        for path in paths:
            if not os.path.exists(path):
                raise CommandError(f"No file or directory at {path!r}.")
        walk_errors: list[tuple[str, str]] = []
        files: list[tuple[str, int]] = []
        for path in paths:
            if not os.path.isdir(path):
                files.append((path, self._size(path)))
                continue

            def walk_error(exc: OSError) -> None:
                walk_errors.append((str(exc.filename), exc.strerror or str(exc)))

            for directory, dirnames, filenames in os.walk(path, onerror=walk_error):
                dirnames.sort()
                for filename in sorted(filenames):
                    file_path = os.path.join(directory, filename)
                    files.append((file_path, self._size(file_path)))
        return files, walk_errors

    def _size(self, path: str) -> int:
        try:
            return os.stat(path).st_size
        except OSError:
            return 0  # reported when the file is read

    # -- import -------------------------------------------------------------------------

    def _import(
        self,
        path: str,
        size: int,
        public: bool,
        owner: Any,
        skip_existing: bool,
    ) -> None:
        try:
            if not stat.S_ISREG(os.stat(path).st_mode):
                # Opening a FIFO would wait for a writer; a device may never end.
                self._fail(path, "it is not a regular file")
                return
            with open(path, "rb") as source:
                if skip_existing:
                    existing = self._existing(source)
                    if existing is not None:
                        self.skipped += 1
                        self.progress.advance(size)
                        if self.verbosity >= 1:
                            self.progress.write(
                                self.stderr,
                                f"Skipped {path!r}: its content is already stored as {existing}.",
                                style_func=self.style.WARNING,
                            )
                        return
                    source.seek(0)
                upload = _ProgressFile(source, _display_name(path), self.progress)
                stored = StoredFile(file=upload, public=public, owner=owner)
                stored.save()
        except (OSError, SuspiciousFileOperation) as exc:
            reason = getattr(exc, "strerror", None) or str(exc)
            self._fail(path, reason)
            return
        self.stored += 1
        self.stored_bytes += stored.size
        self.progress.write(self.stdout, f"{stored.uuid}  {self._url(stored)}  {path}")

    def _existing(self, source: IO[bytes]) -> str | None:
        digest = hashlib.sha256()
        chunk_size = app_settings.CHUNK_SIZE
        while data := source.read(chunk_size):
            digest.update(data)
            self.progress.advance(len(data))
        match = StoredFile.objects.filter(sha256=digest.hexdigest()).values_list("uuid").first()
        return None if match is None else str(match[0])

    def _url(self, stored: StoredFile) -> str:
        try:
            return self.base_url + stored.get_absolute_url()
        except NoReverseMatch:
            # files_app.urls is not in this project's URLconf: there is no download URL.
            return "-"

    def _fail(self, path: str, reason: str) -> None:
        self.failures.append(path)
        self.progress.write(self.stderr, f"Could not import {path!r}: {reason.rstrip('.')}.")

    def _summary(self) -> None:
        if self.failures:
            raise CommandError(
                f"Could not import {len(self.failures)} file(s): {listed(self.failures)}; "
                f"{self.stored} file(s) were imported."
            )
        if self.verbosity >= 1:
            skipped = f"; skipped {self.skipped} already stored" if self.skipped else ""
            self.stderr.write(
                f"Imported {self.stored} file(s), {format_size(self.stored_bytes)}{skipped}.",
                style_func=self.style.SUCCESS,
            )

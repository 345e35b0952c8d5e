"""A tus 1.0 server (https://tus.io/protocols/resumable-upload): uploads that survive a
dropped connection, written straight into a large object.

Core protocol, and the extensions creation, creation-with-upload, termination, checksum
(sha1, sha256) and expiration. Each piece of a ``PATCH`` body (``FILES_APP_CHUNK_SIZE``) is
written with the new offset and the running SHA-256 in one transaction, so the offset a
``HEAD`` reports after a dropped connection or a crashed server is exactly what is durable.
The piece that completes an upload also turns it into a :class:`StoredFile` (name and type
from ``Upload-Metadata``'s ``filename`` and ``filetype``), in the same transaction.

One request at a time writes to an upload, and the newest wins (as @tus/server's locker
asks the lock's holder to let go). Every request on an upload (``HEAD``, ``PATCH``,
``DELETE``) first takes its *lease*: it locks the row (``SELECT … FOR UPDATE``), adds one
to ``Upload.lease`` and commits. A ``PATCH`` writes each piece only if, under the row's
lock, the lease is still the one it took; otherwise it stops there (409). So a ``HEAD``
waits at most for the piece being written, and once it has answered, no request the
server had started before it writes another byte: the offset it reports is final, even
while a dropped ``PATCH`` still reads the bytes its server had buffered. The lease is a
column, not a session lock: it holds across processes, and behind PgBouncer in
transaction mode.

A request waits for the row's lock at most ``LOCK_WAIT`` seconds (a piece takes far less).
Longer means the lock's holder is stuck — typically the session of an app server that was
killed mid-piece, until PostgreSQL notices it is gone — and the request is answered
``423 Locked`` with ``Retry-After`` (as tusd answers a locked upload; tus-js-client and
Uppy retry it) instead of hanging.

Lock order, in every transaction here: the ``Upload`` row, then its large object, then
(by the piece that completes the upload) the new stored file's rows and those its save
locks (a dedupe twin, ``FOR SHARE``). No transaction is open while a request reads from
its client.

A ``PATCH`` with ``Upload-Checksum`` writes its pieces the same way but moves the offset
only once the whole body matches the checksum; until then its bytes lie beyond the offset,
where the next accepted ``PATCH`` overwrites them. A body must have a ``Content-Length``
(a chunked one is a 411). A refused creation-with-upload keeps nothing.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.core.exceptions import RequestAborted
from django.db import OperationalError, router, transaction
from django.http import HttpRequest, HttpResponse, HttpResponseBase
from django.urls import reverse
from django.utils import timezone
from django.utils.http import http_date
from django.views import View

from files_app import _databases, mediatypes, quotas
from files_app.conf import app_settings
from files_app.digests import Digest, ResumableSHA256
from files_app.fields import WrittenObject
from files_app.models import StoredFile, Upload, _upload_name
from files_app.sniff import SNIFF_BYTES
from files_app.storage import LargeObjectStorage

__all__ = ["UploadView"]

TUS_VERSION = "1.0.0"
EXTENSIONS = "creation,creation-with-upload,termination,checksum,expiration"
CHECKSUMS: dict[str, Callable[[], Any]] = {"sha1": hashlib.sha1, "sha256": hashlib.sha256}
OCTETS = "application/offset+octet-stream"
# What one large object can hold: 4 TB (PostgreSQL's limit, with 8 kB pages).
LARGEST_OBJECT = 4 * 1024**4
# Read from the client at a time (a piece written to the database is CHUNK_SIZE).
READ_SIZE = 64 * 1024
# Expired uploads deleted per transaction by delete_expired().
EXPIRED_BATCH = 500
# Seconds a request waits for an upload's row lock before it is answered 423, and the
# Retry-After of that answer.
LOCK_WAIT = 10.0
BUSY_RETRY_AFTER = 2
# 2**64 has 20 digits: a longer header number is no size or offset (and int() refuses
# numbers of more than 4300 digits with a ValueError).
MAX_DIGITS = 20


class Refused(Exception):
    """A request the protocol answers with ``status`` and a one-line reason."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status, self.reason = status, reason


def parse_metadata(header: str) -> dict[str, str]:
    """Return the pairs of an ``Upload-Metadata`` header (values base64-decoded, as text);
    Refused (400) if it is malformed."""
    pairs: dict[str, str] = {}
    for item in header.split(","):
        parts = item.strip().split(" ")
        key = parts[0]
        printable = key.isascii() and key.isprintable()
        if not printable or len(parts) > 2 or key in pairs:
            raise Refused(400, "Upload-Metadata must be 'key base64value' pairs, unique keys.")
        try:
            value = base64.b64decode(parts[1], validate=True) if len(parts) == 2 else b""
        except (binascii.Error, ValueError):
            raise Refused(400, f"Upload-Metadata value of {key!r} is not base64.") from None
        if b"\0" in value:
            # PostgreSQL keeps no NUL in text or JSON.
            raise Refused(400, f"Upload-Metadata value of {key!r} contains a NUL character.")
        pairs[key] = value.decode("utf-8", errors="replace")
    return pairs


def _number(value: str | None, header: str) -> int:
    if value is None or not value.isascii() or not value.isdigit() or len(value) > MAX_DIGITS:
        raise Refused(
            400, f"{header} must be a non-negative integer of up to {MAX_DIGITS} digits."
        )
    return int(value)


def _body_length(request: HttpRequest) -> int:
    """Return the length of the request's body; Refused (411) for a body of unknown length.

    Under WSGI Django reads a chunked body as empty; under ASGI it spools it whole first.
    """
    size = request.headers.get("Content-Length") or None
    if size is None and request.headers.get("Transfer-Encoding"):
        raise Refused(411, "Send the body with a Content-Length (chunked bodies are refused).")
    return 0 if size is None else _number(size, "Content-Length")


def _checksum(request: HttpRequest) -> tuple[str, str] | None:
    """Return the algorithm and the expected digest of ``Upload-Checksum``, if any."""
    header = request.headers.get("Upload-Checksum")
    if header is None:
        return None
    algorithm, _, expected = header.partition(" ")
    if algorithm not in CHECKSUMS:
        raise Refused(400, f"Upload-Checksum: use one of {', '.join(CHECKSUMS)}.")
    return algorithm, expected.strip()


def _max_size() -> int:
    limit = app_settings.MAX_UPLOAD_SIZE
    return LARGEST_OBJECT if limit is None or limit > LARGEST_OBJECT else limit


class UploadView(View):
    """The tus endpoint: ``POST`` creates an upload, ``HEAD`` says how far it got, ``PATCH``
    appends, ``DELETE`` terminates; ``OPTIONS`` says what the server supports.

    Who may upload is :meth:`has_upload_permission`; what the finished upload becomes is
    :meth:`stored_file`. Uploads belong to their user: another user's is a 404.
    """

    http_method_names = ["options", "post", "head", "patch", "delete"]

    @classmethod
    def as_view(cls, **initkwargs: Any) -> Callable[..., HttpResponseBase]:
        """The view, outside ``ATOMIC_REQUESTS``' transaction on every database: each piece,
        and each request's lease, must commit on its own (a request-wide transaction would
        hold the row's lock to the end and make nothing durable until then)."""
        view: Any = super().as_view(**initkwargs)
        for alias in settings.DATABASES:
            view = transaction.non_atomic_requests(using=alias)(view)
        return view  # type: ignore[no-any-return]

    def has_upload_permission(self, request: HttpRequest) -> bool:
        """Return whether the user may upload: staff with ``files_app.add_storedfile`` (as
        for the admin's add form). Override to open it up or narrow it down."""
        user = request.user
        return bool(user.is_active and user.is_staff and user.has_perm("files_app.add_storedfile"))

    def stored_file(self, upload: Upload) -> StoredFile:
        """Return the unsaved stored file a finished ``upload`` becomes: private, owned by
        the uploader, named and typed by its metadata."""
        return StoredFile(owner_id=upload.owner_id, public=False)

    # -- protocol -------------------------------------------------------------------------

    def dispatch(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
        # uploads/ creates; uploads/<id> is one upload.
        allowed = ["HEAD", "PATCH", "DELETE"] if "upload_id" in kwargs else ["POST"]
        if request.method not in ["OPTIONS", *allowed]:
            response: HttpResponseBase = _text(405, f"Use {', '.join(allowed)} here.")
            response["Allow"] = ", ".join(["OPTIONS", *allowed])
        elif request.method == "OPTIONS":
            response = HttpResponse(status=204)
            response["Tus-Version"] = TUS_VERSION
            response["Tus-Extension"] = EXTENSIONS
            response["Tus-Checksum-Algorithm"] = ",".join(CHECKSUMS)
            response["Tus-Max-Size"] = str(_max_size())
        elif request.headers.get("Tus-Resumable") != TUS_VERSION:
            response = _text(412, f"This server speaks tus {TUS_VERSION} (Tus-Resumable).")
            response["Tus-Version"] = TUS_VERSION
        elif not self.has_upload_permission(request):
            # Before a byte of the body is read.
            response = _text(403, "You may not upload files here.")
        else:
            try:
                response = super().dispatch(request, *args, **kwargs)
            except Refused as refused:
                response = _text(refused.status, refused.reason)
            except OperationalError as exc:
                if _databases.sqlstate(exc) != _databases.LOCK_NOT_AVAILABLE:
                    raise
                response = _text(
                    423,
                    "This upload is busy: another request on it has held it for over "
                    f"{LOCK_WAIT:g} seconds. Try again shortly.",
                )
                response["Retry-After"] = str(BUSY_RETRY_AFTER)
        response["Tus-Resumable"] = TUS_VERSION
        response["Cache-Control"] = "no-store"
        return response

    def post(self, request: HttpRequest) -> HttpResponseBase:
        length = _number(request.headers.get("Upload-Length"), "Upload-Length")
        if length > (limit := _max_size()):
            raise Refused(413, f"Upload-Length is over the limit of {limit} bytes.")
        header = request.headers.get("Upload-Metadata", "")
        metadata = parse_metadata(header) if header.strip() else {}
        # creation-with-upload: the body is the first bytes. All that can be refused
        # before the body is read is refused before anything is stored.
        with_upload = request.content_type == OCTETS
        size = _body_length(request) if with_upload else 0
        checksum = _checksum(request) if with_upload else None
        if size > length:
            raise Refused(400, f"The body goes past Upload-Length ({length} bytes).")
        using = router.db_for_write(Upload)
        with transaction.atomic(using=using):
            # Checked and reserved (the upload's length counts from now on) at once.
            quotas.lock(using)
            try:
                quotas.check(request.user, length, using=using)
            except quotas.QuotaExceeded as exc:
                raise Refused(413, str(exc)) from None
            upload = Upload.objects.using(using).create(
                oid=LargeObjectStorage(using=using).create_object(),
                length=length,
                sha256_state=ResumableSHA256().state(),
                metadata_header=header,
                metadata=metadata,
                owner=request.user if request.user.is_authenticated else None,
                expires=timezone.now() + timedelta(seconds=app_settings.UPLOAD_EXPIRY),
            )
            if length == 0:
                self._finish(upload, using)
        response = HttpResponse(status=201)
        if with_upload and length:
            try:
                offset = self._append(request, upload, 0, checksum)
                if offset < size:
                    raise Refused(400, f"The body ended after {offset} of {size} bytes.")
            except Refused:
                # Without a Location the client cannot resume it: keep nothing.
                _discard(upload)
                raise
            response["Upload-Offset"] = str(offset)
        response["Location"] = request.build_absolute_uri(
            reverse("files_app:upload", kwargs={"upload_id": upload.id})
        )
        _expires(response, upload)
        return response

    def head(self, request: HttpRequest, upload_id: str) -> HttpResponseBase:
        upload = self._take(request, upload_id)
        response = HttpResponse(status=200)
        response["Upload-Offset"] = str(upload.offset)
        response["Upload-Length"] = str(upload.length)
        if upload.metadata_header:
            response["Upload-Metadata"] = upload.metadata_header
        _expires(response, upload)
        return response

    def patch(self, request: HttpRequest, upload_id: str) -> HttpResponseBase:
        if request.content_type != OCTETS:
            raise Refused(415, f"A PATCH must be Content-Type: {OCTETS}.")
        offset = _number(request.headers.get("Upload-Offset"), "Upload-Offset")
        size = _body_length(request)
        checksum = _checksum(request)
        upload = self._take(request, upload_id)
        if offset != upload.offset:
            raise Refused(409, f"Upload-Offset is {upload.offset}, not {offset}.")
        try:  # its length is counted already: are the uploader's files over a quota now?
            quotas.check(request.user, 0, fresh=False)
        except quotas.QuotaExceeded as exc:
            raise Refused(413, f"{exc} The upload may resume once there is room.") from None
        if offset + size > upload.length:
            raise Refused(400, f"The body goes past Upload-Length ({upload.length} bytes).")
        response = HttpResponse(status=204)
        response["Upload-Offset"] = str(self._append(request, upload, offset, checksum))
        _expires(response, upload)
        return response

    def delete(self, request: HttpRequest, upload_id: str) -> HttpResponseBase:
        _discard(self._take(request, upload_id))
        return HttpResponse(status=204)

    # -- the work -------------------------------------------------------------------------

    def _take(self, request: HttpRequest, upload_id: str) -> Upload:
        """Return the upload with this request's lease: a request that took it before
        writes no more."""
        owner = request.user.pk if request.user.is_authenticated else None
        using = router.db_for_write(Upload)
        with transaction.atomic(using=using):
            # Waits for the piece another request is writing, if any (LOCK_WAIT at most).
            _databases.wait_for_locks(using, LOCK_WAIT)
            upload = (
                Upload.objects.using(using)
                .select_for_update()
                .filter(pk=upload_id, owner_id=owner)
                .first()
            )
            if upload is None:
                raise Refused(404, "No such upload (finished, terminated or expired).")
            if upload.expires <= timezone.now():
                raise Refused(410, "This upload has expired.")
            upload.lease += 1
            upload.save(update_fields=["lease"], using=using)
        return upload

    def _append(
        self, request: HttpRequest, upload: Upload, offset: int, checksum: tuple[str, str] | None
    ) -> int:
        """Write the request's body at ``offset`` as it arrives; return the offset reached."""
        using = str(upload._state.db)
        algorithm, expected = checksum or ("", "")
        digest = CHECKSUMS[algorithm]() if algorithm else None
        hasher = ResumableSHA256(bytes(upload.sha256_state))
        head, end = bytes(upload.head), offset
        storage = LargeObjectStorage(using=using)
        for piece in _pieces(request):
            if end + len(piece) > upload.length:
                raise Refused(400, f"The body goes past Upload-Length ({upload.length} bytes).")
            hasher.update(piece)
            if len(head) < SNIFF_BYTES:
                head += piece[: SNIFF_BYTES - len(head)]
            with transaction.atomic(using=using):
                # With a checksum, the offset stays where it was until the body matches.
                self._hold(upload, offset if digest else end)
                storage.write_object(upload.oid, end, piece)
                end += len(piece)
                if digest is None:
                    self._advance(upload, end, hasher, head)
            if digest is not None:
                digest.update(piece)
        if digest is not None:
            if base64.b64encode(digest.digest()).decode() != expected:
                raise Refused(460, f"Upload-Checksum does not match the body (offset {offset}).")
            with transaction.atomic(using=using):
                self._hold(upload, offset)
                self._advance(upload, end, hasher, head)
        return end

    def _hold(self, upload: Upload, offset: int) -> None:
        """Lock the upload's row; Refused unless this request still holds its lease (and
        the upload is at ``offset``, as it then must be)."""
        _databases.wait_for_locks(str(upload._state.db), LOCK_WAIT)
        row = (
            Upload.objects.using(upload._state.db)
            .select_for_update()
            .filter(pk=upload.pk)
            .values_list("lease", "offset")
            .first()
        )
        if row is None:
            raise Refused(404, "The upload was terminated meanwhile.")
        if row != (upload.lease, offset):
            raise Refused(
                409, f"A later request on this upload stopped this one at offset {row[1]}."
            )

    def _advance(self, upload: Upload, offset: int, hasher: ResumableSHA256, head: bytes) -> None:
        """Save the offset reached and the hash of the bytes up to it (under the row's
        lock); finish the upload if it is complete."""
        using = str(upload._state.db)
        upload.offset, upload.sha256_state, upload.head = offset, hasher.state(), head
        upload.save(update_fields=["offset", "sha256_state", "head"], using=using)
        if upload.offset == upload.length:
            self._finish(upload, using)

    def _finish(self, upload: Upload, using: str) -> StoredFile:
        """Turn a complete upload into a stored file that keeps its large object."""
        oid = upload.oid
        sha256 = ResumableSHA256(bytes(upload.sha256_state)).hexdigest()
        # The admin's rules for an uploaded file's name: no path, no control characters.
        name = _upload_name(upload.metadata.get("filename") or upload.metadata.get("name") or "")
        stored = self.stored_file(upload)
        stored.name = name or "upload"
        filetype = upload.metadata.get("filetype") or upload.metadata.get("type") or ""
        try:
            stored.content_type = mediatypes.normalize(filetype) if filetype else ""
        except ValueError:
            stored.content_type = ""  # not a media type: sniffed from the bytes instead
        stored.file = str(oid)
        stored.file.written = WrittenObject(
            oid, Digest(upload.length, sha256, bytes(upload.head)), stored.name
        )
        stored.save(using=using)
        # The object is the stored file's now.
        Upload.objects.using(using).filter(pk=upload.pk).delete()
        return stored


def _discard(upload: Upload) -> None:
    """Delete an unfinished upload and unlink its object (nothing if it finished)."""
    using = str(upload._state.db)
    with transaction.atomic(using=using):
        if Upload.objects.using(using).filter(pk=upload.pk).delete()[0]:
            LargeObjectStorage(using=using).unlink_objects([upload.oid])


def delete_expired(using: str) -> int:
    """Delete the unfinished uploads past their expiry and unlink their objects; return how
    many (``files_sweep`` does this)."""
    deleted = 0
    while True:
        with transaction.atomic(using=using):
            expired = list(
                Upload.objects.using(using)
                .select_for_update(skip_locked=True)
                .filter(expires__lte=timezone.now())
                .values_list("pk", "oid")[:EXPIRED_BATCH]
            )
            if not expired:
                return deleted
            Upload.objects.using(using).filter(pk__in=[pk for pk, _ in expired]).delete()
            LargeObjectStorage(using=using).unlink_objects([oid for _, oid in expired])
            deleted += len(expired)


def _pieces(request: HttpRequest) -> Iterator[bytes]:
    """Yield the body in pieces of ``FILES_APP_CHUNK_SIZE`` (the last one shorter), as it
    arrives. A client that goes away ends the body: what arrived is still yielded."""
    size = app_settings.CHUNK_SIZE
    buffered = bytearray()
    while True:
        try:
            data = request.read(READ_SIZE)
        except (OSError, RequestAborted):
            data = b""
        if not data:
            break
        buffered += data
        while len(buffered) >= size:
            yield bytes(buffered[:size])
            del buffered[:size]
    if buffered:
        yield bytes(buffered)


def _expires(response: HttpResponseBase, upload: Upload) -> None:
    response["Upload-Expires"] = http_date(upload.expires.timestamp())


def _text(status: int, reason: str) -> HttpResponse:
    return HttpResponse(f"{reason}\n", status=status, content_type="text/plain; charset=utf-8")

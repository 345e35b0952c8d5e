"""A tus 1.0 server (https://tus.io/protocols/resumable-upload): uploads that survive a
dropped connection, written straight into a large object.

Core protocol, and the extensions creation, creation-with-upload, termination, checksum
(sha1, sha256) and expiration. Each piece of a ``PATCH`` body (``FILES_APP_CHUNK_SIZE``) is
written with the new offset and the running SHA-256 in one transaction, so the offset a
``HEAD`` reports after a dropped connection or a crashed server is exactly what is durable;
a ``PATCH`` with ``Upload-Checksum`` is one transaction, kept only if the checksum matches.
Two ``PATCH``es of one upload at once cannot interleave bytes: each piece checks, under the
row's lock, that the upload is still at the offset it expects, and the later one gets 409.
The piece that completes an upload also turns it into a :class:`StoredFile` (name and type
from ``Upload-Metadata``'s ``filename`` and ``filetype``), in the same transaction.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

from django.core.exceptions import RequestAborted
from django.db import router, transaction
from django.http import HttpRequest, HttpResponse, HttpResponseBase
from django.urls import reverse
from django.utils import timezone
from django.utils.http import http_date
from django.views import View

from files_app import lo, maintenance, mediatypes
from files_app.conf import app_settings
from files_app.digests import Digest, ResumableSHA256
from files_app.fields import WrittenObject
from files_app.models import StoredFile, Upload, _fit
from files_app.sniff import SNIFF_BYTES

__all__ = ["TUS_VERSION", "UploadView", "delete_expired", "parse_metadata"]

TUS_VERSION = "1.0.0"
EXTENSIONS = "creation,creation-with-upload,termination,checksum,expiration"
CHECKSUMS: dict[str, Callable[[], Any]] = {"sha1": hashlib.sha1, "sha256": hashlib.sha256}
OCTETS = "application/offset+octet-stream"
# What one large object can hold: 4 TB (PostgreSQL's limit, with 8 kB pages).
LARGEST_OBJECT = 4 * 1024**4
# Read from the client at a time (a piece written to the database is CHUNK_SIZE).
READ_SIZE = 64 * 1024


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
        if not key or len(parts) > 2 or not key.isascii() or key in pairs:
            raise Refused(400, "Upload-Metadata must be 'key base64value' pairs, unique keys.")
        try:
            value = base64.b64decode(parts[1], validate=True) if len(parts) == 2 else b""
        except (binascii.Error, ValueError):
            raise Refused(400, f"Upload-Metadata value of {key!r} is not base64.") from None
        pairs[key] = value.decode("utf-8", errors="replace")
    return pairs


def _integer(request: HttpRequest, header: str) -> int:
    value = request.headers.get(header)
    if value is None or not value.isascii() or not value.isdigit():
        raise Refused(400, f"{header} must be a non-negative integer.")
    return int(value)


class UploadView(View):
    """The tus endpoint: ``POST`` creates an upload, ``HEAD`` says how far it got, ``PATCH``
    appends, ``DELETE`` terminates; ``OPTIONS`` says what the server supports.

    Who may upload is :meth:`has_upload_permission`; what the finished upload becomes is
    :meth:`stored_file`. Uploads belong to their user: another user's is a 404.
    """

    http_method_names = ["options", "post", "head", "patch", "delete"]

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
            if app_settings.MAX_UPLOAD_SIZE is not None:
                response["Tus-Max-Size"] = str(app_settings.MAX_UPLOAD_SIZE)
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
        response["Tus-Resumable"] = TUS_VERSION
        response["Cache-Control"] = "no-store"
        return response

    def post(self, request: HttpRequest) -> HttpResponseBase:
        length = _integer(request, "Upload-Length")
        limit = app_settings.MAX_UPLOAD_SIZE
        if limit is None or limit > LARGEST_OBJECT:
            limit = LARGEST_OBJECT
        if length > limit:
            raise Refused(413, f"Upload-Length is over the limit of {limit} bytes.")
        header = request.headers.get("Upload-Metadata", "")
        metadata = parse_metadata(header) if header.strip() else {}
        using = router.db_for_write(Upload)
        with transaction.atomic(using=using):
            upload = Upload.objects.using(using).create(
                oid=lo.create(using),
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
        response["Location"] = request.build_absolute_uri(
            reverse("files_app:upload", kwargs={"upload_id": upload.id})
        )
        if length and request.content_type == OCTETS and request.headers.get("Content-Length"):
            # creation-with-upload: the body is the first bytes.
            response["Upload-Offset"] = str(self._append(request, upload, 0))
        _expires(response, upload)
        return response

    def head(self, request: HttpRequest, upload_id: str) -> HttpResponseBase:
        upload = self._upload(request, upload_id)
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
        offset = _integer(request, "Upload-Offset")
        upload = self._upload(request, upload_id)
        if offset != upload.offset:
            raise Refused(409, f"Upload-Offset is {upload.offset}, not {offset}.")
        response = HttpResponse(status=204)
        response["Upload-Offset"] = str(self._append(request, upload, offset))
        _expires(response, upload)
        return response

    def delete(self, request: HttpRequest, upload_id: str) -> HttpResponseBase:
        upload = self._upload(request, upload_id)
        using = str(upload._state.db)
        with transaction.atomic(using=using):
            if Upload.objects.using(using).filter(pk=upload.pk).delete()[0]:
                lo.unlink(upload.oid, using)
        return HttpResponse(status=204)

    # -- the work -------------------------------------------------------------------------

    def _upload(self, request: HttpRequest, upload_id: str) -> Upload:
        owner = request.user.pk if request.user.is_authenticated else None
        upload = Upload.objects.filter(pk=upload_id, owner_id=owner).first()
        if upload is None:
            raise Refused(404, "No such upload (finished, terminated or expired).")
        if upload.expires <= timezone.now():
            raise Refused(410, "This upload has expired.")
        return upload

    def _append(self, request: HttpRequest, upload: Upload, offset: int) -> int:
        """Write the request's body at ``offset``; return the offset reached."""
        size = request.headers.get("Content-Length")
        if size is not None and not (size.isascii() and size.isdigit()):
            raise Refused(400, "Content-Length must be a non-negative integer.")
        if size is not None and offset + int(size) > upload.length:
            raise Refused(400, f"The body goes past Upload-Length ({upload.length} bytes).")
        using = str(upload._state.db)
        checksum = request.headers.get("Upload-Checksum")
        if checksum is None:
            for piece in _pieces(request):
                offset = self._write(upload, using, offset, piece)
            return offset
        algorithm, _, expected = checksum.partition(" ")
        if algorithm not in CHECKSUMS:
            raise Refused(400, f"Upload-Checksum: use one of {', '.join(CHECKSUMS)}.")
        digest = CHECKSUMS[algorithm]()
        # One transaction: bytes that fail their checksum are never kept.
        with transaction.atomic(using=using):
            start = offset
            for piece in _pieces(request):
                digest.update(piece)
                offset = self._write(upload, using, offset, piece)
            if base64.b64encode(digest.digest()).decode() != expected.strip():
                raise Refused(460, f"Upload-Checksum does not match the body (offset {start}).")
        return offset

    def _write(self, upload: Upload, using: str, offset: int, piece: bytes) -> int:
        """Append ``piece`` at ``offset`` in one transaction; finish the upload with it."""
        with transaction.atomic(using=using):
            row = (
                Upload.objects.using(using)
                .select_for_update()
                .filter(pk=upload.pk)
                .values_list("offset", "sha256_state", "head")
                .first()
            )
            if row is None:
                raise Refused(404, "The upload was terminated meanwhile.")
            current, state, head = row
            if current != offset:
                raise Refused(409, f"Another request moved the upload to {current} meanwhile.")
            if offset + len(piece) > upload.length:
                raise Refused(400, f"The body goes past Upload-Length ({upload.length} bytes).")
            lo.write(upload.oid, offset, piece, using)
            hasher = ResumableSHA256(bytes(state))
            hasher.update(piece)
            head = bytes(head)
            if len(head) < SNIFF_BYTES:
                head += piece[: SNIFF_BYTES - len(head)]
            upload.offset, upload.sha256_state, upload.head = (
                offset + len(piece),
                hasher.state(),
                head,
            )
            Upload.objects.using(using).filter(pk=upload.pk).update(
                offset=upload.offset, sha256_state=upload.sha256_state, head=head
            )
            if upload.offset == upload.length:
                self._finish(upload, using)
        return upload.offset

    def _finish(self, upload: Upload, using: str) -> StoredFile:
        """Turn a complete upload into a stored file that keeps its large object."""
        oid = upload.oid
        sha256 = ResumableSHA256(bytes(upload.sha256_state)).hexdigest()
        name = _fit(upload.metadata.get("filename") or upload.metadata.get("name") or "", 255)
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
                .values_list("pk", "oid")[: maintenance.BATCH]
            )
            if not expired:
                return deleted
            Upload.objects.using(using).filter(pk__in=[pk for pk, _ in expired]).delete()
            maintenance.free([oid for _, oid in expired], using)
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

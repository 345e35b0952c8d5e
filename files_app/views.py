"""Views that serve large objects over HTTP with Range and conditional-request support."""

from __future__ import annotations

import logging
import mimetypes
import uuid
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Sequence
from dataclasses import replace
from datetime import datetime
from typing import TYPE_CHECKING, Any

from django.core.exceptions import ImproperlyConfigured
from django.core.files.storage import Storage
from django.core.handlers.asgi import ASGIRequest
from django.db import InterfaceError, OperationalError, connections
from django.db.models import Model, QuerySet
from django.db.models.fields.files import FieldFile
from django.http import (
    Http404,
    HttpRequest,
    HttpResponse,
    HttpResponseBadRequest,
    HttpResponseBase,
    HttpResponseGone,
    HttpResponseRedirect,
    StreamingHttpResponse,
)
from django.shortcuts import get_object_or_404
from django.utils.cache import patch_vary_headers
from django.utils.connection import ConnectionDoesNotExist
from django.views import View
from django.views.decorators.csrf import csrf_exempt
from django.views.generic.detail import SingleObjectMixin

from files_app import _databases, archive, firstread, mediatypes, responder, streaming
from files_app.conf import app_settings
from files_app.external import ExternalFile, StorageUnavailable, presigned_url
from files_app.fields import default_large_object_storage
from files_app.models import FileVersion, ShareLink, StoredFile, StoredFileQuerySet
from files_app.outage import unavailable
from files_app.responder import FileInfo, Plan, Segment
from files_app.sharing import LinkState, read_share_token, read_signed_token
from files_app.storage import (
    LargeObjectFile,
    LargeObjectStorage,
    SizeMismatch,
    StorageLink,
    link_filename,
    oid_from_name,
    read_link,
)
from files_app.streaming import body_reads

__all__ = [
    "FieldFileView",
    "FileVersionView",
    "LargeObjectResponse",
    "LargeObjectView",
    "ShareLinkView",
    "SharedFileView",
    "SignedFileView",
    "StorageFileView",
    "StoredFileView",
    "ZipView",
    "file_response",
]

logger = logging.getLogger("files_app")

# At most this much of a body is read with the row (hex-encoded: the ORM's results are
# text); a larger first read gets its rest in a query of its own.
PREFETCH = 256 * 1024


class LargeObjectResponse(StreamingHttpResponse):
    """A streamed large-object body whose headers the view has already set exactly.

    It reports a Content-Encoding so that GZipMiddleware leaves it alone: compressing a
    206 would keep a wrong Content-Range and weaken the ETag (docs/design.md, "HTTP").
    """

    def has_header(self, header: str) -> bool:
        if header.lower() == "content-encoding":
            return True
        return super().has_header(header)

    __contains__ = has_header


class LinkExpired(Exception):
    """A link's time is up (or it was revoked, or used up): the view answers 410 Gone with
    the exception's message."""

    def __init__(self, message: str = "This link has expired.") -> None:
        super().__init__(message)


class LargeObjectView(View):
    """Serve one large object with GET and HEAD: 200, 206, 304, 412 and 416."""

    http_method_names = ["get", "head", "options"]
    #: Send ``Content-Disposition: attachment`` rather than ``inline``.
    as_attachment = False
    #: The ``Cache-Control`` header; None sends none.
    cache_control: str | None = "private, no-cache"
    #: Bytes read from the database per query while streaming.
    chunk_size: int | None = None
    #: How many ranges one request may ask for before the Range header is ignored.
    max_ranges: int | None = None

    object: Any

    @classmethod
    def as_view(cls, **initkwargs: Any) -> Callable[..., HttpResponseBase]:
        view = super().as_view(**initkwargs)
        # A view that only reads changes no state for CSRF to protect, and must answer
        # POST & co. with 405 + Allow (RFC 9110 §15.5.6), not CsrfViewMiddleware's 403.
        methods = initkwargs.get("http_method_names", cls.http_method_names)
        if set(methods) <= {"get", "head", "options", "trace"}:
            view = csrf_exempt(view)
        return view

    def chunk(self) -> int:
        """Return the bytes read from the database per query while streaming."""
        return self.chunk_size or app_settings.CHUNK_SIZE

    def get_object(self) -> Any:
        """Return the object whose file is served; raise Http404 if there is none."""
        return None

    def get_file(self) -> LargeObjectFile | ExternalFile | FieldFile:
        """Return the file to serve: a model's ``FieldFile`` on a :class:`LargeObjectStorage`
        (``self.object.manual``), or a file such a storage opened."""
        raise NotImplementedError("LargeObjectView subclasses must implement get_file().")

    def get_filename(self) -> str:
        """Return the file name for Content-Disposition: the last part of the file's name,
        or the name recorded with the object for a bare OID (a ``LargeObjectField``'s)."""
        if isinstance(self.file, LargeObjectFile):
            return self.file.filename
        return str(self.file.name).rsplit("/", 1)[-1]

    def get_content_type(self) -> str:
        """Return the Content-Type of the file: the one recorded with the object when it
        was saved, else guessed from its name."""
        recorded = self.file.content_type if isinstance(self.file, LargeObjectFile) else None
        guessed, _ = mimetypes.guess_type(self.get_filename())
        return recorded or guessed or responder.DEFAULT_CONTENT_TYPE

    def get_etag(self) -> str | None:
        """Return a strong ETag (quoted) for the file's content, or None: by default, for a
        large object files_app made, its OID and creation time (an object never changes,
        and an OID used again is another object made later)."""
        created = self._created()
        if created is None or not isinstance(self.file, LargeObjectFile):
            return None
        return f'"lo-{self.file.oid}-{created.timestamp():.3f}"'

    def get_last_modified(self) -> datetime | None:
        """Return when the file's content last changed, or None: by default when files_app
        made its large object."""
        return self._created()

    def _created(self) -> datetime | None:
        if not isinstance(self.file, LargeObjectFile):
            return None
        if not hasattr(self, "_created_time"):
            self._created_time = self.file.created_time()
        return self._created_time

    def get_as_attachment(self) -> bool:
        """Return whether to send the file as an attachment rather than inline.

        Only types a browser shows without running anything (images other than SVG, audio,
        video, PDF, plain text) are ever inline.
        """
        media_type = mediatypes.parse(self.get_content_type())
        return self.as_attachment or not mediatypes.is_passive(media_type)

    def get_cache_control(self) -> str | None:
        """Return the Cache-Control header value."""
        return self.cache_control

    def get_redirect(self) -> HttpResponseBase | None:
        """Return a response that sends the client elsewhere for the file (a redirect), or
        None to serve it here (the default)."""
        return None

    def admit(self, plan: Plan) -> HttpResponseBase | None:
        """Return a response refusing the answer ``plan`` (its status, headers and byte
        ranges, decided), or None to send it (the default): where a link counts downloads
        (:class:`ShareLinkView`)."""
        return None

    def get_file_info(self, size: int) -> FileInfo:
        """Return what the responder needs to know of the file, ``size`` bytes long: by
        default from the ``get_*()`` hooks above."""
        modified = self.get_last_modified()
        return FileInfo(
            size=size,
            filename=self.get_filename(),
            content_type=self.get_content_type(),
            etag=self.get_etag(),
            last_modified=int(modified.timestamp()) if modified else None,
            as_attachment=self.get_as_attachment(),
            cache_control=self.get_cache_control(),
        )

    def get(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
        try:
            return self._get(request)
        except LinkExpired as exc:
            return HttpResponseGone(f"{exc}\n", content_type="text/plain; charset=utf-8")
        except StorageUnavailable as exc:
            # A file moved to another storage (files_move) that does not answer now.
            return unavailable(str(request.method), request.path, exc, what="storage")

    def _get(self, request: HttpRequest) -> HttpResponseBase:
        self.object = self.get_object()
        elsewhere = self.get_redirect()
        if elsewhere is not None:
            return elsewhere
        try:
            self.file = _opened(self.get_file())
            size = self.file.size
        except FileNotFoundError as exc:
            raise Http404("The file's data is missing.") from exc
        info = self.get_file_info(size)
        try:
            return self._respond(request, info)
        except SizeMismatch as exc:
            # The object is not the size we were told: something changed the row or the
            # object behind the app's back. Serve what the object holds, without the
            # validators, which describe other bytes.
            logger.error("%s; serving its actual size.", exc)
            self.file = self.file.reopened()
            try:
                size = self.file.size
            except FileNotFoundError as missing:
                raise Http404("The file's data is missing.") from missing
            return self._respond(request, replace(info, size=size, etag=None, last_modified=None))

    def _respond(self, request: HttpRequest, info: FileInfo) -> HttpResponseBase:
        plan = responder.plan_response(
            str(request.method),
            request.headers.get,
            info,
            max_ranges=self.max_ranges or app_settings.MAX_RANGES,
        )
        if not getattr(self, "_admitted", False):  # answered once, even when resized
            refusal = self.admit(plan)
            if refusal is not None:
                return refusal
            self._admitted = True
        if plan.status == 416:
            self._check_size()  # it states the size
        if plan.status in (200, 206):
            return self._stream(request, plan.status, plan.headers, plan.body)
        return file_response(
            request, plan.status, plan.headers, responder.literal_bytes(plan.body)
        )

    def _check_size(self) -> None:
        try:
            self.file.raw.check_size()
        except FileNotFoundError as exc:
            raise Http404("The file's data is missing.") from exc

    def _stream(
        self,
        request: HttpRequest,
        status: int,
        headers: list[tuple[str, str]],
        segments: Sequence[Segment],
    ) -> HttpResponseBase:
        raw = self.file.raw
        self.file.close()  # reads go by offset; no descriptor or cursor stays open
        chunk = self.chunk()
        first = next(body_reads(segments, chunk), None)
        try:
            # The first read happens now, so that a missing object is a 404, not a
            # broken body, and the size we announce is checked in the same query; a
            # response without a read checks the size alone.
            if first is not None:
                data = raw.read_first(*first)
            else:
                raw.check_size()
        except FileNotFoundError as exc:
            raise Http404("The file's data is missing.") from exc
        if first is None:
            return file_response(request, status, headers, responder.literal_bytes(segments))
        if isinstance(request, ASGIRequest):
            body: Iterator[bytes] | AsyncIterator[bytes] = raw.astream(segments, chunk, data)
        else:
            body = raw.stream(segments, chunk, data)
        return file_response(request, status, headers, body)


def _opened(file: LargeObjectFile | ExternalFile | FieldFile) -> LargeObjectFile | ExternalFile:
    """Return ``file`` opened for serving: a FieldFile through its storage."""
    if not isinstance(file, FieldFile):
        return file
    if not file:
        raise FileNotFoundError(f"{file.field} holds no file.")
    if not isinstance(file.storage, LargeObjectStorage):
        raise ImproperlyConfigured(
            f"{file.field} keeps its files in {type(file.storage).__name__}: the large-object "
            "views serve files of files_app.storage.LargeObjectStorage."
        )
    opened = file.storage.open(str(file.name), "rb")
    assert isinstance(opened, LargeObjectFile)
    return opened


def file_response(
    request: HttpRequest,
    status: int,
    headers: Iterable[tuple[str, str]],
    body: list[bytes] | Iterator[bytes] | AsyncIterator[bytes],
) -> HttpResponseBase:
    """Return the Django response of a planned download answer, whichever path planned it
    (the views, or the lean path under Django's handlers): the one place that turns a
    status, its headers and its body into a response.

    A 200 or 206 streams (:class:`LargeObjectResponse`, an async iterator under ASGI, and
    empty for HEAD); a 304 has the headers only, streamed and empty so that
    CommonMiddleware adds no "Content-Length: 0", and no Content-Type, as
    HttpResponseNotModified; any other status (412, 416, 503) is its literal body.
    """
    values = dict(headers)
    if status in (200, 206, 304):
        if body == []:
            body = streaming.empty() if isinstance(request, ASGIRequest) else []
        response = LargeObjectResponse(body, status=status, headers=values)
        if status == 304:
            del response["Content-Type"]
        return response
    assert isinstance(body, list), "only a 200 or a 206 streams"
    return HttpResponse(b"".join(body), status=status, headers=values)


class StoredFileView(LargeObjectView):
    """Serve a :class:`StoredFile` by UUID to whoever may see it.

    Public files are served to anyone. Private files go to their owner and to users with
    the ``files_app.view_storedfile`` permission; everyone else gets 404, so a private
    file's existence does not leak.
    """

    model: type[StoredFile] = StoredFile
    object: StoredFile

    def get_queryset(self) -> QuerySet[StoredFile]:
        """Return the stored files the current user may download
        (:meth:`StoredFile.visible_to`, the rule the lean path keeps too)."""
        queryset: QuerySet[StoredFile] = self.model._default_manager.all()
        return queryset.filter(self.model.visible_to(self.request.user))

    def get_object(self) -> StoredFile:
        return self.find(self.get_queryset(), uuid=self.kwargs["uuid"])

    def find(self, queryset: QuerySet[StoredFile], **lookup: Any) -> StoredFile:
        """Return the row of ``queryset`` that ``lookup`` names, with its first read, or 404.

        With ``FILES_APP_DOWNLOAD_DATABASE`` (a hot standby) the row and its object are
        read there while it answers and lags less than ``FILES_APP_STANDBY_MAX_LAG``; a
        file the standby does not have yet (replication lag) is read from ``queryset``'s
        own database, and so is every file while the standby is down or lags more.
        """
        replica = _databases.choose(queryset.db)
        if replica != queryset.db:
            try:
                found = self.with_first_read(queryset.using(replica)).get(**lookup)
            except self.model.DoesNotExist:
                pass
            except (OperationalError, InterfaceError) as exc:
                _databases.failed(replica, exc)  # and the primary answers
            else:
                if found.storage or getattr(found, "files_app_actual_size", None) is not None:
                    return found
        return get_object_or_404(self.with_first_read(queryset), **lookup)

    def with_first_read(self, queryset: QuerySet[StoredFile]) -> QuerySet[StoredFile]:
        """Return ``queryset`` annotated with its object's size and the answer's likely first
        read (:meth:`StoredFileQuerySet.with_first_read`): one query.

        The read is guessed from the request before the file is known (as the lean path
        does); a wrong guess costs another read, not a wrong answer.
        """
        start, length = self._guess = firstread.first_read_guess(
            str(self.request.method), self.request.headers.get, self.chunk()
        )
        assert isinstance(queryset, StoredFileQuerySet)
        return queryset.with_first_read((start, min(length, PREFETCH)))

    def get_file(self) -> LargeObjectFile | ExternalFile:
        if self.object.storage:  # files_move took it to another storage
            try:
                return ExternalFile(
                    self.object.storage, self.object.storage_name, self.object.size
                )
            except FileNotFoundError:
                logger.error("%r is in a storage that is not in STORAGES.", self.object)
                raise
        found = _row_file(self.object)
        oid = found.oid
        if hasattr(self.object, "files_app_first_read"):
            actual = getattr(self.object, "files_app_actual_size")  # noqa: B009 (annotated)
            if actual is None:
                raise FileNotFoundError(f"Large object {oid} does not exist.")
            offset = firstread.first_read_offset(self._guess, self.object.size)
            found.raw.prefetched(int(actual), offset, bytes(self.object.files_app_first_read))
        return found

    #: Whether a private file's URL answers a user who may download it with a redirect to
    #: a signed URL for them (:meth:`StoredFile.signed_url`, served by the lean path);
    #: None: ``FILES_APP_SIGNED_REDIRECT`` (off by default).
    signed_redirect: bool | None = None

    def get_redirect(self) -> HttpResponseBase | None:
        """Send the client where the file is served best, or None to serve it here.

        A file that ``files_move`` took to an S3 storage listed in
        ``FILES_APP_REDIRECT_STORAGES`` goes to a presigned URL: the bucket serves its bytes
        and ranges (with this download's ``Content-Type`` and ``Content-Disposition``).
        With :attr:`signed_redirect`, a private file goes to a signed URL for the request's
        user, which the lean path serves without the session. Either redirect may be reused
        for half its URL's lifetime, so that a player's range requests do not each come
        back here.
        """
        return self._moved_redirect() or self._signed_redirect()

    def _moved_redirect(self) -> HttpResponseBase | None:
        expire = app_settings.REDIRECT_STORAGES.get(self.object.storage)
        if not self.object.storage or not expire:
            return None
        info = self.object.download_info(cache_control=None, as_attachment=self.as_attachment)
        disposition = responder.content_disposition(
            info.filename, as_attachment=info.as_attachment
        )
        try:
            url = presigned_url(
                self.object.storage,
                self.object.storage_name,
                content_type=info.content_type,
                disposition=disposition,
                expire=expire,
            )
        except FileNotFoundError as exc:
            raise Http404("The file's storage is not in STORAGES.") from exc
        return _reusable_redirect(url, expire)

    def _signed_redirect(self) -> HttpResponseBase | None:
        wanted = self.signed_redirect
        if wanted is None:
            wanted = app_settings.SIGNED_REDIRECT
        user = self.request.user
        # A public file keeps its own URL (anyone's, cached by anyone); so does a request
        # without a user, which found the file on no grounds a signed URL could keep.
        if not wanted or self.object.public or not user.is_authenticated:
            return None
        expire = app_settings.SIGNED_URL_EXPIRY
        response = _reusable_redirect(self.object.signed_url(user, expires=expire), expire)
        patch_vary_headers(response, ("Cookie",))  # another user's session: another URL
        return response

    def get_file_info(self, size: int) -> FileInfo:
        # The one description of a stored file's download, the lean path's too; Last-
        # Modified is "updated", not "created": replacing the file keeps the row's creation
        # time, and a date that did not change with the content would make If-Range splice
        # two files.
        info = self.object.download_info(
            cache_control=self.get_cache_control(), as_attachment=self.as_attachment
        )
        return replace(info, size=size)

    #: The ``Cache-Control`` of public files (private ones get :attr:`cache_control`);
    #: None: ``public, max-age=<FILES_APP_PUBLIC_MAX_AGE>`` (300 s by default).
    public_cache_control: str | None = None

    def get_cache_control(self) -> str | None:
        if self.object.public:
            return self.public_cache_control or cache_control_for_public()
        return self.cache_control


def _row_file(row: StoredFile | FileVersion) -> LargeObjectFile:
    """Return the large object of a stored file or version, of the size its row says."""
    file = row.file
    oid = oid_from_name(file.name) if file else None
    storage = file.storage
    if oid is None or not isinstance(storage, LargeObjectStorage):
        raise FileNotFoundError(f"{row!r} has no file.")
    # The row knows the size: no query for it. Whether the object still exists shows when
    # the response reads it (see LargeObjectView._stream), or in the row's query.
    return LargeObjectFile(str(file.name), oid, storage, size=row.size, using=row._state.db)


def _reusable_redirect(url: str, lifetime: int) -> HttpResponseBase:
    """A 302 to ``url``, valid ``lifetime`` seconds, that the browser alone may reuse for
    half that time."""
    response = HttpResponseRedirect(url)
    response["Cache-Control"] = f"private, max-age={max(lifetime // 2, 0)}"
    return response


def cache_control_for_public(view: type[StoredFileView] = StoredFileView) -> str:
    """Return the ``Cache-Control`` of a public file: the view's ``public_cache_control``,
    or ``public, max-age=<FILES_APP_PUBLIC_MAX_AGE>``."""
    return view.public_cache_control or f"public, max-age={app_settings.PUBLIC_MAX_AGE}"


class SharedFileView(StoredFileView):
    """Serve a stored file, private or not, to anyone holding an unexpired share link.

    A tampered link is 404 and an expired one 410; neither says anything about the file.
    """

    signed_redirect = False  # the link is the grounds: there is no user to sign for

    def get_object(self) -> StoredFile:
        state, file_uuid = read_share_token(self.kwargs["token"])
        if state is LinkState.EXPIRED:
            raise LinkExpired()
        if state is not LinkState.VALID:
            raise Http404("Invalid share link.")
        return self.find(self.model._default_manager.all(), uuid=file_uuid)

    def get_cache_control(self) -> str | None:
        return self.cache_control  # a link's holder is not the public, even for public files


class ShareLinkView(StoredFileView):
    """Serve a stored file, private or not, by a managed share link (:class:`ShareLink`):
    410 Gone once it is revoked, expired or used up (saying which), 404 for no such link
    or a file in the trash. Each download the link allows
    (:func:`files_app.responder.starts_a_download`) is counted before a byte is sent; the
    last allowed one going to two clients at once, one of them gets 410.
    """

    signed_redirect = False  # the link is the grounds: there is no user to sign for
    link: ShareLink

    def get_object(self) -> StoredFile:
        link = (
            ShareLink.objects.with_state()
            .filter(token=self.kwargs["token"])
            .select_related(None)
            .first()
        )
        if link is None:
            raise Http404("No such share link.")
        if not link.is_servable:  # type: ignore[attr-defined]
            raise LinkExpired(_REFUSED[link.state])
        self.link = link
        files = self.model._default_manager.filter(self.model.downloadable())
        return self.find(files, pk=link.stored_file_id)

    def get_redirect(self) -> HttpResponseBase | None:
        # Never to a presigned URL (FILES_APP_REDIRECT_STORAGES), even for a file moved to
        # S3: a download there would not be counted, nor refused once the link is revoked.
        return None

    def admit(self, plan: Plan) -> HttpResponseBase | None:
        if not responder.starts_a_download(str(self.request.method), plan):
            return None
        if ShareLink.objects.count_download(self.link.pk):
            return None
        self.link.refresh_from_db()
        return HttpResponseGone(
            f"{_REFUSED[self.link.state]}\n", content_type="text/plain; charset=utf-8"
        )

    def get_cache_control(self) -> str | None:
        return self.cache_control  # a link's holder is not the public, even for public files


_REFUSED = {
    "revoked": "This link was revoked.",
    "expired": "This link has expired.",
    "used up": "This link has been used up: it allows no more downloads.",
    "active": "This link allows no more downloads now.",
}


class SignedFileView(StoredFileView):
    """Serve a stored file to whoever holds an unexpired signed URL of it
    (:meth:`StoredFile.signed_url`), without a session: the URL's grounds are checked
    against the row (:meth:`StoredFile.signed_rule`), not the user.

    A tampered URL, one with another file name, or one whose file was replaced, deleted or
    made invisible on its grounds is 404; an expired one 410.
    """

    signed_redirect = False  # it is the signed URL

    def get_object(self) -> StoredFile:
        state, grant = read_signed_token(self.kwargs["token"])
        if state is LinkState.EXPIRED:
            raise LinkExpired()
        if state is not LinkState.VALID or grant is None:
            raise Http404("Invalid signed URL.")
        if grant.name != self.kwargs.get("filename"):
            raise Http404("Invalid signed URL.")
        queryset = self.model._default_manager.filter(self.model.signed_rule(grant))
        return self.find(queryset, uuid=grant.uuid)

    def get_cache_control(self) -> str | None:
        return self.cache_control  # a URL for one user: never in a shared cache


class FileVersionView(LargeObjectView):
    """Serve an earlier version of a stored file (:class:`FileVersion`, kept by
    ``FILES_APP_VERSIONS``) by the file's UUID and the version's number, with that
    content's ETag and Last-Modified, to whom :meth:`FileVersion.visible_to` allows: the
    file's owner and users with ``files_app.view_storedfile``. Anyone else gets 404.
    """

    model: type[FileVersion] = FileVersion
    object: FileVersion

    def get_queryset(self) -> QuerySet[FileVersion]:
        """Return the versions the current user may download."""
        return self.model._default_manager.filter(self.model.visible_to(self.request.user))

    def get_object(self) -> FileVersion:
        return get_object_or_404(
            self.get_queryset().select_related("stored_file"),
            stored_file__uuid=self.kwargs["uuid"],
            number=self.kwargs["number"],
        )

    def get_file(self) -> LargeObjectFile:
        return _row_file(self.object)

    def get_file_info(self, size: int) -> FileInfo:
        info = self.object.download_info(
            cache_control=self.get_cache_control(), as_attachment=self.as_attachment
        )
        return replace(info, size=size)


class StorageFileView(LargeObjectView):
    """Serve a file of a :class:`LargeObjectStorage` from the signed URL its ``url()`` made:
    the file the link names, from the database it names, under its own name, until the
    link expires (410 Gone after). A tampered link, or one with another file name, is 404.
    """

    storage: Storage | None = None
    link: StorageLink

    def get_storage(self) -> LargeObjectStorage:
        """Return a storage of the link's database: this view's ``storage`` or
        ``STORAGES["default"]`` when it keeps its objects there, else one made for it."""
        for storage in (self.storage, default_large_object_storage()):
            if isinstance(storage, LargeObjectStorage) and storage.using == self.link.using:
                return storage
        return LargeObjectStorage(using=self.link.using)

    def get_object(self) -> Model | None:
        link = read_link(self.kwargs["token"])
        if link is None or link_filename(link.name) != self.kwargs.get("filename"):
            raise Http404("Invalid file link.")
        try:
            connections[link.using]
        except ConnectionDoesNotExist:
            raise Http404("Invalid file link.") from None  # a database this site lost
        if link.expired():
            raise LinkExpired()
        self.link = link
        return None

    def get_file(self) -> LargeObjectFile:
        opened = self.get_storage().open(self.link.name, "rb")
        assert isinstance(opened, LargeObjectFile)
        return opened


if TYPE_CHECKING:
    _SingleObject = SingleObjectMixin[Model]
else:  # generic only in django-stubs
    _SingleObject = SingleObjectMixin


class FieldFileView(_SingleObject, LargeObjectView):
    """Serve the file of one field of one row of any model, with the range and conditional
    behaviour of every files_app download::

        path("manuals/<int:pk>/", FieldFileView.as_view(model=Product, field="manual"))

    The row is found as Django's ``DetailView`` finds it (``model`` or ``queryset``,
    ``pk_url_kwarg``, ``slug_field``, ``slug_url_kwarg``); the field is a ``FileField`` or
    ``ImageField`` on :class:`LargeObjectStorage`, or a ``LargeObjectField``. The file name
    and content type are those kept with the object (else the type the name says). Anyone
    may download what the URL names unless :meth:`has_permission` says otherwise (or a
    decorator such as ``login_required``); refused is a 404, so that a file's existence does
    not leak.
    """

    #: The name of the model's file field to serve.
    field: str = ""

    def has_permission(self) -> bool:
        """Return whether the request may download ``self.object``'s file (default: yes)."""
        return True

    def get_object(self, queryset: QuerySet[Any] | None = None) -> Model:
        found: Model = super().get_object(queryset)
        self.object = found
        if not self.has_permission():
            raise Http404("No such file.")
        return found

    def get_file(self) -> FieldFile:
        if not self.field:
            raise ImproperlyConfigured(
                f"{type(self).__name__} needs field=, the name of the model's file field."
            )
        file = getattr(self.object, self.field)
        if not isinstance(file, FieldFile):
            raise ImproperlyConfigured(f"{self.field!r} is not a file field of {self.model}.")
        return file


class ZipView(View):
    """Stream the stored files ``?file=<uuid>&file=<uuid>…`` names as one ZIP
    (:func:`files_app.archive.zip_response`), those the request's user may download
    (:meth:`StoredFile.visible_to`), in the order given; 404 if there are none, 400 for a
    malformed or too long list."""

    model: type[StoredFile] = StoredFile
    #: The most files one archive may name.
    max_files = 1000
    #: The archive's file name.
    filename = "files.zip"
    http_method_names = ["get"]

    def get(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
        wanted = request.GET.getlist("file")
        if not wanted or len(wanted) > self.max_files:
            return HttpResponseBadRequest(
                f"Name 1 to {self.max_files} files: ?file=<uuid>&file=<uuid>...\n",
                content_type="text/plain; charset=utf-8",
            )
        try:
            order = list(dict.fromkeys(uuid.UUID(value) for value in wanted))
        except ValueError:
            return HttpResponseBadRequest(
                "Each file is named by its UUID.\n", content_type="text/plain; charset=utf-8"
            )
        visible = self.model.visible_to(request.user)
        found = {
            stored.uuid: stored
            for stored in self.model._default_manager.filter(visible, uuid__in=order)
        }
        if not found:
            raise Http404("None of these files exists or may be downloaded.")
        return archive.zip_response(
            request, [found[key] for key in order if key in found], self.filename
        )

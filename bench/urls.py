"""URLs of the benchmark servers: the test project's, a plain-disk FileResponse view (the
Django peer) and the prototype views of bench/prototypes.py."""

from __future__ import annotations

from pathlib import Path

from django.conf import settings
from django.http import FileResponse, Http404, HttpRequest
from django.urls import path

from bench.prototypes import (
    LeanStoredFileView,
    ReadAheadStoredFileView,
    pipelined_upload,
    plain_upload,
    upload_sink,
)
from tests.urls import urlpatterns as test_urlpatterns


def disk_file(request: HttpRequest, name: str) -> FileResponse:
    """Serve a file of ``BENCH_DISK_DIR`` with Django's own ``FileResponse`` (the peer)."""
    configured = str(getattr(settings, "BENCH_DISK_DIR", ""))
    directory = Path(configured)
    if not configured or "/" in name or name.startswith("."):
        raise Http404("No such file.")
    try:
        handle = (directory / name).open("rb")
    except FileNotFoundError as exc:
        raise Http404("No such file.") from exc
    return FileResponse(handle, content_type="application/octet-stream")


urlpatterns = [
    *test_urlpatterns,
    path("disk/<str:name>", disk_file, name="bench-disk"),
    path("lean/<uuid:uuid>/<path:filename>", LeanStoredFileView.as_view(), name="bench-lean"),
    path(
        "readahead/<uuid:uuid>/<path:filename>",
        ReadAheadStoredFileView.as_view(),
        name="bench-readahead",
    ),
    path("sink/", upload_sink, name="bench-sink"),
    path("upload-pipelined/", pipelined_upload, name="bench-upload-pipelined"),
    path("upload-plain/", plain_upload, name="bench-upload-plain"),
]

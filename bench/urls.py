"""URLs of the benchmark servers: the test project's, a plain-disk FileResponse view (the
Django peer) and an upload sink (Django's multipart parsing into nothing: the HTTP ceiling
for uploads)."""

from __future__ import annotations

from pathlib import Path

from django.conf import settings
from django.core.files.uploadhandler import FileUploadHandler
from django.http import FileResponse, Http404, HttpRequest, HttpResponse
from django.urls import path
from django.views.decorators.csrf import csrf_exempt

from files_app.conf import app_settings
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


class DiscardingUploadHandler(FileUploadHandler):
    """Parse uploads as Django does for the admin, and throw the data away."""

    chunk_size = app_settings.CHUNK_SIZE

    def receive_data_chunk(self, raw_data: bytes, start: int) -> None:
        return None

    def file_complete(self, file_size: int) -> None:
        return None


@csrf_exempt
def upload_sink(request: HttpRequest) -> HttpResponse:
    """Receive a multipart upload through Django's parser into nothing."""
    request.upload_handlers = [DiscardingUploadHandler(request)]
    parts = len(request.FILES) + len(request.POST)
    return HttpResponse(f"{parts} parts\n", content_type="text/plain")


urlpatterns = [
    *test_urlpatterns,
    path("disk/<str:name>", disk_file, name="bench-disk"),
    path("sink/", upload_sink, name="bench-sink"),
]

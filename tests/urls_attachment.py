"""The test URLs plus a view that serves stored files as attachments (range cases K01, K03)."""

from __future__ import annotations

from django.urls import path

from files_app.views import StoredFileView
from tests.urls import urlpatterns as base_urlpatterns


class AttachmentFileView(StoredFileView):
    """Serve a stored file with ``Content-Disposition: attachment``."""

    as_attachment = True


urlpatterns = [
    path(
        "attachment/<uuid:uuid>/<path:filename>",
        AttachmentFileView.as_view(),
        name="attachment",
    ),
    *base_urlpatterns,
]

"""URLs of files_app: ``path("files/", include("files_app.urls"))`` under any prefix."""

from __future__ import annotations

from django.urls import path

from files_app import tus, views

app_name = "files_app"

urlpatterns = [
    path("<uuid:uuid>/<path:filename>", views.StoredFileView.as_view(), name="download"),
    path("lo/<str:token>/<path:filename>", views.StorageFileView.as_view(), name="storage-file"),
    path("share/<str:token>/<path:filename>", views.SharedFileView.as_view(), name="share"),
    path("signed/<str:token>/<path:filename>", views.SignedFileView.as_view(), name="signed"),
    path("links/<str:token>/<path:filename>", views.ShareLinkView.as_view(), name="link"),
    path(
        "versions/<uuid:uuid>/<int:number>/<path:filename>",
        views.FileVersionView.as_view(),
        name="version",
    ),
    # A selection as one ZIP: zip/?file=<uuid>&file=<uuid>...
    path("zip/", views.ZipView.as_view(), name="zip"),
    # Resumable uploads (tus 1.0): POST here creates one at uploads/<id>.
    path("uploads/", tus.UploadView.as_view(), name="uploads"),
    path("uploads/<uuid:upload_id>", tus.UploadView.as_view(), name="upload"),
]

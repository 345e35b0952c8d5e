"""URLs of files_app: ``path("files/", include("files_app.urls"))`` under any prefix."""

from __future__ import annotations

from django.urls import path

from files_app import views

app_name = "files_app"

urlpatterns = [
    path("<uuid:uuid>/<path:filename>", views.StoredFileView.as_view(), name="download"),
    path("lo/<str:token>/<path:filename>", views.StorageFileView.as_view(), name="storage-file"),
    path("share/<str:token>/<path:filename>", views.SharedFileView.as_view(), name="share"),
]

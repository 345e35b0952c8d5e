"""URL configuration for the minicloud project."""

from __future__ import annotations

from django.contrib import admin
from django.urls import include, path
from django.views.generic import TemplateView

from minicloud.views import PublicFilesView

urlpatterns = [
    path("", TemplateView.as_view(template_name="index.html"), name="index"),
    path("public/", PublicFilesView.as_view(), name="public-files"),
    path("admin/", admin.site.urls),
    path("files/", include("files_app.urls")),
]

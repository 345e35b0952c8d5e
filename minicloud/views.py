"""Pages of the minicloud project itself."""

from __future__ import annotations

from django.db.models import QuerySet
from django.views.generic import ListView

from files_app.models import StoredFile


class PublicFilesView(ListView):  # type: ignore[type-arg]
    """List the public files with their size, type and download link."""

    template_name = "public.html"
    paginate_by = 50
    context_object_name = "files"

    def get_queryset(self) -> QuerySet[StoredFile]:
        return StoredFile.objects.filter(public=True).order_by("-created", "-pk")

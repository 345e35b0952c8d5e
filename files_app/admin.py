"""Admin pages for stored files."""

from __future__ import annotations

from django.contrib import admin
from django.template.defaultfilters import filesizeformat

from files_app.models import StoredFile


@admin.register(StoredFile)
class StoredFileAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    """Upload, browse, replace and delete stored files."""

    list_display = ["name", "human_size", "content_type", "public", "owner", "created"]
    list_filter = ["public", "content_type", "created"]
    search_fields = ["name"]
    readonly_fields = ["uuid", "size", "sha256", "created", "updated"]
    date_hierarchy = "created"

    @admin.display(description="size", ordering="size")
    def human_size(self, obj: StoredFile) -> str:
        return filesizeformat(obj.size)

"""Downloads of other models' files through files_app.views.FieldFileView (test_field_views)."""

from __future__ import annotations

from typing import Any

from django.urls import path

from files_app.views import FieldFileView, LargeObjectView
from tests.testapp.models import Document, Photo
from tests.urls import urlpatterns as base


class StaffOnlyPhotoView(FieldFileView):
    model = Photo
    field = "attachment"

    def has_permission(self) -> bool:
        return bool(self.request.user.is_staff)


class NaturalSubclass(LargeObjectView):
    """What an adopter writes first: the FieldFile itself from get_file()."""

    def get_object(self) -> Any:
        return Photo.objects.get(pk=self.kwargs["pk"])

    def get_file(self) -> Any:
        return self.object.attachment


urlpatterns = [
    *base,
    path(
        "photos/<int:pk>/attachment",
        FieldFileView.as_view(model=Photo, field="attachment"),
        name="photo-attachment",
    ),
    path("photos/<int:pk>/image", FieldFileView.as_view(model=Photo, field="image")),
    path("documents/<int:pk>/", FieldFileView.as_view(model=Document, field="attachment")),
    path("staff/photos/<int:pk>/attachment", StaffOnlyPhotoView.as_view()),
    path("natural/<int:pk>/", NaturalSubclass.as_view()),
    path("misnamed/<int:pk>/", FieldFileView.as_view(model=Photo, field="width")),
]

"""A host project's own upload views: plain ModelForm views over models of its own, with
files_app's upload handler (tests/test_outer_transaction.py)."""

from __future__ import annotations

from typing import Any

from django.db import transaction
from django.http import HttpRequest, HttpResponse
from django.urls import include, path
from django.utils.decorators import method_decorator
from django.views.decorators.csrf import csrf_exempt, csrf_protect
from django.views.generic import CreateView

from files_app.uploadhandler import LargeObjectUploadHandler
from tests.testapp.models import Document, Photo


@method_decorator(csrf_exempt, name="dispatch")
class StreamedCreateView(CreateView):  # type: ignore[type-arg]
    """A ModelForm view whose uploads stream into large objects.

    As Django's documentation says for a view's own upload handlers: exempt from the CSRF
    middleware (which reads the body), and protected by ``csrf_protect`` after the handler
    is set.
    """

    def post(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        request.upload_handlers = [LargeObjectUploadHandler(request)]
        return self._post(request, *args, **kwargs)

    @method_decorator(csrf_protect)
    def _post(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        return super().post(request, *args, **kwargs)

    def get_success_url(self) -> str:
        assert self.object is not None
        return f"/done/{self.object.pk}"


def atomic_view(view: Any) -> Any:
    # As ATOMIC_REQUESTS would: the whole view in one transaction.
    return transaction.non_atomic_requests(transaction.atomic(view))


urlpatterns = [
    path(
        "documents/add/",
        StreamedCreateView.as_view(model=Document, fields=["title", "attachment"]),
    ),
    path("photos/add/", StreamedCreateView.as_view(model=Photo, fields=["attachment"])),
    path(
        "atomic/documents/add/",
        atomic_view(StreamedCreateView.as_view(model=Document, fields=["title", "attachment"])),
    ),
    path("", include("tests.urls")),
]

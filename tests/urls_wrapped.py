"""A host's URLconf that puts its own policy on files_app's download URLs, ahead of
``include("files_app.urls")`` (issue 21, point 4): the lean path must leave every one of
these to Django. files_app's share links and a second include stay the stock views.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from django.contrib.auth.decorators import login_required, permission_required
from django.http import HttpRequest, HttpResponse, HttpResponseBase, HttpResponseForbidden
from django.urls import include, path
from django.views import View
from django.views.decorators.cache import cache_control

from files_app.views import StoredFileView

PASS_HEADER = "X-Host-Pass"


def host_wrapper(view: Callable[..., HttpResponseBase]) -> Callable[..., HttpResponseBase]:
    """A host's own rule: no file without the pass (functools.wraps copies view_class)."""

    @functools.wraps(view)
    def wrapped(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
        if request.headers.get(PASS_HEADER) != "yes":
            return HttpResponseForbidden("No file without the pass.\n")
        return view(request, *args, **kwargs)

    return wrapped


class HostView(View):
    """A host's own view at files_app's URL."""

    def get(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        return HttpResponse(b"the host's view\n", content_type="text/plain")


class HostFileView(StoredFileView):
    public_cache_control = "public, max-age=9"


def _at(kind: str, view: Callable[..., HttpResponseBase]) -> Any:
    return path(f"files/<uuid:uuid>/{kind}/<path:filename>", view)


urlpatterns = [
    _at("login", login_required(StoredFileView.as_view())),
    _at("permission", permission_required("files_app.view_storedfile")(StoredFileView.as_view())),
    _at("cache", cache_control(private=True, max_age=7)(StoredFileView.as_view())),
    _at("wrapper", host_wrapper(StoredFileView.as_view())),
    _at("host", HostView.as_view()),
    _at("subclass", HostFileView.as_view()),
    _at("kwargs", StoredFileView.as_view(public_cache_control="public, max-age=5")),
    # The issue's own example: every download behind a login, before files_app's URLs.
    path("files/<uuid:uuid>/<path:filename>", login_required(StoredFileView.as_view())),
    path("files/", include("files_app.urls")),
    # The same views again, under another namespace: still files_app's own.
    path("mirror/", include("files_app.urls", namespace="mirror")),
]

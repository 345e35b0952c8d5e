"""Template tags of files_app: ``{% load files_app %}``.

``{% signed_url stored_file %}`` (or ``{% signed_url stored_file expires=600 %}``, or
``{% signed_url stored_file as url %}``) gives the page's user a short-lived URL of a
stored file that downloads, plays and seeks without a session (:meth:`StoredFile.
signed_url`). The user is the request's (``django.template.context_processors.request``)
or the context's ``user``; without either, the URL serves public files only.
"""

from __future__ import annotations

from datetime import timedelta

from django import template

from files_app.models import StoredFile

register = template.Library()


@register.simple_tag(takes_context=True)
def signed_url(
    context: template.Context, stored_file: StoredFile, expires: int | timedelta | None = None
) -> str:
    """Return a signed URL of ``stored_file`` for the page's user."""
    request = context.get("request")
    user = getattr(request, "user", None) if request is not None else context.get("user")
    return stored_file.signed_url(user, expires)

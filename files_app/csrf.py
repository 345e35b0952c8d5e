"""Django's CSRF checks that need no request body, for views that stream uploads.

``CsrfViewMiddleware`` reads ``request.POST`` for the token, which parses the whole body —
with a streaming upload handler, that writes every uploaded byte into the database before
a forged request is refused. The checks that need only the headers (Origin, Referer over
HTTPS, a CSRF cookie at all) run here first; the token itself is still checked afterwards
by the view's own ``csrf_protect``.

This subclasses private methods of ``CsrfViewMiddleware`` (``_check_token``, ``_accept``,
``_get_secret``). Where a Django version lacks them, :func:`reject_before_body` checks
nothing, and the full check after the body still refuses the request;
tests/reliability/test_admin_uploads.py fails if that happens.

Internal to files_app, not part of its public API (docs/reference.md, "Public API").
"""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest, HttpResponse
from django.middleware.csrf import (
    REASON_NO_CSRF_COOKIE,
    CsrfViewMiddleware,
    InvalidTokenFormat,
    RejectRequest,
)

_PRIVATE = ("_check_token", "_accept", "_get_secret", "process_view")


def supported() -> bool:
    """Return whether this Django's CsrfViewMiddleware has what the early check uses."""
    return all(callable(getattr(CsrfViewMiddleware, name, None)) for name in _PRIVATE)


class _HeaderChecks(CsrfViewMiddleware):
    def _check_token(self, request: HttpRequest) -> None:
        # The cookie must be there and well formed; the token in the body waits.
        try:
            secret = self._get_secret(request)  # type: ignore[attr-defined]
        except InvalidTokenFormat as exc:
            raise RejectRequest(f"CSRF cookie {exc.reason}.") from exc
        if secret is None:
            raise RejectRequest(REASON_NO_CSRF_COOKIE)

    def _accept(self, request: HttpRequest) -> None:
        # Not done yet: the view's csrf_protect checks the token once the body is read.
        return None


def reject_before_body(request: HttpRequest, view: Any) -> HttpResponse | None:
    """Return Django's 403 for a request its CSRF checks refuse without reading the body."""
    if not supported():  # pragma: no cover (a Django without these methods)
        return None
    checks = _HeaderChecks(lambda request: HttpResponse())
    response: HttpResponse | None = checks.process_view(request, view, (), {})
    return response

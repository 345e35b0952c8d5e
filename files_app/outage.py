"""The one answer to a part of the deployment that does not answer — the database, or the
storage holding a moved file: a short plain-text 503 with ``Retry-After``, logged once.

The views, the middleware and the lean path's WSGI and ASGI entry points all answer with it.

Internal to files_app, not part of its public API (docs/reference.md, "Public API").
"""

from __future__ import annotations

import logging

from django.http import HttpResponse

logger = logging.getLogger("files_app")

#: Seconds a client is asked to wait before trying again.
RETRY_AFTER = 5

_WHAT = {
    "database": ("Database", "the database cannot be reached"),
    "storage": ("Storage", "the storage holding this file cannot be reached"),
}


def unavailable(
    method: str,
    path: str,
    exception: BaseException,
    retry_after: int = RETRY_AFTER,
    *,
    what: str = "database",
) -> HttpResponse:
    """Log that ``what`` ("database" or "storage") failed ``method path`` with
    ``exception``, and return the 503 that answers it."""
    logged, said = _WHAT[what]
    message = str(exception).strip()
    logger.error(
        "%s unavailable while serving %s %s: %s",
        logged,
        method,
        path,
        message.splitlines()[0] if message else exception,
    )
    body = f"Service unavailable: {said}. Try again in a few seconds.\n".encode()
    response = HttpResponse(body, status=503, content_type="text/plain; charset=utf-8")
    response["Retry-After"] = str(retry_after)
    response["Cache-Control"] = "no-store"
    return response

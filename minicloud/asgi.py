"""ASGI entry point for minicloud (uvicorn minicloud.asgi:application)."""

from __future__ import annotations

import os

from files_app.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "minicloud.settings")

application = get_asgi_application()

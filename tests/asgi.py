"""ASGI entry point of the real-server tests (uvicorn tests.asgi:application)."""

from __future__ import annotations

import os

from files_app.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")

application = get_asgi_application()

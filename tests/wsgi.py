"""WSGI entry point of the real-server tests (gunicorn tests.wsgi:application)."""

from __future__ import annotations

import os

from files_app.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")

application = get_wsgi_application()

"""WSGI entry point for minicloud (gunicorn minicloud.wsgi)."""

from __future__ import annotations

import os

from files_app.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "minicloud.settings")

application = get_wsgi_application()

"""ASGI entry point of the benchmark servers (``uvicorn bench.asgi:application``).

``BENCH_ASGI_MESSAGE_SIZE`` sets the size of the ``http.response.body`` messages the handler
cuts responses into (files_app's handler: 1 MiB; Django's own: 64 KiB).
"""

from __future__ import annotations

import os

from files_app.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.settings")

application = get_asgi_application()
if "BENCH_ASGI_MESSAGE_SIZE" in os.environ:
    application.chunk_size = int(os.environ["BENCH_ASGI_MESSAGE_SIZE"])

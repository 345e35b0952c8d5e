"""gunicorn settings for minicloud, read by ``gunicorn minicloud.wsgi`` run from this directory.

Downloads stream for as long as the client takes. gunicorn's default sync workers are killed
by the worker timeout (30 s) in the middle of a long response; threaded workers are not:
their main loop keeps telling the master it is alive while threads stream. Each thread
serves one request at a time, so ``threads`` × ``workers`` is how many downloads run at
once; more wait their turn. For thousands of slow clients, use uvicorn
(``uvicorn minicloud.asgi:application``). Every value can be overridden on the command line
or in ``GUNICORN_CMD_ARGS``.
"""

from __future__ import annotations

import os

bind = os.environ.get("MINICLOUD_BIND", "127.0.0.1:8000")
worker_class = "gthread"
workers = int(os.environ.get("MINICLOUD_WORKERS", "2"))
# At most MINICLOUD_DB_POOL_SIZE (16) database connections per worker: keep threads below.
threads = int(os.environ.get("MINICLOUD_THREADS", "8"))
# Applies to a worker's heartbeat, not to one response: a stuck worker is restarted.
timeout = 30
graceful_timeout = 30
keepalive = 5
# Request line and header limits stay at gunicorn's defaults; bodies are limited by
# FILES_APP_MAX_UPLOAD_SIZE and, in front, by the proxy (client_max_body_size in nginx).

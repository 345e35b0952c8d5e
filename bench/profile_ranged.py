"""Profile one server worker with py-spy while 16 clients fetch random 64 KiB ranges.

Run: .venv/bin/python bench/profile_ranged.py gunicorn|uvicorn|bare [--gil]

Starts a throwaway PostgreSQL, stores a public 64 MiB file, starts the server (gunicorn
gthread 2 × 8 with ``CONN_MAX_AGE=60``, uvicorn with the connection pool, or the bare WSGI
app of ``bench/bare.py`` under the same gunicorn), runs ``bench.client ranged`` for 14 s and
``py-spy record`` on one worker for 10 s of it (``--gil``: only while it holds the GIL, i.e.
where its Python CPU time goes), then prints the share of samples in each part of the stack.
Needs ``py-spy`` (``pip install py-spy``; not in the requirements).
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

PARTS = {
    "gunicorn (HTTP, sockets)": r"gunicorn/(http|workers)/",
    "Django handler, middleware and view": r"django/core/handlers/base\.py",
    "StoredFileView.get": r"get \(files_app/views\.py",
    "StoredFileView.get_object (ORM)": r"get_object \(files_app/views\.py",
    "ORM query building and compiling": r"django/db/models/(query|sql)",
    "psycopg (sending, waiting)": r"psycopg/(cursor|connection)\.py",
    "files_app.largeobjects": r"files_app/lo\.py",
    "response headers, dates, conditions": r"django/(utils/(cache|http)|http/response)",
    "asgiref sync_to_async": r"asgiref/sync\.py",
    "uvicorn and h11": r"(uvicorn|h11)/",
    "asyncio event loop": r"asyncio/",
    "bare app": r"bench/bare\.py",
}


def summarize(raw: Path) -> None:
    total = 0
    shares: collections.Counter[str] = collections.Counter()
    for line in raw.read_text().splitlines():
        stack, _, number = line.rpartition(" ")
        if not stack:
            continue
        total += int(number)
        for name, pattern in PARTS.items():
            if re.search(pattern, stack):
                shares[name] += int(number)
    print(f"{total} samples (a stack counts towards every part it passes through)")
    for name, count in shares.most_common():
        print(f"{100 * count / total:5.1f} %  {name}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("server", choices=["gunicorn", "uvicorn", "bare"])
    parser.add_argument("--gil", action="store_true", help="sample only while holding the GIL")
    args = parser.parse_args()
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(spy).exists():
        sys.exit("py-spy is not installed: pip install py-spy")

    import psutil  # type: ignore[import-untyped]

    from minicloud.pgserver import temporary_server

    _, url = temporary_server("profile")
    os.environ.update(DATABASE_URL=url, DJANGO_SETTINGS_MODULE="bench.settings")
    import django

    django.setup()
    from django.core.files.base import ContentFile
    from django.core.management import call_command
    from django.db import connections

    from files_app.models import StoredFile

    call_command("migrate", verbosity=0)
    size = 64 * 2**20
    stored = StoredFile(file=ContentFile(os.urandom(size), name="a.bin"), public=True)
    stored.save()
    connections.close_all()

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {**os.environ, "BENCH_CONN_MAX_AGE": "60"}
    if args.server == "uvicorn":
        env.update(BENCH_CONN_MAX_AGE="0", BENCH_POOL="1")
        command = ["-m", "uvicorn", "bench.asgi:application", "--host=127.0.0.1"]
        command += [f"--port={port}", "--lifespan=off", "--no-access-log"]
    else:
        app = "bench.bare:application" if args.server == "bare" else "bench.wsgi:application"
        command = ["-m", "gunicorn", app, f"--bind=127.0.0.1:{port}", "--workers=2"]
        command += ["--worker-class=gthread", "--threads=8"]
    server = subprocess.Popen([sys.executable, *command, "--log-level=warning"], cwd=ROOT, env=env)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.1)
        time.sleep(1)
        worker = (psutil.Process(server.pid).children() or [psutil.Process(server.pid)])[0]
        client = subprocess.Popen(
            [sys.executable, "-m", "bench.client", "ranged", "--port", str(port)]
            + ["--path", stored.get_absolute_url(), "--size", str(size), "--clients", "16"]
            + ["--seconds", "14", "--keep-alive"],
            cwd=ROOT,
            stdout=subprocess.PIPE,
        )
        time.sleep(2)
        with tempfile.TemporaryDirectory() as tmp:
            raw = Path(tmp) / "profile.txt"
            record = [spy, "record", "-p", str(worker.pid), "-d", "10", "-r", "250"]
            record += ["-f", "raw", "-o", str(raw), "--nonblocking"]
            spied = subprocess.run(record + ["--gil"] * args.gil, capture_output=True, text=True)
            if spied.returncode or not raw.exists():
                sys.exit(f"py-spy failed:\n{spied.stdout}{spied.stderr}")
            result = json.loads(client.communicate(timeout=60)[0])
            rate = result["ok"] / result["seconds"]
            print(f"{args.server}: {rate:.0f} requests/s while profiled")
            summarize(raw)
    finally:
        server.terminate()
        server.wait(timeout=30)


if __name__ == "__main__":
    main()

"""Where the time goes while 16 clients fetch random 64 KiB ranges of a public file.

Run: .venv/bin/python bench/profile_ranged.py SERVER [--lean] [--gil] [--workers N]

SERVER is ``gunicorn`` (gthread N × 8, ``CONN_MAX_AGE=60``), ``uvicorn`` (N workers, the
connection pool), ``bare`` (the WSGI app of ``bench/bare.py``, no Django, under the same
gunicorn) or ``raw`` (no HTTP: 16 processes calling ``lo_get`` on their own connections, the
loop every ratio in bench/RESULTS.md divides by). ``--lean`` puts ``FileServingMiddleware``
first, as minicloud does, so the file takes the lean path. N is 2 by default, as in
``bench/run.py``.

It starts a throwaway PostgreSQL, stores a 64 MiB public file, starts the server and runs
the load twice for 14 s each:

1. **The CPU budget.** The CPU time (user + system) the server's processes, PostgreSQL's
   and the client's spent in the middle 10 s, divided by the requests answered then: what
   one request costs each, against the machine's cores. The machine has no idle core to
   give: requests/s = cores / (CPU per request, all processes together), less what the
   scheduler leaves idle.
2. **The profile.** ``py-spy record`` on the busiest worker for 10 s (``--gil``: only while
   it holds the GIL, where its Python CPU goes). Each sample goes to the innermost part of
   its stack that PARTS names (so the shares add up to 100 %); C code without a Python
   frame of its own (uvloop, httptools, the socket calls) counts towards the Python frame
   that called it.

``--download`` instead times 200 whole 1 MiB downloads one after another with curl
(connect, first byte, the rest) against ``lo_get`` of that MiB on an open connection.

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
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SIZE = 64 * 2**20
CLIENTS = 16
SECONDS = 14  # of load; measured: the 10 s from the 2nd on
WINDOW = 10

# Innermost first wins: a sample in psycopg called from the lean path is psycopg's.
PARTS = {
    "psycopg and its pool (send, wait, decode)": r"psycopg(_pool)?/",
    "files_app.largeobjects (SQL of the reads)": r"files_app/largeobjects",
    "files_app: plan of the answer (ranges, conditions, headers)": (
        r"files_app/(responder|ranges|firstread|mediatypes|_hostrules)\.py"
    ),
    "files_app lean path (fastpath: route, lookup, send)": r"files_app/fastpath\.py",
    "files_app.asgi / .wsgi entry": r"files_app/(asgi|wsgi|middleware)\.py",
    "ORM query building and compiling": r"django/db/models/(query|sql)",
    "Django views, middleware, handler": r"django/",
    "bare app": r"bench/bare\.py",
    "gunicorn (HTTP parsing, sockets, threads)": r"gunicorn/",
    "uvicorn, httptools, uvloop (HTTP, event loop, sockets)": r"(uvicorn|h11|httptools)/",
    "asyncio (tasks, streams)": r"asyncio/",
    "threading, concurrent.futures": r"(threading|concurrent/futures|queue)\.py",
}


def _shares(raw: Path, key: Callable[[list[str]], str | None]) -> list[tuple[str, float]]:
    """Count a py-spy raw profile's samples by ``key(frames, outermost first)`` (None: not
    counted); return (key, share of all samples), largest first."""
    total = 0
    counts: collections.Counter[str] = collections.Counter()
    for line in raw.read_text().splitlines():
        stack, _, number = line.rpartition(" ")
        if not stack:
            continue
        total += int(number)
        found = key(stack.split(";"))
        if found is not None:
            counts[found] += int(number)
    return [(name, count / total) for name, count in counts.most_common()] if total else []


def innermost(raw: Path, pattern: str, top: int) -> list[tuple[str, float]]:
    """Return the ``top`` functions matching ``pattern`` that samples were in innermost (of
    those that match), with their share of all samples."""

    def function(frames: list[str]) -> str | None:
        found = next((f for f in reversed(frames) if re.search(pattern, f)), None)
        return re.sub(r":\d+\)$", ")", found) if found else None

    return _shares(raw, function)[:top]


def summarize(raw: Path) -> list[tuple[str, float]]:
    """Return (part of PARTS, share of samples), largest first: each sample counts towards
    the innermost frame that a part names."""

    def part(frames: list[str]) -> str:
        for frame in reversed(frames):
            found = next((name for name, rx in PARTS.items() if re.search(rx, frame)), None)
            if found:
                return found
        return "other"

    return _shares(raw, part)


def cpu_of(processes: list[Any]) -> float:
    """CPU seconds (user + system) the processes spent so far; the gone count as 0."""
    import psutil  # type: ignore[import-untyped]

    spent = 0.0
    for process in processes:
        try:
            times = process.cpu_times()
        except psutil.NoSuchProcess:
            continue
        spent += times.user + times.system
    return spent


def postgres_processes(datadir: Path) -> list[Any]:
    import psutil

    postmaster = int((datadir / "postmaster.pid").read_text().split()[0])
    parent = psutil.Process(postmaster)
    return [parent, *parent.children(recursive=True)]


def start_server(args: argparse.Namespace, port: int) -> subprocess.Popen[bytes]:
    env = {**os.environ, "BENCH_CONN_MAX_AGE": "60"}
    if args.lean:
        env["BENCH_LEAN"] = "1"
    if args.server == "uvicorn":
        env.update(BENCH_CONN_MAX_AGE="0", BENCH_POOL="1")
        command = ["-m", "uvicorn", "bench.asgi:application", "--host=127.0.0.1"]
        command += [f"--port={port}", "--lifespan=off", "--no-access-log"]
        command += [f"--workers={args.workers}"] if args.workers > 1 else []
    else:
        app = "bench.bare:application" if args.server == "bare" else "bench.wsgi:application"
        command = ["-m", "gunicorn", app, f"--bind=127.0.0.1:{port}", f"--workers={args.workers}"]
        command += ["--worker-class=gthread", "--threads=8"]
    server = subprocess.Popen([sys.executable, *command, "--log-level=warning"], cwd=ROOT, env=env)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            time.sleep(0.1)
    time.sleep(1)
    return server


def load(args: argparse.Namespace, port: int, path: str, oid: int, url: str) -> list[Any]:
    """Start the clients (SECONDS of load); return their processes."""
    if args.server == "raw":
        start_at = str(time.time() + 0.5)
        command = ["-m", "bench.client", "raw-ranged", "--dsn", url, "--oid", str(oid)]
        command += ["--size", str(SIZE), "--seconds", str(SECONDS), "--start-at", start_at]
        count = CLIENTS
    else:
        command = ["-m", "bench.client", "ranged", "--port", str(port), "--path", path]
        command += ["--size", str(SIZE), "--clients", str(CLIENTS), "--seconds", str(SECONDS)]
        command += ["--keep-alive"]
        count = 1
    return [
        subprocess.Popen([sys.executable, *command], cwd=ROOT, stdout=subprocess.PIPE)
        for _ in range(count)
    ]


def answered(clients: list[Any]) -> float:
    """Requests per second the clients got answered (206, 64 KiB)."""
    results = [json.loads(client.communicate(timeout=120)[0]) for client in clients]
    return float(sum(result["ok"] / result["seconds"] for result in results))


def downloads(port: int, path: str, oid: int, url: str, times: int = 200) -> None:
    """Time ``times`` whole 1 MiB downloads one after another, as bench/run.py's download
    row does, against ``lo_get`` of the same MiB on an open connection; curl says where a
    download's time goes (connecting, waiting for the first byte, receiving the rest)."""
    import statistics

    import psycopg

    with psycopg.connect(url) as conn, conn.cursor(binary=True) as cursor:
        raw = []
        for _ in range(times):
            started = time.perf_counter()
            cursor.execute("SELECT lo_get(%s::oid, 0, %s)", (oid, 2**20))
            cursor.fetchone()
            raw.append(time.perf_counter() - started)
    curl = shutil.which("curl") or "curl"
    fields = "%{time_connect} %{time_starttransfer} %{time_total} %{size_download}"
    raw_ms = 1000 * statistics.median(raw)
    print(f"1 MiB, {times} requests one after another (medians):")
    print(f"  raw lo_get of 1 MiB on an open connection: {raw_ms:.2f} ms")
    for what, options, size in (
        ("HEAD", ["-I"], None),
        ("64 KiB range", ["-r", "0-65535"], 65536),
        ("whole 1 MiB", [], 2**20),
    ):
        phases: list[list[float]] = [[], [], []]
        for _ in range(times):
            out = subprocess.run(
                [curl, "-s", "-o", "/dev/null", "-w", fields, *options]
                + [f"http://127.0.0.1:{port}{path}"],
                capture_output=True,
                text=True,
                check=True,
            ).stdout.split()
            assert size is None or out[3] == str(size), out
            connect, first, total = (float(value) for value in out[:3])
            for phase, value in zip(
                phases, (connect, first - connect, total - first), strict=True
            ):
                phase.append(value)
        connect_ms, first_ms, rest_ms = (1000 * statistics.median(each) for each in phases)
        whole = 1000 * statistics.median([sum(each) for each in zip(*phases, strict=True)])
        print(
            f"  curl {what:<13} connect {connect_ms:.2f} ms, to first byte {first_ms:.2f} ms, "
            f"the rest {rest_ms:.2f} ms: {whole:.2f} ms"
            + (f" ({raw_ms / whole:.2f}x raw)" if size == 2**20 else "")
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("server", choices=["gunicorn", "uvicorn", "bare", "raw"])
    parser.add_argument("--lean", action="store_true", help="the lean path (minicloud's)")
    parser.add_argument("--gil", action="store_true", help="sample only while holding the GIL")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument(
        "--download", action="store_true", help="time sequential 1 MiB downloads instead"
    )
    parser.add_argument(
        "--top", type=int, default=0, help="also list the N functions of files_app and Django"
    )
    args = parser.parse_args()
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if args.server != "raw" and not Path(spy).exists():
        sys.exit("py-spy is not installed: pip install py-spy")

    import psutil

    from minicloud.pgserver import temporary_server

    pg, url = temporary_server("profile")
    os.environ.update(DATABASE_URL=url, DJANGO_SETTINGS_MODULE="bench.settings")
    import django

    django.setup()
    from django.core.files.base import ContentFile
    from django.core.management import call_command
    from django.db import connections

    from files_app.models import StoredFile
    from files_app.storage import oid_from_name

    call_command("migrate", verbosity=0)
    stored = StoredFile(file=ContentFile(os.urandom(SIZE), name="a.bin"), public=True)
    stored.save()
    small = StoredFile(file=ContentFile(os.urandom(2**20), name="b.bin"), public=True)
    small.save()
    oid = oid_from_name(stored.file.name) or 0
    connections.close_all()

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = None if args.server == "raw" else start_server(args, port)
    label = f"{args.server}{' lean' if args.lean else ''}"
    try:
        workers = []
        if server is not None:
            parent = psutil.Process(server.pid)
            workers = [parent, *parent.children(recursive=True)]
        if args.download and server is not None:
            downloads(port, small.get_absolute_url(), oid_from_name(small.file.name) or 0, url)
            return

        # 1. The CPU budget.
        clients = load(args, port, stored.get_absolute_url(), oid, url)
        client_processes = [psutil.Process(client.pid) for client in clients]
        time.sleep(2)
        database = postgres_processes(pg.datadir)  # with the clients' backends
        groups = {"server": workers, "PostgreSQL": database, "client": client_processes}
        before = {name: cpu_of(group) for name, group in groups.items()}
        started = time.monotonic()
        time.sleep(WINDOW)
        spent = {name: cpu_of(group) - before[name] for name, group in groups.items()}
        window = time.monotonic() - started
        rate = answered(clients)
        cores = psutil.cpu_count()
        print(f"{label}: {rate:.0f} requests/s; CPU per request over {window:.1f} s:")
        total = 0.0
        for name, seconds in spent.items():
            if name == "server" and server is None:
                continue
            per = 1000 * seconds / (rate * window)
            total += per
            print(f"  {name:<11} {per:6.3f} ms  ({100 * seconds / window:5.1f} % of a core)")
        idle = cores * window - sum(spent.values())
        print(f"  {'all':<11} {total:6.3f} ms; {cores} cores; idle or other {idle:.1f} s")
        if server is None:
            return

        # 2. The profile of the busiest worker.
        clients = load(args, port, stored.get_absolute_url(), oid, url)
        time.sleep(2)
        candidates = parent.children(recursive=True) or [parent]
        first = {p.pid: cpu_of([p]) for p in candidates}
        time.sleep(0.5)
        worker = max(candidates, key=lambda p: cpu_of([p]) - first[p.pid])
        with tempfile.TemporaryDirectory() as tmp:
            raw = Path(tmp) / "profile.txt"
            record = [spy, "record", "-p", str(worker.pid), "-d", str(WINDOW - 1), "-r", "250"]
            record += ["-f", "raw", "-o", str(raw), "--nonblocking"]
            spied = subprocess.run(record + ["--gil"] * args.gil, capture_output=True, text=True)
            if spied.returncode or not raw.exists():
                sys.exit(f"py-spy failed:\n{spied.stdout}{spied.stderr}")
            rate = answered(clients)
            what = "while holding the GIL" if args.gil else "all samples, idle included"
            print(f"{label}: {rate:.0f} requests/s while profiled; worker {worker.pid}, {what}:")
            for name, share in summarize(raw):
                print(f"  {100 * share:5.1f} %  {name}")
            for pattern in ("files_app/", "django/") if args.top else ():
                print(f"  innermost in {pattern}:")
                for name, share in innermost(raw, pattern, args.top):
                    print(f"    {100 * share:5.1f} %  {name}")
    finally:
        if server is not None:
            server.terminate()
            server.wait(timeout=30)


if __name__ == "__main__":
    main()

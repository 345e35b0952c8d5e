"""Benchmark files_app against the raw large-object ceiling and against peers serving from disk.

Run from the project root:

    .venv/bin/python bench/run.py           # the full run (about 12 minutes on 2 cores)
    .venv/bin/python bench/run.py --quick   # a smoke run with small files (under a minute)

Everything runs on 127.0.0.1 and is started here: a throwaway PostgreSQL (minicloud.pgserver),
gunicorn and uvicorn serving files_app, Django's FileResponse from disk under gunicorn, nginx
from disk when it is installed, and the clients (bench/client.py, one process per
measurement). Every server runs in its own process group and is stopped at the end, and the
temporary directory (PostgreSQL data, disk copies) is removed. The results go to stdout, to
bench/results/latest.md (with the raw figures in latest.json) and, as a plot, to
bench/results/throughput.png.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if sys.path and Path(sys.path[0]).resolve() == ROOT / "bench":
    sys.path[0] = str(ROOT)  # run as a script: import bench.* and tests.* from the root
elif str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import psutil  # type: ignore[import-untyped]  # noqa: E402

from bench import client  # noqa: E402

KiB, MiB, GiB = 1024, 1024**2, 1024**3
RESULTS_DIR = ROOT / "bench" / "results"
PYTHON = sys.executable
RANGE = client.RANGE_LENGTH


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def human(size: int) -> str:
    if size >= GiB and size % GiB == 0:
        return f"{size // GiB} GiB"
    if size >= MiB:
        return f"{size / MiB:g} MiB"
    return f"{size // KiB} KiB"


# -- the plan ----------------------------------------------------------------------------


@dataclass
class Plan:
    quick: bool
    sizes: list[int]
    reps: int
    chunks: list[int]
    ttfb_reps: int
    ranged_seconds: float
    ranged_reps: int
    clients: int
    upload_size: int
    upload_reps: int
    huge_upload_size: int
    worker_choices: list[tuple[str, dict[str, Any]]]

    @property
    def big(self) -> int:
        return self.sizes[-1]

    @classmethod
    def make(cls, quick: bool) -> Plan:
        choices: list[tuple[str, dict[str, Any]]] = [
            ("gunicorn sync ×5", {"workers": 5}),
            ("gunicorn sync ×16", {"workers": 16}),
            ("gunicorn gthread 2×8", {"workers": 2, "worker_class": "gthread", "threads": 8}),
        ]
        if quick:
            return cls(
                quick=True,
                sizes=[MiB, 4 * MiB, 16 * MiB],
                reps=1,
                chunks=[MiB],
                ttfb_reps=3,
                ranged_seconds=0.5,
                ranged_reps=1,
                clients=4,
                upload_size=16 * MiB,
                upload_reps=1,
                huge_upload_size=0,
                worker_choices=choices[2:],
            )
        return cls(
            quick=False,
            sizes=[MiB, 64 * MiB, GiB],
            reps=5,
            chunks=[256 * KiB, MiB, 4 * MiB],
            ttfb_reps=30,
            ranged_seconds=10.0,
            ranged_reps=3,
            clients=16,
            upload_size=GiB,
            upload_reps=3,
            huge_upload_size=2 * GiB,
            worker_choices=choices,
        )


# -- processes ---------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Server:
    name: str
    port: int
    process: subprocess.Popen[bytes]
    log_path: Path
    tmpdir: Path | None = None

    def alive(self) -> bool:
        return self.process.poll() is None

    def output(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-3000:]
        except OSError:
            return ""

    def worker_pids(self) -> list[int]:
        """The processes that serve requests: the master's children, or the master."""
        children = psutil.Process(self.process.pid).children(recursive=False)
        pids = [c.pid for c in children if "python" in " ".join(c.cmdline()).lower()]
        return pids or [self.process.pid]

    def wait_listening(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive():
                raise RuntimeError(f"{self.name} exited:\n{self.output()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"{self.name} did not listen in {timeout:.0f} s:\n{self.output()}")

    def stop(self) -> None:
        """SIGTERM to its process group, then SIGKILL to whatever is left of it."""
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=10)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=10)


class Lab:
    """Owns every process and directory the benchmark creates; ``close()`` removes them."""

    def __init__(self) -> None:
        self.tmp = Path(tempfile.mkdtemp(prefix="files-app-bench-"))
        self.tmp.chmod(0o755)  # nginx workers (nobody) read the disk copies
        self.servers: list[Server] = []
        self.children: list[subprocess.Popen[bytes]] = []
        self.pg: Any = None
        self.env: dict[str, str] = {}

    def dir(self, *parts: str) -> Path:
        path = self.tmp.joinpath(*parts)
        path.mkdir(parents=True, exist_ok=True)
        return path

    def start(self, name: str, args: list[str], env: dict[str, str]) -> Server:
        port = free_port()
        args = [a.replace("{port}", str(port)) for a in args]
        server_tmp = self.dir("servers", name.replace(" ", "_"), "tmp")
        log_path = self.dir("logs") / f"{name.replace(' ', '_')}.log"
        with open(log_path, "wb") as out:
            process = subprocess.Popen(
                args,
                cwd=ROOT,
                env={**self.env, **env, "TMPDIR": str(server_tmp)},
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group, killed as a whole
            )
        server = Server(name, port, process, log_path, server_tmp)
        self.servers.append(server)
        return server

    def stop_server(self, server: Server) -> None:
        server.stop()
        if server in self.servers:
            self.servers.remove(server)

    def close(self) -> None:
        for server in reversed(self.servers):
            try:
                server.stop()
            except Exception as exc:  # keep stopping the others
                log(f"stopping {server.name}: {exc}")
        self.servers.clear()
        for child in self.children:
            if child.poll() is None:
                child.kill()
                child.wait()
        if self.pg is not None:
            try:
                self.pg.stop()
            except Exception as exc:
                log(f"stopping PostgreSQL: {exc}")
        shutil.rmtree(self.tmp, ignore_errors=True)


def run_client(lab: Lab, *args: str, timeout: float = 900) -> dict[str, Any]:
    """Run one bench/client.py command in a new process and return its JSON result."""
    result = subprocess.run(
        [PYTHON, "-m", "bench.client", *args],
        cwd=ROOT,
        env=lab.env,
        capture_output=True,
        timeout=timeout,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"client {args[0]} failed:\n{result.stderr.decode()[-3000:]}")
    data: dict[str, Any] = json.loads(result.stdout)
    return data


# -- memory and temporary files ----------------------------------------------------------


def proc_status(pid: int) -> dict[str, int]:
    """VmRSS, RssAnon, RssFile, RssShmem of a process, in bytes."""
    values = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "RssAnon", "RssFile", "RssShmem"):
                values[key] = int(rest.split()[0]) * KiB
    return values


def uss(pid: int) -> int:
    return int(psutil.Process(pid).memory_full_info().uss)


@dataclass
class Track:
    """Baseline and peak of one process's memory figures."""

    base: dict[str, int] = field(default_factory=dict)
    peak: dict[str, int] = field(default_factory=dict)

    def add(self, values: dict[str, int]) -> None:
        if not self.base:
            self.base = dict(values)
        for key, value in values.items():
            self.peak[key] = max(self.peak.get(key, 0), value)

    def growth(self, key: str) -> int:
        return self.peak.get(key, 0) - self.base.get(key, 0)


class Sampler(threading.Thread):
    """Sample a server worker's memory and its PostgreSQL backends' every ``interval`` s.

    The worker's backends are found exactly: its TCP connections to PostgreSQL's port give
    the client ports, and ``pg_stat_activity.client_port`` gives the backend pids.
    """

    def __init__(self, worker: int, pg_port: int, dsn: str, interval: float = 0.05) -> None:
        super().__init__(daemon=True)
        import psycopg

        self.worker = worker
        self.pg_port = pg_port
        self.interval = interval
        self.monitor = psycopg.connect(dsn, autocommit=True)
        self.ports: dict[int, int] = {}
        self.worker_track = Track()
        self.backend_tracks: dict[int, Track] = {}
        self.samples = 0
        self._stop_event = threading.Event()
        self._idle: list[dict[str, int]] = []
        self._idle_backends: dict[int, list[dict[str, int]]] = {}

    def backends(self) -> list[int]:
        pids = []
        try:
            connections = psutil.Process(self.worker).net_connections(kind="tcp")
        except psutil.Error:
            return []
        for conn in connections:
            if conn.raddr and conn.raddr.port == self.pg_port:
                port = conn.laddr.port
                if port not in self.ports:
                    row = self.monitor.execute(
                        "SELECT pid FROM pg_stat_activity WHERE client_port = %s", (port,)
                    ).fetchone()
                    if row is None:
                        continue
                    self.ports[port] = int(row[0])
                pids.append(self.ports[port])
        return pids

    def backend_values(self, pid: int) -> dict[str, int]:
        status = proc_status(pid)
        return {"rss": status["VmRSS"], "anon": status["RssAnon"], "uss": uss(pid)}

    def worker_values(self) -> dict[str, int]:
        status = proc_status(self.worker)
        return {"rss": status["VmRSS"], "anon": status["RssAnon"]}

    def idle(self, seconds: float = 0.5) -> None:
        """Sample the idle processes; the medians become the baselines."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            self._idle.append(self.worker_values())
            for pid in self.backends():
                with contextlib.suppress(psutil.Error, OSError):
                    self._idle_backends.setdefault(pid, []).append(self.backend_values(pid))
            time.sleep(self.interval)
        self.worker_track.base = _median_dict(self._idle)
        for pid, values in self._idle_backends.items():
            self.backend_tracks[pid] = Track(base=_median_dict(values))

    def run(self) -> None:
        while not self._stop_event.is_set():
            with contextlib.suppress(psutil.Error, OSError, KeyError):
                self.worker_track.add(self.worker_values())
                for pid in self.backends():
                    track = self.backend_tracks.setdefault(pid, Track())
                    with contextlib.suppress(psutil.Error, OSError, KeyError):
                        track.add(self.backend_values(pid))
                self.samples += 1
            self._stop_event.wait(self.interval)

    def finish(self) -> dict[str, Any]:
        self._stop_event.set()
        self.join()
        self.monitor.close()
        tracks = [t for t in self.backend_tracks.values() if t.peak]
        worst = max(tracks, key=lambda t: t.growth("anon"), default=Track())
        return {
            "worker_rss_idle": self.worker_track.base.get("rss", 0),
            "worker_rss_growth": self.worker_track.growth("rss"),
            "worker_anon_growth": self.worker_track.growth("anon"),
            "backends": len(tracks),
            "backend_rss_growth": worst.growth("rss"),
            "backend_uss_growth": worst.growth("uss"),
            "backend_anon_growth": worst.growth("anon"),
            "backend_idle_seen": bool(self._idle_backends),
            "samples": self.samples,
        }


def _median_dict(values: list[dict[str, int]]) -> dict[str, int]:
    if not values:
        return {}
    return {k: int(statistics.median(v[k] for v in values)) for k in values[0]}


class CpuMeter:
    """How much CPU the benchmark's own processes and everything else used, per phase.

    Busy time comes from /proc/stat; ours is this process, its reaped children and every
    live descendant (with what they reaped). The rest is other load on the machine.
    """

    def __init__(self) -> None:
        self.phases: dict[str, dict[str, float]] = {}
        self._mark = self.snapshot()

    @staticmethod
    def snapshot() -> tuple[float, float, float, float]:
        ticks = os.sysconf("SC_CLK_TCK")
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
        user, nice, system, _idle, _iowait, irq, softirq, steal = fields[:8]
        busy = (user + nice + system + irq + softirq) / ticks
        own = os.times()
        ours = own.user + own.system + own.children_user + own.children_system
        for child in psutil.Process().children(recursive=True):
            with contextlib.suppress(psutil.Error):
                t = child.cpu_times()
                ours += t.user + t.system + t.children_user + t.children_system
        return time.monotonic(), busy, ours, steal / ticks

    def phase(self, name: str) -> None:
        """Close the phase that ran since the last call, under ``name``."""
        now = self.snapshot()
        wall = max(1e-9, now[0] - self._mark[0])
        busy, ours, steal = (now[i] - self._mark[i] for i in (1, 2, 3))
        self.phases[name] = {
            "seconds": wall,
            "ours_cores": ours / wall,
            "other_cores": max(0.0, busy - ours) / wall,
            "steal_cores": steal / wall,
            "loadavg": os.getloadavg()[0],
        }
        self._mark = now


class TempWatcher(threading.Thread):
    """Watch directories for new entries and a process for files it opens for writing."""

    def __init__(self, dirs: dict[str, Path], pids: list[int], interval: float = 0.05) -> None:
        super().__init__(daemon=True)
        self.dirs = dirs
        self.pids = pids
        self.interval = interval
        self.before = {label: self._list(path) for label, path in dirs.items()}
        self.fds_before = {pid: set(self._write_fds(pid)) for pid in pids}
        self.new_entries: dict[str, dict[str, int]] = {label: {} for label in dirs}
        self.written: dict[str, int] = {}
        self._stop_event = threading.Event()

    @staticmethod
    def _list(path: Path) -> set[str]:
        try:
            return set(os.listdir(path))
        except OSError:
            return set()

    @staticmethod
    def _write_fds(pid: int) -> dict[str, int]:
        """Regular files the process has open for writing: {target: size}."""
        found = {}
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            return {}
        for fd in fds:
            try:
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
                if not target.startswith("/") or target.startswith("/dev/"):
                    continue
                flags = 0
                with open(f"/proc/{pid}/fdinfo/{fd}") as info:
                    for line in info:
                        if line.startswith("flags:"):
                            flags = int(line.split()[1], 8)
                if flags & (os.O_WRONLY | os.O_RDWR):
                    found[f"{target} (fd {fd})"] = os.stat(f"/proc/{pid}/fd/{fd}").st_size
            except (OSError, ValueError, IndexError):
                continue
        return found

    def run(self) -> None:
        while not self._stop_event.is_set():
            for label, path in self.dirs.items():
                for name in self._list(path) - self.before[label]:
                    try:
                        size = os.stat(path / name).st_size
                    except OSError:
                        size = 0
                    entries = self.new_entries[label]
                    entries[name] = max(entries.get(name, 0), size)
            for pid in self.pids:
                for target, size in self._write_fds(pid).items():
                    if target not in self.fds_before.get(pid, set()):
                        self.written[target] = max(self.written.get(target, 0), size)
            self._stop_event.wait(self.interval)

    def finish(self) -> dict[str, Any]:
        self._stop_event.set()
        self.join()
        return {"new_entries": self.new_entries, "written": self.written}


# -- the benchmark -----------------------------------------------------------------------


@dataclass
class Stored:
    size: int
    oid: int
    path: str  # the files_app URL path
    disk_name: str
    sha256: str


class Bench:
    def __init__(self, plan: Plan, lab: Lab, nginx: bool) -> None:
        self.plan = plan
        self.lab = lab
        self.want_nginx = nginx
        self.results: dict[str, Any] = {"plan": {"quick": plan.quick}}
        self.files: dict[int, Stored] = {}
        self.servers: dict[str, Server] = {}
        self.phases: set[str] | None = None
        self.ranged_keys: set[str] | None = None  # --ranged: only these configurations
        self.dsn = ""
        self.pg_port = 0
        self.private_path = ""
        self.signed_path = ""
        self.cookie = ""

    # -- set-up -----------------------------------------------------------------------

    def setup_database(self) -> None:
        from minicloud.pgserver import PostgresServer

        log("starting PostgreSQL")
        pgdir = self.lab.dir("pg")
        # Every server configuration keeps its connections (up to 16 each) for the run.
        pg = PostgresServer(pgdir / "data", ephemeral=True, settings=["max_connections=500"])
        self.lab.pg = pg
        pg.start()
        pg.ensure_database("bench")
        # Our own deletions must not wake autovacuum in the middle of a measurement;
        # set-up ends with an explicit VACUUM and CHECKPOINT instead.
        pg.psql("-c", "ALTER SYSTEM SET autovacuum = off")
        pg.psql("-c", "SELECT pg_reload_conf()")
        self.dsn = pg.url("bench")
        assert pg.port is not None
        self.pg_port = int(pg.port)
        upload_tmp = self.lab.dir("upload-temp-dir")
        self.lab.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("BENCH_")},
            "DATABASE_URL": self.dsn,
            "DJANGO_SETTINGS_MODULE": "bench.settings",
            "BENCH_DISK_DIR": str(self.lab.dir("disk")),
            "BENCH_UPLOAD_TEMP_DIR": str(upload_tmp),
            "PYTHONPATH": str(ROOT),
            "PYTHONDONTWRITEBYTECODE": "1",
        }
        self.lab.env.pop("FILES_APP_DRIVER", None)
        log("migrating")
        subprocess.run(
            [PYTHON, "-m", "django", "migrate", "-v0"], cwd=ROOT, env=self.lab.env, check=True
        )
        os.environ.update(self.lab.env)
        import django

        django.setup()
        from django.contrib.auth import get_user_model

        get_user_model().objects.create_superuser("bench", "bench@example.com", "bench")

    def setup_files(self) -> None:
        from django.core.files.base import File
        from django.db import connections

        from files_app.models import StoredFile
        from files_app.storage import oid_from_name

        disk = self.lab.dir("disk")
        for size in self.plan.sizes:
            log(f"storing the {human(size)} file (StoredFile, public) and its disk copy")

            class Generated(File):  # type: ignore[type-arg]
                total = size

                def chunks(self, chunk_size: int | None = None) -> Iterator[bytes]:
                    yield from client.blocks(self.total)

            name = f"bench-{size}.bin"
            stored = StoredFile(file=Generated(None, name=name), name=name, public=True)
            stored.save()
            digest = hashlib.sha256()
            with open(disk / name, "wb") as out:
                for data in client.blocks(size):
                    out.write(data)
                    digest.update(data)
            (disk / name).chmod(0o644)
            assert stored.size == size and stored.sha256 == digest.hexdigest(), "bad store"
            oid = oid_from_name(stored.file.name)
            assert oid is not None, stored.file.name
            self.files[size] = Stored(size, oid, stored.get_absolute_url(), name, stored.sha256)
        disk.chmod(0o755)
        self.setup_private()
        log("VACUUM ANALYZE and CHECKPOINT")
        with connections["default"].cursor() as cursor:
            cursor.execute("VACUUM ANALYZE")
            cursor.execute("CHECKPOINT")
        connections.close_all()

    def setup_private(self) -> None:
        """A private file (the big one's object, owned by the superuser) and a logged-in
        session for it: the views' path, with auth, for the concurrent ranges."""
        from django.contrib.auth import (
            BACKEND_SESSION_KEY,
            HASH_SESSION_KEY,
            SESSION_KEY,
            get_user_model,
        )
        from django.contrib.sessions.backends.db import SessionStore

        from files_app.models import StoredFile

        user = get_user_model().objects.get(username="bench")
        big = self.files[self.plan.big]
        private = StoredFile(file=str(big.oid), name="private.bin", public=False, owner=user)
        private.save()  # the object's twin row describes it: no hashing
        self.private_path = private.get_absolute_url()
        # The same file by a signed URL (issue 24): the lean path, no session.
        self.signed_path = private.signed_url(user, expires=86400)
        session = SessionStore()
        session[SESSION_KEY] = str(user.pk)
        session[BACKEND_SESSION_KEY] = "django.contrib.auth.backends.ModelBackend"
        session[HASH_SESSION_KEY] = user.get_session_auth_hash()
        session.create()
        self.cookie = f"sessionid={session.session_key}"

    # -- servers ----------------------------------------------------------------------

    def gunicorn(
        self,
        name: str,
        *,
        chunk: int = MiB,
        conn_max_age: int = 60,
        workers: int = 1,
        worker_class: str = "sync",
        threads: int = 1,
        app: str = "bench.wsgi:application",
        lean: bool = False,
    ) -> Server:
        worker_tmp = self.lab.dir("gunicorn-heartbeat")
        args = [
            PYTHON,
            "-m",
            "gunicorn",
            app,
            "--bind=127.0.0.1:{port}",
            f"--workers={workers}",
            f"--worker-class={worker_class}",
            f"--threads={threads}",
            f"--worker-tmp-dir={worker_tmp}",
            "--timeout=900",
            "--graceful-timeout=5",
            "--keep-alive=30",
            "--log-level=warning",
        ]
        env = {"BENCH_CHUNK_SIZE": str(chunk), "BENCH_CONN_MAX_AGE": str(conn_max_age)}
        if lean:
            env["BENCH_LEAN"] = "1"
        return self.lab.start(name, args, env)

    def uvicorn(
        self,
        name: str,
        *,
        chunk: int = MiB,
        pool: bool = True,
        workers: int = 1,
        message_size: int | None = None,
        lean: bool = False,
    ) -> Server:
        args = [
            PYTHON,
            "-m",
            "uvicorn",
            "bench.asgi:application",
            "--host=127.0.0.1",
            "--port={port}",
            "--lifespan=off",
            "--no-access-log",
            "--log-level=warning",
            "--timeout-keep-alive=30",
            "--timeout-graceful-shutdown=5",
        ]
        if workers > 1:
            args.append(f"--workers={workers}")
        # Under ASGI every request runs in a new thread: CONN_MAX_AGE cannot reuse
        # connections (Django advises 0), a pool can.
        env = {"BENCH_CHUNK_SIZE": str(chunk), "BENCH_CONN_MAX_AGE": "0"}
        if pool:
            env["BENCH_POOL"] = "1"
        if message_size:
            env["BENCH_ASGI_MESSAGE_SIZE"] = str(message_size)
        if lean:
            env["BENCH_LEAN"] = "1"
        return self.lab.start(name, args, env)

    def granian(
        self,
        name: str,
        *,
        interface: str = "wsgi",
        chunk: int = MiB,
        workers: int = 2,
        threads: int = 8,
        lean: bool = False,
    ) -> Server:
        """granian (Rust HTTP, issue 24): ``files_app.wsgi``'s handler under its WSGI
        interface (``threads`` blocking threads per worker, as gunicorn gthread's), or
        ``files_app.asgi``'s under its ASGI one (with the async pool, as uvicorn)."""
        app = "bench.wsgi:application" if interface == "wsgi" else "bench.asgi:application"
        args = [
            PYTHON,
            "-m",
            "granian",
            f"--interface={interface}",
            "--host=127.0.0.1",
            "--port={port}",
            f"--workers={workers}",
            "--no-ws",
        ]
        if interface == "wsgi":
            args.append(f"--blocking-threads={threads}")
        args.append(app)
        env = {"BENCH_CHUNK_SIZE": str(chunk)}
        if interface == "wsgi":
            env["BENCH_CONN_MAX_AGE"] = "60"
        else:
            env.update(BENCH_CONN_MAX_AGE="0", BENCH_POOL="1")
        if lean:
            env["BENCH_LEAN"] = "1"
        return self.lab.start(name, args, env)

    def nginx(self) -> Server | None:
        binary = shutil.which("nginx") or next(
            (p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if os.path.exists(p)), None
        )
        if not self.want_nginx or binary is None:
            self.results["nginx"] = "skipped: " + ("--no-nginx" if binary else "not installed")
            log(f"nginx {self.results['nginx']}")
            return None
        version = subprocess.run([binary, "-v"], capture_output=True, text=True).stderr.strip()
        self.results["nginx"] = version
        prefix = self.lab.dir("nginx")
        port = free_port()
        temp_paths = "".join(
            f"  {kind}_temp_path {prefix}/{kind};\n"
            for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
        )
        for temps in (temp_paths, ""):
            config = (
                "daemon off;\nmaster_process on;\nworker_processes 1;\n"
                f"pid {prefix}/nginx.pid;\nerror_log {prefix}/error.log warn;\n"
                "events { worker_connections 1024; }\n"
                "http {\n  access_log off;\n  sendfile on;\n"
                "  default_type application/octet-stream;\n"
                f"{temps}"
                f"  server {{\n    listen 127.0.0.1:{port};\n"
                f"    location /disk/ {{ alias {self.lab.dir('disk')}/; }}\n  }}\n}}\n"
            )
            (prefix / "nginx.conf").write_text(config)
            check = subprocess.run(
                [binary, "-t", "-p", str(prefix), "-c", str(prefix / "nginx.conf")],
                capture_output=True,
                text=True,
            )
            if check.returncode == 0:
                break
        else:
            self.results["nginx"] = f"skipped: configuration refused: {check.stderr.strip()}"
            log(f"nginx {self.results['nginx']}")
            return None
        server = self.lab.start(
            "nginx", [binary, "-p", str(prefix), "-c", str(prefix / "nginx.conf")], {}
        )
        server.port = port
        return server

    def start_servers(self, specs: dict[str, Callable[[], Server | None]]) -> None:
        started = {}
        for key, start in specs.items():
            server = start()
            if server is not None:
                started[key] = server
        for server in started.values():
            server.wait_listening()
        self.servers.update(started)
        for key, server in started.items():
            if key != "nginx":
                self.warm(server)

    def warm(self, server: Server) -> None:
        small = self.files[self.plan.sizes[0]]
        for _ in range(3):
            client.http_request(server.port, small.path)
            client.http_request(
                server.port, self.files[self.plan.big].path, headers={"Range": "bytes=0-65535"}
            )

    def stop(self, key: str) -> None:
        server = self.servers.pop(key)
        self.lab.stop_server(server)

    # -- phases -----------------------------------------------------------------------

    def check_correctness(self) -> None:
        """Every peer serves the right bytes; files_app serves the right ranges."""
        log("checking that every peer serves the same bytes")
        small = self.files[self.plan.sizes[0]]
        big = self.files[self.plan.big]
        for key, server in self.servers.items():
            paths = [f"/disk/{small.disk_name}"] if key in ("nginx", "fileresponse") else []
            if key not in ("nginx", "fileresponse"):
                paths = [small.path]
            for path in paths:
                body = _get(server.port, path)
                assert hashlib.sha256(body).hexdigest() == small.sha256, f"{key}: wrong bytes"
            if key.startswith(("g", "u")):
                offset = big.size - RANGE - 12345
                body = _get(server.port, big.path, {"Range": f"bytes={offset}-"})
                assert body == _expected(offset, big.size - offset), f"{key}: wrong range"
                body = _get(server.port, big.path, {"Range": "bytes=5-9,100-199"})
                parts = (b"bytes 5-9/", _expected(5, 5), _expected(100, 100))
                assert all(part in body for part in parts), f"{key}: wrong multipart"
        self.results["correctness"] = "every peer served the expected SHA-256 and ranges"

    def downloads(self) -> None:
        plan = self.plan
        peers: list[tuple[str, Callable[[Stored], dict[str, Any]]]] = []
        for chunk in plan.chunks:
            c = chunk

            def raw(stored: Stored, c: int = c) -> dict[str, Any]:
                return self.raw_read(stored, c)

            peers.append((f"raw lo_get @{human(c)}", raw))
        peers.append(
            (f"raw lo_get text @{human(MiB)}", lambda s: self.raw_read(s, MiB, text=True))
        )
        for chunk in plan.chunks:
            for kind in ("gunicorn", "uvicorn"):
                key = f"{kind[0]}{chunk}"

                def http(stored: Stored, key: str = key) -> dict[str, Any]:
                    return self.http_get(self.servers[key], stored.path, stored.size)

                peers.append((f"files_app {kind} @{human(chunk)}", http))
        for kind, key in (
            ("gunicorn", "g-lean"),
            ("uvicorn", "u-lean"),
            ("granian WSGI", "gr-lean"),
            ("granian ASGI", "gra-lean"),
        ):
            if key not in self.servers:
                continue

            def lean(stored: Stored, key: str = key) -> dict[str, Any]:
                return self.http_get(self.servers[key], stored.path, stored.size)

            peers.append((f"files_app {kind}, lean path @{human(MiB)}", lean))
        peers.append(
            (
                f"files_app uvicorn @{human(MiB)}, Django's 64 KiB ASGI messages",
                lambda s: self.http_get(self.servers["u-django-messages"], s.path, s.size),
            )
        )
        peers.append(
            (
                "Django FileResponse, gunicorn",
                lambda s: self.http_get(
                    self.servers["fileresponse"], f"/disk/{s.disk_name}", s.size
                ),
            )
        )
        if "nginx" in self.servers:
            peers.append(
                (
                    "nginx (sendfile)",
                    lambda s: self.http_get(self.servers["nginx"], f"/disk/{s.disk_name}", s.size),
                )
            )
        table: dict[str, dict[str, list[float]]] = {name: {} for name, _ in peers}
        for size in plan.sizes:
            stored = self.files[size]
            log(f"full downloads of {human(size)}: {len(peers)} peers × {plan.reps} runs")
            for rep in range(plan.reps):
                # Interleaved: every peer once per round, the order rotated each round.
                order = peers[rep % len(peers) :] + peers[: rep % len(peers)]
                for name, measure in order:
                    if "text" in name and size > 64 * MiB:
                        continue  # one line is enough: text bytea is known to be slow
                    result = measure(stored)
                    if result["errors"]:
                        raise RuntimeError(f"{name}: {result['errors']} failed downloads")
                    rate = result["bytes"] / result["seconds"] / MiB
                    table[name].setdefault(human(size), []).append(rate)
        self.results["downloads"] = table

    def raw_read(self, stored: Stored, chunk: int, text: bool = False) -> dict[str, Any]:
        args = ["raw-read", "--dsn", self.dsn, "--oid", str(stored.oid)]
        args += ["--size", str(stored.size), "--chunk", str(chunk)] + self._repeat(stored.size)
        return run_client(self.lab, *args, *(["--text"] if text else []))

    def http_get(self, server: Server, path: str, size: int) -> dict[str, Any]:
        args = ["http-get", "--port", str(server.port), "--path", path, "--size", str(size)]
        return run_client(self.lab, *args, *self._repeat(size))

    @staticmethod
    def _repeat(size: int) -> list[str]:
        if size <= 4 * MiB:
            return ["--min-seconds", "0.4", "--min-count", "5", "--max-count", "2000"]
        if size <= 64 * MiB:
            return ["--min-seconds", "0.3", "--min-count", "3", "--max-count", "50"]
        return ["--min-count", "1", "--max-count", "1"]

    def ttfb(self) -> None:
        big = self.files[self.plan.big]
        far = big.size - RANGE
        offsets = f"0,{far}"
        log(f"time to first byte of 64 KiB at offsets 0 and {far}")
        results: dict[str, Any] = {}
        targets = [
            ("files_app gunicorn", "g1048576", big.path),
            ("files_app uvicorn", "u1048576", big.path),
            # Public file against private by signed URL, both on the lean path (issue 24).
            ("files_app gunicorn, lean path, public", "g-lean", big.path),
            ("files_app gunicorn, lean path, signed URL", "g-lean", self.signed_path),
            ("files_app uvicorn, lean path, public", "u-lean", big.path),
            ("files_app uvicorn, lean path, signed URL", "u-lean", self.signed_path),
        ]
        if "nginx" in self.servers:
            targets.append(("nginx (disk)", "nginx", f"/disk/{big.disk_name}"))
        for name, key, path in targets:
            server = self.servers[key]
            data = run_client(
                self.lab,
                *["ttfb", "--port", str(server.port), "--path", path, "--offsets", offsets],
                *["--reps", str(self.plan.ttfb_reps)],
            )
            if data["errors"]:
                raise RuntimeError(f"ttfb {name}: {data['errors']} errors")
            results[name] = data["ttfb"]
        data = run_client(
            self.lab,
            *["raw-ttfb", "--dsn", self.dsn, "--oid", str(big.oid), "--offsets", offsets],
            *["--reps", str(self.plan.ttfb_reps)],
        )
        results["raw lo_get (open connection)"] = data["ttfb"]
        self.results["ttfb"] = {
            name: {"0": statistics.median(v["0"]), "far": statistics.median(v[str(far)])}
            for name, v in results.items()
        }
        self.results["ttfb_offset"] = far

    def serving_memory(self) -> None:
        big = self.files[self.plan.big]
        out = {}
        for name, key in (("gunicorn", "g1048576"), ("uvicorn", "u1048576")):
            server = self.servers[key]
            log(f"memory while {name} serves {human(big.size)}")
            self.warm(server)
            (worker,) = server.worker_pids()
            sampler = Sampler(worker, self.pg_port, self.dsn)
            sampler.idle()
            sampler.start()
            try:
                result = self.http_get(server, big.path, big.size)
            finally:
                memory = sampler.finish()
            memory["rate"] = result["bytes"] / result["seconds"] / MiB
            out[name] = memory
        self.results["serving_memory"] = out

    def uploads(self) -> None:
        plan = self.plan
        size = plan.upload_size
        expected = self.files[size].sha256 if size in self.files else _sha256_of(size)
        rates: dict[str, list[float]] = {}
        memory: dict[str, list[dict[str, Any]]] = {}
        temps: dict[str, list[dict[str, Any]]] = {}
        runs = [
            ("admin, gunicorn", "g1048576"),
            ("raw lo_put", "put"),
            ("raw lowrite", "lowrite"),
            ("HTTP + multipart only (sink, gunicorn)", "sink"),
            ("admin, uvicorn", "u1048576"),
        ]
        log(f"uploads of {human(size)}: admin vs raw writes, {plan.upload_reps} rounds")
        for rep in range(plan.upload_reps):
            for name, key in runs:
                if key in ("put", "lowrite"):
                    args = ["raw-write", "--dsn", self.dsn, "--size", str(size), "--mode", key]
                    result = run_client(self.lab, *args, "--chunk", str(MiB))
                elif key == "sink":
                    port = str(self.servers["g1048576"].port)
                    result = run_client(
                        self.lab,
                        "upload",
                        "--port",
                        port,
                        "--size",
                        str(size),
                        "--plain",
                        "/sink/",
                    )
                else:
                    result, mem, tmp = self.admin_upload(key, f"upload-{rep}.bin", expected)
                    memory.setdefault(name, []).append(mem)
                    temps.setdefault(name, []).append(tmp)
                rates.setdefault(name, []).append(result["bytes"] / result["seconds"] / MiB)
        if plan.huge_upload_size:
            huge = plan.huge_upload_size
            log(f"one upload of {human(huge)} through the admin under gunicorn and uvicorn")
            for kind, key in (("gunicorn", "g1048576"), ("uvicorn", "u1048576")):
                name = f"admin, {kind}, {human(huge)}"
                result, mem, tmp = self.admin_upload(
                    key, f"huge-{kind}.bin", _sha256_of(huge), size=huge
                )
                rates[name] = [result["bytes"] / result["seconds"] / MiB]
                memory[name] = [mem]
                temps[name] = [tmp]
        self.results["uploads"] = {"rates": rates, "memory": memory, "temp": temps}

    def admin_upload(
        self, key: str, name: str, expected: str, size: int | None = None
    ) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
        from django.conf import settings
        from django.db import connections

        from files_app.models import StoredFile

        size = size or self.plan.upload_size
        server = self.servers[key]
        self.warm(server)
        (worker,) = server.worker_pids()
        assert server.tmpdir is not None
        watcher = TempWatcher(
            {
                "server TMPDIR": server.tmpdir,
                "FILE_UPLOAD_TEMP_DIR": Path(str(settings.FILE_UPLOAD_TEMP_DIR)),
                "/tmp": Path("/tmp"),
            },
            [worker],
        )
        sampler = Sampler(worker, self.pg_port, self.dsn)
        sampler.idle()
        watcher.start()
        sampler.start()
        try:
            args = ["upload", "--port", str(server.port), "--size", str(size)]
            result = run_client(self.lab, *args, "--name", name)
        finally:
            memory = sampler.finish()
            temp = watcher.finish()
        if result["status"] != 302:
            raise RuntimeError(f"admin upload answered {result['status']}:\n{server.output()}")
        stored = StoredFile.objects.get(name=name)
        if stored.size != size or stored.sha256 != expected:
            raise RuntimeError(f"the upload {name} stored other bytes")
        stored.delete()
        connections.close_all()
        return result, memory, temp

    def ranged(self) -> None:
        plan = self.plan
        big = self.files[plan.big]
        configs: dict[str, Callable[[], Server | None]] = {}
        labels: dict[str, str] = {}
        for label, options in plan.worker_choices:
            key = "c-" + label
            labels[key] = label

            def start(label: str = label, options: dict[str, Any] = options) -> Server:
                return self.gunicorn(label, **options)

            configs[key] = start
        gthread: dict[str, Any] = {"workers": 2, "worker_class": "gthread", "threads": 8}
        labels["c-lean"] = "gunicorn gthread 2×8, lean path (FileServingMiddleware)"
        configs["c-lean"] = lambda: self.gunicorn("gthread lean", lean=True, **gthread)
        labels["c-private"] = "gunicorn gthread 2×8, lean path, private file, session (views)"
        configs["c-private"] = lambda: self.gunicorn("gthread private", lean=True, **gthread)
        labels["c-signed"] = "gunicorn gthread 2×8, lean path, private file, signed URL"
        configs["c-signed"] = lambda: self.gunicorn("gthread signed", lean=True, **gthread)
        labels["c-bare"] = "bare WSGI app, no Django (ceiling), gunicorn gthread 2×8"
        configs["c-bare"] = lambda: self.gunicorn(
            "bare", workers=2, worker_class="gthread", threads=8, app="bench.bare:application"
        )
        if not plan.quick:
            labels["c-conn0"] = "gunicorn gthread 2×8, CONN_MAX_AGE=0"
            configs["c-conn0"] = lambda: self.gunicorn(
                "gthread conn0", workers=2, worker_class="gthread", threads=8, conn_max_age=0
            )
            labels["c-uvicorn"] = "uvicorn ×2 workers, pool"
            configs["c-uvicorn"] = lambda: self.uvicorn("uvicorn x2", workers=2)
            labels["c-uvicorn-lean"] = "uvicorn ×2 workers, lean path (async pool)"
            configs["c-uvicorn-lean"] = lambda: self.uvicorn(
                "uvicorn x2 lean", workers=2, lean=True
            )
            labels["c-uvicorn-private"] = (
                "uvicorn ×2 workers, lean path, private file, session (views)"
            )
            configs["c-uvicorn-private"] = lambda: self.uvicorn(
                "uvicorn x2 private", workers=2, lean=True
            )
            labels["c-uvicorn-signed"] = "uvicorn ×2 workers, lean path, private file, signed URL"
            configs["c-uvicorn-signed"] = lambda: self.uvicorn(
                "uvicorn x2 signed", workers=2, lean=True
            )
            labels["c-uvicorn-nopool"] = "uvicorn ×2 workers, no pool (CONN_MAX_AGE=0)"
            configs["c-uvicorn-nopool"] = lambda: self.uvicorn(
                "uvicorn x2 nopool", workers=2, pool=False
            )
        if not plan.quick or self.ranged_keys is not None:
            # granian under the same 2 workers (issue 24): WSGI with 8 blocking threads
            # each (as gthread 2×8), and ASGI with the async pool (as uvicorn ×2).
            labels["c-granian"] = "granian WSGI 2×8, views"
            configs["c-granian"] = lambda: self.granian("granian wsgi")
            labels["c-granian-lean"] = "granian WSGI 2×8, lean path"
            configs["c-granian-lean"] = lambda: self.granian("granian wsgi lean", lean=True)
            labels["c-granian-signed"] = "granian WSGI 2×8, lean path, private file, signed URL"
            configs["c-granian-signed"] = lambda: self.granian("granian wsgi signed", lean=True)
            labels["c-granian-asgi"] = "granian ASGI ×2 workers, views"
            configs["c-granian-asgi"] = lambda: self.granian("granian asgi", interface="asgi")
            labels["c-granian-asgi-lean"] = "granian ASGI ×2 workers, lean path (async pool)"
            configs["c-granian-asgi-lean"] = lambda: self.granian(
                "granian asgi lean", interface="asgi", lean=True
            )
        if "nginx" in self.servers:
            labels["nginx"] = "nginx (disk)"
        if self.ranged_keys is not None:
            configs = {
                k: v for k, v in configs.items() if k.removeprefix("c-") in self.ranged_keys
            }
            labels = {k: v for k, v in labels.items() if k in configs}
        log(f"starting {len(configs)} server configurations for the concurrent ranges")
        self.start_servers(configs)
        seconds = plan.ranged_seconds
        counts: dict[str, list[dict[str, Any]]] = {}
        keys = ["raw", *labels]
        for key in configs:  # warm every worker up before measuring
            self.ranged_http(self.servers[key], big, 0.5 if plan.quick else 1.0, **self._who(key))
        log(f"{plan.clients} concurrent 64 KiB range readers, {seconds:g} s × {plan.ranged_reps}")
        for rep in range(plan.ranged_reps):
            order = keys[rep % len(keys) :] + keys[: rep % len(keys)]
            for key in order:
                if key == "raw":
                    result = self.ranged_raw(big, seconds)
                else:
                    server = self.servers[key]
                    who = {"path": big.path, **self._who(key)}
                    if key == "nginx":
                        who["path"] = f"/disk/{big.disk_name}"
                    result = self.ranged_http(server, big, seconds, **who)
                counts.setdefault(key, []).append(result)
        for key in configs:
            self.stop(key)
        names = {"raw": f"raw lo_get, {plan.clients} processes", **labels}
        self.results["ranged"] = {names[k]: v for k, v in counts.items()}

    def _who(self, key: str) -> dict[str, str]:
        """The private configurations ask for the private file with a session cookie, the
        signed ones by its signed URL."""
        if key.endswith("private"):
            return {"path": self.private_path, "cookie": self.cookie}
        if key.endswith("signed"):
            return {"path": self.signed_path}
        return {}

    def ranged_http(
        self,
        server: Server,
        big: Stored,
        seconds: float,
        path: str | None = None,
        cookie: str = "",
    ) -> dict[str, Any]:
        args = ["ranged", "--port", str(server.port), "--path", path or big.path]
        args += ["--size", str(big.size), "--clients", str(self.plan.clients)]
        if cookie:
            args += ["--cookie", cookie]
        result = run_client(self.lab, *args, "--seconds", str(seconds), "--keep-alive")
        result["rate"] = result["ok"] / result["seconds"]
        return result

    def ranged_raw(self, big: Stored, seconds: float) -> dict[str, Any]:
        start_at = time.time() + (1.0 if self.plan.quick else 3.0)
        args = [PYTHON, "-m", "bench.client", "raw-ranged", "--dsn", self.dsn]
        args += ["--oid", str(big.oid), "--size", str(big.size), "--seconds", str(seconds)]
        args += ["--start-at", str(start_at)]
        procs = [
            subprocess.Popen(args, cwd=ROOT, env=self.lab.env, stdout=subprocess.PIPE)
            for _ in range(self.plan.clients)
        ]
        self.lab.children.extend(procs)
        ok = errors = 0
        for proc in procs:
            out, _ = proc.communicate(timeout=seconds + 60)
            data = json.loads(out)
            ok += data["ok"]
            errors += data["errors"]
        late = time.time() - start_at - seconds
        return {"ok": ok, "errors": errors, "seconds": seconds, "rate": ok / seconds, "late": late}

    # -- the run ----------------------------------------------------------------------

    def versions(self) -> None:
        import django
        import granian
        import gunicorn  # type: ignore[import-untyped]
        import psycopg
        import uvicorn

        from minicloud.pgserver import find_bindir

        postgres = subprocess.run(
            [str(find_bindir() / "postgres"), "--version"], capture_output=True, text=True
        ).stdout.strip()
        cpu = "?"
        with contextlib.suppress(OSError):
            for line in Path("/proc/cpuinfo").read_text().splitlines():
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
        self.results["machine"] = {
            "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
            "cpu": f"{cpu}, {os.cpu_count()} cores",
            "memory": f"{psutil.virtual_memory().total / GiB:.0f} GiB",
            "kernel": platform.release(),
            "python": platform.python_version(),
            "django": django.get_version(),
            "psycopg": f"{psycopg.__version__} (libpq {psycopg.pq.version()})",
            "gunicorn": gunicorn.__version__,
            "uvicorn": uvicorn.__version__,
            "granian": granian.__version__,
            "postgres": postgres,
            "nginx": self.results.get("nginx", "?"),
        }

    def run(self) -> None:
        started = time.monotonic()
        meter = CpuMeter()
        self.results["cpu"] = meter.phases
        self.setup_database()
        self.setup_files()
        meter.phase("set-up")
        log("starting the servers")
        specs: dict[str, Callable[[], Server | None]] = {}
        for chunk in self.plan.chunks:

            def wsgi(c: int = chunk) -> Server:
                return self.gunicorn(f"gunicorn {human(c)}", chunk=c)

            def asgi(c: int = chunk) -> Server:
                return self.uvicorn(f"uvicorn {human(c)}", chunk=c)

            specs[f"g{chunk}"], specs[f"u{chunk}"] = wsgi, asgi
        specs["g-lean"] = lambda: self.gunicorn(f"gunicorn lean {human(MiB)}", lean=True)
        specs["u-lean"] = lambda: self.uvicorn(f"uvicorn lean {human(MiB)}", lean=True)
        # granian with one worker, as the download peers above (issue 24).
        specs["gr-lean"] = lambda: self.granian(
            f"granian wsgi lean {human(MiB)}", workers=1, lean=True
        )
        specs["gra-lean"] = lambda: self.granian(
            f"granian asgi lean {human(MiB)}", interface="asgi", workers=1, lean=True
        )
        specs["u-django-messages"] = lambda: self.uvicorn(
            "uvicorn 64 KiB messages", message_size=64 * KiB
        )
        self.start_servers(specs)
        self.servers["fileresponse"] = self.servers["g1048576"]
        nginx = self.nginx()
        if nginx is not None:
            nginx.wait_listening()
            self.servers["nginx"] = nginx
        self.versions()
        self.check_correctness()
        meter.phase("servers")
        phases: list[tuple[str, Callable[[], None]]] = [
            ("downloads", self.downloads),
            ("ttfb", self.ttfb),
            ("serving memory", self.serving_memory),
            ("uploads", self.uploads),
            ("concurrent ranges", self.ranged),
        ]
        for name, phase in phases:
            if self.phases is None or name.split()[0] in self.phases:
                phase()
                meter.phase(name)
        self.results["seconds"] = time.monotonic() - started


def _get(port: int, path: str, headers: dict[str, str] | None = None) -> bytes:
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    try:
        conn.request("GET", path, headers=headers or {})
        response = conn.getresponse()
        body = response.read()
        if response.status not in (200, 206):
            raise RuntimeError(f"GET {path}: {response.status} {body[-2000:]!r}")
        return body
    finally:
        conn.close()


def _expected(offset: int, length: int) -> bytes:
    first = offset // MiB
    last = (offset + length - 1) // MiB
    data = b"".join(client.block(i) for i in range(first, last + 1))
    start = offset - first * MiB
    return data[start : start + length]


def _sha256_of(size: int) -> str:
    digest = hashlib.sha256()
    for data in client.blocks(size):
        digest.update(data)
    return digest.hexdigest()


# -- the report --------------------------------------------------------------------------


def med(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def mib(n: float) -> str:
    return f"{n / MiB:.1f} MiB"


def verdict(ok: bool, detail: str) -> str:
    return f"{'met' if ok else '**missed**'} ({detail})"


def report(results: dict[str, Any], plan: Plan) -> str:
    lines: list[str] = []
    add = lines.append
    machine = results.get("machine", {})
    add(f"### {'Quick smoke run' if plan.quick else 'Full run'}, {machine.get('date', '?')}")
    add("")
    versions = ("python", "django", "psycopg", "gunicorn", "uvicorn", "granian")
    for key in ("cpu", "memory", "kernel", *versions):
        add(f"- {key}: {machine.get(key, '?')}")
    add(
        f"- PostgreSQL: {machine.get('postgres', '?')} (throwaway cluster: fsync=off, "
        "synchronous_commit=off, full_page_writes=off, autovacuum off, shared_buffers 128 MB)"
    )
    add(f"- nginx: {results.get('nginx', '?')}")
    add(f"- total time: {results.get('seconds', 0):.0f} s")
    cpu = results.get("cpu", {})
    if cpu:
        add(
            "- CPU used by other processes on the machine (cores, average per phase): "
            + ", ".join(f"{name} {v['other_cores']:.2f}" for name, v in cpu.items())
            + "; the benchmark's own processes: "
            + ", ".join(f"{name} {v['ours_cores']:.2f}" for name, v in cpu.items())
        )
    add("")

    sizes = [human(s) for s in plan.sizes]
    downloads = results.get("downloads", {})
    raw_key = f"raw lo_get @{human(MiB)}"
    if downloads:
        add(
            f"#### Full downloads (MiB/s, median of {plan.reps} interleaved runs; "
            f"× = ratio to `{raw_key}` of the same run)"
        )
        add("")
        add("| peer | " + " | ".join(sizes) + " |")
        add("|---|" + "---|" * len(sizes))
        for name, by_size in downloads.items():
            cells = []
            for label in sizes:
                values = by_size.get(label)
                if not values:
                    cells.append("–")
                    continue
                ratio = med(values) / med(downloads[raw_key][label])
                cells.append(f"{med(values):.0f} ({ratio:.2f}×)")
            add(f"| {name} | " + " | ".join(cells) + " |")
        add("")
    if downloads and len(plan.chunks) > 1:
        for kind in ("raw lo_get", "files_app gunicorn", "files_app uvicorn"):
            by_chunk = {
                c: med(downloads[f"{kind} @{human(c)}"][human(plan.big)]) for c in plan.chunks
            }
            best = max(by_chunk, key=lambda c: by_chunk[c])
            add(
                f"- chunk size, {kind}, {human(plan.big)}: "
                + ", ".join(f"{human(c)} {v:.0f} MiB/s" for c, v in by_chunk.items())
                + f" → best {human(best)}"
            )
        add("")
    ttfb = results.get("ttfb")
    if ttfb:
        far = results["ttfb_offset"]
        add(
            f"#### Time to first byte of a 64 KiB range (ms, median of {plan.ttfb_reps}, "
            "new connection each, offsets interleaved)"
        )
        add("")
        add(f"| peer | offset 0 | offset {far:,} | ratio |")
        add("|---|---|---|---|")
        for name, v in ttfb.items():
            add(
                f"| {name} | {v['0'] * 1e3:.2f} | {v['far'] * 1e3:.2f} | {v['far'] / v['0']:.2f} |"
            )
        add("")
    memory = results.get("serving_memory")
    uploads = results.get("uploads")
    if memory or uploads:
        add(
            f"#### Memory while serving or uploading {human(plan.big)} "
            "(peak minus idle, sampled every 50 ms)"
        )
        add("")
        add(
            "| case | worker RSS | worker anon | PG backend private (RssAnon) | "
            "PG backend USS | PG backend RSS |"
        )
        add("|---|---|---|---|---|---|")
        rows: list[tuple[str, dict[str, Any]]] = []
        for name, m in (memory or {}).items():
            rows.append((f"serving, {name}", m))
        for name, ms in (uploads or {}).get("memory", {}).items():
            worst = max(ms, key=lambda m: m["worker_rss_growth"])
            rows.append((f"upload, {name}", worst))
        for name, m in rows:
            add(
                f"| {name} | {mib(m['worker_rss_growth'])} | {mib(m['worker_anon_growth'])} | "
                f"{mib(m['backend_anon_growth'])} | {mib(m['backend_uss_growth'])} | "
                f"{mib(m['backend_rss_growth'])} |"
            )
        add("")
    if uploads:
        rates = uploads["rates"]
        best_raw = max(med(rates["raw lo_put"]), med(rates["raw lowrite"]))
        sink = med(rates.get("HTTP + multipart only (sink, gunicorn)", []))
        serial = 1 / (1 / sink + 1 / med(rates["raw lo_put"]))
        add(
            f"#### Uploads of {human(plan.upload_size)} (MiB/s, median of "
            f"{plan.upload_reps} interleaved runs; 1 MiB per write)"
        )
        add("")
        add("| path | MiB/s | × best raw write |")
        add("|---|---|---|")
        for name, values in rates.items():
            add(f"| {name} | {med(values):.0f} | {med(values) / best_raw:.2f}× |")
        add("")
        add(
            f"If the admin path costs the HTTP + multipart time plus the `lo_put` time one after "
            f"the other, it runs at 1/(1/{sink:.0f} + 1/{med(rates['raw lo_put']):.0f}) = "
            f"{serial:.0f} MiB/s."
        )
        add("")
        add("Temporary files during the admin uploads:")
        add("")
        for name, runs in uploads["temp"].items():
            written: dict[str, int] = {}
            entries: dict[str, dict[str, int]] = {}
            for run in runs:
                for target, size in run["written"].items():
                    written[target] = max(written.get(target, 0), size)
                for label, found in run["new_entries"].items():
                    entries.setdefault(label, {}).update(found)
            opened = (
                ", ".join(f"`{t}` up to {mib(s)}" for t, s in written.items())
                if written
                else "none"
            )
            dirs = "; ".join(f"{label}: {len(found)} new" for label, found in entries.items())
            add(f"- {name}: files the worker opened for writing: {opened}. New entries: {dirs}.")
        add("")
    ranged = results.get("ranged")
    if ranged:
        raw_name = next(iter(k for k in ranged if k.startswith("raw")))
        raw_rate = med([r["rate"] for r in ranged[raw_name]])
        add(
            f"#### {plan.clients} concurrent clients, random 64 KiB ranges of "
            f"{human(plan.big)}, {plan.ranged_seconds:g} s (median of {plan.ranged_reps})"
        )
        add("")
        add("| peer | requests/s | × raw | errors |")
        add("|---|---|---|---|")
        for name, runs in ranged.items():
            rate = med([r["rate"] for r in runs])
            errors = sum(r["errors"] for r in runs)
            add(f"| {name} | {rate:.0f} | {rate / raw_rate:.2f}× | {errors} |")
        add("")
        choices = {
            label: med([r["rate"] for r in ranged[label]])
            for label, _ in plan.worker_choices
            if label in ranged
        }
        if len(choices) > 1:
            best_choice = max(choices, key=lambda k: choices[k])
            add(
                f"Best gunicorn worker setting measured: **{best_choice}** "
                f"({choices[best_choice]:.0f} req/s)."
            )
            add("")
    add("#### Targets")
    add("")
    for line in targets(results, plan):
        add(f"- {line}")
    add("")
    return "\n".join(lines)


# Issue 13's targets for the 16 concurrent range clients (by a part of the peer's label;
# the others keep issue 7's 0.4×) and for full downloads.
RANGED_GOALS = {"gthread 2×8, lean path (": 0.5, "workers, lean path (": 0.35, "private": 0.25}
# Issue 24: a private file by signed URL against a public one on the same server.
SIGNED_PEERS = {
    "gunicorn gthread 2×8, lean path, private file, signed URL": (
        "gunicorn gthread 2×8, lean path (FileServingMiddleware)"
    ),
    "uvicorn ×2 workers, lean path, private file, signed URL": (
        "uvicorn ×2 workers, lean path (async pool)"
    ),
}
DOWNLOAD_GOALS = [
    (f"files_app gunicorn, lean path @{human(MiB)}", human(MiB), 0.7),
    (f"files_app uvicorn, lean path @{human(MiB)}", human(MiB), 0.6),
    (f"files_app uvicorn, lean path @{human(MiB)}", human(GiB), 0.95),
]


def targets(results: dict[str, Any], plan: Plan) -> list[str]:
    out = []
    downloads = results.get("downloads", {})
    raw_key = f"raw lo_get @{human(MiB)}"
    if downloads:
        for kind in ("gunicorn", "uvicorn"):
            name = f"files_app {kind} @{human(MiB)}"
            parts = []
            ok = True
            for size in plan.sizes:
                label = human(size)
                ratio = med(downloads[name][label]) / med(downloads[raw_key][label])
                ok = ok and ratio >= 0.85
                parts.append(f"{label} {ratio:.2f}×")
            out.append(f"full download ≥ 0.85× raw, {kind}: " + verdict(ok, ", ".join(parts)))
    rows = [(f"serving, {k}", m) for k, m in results.get("serving_memory", {}).items()]
    for name, ms in results.get("uploads", {}).get("memory", {}).items():
        rows.append((f"upload, {name}", max(ms, key=lambda m: m["worker_rss_growth"])))
    for name, m in rows:
        worker_ok = m["worker_rss_growth"] < 16 * MiB
        backend_ok = m["backend_anon_growth"] < 16 * MiB
        out.append(
            f"worker RSS growth < 16 MiB, {name}: "
            + verdict(worker_ok, mib(m["worker_rss_growth"]))
        )
        out.append(
            f"PostgreSQL backend growth < 16 MiB, {name}: "
            + verdict(backend_ok, f"private {mib(m['backend_anon_growth'])}")
        )
    ttfbs = results.get("ttfb", {})
    for name, v in ttfbs.items():
        public = name.replace(", signed URL", ", public")
        if name.endswith("signed URL") and public in ttfbs:
            ratio = v["0"] / ttfbs[public]["0"]
            out.append(
                f"TTFB by signed URL ≤ 1.1× public, {public.removesuffix(', public')}: "
                + verdict(ratio <= 1.1, f"{ratio:.2f}×")
            )
    for name, v in ttfbs.items():
        if name.startswith("files_app"):
            ratio = v["far"] / v["0"]
            out.append(
                f"TTFB at the end ≤ 1.2× TTFB at 0, {name}: "
                + verdict(ratio <= 1.2, f"{ratio:.2f}×")
            )
    ranged = results.get("ranged")
    if ranged:
        raw_name = next(iter(k for k in ranged if k.startswith("raw")))
        raw_rate = med([r["rate"] for r in ranged[raw_name]])
        for name, runs in ranged.items():
            if name.startswith(("raw", "nginx", "bare")):
                continue  # the ceilings
            rate = med([r["rate"] for r in runs])
            ratio = rate / raw_rate
            goal = RANGED_GOALS.get(next((k for k in RANGED_GOALS if k in name), ""), 0.4)
            out.append(f"ranged ≥ {goal}× raw, {name}: " + verdict(ratio >= goal, f"{ratio:.2f}×"))
            public = SIGNED_PEERS.get(name)
            if public in ranged:
                peer = rate / med([r["rate"] for r in ranged[public]])
                out.append(
                    f"ranged by signed URL ≥ 0.9× the public lean path, {name}: "
                    + verdict(peer >= 0.9, f"{peer:.2f}×")
                )
    if downloads:
        for name, label, goal in DOWNLOAD_GOALS:
            if name in downloads and label in downloads[name]:
                ratio = med(downloads[name][label]) / med(downloads[raw_key][label])
                out.append(
                    f"{label} download ≥ {goal}× raw, {name}: "
                    + verdict(ratio >= goal, f"{ratio:.2f}×")
                )
    uploads = results.get("uploads")
    if uploads:
        rates = uploads["rates"]
        best_raw = max(med(rates["raw lo_put"]), med(rates["raw lowrite"]))
        for name in ("admin, gunicorn", "admin, uvicorn"):
            ratio = med(rates[name]) / best_raw
            out.append(
                f"upload ≥ 0.8× raw write, {name}: " + verdict(ratio >= 0.8, f"{ratio:.2f}×")
            )
        for name, runs in uploads["temp"].items():
            written = [t for run in runs for t in run["written"]]
            out.append(
                f"no temporary file, {name}: "
                + verdict(not written, "none written" if not written else ", ".join(written))
            )
    return out


def plot(results: dict[str, Any], plan: Plan, path: Path) -> None:
    try:
        import matplotlib
    except ImportError:
        log("matplotlib is not installed: no plot (pip install -r requirements-dev.txt)")
        return
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    downloads = results.get("downloads", {})
    if not downloads:
        return
    sizes = [human(s) for s in plan.sizes]
    main = [n for n in downloads if f"@{human(MiB)}" in n and "text" not in n]
    main += [n for n in downloads if "@" not in n]
    fig, axes = plt.subplots(1, 2, figsize=(14, 6.5), gridspec_kw={"width_ratios": [3, 2]})
    ax = axes[0]
    width = 0.8 / max(1, len(main))
    for i, name in enumerate(main):
        values = [med(downloads[name].get(label, [])) for label in sizes]
        positions = [x + (i - (len(main) - 1) / 2) * width for x in range(len(sizes))]
        ax.bar(positions, values, width, label=name)
    ax.set_xticks(range(len(sizes)), sizes)
    ax.set_yscale("log")
    ax.set_xlabel("file size")
    ax.set_ylabel("MiB/s (median, log scale)")
    ax.set_title("Full download throughput, 1 MiB chunks")
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=3)
    ax = axes[1]
    big = human(plan.big)
    kinds = ["raw lo_get", "files_app gunicorn", "files_app uvicorn"]
    width = 0.8 / len(kinds)
    for i, kind in enumerate(kinds):
        values = [med(downloads.get(f"{kind} @{human(c)}", {}).get(big, [])) for c in plan.chunks]
        positions = [x + (i - (len(kinds) - 1) / 2) * width for x in range(len(plan.chunks))]
        ax.bar(positions, values, width, label=kind)
    ax.set_xticks(range(len(plan.chunks)), [human(c) for c in plan.chunks])
    ax.set_xlabel("chunk size (FILES_APP_CHUNK_SIZE)")
    ax.set_title(f"Chunk size, {big} file")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run with small files")
    parser.add_argument("--no-nginx", action="store_true", help="leave nginx out")
    parser.add_argument(
        "--output", type=Path, default=RESULTS_DIR, help="where latest.md/json/png go"
    )
    parser.add_argument(
        "--from-json", type=Path, help="only rewrite the report and plot from a latest.json"
    )
    parser.add_argument(
        "--ranged",
        help="concurrent ranges: only these configurations (lean, private, bare, uvicorn-lean…)",
    )
    parser.add_argument(
        "--phases",
        help="comma-separated subset of: downloads, ttfb, serving, uploads, concurrent",
    )
    args = parser.parse_args(argv)
    if args.from_json:
        results = json.loads(args.from_json.read_text())
        plan = Plan.make(bool(results["plan"]["quick"]))
        text = report(results, plan)
        args.output.mkdir(parents=True, exist_ok=True)
        (args.output / "latest.md").write_text(text)
        plot(results, plan, args.output / "throughput.png")
        print(text)
        return 0
    plan = Plan.make(args.quick)
    lab = Lab()
    bench = Bench(plan, lab, nginx=not args.no_nginx)
    if args.phases:
        bench.phases = {p.strip() for p in args.phases.split(",")}
    if args.ranged:
        bench.ranged_keys = {p.strip() for p in args.ranged.split(",")}
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    try:
        bench.run()
    finally:
        log("stopping everything")
        lab.close()
        signal.signal(signal.SIGTERM, previous)
    text = report(bench.results, plan)
    args.output.mkdir(parents=True, exist_ok=True)
    (args.output / "latest.md").write_text(text)
    (args.output / "latest.json").write_text(json.dumps(bench.results, indent=1) + "\n")
    plot(bench.results, plan, args.output / "throughput.png")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())

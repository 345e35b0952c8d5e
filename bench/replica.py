"""Downloads from a hot standby against downloads from the primary, in one run (issue 14).

Run: .venv/bin/python bench/replica.py [--size-mib 256] [--rounds 3] [--seconds 10]

It starts a throwaway primary and a streaming hot standby of it (``PostgresServer`` and
``PostgresServer.standby()``, both ephemeral, on this machine), migrates minicloud, stores one
public file on the primary and waits until the standby has replayed it, then runs two
minicloud servers under gunicorn (its ``gunicorn.conf.py``: gthread, 2 workers × 8
threads): one reading from the primary, one with ``MINICLOUD_REPLICA_URL`` reading from the
standby. Interleaved rounds of whole downloads and of 16 clients asking random 64 KiB
ranges (``bench/client.py``) go to each; medians go to ``bench/results/replica-<date>.md``
and ``.json``. On one machine both databases share its two cores: the figure says what a
standby costs and that it serves at the primary's speed, not what a second machine adds.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
MiB = 2**20


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def store(url: str, size: int) -> tuple[str, str]:
    """Store a public file of ``size`` bytes as StoredFile.save() would; return uuid, sha."""
    import psycopg

    digest, block = hashlib.sha256(), os.urandom(8 * MiB)
    file_uuid = str(uuid.uuid4())
    with psycopg.connect(url) as conn, conn.cursor() as cursor:
        oid = cursor.execute("SELECT lo_create(0)").fetchone()[0]  # type: ignore[index]
        for offset in range(0, size, len(block)):
            piece = block[: size - offset]
            cursor.execute("SELECT lo_put(%s, %s, %b)", (oid, offset, piece))
            digest.update(piece)
        cursor.execute(f"COMMENT ON LARGE OBJECT {int(oid)} IS 'files_app created=0'")
        cursor.execute(
            "INSERT INTO files_app_storedfile (uuid, file, name, content_type, size, sha256, "
            "created, updated, public) VALUES (%s, %s, 'big.bin', 'application/octet-stream', "
            "%s, %s, now(), now(), true)",
            (file_uuid, oid, size, digest.hexdigest()),
        )
    return file_uuid, digest.hexdigest()


def caught_up(primary: str, standby: str) -> None:
    import psycopg

    with psycopg.connect(primary, autocommit=True) as conn:
        target = conn.execute("SELECT pg_current_wal_insert_lsn()::text").fetchone()[0]  # type: ignore[index]
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        with psycopg.connect(standby, autocommit=True) as conn:
            row = conn.execute("SELECT pg_last_wal_replay_lsn() >= %s::pg_lsn", (target,))
            if row.fetchone()[0]:  # type: ignore[index]
                return
        time.sleep(0.1)
    raise RuntimeError("the standby did not catch up")


def migrated_minicloud(url: str) -> dict[str, str]:
    """Migrate minicloud into the database at ``url``; return the environment to run it."""
    env = {
        **os.environ,
        "DATABASE_URL": url,
        "DJANGO_SETTINGS_MODULE": "minicloud.settings",
        "DJANGO_SECRET_KEY": "bench-" + "k" * 40,
        "MINICLOUD_ALLOWED_HOSTS": "127.0.0.1",
        "PYTHONPATH": str(ROOT),
    }
    subprocess.run([PYTHON, "manage.py", "migrate", "-v0"], cwd=ROOT, env=env, check=True)
    return env


def wait_listening(port: int) -> None:
    deadline = time.monotonic() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def client(*args: str) -> dict[str, Any]:
    result = subprocess.run(
        [PYTHON, "-m", "bench.client", *args], cwd=ROOT, capture_output=True, text=True, check=True
    )
    return json.loads(result.stdout)  # type: ignore[no-any-return]


Figures = dict[str, dict[str, list[float]]]


def measure(peers: dict[str, tuple[int, str]], size: int, rounds: int, seconds: float) -> Figures:
    """Interleaved rounds, for each peer (port, path): whole downloads for 5 s, then 16
    clients asking random 64 KiB ranges for ``seconds``."""
    figures: Figures = {name: {"download MiB/s": [], "64 KiB ranges/s": []} for name in peers}
    for round_ in range(rounds):
        log(f"round {round_ + 1} of {rounds}")
        for name, (port, path) in peers.items():
            got = client(
                "http-get", "--port", str(port), "--path", path, "--size", str(size),
                "--min-seconds", "5", "--max-count", "200",
            )  # fmt: skip
            assert not got["errors"], got
            figures[name]["download MiB/s"].append(got["bytes"] / MiB / got["seconds"])
            got = client(
                "ranged", "--port", str(port), "--path", path, "--size", str(size),
                "--seconds", str(seconds),
            )  # fmt: skip
            assert not got["errors"], got
            figures[name]["64 KiB ranges/s"].append(got["ok"] / got["seconds"])
    return figures


def parse_args(doc: str | None) -> argparse.Namespace:
    """The options both scaling benchmarks take."""
    parser = argparse.ArgumentParser(description=(doc or "").splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--no-save", action="store_true")
    return parser.parse_args()


def report(kind: str, lines: list[str], figures: Figures, *, save: bool) -> None:
    """Print the report; with ``save``, write it to bench/results/<kind>-<date>.md/.json."""
    text = "\n".join(lines) + "\n"
    print(text)
    if save:
        stem = ROOT / "bench" / "results" / f"{kind}-{datetime.date.today()}"
        stem.with_suffix(".md").write_text(text)
        stem.with_suffix(".json").write_text(json.dumps(figures, indent=2) + "\n")


def main() -> None:
    args = parse_args(__doc__)
    sys.path.insert(0, str(ROOT))
    from minicloud.pgserver import PostgresServer

    size = args.size_mib * MiB
    servers: list[subprocess.Popen[bytes]] = []
    with tempfile.TemporaryDirectory(prefix="replica-bench-") as tmp:
        os.chmod(tmp, 0o755)
        primary = PostgresServer(Path(tmp) / "primary", ephemeral=True)
        primary.start()
        standby: PostgresServer | None = None
        try:
            primary.ensure_database("minicloud")
            log("making the standby (pg_basebackup -R)")
            standby = primary.standby(Path(tmp) / "standby")
            standby.start()
            env = migrated_minicloud(primary.url("minicloud"))
            log(f"storing {args.size_mib} MiB on the primary")
            file_uuid, _ = store(primary.url("minicloud"), size)
            caught_up(primary.url("minicloud"), standby.url("minicloud"))
            path = f"/files/{file_uuid}/big.bin"
            ports = {}
            for name, extra in (
                ("primary", {}),
                ("standby", {"MINICLOUD_REPLICA_URL": standby.url("minicloud")}),
            ):
                port = ports[name] = free_port()
                servers.append(
                    subprocess.Popen(
                        [PYTHON, "-m", "gunicorn", "minicloud.wsgi", f"--bind=127.0.0.1:{port}"],
                        cwd=ROOT,
                        env={**env, **extra},
                        stdout=subprocess.DEVNULL,
                        stderr=subprocess.DEVNULL,
                        start_new_session=True,
                    )
                )
            for port in ports.values():
                wait_listening(port)
                client("http-get", "--port", str(port), "--path", path, "--size", str(size))
            figures = measure(
                {name: (port, path) for name, port in ports.items()},
                size,
                args.rounds,
                args.seconds,
            )
        finally:
            for server in servers:
                os.killpg(server.pid, signal.SIGTERM)
                server.wait(30)
            if standby is not None:
                standby.stop()
            primary.stop()
    medians = {
        name: {what: statistics.median(values) for what, values in by.items()}
        for name, by in figures.items()
    }
    lines = [
        f"# Downloads from a hot standby ({datetime.date.today()})",
        "",
        f"`bench/replica.py`: one {args.size_mib} MiB public file, minicloud under gunicorn "
        f"(gthread 2×8), medians of {args.rounds} interleaved rounds; primary and standby "
        "on the same 2-core machine.",
        "",
        "| read from | whole downloads, MiB/s | 16 clients × 64 KiB ranges, requests/s |",
        "|---|---|---|",
    ]
    for name, by in medians.items():
        lines.append(f"| {name} | {by['download MiB/s']:.0f} | {by['64 KiB ranges/s']:.0f} |")
    ratio = {
        what: medians["standby"][what] / medians["primary"][what] for what in medians["primary"]
    }
    lines += [
        "",
        f"Standby ÷ primary: downloads {ratio['download MiB/s']:.2f}×, "
        f"ranges {ratio['64 KiB ranges/s']:.2f}×.",
    ]
    report("replica", lines, figures, save=not args.no_save)


if __name__ == "__main__":
    main()

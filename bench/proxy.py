"""nginx's cache in front of files_app, against files_app directly and nginx from disk, in
one run (issue 14).

Run: .venv/bin/python bench/proxy.py [--size-mib 256] [--rounds 3] [--seconds 10]

It starts a throwaway PostgreSQL, migrates minicloud, stores one public file (and writes
the same bytes to disk), then runs minicloud under gunicorn (its ``gunicorn.conf.py``:
gthread, 2 workers × 8 threads) and one nginx (one worker) with two servers: the shipped
``deploy/nginx/minicloud.conf`` in front of gunicorn (the cache warmed by one whole
download first), and a plain ``location`` serving the disk copy with sendfile. Interleaved
rounds of whole downloads and of 16 clients asking random 64 KiB ranges
(``bench/client.py``) go to each; medians go to ``bench/results/proxy-<date>.md`` and
``.json``.
"""

from __future__ import annotations

import datetime
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.replica import (  # noqa: E402
    client,
    free_port,
    log,
    measure,
    migrated_minicloud,
    parse_args,
    report,
    store,
    wait_listening,
)

PYTHON = sys.executable
MiB = 2**20


def main() -> None:
    args = parse_args(__doc__)
    from minicloud.pgserver import PostgresServer
    from tests.nginx import configured

    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    size = args.size_mib * MiB
    processes: list[subprocess.Popen[bytes]] = []
    with tempfile.TemporaryDirectory(prefix="proxy-bench-") as tmp:
        prefix = Path(tmp)
        prefix.chmod(0o755)
        pg = PostgresServer(prefix / "pg", ephemeral=True)
        pg.start()
        try:
            pg.ensure_database("minicloud")
            env = migrated_minicloud(pg.url("minicloud"))
            log(f"storing {args.size_mib} MiB, in PostgreSQL and on disk")
            file_uuid, _ = store(pg.url("minicloud"), size)
            disk = prefix / "disk"
            disk.mkdir()
            disk.chmod(0o755)
            with open(disk / "big.bin", "wb") as out:
                import psycopg

                with psycopg.connect(pg.url("minicloud")) as conn:
                    oid = conn.execute(
                        "SELECT file FROM files_app_storedfile WHERE uuid = %s", (file_uuid,)
                    ).fetchone()[0]  # type: ignore[index]
                    for offset in range(0, size, 8 * MiB):
                        row = conn.execute(
                            "SELECT lo_get(%s, %s, %s)", (oid, offset, 8 * MiB), binary=True
                        ).fetchone()
                        out.write(row[0])  # type: ignore[index]
            (disk / "big.bin").chmod(0o644)
            app_port, proxy_port, disk_port = free_port(), free_port(), free_port()
            processes.append(
                subprocess.Popen(
                    [PYTHON, "-m", "gunicorn", "minicloud.wsgi", f"--bind=127.0.0.1:{app_port}"],
                    cwd=ROOT,
                    env=env,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                    start_new_session=True,
                )
            )
            temps = []
            for kind in ("cache", "client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
                (prefix / kind).mkdir()
                (prefix / kind).chmod(0o777)
                if kind != "cache":
                    temps.append(f"    {kind}_temp_path {prefix / kind};")
            (prefix / "minicloud.conf").write_text(
                configured(app_port, proxy_port, prefix / "cache")
            )
            (prefix / "nginx.conf").write_text(
                "daemon off;\nmaster_process on;\nworker_processes 1;\n"
                f"pid {prefix}/nginx.pid;\nerror_log {prefix}/error.log warn;\n"
                "events { worker_connections 1024; }\nhttp {\n    access_log off;\n"
                "    sendfile on;\n    default_type application/octet-stream;\n"
                + "\n".join(temps)
                + f"\n    include {prefix}/minicloud.conf;\n"
                f"    server {{\n        listen 127.0.0.1:{disk_port};\n"
                f"        location /disk/ {{ alias {disk}/; }}\n    }}\n}}\n"
            )
            processes.append(
                subprocess.Popen(
                    [nginx, "-p", str(prefix), "-c", str(prefix / "nginx.conf")],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                    start_new_session=True,
                )
            )
            for port in (app_port, proxy_port, disk_port):
                wait_listening(port)
            path = f"/files/{file_uuid}/big.bin"
            peers = {
                "files_app (gunicorn), directly": (app_port, path),
                "nginx cache in front of files_app (hits)": (proxy_port, path),
                "nginx from disk (sendfile)": (disk_port, "/disk/big.bin"),
            }
            log("warming: one whole download each (fills nginx's cache)")
            for port, where in peers.values():
                got = client("http-get", "--port", str(port), "--path", where, "--size", str(size))
                assert not got["errors"], got
            figures = measure(peers, size, args.rounds, args.seconds)
        finally:
            for process in processes:
                os.killpg(process.pid, signal.SIGTERM)
                process.wait(30)
            pg.stop()
    medians = {
        name: {what: statistics.median(values) for what, values in by.items()}
        for name, by in figures.items()
    }
    direct = medians["files_app (gunicorn), directly"]
    lines = [
        f"# nginx's cache in front of files_app ({datetime.date.today()})",
        "",
        f"`bench/proxy.py`: one {args.size_mib} MiB public file, medians of {args.rounds} "
        "interleaved rounds; nginx 1 worker, gunicorn gthread 2×8, one 2-core machine.",
        "",
        "| peer | whole downloads, MiB/s | × direct | 16 clients × 64 KiB ranges, req/s "
        "| × direct |",
        "|---|---|---|---|---|",
    ]
    for name, by in medians.items():
        lines.append(
            f"| {name} | {by['download MiB/s']:.0f} | "
            f"{by['download MiB/s'] / direct['download MiB/s']:.2f}× | "
            f"{by['64 KiB ranges/s']:.0f} | "
            f"{by['64 KiB ranges/s'] / direct['64 KiB ranges/s']:.2f}× |"
        )
    report("proxy", lines, figures, save=not args.no_save)


if __name__ == "__main__":
    main()

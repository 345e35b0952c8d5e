"""Move a 1 GiB stored file to S3 (moto's emulator on 127.0.0.1) and back with files_move;
report throughput and peak RSS growth of the process running the command.

Run: .venv/bin/python bench/move_memory.py [--size-mib 1024] [--driver psycopg|psycopg2]
Uses the test settings on a PostgreSQL server of its own (or DATABASE_URL's). moto keeps the
bucket in its own process's memory: only this process's memory is measured.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MiB = 2**20


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--driver", choices=["psycopg", "psycopg2"], default="psycopg")
    args = parser.parse_args()
    os.environ["FILES_APP_DRIVER"] = args.driver
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")
    sys.path.insert(0, str(ROOT))
    with contextlib.ExitStack() as stack:
        if "DATABASE_URL" not in os.environ:
            from minicloud.pgserver import PostgresServer

            tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="files-app-bench-"))
            os.chmod(tmp, 0o755)  # as root without user namespaces, "nobody" runs it
            server = PostgresServer(Path(tmp) / "data", ephemeral=True)
            server.start()
            stack.callback(server.stop)
            server.ensure_database("bench")
            os.environ["DATABASE_URL"] = server.url("bench")
        measure(args)


def measure(args: argparse.Namespace) -> None:

    import django
    from django.conf import settings

    from tests.moto import BUCKET, CREDENTIALS, running_moto

    django.setup()
    from django.core.management import call_command
    from django.db import connection
    from django.test import override_settings

    from files_app.models import StoredFile

    test_db = connection.creation.create_test_db(verbosity=0)
    workdir = Path(tempfile.mkdtemp(prefix="files-app-bench-"))
    try:
        with running_moto() as moto:
            os.environ.update(CREDENTIALS)
            s3 = {
                "BACKEND": "storages.backends.s3.S3Storage",
                "OPTIONS": {"bucket_name": BUCKET, "endpoint_url": moto.url},
            }
            # override_settings: Django's storages forget what they had loaded.
            override_settings(STORAGES={**settings.STORAGES, "s3": s3}).enable()
            source = workdir / "bench.bin"
            with source.open("wb") as f:
                for _ in range(args.size_mib):
                    f.write(os.urandom(MiB))
            total = args.size_mib * MiB
            quiet = {"stdout": io.StringIO(), "stderr": io.StringIO()}
            call_command("files_import", str(source), **quiet)
            source.unlink()
            connection.ensure_connection()
            baseline = peak_rss_mib()

            started = time.perf_counter()
            call_command("files_move", "--to", "s3", **quiet)
            out_seconds = time.perf_counter() - started
            after_out = peak_rss_mib()
            assert StoredFile.objects.get().storage == "s3"

            started = time.perf_counter()
            call_command("files_move", "--to", "large-objects", **quiet)
            back_seconds = time.perf_counter() - started
            after_back = peak_rss_mib()
            assert StoredFile.objects.get().size == total
            StoredFile.objects.all().delete()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
        connection.creation.destroy_test_db(test_db, verbosity=0)
    # Each byte is read twice by a move: copied, then read back to check its SHA-256.
    print(
        f"driver={args.driver} size={args.size_mib} MiB "
        f"to S3 {total / MiB / out_seconds:.0f} MB/s, back {total / MiB / back_seconds:.0f} MB/s "
        f"(copy and check); peak RSS growth: to S3 {after_out - baseline:.1f} MiB, "
        f"back {after_back - baseline:.1f} MiB (baseline {baseline:.1f} MiB)"
    )


if __name__ == "__main__":
    main()

"""Import a 1 GiB file with files_import and export it with files_export; report peak RSS growth.

Run: .venv/bin/python bench/import_export_memory.py [--size-mib 1024] [--driver psycopg|psycopg2]
Uses the test settings (a throwaway PostgreSQL unless DATABASE_URL is set) with
FILES_APP_CHUNK_SIZE at its default, 1 MiB, unless --chunk-kib says otherwise.
"""

from __future__ import annotations

import argparse
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
    parser.add_argument("--chunk-kib", type=int, default=1024)
    parser.add_argument("--driver", choices=["psycopg", "psycopg2"], default="psycopg")
    args = parser.parse_args()
    os.environ["FILES_APP_DRIVER"] = args.driver
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")
    sys.path.insert(0, str(ROOT))

    import django
    from django.conf import settings

    # Before setup: the default storage reads it when the models are loaded.
    settings.FILES_APP_CHUNK_SIZE = args.chunk_kib * 1024
    django.setup()
    from django.core.management import call_command
    from django.db import connection

    from files_app.models import StoredFile

    test_db = connection.creation.create_test_db(verbosity=0)
    workdir = Path(tempfile.mkdtemp(prefix="files-app-bench-"))
    try:
        source = workdir / "bench.bin"
        with source.open("wb") as f:
            for _ in range(args.size_mib):
                f.write(os.urandom(MiB))
        total = args.size_mib * MiB

        connection.ensure_connection()
        baseline = peak_rss_mib()
        out = io.StringIO()
        started = time.perf_counter()
        call_command("files_import", str(source), stdout=out, stderr=io.StringIO())
        import_seconds = time.perf_counter() - started
        after_import = peak_rss_mib()
        uuid = out.getvalue().split()[0]

        started = time.perf_counter()
        quiet = {"stdout": io.StringIO(), "stderr": io.StringIO()}
        call_command("files_export", str(workdir / "out"), "--uuid", uuid, **quiet)
        export_seconds = time.perf_counter() - started
        after_export = peak_rss_mib()
        assert (workdir / "out" / "bench.bin").stat().st_size == total
        StoredFile.objects.all().delete()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
        connection.creation.destroy_test_db(test_db, verbosity=0)
    print(
        f"driver={args.driver} size={args.size_mib} MiB chunk={args.chunk_kib} KiB "
        f"import={total / MiB / import_seconds:.0f} MB/s "
        f"export={total / MiB / export_seconds:.0f} MB/s "
        f"peak RSS growth: import {after_import - baseline:.1f} MiB, "
        f"export {after_export - baseline:.1f} MiB (baseline {baseline:.1f} MiB)"
    )


if __name__ == "__main__":
    main()

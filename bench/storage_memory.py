"""Store a 1 GiB file through LargeObjectStorage and read it back; report peak RSS growth.

Run: .venv/bin/python bench/storage_memory.py [--size-mib 1024] [--driver psycopg|psycopg2]
Uses the test settings: a throwaway PostgreSQL unless DATABASE_URL is set.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import os
import resource
import sys
import time
from collections.abc import Iterator
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

    import django

    django.setup()
    from django.core.files.base import File
    from django.core.management import call_command
    from django.db import connection

    from files_app.storage import LargeObjectStorage

    test_db = connection.creation.create_test_db(verbosity=0)
    call_command("check", verbosity=0)
    storage = LargeObjectStorage(chunk_size=MiB)
    block = os.urandom(MiB)
    total = args.size_mib * MiB

    class Generated(File):  # type: ignore[type-arg]
        def chunks(self, chunk_size: int | None = None) -> Iterator[bytes]:
            for _ in range(args.size_mib):
                yield block

    connection.ensure_connection()
    baseline = peak_rss_mib()
    started = time.perf_counter()
    name = storage.save("bench.bin", Generated(io.BytesIO(), name="bench.bin"))
    write_seconds = time.perf_counter() - started
    after_write = peak_rss_mib()
    digest = hashlib.sha256()
    started = time.perf_counter()
    with storage.open(name) as f:
        for chunk in f.chunks():
            digest.update(chunk)
    read_seconds = time.perf_counter() - started
    after_read = peak_rss_mib()
    storage.delete(name)
    connection.creation.destroy_test_db(test_db, verbosity=0)
    print(
        f"driver={args.driver} size={args.size_mib} MiB "
        f"write={total / MiB / write_seconds:.0f} MB/s read={total / MiB / read_seconds:.0f} MB/s "
        f"peak RSS growth: write {after_write - baseline:.1f} MiB, "
        f"read {after_read - baseline:.1f} MiB (baseline {baseline:.1f} MiB)"
    )


if __name__ == "__main__":
    main()

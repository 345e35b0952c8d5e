"""What the size of the catalogue costs: lookups, the admin change list, files_stats,
files_sweep --dry-run and the quota checks of an upload (files_app.quotas), measured with
1,000 and with 1,000,000 stored files.

Run: .venv/bin/python bench/catalogue.py [--sizes 1000,1000000] [--rounds 15]

It starts its own throwaway PostgreSQL (``minicloud.pgserver``, ephemeral), migrates, and
grows one catalogue from the smallest size to the largest: each stored file is a real
large object of 16 bytes made by files_app's rules (tagged as files_app's, its row's size
and SHA-256 true to it; the size trigger checks every row), half of them public, four
content types, one a second apart; one object in a hundred is referenced by nothing (what
the sweeper finds). The first 1,000 rows belong to the benchmark's user (whose stored bytes
a quota check adds up). Every figure is the median of ``--rounds`` timings taken in this process
through Django's test client (the whole middleware stack, the lean path on) or
``call_command``; the report goes to ``bench/results/catalogue-<date>.md`` and ``.json``.
"""

from __future__ import annotations

import argparse
import datetime
import io
import json
import os
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
BATCH = 20_000  # rows per statement
TAGS = 2_000  # COMMENTs per transaction: each holds a lock until commit
CONTENT_TYPES = ["text/plain", "image/png", "video/mp4", "application/pdf"]

# The rows and their objects, made in SQL in batches: the same rules as save() (the size
# trigger refuses a row whose size is not its object's).
POPULATE = """
WITH made AS (
    SELECT i, lo_from_bytea(0, convert_to(lpad(i::text, 16, '0'), 'UTF8')) AS oid
    FROM generate_series(%(first)s, %(last)s) AS i
)
INSERT INTO files_app_storedfile
    (uuid, file, name, content_type, size, sha256, created, updated, public, owner_id)
SELECT gen_random_uuid(), oid, 'file-' || i || '.txt', (%(types)s::text[])[1 + i %% 4], 16,
       encode(sha256(convert_to(lpad(i::text, 16, '0'), 'UTF8')), 'hex'),
       %(epoch)s::timestamptz + i * interval '1 second',
       %(epoch)s::timestamptz + i * interval '1 second', i %% 2 = 0, NULL
FROM made WHERE i %% 100 <> 0
"""
# files_app's tag on every object made above (COMMENT takes no parameters: a loop).
TAG = """
DO $$
DECLARE o oid;
BEGIN
    FOR o IN SELECT unnest(%s::oid[]) LOOP
        EXECUTE format('COMMENT ON LARGE OBJECT %%s IS %%L', o,
                       'files_app created=' || (extract(epoch FROM now()) - 86400)::text);
    END LOOP;
END
$$
"""


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def median_ms(action: Callable[[], Any], rounds: int) -> float:
    action()  # warm: plans, caches, the first connection
    timings = []
    for _ in range(rounds):
        started = time.perf_counter()
        action()
        timings.append((time.perf_counter() - started) * 1000)
    return statistics.median(timings)


class Catalogue:
    def __init__(self, rounds: int) -> None:
        from django.contrib.auth import get_user_model
        from django.test import Client

        self.rounds = rounds
        self.rows = 0
        self.admin = Client()
        user = get_user_model().objects.create_superuser("bench", "bench@example.com", "bench")
        self.user = user
        self.admin.force_login(user)
        self.anonymous = Client()

    def grow(self, total: int) -> None:
        from django.db import connection

        log(f"growing the catalogue to {total:,} files")
        with connection.cursor() as cursor:
            while self.rows < total:
                first, last = self.rows + 1, min(total, self.rows + BATCH)
                cursor.execute("SELECT coalesce(max(oid), 0) FROM pg_largeobject_metadata")
                before = cursor.fetchone()[0]
                cursor.execute(
                    POPULATE,
                    {
                        "first": first,
                        "last": last,
                        "types": CONTENT_TYPES,
                        "epoch": "2020-01-01T00:00:00Z",
                    },
                )
                cursor.execute(
                    "SELECT oid FROM pg_largeobject_metadata WHERE oid > %s ORDER BY oid", [before]
                )
                made = [row[0] for row in cursor.fetchall()]
                for start in range(0, len(made), TAGS):
                    cursor.execute(TAG, [made[start : start + TAGS]])
                self.rows = last
            cursor.execute(
                "UPDATE files_app_storedfile SET owner_id = %s WHERE id <= 1000", [self.user.pk]
            )
            cursor.execute("VACUUM ANALYZE")
            cursor.execute("CHECKPOINT")

    def sample(self, public: bool, count: int = 200) -> list[str]:
        from files_app.models import StoredFile

        ids = random.sample(range(1, self.rows + 1), min(count * 3, self.rows))
        files = StoredFile.objects.filter(pk__in=ids, public=public).order_by("?")[:count]
        return [stored.get_absolute_url() for stored in files]

    def download(self, client: Any, urls: list[str]) -> Callable[[], None]:
        picks = iter(random.choices(urls, k=10_000))

        def fetch() -> None:
            response = client.get(next(picks), headers={"range": "bytes=2-9"})
            body = b"".join(response.streaming_content)
            assert response.status_code == 206 and len(body) == 8, response

        return fetch

    def page(self, query: str) -> Callable[[], None]:
        def fetch() -> None:
            response = self.admin.get(f"/admin/files_app/storedfile/{query}")
            assert response.status_code == 200, response
            assert b"files-app-totals" in response.content

        return fetch

    def command(self, *args: str) -> Callable[[], None]:
        from django.core.management import call_command

        def run() -> None:
            call_command(*args, stdout=io.StringIO())

        return run

    def quota_check(self, **limits: int) -> Callable[[], None]:
        from django.test import override_settings

        from files_app import quotas

        def check() -> None:
            with override_settings(**limits):
                quotas.check(self.user, 1)

        return check

    def measure(self) -> dict[str, float]:
        log(f"measuring at {self.rows:,} files")
        start = datetime.datetime(2020, 1, 1, tzinfo=datetime.UTC)
        last_day = (start + datetime.timedelta(seconds=self.rows - 86400)).date()
        figures = {
            "download, public file (lean path), 8-byte range": self.download(
                self.anonymous, self.sample(public=True)
            ),
            "download, private file (views, logged in), 8-byte range": self.download(
                self.admin, self.sample(public=False)
            ),
            "change list": self.page(""),
            "change list, filtered: public": self.page("?public__exact=1"),
            "change list, filtered: content type": self.page("?content_type=video%2Fmp4"),
            "change list, filtered: one day": self.page(
                f"?created__gte={last_day}%2000:00:00%2B00:00&created__lt=2100-01-01%2000:00:00%2B00:00"
            ),
            "change list, second page": self.page("?p=2"),
            "change list, search by name": self.page(f"?q=file-{self.rows // 2}.txt"),
            # What an upload's check costs (admin upload, tus creation, each PATCH).
            "quota check, user's quota (1,000 files of theirs)": self.quota_check(
                FILES_APP_USER_QUOTA=2**50
            ),
            "quota check, the site's cap (every row)": self.quota_check(
                FILES_APP_TOTAL_QUOTA=2**50
            ),
            "files_stats": self.command("files_stats"),
            # The whole inventory (--unreferenced): what the default sweep was before 2026-12-06.
            "files_sweep --dry-run": self.command(
                "files_sweep", "--unreferenced", "--dry-run", "--grace", "0"
            ),
        }
        results = {}
        for name, action in figures.items():
            heavy = "files_" in name or "cap" in name
            rounds = self.rounds if not heavy else max(3, self.rounds // 5)
            results[name] = median_ms(action, rounds)
            log(f"  {name}: {results[name]:.1f} ms")
        return results


def report(sizes: list[int], results: dict[int, dict[str, float]], versions: str) -> str:
    small, big = sizes[0], sizes[-1]
    lines = [
        f"# Catalogue scale ({datetime.date.today()})",
        "",
        f"`bench/catalogue.py`, {versions}. Median milliseconds per request or command.",
        "",
        f"| figure | {small:,} files | {big:,} files | ratio |",
        "|---|---|---|---|",
    ]
    for name in results[small]:
        a, b = results[small][name], results[big][name]
        lines.append(f"| {name} | {a:.1f} | {b:.1f} | {b / a:.2f}× |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,1000000")
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--no-save", action="store_true", help="Print the report only.")
    args = parser.parse_args()
    sizes = sorted(int(size) for size in args.sizes.split(","))
    sys.path.insert(0, str(ROOT))
    from minicloud.pgserver import PostgresServer

    with tempfile.TemporaryDirectory(prefix="catalogue-") as tmp:
        pg = PostgresServer(Path(tmp) / "data", ephemeral=True)
        pg.start()
        try:
            pg.ensure_database("catalogue")
            pg.psql("-c", "ALTER SYSTEM SET autovacuum = off")
            pg.psql("-c", "SELECT pg_reload_conf()")
            os.environ.update(
                DATABASE_URL=pg.url("catalogue"),
                DJANGO_SETTINGS_MODULE="bench.settings",
                BENCH_LEAN="1",
                BENCH_CONN_MAX_AGE="600",
            )
            import django

            django.setup()
            from django.core.management import call_command

            call_command("migrate", verbosity=0)
            catalogue = Catalogue(args.rounds)
            results = {}
            for size in sizes:
                catalogue.grow(size)
                results[size] = catalogue.measure()
            from django.db import connection

            number = connection.cursor().connection.info.server_version
            versions = (
                f"PostgreSQL {number // 10000}.{number % 10000}, Django {django.get_version()}"
            )
        finally:
            pg.stop()
    text = report(sizes, results, versions)
    print(text)
    if not args.no_save:
        stem = RESULTS / f"catalogue-{datetime.date.today()}"
        stem.with_suffix(".md").write_text(text)
        stem.with_suffix(".json").write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()

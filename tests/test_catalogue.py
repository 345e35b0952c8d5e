"""Counts and choices whose cost does not grow with the catalogue (files_app.catalogue) and
the admin change list built on them. bench/catalogue.py measures them at a million files;
here the thresholds are lowered so that a few thousand rows cross them."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import User
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from files_app import catalogue
from files_app.models import StoredFile

pytestmark = pytest.mark.django_db

CHANGE_LIST = "/admin/files_app/storedfile/"
TYPES = ["application/pdf", "image/png", "text/plain", "video/mp4"]


def _populate(rows: int) -> None:
    """Store ``rows`` files of 16 bytes, as bench/catalogue.py does (real objects)."""
    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO files_app_storedfile (uuid, file, name, content_type, size, sha256, "
            "created, updated, public) "
            "SELECT gen_random_uuid(), lo_from_bytea(0, convert_to(lpad(i::text, 16), 'UTF8')), "
            "'file-' || i, (%s::text[])[1 + i %% 4], 16, '', now(), now(), i %% 2 = 0 "
            "FROM generate_series(1, %s) AS i",
            [TYPES, rows],
        )
        cursor.execute("ANALYZE files_app_storedfile")


@pytest.fixture
def big(monkeypatch: pytest.MonkeyPatch) -> int:
    """3,000 files, with "small" meaning at most 100 rows and samples of 1,500 rows."""
    monkeypatch.setattr(catalogue, "EXACT_UP_TO", 100)
    monkeypatch.setattr(catalogue, "SAMPLE_ROWS", 1500)
    _populate(3000)
    return 3000


def test_small_selections_are_counted_exactly() -> None:
    _populate(30)
    assert catalogue.totals(StoredFile.objects.all()) == catalogue.Totals(30, 480)
    public = StoredFile.objects.filter(public=True)
    assert catalogue.totals(public) == catalogue.Totals(15, 240)
    assert catalogue.totals(StoredFile.objects.filter(pk__in=[])) == catalogue.Totals(0, 0)


def test_large_selections_are_estimated_from_a_sample(big: int) -> None:
    with CaptureQueriesContext(connection) as queries:
        totals = catalogue.totals(StoredFile.objects.all())
    assert totals.estimated
    assert 0.6 * big < totals.files < 1.4 * big
    assert totals.bytes == pytest.approx(16 * totals.files, abs=16)
    assert not any(
        "count(*)" in q["sql"].lower() and "TABLESAMPLE" not in q["sql"] for q in queries
    )
    # Repeatable: the same figures on every reload.
    assert catalogue.totals(StoredFile.objects.all()) == totals
    public = catalogue.totals(StoredFile.objects.filter(public=True))
    assert public.estimated and 0.6 * big / 2 < public.files < 1.4 * big / 2


def test_a_sample_that_finds_the_selection_small_gives_way_to_the_exact_count(
    big: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The planner expects many rows (patched here), the sample finds few: count them.
    monkeypatch.setattr(catalogue, "_planned_rows", lambda queryset: 1e9)
    few = StoredFile.objects.filter(name__in=["file-1", "file-2", "file-3"])
    assert catalogue.totals(few) == catalogue.Totals(3, 48)


def test_distinct_values_are_found_in_order_with_a_limit() -> None:
    _populate(40)
    assert catalogue.distinct_values(StoredFile, "content_type") == TYPES
    assert catalogue.distinct_values(StoredFile, "content_type", limit=2) == TYPES[:2]
    assert catalogue.distinct_values(StoredFile, "public") == [False, True]


def test_change_list_estimates_a_large_catalogue(client: Client, big: int) -> None:
    with CaptureQueriesContext(connection) as queries:
        page = client.get(CHANGE_LIST).content.decode()
    assert "About " in page and "estimated from a sample" in page
    sql = " ".join(q["sql"] for q in queries)
    assert "SELECT DISTINCT" not in sql  # neither the date hierarchy nor the filter
    assert 'COUNT(*) AS "__count"' not in sql  # no full count either
    for content_type in TYPES:  # the filter still offers every type
        assert f"content_type={content_type.replace('/', '%2F')}" in page
    filtered = client.get(CHANGE_LIST, {"content_type": "video/mp4", "q": "file-12"}).content
    assert b"About" not in filtered and b"for this selection." in filtered


@pytest.fixture
def client(admin_user: User) -> Client:
    client = Client()
    client.force_login(admin_user)
    return client

"""Counts and choices for browsing a large catalogue at a cost that does not grow with it.

An exact ``COUNT``/``SUM`` or a ``SELECT DISTINCT`` reads every row: at a million stored
files that is what an admin page spends its time on (bench/catalogue.py). Here a selection
the planner expects to be small is counted exactly; a large one is estimated from a fixed-size
sample of the table's pages, and the distinct values of an indexed column are found with
one index probe per value (PostgreSQL's "loose index scan").

Internal to files_app, not part of its public API (docs/reference.md, "Public API").
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from django.core.exceptions import EmptyResultSet
from django.db import connections
from django.db.models import Count, Field, Model, QuerySet, Sum

# Selections the planner expects to have at most this many rows are counted exactly.
EXACT_UP_TO = 10_000
# Rows a sample of a large table reads, whatever its size.
SAMPLE_ROWS = 20_000


@dataclasses.dataclass(frozen=True)
class Totals:
    """How many rows a selection has and the sum of their ``size``; maybe an estimate."""

    files: int
    bytes: int
    estimated: bool = False


def totals(queryset: QuerySet[Any], *, size: str = "size") -> Totals:
    """Return the number of rows of ``queryset`` and the sum of their ``size`` column.

    Exact when the planner expects at most ``EXACT_UP_TO`` rows (or the table has never
    been analysed); otherwise estimated from a ``TABLESAMPLE SYSTEM`` of about
    ``SAMPLE_ROWS`` rows, repeatable, so that the figures do not change between reloads.
    A sample that finds the selection small after all is replaced by the exact figures.
    """
    queryset = queryset.order_by()
    try:
        planned = _planned_rows(queryset)
    except EmptyResultSet:  # a filter no row can match (pk__in=[])
        return Totals(0, 0)
    if planned > EXACT_UP_TO:
        estimate = _sampled(queryset, size)
        if estimate is not None and estimate.files > EXACT_UP_TO:
            return estimate
    exact = queryset.aggregate(files=Count("pk"), bytes=Sum(size))
    return Totals(exact["files"], exact["bytes"] or 0)


def _planned_rows(queryset: QuerySet[Any]) -> float:
    sql, params = queryset.values("pk").query.sql_with_params()
    with connections[queryset.db].cursor() as cursor:
        cursor.execute(f"EXPLAIN (FORMAT JSON) {sql}", params)
        plan = cursor.fetchone()[0]
    if isinstance(plan, str):  # the drivers parse json, unless told otherwise
        plan = json.loads(plan)
    return float(plan[0]["Plan"]["Plan Rows"])


def _sampled(queryset: QuerySet[Any], size: str) -> Totals | None:
    connection = connections[queryset.db]
    table = connection.ops.quote_name(queryset.model._meta.db_table)
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT reltuples FROM pg_catalog.pg_class WHERE oid = %s::regclass", [table]
        )
        row = cursor.fetchone()
        rows = float(row[0]) if row else -1.0
        if rows <= SAMPLE_ROWS:  # small, or never analysed (-1): count it
            return None
        percent = 100.0 * SAMPLE_ROWS / rows
        sql, params = queryset.values(size).query.sql_with_params()
        source = f"FROM {table}"
        # The queryset's own table is the first FROM of its SQL; joins come after it.
        sampled = sql.replace(
            source, f"{source} TABLESAMPLE SYSTEM ({percent:.6f}) REPEATABLE (0)", 1
        )
        cursor.execute(
            f"SELECT count(*), coalesce(sum(s.{connection.ops.quote_name(size)}), 0) "
            f"FROM ({sampled}) AS s",
            params,
        )
        files, total = cursor.fetchone()
    scale = 100.0 / percent
    return Totals(round(files * scale), round(float(total) * scale), estimated=True)


def distinct_values(
    model: type[Model], field: str, *, using: str = "default", limit: int = 500
) -> list[Any]:
    """Return the distinct non-null values of ``model.field`` in order (at most ``limit``).

    One index probe per value, so the column needs a B-tree index (``db_index=True``):
    the cost grows with the number of values, not of rows.
    """
    connection = connections[using]
    qn = connection.ops.quote_name
    concrete = model._meta.get_field(field)
    assert isinstance(concrete, Field) and concrete.column, f"{field} is not a column"
    table, column = qn(model._meta.db_table), qn(concrete.column)
    sql = (
        f"WITH RECURSIVE v(value) AS ("
        f"(SELECT {column} FROM {table} WHERE {column} IS NOT NULL ORDER BY 1 LIMIT 1) "
        f"UNION ALL SELECT (SELECT {column} FROM {table} WHERE {column} > v.value "
        f"ORDER BY 1 LIMIT 1) FROM v WHERE v.value IS NOT NULL) "
        f"SELECT value FROM v WHERE value IS NOT NULL LIMIT %s"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, [limit])
        return [row[0] for row in cursor.fetchall()]

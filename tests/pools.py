"""A second alias of the test database through Django's connection pool (psycopg 3)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from django.db import connections


@contextmanager
def pooled_alias(health_checks: bool, min_size: int = 2) -> Iterator[Any]:
    """Add the alias "pooled": the test database through Django's pool (psycopg 3)."""
    settings_dict = dict(connections.settings["default"])
    settings_dict.update(CONN_HEALTH_CHECKS=health_checks, CONN_MAX_AGE=0)
    settings_dict["OPTIONS"] = {**settings_dict["OPTIONS"], "pool": {"min_size": 2}}
    connections.settings["pooled"] = connections.configure_settings(
        {"default": dict(connections.settings["default"]), "pooled": settings_dict}
    )["pooled"]
    wrapper: Any = connections["pooled"]
    try:
        yield wrapper
    finally:
        wrapper.close()
        wrapper.close_pool()
        del connections["pooled"]
        del connections.settings["pooled"]

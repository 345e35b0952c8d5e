"""The public API is what docs/reference.md names: those modules export exactly those names
(``__all__``), and every other module says it is internal and exports nothing."""

from __future__ import annotations

import importlib
import pkgutil
import re
from pathlib import Path

import files_app

REFERENCE = Path(__file__).resolve().parent.parent / "docs" / "reference.md"
# Modules with no names to export: Django finds them by convention.
CONVENTIONAL = {"files_app.urls", "files_app.apps", "files_app.pytest_plugin"}


def _documented() -> dict[str, set[str]]:
    text = REFERENCE.read_text()
    section = text[text.index("## Public API") :]
    table = section[: section.index("The internal modules")]
    rows = re.findall(r"^\| `(files_app\.[a-z_]+)` \| (.+) \|$", table, re.M)
    return {module: set(re.findall(r"`([A-Za-z_]+)`", names)) for module, names in rows}


def _modules() -> list[str]:
    return [
        info.name
        for info in pkgutil.iter_modules(files_app.__path__, "files_app.")
        if not info.ispkg
    ]


def test_the_reference_names_fourteen_public_modules() -> None:
    documented = _documented()
    assert len(documented) == 14
    assert set(documented) <= set(_modules())


def test_each_public_module_exports_exactly_what_the_reference_names() -> None:
    for module, names in _documented().items():
        loaded = importlib.import_module(module)
        assert set(loaded.__all__) == names, module
        for name in names:
            assert hasattr(loaded, name), f"{module}.{name}"


def test_every_other_module_says_it_is_internal_and_exports_nothing() -> None:
    public = set(_documented()) | CONVENTIONAL
    internal = [name for name in _modules() if name not in public]
    assert "files_app.largeobjects" in internal and "files_app.fastpath" in internal
    for module in internal:
        loaded = importlib.import_module(module)
        assert not hasattr(loaded, "__all__"), module
        assert "Internal to files_app" in (loaded.__doc__ or ""), module


def test_the_reference_describes_every_internal_module() -> None:
    text = REFERENCE.read_text()
    described = text[text.index("The internal modules") :]
    public = set(_documented()) | CONVENTIONAL
    for module in _modules():
        if module not in public:
            assert f"`{module.removeprefix('files_app.')}`" in described, module

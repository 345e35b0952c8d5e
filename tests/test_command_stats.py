"""files_stats: counts, sizes, the largest files and the orphans, as text or JSON."""

from __future__ import annotations

import io
import json
import os
from collections.abc import Iterator
from typing import Any

import pytest
from django.core.files.base import ContentFile
from django.core.management import CommandError, call_command
from django.db import connection

from files_app import largeobjects
from files_app.models import StoredFile
from files_app.progress import Progress, format_size

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def _clean_up() -> Iterator[None]:
    yield
    StoredFile.objects.all().delete()


def _stats(*args: str) -> str:
    out = io.StringIO()
    call_command("files_stats", *args, stdout=out)
    return out.getvalue()


def _json(*args: str) -> dict[str, Any]:
    return json.loads(_stats("--json", *args))  # type: ignore[no-any-return]


def test_counts_sizes_largest_and_orphans() -> None:
    before = _json()
    sizes = {"small.txt": 10, "big.bin": 3 * 1024 * 1024, "empty": 0, "mid.bin": 5000}
    stored = {}
    for name, size in sizes.items():
        data = os.urandom(size)  # incompressible: pg_largeobject compresses its pages
        stored[name] = StoredFile(file=ContentFile(data, name=name))
        stored[name].save()
    orphan = largeobjects.create("default")  # files_app's, referenced by nothing
    unadopted = largeobjects.create("default", unadopted=True)  # an upload's that nothing saved
    with connection.cursor() as cursor:
        cursor.execute("SELECT lo_create(0)")  # someone else's
        foreign = int(cursor.fetchone()[0])

    stats = _json("--top", "2")

    assert stats["database"] == "default"
    assert stats["stored_files"] == {"count": 4, "bytes": sum(sizes.values())}
    assert stats["largest"] == [
        {"uuid": str(stored[name].uuid), "name": name, "bytes": sizes[name]}
        for name in ("big.bin", "mid.bin")
    ]
    objects, objects_before = stats["large_objects"], before["large_objects"]
    assert objects["total"] == objects_before["total"] + 7
    assert objects["files_app"] == objects_before["files_app"] + 6
    assert objects["unreferenced"] == objects_before["unreferenced"] + 2
    assert objects["unadopted"] == objects_before["unadopted"] + 1
    # It holds at least our 3 MiB of incompressible bytes (and whatever earlier tests left).
    assert stats["pg_largeobject_bytes"] >= 3 * 1024 * 1024

    text = _stats("--top", "3")
    assert "Stored files:        4, 3.0 MiB (3150738 bytes)" in text
    assert (
        f"Unreferenced:        {objects['unreferenced']} of files_app's large objects, "
        f"{objects['unadopted']} of them uploads that nothing saved" in text
    )
    largest = text.split("Largest 3 stored file(s):\n")[1].splitlines()
    assert largest == [
        f"   3.0 MiB  {stored['big.bin'].uuid}  big.bin",
        f"   4.9 KiB  {stored['mid.bin'].uuid}  mid.bin",
        f"  10 bytes  {stored['small.txt'].uuid}  small.txt",
    ]
    assert "Largest" not in _stats("--top", "0")
    largeobjects.unlink(orphan, "default")
    largeobjects.unlink(unadopted, "default")
    largeobjects.unlink(foreign, "default")


def test_empty_database() -> None:
    stats = _json()
    assert stats["stored_files"] == {"count": 0, "bytes": 0}
    assert stats["largest"] == []
    assert "Stored files:        0, 0 bytes" in _stats()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--top", "-1"], "--top must be 0 or more, not -1."),
        (["--database", "nope"], "Unknown database 'nope': it is not in DATABASES."),
    ],
)
def test_bad_options_are_command_errors(args: list[str], message: str) -> None:
    with pytest.raises(CommandError, match=message):
        _stats(*args)


@pytest.mark.parametrize(
    ("size", "text"),
    [
        (0, "0 bytes"),
        (1, "1 byte"),
        (1023, "1023 bytes"),
        (1024, "1.0 KiB"),
        (1536 * 1024, "1.5 MiB"),
        (5 * 1024**3, "5.0 GiB"),
        (3 * 1024**6, "3072.0 PiB"),
    ],
)
def test_format_size(size: int, text: str) -> None:
    assert format_size(size) == text


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_draws_only_on_a_terminal_and_keeps_lines_apart() -> None:
    from django.core.management.base import OutputWrapper

    err, out = io.StringIO(), io.StringIO()
    progress = Progress(OutputWrapper(err), 100)
    progress.advance(50)
    progress.write(OutputWrapper(out), "a line")
    progress.close()
    assert err.getvalue() == ""
    assert out.getvalue() == "a line\n"

    terminal = _Terminal()
    tty_err, tty_out = OutputWrapper(terminal), OutputWrapper(io.StringIO())
    progress = Progress(tty_err, 100)
    progress.set_label("file.bin")
    progress.advance(100)
    progress.write(tty_out, "a line")
    progress.close()
    drawn = terminal.getvalue()
    assert drawn.startswith("\r\x1b[K[") and drawn.endswith("\r\x1b[K")
    assert "100% 100 bytes / 100 bytes" in drawn and "file.bin" in drawn
    assert len(progress.render(20)) == 19
    progress.set_label("/a/very/long/path/to/a/file/" + "x" * 40 + ".bin")
    line = progress.render(80)
    assert len(line) == 79 and "  …" in line and line.endswith("xx.bin")  # the end is kept
    assert Progress(tty_err, 0).render(200).startswith("[" + "#" * 24 + "] 100%")

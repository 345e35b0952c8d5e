"""A ZIP of a selection through real servers (issue 25, point 5): minicloud under gunicorn
and uvicorn streams three files — one of them over 4 GiB of zeros, so the archive needs
ZIP64 — to curl, with the Content-Length it announced; Python's zipfile and Info-ZIP's
``unzip -t`` read it back, every member's CRC-32 and SHA-256 checked; the worker's memory
stays flat while the 4 GiB pass (sampled).

The big file is a sparse large object (one byte written at its end: PostgreSQL reads the
hole as zeros), so making it costs nothing; reading it costs what any 4 GiB costs.
"""

from __future__ import annotations

import hashlib
import os
import random
import shutil
import subprocess
import threading
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.reliability.conftest import MiB, OwnDatabase, minicloud_on, zeros_sha256
from tests.servers import SERVER_KINDS, Server

pytestmark = [pytest.mark.minicloud_server, pytest.mark.slow]

BIG = 4 * 2**30 + 3 * MiB + 7  # past ZIP's 32-bit sizes
SMALL = {
    "notes.txt": b"Three files, one ZIP.\n" * 100,
    "random.bin": random.Random(25).randbytes(3 * MiB + 1),
}


@pytest.fixture(scope="module")
def selection(own_database: OwnDatabase) -> dict[str, str]:
    session = own_database.sessions({"zipper": "user"})["zipper"]
    uuids = [
        own_database.store(name, data, public=False, owner="zipper")
        for name, data in SMALL.items()
    ]
    zeros = own_database.store("zeros.img", b"", public=False, owner="zipper", zeros=BIG)
    uuids.insert(1, zeros)
    return {
        "cookie": f"sessionid={session}",
        "path": "/files/zip/?" + "&".join(f"file={each}" for each in uuids),
    }


@pytest.fixture(scope="module", params=SERVER_KINDS)
def server(request: pytest.FixtureRequest, own_database: OwnDatabase) -> Iterator[Server]:
    with minicloud_on(request.param, own_database) as running:
        yield running


class _Memory(threading.Thread):
    """Samples a server's resident memory until stopped."""

    def __init__(self, server: Server) -> None:
        super().__init__(daemon=True)
        self.server = server
        self.samples: list[int] = []
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            self.samples.append(self.server.rss())
            time.sleep(0.2)


def test_a_zip_over_4_gib_streams_and_unpacks(
    server: Server, selection: dict[str, str], tmp_path: Path
) -> None:
    curl, unzip = shutil.which("curl"), shutil.which("unzip")
    assert curl, "curl is installed with the project's test tools"
    if not unzip:
        if os.environ.get("CI"):
            pytest.fail("CI needs unzip: .ci/run installs Debian's unzip package.")
        pytest.skip("skipped: no unzip")
    target, headers = tmp_path / "files.zip", tmp_path / "headers"
    memory = _Memory(server)
    before = server.rss()
    memory.start()
    try:
        fetched = subprocess.run(
            [curl, "-sf", "-H", f"Cookie: {selection['cookie']}", "-D", str(headers)]
            + ["-o", str(target), server.base_url + selection["path"]],
            capture_output=True,
            timeout=900,
        )
    finally:
        memory.done.set()
        memory.join()
    assert fetched.returncode == 0, fetched.stderr
    announced = [
        line.split(":", 1)[1].strip()
        for line in headers.read_text().splitlines()
        if line.lower().startswith("content-length:")
    ]
    assert announced == [str(target.stat().st_size)]  # known before the first byte
    assert target.stat().st_size > BIG
    # Flat: the 4 GiB passed through a few chunks' worth of memory.
    # (Measured: gunicorn 80 -> 88 MiB, uvicorn 60 -> 67 MiB; bench/RESULTS.md.)
    assert max(memory.samples) - before < 64 * MiB, (before, max(memory.samples))

    tested = subprocess.run([unzip, "-t", str(target)], capture_output=True, text=True)
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "No errors detected" in tested.stdout
    expected = {
        "notes.txt": hashlib.sha256(SMALL["notes.txt"]).hexdigest(),
        "zeros.img": zeros_sha256(BIG),
        "random.bin": hashlib.sha256(SMALL["random.bin"]).hexdigest(),
    }
    with zipfile.ZipFile(target) as archive:
        assert [info.filename for info in archive.infolist()] == list(expected)
        assert archive.getinfo("zeros.img").file_size == BIG
        for name, sha in expected.items():
            digest = hashlib.sha256()
            with archive.open(name) as member:  # checks the CRC-32 at the end
                while chunk := member.read(8 * MiB):
                    digest.update(chunk)
            assert digest.hexdigest() == sha, name
    target.unlink()

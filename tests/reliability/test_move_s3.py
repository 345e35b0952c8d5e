"""Issue 14, part 4: minicloud's files moved to S3 (django-storages' S3Storage against moto's
S3 emulator on 127.0.0.1) with ``manage.py files_move``, and back. Served with ranges by
gunicorn and uvicorn from the bucket, private files and share links included; a move killed
part-way leaves every file where it was and finishes when run again; a stopped S3 is a 503.
"""

from __future__ import annotations

import hashlib
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.moto import BUCKET, Moto, running_moto
from tests.reliability.clients import download
from tests.reliability.conftest import MiB, OwnDatabase, manage, share_link
from tests.servers import MINICLOUD_ENV, ROOT, SERVER_KINDS, Server, request, running_server

pytestmark = [pytest.mark.minicloud_server, pytest.mark.slow]

DATA = random.Random(41).randbytes(3 * MiB + 777)
BIG = random.Random(42).randbytes(64 * MiB + 3)


@pytest.fixture(scope="module")
def moto() -> Iterator[Moto]:
    with running_moto() as running:
        yield running


@pytest.fixture(scope="module")
def moved(own_database: OwnDatabase, moto: Moto) -> dict[str, str]:
    """Store a public and a private file, move both to S3; return their UUIDs."""
    own_database.sessions({"s3-owner": "user"})
    files = {
        "public": own_database.store("public.bin", DATA),
        "private": own_database.store("private.bin", DATA[::-1], public=False, owner="s3-owner"),
    }
    objects = _large_objects(own_database)
    dry = manage(own_database.url, "files_move", "--to", "s3", "--dry-run", env=moto.env)
    assert dry.returncode == 0, dry.stderr
    assert "Would move 2 file(s)" in dry.stderr
    assert moto.objects() == {}
    result = manage(own_database.url, "files_move", "--to", "s3", env=moto.env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert sorted(line.split()[0] for line in result.stdout.splitlines()) == sorted(files.values())
    rows = own_database.execute(
        "SELECT uuid::text, file, storage, storage_name FROM files_app_storedfile"
    )
    expected = dict.fromkeys(files.values(), (None, "s3"))
    assert {row[0]: (row[1], row[2]) for row in rows} == expected
    bucket = moto.objects()
    assert sorted(bucket.values()) == sorted([DATA, DATA[::-1]])
    assert sorted(bucket) == sorted(row[3] for row in rows)
    assert _large_objects(own_database) == objects - 2  # the sources were freed
    return files


def _large_objects(database: OwnDatabase) -> int:
    return int(database.execute("SELECT count(*) FROM pg_largeobject_metadata")[0][0])


@pytest.fixture(scope="module", params=SERVER_KINDS)
def server(
    request: pytest.FixtureRequest, own_database: OwnDatabase, moto: Moto
) -> Iterator[Server]:
    with running_server(request.param, own_database.url, project="minicloud", env=moto.env) as s:
        yield s
        s.check_alive()
        assert "Traceback" not in s.output(), s.output()


def test_moved_files_are_served_from_the_bucket_with_ranges(
    server: Server, moved: dict[str, str], own_database: OwnDatabase, moto: Moto
) -> None:
    path = f"/files/{moved['public']}/public.bin"
    whole = request(server, "GET", path)
    assert (whole.status, whole.body) == (200, DATA)
    etag = whole.header("ETag")
    assert etag == f'"{hashlib.sha256(DATA).hexdigest()}"'
    for asked, start, stop in (
        ("bytes=0-0", 0, 1),
        ("bytes=-1000", len(DATA) - 1000, len(DATA)),
        ("bytes=1048000-2100000", 1048000, 2100001),
        (f"bytes={len(DATA) - 5}-", len(DATA) - 5, len(DATA)),
    ):
        part = request(server, "GET", path, {"Range": asked})
        assert (part.status, part.body) == (206, DATA[start:stop]), asked
        assert part.header("Content-Range") == f"bytes {start}-{stop - 1}/{len(DATA)}"
    multi = request(server, "GET", path, {"Range": "bytes=0-99,2000000-2000099"})
    assert multi.status == 206
    assert DATA[:100] in multi.body and DATA[2000000:2000100] in multi.body
    assert request(server, "GET", path, {"Range": f"bytes={len(DATA)}-"}).status == 416
    assert request(server, "GET", path, {"If-None-Match": str(etag)}).status == 304
    head = request(server, "HEAD", path)
    assert (head.status, head.header("Content-Length"), head.body) == (200, str(len(DATA)), b"")
    # Private: its owner's session, not anyone; a share link for anyone.
    private = f"/files/{moved['private']}/private.bin"
    assert request(server, "GET", private).status == 404
    session = own_database.sessions({"s3-owner": "user"})["s3-owner"]
    cookie = f"sessionid={session}"
    owned = request(server, "GET", private, {"Cookie": cookie, "Range": "bytes=-9"})
    assert (owned.status, owned.body) == (206, DATA[::-1][-9:])
    link = share_link(own_database.url, moved["private"], "private.bin", env=moto.env)
    shared = request(server, "GET", link)
    assert (shared.status, shared.body) == (200, DATA[::-1])


def test_curl_and_wget_resume_from_the_bucket(
    server: Server, moved: dict[str, str], tmp_path: os.PathLike[str]
) -> None:
    url = f"http://127.0.0.1:{server.port}/files/{moved['public']}/public.bin"
    curl, wget = shutil.which("curl"), shutil.which("wget")
    assert curl and wget, "curl and wget are installed with the project's test tools"
    target = os.path.join(tmp_path, "public.bin")
    with open(target, "wb") as half:
        half.write(DATA[: len(DATA) // 3])
    subprocess.run([curl, "-sf", "-C", "-", "-o", target, url], check=True, timeout=60)
    with open(target, "rb") as done:
        assert done.read() == DATA
    with open(target, "wb") as half:
        half.write(DATA[:12345])
    result = subprocess.run(
        [wget, "-c", "-S", "-O", target, url], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert "206 Partial Content" in result.stderr  # wget resumed
    with open(target, "rb") as done:
        assert done.read() == DATA


def test_a_killed_move_leaves_the_file_in_place_and_finishes_when_run_again(
    own_database: OwnDatabase, moto: Moto, moved: dict[str, str]
) -> None:
    big = own_database.store("big.bin", BIG)
    env = {**os.environ, **MINICLOUD_ENV, **moto.env, "DATABASE_URL": own_database.url}
    client = moto.client()
    process = subprocess.Popen(
        [sys.executable, "manage.py", "files_move", "--to", "s3", "--uuid", big],
        cwd=ROOT,
        env={**env, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        # Killed once its multipart upload to the bucket is under way.
        deadline = time.monotonic() + 120
        while not client.list_multipart_uploads(Bucket=BUCKET).get("Uploads"):
            assert process.poll() is None, "the move ended before it could be killed"
            assert time.monotonic() < deadline
            time.sleep(0.02)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    [(file, storage)] = own_database.execute(
        "SELECT file, storage FROM files_app_storedfile WHERE uuid = %s", (big,)
    )
    assert file is not None and storage == ""  # still in its large object, still served
    result = manage(own_database.url, "files_move", "--to", "s3", "--uuid", big, env=moto.env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.split()[0] == big
    [(file, storage, name)] = own_database.execute(
        "SELECT file, storage, storage_name FROM files_app_storedfile WHERE uuid = %s", (big,)
    )
    assert (file, storage) == (None, "s3")
    body = client.get_object(Bucket=BUCKET, Key=name)["Body"].read()
    assert hashlib.sha256(body).hexdigest() == hashlib.sha256(BIG).hexdigest()


def test_files_move_back_into_large_objects(
    own_database: OwnDatabase, moto: Moto, moved: dict[str, str]
) -> None:
    data = DATA[: MiB + 1]
    stored = own_database.store("round-trip.bin", data)
    there = manage(own_database.url, "files_move", "--to", "s3", "--uuid", stored, env=moto.env)
    assert there.returncode == 0, there.stdout + there.stderr
    [(key,)] = own_database.execute(
        "SELECT storage_name FROM files_app_storedfile WHERE uuid = %s", (stored,)
    )
    assert moto.objects()[key] == data
    back = manage(
        own_database.url, "files_move", "--to", "large-objects", "--uuid", stored, env=moto.env
    )
    assert back.returncode == 0, back.stdout + back.stderr
    [(storage, content)] = own_database.execute(
        "SELECT storage, lo_get(file) FROM files_app_storedfile WHERE uuid = %s", (stored,)
    )
    assert (storage, bytes(content)) == ("", data)
    assert key not in moto.objects()  # the copy was deleted once its row let go of it
    verify = manage(own_database.url, "files_verify", env=moto.env)
    assert verify.returncode == 0, verify.stdout + verify.stderr


def test_a_stopped_s3_is_a_503_and_the_move_says_so(own_database: OwnDatabase) -> None:
    with running_moto() as moto:
        stored = own_database.store("stranded.bin", DATA[:1000])
        result = manage(
            own_database.url, "files_move", "--to", "s3", "--uuid", stored, env=moto.env
        )
        assert result.returncode == 0, result.stderr
        with running_server("gunicorn", own_database.url, project="minicloud", env=moto.env) as s:
            moto.process.send_signal(signal.SIGTERM)
            moto.process.wait(10)
            reply = request(s, "GET", f"/files/{stored}/stranded.bin")
            assert reply.status == 503
            assert reply.header("Retry-After")
            assert b"storage holding this file cannot be reached" in reply.body
            assert "Traceback" not in s.output(), s.output()
        back = manage(
            own_database.url, "files_move", "--to", "large-objects", "--uuid", stored, env=moto.env
        )
        assert back.returncode == 1
        assert "Could not move 1 of 1 file(s)" in back.stderr
        [(storage,)] = own_database.execute(
            "SELECT storage FROM files_app_storedfile WHERE uuid = %s", (stored,)
        )
        assert storage == "s3"  # left where it was
        own_database.execute("DELETE FROM files_app_storedfile WHERE uuid = %s", (stored,))


def test_files_move_says_when_the_bucket_is_missing_or_s3_is_down(
    own_database: OwnDatabase,
) -> None:
    stored = own_database.store("waiting.bin", DATA[:1000])
    with running_moto() as moto:
        env = {**moto.env, "MINICLOUD_S3_BUCKET": "no-such-bucket"}
        for dry_run in (["--dry-run"], []):
            result = manage(own_database.url, "files_move", "--to", "s3", *dry_run, env=env)
            assert result.returncode == 1, result.stdout + result.stderr
            assert "the bucket 'no-such-bucket' does not exist (create it first)" in result.stderr
            assert "Traceback" not in result.stderr
        stopped = moto.env
    result = manage(own_database.url, "files_move", "--to", "s3", "--dry-run", env=stopped)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "STORAGES['s3'] cannot be reached: S3 cannot be reached" in result.stderr
    [(storage,)] = own_database.execute(
        "SELECT storage FROM files_app_storedfile WHERE uuid = %s", (stored,)
    )
    assert storage == ""  # still in its large object
    own_database.execute("DELETE FROM files_app_storedfile WHERE uuid = %s", (stored,))


@pytest.mark.parametrize("kind", SERVER_KINDS)
def test_s3_stopping_mid_download_ends_the_body_short_with_one_warning(
    own_database: OwnDatabase, kind: str, tmp_path: Path
) -> None:
    """Regression: an IncompleteReadError traceback in the server's log. Under uvicorn,
    uvicorn adds its own line (no traceback) for the response it could not complete."""
    data = BIG[: 32 * MiB]
    stored = own_database.store("cut.bin", data)
    path = f"/files/{stored}/cut.bin"
    with running_moto() as moto:
        result = manage(
            own_database.url, "files_move", "--to", "s3", "--uuid", stored, env=moto.env
        )
        assert result.returncode == 0, result.stderr
        [(key,)] = own_database.execute(
            "SELECT storage_name FROM files_app_storedfile WHERE uuid = %s", (stored,)
        )
        with running_server(kind, own_database.url, project="minicloud", env=moto.env) as s:
            killed: list[float] = []

            def kill_s3(received: int) -> bool:
                if received >= 4 * MiB and not killed:
                    moto.process.kill()  # S3 dies with most of the file still to send
                    moto.process.wait(10)
                    killed.append(time.monotonic())
                return False

            cut = download(s, path, rate=16 * MiB, on_progress=kill_s3, timeout=60)
            ended = time.monotonic()
            assert killed, "the download ended before S3 could be stopped"
            # Short, never wrong, and promptly over: the server closed the connection.
            assert cut.status == 200 and not cut.complete
            assert 4 * MiB <= len(cut.body) < len(data)
            assert cut.body == data[: len(cut.body)]
            assert ended - killed[0] < 4, f"the short body took {ended - killed[0]:.1f} s to end"
            # The worker's log line: polled for, not waited for.
            deadline = time.monotonic() + 10
            while "ends short" not in s.output() and time.monotonic() < deadline:
                time.sleep(0.05)
            time.sleep(0.2)  # a second such line, if there were one, would be there by now
            output = s.output()
            s.check_alive()
        assert "Traceback" not in output, output
        lines = [line for line in output.splitlines() if "ends short" in line]
        assert len(lines) == 1, output
        assert f"'{key}'" in lines[0] and "'s3'" in lines[0]
    # S3 is back with the file: curl resumes from what it has.
    target = tmp_path / "cut.bin"
    target.write_bytes(cut.body)
    with running_moto() as moto:
        moto.client().put_object(Bucket=BUCKET, Key=key, Body=data)
        with running_server(kind, own_database.url, project="minicloud", env=moto.env) as s:
            url = f"http://127.0.0.1:{s.port}{path}"
            curl = shutil.which("curl")
            assert curl, "curl is installed with the project's test tools"
            resume = [curl, "-sf", "-C", "-", "-o", str(target), url]
            subprocess.run(resume, check=True, timeout=60)
    assert hashlib.sha256(target.read_bytes()).digest() == hashlib.sha256(data).digest()
    own_database.execute("DELETE FROM files_app_storedfile WHERE uuid = %s", (stored,))


@pytest.mark.parametrize("kind", SERVER_KINDS)
def test_redirected_downloads_resume_from_the_bucket(
    kind: str, own_database: OwnDatabase, moto: Moto, moved: dict[str, str], tmp_path: Path
) -> None:
    """MINICLOUD_S3_REDIRECT (issue 24, point 3): a moved file's download is a 302 to a
    presigned URL; curl -L -r and wget -c follow it and get their ranges from the bucket,
    with the download's type and file name."""
    env = {**moto.env, "MINICLOUD_S3_REDIRECT": "120"}
    with running_server(kind, own_database.url, project="minicloud", env=env) as server:
        path = f"/files/{moved['public']}/public.bin"
        reply = request(server, "GET", path, {"Range": "bytes=0-9"})
        assert reply.status == 302, reply.body[:300]
        location = reply.header("Location") or ""
        assert location.startswith(moto.url) and "Signature=" in location
        assert reply.header("Cache-Control") == "private, max-age=60"
        url = server.base_url + path
        curl, wget = shutil.which("curl"), shutil.which("wget")
        assert curl and wget, "curl and wget are installed with the project's test tools"
        headers, body = tmp_path / f"headers-{kind}", tmp_path / f"body-{kind}"
        ranged = subprocess.run(
            [curl, "-sfL", "-r", "1000-1999", "-D", str(headers), "-o", str(body), url],
            capture_output=True,
            timeout=60,
        )
        assert ranged.returncode == 0, ranged.stderr
        assert body.read_bytes() == DATA[1000:2000]
        statuses = [line for line in headers.read_text().splitlines() if line.startswith("HTTP/")]
        assert [line.split()[1] for line in statuses] == ["302", "206"], statuses
        # The bucket names the file as files_app would.
        assert 'filename="public.bin"' in headers.read_text()
        target = tmp_path / f"redirected-{kind}.bin"
        target.write_bytes(DATA[:12345])
        result = subprocess.run(
            [wget, "-c", "-S", "-O", str(target), url], capture_output=True, text=True, timeout=60
        )
        assert result.returncode == 0, result.stderr
        # The redirect, then the bucket's 206 (moto says "206 PARTIAL CONTENT"): resumed.
        assert "HTTP/1.1 302 " in result.stderr and "HTTP/1.1 206 " in result.stderr
        assert target.read_bytes() == DATA
        server.check_alive()
        assert "Traceback" not in server.output(), server.output()

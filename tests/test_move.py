"""files_move (issue 14, part 4): stored files moved from large objects to another Django
storage (here the file system; S3 in tests/reliability/test_move_s3.py) and back: verified
before the source goes, restartable, served with ranges from wherever they are."""

from __future__ import annotations

import asyncio
import hashlib
import io
import logging
import os
import random
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from asgiref.sync import async_to_sync
from botocore.config import Config  # type: ignore[import-untyped]
from django.core.files.base import ContentFile
from django.core.files.storage import FileSystemStorage
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import CommandError, call_command
from django.db import IntegrityError, connection, transaction
from django.http import StreamingHttpResponse
from django.test import AsyncClient, Client

from files_app import external
from files_app.models import PendingRemoval, StoredFile, StoredFileQuerySet
from tests.moto import BUCKET, CREDENTIALS, Moto, running_moto
from tests.servers import free_port

pytestmark = pytest.mark.django_db(transaction=True)

DATA = random.Random(14).randbytes(3 * 1024 * 1024 + 5)  # several chunks, an odd end


class CorruptingStorage(FileSystemStorage):
    """Writes every file with its first byte changed: a copy that fails verification."""

    def _save(self, name: str, content: Any) -> str:
        data = b"".join(content.chunks())
        saved: str = super()._save(name, ContentFile(bytes([data[0] ^ 1]) + data[1:]))  # type: ignore[misc]
        return saved


@pytest.fixture
def elsewhere(settings: Any, tmp_path: Path) -> Path:
    """A file-system storage under ``STORAGES["elsewhere"]``; return its directory."""
    settings.STORAGES = {
        **settings.STORAGES,
        "elsewhere": {
            "BACKEND": "django.core.files.storage.FileSystemStorage",
            "OPTIONS": {"location": str(tmp_path / "moved")},
        },
        "corrupting": {
            "BACKEND": "tests.test_move.CorruptingStorage",
            "OPTIONS": {"location": str(tmp_path / "corrupt")},
        },
    }
    return tmp_path / "moved"


def move(*args: str) -> tuple[str, str]:
    out, err = io.StringIO(), io.StringIO()
    call_command("files_move", *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def raw_update(stored: StoredFile, assignments: str) -> None:
    """Change a row behind the model's back, as another program could."""
    with connection.cursor() as cursor:
        cursor.execute(f"UPDATE files_app_storedfile SET {assignments} WHERE id = %s", [stored.pk])


def files_in(directory: Path) -> list[Path]:
    return sorted(path for path in directory.rglob("*") if path.is_file())


@pytest.fixture
def stored(store: Callable[..., StoredFile]) -> StoredFile:
    return store(DATA, name="film.bin", content_type="video/mp4")


def test_move_out_and_back(
    elsewhere: Path, stored: StoredFile, lo_count: Callable[[], int]
) -> None:
    objects = lo_count()
    out, err = move("--to", "elsewhere")
    stored.refresh_from_db()
    assert (stored.file.name, stored.storage) == (None, "elsewhere")
    assert out == f"{stored.uuid}  elsewhere:{stored.storage_name}\n"
    assert "Moved 1 file(s)" in err
    [copy] = files_in(elsewhere)
    assert copy.read_bytes() == DATA
    assert lo_count() == objects - 1  # the source was freed
    # Size, hash and type still describe it.
    assert (stored.size, stored.sha256) == (len(DATA), hashlib.sha256(DATA).hexdigest())
    # Nothing left to move.
    assert move("--to", "elsewhere")[0] == ""

    out, _ = move("--to", "large-objects")
    stored.refresh_from_db()
    assert (stored.storage, stored.storage_name) == ("", "")
    assert out == f"{stored.uuid}  large-objects:{stored.file.oid}\n"
    with stored.file.open() as opened:
        assert opened.read() == DATA
    assert files_in(elsewhere) == []  # the copy it left was deleted after commit
    assert lo_count() == objects
    assert not PendingRemoval.objects.exists()


@pytest.mark.parametrize("dedupe", [True, False])
def test_back_in_large_objects_the_same_bytes_share_one_object(
    elsewhere: Path,
    store: Callable[..., StoredFile],
    lo_count: Callable[[], int],
    settings: Any,
    dedupe: bool,
) -> None:
    """Regression: moving twins back made an object each, where a save shares one."""
    settings.FILES_APP_DEDUPE = dedupe
    objects = lo_count()
    twins = [store(DATA, name=f"twin{n}.bin") for n in range(2)]
    other = store(b"other bytes", name="other.bin")
    assert lo_count() == objects + (2 if dedupe else 3)
    move("--to", "elsewhere")
    assert lo_count() == objects and len(files_in(elsewhere)) == 3
    out, err = move("--to", "large-objects")
    assert "Moved 3 file(s)" in err
    for row in (*twins, other):
        row.refresh_from_db()
        assert row.storage == "" and f"{row.uuid}  large-objects:{row.file.oid}" in out
        with row.file.open() as opened:
            assert opened.read() == (b"other bytes" if row is other else DATA)
    shared = twins[0].file.oid == twins[1].file.oid
    assert shared is dedupe
    assert lo_count() == objects + (2 if dedupe else 3)
    assert files_in(elsewhere) == []
    # A version's object is shared too: with the twins gone, one holding DATA remains.
    if dedupe:
        settings.FILES_APP_VERSIONS = 1
        twins[0].file = ContentFile(b"replaced", name="twin0.bin")
        twins[0].save()
        move("--uuid", str(twins[1].uuid), "--to", "elsewhere")
        move("--uuid", str(twins[1].uuid), "--to", "large-objects")
        twins[1].refresh_from_db()
        assert twins[1].file.oid == twins[0].versions.get().file.oid


def test_dry_run_changes_nothing(elsewhere: Path, stored: StoredFile) -> None:
    out, err = move("--to", "elsewhere", "--dry-run")
    assert out.startswith(f"{stored.uuid}  large-objects -> elsewhere  3.0 MiB  film.bin")
    assert "Would move 1 file(s), 3.0 MiB" in err
    stored.refresh_from_db()
    assert stored.file and not stored.storage
    assert files_in(elsewhere) == []


def test_selection_by_uuid_and_size(
    elsewhere: Path, stored: StoredFile, store: Callable[..., StoredFile]
) -> None:
    small = store(b"small", name="small.txt")
    move("--to", "elsewhere", "--min-size", "1000")
    assert StoredFile.objects.get(pk=small.pk).storage == ""
    move("--to", "elsewhere", "--uuid", str(small.uuid))
    assert StoredFile.objects.get(pk=small.pk).storage == "elsewhere"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--to", "nowhere"], "--to 'nowhere' is not in STORAGES"),
        (["--to", "default"], "keeps large objects: use --to large-objects"),
        (["--to", "elsewhere", "--uuid", "nope"], "--uuid must be a UUID"),
        (["--to", "elsewhere", "--min-size", "-1"], "--min-size must be 0 or more"),
    ],
)
def test_bad_options_are_command_errors(elsewhere: Path, args: list[str], message: str) -> None:
    with pytest.raises(CommandError, match=message):
        move(*args)


def test_a_copy_that_does_not_verify_leaves_the_file_where_it_was(
    elsewhere: Path, stored: StoredFile, tmp_path: Path
) -> None:
    with pytest.raises(CommandError, match="Could not move 1 of 1 file"):
        move("--to", "corrupting")
    stored.refresh_from_db()
    assert stored.file and not stored.storage
    with stored.file.open() as opened:
        assert hashlib.sha256(opened.read()).hexdigest() == stored.sha256
    assert files_in(tmp_path / "corrupt") == []  # the bad copy was deleted


def test_a_run_again_replaces_a_partial_copy_and_reuses_a_complete_one(
    elsewhere: Path, stored: StoredFile, store: Callable[..., StoredFile], monkeypatch: Any
) -> None:
    # What an interrupted run leaves: a partial copy under the name the move uses.
    other = store(DATA[::-1], name="other.bin")
    partial = elsewhere / str(stored.uuid) / "film.bin"
    partial.parent.mkdir(parents=True)
    partial.write_bytes(DATA[: len(DATA) // 2])
    complete = elsewhere / str(other.uuid) / "other.bin"
    complete.parent.mkdir(parents=True)
    complete.write_bytes(DATA[::-1])
    saved: list[str] = []
    original = FileSystemStorage.save

    def save(self: FileSystemStorage, name: str, *args: Any, **kwargs: Any) -> str:
        saved.append(name)
        return original(self, name, *args, **kwargs)

    monkeypatch.setattr(FileSystemStorage, "save", save)
    move("--to", "elsewhere")
    assert saved == [f"{stored.uuid}/film.bin"]  # the complete copy was not written again
    for row, data in ((stored, DATA), (other, DATA[::-1])):
        row.refresh_from_db()
        assert row.storage == "elsewhere"
        assert (elsewhere / row.storage_name).read_bytes() == data
    assert len(files_in(elsewhere)) == 2


def test_relocate_refuses_a_row_replaced_meanwhile(elsewhere: Path, stored: StoredFile) -> None:
    loaded = StoredFile.objects.get(pk=stored.pk)
    stored.file = ContentFile(b"new bytes", name="new.txt")
    stored.save()
    assert not StoredFile.objects.relocate(loaded, None, "elsewhere", "x")
    stored.refresh_from_db()
    assert stored.file and not stored.storage


def test_a_row_lives_in_exactly_one_place(stored: StoredFile) -> None:
    for change in ("storage = 'elsewhere', storage_name = 'x'", "file = NULL"):
        with pytest.raises(IntegrityError), transaction.atomic():
            raw_update(stored, change)


@pytest.fixture
def moved(elsewhere: Path, stored: StoredFile) -> StoredFile:
    move("--to", "elsewhere")
    stored.refresh_from_db()
    return stored


def test_views_serve_a_moved_file_with_ranges(moved: StoredFile, client: Client) -> None:
    url = moved.get_absolute_url()
    whole = client.get(url)
    assert whole.status_code == 200
    assert whole["Content-Length"] == str(len(DATA))
    assert b"".join(whole.streaming_content) == DATA  # type: ignore[attr-defined]
    etag = whole["ETag"]
    assert etag == f'"{hashlib.sha256(DATA).hexdigest()}"'  # as before the move
    tail = client.get(url, HTTP_RANGE="bytes=-100")
    assert tail.status_code == 206
    assert b"".join(tail.streaming_content) == DATA[-100:]  # type: ignore[attr-defined]
    middle = client.get(url, HTTP_RANGE="bytes=1048570-2097160")
    assert middle["Content-Range"] == f"bytes 1048570-2097160/{len(DATA)}"
    assert b"".join(middle.streaming_content) == DATA[1048570:2097161]  # type: ignore[attr-defined]
    multi = client.get(url, HTTP_RANGE="bytes=0-9,3000000-3000009")
    assert multi.status_code == 206
    body = b"".join(multi.streaming_content)  # type: ignore[attr-defined]
    assert DATA[:10] in body and DATA[3000000:3000010] in body
    assert client.get(url, HTTP_RANGE=f"bytes={len(DATA)}-").status_code == 416
    assert client.get(url, HTTP_IF_NONE_MATCH=etag).status_code == 304
    assert client.head(url)["Content-Length"] == str(len(DATA))


def test_a_moved_file_that_changed_size_is_served_as_it_is(
    moved: StoredFile, elsewhere: Path, client: Client
) -> None:
    (elsewhere / moved.storage_name).write_bytes(b"shorter")
    response = client.get(moved.get_absolute_url())
    assert response.status_code == 200
    assert b"".join(response.streaming_content) == b"shorter"  # type: ignore[attr-defined]
    assert "ETag" not in response  # the validators described other bytes


def test_a_moved_file_gone_or_its_storage_unknown_is_404(
    moved: StoredFile,
    elsewhere: Path,
    client: Client,
    settings: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    (elsewhere / moved.storage_name).unlink()
    with caplog.at_level(logging.ERROR, logger="files_app"):
        assert client.get(moved.get_absolute_url()).status_code == 404
    [logged] = [r for r in caplog.records if r.name == "files_app"]
    assert logged.getMessage().startswith(
        f"The file {moved.storage_name!r} is missing from the storage 'elsewhere': "
    )
    raw_update(moved, "storage = 'gone'")
    assert client.get(moved.get_absolute_url()).status_code == 404


@pytest.mark.parametrize("asgi", [False, True], ids=["wsgi", "asgi"])
def test_a_moved_file_cut_mid_download_ends_the_body_short_with_one_warning(
    moved: StoredFile, elsewhere: Path, asgi: bool, caplog: pytest.LogCaptureFixture
) -> None:
    # What WSGI servers and Django's ASGI handler take for a connection gone: the server
    # closes it, without a traceback, and the client resumes with a Range request.
    ended = asyncio.CancelledError if asgi else ConnectionResetError
    copy = elsewhere / moved.storage_name
    received = bytearray()

    def cut(first: bytes) -> None:
        received.extend(first)
        os.truncate(copy, 300_000)  # the storage loses the file's end mid-download

    with caplog.at_level(logging.INFO, logger="files_app"), pytest.raises(ended):
        if asgi:

            async def fetch() -> None:
                response = await AsyncClient().get(moved.get_absolute_url())
                assert isinstance(response, StreamingHttpResponse)
                body = aiter(response.streaming_content)
                try:
                    cut(await anext(body))
                    async for piece in body:
                        received.extend(piece)
                finally:
                    await body.aclose()

            async_to_sync(fetch)()
        else:
            response = Client().get(moved.get_absolute_url())
            body = iter(response.streaming_content)  # type: ignore[attr-defined]
            try:
                cut(next(body))
                for piece in body:
                    received.extend(piece)
            finally:
                response.close()
    assert 0 < len(received) <= 300_000
    assert received == DATA[: len(received)]  # short, never wrong
    [warning] = _files_app_records(caplog)
    assert warning.levelno == logging.WARNING and warning.exc_info is None
    assert warning.getMessage().startswith(
        f"The download of {moved.storage_name!r} from the storage 'elsewhere' ends short after "
    )


def test_a_moved_file_under_the_lean_path(moved: StoredFile, settings: Any) -> None:
    settings.MIDDLEWARE = ["files_app.middleware.FileServingMiddleware", *settings.MIDDLEWARE]
    response = Client().get(moved.get_absolute_url(), HTTP_RANGE="bytes=5-14")
    assert response.status_code == 206
    assert b"".join(response.streaming_content) == DATA[5:15]  # type: ignore[attr-defined]


def test_deleting_or_replacing_a_moved_file_deletes_its_copy(
    elsewhere: Path, store: Callable[..., StoredFile], lo_count: Callable[[], int]
) -> None:
    rows = [store(DATA[:1000] + bytes([n]), name=f"f{n}.bin") for n in range(4)]
    move("--to", "elsewhere")
    assert len(files_in(elsewhere)) == 4
    rows[0].delete()
    StoredFile.objects.filter(pk=rows[1].pk).delete()
    assert len(files_in(elsewhere)) == 2
    replaced = StoredFile.objects.get(pk=rows[2].pk)
    replaced.file = ContentFile(b"replacement", name="r.txt")
    replaced.save()
    replaced.refresh_from_db()
    assert (replaced.storage, replaced.size) == ("", 11)
    assert replaced.file.oid
    assert len(files_in(elsewhere)) == 1
    # Only name or type edited: the row stays moved.
    kept = StoredFile.objects.get(pk=rows[3].pk)
    kept.name, kept.content_type = "renamed.bin", "application/x-thing"
    kept.save()
    kept.refresh_from_db()
    assert (kept.storage, kept.name) == ("elsewhere", "renamed.bin")
    assert len(files_in(elsewhere)) == 1
    assert not PendingRemoval.objects.exists()


def test_a_removal_that_fails_stays_queued_for_the_sweeper(
    elsewhere: Path, stored: StoredFile, monkeypatch: Any
) -> None:
    move("--to", "elsewhere")
    stored.refresh_from_db()

    def broken(self: FileSystemStorage, name: str) -> None:
        raise PermissionError("read-only file system")

    with monkeypatch.context() as patched:
        patched.setattr(FileSystemStorage, "delete", broken)
        stored.delete()
    assert PendingRemoval.objects.count() == 1
    assert len(files_in(elsewhere)) == 1
    call_command("files_sweep", stdout=io.StringIO(), stderr=io.StringIO())
    assert not PendingRemoval.objects.exists()
    assert files_in(elsewhere) == []


def test_export_and_verify_read_a_moved_file(
    moved: StoredFile, elsewhere: Path, tmp_path: Path
) -> None:
    call_command("files_export", str(tmp_path / "out"), stdout=io.StringIO(), stderr=io.StringIO())
    assert (tmp_path / "out" / "film.bin").read_bytes() == DATA
    call_command("files_verify", stdout=io.StringIO(), stderr=io.StringIO())
    (elsewhere / moved.storage_name).write_bytes(DATA[:-1] + b"!")
    with pytest.raises(CommandError):
        call_command("files_verify", stdout=io.StringIO(), stderr=io.StringIO())


def test_external_reader_reads_by_offset(elsewhere: Path) -> None:
    storage = external.get_storage("elsewhere")
    name = storage.save("a/b.bin", ContentFile(DATA))
    read = external.reader(storage, name)
    assert read.size() == len(DATA)
    assert read.read_with_size(10, 5) == (DATA[10:15], len(DATA))
    pieces = [(0, 3), (3, 4), (100, 10), (len(DATA) - 2, 2)]
    assert list(read.read_pieces(pieces)) == [DATA[o : o + n] for o, n in pieces]


def test_the_admin_edits_and_replaces_a_moved_file(
    moved: StoredFile, elsewhere: Path, admin_client: Client
) -> None:
    change_url = f"/admin/files_app/storedfile/{moved.pk}/change/"
    page = admin_client.get(change_url)
    assert page.status_code == 200
    assert f"the storage &#x27;elsewhere&#x27;, as &#x27;{moved.storage_name}" in page.text
    form = {"name": "renamed.bin", "content_type": "video/mp4", "public": "on"}
    assert admin_client.post(change_url, form).status_code == 302
    moved.refresh_from_db()
    assert (moved.name, moved.storage) == ("renamed.bin", "elsewhere")
    replaced = admin_client.post(
        change_url, {**form, "file": SimpleUploadedFile("new.txt", b"new", "text/plain")}
    )
    assert replaced.status_code == 302
    moved.refresh_from_db()
    assert (moved.storage, moved.size, moved.name) == ("", 3, "new.txt")
    assert files_in(elsewhere) == []


def test_stats_count_moved_files_by_storage(moved: StoredFile) -> None:
    out = io.StringIO()
    call_command("files_stats", stdout=out)
    assert "  in storage 'elsewhere': 1, 3.0 MiB (3145733 bytes) (moved by files_move)" in (
        out.getvalue()
    )


class TTY(io.StringIO):
    """A captured stream that says it is a terminal."""

    def isatty(self) -> bool:
        return True


def test_progress_bar_on_a_terminal(elsewhere: Path, stored: StoredFile) -> None:
    err = TTY()
    call_command("files_move", "--to", "elsewhere", stdout=io.StringIO(), stderr=err)
    text = err.getvalue()
    assert "\r\x1b[K[" in text and "100%" in text and "film.bin" in text
    assert "Moved 1 file(s)" in text


def test_ctrl_c_leaves_the_file_where_it_was(
    elsewhere: Path, stored: StoredFile, monkeypatch: Any
) -> None:
    def interrupted(self: FileSystemStorage, name: str, content: Any) -> str:
        next(iter(content.chunks()))  # part-way through the copy
        raise KeyboardInterrupt

    monkeypatch.setattr(FileSystemStorage, "_save", interrupted)
    with pytest.raises(CommandError, match="Interrupted while moving 'film.bin'") as caught:
        move("--to", "elsewhere")
    assert caught.value.returncode == 130
    stored.refresh_from_db()
    assert stored.file and not stored.storage


def test_a_file_moved_meanwhile_by_another_run_keeps_its_copy(
    elsewhere: Path, stored: StoredFile, monkeypatch: Any
) -> None:
    # Another files_move moved the same file under the same name while this one copied it.
    original = StoredFileQuerySet.relocate

    def raced(
        self: StoredFileQuerySet, row: StoredFile, oid: int | None, storage: str, name: str
    ) -> bool:
        assert original(self, StoredFile.objects.get(pk=row.pk), oid, storage, name)
        return original(self, row, oid, storage, name)

    monkeypatch.setattr(StoredFileQuerySet, "relocate", raced)
    with pytest.raises(CommandError, match="Could not move 1 of 1"):
        move("--to", "elsewhere")
    stored.refresh_from_db()
    assert stored.storage == "elsewhere"
    assert (elsewhere / stored.storage_name).read_bytes() == DATA
    assert not PendingRemoval.objects.exists()


# -- S3 in-process (the real-server tests are tests/reliability/test_move_s3.py) ------------


@pytest.fixture(scope="module")
def moto_server() -> Iterator[Moto]:
    with running_moto() as running:
        yield running


@pytest.fixture
def s3(moto_server: Moto, settings: Any, monkeypatch: Any) -> Iterator[Moto]:
    for name, value in CREDENTIALS.items():
        monkeypatch.setenv(name, value)
    settings.STORAGES = {**settings.STORAGES, "s3": moto_server.storage()}
    yield moto_server
    client = moto_server.client()
    for key in moto_server.objects():
        client.delete_object(Bucket=BUCKET, Key=key)


@pytest.mark.slow
def test_s3_reader(s3: Moto) -> None:
    storage = external.get_storage("s3")
    name = storage.save("dir/data.bin", ContentFile(DATA))
    empty = storage.save("dir/empty.bin", ContentFile(b""))
    read = external.reader(storage, name)
    assert isinstance(read, external.S3Reader)
    assert read.size() == len(DATA)
    assert read.read_with_size(7, 9) == (DATA[7:16], len(DATA))
    assert read.read_with_size(len(DATA), 10) == (b"", len(DATA))  # past the end
    pieces = [(0, 5), (5, 5), (2_000_000, 100), (len(DATA) - 1, 1)]
    assert list(read.read_pieces(pieces)) == [DATA[o : o + n] for o, n in pieces]
    assert external.reader(storage, empty).read_with_size(0, 10) == (b"", 0)
    missing = external.reader(storage, "dir/missing.bin")
    with pytest.raises(FileNotFoundError):
        missing.size()
    with pytest.raises(FileNotFoundError):
        missing.read_with_size(0, 1)


@pytest.mark.slow
def test_s3_unreachable_is_storage_unavailable(s3: Moto, settings: Any) -> None:
    settings.STORAGES["s3"]["OPTIONS"]["endpoint_url"] = f"http://127.0.0.1:{free_port()}"
    settings.STORAGES["s3"]["OPTIONS"]["client_config"] = Config(
        retries={"max_attempts": 1}, connect_timeout=1
    )
    read = external.reader(external.get_storage("s3"), "dir/data.bin")
    with pytest.raises(external.StorageUnavailable, match="cannot be reached"):
        read.size()


@pytest.mark.slow
def test_s3_move_and_serve_in_process(s3: Moto, stored: StoredFile, client: Client) -> None:
    move("--to", "s3")
    stored.refresh_from_db()
    assert s3.objects() == {stored.storage_name: DATA}
    url = stored.get_absolute_url()
    whole = client.get(url)
    assert b"".join(whole.streaming_content) == DATA  # type: ignore[attr-defined]
    multi = client.get(url, HTTP_RANGE="bytes=0-9,3000000-3000009")
    body = b"".join(multi.streaming_content)  # type: ignore[attr-defined]
    assert DATA[:10] in body and DATA[3000000:3000010] in body
    assert client.head(url)["Content-Length"] == str(len(DATA))
    with stored.open_content() as opened:
        opened.seek(len(DATA) - 4)
        assert opened.read() == DATA[-4:]
    move("--to", "large-objects")
    assert s3.objects() == {}


@pytest.mark.slow
def test_a_redirect_storage_sends_downloads_to_a_presigned_url(
    s3: Moto, stored: StoredFile, client: Client, settings: Any
) -> None:
    """FILES_APP_REDIRECT_STORAGES (issue 24, point 3): the bucket serves the bytes and the
    ranges, with the download's type and name; Django only signs."""
    import time
    import urllib.request
    from urllib.parse import parse_qsl, urlsplit

    move("--to", "s3")
    stored.refresh_from_db()
    url = stored.get_absolute_url()
    settings.FILES_APP_REDIRECT_STORAGES = {"s3": 120}
    response = client.get(url, HTTP_RANGE="bytes=10-19")
    assert response.status_code == 302
    assert response["Cache-Control"] == "private, max-age=60"
    location = response["Location"]
    assert location.startswith(s3.url)
    query = dict(parse_qsl(urlsplit(location).query))
    assert "Signature" in query or "X-Amz-Signature" in query
    # Valid 120 s: SigV4 says so, SigV2 (moto's default here) says until when.
    lifetime = int(query.get("X-Amz-Expires") or int(query["Expires"]) - time.time())
    assert 115 <= lifetime <= 120, query
    request = urllib.request.Request(location, headers={"Range": "bytes=10-19"})
    with urllib.request.urlopen(request, timeout=30) as reply:
        assert (reply.status, reply.read()) == (206, DATA[10:20])
        assert reply.headers["Content-Type"] == stored.content_type
        assert f'filename="{stored.download_name}"' in reply.headers["Content-Disposition"]
    # A managed share link is served through Django: its downloads are counted, and a
    # revoke is not outlived by a presigned URL.
    link = stored.share(max_downloads=1)
    shared = client.get(link.get_absolute_url())
    assert shared.status_code == 200
    assert b"".join(shared.streaming_content) == DATA  # type: ignore[attr-defined]
    assert client.get(link.get_absolute_url()).status_code == 410
    # Not listed: proxied through Django, as before.
    settings.FILES_APP_REDIRECT_STORAGES = {}
    proxied = client.get(url, HTTP_RANGE="bytes=10-19")
    assert proxied.status_code == 206
    assert b"".join(proxied.streaming_content) == DATA[10:20]  # type: ignore[attr-defined]
    move("--to", "large-objects")


def _files_app_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [record for record in caplog.records if record.name == "files_app"]


@pytest.mark.slow
def test_a_file_lost_from_its_bucket_is_logged_and_verify_names_the_storage(
    s3: Moto, stored: StoredFile, client: Client, caplog: pytest.LogCaptureFixture
) -> None:
    """Regression: a silent 404, and files_verify's "missing large object"."""
    move("--to", "s3")
    stored.refresh_from_db()
    key = stored.storage_name
    s3.client().delete_object(Bucket=BUCKET, Key=key)
    url = stored.get_absolute_url()
    with caplog.at_level(logging.INFO, logger="files_app"):
        assert client.get(url).status_code == 404
        assert client.get(url, HTTP_RANGE="bytes=5-9").status_code == 404
        assert client.head(url).status_code == 404
    records = _files_app_records(caplog)
    assert [record.levelno for record in records] == [logging.ERROR] * 3
    for record in records:
        assert record.getMessage().startswith(
            f"The file {key!r} is missing from the storage 's3': "
        )
        assert record.exc_info is None  # one line, no traceback
    err = io.StringIO()
    with pytest.raises(CommandError) as caught:
        call_command("files_verify", stdout=io.StringIO(), stderr=err)
    assert str(caught.value) == (
        "1 stored file(s) failed verification: 0 with a missing large object, 1 missing from "
        "storage 's3', 0 whose content does not match; 0 intact."
    )
    assert err.getvalue() == f"{stored.uuid} 'film.bin': missing from storage 's3' as {key!r}.\n"


@pytest.mark.slow
def test_s3_dying_mid_download_ends_the_body_short_with_one_warning(
    settings: Any,
    monkeypatch: Any,
    store: Callable[..., StoredFile],
    client: Client,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Regression: botocore's IncompleteReadError escaped from the body (a traceback)."""
    data = random.Random(15).randbytes(24 * 1024 * 1024)  # more than the sockets buffer
    for name, value in CREDENTIALS.items():
        monkeypatch.setenv(name, value)
    with running_moto() as dying:
        settings.STORAGES = {**settings.STORAGES, "s3": dying.storage()}
        stored = store(data, name="cut.bin")
        move("--to", "s3", "--uuid", str(stored.uuid))
        stored.refresh_from_db()
        response = client.get(stored.get_absolute_url())
        assert response.status_code == 200
        body = iter(response.streaming_content)  # type: ignore[attr-defined]
        received = next(body) + next(body)  # the second read is S3's streamed answer
        dying.process.kill()
        dying.process.wait(10)
        with caplog.at_level(logging.INFO, logger="files_app"):
            with pytest.raises(ConnectionResetError):  # what WSGI servers close quietly
                for piece in body:
                    received += piece
            response.close()
        stored.delete()
        PendingRemoval.objects.filter(storage="s3").delete()  # the bucket died with moto
    assert 0 < len(received) < len(data)
    assert received == data[: len(received)]  # short, never wrong
    [warning] = _files_app_records(caplog)
    assert warning.levelno == logging.WARNING and warning.exc_info is None
    message = warning.getMessage()
    assert "\n" not in message
    assert message.startswith(
        f"The download of {stored.storage_name!r} from the storage 's3' ends short after "
        f"{len(received)} bytes: S3 stopped sending "
    )

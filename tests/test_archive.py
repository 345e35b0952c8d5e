"""A selection of stored files as one ZIP (issue 25, point 5): files_app.archive, the
view for code (``files_app:zip``) and the admin action, through WSGI and ASGI; the archive
read back by Python's zipfile. Real servers, unzip and a member over 4 GiB:
tests/reliability/test_archive.py."""

from __future__ import annotations

import hashlib
import io
import warnings
import zipfile
from collections.abc import Callable
from typing import Any

import pytest
from asgiref.sync import async_to_sync
from django.contrib.auth.models import User
from django.http import StreamingHttpResponse
from django.test import AsyncClient, Client
from django.urls import reverse

from files_app import largeobjects_async
from files_app.archive import ArchiveError, member_names, zip_stream
from files_app.models import StoredFile

pytestmark = pytest.mark.django_db(transaction=True)

FILES = {
    "report.pdf": b"%PDF-1.4\n" + bytes(range(256)) * 300,
    "notes.txt": b"notes\n" * 1000,
    "empty.bin": b"",
}


@pytest.fixture
def owner() -> User:
    return User.objects.create_user("owner", password="x")


@pytest.fixture
def selection(store: Callable[..., StoredFile], owner: User) -> list[StoredFile]:
    return [store(data, name, owner=owner, public=False) for name, data in FILES.items()]


@pytest.fixture
def elsewhere(tmp_path: Any, settings: Any) -> Any:
    """A file-system storage files_move can take files to; return its directory."""
    settings.STORAGES = {
        **settings.STORAGES,
        "elsewhere": {
            "BACKEND": "django.core.files.storage.FileSystemStorage",
            "OPTIONS": {"location": str(tmp_path)},
        },
    }
    return tmp_path


def _move(stored: StoredFile) -> StoredFile:
    from django.core.management import call_command

    call_command(
        "files_move", "--to", "elsewhere", "--uuid", str(stored.uuid), stdout=io.StringIO()
    )
    stored.refresh_from_db()
    assert stored.storage == "elsewhere"
    return stored


def _zip_url(*files: StoredFile) -> str:
    return reverse("files_app:zip") + "?" + "&".join(f"file={f.uuid}" for f in files)


def _unpacked(body: bytes) -> dict[str, bytes]:
    with zipfile.ZipFile(io.BytesIO(body)) as archive:
        assert archive.testzip() is None  # every member's CRC-32 checks
        assert all(info.compress_type == zipfile.ZIP_STORED for info in archive.infolist())
        return {info.filename: archive.read(info) for info in archive.infolist()}


def _asgi_get(client: AsyncClient, url: str) -> tuple[Any, bytes, bool]:
    async def fetch() -> tuple[Any, bytes, bool]:
        try:
            response = await client.get(url)
            assert isinstance(response, StreamingHttpResponse)
            is_async = hasattr(response.streaming_content, "__aiter__")
            with warnings.catch_warnings():
                warnings.simplefilter("error")  # Django's "must consume synchronous iterators"
                body = b"".join([chunk async for chunk in response])
            return response, body, is_async
        finally:
            await largeobjects_async.close_pools()

    return async_to_sync(fetch)()


def test_member_names_are_safe_and_unique() -> None:
    names = member_names(
        [
            "a.txt",
            "A.TXT",
            "a.txt",
            "../../etc/passwd",
            "dir\\evil.exe",
            "..",
            "",
            "con:tr\x00ol?.txt",
            "x" * 300 + ".pdf",
            "caf\u0065\u0301.txt",  # decomposed é: stored composed
        ]
    )
    assert names[:3] == ["a.txt", "A (2).TXT", "a (3).txt"]
    assert names[3] == "_.._etc_passwd"
    assert names[4] == "dir_evil.exe"
    assert names[5:7] == ["file", "file (2)"]
    assert names[7] == "con_tr_ol_.txt"
    assert len(names[8]) <= 200 and names[8].endswith(".pdf")
    assert names[9] == "caf\u00e9.txt"
    assert all("/" not in name and "\\" not in name for name in names)


def test_the_view_streams_the_files_its_user_may_download(
    selection: list[StoredFile], owner: User, store: Callable[..., StoredFile]
) -> None:
    someone_elses = store(b"secret", "secret.txt", public=False)
    client = Client()
    client.force_login(owner)
    response = client.get(_zip_url(*selection, someone_elses))
    assert response.status_code == 200
    assert response["Content-Type"] == "application/zip"
    assert response["Content-Disposition"] == 'attachment; filename="files.zip"'
    body = b"".join(response.streaming_content)  # type: ignore[attr-defined]
    assert int(response["Content-Length"]) == len(body)  # known before the first byte
    # In the order asked for; the file the owner may not download is left out.
    assert list(_unpacked(body).items()) == list(FILES.items())


def test_the_view_refuses_what_names_no_file_it_may_serve(
    selection: list[StoredFile], owner: User
) -> None:
    url = reverse("files_app:zip")
    assert Client().get(_zip_url(*selection)).status_code == 404  # private, anonymous
    client = Client()
    client.force_login(owner)
    assert client.get(url).status_code == 400
    assert client.get(url + "?file=not-a-uuid").status_code == 400
    too_many = "&".join(f"file={selection[0].uuid}" for _ in range(1001))
    assert client.get(f"{url}?{too_many}").status_code == 400
    assert client.post(_zip_url(*selection)).status_code == 405


def test_under_asgi_the_archive_is_an_async_stream(
    selection: list[StoredFile], owner: User
) -> None:
    """A sync iterator under ASGI makes Django read the whole archive into a list first
    (with a warning): the response must be an async iterator."""
    client = AsyncClient()
    client.force_login(owner)
    response, body, is_async = _asgi_get(client, _zip_url(*selection))
    assert response.status_code == 200 and is_async
    assert int(response["Content-Length"]) == len(body)
    assert _unpacked(body) == FILES


def test_the_admin_action_streams_the_selection(
    selection: list[StoredFile], admin_client: Client
) -> None:
    response = admin_client.post(
        reverse("admin:files_app_storedfile_changelist"),
        {"action": "download_zip", "_selected_action": [str(f.pk) for f in selection]},
    )
    assert response.status_code == 200
    assert response["Content-Type"] == "application/zip"
    body = b"".join(response.streaming_content)  # type: ignore[attr-defined]
    assert _unpacked(body) == FILES


def test_twins_and_moved_files_are_read_where_they_are(
    store: Callable[..., StoredFile], elsewhere: Any
) -> None:
    first = store(b"same bytes", "one.txt")
    second = store(b"same bytes", "one.txt")  # dedupe: one object, two names
    moved = _move(store(b"moved away", "away.txt"))
    body = b"".join(zip_stream([first, second, moved]))
    assert _unpacked(body) == {
        "one.txt": b"same bytes",
        "one (2).txt": b"same bytes",
        "away.txt": b"moved away",
    }


def test_a_member_that_is_not_its_row_stops_the_archive(
    store: Callable[..., StoredFile], elsewhere: Any
) -> None:
    """A moved file whose copy changed size behind the app's back (a large object cannot:
    a trigger keeps rows true to them) ends the archive with an error instead of a member
    that is not the file."""
    stored = _move(store(b"twelve bytes", "a.bin"))
    (elsewhere / stored.storage_name).write_bytes(b"five!")
    with pytest.raises(ArchiveError, match="holds 5 bytes, not 12"):
        b"".join(zip_stream([stored]))
    (elsewhere / stored.storage_name).unlink()
    with pytest.raises(ArchiveError, match="has no data"):
        b"".join(zip_stream([stored]))


def test_a_large_selection_is_read_a_chunk_at_a_time(
    store: Callable[..., StoredFile], settings: Any
) -> None:
    """Members are opened when the archive reaches them and read a chunk at a time."""
    settings.FILES_APP_CHUNK_SIZE = 64 * 1024
    data = bytes(range(256)) * 4096  # 1 MiB
    files = [store(data, f"part{i}.bin") for i in range(3)]
    sizes = [len(chunk) for chunk in zip_stream(files)]
    assert max(sizes) <= 64 * 1024
    body = b"".join(zip_stream(files))
    unpacked = _unpacked(body)
    assert [hashlib.sha256(v).hexdigest() for v in unpacked.values()] == [files[0].sha256] * 3

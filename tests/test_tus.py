"""The tus 1.0 server (files_app.tus) in-process: the protocol's answers, durability of
each piece, checksums, termination, expiry. Real clients and servers (tuspy under gunicorn
and uvicorn, a dropped connection, a killed server): tests/reliability/test_tus.py."""

from __future__ import annotations

import base64
import hashlib
import io
import random
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from django.contrib.auth.models import Permission, User
from django.core.management import call_command
from django.test import Client
from django.utils import timezone

from files_app.digests import ResumableSHA256
from files_app.models import StoredFile, Upload

pytestmark = pytest.mark.django_db(transaction=True)

URL = "/files/uploads/"
TUS: dict[str, Any] = {"HTTP_TUS_RESUMABLE": "1.0.0"}
DATA = random.Random(15).randbytes(2 * 1024 * 1024 + 333)


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


@pytest.fixture
def staff(django_user_model: type[User]) -> Client:
    user = django_user_model.objects.create_user("staff", password="pw", is_staff=True)
    user.user_permissions.add(Permission.objects.get(codename="add_storedfile"))
    client = Client()
    client.force_login(user)
    return client


def create(client: Client, length: int, metadata: str | None = None, **extra: Any) -> str:
    headers = {**TUS, "HTTP_UPLOAD_LENGTH": str(length), **extra}
    if metadata is not None:
        headers["HTTP_UPLOAD_METADATA"] = metadata
    response = client.post(URL, **headers)
    assert response.status_code == 201, response.content
    return str(response["Location"])


def patch(client: Client, url: str, offset: int, data: bytes, **extra: Any) -> Any:
    return client.generic(
        "PATCH",
        url,
        data,
        content_type="application/offset+octet-stream",
        HTTP_UPLOAD_OFFSET=str(offset),
        **TUS,
        **extra,
    )


def test_options_says_what_the_server_supports(client: Client) -> None:
    response = client.options(URL)
    assert response.status_code == 204
    assert response["Tus-Version"] == "1.0.0"
    assert set(response["Tus-Extension"].split(",")) == {
        "creation",
        "creation-with-upload",
        "termination",
        "checksum",
        "expiration",
    }
    assert response["Tus-Checksum-Algorithm"] == "sha1,sha256"


def test_an_upload_in_pieces_becomes_a_stored_file(
    staff: Client, lo_count: Callable[[], int]
) -> None:
    objects = lo_count()
    url = create(staff, len(DATA), f"filename {b64('clip.mp4')},filetype {b64('video/mp4')}")
    assert url.startswith("http://testserver/files/uploads/")
    head = staff.head(url, **TUS)
    assert (head.status_code, head["Upload-Offset"], head["Upload-Length"]) == (
        200,
        "0",
        str(len(DATA)),
    )
    assert head["Cache-Control"] == "no-store" and "Upload-Expires" in head
    first = patch(staff, url, 0, DATA[:1000])
    assert (first.status_code, first["Upload-Offset"]) == (204, "1000")
    assert staff.head(url, **TUS)["Upload-Offset"] == "1000"
    last = patch(staff, url, 1000, DATA[1000:])
    assert (last.status_code, last["Upload-Offset"]) == (204, str(len(DATA)))
    stored = StoredFile.objects.get()
    assert (stored.name, stored.content_type, stored.size, stored.public) == (
        "clip.mp4",
        "video/mp4",
        len(DATA),
        False,
    )
    assert stored.sha256 == hashlib.sha256(DATA).hexdigest()
    assert stored.owner is not None and stored.owner.username == "staff"
    with stored.file.open() as opened:
        assert opened.read() == DATA
    assert not Upload.objects.exists()
    assert lo_count() == objects + 1  # the upload's object is the stored file's
    assert staff.head(url, **TUS).status_code == 404


def test_creation_with_upload_and_an_empty_file(staff: Client) -> None:
    response = staff.post(
        URL,
        DATA[:500],
        content_type="application/offset+octet-stream",
        HTTP_UPLOAD_LENGTH="800",
        HTTP_UPLOAD_METADATA=f"filename {b64('notes.txt')}",
        **TUS,
    )
    assert (response.status_code, response["Upload-Offset"]) == (201, "500")
    assert patch(staff, response["Location"], 500, DATA[500:800]).status_code == 204
    create(staff, 0, f"filename {b64('empty')}")
    assert sorted(StoredFile.objects.values_list("name", "size")) == [
        ("empty", 0),
        ("notes.txt", 800),
    ]


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({}, 400),  # no Upload-Length
        ({"HTTP_UPLOAD_LENGTH": "-1"}, 400),
        ({"HTTP_UPLOAD_LENGTH": "10", "HTTP_UPLOAD_METADATA": "key not-base64!"}, 400),
        ({"HTTP_UPLOAD_LENGTH": "10", "HTTP_UPLOAD_METADATA": "a 1,a 2"}, 400),
        ({"HTTP_UPLOAD_LENGTH": str(10**9)}, 413),
    ],
)
def test_bad_creations(staff: Client, settings: Any, headers: dict[str, Any], status: int) -> None:
    settings.FILES_APP_MAX_UPLOAD_SIZE = 10**6
    response = staff.post(URL, **TUS, **headers)
    assert response.status_code == status
    assert response["Content-Type"].startswith("text/plain") and response.content
    assert not Upload.objects.exists()


def test_bad_patches(staff: Client) -> None:
    url = create(staff, 100)
    assert patch(staff, url, 5, b"x").status_code == 409  # not where the upload is
    assert patch(staff, url, 0, b"x" * 101).status_code == 400  # past Upload-Length
    wrong_type = staff.generic("PATCH", url, b"x", content_type="text/plain", **TUS)
    assert wrong_type.status_code == 415
    no_offset = staff.generic(
        "PATCH", url, b"x", content_type="application/offset+octet-stream", **TUS
    )
    assert no_offset.status_code == 400
    assert staff.head(url, **TUS)["Upload-Offset"] == "0"
    assert staff.head(url).status_code == 412  # no Tus-Resumable


def test_who_may_upload(client: Client, django_user_model: type[User], staff: Client) -> None:
    assert client.post(URL, HTTP_UPLOAD_LENGTH="1", **TUS).status_code == 403
    plain = django_user_model.objects.create_user("plain", password="pw", is_staff=True)
    client.force_login(plain)  # staff without the add permission
    assert client.post(URL, HTTP_UPLOAD_LENGTH="1", **TUS).status_code == 403
    # Another user's upload is not there for them.
    url = create(staff, 10)
    plain.user_permissions.add(Permission.objects.get(codename="add_storedfile"))
    other = Client()
    other.force_login(django_user_model.objects.get(pk=plain.pk))
    assert other.head(url, **TUS).status_code == 404
    assert patch(other, url, 0, b"x").status_code == 404


@pytest.mark.parametrize("algorithm", ["sha1", "sha256"])
def test_checksums(staff: Client, algorithm: str) -> None:
    url = create(staff, 2000)
    good = base64.b64encode(hashlib.new(algorithm, DATA[:1000]).digest()).decode()
    bad = base64.b64encode(hashlib.new(algorithm, b"other").digest()).decode()
    refused = patch(staff, url, 0, DATA[:1000], HTTP_UPLOAD_CHECKSUM=f"{algorithm} {bad}")
    assert refused.status_code == 460
    assert staff.head(url, **TUS)["Upload-Offset"] == "0"  # nothing kept
    kept = patch(staff, url, 0, DATA[:1000], HTTP_UPLOAD_CHECKSUM=f"{algorithm} {good}")
    assert (kept.status_code, kept["Upload-Offset"]) == (204, "1000")
    unknown = patch(staff, url, 1000, DATA[1000:2000], HTTP_UPLOAD_CHECKSUM="md5 AAAA")
    assert unknown.status_code == 400


def test_termination_frees_the_object(staff: Client, lo_count: Callable[[], int]) -> None:
    objects = lo_count()
    url = create(staff, len(DATA))
    patch(staff, url, 0, DATA[:4096])
    assert lo_count() == objects + 1
    assert staff.delete(url, **TUS).status_code == 204
    assert lo_count() == objects
    assert staff.head(url, **TUS).status_code == 404


def test_expired_uploads_are_gone_and_swept(
    staff: Client, lo_count: Callable[[], int], settings: Any
) -> None:
    objects = lo_count()
    url = create(staff, 100)
    patch(staff, url, 0, b"x" * 10)
    Upload.objects.update(expires=timezone.now() - timedelta(seconds=1))
    assert patch(staff, url, 10, b"y").status_code == 410
    assert staff.head(url, **TUS).status_code == 410
    out = io.StringIO()
    call_command("files_sweep", stdout=out, stderr=io.StringIO())
    assert "Deleted 1 expired unfinished upload(s)." in out.getvalue()
    assert lo_count() == objects
    settings.FILES_APP_UPLOAD_EXPIRY = 60
    create(staff, 5)
    expires = Upload.objects.get().expires
    assert timedelta(seconds=55) < expires - timezone.now() <= timedelta(seconds=60)


def test_each_piece_is_durable_with_its_hash(staff: Client, settings: Any) -> None:
    settings.FILES_APP_CHUNK_SIZE = 256 * 1024
    url = create(staff, len(DATA))
    patch(staff, url, 0, DATA[:700_000])
    upload = Upload.objects.get()
    # Three pieces of 256 KiB and a short one: the offset and the hash of exactly them.
    assert upload.offset == 700_000
    resumed = ResumableSHA256(bytes(upload.sha256_state))
    resumed.update(DATA[700_000:])
    assert resumed.hexdigest() == hashlib.sha256(DATA).hexdigest()
    patch(staff, url, 700_000, DATA[700_000:])
    assert StoredFile.objects.get().sha256 == hashlib.sha256(DATA).hexdigest()


@pytest.mark.parametrize("python", [False, True])
def test_resumable_sha256_matches_hashlib(python: bool) -> None:
    data = random.Random(7).randbytes(10_000)
    for cuts in ([0], [1, 63, 64, 65], [3000, 3001, 9999]):
        hasher, done = ResumableSHA256(python=python), 0
        for cut in [*cuts, len(data)]:
            hasher.update(data[done:cut])
            # Resumed by the other implementation: one saved format.
            hasher = ResumableSHA256(hasher.state(), python=not python)
            done = cut
        assert hasher.hexdigest() == hashlib.sha256(data).hexdigest()
    with pytest.raises(ValueError):
        ResumableSHA256(b"\0" * 40 + b"x")


def test_the_sweeper_leaves_uploads_in_progress_alone(
    staff: Client, lo_count: Callable[[], int]
) -> None:
    url = create(staff, 20)
    patch(staff, url, 0, b"a" * 10)
    objects = lo_count()
    call_command("files_sweep", "--grace", "0", stdout=io.StringIO(), stderr=io.StringIO())
    assert lo_count() == objects
    assert patch(staff, url, 10, b"b" * 10).status_code == 204
    with StoredFile.objects.get().file.open() as opened:
        assert opened.read() == b"a" * 10 + b"b" * 10


def test_methods_each_url_does_not_take_are_405(staff: Client) -> None:
    url = create(staff, 10)
    for method, path in (("PATCH", URL), ("DELETE", URL), ("POST", url), ("GET", url)):
        response = staff.generic(method, path, b"", **TUS)
        assert response.status_code == 405, (method, path)
        assert "OPTIONS" in response["Allow"]
    assert staff.head(URL, **TUS).status_code == 405  # HEAD is for one upload


@pytest.mark.parametrize("length", ["9" * 30, str(5 * 1024**4)])
def test_without_a_limit_a_large_object_is_the_limit(
    staff: Client, settings: Any, length: str
) -> None:
    settings.FILES_APP_MAX_UPLOAD_SIZE = None
    response = staff.post(URL, HTTP_UPLOAD_LENGTH=length, **TUS)
    assert response.status_code == 413, response.content
    assert not Upload.objects.exists()

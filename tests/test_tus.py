"""The tus 1.0 server (files_app.tus) in-process: the protocol's answers, durability of
each piece, checksums, termination, expiry. Real clients and servers (tuspy under gunicorn
and uvicorn, a dropped connection, a killed server): tests/reliability/test_tus.py."""

from __future__ import annotations

import base64
import hashlib
import io
import logging
import random
import subprocess
import sys
import threading
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from django.contrib.auth.models import Permission, User
from django.core.management import call_command
from django.db import connection, connections, transaction
from django.test import Client
from django.utils import timezone

from files_app import digests
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


@pytest.mark.parametrize("length", ["9" * 20, str(5 * 1024**4)])
def test_without_a_limit_a_large_object_is_the_limit(
    staff: Client, settings: Any, length: str
) -> None:
    settings.FILES_APP_MAX_UPLOAD_SIZE = None
    response = staff.post(URL, HTTP_UPLOAD_LENGTH=length, **TUS)
    assert response.status_code == 413, response.content
    assert not Upload.objects.exists()


@pytest.mark.parametrize(("limit", "announced"), [(10**6, "1000000"), (None, str(4 * 1024**4))])
def test_options_announces_the_largest_upload(
    client: Client, settings: Any, limit: int | None, announced: str
) -> None:
    settings.FILES_APP_MAX_UPLOAD_SIZE = limit
    assert client.options(URL)["Tus-Max-Size"] == announced


def test_numbers_too_long_for_int_are_400(staff: Client) -> None:
    """Regression: int() refuses more than 4300 digits (a 500)."""
    digits = "1" * 5000
    assert staff.post(URL, HTTP_UPLOAD_LENGTH=digits, **TUS).status_code == 400
    url = create(staff, 100)
    assert patch(staff, url, 0, b"x").status_code == 204
    response = staff.generic(
        "PATCH",
        url,
        b"x",
        content_type="application/offset+octet-stream",
        HTTP_UPLOAD_OFFSET=digits,
        **TUS,
    )
    assert response.status_code == 400
    assert staff.head(url, **TUS)["Upload-Offset"] == "1"


@pytest.mark.parametrize("key", ["filename", "filetype", "other"])
def test_a_nul_in_metadata_is_400(staff: Client, key: str) -> None:
    """Regression: PostgreSQL's JSON refuses a NUL (a 500)."""
    metadata = f"{key} {b64('a' + chr(0) + 'b.txt')}"
    response = staff.post(URL, HTTP_UPLOAD_LENGTH="10", HTTP_UPLOAD_METADATA=metadata, **TUS)
    assert response.status_code == 400
    assert b"NUL" in response.content
    assert not Upload.objects.exists()


@pytest.mark.parametrize(
    ("body", "headers", "status"),
    [
        (b"x" * 20, {}, 400),  # longer than Upload-Length
        (b"x" * 5, {"HTTP_UPLOAD_CHECKSUM": "sha1 " + b64("wrong")}, 460),
        (b"x" * 5, {"HTTP_UPLOAD_CHECKSUM": "md5 AAAA"}, 400),
        (b"x" * 5, {"CONTENT_LENGTH": "five"}, 400),
        (b"x" * 5, {"CONTENT_LENGTH": "9" * 5000}, 400),
        # The body ends early (the client went away).
        (b"x" * 5, {"CONTENT_LENGTH": "8", "wsgi.input": io.BytesIO(b"x" * 5)}, 400),
    ],
)
def test_a_refused_creation_with_upload_keeps_nothing(
    staff: Client,
    lo_count: Callable[[], int],
    body: bytes,
    headers: dict[str, Any],
    status: int,
) -> None:
    objects = lo_count()
    response = staff.post(
        URL,
        body,
        content_type="application/offset+octet-stream",
        HTTP_UPLOAD_LENGTH="10",
        **TUS,
        **headers,
    )
    assert response.status_code == status, response.content
    assert "Location" not in response
    assert not Upload.objects.exists()
    assert lo_count() == objects


@pytest.mark.parametrize(
    ("sent", "stored"),
    [
        ("../../etc/passwd", "passwd"),
        ("/", "upload"),
        ("..", "upload"),
        ("a\r\nX-Injected: 1.txt", "aX-Injected: 1.txt"),
        ("dir/../notes\u202e.txt", "notes.txt"),
        ("a\\b.txt", "a\\b.txt"),  # backslashes stay in names (test_models)
        ("x" * 300 + ".txt", "x" * 251 + ".txt"),
    ],
)
def test_tus_file_names_follow_the_admin_upload_rules(
    staff: Client, sent: str, stored: str
) -> None:
    create(staff, 0, f"filename {b64(sent)}")
    assert StoredFile.objects.get().name == stored


class Interrupting(io.BytesIO):
    """A request body that runs ``interrupt`` once ``after`` bytes of it were read."""

    def __init__(self, data: bytes, after: int, interrupt: Callable[[], None]) -> None:
        super().__init__(data)
        self.after, self.interrupt = after, interrupt

    def read(self, size: int | None = -1) -> bytes:
        if self.tell() >= self.after and self.interrupt is not None:
            interrupt, self.interrupt = self.interrupt, None  # type: ignore[assignment]
            interrupt()
        return super().read(size)


@pytest.mark.parametrize("checksum", [False, True])
def test_a_later_head_stops_a_patch_in_flight(staff: Client, checksum: bool) -> None:
    """Regression: a dropped PATCH went on writing after HEAD answered, so the offset
    HEAD reported was stale and the client's resume got a 409."""
    body = DATA[: 1024 * 1024]
    url = create(staff, len(DATA))
    heads: list[str] = []
    cut = 5 * 64 * 1024  # five pieces (FILES_APP_CHUNK_SIZE) are in when HEAD comes

    def head() -> None:
        heads.append(staff.head(url, **TUS)["Upload-Offset"])

    extra: dict[str, Any] = {"wsgi.input": Interrupting(body, cut, head)}
    if checksum:
        digest = base64.b64encode(hashlib.sha1(body).digest()).decode()
        extra["HTTP_UPLOAD_CHECKSUM"] = f"sha1 {digest}"
    stopped = patch(staff, url, 0, body, **extra)
    assert stopped.status_code == 409, stopped.content
    assert heads == ["0" if checksum else str(cut)]
    # What HEAD said is final: the resume from there goes through.
    assert staff.head(url, **TUS)["Upload-Offset"] == heads[0]
    offset = int(heads[0])
    assert patch(staff, url, offset, DATA[offset:]).status_code == 204
    assert StoredFile.objects.get().sha256 == hashlib.sha256(DATA).hexdigest()


def test_a_delete_stops_a_patch_in_flight(staff: Client, lo_count: Callable[[], int]) -> None:
    objects = lo_count()
    url = create(staff, len(DATA))

    def delete() -> None:
        assert staff.delete(url, **TUS).status_code == 204

    body = DATA[: 1024 * 1024]
    stopped = patch(staff, url, 0, body, **{"wsgi.input": Interrupting(body, 64 * 1024, delete)})
    assert stopped.status_code == 404
    assert not Upload.objects.exists()
    assert lo_count() == objects


def test_a_request_waits_a_bounded_time_for_a_stuck_lock_then_gets_423(
    staff: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Regression: HEAD, PATCH and DELETE waited without limit for the upload's row lock,
    so the session of a server killed mid-piece left its client hanging until PostgreSQL
    noticed it was gone."""
    from files_app import tus

    monkeypatch.setattr(tus, "LOCK_WAIT", 0.5)
    url = create(staff, len(DATA))
    assert patch(staff, url, 0, DATA[:1000]).status_code == 204
    upload_id = Upload.objects.get().pk
    holding, release = threading.Event(), threading.Event()

    def stuck_session() -> None:  # a transaction that holds the row and does not end
        try:
            with transaction.atomic():
                Upload.objects.select_for_update().get(pk=upload_id)
                holding.set()
                release.wait(30)
        finally:
            connection.close()

    holder = threading.Thread(target=stuck_session)
    holder.start()
    try:
        assert holding.wait(10)
        for answer in (
            staff.head(url, **TUS),
            patch(staff, url, 1000, DATA[1000:2000]),
            staff.delete(url, **TUS),
        ):
            assert answer.status_code == 423, answer.content
            assert answer["Retry-After"] == str(tus.BUSY_RETRY_AFTER)
            assert answer["Tus-Resumable"] == "1.0.0"
            # (A HEAD's reason is not sent: a HEAD answer has no body.)
            assert answer.request["REQUEST_METHOD"] == "HEAD" or answer.content.startswith(
                b"This upload is busy: another request on it has held it for over 0.5 seconds."
            )
    finally:
        release.set()
        holder.join()
    # Nothing moved meanwhile; once the lock is let go, the upload goes on.
    assert staff.head(url, **TUS)["Upload-Offset"] == "1000"
    assert patch(staff, url, 1000, DATA[1000:]).status_code == 204
    assert StoredFile.objects.get().sha256 == hashlib.sha256(DATA).hexdigest()


def test_bytes_refused_by_their_checksum_are_overwritten(staff: Client) -> None:
    url = create(staff, len(DATA))
    junk = b"J" * 300_000
    wrong = patch(staff, url, 0, junk, HTTP_UPLOAD_CHECKSUM="sha256 " + b64("no"))
    assert wrong.status_code == 460
    assert staff.head(url, **TUS)["Upload-Offset"] == "0"
    assert patch(staff, url, 0, DATA[:1000]).status_code == 204
    assert patch(staff, url, 1000, DATA[1000:]).status_code == 204
    stored = StoredFile.objects.get()
    with stored.file.open() as opened:
        assert opened.read() == DATA


def test_pieces_commit_on_their_own_under_atomic_requests(
    staff: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A host with ATOMIC_REQUESTS: each piece is still durable when it is written (what
    another connection sees mid-PATCH), not only when the request ends."""
    monkeypatch.setitem(connection.settings_dict, "ATOMIC_REQUESTS", True)
    body = DATA[: 1024 * 1024]
    url = create(staff, len(DATA))
    cut = 5 * 64 * 1024  # five pieces (FILES_APP_CHUNK_SIZE) are in
    seen: list[int] = []

    def look_from_another_connection() -> None:
        def look() -> None:
            seen.append(Upload.objects.get().offset)
            connections.close_all()

        thread = threading.Thread(target=look)
        thread.start()
        thread.join(10)

    extra = {"wsgi.input": Interrupting(body, cut, look_from_another_connection)}
    assert patch(staff, url, 0, body, **extra).status_code == 204
    assert seen == [cut]
    assert staff.head(url, **TUS)["Upload-Offset"] == str(len(body))


def test_openssls_sha256_functions_are_used_here() -> None:
    # The resumable hash's fast path rests on OpenSSL's deprecated SHA256_* functions and a
    # hand-copied SHA256_CTX: this fails when they move, instead of a silent slow fallback.
    assert digests._openssl() is not None
    assert isinstance(ResumableSHA256()._hash, digests._OpenSSLSHA256)


def test_importing_the_digests_loads_no_openssl() -> None:
    script = "import files_app.digests as d; print(d._openssl.cache_info().currsize)"
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "0"


def test_an_openssl_that_hashes_wrong_is_not_used(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(digests._OpenSSLSHA256, "digest", lambda self: b"\0" * 32)
    digests._openssl.cache_clear()
    try:
        with caplog.at_level(logging.WARNING, logger="files_app"):
            hasher = ResumableSHA256()
            ResumableSHA256()
        assert isinstance(hasher._hash, digests._PythonSHA256)
        hasher.update(DATA[:1000])
        assert hasher.hexdigest() == hashlib.sha256(DATA[:1000]).hexdigest()
        assert [r.message for r in caplog.records].count(caplog.records[0].message) == 1
        assert "do not hash as hashlib does" in caplog.records[0].message
    finally:
        digests._openssl.cache_clear()

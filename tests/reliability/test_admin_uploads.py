"""Issue 11, points 3 and 4: odd add-form posts are a clear answer, never a 500; and nobody
gets a byte into PostgreSQL before being authenticated and authorised.
"""

from __future__ import annotations

from collections.abc import Callable
from unittest import mock

import pytest
from django.contrib.auth.models import Permission, User
from django.core.files.base import ContentFile
from django.test import Client

from files_app import largeobjects
from files_app.models import StoredFile

pytestmark = pytest.mark.django_db(transaction=True)

ADD = "/admin/files_app/storedfile/add/"
BOUNDARY = "b0undary"


@pytest.fixture
def admin() -> Client:
    client = Client()
    client.force_login(User.objects.create_superuser("admin", password="pw"))
    return client


def _multipart(*parts: bytes, close: bool = True) -> bytes:
    body = b"".join(b"--" + BOUNDARY.encode() + b"\r\n" + part + b"\r\n" for part in parts)
    return body + (b"--" + BOUNDARY.encode() + b"--\r\n" if close else b"")


def _field(name: str, value: bytes) -> bytes:
    return f'Content-Disposition: form-data; name="{name}"\r\n\r\n'.encode() + value


def _file(filename: bytes, data: bytes) -> bytes:
    return (
        b'Content-Disposition: form-data; name="file"; filename="' + filename + b'"\r\n'
        b"Content-Type: application/octet-stream\r\n\r\n" + data
    )


def _post(client: Client, body: bytes) -> int:
    response = client.generic(
        "POST", ADD, body, content_type=f"multipart/form-data; boundary={BOUNDARY}"
    )
    return response.status_code


ODD_BODIES = {
    "no file part": _multipart(_field("name", b"x")),
    "empty filename": _multipart(_file(b"", b""), _field("name", b"")),
    "empty body": b"",
    "only the closing boundary": b"--" + BOUNDARY.encode() + b"--\r\n",
    "cut mid-part": _multipart(_file(b"cut.bin", b"x" * 5000), close=False)[:-2000],
    "cut in the part headers": _multipart(_file(b"cut.bin", b"x"))[:40],
    "no boundary at all": b"just some bytes",
    "headers without a name": _multipart(b"Content-Disposition: form-data\r\n\r\nvalue"),
}


@pytest.mark.parametrize("body", ODD_BODIES.values(), ids=ODD_BODIES.keys())
def test_odd_add_posts_are_a_clear_4xx_and_leave_nothing(
    admin: Client, body: bytes, lo_count: Callable[[], int]
) -> None:
    before = lo_count()
    status = _post(admin, body)
    assert status in (200, 400), status  # 200: the form again, with its errors
    assert not StoredFile.objects.exists()
    assert lo_count() == before


def test_an_empty_add_form_says_a_file_is_required(admin: Client) -> None:
    response = admin.post(ADD, {"name": "x"})
    assert response.status_code == 200
    assert b"This field is required." in response.content


def test_a_filename_that_is_not_utf8_is_the_form_again_not_a_500(
    admin: Client, lo_count: Callable[[], int]
) -> None:
    # Django's parser drops a part whose headers are not UTF-8: no file reached the form.
    before = lo_count()
    response = admin.generic(
        "POST",
        ADD,
        _multipart(_file(b"caf\xe9 \xff.txt", b"latin-1 name")),
        content_type=f"multipart/form-data; boundary={BOUNDARY}",
    )
    assert response.status_code == 200
    assert b"This field is required." in response.content
    assert not StoredFile.objects.exists()
    assert lo_count() == before


# -- point 4: authenticate and authorise before a single byte is stored --------------------


def _no_large_object_may_be_created() -> mock._patch[mock.MagicMock]:
    return mock.patch.object(
        largeobjects, "create", side_effect=AssertionError("an object was created")
    )


@pytest.fixture
def stored() -> StoredFile:
    return StoredFile.objects.create(file=ContentFile(b"old", name="old.txt"))


CHOSEN_TOKEN = "k" * 32  # a CSRF cookie and token any client can choose for itself


def _upload_to(client: Client, url: str) -> int:
    client.cookies["csrftoken"] = CHOSEN_TOKEN
    body = _multipart(
        _field("csrfmiddlewaretoken", CHOSEN_TOKEN.encode()),
        _file(b"big.bin", b"x" * 100_000),
        _field("name", b"big.bin"),
    )
    return client.generic(
        "POST", url, body, content_type=f"multipart/form-data; boundary={BOUNDARY}"
    ).status_code


def test_an_anonymous_upload_stores_nothing(stored: StoredFile) -> None:
    with _no_large_object_may_be_created():
        assert _upload_to(Client(enforce_csrf_checks=True), ADD) == 302
        change = f"/admin/files_app/storedfile/{stored.pk}/change/"
        assert _upload_to(Client(enforce_csrf_checks=True), change) == 302


def test_a_user_who_is_not_staff_stores_nothing(stored: StoredFile) -> None:
    client = Client(enforce_csrf_checks=True)
    client.force_login(User.objects.create_user("visitor", password="pw"))
    with _no_large_object_may_be_created():
        assert _upload_to(client, ADD) == 302
        assert _upload_to(client, f"/admin/files_app/storedfile/{stored.pk}/change/") == 302


def test_staff_without_permission_stores_nothing(stored: StoredFile) -> None:
    staff = User.objects.create_user("staff", password="pw", is_staff=True)
    staff.user_permissions.add(Permission.objects.get(codename="view_storedfile"))
    client = Client(enforce_csrf_checks=True)
    client.force_login(staff)
    with _no_large_object_may_be_created():
        assert _upload_to(client, ADD) == 403
        assert _upload_to(client, f"/admin/files_app/storedfile/{stored.pk}/change/") == 403


def test_a_cross_site_post_stores_nothing(admin: Client) -> None:
    admin = Client(enforce_csrf_checks=True)
    admin.force_login(User.objects.get(username="admin"))
    admin.get(ADD)  # sets the CSRF cookie, as a victim's browser would have it
    body = _multipart(
        _field("csrfmiddlewaretoken", admin.cookies["csrftoken"].value.encode()),
        _file(b"big.bin", b"x" * 100_000),
    )
    with _no_large_object_may_be_created():
        response = admin.generic(
            "POST",
            ADD,
            body,
            content_type=f"multipart/form-data; boundary={BOUNDARY}",
            HTTP_ORIGIN="https://evil.example",
        )
    assert response.status_code == 403
    cookieless = Client(enforce_csrf_checks=True)
    cookieless.force_login(User.objects.get(username="admin"))
    with _no_large_object_may_be_created():
        response = cookieless.generic(
            "POST", ADD, body, content_type=f"multipart/form-data; boundary={BOUNDARY}"
        )  # no CSRF cookie at all
    assert response.status_code == 403


def test_staff_with_permission_still_uploads(lo_count: Callable[[], int]) -> None:
    staff = User.objects.create_user("staff", password="pw", is_staff=True)
    staff.user_permissions.add(Permission.objects.get(codename="add_storedfile"))
    client = Client(enforce_csrf_checks=True)
    client.force_login(staff)
    before = lo_count()
    assert _upload_to(client, ADD) == 302
    assert StoredFile.objects.get().size == 100_000
    assert lo_count() == before + 1

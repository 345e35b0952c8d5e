"""Any model's file served with ranges: FieldFileView, and get_file() returning a FieldFile
(issue 23, point 1)."""

from __future__ import annotations

import io
from collections.abc import Iterator

import pytest
from django.contrib.auth.models import User
from django.core.exceptions import ImproperlyConfigured
from django.core.files.base import ContentFile
from django.core.files.uploadedfile import SimpleUploadedFile
from django.http import HttpResponseBase, StreamingHttpResponse
from django.test import Client

from tests.testapp.models import Document, Photo

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.urls("tests.urls_fields")]

PDF = b"%PDF-1.4\n" + bytes(range(256)) * 40 + b"\n%%EOF\n"


def _png() -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (3, 2), (10, 20, 30)).save(buffer, "PNG")
    return buffer.getvalue()


def _body(response: HttpResponseBase) -> bytes:
    if isinstance(response, StreamingHttpResponse):
        return b"".join(response)
    return bytes(response.content)  # type: ignore[attr-defined]


@pytest.fixture
def photo() -> Iterator[Photo]:
    photo = Photo(image=SimpleUploadedFile("cat.png", _png()))
    photo.attachment.save("manual.pdf", ContentFile(PDF), save=False)
    photo.save()
    yield photo
    photo.image.delete(save=False)
    photo.attachment.delete(save=False)
    photo.delete()


def test_a_file_field_is_served_with_ranges_and_its_type(client: Client, photo: Photo) -> None:
    url = f"/photos/{photo.pk}/attachment"
    full = client.get(url)
    assert (full.status_code, _body(full)) == (200, PDF)
    assert full["Content-Type"] == "application/pdf"
    assert full["Content-Disposition"] == 'inline; filename="manual.pdf"'
    assert full["Accept-Ranges"] == "bytes"
    part = client.get(url, headers={"Range": "bytes=9-99"})
    assert (part.status_code, _body(part)) == (206, PDF[9:100])
    assert part["Content-Range"] == f"bytes 9-99/{len(PDF)}"
    assert client.get(url, headers={"If-None-Match": full["ETag"]}).status_code == 304
    resumed = client.get(url, headers={"Range": "bytes=-7", "If-Range": full["ETag"]})
    assert (resumed.status_code, _body(resumed)) == (206, PDF[-7:])
    head = client.head(url)
    assert (head.status_code, head["Content-Length"]) == (200, str(len(PDF)))


def test_an_image_field_is_served_as_an_image(client: Client, photo: Photo) -> None:
    response = client.get(f"/photos/{photo.pk}/image")
    assert (response.status_code, response["Content-Type"]) == (200, "image/png")
    assert _body(response) == _png()


def test_a_large_object_field_is_served(client: Client) -> None:
    document = Document.objects.create(title="t", attachment=ContentFile(b"0123456789", "x.bin"))
    try:
        response = client.get(f"/documents/{document.pk}/", headers={"Range": "bytes=2-4"})
        assert (response.status_code, _body(response)) == (206, b"234")
    finally:
        document.delete()


def test_get_file_may_return_the_field_file_itself(client: Client, photo: Photo) -> None:
    response = client.get(f"/natural/{photo.pk}/")
    assert (response.status_code, _body(response)) == (200, PDF)
    assert response["Content-Type"] == "application/pdf"


def test_has_permission_refuses_with_a_404(client: Client, photo: Photo) -> None:
    url = f"/staff/photos/{photo.pk}/attachment"
    assert client.get(url).status_code == 404
    staff = User.objects.create_user("staff", password="pw", is_staff=True)
    client.force_login(staff)
    assert _body(client.get(url)) == PDF


def test_no_row_or_no_file_is_a_404(client: Client, photo: Photo) -> None:
    assert client.get(f"/photos/{photo.pk + 1000}/attachment").status_code == 404
    bare = Photo.objects.create(image="photos/none.png", width=1, height=1)
    try:
        assert client.get(f"/photos/{bare.pk}/attachment").status_code == 404
    finally:
        bare.delete()


def test_a_field_that_is_not_a_file_field_says_so(photo: Photo) -> None:
    client = Client(raise_request_exception=True)
    with pytest.raises(ImproperlyConfigured, match="not a file field"):
        client.get(f"/misnamed/{photo.pk}/")

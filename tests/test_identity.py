"""A name reads only the object it names (issue 23, point 4), and a LargeObjectField keeps
its file's name and type with the object (point 5)."""

from __future__ import annotations

import io
import json
import re
from collections.abc import Callable, Iterator

import pytest
from django import forms
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import call_command
from django.db import connection
from django.http import HttpResponseBase, StreamingHttpResponse
from django.test import Client
from django.utils.datastructures import MultiValueDict

from files_app import largeobjects, maintenance
from files_app.storage import LargeObjectStorage, name_parts, oid_from_name
from tests.testapp.models import Document, Photo

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.urls("tests.urls_fields")]

PDF = b"%PDF-1.4\n" + bytes(range(256)) * 8 + b"\n%%EOF\n"


def _body(response: HttpResponseBase) -> bytes:
    if isinstance(response, StreamingHttpResponse):
        return b"".join(response)
    return bytes(response.content)  # type: ignore[attr-defined]


def _png(size: tuple[int, int] = (3, 2)) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", size, (10, 20, 30)).save(buffer, "PNG")
    return buffer.getvalue()


def _take_oid(oid: int, data: bytes, comment: str | None) -> None:
    """Make ``oid`` another object holding ``data``, as after a restore or a loaddata into
    a database where that OID is someone else's file."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT lo_from_bytea(%s::oid, %s)", [oid, data])
        if comment is not None:
            cursor.execute(f"COMMENT ON LARGE OBJECT {oid:d} IS '{comment}'")


FOREIGN = {
    "not files_app's": None,
    "files_app's, another key": largeobjects.Description(
        created_ms=1_700_000_000_000, key="zzzzzzzz", name="report.txt"
    ).comment(),
    "files_app's, from before keys": "files_app created=1700000000.000",
}


@pytest.fixture(params=list(FOREIGN))
def foreign(request: pytest.FixtureRequest) -> Iterator[Callable[[int], None]]:
    """Put someone else's object at an OID; unlinked after the test."""
    taken: list[int] = []

    def take(oid: int) -> None:
        _take_oid(oid, b"someone else's bytes", FOREIGN[request.param])
        taken.append(oid)

    yield take
    for oid in taken:
        largeobjects.unlink(oid, "default")


def test_a_name_reads_deletes_and_serves_only_its_own_object(
    client: Client, foreign: Callable[[int], None]
) -> None:
    name = default_storage.save("docs/report.txt", ContentFile(b"mine"))
    oid = oid_from_name(name)
    assert oid is not None and default_storage.exists(name)
    url = default_storage.url(name)
    photo = Photo(image="photos/1/a.png", width=1, height=1)
    photo.attachment.name = name
    photo.save()
    largeobjects.unlink(oid, "default")
    foreign(oid)

    assert not default_storage.exists(name)
    with pytest.raises(FileNotFoundError, match="not the file"):
        default_storage.open(name)
    with pytest.raises(FileNotFoundError, match="not the file"):
        default_storage.size(name)
    with pytest.raises(FileNotFoundError, match="not the file"):
        default_storage.get_created_time(name)
    assert client.get(url).status_code == 404
    assert client.get(f"/photos/{photo.pk}/attachment").status_code == 404
    photo.attachment.delete(save=False)  # deletes nothing of someone else's
    default_storage.delete(name)
    assert largeobjects.read(oid, 0, 100, "default") == b"someone else's bytes"
    photo.delete()


def test_names_from_before_keys_still_name_their_object_by_oid() -> None:
    name = default_storage.save("docs/old.txt", ContentFile(b"old"))
    oid = oid_from_name(name)
    for older in (f"docs/{oid}/old.txt", f"{oid}/old.txt", str(oid)):
        assert name_parts(older) == (oid, None)
        assert default_storage.exists(older)
        with default_storage.open(older) as opened:
            assert opened.read() == b"old"
    default_storage.delete(name)
    assert not default_storage.exists(f"docs/{oid}/old.txt")


NAMES = {
    "123": (123, None),
    "a/b/123/c.txt": (123, None),
    "123/c.txt": (123, None),
    "123-0a9z/c.txt": (123, "0a9z"),
    "dir/4294967295-abcdefgh/c.txt": (2**32 - 1, "abcdefgh"),
    "123-/c.txt": None,
    "123-ABC/c.txt": None,  # keys are lower case
    "123-abcdefghijk/c.txt": None,  # longer than a key
    "123-ab_c/c.txt": None,
    "-abc/c.txt": None,
    "a/b-c.txt": None,
    "4294967296-abc/x": None,
}


def test_name_parts_and_the_sweepers_sql_rule_agree() -> None:
    for name, expected in NAMES.items():
        assert name_parts(name) == expected, name
    with connection.cursor() as cursor:
        for name, expected in NAMES.items():
            cursor.execute("SELECT substring(%s FROM %s)", [name, maintenance.NAME_OID_PATTERN])
            (found,) = cursor.fetchone()
            if expected is None:
                # Only an out-of-range OID is read by SQL alone (it holds no object).
                assert found is None or int(found) >= 2**32, name
            else:
                assert int(found) == expected[0], name


def test_a_saved_name_carries_the_key_recorded_with_the_object() -> None:
    name = default_storage.save("docs/a b.pdf", ContentFile(PDF))
    oid, key = name_parts(name) or (0, None)
    described = largeobjects.describe(oid, "default")
    assert described is not None
    assert (described.key, described.name, described.content_type) == (
        key,
        "a b.pdf",
        "application/pdf",
    )
    assert name == f"docs/{oid}-{key}/a b.pdf"
    default_storage.delete(name)


def test_the_recorded_type_comes_from_the_name_then_the_declared_type() -> None:
    saved = {
        "a.pdf": SimpleUploadedFile("a.pdf", b"x", content_type="text/plain"),
        "b.unknownext": SimpleUploadedFile("b", b"x", content_type="application/x-thing"),
        "c.unknownext": SimpleUploadedFile("c", b"x", content_type="application/octet-stream"),
        "d.unknownext": SimpleUploadedFile("d", b"x", content_type="text/html\r\nX-Evil: 1"),
    }
    types = {}
    for name, content in saved.items():
        stored = default_storage.save(name, content)
        types[name] = largeobjects.describe(oid_from_name(stored) or 0, "default").content_type  # type: ignore[union-attr]
        default_storage.delete(stored)
    assert types == {
        "a.pdf": "application/pdf",
        "b.unknownext": "application/x-thing",
        "c.unknownext": None,
        "d.unknownext": None,
    }


@pytest.fixture
def document() -> Iterator[Document]:
    document = Document(title="invoice")
    document.attachment.save("inv.pdf", ContentFile(PDF))
    yield document
    Document.objects.filter(pk=document.pk).delete()


def test_a_large_object_field_keeps_its_file_name_and_type(
    client: Client, document: Document
) -> None:
    reloaded = Document.objects.get(pk=document.pk)
    file = reloaded.attachment
    assert file.name == str(file.oid)  # the column holds the OID
    assert (file.filename, file.content_type, str(file)) == (
        "inv.pdf",
        "application/pdf",
        "inv.pdf",
    )
    served = client.get(f"/documents/{document.pk}/", headers={"Range": "bytes=0-7"})
    assert (served.status_code, _body(served)) == (206, PDF[:8])
    assert served["Content-Type"] == "application/pdf"
    assert served["Content-Disposition"] == 'inline; filename="inv.pdf"'
    assert file.url.endswith("/inv.pdf")
    linked = client.get(file.url)
    assert (linked.status_code, linked["Content-Type"], _body(linked)) == (
        200,
        "application/pdf",
        PDF,
    )
    assert linked["Content-Disposition"] == 'inline; filename="inv.pdf"'
    form = forms.modelform_factory(Document, fields=["attachment"])(instance=reloaded)
    html = form.as_p()
    assert ">inv.pdf</a>" in html and f">{file.oid}</a>" not in html


def test_the_admin_shows_a_large_object_fields_file_name(
    admin_client: Client, document: Document
) -> None:
    page = admin_client.get(f"/admin/testapp/document/{document.pk}/change/")
    assert page.status_code == 200
    assert re.search(rb'<a href="[^"]+/inv\.pdf">inv\.pdf</a>', page.content)


def test_dumpdata_names_the_object_and_loaddata_refuses_another_at_its_oid(
    tmp_path: object, document: Document
) -> None:
    oid = document.attachment.oid
    assert oid is not None
    dumped = io.StringIO()
    call_command("dumpdata", "testapp.document", stdout=dumped)
    (row,) = json.loads(dumped.getvalue())
    key = largeobjects.describe(oid, "default").key  # type: ignore[union-attr]
    assert row["fields"]["attachment"] == f"{oid}-{key}/inv.pdf"
    fixture = tmp_path / "documents.json"  # type: ignore[operator]

    # The same database: the object is the one named; a second row may share it.
    row["pk"] = document.pk + 1000
    fixture.write_text(json.dumps([row]))
    call_command("loaddata", str(fixture), verbosity=0)
    copy = Document.objects.get(pk=row["pk"])
    assert (copy.attachment.oid, copy.attachment.read()) == (oid, PDF)

    # Another database, where that OID is someone else's object: refused, nothing kept.
    Document.objects.filter(pk__in=[document.pk, row["pk"]]).delete()
    assert largeobjects.describe(oid, "default") is None  # the last row freed it
    _take_oid(oid, b"someone else's bytes", None)
    try:
        with pytest.raises(Exception, match=f"Large object {oid} is not the file"):
            call_command("loaddata", str(fixture), verbosity=0)
        assert not Document.objects.filter(pk=row["pk"]).exists()
        assert largeobjects.read(oid, 0, 100, "default") == b"someone else's bytes"
    finally:
        largeobjects.unlink(oid, "default")


@pytest.mark.urls("tests.urls_forms")
def test_an_upload_records_its_name_and_type_when_a_row_adopts_it(client: Client) -> None:
    response = client.post(
        "/documents/add/",
        {"title": "up", "attachment": SimpleUploadedFile("Scan 1.pdf", PDF, "text/plain")},
    )
    assert response.status_code == 302, response.content[:500]
    document = Document.objects.get(title="up")
    assert (document.attachment.filename, document.attachment.content_type) == (
        "Scan_1.pdf",
        "application/pdf",
    )
    document.delete()


def test_an_image_field_on_large_objects_knows_its_dimensions() -> None:
    document = Document(title="cover")
    document.cover.save("cover.png", ContentFile(_png((5, 4))))
    reloaded = Document.objects.get(pk=document.pk)
    assert (reloaded.cover_width, reloaded.cover_height) == (5, 4)
    assert (reloaded.cover.width, reloaded.cover.height) == (5, 4)
    assert (str(reloaded.cover), reloaded.cover.content_type) == ("cover.png", "image/png")
    form_class = forms.modelform_factory(Document, fields=["cover"])
    refused = form_class(
        files=MultiValueDict({"cover": [SimpleUploadedFile("x.png", b"not an image")]})
    )
    assert not refused.is_valid() and "cover" in refused.errors
    reloaded.delete()
    assert largeobjects.describe(reloaded.cover.oid or 0, "default") is None


def test_a_name_with_another_key_names_nothing() -> None:
    storage = LargeObjectStorage(using="default")
    name = storage.save("x.txt", ContentFile(b"x"))
    oid = oid_from_name(name) or 0
    # The key and OID say which object: a name altered to another key names nothing.
    other = re.sub(r"-[0-9a-z]+/", "-0000aaaa/", name)
    assert storage.exists(name) and not storage.exists(other)
    storage.delete(other)
    assert storage.exists(name)
    storage.delete(name)
    assert largeobjects.describe(oid, "default") is None

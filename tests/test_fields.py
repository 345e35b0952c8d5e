"""LargeObjectField in a third-party-style app (tests.testapp), and FileFields on the storage."""

from __future__ import annotations

import io
from collections.abc import Callable

import pytest
from django import forms
from django.core.checks import Error
from django.core.files.base import ContentFile
from django.core.files.storage import FileSystemStorage
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import call_command
from django.db import connection, models
from django.test.utils import isolate_apps
from django.utils.datastructures import MultiValueDict
from PIL import Image

from files_app import largeobjects
from files_app.fields import LargeObjectField
from files_app.storage import LargeObjectStorage
from tests.testapp.models import Album, Document, Photo

pytestmark = pytest.mark.django_db(transaction=True)


def _column_type(table: str, column: str) -> str:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT data_type FROM information_schema.columns "
            "WHERE table_name = %s AND column_name = %s",
            [table, column],
        )
        return str(cursor.fetchone()[0])


def test_column_is_postgresql_oid() -> None:
    assert _column_type("testapp_document", "attachment") == "oid"
    assert _column_type("files_app_storedfile", "file") == "oid"


def test_migrations_are_up_to_date() -> None:
    call_command("makemigrations", "--check", "--dry-run", verbosity=0)


def test_deconstruct_keeps_only_what_differs_from_the_defaults() -> None:
    _, path, _, kwargs = LargeObjectField(null=True).deconstruct()
    assert path == "files_app.fields.LargeObjectField"
    assert kwargs == {"null": True, "upload_to": ""}
    custom = LargeObjectStorage(chunk_size=1024)
    _, _, _, kwargs = LargeObjectField(db_index=False, storage=custom).deconstruct()
    assert kwargs["db_index"] is False
    assert kwargs["storage"] is custom


def test_field_file_api(lo_count: Callable[[], int]) -> None:
    before = lo_count()
    doc = Document(title="t")
    doc.attachment.save("notes.txt", ContentFile(b"line 1\nline 2\n"))
    assert doc.attachment.name == str(doc.attachment.oid)
    doc.refresh_from_db()
    assert doc.attachment.size == 14
    with doc.attachment.open() as f:
        assert f.read() == b"line 1\nline 2\n"
    doc.attachment.open()
    assert list(doc.attachment.chunks(5))[0] == b"line "
    doc.attachment.close()
    assert doc.attachment.url.startswith("/files/lo/")
    assert lo_count() == before + 1
    doc.attachment.delete()
    doc.refresh_from_db()
    assert not doc.attachment
    assert lo_count() == before


def test_null_field_reads_back_as_empty() -> None:
    doc = Document.objects.create(title="empty")
    doc.refresh_from_db()
    assert not doc.attachment
    assert doc.attachment.name is None
    with connection.cursor() as cursor:
        cursor.execute("SELECT attachment FROM testapp_document WHERE id = %s", [doc.pk])
        assert cursor.fetchone()[0] is None


def test_oids_above_2_31_through_the_field() -> None:
    big = 2**31 + 104_729
    with connection.cursor() as cursor:
        cursor.execute("SELECT lo_create(%s::oid)", [big])
    largeobjects.write(big, 0, b"high", "default")
    doc = Document.objects.create(title="big", attachment=str(big))
    doc = Document.objects.get(pk=doc.pk)
    assert doc.attachment.oid == big
    assert Document.objects.filter(attachment=str(big)).count() == 1
    with doc.attachment.open() as f:
        assert f.read() == b"high"
    doc.delete()
    assert not largeobjects.exists(big, "default")


def test_invalid_name_is_refused() -> None:
    with pytest.raises(ValueError, match="does not name a large object"):
        Document.objects.create(title="bad", attachment="notes.txt")


class DocumentForm(forms.ModelForm):  # type: ignore[type-arg]
    class Meta:
        model = Document
        fields = ["title", "attachment"]


def test_model_form_upload_and_clear(lo_count: Callable[[], int]) -> None:
    before = lo_count()
    upload = SimpleUploadedFile("form.txt", b"from a form", content_type="text/plain")
    form = DocumentForm(data={"title": "f"}, files=MultiValueDict({"attachment": [upload]}))
    assert form.is_valid(), form.errors
    doc = form.save()
    assert lo_count() == before + 1
    with Document.objects.get(pk=doc.pk).attachment.open() as f:
        assert f.read() == b"from a form"
    # The admin's "clear" checkbox: the file goes, and with it the large object.
    form = DocumentForm(data={"title": "f", "attachment-clear": "on"}, instance=doc)
    assert form.is_valid(), form.errors
    form.save()
    assert not Document.objects.get(pk=doc.pk).attachment
    assert lo_count() == before


def test_admin_file_widget_shows_the_current_file() -> None:
    doc = Document(title="w")
    doc.attachment.save("w.txt", ContentFile(b"w"))
    html = str(DocumentForm(instance=doc)["attachment"])
    assert "Currently" in html and "/files/lo/" in html
    doc.delete()


@isolate_apps("tests.testapp")
def test_storage_other_than_large_objects_is_a_check_error() -> None:
    class Bad(models.Model):  # noqa: DJ008
        attachment = LargeObjectField(storage=FileSystemStorage())

        class Meta:
            app_label = "testapp"

    errors = Bad._meta.get_field("attachment").check()
    assert [e.id for e in errors if isinstance(e, Error)] == ["files_app.E101"]


def _png(width: int, height: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (200, 30, 30)).save(buffer, "PNG")
    return buffer.getvalue()


def test_plain_image_field_stores_in_large_objects_and_pillow_reads_it() -> None:
    photo = Photo(image=SimpleUploadedFile("cat.png", _png(37, 21)))
    photo.save()
    assert photo.image.name.startswith("photos/") and photo.image.name.endswith("/cat.png")
    assert isinstance(photo.image.storage, LargeObjectStorage)
    # ImageField asked Pillow for the dimensions, reading them from the large object.
    photo = Photo.objects.get(pk=photo.pk)
    assert (photo.width, photo.height) == (37, 21)
    assert (photo.image.width, photo.image.height) == (37, 21)
    with photo.image.open() as f, Image.open(f) as image:
        assert image.size == (37, 21)
    photo.image.delete(save=False)
    photo.delete()


def test_plain_file_field_with_upload_to_pattern() -> None:
    photo = Photo(image=SimpleUploadedFile("a.png", _png(1, 1)))
    photo.attachment.save("report.pdf", ContentFile(b"%PDF-1.4"), save=False)
    photo.save()
    assert photo.attachment.name.startswith("attachments/")
    assert photo.attachment.size == 8
    assert photo.attachment.url.endswith("/report.pdf")
    for field_file in (photo.image, photo.attachment):
        field_file.delete(save=False)
    photo.delete()


def test_cascade_from_another_apps_model_frees_objects(lo_count: Callable[[], int]) -> None:
    before = lo_count()
    album = Album.objects.create(title="a")
    for i in range(3):
        doc = Document(album=album, title=str(i))
        doc.attachment.save(f"{i}.txt", ContentFile(b"x" * i), save=True)
    assert lo_count() == before + 3
    album.delete()
    assert lo_count() == before


def test_field_falls_back_to_its_own_storage_when_the_default_is_not_large_objects(
    tmp_path: object,
) -> None:
    from django.test import override_settings

    filesystem = {
        "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
        "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
    }
    with override_settings(STORAGES=filesystem):
        field = LargeObjectField()
        assert isinstance(field.storage, LargeObjectStorage)
        assert LargeObjectField().storage is field.storage

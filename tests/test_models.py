"""StoredFile: metadata computed while streaming in, and no orphaned large object, ever."""

from __future__ import annotations

import hashlib
from collections.abc import Callable

import pytest
from django import forms
from django.contrib.auth.models import User
from django.core.exceptions import ValidationError
from django.core.files.base import ContentFile
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import DataError, connection, transaction
from django.test import Client
from django.utils.datastructures import MultiValueDict

from files_app import largeobjects
from files_app.models import StoredFile

pytestmark = pytest.mark.django_db(transaction=True)

PNG_HEAD = b"\x89PNG\r\n\x1a\n" + b"\0" * 100


def _store(data: bytes = b"hello", name: str = "hello.txt", **kwargs: object) -> StoredFile:
    stored = StoredFile(file=ContentFile(data, name=name), **kwargs)
    stored.save()
    return stored


def test_save_computes_size_sha256_name_and_type() -> None:
    data = b"some text\n" * 10_000
    stored = _store(data, "notes.txt")
    stored.refresh_from_db()
    assert stored.size == len(data)
    assert stored.sha256 == hashlib.sha256(data).hexdigest()
    assert stored.name == "notes.txt"
    assert stored.content_type == "text/plain"
    assert stored.etag == f'"{stored.sha256}"'
    assert stored.get_absolute_url() == f"/files/{stored.uuid}/notes.txt"
    with stored.file.open() as f:
        assert f.read() == data


@pytest.mark.parametrize(
    ("declared", "head", "name", "expected"),
    [
        ("video/mp4", b"whatever", "x.bin", "video/mp4"),
        ("", PNG_HEAD, "noext", "image/png"),
        ("application/octet-stream", PNG_HEAD, "pic.dat", "image/png"),
        ("", b"\x00\x01\x02binary", "data.csv", "text/csv"),
        ("", b"plain words", "README", "text/plain"),
        ("", b"\x00\xff\x00\xfe", "blob", "application/octet-stream"),
        ("Text/HTML; charset=utf-8", b"<p>", "a.html", "text/html"),
    ],
)
def test_content_type_is_declared_else_sniffed_else_guessed(
    declared: str, head: bytes, name: str, expected: str
) -> None:
    upload = SimpleUploadedFile(name, head, content_type=declared)
    stored = StoredFile(file=upload)
    stored.save()
    assert stored.content_type == expected


def test_public_uuid_not_oid_in_urls() -> None:
    stored = _store()
    assert str(stored.file.oid) not in stored.get_absolute_url()
    assert str(stored.uuid) in stored.get_absolute_url()


def test_replacing_the_file_frees_the_old_object_once_saved(lo_count: Callable[[], int]) -> None:
    stored = _store(b"old", "old.txt")
    old_oid = stored.file.oid
    before = lo_count()
    stored = StoredFile.objects.get(pk=stored.pk)
    stored.file = SimpleUploadedFile("new.png", PNG_HEAD, content_type="image/png")
    stored.save()
    assert not largeobjects.exists(old_oid, "default")
    assert lo_count() == before
    stored.refresh_from_db()
    assert (stored.name, stored.content_type, stored.size) == ("new.png", "image/png", 108)


def test_replacing_keeps_a_name_edited_in_the_same_save() -> None:
    stored = StoredFile.objects.get(pk=_store(b"old", "old.txt").pk)
    stored.name = "chosen.txt"
    stored.file = SimpleUploadedFile("upload.txt", b"new")
    stored.save()
    assert stored.name == "chosen.txt"


def test_a_failed_replacement_keeps_the_old_object(lo_count: Callable[[], int]) -> None:
    stored = _store(b"old", "old.txt")
    old_oid = stored.file.oid
    before = lo_count()
    stored = StoredFile.objects.get(pk=stored.pk)
    stored.file = SimpleUploadedFile("new.txt", b"new")
    stored.name = "x" * 300  # too long for the column: the UPDATE fails
    with pytest.raises(DataError):
        stored.save()
    assert largeobjects.exists(old_oid, "default")
    assert lo_count() == before


def test_a_failed_insert_leaves_no_object(lo_count: Callable[[], int]) -> None:
    before = lo_count()
    with pytest.raises(DataError):
        StoredFile(file=ContentFile(b"data", name="a.txt"), name="x" * 300).save()  # too long
    assert lo_count() == before
    with pytest.raises(ValueError, match="longer than 255"):
        _store(b"data", "a.txt", content_type="x/" + "x" * 300)  # refused after the write
    assert lo_count() == before


def test_long_upload_names_are_shortened_keeping_the_extension() -> None:
    stored = _store(b"data", "n" * 400 + ".tar.gz")
    assert len(stored.name) == 255 and stored.name.endswith("n.gz")
    stored = _store(b"data", "n" * 200 + "." + "e" * 200)
    assert stored.name == ("n" * 200 + "." + "e" * 200)[:255]


def test_backslashes_stay_in_names() -> None:
    assert _store(b"data", "a\\b.txt").name == "a\\b.txt"


def test_instance_delete_frees_the_object(lo_count: Callable[[], int]) -> None:
    before = lo_count()
    stored = _store()
    assert lo_count() == before + 1
    stored.delete()
    assert lo_count() == before


def test_queryset_delete_frees_every_object(lo_count: Callable[[], int]) -> None:
    before = lo_count()
    for i in range(5):
        _store(str(i).encode(), f"{i}.txt")
    assert lo_count() == before + 5
    StoredFile.objects.all().delete()
    assert lo_count() == before


def test_owner_cascade_frees_the_objects(lo_count: Callable[[], int]) -> None:
    owner = User.objects.create_user("owner")
    before = lo_count()
    _store(owner=owner)
    _store(owner=owner)
    owner.delete()
    assert lo_count() == before


def test_raw_sql_delete_and_update_free_the_objects(lo_count: Callable[[], int]) -> None:
    before = lo_count()
    first, second = _store(b"1"), _store(b"2")
    replacement = largeobjects.create("default")
    with connection.cursor() as cursor:
        cursor.execute("DELETE FROM files_app_storedfile WHERE id = %s", [first.pk])
        cursor.execute(
            "UPDATE files_app_storedfile SET file = %s, size = 0 WHERE id = %s",
            [replacement, second.pk],
        )
    assert not largeobjects.exists(first.file.oid, "default")
    assert not largeobjects.exists(second.file.oid, "default")
    assert lo_count() == before + 1  # only the replacement is left
    StoredFile.objects.all().delete()
    assert lo_count() == before


def test_an_object_shared_by_two_rows_lives_until_the_last_goes() -> None:
    first = _store()
    second = StoredFile.objects.create(file=first.file.name, name="copy", sha256=first.sha256)
    first.delete()
    assert largeobjects.exists(second.file.oid, "default")
    second.delete()
    assert not largeobjects.exists(second.file.oid, "default")


def test_deleting_a_row_whose_object_is_already_gone_works() -> None:
    stored = _store()
    largeobjects.unlink(stored.file.oid, "default")
    stored.delete()  # the trigger tolerates the missing object
    assert not StoredFile.objects.filter(pk=stored.pk).exists()


def test_a_rollback_after_the_object_was_written_leaves_nothing(
    lo_count: Callable[[], int],
) -> None:
    before = lo_count()
    with pytest.raises(RuntimeError), transaction.atomic():
        _store(b"x" * 100_000)
        raise RuntimeError("the view failed after saving")
    assert lo_count() == before
    assert not StoredFile.objects.exists()


class StrictForm(forms.ModelForm):  # type: ignore[type-arg]
    class Meta:
        model = StoredFile
        fields = ["file", "name"]

    def clean_name(self) -> str:
        name = str(self.cleaned_data["name"])
        if name == "forbidden":
            raise ValidationError("This name is not allowed.")
        return name


def test_a_form_that_fails_validation_stores_nothing(lo_count: Callable[[], int]) -> None:
    before = lo_count()
    form = StrictForm(
        data={"name": "forbidden"},
        files=MultiValueDict({"file": [SimpleUploadedFile("a.txt", b"abc")]}),
    )
    assert not form.is_valid()
    assert lo_count() == before


def test_admin_bulk_delete_frees_the_objects(lo_count: Callable[[], int]) -> None:
    admin = User.objects.create_superuser("admin", password="pw")
    before = lo_count()
    stored = [_store(str(i).encode(), f"{i}.txt") for i in range(3)]
    client = Client()
    client.force_login(admin)
    response = client.post(
        "/admin/files_app/storedfile/",
        {
            "action": "delete_selected",
            "_selected_action": [s.pk for s in stored],
            "post": "yes",
        },
    )
    assert response.status_code == 302
    assert not StoredFile.objects.exists()
    assert lo_count() == before

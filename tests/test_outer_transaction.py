"""Uploads saved inside a transaction the request does not own (issue 21, point 3).

pytest-django's and Django's ``TestCase`` wrap each test in one atomic block that never
commits; ``ATOMIC_REQUESTS`` and views under ``transaction.atomic()`` do the same for a
request. A file uploaded through ``LargeObjectUploadHandler`` and saved there must keep its
large object as long as that transaction does; a rollback may take it, a commit keeps it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import transaction
from django.test import Client, TestCase, override_settings

from files_app import largeobjects
from files_app.models import StoredFile
from tests.testapp.models import Document, Photo

DATA = bytes(range(256)) * 1000


def _upload(name: str = "report.pdf") -> SimpleUploadedFile:
    return SimpleUploadedFile(name, DATA, "application/pdf")


@override_settings(ROOT_URLCONF="tests.urls_forms")
class UploadsInATestCase(TestCase):
    """What an adopter writes first: a TestCase that posts a form and reads the file."""

    def test_a_model_form_upload_keeps_its_object(self) -> None:
        with self.captureOnCommitCallbacks(execute=True):
            response = self.client.post("/documents/add/", {"title": "t", "attachment": _upload()})
        assert response.status_code == 302, response.content
        document = Document.objects.get()
        assert document.attachment.storage.exists(document.attachment.name)
        with document.attachment.open() as opened:
            assert opened.read() == DATA

    def test_a_plain_file_field_upload_keeps_its_object(self) -> None:
        response = self.client.post("/photos/add/", {"attachment": _upload("a.txt")})
        assert response.status_code == 302, response.content
        photo = Photo.objects.get()
        assert photo.attachment.name.startswith("attachments/")
        assert photo.attachment.storage.exists(photo.attachment.name)
        with photo.attachment.open() as opened:
            assert opened.read() == DATA

    def test_an_admin_upload_keeps_its_object(self) -> None:
        admin = User.objects.create_superuser("admin", password="pw")
        self.client.force_login(admin)
        with self.captureOnCommitCallbacks(execute=True):
            response = self.client.post(
                "/admin/files_app/storedfile/add/",
                {"file": _upload(), "name": "", "content_type": "", "public": "on"},
            )
        assert response.status_code == 302, response.content
        stored = StoredFile.objects.get()
        assert largeobjects.exists(stored.file.oid, "default")
        download = self.client.get(stored.get_absolute_url())
        assert b"".join(download.streaming_content) == DATA  # type: ignore[attr-defined]

    def test_a_form_error_still_leaves_no_object(self) -> None:
        before = _objects()
        response = self.client.post(
            "/documents/add/", {"title": "x" * 101, "attachment": _upload()}
        )
        assert response.status_code == 200  # the form, with its error
        assert _objects() == before


def _objects() -> int:
    from files_app import maintenance

    return maintenance.count("default")


@pytest.mark.django_db(transaction=True)
@override_settings(ROOT_URLCONF="tests.urls_forms")
def test_an_atomic_view_keeps_the_object_when_it_commits(client: Client) -> None:
    response = client.post("/atomic/documents/add/", {"title": "t", "attachment": _upload()})
    assert response.status_code == 302, response.content
    document = Document.objects.get()
    with document.attachment.open() as opened:
        assert opened.read() == DATA
    document.delete()


@pytest.mark.django_db(transaction=True)
def test_a_save_rolled_back_with_its_outer_transaction_leaves_nothing(
    lo_count: Callable[[], int], rf: Any
) -> None:
    from files_app.storage import LargeObjectUploadedFile
    from files_app.uploadhandler import LargeObjectUploadHandler

    before = lo_count()
    request = rf.post("/", {"file": _upload()})
    request.upload_handlers = [LargeObjectUploadHandler(request)]
    upload = request.FILES["file"]
    assert isinstance(upload, LargeObjectUploadedFile)

    class Undo(Exception):
        pass

    with pytest.raises(Undo), transaction.atomic():
        Document(title="t", attachment=upload).save()
        raise Undo  # the outer transaction rolls back after the save
    upload.close()
    assert lo_count() == before

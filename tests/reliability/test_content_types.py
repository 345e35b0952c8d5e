"""Issue 11, points 1 and 2: content types are parsed and normalised when saved and when
served. However a type is spelled, active content (HTML, SVG, XML, scripts) is never served
inline or outside a CSP sandbox, and a CR/LF in a type is refused, never a 500.
"""

from __future__ import annotations

import pytest
from django.contrib.auth.models import User
from django.core.files.base import ContentFile
from django.db import connection
from django.test import Client

from files_app.models import StoredFile

pytestmark = pytest.mark.django_db(transaction=True)

HTML = b"<script>alert(document.cookie)</script>\n"
SPELLINGS = [
    ("text/html ; charset=utf-8", "text/html; charset=utf-8"),
    ("image/svg+xml ;", "image/svg+xml"),
    ("text/html\t; x=y", "text/html; x=y"),
    ("application/xhtml+xml ;a=b", "application/xhtml+xml; a=b"),
    ("TEXT/HTML", "text/html"),
    (" text/html ", "text/html"),
    ('text/html; charset="UTF-8"', "text/html; charset=utf-8"),
    ("text/xml;;", "text/xml"),
    ("application/vnd.evil+xml", "application/vnd.evil+xml"),
    ("video/x-evil+xml", "video/x-evil+xml"),
    ("application/javascript", "application/javascript"),
    ("multipart/x-mixed-replace; boundary=x", "multipart/x-mixed-replace; boundary=x"),
]


@pytest.fixture
def admin() -> Client:
    client = Client()
    client.force_login(User.objects.create_superuser("admin", password="pw"))
    return client


def _change(admin: Client, stored: StoredFile, content_type: str) -> int:
    response = admin.post(
        f"/admin/files_app/storedfile/{stored.pk}/change/",
        {"name": stored.name, "content_type": content_type, "public": "on", "owner": ""},
    )
    return response.status_code


def _assert_never_runs(stored: StoredFile) -> None:
    response = Client().get(stored.get_absolute_url())
    assert response.status_code == 200
    assert response["Content-Disposition"].startswith("attachment;")
    assert response["Content-Security-Policy"] == "sandbox"
    assert response["X-Content-Type-Options"] == "nosniff"
    response.getvalue()


@pytest.mark.parametrize(("spelling", "normal"), SPELLINGS)
def test_active_types_set_in_the_change_form_are_normalised_and_sandboxed(
    admin: Client, spelling: str, normal: str
) -> None:
    stored = StoredFile.objects.create(file=ContentFile(HTML, name="a.txt"), public=True)
    assert _change(admin, stored, spelling) == 302
    stored.refresh_from_db()
    assert stored.content_type == normal
    _assert_never_runs(stored)


@pytest.mark.parametrize(("spelling", "normal"), SPELLINGS)
def test_active_types_written_behind_the_apps_back_are_still_sandboxed(
    spelling: str, normal: str
) -> None:
    stored = StoredFile.objects.create(file=ContentFile(HTML, name="a.txt"), public=True)
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE files_app_storedfile SET content_type = %s WHERE id = %s",
            [spelling, stored.pk],
        )
    _assert_never_runs(stored)
    response = Client().get(stored.get_absolute_url())
    assert response["Content-Type"] == normal
    response.getvalue()


@pytest.mark.parametrize(
    "bad",
    [
        "text/plain\r\nSet-Cookie: a=b",
        "text/plain\nX: y",
        "text/html\x00",
        "text/plain; charset=\u00e9",
        "text",
        "/plain",
        "text/plain; a",
        'text/plain; a="unterminated',
        "text/plain, text/html",
    ],
)
def test_a_content_type_that_is_not_one_is_refused_by_the_form(admin: Client, bad: str) -> None:
    stored = StoredFile.objects.create(file=ContentFile(b"hello", name="a.txt"), public=True)
    response = admin.post(
        f"/admin/files_app/storedfile/{stored.pk}/change/",
        {"name": stored.name, "content_type": bad, "public": "on", "owner": ""},
    )
    assert response.status_code == 200
    assert b"is not a media type" in response.content or b"Null characters" in response.content
    stored.refresh_from_db()
    assert stored.content_type == "text/plain"


@pytest.mark.parametrize("bad", ["text/plain\r\nSet-Cookie: a=b", "text/html\x00", "\u00e9/x"])
def test_a_broken_type_in_the_row_is_served_as_bytes_not_a_500(bad: str) -> None:
    stored = StoredFile.objects.create(file=ContentFile(b"hello", name="a.txt"), public=True)
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE files_app_storedfile SET content_type = %s WHERE id = %s",
            [bad.replace("\x00", "\x01"), stored.pk],
        )
    for method, status in (("get", 206), ("head", 200)):
        response = getattr(Client(), method)(stored.get_absolute_url(), HTTP_RANGE="bytes=0-1")
        assert response.status_code == status
        assert response["Content-Type"] == "application/octet-stream"
        assert response["Content-Disposition"].startswith("attachment;")
        assert "\n" not in str(response.headers) and "Set-Cookie" not in response
        response.getvalue()


def test_saving_a_broken_type_in_code_fails_loudly() -> None:
    with pytest.raises(ValueError, match="is not a media type"):
        StoredFile(file=ContentFile(b"x", name="a"), content_type="text/plain\r\nX: y").save()
    with pytest.raises(ValueError, match="is not a media type"):
        StoredFile.objects.filter(pk=0).update(content_type="a\nb")
    assert not StoredFile.objects.exists()


@pytest.mark.parametrize(
    ("content_type", "inline"),
    [
        ("image/png", True),
        ("video/mp4", True),
        ("audio/ogg", True),
        ("application/pdf", True),
        ("text/plain; charset=utf-8", True),
        ("image/svg+xml", False),
        ("text/html", False),
        ("application/json", False),
        ("application/octet-stream", False),
    ],
)
def test_only_passive_types_are_inline(content_type: str, inline: bool) -> None:
    stored = StoredFile.objects.create(
        file=ContentFile(b"\x00\x01", name="f"), content_type=content_type, public=True
    )
    response = Client().get(stored.get_absolute_url())
    assert response["Content-Disposition"].startswith("inline;" if inline else "attachment;")
    assert ("Content-Security-Policy" not in response) is inline
    response.getvalue()

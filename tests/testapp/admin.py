"""The reusing app's own admin: a LargeObjectField shown as its file's name."""

from __future__ import annotations

from django.contrib import admin

from tests.testapp.models import Document

admin.site.register(Document)

"""A third-party-style app that reuses files_app: the proof that the app is reusable."""

from __future__ import annotations

from django.db import models

from files_app.fields import LargeObjectField, LargeObjectImageField


class Album(models.Model):
    title = models.CharField(max_length=100)

    def __str__(self) -> str:
        return self.title


class Document(models.Model):
    """A model of another app with its own LargeObjectField."""

    album = models.ForeignKey(Album, null=True, blank=True, on_delete=models.CASCADE)
    title = models.CharField(max_length=100, blank=True)
    attachment = LargeObjectField(null=True, blank=True)
    cover = LargeObjectImageField(
        null=True, blank=True, width_field="cover_width", height_field="cover_height"
    )
    cover_width = models.PositiveIntegerField(null=True, blank=True)
    cover_height = models.PositiveIntegerField(null=True, blank=True)

    def __str__(self) -> str:
        return self.title


class Photo(models.Model):
    """Plain FileField/ImageField columns (varchar) stored through STORAGES["default"]."""

    album = models.ForeignKey(Album, null=True, blank=True, on_delete=models.CASCADE)
    image = models.ImageField(upload_to="photos/", width_field="width", height_field="height")
    width = models.PositiveIntegerField(null=True, blank=True)
    height = models.PositiveIntegerField(null=True, blank=True)
    attachment = models.FileField(upload_to="attachments/%Y/", blank=True)

    def __str__(self) -> str:
        return str(self.image.name)

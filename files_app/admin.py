"""Admin pages for stored files: upload (several at once), browse, preview, replace, share."""

from __future__ import annotations

from contextvars import ContextVar
from datetime import timedelta
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.helpers import ActionForm
from django.contrib.admin.utils import unquote
from django.contrib.admin.widgets import AdminFileWidget
from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import PermissionDenied
from django.core.files.uploadedfile import UploadedFile
from django.core.paginator import Paginator
from django.db import router
from django.db.models import QuerySet
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseBase, HttpResponseRedirect
from django.template.defaultfilters import filesizeformat
from django.template.response import TemplateResponse
from django.urls import NoReverseMatch, URLPattern, path, reverse
from django.utils import timezone
from django.utils.formats import date_format
from django.utils.functional import cached_property
from django.utils.html import format_html, format_html_join
from django.views.decorators.csrf import csrf_exempt

from files_app import archive, catalogue, quotas
from files_app.conf import app_settings
from files_app.csrf import reject_before_body
from files_app.models import ShareLink, StoredFile, TrashedFile, UserQuota
from files_app.uploadhandler import LargeObjectUploadHandler, UploadTooLarge

__all__ = ["StoredFileAdmin"]

SHARE_EXPIRY_CHOICES = [
    ("3600", "1 hour"),
    ("86400", "1 day"),
    ("604800", "7 days"),
    ("2592000", "30 days"),
]


class MultipleFileInput(forms.ClearableFileInput):
    allow_multiple_selected = True


class MultipleFileField(forms.FileField):
    """A file field that accepts several files at once."""

    widget = MultipleFileInput

    def clean(self, data: Any, initial: Any = None) -> Any:
        if isinstance(data, list | tuple):
            if not data:  # no file part, or only empty ones: as a single empty input
                return [super().clean(None, initial)]
            return [super(MultipleFileField, self).clean(item, initial) for item in data]
        return [super().clean(data, initial)]


# The user of the admin page being rendered: its links to files are signed URLs for them
# (StoredFile.signed_url), which play and seek without a session query per range.
_page_user: ContextVar[Any] = ContextVar("files_app_admin_user")


def download_url(stored: StoredFile) -> str:
    """Return the URL an admin page links ``stored``'s download with: a signed URL for the
    page's user, or the download URL outside a page."""
    user = _page_user.get(None)
    return stored.get_absolute_url() if user is None else stored.signed_url(user)


def _rendered_for(request: HttpRequest, view: Any) -> HttpResponse:
    """Return ``view()``'s response, rendered while its links are made for the user."""
    token = _page_user.set(request.user)
    try:
        response: HttpResponse = view()
        if isinstance(response, TemplateResponse):
            response.render()
        return response
    finally:
        _page_user.reset(token)


class _CurrentFile:
    """What the change form shows as "Currently": the file's name, linking to its download."""

    def __init__(self, stored: StoredFile) -> None:
        self.url = download_url(stored)
        self.name = stored.name

    def __str__(self) -> str:
        return self.name


class StoredFileWidget(AdminFileWidget):
    """The change form's file input; its "Currently" names the file, not its OID."""

    def format_value(self, value: Any) -> Any:
        value = super().format_value(value)
        stored = getattr(value, "instance", None)
        if isinstance(stored, StoredFile) and stored.pk is not None:
            return _CurrentFile(stored)
        return value


class QuotaCheckedForm(forms.ModelForm):  # type: ignore[type-arg]
    """A form whose uploaded files are checked against the uploader's quota a last time
    in the transaction that saves them (files_app.quotas): the upload handler checked
    each request against the room it saw when the body started, and two uploads in
    flight at once may each fit that room but not together."""

    uploader: Any = None  # set by StoredFileAdmin.get_form: the request's user
    extra_files: list[Any] = []

    def clean(self) -> dict[str, Any] | None:
        cleaned = super().clean()
        uploads = [self.cleaned_data.get("file"), *self.extra_files]
        adding = sum(upload.size or 0 for upload in uploads if isinstance(upload, UploadedFile))
        if adding and quotas.limited(self.uploader):
            using = router.db_for_write(StoredFile)
            # Held until the admin's transaction (changeform_view's) ends, with the saves.
            quotas.lock(using)
            try:
                quotas.check(self.uploader, adding, using=using)
            except quotas.QuotaExceeded as exc:
                self.add_error("file", f"{exc} Nothing was stored.")
        return cleaned


class StoredFileChangeForm(QuotaCheckedForm):
    class Meta:
        model = StoredFile
        fields = ["file", "name", "content_type", "public", "owner"]
        widgets = {"file": StoredFileWidget}

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.instance.storage:  # moved by files_move: no large object, and none needed
            field = self.fields["file"]
            field.required = False
            field.help_text = (
                f"Kept in the storage {self.instance.storage!r} (moved by files_move); "
                "a file chosen here replaces it and goes into a large object."
            )


class StoredFileAddForm(QuotaCheckedForm):
    """The add form: one or several files, each becoming a stored file."""

    file = MultipleFileField(
        help_text="Choose one or several files. Each becomes a stored file; the name and "
        "content type below apply to a single file only."
    )

    class Meta:
        model = StoredFile
        fields = ["file", "name", "content_type", "public", "owner"]

    def clean_file(self) -> Any:
        files = self.cleaned_data["file"]
        self.extra_files = files[1:]
        return files[0]


class CataloguePaginator(Paginator):  # type: ignore[type-arg]
    """Counts a selection exactly when it is small and estimates it when it is large.

    ``totals`` (files and bytes) is computed once per page by :func:`catalogue.totals`, and
    ``count`` is its number of files: at a million stored files, an exact ``COUNT`` and
    ``SUM`` would cost more than the rest of the page.
    """

    @cached_property
    def totals(self) -> catalogue.Totals:
        return catalogue.totals(self.object_list)  # type: ignore[arg-type]

    @cached_property
    def count(self) -> int:
        return self.totals.files


class IndexedValuesFilter(admin.AllValuesFieldListFilter):
    """``AllValuesFieldListFilter`` that finds the values with one index probe per value.

    Django's filter runs ``SELECT DISTINCT`` over the whole table; this one needs an index
    on the column and costs the same at a thousand rows as at a million.
    """

    def __init__(
        self,
        field: Any,
        request: HttpRequest,
        params: Any,
        model: Any,
        model_admin: Any,
        field_path: str,
    ) -> None:
        super().__init__(field, request, params, model, model_admin, field_path)
        self.lookup_choices = catalogue.distinct_values(  # type: ignore[assignment]
            field.model, field.name, using=model_admin.get_queryset(request).db
        )


class ShareOptions(forms.Form):
    """What the "Create share links" action asks: for how long, for how many downloads."""

    expires_in = forms.ChoiceField(
        choices=SHARE_EXPIRY_CHOICES, initial="86400", required=False, label="Share link for"
    )
    max_downloads = forms.IntegerField(
        min_value=1, required=False, label="downloads (empty: no limit)"
    )


class ShareActionForm(ActionForm):
    """The change list's action bar, with the share options as plain inputs: the action
    checks them (ShareOptions) and says what is wrong, where the admin would only say "No
    action selected"."""

    expires_in = forms.CharField(
        required=False,
        label="Share link for",
        widget=forms.Select(choices=SHARE_EXPIRY_CHOICES),
        initial="86400",
    )
    max_downloads = forms.CharField(
        required=False,
        label="downloads (empty: no limit)",
        widget=forms.NumberInput(attrs={"min": 1, "style": "width: 5em"}),
    )


def link_html(link: ShareLink) -> str:
    """Return a link to ``link``'s URL, as a page shows it."""
    if not link.pk:
        return "-"
    url = link.get_absolute_url()
    return format_html('<a class="share-link" href="{}">{}</a>', url, url)


def link_usage(link: ShareLink) -> str:
    """Return "<downloads> of <limit>", or the count alone without a limit."""
    if link.max_downloads is None:
        return str(link.downloads)
    return f"{link.downloads} of {link.max_downloads}"


@admin.register(StoredFile)
class StoredFileAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    """Upload, browse, preview, replace, share and delete stored files."""

    list_display = [
        "name",
        "list_size",
        "content_type",
        "public",
        "owner",
        "created",
        "download_link",
    ]
    list_filter = ["public", ("content_type", IndexedValuesFilter), "created"]
    search_fields = ["name"]
    # The change list costs the same at a million files as at a thousand (bench/catalogue.py):
    # no count of the whole table, and no date hierarchy (its SELECT DISTINCT reads every
    # row of the selection; the "created" filter browses by date without a query).
    paginator = CataloguePaginator
    show_full_result_count = False
    list_select_related = ["owner"]
    readonly_fields = [
        "preview",
        "download_link",
        "uuid",
        "human_size",
        "sha256",
        "location",
        "created",
        "updated",
        "version_list",
        "share_link_list",
    ]
    actions = ["make_public", "make_private", "create_share_links", "download_zip"]
    action_form = ShareActionForm
    change_list_template = "admin/files_app/storedfile/change_list.html"

    class Media:
        js = ["files_app/upload-progress.js"]
        css = {"all": ["files_app/admin.css"]}

    def get_form(
        self,
        request: HttpRequest,
        obj: StoredFile | None = None,
        change: bool = False,
        **kwargs: Any,
    ) -> Any:
        kwargs["form"] = StoredFileAddForm if obj is None else StoredFileChangeForm
        form = super().get_form(request, obj, change=change, **kwargs)
        return type(form.__name__, (form,), {"uploader": request.user})

    def get_fieldsets(self, request: HttpRequest, obj: StoredFile | None = None) -> Any:
        if obj is None:
            return [(None, {"fields": ["file", "name", "content_type", "public", "owner"]})]
        fieldsets: list[Any] = [
            (None, {"fields": ["preview", "download_link", "file", "name", "content_type"]}),
            ("Access", {"fields": ["public", "owner"]}),
            (
                "Details",
                {"fields": ["uuid", "human_size", "sha256", "location", "created", "updated"]},
            ),
        ]
        fieldsets.append(("Share links", {"fields": ["share_link_list"]}))
        if app_settings.VERSIONS or obj.versions.exists():
            fieldsets.append(("Versions", {"fields": ["version_list"]}))
        return fieldsets

    # -- uploads --------------------------------------------------------------------

    def get_urls(self) -> list[URLPattern]:
        urls = super().get_urls()
        for pattern in urls:
            for action in ("add", "change"):
                if pattern.name == self._url_name(action):
                    pattern.callback = self._streaming_uploads(pattern.callback, action)
        restore = path(
            "<path:object_id>/versions/<int:number>/restore/",
            self.admin_site.admin_view(self.restore_version_view),
            name=self._url_name("restore_version"),
        )
        return [restore, *urls]

    def _url_name(self, view: str) -> str:
        return f"{self.opts.app_label}_{self.opts.model_name}_{view}"

    def _streaming_uploads(self, view: Any, action: str) -> Any:
        # Upload handlers must be set before anything reads request.POST, and the CSRF
        # middleware does; the wrapped admin view still checks the CSRF token itself.
        @csrf_exempt
        def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
            if request.method == "POST":
                # Nothing of the body is read, let alone stored, before the user is known
                # and allowed to upload, and the request passed the CSRF checks that need
                # no body (anyone can send a CSRF cookie and token of their choosing).
                refusal = self._refuse_upload(request, action, kwargs.get("object_id"))
                if refusal is not None:
                    return refusal
                refusal = reject_before_body(request, view)
                if refusal is not None:
                    return refusal
                request.upload_handlers = [LargeObjectUploadHandler(request)]
            try:
                response: HttpResponseBase = view(request, *args, **kwargs)
            except UploadTooLarge as exc:
                return self._too_large(request, exc)
            return response

        return wrapper

    def _refuse_upload(
        self, request: HttpRequest, action: str, object_id: str | None
    ) -> HttpResponseBase | None:
        if not self.admin_site.has_permission(request):
            # What the admin answers too: to the login page, and back here afterwards.
            login = reverse("admin:login", current_app=self.admin_site.name)
            return redirect_to_login(request.get_full_path(), login)
        if action == "add":
            allowed = self.has_add_permission(request)
        else:
            obj = self.get_object(request, unquote(object_id)) if object_id else None
            allowed = self.has_change_permission(request, obj)
        if not allowed:
            raise PermissionDenied
        return None

    def _too_large(self, request: HttpRequest, exc: UploadTooLarge) -> HttpResponse:
        return TemplateResponse(
            request,
            "admin/files_app/storedfile/too_large.html",
            {
                **self.admin_site.each_context(request),
                "opts": self.opts,
                "limit": filesizeformat(exc.limit),
                "message": str(exc),
                "title": "Upload too large",
            },
            status=413,
        )

    def save_model(self, request: HttpRequest, obj: StoredFile, form: Any, change: bool) -> None:
        if not change and obj.owner_id is None:
            obj.owner = request.user  # type: ignore[assignment]
        obj.save(by=request.user)  # who replaced it, noted with the version it leaves
        for upload in getattr(form, "extra_files", []):
            StoredFile(file=upload, public=obj.public, owner=obj.owner).save()
        if extra := len(getattr(form, "extra_files", [])):
            self.message_user(request, f"Uploaded {extra + 1} files.", messages.SUCCESS)

    # -- change list ----------------------------------------------------------------

    def add_view(
        self, request: HttpRequest, form_url: str = "", extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        # The resumable uploader, where files_app.urls (its tus endpoint) is routed.
        try:
            uploads: str | None = reverse("files_app:uploads")
        except NoReverseMatch:
            uploads = None
        extra_context = {**(extra_context or {}), "files_app_uploads": uploads}
        return super().add_view(request, form_url, extra_context)

    def get_paginator(
        self,
        request: HttpRequest,
        queryset: QuerySet[Any],
        per_page: int,
        orphans: int = 0,
        allow_empty_first_page: bool = True,
    ) -> Paginator:  # type: ignore[type-arg]
        # The history page pages its LogEntry rows through this hook too: only stored
        # files have the sizes that CataloguePaginator adds up.
        if queryset.model is not self.model:
            return Paginator(queryset, per_page, orphans, allow_empty_first_page)
        return super().get_paginator(request, queryset, per_page, orphans, allow_empty_first_page)

    def changeform_view(
        self,
        request: HttpRequest,
        object_id: str | None = None,
        form_url: str = "",
        extra_context: dict[str, Any] | None = None,
    ) -> HttpResponse:
        def view() -> HttpResponse:
            return super(StoredFileAdmin, self).changeform_view(
                request, object_id, form_url, extra_context
            )

        return _rendered_for(request, view)

    def changelist_view(
        self, request: HttpRequest, extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        return _rendered_for(request, lambda: self._changelist_view(request, extra_context))

    def _changelist_view(
        self, request: HttpRequest, extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        response = super().changelist_view(request, extra_context)
        if isinstance(response, TemplateResponse) and response.context_data:
            changelist = response.context_data.get("cl")
            paginator = getattr(changelist, "paginator", None)
            if isinstance(paginator, CataloguePaginator):
                totals = paginator.totals
                response.context_data["totals"] = {
                    "files": totals.files,
                    "bytes": filesizeformat(totals.bytes),
                    "estimated": totals.estimated,
                }
                response.context_data["quota"] = self._quota_lines(request)
        return response

    def _quota_lines(self, request: HttpRequest) -> list[str]:
        """What the change list says of the user's quota (files_app.quotas): what their
        files store, against their quota if they have one. (The site's cap is on the user
        quotas' page: adding up what the database holds reads every row.)"""
        limit = quotas.user_limit(request.user)
        stored = quotas.stored_by(request.user)
        mine = f" of your quota of {filesizeformat(limit)}." if limit is not None else "."
        return [f"Your files store {filesizeformat(stored)}{mine}"]

    @admin.display(description="size", ordering="size")
    def list_size(self, obj: StoredFile) -> str:
        return filesizeformat(obj.size)

    @admin.display(description="size", ordering="size")
    def human_size(self, obj: StoredFile) -> str:
        return f"{filesizeformat(obj.size)} ({obj.size} bytes)" if obj.pk else "-"

    @admin.display(description="kept in")
    def location(self, obj: StoredFile) -> str:
        if obj.storage:
            return f"the storage {obj.storage!r}, as {obj.storage_name!r}"
        return f"large object {obj.file.oid}" if obj.file else "-"

    @admin.display(description="download")
    def download_link(self, obj: StoredFile) -> str:
        if not obj.pk:
            return "-"
        return format_html('<a href="{}">download</a>', download_url(obj))

    @admin.display(description="preview")
    def preview(self, obj: StoredFile) -> str:
        if not obj.pk:
            return "-"
        url = download_url(obj)
        kind = obj.content_type.split("/")[0]
        if obj.content_type in ("image/svg+xml",):
            return format_html('<a href="{}">SVG files are not previewed inline.</a>', url)
        if kind == "image":
            return format_html('<img class="files-app-preview" src="{}" alt="{}">', url, obj.name)
        if kind == "video":
            return format_html(
                '<video class="files-app-preview" src="{}" controls preload="metadata"></video>',
                url,
            )
        if kind == "audio":
            return format_html('<audio src="{}" controls preload="metadata"></audio>', url)
        if obj.content_type in ("application/pdf", "text/plain") or obj.content_type.startswith(
            "text/plain"
        ):
            return format_html(
                '<iframe class="files-app-preview" src="{}" sandbox title="{}"></iframe>',
                url,
                obj.name,
            )
        return "No preview for this type."

    @admin.display(description="links")
    def share_link_list(self, obj: StoredFile) -> str:
        links = list(obj.share_links.select_related("created_by")) if obj.pk else []
        site = self.admin_site.name
        add = reverse(f"{site}:files_app_sharelink_add") + f"?stored_file={obj.pk}"
        manage = reverse(f"{site}:files_app_sharelink_changelist") + (
            f"?stored_file__id__exact={obj.pk}"
        )
        rows = format_html_join(
            "",
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            (
                (
                    link,
                    link_html(link),
                    link.created_by or "-",
                    date_format(timezone.localtime(link.expires), "DATETIME_FORMAT")
                    if link.expires
                    else "never",
                    link_usage(link),
                    link.state,
                )
                for link in links
            ),
        )
        table = (
            format_html(
                '<table class="files-app-links"><thead><tr><th>link</th><th>URL</th>'
                "<th>made by</th><th>expires</th><th>downloads</th><th>state</th></tr>"
                "</thead><tbody>{}</tbody></table>",
                rows,
            )
            if links
            else "None yet."
        )
        return format_html(
            '{}<p><a class="files-app-new-link" href="{}">Make a share link</a> · '
            '<a href="{}">Manage or revoke these links</a></p>',
            table,
            add,
            manage,
        )

    @admin.display(description="earlier versions")
    def version_list(self, obj: StoredFile) -> str:
        versions = list(obj.versions.select_related("replaced_by")) if obj.pk else []
        if not versions:
            kept = app_settings.VERSIONS
            return f"None yet: replacing the file keeps the {kept} latest earlier contents."
        rows = format_html_join(
            "",
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td>"
            '<td><code title="{}">{}…</code></td><td><a href="{}">download</a></td>'
            '<td><a class="files-app-restore" href="{}">restore</a></td></tr>',
            (
                (
                    version.number,
                    version.name,
                    date_format(timezone.localtime(version.replaced), "DATETIME_FORMAT"),
                    version.replaced_by or "-",
                    filesizeformat(version.size),
                    version.sha256,
                    version.sha256[:12],
                    version.get_absolute_url(),
                    reverse(
                        f"{self.admin_site.name}:{self._url_name('restore_version')}",
                        args=[obj.pk, version.number],
                    ),
                )
                for version in versions
            ),
        )
        return format_html(
            '<table class="files-app-versions"><thead><tr><th>version</th><th>name</th>'
            "<th>replaced</th><th>by</th><th>size</th><th>SHA-256</th><th></th><th></th>"
            "</tr></thead><tbody>{}</tbody></table>",
            rows,
        )

    def restore_version_view(
        self, request: HttpRequest, object_id: str, number: int
    ) -> HttpResponse:
        """Ask, then make version ``number`` the file's content again (what it holds
        becomes a version in turn)."""
        obj = self.get_object(request, unquote(object_id))
        if obj is None:
            raise Http404("No such stored file.")
        if not self.has_change_permission(request, obj):
            raise PermissionDenied
        version = obj.versions.filter(number=number).first()
        if version is None:
            raise Http404("No such version.")
        change_url = reverse(f"{self.admin_site.name}:{self._url_name('change')}", args=[obj.pk])
        if request.method == "POST":
            try:
                obj.restore_version(number, by=request.user)
            except FileNotFoundError:
                self.message_user(
                    request, f"The bytes of {version} are gone: nothing changed.", messages.ERROR
                )
            else:
                self.message_user(
                    request,
                    f"Restored {version}; what it replaced is a version now.",
                    messages.SUCCESS,
                )
            return HttpResponseRedirect(change_url)
        return TemplateResponse(
            request,
            "admin/files_app/storedfile/restore_version.html",
            {
                **self.admin_site.each_context(request),
                "opts": self.opts,
                "object": obj,
                "version": version,
                "size": filesizeformat(version.size),
                "keeps": bool(app_settings.VERSIONS) and not obj.storage,
                "change_url": change_url,
                "title": f"Restore {version}?",
            },
        )

    # -- actions --------------------------------------------------------------------

    @admin.action(description="Make selected files public", permissions=["change"])
    def make_public(self, request: HttpRequest, queryset: QuerySet[StoredFile]) -> None:
        count = queryset.update(public=True)
        self.message_user(request, f"{count} file(s) are now public.", messages.SUCCESS)

    @admin.action(description="Make selected files private", permissions=["change"])
    def make_private(self, request: HttpRequest, queryset: QuerySet[StoredFile]) -> None:
        count = queryset.update(public=False)
        self.message_user(request, f"{count} file(s) are now private.", messages.SUCCESS)

    @admin.action(description="Download selected files as one ZIP", permissions=["view"])
    def download_zip(
        self, request: HttpRequest, queryset: QuerySet[StoredFile]
    ) -> HttpResponseBase:
        """Stream the selection as one ZIP (files_app.archive), in the list's order."""
        return archive.zip_response(request, queryset)

    @admin.action(description="Create share links for selected files", permissions=["view"])
    def create_share_links(self, request: HttpRequest, queryset: QuerySet[StoredFile]) -> None:
        """Make a managed share link (:class:`ShareLink`) of each file, valid for the
        chosen time, with the download limit given (if any)."""
        form = ShareOptions(request.POST)
        if not form.is_valid():
            errors = "; ".join(str(error) for errors in form.errors.values() for error in errors)
            self.message_user(request, f"No links made: {errors}", messages.ERROR)
            return
        seconds = form.cleaned_data["expires_in"] or "86400"
        limit = form.cleaned_data["max_downloads"]
        links = [
            (
                stored.name,
                request.build_absolute_uri(
                    stored.share(
                        by=request.user,
                        expires=timedelta(seconds=int(seconds)),
                        max_downloads=limit,
                    ).get_absolute_url()
                ),
            )
            for stored in queryset
        ]
        label = dict(SHARE_EXPIRY_CHOICES)[seconds]
        if limit:
            label += f", for {limit} download(s)"
        self.message_user(
            request,
            format_html(
                "Share links, valid for {}: <ul>{}</ul>",
                label,
                format_html_join(
                    "",
                    '<li>{}: <a class="share-link" href="{}">{}</a></li>',
                    ((name, url, url) for name, url in links),
                ),
            ),
            messages.SUCCESS,
        )

    # -- the trash (FILES_APP_TRASH_DAYS) ---------------------------------------------

    def delete_model(self, request: HttpRequest, obj: StoredFile) -> None:
        obj.delete(by=request.user)  # to the trash, with who deleted it, when it is on

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[StoredFile]) -> None:
        queryset.delete(by=request.user)  # type: ignore[call-arg]


@admin.register(ShareLink)
class ShareLinkAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    """Every share link: per file, per user who made it, with downloads and state; revoke
    them at once."""

    list_display = [
        "__str__",
        "stored_file",
        "created_by",
        "created",
        "expires",
        "usage",
        "state",
        "link_url",
    ]
    list_filter = [("created_by", admin.RelatedOnlyFieldListFilter), "created", "revoked"]
    list_select_related = ["stored_file", "created_by"]
    search_fields = ["label", "stored_file__name", "token"]
    raw_id_fields = ["stored_file"]
    actions = ["revoke_links"]
    readonly_fields = ["link_url", "usage", "state", "created_by", "last_download", "revoked"]
    fields = [
        "stored_file",
        "label",
        "expires",
        "max_downloads",
        "link_url",
        "usage",
        "state",
        "created_by",
        "last_download",
        "revoked",
    ]

    @admin.display(description="link")
    def link_url(self, obj: ShareLink) -> str:
        return link_html(obj)

    @admin.display(description="downloads", ordering="downloads")
    def usage(self, obj: ShareLink) -> str:
        return link_usage(obj)

    @admin.display(description="state")
    def state(self, obj: ShareLink) -> str:
        return obj.state if obj.pk else "-"

    def save_model(self, request: HttpRequest, obj: ShareLink, form: Any, change: bool) -> None:
        if not change:
            obj.created_by = request.user  # type: ignore[assignment]
        super().save_model(request, obj, form, change)

    @admin.action(description="Revoke selected links", permissions=["change"])
    def revoke_links(self, request: HttpRequest, queryset: QuerySet[ShareLink]) -> None:
        count = queryset.revoke()  # type: ignore[attr-defined]
        self.message_user(request, f"{count} link(s) revoked.", messages.SUCCESS)


@admin.register(UserQuota)
class UserQuotaAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    """A user's own quota (bytes stored, files_app.quotas), instead of
    ``FILES_APP_USER_QUOTA``."""

    list_display = ["user", "human_limit", "stored"]
    list_select_related = ["user"]
    raw_id_fields = ["user"]
    search_fields = ["user__username"]

    def changelist_view(
        self, request: HttpRequest, extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        cap = app_settings.TOTAL_QUOTA
        if cap is not None:
            held = quotas.held()
            note = (
                f"The database holds {filesizeformat(held)} of its cap of {filesizeformat(cap)} "
                "(FILES_APP_TOTAL_QUOTA; files shared by dedupe count once)."
            )
        else:
            note = "No cap on what the database holds (FILES_APP_TOTAL_QUOTA)."
        default = app_settings.USER_QUOTA
        note += " Users without a quota here may store " + (
            f"{filesizeformat(default)} (FILES_APP_USER_QUOTA)."
            if default is not None
            else "without limit (FILES_APP_USER_QUOTA)."
        )
        return super().changelist_view(request, {**(extra_context or {}), "subtitle": note})

    @admin.display(description="limit", ordering="limit")
    def human_limit(self, obj: UserQuota) -> str:
        return "no limit" if obj.limit is None else filesizeformat(obj.limit)

    @admin.display(description="stored now")
    def stored(self, obj: UserQuota) -> str:
        return filesizeformat(quotas.stored_by(obj.user))


@admin.register(TrashedFile)
class TrashedFileAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    """The trash: files deleted less than ``FILES_APP_TRASH_DAYS`` ago, who deleted them and
    when; restore them (same UUID and links) or delete them for good. ``files_sweep``
    empties what is older."""

    list_display = ["name", "human_size", "owner", "trashed", "trashed_by", "purge_after"]
    list_select_related = ["owner", "trashed_by"]
    search_fields = ["name"]
    paginator = CataloguePaginator
    show_full_result_count = False
    actions = ["restore_files"]
    fields = ("name", "content_type", "human_size", "sha256", "owner", "trashed", "trashed_by")
    readonly_fields = fields

    @admin.display(description="size", ordering="size")
    def human_size(self, obj: StoredFile) -> str:
        return filesizeformat(obj.size)

    @admin.display(description="deleted for good after")
    def purge_after(self, obj: StoredFile) -> Any:
        return obj.trashed + timedelta(days=app_settings.TRASH_DAYS) if obj.trashed else None

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    # The stored files' permissions, not the proxy model's own: who may delete stored files
    # may see, restore and empty the trash.
    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return request.user.has_perm("files_app.view_storedfile") or self.has_restore_permission(
            request
        )

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return request.user.has_perm("files_app.delete_storedfile")

    def has_restore_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("files_app.delete_storedfile")

    @admin.action(description="Restore selected files", permissions=["restore"])
    def restore_files(self, request: HttpRequest, queryset: QuerySet[StoredFile]) -> None:
        count = queryset.restore()  # type: ignore[attr-defined]
        self.message_user(request, f"{count} file(s) restored.", messages.SUCCESS)

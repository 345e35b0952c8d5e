"""A real browser: headless Chromium (Debian's package), driven by Playwright, against a live
server. It plays and seeks a video, and walks through the admin like a person would.

Without /usr/bin/chromium these tests say "skipped: no browser"; in CI (CI=true), where
.ci/run installs it, a missing browser is a failure.
"""

from __future__ import annotations

import io
import os
import re
import shutil
import subprocess
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.core.files.base import File

from files_app.models import ShareLink, StoredFile

# Playwright's sync API runs an event loop in this thread; the ORM calls made here between
# browser steps are ordinary blocking calls.
os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")

VIDEO_SECONDS = 40
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
DOCS = Path(__file__).resolve().parent.parent / "docs"

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not Path(CHROMIUM).exists():
        if os.environ.get("CI"):
            pytest.fail("CI needs Chromium: .ci/run installs Debian's chromium package.")
        pytest.skip("skipped: no browser")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--autoplay-policy=no-user-gesture-required",
            ],
        )
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def video_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A WebM of some 20 MB, made with the ffmpeg that the imageio-ffmpeg wheel ships.

    Large enough that Chromium does not buffer it whole: seeking needs new range requests.
    """
    import imageio_ffmpeg

    path = tmp_path_factory.mktemp("video") / "clip.webm"
    subprocess.run(
        [
            imageio_ffmpeg.get_ffmpeg_exe(),
            "-hide_banner",
            "-loglevel",
            "error",
            "-f",
            "lavfi",
            "-i",
            f"testsrc2=duration={VIDEO_SECONDS}:size=640x360:rate=25",
            "-c:v",
            "libvpx",
            "-b:v",
            "4M",
            "-deadline",
            "realtime",
            "-cpu-used",
            "8",
            "-g",
            "25",
            str(path),
        ],
        check=True,
        timeout=120,
    )
    return path


def _log_ranges(page: Any) -> list[tuple[int, str | None]]:
    """Record (status, Range header) of every response to a /files/ URL."""
    log: list[tuple[int, str | None]] = []

    def on_response(response: Any) -> None:
        if "/files/" in response.url:
            log.append((response.status, response.request.headers.get("range")))

    page.on("response", on_response)
    return log


SEEK = """async (target) => {
  const video = document.querySelector("video");
  if (video.readyState < 1) {
    await new Promise((ok, fail) => {
      video.addEventListener("loadedmetadata", ok, {once: true});
      video.addEventListener("error", () => fail(new Error("video error")), {once: true});
    });
  }
  const time = target === "end" ? video.duration - 0.5 : video.duration * target;
  const seeked = new Promise((ok) => video.addEventListener("seeked", ok, {once: true}));
  video.currentTime = time;
  await seeked;
  return {
    duration: video.duration,
    currentTime: video.currentTime,
    seekableEnd: video.seekable.length ? video.seekable.end(0) : 0,
    error: video.error ? video.error.code : null,
  };
}"""


def _play_and_seek(page: Any) -> None:
    page.wait_for_selector("video")
    middle = page.evaluate(SEEK, 0.5)
    assert middle["error"] is None
    assert abs(middle["duration"] - VIDEO_SECONDS) < 1
    assert abs(middle["seekableEnd"] - middle["duration"]) < 0.5  # seekable: ranges work
    assert abs(middle["currentTime"] - middle["duration"] / 2) < 1.5
    end = page.evaluate(SEEK, "end")
    assert end["error"] is None
    assert end["currentTime"] > end["duration"] - 1.5


@pytest.mark.parametrize("access", ["public", "signed URL"])
def test_chromium_plays_and_seeks_a_video(
    browser: Any, live_server: Any, video_path: Path, access: str
) -> None:
    """A public video at its URL, and a private one by a signed URL (no session: every
    range request the player makes carries the URL's permission)."""
    owner = User.objects.create_user("viewer")
    with video_path.open("rb") as f:
        stored = StoredFile(file=File(f, name="clip.webm"), public=access == "public", owner=owner)
        stored.save()
    assert stored.content_type == "video/webm"
    url = stored.get_absolute_url() if access == "public" else stored.signed_url(owner)
    page = browser.new_page()
    log = _log_ranges(page)
    page.set_content(
        f'<video src="{live_server.url}{url}" preload="metadata" muted controls></video>'
    )
    _play_and_seek(page)
    page.close()
    ranged = [(status, header) for status, header in log if header]
    assert ranged, f"Chromium sent no Range requests: {log}"
    assert all(status == 206 for status, _ in ranged), log
    # Seeking to the middle and the end needs requests that do not start at byte 0.
    assert any(not header.startswith("bytes=0-") for _, header in ranged), log
    stored.delete()


def test_chromium_follows_a_private_videos_redirect_to_a_signed_url(
    browser: Any, live_server: Any, video_path: Path, settings: Any
) -> None:
    """FILES_APP_SIGNED_REDIRECT: the player asks the private video's own URL once, with the
    session; every range after that (play, seek to the middle, to the end) goes to the
    signed URL it was sent to (which needs no session): the redirect is not paid per range."""
    from django.core.signals import request_started
    from django.test import Client

    settings.FILES_APP_SIGNED_REDIRECT = True
    owner = User.objects.create_user("viewer")
    with video_path.open("rb") as f:
        stored = StoredFile(file=File(f, name="clip.webm"), public=False, owner=owner)
        stored.save()
    client = Client()
    client.force_login(owner)
    session = client.cookies["sessionid"].value
    seen: list[tuple[str, str | None]] = []

    def on_request(sender: Any, environ: Any = None, **kwargs: Any) -> None:
        if environ and environ.get("PATH_INFO", "").startswith("/files/"):
            seen.append((environ["PATH_INFO"], environ.get("HTTP_RANGE")))

    request_started.connect(on_request)
    context = browser.new_context()
    context.add_cookies([{"name": "sessionid", "value": session, "url": live_server.url}])
    page = context.new_page()
    page.set_default_timeout(60_000)
    try:
        # A page of the site, as the video's own page would be: the session cookie
        # (SameSite=Lax) goes with the player's requests.
        page.goto(f"{live_server.url}/admin/login/")
        page.set_content(
            f'<video src="{live_server.url}{stored.get_absolute_url()}" preload="metadata" '
            "muted controls></video>"
        )
        _play_and_seek(page)
    finally:
        request_started.disconnect(on_request)
        context.close()
    canonical = [entry for entry in seen if entry[0] == stored.get_absolute_url()]
    signed = [entry for entry in seen if entry[0].startswith("/files/signed/")]
    assert len(canonical) == 1, seen  # the redirect, once
    assert signed and len(signed) == len(seen) - 1, seen
    assert any(header and not header.startswith("bytes=0-") for _, header in signed), seen
    stored.delete()


def test_chromium_plays_a_moved_video_from_the_bucket(
    browser: Any, live_server: Any, video_path: Path, settings: Any, monkeypatch: Any
) -> None:
    """FILES_APP_REDIRECT_STORAGES (issue 24, point 3): a video that files_move took to S3
    (moto) plays and seeks in Chromium through the redirect to a presigned URL; the player
    asks Django once and the bucket for every range."""
    from django.core.management import call_command
    from django.core.signals import request_started

    from tests.moto import CREDENTIALS, running_moto

    for name, value in CREDENTIALS.items():
        monkeypatch.setenv(name, value)
    with running_moto() as moto:
        settings.STORAGES = {**settings.STORAGES, "s3": moto.storage()}
        settings.FILES_APP_REDIRECT_STORAGES = {"s3": 600}
        with video_path.open("rb") as f:
            stored = StoredFile(file=File(f, name="clip.webm"), public=True)
            stored.save()
        call_command("files_move", "--to", "s3", stdout=io.StringIO())
        stored.refresh_from_db()
        assert stored.storage == "s3"
        asked: list[str] = []

        def on_request(sender: Any, environ: Any = None, **kwargs: Any) -> None:
            if environ and environ.get("PATH_INFO", "").startswith("/files/"):
                asked.append(environ["PATH_INFO"])

        request_started.connect(on_request)
        page = browser.new_page()
        from_bucket: list[tuple[int, str | None]] = []

        def on_response(response: Any) -> None:
            if response.url.startswith(moto.url):
                from_bucket.append((response.status, response.request.headers.get("range")))

        page.on("response", on_response)
        try:
            page.set_content(
                f'<video src="{live_server.url}{stored.get_absolute_url()}" '
                'preload="metadata" muted controls></video>'
            )
            _play_and_seek(page)
        finally:
            request_started.disconnect(on_request)
            page.close()
        assert asked == [stored.get_absolute_url()], asked  # Django: the redirect, once
        ranged = [(status, header) for status, header in from_bucket if header]
        assert ranged and all(status == 206 for status, _ in ranged), from_bucket
        assert any(not header.startswith("bytes=0-") for _, header in ranged), from_bucket
        stored.delete()


SAMPLES = {
    "notes.txt": b"Plain text notes.\n" * 50,
    "report.pdf": b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n" + b"0" * 4000,
    "photo.png": b"\x89PNG\r\n\x1a\n" + b"\0" * 30_000,
}


def _sample(directory: Path, name: str) -> str:
    path = directory / name
    path.write_bytes(SAMPLES[name])
    return str(path)


def _login(page: Any, url: str, username: str, password: str) -> None:
    page.goto(f"{url}/admin/login/")
    page.fill("#id_username", username)
    page.fill("#id_password", password)
    page.click("input[type=submit]")
    page.wait_for_url(re.compile(r"/admin/$"))


def test_admin_walkthrough(
    browser: Any,
    live_server: Any,
    video_path: Path,
    lo_count: Callable[[], int],
    tmp_path: Path,
) -> None:
    User.objects.create_superuser("admin", password="walkthrough-pw")
    before = lo_count()
    ARTIFACTS.mkdir(exist_ok=True)
    context = browser.new_context(viewport={"width": 1500, "height": 900})
    page = context.new_page()
    _login(page, live_server.url, "admin", "walkthrough-pw")

    # Upload (through the progress-bar script and the streaming upload handler).
    page.goto(f"{live_server.url}/admin/files_app/storedfile/add/")
    page.set_input_files("#id_file", str(video_path))
    page.click("input[name=_save]")
    page.wait_for_url(re.compile(r"/admin/files_app/storedfile/$"))
    assert "clip.webm" in page.content()
    assert lo_count() == before + 1
    stored = StoredFile.objects.get(name="clip.webm")
    assert stored.size == video_path.stat().st_size

    # Several files at once.
    page.goto(f"{live_server.url}/admin/files_app/storedfile/add/")
    page.set_input_files("#id_file", [_sample(tmp_path, name) for name in SAMPLES])
    page.click("input[name=_save]")
    page.wait_for_url(re.compile(r"/admin/files_app/storedfile/$"))
    assert "4 files," in page.content()
    assert lo_count() == before + 4
    page.screenshot(path=str(ARTIFACTS / "admin-changelist.png"), full_page=True)

    # The change form previews the video in a player that seeks, by a signed URL.
    log = _log_ranges(page)
    page.goto(f"{live_server.url}/admin/files_app/storedfile/{stored.pk}/change/")
    assert "/files/signed/" in (page.get_attribute("video", "src") or "")
    _play_and_seek(page)
    assert any(status == 206 for status, _ in log), log
    page.evaluate("document.querySelector('video').pause()")
    page.screenshot(path=str(ARTIFACTS / "admin-change.png"), full_page=True)

    # Private: an anonymous visitor gets 404.
    anonymous = browser.new_context()
    url = f"{live_server.url}{stored.get_absolute_url()}"
    assert anonymous.request.get(url).status == 404

    # Make it public with the action; now anyone can download it.
    page.goto(f"{live_server.url}/admin/files_app/storedfile/")
    page.check(f"input[name=_selected_action][value='{stored.pk}']")
    page.select_option("select[name=action]", "make_public")
    page.click("button[name=index]")
    page.wait_for_selector("text=are now public")
    response = anonymous.request.get(url)
    assert response.status == 200 and response.body() == video_path.read_bytes()

    # Make it private again and share it; the link works logged out.
    page.check(f"input[name=_selected_action][value='{stored.pk}']")
    page.select_option("select[name=action]", "make_private")
    page.click("button[name=index]")
    page.wait_for_selector("text=are now private")
    assert anonymous.request.get(url).status == 404
    page.check(f"input[name=_selected_action][value='{stored.pk}']")
    page.select_option("select[name=action]", "create_share_links")
    page.select_option("select[name=expires_in]", "3600")
    page.click("button[name=index]")
    link = page.get_attribute("a.share-link", "href")
    assert link
    shared = anonymous.request.get(link, headers={"Range": "bytes=0-99"})
    assert shared.status == 206 and shared.body() == video_path.read_bytes()[:100]

    # Delete it through the admin: the large object goes too.
    page.goto(f"{live_server.url}/admin/files_app/storedfile/{stored.pk}/delete/")
    page.click("input[type=submit]")
    page.wait_for_url(re.compile(r"/admin/files_app/storedfile/$"))
    assert not StoredFile.objects.filter(pk=stored.pk).exists()
    assert lo_count() == before + 3

    # Download the other three as one ZIP (issue 25): unpacked, each file's bytes.
    page.goto(f"{live_server.url}/admin/files_app/storedfile/")
    page.check("#action-toggle")
    page.select_option("select[name=action]", "download_zip")
    with page.expect_download() as download:
        page.click("button[name=index]")
    assert download.value.suggested_filename == "files.zip"
    zipped = tmp_path / "files.zip"
    download.value.save_as(zipped)
    with zipfile.ZipFile(zipped) as archive:
        assert archive.testzip() is None
        assert {info.filename: archive.read(info) for info in archive.infolist()} == SAMPLES

    # Bulk delete the rest: every large object is freed.
    page.goto(f"{live_server.url}/admin/files_app/storedfile/")
    page.check("#action-toggle")
    page.select_option("select[name=action]", "delete_selected")
    page.click("button[name=index]")
    page.click("input[type=submit]")  # "Yes, I'm sure"
    page.wait_for_selector("text=Successfully deleted 3")
    assert not StoredFile.objects.exists()
    assert lo_count() == before
    anonymous.close()
    context.close()


def test_admin_trash_delete_and_restore(browser: Any, live_server: Any, settings: Any) -> None:
    """FILES_APP_TRASH_DAYS (issue 25): deleting in the admin moves the file to the trash
    (its URL answers 404, the trash lists who deleted it), restoring brings it back."""
    settings.FILES_APP_TRASH_DAYS = 30
    User.objects.create_superuser("keeper", password="trash-pw")
    stored = StoredFile(file=File(io.BytesIO(b"keep me\n"), name="keep.txt"), public=True)
    stored.save()
    url = f"{live_server.url}{stored.get_absolute_url()}"
    context = browser.new_context()
    page = context.new_page()
    _login(page, live_server.url, "keeper", "trash-pw")
    page.goto(f"{live_server.url}/admin/files_app/storedfile/{stored.pk}/delete/")
    page.click("input[type=submit]")
    page.wait_for_url(re.compile(r"/admin/files_app/storedfile/$"))
    assert context.request.get(url).status == 404
    page.goto(f"{live_server.url}/admin/files_app/trashedfile/")
    row = page.locator("#result_list tbody tr", has_text="keep.txt")
    assert "keeper" in row.inner_text()
    page.check(f"input[name=_selected_action][value='{stored.pk}']")
    page.select_option("select[name=action]", "restore_files")
    page.click("button[name=index]")
    page.wait_for_selector("text=1 file(s) restored.")
    response = context.request.get(url)
    assert response.status == 200 and response.body() == b"keep me\n"
    context.close()


def test_admin_replace_versions_and_restore(
    browser: Any, live_server: Any, settings: Any, tmp_path: Path
) -> None:
    """FILES_APP_VERSIONS (issue 25): replacing a file in the admin's change form keeps the
    earlier content as a version, listed with who replaced it; its link downloads that
    content; restoring it makes it current and keeps the replaced one."""
    settings.FILES_APP_VERSIONS = 5
    User.objects.create_superuser("editor", password="versions-pw")
    stored = StoredFile(file=File(io.BytesIO(b"first draft\n"), name="draft.txt"), public=True)
    stored.save()
    url = f"{live_server.url}{stored.get_absolute_url()}"
    second = tmp_path / "draft-2.txt"
    second.write_bytes(b"second draft\n")
    context = browser.new_context()
    page = context.new_page()
    _login(page, live_server.url, "editor", "versions-pw")
    change = f"{live_server.url}/admin/files_app/storedfile/{stored.pk}/change/"
    page.goto(change)
    page.set_input_files("#id_file", str(second))
    page.click("input[name=_continue]")
    page.wait_for_selector("table.files-app-versions")
    row = page.locator("table.files-app-versions tbody tr").first
    assert "draft.txt" in row.inner_text() and "editor" in row.inner_text()
    assert context.request.get(url).body() == b"second draft\n"
    earlier = row.locator("a", has_text="download").get_attribute("href")
    assert earlier and context.request.get(f"{live_server.url}{earlier}").body() == (
        b"first draft\n"
    )

    row.locator("a.files-app-restore").click()
    page.click("input[type=submit]")  # "Yes, restore it"
    page.wait_for_selector("text=Restored version 1")
    assert context.request.get(url).body() == b"first draft\n"
    names = page.locator("table.files-app-versions tbody tr td:nth-child(2)").all_inner_texts()
    assert names == ["draft-2.txt"]
    context.close()


def test_admin_limited_link_used_up_and_revoked(browser: Any, live_server: Any) -> None:
    """Managed share links (issue 25): the change list's action makes a one-download link;
    a browser downloads it, and the next download is refused; a link made from the file's
    page works until the links' page revokes it."""
    User.objects.create_superuser("sharer", password="links-pw")
    stored = StoredFile(file=File(io.BytesIO(b"for your eyes\n"), name="memo.txt"))
    stored.save()
    context = browser.new_context()
    anonymous = browser.new_context()
    page = context.new_page()
    _login(page, live_server.url, "sharer", "links-pw")
    page.goto(f"{live_server.url}/admin/files_app/storedfile/")
    page.check(f"input[name=_selected_action][value='{stored.pk}']")
    page.select_option("select[name=action]", "create_share_links")
    page.select_option("select[name=expires_in]", "3600")
    page.fill("input[name=max_downloads]", "1")
    page.click("button[name=index]")
    link = page.get_attribute("a.share-link", "href")
    assert link and "/files/links/" in link
    viewer = anonymous.new_page()
    viewer.goto(link)
    assert "for your eyes" in viewer.content()
    again = anonymous.request.get(link)
    assert again.status == 410 and b"used up" in again.body()
    page.goto(f"{live_server.url}/admin/files_app/storedfile/{stored.pk}/change/")
    assert "1 of 1" in page.locator("table.files-app-links").inner_text()

    href = page.get_attribute("a.files-app-new-link", "href")  # "Make a share link"
    page.goto(f"{live_server.url}{href}")
    page.fill("#id_label", "for the auditor")
    page.click("input[name=_save]")
    made = ShareLink.objects.get(label="for the auditor")
    url = f"{live_server.url}{made.get_absolute_url()}"
    assert anonymous.request.get(url).status == 200
    page.goto(f"{live_server.url}/admin/files_app/sharelink/")
    page.check(f"input[name=_selected_action][value='{made.pk}']")
    page.select_option("select[name=action]", "revoke_links")
    page.click("button[name=index]")
    page.wait_for_selector("text=1 link(s) revoked.")
    assert anonymous.request.get(url).status == 410
    anonymous.close()
    context.close()


@pytest.mark.parametrize("size", [3_000_000, 60_000], ids=["declared", "as it arrives"])
def test_admin_upload_over_the_quota_is_refused(
    browser: Any, live_server: Any, settings: Any, tmp_path: Path, size: int
) -> None:
    """Quotas (issue 25): an upload through the admin's form over the user's quota shows
    why, whether its length says so or its bytes do; nothing is stored. The resumable
    uploader (tus) says why too."""
    settings.FILES_APP_USER_QUOTA = 20_000
    User.objects.create_superuser("quota", password="quota-pw")
    big = tmp_path / "big.bin"
    big.write_bytes(b"q" * size)
    context = browser.new_context()
    page = context.new_page()
    _login(page, live_server.url, "quota", "quota-pw")
    page.goto(f"{live_server.url}/admin/files_app/storedfile/add/")
    page.set_input_files("#id_file", str(big))
    page.click("input[name=_save]")
    page.wait_for_selector("text=Over your quota")
    assert "Nothing was stored." in page.content()
    assert not StoredFile.objects.exists()

    page.goto(f"{live_server.url}/admin/files_app/storedfile/add/")
    page.locator("input.uppy-Dashboard-input").first.set_input_files(str(big))
    page.click(".uppy-StatusBar-actionBtn--upload")
    note = page.wait_for_selector("p.files-app-upload-error", timeout=30_000)
    assert "Over your quota" in note.inner_text()
    assert not StoredFile.objects.exists()
    context.close()


def test_stored_html_and_svg_never_run_in_the_sites_origin(browser: Any, live_server: Any) -> None:
    # However their type is spelled, they are downloads in a CSP sandbox: navigating to them
    # or framing them from a page of the site runs nothing in the site's origin.
    steal = "document.cookie='pwned=1; path=/'"
    svg = f'<svg xmlns="http://www.w3.org/2000/svg" onload="{steal}"/>'
    payloads = [
        ("page.html", "text/html ; charset=utf-8", f"<script>{steal}</script>".encode()),
        ("drawing.svg", "image/svg+xml", svg.encode()),
    ]
    from playwright.sync_api import Error as PlaywrightError

    context = browser.new_context(accept_downloads=True)
    page = context.new_page()
    urls = []
    for name, content_type, data in payloads:
        stored = StoredFile(file=File(io.BytesIO(data), name=name), content_type=content_type)
        stored.public = True
        stored.save()
        urls.append(f"{live_server.url}{stored.get_absolute_url()}")
        with page.expect_download() as download:
            try:
                page.goto(urls[-1])
            except PlaywrightError as exc:  # navigating to a download "fails"
                assert "Download is starting" in str(exc)
        assert download.value.suggested_filename == name
    page.goto(f"{live_server.url}/admin/login/")
    for url in urls:
        page.evaluate(
            "(url) => new Promise((done) => { const f = document.createElement('iframe');"
            " f.src = url; f.onload = done; setTimeout(done, 2000);"
            " document.body.appendChild(f); })",
            url,
        )
    assert "pwned" not in page.evaluate("document.cookie")
    assert not [cookie for cookie in context.cookies() if cookie["name"] == "pwned"]
    context.close()


def test_admin_uppy_resumes_after_the_network_drops(
    browser: Any, live_server: Any, tmp_path: Path, lo_count: Callable[[], int]
) -> None:
    """Issue 15: the add form's Uppy (Dashboard + tus) uploads a file; the network goes
    away mid-upload and comes back; the upload goes on from the server's offset."""
    import hashlib
    import random
    import threading
    import time

    from files_app.models import Upload

    User.objects.create_superuser("uploader", password="uppy-pw")
    before = lo_count()
    data = random.Random(1501).randbytes(24 * 2**20 + 7)
    path = tmp_path / "holiday.bin"
    path.write_bytes(data)
    notes = tmp_path / "notes.txt"  # several files at once
    notes.write_bytes(b"packing list\n" * 1000)
    ARTIFACTS.mkdir(exist_ok=True)
    context = browser.new_context(viewport={"width": 1300, "height": 900})
    page = context.new_page()
    patches: list[tuple[str, str]] = []
    dropped: list[str] = []

    def network(route: Any) -> None:
        # While "offline", every PATCH fails as a dropped connection does.
        if route.request.method == "PATCH" and offline.is_set():
            dropped.append(route.request.url)
            route.abort("connectionreset")
            return
        if route.request.method == "PATCH":
            patches.append((route.request.url, route.request.headers.get("upload-offset", "")))
        route.continue_()

    offline = threading.Event()
    _login(page, live_server.url, "uploader", "uppy-pw")
    page.goto(f"{live_server.url}/admin/files_app/storedfile/add/")
    page.wait_for_selector(".uppy-Dashboard")
    page.route("**/files/uploads/**", network)
    page.locator("input.uppy-Dashboard-input").first.set_input_files([str(path), str(notes)])
    page.click(".uppy-StatusBar-actionBtn--upload")
    deadline = time.monotonic() + 60
    while not Upload.objects.filter(offset__gte=8 * 2**20).exists():
        assert time.monotonic() < deadline, "the upload did not get going"
        page.wait_for_timeout(20)
    offline.set()
    page.wait_for_timeout(2500)
    page.screenshot(path=str(ARTIFACTS / "admin-uppy.png"))
    big = Upload.objects.get(length=len(data))
    cut_at = big.offset
    assert 0 < cut_at < len(data)
    offline.clear()
    page.wait_for_function("document.body.dataset.filesAppUploaded === '2'", timeout=120_000)
    stored = StoredFile.objects.get(name="holiday.bin")
    assert stored.sha256 == hashlib.sha256(data).hexdigest()
    assert stored.owner is not None
    assert (stored.size, stored.public, stored.owner.username) == (len(data), False, "uploader")
    assert dropped, "no PATCH was dropped"
    # After the drop it went on from the server's offset, not from 0.
    offsets = [offset for url, offset in patches if url.endswith(str(big.id))]
    assert str(cut_at) in offsets, (cut_at, offsets)
    assert offsets.count("0") == 1, offsets
    assert StoredFile.objects.get(name="notes.txt").size == len(notes.read_bytes())
    assert not Upload.objects.exists()
    page.close()
    context.close()
    StoredFile.objects.filter(name__in=["holiday.bin", "notes.txt"]).delete()
    assert lo_count() == before


def test_admin_uppy_resumes_after_a_reload(
    browser: Any, live_server: Any, tmp_path: Path, lo_count: Callable[[], int]
) -> None:
    """Issue 15: a page reload in the middle of an upload; the same file chosen again goes
    on from the server's offset (tus keeps the upload's URL in localStorage)."""
    import hashlib
    import random

    from files_app.models import Upload

    User.objects.create_superuser("reloader", password="uppy-pw")
    before = lo_count()
    data = random.Random(1502).randbytes(20 * 2**20 + 3)
    path = tmp_path / "reloaded.bin"
    path.write_bytes(data)
    context = browser.new_context()
    page = context.new_page()
    requests: list[tuple[str, str]] = []
    blocked = {"on": True}

    def network(route: Any) -> None:
        # The first 8 MiB get through; after that every PATCH fails, until the reload.
        request = route.request
        offset = request.headers.get("upload-offset", "")
        if request.method == "PATCH" and blocked["on"] and int(offset or 0) >= 8 * 2**20:
            route.abort("connectionreset")
            return
        requests.append((request.method, offset))
        route.continue_()

    _login(page, live_server.url, "reloader", "uppy-pw")
    page.route("**/files/uploads/**", network)
    page.goto(f"{live_server.url}/admin/files_app/storedfile/add/")
    page.wait_for_selector(".uppy-Dashboard")
    page.locator("input.uppy-Dashboard-input").first.set_input_files(str(path))
    page.click(".uppy-StatusBar-actionBtn--upload")
    for _ in range(3000):
        if Upload.objects.filter(offset__gte=8 * 2**20).exists():
            break
        page.wait_for_timeout(20)
    offset = Upload.objects.get().offset
    assert 0 < offset < len(data)
    page.reload()
    blocked["on"] = False
    page.wait_for_selector(".uppy-Dashboard")
    # GoldenRetriever kept the file in the list; the browser needs it chosen again.
    page.wait_for_selector("text=Please re-select it and resume the upload")
    page.click(".uppy-DashboardContent-addMore")
    page.locator("input.uppy-Dashboard-input").first.set_input_files(str(path))
    page.click(".uppy-StatusBar-actionBtn--upload:not([disabled])")
    page.wait_for_function("document.body.dataset.filesAppUploaded === '1'", timeout=120_000)
    stored = StoredFile.objects.get(name="reloaded.bin")
    assert stored.sha256 == hashlib.sha256(data).hexdigest()
    assert [method for method, _ in requests].count("POST") == 1, requests  # the same upload
    assert ("PATCH", str(offset)) in requests, (offset, requests)  # went on from there
    context.close()
    stored.delete()
    assert lo_count() == before

"""The lean path: public files and share links answered before Django's request cycle.

A ranged request for a public file needs none of sessions, auth, messages, CSRF or the ORM's
query building, yet in the views they cost more than the database does (bench/RESULTS.md).
Here a request is matched to files_app's own download and share URLs, and the row and the
first read of the large object come back in one statement (one round trip)::

    SELECT <the row's fields>, lo_lseek64(fd, 0, 2), lo_get(file, <start>, <length>), ...
    FROM files_app_storedfile, LATERAL (SELECT lo_open(file, INV_READ) AS fd) o
    WHERE uuid = %s [AND public]

The start and length are guessed from the request before the row is known (the first range,
or the first chunk); when the plan wants another first read — a suffix range past the start,
a precondition that fails — it reads again. The answer is planned by
:mod:`files_app.responder`, as in the views, so it carries the same status, headers and
bytes, plus the headers the host's security middleware would add (files_app._hostrules).
Whatever this path does not serve exactly as the view would, it leaves to the view:
private files (the view checks the user), invalid and expired share links, a missing large
object, a row whose size is not its object's, any view but the very ones files_app.urls
holds (decorated, wrapped, subclassed, ``as_view(...)``), a middleware's view rule
(``LoginRequiredMiddleware``), methods other than GET and HEAD, a Host outside
``ALLOWED_HOSTS``, plain HTTP under ``SECURE_SSL_REDIRECT``.

Under WSGI it runs in :class:`files_app.middleware.FileServingMiddleware`; under ASGI,
in :class:`files_app.asgi.StreamingASGIHandler` before Django's handler, on the event loop
with psycopg 3's async pool (:mod:`files_app.largeobjects_async`).

Internal to files_app, not part of its public API (docs/reference.md, "Public API").
"""

from __future__ import annotations

import functools
import re
import uuid
from collections.abc import AsyncIterator, Iterable, Iterator
from dataclasses import dataclass, replace
from datetime import datetime
from functools import lru_cache
from typing import Any

from django.conf import settings
from django.core.signals import setting_changed
from django.db import connections, router
from django.db.models import Q
from django.dispatch import receiver
from django.http.request import split_domain_port, validate_host
from django.urls import get_script_prefix, get_urlconf

from files_app import _databases, _hostrules, largeobjects, outage, responder, streaming
from files_app.conf import app_settings
from files_app.firstread import (
    Headers,
    first_read_guess,
    first_read_offset,
    first_read_params,
    first_read_sql,
)
from files_app.references import column
from files_app.responder import Plan
from files_app.sharing import LinkState, SignedGrant, read_signed_token


@dataclass(frozen=True)
class Target:
    """A file the lean path may serve: whose UUID, and on which terms."""

    #: The file's UUID, or a managed share link's token (rule "link").
    key: uuid.UUID | str
    #: Which rows it may serve: "public" (a download URL: what anyone may see), "any" (a
    #: signed share link: the link is the permission), "link" (a managed share link that
    #: may answer now, ShareLink.servable()), or a signed URL's rule key
    #: (SignedGrant.rule_key(): that version, visible on the URL's grounds).
    rule: str | tuple[str, str | None, bool]
    cache_control: str
    using: str
    #: What the host's security middleware add to the views' answers (files_app._hostrules).
    headers: tuple[tuple[str, str], ...] = ()


@dataclass
class Answer:
    """A response: status, headers and a body (bytes, or an iterator of chunks)."""

    status: int
    headers: list[tuple[str, str]]
    body: list[bytes] | Iterator[bytes] | AsyncIterator[bytes]

    def add_absent(self, headers: Iterable[tuple[str, str]]) -> Answer:
        """Add each of ``headers`` that the answer does not have yet (in any case), as
        SecurityMiddleware and the like do; return the answer."""
        present = {name.lower() for name, _ in self.headers}
        self.headers += [(name, value) for name, value in headers if name.lower() not in present]
        return self


@dataclass(frozen=True)
class _Found:
    oid: int
    name: str
    content_type: str
    size: int  # as the row says
    sha256: str
    updated: datetime
    actual_size: int  # as the object says
    offset: int  # where the guessed read started
    data: bytes


def host_allowed(host: str) -> bool:
    """Return whether Django would accept ``host`` (``ALLOWED_HOSTS``, as ``get_host()``)."""
    allowed = settings.ALLOWED_HOSTS
    if settings.DEBUG and not allowed:
        allowed = [".localhost", "127.0.0.1", "[::1]"]
    domain, _ = split_domain_port(host)
    return bool(domain) and validate_host(domain, allowed)


def request_host(header: Headers, server: str) -> str:
    """Return the host as ``HttpRequest.get_host()`` reads it, before validation;
    ``server`` is the server's name and port, for requests without a Host."""
    if settings.USE_X_FORWARDED_HOST and (forwarded := header("X-Forwarded-Host")):
        return forwarded
    return header("Host") or server


def request_is_secure(header: Headers, scheme: str) -> bool:
    """Return whether the request came over HTTPS, as ``HttpRequest.is_secure()`` says."""
    if settings.SECURE_PROXY_SSL_HEADER:
        meta_name, secure_value = settings.SECURE_PROXY_SSL_HEADER
        value = header(meta_name.removeprefix("HTTP_").replace("_", "-"))
        if value is not None:
            return bool(value.split(",", 1)[0].strip() == secure_value)
    return scheme == "https"


@receiver(setting_changed)
def _forget_routes(*, setting: str, **kwargs: Any) -> None:
    # Tests change settings; a server never does.
    _database.cache_clear()
    _lookup.cache_clear()
    _signed_grant.cache_clear()
    _hostrules.forget()


@lru_cache(maxsize=1)
def _database() -> str | None:
    """Return the alias of StoredFile's rows if its large objects are there too."""
    from files_app.models import StoredFile
    from files_app.storage import LargeObjectStorage

    storage = StoredFile._meta.get_field("file").storage
    using = router.db_for_read(StoredFile)
    if not isinstance(storage, LargeObjectStorage) or storage.using != using:
        return None  # the row and the object are not in one database: one query cannot
    # Its hot standby, if downloads read from one, is chosen per request (serve(): what
    # the standby does not have yet, the view finds on the primary).
    return using


def find_target(
    path_info: str,
    host: str | None,
    secure: bool,
    *,
    urlconf: Any = None,
    before_django: bool = False,
) -> Target | None:
    """Return what the lean path would serve at ``path_info``, or None to leave it to Django.

    ``host`` is the request's host as ``HttpRequest.get_host()`` would read it (None if
    Django rejected it), ``secure`` whether the request came over HTTPS, ``urlconf`` the
    request's own URLconf if a middleware set one. ``before_django``: the caller answers
    before Django's handler (files_app.wsgi, files_app.asgi), where no middleware runs.
    """
    from files_app.sharing import read_share_token
    from files_app.views import (
        SharedFileView,
        ShareLinkView,
        SignedFileView,
        cache_control_for_public,
    )

    if before_django and not _hostrules.handler_may_answer():
        return None  # the middleware ahead of FileServingMiddleware run first
    urlconf = urlconf or get_urlconf() or settings.ROOT_URLCONF
    prefixes = _hostrules.prefixes(urlconf, get_script_prefix())
    if not prefixes or not path_info.startswith(prefixes):
        return None
    if settings.SECURE_SSL_REDIRECT and not secure:
        return None  # SecurityMiddleware redirects
    if host is None or not host_allowed(host):
        return None  # Django answers 400
    route = _hostrules.route(urlconf, path_info)
    using = _database()
    if route is None or using is None:
        return None
    kind, key, filename = route
    headers = _hostrules.security_headers(secure)
    if kind == "download":
        return Target(uuid.UUID(key), "public", cache_control_for_public(), using, headers)
    if kind == "signed":
        grant = _signed_grant(key)
        if grant is None or grant.expired() or grant.name != filename:
            return None  # the view answers 404 or 410
        cache_control = SignedFileView.cache_control or ""
        return Target(grant.uuid, grant.rule_key(), cache_control, using, headers)
    if kind == "link":
        if not _TOKEN.fullmatch(key):
            return None  # the view answers 404
        return Target(key, "link", ShareLinkView.cache_control or "", using, headers)
    state, file_uuid = read_share_token(key)
    if state is LinkState.VALID and file_uuid is not None:
        return Target(file_uuid, "any", SharedFileView.cache_control or "", using, headers)
    return None


# What a managed share link's token may look like (ShareLink.token).
_TOKEN = re.compile(r"[A-Za-z0-9_-]{1,64}")


@lru_cache(maxsize=4096)
def _signed_grant(token: str) -> SignedGrant | None:
    """Return the grant of a signed URL's token if its signature holds (expired or not).

    Cached: a player asks for the same URL over and over, and checking the signature costs
    as much as the rest of finding the file; the answer for a token never changes while
    ``SECRET_KEY`` does not (the expiry is checked at each request).
    """
    state, grant = read_signed_token(token)
    return grant if state is not LinkState.INVALID else None


@lru_cache(maxsize=4096)
def _lookup(rule: str | tuple[str, str | None, bool], using: str) -> tuple[str, tuple[Any, ...]]:
    """Return the lookup's SQL and the parameters of its access rule (see Target.rule).

    A download URL serves only what :meth:`StoredFile.visible_to` allows anyone (no user:
    this path knows none), a signed URL what :meth:`StoredFile.signed_rule` allows on its
    grounds, each compiled by Django from that very rule; a share link's holder may have any
    file (the signed link is the permission). Cached: a player asks for the same file over
    and over, and compiling a rule costs more than checking a signature.
    """
    from files_app.models import ShareLink, StoredFile

    connection = connections[using]
    quote = connection.ops.quote_name
    table = quote(StoredFile._meta.db_table)

    def col(name: str) -> str:
        return f"{table}.{column(StoredFile, name, quote)}"

    file, size = col("file"), col("size")
    fields = ", ".join(col(name) for name in ("name", "content_type", "sha256", "updated"))
    where = f"{col('uuid')} = %s::uuid"
    rule_params: tuple[Any, ...] = ()
    allowed: Q | None = None
    if rule == "link":
        # The file of the link, if the link may answer now: checked at every request, so
        # that a revoked, expired or used-up link is refused at once (nothing is cached).
        links = ShareLink._base_manager.filter(ShareLink.servable()).query
        servable, link_params = links.where.as_sql(links.get_compiler(using), connection)
        link_table = quote(ShareLink._meta.db_table)
        link_file, token = (
            f"{link_table}.{column(ShareLink, name, quote)}" for name in ("stored_file", "token")
        )
        where = (
            f"{col('id')} = (SELECT {link_file} FROM {link_table} "
            f"WHERE {token} = %s AND ({servable}))"
        )
        rule_params = tuple(link_params)
        allowed = StoredFile.downloadable()
    elif rule == "public":
        allowed = StoredFile.visible_to(None)
    elif rule == "any":
        allowed = StoredFile.downloadable()
    elif isinstance(rule, tuple):
        version, user, every = rule
        grant = SignedGrant(uuid.UUID(int=0), version, "", user, every, 0)
        allowed = StoredFile.signed_rule(grant)
    if allowed is not None and allowed:
        query = StoredFile._base_manager.filter(allowed).query
        compiled, params = query.where.as_sql(query.get_compiler(using), connection)
        where, rule_params = f"{where} AND ({compiled})", (*rule_params, *params)
    # The descriptor lives in a LATERAL subquery, opened once; lo_open fails for a missing
    # object (SQLSTATE 42704: the view then answers 404). lo_get reads by offset and needs
    # no descriptor.
    sql = (
        f"SELECT {file}, {size}, {fields}, lo_lseek64(o.fd, 0, 2), "
        f"{first_read_sql(file, size)}, lo_close(o.fd) "
        f"FROM {table}, "
        f"LATERAL (SELECT lo_open({file}, {largeobjects.INV_READ}) AS fd) o WHERE {where}"
    )
    return sql, rule_params


def _params(target: Target, guess: tuple[int, int], rule: tuple[Any, ...]) -> tuple[Any, ...]:
    return (*first_read_params(guess), str(target.key), *rule)


def _found(row: tuple[Any, ...] | None, guess: tuple[int, int]) -> _Found | None:
    if row is None or row[0] is None:
        return None  # no such file, or one files_move took to another storage: the view's
    oid, size, name, content_type, sha256, updated, actual, data = row[:8]
    offset = first_read_offset(guess, int(size))
    return _Found(
        int(oid), name, content_type, int(size), sha256, updated, int(actual), offset, bytes(data)
    )


def _plan(method: str, header: Headers, target: Target, found: _Found) -> Plan:
    from files_app.models import StoredFile

    info = StoredFile.download_info_for(
        oid=found.oid,
        name=found.name,
        content_type=found.content_type,
        sha256=found.sha256,
        size=found.size,
        updated=found.updated,
        cache_control=target.cache_control,
    )
    return responder.plan_response(method, header, info, max_ranges=app_settings.MAX_RANGES)


def _first(plan: Plan, found: _Found, chunk: int) -> tuple[tuple[int, int] | None, bytes | None]:
    """Return the plan's first read, and its bytes if the guessed read holds them."""
    first = next(streaming.body_reads(plan.body, chunk), None)
    if first is None:
        return None, None
    offset, length = first
    if offset == found.offset and length <= len(found.data):
        return first, found.data[:length]
    return first, None


def _planned(
    method: str,
    header: Headers,
    target: Target,
    row: tuple[Any, ...] | None,
    guess: tuple[int, int],
    chunk: int,
) -> tuple[_Found, Plan, tuple[int, int], bytes | None] | Answer | None:
    """Plan the answer from the lookup's row: None to leave it to the view, an Answer
    without reads, or what to stream: the file, the plan, its first read and the bytes of
    that read if the guess holds them."""
    found = _found(row, guess)
    if found is None or found.actual_size != found.size:
        return None  # no such public file, or a row untrue to its object: the view says
    plan = _plan(method, header, target, found)
    if target.rule == "link" and responder.starts_a_download(method, plan):
        return None  # the view counts the download (ShareLinkView.admit)
    first, data = _first(plan, found, chunk)
    if first is None:
        answer = Answer(plan.status, plan.headers, responder.literal_bytes(plan.body))
        return answer.add_absent(target.headers)
    return found, plan, first, data


def unavailable(
    method: str, path: str, exc: Exception, target: Target, retry_after: int = outage.RETRY_AFTER
) -> Answer:
    """Return the lean path's 503 while the database cannot be reached: the views' (the
    one of files_app.outage), with the headers of the host's security middleware."""
    response = outage.unavailable(method, path, exc, retry_after)
    answer = Answer(response.status_code, list(response.items()), [response.content])
    return answer.add_absent(target.headers)


def serve(method: str, header: Headers, target: Target, *, asgi: bool = False) -> Answer | None:
    """Answer a GET or HEAD for ``target`` through Django's connection; None: not here.

    With ``asgi``, the body is an async iterator (for a worker thread under ASGI). Read
    from the hot standby when it may serve (files_app._databases), else from the primary.
    """
    return _databases.run(
        target.using,
        lambda using: _serve(method, header, replace(target, using=using), asgi),
        standby=_standby_may_answer(target),
    )


def _standby_may_answer(target: Target) -> bool:
    # A managed share link's state is read from the primary: a revoke must be seen on the
    # next request, not once a lagging standby has it.
    return target.rule != "link"


def _serve(method: str, header: Headers, target: Target, asgi: bool) -> Answer | None:
    from files_app.storage import LargeObjectIO

    chunk = app_settings.CHUNK_SIZE
    guess = first_read_guess(method, header, chunk)
    sql, rule = _lookup(target.rule, target.using)
    try:
        params = _params(target, guess, rule)
        row = largeobjects.fetch_one(sql, params, target.using, prepare=app_settings.PREPARE)
    except FileNotFoundError:
        return None
    planned = _planned(method, header, target, row, guess, chunk)
    if planned is None or isinstance(planned, Answer):
        return planned
    found, plan, first, data = planned
    raw = LargeObjectIO(found.oid, target.using, found.size)
    if data is None:
        try:
            data = raw.read_at(*first)
        except FileNotFoundError:
            return None
    stream = raw.astream if asgi else raw.stream
    answer = Answer(plan.status, plan.headers, stream(plan.body, chunk, data))
    return answer.add_absent(target.headers)


async def aserve(method: str, header: Headers, target: Target) -> Answer | None:
    """:func:`serve` on the event loop: the async pool, and an async body."""
    return await _databases.arun(
        target.using,
        lambda using: _aserve(method, header, replace(target, using=using)),
        standby=_standby_may_answer(target),
    )


async def _aserve(method: str, header: Headers, target: Target) -> Answer | None:
    from files_app import largeobjects_async

    chunk = app_settings.CHUNK_SIZE
    guess = first_read_guess(method, header, chunk)
    sql, rule = _lookup(target.rule, target.using)
    try:
        row = await largeobjects_async.execute(sql, _params(target, guess, rule), target.using)
    except FileNotFoundError:
        return None
    planned = _planned(method, header, target, row, guess, chunk)
    if planned is None or isinstance(planned, Answer):
        return planned
    found, plan, first, data = planned
    if data is None:
        try:
            data = await largeobjects_async.read(found.oid, *first, target.using)
        except FileNotFoundError:
            return None
    reads = functools.partial(largeobjects_async.read_pieces, found.oid, using=target.using)
    body = streaming.astream_async(reads, plan.body, chunk, data)
    return Answer(plan.status, plan.headers, body).add_absent(target.headers)

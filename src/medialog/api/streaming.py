"""``GET|HEAD /v1/stream/{asset}/{expires}/{signature}/{path}``: previews objects under a signed
prefix (docs/api.md, "Stream URLs"). The signature is the credential; no Authorization header.

- The URL is checked on the RAW request path (percent-encoding untouched, decoded exactly once
  by ``safe_object_path``): ``verify_stream`` (403 ``SIGNATURE_INVALID`` / ``SIGNATURE_EXPIRED``),
  then the object path (403 ``PATH_INVALID``: ``..``, ``.``, empty segments, encoded slashes,
  anything outside ``[A-Za-z0-9._-]``), so a URL never reaches outside the asset's previews
  (``medialog.domain.layout.preview_key``).
- Then the asset must still be there for the URL's audience (``check_streamable``:
  ``medialog.domain.access.may_stream``), else 404 ``ASSET_NOT_FOUND``, as
  ``GET /v1/assets/{id}`` answers whoever may not see it. A URL names its
  audience in the segment its signature covers (``signed_subject``): ``{asset}`` when it was
  issued while anyone could read the asset, ``{asset}_owner`` when it was issued to the owner or
  an admin while only they could. A deleted (or expired) asset plays for no one; an asset made
  private stops playing for every URL issued while it was readable by others (the owner's too:
  a URL is a bearer credential, the holder is unknown) and keeps playing for the owner-audience
  URLs issued since. Made public again, the earlier URLs play again until they expire. The
  asset is read from PostgreSQL on every request, uncached (``fetch_asset_ref`` is one indexed
  read, small next to a segment's S3 HEAD and GET, and a cache did not change segment latency or
  throughput beyond run-to-run noise), so a change stops playback as soon as the read
  model has it. What a shared cache
  (a CDN) already holds is not reached from here: owner-audience answers are ``private``, so no
  shared cache keeps them; public ones need a purge there.
- The object is streamed from S3 in chunks (never whole in memory), with ``Range`` (one range:
  206 + ``Content-Range``; unsatisfiable: 416 with ``Content-Range: bytes */size``), ``ETag`` and
  ``If-None-Match`` (304), ``Accept-Ranges: bytes``, the type by extension, and caching:
  segments are immutable, variant playlists and thumbnails short-lived, the master playlist
  very short-lived while the asset is still processing (it grows as rungs finish).
- A missing object is 404 ``NOT_FOUND``; the store failing is 503 ``STORE_UNAVAILABLE`` (the
  ``BlobStore``'s own errors). Any origin may read (CORS ``*``): web players need it."""

from __future__ import annotations

import logging
import time

from aiohttp import web

from medialog.api import keys
from medialog.api.client_address import client_address
from medialog.api.engagement_queries import fetch_asset_ref
from medialog.api.errors import error_response
from medialog.domain.access import may_stream, not_found
from medialog.domain.errors import Conflict, Forbidden, NotFound, ValidationError
from medialog.domain.layout import MASTER_PLAYLIST, content_type_for, is_segment, preview_key
from medialog.domain.view_reports import AssetRef
from medialog.signing import PATH_INVALID, parse_range, safe_object_path, verify_stream
from medialog.storage import BlobStore, ObjectBody, ObjectHead

log = logging.getLogger(__name__)

CHUNK_BYTES = 256 * 1024
IMMUTABLE = "max-age=31536000, immutable"
_PREFIX_SEGMENTS = 6  # "", "v1", "stream", asset, expires, signature
# Web players (hls.js) fetch from the page's origin; the signature, not the origin, is the
# credential, so any origin may read.
_CORS = {"Access-Control-Allow-Origin": "*",
         "Access-Control-Expose-Headers": "Content-Length, Content-Range, ETag, Accept-Ranges"}


OWNER_AUDIENCE = "owner"


def _not_found() -> NotFound:
    return NotFound("no such object", code="NOT_FOUND")


def signed_subject(asset_id: str, owner_audience: bool) -> str:
    """The URL segment a stream signature covers: the asset id, plus ``_owner`` for a URL issued
    to the owner or an admin of an asset others may not read. The MAC covers the whole segment,
    so the audience cannot be changed without breaking it; asset ids (UUIDs) have no ``_``."""
    return f"{asset_id}_{OWNER_AUDIENCE}" if owner_audience else asset_id


def parse_subject(segment: str) -> tuple[str, bool]:
    """``(asset id, owner audience)`` of a verified signed segment (``signed_subject``'s
    inverse)."""
    asset_id, sep, audience = segment.partition("_")
    if sep and audience != OWNER_AUDIENCE:
        raise not_found()  # signed, but not by playback: no asset of ours has this id
    return asset_id, bool(sep)


def check_streamable(asset: AssetRef | None, owner_audience: bool) -> AssetRef:
    """The asset, if a URL of this audience may still play it (``access.may_stream``), else 404
    ``ASSET_NOT_FOUND``."""
    if asset is None or not may_stream(asset, owner_audience=owner_audience):
        raise not_found()
    return asset


def _cache_control(asset: AssetRef, path: str, private: bool) -> str:
    # An IP-bound URL must not serve others from a cache, nor an owner-audience one anyone.
    scope = "private" if private else "public"
    if is_segment(path):
        return f"{scope}, {IMMUTABLE}"
    if path != MASTER_PLAYLIST:
        return f"{scope}, max-age=60"
    return f"{scope}, max-age={60 if asset.status == 'ready' else 5}"


def _not_modified(header: str | None, etag: str) -> bool:
    if header is None:
        return False
    tags = [t.strip().removeprefix("W/") for t in header.split(",")]
    return "*" in tags or etag in tags


async def _get(blobs: BlobStore, bucket: str, key: str, head: ObjectHead, start: int,
               end: int) -> ObjectBody | None:
    """The object's body for bytes start…end, only if it is still the object HEAD described:
    None when it was replaced since (a master playlist growing), to start over."""
    try:
        return await blobs.get_range(bucket, key, start, end, etag=head.etag)
    except Conflict:
        return None


async def stream_object(request: web.Request) -> web.StreamResponse:
    parts = request.raw_path.split("?", 1)[0].split("/", _PREFIX_SEGMENTS)
    if len(parts) != _PREFIX_SEGMENTS + 1:
        raise _not_found()
    subject, expires, token, raw_path = parts[3:]
    verify_stream(request.app[keys.SIGNING], subject, expires, token, now=time.time(),
                  client_ip=client_address(request) or None)
    if "%2f" in raw_path.lower() or "%5c" in raw_path.lower():
        raise Forbidden("object path has an encoded slash", code=PATH_INVALID)
    path = safe_object_path(raw_path)
    asset_id, owner_audience = parse_subject(subject)
    asset = check_streamable(await fetch_asset_ref(request.app[keys.PG], asset_id), owner_audience)
    key = preview_key(asset_id, path)
    settings, blobs = request.app[keys.SETTINGS], request.app[keys.BLOBS]
    cache = _cache_control(asset, path, private=owner_audience or token.split(".")[1] == "i")
    for _ in range(3):
        head = await blobs.head(settings.bucket_previews, key)
        if head is None:
            raise _not_found()
        etag = f'"{head.etag}"'
        headers = {"ETag": etag, "Cache-Control": cache, "Accept-Ranges": "bytes",
                   "Content-Type": content_type_for(path), **_CORS}
        if _not_modified(request.headers.get("If-None-Match"), etag):
            return web.Response(status=304, headers=headers)
        range_header = request.headers.get("Range")
        if_range = request.headers.get("If-Range")
        if if_range is not None and if_range.strip() != etag:
            range_header = None  # the client's partial copy is stale: send the whole object
        try:
            wanted = parse_range(range_header, head.size)
        except ValidationError as exc:
            resp = error_response(416, exc.code, exc.message, exc.details)
            resp.headers.update({"Content-Range": f"bytes */{head.size}", "ETag": etag,
                                 "Accept-Ranges": "bytes"})
            return resp
        start, end = wanted if wanted is not None else (0, head.size - 1)
        if wanted is not None:
            headers["Content-Range"] = f"bytes {start}-{end}/{head.size}"
        body = None
        if request.method != "HEAD" and head.size > 0:
            body = await _get(blobs, settings.bucket_previews, key, head, start, end)
            if body is None:
                continue
        return await _send(request, 206 if wanted else 200, headers, end - start + 1, body)
    raise _not_found()  # the object kept changing under us


async def _send(request: web.Request, status: int, headers: dict[str, str], length: int,
                body: ObjectBody | None) -> web.StreamResponse:
    resp = web.StreamResponse(status=status, headers=headers)
    resp.content_length = length
    try:
        await resp.prepare(request)
        while body is not None:
            chunk = await body.read(CHUNK_BYTES)
            if not chunk:
                break
            await resp.write(chunk)
        await resp.write_eof()
    except ConnectionError:
        log.debug("client went away while streaming %s", request.path)
    finally:
        if body is not None:
            await body.close()
    return resp

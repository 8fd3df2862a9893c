"""``GET /v1/assets/{id}/playback``: signed playback URLs.

Anyone who may read the asset (``medialog.domain.access.may_read``: anonymous callers too for
public and unlisted assets; private ones only for the owner and admins, 404 otherwise) gets
``hls_url`` (the master playlist under a signed prefix, docs/api.md "Stream URLs"),
``thumbnail_url`` and ``expires_at``; the owner and admins also get ``download_url``, an S3
presigned GET of the master valid as long. ``expires_in`` is 60 … ``playback_ttl_max_s``
seconds (default ``playback_ttl_s``); ``bind_ip=true`` binds the stream URLs to the caller's
address (as the api sees it: behind a proxy that is the proxy's). The asset must be playable
(``medialog.domain.playback.check_playable``), else 409 ``ASSET_NOT_PLAYABLE``.

The stream URLs name their audience (``medialog.domain.access.needs_owner_audience``, signed in
by ``medialog.api.streaming.signed_subject``): issued while anyone may read the asset, they stop
playing when it is made private or deleted; issued to the owner or an admin of a private asset,
they play until it is deleted (or they expire).

Each issuance appends ``PlaybackIssued`` to ``events.access`` (key = asset id) and is answered
only once the broker acknowledged it (docs/architecture.md, rule 4)."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime

from aiohttp import web

from medialog.api import keys
from medialog.api.assets import facts_of, readable_asset, viewer_of
from medialog.api.auth.principal import Principal
from medialog.api.client_address import client_address
from medialog.api.commands import append_event
from medialog.api.requests import correlation_id, optional_principal
from medialog.api.streaming import signed_subject
from medialog.domain.access import may_manage, needs_owner_audience
from medialog.domain.errors import ValidationError
from medialog.domain.events import PlaybackIssued
from medialog.domain.playback import (
    Playable,
    check_playable,
    hls_path,
    parse_params,
    thumbnail_path,
)
from medialog.signing import stream_url
from medialog.timefmt import iso


async def _publish(request: web.Request, payload: PlaybackIssued, who: Principal | None) -> None:
    await append_event(request, "events.access", payload, subject=payload.asset_id, who=who,
                       correlation_id=correlation_id(request))


async def issue_playback(request: web.Request) -> web.Response:
    who = await optional_principal(request)
    viewer = viewer_of(who)
    settings = request.app[keys.SETTINGS]
    params = parse_params(request.query, default_ttl_s=settings.playback_ttl_s,
                          max_ttl_s=settings.playback_ttl_max_s)
    row = await readable_asset(request, viewer)
    renditions = row["renditions"]
    asset = Playable(
        asset_id=row["asset_id"],
        status=row["status"],
        renditions=len(json.loads(renditions) if isinstance(renditions, str) else renditions),
        master_playlist_key=row["master_playlist_key"],
        thumbnail_key=row["thumbnail_key"],
    )
    check_playable(asset)
    client_ip = (client_address(request) or None) if params.bind_ip else None
    if params.bind_ip and not client_ip:
        raise ValidationError("the client address is unknown: cannot bind to it",
                              code="CLIENT_ADDRESS_UNKNOWN")
    expires = int(time.time()) + params.expires_in
    signing = request.app[keys.SIGNING]
    subject = signed_subject(asset.asset_id, owner_audience=needs_owner_audience(facts_of(row)))

    def url(path: str | None) -> str | None:
        if path is None:
            return None
        return stream_url(settings.base_url, signing, subject, expires, path, client_ip)

    body: dict[str, object] = {
        "asset_id": asset.asset_id,
        "hls_url": url(hls_path(asset)),
        "thumbnail_url": url(thumbnail_path(asset)),
        "expires_at": iso(datetime.fromtimestamp(expires, UTC)),
    }
    download = bool(row["master_key"]) and may_manage(viewer, row["owner_id"])
    if download:
        body["download_url"] = await request.app[keys.BLOBS].presign_get(
            settings.bucket_masters, row["master_key"], expires_in=params.expires_in,
            filename=row["filename"] or None)
    await _publish(request, PlaybackIssued(
        asset_id=asset.asset_id, owner_id=row["owner_id"], user_id=who.user_id if who else None,
        expires_at=datetime.fromtimestamp(expires, UTC), ip_bound=client_ip is not None,
        key_id=signing.active_kid, download=download,
    ), who)
    return web.json_response(body, headers={"Cache-Control": "no-store"})

"""Engagement routes: playback reports, likes and an asset's counters.

* ``POST /v1/assets/{id}/views`` — signed in or anonymous. A valid report for an asset the
  caller may watch is appended as ``ViewReported`` to ``events.views`` (key = asset id) and
  answered ``202`` only once the broker acknowledged it (acks=all). Besides its caller's
  ``views`` budget, each report spends one of its session's (``view_sessions``: per viewer,
  asset and session; ``medialog.api.rate_limit``), before anything is written. Whether it
  makes a view count is decided later by the projection (``medialog.domain.views``). Reports
  share the api's one producer, so concurrent requests share its batches (linger).
* ``PUT`` / ``DELETE /v1/assets/{id}/like`` — signed in, any role: a ``Like``/``Unlike``
  command to the engagement actor. The answer waits for the outcome to be projected
  (``LIKE_WAIT_S``, or ``Prefer: wait=N``) and is ``200 {liked, like_count, …}``; if it is not
  settled in time, or with ``Prefer: wait=0``, ``202 {liked: <asked>, command_id}``. Repeating
  a like is an accepted no-op: 200 again.
* ``GET /v1/assets/{id}/stats`` — signed in or anonymous: ``view_count``, ``like_count``,
  ``watch_seconds_total`` and, when signed in, ``liked_by_me``.

Who may: ``medialog.domain.access.may_engage`` (who may ``GET /v1/assets/{id}``: the owner and
admins, anyone else a public or unlisted asset whose upload completed; and no one once the asset
is deleted or expired: its owner still finds its last counters in GET's ``stats``). Anyone else
gets what GET gives them, ``404 ASSET_NOT_FOUND`` (never 403: ids cannot be probed) — for an
unlike too: a like on an asset one can no longer see stays as it was.

A view report also needs media that plays, for owners and admins too: ``409
ASSET_NOT_PLAYABLE`` (``/playback``'s code) unless the asset is ``ready`` or ``processing``
(``access.is_playable``; the lookup does not carry renditions, so a processing asset is taken as
playable: its lowest rung comes first, within seconds). An unfinished, failed or merely uploaded
asset has nothing a player could have played, so a report about it can only be made up.

The asset facts come from ``AssetLookup``, cached for 2 s: a change of visibility or a deletion
reaches these routes that much after ``GET`` sees it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime

from aiohttp import web

from medialog.api import keys
from medialog.api.assets import parse_asset_id, viewer_of
from medialog.api.auth.principal import Principal
from medialog.api.client_address import client_address
from medialog.api.commands import append_event, outcome, send_command
from medialog.api.engagement_queries import AssetLookup, fetch_stats
from medialog.api.rate_limit import spend
from medialog.api.requests import (
    command_id,
    command_meta,
    correlation_id,
    idempotent_id,
    optional_principal,
    prefer_wait,
    principal,
    read_json,
)
from medialog.domain.access import Viewer, is_playable, may_engage, not_found
from medialog.domain.commands import Like, Unlike
from medialog.domain.engagement import engagement_key
from medialog.domain.errors import Conflict
from medialog.domain.events import ViewReported
from medialog.domain.view_reports import AssetRef, anonymous_viewer_key, validate_view_report


@dataclass(frozen=True)
class EngagementDeps:
    assets: AssetLookup
    viewer_salt: bytes


ENGAGEMENT = web.AppKey("engagement", EngagementDeps)
LIKE_WAIT_S = 10.0  # how long a like waits for its outcome when the client did not say


async def engagement_ctx(app: web.Application) -> AsyncIterator[None]:
    """Cleanup context (after the PostgreSQL pool's): refuses to start without a viewer salt."""
    salt = app[keys.SETTINGS].viewer_salt.get_secret_value()
    if not salt:
        raise ValueError("MEDIALOG_VIEWER_SALT must be set (it names anonymous viewers)")
    app[ENGAGEMENT] = EngagementDeps(assets=AssetLookup(app[keys.PG]), viewer_salt=salt.encode())
    yield


async def _visible(request: web.Request, who: Principal | None) -> AssetRef:
    """The asset in the path if ``who`` may engage with it, else 404 ``ASSET_NOT_FOUND``."""
    asset_id = parse_asset_id(request.match_info["asset_id"])
    return check_visible(await request.app[ENGAGEMENT].assets.get(asset_id), viewer_of(who))


def check_visible(ref: AssetRef | None, viewer: Viewer) -> AssetRef:
    """``ref`` if ``viewer`` may engage with it (``access.may_engage``), else ``NotFound``."""
    if ref is None or not may_engage(viewer, ref):
        raise not_found()
    return ref


def _check_played(asset: AssetRef) -> None:
    if not is_playable(asset.status):
        raise Conflict(f"the asset cannot be played (it is {asset.status}): no view to report",
                       code="ASSET_NOT_PLAYABLE", details=[{"status": asset.status}])


async def report_view(request: web.Request) -> web.Response:
    who = await optional_principal(request)
    asset = await _visible(request, who)
    _check_played(asset)
    spec = validate_view_report(await read_json(request), duration_s=asset.duration_s)
    deps = request.app[ENGAGEMENT]
    payload = ViewReported(
        asset_id=asset.asset_id,
        owner_id=asset.owner_id,
        viewer_key=who.user_id if who else anonymous_viewer_key(deps.viewer_salt,
                                                                 client_address(request)),
        signed_in=who is not None,
        session_id=spec.session_id,
        watch_seconds=spec.watch_seconds,
        duration_s=asset.duration_s,
        position=spec.position,
        device=spec.device,
        country=spec.country,
        referrer=spec.referrer,
    )
    refused = await spend(request, "view_sessions",
                          f"{payload.viewer_key}/{asset.asset_id}/{spec.session_id}")
    if refused is not None:
        return refused
    report_id = idempotent_id(request, payload.viewer_key,
                              f"view\0{asset.asset_id}\0{spec.session_id}")
    event = await append_event(request, "events.views", payload, subject=asset.asset_id, who=who,
                               correlation_id=correlation_id(request), event_id=report_id)
    # json_response's bytes, written out: the id is a UUID (``idempotent_id``), nothing to
    # escape, and json.dumps would cost more than the rest of the answer
    return web.Response(text=f'{{"report_id": "{event.id}"}}', status=202,
                        content_type="application/json")


async def _set_like(request: web.Request, like: bool) -> web.Response:
    who = await principal(request)
    asset = await _visible(request, who)
    key = engagement_key(asset.asset_id, who.user_id)
    cls = Like if like else Unlike
    command = cls(asset_id=asset.asset_id, user_id=who.user_id, owner_id=asset.owner_id)
    cmd_id = await command_id(request, who, f"{cls.TYPE}\0{asset.asset_id}")
    meta = command_meta(request, who, cmd_id, datetime.now(UTC))
    await send_command(request.app, "commands.engagement", key, command, meta)
    body: dict[str, object] = {"asset_id": asset.asset_id, "liked": like, "command_id": cmd_id}
    asked = prefer_wait(request)
    wait = LIKE_WAIT_S if asked is None else asked
    if not wait:
        return web.json_response(body, status=202)
    result = await outcome(request.app, cmd_id, wait)
    body["command"] = result.to_json()
    headers = {} if asked is None else {"Preference-Applied": f"wait={wait:g}"}
    if not (result.status == "accepted" and result.settled):
        return web.json_response(body, status=202, headers=headers)
    stats = await fetch_stats(request.app[keys.PG], asset.asset_id, key)
    body.update(liked=stats.liked_by_me, like_count=stats.like_count)
    return web.json_response(body, status=200, headers=headers)


async def like(request: web.Request) -> web.Response:
    return await _set_like(request, True)


async def unlike(request: web.Request) -> web.Response:
    return await _set_like(request, False)


async def get_stats(request: web.Request) -> web.Response:
    who = await optional_principal(request)
    asset = await _visible(request, who)
    key = engagement_key(asset.asset_id, who.user_id) if who else None
    stats = await fetch_stats(request.app[keys.PG], asset.asset_id, key)
    body: dict[str, object] = {
        "asset_id": asset.asset_id,
        "view_count": stats.view_count,
        "like_count": stats.like_count,
        "watch_seconds_total": float(stats.watch_seconds_total),
    }
    if stats.liked_by_me is not None:
        body["liked_by_me"] = stats.liked_by_me
    return web.json_response(body)


"""The response models (``medialog.api.responses``): each is a valid JSON Schema, the route table
names every route the router has, and what the handlers' own builders produce validates (and a
wrong shape does not)."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric import rsa
from jsonschema import Draft202012Validator
from pydantic import BaseModel

from medialog.analytics import params, queries
from medialog.api import responses as r
from medialog.api.assets import asset_json
from medialog.api.errors import error_response
from medialog.api.routes import EVERY_PROCESS, api_routes, setup_routes
from medialog.issuer import public_jwks
from medialog.outcomes import Outcome

NOW = datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)
MODELS = sorted({m for table in (r.RESPONSES, r.OTHER_RESPONSES) for by in table.values()
                 for m in by.values() if m is not None} | {r.ErrorBody, r.StatusEvent},
                key=lambda m: m.__name__)


def errors(model: type[BaseModel], body: Any) -> list[str]:
    validator = Draft202012Validator(model.model_json_schema())
    return [f"{list(e.path)}: {e.message}" for e in validator.iter_errors(body)]


def valid(model: type[BaseModel], body: Any) -> None:
    assert errors(model, json.loads(json.dumps(body))) == []


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.__name__)
def test_each_schema_is_valid_json_schema(model: type[BaseModel]) -> None:
    schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
    Draft202012Validator.check_schema(schema)
    Draft202012Validator.check_schema(model.model_json_schema())


def _properties(schema: Any) -> Any:
    if isinstance(schema, dict):
        if isinstance(schema.get("properties"), dict):
            yield from schema["properties"].items()
        for value in schema.values():
            yield from _properties(value)
    elif isinstance(schema, list):
        for value in schema:
            yield from _properties(value)


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.__name__)
def test_an_absent_field_has_no_null_default(model: type[BaseModel]) -> None:
    assert [name for name, prop in _properties(model.model_json_schema())
            if "default" in prop and prop["default"] is None] == []


def test_the_table_names_every_route_the_document_describes() -> None:
    described = {(route.method, route.path)
                 for route in (*EVERY_PROCESS, *api_routes(serve_jwks=True))}
    assert {k for k in r.RESPONSES if k[0] != "HEAD"} == described
    app = web.Application()
    setup_routes(app, api=True, serve_jwks=True)
    served = {(route.method, route.resource.canonical) for route in app.router.routes()
              if route.resource is not None}
    assert set(r.RESPONSES) <= served
    assert set(r.MEDIA_TYPES) | set(r.OTHER_RESPONSES) <= set(r.RESPONSES)
    for key, by_status in r.RESPONSES.items():
        assert by_status and all(200 <= s < 300 or s == 304 for s in by_status)
        if any(m is None and s in (200, 206) for s, m in by_status.items()):
            assert key in r.MEDIA_TYPES, key


def _row(**changes: Any) -> dict[str, Any]:
    """An ``assets`` row joined with its counters, as asyncpg gives it (jsonb as text)."""
    row: dict[str, Any] = {
        "asset_id": "5b0c7a1e-0000-4000-8000-000000000001", "owner_id": "alice",
        "status": "ready", "kind": "video", "version": 9, "title": "My clip",
        "filename": "clip.mp4", "content_type": "video/mp4", "size_bytes": 1234567,
        "visibility": "public", "description": "", "tags": ["beach"], "category": "",
        "duration_s": 5.0, "width": 640, "height": 360,
        "thumbnail_key": "5b0c7a1e-0000-4000-8000-000000000001/thumb.jpg",
        "renditions": json.dumps([
            {"name": "360p", "playlist_key": "k/360p/index.m3u8", "bandwidth": 900000,
             "codecs": "avc1.64001e,mp4a.40.2", "width": 640, "height": 360},
            {"name": "a128k", "playlist_key": "k/a128k/index.m3u8", "bandwidth": 140000,
             "codecs": "mp4a.40.2", "width": None, "height": None},
        ]),
        "transcode": json.dumps({"job_id": "j1", "rungs": None, "attempt": 1,
                                 "done": ["360p"], "state": "done"}),
        "failure": None, "view_count": 3, "like_count": 1,
        "upload_expires_at": NOW, "created_at": NOW, "updated_at": NOW, "deleted_at": None,
    }
    return {**row, **changes}


def test_asset_json_of_a_ready_video_a_fresh_upload_and_a_failure() -> None:
    ready = asset_json(_row())
    fresh = asset_json(_row(status="awaiting_upload", duration_s=None, width=None, height=None,
                            thumbnail_key=None, renditions="[]", transcode=None))
    failed = asset_json(_row(status="failed", kind="image", failure=json.dumps(
        {"job_id": "j1", "reason": "probe failed", "rung": None, "attempts": 3})))
    deleted = asset_json(_row(status="deleted", deleted_at=NOW + timedelta(hours=1)))
    for body in (ready, fresh, failed, deleted):
        valid(r.Asset, body)
    valid(r.AssetList, {"items": [ready, fresh], "page": 1, "limit": 20, "total": 2})


def test_a_wrong_shape_is_refused() -> None:
    body = asset_json(_row())
    assert errors(r.Asset, {**body, "duration_s": "5"})
    assert errors(r.Asset, {**body, "status": "new"})  # never answered
    assert errors(r.Asset, {k: v for k, v in body.items() if k != "deleted_at"})
    assert errors(r.Stats, {"asset_id": "a", "view_count": 1, "like_count": 0,
                            "watch_seconds_total": 1.5, "liked_by_me": None})
    assert errors(r.AssetList, {"items": [], "page": 1, "limit": 20, "total": 1.5})


def _outcomes() -> dict[str, dict[str, Any]]:
    base = {"command_id": "c1", "aggregate_id": "a1", "command_type": "asset.complete_upload",
            "actor_id": "alice"}
    return {
        "pending": Outcome(command_id="c1", status="pending").to_json(),
        "accepted": Outcome(**base, status="accepted", version=2, event_ids=["e1"],
                            projected=True).to_json(),
        "rejected": Outcome(**base, status="rejected", error_code="UPLOAD_MISSING",
                            error_message="no object", error_class="Conflict",
                            error_details=[{"key": "k"}]).to_json(),
    }


def test_command_outcomes_and_write_answers() -> None:
    outcomes = _outcomes()
    for outcome in outcomes.values():
        valid(r.CommandOutcome, outcome)
    # a command the actor gave up on: its details were stored as JSON null
    gave_up = {**outcomes["rejected"], "error": {"code": "COMMAND_FAILED", "message": "m",
                                                  "details": None}}
    valid(r.CommandOutcome, gave_up)
    assert errors(r.CommandOutcome, {**outcomes["accepted"], "projected": None})
    assert errors(r.CommandOutcome, {**outcomes["pending"], "status": "unknown"})

    valid(r.CommandAccepted, {"command_id": "c1", "asset_id": "a1"})
    valid(r.CommandAccepted, {"command_id": "c1", "asset_id": "a1",
                              "command": outcomes["pending"]})
    assert errors(r.CommandAccepted, {"command_id": "c1", "asset_id": "a1",
                                      "command": outcomes["rejected"]})
    valid(r.TranscodeAccepted, {"command_id": "c1", "asset_id": "a1", "job_id": "j2",
                                "command": outcomes["accepted"]})
    upload = {"command_id": "c1", "asset_id": "a1", "upload_url": "http://s3/staging/x?sig",
              "method": "PUT", "headers": {"Content-Type": "video/mp4", "Content-Length": "12"},
              "expires_at": "2026-01-02T03:19:05Z"}
    valid(r.UploadCreated, upload)
    valid(r.UploadCreated, {**upload, "command": outcomes["accepted"]})
    valid(r.UploadCreated, {"command_id": "c1", "asset_id": "a1", "upload_url": None,
                            "asset_status": "ready", "expires_at": "2026-01-02T03:19:05Z"})
    assert errors(r.UploadCreated, {k: v for k, v in upload.items() if k != "expires_at"})

    rejected = json.loads(error_response(409, "UPLOAD_MISSING", "no object", [{"k": 1}]).text)
    valid(r.ErrorBody, rejected)
    valid(r.ErrorBody, {**rejected, "command_id": "c1", "command": outcomes["rejected"]})
    valid(r.ErrorBody, json.loads(error_response(404, "ROUTE_NOT_FOUND", "Not Found").text))


def test_likes_views_stats_playback_history() -> None:
    outcomes = _outcomes()
    like = {"asset_id": "a1", "liked": True, "command_id": "c1"}
    valid(r.LikeState, {**like, "like_count": 4, "command": outcomes["accepted"]})
    for outcome in outcomes.values():
        valid(r.LikeAccepted, {**like, "command": outcome})
    valid(r.LikeAccepted, like)
    valid(r.ViewAccepted, {"report_id": "r1"})
    valid(r.StatusToken, {"token": "k1.1767323345.u.YWxpY2U.mac", "expires_at": NOW.isoformat()})
    stats = {"asset_id": "a1", "view_count": 2, "like_count": 0, "watch_seconds_total": 12.5}
    valid(r.Stats, stats)
    valid(r.Stats, {**stats, "liked_by_me": False})
    playback = {"asset_id": "a1", "hls_url": None, "thumbnail_url": "http://x/thumb.jpg",
                "expires_at": "2026-01-02T04:04:05Z"}
    valid(r.Playback, playback)
    valid(r.Playback, {**playback, "download_url": "http://s3/masters/x?sig"})
    event = {"sequence": 1, "id": "e1", "type": "medialog.asset.upload_requested",
             "time": "2026-01-02T03:04:05.678Z", "actor_id": None, "causation_id": "c1",
             "data": {"asset_id": "a1"}}
    valid(r.History, {"asset_id": "a1", "events": [event], "next_after": 1})
    valid(r.History, {"asset_id": "a1", "events": [], "next_after": None})
    valid(r.StatusEvent, {"asset_id": "a1", "version": 1, "status": "awaiting_upload",
                          "event": None, "time": "2026-01-02T03:04:05Z", "detail": {}})


class FakeClickHouse:
    """Answers each analytics query with rows of the shape ClickHouse gives: one total row
    (ints, UInt64 sums), no per-bucket rows except one, and an empty store."""

    def __init__(self, bucket: datetime) -> None:
        self.bucket = bucket.replace(tzinfo=None)

    async def query(self, sql: str,
                    parameters: dict[str, Any] | None = None) -> list[tuple[Any, ...]]:
        if "countIf(verdict = 'counted'),\n  uniqExactIf" in sql:
            values: tuple[Any, ...] = (3, 2, 12500, 5, 1, 1)
        elif "sessions" in sql or "countIf(d > 0)" in sql:
            values = (2, 0, 0)
        elif "countIf(type = 'medialog.engagement.liked')" in sql:
            values = (1, 0)
        elif "upload_requested'),\n  countIf" in sql:
            values = (2, 1)
        elif "uniqExact(u)" in sql or "playback_issued' AND" in sql:
            values = (4,)
        elif "avg(size)" in sql:
            return [(0, 0, math.nan)]
        else:  # top assets, durations
            return [("a1", 3, 12500)] if "LIMIT 10" in sql else []
        if "GROUP BY t" in sql:
            return [(self.bucket, *values)]
        return [values]


async def test_analytics_reports() -> None:
    rng = params.parse_range({"interval": "hour"}, NOW)
    ch: Any = FakeClickHouse(rng.buckets()[-1])
    asset = await queries.asset_report(ch, "a1", rng)
    valid(r.AssetAnalytics, {"owner_id": "alice", **asset})
    assert asset["totals"]["completion_rate"] is None  # no known duration: null
    valid(r.CreatorAnalytics, await queries.creator_report(ch, "alice", rng))
    overview = await queries.overview_report(ch, rng)
    valid(r.Overview, overview)
    assert overview["storage"]["average_file_size_bytes"] is None
    assert errors(r.Overview, {**overview, "storage": {**overview["storage"],
                                                       "storage_used_bytes": 1.5}})
    valid(r.Trending, {"window": "24h", "generated_at": "2026-01-02T03:04:05Z", "items": [
        {"rank": 1, "asset_id": "a1", "score": 2.5, "views": 2, "likes": -1,
         "owner_id": "alice", "title": "t"}]})


def test_operations() -> None:
    valid(r.Health, {"status": "ok"})
    ready = {
        "status": "unavailable", "checked_at": "2026-01-02T03:04:05Z", "version": "0.1.0",
        "uptime_s": 83.9, "memory_rss_bytes": None,
        "dependencies": {"kafka": {"status": "up", "latency_ms": 11.1},
                         "roles": {"status": "down", "latency_ms": 3000.2,
                                   "error": "TimeoutError"}},
        "projections": {"projection.assets": {"total": 2, "partitions": {"events.asset/0": 2}}},
        "peers": {"roles": {}, "other": {"version": "0.1.0", "uptime_s": 1.0,
                                         "memory_rss_bytes": 1024}},
    }
    valid(r.Readiness, ready)
    assert errors(r.Readiness, {**ready, "dependencies": {"kafka": {"status": "maybe",
                                                                    "latency_ms": 1.0}}})
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    valid(r.Jwks, public_jwks(key))

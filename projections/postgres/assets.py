"""Projection "assets": every asset event → the ``assets`` read model and the ``asset_events``
audit trail.

Guarded on the aggregate sequence: an event applies only if it is the next one for its asset
(``version = sequence - 1``). A re-emitted event (same sequence) is a duplicate and is skipped;
a gap (an event missing before it) is logged as an error and skipped — it cannot happen while
partitions are read in order, so it signals a bug, not load."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import asdict
from functools import partial
from typing import Any

import asyncpg

from medialog.domain import events as e
from medialog.domain.asset import STATUS_AFTER
from medialog.envelope import payload_json
from medialog.outcomes import NOTIFY_CHANNEL
from medialog.runtime.deps import Deps
from projections.reader import read
from projections.runner import Record, apply_or_skip

log = logging.getLogger(__name__)
NAME = "projection.assets"
GATE_LOCK = 0x6D6C6173  # advisory lock: live batches share it, a replay takes it alone
# What the api reads back after a command: a batch waits at most 50 ms to fill.
BATCH_MAX, BATCH_WITHIN_S = 500, 0.05

_MERGE_RENDITIONS = (
    "(SELECT coalesce(jsonb_agg(r), '[]'::jsonb) FROM jsonb_array_elements(assets.renditions) r "
    "WHERE NOT (r->>'name' = ANY(SELECT x->>'name' FROM jsonb_array_elements({new}) x))) || {new}"
)


# The job an ended transcode leaves: the one recorded, or (its request never seen, as when a log
# is cut before it) the ended job itself, so that the asset still names its job.
_JOB_ENDED = ("jsonb_set(coalesce(transcode, jsonb_build_object('job_id', {job}::text, 'rungs', "
              "NULL, 'attempt', 0, 'done', '[]'::jsonb)), '{{state}}', '\"{state}\"')")


def _update(p: Any) -> tuple[str, list[Any]] | None:
    """``SET`` clause and its arguments for one event (arguments start at $5; the status it
    leaves the asset in, ``domain.asset.STATUS_AFTER``, is set by the caller)."""
    if isinstance(p, e.UploadCompleted):
        return "size_bytes = $5", [p.size_bytes]
    if isinstance(p, e.UploadExpired):
        return "", []
    if isinstance(p, e.Promoted):
        return "master_key = $5", [p.master_key]
    if isinstance(p, e.TranscodeRequested):
        job = {"job_id": p.job_id, "rungs": p.rungs, "attempt": 0, "done": [], "state": "queued"}
        return "transcode = $5::jsonb", [json.dumps(job)]
    if isinstance(p, e.TranscodeStarted):
        job = {"job_id": p.job_id, "rungs": p.rungs, "attempt": p.attempt, "done": [],
               "state": "running"}
        return "transcode = $5::jsonb, failure = NULL", [json.dumps(job)]
    if isinstance(p, e.RenditionCompleted):
        new = json.dumps([asdict(p.rendition)])
        return (
            "renditions = " + _MERGE_RENDITIONS.format(new="$5::jsonb") + ", transcode = "
            "jsonb_set(coalesce(transcode, '{}'::jsonb), '{done}', "
            "coalesce(transcode->'done', '[]'::jsonb) || to_jsonb($6::text))",
            [new, p.rendition.name],
        )
    if isinstance(p, e.TranscodeCompleted):
        new = json.dumps([asdict(r) for r in p.renditions])
        return (
            "renditions = " + _MERGE_RENDITIONS.format(new="$5::jsonb")
            + ", master_playlist_key = $6, thumbnail_key = $7, duration_s = $8, width = $9, "
            "height = $10, probe = $11::jsonb, failure = NULL, "
            "transcode = " + _JOB_ENDED.format(job="$12", state="done"),
            [new, p.master_playlist_key, p.thumbnail_key, p.duration_s, p.width, p.height,
             json.dumps(p.probe), p.job_id],
        )
    if isinstance(p, e.TranscodeFailed):
        failure = {"job_id": p.job_id, "reason": p.reason, "rung": p.rung, "attempts": p.attempts}
        return (
            "failure = $5::jsonb, transcode = " + _JOB_ENDED.format(job="$6", state="failed"),
            [json.dumps(failure), p.job_id],
        )
    if isinstance(p, e.MetadataUpdated):
        return (
            "title = coalesce($5, title), description = coalesce($6, description), "
            "tags = coalesce($7, tags), category = coalesce($8, category), "
            "visibility = coalesce($9, visibility)",
            [p.title, p.description, p.tags, p.category, p.visibility],
        )
    if isinstance(p, e.AssetDeleted):
        return "deleted_at = $3", []
    return None


async def _apply_one(conn: asyncpg.Connection, r: Record) -> bool:
    p, ev, seq = r.payload, r.event, r.event.sequence
    if seq is None:
        return False
    if isinstance(p, e.UploadRequested):
        if seq != 1:
            return False
        status = await conn.execute(
            "INSERT INTO assets (asset_id, version, owner_id, status, kind, filename, "
            "content_type, size_bytes, title, staging_key, upload_expires_at, visibility, "
            "created_at, updated_at) VALUES ($1, 1, $2, $12, $3, $4, $5, $6, $7, "
            "$8, $9, $10, $11, $11) ON CONFLICT (asset_id) DO NOTHING",
            p.asset_id, p.owner_id, p.kind, p.filename, p.content_type, p.size_bytes, p.title,
            p.staging_key, p.upload_expires_at, p.visibility, ev.time, STATUS_AFTER[ev.type],
        )
        applied = bool(status.endswith(" 1"))
    else:
        update = _update(p)
        if update is None:
            return False
        clause, args = update
        status = await conn.execute(
            f"UPDATE assets SET {clause + ', ' if clause else ''}status = coalesce($4, status), "
            "version = $2, updated_at = $3 WHERE asset_id = $1 AND version = $2 - 1",
            ev.subject, seq, ev.time, STATUS_AFTER.get(ev.type), *args,
        )
        applied = bool(status.endswith(" 1"))
        if not applied:
            current = await conn.fetchval(
                "SELECT version FROM assets WHERE asset_id = $1", ev.subject
            )
            if current is None or current < seq - 1:
                log.error("assets: gap before %s seq %s of %s (have %s)",
                          ev.type, seq, ev.subject, current)
    if applied:
        await conn.execute(
            "INSERT INTO asset_events (asset_id, sequence, event_id, type, time, actor_id, "
            "causation_id, data) VALUES ($1, $2, $3, $4, $5, $6, $7, $8::jsonb) "
            "ON CONFLICT DO NOTHING",
            ev.subject, seq, ev.id, ev.type, ev.time, ev.actorid, ev.causationid,
            payload_json(ev),
        )
    return applied


async def apply(conn: asyncpg.Connection, records: Sequence[Record]) -> None:
    changed: dict[str, None] = {}
    for r in records:
        if r.payload is not None and await _apply_one(conn, r):
            changed[r.event.subject] = None
    for asset_id in changed:
        await conn.execute("SELECT pg_notify($1, $2)", NOTIFY_CHANNEL, asset_id)


async def gated(conn: asyncpg.Connection, records: Sequence[Record]) -> None:
    """``apply`` for the live projection: first ``GATE_LOCK`` shared, until the transaction
    ends, so that a replay holding it alone (``medialog replay``) pauses live batches while it
    swaps the tables. Not in ``apply``: the replay's own fold runs that, under the lock."""
    await conn.execute("SELECT pg_advisory_xact_lock_shared($1)", GATE_LOCK)
    await apply(conn, records)


async def consume(deps: Deps) -> None:
    """Read ``events.asset`` and apply it (``projections.reader``) until cancelled."""
    await read(deps.settings, NAME, ("events.asset",), BATCH_MAX, BATCH_WITHIN_S,
               partial(apply_or_skip, deps.pool, NAME, gated), deps.lags)

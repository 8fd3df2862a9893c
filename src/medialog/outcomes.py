"""Command outcomes (docs/architecture.md, rule 5): written by the actor that decided a command,
read by ``GET /v1/commands/{id}``; a command is *projected* once the read model holds the
aggregate at the version the command produced. Writers NOTIFY so waiting requests wake up."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import asyncpg

NOTIFY_CHANNEL = "medialog_changes"

# actor name → read-model table holding (id column, version); used for "is it projected yet"
_READ_MODELS: dict[str, tuple[str, str]] = {
    "asset": ("assets", "asset_id"),
    "engagement": ("likes", "engagement_key"),
}


@dataclass(frozen=True, kw_only=True)
class Outcome:
    command_id: str
    status: str  # pending | accepted | rejected
    aggregate_id: str | None = None
    command_type: str | None = None
    actor_id: str | None = None
    version: int | None = None
    event_ids: list[str] = field(default_factory=list)
    error_code: str | None = None
    error_message: str | None = None
    error_class: str | None = None  # the domain error's class name (Conflict, Forbidden…)
    error_details: list[Any] = field(default_factory=list)
    projected: bool = False

    @property
    def settled(self) -> bool:
        return self.status == "rejected" or (self.status == "accepted" and self.projected)

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {"command_id": self.command_id, "status": self.status}
        if self.status == "pending":
            return body
        body.update(aggregate_id=self.aggregate_id, type=self.command_type)
        if self.status == "accepted":
            body.update(version=self.version, events=self.event_ids, projected=self.projected)
        else:
            body["error"] = {"code": self.error_code, "message": self.error_message,
                             "details": self.error_details}
        return body


async def record(
    conn: asyncpg.Connection,
    *,
    command_id: str,
    actor: str,
    aggregate_id: str,
    command_type: str,
    actor_id: str,
    version: int | None,
    event_ids: list[str],
    error_code: str | None = None,
    error_message: str | None = None,
    error_class: str | None = None,
    error_details: list[Any] | None = None,
) -> None:
    await conn.execute(
        "INSERT INTO command_outcomes (command_id, actor, aggregate_id, command_type, actor_id, "
        "status, version, event_ids, error_code, error_message, error_class, error_details) "
        "VALUES ($1, $2, $3, $4, $5, $6, $7, $8::jsonb, $9, $10, $11, $12::jsonb) "
        "ON CONFLICT DO NOTHING",
        command_id,
        actor,
        aggregate_id,
        command_type,
        actor_id,
        "rejected" if error_code else "accepted",
        version,
        json.dumps(event_ids),
        error_code,
        error_message,
        error_class,
        json.dumps(error_details) if error_code else None,
    )
    await conn.execute("SELECT pg_notify($1, $2)", NOTIFY_CHANNEL, command_id)


async def is_recorded(conn: asyncpg.Connection, command_id: str) -> bool:
    return bool(await conn.fetchval(
        "SELECT 1 FROM command_outcomes WHERE command_id = $1", command_id
    ))


async def fetch(conn: asyncpg.Connection, command_id: str) -> Outcome:
    row = await conn.fetchrow("SELECT * FROM command_outcomes WHERE command_id = $1", command_id)
    if row is None:
        return Outcome(command_id=command_id, status="pending")
    projected = False
    if row["status"] == "accepted" and row["actor"] in _READ_MODELS:
        table, id_col = _READ_MODELS[row["actor"]]
        current = await conn.fetchval(
            f"SELECT version FROM {table} WHERE {id_col} = $1", row["aggregate_id"]
        )
        # version 0: accepted with no event ever (e.g. unliking what was never liked)
        projected = row["version"] == 0 or (current is not None and current >= row["version"])
    return Outcome(
        command_id=command_id,
        status=row["status"],
        aggregate_id=row["aggregate_id"],
        command_type=row["command_type"],
        actor_id=row["actor_id"],
        version=row["version"],
        event_ids=json.loads(row["event_ids"]),
        error_code=row["error_code"],
        error_message=row["error_message"],
        error_class=row["error_class"],
        error_details=json.loads(row["error_details"]) if row["error_details"] else [],
        projected=projected,
    )

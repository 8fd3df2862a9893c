"""Apply the SQL migrations in ``schemas/migrations/{postgres,clickhouse}`` in name order, each
once. PostgreSQL migrations run in a transaction under an advisory lock, so concurrent starters
are safe; ClickHouse statements are idempotent (``IF NOT EXISTS``) and recorded after."""

from __future__ import annotations

import logging
from pathlib import Path

import asyncpg

from medialog.clickhouse import Analytics
from medialog.resources import schemas_dir

log = logging.getLogger(__name__)
_LOCK_ID = 0x6D6C6F67  # "mlog"


def _files(kind: str) -> list[Path]:
    return sorted((schemas_dir() / "migrations" / kind).glob("*.sql"))


def statements(sql: str) -> list[str]:
    """Split a file on ``;`` at line ends (our files keep ``;`` out of literals); drop comments."""
    body = "\n".join(line for line in sql.splitlines() if not line.lstrip().startswith("--"))
    return [s.strip().rstrip(";") for s in (body + "\n").split(";\n") if s.strip()]


async def migrate_postgres(conn: asyncpg.Connection) -> list[str]:
    applied: list[str] = []
    await conn.execute("SELECT pg_advisory_lock($1)", _LOCK_ID)
    try:
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations "
            "(name text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        done = {r["name"] for r in await conn.fetch("SELECT name FROM schema_migrations")}
        for path in _files("postgres"):
            if path.name in done:
                continue
            async with conn.transaction():
                await conn.execute(path.read_text())
                await conn.execute("INSERT INTO schema_migrations (name) VALUES ($1)", path.name)
            applied.append(path.name)
            log.info("postgres migration applied: %s", path.name)
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", _LOCK_ID)
    return applied


async def migrate_clickhouse(analytics: Analytics) -> list[str]:
    await analytics.command(
        "CREATE TABLE IF NOT EXISTS schema_migrations "
        "(name String, applied_at DateTime DEFAULT now())"
        " ENGINE = ReplacingMergeTree ORDER BY name"
    )
    done = {row[0] for row in await analytics.query("SELECT name FROM schema_migrations FINAL")}
    applied: list[str] = []
    for path in _files("clickhouse"):
        if path.name in done:
            continue
        for statement in statements(path.read_text()):
            await analytics.command(statement)
        await analytics.insert("schema_migrations", [[path.name]], ["name"])
        applied.append(path.name)
        log.info("clickhouse migration applied: %s", path.name)
    return applied

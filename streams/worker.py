"""What the workers (promoter, janitor) share: handling a log record once per consumer, sending
commands to actors, and retrying transient failures.

A worker's effects live outside PostgreSQL (S3 objects, commands on the log), so they cannot
share a transaction with its position (DESIGN.md rule 2). Instead every effect is idempotent
(conditional copies, deletes, deterministic command ids) and the position is stored *after* the
effects: a crash in between re-runs effects that change nothing the second time."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

import asyncpg
import faust
from aiokafka.errors import KafkaError
from botocore.exceptions import BotoCoreError, ClientError
from clickhouse_connect.driver.exceptions import OperationalError as ClickHouseOperationalError

from medialog import tracking
from medialog.config import Settings
from medialog.domain.commands import AssetCommand, CommandMeta
from medialog.envelope import encode_command
from medialog.tracking import Position

log = logging.getLogger(__name__)
T = TypeVar("T")
SendCommand = Callable[[str, AssetCommand, CommandMeta], Awaitable[None]]

_NAMESPACE = uuid.UUID("3c9a4f0e-8d2b-4e7f-a1c5-6b0d9e8f7a21")
BACKOFF_FIRST_S, BACKOFF_MAX_S = 0.5, 30.0


class PermanentFailure(Exception):
    """An effect that retrying cannot fix: logged loudly, and the record is passed over."""


def derived_id(*parts: str) -> str:
    """A deterministic UUID: the same inputs (an event id, an asset id…) give the same id, so a
    re-delivered record sends the same command and the actor applies it once."""
    return str(uuid.uuid5(_NAMESPACE, "\0".join(parts)))


def system_meta(command_id: str, worker: str, correlation_id: str | None) -> CommandMeta:
    return CommandMeta(
        command_id=command_id,
        issued_at=datetime.now(UTC),
        actor_id=f"system:{worker}",
        actor_roles=("system",),
        correlation_id=correlation_id or command_id,
    )


def command_sender(app: faust.App, settings: Settings, topic: str) -> SendCommand:
    """Send a command keyed by its aggregate id and wait for acks=all."""
    name = settings.topic(topic)

    async def send(aggregate_id: str, command: AssetCommand, meta: CommandMeta) -> None:
        value = encode_command(command, aggregate_id=aggregate_id, meta=meta)
        await app.producer.send_and_wait(name, aggregate_id.encode(), value, None, None, [])

    return send


def is_transient(exc: BaseException) -> bool:
    if isinstance(exc, ClientError):
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        return int(status) >= 500 or exc.response.get("Error", {}).get("Code") in {
            "SlowDown", "RequestTimeout", "InternalError", "ServiceUnavailable"}
    # Unreachable or restarting services, and conflicts a retry resolves (deadlock,
    # serialization): waiting is right. Anything else is a fact about the record.
    return isinstance(exc, (BotoCoreError, KafkaError, OSError, TimeoutError,
                            asyncpg.PostgresConnectionError, asyncpg.InterfaceError,
                            asyncpg.exceptions.OperatorInterventionError,
                            asyncpg.exceptions.TransactionRollbackError,
                            ClickHouseOperationalError))


async def retrying(what: str, action: Callable[[], Awaitable[T]]) -> T:
    """Run ``action`` until it succeeds or fails for good. Transient failures (S3 5xx, broker or
    database unreachable) are retried with capped backoff for as long as it takes: a worker
    reads its partitions in order, so waiting out an outage is the right back-pressure, and
    passing the record over would lose its effect."""
    delay = BACKOFF_FIRST_S
    while True:
        try:
            return await action()
        except Exception as exc:
            if not is_transient(exc):
                raise
            log.warning("%s failed (%s: %s); retrying in %.1fs", what, type(exc).__name__, exc, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, BACKOFF_MAX_S)


async def handle_once(
    pool: asyncpg.Pool, consumer: str, position: Position, effect: Callable[[], Awaitable[Any]]
) -> bool:
    """Run ``effect`` for a record unless ``consumer`` already handled its offset; then store the
    offset. ``PermanentFailure`` is logged as an error and the record is passed over (its offset
    stored): it needs an operator, not a retry loop. Returns whether the effect ran."""
    async with pool.acquire() as conn:
        stored = await tracking.stored_offset(conn, consumer, position.topic, position.partition)
    if position.offset <= stored:
        return False
    try:
        await retrying(f"{consumer} at {position}", effect)
    except PermanentFailure as exc:
        log.error("%s: giving up on the record at %s: %s", consumer, position, exc)

    async def store() -> None:
        async with pool.acquire() as conn, conn.transaction():
            await tracking.advance(conn, consumer, [position])

    await retrying(f"{consumer} storing {position}", store)
    return True

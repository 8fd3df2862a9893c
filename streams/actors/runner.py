"""The actor runner shared by every aggregate's actor.

For one command (delivered in key order on its partition): skip it if its offset or its command
id was already handled; load the aggregate's snapshot; decide; publish the events with
deterministic ids and per-aggregate sequence numbers and wait for acks=all; then store the new
snapshot, the outcome and the offset in ONE PostgreSQL transaction. A crash between publish and
commit re-emits identical events (same ids, same sequences), which readers recognise.

Deciding is pure, so a re-handled command decides the same again, except when the command was
``prepare``d with what the actor observed outside the log (S3), which may have changed since.
Those decisions are stored (``actor_decisions``) before their events are published, and a
re-handled command publishes the stored events again instead of deciding anew; the commit
deletes the stored decision."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import asyncpg
from pydantic import TypeAdapter

from medialog import outcomes, tracking
from medialog.domain.errors import MedialogError
from medialog.envelope import (
    CommandEnvelope,
    decode_command,
    encode_event,
    event_id,
    make_event,
)
from medialog.runtime.retry import retrying
from medialog.tracking import Position

if TYPE_CHECKING:
    import faust

    from medialog.runtime.deps import Deps

log = logging.getLogger(__name__)
S = TypeVar("S")
Publish = Callable[[str, str, list[bytes]], Awaitable[None]]


@dataclass(frozen=True)
class ActorSpec(Generic[S]):
    """How one aggregate type is decided and folded (pure functions from ``medialog.domain``)."""

    name: str
    events_topic: str
    initial: Callable[[str], S]
    decide: Callable[[S, Any], list[Any]]
    fold: Callable[[S, list[Any]], S]
    version: Callable[[S], int]
    # Observe the outside world (e.g. HeadObject) and return the command with the facts filled
    # in, so that ``decide`` stays pure; the command itself when it observed nothing. Called only
    # for commands not handled before.
    prepare: Callable[[S, Any], Awaitable[Any]] | None = None
    # The CloudEvents subject for an aggregate id (docs/events.md: the asset), when they differ.
    subject: Callable[[str], str] = str
    snapshots: TypeAdapter[S] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "snapshots", TypeAdapter(type(self.initial(""))))


async def handle_command(
    spec: ActorSpec[S], pool: asyncpg.Pool, publish: Publish, position: Position, raw: bytes
) -> None:
    consumer = f"actor.{spec.name}"
    adapter = spec.snapshots
    async with pool.acquire() as conn:
        stored = await tracking.stored_offset(conn, consumer, position.topic, position.partition)
        if position.offset <= stored:
            return
        try:
            envelope, command = decode_command(raw)
        except MedialogError as exc:
            log.error("dropping undecodable command at %s: %s", position, exc.message)
            async with conn.transaction():
                await tracking.advance(conn, consumer, [position])
            return
        if await outcomes.is_recorded(conn, envelope.id):
            async with conn.transaction():
                await tracking.advance(conn, consumer, [position])
            return
        row = await conn.fetchrow(
            "SELECT state FROM actor_snapshots WHERE actor = $1 AND aggregate_id = $2",
            spec.name,
            envelope.aggregate_id,
        )
        decision = None if spec.prepare is None else await _stored_decision(spec, conn, envelope.id)
    if decision is None:
        state = adapter.validate_json(row["state"]) if row else spec.initial(envelope.aggregate_id)
        decision = await _decide(spec, pool, envelope, command, state)
    if decision.events:
        await publish(spec.events_topic, envelope.aggregate_id, decision.events)

    new_state, error = decision.state, decision.error
    async with pool.acquire() as conn, conn.transaction():
        if decision.events:
            await conn.execute(
                "INSERT INTO actor_snapshots (actor, aggregate_id, version, state) "
                "VALUES ($1, $2, $3, $4::jsonb) ON CONFLICT (actor, aggregate_id) DO UPDATE "
                "SET version = EXCLUDED.version, state = EXCLUDED.state, updated_at = now()",
                spec.name,
                envelope.aggregate_id,
                spec.version(new_state),
                adapter.dump_json(new_state).decode(),
            )
        await outcomes.record(
            conn,
            command_id=envelope.id,
            actor=spec.name,
            aggregate_id=envelope.aggregate_id,
            command_type=envelope.type,
            actor_id=envelope.actor_id,
            version=spec.version(new_state) if error is None else None,
            event_ids=decision.event_ids,
            error_code=error.code if error else None,
            error_message=error.message if error else None,
            error_class=type(error).__name__ if error else None,
            error_details=error.details if error else None,
        )
        if decision.stored:
            await conn.execute("DELETE FROM actor_decisions WHERE command_id = $1", envelope.id)
        await tracking.advance(conn, consumer, [position])


@dataclass(frozen=True)
class _Decision(Generic[S]):
    """What handling a command publishes and stores: its encoded events (and their ids), the
    state after them, the refusal if it was refused, and whether it is in ``actor_decisions``."""

    events: list[bytes]
    event_ids: list[str]
    state: S
    error: MedialogError | None = None
    stored: bool = False


async def _decide(
    spec: ActorSpec[S], pool: asyncpg.Pool, envelope: CommandEnvelope, command: Any, state: S
) -> _Decision[S]:
    """Prepare (observe), decide and fold; a decision with events taken on observed facts is
    stored before it is published (the first one stored wins, should two handlers race)."""
    prepared = command if spec.prepare is None else await spec.prepare(state, command)
    try:
        payloads = spec.decide(state, prepared)
    except MedialogError as exc:
        return _Decision([], [], state, error=exc)
    base = spec.version(state)
    events = [
        make_event(p, subject=spec.subject(envelope.aggregate_id),
                   event_id=event_id(envelope.id, i), time=envelope.issued_at,
                   sequence=base + i + 1, actor_id=envelope.actor_id,
                   actor_roles=envelope.actor_roles, causation_id=envelope.id,
                   correlation_id=envelope.correlation_id)
        for i, p in enumerate(payloads)
    ]
    decision = _Decision([encode_event(e) for e in events], [e.id for e in events],
                         spec.fold(state, payloads))
    if not events or prepared is command:  # nothing observed: deciding again decides the same
        return decision
    row = await pool.fetchrow(
        "INSERT INTO actor_decisions (command_id, actor, aggregate_id, events, event_ids, state) "
        "VALUES ($1, $2, $3, $4, $5, $6::jsonb) "
        "ON CONFLICT (command_id) DO UPDATE SET command_id = EXCLUDED.command_id "
        "RETURNING events, event_ids, state",
        envelope.id, spec.name, envelope.aggregate_id, decision.events, decision.event_ids,
        spec.snapshots.dump_json(decision.state).decode())
    return _from_row(spec, row)


async def _stored_decision(
    spec: ActorSpec[S], conn: asyncpg.Connection, command_id: str
) -> _Decision[S] | None:
    row = await conn.fetchrow(
        "SELECT events, event_ids, state FROM actor_decisions WHERE command_id = $1", command_id)
    return None if row is None else _from_row(spec, row)


def _from_row(spec: ActorSpec[S], row: asyncpg.Record) -> _Decision[S]:
    return _Decision(list(row["events"]), list(row["event_ids"]),
                     spec.snapshots.validate_json(row["state"]), stored=True)


async def handle_or_give_up(
    spec: ActorSpec[S], pool: asyncpg.Pool, publish: Publish, position: Position, raw: bytes
) -> None:
    """What the agent calls: nothing may escape, since Faust acknowledges what an agent gives up
    on. Transient failures (S3, broker, database) are retried for as long as they last — the
    command is idempotent. A command that fails for good is recorded as rejected with
    ``COMMAND_FAILED`` (so its sender is not left waiting) and passed over."""
    try:
        await retrying(f"actor {spec.name} at {position}",
                       lambda: handle_command(spec, pool, publish, position, raw))
    except Exception:
        log.exception("actor %s: the command at %s failed for good; recorded as rejected",
                      spec.name, position)
        await retrying(f"actor {spec.name} giving up at {position}",
                       lambda: _give_up(spec, pool, position, raw))


async def _give_up(spec: ActorSpec[S], pool: asyncpg.Pool, position: Position, raw: bytes) -> None:
    async with pool.acquire() as conn, conn.transaction():
        try:
            envelope, _ = decode_command(raw)
        except MedialogError:
            envelope = None
        if envelope is not None:
            await outcomes.record(
                conn, command_id=envelope.id, actor=spec.name, aggregate_id=envelope.aggregate_id,
                command_type=envelope.type, actor_id=envelope.actor_id, version=None,
                event_ids=[], error_code="COMMAND_FAILED", error_class="Unavailable",
                error_message="the command could not be applied; it was logged for an operator",
            )
            await conn.execute("DELETE FROM actor_decisions WHERE command_id = $1", envelope.id)
        await tracking.advance(conn, f"actor.{spec.name}", [position])


def register_actor(app: faust.App, deps: Deps, spec: ActorSpec[S], commands_topic: str) -> None:
    """One agent per aggregate type: commands are handled one at a time per partition, so one
    aggregate key has one owner and one command in flight (docs/architecture.md)."""
    from streams.app import agent, position, raw_topic

    async def actor(stream: faust.StreamT[bytes]) -> None:
        async for event in stream.events():
            await handle_or_give_up(spec, deps.pool, deps.publisher.append, position(event),
                                    event.value)

    agent(app, raw_topic(app, deps.settings, commands_topic), name=f"{spec.name}-actor")(actor)

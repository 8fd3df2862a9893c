"""What the workers (promoter, janitor, transcoder) share: the commands they send to actors.

A worker's effects live outside PostgreSQL (S3 objects, commands on the log), so it handles each
record with ``medialog.runtime.handle_once``: idempotent effects, then the position. Its commands
have deterministic ids, so a re-delivered record sends the same command and the actor applies it
once."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from functools import partial

from medialog.domain.commands import AssetCommand, CommandMeta
from medialog.runtime.publisher import Publisher

SendCommand = Callable[[str, AssetCommand, CommandMeta], Awaitable[None]]

_NAMESPACE = uuid.UUID("3c9a4f0e-8d2b-4e7f-a1c5-6b0d9e8f7a21")


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


def asset_commands(publisher: Publisher) -> SendCommand:
    """Send a command to the asset actor, keyed by the asset id (acks=all)."""
    return partial(publisher.send_command, "commands.asset")

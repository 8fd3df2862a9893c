"""Sending commands and answering ``GET /v1/commands/{id}`` (DESIGN.md rules 4 and 5)."""

from __future__ import annotations

import logging

from aiohttp import web
from aiokafka.errors import KafkaError

from medialog import outcomes
from medialog.api import keys
from medialog.api.auth import ADMIN, Principal
from medialog.api.requests import prefer_wait, principal
from medialog.domain.commands import AssetCommand, CommandMeta
from medialog.domain.errors import NotFound, Unavailable
from medialog.envelope import encode_command
from medialog.outcomes import Outcome

log = logging.getLogger(__name__)


async def send_command(
    app: web.Application, topic: str, aggregate_id: str, command: AssetCommand, meta: CommandMeta
) -> None:
    """Return only once the broker acknowledged (acks=all): a 2xx means it is on the log."""
    value = encode_command(command, aggregate_id=aggregate_id, meta=meta)
    try:
        await app[keys.PRODUCER].send_and_wait(
            app[keys.SETTINGS].topic(topic), value=value, key=aggregate_id.encode()
        )
    except KafkaError as exc:
        log.warning("command %s not sent: %s", meta.command_id, exc)
        raise Unavailable("the event log did not acknowledge the command", code="LOG_UNAVAILABLE") from exc


async def outcome(app: web.Application, command_id: str, wait: float | None) -> Outcome:
    async def check() -> Outcome:
        async with app[keys.PG].acquire() as conn:
            return await outcomes.fetch(conn, command_id)

    if not wait:
        return await check()
    return await app[keys.NOTIFIER].wait_until(check, lambda o: o.settled, wait)


def visible_to(result: Outcome, who: Principal) -> bool:
    return result.status == "pending" or result.actor_id == who.user_id or who.has_any(ADMIN)


async def get_command(request: web.Request) -> web.Response:
    who = await principal(request)
    command_id = request.match_info["command_id"]
    result = await outcome(request.app, command_id, prefer_wait(request))
    if not visible_to(result, who):
        raise NotFound("no such command", code="COMMAND_NOT_FOUND")
    return web.json_response(result.to_json())

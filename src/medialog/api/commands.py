"""Writing to the log from the api — commands for actors, and events that need no actor —
and answering ``GET /v1/commands/{id}`` (docs/architecture.md, rules 4 and 5)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from aiohttp import web
from aiokafka.errors import KafkaError

from medialog import outcomes
from medialog.api import keys
from medialog.api.auth.principal import ADMIN, Principal
from medialog.api.errors import status_of
from medialog.api.requests import prefer_wait, principal
from medialog.domain import errors as e
from medialog.domain.commands import AssetCommand, CommandMeta
from medialog.domain.errors import NotFound, Unavailable
from medialog.domain.text import check_text
from medialog.envelope import CloudEvent, encode_event, make_event
from medialog.ids import random_uuid
from medialog.outcomes import Outcome

log = logging.getLogger(__name__)


@contextmanager
def _acknowledged(topic: str, what: str) -> Iterator[None]:
    """The broker's refusal as the domain's ``Unavailable`` (503 LOG_UNAVAILABLE): a 2xx means
    the record is on the log."""
    try:
        yield
    except KafkaError as exc:
        log.warning("%s not written to %s: %s", what, topic, exc)
        raise Unavailable(f"the event log did not acknowledge the {what}",
                          code="LOG_UNAVAILABLE") from exc


async def send_command(
    app: web.Application, topic: str, aggregate_id: str, command: AssetCommand, meta: CommandMeta
) -> None:
    with _acknowledged(topic, "command"):
        await app[keys.PUBLISHER].send_command(topic, aggregate_id, command, meta)


async def append_event(
    request: web.Request, topic: str, payload: Any, *, subject: str, who: Principal | None,
    correlation_id: str, event_id: str | None = None,
) -> CloudEvent:
    """Append an event no invariant needs an actor for (a view report, an access record)
    straight to a public topic, keyed by ``subject``. Its id is ``event_id`` (from the client's
    ``Idempotency-Key``, so a retried request is the same event) or fresh; a re-published copy
    keeps its id, so readers recognise duplicates either way."""
    event = make_event(payload, subject=subject, event_id=event_id or random_uuid(),
                       time=datetime.now(UTC), sequence=None,
                       actor_id=who.user_id if who else None,
                       actor_roles=sorted(who.roles) if who else (),
                       correlation_id=correlation_id)
    with _acknowledged(topic, "event"):
        await request.app[keys.PUBLISHER].append(topic, subject, [encode_event(event)])
    return event


async def outcome(app: web.Application, command_id: str, wait: float | None) -> Outcome:
    async def check() -> Outcome:
        async with app[keys.PG].acquire() as conn:
            return await outcomes.fetch(conn, command_id)

    if not wait:
        return await check()
    return await app[keys.NOTIFIER].wait_until(check, lambda o: o.settled, wait)


_ERROR_CLASSES: dict[str, type[e.MedialogError]] = {
    cls.__name__: cls
    for cls in (e.ValidationError, e.Unauthenticated, e.Forbidden, e.NotFound, e.Conflict,
                e.PayloadTooLarge, e.Unavailable)
}


def rejection(result: Outcome) -> e.MedialogError:
    """The domain error a rejected outcome stands for: same class, code, message, details."""
    cls = _ERROR_CLASSES.get(result.error_class or "")
    if cls is None:  # recorded before outcomes kept the class (migration 004)
        cls = e.Forbidden if result.error_code == "NOT_OWNER" else e.Conflict
    return cls(result.error_message or "the command was rejected", code=result.error_code,
               details=result.error_details)


async def command_response(
    request: web.Request,
    cmd_id: str,
    body: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
    *,
    wait_by_default: float | None = None,
) -> web.Response:
    """The answer to a write: 202 with the command id (and ``body``). With ``Prefer: wait=N``
    (or ``wait_by_default`` when the client did not say) the outcome is included once settled
    or when the wait ends (pending when the read model cannot tell: the command is on the log
    all the same); a rejected command answers with the status and error shape its
    domain error would have got if raised here (409 for a Conflict, 403 NOT_OWNER…), plus the
    command id and outcome."""
    headers = dict(headers or {})
    reply: dict[str, Any] = {"command_id": cmd_id, **(body or {})}
    asked = prefer_wait(request)
    wait = wait_by_default if asked is None else asked
    if wait:
        try:
            result = await outcome(request.app, cmd_id, wait)
        except Unavailable:  # the command is on the log: 202, its outcome not known yet
            result = Outcome(command_id=cmd_id, status="pending")
        if asked is not None:
            headers["Preference-Applied"] = f"wait={wait:g}"
        if result.status == "rejected":
            exc = rejection(result)
            error = {"code": exc.code, "message": exc.message, "details": exc.details}
            return web.json_response(
                {"error": error, "command_id": cmd_id, "command": result.to_json()},
                status=status_of(exc), headers=headers,
            )
        reply["command"] = result.to_json()
    return web.json_response(reply, status=202, headers=headers)


def visible_to(result: Outcome, who: Principal) -> bool:
    return result.status == "pending" or result.actor_id == who.user_id or who.has_any(ADMIN)


async def get_command(request: web.Request) -> web.Response:
    who = await principal(request)
    command_id = check_text(request.match_info["command_id"], "command_id")  # "%00": 400
    result = await outcome(request.app, command_id, prefer_wait(request))
    if not visible_to(result, who):
        raise NotFound("no such command", code="COMMAND_NOT_FOUND")
    return web.json_response(result.to_json())

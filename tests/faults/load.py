"""The fault suite's load: what clients send, and what each was told.

A client here behaves as a careful real one does, and as the api documents:

* every write carries an ``Idempotency-Key``;
* an answer that does not say whether the write happened is retried with the same key until one
  does: a dropped connection, a timeout, ``503 LOG_UNAVAILABLE`` (not acknowledged: the record
  may still land) or any other 5xx;
* a 2xx means accepted, a 4xx refused;
* ``503 DB_UNAVAILABLE`` on a view report means nothing was written (the asset lookup comes
  before the append) by that try: some reports are abandoned there, on purpose, when no
  earlier try of theirs can have been written, and must never be counted.

Every outcome goes into a :class:`Ledger`, which the test then holds the read models to."""

from __future__ import annotations

import asyncio
import collections
import json
import random
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import aiohttp

NOTHING_WRITTEN = "DB_UNAVAILABLE"  # a view report's 503 that comes before the append
REQUEST_TIMEOUT_S = 45.0
BACKOFF_S, BACKOFF_MAX_S = 0.2, 2.0


@dataclass(frozen=True)
class Answer:
    """The definite answer to a request (``status`` 0: none came before the deadline)."""

    status: int
    body: Any
    code: str | None

    @property
    def accepted(self) -> bool:
        return 200 <= self.status < 300


@dataclass
class Ledger:
    """Every attempt and every definite outcome, by kind of request."""

    attempts: collections.Counter[str] = field(default_factory=collections.Counter)
    answers: collections.Counter[str] = field(default_factory=collections.Counter)
    unresolved: list[str] = field(default_factory=list)  # no definite answer by the deadline
    unexpected: list[str] = field(default_factory=list)  # a 4xx nothing asks for, or a 500

    @property
    def sent(self) -> int:
        return sum(self.attempts.values())

    @property
    def accepted(self) -> int:
        return sum(n for k, n in self.answers.items() if k.startswith("2"))

    @property
    def refused(self) -> int:
        return self.sent - self.accepted


class Client:
    """Requests to the api with the retry discipline of the module docstring."""

    def __init__(self, http: aiohttp.ClientSession, base_url: str, ledger: Ledger) -> None:
        self.http, self.base_url, self.ledger = http, base_url, ledger
        self.deadline = float("inf")  # monotonic: retries stop here (set once the faults end)

    async def attempt(self, method: str, url: str, **kw: Any) -> Answer | None:
        """One try: its answer, or None when none came (connection dropped, timed out)."""
        self.ledger.attempts[method] += 1
        try:
            async with self.http.request(method, url, **kw) as r:
                text = await r.text()
        except (aiohttp.ClientError, TimeoutError):
            self.ledger.answers["no answer"] += 1
            return None
        try:
            body: Any = json.loads(text) if text else None
        except ValueError:
            body = text
        code = body.get("error", {}).get("code") if isinstance(body, dict) else None
        self.ledger.answers[f"{r.status} {code}" if code else str(r.status)] += 1
        if r.status == 500:  # a fault must get an honest 503, never an internal error
            self.ledger.unexpected.append(f"{method} {url}: 500 {body}")
        return Answer(r.status, body, code)

    async def definite(self, method: str, path: str, *, token: str | None = None,
                       key: str | None = None, body: Any = None, prefer: str | None = None,
                       abandon: Iterable[str] = ()) -> Answer:
        """Retry ``path`` (same key) until a definite answer: 2xx, 4xx, or a 503 whose code is
        in ``abandon`` while no earlier try could have been written (such a 503 speaks of its
        own try only: once one went unanswered, or got a 5xx that says nothing, only a 2xx or
        4xx tells). Past the deadline: ``Answer(0, …)``."""
        headers = {}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        if key:
            headers["Idempotency-Key"] = key
        if prefer:
            headers["Prefer"] = prefer
        pause, give_up = BACKOFF_S, frozenset(abandon)
        while True:
            answer = await self.attempt(method, self.base_url + path, json=body, headers=headers)
            if answer is not None and (answer.status < 500 or answer.code in give_up):
                if answer.status == 429:  # the suite's limits are out of reach: a defect
                    self.ledger.unexpected.append(f"{method} {path}: 429")
                return answer
            give_up = frozenset()  # this try may have been written
            if time.monotonic() > self.deadline:
                self.ledger.unresolved.append(f"{method} {path} key={key}")
                return Answer(0, None, None)
            await asyncio.sleep(pause)
            pause = min(2 * pause, BACKOFF_MAX_S)


@dataclass
class Views:
    """Sessions by outcome: accepted (202) or refused with nothing written, per asset."""

    accepted: dict[str, str] = field(default_factory=dict)  # session → asset
    abandoned: dict[str, str] = field(default_factory=dict)  # 503 DB_UNAVAILABLE, not retried


async def view_flood(client: Client, assets: list[str], viewers: list[str], rng: random.Random,
                     stop: asyncio.Event, views: Views, watch_s: float) -> None:
    """One player after another, each reporting one session that makes a view: signed in (a
    token of ``viewers``) or anonymous; every other one abandons its report on a 503 that says
    nothing was written."""
    while not stop.is_set():
        session = f"s{uuid.UUID(int=rng.getrandbits(128)).hex}"
        asset, viewer = rng.choice(assets), rng.choice([*viewers, None])
        abandon = (NOTHING_WRITTEN,) if rng.random() < 0.5 else ()
        answer = await client.definite(
            "POST", f"/v1/assets/{asset}/views", token=viewer, key=session, abandon=abandon,
            body={"session_id": session, "watch_seconds": watch_s})
        if answer.accepted:
            views.accepted[session] = asset
        elif answer.code == NOTHING_WRITTEN:
            views.abandoned[session] = asset
        elif answer.status:
            client.ledger.unexpected.append(f"view report: {answer.status} {answer.body}")
        await asyncio.sleep(rng.uniform(0.02, 0.1))


async def like_toggles(client: Client, user: str, token: str, assets: list[str],
                       rng: random.Random, stop: asyncio.Event,
                       liked: dict[tuple[str, str], bool | None]) -> None:
    """One user liking and unliking at random; ``liked`` holds the state each accepted command
    left (None: a command never got a definite answer, so the state is unknown)."""
    while not stop.is_set():
        asset = rng.choice(assets)
        state = liked.get((user, asset), False)
        if state is None:
            return
        answer = await client.definite(
            "DELETE" if state else "PUT", f"/v1/assets/{asset}/like", token=token,
            key=f"like-{uuid.UUID(int=rng.getrandbits(128)).hex}", prefer="wait=0")
        if answer.accepted:
            liked[(user, asset)] = not state
        elif answer.status == 0:
            liked[(user, asset)] = None
        else:
            client.ledger.unexpected.append(f"like: {answer.status} {answer.body}")
        await asyncio.sleep(rng.uniform(0.05, 0.3))


@dataclass
class Upload:
    asset_id: str
    completed: bool = False
    steps: list[str] = field(default_factory=list)  # what happened on the way, for messages


async def upload(client: Client, http: aiohttp.ClientSession, token: str, key: str,
                 media: bytes) -> Upload:
    """Create, PUT the bytes, complete: each step retried as the module docstring says. A
    completion refused because the bytes are not there (the store lost or never took them)
    PUTs them again and completes under a new key."""
    request = {"filename": "clip.mp4", "content_type": "video/mp4", "size_bytes": len(media),
               "title": f"fault suite {key}"}
    result = Upload("")
    for attempt in range(1, 6):
        created = await client.definite("POST", "/v1/uploads", token=token, key=key,
                                        body=request)
        if not created.accepted:
            return Upload("", steps=[f"create: {created.status} {created.body}"])
        result = Upload(created.body["asset_id"])
        made = created.body.get("command", {})
        if not _settled(made):  # the wait ended first: the asset is not readable yet
            made = await _decided(client, token, created.body["command_id"])
        if made.get("status") != "accepted":
            result.steps.append(f"create: {created.body} then {made}")
            return result
        url = created.body.get("upload_url")
        if url is None:
            result.steps.append(f"create again: {created.body.get('asset_status')}")
            return result
        if not await _put(client, http, url, created.body["headers"], media):
            result.steps.append("PUT: no success before the deadline")
            return result
        done = await client.definite("POST", f"/v1/assets/{result.asset_id}/complete",
                                     token=token, key=f"{key}-complete-{attempt}")
        command = done.body.get("command", {}) if isinstance(done.body, dict) else {}
        if done.accepted and not _settled(command):
            command = await _decided(client, token, done.body["command_id"])
        if done.accepted and command.get("status") == "accepted":
            result.completed = True
            return result
        if done.code != "UPLOAD_MISSING" and command.get("error", {}).get("code") != \
                "UPLOAD_MISSING":
            result.steps.append(f"complete: {done.status} {done.body}")
            return result
        client.ledger.unexpected.append(f"upload {key}: bytes acknowledged, then missing")
    return result


async def _put(client: Client, http: aiohttp.ClientSession, url: str, headers: dict[str, str],
               media: bytes) -> bool:
    pause = BACKOFF_S
    while time.monotonic() < client.deadline:
        client.ledger.attempts["PUT (S3)"] += 1
        try:
            async with http.put(url, data=media, headers=headers) as r:
                status = r.status
        except (aiohttp.ClientError, TimeoutError):
            status = 0
        client.ledger.answers[f"{status or 'no answer'} (S3)"] += 1
        if status == 200:
            return True
        await asyncio.sleep(pause)
        pause = min(2 * pause, BACKOFF_MAX_S)
    return False


def _settled(command: dict[str, Any]) -> bool:
    """Whether a command's outcome is final and readable: rejected, or accepted and projected
    (what ``Prefer: wait`` waits for)."""
    return command.get("status") == "rejected" or (
        command.get("status") == "accepted" and bool(command.get("projected")))


async def _decided(client: Client, token: str, command_id: str) -> dict[str, Any]:
    """A command's outcome once settled (``GET /v1/commands/{id}``), polled; {} when it was
    not before the deadline."""
    while time.monotonic() < client.deadline:
        answer = await client.definite("GET", f"/v1/commands/{command_id}", token=token)
        if answer.accepted and _settled(answer.body):
            return dict(answer.body)
        if not answer.accepted and answer.status != 404:
            return {}
        await asyncio.sleep(0.5)
    return {}

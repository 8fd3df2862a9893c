"""The first slice on the real embedded stack: API → command → actor → event → projection →
query, with real S3 presigned uploads, and the data surviving a restart of the whole stack."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
import uuid
from pathlib import Path

import asyncpg
import pytest

from tests.kafka_log import read_topic

pytestmark = pytest.mark.integration

CLIP = b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 16


def auth(token: str, **extra: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", **extra}


async def request_upload(http, stack, user="alice", wait=True, **body):
    payload = {"filename": "holiday clip.mp4", "content_type": "video/mp4",
               "size_bytes": len(CLIP), "title": "Holiday", **body}
    headers = auth(stack.token(user, "creator"))
    if wait:
        headers["Prefer"] = "wait=20"
    async with http.post(f"{stack.base_url}/v1/uploads", json=payload, headers=headers) as r:
        return r.status, await r.json()


async def test_ready_lists_every_dependency(http, stack):
    async with http.get(f"{stack.base_url}/health/ready") as r:
        assert r.status == 200
        body = await r.json()
    assert set(body["dependencies"]) == {"kafka", "postgres", "clickhouse", "s3", "ffmpeg",
                                         "roles"}
    assert all(d["status"] == "up" and d["latency_ms"] >= 0 for d in body["dependencies"].values())


def roles_process(dev_pid: int) -> int:
    """The pid of ``medialog dev``'s child running the actors, workers and projections."""
    children = Path(f"/proc/{dev_pid}/task/{dev_pid}/children").read_text().split()
    found = [int(c) for c in children
             if b"--roles" in Path(f"/proc/{c}/cmdline").read_bytes().split(b"\0")]
    assert len(found) == 1, found
    return found[0]


async def readiness_until(http, stack, wanted, timeout: float) -> None:
    """Poll ``/health/ready`` until ``wanted(status, roles' status)``; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        async with http.get(f"{stack.base_url}/health/ready") as r:
            status, body = r.status, await r.json()
        if wanted(status, body["dependencies"]["roles"]["status"]):
            return
        assert time.monotonic() < deadline, (status, body, stack.log_tail())
        await asyncio.sleep(0.1)


async def test_a_crashed_roles_process_is_started_again(http, stack):
    """The dev process reports the crash in its readiness, starts the roles again, and the
    pipeline the child carries (the asset actor, the projections) works again."""
    crashed = roles_process(stack.proc.pid)
    os.kill(crashed, signal.SIGKILL)
    await readiness_until(http, stack, lambda status, roles: (status, roles) == (503, "down"),
                          timeout=30)
    await readiness_until(http, stack, lambda status, roles: status == 200, timeout=120)
    assert roles_process(stack.proc.pid) != crashed
    status, body = await request_upload(http, stack, user="dora")
    assert status == 202 and body["command"]["projected"] is True


async def test_jwks_is_served_for_the_embedded_issuer(http, stack):
    async with http.get(f"{stack.base_url}/.well-known/jwks.json") as r:
        keys = (await r.json())["keys"]
    assert keys and keys[0]["kty"] == "RSA" and keys[0]["alg"] == "RS256" and "d" not in keys[0]


async def test_upload_put_and_read_back(http, stack):
    status, body = await request_upload(http, stack)
    assert status == 202, body
    assert body["method"] == "PUT"
    assert body["headers"] == {"Content-Type": "video/mp4", "Content-Length": str(len(CLIP))}
    assert body["command"]["status"] == "accepted" and body["command"]["projected"] is True

    # A plain HTTP client PUTs the bytes to the presigned URL, with the signed Content-Type.
    async with http.put(body["upload_url"], data=CLIP, headers=body["headers"]) as r:
        assert r.status == 200, await r.text()
    # Any other Content-Type breaks the signature.
    async with http.put(body["upload_url"], data=CLIP, headers={"Content-Type": "text/html"}) as r:
        assert r.status == 403

    async with http.get(f"{stack.base_url}/v1/assets/{body['asset_id']}",
                        headers=auth(stack.token("alice", "creator"))) as r:
        asset = await r.json()
    assert r.status == 200
    assert asset["status"] == "awaiting_upload" and asset["owner_id"] == "alice"
    assert asset["metadata"] == {"title": "Holiday", "filename": "holiday clip.mp4",
                                 "content_type": "video/mp4", "size_bytes": len(CLIP)}
    assert asset["created_at"].endswith("Z") and asset["version"] == 1

    s3 = stack.settings()
    import boto3
    client = boto3.client("s3", endpoint_url=s3.s3_endpoint, region_name="us-east-1",
                          aws_access_key_id=s3.s3_access_key.get_secret_value(),
                          aws_secret_access_key=s3.s3_secret_key.get_secret_value())
    head = await asyncio.to_thread(
        client.head_object, Bucket="staging",
        Key=f"uploads/alice/{body['asset_id']}/original.mp4")
    assert head["ContentLength"] == len(CLIP)

    # Someone else cannot see it; the command is visible to its sender.
    async with http.get(f"{stack.base_url}/v1/assets/{body['asset_id']}",
                        headers=auth(stack.token("mallory", "creator"))) as r:
        assert r.status == 404 and (await r.json())["error"]["code"] == "ASSET_NOT_FOUND"
    async with http.get(f"{stack.base_url}/v1/commands/{body['command_id']}",
                        headers=auth(stack.token("alice", "creator"))) as r:
        outcome = await r.json()
    assert outcome["status"] == "accepted" and len(outcome["events"]) == 1


async def test_the_projection_stores_rows_and_offsets_together(stack, http):
    status, body = await request_upload(http, stack)
    assert status == 202
    event_id = body["command"]["events"][0]
    # Find the event on the log itself (it was appended before the 202): partition and offset.
    found = [(r.partition, r.offset, r.key.decode())
             for r in await read_topic(stack.settings(), "events.asset")
             if json.loads(r.value)["id"] == event_id]
    assert len(found) == 1, found
    partition, offset, key = found[0]
    assert key == body["asset_id"]
    conn = await asyncpg.connect(stack.settings().postgres_dsn.get_secret_value())
    try:
        stored = await conn.fetchval(
            "SELECT \"offset\" FROM consumer_offsets WHERE consumer = 'projection.assets' "
            "AND topic = 'events.asset' AND partition = $1", partition)
        trail = await conn.fetch("SELECT sequence, event_id FROM asset_events WHERE asset_id = $1",
                                 body["asset_id"])
        snapshot = await conn.fetchval(
            "SELECT version FROM actor_snapshots WHERE actor = 'asset' AND aggregate_id = $1",
            body["asset_id"])
    finally:
        await conn.close()
    # The row was written (202 with wait said projected) and the offset covers the event.
    assert stored is not None and stored >= offset
    assert [(r["sequence"], r["event_id"]) for r in trail] == [(1, event_id)]
    assert snapshot == 1


async def test_idempotency_key_makes_a_retry_the_same_command(http, stack):
    key = f"retry-{uuid.uuid4()}"
    headers = auth(stack.token("bob", "creator"), **{"Idempotency-Key": key, "Prefer": "wait=20"})
    payload = {"filename": "a.mp3", "content_type": "audio/mpeg", "size_bytes": 100}
    results = []
    for _ in range(2):
        async with http.post(f"{stack.base_url}/v1/uploads", json=payload, headers=headers) as r:
            results.append(await r.json())
    assert results[0]["asset_id"] == results[1]["asset_id"]
    assert results[0]["command_id"] == results[1]["command_id"]
    async with http.get(f"{stack.base_url}/v1/assets/{results[0]['asset_id']}",
                        headers=auth(stack.token("bob", "creator"))) as r:
        assert (await r.json())["version"] == 1  # one event, not two


async def test_an_idempotency_key_reused_for_another_request_is_refused(http, stack):
    """The key is bound to its first request: the same body (keys in another order) is a
    retry; another body under the same key is a 422 and sends nothing."""
    key = f"reuse-{uuid.uuid4()}"
    headers = auth(stack.token("erin", "creator"), **{"Idempotency-Key": key, "Prefer": "wait=20"})
    url = f"{stack.base_url}/v1/uploads"
    first = {"filename": "a.mp3", "content_type": "audio/mpeg", "size_bytes": 100}
    async with http.post(url, json=first, headers=headers) as r:
        assert r.status == 202
        created = await r.json()
    reordered = json.dumps(dict(reversed(list(first.items()))), indent=2)
    async with http.post(url, data=reordered, headers=headers) as r:
        assert r.status == 202 and (await r.json())["command_id"] == created["command_id"]
    async with http.post(url, json={**first, "size_bytes": 200}, headers=headers) as r:
        assert r.status == 422
        assert (await r.json())["error"]["code"] == "IDEMPOTENCY_KEY_REUSED"
    async with http.get(f"{stack.base_url}/v1/assets/{created['asset_id']}",
                        headers=auth(stack.token("erin", "creator"))) as r:
        asset = await r.json()
    assert asset["version"] == 1 and asset["metadata"]["size_bytes"] == 100
    # A request refused as bad input does not take its key: the corrected request may use it.
    headers["Idempotency-Key"] = f"fixed-{uuid.uuid4()}"
    async with http.post(url, json={**first, "content_type": "application/x-sh"},
                         headers=headers) as r:
        assert r.status == 400
    async with http.post(url, json=first, headers=headers) as r:
        assert r.status == 202 and (await r.json())["asset_id"] != created["asset_id"]


@pytest.mark.parametrize(
    "headers_for, body, status, code",
    [
        (lambda s, u: {}, None, 401, "TOKEN_MISSING"),
        (lambda s, u: {"Authorization": "Bearer not.a.token"}, None, 401, "TOKEN_MALFORMED"),
        (lambda s, u: auth(s.token(u, "viewer")), None, 403, "FORBIDDEN_ROLE"),
        (lambda s, u: auth(s.token(u, "creator")), {"content_type": "application/x-sh"}, 400,
         "VALIDATION_ERROR"),
        (lambda s, u: auth(s.token(u, "creator")), {"size_bytes": 10**15}, 413, "UPLOAD_TOO_LARGE"),
        (lambda s, u: auth(s.token(u, "creator", ttl_s=-120)), None, 401, "TOKEN_EXPIRED"),
    ],
)
async def test_bad_requests_get_a_coded_4xx_and_change_nothing(http, stack, headers_for, body,
                                                              status, code):
    user = f"bad-{uuid.uuid4().hex[:8]}"  # other tests' background work must not count here
    payload = {"filename": "x.mp4", "content_type": "video/mp4", "size_bytes": 10, **(body or {})}
    async with http.post(f"{stack.base_url}/v1/uploads", json=payload,
                         headers=headers_for(stack, user)) as r:
        assert r.status == status
        error = (await r.json())["error"]
    assert error["code"] == code and error["message"]
    # The answer came after any append it made (acks=all), so the log up to its end offsets
    # holds every command the refused request could have sent: none.
    commands = [json.loads(r.value) for r in await read_topic(stack.settings(), "commands.asset")]
    assert [c for c in commands if c["actor_id"] == user] == []
    conn = await asyncpg.connect(stack.settings().postgres_dsn.get_secret_value())
    try:
        owned = await conn.fetchval("SELECT count(*) FROM assets WHERE owner_id = $1", user)
    finally:
        await conn.close()
    assert owned == 0


async def test_malformed_json_and_unknown_routes_share_the_error_shape(http, stack):
    async with http.post(f"{stack.base_url}/v1/uploads", data=b"{nope",
                         headers=auth(stack.token("c", "creator"))) as r:
        assert r.status == 400 and (await r.json())["error"]["code"] == "MALFORMED_JSON"
    async with http.get(f"{stack.base_url}/v1/nothing-here") as r:
        assert r.status == 404 and (await r.json())["error"]["code"] == "ROUTE_NOT_FOUND"


async def test_asset_survives_a_restart_of_the_whole_stack(http, stack):
    status, body = await request_upload(http, stack, user="carol")
    assert status == 202
    try:
        assert stack.stop() == 0, stack.log_tail()
    finally:  # the stack is shared: later tests need it whatever happened here
        stack.start()
    async with http.get(f"{stack.base_url}/v1/assets/{body['asset_id']}",
                        headers=auth(stack.token("carol", "creator"))) as r:
        assert r.status == 200
        assert (await r.json())["status"] == "awaiting_upload"
    # The log survived too: a new upload after the restart flows through the actor again.
    status, again = await request_upload(http, stack, user="carol")
    assert status == 202 and again["command"]["projected"] is True


async def test_a_client_that_never_waits_finds_its_own_asset(http, stack):
    """Request an upload, PUT the bytes, complete and read it back at once: no ``Prefer``, no
    retries. Creating writes wait for their outcome by default, so each next call finds the
    asset; ``Prefer: wait=0`` keeps the immediate 202."""
    user = f"hasty-{uuid.uuid4().hex[:8]}"
    headers = auth(stack.token(user, "creator"))
    payload = {"filename": "clip.mp4", "content_type": "video/mp4", "size_bytes": len(CLIP)}
    async with http.post(f"{stack.base_url}/v1/uploads", json=payload, headers=headers) as r:
        assert r.status == 202
        up = await r.json()
    assert up["command"]["status"] == "accepted" and up["command"]["projected"] is True
    async with http.put(up["upload_url"], data=CLIP, headers=up["headers"]) as r:
        assert r.status == 200
    async with http.post(f"{stack.base_url}/v1/assets/{up['asset_id']}/complete",
                         headers=headers) as r:
        done = await r.json()
        assert r.status == 202, done
    assert done["command"]["status"] == "accepted" and done["command"]["projected"] is True
    async with http.get(f"{stack.base_url}/v1/assets/{up['asset_id']}", headers=headers) as r:
        assert r.status == 200
        assert (await r.json())["status"] != "awaiting_upload"

    async with http.post(f"{stack.base_url}/v1/uploads", json=payload,
                         headers={**headers, "Prefer": "wait=0"}) as r:
        assert r.status == 202
        assert "command" not in await r.json()


async def test_the_request_id_is_echoed_logged_and_carried_by_the_events(http, stack):
    """A client's ``X-Request-Id`` comes back on the answer, marks the request's log lines, and
    is the ``correlationid`` of the event it caused; without one, a fresh id is given."""
    rid = f"req-{uuid.uuid4().hex[:12]}"
    payload = {"filename": "a.mp3", "content_type": "audio/mpeg", "size_bytes": 100}
    headers = auth(stack.token("tracer", "creator"), **{"X-Request-Id": rid})
    async with http.post(f"{stack.base_url}/v1/uploads", json=payload, headers=headers) as r:
        assert r.status == 202 and r.headers["X-Request-Id"] == rid
        created = await r.json()
    events = [json.loads(m.value) for m in await read_topic(stack.settings(), "events.asset")
              if m.key == created["asset_id"].encode()]
    assert [e["correlationid"] for e in events] == [rid]
    assert f"[{rid}]" in stack.log_tail(400)  # the access line of the request
    async with http.get(f"{stack.base_url}/v1/nothing-here",
                        headers={"X-Request-Id": "not a token!"}) as r:
        assert r.status == 404
        assert uuid.UUID(r.headers["X-Request-Id"])  # a bad id is replaced, errors carry it

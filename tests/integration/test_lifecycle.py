"""The asset lifecycle on the real embedded stack: completion (checked by the actor against S3),
promotion (staging → masters, staging removed), metadata edits, deletion (previews removed),
expiry, queries, history and the live status stream — and re-delivery changing nothing."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import asyncpg
import boto3
import pytest
from aiokafka import AIOKafkaProducer
from botocore.exceptions import ClientError

from medialog.domain.commands import CommandMeta, ExpireUpload
from medialog.domain.events import ViewReported
from medialog.envelope import encode_command, encode_event, make_event
from streams.janitor import expired_uploads, sweep_expired
from tests.kafka_log import read_topic

pytestmark = pytest.mark.integration

CLIP = b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 8
PAST_UPLOADED = {"uploaded", "promoted", "processing", "ready", "failed"}
PROMOTED_OR_BEYOND = {"promoted", "processing", "ready", "failed"}


def auth(token: str, **extra: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", **extra}


def user(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def s3(stack) -> Any:
    s = stack.settings()
    return boto3.client("s3", endpoint_url=s.s3_endpoint, region_name="us-east-1",
                        aws_access_key_id=s.s3_access_key.get_secret_value(),
                        aws_secret_access_key=s.s3_secret_key.get_secret_value())


@pytest.fixture
async def pg(stack) -> Any:
    pool = await asyncpg.create_pool(stack.settings().postgres_dsn.get_secret_value(),
                                     min_size=1, max_size=2)
    yield pool
    await pool.close()


async def exists(s3: Any, bucket: str, key: str) -> bool:
    """Whether the object is there. Only "not found" means absent; any other error (denied,
    a server error) is raised, never taken for a deletion."""
    try:
        await asyncio.to_thread(s3.head_object, Bucket=bucket, Key=key)
    except ClientError as exc:
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if status == 404 or exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey"):
            return False
        raise
    return True


async def eventually(check: Any, timeout: float = 30.0, every: float = 0.2) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = await check()
        if result or time.monotonic() > deadline:
            return result
        await asyncio.sleep(every)


class Client:
    """One user's view of the api."""

    def __init__(self, http: aiohttp.ClientSession, stack: Any, user_id: str | None, *roles: str):
        self.http, self.base, self.user_id = http, stack.base_url, user_id
        self.headers = auth(stack.token(user_id, *(roles or ("creator",)))) if user_id else {}

    async def call(
        self, method: str, path: str, *, wait: bool = True, **kw: Any
    ) -> tuple[int, Any]:
        headers = {**self.headers, **({"Prefer": "wait=20"} if wait else {}),
                   **kw.pop("headers", {})}
        async with self.http.request(method, self.base + path, headers=headers, **kw) as r:
            return r.status, await r.json()

    async def upload(self, body: dict[str, Any] | None = None, data: bytes | None = CLIP,
                     declared: int | None = None) -> str:
        payload = {"filename": "clip.mp4", "content_type": "video/mp4",
                   "size_bytes": declared or len(CLIP), "title": "A clip", **(body or {})}
        status, up = await self.call("POST", "/v1/uploads", json=payload)
        assert status == 202 and up["command"]["projected"], up
        if data is not None:
            async with self.http.put(up["upload_url"], data=data, headers=up["headers"]) as r:
                assert r.status == 200, await r.text()
        return str(up["asset_id"])

    async def complete(self, asset_id: str) -> tuple[int, Any]:
        return await self.call("POST", f"/v1/assets/{asset_id}/complete")

    async def asset(self, asset_id: str) -> tuple[int, Any]:
        return await self.call("GET", f"/v1/assets/{asset_id}", wait=False)

    async def status_of(self, asset_id: str) -> str:
        return str((await self.asset(asset_id))[1]["status"])

    async def until_status(self, asset_id: str, wanted: set[str], timeout: float = 30) -> str:
        async def check() -> str | None:
            status = await self.status_of(asset_id)
            return status if status in wanted else None
        return await eventually(check, timeout) or await self.status_of(asset_id)

    async def listing(self, **params: Any) -> tuple[int, Any]:
        return await self.call("GET", "/v1/assets", wait=False,
                               params={k: str(v) for k, v in params.items()})


async def uploaded(alice: Client, body: dict[str, Any] | None = None) -> str:
    """An asset whose completion was accepted (uploaded, or further along already)."""
    asset_id = await alice.upload(body)
    status, done = await alice.complete(asset_id)
    assert status == 202 and done["command"]["status"] == "accepted", done
    return asset_id


# -- completion and promotion -------------------------------------------------------------------


async def test_completion_promotes_to_masters_and_removes_staging(http, stack, s3, pg):
    alice = Client(http, stack, user("alice"))
    asset_id = await alice.upload()
    staging_key = f"uploads/{alice.user_id}/{asset_id}/original.mp4"
    assert await exists(s3, "staging", staging_key)

    status, body = await alice.complete(asset_id)
    assert status == 202, body
    assert body["command"]["status"] == "accepted" and body["command"]["projected"] is True
    assert body["asset_id"] == asset_id and body["command_id"]

    assert await alice.until_status(asset_id, PROMOTED_OR_BEYOND) in PROMOTED_OR_BEYOND
    head = await asyncio.to_thread(s3.head_object, Bucket="masters", Key=f"{asset_id}/original.mp4")
    assert head["ContentLength"] == len(CLIP) and head["ContentType"] == "video/mp4"
    assert await eventually(lambda: _gone(s3, "staging", staging_key), 20)

    _, asset = await alice.asset(asset_id)
    assert asset["metadata"]["size_bytes"] == len(CLIP) and asset["transcode"]["job_id"]
    # The promoter stored its position past this asset's upload_completed (after its effects).
    completed = await _find_event(stack, "events.asset", asset_id,
                                  await _event_id(pg, asset_id, "upload_completed"))
    assert await eventually(lambda: _promoter_past(pg, completed.partition, completed.offset))


async def _event_id(pg: Any, asset_id: str, kind: str) -> str:
    async with pg.acquire() as conn:
        event_id = await conn.fetchval("SELECT event_id FROM asset_events WHERE asset_id = $1 "
                                       "AND type = $2", asset_id, f"medialog.asset.{kind}")
    assert event_id, f"no {kind} event of {asset_id}"
    return str(event_id)


async def _promoter_past(pg: Any, partition: int, offset: int) -> bool:
    """Whether the promoter's stored offset on ``events.asset`` is at or past ``offset``."""
    async with pg.acquire() as conn:
        stored = await conn.fetchval(
            "SELECT \"offset\" FROM consumer_offsets WHERE consumer = 'worker.promoter' "
            "AND topic = 'events.asset' AND partition = $1", partition)
    return stored is not None and stored >= offset


async def _gone(s3: Any, bucket: str, key: str) -> bool:
    return not await exists(s3, bucket, key)


async def test_completion_without_the_bytes_is_upload_missing(http, stack):
    alice = Client(http, stack, user("alice"))
    asset_id = await alice.upload(data=None)
    status, body = await alice.complete(asset_id)
    assert status == 409, body
    assert body["error"]["code"] == "UPLOAD_MISSING" and body["error"]["message"]
    assert body["command"]["status"] == "rejected" and body["command_id"]
    assert await alice.status_of(asset_id) == "awaiting_upload"


async def test_more_bytes_than_declared_is_a_size_mismatch(http, stack, s3):
    """S3 refuses a presigned PUT of another size (test_upload_limits.py); this check stays for
    an object store that would not, so the bytes are written here with the server's own key."""
    alice = Client(http, stack, user("alice"))
    asset_id = await alice.upload(declared=len(CLIP) - 100, data=None)
    await asyncio.to_thread(s3.put_object, Bucket="staging", Body=CLIP, ContentType="video/mp4",
                            Key=f"uploads/{alice.user_id}/{asset_id}/original.mp4")
    status, body = await alice.complete(asset_id)
    assert status == 409 and body["error"]["code"] == "UPLOAD_SIZE_MISMATCH", body
    assert body["error"]["details"] == [{"declared": len(CLIP) - 100, "uploaded": len(CLIP)}]


async def test_completing_twice_is_a_conflict(http, stack):
    alice = Client(http, stack, user("alice"))
    asset_id = await uploaded(alice)
    status, body = await alice.complete(asset_id)
    assert status == 409 and body["error"]["code"] == "INVALID_TRANSITION", body


async def test_completion_of_unknown_or_foreign_assets(http, stack):
    alice, mallory = Client(http, stack, user("alice")), Client(http, stack, user("mallory"))
    status, body = await alice.complete(str(uuid.uuid4()))
    assert status == 404 and body["error"]["code"] == "ASSET_NOT_FOUND"
    waiting = await alice.upload()  # not yet uploaded: invisible to others
    status, body = await mallory.complete(waiting)
    assert status == 404 and body["error"]["code"] == "ASSET_NOT_FOUND"
    assert await alice.status_of(waiting) == "awaiting_upload"


async def test_redelivered_upload_completed_changes_nothing(http, stack, s3, pg):
    alice = Client(http, stack, user("alice"))
    asset_id = await uploaded(alice)
    assert await alice.until_status(asset_id, PROMOTED_OR_BEYOND) in PROMOTED_OR_BEYOND
    master = await asyncio.to_thread(
        s3.head_object, Bucket="masters", Key=f"{asset_id}/original.mp4"
    )
    assert await _count_events(pg, asset_id, "promoted") == 1
    completed = await _find_event(stack, "events.asset", asset_id,
                                  await _event_id(pg, asset_id, "upload_completed"))

    # The same record again, at a new offset, as after a crash before the promoter stored its
    # position.
    producer = AIOKafkaProducer(bootstrap_servers=stack.settings().kafka_bootstrap, acks="all")
    await producer.start()
    try:
        meta = await producer.send_and_wait("events.asset", completed.value, key=asset_id.encode())
    finally:
        await producer.stop()
    assert await eventually(lambda: _promoter_past(pg, meta.partition, meta.offset), 30), \
        "the promoter did not handle the re-delivered event"
    # The promoter sends its command (same key) before storing its position, so an edit sent now
    # reaches the actor after it; once the edit is projected, so is any second promotion.
    status, body = await alice.call("PATCH", f"/v1/assets/{asset_id}", json={"title": "Sentinel"})
    assert status == 202 and body["command"]["projected"] is True, body

    assert await _count_events(pg, asset_id, "promoted") == 1

    async def projection_saw_all() -> bool:  # the actor emitted nothing the projection skipped
        async with pg.acquire() as conn:
            return bool(await conn.fetchval(
                "SELECT (SELECT version FROM actor_snapshots WHERE actor = 'asset' "
                "AND aggregate_id = $1) = (SELECT count(*) FROM asset_events WHERE asset_id = $1)",
                asset_id))
    assert await eventually(projection_saw_all)  # a transcode may still be adding events
    again = await asyncio.to_thread(
        s3.head_object, Bucket="masters", Key=f"{asset_id}/original.mp4"
    )
    assert again["ETag"] == master["ETag"] and again["LastModified"] == master["LastModified"]


async def _count_events(pg: Any, asset_id: str, kind: str) -> int:
    async with pg.acquire() as conn:
        return int(await conn.fetchval("SELECT count(*) FROM asset_events WHERE asset_id = $1 "
                                       "AND type = $2", asset_id, f"medialog.asset.{kind}"))


async def _find_event(stack: Any, topic: str, key: str, event_id: str) -> Any:
    """The record of an event on the log, with its position."""
    found = [r for r in await read_topic(stack.settings(), topic)
             if r.key == key.encode() and json.loads(r.value).get("id") == event_id]
    assert len(found) == 1, f"event {event_id} on {topic}: {found}"
    return found[0]


# -- metadata, deletion, ownership ---------------------------------------------------------------


async def test_only_the_owner_edits_and_deletes(http, stack, pg):
    alice, mallory = Client(http, stack, user("alice")), Client(http, stack, user("mallory"))
    admin = Client(http, stack, user("admin"), "admin")
    asset_id = await uploaded(alice)
    _, before = await alice.asset(asset_id)

    status, body = await mallory.call("PATCH", f"/v1/assets/{asset_id}", json={"title": "Mine now"})
    assert status == 403 and body["error"]["code"] == "NOT_OWNER"
    status, body = await mallory.call("DELETE", f"/v1/assets/{asset_id}")
    assert status == 403 and body["error"]["code"] == "NOT_OWNER"
    status, body = await mallory.complete(asset_id)
    assert status == 403 and body["error"]["code"] == "NOT_OWNER"
    status, body = await admin.call("PATCH", f"/v1/assets/{asset_id}", json={"title": "Admin's"})
    assert status == 403 and body["error"]["code"] == "NOT_OWNER"  # metadata is the creator's
    status, body = await mallory.call("GET", f"/v1/assets/{asset_id}/history", wait=False)
    assert status == 403 and body["error"]["code"] == "NOT_OWNER"

    # The owner's edit (same key) is the sentinel: once it is projected, any command sent for
    # the refused calls before it would have been decided and projected too.
    status, body = await alice.call("PATCH", f"/v1/assets/{asset_id}",
                                    json={"description": "Still mine."})
    assert status == 202 and body["command"]["projected"] is True, body
    _, after = await alice.asset(asset_id)
    assert after["metadata"]["title"] == before["metadata"]["title"] == "A clip"
    assert after["description"] == "Still mine." and after["status"] != "deleted"
    async with pg.acquire() as conn:  # refused at the edge: no command reached the actor
        assert await conn.fetchval(
            "SELECT count(*) FROM command_outcomes WHERE aggregate_id = $1 AND actor_id = ANY($2)",
            asset_id, [mallory.user_id, admin.user_id]) == 0
        assert await conn.fetchval(
            "SELECT count(*) FROM asset_events WHERE asset_id = $1 AND actor_id = ANY($2)",
            asset_id, [mallory.user_id, admin.user_id]) == 0


async def test_metadata_given_at_creation_is_the_assets_from_the_start(http, stack, pg):
    alice = Client(http, stack, user("alice"))
    asset_id = await alice.upload({"title": "Harbour", "description": "Boats.\nAt dawn.",
                                   "tags": ["Sea", "boats", "sea"], "category": "Travel",
                                   "visibility": "private"})
    _, asset = await alice.asset(asset_id)
    assert asset["metadata"]["title"] == "Harbour" and asset["description"] == "Boats.\nAt dawn."
    assert asset["tags"] == ["sea", "boats"] and asset["category"] == "Travel"
    assert asset["visibility"] == "private" and asset["version"] == 2
    status, history = await alice.call("GET", f"/v1/assets/{asset_id}/history", wait=False)
    assert [e["type"] for e in history["events"]] == [
        "medialog.asset.upload_requested", "medialog.asset.metadata_updated"]
    assert history["events"][0]["data"]["visibility"] == "private"
    # Another user does not see a private asset.
    assert (await Client(http, stack, user("bob")).asset(asset_id))[0] == 404

    # Refused as PATCH refuses it, every problem at once, and nothing is written.
    before = await pg.fetchval("SELECT count(*) FROM assets WHERE owner_id = $1", alice.user_id)
    status, body = await alice.call("POST", "/v1/uploads", json={
        "filename": "clip.mp4", "content_type": "video/mp4", "size_bytes": 10,
        "tags": ["ok", "no/slash"], "category": "", "visibility": "loud", "description": 5})
    assert status == 400 and body["error"]["code"] == "VALIDATION_ERROR"
    assert {d["field"] for d in body["error"]["details"]} == {
        "tags", "category", "visibility", "description"}
    assert await pg.fetchval("SELECT count(*) FROM assets WHERE owner_id = $1",
                             alice.user_id) == before


async def test_owner_edits_metadata_and_history_lists_the_events_in_order(http, stack):
    alice = Client(http, stack, user("alice"))
    asset_id = await alice.upload()
    status, body = await alice.call("PATCH", f"/v1/assets/{asset_id}", json={
        "title": "  Sunset   over the bay ", "description": "Filmed at dusk.",
        "tags": ["Beach", "sunset", "beach"], "category": "Travel", "visibility": "unlisted"})
    assert status == 202 and body["command"]["status"] == "accepted", body
    _, asset = await alice.asset(asset_id)
    assert asset["metadata"]["title"] == "Sunset over the bay"
    assert asset["description"] == "Filmed at dusk." and asset["tags"] == ["beach", "sunset"]
    assert asset["category"] == "Travel" and asset["visibility"] == "unlisted"
    assert asset["version"] == 2

    status, body = await alice.call("PATCH", f"/v1/assets/{asset_id}", json={"visibility": "loud"})
    assert status == 400 and body["error"]["code"] == "VALIDATION_ERROR"
    status, body = await alice.call("PATCH", f"/v1/assets/{asset_id}", json={"owner_id": "x"})
    assert status == 400
    # The same values again: accepted, nothing changes (no event).
    status, body = await alice.call("PATCH", f"/v1/assets/{asset_id}", json={"category": "Travel"})
    assert status == 202 and body["command"]["events"] == [] and body["command"]["version"] == 2

    status, done = await alice.complete(asset_id)
    assert status == 202
    await alice.until_status(asset_id, PROMOTED_OR_BEYOND)
    status, history = await alice.call("GET", f"/v1/assets/{asset_id}/history", wait=False)
    assert status == 200
    events = history["events"]
    assert [e["sequence"] for e in events] == list(range(1, len(events) + 1))
    assert [e["type"] for e in events][:5] == [
        "medialog.asset.upload_requested", "medialog.asset.metadata_updated",
        "medialog.asset.upload_completed", "medialog.asset.promoted",
        "medialog.asset.transcode_requested"]
    assert events[1]["actor_id"] == alice.user_id and events[1]["data"]["visibility"] == "unlisted"
    assert events[2]["causation_id"] == done["command_id"]
    assert events[3]["actor_id"] == "system:promoter"
    assert all(e["time"].endswith("Z") for e in events)
    status, page = await alice.call("GET", f"/v1/assets/{asset_id}/history?after=2&limit=1",
                                    wait=False)
    assert [e["sequence"] for e in page["events"]] == [3] and page["next_after"] == 3


async def test_delete_hides_the_asset_and_removes_its_previews(http, stack, s3, pg):
    alice, bob = Client(http, stack, user("alice")), Client(http, stack, user("bob"))
    asset_id = await uploaded(alice, {"title": "Doomed clip"})
    await alice.until_status(asset_id, PROMOTED_OR_BEYOND)
    await alice.until_status(asset_id, {"ready", "failed"}, timeout=60)  # let any transcode end
    preview_keys = [f"{asset_id}/hls/360p/seg_{i}.ts" for i in range(3)] + [f"{asset_id}/thumb.jpg"]
    for key in preview_keys:
        await asyncio.to_thread(s3.put_object, Bucket="previews", Key=key, Body=b"x")
    assert (await bob.asset(asset_id))[0] == 200

    status, body = await alice.call("DELETE", f"/v1/assets/{asset_id}")
    assert status == 202 and body["command"]["status"] == "accepted", body
    status, asset = await alice.asset(asset_id)
    assert status == 200 and asset["status"] == "deleted" and asset["deleted_at"].endswith("Z")
    status, body = await bob.asset(asset_id)
    assert status == 404 and body["error"]["code"] == "ASSET_NOT_FOUND"
    _, listing = await alice.listing(owner=alice.user_id)
    assert asset_id not in [a["asset_id"] for a in listing["items"]]
    _, listing = await alice.listing(owner=alice.user_id, status="deleted")
    assert [a["asset_id"] for a in listing["items"]] == [asset_id]

    status, body = await alice.call("DELETE", f"/v1/assets/{asset_id}")
    assert status == 409 and body["error"]["code"] == "ASSET_DELETED", body
    status, body = await alice.call("PATCH", f"/v1/assets/{asset_id}", json={"title": "Back?"})
    assert status == 409

    async def previews_gone() -> bool:
        listed = await asyncio.to_thread(
            s3.list_objects_v2, Bucket="previews", Prefix=f"{asset_id}/"
        )
        return listed.get("KeyCount", 0) == 0
    assert await eventually(previews_gone, 20)
    assert await exists(s3, "masters", f"{asset_id}/original.mp4")  # originals are retained


async def test_admin_may_delete_any_asset(http, stack):
    alice, admin = Client(http, stack, user("alice")), Client(http, stack, user("admin"), "admin")
    asset_id = await alice.upload()
    status, body = await admin.call("DELETE", f"/v1/assets/{asset_id}")
    assert status == 202 and body["command"]["status"] == "accepted", body
    assert await alice.status_of(asset_id) == "deleted"


# -- expiry ------------------------------------------------------------------------------------


async def test_an_expired_upload_is_hidden_and_its_staging_object_removed(http, stack, s3, pg):
    alice = Client(http, stack, user("alice"))
    asset_id = await alice.upload()
    staging_key = f"uploads/{alice.user_id}/{asset_id}/original.mp4"
    assert await exists(s3, "staging", staging_key)
    _, asset = await alice.asset(asset_id)
    expires = datetime.fromisoformat(asset["upload_expires_at"].replace("Z", "+00:00"))
    grace = stack.settings().upload_grace_s
    later = expires + timedelta(seconds=grace + 1)

    # The sweep's query and commands, with a clock of our choosing (sent for this asset only).
    async with pg.acquire() as conn:
        assert asset_id not in await expired_uploads(conn, expires, 100_000)
        assert asset_id in await expired_uploads(conn, later - timedelta(seconds=grace), 100_000)
    sent: list[tuple[str, Any, CommandMeta]] = []

    async def record(aggregate_id: str, command: Any, meta: CommandMeta) -> None:
        sent.append((aggregate_id, command, meta))
    await sweep_expired(pg, record, now=later, grace_s=grace, limit=100_000)
    mine = [s for s in sent if s[0] == asset_id]
    assert len(mine) == 1 and isinstance(mine[0][1], ExpireUpload)
    sent.clear()
    await sweep_expired(pg, record, now=later, grace_s=grace, limit=100_000)
    assert [s[2].command_id for s in sent if s[0] == asset_id] == [mine[0][2].command_id]

    # Too early: the actor refuses (the command's clock is what counts).
    early = ExpireUpload(now=expires, grace_s=grace)
    status = await _send_and_wait(stack, http, alice, asset_id, early, str(uuid.uuid4()))
    assert status == ("rejected", "UPLOAD_NOT_EXPIRED")
    _, command, meta = mine[0]
    assert await _send_and_wait(stack, http, alice, asset_id, command, meta.command_id) == (
        "accepted", None)

    assert await alice.until_status(asset_id, {"expired"}) == "expired"
    assert await eventually(lambda: _gone(s3, "staging", staging_key), 20)
    _, listing = await alice.listing(owner=alice.user_id)
    assert asset_id not in [a["asset_id"] for a in listing["items"]]
    status, body = await alice.complete(asset_id)
    assert status == 409 and body["error"]["code"] == "INVALID_TRANSITION"


async def _send_and_wait(stack: Any, http: Any, who: Client, asset_id: str, command: Any,
                         command_id: str) -> tuple[str, str | None]:
    meta = CommandMeta(command_id=command_id, issued_at=datetime.now(UTC), actor_id="system:test",
                       actor_roles=("system",), correlation_id=command_id)
    producer = AIOKafkaProducer(bootstrap_servers=stack.settings().kafka_bootstrap, acks="all")
    await producer.start()
    try:
        await producer.send_and_wait("commands.asset", encode_command(
            command, aggregate_id=asset_id, meta=meta), key=asset_id.encode())
    finally:
        await producer.stop()
    admin = Client(http, stack, "ops", "admin")
    status, outcome = await admin.call("GET", f"/v1/commands/{command_id}",
                                       headers={"Prefer": "wait=20"}, wait=False)
    assert status == 200
    return outcome["status"], (outcome.get("error") or {}).get("code")


# -- queries -----------------------------------------------------------------------------------


async def test_listing_filters_sorts_pages_and_hides_what_others_may_not_see(http, stack):
    owner = Client(http, stack, user("lister"))
    viewer, anon = Client(http, stack, user("viewer"), "viewer"), Client(http, stack, None)
    tag = f"t{uuid.uuid4().hex[:8]}"
    ids: dict[str, str] = {}
    for name, title, patch in [
        ("a", "100%_done sunrise", {"tags": [tag, "morning"]}),
        ("b", "100 done sunset", {"tags": [tag]}),
        ("c", "Unlisted one", {"visibility": "unlisted"}),
        ("d", "Private one", {"visibility": "private"}),
    ]:
        ids[name] = await uploaded(owner, {"title": title})
        status, body = await owner.call("PATCH", f"/v1/assets/{ids[name]}", json=patch)
        assert status == 202, body
    ids["e"] = await owner.upload({"title": "Not uploaded yet"}, data=None)

    async def names(who: Client, **params: Any) -> list[str]:
        status, body = await who.listing(owner=owner.user_id, **params)
        assert status == 200, body
        back = {v: k for k, v in ids.items()}
        return [back[a["asset_id"]] for a in body["items"]]

    assert await names(owner) == ["e", "d", "c", "b", "a"]
    assert await names(owner, sort="created_at") == ["a", "b", "c", "d", "e"]
    pages = [await owner.listing(owner=owner.user_id, limit=2, page=n) for n in (1, 2, 3, 4)]
    assert [len(p[1]["items"]) for p in pages] == [2, 2, 1, 0]
    assert {p[1]["total"] for p in pages} == {5} and pages[1][1]["page"] == 2
    assert await names(owner, status="awaiting_upload") == ["e"]
    assert await names(owner, visibility="private") == ["d"]
    assert await names(owner, tag=tag.upper()) == ["b", "a"]
    assert await names(owner, q="100%_") == ["a"]  # wildcards are literal
    assert await names(owner, q="SUN") == ["b", "a"]

    # Others: public assets whose upload completed; unlisted readable by id, private not at all.
    assert await names(viewer) == ["b", "a"] and await names(anon) == ["b", "a"]
    assert (await viewer.listing(owner=owner.user_id))[1]["total"] == 2
    assert await names(viewer, visibility="private") == []
    assert await names(viewer, status="deleted") == []
    assert (await viewer.asset(ids["c"]))[0] == 200 and (await anon.asset(ids["a"]))[0] == 200
    assert (await viewer.asset(ids["d"]))[0] == 404 and (await anon.asset(ids["d"]))[0] == 404
    assert (await viewer.asset(ids["e"]))[0] == 404

    # Counters from real engagement: b has more views, a more likes. These uploads are no video
    # (nothing to play: the api refuses their reports, 409 ASSET_NOT_PLAYABLE), so the reports
    # are appended as the api appends them, one over the 10 s threshold per view.
    wanted = {"a": {"views": 1, "likes": 2}, "b": {"views": 2, "likes": 1}}
    producer = AIOKafkaProducer(bootstrap_servers=stack.settings().kafka_bootstrap, acks="all")
    await producer.start()
    try:
        for name, figures in wanted.items():
            for i in range(figures["views"]):
                report = ViewReported(asset_id=ids[name], owner_id=owner.user_id,
                                      viewer_key=viewer.user_id, signed_in=True,
                                      session_id=f"s-{name}-{i}-{tag}", watch_seconds=12,
                                      duration_s=None)
                event = make_event(report, subject=ids[name], event_id=str(uuid.uuid4()),
                                   time=datetime.now(UTC), sequence=None)
                await producer.send_and_wait(stack.settings().topic("events.views"),
                                             encode_event(event), key=ids[name].encode())
    finally:
        await producer.stop()
    for name, figures in wanted.items():
        for i in range(figures["likes"]):
            fan = Client(http, stack, user(f"fan{i}"), "viewer")
            status, body = await fan.call("PUT", f"/v1/assets/{ids[name]}/like")
            assert status == 200 and body["liked"] is True, body

    async def stats() -> dict[str, Any]:
        return {name: (await owner.asset(ids[name]))[1]["stats"] for name in wanted}
    assert await eventually(lambda: _true_if(stats, wanted)), await stats()
    assert await names(owner, sort="-views") == ["b", "a", "e", "d", "c"]
    assert await names(owner, sort="-likes") == ["a", "b", "e", "d", "c"]


async def _true_if(read: Any, wanted: Any) -> Any:
    """``read()`` if it equals ``wanted``, else None (for ``eventually``)."""
    value = await read()
    return value if value == wanted else None


@pytest.mark.parametrize("params, field", [
    ({"limit": "0"}, "limit"), ({"limit": "101"}, "limit"), ({"page": "x"}, "page"),
    ({"sort": "-title"}, "sort"), ({"status": "new"}, "status"), ({"visibility": "secret"},
                                                                      "visibility"),
    ({"colour": "red"}, ["colour"]),
])
async def test_listing_rejects_bad_parameters(http, stack, params, field):
    status, body = await Client(http, stack, None).listing(**params)
    assert status == 400 and body["error"]["code"] == "VALIDATION_ERROR"
    assert [d["field"] for d in body["error"]["details"]] == [field]


# -- live status -------------------------------------------------------------------------------


async def _sse_messages(response: aiohttp.ClientResponse) -> Any:
    """Yield each SSE message as a dict of its fields (comments skipped)."""
    fields: dict[str, str] = {}
    while True:
        line = (await response.content.readline()).decode()
        if not line:
            return
        line = line.rstrip("\n")
        if not line:
            if "data" in fields:
                yield {**fields, "data": json.loads(fields["data"])}
            fields = {}
        elif not line.startswith(":"):
            name, _, value = line.partition(":")
            fields[name] = value.lstrip()


async def test_status_stream_sends_the_state_then_every_change(http, stack):
    alice = Client(http, stack, user("alice"))
    asset_id = await alice.upload()
    async with http.get(f"{stack.base_url}/v1/assets/{asset_id}/status",
                        headers=alice.headers) as r:
        assert r.status == 200 and r.headers["Content-Type"].startswith("text/event-stream")
        messages = _sse_messages(r)
        first = await asyncio.wait_for(messages.__anext__(), 10)
        assert first["event"] == "status" and first["data"]["status"] == "awaiting_upload"
        assert first["data"]["event"] is None and first["id"] == "1"

        status, _ = await alice.complete(asset_id)
        assert status == 202
        seen = [first["data"]]
        async def follow() -> None:
            async for message in messages:
                seen.append(message["data"])
                if message["data"]["status"] in PROMOTED_OR_BEYOND:
                    return
        await asyncio.wait_for(follow(), 30)
    statuses = [m["status"] for m in seen]
    assert statuses[:3] == ["awaiting_upload", "uploaded", "promoted"], seen
    assert [m["version"] for m in seen] == list(range(1, len(seen) + 1))
    assert seen[1]["event"] == "medialog.asset.upload_completed"


async def test_status_stream_ends_after_a_terminal_status(http, stack):
    alice, anon = Client(http, stack, user("alice")), Client(http, stack, None)
    asset_id = await alice.upload()
    status, _ = await alice.call("DELETE", f"/v1/assets/{asset_id}")
    assert status == 202
    async with http.get(f"{stack.base_url}/v1/assets/{asset_id}/status",
                        headers=alice.headers) as r:
        received = await asyncio.wait_for(_collect(_sse_messages(r)), 10)
    assert [m["data"]["status"] for m in received] == ["deleted"]
    async with http.get(f"{stack.base_url}/v1/assets/{asset_id}/status",
                        headers=anon.headers) as r:
        assert r.status == 404


async def _collect(messages: Any) -> list[Any]:
    return [m async for m in messages]

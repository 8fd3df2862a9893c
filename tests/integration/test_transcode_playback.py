"""Transcoding and signed playback on the real embedded stack: upload → complete → promote →
transcode (retries, dead letter, re-transcode) → ready → signed playback URLs opened by a real
HLS client (ffprobe/ffmpeg fetch the variants and segments through relative URIs), the
streaming route's security and HTTP semantics, and a SIGKILL in the middle of a transcode.

Media is generated with ffmpeg lavfi (4 s, small). The crash test is LAST: it restarts the stack."""

from __future__ import annotations

import asyncio
import json
import random
import signal
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import boto3
import pytest
from aiokafka import ConsumerRecord
from yarl import URL

from medialog.signing import SigningKeys, stream_url
from tests.kafka_log import read_topic

pytestmark = pytest.mark.integration

SECONDS = 4
READY_TIMEOUT_S = 180  # shared 2-core machines: generous


def _ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-hide_banner", "-nostdin", "-loglevel", "error", "-y", *args],
                   check=True, timeout=120)


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("media")
    files = {k: root / n for k, n in [("video", "clip.mp4"), ("audio", "tone.m4a"),
                                       ("image", "still.png"), ("corrupt", "corrupt.mp4")]}
    _ffmpeg("-f", "lavfi", "-i", f"testsrc2=size=1280x720:rate=30:duration={SECONDS}",
            "-f", "lavfi", "-i", f"sine=frequency=440:sample_rate=48000:duration={SECONDS}",
            "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-c:a", "aac",
            "-shortest", str(files["video"]))
    _ffmpeg("-f", "lavfi", "-i", f"sine=frequency=330:sample_rate=48000:duration={SECONDS}",
            "-c:a", "aac", str(files["audio"]))
    _ffmpeg("-f", "lavfi", "-i", "testsrc2=size=640x480", "-frames:v", "1", str(files["image"]))
    files["corrupt"].write_bytes(random.Random(11).randbytes(100_000))
    return files


TYPES = {"video": "video/mp4", "audio": "audio/mp4", "image": "image/png", "corrupt": "video/mp4"}


@pytest.fixture
async def pg(stack) -> Any:
    pool = await asyncpg.create_pool(stack.settings().postgres_dsn.get_secret_value(),
                                     min_size=1, max_size=2)
    yield pool
    await pool.close()


@pytest.fixture
def s3(stack) -> Any:
    s = stack.settings()
    return boto3.client("s3", endpoint_url=s.s3_endpoint, region_name="us-east-1",
                        aws_access_key_id=s.s3_access_key.get_secret_value(),
                        aws_secret_access_key=s.s3_secret_key.get_secret_value())


class Api:
    def __init__(self, http: aiohttp.ClientSession, stack: Any, user: str | None,
                 *roles: str) -> None:
        self.http, self.stack, self.user = http, stack, user
        self.headers = ({"Authorization": f"Bearer {stack.token(user, *(roles or ('creator',)))}"}
                        if user else {})

    async def call(self, method: str, path: str, *, wait: float = 0, **kw: Any) -> tuple[int, Any]:
        headers = {**self.headers, **({"Prefer": f"wait={wait:g}"} if wait else {})}
        async with self.http.request(method, self.stack.base_url + path, headers=headers,
                                     **kw) as r:
            return r.status, await r.json()

    async def upload(self, path: Path, kind: str) -> str:
        """Upload, PUT and complete; return the asset id."""
        body = {"filename": path.name, "content_type": TYPES[kind],
                "size_bytes": path.stat().st_size, "title": f"{kind} test"}
        status, up = await self.call("POST", "/v1/uploads", json=body, wait=20)
        assert status == 202, up
        with path.open("rb") as media:  # streamed: a large bytes body would block the loop
            async with self.http.put(up["upload_url"], data=media, headers=up["headers"]) as r:
                assert r.status == 200, await r.text()
        status, done = await self.call("POST", f"/v1/assets/{up['asset_id']}/complete", wait=20)
        assert status == 202 and done["command"]["status"] == "accepted", done
        return str(up["asset_id"])

    async def playback(self, asset_id: str, **params: str) -> tuple[int, Any]:
        return await self.call("GET", f"/v1/assets/{asset_id}/playback", params=params)


async def row(pg: Any, asset_id: str) -> Any:
    async with pg.acquire() as conn:
        return await conn.fetchrow("SELECT * FROM assets WHERE asset_id = $1", asset_id)


async def until(pg: Any, asset_id: str, check: Any, timeout: float = READY_TIMEOUT_S) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        r = await row(pg, asset_id)
        if r is not None and check(r):
            return r
        assert time.monotonic() < deadline, f"timed out; asset is {r and dict(r)}"
        await asyncio.sleep(0.1)


def settled(r: Any) -> bool:
    return r["status"] in ("ready", "failed")


def jsonb(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str) else value


def renditions(r: Any) -> list[dict[str, Any]]:
    return list(jsonb(r["renditions"]))


def projected(status: int, body: Any) -> bool:
    """A write answered with ``Prefer: wait`` was accepted and is in the read model."""
    return status == 202 and body.get("command", {}).get("projected") is True


def job_over(r: Any, job_id: str) -> bool:
    """The read model shows ``job_id`` finished (done or failed)."""
    job = jsonb(r["transcode"]) or {}
    return job.get("job_id") == job_id and job.get("state") in ("done", "failed")


async def events(pg: Any, asset_id: str) -> list[Any]:
    async with pg.acquire() as conn:
        return await conn.fetch("SELECT sequence, type, data FROM asset_events WHERE asset_id = $1 "
                                "ORDER BY sequence", asset_id)


async def run(*args: str, timeout: float = 120) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(*args, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.STDOUT)
    out, _ = await asyncio.wait_for(proc.communicate(), timeout)
    return proc.returncode or 0, out.decode(errors="replace")


async def hls_streams(url: str) -> list[dict[str, Any]]:
    """What a real HLS client finds behind a master playlist URL (it follows relative URIs)."""
    code, out = await run("ffprobe", "-v", "error", "-show_streams", "-of", "json", url)
    assert code == 0, out
    return list(json.loads(out)["streams"])


async def read_records(stack: Any, topic: str, key: str) -> list[ConsumerRecord]:
    """Every record of ``topic`` with ``key``, up to the end of the log at the call."""
    return [m for m in await read_topic(stack.settings(), topic) if m.key == key.encode()]


def values(records: list[ConsumerRecord]) -> list[Any]:
    """The records' JSON values."""
    return [json.loads(m.value) for m in records]


@pytest.fixture(scope="module")
async def ready_video(stack, media) -> dict[str, Any]:
    """One video, uploaded once and transcoded. (That the lowest rung is playable first is
    test_transcode_pipeline.py's: here it could only be seen by chance.)"""
    async with aiohttp.ClientSession() as http:
        owner = Api(http, stack, f"tara-{uuid.uuid4().hex[:6]}")
        asset_id = await owner.upload(media["video"], "video")
    pool = await asyncpg.create_pool(stack.settings().postgres_dsn.get_secret_value(),
                                     min_size=1, max_size=2)
    try:
        final = await until(pool, asset_id, settled)
    finally:
        await pool.close()
    assert final["status"] == "ready", dict(final)
    return {"asset_id": asset_id, "owner": owner.user, "row": final}


async def test_video_is_transcoded_to_a_ladder_and_plays_from_signed_urls(
        http, stack, pg, s3, media, ready_video):
    asset_id, r = ready_video["asset_id"], ready_video["row"]
    assert sorted(x["name"] for x in renditions(r)) == ["360p", "480p", "720p"]
    assert r["master_playlist_key"] == f"{asset_id}/hls/master.m3u8"
    assert r["thumbnail_key"] == f"{asset_id}/thumb.jpg"
    assert (r["width"], r["height"]) == (1280, 720) and abs(r["duration_s"] - SECONDS) < 0.5

    owner = Api(http, stack, ready_video["owner"])
    status, play = await owner.playback(asset_id, expires_in="600")
    assert status == 200, play
    assert set(play) == {"asset_id", "hls_url", "thumbnail_url", "download_url", "expires_at"}
    assert play["hls_url"].startswith(f"{stack.base_url}/v1/stream/{asset_id}/")
    assert play["hls_url"].endswith("/hls/master.m3u8")
    streams = await hls_streams(play["hls_url"])
    heights = sorted({s["height"] for s in streams if s["codec_type"] == "video"})
    assert heights == [360, 480, 720]
    assert {s["codec_name"] for s in streams} == {"h264", "aac"}
    # A player reads every segment of the chosen variant through the same signed prefix.
    code, out = await run("ffmpeg", "-v", "error", "-i", play["hls_url"], "-c", "copy",
                          "-f", "null", "-")
    assert code == 0, out
    async with http.get(play["thumbnail_url"]) as resp:
        assert resp.status == 200 and resp.content_type == "image/jpeg"
        assert (await resp.read())[:2] == b"\xff\xd8"
    async with http.get(play["download_url"]) as resp:
        assert resp.status == 200 and await resp.read() == media["video"].read_bytes()

    # Public: anyone may play, without the master download; IP-bound URLs work from here.
    status, anon = await Api(http, stack, None).playback(asset_id, bind_ip="true")
    assert status == 200 and "download_url" not in anon, anon
    assert len(await hls_streams(anon["hls_url"])) >= 2

    issued = values(await read_records(stack, "events.access", asset_id))
    kinds = [(e["type"], e["data"]["download"], e["data"]["ip_bound"]) for e in issued]
    assert ("medialog.access.playback_issued", True, False) in kinds
    assert ("medialog.access.playback_issued", False, True) in kinds


async def test_the_stream_route_refuses_bad_signatures_and_paths(http, stack, ready_video):
    asset_id = ready_video["asset_id"]
    status, play = await Api(http, stack, ready_video["owner"]).playback(asset_id)
    assert status == 200
    url: str = play["hls_url"]
    prefix = url.removesuffix("hls/master.m3u8")
    keys = SigningKeys.parse(f"k1:{stack.state()['signing_secret']}")
    past = stream_url(stack.base_url, keys, asset_id, int(time.time()) - 5)
    bound = stream_url(stack.base_url, keys, asset_id, int(time.time()) + 60,
                       client_ip="10.9.8.7")
    token = url.split("/")[-3]
    tampered = url.replace(token, token[:-1] + ("A" if token[-1] != "A" else "B"))
    other = stream_url(stack.base_url, keys, str(uuid.uuid4()), int(time.time()) + 60)
    cases = [
        (tampered, 403, "SIGNATURE_INVALID"),
        (past, 403, "SIGNATURE_EXPIRED"),
        (bound, 403, "SIGNATURE_INVALID"),
        (url.replace(f"/{asset_id}/", f"/{uuid.uuid4()}/"), 403, "SIGNATURE_INVALID"),
        (prefix + "hls/../../x/thumb.jpg", 403, "PATH_INVALID"),
        (prefix + "%2e%2e/x/thumb.jpg", 403, "PATH_INVALID"),
        (prefix + "hls/%252e%252e/thumb.jpg", 403, "PATH_INVALID"),
        (prefix + "hls%2Fmaster.m3u8", 403, "PATH_INVALID"),
        (prefix + "hls%2F..%2F..%2Fthumb.jpg", 403, "PATH_INVALID"),
        (prefix + "hls//master.m3u8", 403, "PATH_INVALID"),
        (prefix + "hls/nothing.ts", 404, "NOT_FOUND"),
        (other, 404, "ASSET_NOT_FOUND"),  # signed, but no such asset
    ]
    for target, want_status, code in cases:
        async with http.get(URL(target, encoded=True)) as resp:
            body = await resp.json()
            assert (resp.status, body["error"]["code"]) == (want_status, code), target


async def test_ranges_head_and_conditional_requests(http, stack, s3, ready_video):
    asset_id = ready_video["asset_id"]
    status, play = await Api(http, stack, ready_video["owner"]).playback(asset_id)
    prefix = play["hls_url"].removesuffix("hls/master.m3u8")
    key = f"{asset_id}/hls/720p/seg_00000.ts"
    whole = (await asyncio.to_thread(s3.get_object, Bucket="previews", Key=key))["Body"].read()
    size, seg = len(whole), prefix + "hls/720p/seg_00000.ts"

    async with http.get(seg) as resp:
        assert resp.status == 200 and await resp.read() == whole
        assert resp.headers["Content-Type"] == "video/mp2t"
        assert resp.headers["Accept-Ranges"] == "bytes"
        assert "immutable" in resp.headers["Cache-Control"]
        assert resp.headers["Access-Control-Allow-Origin"] == "*"  # web players (hls.js)
        etag = resp.headers["ETag"]
    async with http.get(seg, headers={"Range": "bytes=100-1099"}) as resp:
        assert resp.status == 206 and await resp.read() == whole[100:1100]
        assert resp.headers["Content-Range"] == f"bytes 100-1099/{size}"
    async with http.get(seg, headers={"Range": "bytes=-500"}) as resp:
        assert resp.status == 206 and await resp.read() == whole[-500:]
    async with http.get(seg, headers={"Range": f"bytes={size}-"}) as resp:
        assert resp.status == 416 and resp.headers["Content-Range"] == f"bytes */{size}"
        assert (await resp.json())["error"]["code"] == "RANGE_NOT_SATISFIABLE"
    async with http.head(seg) as resp:
        assert resp.status == 200 and int(resp.headers["Content-Length"]) == size
        assert resp.headers["ETag"] == etag and await resp.read() == b""
    async with http.get(seg, headers={"If-None-Match": etag}) as resp:
        assert resp.status == 304 and await resp.read() == b""
    async with http.get(prefix + "hls/master.m3u8") as resp:
        assert resp.headers["Content-Type"] == "application/vnd.apple.mpegurl"
        assert resp.headers["Cache-Control"] == "public, max-age=60"
        assert (await resp.text()).startswith("#EXTM3U")


async def test_audio_gets_an_aac_ladder_and_no_thumbnail(http, stack, pg, media):
    owner = Api(http, stack, f"ada-{uuid.uuid4().hex[:6]}")
    asset_id = await owner.upload(media["audio"], "audio")
    r = await until(pg, asset_id, settled)
    assert r["status"] == "ready", dict(r)
    assert sorted(x["name"] for x in renditions(r)) == ["a128k", "a64k"]
    assert r["thumbnail_key"] is None and r["width"] is None
    status, play = await owner.playback(asset_id)
    assert status == 200 and play["thumbnail_url"] is None, play
    streams = await hls_streams(play["hls_url"])
    assert streams and {s["codec_type"] for s in streams} == {"audio"}
    assert {s["codec_name"] for s in streams} == {"aac"}


async def test_an_image_gets_a_thumbnail_only(http, stack, pg, media):
    owner = Api(http, stack, f"ines-{uuid.uuid4().hex[:6]}")
    asset_id = await owner.upload(media["image"], "image")
    r = await until(pg, asset_id, settled)
    assert r["status"] == "ready" and renditions(r) == [] and r["master_playlist_key"] is None
    status, play = await owner.playback(asset_id)
    assert status == 200 and play["hls_url"] is None, play
    async with http.get(play["thumbnail_url"]) as resp:
        assert resp.status == 200 and resp.content_type == "image/jpeg"


async def test_a_corrupt_upload_fails_after_its_retries_and_can_be_retried(
        http, stack, pg, media):
    owner = Api(http, stack, f"cora-{uuid.uuid4().hex[:6]}")
    asset_id = await owner.upload(media["corrupt"], "corrupt")
    status, early = await owner.playback(asset_id)
    assert status == 409 and early["error"]["code"] == "ASSET_NOT_PLAYABLE"
    r = await until(pg, asset_id, settled)
    failure = jsonb(r["failure"])
    assert r["status"] == "failed" and failure["attempts"] == 3, dict(r)
    assert failure["rung"] == "probe" and failure["reason"]
    dead = values(await read_records(stack, "jobs.transcode.dead-letter", asset_id))
    assert len({d["id"] for d in dead}) == 1 and dead[0]["attempts"] == 3
    assert dead[0]["job"]["asset_id"] == asset_id and dead[0]["rung"] == "probe"

    # Someone else may not re-run it; the owner may (a new job), and it fails again.
    status, body = await Api(http, stack, "mallory", "creator").call(
        "POST", f"/v1/assets/{asset_id}/transcode", json={"only_failed": True})
    assert status == 403 and body["error"]["code"] == "NOT_OWNER"
    status, bad = await owner.call("POST", f"/v1/assets/{asset_id}/transcode", json={"x": 1})
    assert status == 400
    status, again = await owner.call("POST", f"/v1/assets/{asset_id}/transcode",
                                     json={"only_failed": True}, wait=20)
    assert status == 202 and again["command"]["status"] == "accepted", again
    job = again["job_id"]
    await until(pg, asset_id, lambda x: job_over(x, job))
    failed = [e for e in await events(pg, asset_id) if e["type"].endswith("transcode_failed")]
    assert [jsonb(e["data"])["job_id"] for e in failed][-1] == job and len(failed) == 2


async def test_playback_rules(http, stack, pg, media, ready_video):
    owner = Api(http, stack, ready_video["owner"])
    asset_id = ready_video["asset_id"]
    for params in ({"expires_in": "59"}, {"expires_in": "86401"}, {"bind_ip": "maybe"}):
        status, body = await owner.playback(asset_id, **params)
        assert status == 400 and body["error"]["code"] == "VALIDATION_ERROR", body
    status, body = await owner.playback(str(uuid.uuid4()))
    assert status == 404
    status, body = await Api(http, stack, "admin-1", "admin").playback(asset_id)
    assert status == 200 and "download_url" in body
    # A fresh upload is not playable yet; a private asset is its owner's (and admins') only.
    body_up = {"filename": "x.mp4", "content_type": "video/mp4", "size_bytes": 10, "title": "xyz"}
    _, up = await owner.call("POST", "/v1/uploads", json=body_up, wait=20)
    status, body = await owner.playback(up["asset_id"])
    assert status == 409 and body["error"]["code"] == "ASSET_NOT_PLAYABLE"
    status, body = await owner.call("PATCH", f"/v1/assets/{asset_id}",
                                    json={"visibility": "private"}, wait=20)
    assert projected(status, body), body
    try:
        status, body = await Api(http, stack, None).playback(asset_id)
        assert status == 404 and body["error"]["code"] == "ASSET_NOT_FOUND"
        status, _ = await Api(http, stack, "stranger", "viewer").playback(asset_id)
        assert status == 404
        status, _ = await owner.playback(asset_id)
        assert status == 200
    finally:  # ready_video is shared: it must be public again for the next tests
        status, body = await owner.call("PATCH", f"/v1/assets/{asset_id}",
                                        json={"visibility": "public"}, wait=20)
        assert projected(status, body), body


async def test_retranscoding_a_ready_asset_runs_a_new_job(http, stack, pg, ready_video):
    owner = Api(http, stack, ready_video["owner"])
    asset_id = ready_video["asset_id"]
    status, body = await owner.call("POST", f"/v1/assets/{asset_id}/transcode", wait=20)
    assert status == 202 and body["command"]["status"] == "accepted", body
    r = await until(pg, asset_id, lambda x: job_over(x, body["job_id"]))
    assert r["status"] == "ready"
    assert sorted(x["name"] for x in renditions(r)) == ["360p", "480p", "720p"]


async def test_deleting_an_asset_while_it_transcodes_leaves_no_previews(http, stack, pg, s3,
                                                                      media):
    owner = Api(http, stack, f"dora-{uuid.uuid4().hex[:6]}")
    asset_id = await owner.upload(media["video"], "video")
    r = await until(pg, asset_id, lambda x: x["status"] == "processing" or settled(x))
    status, body = await owner.call("DELETE", f"/v1/assets/{asset_id}", wait=20)
    assert status in (200, 202), body

    async def job_decided() -> bool:
        async with pg.acquire() as conn:
            return bool(await conn.fetchval(
                "SELECT count(*) FROM command_outcomes WHERE aggregate_id = $1 AND command_type "
                "IN ('asset.complete_transcode', 'asset.fail_transcode')", asset_id))

    def listed() -> list[str]:
        page = s3.list_objects_v2(Bucket="previews", Prefix=f"{asset_id}/")
        return [o["Key"] for o in page.get("Contents", [])]

    async def stored_offset(consumer: str, record: ConsumerRecord) -> int:
        async with pg.acquire() as conn:
            value = await conn.fetchval(
                'SELECT "offset" FROM consumer_offsets WHERE consumer = $1 AND topic = $2 '
                "AND partition = $3", consumer, record.topic, record.partition)
        return -1 if value is None else int(value)

    deadline = time.monotonic() + READY_TIMEOUT_S
    while not await job_decided():  # no attempt of the job runs (or uploads) after this
        assert time.monotonic() < deadline, "the transcode job was never decided"
        await asyncio.sleep(0.5)
    # What writes or removes previews: the transcoder, for each queued attempt of the job, and
    # the janitor, for the deletion. Both store their offset only after their effects; once
    # both passed these records, nothing is left to put a preview back.
    jobs = await read_records(stack, "jobs.transcode", asset_id)
    deleted = [m for m in await read_records(stack, "events.asset", asset_id)
               if json.loads(m.value)["type"] == "medialog.asset.deleted"]
    assert jobs and len(deleted) == 1, (jobs, deleted)
    awaited = [("worker.transcoder", m) for m in jobs] + [("worker.janitor", deleted[0])]
    for consumer, record in awaited:
        while await stored_offset(consumer, record) < record.offset:
            assert time.monotonic() < deadline, f"{consumer} never passed {record.offset}"
            await asyncio.sleep(0.5)
    assert await asyncio.to_thread(listed) == [] and r["status"] in ("processing", "ready")
    assert (await row(pg, asset_id))["status"] == "deleted"


async def test_a_transcode_killed_midway_converges_after_restart(http, stack, media):
    """LAST: SIGKILL the whole stack while the transcoder runs ffmpeg, start it again."""
    owner = Api(http, stack, f"kim-{uuid.uuid4().hex[:6]}")
    asset_id = await owner.upload(media["video"], "video")
    pool = await asyncpg.create_pool(stack.settings().postgres_dsn.get_secret_value(),
                                     min_size=1, max_size=2)
    try:
        r = await until(pool, asset_id, lambda x: x["status"] == "processing" or settled(x))
    finally:
        await pool.close()
    assert r["status"] == "processing", "the transcode finished before the kill"
    try:
        stack.stop(signal.SIGKILL)
    finally:  # the stack is shared: later tests need it whatever happened here
        stack.start()
    pool = await asyncpg.create_pool(stack.settings().postgres_dsn.get_secret_value(),
                                     min_size=1, max_size=2)
    try:
        r = await until(pool, asset_id, settled)
        history = await events(pool, asset_id)
    finally:
        await pool.close()
    assert r["status"] == "ready", dict(r)
    assert [e["sequence"] for e in history] == list(range(1, len(history) + 1))
    types = [e["type"].removeprefix("medialog.asset.") for e in history]
    assert types.count("transcode_completed") == 1 and types.count("transcode_requested") == 1
    done = [jsonb(e["data"])["rendition"]["name"] for e in history
            if e["type"].endswith("rendition_completed")]
    assert sorted(done) == ["360p", "480p", "720p"]  # each recorded once, the kill included
    names = [x["name"] for x in renditions(r)]
    assert sorted(names) == ["360p", "480p", "720p"] and len(names) == len(set(names))
    status, play = await Api(http, stack, owner.user).playback(asset_id)
    assert status == 200 and len(await hls_streams(play["hls_url"])) >= 3

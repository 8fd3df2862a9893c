"""The presigned upload PUT, against the embedded stack's real SeaweedFS: it signs the declared
size (Content-Length) with the Content-Type, so S3 itself refuses a body of another size; and a
replayed upload request (same Idempotency-Key) gets no new URL once the upload is past."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

pytestmark = pytest.mark.integration

CLIP = b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 16
PAST_UPLOAD = {"promoted", "processing", "ready", "failed"}


def auth(token: str, **extra: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", **extra}


async def request_upload(http: Any, stack: Any, user: str, key: str | None = None,
                         size: int = len(CLIP)) -> tuple[int, dict[str, Any]]:
    headers = auth(stack.token(user, "creator"), Prefer="wait=20")
    if key is not None:
        headers["Idempotency-Key"] = key
    payload = {"filename": "clip.mp4", "content_type": "video/mp4", "size_bytes": size,
               "title": "Limits"}
    async with http.post(f"{stack.base_url}/v1/uploads", json=payload, headers=headers) as r:
        return r.status, await r.json()


async def put(http: Any, url: str, data: Any) -> tuple[int, str]:
    """PUT ``data`` with the signed Content-Type; the client sets Content-Length from the body
    (or sends it chunked, without one, when ``data`` is a generator)."""
    async with http.put(url, data=data, headers={"Content-Type": "video/mp4"}) as r:
        return r.status, await r.text()


async def staging_size(stack: Any, user: str, asset_id: str) -> int | None:
    import boto3
    from botocore.exceptions import ClientError

    s = stack.settings()
    client = boto3.client("s3", endpoint_url=s.s3_endpoint, region_name="us-east-1",
                          aws_access_key_id=s.s3_access_key.get_secret_value(),
                          aws_secret_access_key=s.s3_secret_key.get_secret_value())
    try:
        head = await asyncio.to_thread(client.head_object, Bucket="staging",
                                       Key=f"uploads/{user}/{asset_id}/original.mp4")
    except ClientError as exc:
        assert exc.response["Error"]["Code"] in {"404", "NoSuchKey", "NotFound"}, exc.response
        return None
    return int(head["ContentLength"])


async def test_the_presigned_put_takes_exactly_the_declared_size(http, stack):
    user = f"sizes-{uuid.uuid4().hex[:8]}"
    status, up = await request_upload(http, stack, user)
    assert status == 202, up
    assert up["headers"] == {"Content-Type": "video/mp4", "Content-Length": str(len(CLIP))}
    signed = parse_qs(urlsplit(up["upload_url"]).query)["X-Amz-SignedHeaders"][0].split(";")
    assert {"content-length", "content-type"} <= set(signed)

    async def chunked() -> AsyncIterator[bytes]:
        yield CLIP

    for body in (CLIP + b"\x00", CLIP[:-1], CLIP * 2, chunked()):
        status, text = await put(http, up["upload_url"], body)
        assert status == 403 and "SignatureDoesNotMatch" in text, (status, text)
    assert await staging_size(stack, user, up["asset_id"]) is None  # nothing was stored

    status, text = await put(http, up["upload_url"], CLIP)
    assert status == 200, text
    assert await staging_size(stack, user, up["asset_id"]) == len(CLIP)


async def asset_status(http: Any, stack: Any, user: str, asset_id: str) -> str:
    async with http.get(f"{stack.base_url}/v1/assets/{asset_id}",
                        headers=auth(stack.token(user, "creator"))) as r:
        assert r.status == 200
        return str((await r.json())["status"])


async def test_a_replay_after_promotion_gets_no_new_upload_url(http, stack):
    user, key = f"replay-{uuid.uuid4().hex[:8]}", f"replay-{uuid.uuid4()}"
    status, first = await request_upload(http, stack, user, key)
    assert status == 202 and first["command"]["status"] == "accepted", first
    assert (await put(http, first["upload_url"], CLIP))[0] == 200
    async with http.post(f"{stack.base_url}/v1/assets/{first['asset_id']}/complete",
                         headers=auth(stack.token(user, "creator"), Prefer="wait=20")) as r:
        done = await r.json()
        assert r.status == 202 and done["command"]["status"] == "accepted", done
    deadline = time.monotonic() + 60
    while (now := await asset_status(http, stack, user, first["asset_id"])) not in PAST_UPLOAD:
        assert time.monotonic() < deadline, now
        await asyncio.sleep(0.2)

    status, again = await request_upload(http, stack, user, key)
    assert status == 202, again
    assert again["asset_id"] == first["asset_id"] and again["command_id"] == first["command_id"]
    assert again["command"]["status"] == "accepted"
    assert again["upload_url"] is None and "headers" not in again and "method" not in again
    assert again["asset_status"] in PAST_UPLOAD
    assert again["expires_at"] == first["expires_at"]
    # Nothing was re-applied: the asset went on from where it was.
    assert await asset_status(http, stack, user, first["asset_id"]) in PAST_UPLOAD


async def test_a_replay_while_awaiting_the_upload_keeps_the_first_deadline(http, stack):
    user, key = f"again-{uuid.uuid4().hex[:8]}", f"again-{uuid.uuid4()}"
    status, first = await request_upload(http, stack, user, key)
    assert status == 202 and first["command"]["projected"] is True, first
    await asyncio.sleep(1.1)  # so that a deadline counted from the retry would be later
    status, again = await request_upload(http, stack, user, key)
    assert status == 202 and again["asset_id"] == first["asset_id"], again
    assert again["expires_at"] == first["expires_at"]
    expires_in = int(parse_qs(urlsplit(again["upload_url"]).query)["X-Amz-Expires"][0])
    assert expires_in < stack.settings().upload_url_ttl_s
    assert (await put(http, again["upload_url"], CLIP))[0] == 200
    assert await asset_status(http, stack, user, first["asset_id"]) == "awaiting_upload"

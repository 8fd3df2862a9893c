"""Signed stream URLs stop playing when their holder may no longer see the asset, on the real
embedded stack: a real upload transcoded by the real pipeline, URLs from ``/playback``, segments
fetched through the stream route. Made private, an asset stops playing for every URL issued
while others could read it (its owner's too) and keeps playing for the owner-audience URLs
issued since; deleted, it plays for no URL. Refusals are 404 ``ASSET_NOT_FOUND``, as GET's, from
the first request after the change is in the read model (the route reads it uncached)."""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from yarl import URL

from medialog.signing import SigningKeys, stream_url

pytestmark = pytest.mark.integration

READY_TIMEOUT_S = 180  # shared 2-core machines: generous


def auth(token: str, **extra: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", **extra}


class Caller:
    def __init__(self, http: aiohttp.ClientSession, stack: Any, user: str | None,
                 *roles: str) -> None:
        self.http, self.base, self.user = http, stack.base_url, user
        self.headers = auth(stack.token(user, *(roles or ("creator",)))) if user else {}

    async def call(self, method: str, path: str, *, wait: bool = False,
                   **kw: Any) -> tuple[int, Any]:
        headers = {**self.headers, **({"Prefer": "wait=20"} if wait else {})}
        async with self.http.request(method, self.base + path, headers=headers, **kw) as r:
            return r.status, await r.json()

    async def playback(self, asset_id: str) -> tuple[int, Any]:
        return await self.call("GET", f"/v1/assets/{asset_id}/playback")

    async def set_visibility(self, asset_id: str, visibility: str) -> None:
        status, body = await self.call("PATCH", f"/v1/assets/{asset_id}", wait=True,
                                       json={"visibility": visibility})
        assert status == 202 and body["command"]["projected"] is True, body


async def ready_asset(http: aiohttp.ClientSession, stack: Any, owner: str, clip: Path) -> str:
    """Upload ``clip``, complete it and wait until the pipeline made it ready."""
    me = Caller(http, stack, owner)
    status, up = await me.call("POST", "/v1/uploads", wait=True, json={
        "filename": clip.name, "content_type": "video/mp4", "size_bytes": clip.stat().st_size,
        "title": "revocation clip"})
    assert status == 202, up
    async with http.put(up["upload_url"], data=clip.read_bytes(), headers=up["headers"]) as r:
        assert r.status == 200, await r.text()
    asset_id = str(up["asset_id"])
    status, done = await me.call("POST", f"/v1/assets/{asset_id}/complete", wait=True)
    assert status == 202 and done["command"]["status"] == "accepted", done
    deadline = time.monotonic() + READY_TIMEOUT_S
    while (asset := (await me.call("GET", f"/v1/assets/{asset_id}"))[1])["status"] != "ready":
        assert asset["status"] in ("uploaded", "promoted", "processing"), asset
        assert time.monotonic() < deadline, asset
        await asyncio.sleep(0.2)
    return asset_id


@pytest.fixture(scope="module")
async def shared(stack: Any, clip: Path) -> dict[str, str]:
    """One ready, public asset for the tests that leave it public again."""
    owner = f"rita-{uuid.uuid4().hex[:8]}"
    async with aiohttp.ClientSession() as http:
        return {"asset_id": await ready_asset(http, stack, owner, clip), "owner": owner}


async def fetch(http: aiohttp.ClientSession, url: str) -> tuple[int, str | None]:
    """The status of a GET of ``url`` and, for an error, its code."""
    async with http.get(URL(url, encoded=True)) as r:
        if r.status < 400:
            await r.read()
            return r.status, None
        return r.status, (await r.json())["error"]["code"]


async def segment_url(http: aiohttp.ClientSession, hls_url: str) -> str:
    """The first segment of the first variant, as a player resolves the playlists' URIs."""
    async def first_uri(url: str) -> str:
        async with http.get(URL(url, encoded=True)) as r:
            assert r.status == 200, await r.text()
            lines = (await r.text()).splitlines()
        return next(line for line in lines if line and not line.startswith("#"))
    variant = str(URL(hls_url, encoded=True).join(URL(await first_uri(hls_url), encoded=True)))
    return str(URL(variant, encoded=True).join(URL(await first_uri(variant), encoded=True)))


def prefix(url: str) -> str:
    """``/v1/stream/{signed subject}/``: the audience the URL was issued for."""
    return "/".join(URL(url, encoded=True).raw_path.split("/")[:4]) + "/"


async def test_made_private_an_asset_stops_playing_for_urls_issued_while_it_was_public(
        http, stack, shared):
    asset_id = shared["asset_id"]
    owner, admin = Caller(http, stack, shared["owner"]), Caller(http, stack, "root", "admin")
    anyone = Caller(http, stack, None)
    status, anon = await anyone.playback(asset_id)
    assert status == 200, anon
    status, owners_public = await owner.playback(asset_id)
    assert status == 200, owners_public
    assert prefix(anon["hls_url"]) == prefix(owners_public["hls_url"]) == \
        f"/v1/stream/{asset_id}/"  # issued while anyone may read it: the public audience
    anon_segment = await segment_url(http, anon["hls_url"])
    owners_segment = await segment_url(http, owners_public["hls_url"])
    for url in (anon_segment, anon["hls_url"], anon["thumbnail_url"], owners_segment):
        assert await fetch(http, url) == (200, None), url

    await owner.set_visibility(asset_id, "private")
    try:
        refused = (404, "ASSET_NOT_FOUND")
        for url in (anon_segment, anon["hls_url"], anon["thumbnail_url"], owners_segment):
            assert await fetch(http, url) == refused, url
        # The audience is signed: a URL cannot be turned into an owner's.
        forged = anon_segment.replace(f"/{asset_id}/", f"/{asset_id}_owner/", 1)
        assert await fetch(http, forged) == (403, "SIGNATURE_INVALID")

        # Issued now, to the owner or an admin, a URL is of the owner audience: it plays, and
        # no shared cache may keep what it serves. Anyone else gets no URL at all.
        assert (await anyone.playback(asset_id))[0] == 404
        status, owners_private = await owner.playback(asset_id)
        assert status == 200, owners_private
        assert prefix(owners_private["hls_url"]) == f"/v1/stream/{asset_id}_owner/"
        status, admins = await admin.playback(asset_id)
        assert status == 200 and prefix(admins["hls_url"]) == f"/v1/stream/{asset_id}_owner/"
        private_segment = await segment_url(http, owners_private["hls_url"])
        async with http.get(URL(private_segment, encoded=True)) as r:
            assert r.status == 200 and len(await r.read()) > 0
            assert r.headers["Cache-Control"].startswith("private, ")
        assert await fetch(http, await segment_url(http, admins["hls_url"])) == (200, None)
    finally:  # shared: public again for the next tests
        await owner.set_visibility(asset_id, "public")
    # Public again: the URLs issued before play again (until they expire), the owner's too.
    for url in (anon_segment, owners_segment, private_segment):
        assert await fetch(http, url) == (200, None), url


async def test_deleted_an_asset_plays_for_no_url(http, stack, clip):
    owner_id = f"dana-{uuid.uuid4().hex[:8]}"
    owner = Caller(http, stack, owner_id)
    asset_id = await ready_asset(http, stack, owner_id, clip)
    status, anon = await Caller(http, stack, None).playback(asset_id)
    assert status == 200, anon
    # What /playback hands the owner while the asset is private (the signature is the stack's
    # own key): it plays while the asset exists, whatever its visibility.
    keys = SigningKeys.parse(f"k1:{stack.state()['signing_secret']}")
    owners = stream_url(stack.base_url, keys, f"{asset_id}_owner", int(time.time()) + 600)
    urls = [await segment_url(http, anon["hls_url"]), await segment_url(http, owners),
            anon["thumbnail_url"], owners]
    for url in urls:
        assert await fetch(http, url) == (200, None), url

    status, body = await owner.call("DELETE", f"/v1/assets/{asset_id}", wait=True)
    assert status == 202 and body["command"]["projected"] is True, body
    for url in urls:
        assert await fetch(http, url) == (404, "ASSET_NOT_FOUND"), url


async def test_a_signed_subject_that_names_no_audience_is_not_found(http, stack, shared):
    """Only ``{asset}`` and ``{asset}_owner`` are issued; any other signed segment names no
    asset, even with a valid signature."""
    keys = SigningKeys.parse(f"k1:{stack.state()['signing_secret']}")
    url = stream_url(stack.base_url, keys, f"{shared['asset_id']}_admin", int(time.time()) + 60)
    assert await fetch(http, url) == (404, "ASSET_NOT_FOUND")

"""``medialog verify|replay analytics`` through the api of the process that owns ClickHouse
(``medialog.api.read_models``): chDB allows one process per path, so while ``medialog dev`` runs
the CLI asks it to do the work. It starts a job with an admin token of this medialog's own key,
polls it (which keeps its lease) advancing a ``Progress``, and cancels it when interrupted; a
killed CLI stops polling, and the api cancels the job when its lease runs out."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any

import aiohttp

from medialog.config import Settings
from medialog.issuer import load_private_key, mint_token
from medialog.runtime.progress import Progress

POLL_S = 0.5
PREFIX = "/v1/admin/read-models"
API_URL_FILE = "api.url"  # in the data dir while ``medialog dev`` serves: its api's base URL


class JobFailed(RuntimeError):
    """The job could not fold the log, was cancelled, or the api refused it."""


def admin_token(settings: Settings, ttl_s: int = 24 * 3600) -> str:
    key_file = settings.jwt_private_key_file or settings.data_dir / "keys" / "jwt-private.pem"
    if not key_file.exists():
        raise JobFailed(f"no signing key at {key_file} to call the api with "
                        "(MEDIALOG_JWT_PRIVATE_KEY_FILE)")
    return mint_token(load_private_key(key_file), user="medialog-cli", roles=["admin"],
                      issuer=settings.jwt_issuer, audience=settings.jwt_audience, ttl_s=ttl_s)


def api_url(settings: Settings) -> str:
    """The api of the process holding the store: ``MEDIALOG_PUBLIC_URL`` if set, else the one
    ``medialog dev`` noted in the data dir, else ``MEDIALOG_API_HOST``/``MEDIALOG_API_PORT``."""
    noted = settings.data_dir / API_URL_FILE
    if not settings.public_url and noted.exists():
        return noted.read_text().strip()
    return settings.base_url


async def run_job(settings: Settings, kind: str, check_only: bool,
                  progress: Callable[[int], Progress] | None = None) -> dict[str, Any]:
    """Run a ``kind`` job ("verify" or "replay") on the api (``api_url``) to its end; its report
    (``responses.ReadModelReport``). Raises ``JobFailed``."""
    url = api_url(settings)
    base = url + PREFIX
    headers = {"Authorization": f"Bearer {admin_token(settings)}"}
    body = {"check_only": True} if check_only else None
    async with aiohttp.ClientSession(headers=headers,
                                     timeout=aiohttp.ClientTimeout(total=30)) as http:
        try:
            async with http.post(f"{base}/analytics/{kind}", json=body) as r:
                job = await _answer(r)
        except aiohttp.ClientError as exc:
            raise JobFailed(f"the api at {url} did not answer ({exc}); it owns the chDB "
                            "store (MEDIALOG_API_PORT, MEDIALOG_PUBLIC_URL)") from exc
        url = f"{base}/jobs/{job['job_id']}"
        shown: Progress | None = None
        try:
            while job["status"] == "running":
                await asyncio.sleep(POLL_S)
                async with http.get(url) as r:
                    job = await _answer(r)
                done, total = job["progress"]["done"], job["progress"]["total"]
                if progress is not None and total is not None:
                    if shown is None:
                        shown = progress(total)
                    shown.advance(done - shown.done)
        except BaseException:
            with contextlib.suppress(aiohttp.ClientError, asyncio.TimeoutError):
                await asyncio.shield(_cancel(http, url))
            raise
        finally:
            if shown is not None:
                shown.close()
    if job["status"] != "done":
        raise JobFailed(job.get("error") or f"the {kind} job was {job['status']}")
    report: dict[str, Any] = job["report"]
    return report


async def _cancel(http: aiohttp.ClientSession, url: str) -> None:
    async with http.delete(url) as r:
        await r.read()


async def _answer(r: aiohttp.ClientResponse) -> dict[str, Any]:
    body: dict[str, Any] = await r.json(content_type=None)
    if r.status >= 400:
        error = body.get("error", {})
        raise JobFailed(f"the api answered {r.status} {error.get('code')}: "
                        f"{error.get('message')}")
    return body

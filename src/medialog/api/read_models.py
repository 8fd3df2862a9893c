"""Admin jobs over the ClickHouse read model: ``POST /v1/admin/read-models/analytics/verify`` and
``…/replay`` start one in the process that owns ClickHouse, ``GET /v1/admin/read-models/jobs/
{job_id}`` says how far it is (and, once ended, its report), ``DELETE`` cancels it. Why here:
chDB is in-process and one process per path, so ``medialog verify|replay analytics`` cannot open
the store ``medialog dev`` holds; it asks this process to do the work (``cli.py``).

The work is what the composition root registered under ``keys.READ_MODEL_WORK`` (the api does
not import projections). One job at a time per process (409 ``READ_MODEL_JOB_RUNNING``). A job
is leased to its caller: one nobody asked about for ``LEASE_S`` is cancelled, so that a killed
CLI (or a stray request) never leaves a replay to swap later unseen. Cancelled before its swap,
a replay changes nothing live; the swap itself is never cut (``projections.clickhouse.replay``).
Ended jobs are kept (the last ``KEPT``) for their reports."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from aiohttp import web
from pydantic import Field

from medialog.api import keys
from medialog.api.auth.principal import ADMIN, require
from medialog.api.requests import principal, read_json
from medialog.domain.errors import Conflict, NotFound, Unavailable
from medialog.domain.schema import Body, parse
from medialog.ids import random_uuid

log = logging.getLogger(__name__)
LEASE_S = 15.0  # a job nobody asked about this long is cancelled
KEPT = 20  # ended jobs kept for their reports


class ReplayRequest(Body):
    """``POST /v1/admin/read-models/analytics/replay`` (the body is optional)."""

    check_only: bool = Field(False, description="build and compare, but do not swap")


@dataclass
class Job:
    """One verify or replay: how far (``done`` of ``total`` records, ``total`` None until
    known), then its report or error."""

    job_id: str
    kind: str
    check_only: bool
    started_at: datetime
    asked_at: float  # monotonic: the lease
    status: str = "running"  # running | done | failed | cancelled
    done: int = 0
    total: int | None = None
    report: dict[str, Any] | None = None
    error: str | None = None
    task: asyncio.Task[None] | None = field(default=None, repr=False)

    def body(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "job_id": self.job_id, "kind": self.kind, "check_only": self.check_only,
            "status": self.status,
            "started_at": self.started_at.isoformat().replace("+00:00", "Z"),
            "progress": {"done": self.done, "total": self.total}}
        if self.report is not None:
            out["report"] = self.report
        if self.error is not None:
            out["error"] = self.error
        return out


class _Meter:
    """A job's progress: what the work's fold advances."""

    def __init__(self, job: Job, total: int) -> None:
        self.job = job
        job.total, job.done = total, 0

    def advance(self, n: int) -> None:
        self.job.done += n

    def close(self) -> None:
        return None


class Jobs:
    """The jobs of this process."""

    def __init__(self, work: keys.ReadModelWork) -> None:
        self._work = work
        self._jobs: dict[str, Job] = {}

    def running(self) -> Job | None:
        return next((j for j in self._jobs.values() if j.status == "running"), None)

    def start(self, kind: str, check_only: bool) -> Job:
        if (busy := self.running()) is not None:
            raise Conflict(f"a read-model job runs already ({busy.job_id})",
                           code="READ_MODEL_JOB_RUNNING", details=[{"job_id": busy.job_id}])
        job = Job(random_uuid(), kind, check_only, datetime.now(UTC), time.monotonic())
        ended = [k for k, j in self._jobs.items() if j.status != "running"]
        for k in ended[:max(0, len(ended) - KEPT + 1)]:
            del self._jobs[k]
        self._jobs[job.job_id] = job
        job.task = asyncio.create_task(self._run(job), name=f"read-model {kind}")
        return job

    def get(self, job_id: str) -> Job:
        job = self._jobs.get(job_id)
        if job is None:
            raise NotFound("no such read-model job", code="READ_MODEL_JOB_NOT_FOUND")
        job.asked_at = time.monotonic()
        return job

    async def cancel(self, job_id: str) -> Job:
        job = self.get(job_id)
        if job.task is not None and not job.task.done():
            job.task.cancel()
            await asyncio.wait([job.task])
        return job

    async def close(self) -> None:
        for job in list(self._jobs.values()):
            await self.cancel(job.job_id)

    async def _run(self, job: Job) -> None:
        work = asyncio.ensure_future(
            self._work(job.kind, job.check_only, lambda total: _Meter(job, total)))
        try:
            while not work.done():
                await asyncio.wait([work], timeout=1.0)
                if not work.done() and time.monotonic() - job.asked_at > LEASE_S:
                    log.warning("read-model job %s: nobody asked for %gs, cancelling it",
                                job.job_id, LEASE_S)
                    work.cancel()
                    await asyncio.wait([work])
            job.report = work.result()
            job.status = "done"
        except asyncio.CancelledError:
            work.cancel()
            await asyncio.wait([work])
            job.status = "cancelled"
        except RuntimeError as exc:  # VerifyError: the log could not be folded
            job.status, job.error = "failed", str(exc)
        except Exception as exc:
            log.exception("read-model job %s failed", job.job_id)
            job.status, job.error = "failed", f"{type(exc).__name__}: {exc}"


JOBS = web.AppKey("read_model_jobs", Jobs)


async def jobs_ctx(app: web.Application) -> AsyncIterator[None]:
    """The process's jobs, if it has work registered; a job running at shutdown is cancelled
    (its shadow dropped)."""
    work = app.get(keys.READ_MODEL_WORK)
    if work is None:
        yield
        return
    jobs = app[JOBS] = Jobs(work)
    yield
    with contextlib.suppress(Exception):
        await jobs.close()


def _jobs(request: web.Request) -> Jobs:
    jobs = request.app.get(JOBS)
    if jobs is None:
        raise Unavailable("this process does not own the analytics store",
                          code="ANALYTICS_UNAVAILABLE")
    return jobs


async def start_verify(request: web.Request) -> web.Response:
    """Compare the live ClickHouse model with a fresh fold of the log (writes only into a
    shadow database). Poll the job; one nobody polls for 15 s is cancelled."""
    require(await principal(request), ADMIN)
    job = _jobs(request).start("verify", False)
    return web.json_response(job.body(), status=202)


async def start_replay(request: web.Request) -> web.Response:
    """Rebuild the ClickHouse model from the log in a shadow database, compare, and swap it in
    atomically (``check_only``: compare only). Poll the job; one nobody polls for 15 s is
    cancelled, changing nothing live."""
    require(await principal(request), ADMIN)
    body = await read_json(request) if request.body_exists else None
    check_only = False if body is None else parse(
        ReplayRequest, body, message="invalid replay request").check_only
    job = _jobs(request).start("replay", check_only)
    return web.json_response(job.body(), status=202)


async def get_job(request: web.Request) -> web.Response:
    require(await principal(request), ADMIN)
    return web.json_response(_jobs(request).get(request.match_info["job_id"]).body())


async def cancel_job(request: web.Request) -> web.Response:
    """Cancel a running job (an ended one is left as it is)."""
    require(await principal(request), ADMIN)
    job = await _jobs(request).cancel(request.match_info["job_id"])
    return web.json_response(job.body())

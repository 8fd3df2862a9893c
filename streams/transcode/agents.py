"""The transcoder (role "workers"): three agents around ``jobs.transcode``.

- **dispatcher** (events.asset): each ``medialog.asset.transcode_requested`` becomes a job
  message (attempt 1) on ``jobs.transcode``, key = asset id.
- **transcoder** (jobs.transcode): runs a job attempt (``JobRunner``), at most
  ``transcode_concurrency`` at once. A failed attempt goes to ``jobs.transcode.retry`` with the
  time it is due (exponential backoff); the last allowed attempt goes to
  ``jobs.transcode.dead-letter`` and the asset actor gets FailTranscode (asset ``failed``). A job
  the actor refuses (stale, asset deleted) just stops.
- **retry** (jobs.transcode.retry): sleeps until the retry is due (at most
  ``transcode_backoff_max_s``), then puts the attempt back on ``jobs.transcode``.

Positions (docs/architecture.md, rule 2): each agent stores its offset in PostgreSQL
(``medialog.tracking``, consumers ``worker.transcode-dispatch``, ``worker.transcoder``,
``worker.transcode-retry``) only after its effects were acknowledged, and skips what is at or
below it. A job that was running when the process died is re-delivered (Faust commits only what
the agent finished) and re-run from scratch; the job's deterministic command ids make that
change nothing twice.

A job blocks nothing but its own agent instance: heartbeats run in the background and Faust
keeps polling (``broker_max_poll_interval`` bounds the time between polls, not between acks),
so a long job does not get the worker kicked out of the group. Faust warns (it does not act)
when a partition's commit has not moved for ``broker_commit_livelock_soft_timeout`` (5 min)."""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable
from datetime import UTC, datetime, timedelta
from typing import Any

import faust
from pydantic import ValidationError as PydanticValidationError

from medialog.domain.commands import FailTranscode
from medialog.domain.events import TranscodeRequested
from medialog.envelope import decode_event
from medialog.runtime.deps import Deps
from medialog.runtime.handle_once import advance, already_handled
from medialog.runtime.metrics import TRANSCODE_DEAD_LETTERED, TRANSCODE_JOBS_WAITING
from medialog.runtime.retry import retrying
from medialog.tracking import Position
from streams.app import agent, position, raw_topic
from streams.transcode.ffmpeg_runner import TranscodeError
from streams.transcode.jobs import (
    DeadLetter,
    RetryJob,
    TranscodeJob,
    Watermark,
    backoff_s,
    command_id,
)
from streams.transcode.runner import JobRefused, JobRunner
from streams.worker import asset_commands

log = logging.getLogger(__name__)

DISPATCH = "worker.transcode-dispatch"
TRANSCODER = "worker.transcoder"
RETRY = "worker.transcode-retry"
_HEADERS = [("content-type", b"application/json")]
_MARK = TranscodeRequested.TYPE.encode()


def _describe(exc: BaseException) -> tuple[str, str | None, str]:
    """(reason, rung, stderr tail) of a failed attempt, for the retry, the DLQ and the asset."""
    if isinstance(exc, TranscodeError):
        return exc.reason, exc.rung, exc.stderr_tail
    return f"{type(exc).__name__}: {exc}"[:500], None, ""


class TranscodeWorker:
    def __init__(self, app: faust.App, deps: Deps) -> None:
        s = deps.settings
        self.app, self.deps, self.settings = app, deps, s
        self.jobs_topic = "jobs.transcode"
        self.retry_topic = "jobs.transcode.retry"
        self.dead_topic = "jobs.transcode.dead-letter"
        self.watermark = Watermark()
        self.held: set[tuple[str, int]] = set()  # partitions of jobs.transcode assigned to us
        self.next_job: dict[tuple[str, int], int] = {}  # per partition: after the last begun
        self.runner = JobRunner(s, deps.pool, deps.blobs,
                                asset_commands(deps.publisher),
                                asyncio.Semaphore(s.transcode_concurrency), deps.notifier)

    async def _send(self, topic: str, key: str, value: bytes) -> None:
        await self.deps.publisher.append(topic, key, [value], _HEADERS)

    async def _handled(self, consumer: str, p: Position) -> bool:
        return await already_handled(self.deps.pool, consumer, p)

    async def _store(self, consumer: str, *positions: Position) -> None:
        await advance(self.deps.pool, consumer, *positions)

    # -- dispatcher ----------------------------------------------------------------------------
    async def dispatch(self, batch: list[tuple[Position, bytes]]) -> None:
        """Queue the batch's transcode requests, then store its offsets. No transaction is held
        while the broker is waited for: a dispatcher that dies in between (or a second one
        during a rebalance) queues a job twice, as a re-delivered job, which changes nothing
        twice (a job already over is skipped; its commands have deterministic ids)."""
        for p, raw in batch:
            if _MARK not in raw or await self._handled(DISPATCH, p):  # most events: no lookup
                continue
            try:
                _, payload = decode_event(raw)
            except ValueError:
                log.error("dispatcher: skipping undecodable event at %s", p)
                continue
            if isinstance(payload, TranscodeRequested):
                job = TranscodeJob(job_id=payload.job_id, asset_id=payload.asset_id,
                                   master_key=payload.master_key, kind=payload.kind,
                                   rungs=payload.rungs)
                await retrying(f"queueing job {job.job_id}", functools.partial(
                    self._send, self.jobs_topic, job.asset_id, job.encode()))
                log.info("transcode job %s of %s queued", job.job_id, job.asset_id)
        await self._store(DISPATCH, *(p for p, _ in batch))

    # -- transcoder ----------------------------------------------------------------------------
    async def transcode(self, p: Position, raw: bytes) -> None:
        if await self._handled(TRANSCODER, p):
            return
        tp = (p.topic, p.partition)
        self.watermark.begin(tp, p.offset)
        self.next_job[tp] = max(self.next_job.get(tp, 0), p.offset + 1)
        try:
            job = TranscodeJob.model_validate_json(raw)
        except PydanticValidationError:
            log.error("transcoder: dropping undecodable job at %s", p)
        else:
            await self._attempt(job)  # a cancelled job never ends: its offset is not stored
        safe = self.watermark.end(tp, p.offset)
        if safe is not None:
            await self._store(TRANSCODER, Position(p.topic, p.partition, safe))

    def jobs_waiting(self) -> int:
        """Jobs on the partitions of ``jobs.transcode`` assigned to this process after the last
        one it began, by the end offsets of Faust's last fetch (``TRANSCODE_JOBS_WAITING``). A
        partition counts from its first job begun here: a restart begins one at once."""
        ends = self.app.monitor.tp_end_offsets
        return sum(max(0, end - self.next_job.get(tp, end))
                   for tp, end in list(ends.items()) if (tp.topic, tp.partition) in self.held)

    def assigned(self, partitions: set[faust.types.TP]) -> None:
        """Faust's new assignment (every partition, after a revocation of the old ones)."""
        jobs = self.settings.topic(self.jobs_topic)
        self.held = {(tp.topic, tp.partition) for tp in partitions if tp.topic == jobs}
        self.next_job = {tp: n for tp, n in self.next_job.items() if tp in self.held}

    async def _attempt(self, job: TranscodeJob) -> None:
        try:
            if await self.runner.already_over(job):
                log.info("transcode job %s of %s was already over", job.job_id, job.asset_id)
                return
            log.info("transcode job %s of %s: attempt %d", job.job_id, job.asset_id, job.attempt)
            if await self._stopping_first(self.runner.run(job)):
                await self._hand_back(job)
        except JobRefused as exc:
            log.info("transcode job %s of %s stopped: %s", job.job_id, job.asset_id, exc)
            if exc.code == "ASSET_DELETED":
                removed = await retrying(f"removing previews of {job.asset_id}",
                                         lambda: self.runner.remove_previews(job.asset_id))
                log.info("transcode job %s: removed %d previews of deleted %s", job.job_id,
                         removed, job.asset_id)
        except Exception as exc:  # every failure of an attempt is retried, then dead-lettered
            failure = exc  # the name ``exc`` ends with this block; the retried call keeps it
            try:  # transient broker trouble is waited out: the failure must reach the log
                await retrying(f"recording the failure of job {job.job_id}",
                               lambda: self._failed(job, failure))
            except Exception:
                log.exception("transcode job %s of %s: its failure could not be recorded: %s",
                              job.job_id, job.asset_id, job.encode().decode())

    async def _stopping_first(self, aw: Awaitable[Any]) -> bool:
        """Await ``aw`` unless the app starts stopping first; then cancel it and return True.
        (Faust would otherwise wait for a running job, however long, before it stops.)"""
        task = asyncio.ensure_future(aw)
        stop = asyncio.ensure_future(self.app.wait_until_stopped())
        try:
            await asyncio.wait({task, stop}, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            task.cancel()
            raise
        finally:
            stop.cancel()
        if task.done():
            task.result()
            return False
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        return True

    async def _hand_back(self, job: TranscodeJob) -> None:
        """Stopping mid-job: put the same attempt back on the queue (it re-runs identically);
        Faust acks the message we got when the agent moves on."""
        try:
            await self._send(self.jobs_topic, job.asset_id, job.encode())
            log.info("stopping: transcode job %s of %s handed back", job.job_id, job.asset_id)
        except Exception:
            log.exception("stopping: transcode job %s of %s could not be handed back: %s",
                          job.job_id, job.asset_id, job.encode().decode())

    async def _failed(self, job: TranscodeJob, exc: Exception) -> None:
        reason, rung, tail = _describe(exc)
        now = datetime.now(UTC)
        s = self.settings
        if job.attempt < s.transcode_max_attempts:
            wait = backoff_s(job.attempt, s.transcode_backoff_s, s.transcode_backoff_max_s)
            retry = RetryJob(**{**job.model_dump(), "attempt": job.attempt + 1},
                             not_before=now + timedelta(seconds=wait), last_reason=reason,
                             last_rung=rung)
            await self._send(self.retry_topic, job.asset_id, retry.model_dump_json().encode())
            log.warning("transcode job %s of %s: attempt %d failed (%s%s); retry in %.1fs",
                        job.job_id, job.asset_id, job.attempt, reason,
                        f" [{rung}]" if rung else "", wait)
            return
        dead = DeadLetter(id=command_id(job.job_id, job.attempt, "dead-letter"), job=job,
                          attempts=job.attempt, reason=reason, rung=rung, stderr_tail=tail,
                          failed_at=now)
        await self._send(self.dead_topic, job.asset_id, dead.model_dump_json().encode())
        TRANSCODE_DEAD_LETTERED.inc()
        await self.runner.command(job, "fail", FailTranscode(
            job_id=job.job_id, reason=reason, rung=rung, attempts=job.attempt))
        log.error("transcode job %s of %s failed for good after %d attempts: %s",
                  job.job_id, job.asset_id, job.attempt, reason)

    # -- retry ---------------------------------------------------------------------------------
    async def retry(self, p: Position, raw: bytes) -> None:
        if await self._handled(RETRY, p):
            return
        try:
            retry = RetryJob.model_validate_json(raw)
        except PydanticValidationError:
            log.error("retry: dropping undecodable retry at %s", p)
        else:
            due = (retry.not_before - datetime.now(UTC)).total_seconds()
            wait = min(max(due, 0.0), self.settings.transcode_backoff_max_s)
            await self._stopping_first(asyncio.sleep(wait))  # stopping: re-queue it early
            job = retry.job()
            await retrying(f"re-queueing job {job.job_id}",
                           lambda: self._send(self.jobs_topic, job.asset_id, job.encode()))
        await self._store(RETRY, p)


def register(app: faust.App, deps: Deps) -> None:
    s = deps.settings
    worker = TranscodeWorker(app, deps)
    TRANSCODE_JOBS_WAITING.set_function(worker.jobs_waiting)

    @app.on_partitions_assigned.connect  # type: ignore[arg-type]
    async def assigned(_: faust.App, assigned: set[faust.types.TP], **__: Any) -> None:
        worker.assigned(assigned)

    def topic(name: str) -> faust.TopicT:
        return raw_topic(app, s, name)

    @agent(app, topic("events.asset"), name="transcode-dispatcher")
    async def dispatcher(stream: faust.StreamT[bytes]) -> None:
        async for batch in stream.take_events(200, within=0.2):  # type: ignore[attr-defined]
            await worker.dispatch([(position(e), e.value) for e in batch])

    @agent(app, topic("jobs.transcode"), name="transcoder", concurrency=s.transcode_concurrency)
    async def transcoder(stream: faust.StreamT[bytes]) -> None:
        async for event in stream.events():
            await worker.transcode(position(event), event.value)

    @agent(app, topic("jobs.transcode.retry"), name="transcode-retry")
    async def retrier(stream: faust.StreamT[bytes]) -> None:
        async for event in stream.events():
            await worker.retry(position(event), event.value)

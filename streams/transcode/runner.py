"""One attempt of a transcode job: the master from S3 → the pipeline (``pipeline``) → the
previews to S3, with the asset actor told each step: StartTranscode, RecordRendition per rung
(as soon as the rung is uploaded, so playback starts at the lowest rung), CompleteTranscode.

Re-running an attempt (a crash, a re-delivered message) repeats it exactly: the commands carry
ids derived from (job, attempt, step), which the actor applies once, and the objects written are
the same keys of the previews bucket. The masters bucket is only read."""

from __future__ import annotations

import asyncio
import logging
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import asyncpg

from medialog import outcomes
from medialog.config import Settings
from medialog.domain.commands import CompleteTranscode, RecordRendition, StartTranscode
from medialog.domain.errors import Unavailable
from medialog.domain.layout import (
    HLS_DIR,
    MASTER_PLAYLIST,
    PLAYLIST,
    THUMBNAIL,
    content_type_for,
    preview_key,
    previews_prefix,
    rendition_path,
    rung_of_uri,
)
from medialog.outcomes import Outcome
from medialog.runtime.notifier import Notifier
from medialog.storage import BlobStore
from streams.transcode.jobs import (
    TranscodeJob,
    command_id,
    probe_summary,
    rendition_of,
    terminal_command_ids,
)
from streams.transcode.ladder import Rung, plan_ladder
from streams.transcode.pipeline import TranscodeResult, transcode
from streams.transcode.probe import probe
from streams.worker import SendCommand, system_meta

log = logging.getLogger(__name__)

UPLOAD_PARALLELISM = 8
OUTCOME_TIMEOUT_S = 120.0  # the actor restarting (a group rejoin) can take a session timeout


class JobRefused(Exception):
    """The asset actor refused the job (not its current job, asset deleted…): stop, no retry.
    ``ASSET_DELETED``: the janitor may have emptied the previews before some of our uploads, so
    whoever catches this removes them again (``remove_previews``)."""

    def __init__(self, code: str | None, message: str | None) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code


@dataclass
class JobRunner:
    settings: Settings
    pool: asyncpg.Pool
    blobs: BlobStore
    send: SendCommand
    semaphore: asyncio.Semaphore
    notifier: Notifier

    async def command(self, job: TranscodeJob, step: str, command: Any) -> str:
        """Send ``command`` for ``job`` (acks=all) under the step's deterministic id."""
        cid = command_id(job.job_id, job.attempt, step)
        await self.send(job.asset_id, command, system_meta(cid, "transcoder", job.job_id))
        return cid

    async def decided(self, cid: str, timeout_s: float = OUTCOME_TIMEOUT_S) -> Outcome:
        """The actor's outcome of command ``cid``, once decided: recording it notifies, so this
        is woken rather than polling."""
        async def fetch() -> Outcome:
            async with self.pool.acquire() as conn:
                return await outcomes.fetch(conn, cid)

        result = await self.notifier.wait_until(fetch, lambda o: o.status != "pending",
                                                timeout_s)
        if result.status == "pending":
            raise Unavailable(f"the asset actor did not decide {cid} in {timeout_s:g}s",
                              code="ACTOR_TIMEOUT")
        return result

    async def _accepted(self, cid: str) -> None:
        verdict = await self.decided(cid)
        if verdict.status == "rejected":
            raise JobRefused(verdict.error_code, verdict.error_message)

    async def already_over(self, job: TranscodeJob) -> bool:
        """True if the job's completion or failure was already decided (by any attempt)."""
        attempts = max(job.attempt, self.settings.transcode_max_attempts)
        ids = terminal_command_ids(job.job_id, attempts)
        async with self.pool.acquire() as conn:
            found = await conn.fetchval(
                "SELECT count(*) FROM command_outcomes WHERE command_id = ANY($1::text[])", ids)
        return bool(found)

    async def run(self, job: TranscodeJob) -> None:
        """Run the attempt. Raises JobRefused, or what failed (TranscodeError, S3, Kafka…)."""
        work = self.settings.work_dir / f"{job.job_id}.{job.attempt}"
        await asyncio.to_thread(shutil.rmtree, work, True)
        try:
            await self._run(job, work)
        finally:
            await asyncio.to_thread(shutil.rmtree, work, True)

    async def _run(self, job: TranscodeJob, work: Path) -> None:
        s = self.settings
        started = time.monotonic()
        src = work / f"source{PurePosixPath(job.master_key).suffix.lower()}"
        src.parent.mkdir(parents=True, exist_ok=True)
        await self.blobs.download_file(s.bucket_masters, job.master_key, src)
        info = await probe(src, s.ffprobe_bin, timeout_s=s.transcode_timeout_s)
        rungs = job.rungs or [r.name for r in plan_ladder(info)]
        start = await self.command(job, "start", StartTranscode(
            job_id=job.job_id, attempt=job.attempt, rungs=rungs))
        # Encoding starts while the actor decides (a Kafka round trip saved on the time to the
        # first playable rung); nothing is uploaded before it accepted, and a refusal kills ffmpeg.
        accepted = asyncio.create_task(self._accepted(start))
        previews = _Previews(self, job, work / "out", set(rungs), accepted)
        encoding = asyncio.create_task(transcode(
            src, work / "out", ffmpeg_bin=s.ffmpeg_bin, ffprobe_bin=s.ffprobe_bin,
            only_rungs=set(job.rungs) if job.rungs else None, timeout_s=s.transcode_timeout_s,
            semaphore=self.semaphore, on_rung_done=previews.rung_done,
        ))
        try:
            await accepted
            result = await encoding
        finally:
            for task in (accepted, encoding):
                task.cancel()
            await asyncio.gather(accepted, encoding, return_exceptions=True)
        await previews.finish(result)
        a = job.asset_id
        complete = await self.command(job, "complete", CompleteTranscode(
            job_id=job.job_id,
            renditions=[rendition_of(a, r) for r in result.renditions],
            master_playlist_key=preview_key(a, result.master_key) if result.master_key else None,
            thumbnail_key=preview_key(a, result.thumbnail_key) if result.thumbnail_key else None,
            duration_s=result.duration_s, width=result.width, height=result.height,
            probe=probe_summary(result.media),
        ))
        await self._accepted(complete)  # refused: deleted meanwhile (see JobRefused)
        log.info("transcode job %s attempt %d of %s done in %.1fs: %s", job.job_id, job.attempt,
                 a, time.monotonic() - started, ", ".join(r.name for r in result.renditions) or "-")

    async def remove_previews(self, asset_id: str) -> int:
        return await self.blobs.delete_prefix(self.settings.bucket_previews,
                                              previews_prefix(asset_id))

    async def upload(self, files: list[tuple[Path, str]]) -> None:
        """Upload local files to previews keys, a few at a time, each with its content type."""
        limit = asyncio.Semaphore(UPLOAD_PARALLELISM)
        bucket = self.settings.bucket_previews

        async def one(path: Path, key: str) -> None:
            async with limit:
                await self.blobs.upload_file(path, bucket, key,
                                             content_type=content_type_for(key))

        await asyncio.gather(*(one(p, k) for p, k in files))


@dataclass
class _Previews:
    """Uploads what the pipeline finished under ``previews/{asset}/``: a rung's segments, then
    its playlist, then the thumbnail and the master playlist — the master only once every rung
    of this job it lists is uploaded, so a player never meets a variant that is not there."""

    runner: JobRunner
    job: TranscodeJob
    out: Path
    job_rungs: set[str]
    accepted: asyncio.Task[None]  # the actor accepted StartTranscode (raises if it refused)
    uploaded: set[str] = field(default_factory=set)
    sent_master: str = ""
    sent_thumb: bool = False

    def _key(self, path: str) -> str:
        return preview_key(self.job.asset_id, path)

    async def rung_done(self, rung: Rung) -> None:
        await asyncio.shield(self.accepted)
        rung_dir = self.out / HLS_DIR / rung.name
        files = sorted(p for p in rung_dir.iterdir() if p.is_file())
        segments = [p for p in files if p.name != PLAYLIST]
        await self.runner.upload(
            [(p, self._key(rendition_path(rung.name, p.name))) for p in segments])
        playlist = rendition_path(rung.name)
        await self.runner.upload([(self.out / playlist, self._key(playlist))])
        self.uploaded.add(rung.name)
        await self._thumb()
        await self._master()
        await self.runner.command(self.job, f"rendition:{rung.name}", RecordRendition(
            job_id=self.job.job_id, rendition=rendition_of(self.job.asset_id, rung)))

    async def _thumb(self) -> None:
        thumb = self.out / THUMBNAIL
        if not self.sent_thumb and thumb.is_file():
            await self.runner.upload([(thumb, self._key(THUMBNAIL))])
            self.sent_thumb = True

    async def _master(self) -> None:
        path = self.out / MASTER_PLAYLIST
        text = path.read_text() if path.is_file() else ""
        listed = {rung_of_uri(ln) for ln in text.splitlines() if ln and not ln.startswith("#")}
        if not text or text == self.sent_master or not (listed & self.job_rungs) <= self.uploaded:
            return
        await self.runner.upload([(path, self._key(MASTER_PLAYLIST))])
        self.sent_master = text

    async def finish(self, result: TranscodeResult) -> None:
        await self._thumb()
        if result.master_key:
            await self._master()

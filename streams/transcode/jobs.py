"""Transcode jobs as plain data. PURE: no I/O.

- ``TranscodeJob``: one attempt of one job, the message on ``jobs.transcode`` (key = asset id).
  ``RetryJob`` (on ``jobs.transcode.retry``) is the next attempt plus when it is due;
  ``DeadLetter`` (on ``jobs.transcode.dead-letter``) is a job that failed its last attempt.
- ``command_id``: the commands a job sends carry ids derived from (job, attempt, step), so a job
  re-run after a crash sends the same commands and the asset actor applies each once.
- ``backoff_s``: exponential, capped.
- ``Watermark``: with several jobs in flight, the offset that may be stored as "handled" is the
  highest one below every job still running (docs/architecture.md, rule 2, with out-of-order
  completion).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, Field

from medialog.domain.events.asset import Rendition
from medialog.domain.layout import preview_key, rendition_path
from streams.transcode.ladder import Rung, bandwidth

if TYPE_CHECKING:
    from streams.transcode.probe import MediaInfo

_NAMESPACE = uuid.UUID("3c0f6d2e-8b7a-4e51-9a26-5d1e7f0b4c93")
STEPS_TERMINAL = ("complete", "fail")


class TranscodeJob(BaseModel):
    """One attempt of a transcode job: ``rungs`` None means the whole ladder."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    job_id: str
    asset_id: str
    master_key: str
    kind: str
    rungs: list[str] | None = None
    attempt: int = Field(default=1, ge=1)

    def encode(self) -> bytes:
        return self.model_dump_json().encode()

    def next_attempt(self) -> TranscodeJob:
        return self.model_copy(update={"attempt": self.attempt + 1})


class RetryJob(TranscodeJob):
    """The next attempt of a job that failed, due at ``not_before``."""

    not_before: datetime
    last_reason: str
    last_rung: str | None = None

    def job(self) -> TranscodeJob:
        return TranscodeJob.model_validate(self.model_dump(include=set(TranscodeJob.model_fields)))


class DeadLetter(BaseModel):
    """A job that failed its last attempt; ``id`` is deterministic (a re-run repeats it)."""

    model_config = ConfigDict(frozen=True)

    id: str
    job: TranscodeJob
    attempts: int
    reason: str
    rung: str | None
    stderr_tail: str = ""
    failed_at: datetime


def command_id(job_id: str, attempt: int, step: str) -> str:
    """The id of the command a job attempt sends at ``step`` (``start``, ``rendition:360p``,
    ``complete``, ``fail``): the same on every run of that attempt."""
    return str(uuid.uuid5(_NAMESPACE, f"{job_id}\0{attempt}\0{step}"))


def terminal_command_ids(job_id: str, attempts: int) -> list[str]:
    """Ids of every command that ends the job (complete or fail) at attempts 1 … ``attempts``:
    if one of them was decided, the job is over and a re-delivered message has nothing to do."""
    return [command_id(job_id, n, s) for n in range(1, attempts + 1) for s in STEPS_TERMINAL]


def backoff_s(failed_attempt: int, base_s: float, max_s: float) -> float:
    """Wait before the attempt after ``failed_attempt``: base, 2·base, 4·base … at most max."""
    return float(min(max_s, base_s * 2 ** max(0, failed_attempt - 1)))


def rendition_of(asset_id: str, rung: Rung) -> Rendition:
    """The domain's view of a finished rung; keys are relative to the previews bucket."""
    return Rendition(
        name=rung.name,
        playlist_key=preview_key(asset_id, rendition_path(rung.name)),
        bandwidth=bandwidth(rung),
        codecs=rung.codecs,
        width=rung.width or None,
        height=rung.height or None,
    )


def probe_summary(info: MediaInfo) -> dict[str, str | int | float | None]:
    """What ffprobe said, flattened for ``TranscodeCompleted.probe``."""
    return {
        "format": info.format_name,
        "video_codec": info.video_codec,
        "audio_codec": info.audio_codec,
        "bitrate": info.bitrate,
        "fps": info.fps,
        "duration_s": info.duration_s,
    }


@dataclass
class Watermark:
    """Per partition: offsets begun but not ended, and ended ones not yet safe to store.

    ``end`` returns the offset that may now be stored (every offset at or below it that this
    consumer began has ended) or None. An offset begun and never ended (a cancelled job) holds
    the watermark below it for as long as this object lives, so it is re-delivered after a
    restart."""

    _running: dict[tuple[str, int], set[int]] = field(default_factory=dict)
    _ended: dict[tuple[str, int], set[int]] = field(default_factory=dict)

    def begin(self, tp: tuple[str, int], offset: int) -> None:
        self._running.setdefault(tp, set()).add(offset)

    def end(self, tp: tuple[str, int], offset: int) -> int | None:
        running = self._running.setdefault(tp, set())
        running.discard(offset)
        ended = self._ended.setdefault(tp, set())
        ended.add(offset)
        floor = min(running) if running else None
        safe = [o for o in ended if floor is None or o < floor]
        if not safe:
            return None
        top = max(safe)
        self._ended[tp] = {o for o in ended if o > top}
        return top

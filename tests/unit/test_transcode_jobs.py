"""Transcode jobs as data: messages, deterministic command ids, backoff, the offset watermark."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from streams.transcode.jobs import (
    DeadLetter,
    RetryJob,
    TranscodeJob,
    Watermark,
    backoff_s,
    command_id,
    rendition_of,
    terminal_command_ids,
)
from streams.transcode.ladder import audio_ladder, video_ladder

JOB = TranscodeJob(job_id="j1", asset_id="a1", master_key="a1/original.mp4", kind="video")


def test_a_job_round_trips_and_counts_its_attempts() -> None:
    again = TranscodeJob.model_validate_json(JOB.encode())
    assert again == JOB and again.attempt == 1 and again.rungs is None
    assert JOB.next_attempt().attempt == 2 and JOB.next_attempt().job_id == "j1"
    with pytest.raises(ValueError):
        TranscodeJob.model_validate({**JOB.model_dump(), "attempt": 0})


def test_a_retry_carries_the_next_attempt_and_gives_it_back() -> None:
    due = datetime(2030, 1, 1, tzinfo=UTC)
    retry = RetryJob(**{**JOB.model_dump(), "attempt": 2, "rungs": ["720p"]}, not_before=due,
                     last_reason="boom", last_rung="720p")
    parsed = RetryJob.model_validate_json(retry.model_dump_json())
    assert parsed.not_before == due and parsed.last_reason == "boom"
    job = parsed.job()
    assert type(job) is TranscodeJob and job.attempt == 2 and job.rungs == ["720p"]


def test_a_dead_letter_keeps_the_job_and_why() -> None:
    dead = DeadLetter(id="x", job=JOB, attempts=3, reason="bad", rung="probe",
                      failed_at=datetime.now(UTC))
    assert DeadLetter.model_validate_json(dead.model_dump_json()) == dead


def test_command_ids_are_deterministic_and_distinct_per_step_and_attempt() -> None:
    assert command_id("j1", 1, "start") == command_id("j1", 1, "start")
    ids = {command_id(j, n, s) for j in ("j1", "j2") for n in (1, 2)
           for s in ("start", "rendition:360p", "complete", "fail")}
    assert len(ids) == 16
    terminal = terminal_command_ids("j1", 3)
    assert len(terminal) == 6 and command_id("j1", 2, "complete") in terminal
    assert command_id("j1", 2, "start") not in terminal


@pytest.mark.parametrize(("attempt", "expected"), [(1, 1.0), (2, 2.0), (3, 4.0), (10, 30.0)])
def test_backoff_doubles_and_is_capped(attempt: int, expected: float) -> None:
    assert backoff_s(attempt, 1.0, 30.0) == expected


def test_a_rendition_names_its_playlist_under_the_asset() -> None:
    rung = video_ladder(1280, 720, has_audio=True)[-1]
    r = rendition_of("a1", rung)
    assert r.name == "360p" and r.playlist_key == "a1/hls/360p/index.m3u8"
    # (ceil(800 k × 1.07) + 96 k audio) × 1.10 TS overhead, rounded up: 1,048 kbit/s
    assert (r.width, r.height) == (640, 360) and r.bandwidth == 1_048_000
    audio = rendition_of("a1", audio_ladder()[0])
    assert audio.width is None and audio.height is None and audio.codecs == "mp4a.40.2"


def test_the_watermark_stores_only_below_every_running_job() -> None:
    w, tp = Watermark(), ("jobs", 0)
    for offset in (5, 6, 7):
        w.begin(tp, offset)
    assert w.end(tp, 6) is None  # 5 still runs: storing 6 would skip it after a crash
    assert w.end(tp, 5) == 6
    w.begin(tp, 8)
    assert w.end(tp, 8) is None
    assert w.end(tp, 7) == 8
    assert w.end(("jobs", 1), 3) == 3  # partitions are independent


def test_a_job_that_never_ends_holds_the_watermark() -> None:
    w, tp = Watermark(), ("jobs", 0)
    w.begin(tp, 1)  # cancelled: never ended
    w.begin(tp, 2)
    assert w.end(tp, 2) is None

"""The transcoder's jobs-waiting gauge as arithmetic: Faust's end offsets of the partitions of
``jobs.transcode`` assigned to the process, minus the offset after the last job it began. A
stand-in for the Faust app (its monitor's end offsets only); no broker."""

from __future__ import annotations

from types import SimpleNamespace

from faust.types import TP

from medialog.config import Settings
from streams.transcode.agents import TranscodeWorker


def test_jobs_waiting_counts_the_assigned_partitions_after_the_last_job_begun() -> None:
    settings = Settings.from_env(topic_prefix="t.")
    jobs = settings.topic("jobs.transcode")
    monitor = SimpleNamespace(tp_end_offsets={TP(jobs, 0): 10, TP(jobs, 1): 4, TP(jobs, 2): 9,
                                              TP(settings.topic("events.asset"), 0): 50})
    deps = SimpleNamespace(settings=settings, pool=None, blobs=None, notifier=None,
                           publisher=SimpleNamespace(send_command=lambda *_: None))
    worker = TranscodeWorker(SimpleNamespace(monitor=monitor), deps)  # type: ignore[arg-type]
    worker.assigned({TP(jobs, 0), TP(jobs, 1), TP(settings.topic("events.asset"), 0)})
    assert worker.jobs_waiting() == 0  # nothing begun here yet: not counted
    worker.next_job.update({(jobs, 0): 7, (jobs, 1): 4, (jobs, 2): 1})
    assert worker.jobs_waiting() == 3  # partition 2 is not ours
    worker.assigned({TP(jobs, 1), TP(jobs, 2)})  # a rebalance: 0 went elsewhere, 2 came
    assert worker.jobs_waiting() == 8 and (jobs, 0) not in worker.next_job

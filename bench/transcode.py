"""Benchmark: our transcode pipeline vs ONE plain ffmpeg producing the same HLS ladder.

    python bench/transcode.py [--seconds 30] [--repeat 1] [--slots 2] [--keep]

Generates a 1080p30 testsrc2 + sine clip (x264 CRF 18, like a camera file), then times, in the
same run and with the same encoder settings (rungs, bitrates, x264 preset ``ladder.X264_PRESET``,
keyframes, levels: both sides take them from ``ladder.video_encoder_args``):

- baseline: one ffmpeg, ``split=4`` + scale, ``-f hls -var_stream_map`` (one muxer, 4 variants);
- pipeline: ``streams.transcode.pipeline.transcode`` as the worker calls it (probe, the lowest
  rung in one process and the other rungs in a second one at lower CPU priority, overlapping
  when the semaphore has ``--slots 2``; master playlist; thumbnail);
- pipeline, one process: the same with ``lowest_first=False`` (what the lowest-first split costs).

Prints wall and CPU seconds (children's user+sys: steadier than wall on a shared machine), the
time to the first playable rung, the ratio pipeline/baseline and whether it is <= 1.15.
Bounded: 3 transcodes of the clip per repeat (~3x its encode time on 2 cores) plus generation.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "src")]

from streams.transcode import ladder as L
from streams.transcode.ffmpeg_runner import QUIET
from streams.transcode.pipeline import transcode
from streams.transcode.probe import probe

GOAL = 1.15


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def generate(dst: Path, seconds: int) -> None:
    subprocess.run(
        ["ffmpeg", *QUIET, "-y",
         "-f", "lavfi", "-i", f"testsrc2=size=1920x1080:rate=30:duration={seconds}",
         "-f", "lavfi", "-i", f"sine=frequency=440:sample_rate=48000:duration={seconds}",
         "-c:v", "libx264", "-preset", "superfast", "-crf", "18", "-pix_fmt", "yuv420p",
         "-c:a", "aac", "-b:a", "128k", "-shortest", str(dst)],
        check=True,
    )  # fmt: skip


def baseline_args(src: Path, out: Path, rungs: list[L.Rung], filter_complex: str) -> list[str]:
    """The single plain ffmpeg: same filter graph, same per-rung encoder options (addressed by
    stream specifier), one HLS muxer with var_stream_map."""
    args = ["ffmpeg", *QUIET, "-y", "-i", str(src), "-filter_complex", filter_complex]
    for i, _ in enumerate(rungs):
        args += ["-map", f"[o{i}]", "-map", "0:a:0"]
    for i, rung in enumerate(rungs):
        args += L.video_encoder_args(rung, spec=f":{i}")
    streams = " ".join(f"v:{i},a:{i},name:{r.name}" for i, r in enumerate(rungs))
    args += [
        "-f", "hls", "-hls_time", str(L.HLS_TIME_S), "-hls_playlist_type", "vod",
        "-hls_list_size", "0", "-hls_segment_type", "mpegts",
        "-hls_segment_filename", str(out / "%v" / L.SEGMENT_PATTERN),
        "-master_pl_name", "master.m3u8", "-var_stream_map", streams,
        str(out / "%v" / "index.m3u8"),
    ]  # fmt: skip
    return args


def _variants(master: Path) -> list[str]:
    return [ln for ln in master.read_text().splitlines() if ln and not ln.startswith("#")]


def timed(fn: Callable[[], float | None]) -> tuple[float, float, float]:
    """(wall s, children's cpu s, fn's result: seconds to the first playable rung, or the wall)."""
    wall, cpu = time.monotonic(), _cpu()
    first = fn()
    wall = time.monotonic() - wall
    return wall, _cpu() - cpu, wall if first is None else first


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=int, default=30)
    parser.add_argument("--repeat", type=int, default=1, help="rounds; the best of each is kept")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    parser.add_argument(
        "--slots", type=int, default=2, help="semaphore slots given to the pipeline (1: no overlap)"
    )
    opts = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-transcode-"))
    src = work / "source.mp4"
    print(f"generating {opts.seconds} s 1920x1080@30 clip in {work} ...", flush=True)
    generate(src, opts.seconds)
    info = asyncio.run(probe(src))
    rungs = L.plan_ladder(info)
    assert [r.name for r in rungs] == ["1080p", "720p", "480p", "360p"], rungs
    results: dict[str, list[tuple[float, float, float]]] = {"base": [], "ours": [], "single": []}

    def run_base() -> None:  # nothing is playable before the single process ends
        out = work / "base"
        shutil.rmtree(out, ignore_errors=True)
        subprocess.run(baseline_args(src, out, rungs, L.ladder_filter(info, rungs)), check=True)

    def run_ours(lowest_first: bool) -> float:
        out = work / ("ours" if lowest_first else "single")
        shutil.rmtree(out, ignore_errors=True)
        start, first = time.monotonic(), []

        def on_rung_done(rung: L.Rung) -> None:
            first.append(time.monotonic() - start)

        asyncio.run(transcode(src, out, timeout_s=1800, semaphore=asyncio.Semaphore(opts.slots),
                              on_rung_done=on_rung_done, lowest_first=lowest_first))  # fmt: skip
        return first[0]

    for _ in range(opts.repeat):
        results["base"].append(timed(run_base))
        results["ours"].append(timed(lambda: run_ours(True)))
        results["single"].append(timed(lambda: run_ours(False)))

    expected = [f"{r.name}/index.m3u8" for r in rungs]
    for name in ("base", "ours", "single"):
        master = work / name / ("master.m3u8" if name == "base" else "hls/master.m3u8")
        assert _variants(master) == expected, (name, _variants(master))

    best = {k: min(v) for k, v in results.items()}  # best wall of the rounds
    labels = {
        "base": "baseline: 1 ffmpeg, split+var_stream_map",
        "ours": "pipeline: lowest rung first (2 ffmpeg)",
        "single": "pipeline: lowest_first=False (1 ffmpeg)",
    }
    print(f"source {opts.seconds} s 1920x1080@30, preset {L.X264_PRESET}, {os.cpu_count()} CPUs, "
          f"load {os.getloadavg()[0]:.1f}, rounds {opts.repeat}, slots {opts.slots}")  # fmt: skip
    for rnd in range(opts.repeat) if opts.repeat > 1 else ():
        cells = "  ".join(f"{k} {v[rnd][0]:.1f}/{v[rnd][1]:.1f}" for k, v in results.items())
        print(f"  round {rnd + 1} (wall/cpu s): {cells}")
    for key, (wall, cpu, first) in best.items():
        times = f"wall {wall:6.1f} s  cpu {cpu:6.1f} s  first playable {first:5.1f} s"
        print(f"  {labels[key]:44s} {times}")
    ratio = best["ours"][0] / best["base"][0]
    cpu_ratio = best["ours"][1] / best["base"][1]
    split_wall = best["ours"][0] / best["single"][0] - 1
    split_cpu = best["ours"][1] / best["single"][1] - 1
    print(f"ratio pipeline/baseline: wall {ratio:.3f} (goal <= {GOAL}: "
          f"{'OK' if ratio <= GOAL else 'MISSED'}), cpu {cpu_ratio:.3f}")  # fmt: skip
    print(f"single-process pipeline/baseline: wall {best['single'][0] / best['base'][0]:.3f}, "
          f"cpu {best['single'][1] / best['base'][1]:.3f}")  # fmt: skip
    print(f"lowest-first split costs: wall {split_wall:+.1%}, cpu {split_cpu:+.1%}; first playable "
          f"at {best['ours'][2] / best['ours'][0]:.0%} of its wall time (vs 100%)")  # fmt: skip
    if opts.keep:
        print(f"kept {work}")
    else:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

"""The transcode pipeline: probe, HLS ladder, master playlist, thumbnail, into a local directory.

Layout under ``out_dir``: the asset's previews as ``medialog.domain.layout`` names them (keys in
the result are paths relative to it): ``thumb.jpg``, ``hls/master.m3u8``,
``hls/<rung>/index.m3u8``, ``hls/<rung>/seg_00000.ts`` …

Design (see ``bench/transcode.py``): ffmpeg 5.1's HLS muxer writes a VOD
playlist only at the end and ``split`` feeds all rungs in lockstep, so in ONE process every rung
completes in the same instant. ``lowest_first`` (default) therefore runs two processes: the
lowest rung alone (playable well before the rest) and all other rungs in one process
(``split=N``, one ``-f hls`` output per rung), started at the same time at a lower CPU priority
so it fills what the first leaves idle (if the semaphore has two free slots; else in turn).
The price is a second decode of the source: more CPU than one process (see the benchmark).
``lowest_first=False`` runs the ladder in one process (as cheap as one plain ffmpeg, but nothing
is playable before the end). Audio: one process. The thumbnail is one more ``split`` branch of
the first process (no seek-and-decode of its own).

Input: ``probe`` decides which container the source may be (by its extension, i.e. the declared
content type), and every ffmpeg here opens it with exactly the demuxer ffprobe used
(``probe.demuxer_args``): bytes that are really an HLS playlist or a concat list never reach
a demuxer that would read other local files.

``on_rung_done(rung)`` (sync or async) is called lowest rung first, once the rung's playlist has
``#EXT-X-ENDLIST`` and ``hls/master.m3u8`` lists it; it runs while the next process encodes. If
it raises, the running ffmpeg is killed and the error propagates.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
import logging
import shutil
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import ffmpeg

from medialog.domain.layout import HLS_DIR, MASTER_PLAYLIST, THUMBNAIL, rendition_path
from streams.transcode.ffmpeg_runner import QUIET, TranscodeError, run_ffmpeg
from streams.transcode.ladder import (
    Rung,
    hls_output_args,
    ladder_filter,
    master_playlist,
    plan_ladder,
    thumb_size,
    video_encoder_args,
)
from streams.transcode.probe import Kind, MediaInfo, demuxer_args, probe

log = logging.getLogger(__name__)

THUMB_AT = 0.10  # fraction of the duration
BACKGROUND_NICE = 10  # CPU priority of the processes encoding the higher rungs
MIN_COVERAGE = 0.9  # a rung shorter than this share of the probed duration is a failure

OnRungDone = Callable[[Rung], Awaitable[None] | None]


@dataclass(frozen=True)
class TranscodeResult:
    """``renditions``: rungs produced by this call, lowest first. ``ladder``: every rung of the
    source, as listed in ``master_key`` (a re-run of a subset still lists the full ladder)."""

    kind: Kind
    duration_s: float | None
    width: int | None
    height: int | None
    renditions: tuple[Rung, ...]
    ladder: tuple[Rung, ...]
    master_key: str | None
    thumbnail_key: str | None
    media: MediaInfo

    @staticmethod
    def playlist_key(rung: Rung) -> str:
        return rendition_path(rung.name)


def ladder_args(
    ffmpeg_bin: str,
    src: Path,
    hls: Path,
    info: MediaInfo,
    rungs: Sequence[Rung],
    thumb: Path | None = None,
    *,
    light_decode: bool = False,
) -> list[str]:
    """One ffmpeg producing every rung of ``rungs`` as its own HLS output under ``hls`` (and
    the ``thumb`` JPEG at THUMB_AT of the duration, video only). ``light_decode`` skips the
    decoder's deblocking filter: used for the early lowest rung only, which decodes the source a
    second time — at ≥ 3× downscale the skipped filtering does not show, and it makes that extra
    decode markedly cheaper (bench/transcode.py). ``src`` is opened with ``info``'s demuxer and
    nothing else (``demuxer_args``), as in ``thumbnail_args``."""
    decode = ["-skip_loop_filter", "all"] if light_decode else []
    args = [ffmpeg_bin, *QUIET, "-y", *decode, *demuxer_args(info), "-i", str(src)]
    if rungs[0].is_audio_only:
        for rung in rungs:
            args += ["-map", f"0:{info.audio_stream}", "-c:a", "aac"]
            args += ["-b:a", f"{rung.audio_bitrate_k}k", "-ac", "2"]
            args += hls_output_args(hls / rung.name)
        return args
    thumb_at = (info.duration_s or 0.0) * THUMB_AT if thumb is not None else None
    args += ["-filter_complex", ladder_filter(info, rungs, thumb_at)]
    for i, rung in enumerate(rungs):
        args += ["-map", f"[o{i}]"]
        if rung.audio_bitrate_k:
            args += ["-map", f"0:{info.audio_stream}"]
        args += video_encoder_args(rung) + hls_output_args(hls / rung.name)
    if thumb is not None:
        args += ["-map", "[th]", "-frames:v", "1", "-update", "1", "-q:v", "3", str(thumb)]
    return args


def thumbnail_args(ffmpeg_bin: str, src: Path, dst: Path, info: MediaInfo) -> list[str]:
    """A JPEG of the first frame in its own process: images, and the fallback for a video whose
    frame at THUMB_AT never came (a duration header longer than the real stream)."""
    width, height = thumb_size(info)
    stream = ffmpeg.input(str(src))[str(info.video_stream)]
    out = stream.filter("scale", width, height).filter("setsar", 1)
    cmd = out.output(str(dst), vframes=1, update=1, **{"q:v": 3}).overwrite_output()
    args: list[str] = cmd.compile(cmd=ffmpeg_bin)
    i = args.index("-i")  # the input's options go right before it
    return [args[0], *QUIET, *args[1:i], *demuxer_args(info), *args[i:]]


def _check_output(hls: Path, rung: Rung, expected_s: float | None, tail: list[str]) -> None:
    """The rung's playlist is complete and covers the source. ffmpeg exits 0 on a truncated
    input (it encodes what it could decode), so a short output is the only sign of it."""
    path = hls / rung.playlist
    text = path.read_text() if path.is_file() else ""
    if "#EXT-X-ENDLIST" not in text:
        raise TranscodeError("playlist incomplete (no #EXT-X-ENDLIST)", rung.name)
    got = sum(float(ln[8:].split(",")[0]) for ln in text.splitlines() if ln.startswith("#EXTINF:"))
    if expected_s and got < expected_s * MIN_COVERAGE - 0.5:
        reason = f"output covers {got:.1f}s of {expected_s:.1f}s: input truncated or corrupt"
        raise TranscodeError(reason, rung.name, stderr_tail="\n".join(tail))


async def _notify(on_rung_done: OnRungDone | None, rungs: Sequence[Rung]) -> None:
    for rung in rungs:
        if on_rung_done is not None:
            result = on_rung_done(rung)
            if inspect.isawaitable(result):
                await result


async def transcode(
    src: Path,
    out_dir: Path,
    *,
    ffmpeg_bin: str = "ffmpeg",
    ffprobe_bin: str = "ffprobe",
    only_rungs: set[str] | None = None,
    timeout_s: float = 3600.0,
    semaphore: asyncio.Semaphore | None = None,
    on_rung_done: OnRungDone | None = None,
    lowest_first: bool = True,
) -> TranscodeResult:
    """Transcode ``src`` into ``out_dir`` (created). ``only_rungs`` re-runs just those rungs
    (the others are assumed to exist already; the thumbnail is kept if present). ``timeout_s``
    bounds each ffmpeg/ffprobe process. ``semaphore`` is taken per ffmpeg process (not for the
    short ffprobe): give it 2+ slots to let the higher rungs overlap the lowest one.
    Raises TranscodeError (unknown rung names included)."""
    src, out_dir = src.resolve(), out_dir.resolve()
    info = await probe(src, ffprobe_bin, timeout_s=timeout_s)
    ladder = plan_ladder(info)
    known = {r.name for r in ladder}
    if only_rungs is not None and not only_rungs <= known:
        unknown = ", ".join(sorted(only_rungs - known))
        raise TranscodeError(f"no such rung for this {info.kind} source: {unknown}", unknown)
    selected = [r for r in reversed(ladder) if only_rungs is None or r.name in only_rungs]
    out_dir.mkdir(parents=True, exist_ok=True)
    hls, thumb = out_dir / HLS_DIR, out_dir / THUMBNAIL
    for rung in selected:  # stale segments of an earlier (failed/longer) run must not survive
        shutil.rmtree(hls / rung.name, ignore_errors=True)
        (hls / rung.name).mkdir(parents=True)
    want_thumb = info.kind != "audio" and (only_rungs is None or not thumb.exists())
    if want_thumb:
        thumb.unlink(missing_ok=True)
    split = lowest_first and len(selected) > 1 and not selected[0].is_audio_only
    phases = [selected[:1], selected[1:]] if split else [selected] if selected else []
    done: list[Rung] = []

    run = functools.partial(run_ffmpeg, timeout_s=timeout_s, semaphore=semaphore)

    async def encode(i: int, group: list[Rung]) -> list[Rung]:
        args = ladder_args(
            ffmpeg_bin, src, hls, info, group, thumb if want_thumb and not i else None,
            light_decode=split and i == 0,
        )
        label = "+".join(r.name for r in group)
        tail = await run(args, rung=label, nice=BACKGROUND_NICE if i else 0)
        for rung in group:
            _check_output(hls, rung, info.duration_s, tail)
        return group

    # All phases start now, the later one at a lower CPU priority: it takes the cycles the lowest
    # rung leaves idle, then the whole machine. Whether they overlap at all is the semaphore's
    # call: with one free slot they simply run one after the other.
    tasks = [asyncio.create_task(encode(i, group)) for i, group in enumerate(phases)]
    try:
        for task in tasks:  # in order: the lowest rung is reported first, whatever ends first
            finished = await task
            done += finished
            # Full runs: the master grows with the finished rungs (highest first), so the asset
            # is playable once the lowest rung is reported. Subset re-runs: the full ladder.
            final = task is tasks[-1] or only_rungs is not None
            listed = ladder if final else [r for r in ladder if r in done]
            master = out_dir / MASTER_PLAYLIST
            tmp = master.with_name(f"{master.name}.tmp")  # atomic: no reader sees half a master
            tmp.write_text(master_playlist(listed))
            tmp.replace(master)
            await _notify(on_rung_done, finished)
    finally:  # an error, a failing callback or cancellation: kill what still runs
        for task in tasks:
            if not task.done():
                task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
    if want_thumb and not thumb.exists():  # images; or the frame at THUMB_AT never came
        await run(thumbnail_args(ffmpeg_bin, src, thumb, info), rung="thumb")
        if not thumb.exists():
            raise TranscodeError("no frame could be decoded for the thumbnail", "thumb")
    log.info("transcoded %s (%s): %s", src.name, info.kind, ", ".join(r.name for r in done) or "-")
    return TranscodeResult(
        kind=info.kind,
        duration_s=info.duration_s,
        width=info.width,
        height=info.height,
        renditions=tuple(done),
        ladder=tuple(ladder),
        master_key=MASTER_PLAYLIST if ladder else None,
        thumbnail_key=THUMBNAIL if info.kind != "audio" else None,
        media=info,
    )

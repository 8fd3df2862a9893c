"""The HLS ladder as plain data: which rungs a source gets, their bitrates and codec strings, and
the master playlist text. PURE: no I/O, no ffmpeg; the pipeline turns rungs into commands.

Contracts:
- ``plan_ladder`` returns rungs highest first. Video: the standard heights (1080, 720, 480, 360,
  measured on the SHORT side so portrait sources get 720x1280, not 405x720) that do not exceed
  the source; a source whose short side is under 360 gets one rung at its own size (even dims).
  No rung is ever larger than the source in either dimension. Audio: ``a128k`` and ``a64k``.
  Image: no rungs (thumbnail only).
- ``codecs`` is exact for what the pipeline asks of the encoders: H.264 High profile with the
  level chosen here (``-profile:v high -level:v <h264_level(rung)>``), AAC-LC (mp4a.40.2).
- ``video_encoder_args`` are the encoder settings behind those strings, ``hls_output_args`` the
  packaging (VOD, ~HLS_TIME_S segments named ``seg_00000.ts`` …), ``ladder_filter`` the scaling
  graph: pure argument lists, shared by the pipeline and the benchmark's baseline.
- ``master_playlist`` is deterministic: same rungs, same bytes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from medialog.domain.layout import PLAYLIST, rendition_uri

if TYPE_CHECKING:
    from collections.abc import Sequence

    from streams.transcode.probe import MediaInfo

# (short-side height, video kbit/s, audio kbit/s) — highest first.
VIDEO_LADDER: tuple[tuple[int, int, int], ...] = (
    (1080, 5000, 128),
    (720, 2800, 128),
    (480, 1400, 96),
    (360, 800, 96),
)
AUDIO_LADDER: tuple[int, ...] = (128, 64)
AAC_LC = "mp4a.40.2"

# Rate control: -maxrate = bitrate * MAXRATE_FACTOR, -bufsize = bitrate * BUFSIZE_FACTOR.
MAXRATE_FACTOR = 1.07
BUFSIZE_FACTOR = 1.5
# BANDWIDTH = (maxrate + audio) * overhead: MPEG-TS packaging puts peak segments over the
# nominal A/V rate, and TS_OVERHEAD covers it. Audio-only TS runs further over (a PES and
# 188-byte padding per AAC frame) and ffmpeg's AAC rate is not strict: more headroom.
TS_OVERHEAD = 1.10
TS_OVERHEAD_AUDIO_ONLY = 1.25
HLS_TIME_S = 2  # target segment duration; keyframes are forced on this grid
X264_PRESET = "veryfast"
SEGMENT_PATTERN = "seg_%05d.ts"
THUMB_MAX_WIDTH = 640
# Levels are chosen for frame size at up to LEVEL_FPS; the pipeline caps output at this rate.
LEVEL_FPS = 60
# H.264 levels: (level_idc, MaxFS macroblocks, MaxMBPS, High-profile MaxBR kbit/s).
_H264_LEVELS: tuple[tuple[int, int, int, int], ...] = (
    (30, 1620, 40500, 12500),
    (31, 3600, 108000, 17500),
    (32, 5120, 216000, 25000),
    (40, 8192, 245760, 25000),
    (41, 8192, 245760, 62500),
    (42, 8704, 522240, 62500),
    (50, 22080, 589824, 168750),
    (51, 36864, 983040, 300000),
    (52, 36864, 2073600, 300000),
)


@dataclass(frozen=True)
class Rung:
    """One rendition. Video rungs have width/height > 0; audio-only rungs have 0x0 and
    ``video_bitrate_k == 0``. ``audio_bitrate_k == 0`` means no audio track."""

    name: str
    height: int
    width: int
    video_bitrate_k: int
    audio_bitrate_k: int
    codecs: str

    @property
    def is_audio_only(self) -> bool:
        return self.video_bitrate_k == 0

    @property
    def playlist(self) -> str:
        """Playlist path relative to the HLS directory (the URI used in the master)."""
        return rendition_uri(self.name)

    @property
    def pixels(self) -> int:
        return self.width * self.height


def _even(x: float) -> int:
    return max(2, round(x / 2.0) * 2)


def maxrate_k(rung: Rung) -> int:
    return math.ceil(rung.video_bitrate_k * MAXRATE_FACTOR)


def bufsize_k(rung: Rung) -> int:
    return math.ceil(rung.video_bitrate_k * BUFSIZE_FACTOR)


def bandwidth(rung: Rung) -> int:
    """Peak bits/s announced in the master: encoder ceiling plus audio plus container overhead."""
    if rung.is_audio_only:
        return math.ceil(rung.audio_bitrate_k * TS_OVERHEAD_AUDIO_ONLY) * 1000
    return math.ceil((maxrate_k(rung) + rung.audio_bitrate_k) * TS_OVERHEAD) * 1000


def level_idc(width: int, height: int, video_bitrate_k: int) -> int:
    """Smallest H.264 level (High profile) fitting the frame size at LEVEL_FPS and the maxrate."""
    mbs = math.ceil(width / 16) * math.ceil(height / 16)
    peak = math.ceil(video_bitrate_k * MAXRATE_FACTOR)
    for idc, max_fs, max_mbps, max_br in _H264_LEVELS:
        side_ok = max(math.ceil(width / 16), math.ceil(height / 16)) ** 2 <= 8 * max_fs
        if mbs <= max_fs and mbs * LEVEL_FPS <= max_mbps and peak <= max_br and side_ok:
            return idc
    return _H264_LEVELS[-1][0]


def h264_level(rung: Rung) -> str:
    """The ``-level:v`` value matching ``rung.codecs`` (e.g. ``avc1.64001f`` -> ``3.1``)."""
    idc = int(rung.codecs.split(",")[0].split(".")[1][4:6], 16)
    return f"{idc // 10}.{idc % 10}"


def video_encoder_args(rung: Rung, *, preset: str = X264_PRESET, spec: str = "") -> list[str]:
    """x264 + AAC settings of ``rung``; ``spec`` is a stream specifier suffix (``:0``) for
    commands that carry several rungs in one output (the var_stream_map baseline)."""
    args = [
        f"-c:v{spec}", "libx264", f"-preset:v{spec}", preset, f"-profile:v{spec}", "high",
        f"-level:v{spec}", h264_level(rung), f"-pix_fmt:v{spec}", "yuv420p",
        f"-force_key_frames:v{spec}", f"expr:gte(t,n_forced*{HLS_TIME_S})",
        f"-b:v{spec}", f"{rung.video_bitrate_k}k", f"-maxrate:v{spec}", f"{maxrate_k(rung)}k",
        f"-bufsize:v{spec}", f"{bufsize_k(rung)}k",
    ]  # fmt: skip
    if rung.audio_bitrate_k:
        args += [
            f"-c:a{spec}",
            "aac",
            f"-b:a{spec}",
            f"{rung.audio_bitrate_k}k",
            f"-ac:a{spec}",
            "2",
        ]
    return args


def hls_output_args(out: Path) -> list[str]:
    """One VOD HLS output: ``out/index.m3u8`` with ``out/seg_00000.ts`` … (~HLS_TIME_S each)."""
    return [
        "-f", "hls", "-hls_time", str(HLS_TIME_S), "-hls_playlist_type", "vod",
        "-hls_list_size", "0", "-hls_segment_type", "mpegts",
        "-hls_segment_filename", str(out / SEGMENT_PATTERN), str(out / PLAYLIST),
    ]  # fmt: skip


def _video_rung(height: int, width: int, name: str, video_k: int, audio_k: int) -> Rung:
    codecs = f"avc1.6400{level_idc(width, height, video_k):02x}"
    if audio_k:
        codecs += f",{AAC_LC}"
    return Rung(name, height, width, video_k, audio_k, codecs)


def _fit(short: int, src_w: int, src_h: int) -> tuple[int, int]:
    """(width, height) with the short side = ``short`` and the source aspect, even, never above
    the source in either dimension."""
    if src_w >= src_h:
        return min(_even(src_w * short / src_h), src_w - src_w % 2), short
    return short, min(_even(src_h * short / src_w), src_h - src_h % 2)


def video_ladder(width: int, height: int, has_audio: bool) -> list[Rung]:
    """Rungs for a ``width`` x ``height`` (display) source, highest first."""
    if width < 2 or height < 2:
        raise ValueError(f"video dimensions {width}x{height} are too small to encode")
    short = min(width, height)
    rungs: list[Rung] = []
    for std, video_k, audio_k in VIDEO_LADDER:
        if std <= short:
            w, h = _fit(std, width, height)
            rungs.append(_video_rung(h, w, f"{std}p", video_k, audio_k if has_audio else 0))
    if not rungs:  # smaller than the lowest standard rung: one rung at its own size
        own = short - short % 2
        w, h = _fit(own, width, height)
        low_h, low_k, low_a = VIDEO_LADDER[-1]
        # Scale the lowest rung's bitrate by pixel count, with a floor for tiny frames.
        video_k = max(150, round(low_k * (w * h) / (low_h * low_h * 16 / 9)))
        rungs.append(_video_rung(h, w, f"{own}p", video_k, low_a if has_audio else 0))
    return rungs


def audio_ladder() -> list[Rung]:
    return [Rung(f"a{k}k", 0, 0, 0, k, AAC_LC) for k in AUDIO_LADDER]


def plan_ladder(info: MediaInfo) -> list[Rung]:
    """The full ladder for a probed source, highest first (empty for images)."""
    if info.kind == "image":
        return []
    if info.kind == "audio":
        return audio_ladder()
    assert info.width is not None and info.height is not None, "video without dimensions"
    return video_ladder(info.width, info.height, info.has_audio)


def thumb_size(info: MediaInfo) -> tuple[int, int]:
    """Thumbnail dimensions: display aspect, at most THUMB_MAX_WIDTH wide, even."""
    assert info.width and info.height
    width = min(THUMB_MAX_WIDTH, info.width - info.width % 2)
    return width, max(2, round(info.height * width / info.width / 2) * 2)


def ladder_filter(info: MediaInfo, rungs: Sequence[Rung], thumb_at: float | None = None) -> str:
    """``-filter_complex``: one decode, scaled to every rung (outputs ``[o0]``, ``[o1]`` …) and,
    with ``thumb_at``, the frame at that second for the thumbnail (``[th]``; the branch closes
    after one frame, so it costs one scale, not a seek and decode in another process)."""
    chains = [f"scale={r.width}:{r.height},setsar=1[o{i}]" for i, r in enumerate(rungs)]
    if thumb_at is not None:
        width, height = thumb_size(info)
        trim = f"trim=start={thumb_at:.3f},trim=end_frame=1"
        chains.append(f"{trim},scale={width}:{height},setsar=1[th]")
    head = f"[0:{info.video_stream}]"
    if info.fps is not None and info.fps > LEVEL_FPS:  # levels in ladder.py assume <= 60 fps
        head += f"fps={LEVEL_FPS},"
    if len(chains) == 1:
        return head + chains[0]
    split = f"split={len(chains)}" + "".join(f"[s{i}]" for i in range(len(chains)))
    return f"{head}{split};" + ";".join(f"[s{i}]{c}" for i, c in enumerate(chains))


def master_playlist(rungs: list[Rung] | tuple[Rung, ...]) -> str:
    """Master playlist text listing ``rungs`` in the given order, URIs relative to it."""
    lines = ["#EXTM3U", "#EXT-X-VERSION:3", "#EXT-X-INDEPENDENT-SEGMENTS"]
    for rung in rungs:
        attrs = [f"BANDWIDTH={bandwidth(rung)}"]
        if not rung.is_audio_only:
            attrs.append(f"RESOLUTION={rung.width}x{rung.height}")
        attrs.append(f'CODECS="{rung.codecs}"')
        lines.append("#EXT-X-STREAM-INF:" + ",".join(attrs))
        lines.append(rung.playlist)
    return "\n".join(lines) + "\n"

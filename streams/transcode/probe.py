"""Probing a media file with ffmpeg-python (``ffmpeg.probe``, which runs ffprobe).

Contracts:
- ``probe`` runs the blocking ``ffmpeg.probe`` in a worker thread, never on the event loop.
- ``media_info`` (pure) turns ffprobe's JSON into a ``MediaInfo`` and classifies the kind:
  ``image`` (a still picture), ``audio`` (audio, maybe with cover art), ``video``.
  Width/height are DISPLAY dimensions: sample aspect ratio applied, 90/270 rotation swapped
  (ffmpeg auto-rotates on decode, so these are the frames the encoder will see).
- Anything that is not usable media raises ``TranscodeError(reason, "probe")``: ffprobe failing,
  no audio/video stream, an undecodable video stream (0x0), or a format guessed with no
  confidence (random bytes named ``x.mp3`` probe as mp3 with score 1; ``x.bin`` as "bintext").
- The container must be one the declared content type allows (``FORMATS_BY_TYPE``). ffmpeg picks
  its demuxer by CONTENT, whatever the file is called, and some demuxers open further files: a
  text HLS playlist uploaded as ``video/mp4`` would make the hls demuxer read ``file:`` URLs on
  the worker into the uploader's renditions. So the source's extension (the worker names it
  ``source.<ext>``, ``<ext>`` being the canonical extension of the declared content type, see
  ``medialog.domain.uploads.ALLOWED_TYPES``) selects the allowed demuxers; ffprobe gets them as
  ``-format_whitelist`` (it refuses to open anything else) and ``media_info`` checks
  ``format_name`` against them again. An unknown extension allows nothing. ``demuxer_args``
  gives ffmpeg the exact demuxer ffprobe used (``-f``), and every open is limited to the
  ``file`` protocol (no nested ``data:``/``crypto:``; network protocols were never allowed).

Limit: ``ffmpeg.probe`` (0.2.0) exposes no process handle, so ``timeout_s`` abandons the thread
rather than killing ffprobe; ffprobe's own ``probesize``/``analyzeduration`` bound its work.
"""

from __future__ import annotations

import asyncio
import math
import re
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, Literal

import ffmpeg

from medialog.domain.uploads import ALLOWED_TYPES
from streams.transcode.ffmpeg_runner import TranscodeError

Kind = Literal["video", "audio", "image"]

# ffprobe's probe_score: 100 = certain, 50 = guessed from the extension only, 1 = a wild guess.
MIN_PROBE_SCORE = 25
# Demuxers that "succeed" on arbitrary bytes (text art): never media.
_TEXT_FORMATS = frozenset({"tty", "bin", "xbin", "adf", "idf"})
_STILL_CODECS = frozenset({"png", "mjpeg", "jpegls", "webp", "bmp", "tiff", "gif", "jpeg2000"})
# Declared content type -> the ffmpeg demuxers (their full ``format_name``, as ffprobe reports it)
# that legitimately read it. None of them opens other files or URLs (mov's external data
# references need ``enable_drefs``, off by default). Never add hls, dash, concat, imf, sdp,
# vobsub, avisynth or any other demuxer that follows references.
_MOV = "mov,mp4,m4a,3gp,3g2,mj2"  # one demuxer: mp4, mov, m4a, 3gp…
_MKV = "matroska,webm"  # one demuxer: mkv, webm
FORMATS_BY_TYPE: dict[str, frozenset[str]] = {
    "video/mp4": frozenset({_MOV}),
    "video/quicktime": frozenset({_MOV}),
    "video/webm": frozenset({_MKV}),
    "video/x-matroska": frozenset({_MKV}),
    "video/mpeg": frozenset({"mpeg", "mpegts", "mpegvideo"}),  # program/transport/elementary
    "video/x-msvideo": frozenset({"avi"}),
    "audio/mpeg": frozenset({"mp3"}),  # MPEG audio layers 1-3
    "audio/mp4": frozenset({_MOV}),
    "audio/aac": frozenset({"aac"}),  # ADTS
    "audio/wav": frozenset({"wav"}),
    "audio/x-wav": frozenset({"wav"}),
    "audio/flac": frozenset({"flac"}),
    "audio/ogg": frozenset({"ogg"}),
    "audio/webm": frozenset({_MKV}),
    # image2 is chosen by a still's extension, the *_pipe demuxers by its bytes.
    "image/jpeg": frozenset({"image2", "jpeg_pipe"}),
    "image/png": frozenset({"image2", "png_pipe", "apng"}),
    "image/webp": frozenset({"image2", "webp_pipe"}),
    "image/gif": frozenset({"gif", "gif_pipe", "image2"}),
}


def _by_extension() -> dict[str, frozenset[str]]:
    out: dict[str, frozenset[str]] = {}
    for content_type, (_kind, ext) in ALLOWED_TYPES.items():
        # A type with no entry above allows nothing (fail closed); a unit test keeps them in step.
        out[ext] = out.get(ext, frozenset()) | FORMATS_BY_TYPE.get(content_type, frozenset())
    return out


# Canonical extension (``ALLOWED_TYPES``) -> allowed demuxers; and every allowed demuxer.
FORMATS_BY_EXTENSION = _by_extension()
ALL_FORMATS = frozenset().union(*FORMATS_BY_TYPE.values())
_NOT_ALLOWED = re.compile(r"^\[([^@\]]+?) @ [^\]]*\] Format not on whitelist")
PROBE_SIZE = 20_000_000  # bytes ffprobe may read to find streams
ANALYZE_US = 10_000_000  # microseconds of media it may analyze


@dataclass(frozen=True)
class MediaInfo:
    """What the pipeline needs to know about a source. ``bitrate`` is in bit/s."""

    kind: Kind
    format_name: str
    duration_s: float | None
    width: int | None
    height: int | None
    fps: float | None
    video_codec: str | None
    audio_codec: str | None
    bitrate: int | None
    has_video: bool
    has_audio: bool
    video_stream: int | None  # absolute stream index, for ``-map 0:<i>``
    audio_stream: int | None


def _num(value: Any) -> float | None:
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(out) or out < 0 else out  # NaN/negative -> unknown


def _ratio(value: Any) -> Fraction | None:
    try:
        num, den = (int(x) for x in str(value).replace(":", "/").split("/"))
    except ValueError:
        return None
    return Fraction(num, den) if num > 0 and den > 0 else None


def _rotation(stream: dict[str, Any]) -> int:
    for side in stream.get("side_data_list") or []:
        if "rotation" in side:
            return int(float(side["rotation"])) % 360
    return int(_num((stream.get("tags") or {}).get("rotate")) or 0) % 360


def _display_size(stream: dict[str, Any]) -> tuple[int, int]:
    width, height = int(stream.get("width") or 0), int(stream.get("height") or 0)
    sar = _ratio(stream.get("sample_aspect_ratio"))
    if sar is not None and sar != 1:
        width = round(width * sar)
    if _rotation(stream) in (90, 270):
        width, height = height, width
    return width, height


def _names(format_name: str) -> set[str]:
    return set(filter(None, format_name.split(",")))


def _whitelist(allowed: frozenset[str]) -> str:
    """``allowed`` as ffmpeg's ``-format_whitelist`` value (and as reasons show it)."""
    return ",".join(sorted(allowed)) or "none"


def source_formats(path: Path) -> frozenset[str]:
    """The demuxers allowed for a source named ``<anything>.<canonical extension>``; empty for
    an extension no accepted content type has."""
    return FORMATS_BY_EXTENSION.get(path.suffix.lower().lstrip("."), frozenset())


def demuxer_args(info: MediaInfo) -> list[str]:
    """ffmpeg input options (before ``-i``) that open the source with exactly the demuxer
    ffprobe found and ``media_info`` allowed, with nothing but the ``file`` protocol."""
    return ["-f", info.format_name.split(",")[0], "-protocol_whitelist", "file"]


def media_info(data: dict[str, Any], allowed: frozenset[str] = ALL_FORMATS) -> MediaInfo:
    """Classify ffprobe's ``-show_format -show_streams`` JSON. ``allowed``: the demuxers
    accepted, by default any that some accepted content type allows; like ffmpeg's
    ``-format_whitelist``, a ``format_name`` passes if one of its names is one of theirs.
    Raises TranscodeError."""
    fmt = data.get("format") or {}
    format_name = str(fmt.get("format_name") or "")
    score = int(fmt.get("probe_score") or 0)
    if format_name in _TEXT_FORMATS or score < MIN_PROBE_SCORE:
        raise TranscodeError(f"unrecognised media format ({format_name}, score {score})", "probe")
    if not _names(format_name) & {name for f in allowed for name in _names(f)}:
        reason = f"format {format_name} not allowed here (allowed: {_whitelist(allowed)})"
        raise TranscodeError(reason, "probe")
    streams = data.get("streams") or []
    videos = [
        s
        for s in streams
        if s.get("codec_type") == "video" and not (s.get("disposition") or {}).get("attached_pic")
    ]
    audios = [s for s in streams if s.get("codec_type") == "audio"]
    if not videos and not audios:
        raise TranscodeError("no audio or video stream", "probe")
    video = videos[0] if videos else None
    audio = audios[0] if audios else None
    duration = _num(fmt.get("duration"))
    width = height = None
    fps = None
    kind: Kind = "audio"
    if video is not None:
        width, height = _display_size(video)
        if width < 2 or height < 2:
            raise TranscodeError(f"undecodable video stream ({video.get('codec_name')})", "probe")
        rate = _ratio(video.get("avg_frame_rate")) or _ratio(video.get("r_frame_rate"))
        fps = float(rate) if rate is not None else None
        still = (
            format_name == "image2"
            or format_name.endswith("_pipe")
            or (video.get("codec_name") in _STILL_CODECS and str(video.get("nb_frames")) == "1")
        )
        kind = "image" if still and audio is None else "video"
    if duration is None and audio is not None:
        duration = _num(audio.get("duration"))
    if duration is None and video is not None:
        duration = _num(video.get("duration"))
    bitrate = _num(fmt.get("bit_rate"))
    return MediaInfo(
        kind=kind,
        format_name=format_name,
        duration_s=None if kind == "image" else duration,
        width=width,
        height=height,
        fps=fps,
        video_codec=video.get("codec_name") if video else None,
        audio_codec=audio.get("codec_name") if audio else None,
        bitrate=int(bitrate) if bitrate is not None else None,
        has_video=video is not None,
        has_audio=audio is not None,
        video_stream=int(video["index"]) if video else None,
        audio_stream=int(audio["index"]) if audio else None,
    )


def _probe_json(path: Path, ffprobe_bin: str, allowed: frozenset[str]) -> dict[str, Any]:
    whitelist = _whitelist(allowed)
    try:
        result: dict[str, Any] = ffmpeg.probe(
            str(path),
            cmd=ffprobe_bin,
            probesize=PROBE_SIZE,
            analyzeduration=ANALYZE_US,
            format_whitelist=whitelist,
            protocol_whitelist="file",
        )
    except ffmpeg.Error as exc:
        text = exc.stderr.decode("utf-8", "replace").replace(str(path), path.name)
        lines = [ln for ln in text.splitlines() if ln.strip()]  # no local paths in the reason
        reason = lines[-1] if lines else "ffprobe failed"
        refused = next(filter(None, (_NOT_ALLOWED.match(ln) for ln in lines)), None)
        if refused is not None:  # ffprobe's own last line is just "…: Invalid argument"
            reason = f"format {refused.group(1)} not allowed here (allowed: {whitelist})"
        raise TranscodeError(reason, "probe", stderr_tail="\n".join(lines[-20:])) from None
    except OSError as exc:  # ffprobe binary missing or not executable
        raise TranscodeError(f"cannot run {ffprobe_bin}: {exc}", "probe") from exc
    return result


async def probe(path: Path, ffprobe_bin: str = "ffprobe", *, timeout_s: float = 60.0) -> MediaInfo:
    """Probe ``path`` off the event loop and classify it, allowing only the demuxers of its
    extension (``source_formats``). Raises TranscodeError."""
    allowed = source_formats(path)
    if not allowed:
        raise TranscodeError(f"unsupported source file type {path.suffix or '(none)'!r}", "probe")
    try:
        data = await asyncio.wait_for(
            asyncio.to_thread(_probe_json, path, ffprobe_bin, allowed), timeout_s
        )
    except TimeoutError:
        raise TranscodeError(f"ffprobe timed out after {timeout_s:g}s", "probe") from None
    return media_info(data, allowed)

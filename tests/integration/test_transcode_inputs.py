"""What the transcoder agrees to open, against the real ffmpeg/ffprobe (security review F2).

ffmpeg chooses its demuxer by content: a text HLS playlist uploaded as ``video/mp4`` (saved as
``source.mp4``) is opened by the hls demuxer, which reads the ``file:`` URLs it lists, so a
local file of the worker would be transcoded into the uploader's public renditions. These tests
build that playlist (and an ffconcat list) around a real local clip, show that a plain ffprobe
does follow it, and that ``probe``, the pipeline and the pipeline's own ffmpeg commands refuse
it; and that a genuine file of every accepted content type still goes through.

Needs only the ffmpeg binaries (no services); each case is a small lavfi clip.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from medialog.domain.uploads import ALLOWED_TYPES
from streams.transcode.ffmpeg_runner import TranscodeError, run_ffmpeg
from streams.transcode.ladder import plan_ladder
from streams.transcode.pipeline import ladder_args, thumbnail_args, transcode
from streams.transcode.probe import ALL_FORMATS, FORMATS_BY_TYPE, probe
from tests.media_tools import ffmpeg, ffprobe

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        shutil.which("ffmpeg") is None or shutil.which("ffprobe") is None,
        reason="ffmpeg/ffprobe not installed",
    ),
]

SECONDS = 2
_VIDEO = ["-f", "lavfi", "-i", f"testsrc2=size=320x240:rate=25:duration={SECONDS}"]
_AUDIO = ["-f", "lavfi", "-i", f"sine=frequency=440:sample_rate=48000:duration={SECONDS}"]
_STILL = ["-f", "lavfi", "-i", "testsrc2=size=320x240", "-frames:v", "1"]
_X264 = ["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p"]
# canonical extension (ALLOWED_TYPES) -> ffmpeg arguments producing a genuine file of that type
GENUINE: dict[str, list[str]] = {
    "mp4": [*_VIDEO, *_AUDIO, *_X264, "-c:a", "aac", "-shortest"],
    "mov": [*_VIDEO, *_AUDIO, *_X264, "-c:a", "aac", "-shortest"],
    "mkv": [*_VIDEO, *_AUDIO, *_X264, "-c:a", "aac", "-shortest"],
    "webm": [*_VIDEO, *_AUDIO, "-c:v", "libvpx-vp9", "-deadline", "realtime", "-cpu-used", "8",
             "-c:a", "libopus", "-shortest"],
    "mpg": [*_VIDEO, *_AUDIO, "-c:v", "mpeg2video", "-c:a", "mp2", "-shortest"],
    "avi": [*_VIDEO, *_AUDIO, "-c:v", "mpeg4", "-c:a", "libmp3lame", "-shortest"],
    "mp3": [*_AUDIO, "-c:a", "libmp3lame"],
    "m4a": [*_AUDIO, "-c:a", "aac"],
    "aac": [*_AUDIO, "-c:a", "aac"],
    "wav": [*_AUDIO],
    "flac": [*_AUDIO],
    "ogg": [*_AUDIO, "-c:a", "libvorbis"],
    "weba": [*_AUDIO, "-c:a", "libopus", "-f", "webm"],
    "jpg": [*_STILL],
    "png": [*_STILL],
    "webp": [*_STILL],
    "gif": [*_STILL],
}
EXTENSIONS = sorted({ext for _kind, ext in ALLOWED_TYPES.values()})






@pytest.fixture(scope="module")
def secret(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A "local file of the worker" (e.g. another job's source): an H.264 MPEG-TS clip, plus
    the same clip as ``secret.mp4`` next to it."""
    root = tmp_path_factory.mktemp("worker")
    ts = root / "secret.ts"
    ffmpeg(*_VIDEO, *_X264, str(ts))
    ffmpeg("-i", str(ts), "-c", "copy", str(root / "secret.mp4"))
    return ts


def _playlist(target: str) -> str:
    return (
        "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:10\n"
        f"#EXTINF:{SECONDS}.0,\n{target}\n#EXT-X-ENDLIST\n"
    )


def _exploits(secret: Path) -> dict[str, str]:
    return {
        "hls-file-url": _playlist(f"file://{secret}"),
        "hls-relative": _playlist(secret.name),  # resolved against the playlist's own path
        "ffconcat": f"ffconcat version 1.0\nfile '{secret.with_suffix('.mp4').name}'\n",
    }


@pytest.mark.parametrize("exploit", ["hls-file-url", "hls-relative", "ffconcat"])
async def test_the_exploit_is_real_without_a_whitelist(secret: Path, exploit: str) -> None:
    """The crafted source does make a plain ffprobe read the local clip (so the refusals below
    are not refusals of a broken file)."""
    src = secret.parent / f"{exploit}.mp4"
    src.write_text(_exploits(secret)[exploit])
    probed = ffprobe(src)
    fmt = probed["format"]
    assert isinstance(fmt, dict) and fmt["format_name"] in {"hls", "concat"}
    streams = probed["streams"]
    assert isinstance(streams, list)
    assert [(s["codec_name"], s["width"]) for s in streams] == [("h264", 320)]


@pytest.mark.parametrize("ext", EXTENSIONS)
@pytest.mark.parametrize("exploit", ["hls-file-url", "hls-relative", "ffconcat"])
async def test_probe_refuses_a_playlist_whatever_type_it_claims(
    secret: Path, tmp_path: Path, exploit: str, ext: str
) -> None:
    src = secret.parent / f"{exploit}-{tmp_path.name}.{ext}"  # next to the target: relative works
    src.write_text(_exploits(secret)[exploit])
    with pytest.raises(TranscodeError) as err:
        await probe(src, timeout_s=60)
    assert err.value.rung == "probe"
    demuxer = "concat" if exploit == "ffconcat" else "hls"
    assert err.value.reason.startswith(f"format {demuxer} not allowed here (allowed: ")
    assert str(secret.parent) not in err.value.reason  # no local path in what the owner sees


async def test_probe_names_the_refused_format(secret: Path) -> None:
    src = secret.parent / "named.mp4"
    src.write_text(_exploits(secret)["hls-file-url"])
    with pytest.raises(TranscodeError) as err:
        await probe(src, timeout_s=60)
    assert err.value.reason == (
        "format hls not allowed here (allowed: mov,mp4,m4a,3gp,3g2,mj2)"
    )


async def test_the_pipeline_refuses_it_before_any_output(secret: Path, tmp_path: Path) -> None:
    src = secret.parent / "source.mp4"
    src.write_text(_exploits(secret)["hls-file-url"])
    out = tmp_path / "out"
    with pytest.raises(TranscodeError) as err:
        await transcode(src, out, timeout_s=60, semaphore=None, on_rung_done=None)
    assert err.value.rung == "probe" and "hls" in err.value.reason
    assert not out.exists()


async def test_ffmpeg_itself_opens_only_the_probed_demuxer(secret: Path, tmp_path: Path) -> None:
    """Should the file change between probe and encode (or probe be fooled), the encoding
    commands still refuse the playlist: they force the demuxer probe found."""
    info = await probe(secret.with_suffix(".mp4"), timeout_s=60)  # a genuine mp4's MediaInfo
    assert info.format_name == "mov,mp4,m4a,3gp,3g2,mj2"
    src = secret.parent / "swapped.mp4"
    src.write_text(_exploits(secret)["hls-file-url"])
    hls = tmp_path / "hls"
    rungs = plan_ladder(info)
    for rung in rungs:
        (hls / rung.name).mkdir(parents=True)
    with pytest.raises(TranscodeError):
        await run_ffmpeg(ladder_args("ffmpeg", src, hls, info, rungs), rung="all", timeout_s=60)
    assert not [p for p in hls.rglob("*") if p.is_file()]
    thumb = tmp_path / "thumb.jpg"
    with pytest.raises(TranscodeError):
        await run_ffmpeg(thumbnail_args("ffmpeg", src, thumb, info), rung="thumb", timeout_s=60)
    assert not thumb.exists()


def test_every_allowed_demuxer_exists_in_this_ffmpeg() -> None:
    """A typo in FORMATS_BY_TYPE would silently refuse that type's genuine uploads."""
    out = subprocess.run(
        ["ffprobe", "-hide_banner", "-demuxers"], check=True, capture_output=True, text=True
    ).stdout
    names = {ln.split()[1] for ln in out.splitlines() if ln[:3].strip() == "D" and ln[3:4] == " "}
    missing = ALL_FORMATS - names
    assert not missing


@pytest.fixture(scope="module")
def genuine(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One genuine ``source.<ext>`` per canonical extension, each in its own directory."""
    root = tmp_path_factory.mktemp("genuine")
    files = {}
    for ext in EXTENSIONS:
        (root / ext).mkdir()
        files[ext] = root / ext / f"source.{ext}"
        ffmpeg(*GENUINE[ext], str(files[ext]))
    return files


@pytest.mark.parametrize("content_type", sorted(ALLOWED_TYPES))
async def test_a_genuine_file_of_each_accepted_type_is_transcoded(
    genuine: dict[str, Path], tmp_path: Path, content_type: str
) -> None:
    kind, ext = ALLOWED_TYPES[content_type]
    src = genuine[ext]
    info = await probe(src, timeout_s=60)
    assert info.format_name in FORMATS_BY_TYPE[content_type]
    assert info.kind == kind
    result = await transcode(src, tmp_path / "out", timeout_s=120, semaphore=None)
    assert result.kind == kind
    if kind == "image":
        assert result.renditions == () and result.thumbnail_key == "thumb.jpg"
    else:
        assert result.renditions and result.master_key == "hls/master.m3u8"
        last = tmp_path / "out" / "hls" / result.renditions[-1].playlist
        assert "#EXT-X-ENDLIST" in last.read_text()
    assert (tmp_path / "out" / "thumb.jpg").exists() == (kind != "audio")


async def test_a_genuine_file_of_another_type_is_refused(
    genuine: dict[str, Path], tmp_path: Path
) -> None:
    """The container must match the declared type: a WebM uploaded as video/mp4 is refused."""
    src = tmp_path / "source.mp4"
    shutil.copy(genuine["webm"], src)
    with pytest.raises(TranscodeError) as err:
        await probe(src, timeout_s=60)
    assert err.value.reason.startswith("format matroska,webm not allowed here")


async def test_an_unknown_extension_allows_nothing(
    genuine: dict[str, Path], tmp_path: Path
) -> None:
    src = tmp_path / "source.ts"
    shutil.copy(genuine["mpg"], src)
    with pytest.raises(TranscodeError) as err:
        await probe(src, timeout_s=60)
    assert err.value.reason == "unsupported source file type '.ts'"

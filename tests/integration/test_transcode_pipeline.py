"""The transcode pipeline against the real ffmpeg/ffprobe, on media generated with lavfi.

Needs only the ffmpeg binaries (no services), and fails without them: ``make test`` installs
them. Each transcode here is a few seconds of CPU.
"""

from __future__ import annotations

import asyncio
import os
import random
import shutil
import time
from pathlib import Path

import pytest

from streams.transcode.ffmpeg_runner import TranscodeError
from streams.transcode.ladder import Rung
from streams.transcode.pipeline import TranscodeResult, transcode
from tests.media_tools import ffmpeg, ffprobe

pytestmark = pytest.mark.integration

SECONDS = 4
LONG_LOOPS = 14  # the long source is the clip played 1 + LONG_LOOPS times: 60 s
PROCESS_WAIT_S = 60






@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    missing = [tool for tool in ("ffmpeg", "ffprobe") if shutil.which(tool) is None]
    if missing:  # not a skip: a runner without ffmpeg must not pass by skipping these
        pytest.fail(f"{' and '.join(missing)} not on PATH: install ffmpeg (make test does)")
    root = tmp_path_factory.mktemp("media")
    files = {
        "video": root / "clip.mp4",
        "audio": root / "tone.m4a",
        "image": root / "still.png",
        "corrupt": root / "corrupt.mp4",
    }
    ffmpeg(
        "-f",
        "lavfi",
        "-i",
        f"testsrc2=size=1280x720:rate=30:duration={SECONDS}",
        "-f",
        "lavfi",
        "-i",
        f"sine=frequency=440:sample_rate=48000:duration={SECONDS}",
        "-c:v",
        "libx264",
        "-preset",
        "ultrafast",
        "-pix_fmt",
        "yuv420p",
        "-c:a",
        "aac",
        "-shortest",
        str(files["video"]),
    )
    ffmpeg(
        "-f",
        "lavfi",
        "-i",
        f"sine=frequency=440:sample_rate=48000:duration={SECONDS}",
        "-c:a",
        "aac",
        str(files["audio"]),
    )
    ffmpeg("-f", "lavfi", "-i", "testsrc2=size=800x600", "-frames:v", "1", str(files["image"]))
    files["corrupt"].write_bytes(random.Random(7).randbytes(200_000))
    # A valid header (moov first) whose media data stops halfway: ffmpeg itself exits 0 on it.
    faststart = root / "faststart.mp4"
    ffmpeg("-i", str(files["video"]), "-c", "copy", "-movflags", "+faststart", str(faststart))
    files["truncated"] = root / "truncated.mp4"
    files["truncated"].write_bytes(faststart.read_bytes()[: faststart.stat().st_size // 2])
    # Long enough that no rung finishes within the short timeouts below (copied, not encoded).
    files["long"] = root / "long.mp4"
    ffmpeg("-stream_loop", str(LONG_LOOPS), "-i", str(files["video"]), "-c", "copy",
            str(files["long"]))
    return files


def _ffmpeg_procs_touching(path: Path) -> list[str]:
    """Command lines of live processes mentioning ``path`` (ffmpeg we may have left behind)."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if str(path) in cmdline and "ffmpeg" in cmdline:
            found.append(cmdline)
    return found


def _variants(master: str) -> list[str]:
    return [ln for ln in master.splitlines() if ln and not ln.startswith("#")]


# The full ladder of a 1280x720 source with audio, highest first. BANDWIDTH = ceil((maxrate
# + audio kbit/s) * 1.10) * 1000 with maxrate = ceil(video kbit/s * 1.07); codecs: H.264 High
# at level 3.2 (720p at up to 60 fps) or 3.1, and AAC-LC.
MASTER_1280x720 = """\
#EXTM3U
#EXT-X-VERSION:3
#EXT-X-INDEPENDENT-SEGMENTS
#EXT-X-STREAM-INF:BANDWIDTH=3437000,RESOLUTION=1280x720,CODECS="avc1.640020,mp4a.40.2"
720p/index.m3u8
#EXT-X-STREAM-INF:BANDWIDTH=1754000,RESOLUTION=854x480,CODECS="avc1.64001f,mp4a.40.2"
480p/index.m3u8
#EXT-X-STREAM-INF:BANDWIDTH=1048000,RESOLUTION=640x360,CODECS="avc1.64001f,mp4a.40.2"
360p/index.m3u8
"""


async def test_video_ladder_lowest_rung_first_and_playable(
    media: dict[str, Path], tmp_path: Path
) -> None:
    out = tmp_path / "asset"
    seen: list[tuple[str, bool, bool, list[str]]] = []

    async def on_rung_done(rung: Rung) -> None:
        hls = out / "hls"
        seen.append(
            (
                rung.name,
                "#EXT-X-ENDLIST" in (hls / rung.playlist).read_text(),
                (hls / "720p" / "index.m3u8").exists(),  # the top rung, still encoding for 360p
                _variants((hls / "master.m3u8").read_text()),
            )
        )

    result = await transcode(
        media["video"],
        out,
        only_rungs=None,
        timeout_s=120,
        semaphore=asyncio.Semaphore(1),
        on_rung_done=on_rung_done,
    )

    assert [s[0] for s in seen] == ["360p", "480p", "720p"]
    assert all(s[1] for s in seen), "a rung was reported before its playlist was complete"
    assert seen[0][2] is False, "360p should be reported before 720p is written"
    assert seen[0][3] == ["360p/index.m3u8"]
    assert (result.kind, result.width, result.height) == ("video", 1280, 720)
    assert result.duration_s == pytest.approx(SECONDS, abs=0.2)
    assert [r.name for r in result.renditions] == ["360p", "480p", "720p"]
    assert (result.master_key, result.thumbnail_key) == ("hls/master.m3u8", "thumb.jpg")

    master = (out / result.master_key).read_text()
    assert master == MASTER_1280x720
    for rung in result.renditions:
        playlist = (out / TranscodeResult.playlist_key(rung)).read_text()
        segments = [ln for ln in playlist.splitlines() if ln and not ln.startswith("#")]
        assert "#EXT-X-PLAYLIST-TYPE:VOD" in playlist and "#EXT-X-ENDLIST" in playlist
        assert segments[0] == "seg_00000.ts" and 2 <= len(segments) <= 3  # ~2 s segments
        assert all((out / "hls" / rung.name / s).stat().st_size > 0 for s in segments)

    # ffprobe opens the master and follows the relative variant URIs.
    probed = ffprobe(out / "hls" / "master.m3u8")
    streams = probed["streams"]
    assert isinstance(streams, list)
    sizes = {(s["width"], s["height"]) for s in streams if s["codec_type"] == "video"}
    assert sizes == {(1280, 720), (854, 480), (640, 360)}
    assert {s["codec_name"] for s in streams if s["codec_type"] == "audio"} == {"aac"}

    thumb = ffprobe(out / "thumb.jpg")["streams"]
    assert isinstance(thumb, list)
    assert (thumb[0]["codec_name"], thumb[0]["width"], thumb[0]["height"]) == ("mjpeg", 640, 360)

    # Re-run only one rung: the others are left alone, the master still lists the full ladder.
    kept = (out / "hls" / "720p" / "seg_00000.ts").stat().st_mtime_ns
    rerun = await transcode(
        media["video"], out, only_rungs={"480p"}, timeout_s=120, semaphore=None, on_rung_done=None
    )
    assert [r.name for r in rerun.renditions] == ["480p"]
    assert (out / "hls" / "720p" / "seg_00000.ts").stat().st_mtime_ns == kept
    assert (out / "hls" / "master.m3u8").read_text() == master
    with pytest.raises(TranscodeError, match="no such rung"):
        await transcode(
            media["video"],
            out,
            only_rungs={"1080p"},
            timeout_s=120,
            semaphore=None,
            on_rung_done=None,
        )


async def test_audio_gets_two_aac_renditions(media: dict[str, Path], tmp_path: Path) -> None:
    done: list[str] = []
    result = await transcode(
        media["audio"],
        tmp_path,
        only_rungs=None,
        timeout_s=60,
        semaphore=None,
        on_rung_done=lambda r: done.append(r.name),
    )
    assert result.kind == "audio" and result.thumbnail_key is None
    assert done == ["a64k", "a128k"]
    master = (tmp_path / "hls" / "master.m3u8").read_text()
    assert _variants(master) == ["a128k/index.m3u8", "a64k/index.m3u8"]
    assert 'CODECS="mp4a.40.2"' in master and "RESOLUTION" not in master
    streams = ffprobe(tmp_path / "hls" / "master.m3u8")["streams"]
    assert isinstance(streams, list)
    assert {s["codec_name"] for s in streams} == {"aac"}


async def test_image_gets_only_a_thumbnail(media: dict[str, Path], tmp_path: Path) -> None:
    result = await transcode(
        media["image"], tmp_path, only_rungs=None, timeout_s=60, semaphore=None, on_rung_done=None
    )
    assert (result.kind, result.renditions, result.master_key) == ("image", (), None)
    assert not (tmp_path / "hls" / "master.m3u8").exists()
    thumb = ffprobe(tmp_path / "thumb.jpg")["streams"]
    assert isinstance(thumb, list)
    assert (thumb[0]["width"], thumb[0]["height"]) == (640, 480)


@pytest.mark.parametrize("name", ["corrupt.mp4", "corrupt.mp3", "corrupt.png", "corrupt.bin"])
async def test_corrupt_input_fails_cleanly(
    media: dict[str, Path], tmp_path: Path, name: str
) -> None:
    src = tmp_path / name
    shutil.copy(media["corrupt"], src)
    with pytest.raises(TranscodeError) as err:
        await transcode(
            src, tmp_path / "out", only_rungs=None, timeout_s=60, semaphore=None, on_rung_done=None
        )
    assert err.value.code == "TRANSCODE_FAILED"
    assert err.value.rung in {"probe", "thumb"} and err.value.reason


async def test_truncated_input_fails_on_the_rung(media: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(TranscodeError, match="input truncated or corrupt") as err:
        await transcode(
            media["truncated"],
            tmp_path,
            only_rungs=None,
            timeout_s=60,
            semaphore=None,
            on_rung_done=None,
        )
    assert err.value.rung == "360p"


async def _assert_no_ffmpeg_left(out: Path) -> None:
    deadline = time.monotonic() + 2.0
    while _ffmpeg_procs_touching(out) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert _ffmpeg_procs_touching(out) == []


async def test_timeout_kills_ffmpeg(media: dict[str, Path], tmp_path: Path) -> None:
    """The probe fits in the timeout and the 60 s source's encodes do not: the error names an
    ffmpeg process (the lowest rung's, or the one encoding the others), and none is left."""
    out = tmp_path / "out"
    with pytest.raises(TranscodeError, match="timed out") as err:
        await transcode(
            media["long"], out, only_rungs=None, timeout_s=2, semaphore=None, on_rung_done=None
        )
    assert err.value.rung in {"360p", "480p+720p"}
    await _assert_no_ffmpeg_left(out)


async def test_cancel_and_failing_callback_kill_ffmpeg(
    media: dict[str, Path], tmp_path: Path
) -> None:
    out = tmp_path / "cancelled"
    task = asyncio.create_task(
        transcode(
            media["long"], out, only_rungs=None, timeout_s=60, semaphore=None, on_rung_done=None
        )
    )
    deadline = time.monotonic() + PROCESS_WAIT_S
    while not _ffmpeg_procs_touching(out):
        assert not task.done(), f"the transcode ended before ffmpeg was seen: {task!r}"
        assert time.monotonic() < deadline, "no ffmpeg process appeared"
        await asyncio.sleep(0.02)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert _ffmpeg_procs_touching(out) == []  # killed and reaped before the task ended

    out = tmp_path / "callback"

    def boom(rung: Rung) -> None:
        raise RuntimeError(f"upload of {rung.name} failed")

    with pytest.raises(RuntimeError, match="upload of 360p failed"):
        await transcode(
            media["video"], out, only_rungs=None, timeout_s=60, semaphore=None, on_rung_done=boom
        )
    assert _ffmpeg_procs_touching(out) == []

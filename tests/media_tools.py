"""ffmpeg and ffprobe as the media tests call them (the real binaries, no wrapper of ours)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path


def ffmpeg(*args: str) -> None:
    subprocess.run(
        ["ffmpeg", "-hide_banner", "-nostdin", "-loglevel", "error", "-y", *args],
        check=True,
        timeout=120,
    )


def ffprobe(path: Path) -> dict[str, object]:
    """ffprobe's JSON of ``path``, plain: no format or protocol whitelist."""
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-show_streams", "-show_format", "-of", "json", str(path)],
        check=True,
        capture_output=True,
        timeout=60,
    ).stdout
    result: dict[str, object] = json.loads(out)
    return result

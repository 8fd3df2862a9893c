"""Running ffmpeg as an asyncio subprocess: concurrency limit, timeout, stderr tail, clean kill.

Contracts:
- ``run_ffmpeg`` never blocks the event loop (``asyncio.create_subprocess_exec``); it waits for
  a slot of the ``semaphore`` (if given) BEFORE starting the process, and ``timeout_s`` counts
  from the start of the process, not from the wait for the slot.
- On timeout, on a non-zero exit and on cancellation the process is killed (SIGKILL) and reaped
  before the call returns or raises: no ffmpeg is left running behind a failed call.
- Failures raise ``TranscodeError(reason, rung)``; the last ``TAIL_LINES`` of stderr ride along.

Limit: if the Python process itself is SIGKILLed, a running ffmpeg is orphaned (no PDEATHSIG
without an unsafe ``preexec_fn``); it finishes or fails on its own.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import shutil
import time
from collections.abc import Sequence

from medialog.domain.errors import MedialogError
from medialog.runtime.metrics import TRANSCODE_RUNG_SECONDS

log = logging.getLogger(__name__)

TAIL_LINES = 20
# Prepended by callers to every ffmpeg command: no stdin reading, only errors on stderr.
QUIET = ("-hide_banner", "-nostdin", "-loglevel", "error")


class TranscodeError(MedialogError):
    """The media could not be processed. ``rung`` names the rung(s) being produced, or the stage
    (``probe``, ``thumb``, ``master``) when the failure is not one rung's; ``reason`` is the
    human-readable cause (usually ffmpeg's last stderr line); ``stderr_tail`` the last lines."""

    code = "TRANSCODE_FAILED"

    def __init__(self, reason: str, rung: str | None = None, *, stderr_tail: str = "") -> None:
        where = f" [{rung}]" if rung else ""
        super().__init__(
            f"transcode failed{where}: {reason}",
            details=[{"rung": rung, "reason": reason, "stderr_tail": stderr_tail}],
        )
        self.reason = reason
        self.rung = rung
        self.stderr_tail = stderr_tail


async def _drain(stream: asyncio.StreamReader, tail: collections.deque[str]) -> None:
    # Read line by line so a chatty ffmpeg can never fill the pipe and stall; keep the tail.
    while True:
        line = await stream.readline()
        if not line:
            return
        text = line.decode("utf-8", "replace").rstrip()
        if text:
            tail.append(text)


async def _kill(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()


async def run_ffmpeg(
    args: Sequence[str],
    *,
    rung: str,
    timeout_s: float,
    semaphore: asyncio.Semaphore | None = None,
    nice: int = 0,
) -> list[str]:
    """Run ``args`` (``args[0]`` is the binary) to completion; return the stderr tail lines.
    ``rung`` names what it makes: rung names joined by ``+`` (each gets the run's time in
    ``TRANSCODE_RUNG_SECONDS`` when it succeeds) or a stage (``thumb``). ``nice`` > 0 runs it
    at a lower CPU priority (through nice(1), which execs in place, so the pid we kill is
    ffmpeg's, with every thread it starts inheriting the priority).

    Raises ``TranscodeError`` on a missing binary, a non-zero exit or ``timeout_s`` elapsing.
    """
    nice_bin = shutil.which("nice") if nice > 0 else None
    if nice_bin is not None:
        args = [nice_bin, "-n", str(nice), *args]
    slot: contextlib.AbstractAsyncContextManager[object] = (
        semaphore if semaphore is not None else contextlib.nullcontext()
    )
    async with slot:
        started = time.monotonic()
        try:
            proc = await asyncio.create_subprocess_exec(
                *args,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.PIPE,
            )
        except OSError as exc:
            raise TranscodeError(f"cannot start {args[0]}: {exc}", rung) from exc
        log.debug("ffmpeg pid=%s started for %s", proc.pid, rung)
        tail: collections.deque[str] = collections.deque(maxlen=TAIL_LINES)
        assert proc.stderr is not None
        reader = asyncio.create_task(_drain(proc.stderr, tail))
        try:
            try:
                await asyncio.wait_for(proc.wait(), timeout_s)
            except TimeoutError:
                await _kill(proc)
                raise TranscodeError(
                    f"timed out after {timeout_s:g}s", rung, stderr_tail="\n".join(tail)
                ) from None
            await reader
        finally:
            # Cancellation or any error above: never leave the process or the reader behind.
            await _kill(proc)
            if not reader.done():
                reader.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await reader
        elapsed = time.monotonic() - started
        if proc.returncode != 0:
            last = tail[-1] if tail else "no error output"
            log.warning(
                "ffmpeg for %s exited %s after %.1fs: %s", rung, proc.returncode, elapsed, last
            )
            raise TranscodeError(
                f"ffmpeg exited with {proc.returncode}: {last}", rung, stderr_tail="\n".join(tail)
            )
        log.info("ffmpeg for %s done in %.1fs", rung, elapsed)
        for name in rung.split("+"):
            TRANSCODE_RUNG_SECONDS.labels(name).observe(elapsed)
        return list(tail)

"""The processes of a running ``medialog dev``: its own tree plus PostgreSQL's (``pg_ctl``
starts the server outside it), with each one's name, resident memory and CPU time (Linux
``/proc``). Used by ``bench/memory.py`` and ``bench/ingest.py``."""

from __future__ import annotations

import os
from pathlib import Path

_TICK = os.sysconf("SC_CLK_TCK")


def _stat(pid: int) -> list[str]:
    """The fields of ``/proc/<pid>/stat`` after the command name (state is [0], ppid [1])."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def descendants(root: int) -> set[int]:
    """``root`` and every process below it."""
    children: dict[int, list[int]] = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                children.setdefault(int(_stat(int(d.name))[1]), []).append(int(d.name))
            except (OSError, IndexError, ValueError):
                continue
    seen, todo = set(), [root]
    while todo:
        pid = todo.pop()
        if pid not in seen:
            seen.add(pid)
            todo.extend(children.get(pid, []))
    return seen


def stack_pids(dev_pid: int, data_dir: Path) -> set[int]:
    """Every process of the ``medialog dev`` at ``dev_pid`` running on ``data_dir``."""
    pids = descendants(dev_pid)
    postmaster = data_dir / "postgres" / "data" / "postmaster.pid"
    if postmaster.exists():
        pids |= descendants(int(postmaster.read_text().split()[0]))
    return pids


def cmdline(pid: int, width: int = 60) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()[:width]
    except OSError:
        return "?"


def name(pid: int) -> str:
    """A short name: ``medialog dev``, ``medialog run --roles …``, a script's file name,
    ``postgres`` for every PostgreSQL process, else the program's name."""
    words = cmdline(pid, 500).split()
    if not words:
        return "?"
    if words[0].startswith("postgres"):
        return "postgres"
    for i, word in enumerate(words[:3]):
        if word == "medialog" or word.endswith("/bin/medialog"):
            return " ".join(["medialog", *words[i + 1:i + (4 if "--roles" in words else 2)]])
    if len(words) > 1 and words[1].endswith(".py"):
        return Path(words[1]).name
    return Path(words[0]).name


def rss_kb(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def cpu_s(pid: int) -> float:
    """CPU time used so far (user + system), 0 for a process that is gone."""
    try:
        fields = _stat(pid)
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / _TICK

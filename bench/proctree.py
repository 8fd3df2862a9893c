"""The processes of a running ``medialog dev`` (Linux ``/proc``): each one's name, resident
memory and CPU time. Used by ``bench/memory.py``, ``bench/ingest.py`` and ``bench/soak.py``.

A stack's processes are the tree of ``medialog dev`` (its roles child, SeaweedFS, Kafka's
java) and every process working in its data dir or naming it on its command line: PostgreSQL's
server is nobody's child (``pg_ctl`` detaches it), and its processes work in their cluster,
which lives outside the data dir when the data dir's ``postgres.location`` says so."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path

_TICK = os.sysconf("SC_CLK_TCK")


def _stat(pid: int) -> list[str]:
    """The fields of ``/proc/<pid>/stat`` after the command name (state is [0], ppid [1])."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def _pids() -> Iterator[int]:
    return (int(d.name) for d in Path("/proc").iterdir() if d.name.isdigit())


def descendants(root: int) -> set[int]:
    """``root`` and every process below it."""
    children: dict[int, list[int]] = {}
    for pid in _pids():
        try:
            children.setdefault(int(_stat(pid)[1]), []).append(pid)
        except (OSError, IndexError, ValueError):
            continue
    seen, todo = set(), [root]
    while todo:
        pid = todo.pop()
        if pid not in seen:
            seen.add(pid)
            todo.extend(children.get(pid, []))
    return seen


def _roots(data_dir: Path) -> list[Path]:
    """The data dir and, when it lives elsewhere, PostgreSQL's cluster."""
    data_dir = data_dir.resolve()
    pointer = data_dir / "postgres.location"
    outside = [Path(pointer.read_text().strip())] if pointer.exists() else []
    return [data_dir, *outside]


def _works_in(pid: int, roots: Iterable[Path]) -> bool:
    """Whether ``pid``'s working directory or one of its arguments is inside one of ``roots``."""
    try:
        cwd = Path(os.readlink(f"/proc/{pid}/cwd"))
        args = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return False
    return any(cwd.is_relative_to(root) or any(f"{root}/" in arg for arg in args)
               for root in roots)


def stack_pids(dev_pid: int, data_dir: Path) -> set[int]:
    """Every process of the ``medialog dev`` at ``dev_pid`` running on ``data_dir``."""
    roots = _roots(data_dir)
    return descendants(dev_pid) | {pid for pid in _pids() if _works_in(pid, roots)}


def cmdline(pid: int, width: int = 60) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()[:width]
    except OSError:
        return "?"


def name(pid: int) -> str:
    """A short name: ``medialog dev``, ``medialog run --roles …``, a script's file name,
    ``postgres`` for every PostgreSQL process, ``kafka`` for the broker's java, else the
    program's name."""
    words = cmdline(pid, 4096).split()
    if not words:
        return "?"
    if words[0].startswith("postgres"):
        return "postgres"
    if "kafka.Kafka" in words:
        return "kafka"
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


def per_name(pids: Iterable[int] | Mapping[int, str],
             measure: Callable[[int], float]) -> dict[str, float]:
    """``measure`` of each of ``pids`` (``rss_kb``, ``cpu_s``) summed per process name, or per
    the label ``pids`` maps it to; largest first."""
    named = pids if isinstance(pids, Mapping) else {pid: name(pid) for pid in pids}
    out: dict[str, float] = {}
    for pid, label in named.items():
        out[label] = out.get(label, 0.0) + measure(pid)
    return dict(sorted(out.items(), key=lambda item: -item[1]))


def cpu_s(pid: int) -> float:
    """CPU time used so far (user + system), 0 for a process that is gone."""
    try:
        fields = _stat(pid)
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / _TICK

"""``Progress`` on a terminal and elsewhere, with a fake clock and a fake stream."""

from __future__ import annotations

import io

from medialog.runtime.progress import BAR_WIDTH, Progress, clock_time


class Stream(io.StringIO):
    def __init__(self, *, tty: bool) -> None:
        super().__init__()
        self.tty = tty

    def isatty(self) -> bool:
        return self.tty


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_elsewhere_a_line_at_the_start_at_most_every_few_seconds_and_at_the_end() -> None:
    stream, clock = Stream(tty=False), Clock()
    progress = Progress(1000, "rebuild engagement", stream, every_s=5, clock=clock)
    for _ in range(10):  # 100 records a second
        clock.now += 1
        progress.advance(100)
    progress.close()
    progress.close()  # once only
    assert stream.getvalue().splitlines() == [
        "rebuild engagement: 1,000 records to go",
        "rebuild engagement: 500/1,000 records (50%), 100/s, ETA 0:00:05",
        "rebuild engagement: 1,000/1,000 records (100%), 100/s, ETA 0:00:00",
        "rebuild engagement: done, 1,000/1,000 records in 0:00:10 (100/s)",
    ]


def test_work_that_ends_short_of_its_total_says_it_stopped() -> None:
    stream, clock = Stream(tty=False), Clock()
    progress = Progress(300, "rebuild analytics", stream, unit="rows", clock=clock)
    clock.now += 2
    progress.advance(100)
    progress.close()
    assert stream.getvalue().splitlines()[-1] == (
        "rebuild analytics: stopped, 100/300 rows in 0:00:02 (50/s)")


def test_on_a_terminal_one_line_is_redrawn_at_most_ten_times_a_second() -> None:
    stream, clock = Stream(tty=True), Clock()
    progress = Progress(200, "rebuild", stream, clock=clock)
    for _ in range(100):  # a batch every 1/64 s, 6.4 per redraw
        clock.now += 1 / 64
        progress.advance(1)
    clock.now += 0.5
    progress.advance(100)
    progress.close()
    out = stream.getvalue()
    assert out.endswith("\n") and out.count("\n") == 1  # one line, ended when closed
    draws = out.rstrip("\n").split("\r")[1:]
    assert len(draws) == 1 + 100 // 7 + 1 + 1  # the first, one per 7 batches, the last two
    empty, full = "-" * BAR_WIDTH, "#" * BAR_WIDTH
    assert draws[0] == f"rebuild [{empty}] 0/200 records (0%), 0/s, ETA ?\x1b[K"
    half = "#" * (BAR_WIDTH // 2) + "-" * (BAR_WIDTH // 2)
    assert draws[14] == f"rebuild [{half}] 98/200 records (49%), 64/s, ETA 0:00:01\x1b[K"
    assert draws[-1] == f"rebuild [{full}] 200/200 records (100%), 97/s, ETA 0:00:00\x1b[K"


def test_more_than_the_total_stays_a_full_bar() -> None:
    stream = Stream(tty=True)
    progress = Progress(0, "x", stream, clock=Clock())
    progress.advance(5)
    progress.close()
    assert f"[{'#' * BAR_WIDTH}] 5/0 records (100%)" in stream.getvalue()


def test_clock_time() -> None:
    assert clock_time(0) == "0:00:00"
    assert clock_time(3725.9) == "1:02:05"

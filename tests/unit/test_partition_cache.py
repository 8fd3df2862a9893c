"""The rows a projection remembers between batches (``runner.PartitionCache``) and the offsets
it stores (``tracking.tops``): pure rules, no database."""

from __future__ import annotations

from medialog.tracking import Position, Stored, tops
from projections.runner import PartitionCache

VIEWS_0, VIEWS_1 = ("events.views", 0), ("events.views", 1)


def cache(max_rows: int = 100) -> PartitionCache[str, int]:
    return PartitionCache(max_rows)


def test_nothing_is_known_before_a_commit():
    c = cache()
    c.check({VIEWS_0: Stored(-1, None)})
    assert c.get(VIEWS_0, "a") is None


def test_committed_rows_are_known_while_the_stored_version_is_the_committed_one():
    c = cache()
    c.commit({VIEWS_0: "100"}, [(VIEWS_0, "a", 1)])
    c.check({VIEWS_0: Stored(9, "100")})
    assert c.get(VIEWS_0, "a") == 1
    assert c.get(VIEWS_1, "a") is None  # remembered for the partition that wrote it only
    assert c.get(VIEWS_0, "b") is None


def test_another_version_forgets_the_partition_and_only_that_one():
    c = cache()
    c.commit({VIEWS_0: "100", VIEWS_1: "100"}, [(VIEWS_0, "a", 1), (VIEWS_1, "b", 2)])
    c.check({VIEWS_0: Stored(12, "107"), VIEWS_1: Stored(9, "100")})  # someone applied more
    assert c.get(VIEWS_0, "a") is None
    assert c.get(VIEWS_1, "b") == 2


def test_a_missing_offsets_row_forgets_the_partition():
    c = cache()
    c.commit({VIEWS_0: "100"}, [(VIEWS_0, "a", 1)])
    c.check({VIEWS_0: Stored(-1, None)})  # e.g. a rebuild emptied the projection
    assert c.get(VIEWS_0, "a") is None


def test_rows_from_before_a_forgetting_stay_forgotten_after_the_next_commit():
    c = cache()
    c.commit({VIEWS_0: "100"}, [(VIEWS_0, "a", 1), (VIEWS_0, "b", 1)])
    c.check({VIEWS_0: Stored(20, "150")})
    c.commit({VIEWS_0: "151"}, [(VIEWS_0, "b", 2)])  # b was read again, a was not
    c.check({VIEWS_0: Stored(21, "151")})
    assert c.get(VIEWS_0, "a") is None
    assert c.get(VIEWS_0, "b") == 2


def test_rows_not_touched_by_a_batch_stay_valid_across_its_commit():
    c = cache()
    c.commit({VIEWS_0: "100"}, [(VIEWS_0, "a", 1)])
    c.check({VIEWS_0: Stored(9, "100")})
    c.commit({VIEWS_0: "101"}, [(VIEWS_0, "b", 5)])
    c.check({VIEWS_0: Stored(10, "101")})
    assert (c.get(VIEWS_0, "a"), c.get(VIEWS_0, "b")) == (1, 5)


def test_a_batch_that_did_not_commit_changes_nothing():
    c = cache()
    c.commit({VIEWS_0: "100"}, [(VIEWS_0, "a", 1)])
    c.check({VIEWS_0: Stored(9, "100")})  # its rollback: no commit() call, same stored row
    c.check({VIEWS_0: Stored(9, "100")})
    assert c.get(VIEWS_0, "a") == 1


def test_the_least_recently_committed_rows_go_first_beyond_the_bound():
    c = cache(max_rows=2)
    c.commit({VIEWS_0: "1"}, [(VIEWS_0, "a", 1), (VIEWS_0, "b", 1)])
    c.commit({VIEWS_0: "2"}, [(VIEWS_0, "a", 2)])  # a again: b is now the oldest
    c.commit({VIEWS_0: "3"}, [(VIEWS_0, "c", 1)])
    assert [c.get(VIEWS_0, k) for k in "abc"] == [2, None, 1]


def test_split_gives_the_rows_still_valid_and_the_keys_to_read():
    c = cache()
    c.commit({VIEWS_0: "100", VIEWS_1: "100"}, [(VIEWS_0, "a", 1), (VIEWS_1, "b", 2)])
    c.check({VIEWS_0: Stored(9, "100"), VIEWS_1: Stored(4, "120")})
    assert c.split({"a": VIEWS_0, "b": VIEWS_1, "c": VIEWS_0}) == ({"a": 1}, ["b", "c"])


def test_tops_are_the_highest_offset_per_partition_sorted():
    positions = [Position("t", 1, 5), Position("t", 0, 7), Position("t", 1, 3),
                 Position("s", 0, 2)]
    assert tops(positions) == {("s", 0): 2, ("t", 0): 7, ("t", 1): 5}
    assert list(tops(positions)) == [("s", 0), ("t", 0), ("t", 1)]


def test_forget_drops_the_stale_rows_of_one_partition_only():
    c = cache()
    c.commit({VIEWS_0: "100", VIEWS_1: "100"},
             [(VIEWS_0, "a", 1), (VIEWS_0, "b", 9), (VIEWS_1, "c", 1)])
    c.forget(VIEWS_0, lambda value: value < 5)  # e.g. the sessions a prune deleted
    c.check({VIEWS_0: Stored(9, "100"), VIEWS_1: Stored(4, "100")})
    assert [c.get(VIEWS_0, "a"), c.get(VIEWS_0, "b"), c.get(VIEWS_1, "c")] == [None, 9, 1]

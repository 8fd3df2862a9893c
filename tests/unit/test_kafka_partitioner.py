"""The api's partitioner puts every key where aiokafka's (and Kafka's Java client) would."""

from __future__ import annotations

import uuid

import pytest
from aiokafka.partitioner import DefaultPartitioner

from medialog.kafka import partition_of


@pytest.mark.parametrize("partitions", [1, 3, 4, 12])
def test_same_partition_as_the_default_partitioner(partitions: int) -> None:
    every = list(range(partitions))
    keys = [str(uuid.UUID(int=i * 7919)).encode() for i in range(500)] + [b"", b"a", b"\xff" * 9]
    for key in keys * 2:  # the second round is answered from the cache
        assert partition_of(key, every, every) == DefaultPartitioner()(key, every, every)


def test_no_key_picks_an_available_partition() -> None:
    assert partition_of(None, [0, 1, 2], [2]) == 2

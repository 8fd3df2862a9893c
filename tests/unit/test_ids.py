"""Random ids (request ids, report ids): version 4 UUIDs in their canonical text form."""

from __future__ import annotations

import uuid

from medialog.ids import random_uuid


def test_random_uuids_are_distinct_version_4_uuids() -> None:
    ids = [random_uuid() for _ in range(10_000)]
    assert len(set(ids)) == len(ids)
    for rid in ids[:1000]:
        parsed = uuid.UUID(rid)
        assert str(parsed) == rid
        assert (parsed.version, parsed.variant) == (4, uuid.RFC_4122)

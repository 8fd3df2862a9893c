"""Request ids made by the api: random version 4 UUIDs in their canonical text form."""

from __future__ import annotations

import uuid

from medialog.api.request_id import new_request_id


def test_new_request_ids_are_distinct_version_4_uuids() -> None:
    ids = [new_request_id() for _ in range(10_000)]
    assert len(set(ids)) == len(ids)
    for rid in ids[:1000]:
        parsed = uuid.UUID(rid)
        assert str(parsed) == rid
        assert (parsed.version, parsed.variant) == (4, uuid.RFC_4122)

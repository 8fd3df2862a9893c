"""The engagement fold's tolerant reader (``projections.postgres.engagement_fold.read_raw``)
against the full decoder: on every record the fold may meet, it reads what ``decode_event``
would give."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from medialog.domain import events as e
from medialog.domain.views import Report
from medialog.envelope import dataschema_uri, decode_event, encode_event, make_event
from projections.postgres.engagement_fold import (
    READER_SCHEMAS,
    LikeIn,
    Read,
    Undecodable,
    ViewIn,
    read_event,
    read_raw,
)

WHEN = datetime(2026, 5, 6, 7, 8, 9, 123000, tzinfo=UTC)
VIEW = e.ViewReported(asset_id="a1", owner_id="o1", viewer_key="u1", signed_in=True,
                      session_id="s1", watch_seconds=3.5, duration_s=120.0, position=7.0,
                      device="web", country="DE", referrer="https://example.org/")
ANONYMOUS = e.ViewReported(asset_id="a2", owner_id="o1", viewer_key="h" * 64, signed_in=False,
                           session_id="s2", watch_seconds=0.0, duration_s=None)
LIKED = e.Liked(asset_id="a1", user_id="u2", owner_id="o1")
UNLIKED = e.Unliked(asset_id="a1", user_id="u2", owner_id="o1")


REMOVE = object()


def raw(payload: Any, seq: int | None = None, **changes: Any) -> bytes:
    """The encoded event, with envelope attributes (``data_*``: payload fields) changed or,
    given ``REMOVE``, removed."""
    doc = json.loads(encode_event(make_event(payload, subject="a1", event_id="e-1", time=WHEN,
                                             sequence=seq)))
    for name, value in changes.items():
        target, key = (doc["data"], name[5:]) if name.startswith("data_") else (doc, name)
        if value is REMOVE:
            target.pop(key, None)
        else:
            target[key] = value
    return json.dumps(doc).encode()


def full_decoder(record: bytes) -> Read:
    try:
        return read_event(*decode_event(record))
    except ValueError:
        return Undecodable.RECORD


RECORDS = {
    "view, signed in, every field": raw(VIEW),
    "view, anonymous, no duration, optional fields absent": raw(ANONYMOUS),
    "like": raw(LIKED, seq=3),
    "unlike": raw(UNLIKED, seq=4),
    "like without a sequence": raw(LIKED),
    "like with a null sequence": raw(LIKED, sequence=None),
    "another type": raw(e.MetadataUpdated(asset_id="a1", title="t"), seq=2),
    "view schema, another type": raw(VIEW, type="medialog.something.else"),
    "like type, unlike schema": raw(LIKED, seq=5,
                                    dataschema=dataschema_uri(UNLIKED.TYPE, UNLIKED.VERSION)),
    "view, a later version": raw(VIEW, dataschema=dataschema_uri(VIEW.TYPE, VIEW.VERSION + 1)),
    "view, an older version without upcaster": raw(VIEW, dataschema=dataschema_uri(VIEW.TYPE, 0)),
    "view, an unknown payload field": raw(VIEW, data_quality="hd"),
    "view, watch time as a numeric string": raw(VIEW, data_watch_seconds="2.5"),
    "view, watch time not a number": raw(VIEW, data_watch_seconds="long"),
    "view, no session id": raw(VIEW, data_session_id=REMOVE),
    "like, no user id": raw(LIKED, seq=1, data_user_id=REMOVE),
    "view, time not a time": raw(VIEW, time="yesterday"),
    "view, time as a number": raw(VIEW, time=1778051289),
    "view, time in nanoseconds (pydantic truncates)":
        raw(VIEW, time="2026-05-06T07:08:09.9999999Z"),
    "view, time with a space and an offset": raw(VIEW, time="2026-05-06 07:08:09.5+02:00"),
    "view, time without a zone": raw(VIEW, time="2026-05-06T07:08:09"),
    "view, time without seconds": raw(VIEW, time="2026-05-06T07:08Z"),
    "view, whole watch seconds": raw(VIEW, data_watch_seconds=3),
    "view, signed in as 1": raw(VIEW, data_signed_in=1),
    "view, a schema not a string": raw(VIEW, dataschema=1),
    "like, sequence as a float": raw(LIKED, sequence=3.0),
    "like, sequence beyond 64 bits": raw(LIKED, sequence=2**70),
    "view, a payload field twice (the last one counts)":
        raw(VIEW)[:-2] + b', "watch_seconds": 9.0}}',
    "not UTF-8": b'{"type": "\xff"}',
    "not JSON": b'{"type": "medialog.view.reported"',
    "not an object": b"[1, 2]",
}


@pytest.mark.parametrize("name", RECORDS)
def test_the_reader_reads_what_the_full_decoder_gives(name: str) -> None:
    assert read_raw(RECORDS[name]) == full_decoder(RECORDS[name])


def test_the_records_cover_each_outcome() -> None:
    """Guards the table above: the comparison means something only if every kind occurs."""
    kinds = {type(full_decoder(r)).__name__ for r in RECORDS.values()}
    assert kinds == {"ViewIn", "LikeIn", "NoneType", "Undecodable"}


def test_what_it_reads_of_a_view_and_a_like() -> None:
    assert read_raw(raw(VIEW)) == ViewIn(
        ("a1", "u1", "s1"), True,
        Report(report_id="e-1", at=WHEN, watch_seconds=3.5, duration_s=120.0))
    assert read_raw(raw(UNLIKED, seq=4)) == LikeIn("a1", "u2", False, 4, WHEN)


def test_it_tolerates_attributes_the_fold_does_not_use() -> None:
    """The one difference, by design: an attribute the fold does not read is not checked (our
    producers validate every event; the ClickHouse projection, which stores them all, does)."""
    for record in (raw(VIEW, source=REMOVE), raw(VIEW, data_owner_id=REMOVE)):
        assert full_decoder(record) is Undecodable.RECORD
        assert read_raw(record) == read_raw(raw(VIEW))


def test_its_schemas_are_the_current_versions() -> None:
    for cls, uri in READER_SCHEMAS.items():
        assert uri == dataschema_uri(cls.TYPE, cls.VERSION)

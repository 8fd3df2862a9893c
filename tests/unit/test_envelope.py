import dataclasses
import json
from datetime import UTC, datetime

import pytest

from medialog.domain.commands import CommandMeta, RequestUpload
from medialog.domain.errors import ValidationError
from medialog.domain.events import AssetDeleted, Promoted, UploadRequested
from medialog.envelope import (
    UPCASTERS,
    UndecodableEvent,
    dataschema_uri,
    decode_command,
    decode_event,
    encode_command,
    encode_event,
    event_id,
    make_event,
)

WHEN = datetime(2026, 3, 4, 5, 6, 7, tzinfo=UTC)
META = CommandMeta(command_id="c1", issued_at=WHEN, actor_id="u1", actor_roles=("creator",),
                   correlation_id="r1")
PAYLOAD = UploadRequested(
    asset_id="a1", owner_id="u1", kind="video", filename="c.mp4", content_type="video/mp4",
    size_bytes=10, title="clip", staging_key="k", upload_expires_at=WHEN,
)


def test_event_round_trip_keeps_every_attribute():
    event = make_event(PAYLOAD, subject="a1", event_id=event_id("c1", 0), time=WHEN, sequence=1,
                       actor_id=META.actor_id, actor_roles=META.actor_roles,
                       causation_id=META.command_id, correlation_id=META.correlation_id)
    raw = encode_event(event)
    doc = json.loads(raw)
    assert doc["specversion"] == "1.0" and doc["type"] == "medialog.asset.upload_requested"
    assert doc["subject"] == "a1" and doc["sequence"] == 1 and doc["causationid"] == "c1"
    assert (doc["actorid"] == "u1" and doc["actorroles"] == "creator"
            and doc["correlationid"] == "r1")
    assert doc["dataschema"] == "urn:medialog:events:asset.upload_requested:v1"
    assert doc["time"].startswith("2026-03-04T05:06:07")
    back, payload = decode_event(raw)
    assert back == event and payload == PAYLOAD


def test_event_ids_are_deterministic_per_command_and_index():
    assert event_id("c1", 0) == event_id("c1", 0)
    assert len({event_id("c1", 0), event_id("c1", 1), event_id("c2", 0)}) == 3


def test_unknown_event_type_decodes_without_payload():
    event = make_event(PAYLOAD, subject="a1", event_id="x", time=WHEN, sequence=1)
    doc = json.loads(encode_event(event))
    doc["type"] = "medialog.future.thing_happened"
    envelope, payload = decode_event(json.dumps(doc).encode())
    assert payload is None and envelope.type == "medialog.future.thing_happened"


def test_old_versions_are_upcast_not_rejected(monkeypatch):
    doc = json.loads(encode_event(
        make_event(PAYLOAD, subject="a1", event_id="x", time=WHEN, sequence=1)))
    doc["dataschema"] = dataschema_uri(PAYLOAD.TYPE, 0)
    del doc["data"]["title"]
    monkeypatch.setitem(UPCASTERS, (PAYLOAD.TYPE, 0), lambda d: {**d, "title": "untitled"})
    event, payload = decode_event(json.dumps(doc).encode())
    assert payload.title == "untitled"
    assert event.data == payload and event.dataschema == dataschema_uri(PAYLOAD.TYPE, 1)
    assert encode_event(event) == encode_event(make_event(
        payload, subject="a1", event_id="x", time=WHEN, sequence=1))  # as if written today


def test_command_round_trip_and_malformed_commands():
    cmd = RequestUpload(**{f.name: getattr(PAYLOAD, f.name) for f in dataclasses.fields(PAYLOAD)})
    envelope, back = decode_command(encode_command(cmd, aggregate_id="a1", meta=META))
    assert back == cmd
    assert (envelope.id, envelope.issued_at, envelope.actor_id, envelope.actor_roles,
            envelope.correlation_id) == (META.command_id, META.issued_at, META.actor_id,
                                         META.actor_roles, META.correlation_id)
    for raw in (b"not json", b'{"id": "x"}', json.dumps({**json.loads(encode_command(
            cmd, aggregate_id="a1", meta=META)), "type": "nope"}).encode()):
        with pytest.raises(ValidationError) as exc:
            decode_command(raw)
        assert exc.value.code == "COMMAND_MALFORMED"


@pytest.mark.parametrize("mutate", [
    lambda d: d.update(dataschema="urn:medialog:events:asset.upload_requested"),  # no version
    lambda d: d.update(dataschema="urn:medialog:events:asset.upload_requested:v0"),  # no upcaster
    lambda d: d["data"].pop("owner_id"),  # payload does not validate
    lambda d: d.pop("id"),  # envelope does not validate
])
def test_every_undecodable_event_raises_one_value_error_type(mutate):
    doc = json.loads(encode_event(
        make_event(PAYLOAD, subject="a1", event_id="x", time=WHEN, sequence=1)))
    mutate(doc)
    with pytest.raises(UndecodableEvent):
        decode_event(json.dumps(doc).encode())
    with pytest.raises(ValueError):
        decode_event(b"{not json")


@pytest.mark.parametrize("event", [
    Promoted(asset_id="a1", master_key="a1/original.mp4", size_bytes=10,
             staging_key="uploads/u1/a1/original.mp4"),
    AssetDeleted(asset_id="a1", previous_status="ready", staging_key="uploads/u1/a1/original.mp4"),
])
def test_v1_promoted_and_deleted_are_read_as_v2_without_a_staging_key(event):
    """v1 of these events did not carry the staging key: read today, the key is unknown (None)
    and everything else is as written."""
    doc = json.loads(encode_event(make_event(event, subject="a1", event_id="x", time=WHEN,
                                             sequence=3)))
    assert doc["dataschema"] == dataschema_uri(event.TYPE, 2)
    doc["dataschema"] = dataschema_uri(event.TYPE, 1)
    del doc["data"]["staging_key"]
    upgraded, payload = decode_event(json.dumps(doc).encode())
    assert payload == dataclasses.replace(event, staging_key=None)
    assert upgraded.dataschema == dataschema_uri(event.TYPE, 2)

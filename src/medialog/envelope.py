"""The wire formats on the log.

Events are CloudEvents 1.0 in structured JSON mode (DESIGN.md "Events"); the Kafka key is the
aggregate id. Commands (internal topics) use a small JSON envelope of their own. Readers upcast
old payload versions (``UPCASTERS``) and never reject them; unknown event types decode to
``None`` so a reader built before a type existed skips it instead of failing.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, TypeAdapter

from medialog.domain.commands import COMMAND_CLASSES, AssetCommand, CommandMeta
from medialog.domain.errors import ValidationError
from medialog.domain.events import EVENT_CLASSES, DomainEvent

CONTENT_TYPE = "application/cloudevents+json"
_ID_NAMESPACE = uuid.UUID("5b0c6a53-6f1e-4a8e-9d0b-2f6c1b7e9a10")

EVENT_TYPES: dict[str, type[DomainEvent]] = {cls.TYPE: cls for cls in EVENT_CLASSES}
COMMAND_TYPES: dict[str, type[AssetCommand]] = {cls.TYPE: cls for cls in COMMAND_CLASSES}
# (type, version it upgrades from) → function turning that payload into the next version's.
UPCASTERS: dict[tuple[str, int], Callable[[dict[str, Any]], dict[str, Any]]] = {}


class CloudEvent(BaseModel):
    """One event as it travels on an ``events.*`` topic."""

    model_config = ConfigDict(frozen=True, extra="allow")

    specversion: Literal["1.0"] = "1.0"
    id: str
    source: str
    type: str
    subject: str
    time: datetime
    datacontenttype: Literal["application/json"] = "application/json"
    dataschema: str
    sequence: int | None = None
    actorid: str | None = None
    actorroles: str | None = None  # comma-separated: CloudEvents attributes are scalars
    causationid: str | None = None
    correlationid: str | None = None
    data: dict[str, Any]

    @property
    def schema_version(self) -> int:
        return int(self.dataschema.rsplit(":v", 1)[1])


def dataschema_uri(event_type: str, version: int) -> str:
    """``urn:medialog:events:asset.upload_requested:v1`` — also the ``$id`` of the schema file."""
    return f"urn:medialog:events:{event_type.removeprefix('medialog.')}:v{version}"


def event_id(command_id: str, index: int) -> str:
    """Deterministic: re-emitting the same command's events yields the same ids."""
    return str(uuid.uuid5(_ID_NAMESPACE, f"{command_id}:{index}"))


_ADAPTERS: dict[type[Any], TypeAdapter[Any]] = {
    cls: TypeAdapter(cls) for cls in (*EVENT_CLASSES, *COMMAND_CLASSES)
}
_CURRENT_SCHEMAS = {cls: dataschema_uri(cls.TYPE, cls.VERSION) for cls in EVENT_CLASSES}


def make_event(
    payload: DomainEvent,
    *,
    subject: str,
    event_id: str,
    time: datetime,
    sequence: int | None,
    meta: CommandMeta | None = None,
) -> CloudEvent:
    return CloudEvent(
        id=event_id,
        source=payload.SOURCE,
        type=payload.TYPE,
        subject=subject,
        time=time.astimezone(UTC),
        dataschema=dataschema_uri(payload.TYPE, payload.VERSION),
        sequence=sequence,
        actorid=meta.actor_id if meta else None,
        actorroles=",".join(meta.actor_roles) if meta else None,
        causationid=meta.command_id if meta else None,
        correlationid=meta.correlation_id if meta else None,
        data=_ADAPTERS[type(payload)].dump_python(payload, mode="json"),
    )


def encode_event(event: CloudEvent) -> bytes:
    return event.model_dump_json(exclude_none=True).encode()


class UndecodableEvent(ValueError):
    """Not a CloudEvent we can read: malformed JSON or envelope, a ``dataschema`` without a
    version, a payload that does not validate, or an old version with no upcaster."""


def decode_event(raw: bytes) -> tuple[CloudEvent, DomainEvent | None]:
    """Parse an envelope; the payload is upcast to the current version, or None if unknown.
    Every failure is an ``UndecodableEvent`` (a ``ValueError``), so readers catch one type."""
    try:
        return _decode_event(raw)
    except (ValueError, KeyError, IndexError, TypeError) as exc:
        raise UndecodableEvent(f"{type(exc).__name__}: {exc}"[:300]) from exc


def _decode_event(raw: bytes) -> tuple[CloudEvent, DomainEvent | None]:
    event = CloudEvent.model_validate_json(raw)
    cls = EVENT_TYPES.get(event.type)
    if cls is None:
        return event, None
    if event.dataschema == _CURRENT_SCHEMAS[cls]:  # the usual case: nothing to upcast
        return event, _ADAPTERS[cls].validate_python(event.data)
    data, version = dict(event.data), event.schema_version
    while version < cls.VERSION:
        data = UPCASTERS[(event.type, version)](data)
        version += 1
    return event, _ADAPTERS[cls].validate_python(data)


# -- commands ---------------------------------------------------------------------------------


class CommandEnvelope(BaseModel):
    """A command on a ``commands.*`` topic."""

    model_config = ConfigDict(frozen=True)

    id: str
    type: str
    aggregate_id: str
    issued_at: datetime
    actor_id: str
    actor_roles: tuple[str, ...]
    correlation_id: str
    payload: dict[str, Any]

    @property
    def meta(self) -> CommandMeta:
        return CommandMeta(
            command_id=self.id,
            issued_at=self.issued_at,
            actor_id=self.actor_id,
            actor_roles=self.actor_roles,
            correlation_id=self.correlation_id,
        )


def encode_command(command: AssetCommand, *, aggregate_id: str, meta: CommandMeta) -> bytes:
    envelope = CommandEnvelope(
        id=meta.command_id,
        type=command.TYPE,
        aggregate_id=aggregate_id,
        issued_at=meta.issued_at,
        actor_id=meta.actor_id,
        actor_roles=meta.actor_roles,
        correlation_id=meta.correlation_id,
        payload=_ADAPTERS[type(command)].dump_python(command, mode="json"),
    )
    return envelope.model_dump_json().encode()


def decode_command(raw: bytes) -> tuple[CommandEnvelope, AssetCommand]:
    try:
        envelope = CommandEnvelope.model_validate_json(raw)
        cls = COMMAND_TYPES[envelope.type]
        return envelope, _ADAPTERS[cls].validate_python(envelope.payload)
    except (ValueError, KeyError) as exc:
        raise ValidationError(f"undecodable command: {exc}", code="COMMAND_MALFORMED") from exc


# -- schemas ----------------------------------------------------------------------------------


def event_json_schemas(classes: Iterable[type[DomainEvent]] = EVENT_CLASSES) -> dict[str, Any]:
    """``{relative path: JSON Schema}`` for every event type's current version."""
    envelope = CloudEvent.model_json_schema()
    out: dict[str, Any] = {}
    for cls in classes:
        short = cls.TYPE.removeprefix("medialog.")
        schema = json.loads(json.dumps(envelope))
        schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
        schema["$id"] = dataschema_uri(cls.TYPE, cls.VERSION)
        schema["title"] = cls.TYPE
        schema["description"] = (cls.__doc__ or "").strip()
        props = schema["properties"]
        props["type"] = {"const": cls.TYPE}
        props["dataschema"] = {"const": dataschema_uri(cls.TYPE, cls.VERSION)}
        data_schema = _ADAPTERS[cls].json_schema()
        schema.setdefault("$defs", {}).update(data_schema.pop("$defs", {}))
        props["data"] = data_schema
        schema["required"] = sorted(set(schema.get("required", [])) | {"data", "type"})
        out[f"events/{short}/v{cls.VERSION}.json"] = schema
    return out


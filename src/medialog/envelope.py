"""The wire formats on the log.

Events are CloudEvents 1.0 in structured JSON mode (docs/events.md); the Kafka key is the
aggregate id. Commands (internal topics) use a small JSON envelope of their own. Readers upcast
old payload versions (``UPCASTERS``) and never reject them; unknown event types decode to
``None`` so a reader built before a type existed skips it instead of failing.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, create_model
from pydantic import ValidationError as PydanticValidationError
from pydantic_core import to_json

from medialog.domain.commands import COMMAND_CLASSES, AssetCommand, CommandMeta
from medialog.domain.errors import ValidationError
from medialog.domain.events import EVENT_CLASSES, UPCASTERS, DomainEvent

CONTENT_TYPE = "application/cloudevents+json"
_ID_NAMESPACE = uuid.UUID("5b0c6a53-6f1e-4a8e-9d0b-2f6c1b7e9a10")

EVENT_TYPES: dict[str, type[DomainEvent]] = {cls.TYPE: cls for cls in EVENT_CLASSES}
COMMAND_TYPES: dict[str, type[AssetCommand]] = {cls.TYPE: cls for cls in COMMAND_CLASSES}


def _unset(value: object) -> bool:
    return value is None


_OPTIONAL = Field(default=None, exclude_if=_unset)  # absent on the wire rather than null


class CloudEvent(BaseModel):
    """One event as it travels on an ``events.*`` topic.

    ``data`` is the payload. For a type this reader knows it is the domain event (a frozen
    dataclass, upcast to the current version): the event is then an instance of that type's
    subclass (``_TYPED``). For a type it does not know, it is the JSON object as on the wire."""

    model_config = ConfigDict(frozen=True, extra="allow")

    specversion: Literal["1.0"] = "1.0"
    id: str
    source: str
    type: str
    subject: str
    time: datetime
    datacontenttype: Literal["application/json"] = "application/json"
    dataschema: str
    sequence: int | None = _OPTIONAL
    actorid: str | None = _OPTIONAL
    actorroles: str | None = _OPTIONAL  # comma-separated: CloudEvents attributes are scalars
    causationid: str | None = _OPTIONAL
    correlationid: str | None = _OPTIONAL
    data: Any

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


def _typed(cls: type[Any]) -> type[CloudEvent]:
    uri = dataschema_uri(cls.TYPE, cls.VERSION)
    fixed: Any = Literal  # the values are known at run time only
    return create_model(f"CloudEvent[{cls.__name__}]", __base__=CloudEvent,
                        type=(fixed[cls.TYPE], cls.TYPE), dataschema=(fixed[uri], uri),
                        data=(cls, ...))


# One CloudEvent subclass per event type: its ``type`` and ``dataschema`` (current version) are
# fixed and ``data`` is that type's payload, so decoding validates envelope and payload in one
# pass over the JSON, and encoding writes the payload straight from the dataclass.
_TYPED: dict[type[Any], type[CloudEvent]] = {cls: _typed(cls) for cls in EVENT_CLASSES}
_ANY_TYPED: Any = Annotated[  # a Union built at run time: ``X | Y`` needs the types spelled out
    Union[tuple(_TYPED.values())], Field(discriminator="dataschema")]  # noqa: UP007
_CURRENT: TypeAdapter[CloudEvent] = TypeAdapter(_ANY_TYPED)


def make_event(
    payload: DomainEvent,
    *,
    subject: str,
    event_id: str,
    time: datetime,
    sequence: int | None,
    actor_id: str | None = None,
    actor_roles: Iterable[str] = (),
    causation_id: str | None = None,
    correlation_id: str | None = None,
) -> CloudEvent:
    """The envelope of ``payload``. Who caused it: an actor's events name the command's sender
    and the command (``CommandMeta``); an event the api appends names its caller, if signed in
    (``actor_roles`` go with ``actor_id``), and the request."""
    return _TYPED[type(payload)](
        id=event_id,
        source=payload.SOURCE,
        type=payload.TYPE,
        subject=subject,
        time=time.astimezone(UTC),
        dataschema=dataschema_uri(payload.TYPE, payload.VERSION),
        sequence=sequence,
        actorid=actor_id,
        actorroles=None if actor_id is None else ",".join(actor_roles),
        causationid=causation_id,
        correlationid=correlation_id,
        data=payload,
    )


def encode_event(event: CloudEvent) -> bytes:
    return event.model_dump_json().encode()


def payload_json(event: CloudEvent) -> str:
    """``data`` as JSON text, as it is on the wire (what read models store verbatim)."""
    adapter = _ADAPTERS.get(type(event.data))  # a payload's own serializer: twice as fast
    return (to_json(event.data) if adapter is None else adapter.dump_json(event.data)).decode()


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
    try:
        event = _CURRENT.validate_json(raw)  # the usual case: a known type, current version
        return event, event.data
    except PydanticValidationError:
        pass  # an old version, a type we do not know, or invalid: the general path tells
    event = CloudEvent.model_validate_json(raw)
    cls = EVENT_TYPES.get(event.type)
    if cls is None:
        return event, None
    data, version = dict(event.data), event.schema_version
    while version < cls.VERSION:
        data = UPCASTERS[(event.type, version)](data)
        version += 1
    payload = _ADAPTERS[cls].validate_python(data)
    fields = {k: v for k, v in event if k not in ("type", "dataschema", "data")}
    return _TYPED[cls](**fields, data=payload), payload


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


"""The JSON bodies of the api's answers, as pydantic models: documentation for the OpenAPI
document (``Model.model_json_schema()``), never used to serialise. The handlers build plain
dicts; these models say what those dicts hold, so that a client (and schemathesis) can check
every answer against them.

Conventions: a field that can be null is ``X | None`` (required: the key is always there); a
field that is sometimes absent is ``X | SkipJsonSchema[None] = None`` (not required, never
null); numbers that Python computes by division are ``float``. Every object allows more
properties than it declares, so adding a field never breaks a client.

``RESPONSES`` maps each route (method, path template as the router spells it) to its success
statuses and their body; ``MEDIA_TYPES`` names the answers that are not JSON (the stream's:
``STREAM_MEDIA_TYPES``); ``OTHER_RESPONSES`` the non-2xx answers that are not an ``ErrorBody``."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Annotated, Any, Literal

from prometheus_client import CONTENT_TYPE_LATEST
from pydantic import BaseModel, ConfigDict, Field, RootModel
from pydantic.json_schema import SkipJsonSchema

from medialog.analytics.params import INTERVALS, WINDOWS
from medialog.analytics.queries import DURATION_BUCKETS
from medialog.api.queries import STATUSES
from medialog.domain.metadata import VISIBILITIES
from medialog.domain.uploads import ALLOWED_TYPES


def _no_null_defaults(schema: dict[str, Any]) -> None:
    """Drop ``"default": null`` of the sometimes-absent fields: absent is not null."""
    for prop in schema.get("properties", {}).values():
        if "default" in prop and prop["default"] is None:
            del prop["default"]


def _enum(values: Iterable[str]) -> dict[str, Any]:
    return {"enum": sorted(set(values))}


class _Body(BaseModel):
    model_config = ConfigDict(extra="allow", json_schema_extra=_no_null_defaults)


_STATUS = _enum(STATUSES)
_VISIBILITY = _enum(VISIBILITIES)
_KIND = _enum(kind for kind, _ in ALLOWED_TYPES.values())
_INTERVAL = _enum(INTERVALS)
_TIME = "ISO 8601 in UTC with a Z"


# --- errors -----------------------------------------------------------------------------------


class ErrorDetail(_Body):
    code: str = Field(description="machine-readable, e.g. VALIDATION_ERROR, ASSET_NOT_FOUND")
    message: str = Field(description="for people")
    details: list[Any] = Field(description="what was wrong, e.g. [{field, error}]; may be empty")


# --- commands ---------------------------------------------------------------------------------


class PendingOutcome(_Body):
    """Not decided yet (or unknown: an id never sent is pending too)."""

    command_id: str
    status: Literal["pending"]


class AcceptedOutcome(_Body):
    command_id: str
    status: Literal["accepted"]
    aggregate_id: str = Field(description="the asset id, or the engagement key asset/user")
    type: str = Field(description="the command type")
    version: int = Field(description="the aggregate's version after the command (0: no event)")
    events: list[str] = Field(description="ids of the events the command produced")
    projected: bool = Field(description="whether the read model shows the command yet")


class OutcomeError(_Body):
    code: str
    message: str | None
    details: list[Any] | None = Field(
        description="null for a command that could not be applied (COMMAND_FAILED)")


class RejectedOutcome(_Body):
    command_id: str
    status: Literal["rejected"]
    aggregate_id: str
    type: str
    error: OutcomeError


class CommandOutcome(RootModel[Annotated[PendingOutcome | AcceptedOutcome | RejectedOutcome,
                                         Field(discriminator="status")]]):
    """What became of a command (``GET /v1/commands/{id}``)."""


class UnrejectedOutcome(RootModel[Annotated[PendingOutcome | AcceptedOutcome,
                                            Field(discriminator="status")]]):
    """The outcome in a 2xx write answer: a rejection answers with its error instead."""


class ErrorBody(_Body):
    """Every 4xx/5xx answer (except ``/health/ready``'s 503); a write whose awaited command was
    rejected adds ``command_id`` and ``command``."""

    error: ErrorDetail
    command_id: str | SkipJsonSchema[None] = Field(None, description="a rejected command's id")
    command: RejectedOutcome | SkipJsonSchema[None] = Field(
        None, description="a rejected command's outcome")


class CommandAccepted(_Body):
    """A write on an asset (complete, PATCH, DELETE) is on the log."""

    command_id: str
    asset_id: str
    command: UnrejectedOutcome | SkipJsonSchema[None] = Field(
        None, description="with Prefer: wait (or a default wait): the outcome when the wait "
                          "ended; absent with wait=0")


class TranscodeAccepted(CommandAccepted):
    job_id: str = Field(description="the new transcode job (same for a retried request)")


class UploadHeaders(_Body):
    content_type: str = Field(alias="Content-Type")
    content_length: str = Field(alias="Content-Length", description="the size, as a string")


class UploadCreated(CommandAccepted):
    """``POST /v1/uploads``: where to PUT the bytes; ``upload_url`` is null (and
    ``asset_status`` present, ``method`` and ``headers`` absent) when a retried request's asset
    no longer awaits its upload."""

    upload_url: str | None = Field(description="presigned PUT to the staging bucket")
    method: Literal["PUT"] | SkipJsonSchema[None] = None
    headers: UploadHeaders | SkipJsonSchema[None] = Field(
        None, description="send exactly these (both are signed)")
    asset_status: str | SkipJsonSchema[None] = Field(
        None, description="the asset's status, when there is nothing left to upload",
        json_schema_extra=_STATUS)
    expires_at: str = Field(description=f"the upload URL's deadline ({_TIME})")


# --- assets -----------------------------------------------------------------------------------


class AssetMetadata(_Body):
    title: str
    filename: str
    content_type: str
    size_bytes: int


class Rendition(_Body):
    name: str = Field(description='"720p", "a128k"…')
    width: int | None
    height: int | None
    bandwidth: int = Field(description="bits/s")
    codecs: str


class TranscodeJob(_Body):
    job_id: str
    state: str = Field(json_schema_extra={"enum": ["queued", "running", "done", "failed"]})
    attempt: int
    rungs: list[str] | None = Field(description="null: every rung of the ladder")
    done: list[str] = Field(description="the rungs finished so far")


class Failure(_Body):
    reason: str
    rung: str | None
    attempts: int


class Counters(_Body):
    views: int
    likes: int


class Asset(_Body):
    asset_id: str
    owner_id: str
    status: str = Field(json_schema_extra=_STATUS)
    kind: str = Field(json_schema_extra=_KIND)
    version: int = Field(description="sequence of the last event applied")
    metadata: AssetMetadata
    visibility: str = Field(json_schema_extra=_VISIBILITY)
    description: str
    tags: list[str]
    category: str
    duration_s: float | None
    width: int | None
    height: int | None
    thumbnail_key: str | None = Field(description="object key in the previews bucket")
    renditions: list[Rendition]
    transcode: TranscodeJob | None = Field(description="the current transcode job")
    failure: Failure | None = Field(description="why the last transcode failed")
    stats: Counters
    upload_expires_at: str | None = Field(description=_TIME)
    created_at: str = Field(description=_TIME)
    updated_at: str = Field(description=_TIME)
    deleted_at: str | None = Field(description=_TIME)


class AssetList(_Body):
    items: list[Asset]
    page: int
    limit: int
    total: int = Field(description="assets matching, over every page")


class HistoryEvent(_Body):
    sequence: int
    id: str
    type: str
    time: str = Field(description=_TIME)
    actor_id: str | None
    causation_id: str | None
    data: dict[str, Any] = Field(description="the event's payload (docs/events.md)")


class History(_Body):
    asset_id: str
    events: list[HistoryEvent]
    next_after: int | None = Field(description="pass as ?after= for the next page; null: the "
                                                "page was not full")


class StatusEvent(_Body):
    """The ``data:`` of each ``event: status`` message of ``GET /v1/assets/{id}/status``
    (``text/event-stream``: see ``SSE_EVENTS``)."""

    asset_id: str
    version: int
    status: str = Field(json_schema_extra=_STATUS)
    event: str | None = Field(description="the event type; null in the first message (now)")
    time: str = Field(description=_TIME)
    detail: dict[str, Any]


# --- engagement and playback ------------------------------------------------------------------


class StatusToken(_Body):
    """Opens the asset's status stream (``?access_token=``) for a short while."""

    token: str
    expires_at: str = Field(description=_TIME)


class ViewAccepted(_Body):
    report_id: str


class LikeState(_Body):
    """The like is applied and projected."""

    asset_id: str
    liked: bool = Field(description="whether the caller likes the asset now")
    like_count: int
    command_id: str
    command: AcceptedOutcome


class LikeAccepted(_Body):
    """Not settled in time (or ``Prefer: wait=0``): ``liked`` is what was asked; a rejected
    like answers here too, with ``command.status`` rejected."""

    asset_id: str
    liked: bool = Field(description="what was asked, not the state")
    command_id: str
    command: CommandOutcome | SkipJsonSchema[None] = Field(None, description="absent with wait=0")


class Stats(_Body):
    asset_id: str
    view_count: int
    like_count: int
    watch_seconds_total: float
    liked_by_me: bool | SkipJsonSchema[None] = Field(None, description="absent when anonymous")


class Playback(_Body):
    asset_id: str
    hls_url: str | None = Field(description="signed master playlist; null for an image")
    thumbnail_url: str | None
    expires_at: str = Field(description=_TIME)
    download_url: str | SkipJsonSchema[None] = Field(
        None, description="presigned GET of the master: owner and admins only")


# --- analytics --------------------------------------------------------------------------------


class _ViewFigures(_Body):
    views: int
    unique_viewers: int
    reports: int
    below_threshold: int
    already_counted: int
    watch_seconds: float


class _SessionFigures(_ViewFigures):
    sessions: int
    completed_sessions: int
    avg_watch_seconds: float | None = Field(description="null without sessions")
    completion_rate: float | None = Field(description="null without a known duration")
    likes: int
    unlikes: int


class AssetFigures(_SessionFigures):
    pass


class AssetBucket(AssetFigures):
    start: str = Field(description=_TIME)


class _Report(_Body):
    from_: str = Field(alias="from", description=_TIME)
    to: str = Field(description=_TIME)
    interval: str = Field(json_schema_extra=_INTERVAL)


class AssetAnalytics(_Report):
    asset_id: str
    owner_id: str
    totals: AssetFigures
    series: list[AssetBucket]


class CreatorFigures(_SessionFigures):
    uploads: int
    uploads_completed: int


class CreatorBucket(CreatorFigures):
    start: str = Field(description=_TIME)


class TopAsset(_Body):
    asset_id: str
    views: int
    watch_seconds: float


class CreatorAnalytics(_Report):
    creator_id: str
    totals: CreatorFigures
    series: list[CreatorBucket]
    top_assets: list[TopAsset]


class OverviewFigures(_ViewFigures):
    uploads: int
    uploads_completed: int
    playback_urls_issued: int
    unique_users: int


class OverviewBucket(OverviewFigures):
    start: str = Field(description=_TIME)


class Storage(_Body):
    stored_assets: int
    storage_used_bytes: int
    average_file_size_bytes: int | None


class DurationBucket(_Body):
    bucket: str = Field(json_schema_extra={"enum": list(DURATION_BUCKETS)})
    assets: int


class Overview(_Report):
    totals: OverviewFigures
    series: list[OverviewBucket]
    storage: Storage
    duration_distribution: list[DurationBucket]


class TrendingItem(_Body):
    rank: int
    asset_id: str
    score: float
    views: int
    likes: int = Field(description="net: likes minus unlikes in the window")
    owner_id: str
    title: str


class Trending(_Body):
    window: str = Field(json_schema_extra=_enum(WINDOWS))
    generated_at: str = Field(description=_TIME)
    items: list[TrendingItem]


# --- operations -------------------------------------------------------------------------------


class Health(_Body):
    status: Literal["ok"]


class DependencyCheck(_Body):
    status: str = Field(json_schema_extra={"enum": ["up", "down"]})
    latency_ms: float
    error: str | SkipJsonSchema[None] = Field(None, description="the error's type, when down")


class ProjectionLag(_Body):
    total: int
    partitions: dict[str, int] = Field(description='"topic/partition" → records behind')


class Peer(_Body):
    """What a peer's ``/health/ready`` said of itself (empty when it did not answer JSON)."""

    version: str | SkipJsonSchema[None] = None
    uptime_s: float | SkipJsonSchema[None] = None
    memory_rss_bytes: int | None = Field(None, description="absent or null when unknown")


class Readiness(_Body):
    status: str = Field(json_schema_extra={"enum": ["ready", "unavailable"]})
    checked_at: str = Field(description=f"when the (cached) check ran ({_TIME})")
    version: str
    uptime_s: float
    memory_rss_bytes: int | None
    dependencies: dict[str, DependencyCheck]
    projections: dict[str, ProjectionLag]
    peers: dict[str, Peer]


class Jwk(_Body):
    kty: str
    n: str
    e: str
    kid: str
    use: str
    alg: str


class Jwks(_Body):
    keys: list[Jwk]


class OpenApiDocument(_Body):
    """This document (OpenAPI 3.1)."""

    openapi: str
    info: dict[str, Any]
    paths: dict[str, Any]
    components: dict[str, Any]


class DifferingKey(_Body):
    key: str = Field(description="the row's sort key, its columns joined by /")
    how: str = Field(json_schema_extra={"enum": ["only live", "only in log", "differs"]})


class TableComparison(_Body):
    table: str
    live_rows: int
    log_rows: int
    equal: bool
    first_differing: list[DifferingKey]


class ReadModelReport(_Body):
    tables: list[TableComparison]
    equal: bool = Field(description="every table equals the fold")
    lines: list[str] = Field(description="the report as `medialog verify|replay` prints it")
    swapped: bool | SkipJsonSchema[None] = Field(None, description="replay: swapped in")


class JobProgress(_Body):
    done: int = Field(description="records folded")
    total: int | None = Field(description="records to fold up to the end offsets; null until "
                                          "known")


class ReadModelJob(_Body):
    job_id: str
    kind: str = Field(json_schema_extra={"enum": ["verify", "replay"]})
    check_only: bool
    status: str = Field(json_schema_extra={"enum": ["running", "done", "failed", "cancelled"]})
    started_at: str = Field(description=_TIME)
    progress: JobProgress
    report: ReadModelReport | SkipJsonSchema[None] = Field(None, description="once done")
    error: str | SkipJsonSchema[None] = Field(None, description="once failed: why the log "
                                                                 "could not be folded")


# --- routes -----------------------------------------------------------------------------------

_ASSET = "/v1/assets/{asset_id}"
_LIKE = f"{_ASSET}/like"
_STREAM = "/v1/stream/{asset}/{expires}/{signature}/{path}"

# (method, path as the router's ``resource.canonical`` spells it) → success status → body
# (None: no body, or not JSON: see MEDIA_TYPES).
RESPONSES: dict[tuple[str, str], dict[int, type[BaseModel] | None]] = {
    ("GET", "/health"): {200: Health},
    ("GET", "/health/ready"): {200: Readiness},
    ("GET", "/metrics"): {200: None},
    ("GET", "/.well-known/jwks.json"): {200: Jwks},
    ("GET", "/openapi.json"): {200: OpenApiDocument},
    ("GET", "/docs"): {200: None},
    ("POST", f"{_ASSET}/views"): {202: ViewAccepted},
    ("POST", "/v1/uploads"): {202: UploadCreated},
    ("GET", "/v1/assets"): {200: AssetList},
    ("GET", _ASSET): {200: Asset},
    ("PATCH", _ASSET): {202: CommandAccepted},
    ("DELETE", _ASSET): {202: CommandAccepted},
    ("POST", f"{_ASSET}/complete"): {202: CommandAccepted},
    ("GET", f"{_ASSET}/history"): {200: History},
    ("GET", f"{_ASSET}/status"): {200: None},
    ("POST", f"{_ASSET}/status-token"): {201: StatusToken},
    ("GET", "/v1/commands/{command_id}"): {200: CommandOutcome},
    ("POST", f"{_ASSET}/transcode"): {202: TranscodeAccepted},
    ("GET", f"{_ASSET}/playback"): {200: Playback},
    ("GET", _STREAM): {200: None, 206: None, 304: None},
    ("GET", "/v1/analytics/assets/{asset_id}"): {200: AssetAnalytics},
    ("GET", "/v1/analytics/creators/{creator_id}"): {200: CreatorAnalytics},
    ("GET", "/v1/analytics/overview"): {200: Overview},
    ("GET", "/v1/trending"): {200: Trending},
    ("PUT", _LIKE): {200: LikeState, 202: LikeAccepted},
    ("DELETE", _LIKE): {200: LikeState, 202: LikeAccepted},
    ("GET", f"{_ASSET}/stats"): {200: Stats},
    ("POST", "/v1/admin/read-models/analytics/verify"): {202: ReadModelJob},
    ("POST", "/v1/admin/read-models/analytics/replay"): {202: ReadModelJob},
    ("GET", "/v1/admin/read-models/jobs/{job_id}"): {200: ReadModelJob},
    ("DELETE", "/v1/admin/read-models/jobs/{job_id}"): {200: ReadModelJob},
}

# Answers that are not JSON. The stream's type follows the object's extension
# (``medialog.domain.layout.content_type_for``): one of ``STREAM_MEDIA_TYPES``.
STREAM_MEDIA_TYPES = ("application/vnd.apple.mpegurl", "video/mp2t", "video/iso.segment",
                      "video/mp4", "audio/aac", "image/jpeg", "image/png",
                      "application/octet-stream")
MEDIA_TYPES: dict[tuple[str, str], tuple[str, ...]] = {
    ("GET", "/metrics"): (CONTENT_TYPE_LATEST,),
    ("GET", "/docs"): ("text/html",),
    ("GET", f"{_ASSET}/status"): ("text/event-stream",),
    ("GET", _STREAM): STREAM_MEDIA_TYPES,
}

# Server-Sent Events streams: the JSON each message's ``data:`` holds.
SSE_EVENTS: dict[tuple[str, str], type[BaseModel]] = {
    ("GET", f"{_ASSET}/status"): StatusEvent,
}

# Non-2xx answers that are not an ErrorBody: readiness answers 503 with its usual body.
OTHER_RESPONSES: dict[tuple[str, str], dict[int, type[BaseModel]]] = {
    ("GET", "/health/ready"): {503: Readiness},
}

"""Rules for a new upload: what may be uploaded, how big, and how it is named. Pure functions."""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import BeforeValidator, Field

from medialog.domain.errors import PayloadTooLarge
from medialog.domain.metadata import MetadataFields, Title
from medialog.domain.schema import parse, rule
from medialog.domain.text import TITLE_MAX

# content type → (kind, canonical extension). The stored key uses the canonical extension,
# never the client's filename.
ALLOWED_TYPES: dict[str, tuple[str, str]] = {
    "video/mp4": ("video", "mp4"),
    "video/quicktime": ("video", "mov"),
    "video/webm": ("video", "webm"),
    "video/x-matroska": ("video", "mkv"),
    "video/mpeg": ("video", "mpg"),
    "video/x-msvideo": ("video", "avi"),
    "audio/mpeg": ("audio", "mp3"),
    "audio/mp4": ("audio", "m4a"),
    "audio/aac": ("audio", "aac"),
    "audio/wav": ("audio", "wav"),
    "audio/x-wav": ("audio", "wav"),
    "audio/flac": ("audio", "flac"),
    "audio/ogg": ("audio", "ogg"),
    "audio/webm": ("audio", "weba"),
    "image/jpeg": ("image", "jpg"),
    "image/png": ("image", "png"),
    "image/webp": ("image", "webp"),
    "image/gif": ("image", "gif"),
}
FILENAME_MAX = 255
_UNSAFE = re.compile(r"[^\w .()\-]+")


@dataclass(frozen=True, kw_only=True)
class UploadSpec:
    """A validated upload request."""

    filename: str
    content_type: str
    kind: str
    extension: str
    size_bytes: int
    title: str
    visibility: str = "public"
    # metadata set at creation (None: not given), recorded as the asset's first MetadataUpdated
    description: str | None = None
    tags: tuple[str, ...] | None = None
    category: str | None = None


def sanitize_filename(raw: str) -> str:
    """The last path component, NFC-normalised, without control or unusual characters."""
    name = unicodedata.normalize("NFC", raw).replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(ch for ch in name if unicodedata.category(ch)[0] != "C")
    name = _UNSAFE.sub("_", name).strip(" .")
    return name[:FILENAME_MAX]


def _plain_name(raw: object) -> object:
    """Sanitised before the type check: a lone surrogate (which no str field accepts) is
    dropped like any other unprintable character."""
    if not isinstance(raw, str):
        return raw
    name = sanitize_filename(raw)
    if not name:
        raise ValueError("a plain file name (no path, not only dots or spaces)")
    return name


def _allowed_type(raw: str) -> str:
    if raw.lower() not in ALLOWED_TYPES:
        raise ValueError("not an allowed content type")
    return raw.lower()


class UploadRequest(MetadataFields):
    """``POST /v1/uploads``: the file to come, and the asset's metadata (each optional; as
    ``PATCH`` takes them)."""

    filename: Annotated[str, Field(min_length=1, description="the client's file name; only its "
                                   "last component is kept, sanitised"),
                        BeforeValidator(_plain_name)]
    content_type: Annotated[str, Field(json_schema_extra={"enum": sorted(ALLOWED_TYPES)}),
                            rule(_allowed_type)]
    size_bytes: Annotated[int, Field(gt=0, description="exact size of the upload in bytes")]
    title: Title | None = Field(None, description="default: the file name without extension")


def validate_upload(body: Any, *, max_bytes: int) -> UploadSpec:
    """``body`` as an ``UploadRequest`` (every problem listed at once), then the size limit:
    ``PayloadTooLarge`` ``UPLOAD_TOO_LARGE``."""
    req = parse(UploadRequest, body, message="invalid upload request")
    if req.size_bytes > max_bytes:
        raise PayloadTooLarge(
            f"size_bytes exceeds the limit of {max_bytes} bytes",
            code="UPLOAD_TOO_LARGE",
            details=[{"field": "size_bytes", "max": max_bytes}],
        )
    kind, ext = ALLOWED_TYPES[req.content_type]
    return UploadSpec(
        filename=req.filename,
        content_type=req.content_type,
        kind=kind,
        extension=ext,
        size_bytes=req.size_bytes,
        title=req.title or req.filename.rsplit(".", 1)[0][:TITLE_MAX],
        visibility=req.visibility or "public",
        description=req.description,
        tags=None if req.tags is None else tuple(req.tags),
        category=req.category,
    )

"""Rules for a new upload: what may be uploaded, how big, and how it is named. Pure functions."""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from typing import Any

from medialog.domain.errors import PayloadTooLarge, ValidationError

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
TITLE_MIN, TITLE_MAX = 3, 200
_UNSAFE = re.compile(r"[^\w .()\-]+")
# What no free text may hold: control characters (Unicode Cc: C0, DEL, C1; NUL can be stored
# neither in PostgreSQL text nor in jsonb) and lone surrogates (Cs: not encodable as UTF-8).
# Multi-line text (a description) may keep tab, line feed and carriage return.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\ud800-\udfff]")
_CONTROL_MULTILINE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff]")


@dataclass(frozen=True, kw_only=True)
class UploadSpec:
    """A validated upload request."""

    filename: str
    content_type: str
    kind: str
    extension: str
    size_bytes: int
    title: str


def sanitize_filename(raw: str) -> str:
    """The last path component, NFC-normalised, without control or unusual characters."""
    name = unicodedata.normalize("NFC", raw).replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(ch for ch in name if unicodedata.category(ch)[0] != "C")
    name = _UNSAFE.sub("_", name).strip(" .")
    return name[:FILENAME_MAX]


def check_text(text: str, field: str, *, multiline: bool = False) -> str:
    """``text`` unchanged, unless it holds a control character or a lone surrogate (see
    ``_CONTROL``): then ValidationError naming ``field``. The one check for every free-text
    input, body field or query parameter, so nothing reaches the log that a store refuses."""
    if (_CONTROL_MULTILINE if multiline else _CONTROL).search(text):
        raise ValidationError(
            f"{field} must not contain control characters or lone surrogates",
            details=[{"field": field, "error": "control character or lone surrogate"}],
        )
    return text


def clean_title(raw: object, *, field: str = "title") -> str:
    if not isinstance(raw, str):
        raise ValidationError(f"{field} must be a string", details=[{"field": field}])
    title = check_text(" ".join(unicodedata.normalize("NFC", raw).split()), field)
    if not TITLE_MIN <= len(title) <= TITLE_MAX:
        raise ValidationError(
            f"{field} must be {TITLE_MIN}–{TITLE_MAX} characters",
            details=[{"field": field, "min": TITLE_MIN, "max": TITLE_MAX}],
        )
    return title


def validate_upload(body: Any, *, max_bytes: int) -> UploadSpec:
    """Check ``{filename, content_type, size_bytes, title?}``; raise with every problem listed."""
    if not isinstance(body, dict):
        raise ValidationError("body must be a JSON object")
    problems: list[dict[str, Any]] = []
    unknown = set(body) - {"filename", "content_type", "size_bytes", "title"}
    if unknown:
        problems.append({"field": sorted(unknown), "error": "unknown fields"})

    raw_name = body.get("filename")
    filename = sanitize_filename(raw_name) if isinstance(raw_name, str) else ""
    if not filename:
        problems.append({"field": "filename", "error": "required; a plain file name"})

    content_type = body.get("content_type")
    if not isinstance(content_type, str) or content_type.lower() not in ALLOWED_TYPES:
        problems.append(
            {"field": "content_type", "error": "not allowed", "allowed": sorted(ALLOWED_TYPES)}
        )
        kind, ext = "", ""
    else:
        content_type = content_type.lower()
        kind, ext = ALLOWED_TYPES[content_type]

    size = body.get("size_bytes")
    if isinstance(size, bool) or not isinstance(size, int) or size <= 0:
        problems.append({"field": "size_bytes", "error": "a positive integer"})

    title = body.get("title")
    if title is not None:
        try:
            title = clean_title(title)
        except ValidationError as exc:
            problems.extend(exc.details)
    if problems:
        raise ValidationError("invalid upload request", details=problems)
    assert isinstance(size, int) and isinstance(content_type, str)
    if size > max_bytes:
        raise PayloadTooLarge(
            f"size_bytes exceeds the limit of {max_bytes} bytes",
            code="UPLOAD_TOO_LARGE",
            details=[{"field": "size_bytes", "max": max_bytes}],
        )
    default_title = filename.rsplit(".", 1)[0][:TITLE_MAX]
    return UploadSpec(
        filename=filename,
        content_type=content_type,
        kind=kind,
        extension=ext,
        size_bytes=size,
        title=title if isinstance(title, str) else default_title,
    )

"""Rules for editable asset metadata (PATCH). Pure."""

from __future__ import annotations

import re
import unicodedata
from typing import Any

from medialog.domain.errors import ValidationError
from medialog.domain.uploads import check_text, clean_title

DESCRIPTION_MAX = 5000
TAGS_MAX = 10
TAG_MAX = 30
CATEGORY_MAX = 50
VISIBILITIES = ("public", "unlisted", "private")
_TAG = re.compile(r"^[\w][\w \-]*$")
FIELDS = ("title", "description", "tags", "category", "visibility")


def validate_visibility(raw: object) -> str:
    if raw not in VISIBILITIES:
        raise ValidationError("visibility must be public, unlisted or private",
                              details=[{"field": "visibility", "allowed": list(VISIBILITIES)}])
    return str(raw)


def validate_metadata_patch(body: Any) -> dict[str, Any]:
    """The cleaned changes of a PATCH body; every problem is listed at once."""
    if not isinstance(body, dict) or not body:
        raise ValidationError("body must be a non-empty JSON object")
    problems: list[dict[str, Any]] = []
    unknown = set(body) - set(FIELDS)
    if unknown:
        problems.append({"field": sorted(unknown), "error": "unknown or read-only fields"})
    out: dict[str, Any] = {}
    checks = {
        "title": clean_title,
        "description": _description,
        "tags": _tags,
        "category": _category,
        "visibility": validate_visibility,
    }
    for name, check in checks.items():
        if name in body:
            try:
                out[name] = check(body[name])
            except ValidationError as exc:
                problems.extend(exc.details or [{"field": name, "error": exc.message}])
    if problems:
        raise ValidationError("invalid metadata", details=problems)
    return out


def _description(raw: object) -> str:
    if not isinstance(raw, str) or len(raw) > DESCRIPTION_MAX:
        raise ValidationError("description", details=[
            {"field": "description", "error": f"a string of ≤ {DESCRIPTION_MAX}"},
        ])
    return check_text(unicodedata.normalize("NFC", raw).strip(), "description", multiline=True)


def _tags(raw: object) -> list[str]:
    if not isinstance(raw, list) or len(raw) > TAGS_MAX:
        raise ValidationError("tags", details=[
            {"field": "tags", "error": f"a list of ≤ {TAGS_MAX}"},
        ])
    tags: list[str] = []
    for tag in raw:
        clean = (" ".join(unicodedata.normalize("NFC", tag).lower().split())
                 if isinstance(tag, str) else "")
        if not clean or len(clean) > TAG_MAX or not _TAG.match(clean):
            raise ValidationError("tags", details=[{"field": "tags", "error": f"bad tag {tag!r}"}])
        if clean not in tags:
            tags.append(clean)
    return tags


def _category(raw: object) -> str:
    if (not isinstance(raw, str) or not raw.strip() or len(raw) > CATEGORY_MAX
            or not _TAG.match(raw.strip())):
        raise ValidationError("category", details=[
            {"field": "category", "error": f"1–{CATEGORY_MAX} letters, digits, spaces"},
        ])
    return raw.strip()

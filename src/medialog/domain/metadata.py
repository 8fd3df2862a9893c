"""Rules for editable asset metadata (PATCH, and POST /v1/uploads at creation). Pure."""

from __future__ import annotations

import re
import unicodedata
from typing import Annotated, Any, Literal

from pydantic import Field, model_validator

from medialog.domain.errors import ValidationError
from medialog.domain.schema import Body, parse, rule
from medialog.domain.text import TITLE_MIN, check_text, clean_title

DESCRIPTION_MAX = 5000
TAGS_MAX = 10
TAG_MAX = 30
CATEGORY_MAX = 50
VISIBILITIES = ("public", "unlisted", "private")
_TAG = re.compile(r"^[\w][\w \-]*$")
FIELDS = ("title", "description", "tags", "category", "visibility")


def validate_metadata_patch(body: Any) -> dict[str, Any]:
    """The cleaned changes of a PATCH body (``MetadataPatch``); every problem is listed at once."""
    patch = parse(MetadataPatch, body, message="invalid metadata")
    return patch.model_dump(exclude_unset=True)


def _description(raw: str) -> str:
    if not isinstance(raw, str) or len(raw) > DESCRIPTION_MAX:
        raise ValidationError("description", details=[
            {"field": "description", "error": f"a string of ≤ {DESCRIPTION_MAX}"},
        ])
    return check_text(unicodedata.normalize("NFC", raw).strip(), "description", multiline=True)


def _tags(raw: list[str]) -> list[str]:
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


def _category(raw: str) -> str:
    if (not isinstance(raw, str) or not raw.strip() or len(raw) > CATEGORY_MAX
            or not _TAG.match(raw.strip())):
        raise ValidationError("category", details=[
            {"field": "category", "error": f"1–{CATEGORY_MAX} letters, digits, spaces"},
        ])
    return raw.strip()


Title = Annotated[str, Field(min_length=TITLE_MIN, description="3–200 characters once runs of "
                             "spaces are collapsed"), rule(clean_title)]
Description = Annotated[str, Field(max_length=DESCRIPTION_MAX), rule(_description)]
Tags = Annotated[list[Annotated[str, Field(min_length=1, max_length=TAG_MAX)]],
                 Field(max_length=TAGS_MAX, description="lower-cased, duplicates dropped"),
                 rule(_tags)]
Category = Annotated[str, Field(min_length=1, max_length=CATEGORY_MAX), rule(_category)]
Visibility = Literal["public", "unlisted", "private"]


class MetadataFields(Body):
    """The editable metadata; each field optional."""

    description: Description | None = None
    tags: Tags | None = None
    category: Category | None = None
    visibility: Visibility | None = None


class MetadataPatch(MetadataFields):
    """``PATCH /v1/assets/{id}``: at least one field; null means "leave as is"."""

    title: Title | None = None

    @model_validator(mode="after")
    def _not_empty(self) -> MetadataPatch:
        if not self.model_fields_set:
            raise ValueError("the body must name at least one field")
        return self

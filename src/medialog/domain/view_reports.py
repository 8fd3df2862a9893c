"""Rules at the edge of engagement: what a playback report may say, and how an anonymous viewer
is named (who may engage at all: ``medialog.domain.access``). Pure functions."""

from __future__ import annotations

import hashlib
import hmac
import math
import re
import unicodedata
from dataclasses import dataclass
from typing import Any

from medialog.domain.access import AssetFacts
from medialog.domain.errors import ValidationError

SESSION_ID = re.compile(r"^[A-Za-z0-9_-]{8,64}$")
DURATION_SLACK_S = 30.0  # a report may claim at most the asset's duration plus this
UNKNOWN_DURATION_MAX_S = 600.0  # … or this much when the duration is not known (yet)
DEVICE_MAX = 64
REFERRER_MAX = 1024
FIELDS = frozenset({"session_id", "watch_seconds", "position", "device", "country", "referrer"})
# ISO 3166-1 alpha-2, officially assigned codes (249).
_COUNTRY_CODES = """
AD AE AF AG AI AL AM AO AQ AR AS AT AU AW AX AZ BA BB BD BE BF BG BH BI BJ BL BM BN BO BQ BR BS
BT BV BW BY BZ CA CC CD CF CG CH CI CK CL CM CN CO CR CU CV CW CX CY CZ DE DJ DK DM DO DZ EC EE
EG EH ER ES ET FI FJ FK FM FO FR GA GB GD GE GF GG GH GI GL GM GN GP GQ GR GS GT GU GW GY HK HM
HN HR HT HU ID IE IL IM IN IO IQ IR IS IT JE JM JO JP KE KG KH KI KM KN KP KR KW KY KZ LA LB LC
LI LK LR LS LT LU LV LY MA MC MD ME MF MG MH MK ML MM MN MO MP MQ MR MS MT MU MV MW MX MY MZ NA
NC NE NF NG NI NL NO NP NR NU NZ OM PA PE PF PG PH PK PL PM PN PR PS PT PW PY QA RE RO RS RU RW
SA SB SC SD SE SG SH SI SJ SK SL SM SN SO SR SS ST SV SX SY SZ TC TD TF TG TH TJ TK TL TM TN TO
TR TT TV TW TZ UA UG UM US UY UZ VA VC VE VG VI VN VU WF WS YE YT ZA ZM ZW
"""
COUNTRIES = frozenset(_COUNTRY_CODES.split())


@dataclass(frozen=True, kw_only=True)
class AssetRef(AssetFacts):
    """What engagement and streaming need to know of an asset (from the ``assets`` read model):
    its access facts, its id and its duration."""

    asset_id: str
    duration_s: float | None


def anonymous_viewer_key(salt: bytes, client_address: str) -> str:
    """``anon:`` + HMAC-SHA-256(salt, address): stable per address, not reversible without the
    salt, and never equal to a user id (which has no such prefix from our issuer)."""
    digest = hmac.new(salt, client_address.encode("utf-8", "replace"), hashlib.sha256)
    return "anon:" + digest.hexdigest()


@dataclass(frozen=True, kw_only=True)
class ViewReportSpec:
    """A validated playback report body."""

    session_id: str
    watch_seconds: float
    position: float | None = None
    device: str | None = None
    country: str | None = None
    referrer: str | None = None


def max_watch_seconds(duration_s: float | None) -> float:
    if duration_s is None or duration_s <= 0:
        return UNKNOWN_DURATION_MAX_S
    return duration_s + DURATION_SLACK_S


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        number = float(value)
    except OverflowError:  # an integer of hundreds of digits: no float holds it
        return None
    return number if math.isfinite(number) else None


def _text(value: object, limit: int) -> str | None:
    if not isinstance(value, str):
        return None
    text = unicodedata.normalize("NFC", value).strip()
    if not 1 <= len(text) <= limit or any(unicodedata.category(ch)[0] == "C" for ch in text):
        return None
    return text


def validate_view_report(body: Any, *, duration_s: float | None) -> ViewReportSpec:
    """Check ``{session_id, watch_seconds, position?, device?, country?, referrer?}``.

    Raises ``ValidationError(code="INVALID_VIEW_REPORT")`` listing every problem in ``details``
    (``{"field", "error", …}``). Optional fields may be absent or null; unknown fields are refused.
    """
    if not isinstance(body, dict):
        raise ValidationError("body must be a JSON object", code="INVALID_VIEW_REPORT",
                              details=[{"field": None, "error": "not an object"}])
    problems: list[dict[str, Any]] = []
    unknown = set(body) - FIELDS
    if unknown:
        problems.append({"field": sorted(unknown), "error": "unknown fields"})

    session_id = body.get("session_id")
    if not isinstance(session_id, str) or not SESSION_ID.match(session_id):
        problems.append({"field": "session_id", "error": "8–64 characters of [A-Za-z0-9_-]"})

    cap = max_watch_seconds(duration_s)
    watch = _number(body.get("watch_seconds"))
    if watch is None or watch < 0:
        problems.append({"field": "watch_seconds", "error": "a number ≥ 0"})
    elif watch > cap:
        problems.append({"field": "watch_seconds", "error": "more than the asset can have played",
                         "max": cap})

    position: float | None = None
    if body.get("position") is not None:
        position = _number(body["position"])
        if position is None or position < 0:
            problems.append({"field": "position", "error": "a number ≥ 0"})
        elif position > cap:  # the duration plus slack, or UNKNOWN_DURATION_MAX_S if unknown
            problems.append({"field": "position", "max": cap, "error": "beyond the asset's end"
                             if duration_s is not None and duration_s > 0
                             else "beyond what an asset of unknown duration may claim"})

    device = _optional_text(body, "device", DEVICE_MAX, problems)
    referrer = _optional_text(body, "referrer", REFERRER_MAX, problems)
    country: str | None = None
    if body.get("country") is not None:
        raw = body["country"]
        country = raw.upper() if isinstance(raw, str) else None
        if country not in COUNTRIES:
            problems.append({"field": "country", "error": "an ISO 3166-1 alpha-2 code"})

    if problems:
        raise ValidationError("invalid view report", code="INVALID_VIEW_REPORT",
                              details=problems)
    assert isinstance(session_id, str) and watch is not None
    return ViewReportSpec(session_id=session_id, watch_seconds=watch, position=position,
                          device=device, country=country, referrer=referrer)


def _optional_text(body: dict[str, Any], name: str, limit: int,
                   problems: list[dict[str, Any]]) -> str | None:
    if body.get(name) is None:
        return None
    text = _text(body[name], limit)
    if text is None:
        problems.append({"field": name, "error": f"1–{limit} printable characters"})
    return text

"""Rules at the edge of engagement: what a playback report may say, and how an anonymous viewer
is named (who may engage at all: ``medialog.domain.access``). Pure functions."""

from __future__ import annotations

import hashlib
import hmac
import re
import unicodedata
from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import AfterValidator, Field

from medialog.domain.access import AssetFacts
from medialog.domain.errors import ValidationError
from medialog.domain.schema import Body, parse

SESSION_ID = re.compile(r"^[A-Za-z0-9_-]{8,64}$")
DURATION_SLACK_S = 30.0  # a report may claim at most the asset's duration plus this
UNKNOWN_DURATION_MAX_S = 600.0  # … or this much when the duration is not known (yet)
DEVICE_MAX = 64
REFERRER_MAX = 1024
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


def max_watch_seconds(duration_s: float | None) -> float:
    if duration_s is None or duration_s <= 0:
        return UNKNOWN_DURATION_MAX_S
    return duration_s + DURATION_SLACK_S


def _printable(limit: int) -> Any:
    """NFC, stripped, 1…``limit`` characters and nothing unprintable (no category C)."""

    def check(value: str) -> str:
        if value.isascii() and value.isprintable():  # the usual case, decided in C
            text = value.strip()
        else:
            text = unicodedata.normalize("NFC", value).strip()
            if any(unicodedata.category(ch)[0] == "C" for ch in text):
                raise ValueError(f"1–{limit} printable characters")
        if not 1 <= len(text) <= limit:
            raise ValueError(f"1–{limit} printable characters")
        return text

    return AfterValidator(check)


def _country(value: str) -> str:
    if value.upper() not in COUNTRIES:
        raise ValueError("an ISO 3166-1 alpha-2 code")
    return value.upper()


Seconds = Annotated[float, Field(ge=0, allow_inf_nan=False)]


class ViewReport(Body):
    """``POST /v1/assets/{id}/views``: one playback report of a session. Optional fields may be
    absent or null."""

    session_id: Annotated[str, Field(pattern=SESSION_ID.pattern,
                                     description="the player's session, 8–64 of [A-Za-z0-9_-]")]
    watch_seconds: Seconds = Field(description="seconds watched since the session's last report")
    position: Seconds | None = Field(None, description="playhead position, seconds")
    device: Annotated[str, Field(min_length=1), _printable(DEVICE_MAX)] | None = None
    country: Annotated[str, Field(pattern="^[A-Za-z]{2}$"), AfterValidator(_country)] | None = None
    referrer: Annotated[str, Field(min_length=1), _printable(REFERRER_MAX)] | None = None


def validate_view_report(body: Any, *, duration_s: float | None) -> ViewReport:
    """Check ``{session_id, watch_seconds, position?, device?, country?, referrer?}``: the
    report, cleaned (the model is frozen; no copy into a dataclass: this is the ingest path).

    Raises ``ValidationError(code="INVALID_VIEW_REPORT")`` listing every problem in ``details``
    (``{"field", "error", …}``). Optional fields may be absent or null; unknown fields are refused.
    """
    report = parse(ViewReport, body, message="invalid view report", code="INVALID_VIEW_REPORT")
    cap = max_watch_seconds(duration_s)
    problems: list[dict[str, Any]] = []
    if report.watch_seconds > cap:
        problems.append({"field": "watch_seconds", "error": "more than the asset can have played",
                         "max": cap})
    if report.position is not None and report.position > cap:
        problems.append({"field": "position", "max": cap, "error": "beyond the asset's end"
                         if duration_s is not None and duration_s > 0
                         else "beyond what an asset of unknown duration may claim"})
    if problems:
        raise ValidationError("invalid view report", code="INVALID_VIEW_REPORT",
                              details=problems)
    return report

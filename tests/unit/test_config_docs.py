"""docs/configuration.md and ``Settings`` agree: every field is documented as
``MEDIALOG_<FIELD>`` with its real default, and the README names no variable that does not exist."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from pydantic import SecretStr

from medialog.config import Settings

ROOT = Path(__file__).resolve().parents[2]
CONFIG_DOC = ROOT / "docs" / "configuration.md"
# Read by the test suite (tests/conftest.py), not by medialog: documented, but not a setting.
TEST_ONLY = {"MEDIALOG_KEEP_TEST_DATA"}
ROW = re.compile(r"^\|\s*`(MEDIALOG_[A-Z0-9_]+)`\s*\|([^|]*)\|([^|]*)\|\s*$")


def env_name(field: str) -> str:
    return f"MEDIALOG_{field.upper()}"


def documented_default(value: object) -> str:
    """How the table writes a default: `value`, (empty) or (unset)."""
    if isinstance(value, SecretStr):
        value = value.get_secret_value()
    if value is None:
        return "(unset)"
    if value == "":
        return "(empty)"
    return f"`{value}`"


@pytest.fixture(scope="module")
def readme() -> str:
    return CONFIG_DOC.read_text()


@pytest.fixture(scope="module")
def table(readme: str) -> dict[str, tuple[str, str]]:
    """``{variable: (default cell, description cell)}`` of the page's table."""
    rows: dict[str, tuple[str, str]] = {}
    for line in readme.splitlines():
        row = ROW.match(line)
        if row:
            assert row.group(1) not in rows, f"{row.group(1)} is listed twice"
            rows[row.group(1)] = (row.group(2).strip(), row.group(3).strip())
    return rows


def test_every_field_is_in_the_table(table: dict[str, tuple[str, str]]) -> None:
    missing = [env_name(f) for f in Settings.model_fields if env_name(f) not in table]
    assert not missing, f"add to docs/configuration.md: {missing}"


def test_the_table_lists_only_fields(table: dict[str, tuple[str, str]]) -> None:
    fields = {env_name(f) for f in Settings.model_fields}
    assert not set(table) - fields


def test_documented_defaults_are_the_real_ones(table: dict[str, tuple[str, str]]) -> None:
    wrong = {
        env_name(name): (table[env_name(name)][0], documented_default(field.default))
        for name, field in Settings.model_fields.items()
        if env_name(name) in table and table[env_name(name)][0] != documented_default(field.default)
    }
    assert not wrong, f"docs/configuration.md default vs config.py (documented, expected): {wrong}"


def test_every_row_says_what_it_does(table: dict[str, tuple[str, str]]) -> None:
    assert all(len(description) >= 10 for _, description in table.values())


@pytest.mark.parametrize("doc", ["README.md", "docs/configuration.md"])
def test_docs_name_no_unknown_variable(doc: str) -> None:
    fields = {env_name(f) for f in Settings.model_fields}
    text = (ROOT / doc).read_text()
    unknown = sorted(set(re.findall(r"MEDIALOG_[A-Z0-9_]+", text)) - fields - TEST_ONLY)
    assert not unknown, f"{doc} names variables that are not Settings fields: {unknown}"


def test_table_is_in_field_order(table: dict[str, tuple[str, str]]) -> None:
    """Same order as config.py, so a reader can go from one to the other."""
    assert list(table) == [env_name(f) for f in Settings.model_fields]

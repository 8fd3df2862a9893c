"""The pure parts of ``medialog verify``: the checksum and diff SQL, the report's lines, and the
tables it compares as the migrations create them."""

from __future__ import annotations

import re

from medialog.resources import schemas_dir
from projections.postgres.verify import (
    FOLDS,
    TableResult,
    VerifyReport,
    checksum_sql,
    diff_sql,
    key_text,
    quoted,
    row_hash,
)


def test_identifiers_are_quoted():
    assert quoted("assets") == '"assets"'
    assert quoted('we"ird') == '"we""ird"'


def test_the_checksum_hashes_the_chosen_columns_in_order_and_sums_order_independently():
    sql = checksum_sql('"s"."t"', ["a", "b"], "t.a <> 0")
    assert row_hash(["a", "b"]) == 'md5(ROW(t."a", t."b")::text)'
    assert sql == ("SELECT count(*), coalesce(sum(('x' || substr(md5(ROW(t.\"a\", t.\"b\")::text)"
                   ", 1, 15))::bit(60)::bigint), 0) FROM \"s\".\"t\" AS t WHERE t.a <> 0")


def test_the_diff_joins_on_the_whole_key_and_keeps_the_first_keys():
    sql = diff_sql('"s"."live_x"', '"s"."x"', ("k1", "k2"), ["k1", "k2", "v"], "true", 5)
    assert sql.startswith('SELECT "k1", "k2", g.verify_hash IS NULL AS only_live, '
                          "l.verify_hash IS NULL AS only_log FROM (SELECT t.\"k1\", t.\"k2\", ")
    assert 'FROM "s"."live_x" AS t WHERE true) AS l FULL OUTER JOIN' in sql
    assert 'FROM "s"."x" AS t WHERE true) AS g USING ("k1", "k2")' in sql
    assert sql.endswith('WHERE l.verify_hash IS DISTINCT FROM g.verify_hash '
                        'ORDER BY "k1", "k2" LIMIT 5')


def test_table_lines():
    assert TableResult("assets", 1234, 1234, True).line() == "assets: 1,234 rows, equal"
    assert TableResult("likes", 1, 1, True).line() == "likes: 1 row, equal"
    assert TableResult("likes", 2, 3, False, (("a/u", "only in log"),)).line() == (
        "likes: live 2 vs log 3 rows; first differing keys: a/u (only in log)")
    assert TableResult("asset_stats", 1, 1, False,
                       (("a", "differs"), ("b", "only live"))).line() == (
        "asset_stats: 1 row in both, checksums differ; first differing keys: a (differs), "
        "b (only live)")
    assert key_text(["a", "v", 3]) == "a/v/3"


def test_the_verdict():
    equal = TableResult("assets", 2, 2, True)
    differs = TableResult("likes", 2, 3, False, (("a/u", "only in log"),))
    ok = VerifyReport((equal, equal), 1500, 2.04)
    assert ok.equal and ok.lines()[-1] == (
        "equal: 2 tables match a fresh fold of 1,500 records (2.0s)")
    bad = VerifyReport((equal, differs), 10, 0.5)
    assert not bad.equal and bad.lines() == [
        "assets: 2 rows, equal", differs.line(),
        "DIFFERENT: 1 of 2 tables differ from a fresh fold of 10 records (0.5s)"]


def _create_table(name: str) -> str:
    """The columns of ``name`` across the migrations (CREATE TABLE and ADD COLUMN)."""
    text = "\n".join(p.read_text() for p in sorted((schemas_dir() / "migrations" / "postgres")
                                                   .glob("*.sql")))
    created = re.search(rf"CREATE TABLE {name} \((.*?)\n\);", text, re.S)
    assert created, name
    added = re.findall(rf"ALTER TABLE {name}\b(.*?);", text, re.S)
    return created.group(1) + "".join(added)


def test_the_compared_tables_keys_and_ignored_columns_are_the_migrations():
    for fold in FOLDS.values():
        for table in fold.tables:
            body = _create_table(table.name)
            key = re.search(r"PRIMARY KEY \(([^)]*)\)", body)
            declared = (tuple(k.strip() for k in key.group(1).split(",")) if key else
                        tuple(re.findall(r"^\s*(\w+)\s+\w+ PRIMARY KEY", body, re.M)))
            assert declared == table.key, table.name
            for column in table.ignore:
                assert re.search(rf"^\s*{column}\s", body, re.M), (table.name, column)

-- The ClickHouse projection writes its positions into `projection_positions` itself, at most
-- about once a second (projections/clickhouse.py, POSITIONS_EVERY_S), instead of through the
-- materialized view `events_positions` on every insert into `events` (which cost a second part
-- written per batch, ~7-15 ms). A stored position still never covers a row that is not written
-- (it is inserted after the batch's rows); it may lag, which only makes a re-delivered record be
-- written again, identically (every table here is a ReplacingMergeTree read with FINAL).
DROP VIEW IF EXISTS events_positions;

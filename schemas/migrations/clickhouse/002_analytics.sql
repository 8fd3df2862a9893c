-- Analytics tables of the ClickHouse projection (projections/clickhouse.py).
--
-- Exactness under replay: every table here is a ReplacingMergeTree whose sort key ends in the
-- event id, and a replayed event yields the identical row, so a duplicate collapses on merge and
-- every query reads with FINAL (or uniqExact over ids). Aggregates are computed at query time
-- over these deduplicated base tables: a SummingMergeTree or materialized-view sum would add a
-- replayed row twice before the merge that never comes for an aggregate.

-- One row per medialog.view.reported, with the verdict of the view-counting rule
-- (medialog.domain.views): counted | below_threshold | already_counted, so every report that
-- does not count says why. A record whose event id is already here (the same report twice on the
-- log) gets no second row. `watch_ms` is the rule's exact delta (whole milliseconds, so sums do not
-- depend on order). `state` is the session's fold state after this report (JSON); the projection
-- reads the latest one below a batch's first offset to continue the fold, which makes a verdict
-- a function of the log alone (a replay recomputes the same row).
CREATE TABLE IF NOT EXISTS views (
    id            String,
    time          DateTime64(3, 'UTC'),
    asset_id      String,
    owner_id      String,
    viewer_key    String,
    signed_in     UInt8,
    session_id    String,
    watch_ms      UInt64,
    duration_s    Nullable(Float64),
    position      Nullable(Float64),
    device        LowCardinality(String),
    country       LowCardinality(String),
    referrer      String,
    verdict       LowCardinality(String),
    state         String,
    topic         LowCardinality(String),
    partition     UInt32,
    offset        UInt64
) ENGINE = ReplacingMergeTree
ORDER BY (asset_id, viewer_key, session_id, id)
PARTITION BY toYYYYMM(time);

-- Where the ClickHouse projection is, per (topic, partition): written by the materialized view
-- below as part of every insert into `events` (version = offset, the highest wins), so the
-- position advances in the same insert as the batch's event rows. Read with max(offset).
CREATE TABLE IF NOT EXISTS projection_positions (
    consumer   LowCardinality(String),
    topic      String,
    partition  UInt32,
    offset     UInt64
) ENGINE = ReplacingMergeTree(offset)
ORDER BY (consumer, topic, partition);

CREATE MATERIALIZED VIEW IF NOT EXISTS events_positions TO projection_positions AS
SELECT 'projection.clickhouse' AS consumer, topic, partition, max(offset) AS offset
FROM events
GROUP BY topic, partition;

-- Every event of every public topic, one row per event id. ReplacingMergeTree on the event id
-- (the sort key) makes re-delivery and replays harmless; exact queries use FINAL or uniqExact(id).
CREATE TABLE IF NOT EXISTS events (
    id            String,
    type          LowCardinality(String),
    source        LowCardinality(String),
    subject       String,
    sequence      Nullable(UInt64),
    time          DateTime64(3, 'UTC'),
    actor_id      String,
    actor_roles   String,
    causation_id  String,
    correlation_id String,
    data          String,
    topic         LowCardinality(String),
    partition     UInt32,
    offset        UInt64
) ENGINE = ReplacingMergeTree
ORDER BY (type, subject, id)
PARTITION BY toYYYYMM(time)

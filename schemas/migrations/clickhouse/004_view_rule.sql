-- The view-counting rule the verdicts in `views` are derived with (projections/clickhouse_rederive.py).
-- A rule change (MEDIALOG_VIEW_THRESHOLD_S, MEDIALOG_VIEW_WINDOW_S) re-derives them: the ClickHouse
-- projection at start, or `medialog rebuild analytics`. Every write is one row whose `step` is the
-- previous row's + 1, and the row with the highest step is the one that holds (read with ORDER BY
-- step DESC LIMIT 1, the merges keep only that row):
--   `rule`     the rule, JSON {"threshold_s": …, "window_s": …}
--   `derived`  1: every row of `views` is derived with `rule`. 0: a re-derivation under `rule` is
--              under way (or was interrupted: the next one resumes it)
--   `cursor`   while `derived` = 0, the last `views` row re-derived and its session's state
--              (JSON, '' before the first chunk)
CREATE TABLE IF NOT EXISTS view_rule (
    rule     String,
    derived  UInt8,
    cursor   String,
    step     UInt64
) ENGINE = ReplacingMergeTree(step)
ORDER BY tuple()

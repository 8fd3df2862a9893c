-- view_sessions would otherwise keep one row per playback session forever. A session is only
-- needed while a report may still continue its window, and a little longer to recognise a
-- re-published duplicate; the engagement projection deletes the sessions whose window ended
-- MEDIALOG_VIEW_SESSIONS_KEEP_S before the newest report it applied on the same partition of
-- events.views (log time, never the clock: a projection catching up on old reports never
-- deletes a session that a later report of the same replay still continues). The rebuild
-- does not prune; the live projection does afterwards. Rows from before this migration have no
-- partition and are kept.
ALTER TABLE view_sessions ADD COLUMN topic text, ADD COLUMN partition integer;
CREATE INDEX view_sessions_by_partition ON view_sessions (topic, partition, window_start);

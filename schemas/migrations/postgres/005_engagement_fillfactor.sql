-- Free room in the pages of the engagement projection's most updated tables (every batch
-- rewrites each touched session and each touched asset's counters), so that PostgreSQL can
-- keep an updated row in its page without a new index entry (a HOT update: no indexed column
-- changes). Measured on bench/projections.py: HOT updates of view_sessions 4 % → 53 %, of
-- asset_stats 56 % → 94 %, the projection's write statement about 15 % faster. Applies to
-- pages written from now on; a rebuild (`medialog rebuild engagement`) rewrites them all.
ALTER TABLE view_sessions SET (fillfactor = 70);
ALTER TABLE asset_stats SET (fillfactor = 50);

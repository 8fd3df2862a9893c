-- Engagement read model (projection "engagement", projections/engagement_pg.py), folded from
-- events.views and events.engagement. Everything here can be dropped and rebuilt from the log
-- (`medialog rebuild engagement`).

-- Counters per asset. like_count = likes rows with liked; view_count = counted views;
-- watch_seconds_total = every non-duplicate report's watch delta (kept exact: numeric).
CREATE TABLE asset_stats (
    asset_id            text PRIMARY KEY,
    view_count          bigint NOT NULL DEFAULT 0,
    like_count          bigint NOT NULL DEFAULT 0,
    watch_seconds_total numeric(20, 3) NOT NULL DEFAULT 0,
    updated_at          timestamptz NOT NULL DEFAULT now()
);

-- The engagement aggregate per (asset, user); version = sequence of the last event applied.
-- Unliked rows stay (liked = false) so the version survives an unlike.
CREATE TABLE likes (
    engagement_key text PRIMARY KEY,          -- "{asset_id}/{user_id}"
    asset_id       text    NOT NULL,
    user_id        text    NOT NULL,
    liked          boolean NOT NULL,
    version        integer NOT NULL,
    liked_at       timestamptz,               -- time of the last like
    updated_at     timestamptz NOT NULL
);
CREATE INDEX likes_user ON likes (user_id, updated_at DESC) WHERE liked;
CREATE INDEX likes_asset ON likes (asset_id) WHERE liked;

-- The view rule's fold per playback session (medialog.domain.views.SessionState).
CREATE TABLE view_sessions (
    asset_id     text        NOT NULL,
    viewer_key   text        NOT NULL,       -- user id, or "anon:" + salted hash of the address
    session_id   text        NOT NULL,
    signed_in    boolean     NOT NULL,
    window_start timestamptz NOT NULL,       -- the current window opened at this report time
    watched_ms   bigint      NOT NULL,       -- accumulated in the current window
    counted_at   timestamptz,                -- the current window's view counted at
    reports      integer     NOT NULL,       -- reports applied, duplicates excluded
    views        integer     NOT NULL,       -- views counted, all windows
    recent_ids   text[]      NOT NULL,       -- last report ids, to recognise duplicates
    updated_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (asset_id, viewer_key, session_id)
);

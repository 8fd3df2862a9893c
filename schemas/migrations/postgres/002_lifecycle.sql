-- The asset lifecycle in the read model (projection "assets"): metadata, promotion, transcode
-- progress and results, failure reasons, deletion; plus the per-asset audit trail.
ALTER TABLE assets
    ADD COLUMN visibility          text NOT NULL DEFAULT 'public',
    ADD COLUMN description         text NOT NULL DEFAULT '',
    ADD COLUMN tags                text[] NOT NULL DEFAULT '{}',
    ADD COLUMN category            text NOT NULL DEFAULT '',
    ADD COLUMN master_key          text,
    ADD COLUMN transcode           jsonb,            -- {job_id, attempt, rungs, done} of the current job
    ADD COLUMN renditions          jsonb NOT NULL DEFAULT '[]',
    ADD COLUMN master_playlist_key text,
    ADD COLUMN thumbnail_key       text,
    ADD COLUMN duration_s          double precision,
    ADD COLUMN width               integer,
    ADD COLUMN height              integer,
    ADD COLUMN probe               jsonb,
    ADD COLUMN failure             jsonb,            -- {job_id, reason, rung, attempts}
    ADD COLUMN deleted_at          timestamptz;

CREATE INDEX assets_status_created ON assets (status, created_at DESC);
CREATE INDEX assets_visibility_created ON assets (visibility, created_at DESC);
CREATE INDEX assets_tags ON assets USING gin (tags);
-- Uploads never completed: the expiry sweeper looks for these.
CREATE INDEX assets_awaiting_expiry ON assets (upload_expires_at) WHERE status = 'awaiting_upload';

-- Every event of every asset, in order (GET /v1/assets/{id}/history).
CREATE TABLE asset_events (
    asset_id   text    NOT NULL,
    sequence   integer NOT NULL,
    event_id   text    NOT NULL,
    type       text    NOT NULL,
    time       timestamptz NOT NULL,
    actor_id   text,
    causation_id text,
    data       jsonb   NOT NULL,
    PRIMARY KEY (asset_id, sequence)
);

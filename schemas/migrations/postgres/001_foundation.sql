-- Consumer positions stored with their effects (docs/architecture.md, rule 2): a projection or
-- actor writes its rows and its (consumer, topic, partition) → offset in one transaction.
CREATE TABLE consumer_offsets (
    consumer   text    NOT NULL,
    topic      text    NOT NULL,
    partition  integer NOT NULL,
    "offset"   bigint  NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer, topic, partition)
);

-- Actor state: a cache of the fold of the aggregate's events (the log stays the truth).
CREATE TABLE actor_snapshots (
    actor        text    NOT NULL,
    aggregate_id text    NOT NULL,
    version      integer NOT NULL,
    state        jsonb   NOT NULL,
    updated_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (actor, aggregate_id)
);

-- What became of each command (docs/architecture.md, rule 5). Written by the actor that decided it.
CREATE TABLE command_outcomes (
    command_id   text PRIMARY KEY,
    actor        text NOT NULL,
    aggregate_id text NOT NULL,
    command_type text NOT NULL,
    actor_id     text NOT NULL,
    status       text NOT NULL CHECK (status IN ('accepted', 'rejected')),
    version      integer,            -- aggregate version after the command (accepted)
    event_ids    jsonb NOT NULL DEFAULT '[]',
    error_code   text,
    error_message text,
    decided_at   timestamptz NOT NULL DEFAULT now()
);

-- The read model of assets (projection "assets"). version = sequence of the last event applied.
CREATE TABLE assets (
    asset_id          text PRIMARY KEY,
    version           integer NOT NULL,
    owner_id          text NOT NULL,
    status            text NOT NULL,
    kind              text NOT NULL,
    filename          text NOT NULL,
    content_type      text NOT NULL,
    size_bytes        bigint NOT NULL,
    title             text NOT NULL,
    staging_key       text NOT NULL,
    upload_expires_at timestamptz NOT NULL,
    created_at        timestamptz NOT NULL,
    updated_at        timestamptz NOT NULL
);
CREATE INDEX assets_owner_created ON assets (owner_id, created_at DESC);

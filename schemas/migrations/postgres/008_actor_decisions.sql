-- Decisions an actor took on what it observed outside the log (streams.actor: ActorSpec.prepare,
-- e.g. the asset actor's HeadObject of an upload), stored before their events are published and
-- deleted in the transaction that stores the snapshot, the outcome and the offset. A command
-- re-handled after a crash in between publishes these same events again instead of deciding
-- anew on what the world says now (the staging object may be gone by then: promoted).
CREATE TABLE actor_decisions (
    command_id   text PRIMARY KEY,
    actor        text        NOT NULL,
    aggregate_id text        NOT NULL,
    events       bytea[]     NOT NULL,  -- the encoded CloudEvents, as published
    event_ids    text[]      NOT NULL,
    state        jsonb       NOT NULL,  -- the snapshot after them
    created_at   timestamptz NOT NULL DEFAULT now()
);

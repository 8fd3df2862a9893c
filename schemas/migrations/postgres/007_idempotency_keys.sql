-- What each Idempotency-Key was first used for (api, medialog.api.requests.command_id): the
-- command id the key names and a fingerprint of the request (method, path, JSON body). The same
-- key with another request is refused (422 IDEMPOTENCY_KEY_REUSED) instead of answering with
-- the first request's command. Kept as long as command_outcomes: a key names its command for
-- good.
CREATE TABLE idempotency_keys (
    command_id  text PRIMARY KEY,
    fingerprint text        NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);

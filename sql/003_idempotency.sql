-- Idempotency-Key support for POST /update-tasks: the first response per
-- (caller, key) is stored in the same transaction as the update it reports.
CREATE TABLE idempotency_keys (
    caller           text NOT NULL,
    key              text NOT NULL,
    -- sha256 of the canonical request body: the same key with another body is refused.
    request_hash     bytea NOT NULL,
    response_status  integer NOT NULL,
    response_body    bytea NOT NULL,
    created_at       timestamptz NOT NULL DEFAULT now(),
    expires_at       timestamptz NOT NULL,
    PRIMARY KEY (caller, key)
);
CREATE INDEX idempotency_keys_expires_idx ON idempotency_keys (expires_at);

-- The history of each notification: one row per recorded delivery attempt.
CREATE TABLE notification_attempts (
    id                   bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    notification_id      uuid NOT NULL REFERENCES notifications (id) ON DELETE CASCADE,
    attempt              integer NOT NULL,
    -- sent | retry | dead | halted
    outcome              text NOT NULL,
    error                text,
    provider_message_id  text,
    at                   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX notification_attempts_notification_idx ON notification_attempts (notification_id, at);

-- Users, tasks and the notification outbox.

CREATE TABLE users (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    email       text NOT NULL,
    name        text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);
-- E-mail addresses are unique regardless of case.
CREATE UNIQUE INDEX users_email_key ON users (lower(email));

CREATE TABLE tasks (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    title        text NOT NULL,
    status       text NOT NULL DEFAULT 'open'
                 CHECK (status IN ('open', 'in_progress', 'blocked', 'done')),
    assignee_id  bigint REFERENCES users (id),
    due_at       timestamptz,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX tasks_assignee_idx ON tasks (assignee_id);

CREATE TYPE notification_status AS ENUM ('pending', 'sending', 'sent', 'dead');

-- The transactional outbox: one row per e-mail, written in the same
-- transaction as the task update. The row is the truth; the in-memory
-- stream only carries its id as a hint.
CREATE TABLE notifications (
    id                   uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    recipient_id         bigint NOT NULL REFERENCES users (id),
    -- A snapshot of what the e-mail must say, as the transaction left it.
    recipient_email      text NOT NULL,
    recipient_name       text NOT NULL,
    tasks                jsonb NOT NULL,
    status               notification_status NOT NULL DEFAULT 'pending',
    attempts             integer NOT NULL DEFAULT 0,
    next_attempt_at      timestamptz NOT NULL DEFAULT now(),
    -- Fencing: every state change after a claim compares this token.
    lease_token          uuid,
    lease_expires_at     timestamptz,
    last_error           text,
    provider_message_id  text,
    request_id           text,
    created_at           timestamptz NOT NULL DEFAULT now(),
    sent_at              timestamptz
);
-- Partial indexes keep the sweeper's scans proportional to live work,
-- not to the whole (mostly sent) history.
CREATE INDEX notifications_due_idx ON notifications (next_attempt_at, id)
    WHERE status = 'pending';
CREATE INDEX notifications_lease_idx ON notifications (lease_expires_at)
    WHERE status = 'sending';
CREATE INDEX notifications_recipient_idx ON notifications (recipient_email, created_at DESC);

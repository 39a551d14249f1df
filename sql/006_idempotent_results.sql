-- The result of an idempotent update, kept as typed rows: the update stores it
-- in the same statement that takes the key and changes the tasks (one round
-- trip, atomic, so no transaction around it), and a replay renders it with the
-- same code as the first response. Keys stored before this migration keep
-- their rendered body in idempotency_keys.response_body.
CREATE TYPE task_result AS (
    id           bigint,
    title        text,
    status       text,
    assignee_id  bigint,
    due_at       timestamptz,
    created_at   timestamptz,
    updated_at   timestamptz
);

CREATE TABLE idempotent_results (
    caller            text NOT NULL,
    key               text NOT NULL,
    tasks             task_result[] NOT NULL,
    notification_ids  uuid[] NOT NULL,
    PRIMARY KEY (caller, key),
    FOREIGN KEY (caller, key) REFERENCES idempotency_keys (caller, key) ON DELETE CASCADE
);

-- A due date is one the service can give back with its time zone: from
-- 0001-01-02 to 9999-12-30T23:59:59.999999 UTC, never -infinity or infinity
-- (service/models.py DUE_AT_RANGE, which the API enforces). This keeps every
-- other writer to the same rule (tests/repository/test_due_at_range.py).
--
-- Dates stored as -infinity or infinity before the API refused them are moved
-- to the nearest end of the range first, so those tasks can be read and
-- updated again. NOT VALID adds the constraint without scanning the table
-- under an exclusive lock; every write from now on is checked, and the rows
-- already there satisfy it after the update above (VALIDATE CONSTRAINT can
-- confirm it later without blocking writes).
SET LOCAL lock_timeout = '5s';

UPDATE tasks SET due_at = CASE
        WHEN due_at < '0001-01-02 00:00:00+00' THEN timestamptz '0001-01-02 00:00:00+00'
        ELSE timestamptz '9999-12-30 23:59:59.999999+00'
    END
WHERE due_at < '0001-01-02 00:00:00+00' OR due_at > '9999-12-30 23:59:59.999999+00';

ALTER TABLE tasks ADD CONSTRAINT tasks_due_at_in_range
    CHECK (due_at BETWEEN '0001-01-02 00:00:00+00' AND '9999-12-30 23:59:59.999999+00')
    NOT VALID;

-- When a row reached a final state (sent or dead): what retention prunes by.
ALTER TABLE notifications ADD COLUMN finished_at timestamptz;
UPDATE notifications SET finished_at = coalesce(sent_at, created_at)
    WHERE status IN ('sent', 'dead');
CREATE INDEX notifications_finished_idx ON notifications (status, finished_at)
    WHERE status IN ('sent', 'dead');
-- Dead-letter listing: newest first, per status.
CREATE INDEX notifications_status_created_idx ON notifications (status, created_at DESC, id DESC);
-- Recipient filters match case-insensitively, like users' e-mail addresses.
DROP INDEX notifications_recipient_idx;
CREATE INDEX notifications_recipient_idx
    ON notifications (lower(recipient_email), created_at DESC, id DESC);

-- The dashboard's delivery activity (sent per minute over the last hour,
-- latency percentiles over the last 15 minutes) reads recent sent rows by
-- sent_at. Partial, so it holds sent rows only; created_at is included so
-- both statements are index-only scans of the recent end, however many
-- rows the outbox keeps.
CREATE INDEX notifications_sent_at_idx ON notifications (sent_at) INCLUDE (created_at)
    WHERE status = 'sent';

-- A notification its receiver refused for good (a 4xx answer, an invalid address, a receiver
-- no longer configured) is marked failed instead of being retried for days; it is shown as
-- failed in the API and on the alerts page.
ALTER TABLE notifications ADD COLUMN failed_at_ms INTEGER;
-- Each receiver's lane asks for its own due notifications.
CREATE INDEX notifications_lane ON notifications (receiver, next_attempt_ms)
    WHERE delivered_at_ms IS NULL AND failed_at_ms IS NULL;

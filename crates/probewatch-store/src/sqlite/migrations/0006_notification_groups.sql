-- Notification grouping: notifications of one receiver and alert group are scheduled by
-- group_wait / group_interval and delivered together.
ALTER TABLE notifications ADD COLUMN group_key TEXT NOT NULL DEFAULT '';
-- When the notification was scheduled to go out (its first attempt).
ALTER TABLE notifications ADD COLUMN send_at_ms INTEGER;
UPDATE notifications SET send_at_ms = next_attempt_ms;
CREATE INDEX notifications_group ON notifications (receiver, group_key, send_at_ms);

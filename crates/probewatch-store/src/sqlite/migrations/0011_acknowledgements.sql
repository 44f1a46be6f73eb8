-- An acknowledgement is a silence bound to one alert: its matchers are the alert's labels,
-- and it is expired (by the rule evaluator) once no active alert matches it any more, so
-- it stops notifications until the alert resolves, as a Nagios acknowledgement does.
ALTER TABLE silences ADD COLUMN acknowledgement INTEGER NOT NULL DEFAULT 0;

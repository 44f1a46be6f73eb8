-- Series are no longer looked up by name in the database.
--
-- The writer holds every series' name → id in memory (sqlite/series_directory.rs), read
-- from this table when it starts and kept up by id, so the name-hash index of migration
-- 0010 only cost a random index entry (and its page written) per new series: at first
-- sight of 700,000 series, a third of the writer's time. The index and the hash go; a new
-- series is an append at the end of the table.
DROP INDEX IF EXISTS series_name_hash;
ALTER TABLE series DROP COLUMN name_hash;

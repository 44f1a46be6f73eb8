-- Series and check names compare as bytes (collation "C"), as SQLite compares them. Under
-- the database's default collation (C.UTF-8, en_US.UTF-8, ...) every comparison in the
-- unique indexes of series (metric, labels) and checks (probe, host, name) went through the
-- C library's strcoll: at 100,000 checks, where nearly every batch creates 7,000 series,
-- the series INSERT was ~4 µs a row, most of a batch's server time. Byte order is also the
-- order SQLite and the dashboard sort names in, so ORDER BY on these columns now agrees
-- with them whatever the database's locale. The indexes are rebuilt.
ALTER TABLE series
    ALTER COLUMN metric TYPE text COLLATE "C",
    ALTER COLUMN labels TYPE text COLLATE "C";
ALTER TABLE checks
    ALTER COLUMN probe TYPE text COLLATE "C",
    ALTER COLUMN host TYPE text COLLATE "C",
    ALTER COLUMN name TYPE text COLLATE "C";

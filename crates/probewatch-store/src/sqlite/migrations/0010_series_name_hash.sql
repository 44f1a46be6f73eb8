-- Series are found by a hash of their name instead of a UNIQUE (metric, labels) index.
--
-- That index held every series' text a second time: at 700,000 series it was about a
-- third of the database, and each new series put ~70 bytes of key into it at a random
-- place (a page written per new series). `name_hash` is a 64-bit XXH3 of the metric and
-- labels (seed 0, as it is stored); the writer looks rows up by it and compares their text,
-- so two names sharing a hash cost one more comparison, never a wrong series.
--
-- After this file runs, the migration code computes `name_hash` for every existing row and
-- creates the index `series_name_hash (name_hash)`.
CREATE TABLE series_new (
    id        INTEGER PRIMARY KEY,
    metric    TEXT NOT NULL,
    labels    TEXT NOT NULL,
    name_hash INTEGER NOT NULL DEFAULT 0
);
INSERT INTO series_new (id, metric, labels) SELECT id, metric, labels FROM series;
DROP TABLE series;
ALTER TABLE series_new RENAME TO series;

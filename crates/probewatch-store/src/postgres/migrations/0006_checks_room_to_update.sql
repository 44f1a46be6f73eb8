-- Every batch rewrites its checks' rows. With full pages (the default fill factor of 100)
-- the new version goes to another page, and both indexes of the table get an entry for it.
-- Leaving half of each page free lets PostgreSQL put it beside the old one without touching
-- an index (a heap-only tuple update); the old versions are pruned as the page is read.
-- Pages written from now on keep the room; existing ones follow as rows move.
ALTER TABLE checks SET (fillfactor = 50);

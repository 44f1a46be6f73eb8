//! Every stored series' name → id, held by the writer as the authority on which series
//! exist.
//!
//! A new series used to be looked up by a hash of its name in an index, then inserted with
//! an entry in that index: two random B-tree pages per series. At first sight of 700,000
//! series (100,000 new checks) that was a third of the writer's time and most of the pages
//! each commit wrote. The writer now keeps every name in memory (16 bytes a series, see
//! [`IdCache`]), as Prometheus's head keeps its series, and a new series is only an append
//! to the `series` table, whose ids only grow.
//!
//! The map follows the table by id: each write transaction first reads the series past the
//! highest id it holds (none, unless another process wrote to the database), and it is read
//! whole at the first transaction. A transaction that does not commit (an error, a panic)
//! may leave names whose ids were rolled back and will be given again: the next one then
//! reads the map afresh instead of trusting it.

use std::time::Instant;

use rusqlite::{Connection, params};

use crate::id_cache::{self, IdCache, Key};

/// The writer's map of series names to ids (see the module doc).
#[derive(Debug)]
pub(super) struct SeriesDirectory {
    ids: IdCache,
    /// The highest id read from the table or created; `None` until the map is read.
    through: Option<i64>,
    /// A transaction began with this map and has not committed.
    open: bool,
}

impl Default for SeriesDirectory {
    fn default() -> Self {
        SeriesDirectory {
            ids: IdCache::complete(),
            through: None,
            open: false,
        }
    }
}

impl SeriesDirectory {
    /// Brings the map up to date at the start of write transaction `tx`, which holds the
    /// database's write lock (so no other writer adds a series until it ends).
    pub fn begin(&mut self, tx: &Connection) -> rusqlite::Result<()> {
        if self.open {
            // The last transaction did not commit: its new ids are not in the table.
            self.ids.clear();
            self.through = None;
        }
        let started = Instant::now();
        let whole = self.through.is_none();
        let mut stmt =
            tx.prepare_cached("SELECT id, metric, labels FROM series WHERE id > ?1 ORDER BY id")?;
        let mut rows = stmt.query(params![self.through.unwrap_or(i64::MIN)])?;
        while let Some(row) = rows.next()? {
            let id: i64 = row.get(0)?;
            let key = id_cache::key(&[row.get_ref(1)?.as_str()?, row.get_ref(2)?.as_str()?]);
            self.ids.insert(key, id);
            self.through = Some(id);
        }
        if self.through.is_none() {
            self.through = Some(0);
        }
        if whole {
            tracing::debug!(
                series = self.ids.len(),
                elapsed_ms = started.elapsed().as_millis() as u64,
                "series directory read"
            );
        }
        self.open = true;
        Ok(())
    }

    /// The id of the series named by `key`, if it is stored.
    pub fn get(&self, key: Key) -> Option<i64> {
        self.ids.get(key)
    }

    /// Records a series this transaction created.
    pub fn created(&mut self, key: Key, id: i64) {
        self.ids.insert(key, id);
        self.through = Some(self.through.map_or(id, |t| t.max(id)));
    }

    /// The transaction that began with [`SeriesDirectory::begin`] committed.
    pub fn committed(&mut self) {
        self.open = false;
    }
}

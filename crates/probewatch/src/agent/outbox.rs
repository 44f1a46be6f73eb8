//! The agent's outbox: a small SQLite file in its data directory holding every complete
//! result file read from the spools until a server has acknowledged it.
//!
//! It is the agent's buffer (a link down for hours loses nothing: files wait here, and the
//! spool's after-ingest action waits for the acknowledgement) and its local ledger: each
//! path's last known version, so a rescan neither queues a file twice nor forgets an
//! after-ingest action left undone by a crash. Exactly-once itself is the server's: a file
//! resent after a lost answer is a duplicate there.

use std::path::Path;

use rusqlite::{Connection, OptionalExtension, params};

/// Name of the outbox file in the agent's data directory.
pub const OUTBOX_FILE: &str = "outbox.sqlite";

/// The outbox's layout version (`PRAGMA user_version`). An agent upgraded over an existing
/// outbox takes it as it is (a later layout change migrates from here); one older than the
/// outbox refuses to start rather than misread it.
const LAYOUT: i64 = 1;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS queue (
    seq INTEGER PRIMARY KEY,
    spool TEXT NOT NULL,
    path BLOB NOT NULL,
    version BLOB NOT NULL,
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    inode INTEGER NOT NULL,
    content BLOB,
    queued_at_ms INTEGER NOT NULL,
    UNIQUE (path, version)
);
CREATE TABLE IF NOT EXISTS files (
    path BLOB PRIMARY KEY,
    version BLOB NOT NULL,
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    inode INTEGER NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('queued', 'stored', 'rejected'))
);
";

/// One complete file, read and ready to queue.
#[derive(Debug, Clone)]
pub struct Entry {
    /// The spool's name.
    pub spool: String,
    /// Its path.
    pub path: Vec<u8>,
    /// The agent's identity of this version: SHA-256 of the bytes and the mtime.
    pub version: [u8; 32],
    /// Size, mtime (ns) and inode, as read.
    pub size: u64,
    /// Modification time, ns since the epoch.
    pub mtime_ns: i64,
    /// Inode.
    pub inode: u64,
    /// The bytes; `None` when the file was over the size limit (the server records the
    /// rejection).
    pub content: Option<Vec<u8>>,
}

/// A queued file, as the shipper reads it back.
#[derive(Debug, Clone)]
pub struct Queued {
    /// Its place in the queue.
    pub seq: i64,
    /// The file.
    pub entry: Entry,
}

/// What the outbox remembers of a path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Known {
    /// Size of the version last read.
    pub size: u64,
    /// Its mtime (ns).
    pub mtime_ns: i64,
    /// Its inode.
    pub inode: u64,
    /// `queued`, `stored` or `rejected`.
    pub state: String,
}

/// What the server said about a queued file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settled {
    /// Stored now or before (a duplicate).
    Stored,
    /// Stored as a rejection.
    Rejected,
}

/// One connection to the outbox (each thread opens its own).
pub struct Outbox {
    conn: Connection,
}

fn to_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

impl Outbox {
    /// Opens (creating) the outbox in `dir`.
    pub fn open(dir: &Path) -> rusqlite::Result<Outbox> {
        let conn = Connection::open(dir.join(OUTBOX_FILE))?;
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        // An entry is deleted locally only after the server committed it; a queued entry
        // lost in a power cut is still a file in the spool, found by the next scan.
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        let layout: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
        if layout > LAYOUT {
            return Err(rusqlite::Error::ToSqlConversionFailure(
                format!(
                    "the outbox was written by a newer probewatch agent (layout {layout}, this \
                     one knows {LAYOUT}): run that version, or let it drain first"
                )
                .into(),
            ));
        }
        conn.execute_batch(SCHEMA)?;
        conn.pragma_update(None, "user_version", LAYOUT)?;
        Ok(Outbox { conn })
    }

    /// What is known of `path`.
    pub fn known(&self, path: &[u8]) -> rusqlite::Result<Option<Known>> {
        self.conn
            .prepare_cached("SELECT size, mtime_ns, inode, state FROM files WHERE path = ?1")?
            .query_row(params![path], |r| {
                Ok(Known {
                    size: u64::try_from(r.get::<_, i64>(0)?).unwrap_or(0),
                    mtime_ns: r.get(1)?,
                    inode: u64::try_from(r.get::<_, i64>(2)?).unwrap_or(0),
                    state: r.get(3)?,
                })
            })
            .optional()
    }

    /// Queues `entries` in one transaction; a version already queued is not queued again.
    /// Returns how many were new.
    pub fn enqueue(&mut self, entries: &[Entry], now_ms: i64) -> rusqlite::Result<usize> {
        let tx = self.conn.transaction()?;
        let mut new = 0;
        for e in entries {
            new += tx
                .prepare_cached(
                    "INSERT OR IGNORE INTO queue (spool, path, version, size, mtime_ns, inode,
                        content, queued_at_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                )?
                .execute(params![
                    e.spool,
                    e.path,
                    &e.version[..],
                    to_i64(e.size),
                    e.mtime_ns,
                    to_i64(e.inode),
                    e.content,
                    now_ms
                ])?;
            tx.prepare_cached(
                "INSERT INTO files (path, version, size, mtime_ns, inode, state)
                 VALUES (?1, ?2, ?3, ?4, ?5, 'queued')
                 ON CONFLICT (path) DO UPDATE SET version = excluded.version,
                    size = excluded.size, mtime_ns = excluded.mtime_ns, inode = excluded.inode,
                    state = CASE WHEN files.version = excluded.version THEN files.state
                                 ELSE 'queued' END",
            )?
            .execute(params![
                e.path,
                &e.version[..],
                to_i64(e.size),
                e.mtime_ns,
                to_i64(e.inode)
            ])?;
        }
        tx.commit()?;
        Ok(new)
    }

    /// The oldest queued files: at most `max_files`, and no more than `max_bytes` of content
    /// (one file always, however big).
    pub fn next_batch(&self, max_files: usize, max_bytes: u64) -> rusqlite::Result<Vec<Queued>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT seq, spool, path, version, size, mtime_ns, inode, content FROM queue
             ORDER BY seq LIMIT ?1",
        )?;
        let mut rows = stmt.query(params![to_i64(max_files as u64)])?;
        let mut out = Vec::new();
        let mut bytes = 0u64;
        while let Some(r) = rows.next()? {
            let content: Option<Vec<u8>> = r.get(7)?;
            let len = content.as_ref().map_or(0, |c| c.len() as u64);
            if !out.is_empty() && bytes + len > max_bytes {
                break;
            }
            bytes += len;
            let version: Vec<u8> = r.get(3)?;
            out.push(Queued {
                seq: r.get(0)?,
                entry: Entry {
                    spool: r.get(1)?,
                    path: r.get(2)?,
                    version: version.try_into().unwrap_or([0; 32]),
                    size: u64::try_from(r.get::<_, i64>(4)?).unwrap_or(0),
                    mtime_ns: r.get(5)?,
                    inode: u64::try_from(r.get::<_, i64>(6)?).unwrap_or(0),
                    content,
                },
            });
        }
        Ok(out)
    }

    /// Files waiting, and when the oldest was queued (ms).
    pub fn backlog(&self) -> rusqlite::Result<(u64, Option<i64>)> {
        self.conn
            .prepare_cached("SELECT count(*), min(queued_at_ms) FROM queue")?
            .query_row([], |r| {
                Ok((u64::try_from(r.get::<_, i64>(0)?).unwrap_or(0), r.get(1)?))
            })
    }

    /// Removes acknowledged files from the queue and records what became of them (for a
    /// path whose newest version is still the one acknowledged).
    pub fn settle(&mut self, done: &[(&Queued, Settled)]) -> rusqlite::Result<()> {
        let tx = self.conn.transaction()?;
        for (q, settled) in done {
            tx.prepare_cached("DELETE FROM queue WHERE seq = ?1")?
                .execute(params![q.seq])?;
            let state = match settled {
                Settled::Stored => "stored",
                Settled::Rejected => "rejected",
            };
            tx.prepare_cached("UPDATE files SET state = ?3 WHERE path = ?1 AND version = ?2")?
                .execute(params![q.entry.path, &q.entry.version[..], state])?;
        }
        tx.commit()
    }

    /// Forgets paths whose files are gone from the spool and have nothing queued, so the
    /// table does not grow with every file name ever seen. Returns how many.
    pub fn forget_missing(&mut self, exists: impl Fn(&[u8]) -> bool) -> rusqlite::Result<usize> {
        let paths: Vec<Vec<u8>> = self
            .conn
            .prepare(
                "SELECT path FROM files WHERE state <> 'queued'
                 AND NOT EXISTS (SELECT 1 FROM queue q WHERE q.path = files.path)",
            )?
            .query_map([], |r| r.get(0))?
            .collect::<rusqlite::Result<_>>()?;
        let tx = self.conn.transaction()?;
        let mut n = 0;
        for path in paths.iter().filter(|p| !exists(p)) {
            n += tx
                .prepare_cached("DELETE FROM files WHERE path = ?1 AND state <> 'queued'")?
                .execute(params![path])?;
        }
        tx.commit()?;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(path: &str, version: u8) -> Entry {
        Entry {
            spool: "s".into(),
            path: path.as_bytes().to_vec(),
            version: [version; 32],
            size: 3,
            mtime_ns: 7,
            inode: 9,
            content: Some(b"abc".to_vec()),
        }
    }

    #[test]
    fn a_version_is_queued_once_and_settling_an_old_version_keeps_the_newer_queued() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut outbox = Outbox::open(dir.path()).expect("open");
        assert_eq!(
            outbox
                .enqueue(&[entry("/a", 1), entry("/a", 1)], 1)
                .expect("q"),
            1
        );
        let first = outbox.next_batch(10, 1 << 20).expect("batch");
        assert_eq!(first.len(), 1);
        // The file is rewritten before the first version's answer arrives.
        assert_eq!(outbox.enqueue(&[entry("/a", 2)], 2).expect("q"), 1);
        outbox
            .settle(&[(&first[0], Settled::Stored)])
            .expect("settle");
        let known = outbox.known(b"/a").expect("known").expect("some");
        assert_eq!(known.state, "queued", "the newer version is still to ship");
        let next = outbox.next_batch(10, 1 << 20).expect("batch");
        assert_eq!(next.len(), 1);
        assert_eq!(next[0].entry.version, [2; 32]);
        outbox
            .settle(&[(&next[0], Settled::Rejected)])
            .expect("settle");
        assert_eq!(
            outbox.known(b"/a").expect("k").expect("s").state,
            "rejected"
        );
        assert_eq!(outbox.backlog().expect("backlog"), (0, None));
        // The file is gone: its row is forgotten.
        assert_eq!(outbox.forget_missing(|_| false).expect("forget"), 1);
        assert_eq!(outbox.known(b"/a").expect("known"), None);
    }

    #[test]
    fn an_outbox_of_a_newer_layout_is_refused_and_queued_files_survive_a_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let mut outbox = Outbox::open(dir.path()).expect("open");
            outbox.enqueue(&[entry("/a", 1)], 1).expect("q");
        }
        // Reopened (a restart, or an upgrade that keeps the layout): the file is still queued.
        let outbox = Outbox::open(dir.path()).expect("reopen");
        assert_eq!(outbox.backlog().expect("backlog"), (1, Some(1)));
        outbox
            .conn
            .pragma_update(None, "user_version", LAYOUT + 1)
            .expect("pragma");
        drop(outbox);
        let err = Outbox::open(dir.path()).err().expect("refused");
        assert!(err.to_string().contains("newer probewatch agent"), "{err}");
    }

    #[test]
    fn a_batch_is_bounded_by_bytes_but_always_takes_one() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut outbox = Outbox::open(dir.path()).expect("open");
        outbox
            .enqueue(&[entry("/a", 1), entry("/b", 1), entry("/c", 1)], 1)
            .expect("q");
        assert_eq!(outbox.next_batch(10, 1).expect("b").len(), 1);
        assert_eq!(outbox.next_batch(10, 6).expect("b").len(), 2);
        assert_eq!(outbox.next_batch(2, 1 << 20).expect("b").len(), 2);
        assert_eq!(outbox.backlog().expect("backlog"), (3, Some(1)));
    }
}

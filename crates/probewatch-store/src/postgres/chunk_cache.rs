//! Decoded chunks a server has read, by chunk id, so that the reads a rule group repeats
//! every interval neither bring the same chunks over the network again nor decode them
//! again.
//!
//! A chunk row is never changed once written: compaction that adds samples to a chunk
//! deletes it and writes a new row with a new id, and retention deletes whole rows. So a
//! cached chunk is right for as long as its id is in the table, whichever server wrote it,
//! and a read only has to learn which ids are in its range now ([`super::samples`] asks for
//! the data of the ids above the highest one cached for its series, and fetches the few
//! others it lacks by id).
//!
//! Bounded by bytes in two generations: entries go into the young one; when it is full it
//! becomes the old one and the old one is dropped; an entry read from the old generation
//! moves back to the young. That keeps what the rule groups read at every cycle and lets a
//! one-off wide read pass through without a per-entry recency list.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

/// One chunk's samples, oldest first.
pub(super) type Decoded = Arc<[(i64, f64)]>;

/// Most bytes of decoded samples (with a per-entry allowance) a [`ChunkCache`] holds.
pub(super) const CHUNK_CACHE_MAX_BYTES: usize = 64 << 20;

/// Bytes counted for an entry besides its samples: its map slots and the allocation.
const ENTRY_OVERHEAD: usize = 64;

/// See the module documentation.
pub(super) struct ChunkCache {
    inner: Mutex<Generations>,
    max_bytes: usize,
}

#[derive(Default)]
struct Generations {
    young: Generation,
    old: Generation,
}

#[derive(Default)]
struct Generation {
    /// Chunk id → its series and samples.
    chunks: HashMap<i64, (i64, Decoded)>,
    /// Series → the highest chunk id of it held in this generation.
    newest: HashMap<i64, i64>,
    bytes: usize,
}

impl Generation {
    fn insert(&mut self, id: i64, series: i64, samples: Decoded) {
        let bytes = entry_bytes(&samples);
        if self.chunks.insert(id, (series, samples)).is_none() {
            self.bytes += bytes;
        }
        let newest = self.newest.entry(series).or_insert(id);
        *newest = (*newest).max(id);
    }
}

fn entry_bytes(samples: &[(i64, f64)]) -> usize {
    std::mem::size_of_val(samples) + ENTRY_OVERHEAD
}

impl Default for ChunkCache {
    fn default() -> Self {
        ChunkCache::with_max_bytes(CHUNK_CACHE_MAX_BYTES)
    }
}

impl ChunkCache {
    /// A cache that holds about `max_bytes` of decoded samples at most.
    pub(super) fn with_max_bytes(max_bytes: usize) -> Self {
        ChunkCache {
            inner: Mutex::new(Generations::default()),
            max_bytes,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Generations> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The highest chunk id held of any of `series` (`-1` when none is): a read asks for
    /// the data of the chunks above it and expects to hold the others.
    pub(super) fn newest_of(&self, series: &[i64]) -> i64 {
        let inner = self.lock();
        if inner.young.chunks.is_empty() && inner.old.chunks.is_empty() {
            return -1;
        }
        series
            .iter()
            .flat_map(|s| [inner.young.newest.get(s), inner.old.newest.get(s)])
            .flatten()
            .copied()
            .max()
            .unwrap_or(-1)
    }

    /// The samples of each of `ids` held, `None` for the others; those found in the old
    /// generation move to the young one.
    pub(super) fn get_many(&self, ids: &[i64]) -> Vec<Option<Decoded>> {
        let mut inner = self.lock();
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            if let Some((_, samples)) = inner.young.chunks.get(id) {
                out.push(Some(samples.clone()));
                continue;
            }
            match inner.old.chunks.remove(id) {
                Some((series, samples)) => {
                    inner.old.bytes -= entry_bytes(&samples);
                    out.push(Some(samples.clone()));
                    inner.young.insert(*id, series, samples);
                }
                None => out.push(None),
            }
        }
        self.rotate(&mut inner);
        out
    }

    /// Holds `chunks` (id, series, samples), just read.
    pub(super) fn add(&self, chunks: Vec<(i64, i64, Decoded)>) {
        if chunks.is_empty() {
            return;
        }
        let mut inner = self.lock();
        for (id, series, samples) in chunks {
            if entry_bytes(&samples) > self.max_bytes / 2 {
                continue;
            }
            inner.young.insert(id, series, samples);
            self.rotate(&mut inner);
        }
    }

    /// Past half the bound, the young generation becomes the old one and the old is dropped.
    fn rotate(&self, inner: &mut Generations) {
        if inner.young.bytes > self.max_bytes / 2 {
            inner.old = std::mem::take(&mut inner.young);
        }
    }

    /// Bytes held now.
    #[cfg(test)]
    fn bytes(&self) -> usize {
        let inner = self.lock();
        inner.young.bytes + inner.old.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn samples(n: usize) -> Decoded {
        (0..n).map(|i| (i as i64, i as f64)).collect()
    }

    #[test]
    fn the_newest_id_held_is_per_series() {
        let cache = ChunkCache::default();
        assert_eq!(cache.newest_of(&[1, 2]), -1);
        cache.add(vec![
            (10, 1, samples(3)),
            (12, 1, samples(3)),
            (11, 2, samples(3)),
        ]);
        assert_eq!(cache.newest_of(&[1]), 12);
        assert_eq!(cache.newest_of(&[2]), 11);
        assert_eq!(cache.newest_of(&[2, 3]), 11);
        assert_eq!(cache.newest_of(&[3]), -1);
        let got = cache.get_many(&[10, 13, 11]);
        assert_eq!(got[0].as_deref(), Some(&samples(3)[..]));
        assert!(got[1].is_none());
        assert_eq!(got[2].as_deref(), Some(&samples(3)[..]));
    }

    #[test]
    fn what_is_read_again_stays_and_the_bound_holds() {
        // Room for about four entries of 100 samples a generation.
        let one = entry_bytes(&samples(100));
        let cache = ChunkCache::with_max_bytes(one * 9);
        cache.add(vec![(1, 1, samples(100))]);
        for id in 2..40 {
            cache.add(vec![(id, id, samples(100))]);
            // Chunk 1 is read at every step, as a rule group reads its series.
            assert!(cache.get_many(&[1])[0].is_some(), "chunk 1 at step {id}");
            assert!(cache.bytes() <= one * 9, "{} bytes", cache.bytes());
        }
        // The first of the others went long ago; the last ones are held.
        let got = cache.get_many(&[2, 38, 39]);
        assert!(got[0].is_none());
        assert!(got[1].is_some() && got[2].is_some());
        // An entry too big for a generation is not held.
        cache.add(vec![(100, 100, samples(1000))]);
        assert!(cache.get_many(&[100])[0].is_none());
    }
}

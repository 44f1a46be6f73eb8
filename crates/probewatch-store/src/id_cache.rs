//! The writer's caches of series and check ids, keyed by a 128-bit hash of the name.
//!
//! At a million series, a map keyed by the series text (`metric{labels}`, ~80 bytes) held
//! ~120 bytes per series: over 100 MiB. A 128-bit XXH3 of the text is taken, seeded per
//! process so that probe authors cannot aim at a collision, and an entry keeps 96 bits of it
//! beside a 32-bit id: 16 bytes an entry (4 more bits pick its shard). Two names of a million
//! sharing those 100 bits has a probability of about 10^-18. The map is also capped: past [`IdCache::CAPACITY`] entries it
//! starts over, and misses (and ids past 32 bits, never cached) go to the database.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};
use std::sync::OnceLock;

/// Name hash → id, for the writer only. Split in [`SHARDS`] maps, so that growing one
/// moves a sixteenth of the entries and never holds two whole tables at once. An entry is the
/// hash's low 64 bits as the map's key, then 32 more bits of it and the id as the value
/// (a 128-bit key and an `i64` made 24-byte entries).
#[derive(Debug)]
pub(crate) struct IdCache(Vec<HashMap<u64, (u32, u32), PassThrough>>);

const SHARDS: usize = 16;

/// A 128-bit name hash as two words.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct Key {
    lo: u64,
    hi: u64,
}

impl Default for IdCache {
    fn default() -> Self {
        IdCache((0..SHARDS).map(|_| HashMap::default()).collect())
    }
}

impl IdCache {
    /// Most entries kept (about 24 MiB of tables at most).
    pub const CAPACITY: usize = 1 << 20;

    fn shard(&self, key: Key) -> usize {
        (key.hi % SHARDS as u64) as usize
    }

    /// The bits kept beside the map's key: the 32 above the shard's (the low four of `hi`,
    /// the same for every entry of a shard). With the key's 64, 100 bits of the hash decide.
    fn check(key: Key) -> u32 {
        (key.hi >> 4) as u32
    }

    pub fn get(&self, key: Key) -> Option<i64> {
        match self.0[self.shard(key)].get(&key.lo) {
            Some(&(check, id)) if check == Self::check(key) => Some(i64::from(id)),
            _ => None,
        }
    }

    pub fn insert(&mut self, key: Key, id: i64) {
        let Ok(id) = u32::try_from(id) else {
            return; // not cached: looked up in the database each time
        };
        let shard = self.shard(key);
        let map = &mut self.0[shard];
        if map.len() >= Self::CAPACITY / SHARDS {
            *map = HashMap::default();
        }
        map.insert(key.lo, (Self::check(key), id));
    }

    pub fn clear(&mut self) {
        *self = IdCache::default();
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.0.iter().map(HashMap::len).sum()
    }
}

/// The key of a name given in parts, under this process's seed.
pub(crate) fn key(parts: &[&str]) -> Key {
    let hash = digest(seed(), parts);
    Key {
        lo: hash as u64,
        hi: (hash >> 64) as u64,
    }
}

/// The hash of a series name stored in `series.name_hash`: seed 0 (it must be the same in
/// every process), 64 bits as SQLite's signed integer. Only narrows a lookup; the text
/// decides.
pub(crate) fn name_hash(metric: &str, labels: &str) -> i64 {
    digest(0, &[metric, labels]) as u64 as i64
}

/// XXH3-128 of the parts, each followed by a 0 byte so that no two different part lists
/// run together into the same bytes (names hold no 0 bytes).
fn digest(seed: u64, parts: &[&str]) -> u128 {
    let mut hasher = xxhash_rust::xxh3::Xxh3::with_seed(seed);
    for part in parts {
        hasher.update(part.as_bytes());
        hasher.update(&[0]);
    }
    hasher.digest128()
}

/// A random seed, chosen once per process.
fn seed() -> u64 {
    static SEED: OnceLock<u64> = OnceLock::new();
    *SEED.get_or_init(|| std::hash::RandomState::new().hash_one(0x7072_6f62_6577_6174_u64))
}

/// The keys are already uniform hashes: the map uses their low 64 bits as they are.
#[derive(Debug, Default, Clone, Copy)]
struct PassThrough;

impl BuildHasher for PassThrough {
    type Hasher = PassThroughHasher;
    fn build_hasher(&self) -> PassThroughHasher {
        PassThroughHasher(0)
    }
}

#[derive(Debug)]
struct PassThroughHasher(u64);

impl Hasher for PassThroughHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        // Only keys are hashed (through write_u64); fold anything else anyway.
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_do_not_run_together() {
        assert_ne!(key(&["ab", "c"]), key(&["a", "bc"]));
        assert_ne!(key(&["a", ""]), key(&["a"]));
        assert_eq!(key(&["m", "{a=\"1\"}"]), key(&["m", "{a=\"1\"}"]));
    }

    #[test]
    fn a_full_shard_starts_over_and_the_others_stay() {
        let mut cache = IdCache::default();
        let key = |lo: u64, hi: u64| Key { lo, hi };
        let per_shard = (IdCache::CAPACITY / SHARDS) as u64;
        for i in 0..per_shard {
            cache.insert(key(i, 0), i as i64);
        }
        cache.insert(key(7, 1), 70);
        assert_eq!(cache.len() as u64, per_shard + 1);
        assert_eq!(cache.get(key(7, 0)), Some(7));
        assert_eq!(cache.get(key(7, 16)), None, "same shard, other key");
        assert_eq!(
            cache.get(key(7, 1 << 32)),
            None,
            "same low bits, other high bits"
        );
        cache.insert(key(u64::MAX, 0), 1);
        assert_eq!(cache.len(), 2);
        assert_eq!(cache.get(key(7, 0)), None);
        assert_eq!(cache.get(key(u64::MAX, 0)), Some(1));
        assert_eq!(cache.get(key(7, 1)), Some(70));
    }

    #[test]
    fn ids_past_32_bits_and_negative_ones_are_not_cached() {
        let mut cache = IdCache::default();
        let key = |lo: u64| Key { lo, hi: 0 };
        cache.insert(key(1), i64::from(u32::MAX));
        cache.insert(key(2), i64::from(u32::MAX) + 1);
        cache.insert(key(3), -1);
        assert_eq!(cache.get(key(1)), Some(i64::from(u32::MAX)));
        assert_eq!(cache.get(key(2)), None);
        assert_eq!(cache.get(key(3)), None);
    }

    #[test]
    fn an_entry_is_16_bytes() {
        assert_eq!(std::mem::size_of::<(u64, (u32, u32))>(), 16);
    }
}

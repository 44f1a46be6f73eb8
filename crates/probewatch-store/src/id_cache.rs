//! The writers' maps of series and check ids, keyed by a 128-bit hash of the name.
//!
//! At a million series, a map keyed by the series text (`metric{labels}`, ~80 bytes) held
//! ~120 bytes per series: over 100 MiB. A 128-bit XXH3 of the text is taken, seeded per
//! process so that probe authors cannot aim at a collision, and an entry keeps 96 bits of it
//! beside a 32-bit id: 16 bytes an entry (4 more bits pick its shard). Two names of a million
//! sharing those 100 bits has a probability of about 10^-18.
//!
//! A map is either a cache, capped at [`IdCache::CAPACITY`] entries (past it, a shard starts
//! over and misses go to the database), or complete: SQLite's writer holds every series in
//! one ([`crate::sqlite`]'s series directory) and looks nothing up by name in the database.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};
use std::sync::OnceLock;

/// Name hash → id. Split in [`SHARDS`] maps, so that growing one moves a sixteenth of the
/// entries and never holds two whole tables at once. An entry is the hash's low 64 bits as
/// the map's key, then 32 more bits of it and the id as the value (a 128-bit key and an
/// `i64` made 24-byte entries); the rare id past 32 bits goes to a map of its own.
#[derive(Debug)]
pub(crate) struct IdCache {
    shards: Vec<HashMap<u64, (u32, u32), PassThrough>>,
    wide: HashMap<Key, i64>,
    capped: bool,
}

const SHARDS: usize = 16;

/// A 128-bit name hash as two words.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct Key {
    lo: u64,
    hi: u64,
}

impl Default for IdCache {
    /// A cache, capped at [`IdCache::CAPACITY`].
    fn default() -> Self {
        IdCache {
            shards: (0..SHARDS).map(|_| HashMap::default()).collect(),
            wide: HashMap::new(),
            capped: true,
        }
    }
}

impl IdCache {
    /// Most entries a cache keeps (about 24 MiB of tables at most).
    pub const CAPACITY: usize = 1 << 20;

    /// A map with no cap, for a writer that keeps every name it knows.
    pub fn complete() -> Self {
        IdCache {
            capped: false,
            ..IdCache::default()
        }
    }

    fn shard(&self, key: Key) -> usize {
        (key.hi % SHARDS as u64) as usize
    }

    /// The bits kept beside the map's key: the 32 above the shard's (the low four of `hi`,
    /// the same for every entry of a shard). With the key's 64, 100 bits of the hash decide.
    fn check(key: Key) -> u32 {
        (key.hi >> 4) as u32
    }

    pub fn get(&self, key: Key) -> Option<i64> {
        match self.shards[self.shard(key)].get(&key.lo) {
            Some(&(check, id)) if check == Self::check(key) => Some(i64::from(id)),
            _ if self.wide.is_empty() => None,
            _ => self.wide.get(&key).copied(),
        }
    }

    pub fn insert(&mut self, key: Key, id: i64) {
        let limit = Self::CAPACITY / SHARDS;
        let Ok(small) = u32::try_from(id) else {
            if self.capped && self.wide.len() >= limit {
                self.wide.clear();
            }
            self.wide.insert(key, id);
            return;
        };
        let shard = self.shard(key);
        let map = &mut self.shards[shard];
        if self.capped && map.len() >= limit {
            *map = HashMap::default();
        }
        map.insert(key.lo, (Self::check(key), small));
    }

    pub fn clear(&mut self) {
        *self = IdCache {
            capped: self.capped,
            ..IdCache::default()
        };
    }

    pub fn len(&self) -> usize {
        self.shards.iter().map(HashMap::len).sum::<usize>() + self.wide.len()
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

/// XXH3-128 of the parts, each followed by a 0 byte so that no two different part lists
/// run together into the same bytes (names hold no 0 bytes).
fn digest(seed: u64, parts: &[&str]) -> u128 {
    // Most names fit a small buffer: hashed in one call, without the streaming state's
    // copies (a quarter of a PostgreSQL batch's client time went to keys).
    let mut buf = [0u8; 192];
    let len: usize = parts.iter().map(|p| p.len() + 1).sum();
    if len <= buf.len() {
        let mut at = 0;
        for part in parts {
            buf[at..at + part.len()].copy_from_slice(part.as_bytes());
            at += part.len() + 1;
        }
        return xxhash_rust::xxh3::xxh3_128_with_seed(&buf[..len], seed);
    }
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

    /// A name hashed in one call (short) or streamed (long) gets the key the streamed
    /// bytes give: which way is taken depends only on the length.
    #[test]
    fn short_and_long_names_hash_their_bytes_alike() {
        let streamed = |parts: &[&str]| {
            let mut hasher = xxhash_rust::xxh3::Xxh3::with_seed(7);
            for part in parts {
                hasher.update(part.as_bytes());
                hasher.update(&[0]);
            }
            hasher.digest128()
        };
        let long = "x".repeat(300);
        for parts in [
            &["probe_check_status", "{check=\"c1\"}"][..],
            &[],
            &[long.as_str(), "b"],
            &["a", &long[..190]],
        ] {
            assert_eq!(super::digest(7, parts), streamed(parts), "{parts:?}");
        }
    }

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
    fn ids_past_32_bits_are_kept_beside() {
        let mut cache = IdCache::default();
        let key = |lo: u64| Key { lo, hi: 0 };
        cache.insert(key(1), i64::from(u32::MAX));
        cache.insert(key(2), i64::from(u32::MAX) + 1);
        cache.insert(key(3), -1);
        assert_eq!(cache.get(key(1)), Some(i64::from(u32::MAX)));
        assert_eq!(cache.get(key(2)), Some(i64::from(u32::MAX) + 1));
        assert_eq!(cache.get(key(3)), Some(-1));
        assert_eq!(cache.get(key(4)), None);
        cache.clear();
        assert_eq!(cache.get(key(2)), None);
    }

    #[test]
    fn a_complete_map_keeps_every_entry() {
        let mut map = IdCache::complete();
        let key = |lo: u64| Key { lo, hi: 0 };
        let per_shard = (IdCache::CAPACITY / SHARDS) as u64;
        for i in 0..=per_shard {
            map.insert(key(i), i as i64);
        }
        assert_eq!(map.len() as u64, per_shard + 1);
        assert_eq!(map.get(key(0)), Some(0));
        map.clear();
        for i in 0..=per_shard {
            map.insert(key(i), i as i64);
        }
        assert_eq!(map.get(key(0)), Some(0), "still complete after a clear");
    }

    #[test]
    fn an_entry_is_16_bytes() {
        assert_eq!(std::mem::size_of::<(u64, (u32, u32))>(), 16);
    }
}

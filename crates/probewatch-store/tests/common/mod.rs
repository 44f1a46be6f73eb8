//! Helpers shared by the store's model-checked tests (each test binary uses some of them).
#![allow(dead_code)]

pub mod backends;

/// A deterministic xorshift generator, so a failure reproduces.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Synthetic file number `file` of spool `main`, carrying `results` and `samples`.
pub fn item(
    file: u64,
    results: Vec<probewatch_core::ProbeResult>,
    samples: Vec<probewatch_core::SeriesSample>,
) -> probewatch_store::IngestItem {
    use probewatch_store::{FileMeta, IngestItem, ItemContent};
    IngestItem {
        file: FileMeta {
            spool: std::sync::Arc::from("main"),
            path: format!("/spool/{file}.xml").into_bytes(),
            size: 1,
            mtime_ns: 1,
            inode: file,
            version_hash: [0; 32],
        },
        content: ItemContent::Parsed {
            results,
            samples,
            clock_skew: false,
        },
    }
}

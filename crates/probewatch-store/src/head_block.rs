//! The encoding of a *head block*: the samples of one ingest batch whose series fall in one
//! bucket, stored as one row.
//!
//! A head row per sample cost ~1.3 µs of B-tree work in the writer, a fifth of a file's
//! whole cost. A batch now writes one row per bucket it touches instead, and compaction
//! decodes the rows of a bucket and merges them into each series' chunks. A read of a few
//! series decodes only their buckets' blocks.
//!
//! Layout: a version byte (`1`), then per series, ascending by id: the id's difference from
//! the previous one (the first from 0; LEB128), the byte length of its run (LEB128), then the
//! run as a [`chunk`] encodes it (sorted, one sample per timestamp). Values
//! keep their exact bits, so a stale marker's NaN payload survives.

use crate::chunk::{self, ChunkError, Reader};

/// How many buckets the series are spread over (by id). More buckets make a one-series read
/// decode less; fewer keep a small batch's rows fewer.
pub const BUCKETS: i64 = 64;

/// Series ids are bucketed in runs of `1 << RUN_BITS` consecutive ids, the runs dealt out to
/// the buckets in turn. Compaction merges a bucket's series into their chunks in id order:
/// with runs, those series sit together in the chunk table and its index, so a bucket's merge
/// writes a few runs of pages. Dealt out one id at a time (id mod 64), a bucket's series were
/// spread over every page, and each of the 64 merges rewrote the whole index (at 700,000
/// series the writer spent most of its time in compaction's page writes and reads).
pub const RUN_BITS: u32 = 8;

const VERSION: u8 = 1;

/// The bucket of a series.
pub fn bucket(series_id: i64) -> i64 {
    (series_id >> RUN_BITS).rem_euclid(BUCKETS)
}

/// Encodes rows `(series, time, value)` sorted by series then time, with no repeated
/// (series, time), into one block.
pub fn encode(rows: &[(i64, i64, f64)]) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + rows.len() * 4);
    out.push(VERSION);
    let mut previous = 0i64;
    let mut run = Vec::new();
    for series in rows.chunk_by(|a, b| a.0 == b.0) {
        let id = series[0].0;
        chunk::put_uvarint(&mut out, id.wrapping_sub(previous) as u64);
        previous = id;
        run.clear();
        run.extend(series.iter().map(|&(_, ts, v)| (ts, v)));
        let data = chunk::encode(&run);
        chunk::put_uvarint(&mut out, data.len() as u64);
        out.extend_from_slice(&data);
    }
    out
}

/// The series of a block in id order, each with its encoded run, without decoding the runs.
pub struct BlockSeries<'a> {
    reader: Reader<'a>,
    previous: i64,
}

impl<'a> BlockSeries<'a> {
    /// Reads a block's layout; fails on an unknown version.
    pub fn new(data: &'a [u8]) -> Result<BlockSeries<'a>, ChunkError> {
        match data.first() {
            Some(&VERSION) => Ok(BlockSeries {
                reader: Reader { data, pos: 1 },
                previous: 0,
            }),
            _ => Err(ChunkError("unknown head block version")),
        }
    }

    /// The next series id and its run, `None` at the end.
    pub fn next_series(&mut self) -> Result<Option<(i64, Run<'a>)>, ChunkError> {
        if self.reader.pos == self.reader.data.len() {
            return Ok(None);
        }
        let delta = self.reader.uvarint()?;
        let id = self.previous.wrapping_add(delta as i64);
        self.previous = id;
        let len = usize::try_from(self.reader.uvarint()?)
            .map_err(|_| ChunkError("head block run length"))?;
        Ok(Some((id, Run(self.reader.take(len)?))))
    }
}

/// The series of a block that a read wants, in id order: a merge of the block's ids with
/// the read's, both ascending, so that no series is looked up by hash (a hash lookup per
/// series of every block met was 30-40 % of a rule cycle's reading on both back ends).
pub struct WantedSeries<'a, 'w> {
    series: BlockSeries<'a>,
    rest: &'w [(i64, usize)],
    /// Of an [`IndexedBlock`]: the places a walk may jump to.
    marks: &'a [Mark],
    /// The length of `rest` when the marks were last looked at.
    marks_checked: usize,
}

impl<'a, 'w> WantedSeries<'a, 'w> {
    /// `wanted` is (series id, slot) sorted by id; an id may come more than once.
    pub fn new(
        data: &'a [u8],
        wanted: &'w [(i64, usize)],
    ) -> Result<WantedSeries<'a, 'w>, ChunkError> {
        Ok(WantedSeries {
            series: BlockSeries::new(data)?,
            rest: wanted,
            marks: &[],
            marks_checked: usize::MAX,
        })
    }

    /// The next wanted series of the block: the (id, slot) entries that want it and its
    /// run; `None` past the block's end or the last wanted id.
    #[allow(clippy::type_complexity)]
    pub fn next_wanted(&mut self) -> Result<Option<(&'w [(i64, usize)], Run<'a>)>, ChunkError> {
        loop {
            // Once per wanted id: jump to the last mark at or below it, when that lies ahead.
            if self.marks_checked != self.rest.len()
                && let Some(&(want, _)) = self.rest.first()
            {
                self.marks_checked = self.rest.len();
                let at = self.marks.partition_point(|m| m.id <= want);
                if let Some(mark) = at.checked_sub(1).map(|i| self.marks[i])
                    && mark.pos > self.series.reader.pos
                {
                    self.series.reader.pos = mark.pos;
                    self.series.previous = mark.previous;
                }
            }
            let Some((id, run)) = self.series.next_series()? else {
                break;
            };
            // Step past the wanted ids below this one (a binary search per block series
            // cost more than the walk).
            while self.rest.first().is_some_and(|w| w.0 < id) {
                self.rest = &self.rest[1..];
            }
            match self.rest.first() {
                None => return Ok(None),
                Some(w) if w.0 != id => continue,
                Some(_) => {
                    let n = self.rest.iter().take_while(|w| w.0 == id).count();
                    let (slots, rest) = self.rest.split_at(n);
                    self.rest = rest;
                    return Ok(Some((slots, run)));
                }
            }
        }
        Ok(None)
    }
}

/// A block with a mark every [`MARK_EVERY`] series, so that a read of a few of its series
/// jumps near each one instead of stepping through every series before it. Blocks never
/// change, so a process that keeps a block (PostgreSQL's head cache) marks it once: at
/// 100,000 series a rule group's read met ~170 blocks of ~1,600 series each for the ~13 of
/// each it wanted, and stepping through them was most of the read's client time. The marks
/// cost ~1 byte a series; a full index (16 bytes a series) tripled the cache's bytes, which
/// then overflowed and was refilled at every read (147 ms cycles against 59 at 100,000).
pub struct IndexedBlock {
    data: std::sync::Arc<[u8]>,
    marks: Vec<Mark>,
}

/// Series between two marks of an [`IndexedBlock`].
const MARK_EVERY: usize = 32;

/// Where a walk can start: a series' id, the position of its entry, and the id before it
/// (its entry holds the difference).
#[derive(Clone, Copy)]
struct Mark {
    id: i64,
    pos: usize,
    previous: i64,
}

impl IndexedBlock {
    /// Reads the layout of `data` once; fails as [`BlockSeries`] does on a damaged block.
    pub fn new(data: std::sync::Arc<[u8]>) -> Result<IndexedBlock, ChunkError> {
        let mut marks = Vec::new();
        {
            let mut series = BlockSeries::new(&data)?;
            let mut n = 0usize;
            loop {
                let (pos, previous) = (series.reader.pos, series.previous);
                let Some((id, _)) = series.next_series()? else {
                    break;
                };
                if n.is_multiple_of(MARK_EVERY) {
                    marks.push(Mark { id, pos, previous });
                }
                n += 1;
            }
        }
        Ok(IndexedBlock { data, marks })
    }

    /// Bytes held: the data and its marks.
    pub fn bytes(&self) -> usize {
        self.data.len() + self.marks.len() * std::mem::size_of::<Mark>()
    }

    /// The series of the block among `wanted`, as [`WantedSeries`] finds them.
    pub fn wanted<'s, 'w>(&'s self, wanted: &'w [(i64, usize)]) -> WantedSeries<'s, 'w> {
        WantedSeries {
            series: BlockSeries {
                reader: Reader {
                    data: &self.data,
                    pos: 1,
                },
                previous: 0,
            },
            rest: wanted,
            marks: &self.marks,
            marks_checked: usize::MAX,
        }
    }
}

/// One series' encoded samples inside a block.
#[derive(Clone, Copy)]
pub struct Run<'a>(&'a [u8]);

impl Run<'_> {
    /// Appends the run's samples to `out`, oldest first.
    pub fn decode(self, out: &mut Vec<(i64, f64)>) -> Result<(), ChunkError> {
        chunk::decode(self.0, out)
    }

    /// Appends the run's samples within `[from_ms, to_ms]` to `out`.
    pub fn decode_range(
        self,
        from_ms: i64,
        to_ms: i64,
        out: &mut Vec<(i64, f64)>,
    ) -> Result<(), ChunkError> {
        chunk::decode_range(self.0, from_ms, to_ms, out)
    }
}

/// The first and last timestamp of rows `(series, time, value)`: what a block row records
/// so that reads can pass it over by time. `(i64::MAX, i64::MIN)` for no rows.
pub fn time_span(rows: &[(i64, i64, f64)]) -> (i64, i64) {
    rows.iter().fold((i64::MAX, i64::MIN), |(lo, hi), r| {
        (lo.min(r.1), hi.max(r.1))
    })
}

/// Decodes a whole block into rows `(series, time, value)`, appended to `out`.
pub fn decode(data: &[u8], out: &mut Vec<(i64, i64, f64)>) -> Result<(), ChunkError> {
    let mut series = BlockSeries::new(data)?;
    let mut run = Vec::new();
    while let Some((id, samples)) = series.next_series()? {
        run.clear();
        samples.decode(&mut run)?;
        out.extend(run.iter().map(|&(ts, v)| (id, ts, v)));
    }
    Ok(())
}

/// Sorts one batch's rows by (bucket, series, time) and keeps, for a repeated (series,
/// time), the one pushed last: the order in which a batch's blocks are built.
pub fn sort_batch(rows: &mut Vec<(i64, i64, f64)>) {
    // Stable: a repeated key keeps its order, the later one last.
    rows.sort_by_key(|&(series, ts, _)| (bucket(series), series, ts));
    keep_last(rows);
}

/// Sorts rows by (series, time) and keeps the one pushed last of a repeated key: what
/// compaction does with the blocks of a bucket, read oldest first.
pub fn sort_rows(rows: &mut Vec<(i64, i64, f64)>) {
    rows.sort_by_key(|&(series, ts, _)| (series, ts));
    keep_last(rows);
}

fn keep_last(rows: &mut Vec<(i64, i64, f64)>) {
    if rows
        .windows(2)
        .all(|w| (w[0].0, w[0].1) != (w[1].0, w[1].1))
    {
        return;
    }
    rows.reverse();
    rows.dedup_by_key(|r| (r.0, r.1));
    rows.reverse();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bits(rows: &[(i64, i64, f64)]) -> Vec<(i64, i64, u64)> {
        rows.iter().map(|&(s, t, v)| (s, t, v.to_bits())).collect()
    }

    #[test]
    fn a_block_round_trips_with_adversarial_values() {
        let stale = f64::from_bits(0x7ff0_0000_0000_0002);
        let mut rows = vec![
            (3, -5, f64::NAN),
            (3, 0, stale),
            (3, i64::MAX, f64::INFINITY),
            (64, i64::MIN, f64::NEG_INFINITY),
            (64, 7, -0.0),
            (1 << 40, 1, 1e300),
        ];
        rows.sort_by_key(|r| (r.0, r.1));
        let data = encode(&rows);
        let mut back = Vec::new();
        decode(&data, &mut back).expect("decodes");
        assert_eq!(bits(&back), bits(&rows));
        let mut series = BlockSeries::new(&data).expect("layout");
        let mut ids = Vec::new();
        while let Some((id, _)) = series.next_series().expect("series") {
            ids.push(id);
        }
        assert_eq!(ids, [3, 64, 1 << 40]);
    }

    #[test]
    fn a_walk_yields_the_wanted_series_with_every_slot() {
        let rows: Vec<(i64, i64, f64)> = [1, 3, 5, 8, 9]
            .iter()
            .map(|&id| (id, id * 10, id as f64))
            .collect();
        let data = encode(&rows);
        // 3 twice, 4 and 7 absent from the block, 9 past the block's last wanted.
        let wanted = [(0, 0), (3, 1), (3, 2), (4, 3), (7, 4), (8, 5), (12, 6)];
        let mut walk = WantedSeries::new(&data, &wanted).expect("layout");
        let mut seen = Vec::new();
        while let Some((slots, run)) = walk.next_wanted().expect("walk") {
            let mut samples = Vec::new();
            run.decode(&mut samples).expect("run");
            seen.push((slots.to_vec(), samples));
        }
        assert_eq!(
            seen,
            [
                (vec![(3, 1), (3, 2)], vec![(30, 3.0)]),
                (vec![(8, 5)], vec![(80, 8.0)]),
            ]
        );
        let mut none = WantedSeries::new(&data, &[]).expect("layout");
        assert!(none.next_wanted().expect("walk").is_none());
    }

    /// The index finds exactly what the walk finds, for any wanted ids (repeated, absent,
    /// below and past the block's).
    #[test]
    fn an_indexed_block_finds_what_a_walk_finds() {
        let mut next = crate::test_numbers(0x9e37_79b9_7f4a_7c15u64);
        for _ in 0..200 {
            let mut rows = Vec::new();
            for id in 0..next(400) as i64 {
                if next(3) == 0 {
                    for t in 0..1 + next(3) as i64 {
                        rows.push((id * 3, t * 10, (id + t) as f64));
                    }
                }
            }
            let data = encode(&rows);
            let block = IndexedBlock::new(data.clone().into()).expect("layout");
            let mut wanted: Vec<(i64, usize)> = (0..next(40))
                .map(|slot| (next(1300) as i64 - 5, slot as usize))
                .collect();
            wanted.sort_unstable();
            let mut walked = Vec::new();
            let mut walk = WantedSeries::new(&data, &wanted).expect("layout");
            while let Some((slots, run)) = walk.next_wanted().expect("walk") {
                let mut samples = Vec::new();
                run.decode(&mut samples).expect("run");
                walked.push((slots.to_vec(), samples));
            }
            let mut indexed = Vec::new();
            let mut jumps = block.wanted(&wanted);
            while let Some((slots, run)) = jumps.next_wanted().expect("jumps") {
                let mut samples = Vec::new();
                run.decode(&mut samples).expect("run");
                indexed.push((slots.to_vec(), samples));
            }
            assert_eq!(indexed, walked, "{rows:?} {wanted:?}");
        }
        let damaged = encode(&[(1, 1, 1.0), (2, 2, 2.0)]);
        assert!(IndexedBlock::new(damaged[..damaged.len() - 1].into()).is_err());
    }

    #[test]
    fn the_last_written_of_a_repeated_key_wins() {
        let mut rows = vec![(65, 10, 1.0), (1, 10, 2.0), (65, 10, 3.0), (1, 5, 4.0)];
        sort_batch(&mut rows);
        // 1 and 65 share bucket 1; the later write of (65, 10) wins.
        assert_eq!(
            bits(&rows),
            bits(&[(1, 5, 4.0), (1, 10, 2.0), (65, 10, 3.0)])
        );
    }

    #[test]
    fn damaged_blocks_are_errors_not_panics() {
        let data = encode(&[(1, 1, 1.0), (2, 2, 2.0)]);
        for cut in 0..data.len() {
            let mut out = Vec::new();
            let _ = decode(&data[..cut], &mut out);
        }
        let mut out = Vec::new();
        assert!(decode(&[9, 1, 2], &mut out).is_err());
        assert!(decode(&[], &mut out).is_err());
        let mut long = data.clone();
        long[2] = 0xff;
        let _ = decode(&long, &mut out);
    }
}

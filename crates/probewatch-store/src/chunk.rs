//! The compressed encoding of a run of one series' samples, stored as one `chunks` row.
//!
//! Storing a sample per row costs ~30 bytes and one B-tree entry; a chunk of up to
//! [`CHUNK_MAX_SAMPLES`] costs a few bits to a few bytes per sample and one row, which is what
//! makes a range query over a million samples read a few thousand rows instead of a million.
//!
//! Two layouts exist; [`encode`] writes version 2, [`decode`] reads both.
//!
//! **Version 2** (bit-packed, the scheme of Facebook's Gorilla paper that Prometheus's XOR
//! chunks also use): a `0` byte and a `2` byte (a version 1 chunk never starts with `0`: stored
//! chunks are never empty), the sample count (LEB128), the first timestamp (zigzag LEB128), the
//! first value's 8 bytes (little-endian bits), then a bit stream, most significant bit first,
//! zero-padded to a whole byte. Per further sample:
//! - the delta-of-delta `d` of its timestamp (the first delta's previous delta is 0):
//!   `0` if `d` is 0; `10` + 14 bits, `110` + 17 bits or `1110` + 20 bits (two's complement)
//!   when it fits; otherwise `1111` + 64 bits;
//! - its value's bits XOR the previous value's: `0` if equal; otherwise `1`, then `0` + the
//!   XOR's bits inside the previous window when its leading and trailing zeros cover that
//!   window, or `1` + 5 bits of leading zeros (at most 31) + 6 bits of significant-bit count
//!   (64 written as 0) + those bits, which becomes the window.
//!
//! A regular series (steady interval, slowly changing value) costs 1–3 bytes a sample; a
//! constant one 2 bits.
//!
//! **Version 1** (byte-aligned, written before 2026-11-26; all integers LEB128 varints, signed
//! ones zigzag-encoded): the sample count; the first timestamp and the first value's 8 raw
//! bytes; per further sample the delta-of-delta of its timestamp, then its value's XOR with
//! the previous value: a single `0` byte when they are equal, otherwise a control byte `1 +
//! ((len - 1) << 3 | trailing)` followed by the `len` non-zero bytes of the XOR above its
//! `trailing` zero bytes.
//!
//! Values keep their exact bits, so NaN payloads (Prometheus's stale marker) survive.

/// Most samples in one chunk: bounds what compaction rewrites when it appends to a chunk,
/// and keeps a typical chunk inside one 4 KiB page.
pub const CHUNK_MAX_SAMPLES: usize = 512;

/// A chunk that does not decode: the database was damaged or written by something else.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("corrupt sample chunk: {0}")]
pub struct ChunkError(pub(crate) &'static str);

/// The first two bytes of a version 2 chunk.
const V2_MAGIC: [u8; 2] = [0, 2];

/// Encodes samples, which must be sorted by timestamp with no duplicates, as version 2.
pub fn encode(samples: &[(i64, f64)]) -> Vec<u8> {
    let mut out = Vec::with_capacity(20 + samples.len() * 2);
    out.extend_from_slice(&V2_MAGIC);
    put_uvarint(&mut out, samples.len() as u64);
    let Some(&(first_ts, first_value)) = samples.first() else {
        return out;
    };
    put_ivarint(&mut out, first_ts);
    out.extend_from_slice(&first_value.to_bits().to_le_bytes());
    let mut w = BitWriter::new(out);
    let (mut prev_ts, mut prev_delta, mut prev_bits) = (first_ts, 0i64, first_value.to_bits());
    // The current value window as (leading zeros, significant bits); none before the first.
    let mut window: Option<(u32, u32)> = None;
    for &(ts, value) in &samples[1..] {
        let delta = ts.wrapping_sub(prev_ts);
        let dod = delta.wrapping_sub(prev_delta);
        (prev_ts, prev_delta) = (ts, delta);
        match dod {
            0 => w.put(0, 1),
            -8_192..=8_191 => w.put((0b10 << 14) | (dod as u64 & 0x3fff), 16),
            -65_536..=65_535 => w.put((0b110 << 17) | (dod as u64 & 0x1_ffff), 20),
            -524_288..=524_287 => w.put((0b1110 << 20) | (dod as u64 & 0xf_ffff), 24),
            _ => {
                w.put(0b1111, 4);
                w.put(dod as u64, 64);
            }
        }
        let bits = value.to_bits();
        let xor = bits ^ prev_bits;
        prev_bits = bits;
        if xor == 0 {
            w.put(0, 1);
            continue;
        }
        let leading = xor.leading_zeros().min(31);
        let trailing = xor.trailing_zeros();
        match window {
            Some((lead, sig)) if leading >= lead && trailing >= 64 - lead - sig => {
                w.put(0b10, 2);
                w.put(xor >> (64 - lead - sig), sig);
            }
            _ => {
                let sig = 64 - leading - trailing;
                w.put(0b11, 2);
                w.put(u64::from(leading), 5);
                w.put(u64::from(sig & 63), 6);
                w.put(xor >> trailing, sig);
                window = Some((leading, sig));
            }
        }
    }
    w.finish()
}

/// Merges two sorted runs with unique timestamps; on equal timestamps `newer` wins.
pub(crate) fn merge_sorted(older: &[(i64, f64)], newer: &[(i64, f64)]) -> Vec<(i64, f64)> {
    let mut out = Vec::with_capacity(older.len() + newer.len());
    let (mut i, mut j) = (0, 0);
    while i < older.len() && j < newer.len() {
        match older[i].0.cmp(&newer[j].0) {
            std::cmp::Ordering::Less => {
                out.push(older[i]);
                i += 1;
            }
            std::cmp::Ordering::Greater => {
                out.push(newer[j]);
                j += 1;
            }
            std::cmp::Ordering::Equal => {
                out.push(newer[j]);
                i += 1;
                j += 1;
            }
        }
    }
    out.extend_from_slice(&older[i..]);
    out.extend_from_slice(&newer[j..]);
    out
}

/// Makes `out[start..]` (one series' samples, appended source by source, oldest source
/// first) sorted with one sample per timestamp, the last written winning: what a read does
/// when the head repeats timestamps already in chunks.
pub(crate) fn keep_last_written(out: &mut Vec<(i64, f64)>, start: usize) {
    if out[start..].is_sorted_by(|a, b| a.0 < b.0) {
        return;
    }
    // The sort is stable and the sources were appended oldest first.
    let mut series = out.split_off(start);
    series.sort_by_key(|s| s.0);
    series.reverse();
    series.dedup_by_key(|s| s.0);
    series.reverse();
    out.extend(series);
}

/// Appends the samples of `data` (either version) within `[from_ms, to_ms]` to `out`.
pub(crate) fn decode_range(
    data: &[u8],
    from_ms: i64,
    to_ms: i64,
    out: &mut Vec<(i64, f64)>,
) -> Result<(), ChunkError> {
    if let [0, 2, rest @ ..] = data {
        // Samples outside the range are decoded (each depends on the one before) but not
        // kept: a rule's 5-minute window of a 512-sample chunk keeps a few.
        return decode_v2(rest, from_ms, to_ms, out);
    }
    let before = out.len();
    decode(data, out)?;
    // Most runs lie inside the range: filter only one that reaches outside it.
    if out[before..].first().is_some_and(|s| s.0 < from_ms)
        || out.last().is_some_and(|s| s.0 > to_ms)
    {
        let kept: Vec<(i64, f64)> = out
            .drain(before..)
            .filter(|s| (from_ms..=to_ms).contains(&s.0))
            .collect();
        out.extend(kept);
    }
    Ok(())
}

/// Appends the samples of `data` (either version) to `out`.
pub fn decode(data: &[u8], out: &mut Vec<(i64, f64)>) -> Result<(), ChunkError> {
    match data {
        // A version 1 chunk starts with its sample count, never 0 in a stored chunk.
        [0, 2, rest @ ..] => decode_v2(rest, i64::MIN, i64::MAX, out),
        [0, ..] => Err(ChunkError("unknown chunk version")),
        _ => decode_v1(data, out),
    }
}

/// Appends the samples of a version 2 chunk (after its version bytes) within `[from_ms,
/// to_ms]` to `out`; the whole chunk is checked either way.
fn decode_v2(
    data: &[u8],
    from_ms: i64,
    to_ms: i64,
    out: &mut Vec<(i64, f64)>,
) -> Result<(), ChunkError> {
    let keep = |ts: i64| from_ms <= ts && ts <= to_ms;
    let mut r = Reader { data, pos: 0 };
    let n = usize::try_from(r.uvarint()?).map_err(|_| ChunkError("sample count"))?;
    if n == 0 {
        return if r.pos == data.len() {
            Ok(())
        } else {
            Err(ChunkError("trailing bytes"))
        };
    }
    if n > data.len().saturating_mul(8) {
        // Every sample takes at least two bits: a larger count is corruption, and must not
        // reserve memory it names.
        return Err(ChunkError("sample count exceeds data"));
    }
    if from_ms == i64::MIN && to_ms == i64::MAX {
        out.reserve(n);
    }
    let mut ts = r.ivarint()?;
    let mut bits = u64::from_le_bytes(r.take(8)?.try_into().map_err(|_| ChunkError("value"))?);
    if keep(ts) {
        out.push((ts, f64::from_bits(bits)));
    }
    let mut b = BitReader::new(&data[r.pos..]);
    let mut delta = 0i64;
    let (mut lead, mut sig) = (0u32, 0u32);
    for _ in 1..n {
        let dod = if !b.bit()? {
            0
        } else if !b.bit()? {
            sign_extend(b.bits(14)?, 14)
        } else if !b.bit()? {
            sign_extend(b.bits(17)?, 17)
        } else if !b.bit()? {
            sign_extend(b.bits(20)?, 20)
        } else {
            b.bits(64)? as i64
        };
        delta = delta.wrapping_add(dod);
        ts = ts.wrapping_add(delta);
        if b.bit()? {
            if b.bit()? {
                lead = b.bits(5)? as u32;
                sig = match b.bits(6)? as u32 {
                    0 => 64,
                    n => n,
                };
                if lead + sig > 64 {
                    return Err(ChunkError("value window"));
                }
            } else if sig == 0 {
                return Err(ChunkError("value window reused before one was set"));
            }
            bits ^= b.bits(sig)? << (64 - lead - sig);
        }
        if keep(ts) {
            out.push((ts, f64::from_bits(bits)));
        }
    }
    b.finish()
}

fn sign_extend(v: u64, bits: u32) -> i64 {
    let shift = 64 - bits;
    ((v << shift) as i64) >> shift
}

/// Writes bits, most significant first, into bytes.
struct BitWriter {
    out: Vec<u8>,
    /// Bits not yet written, in the low `n` bits.
    acc: u64,
    n: u32,
}

impl BitWriter {
    fn new(out: Vec<u8>) -> BitWriter {
        BitWriter { out, acc: 0, n: 0 }
    }

    /// Writes the low `bits` bits of `v` (`bits` in 0..=64).
    fn put(&mut self, v: u64, bits: u32) {
        let mut left = bits;
        while left > 0 {
            let take = left.min(64 - self.n);
            let part = (v >> (left - take)) & mask(take);
            self.acc = if take == 64 {
                part
            } else {
                (self.acc << take) | part
            };
            self.n += take;
            left -= take;
            if self.n == 64 {
                self.out.extend_from_slice(&self.acc.to_be_bytes());
                (self.acc, self.n) = (0, 0);
            }
        }
    }

    /// The bytes, the last one padded with zero bits.
    fn finish(mut self) -> Vec<u8> {
        if self.n > 0 {
            let bytes = (self.acc << (64 - self.n)).to_be_bytes();
            self.out
                .extend_from_slice(&bytes[..self.n.div_ceil(8) as usize]);
        }
        self.out
    }
}

fn mask(bits: u32) -> u64 {
    if bits >= 64 {
        u64::MAX
    } else {
        (1u64 << bits) - 1
    }
}

/// Reads what [`BitWriter`] wrote, through a 64-bit window refilled a byte at a time.
struct BitReader<'a> {
    data: &'a [u8],
    /// The next byte of `data` to load into `buf`.
    next: usize,
    /// Loaded bits, left-aligned; the rest are zero.
    buf: u64,
    /// How many bits `buf` holds.
    avail: u32,
}

impl<'a> BitReader<'a> {
    fn new(data: &'a [u8]) -> BitReader<'a> {
        BitReader {
            data,
            next: 0,
            buf: 0,
            avail: 0,
        }
    }

    fn refill(&mut self) {
        while self.avail <= 56 {
            let Some(&byte) = self.data.get(self.next) else {
                return;
            };
            self.buf |= u64::from(byte) << (56 - self.avail);
            self.avail += 8;
            self.next += 1;
        }
    }

    fn bit(&mut self) -> Result<bool, ChunkError> {
        Ok(self.bits(1)? == 1)
    }

    /// Reads `n` bits (0..=64) as the low bits of the result.
    fn bits(&mut self, n: u32) -> Result<u64, ChunkError> {
        if n == 0 {
            return Ok(0);
        }
        if n > 32 {
            let high = self.bits(n - 32)?;
            return Ok((high << 32) | self.bits(32)?);
        }
        if self.avail < n {
            self.refill();
            if self.avail < n {
                return Err(ChunkError("truncated"));
            }
        }
        let v = self.buf >> (64 - n);
        self.buf <<= n;
        self.avail -= n;
        Ok(v)
    }

    /// Checks that only zero padding (less than a byte) is left.
    fn finish(self) -> Result<(), ChunkError> {
        if self.next < self.data.len() || self.avail >= 8 {
            return Err(ChunkError("trailing bytes"));
        }
        if self.buf != 0 {
            return Err(ChunkError("trailing bits"));
        }
        Ok(())
    }
}

fn decode_v1(data: &[u8], out: &mut Vec<(i64, f64)>) -> Result<(), ChunkError> {
    let mut r = Reader { data, pos: 0 };
    let n = usize::try_from(r.uvarint()?).map_err(|_| ChunkError("sample count"))?;
    if n == 0 {
        return Ok(());
    }
    if n > data.len() {
        // Every sample takes at least one byte: a larger count is corruption, and must not
        // reserve memory it names.
        return Err(ChunkError("sample count exceeds data"));
    }
    out.reserve(n);
    let mut ts = r.ivarint()?;
    let mut bits = u64::from_le_bytes(r.take(8)?.try_into().map_err(|_| ChunkError("value"))?);
    out.push((ts, f64::from_bits(bits)));
    let mut delta = 0i64;
    for _ in 1..n {
        delta = delta.wrapping_add(r.ivarint()?);
        ts = ts.wrapping_add(delta);
        let control = r.byte()?;
        if control != 0 {
            let c = u32::from(control - 1);
            let (len, trailing) = ((c >> 3) + 1, c & 7);
            if len + trailing > 8 {
                return Err(ChunkError("value control byte"));
            }
            let mut bytes = [0u8; 8];
            bytes[..len as usize].copy_from_slice(r.take(len as usize)?);
            bits ^= u64::from_le_bytes(bytes) << (trailing * 8);
        }
        out.push((ts, f64::from_bits(bits)));
    }
    if r.pos != data.len() {
        return Err(ChunkError("trailing bytes"));
    }
    Ok(())
}

pub(crate) fn put_uvarint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn put_ivarint(out: &mut Vec<u8>, v: i64) {
    put_uvarint(out, ((v << 1) ^ (v >> 63)) as u64);
}

/// A cursor over LEB128 varints and raw bytes.
pub(crate) struct Reader<'a> {
    pub(crate) data: &'a [u8],
    pub(crate) pos: usize,
}

impl<'a> Reader<'a> {
    fn byte(&mut self) -> Result<u8, ChunkError> {
        let b = *self.data.get(self.pos).ok_or(ChunkError("truncated"))?;
        self.pos += 1;
        Ok(b)
    }

    pub(crate) fn take(&mut self, n: usize) -> Result<&'a [u8], ChunkError> {
        let end = self.pos.checked_add(n).ok_or(ChunkError("truncated"))?;
        let bytes = self
            .data
            .get(self.pos..end)
            .ok_or(ChunkError("truncated"))?;
        self.pos = end;
        Ok(bytes)
    }

    pub(crate) fn uvarint(&mut self) -> Result<u64, ChunkError> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.byte()?;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(ChunkError("varint too long"))
    }

    fn ivarint(&mut self) -> Result<i64, ChunkError> {
        let u = self.uvarint()?;
        Ok(((u >> 1) as i64) ^ -((u & 1) as i64))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::Strategy;

    fn roundtrip(samples: &[(i64, f64)]) -> Vec<u8> {
        let data = encode(samples);
        let mut back = Vec::new();
        decode(&data, &mut back).expect("decodes");
        assert_eq!(back.len(), samples.len());
        for (a, b) in samples.iter().zip(&back) {
            assert_eq!(a.0, b.0);
            assert_eq!(a.1.to_bits(), b.1.to_bits(), "value bits of {a:?}");
        }
        data
    }

    #[test]
    fn a_constant_regular_series_costs_two_bits_a_sample() {
        let samples: Vec<(i64, f64)> = (0..512)
            .map(|i| (1_700_000_000_000 + i * 10_000, 0.0))
            .collect();
        let data = roundtrip(&samples);
        // Header (2 + 2 + 6 + 8 bytes), the first delta (20 bits), then 2 bits a sample.
        assert!(data.len() <= 18 + 3 + 511 / 4 + 1, "{} bytes", data.len());
    }

    #[test]
    fn typical_series_stay_small() {
        let mut x = 7u64;
        let mut next = || {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            x >> 33
        };
        // Whole-second times (as probes report them), a counter rising by 1 to 4 a sample.
        let mut v = 1e6;
        let counter: Vec<(i64, f64)> = (0..512)
            .map(|i| {
                v += 1.0 + (next() % 4) as f64;
                (1_700_000_000_000 + i * 60_000, v)
            })
            .collect();
        let size = roundtrip(&counter).len();
        assert!(size < 2 * 512, "counter: {size} bytes");
        // Millisecond jitter on the times and a gauge wandering in a small range.
        let gauge: Vec<(i64, f64)> = (0..512)
            .map(|i| {
                let jitter = (next() % 16) as i64 - 8;
                (
                    1_700_000_000_000 + i * 15_000 + jitter,
                    (next() % 100) as f64 / 4.0,
                )
            })
            .collect();
        let size = roundtrip(&gauge).len();
        assert!(size < 5 * 512, "gauge: {size} bytes");
    }

    #[test]
    fn version_1_chunks_still_decode() {
        let samples = [
            (5, 1.0),
            (7, f64::from_bits(0x7ff0_0000_0000_0002)),
            (100, -3.25),
        ];
        let data = encode_v1(&samples);
        assert_ne!(data[0], 0);
        let mut back = Vec::new();
        decode(&data, &mut back).expect("decodes");
        assert_eq!(back.len(), 3);
        for (a, b) in samples.iter().zip(&back) {
            assert_eq!((a.0, a.1.to_bits()), (b.0, b.1.to_bits()));
        }
    }

    /// The version 1 encoder, as it was, to write the chunks older databases hold.
    fn encode_v1(samples: &[(i64, f64)]) -> Vec<u8> {
        let mut out = Vec::new();
        put_uvarint(&mut out, samples.len() as u64);
        let Some(&(first_ts, first_value)) = samples.first() else {
            return out;
        };
        put_ivarint(&mut out, first_ts);
        out.extend_from_slice(&first_value.to_bits().to_le_bytes());
        let (mut prev_ts, mut prev_delta, mut prev_bits) = (first_ts, 0i64, first_value.to_bits());
        for &(ts, value) in &samples[1..] {
            let delta = ts.wrapping_sub(prev_ts);
            put_ivarint(&mut out, delta.wrapping_sub(prev_delta));
            (prev_ts, prev_delta) = (ts, delta);
            let bits = value.to_bits();
            let xor = bits ^ prev_bits;
            prev_bits = bits;
            if xor == 0 {
                out.push(0);
                continue;
            }
            let trailing = xor.trailing_zeros() / 8;
            let len = 8 - xor.leading_zeros() / 8 - trailing;
            out.push(1 + (((len - 1) << 3) | trailing) as u8);
            out.extend_from_slice(&(xor >> (trailing * 8)).to_le_bytes()[..len as usize]);
        }
        out
    }

    proptest::proptest! {
        /// Any sequence round-trips bit for bit, sorted or not, with repeated timestamps,
        /// extreme deltas and every kind of value (NaN payloads, infinities, -0).
        #[test]
        fn any_samples_round_trip(
            samples in proptest::collection::vec(
                (
                    proptest::prop_oneof![
                        proptest::num::i64::ANY,
                        -5i64..5,
                        1_700_000_000_000i64..1_700_000_100_000,
                    ],
                    proptest::prop_oneof![
                        proptest::num::u64::ANY,
                        proptest::sample::select(vec![
                            0x7ff0_0000_0000_0002u64, // stale marker
                            f64::NAN.to_bits(),
                            f64::INFINITY.to_bits(),
                            f64::NEG_INFINITY.to_bits(),
                            (-0.0f64).to_bits(),
                            0,
                            1.0f64.to_bits(),
                        ]),
                        (0u64..1000).prop_map(|v| (v as f64).to_bits()),
                    ],
                ),
                0..300,
            )
        ) {
            let samples: Vec<(i64, f64)> =
                samples.into_iter().map(|(t, v)| (t, f64::from_bits(v))).collect();
            let data = encode(&samples);
            let mut back = Vec::new();
            decode(&data, &mut back).expect("decodes");
            proptest::prop_assert_eq!(back.len(), samples.len());
            for (a, b) in samples.iter().zip(&back) {
                proptest::prop_assert_eq!((a.0, a.1.to_bits()), (b.0, b.1.to_bits()));
            }
        }

        /// A range read keeps exactly the samples of a whole read within the range, for
        /// both chunk versions.
        #[test]
        fn a_range_keeps_what_a_whole_read_has_in_it(
            times in proptest::collection::vec(0i64..1_000, 1..200),
            from in -10i64..1_010,
            len in 0i64..1_100,
        ) {
            let mut times = times;
            times.sort_unstable();
            times.dedup();
            let samples: Vec<(i64, f64)> =
                times.iter().map(|&t| (t, (t % 7) as f64 * 0.5)).collect();
            let to = from.saturating_add(len);
            let expected: Vec<(i64, u64)> = samples
                .iter()
                .filter(|s| (from..=to).contains(&s.0))
                .map(|s| (s.0, s.1.to_bits()))
                .collect();
            for data in [encode(&samples), encode_v1(&samples)] {
                let mut got = vec![(-1, 9.0)];
                decode_range(&data, from, to, &mut got).expect("decodes");
                let got: Vec<(i64, u64)> =
                    got[1..].iter().map(|s| (s.0, s.1.to_bits())).collect();
                proptest::prop_assert_eq!(&got, &expected);
            }
        }

        /// Damaged data is an error or other samples, never a panic or a huge allocation.
        #[test]
        fn damaged_chunks_never_panic(
            values in proptest::collection::vec(proptest::num::u64::ANY, 1..40),
            flips in proptest::collection::vec((0usize..400, 0u8..8), 1..4),
            cut in 0usize..400,
        ) {
            let samples: Vec<(i64, f64)> = values
                .iter()
                .enumerate()
                .map(|(i, v)| (i as i64 * 1000, f64::from_bits(*v)))
                .collect();
            let mut data = encode(&samples);
            for (at, bit) in flips {
                let len = data.len();
                data[at % len] ^= 1 << bit;
            }
            data.truncate(cut.max(1));
            let mut out = Vec::new();
            let _ = decode(&data, &mut out);
            proptest::prop_assert!(out.len() <= samples.len().max(data.len() * 8));
        }
    }

    #[test]
    fn keeps_special_values_and_irregular_times() {
        let stale = f64::from_bits(0x7ff0_0000_0000_0002);
        roundtrip(&[
            (-5, f64::NAN),
            (0, stale),
            (1, f64::INFINITY),
            (1_000_000_007, f64::NEG_INFINITY),
            (1_000_000_008, -0.0),
            (1_000_000_009, 1234567.891),
            (i64::MAX, f64::MIN_POSITIVE),
        ]);
        roundtrip(&[(i64::MIN, 1.0), (i64::MAX, 2.0)]);
        roundtrip(&[(42, 3.5)]);
        roundtrip(&[]);
    }

    #[test]
    fn pseudo_random_values_round_trip() {
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut ts = 0i64;
        let samples: Vec<(i64, f64)> = (0..2000)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                ts += (x % 30_000) as i64 + 1;
                (ts, f64::from_bits(x))
            })
            .collect();
        roundtrip(&samples);
    }

    #[test]
    fn corrupt_data_is_an_error_not_a_panic() {
        let data = encode(&[(1, 1.0), (2, 2.5), (3, -7.0)]);
        for cut in 0..data.len() {
            let mut out = Vec::new();
            assert!(decode(&data[..cut], &mut out).is_err(), "cut at {cut}");
        }
        let mut out = Vec::new();
        assert!(decode(&[0xff; 20], &mut out).is_err());
        assert!(decode(&[0x10, 2, 0, 0, 0, 0, 0, 0, 0, 0], &mut out).is_err());
    }
}

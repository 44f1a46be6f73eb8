//! The compressed encoding of a run of one series' samples, stored as one `chunks` row.
//!
//! Storing a sample per row costs ~30 bytes and one B-tree entry; a chunk of up to
//! [`CHUNK_MAX_SAMPLES`] costs 1–4 bytes per regular sample and one row, which is what makes a
//! range query over a million samples read a few thousand rows instead of a million.
//!
//! Layout (all integers are LEB128 varints, signed ones zigzag-encoded):
//! - sample count;
//! - first timestamp (signed), first value as 8 raw little-endian bytes of its bits;
//! - per further sample: the delta-of-delta of its timestamp (signed), then its value as the
//!   XOR of its bits with the previous value's bits: a single `0` byte when they are equal,
//!   otherwise a control byte `1 + ((len - 1) << 3 | trailing)` followed by the `len` non-zero
//!   bytes of the XOR above its `trailing` zero bytes.
//!
//! Values keep their exact bits, so NaN payloads (Prometheus's stale marker) survive.

/// Most samples in one chunk: bounds what compaction rewrites when it appends to a chunk,
/// and keeps a typical chunk inside one 4 KiB page.
pub const CHUNK_MAX_SAMPLES: usize = 512;

/// A chunk that does not decode: the database was damaged or written by something else.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("corrupt sample chunk: {0}")]
pub struct ChunkError(&'static str);

/// Encodes samples, which must be sorted by timestamp with no duplicates.
pub fn encode(samples: &[(i64, f64)]) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + samples.len() * 3);
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
        // len is 1..=8 and trailing 0..=7, so the control byte is 1..=64.
        out.push(1 + (((len - 1) << 3) | trailing) as u8);
        let bytes = (xor >> (trailing * 8)).to_le_bytes();
        out.extend_from_slice(&bytes[..len as usize]);
    }
    out
}

/// Appends the samples of `data` to `out`.
pub fn decode(data: &[u8], out: &mut Vec<(i64, f64)>) -> Result<(), ChunkError> {
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

fn put_uvarint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn put_ivarint(out: &mut Vec<u8>, v: i64) {
    put_uvarint(out, ((v << 1) ^ (v >> 63)) as u64);
}

struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn byte(&mut self) -> Result<u8, ChunkError> {
        let b = *self.data.get(self.pos).ok_or(ChunkError("truncated"))?;
        self.pos += 1;
        Ok(b)
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], ChunkError> {
        let end = self.pos.checked_add(n).ok_or(ChunkError("truncated"))?;
        let bytes = self
            .data
            .get(self.pos..end)
            .ok_or(ChunkError("truncated"))?;
        self.pos = end;
        Ok(bytes)
    }

    fn uvarint(&mut self) -> Result<u64, ChunkError> {
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
    fn regular_series_cost_two_bytes_per_sample() {
        let samples: Vec<(i64, f64)> = (0..512)
            .map(|i| (1_700_000_000_000 + i * 10_000, 0.0))
            .collect();
        let data = roundtrip(&samples);
        assert!(data.len() <= 2 * 512 + 16, "{} bytes", data.len());
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

//! What the dashboard computes from a check's history: the time range a page shows,
//! availability from status intervals, timeline and status-strip segments, and min/max
//! downsampling of a series to the chart's pixel columns. Plain functions over plain data,
//! so each is tested without a store or a browser.

use probewatch_store::StatusInterval;

/// The ranges the picker offers, with their length.
pub(crate) const RANGES: &[(&str, i64)] = &[
    ("1h", 3_600_000),
    ("6h", 6 * 3_600_000),
    ("24h", 24 * 3_600_000),
    ("7d", 7 * 86_400_000),
    ("30d", 30 * 86_400_000),
];

/// A link of the range picker.
pub(crate) struct RangeLink {
    pub name: &'static str,
    pub href: String,
    pub current: bool,
}

/// The range picker's links: each named range, its URL from `href`, the current one marked.
pub(crate) fn range_links(current: &str, href: impl Fn(&str) -> String) -> Vec<RangeLink> {
    RANGES
        .iter()
        .map(|(name, _)| RangeLink {
            name,
            href: href(name),
            current: current == *name,
        })
        .collect()
}

/// `path?k=v&…`, with the pairs form-encoded.
pub(crate) fn href(path: &str, pairs: &[(&str, &str)]) -> String {
    let mut s = form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs {
        s.append_pair(k, v);
    }
    format!("{path}?{}", s.finish())
}

/// A page's time range: a named one ending now, or a custom from–to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TimeRange {
    /// `1h` … `30d`, or `custom`.
    pub name: String,
    pub from_ms: i64,
    pub to_ms: i64,
}

/// The range from a page's query: `from` and `to` (RFC 3339, a `datetime-local` value read
/// as UTC, or ms since the epoch) win over `range`; the default is the last 24 hours.
pub(crate) fn time_range(
    range: Option<&str>,
    from: Option<&str>,
    to: Option<&str>,
    now_ms: i64,
    tz: &jiff::tz::TimeZone,
) -> Result<TimeRange, String> {
    let from = from.map(str::trim).filter(|s| !s.is_empty());
    let to = to.map(str::trim).filter(|s| !s.is_empty());
    if from.is_some() || to.is_some() {
        let to_ms = to.map_or(Ok(now_ms), |t| parse_instant(t, "to", tz))?;
        let from_ms = from.map_or(Ok(to_ms - 3_600_000), |f| parse_instant(f, "from", tz))?;
        if from_ms >= to_ms {
            return Err("`from` must be before `to`".into());
        }
        return Ok(TimeRange {
            name: "custom".into(),
            from_ms,
            to_ms,
        });
    }
    let name = range.unwrap_or("24h");
    let Some((name, len)) = RANGES.iter().find(|(n, _)| *n == name) else {
        let names: Vec<&str> = RANGES.iter().map(|(n, _)| *n).collect();
        return Err(format!(
            "unknown range {name:?}: use one of {} or from/to",
            names.join(", ")
        ));
    };
    Ok(TimeRange {
        name: (*name).into(),
        from_ms: now_ms - len,
        to_ms: now_ms,
    })
}

fn parse_instant(text: &str, what: &str, tz: &jiff::tz::TimeZone) -> Result<i64, String> {
    if let Ok(ms) = text.parse::<i64>() {
        return Ok(ms);
    }
    if let Ok(t) = text.parse::<jiff::Timestamp>() {
        return Ok(t.as_millisecond());
    }
    // `<input type="datetime-local">` sends no zone: it is in the pages' zone, as the page
    // labels it.
    if let Ok(dt) = text.parse::<jiff::civil::DateTime>()
        && let Ok(t) = tz.to_timestamp(dt)
    {
        return Ok(t.as_millisecond());
    }
    Err(format!(
        "`{what}` is not a time: {text:?} (use RFC 3339, e.g. 2026-11-23T10:00:00Z)"
    ))
}

/// How a range's time divides among the statuses.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Availability {
    /// Milliseconds in each status, indexed by status code 0–3.
    pub by_status: [i64; 4],
    /// Milliseconds of the range (up to now) with no results.
    pub no_data_ms: i64,
    /// Milliseconds under maintenance, left out of everything else.
    pub maintenance_ms: i64,
}

impl Availability {
    /// Time with results.
    pub fn covered_ms(&self) -> i64 {
        self.by_status.iter().sum()
    }

    /// Share of the covered time that was ok, in percent; `None` without any data.
    pub fn ok_percent(&self) -> Option<f64> {
        let covered = self.covered_ms();
        (covered > 0).then(|| 100.0 * self.by_status[0] as f64 / covered as f64)
    }
}

/// Availability over `[from, to]` from the intervals that overlap it, leaving out the time
/// under maintenance (`maintenance`: spans in any order, overlaps allowed).
pub(crate) fn availability(
    intervals: &[StatusInterval],
    from: i64,
    to: i64,
    now: i64,
    maintenance: &[(i64, i64)],
) -> Availability {
    let end = to.min(now);
    // The maintenance spans inside the range, merged.
    let mut spans: Vec<(i64, i64)> = maintenance
        .iter()
        .map(|(s, e)| ((*s).max(from), (*e).min(end)))
        .filter(|(s, e)| e > s)
        .collect();
    spans.sort_unstable();
    let mut merged: Vec<(i64, i64)> = Vec::with_capacity(spans.len());
    for (s, e) in spans {
        match merged.last_mut() {
            Some(last) if s <= last.1 => last.1 = last.1.max(e),
            _ => merged.push((s, e)),
        }
    }
    let overlap = |s: i64, e: i64| -> i64 {
        merged
            .iter()
            .map(|(ms, me)| (e.min(*me) - s.max(*ms)).max(0))
            .sum()
    };
    let mut a = Availability {
        maintenance_ms: merged.iter().map(|(s, e)| e - s).sum(),
        ..Availability::default()
    };
    for i in intervals {
        let (s, e) = (i.start_ms.max(from), i.end_ms.min(to));
        if e > s {
            a.by_status[usize::from(i.status.min(3))] += e - s - overlap(s, e);
        }
    }
    let span = end - from;
    a.no_data_ms = (span - a.covered_ms() - a.maintenance_ms).max(0);
    a
}

/// How bad a status is, for picking the worst of several: ok < warning < unknown < critical.
pub(crate) fn severity(status: u8) -> u8 {
    match status {
        0 => 0,
        1 => 1,
        2 => 3,
        _ => 2,
    }
}

/// A stretch of a timeline or strip, in percent of its width.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Segment {
    pub x: f64,
    pub width: f64,
    pub status: u8,
    pub from_ms: i64,
    pub to_ms: i64,
    pub results: u64,
}

/// The intervals as segments across `[from, to]`. With more intervals than `columns`, the
/// range is cut into `columns` buckets, each showing the worst status in it, and equal
/// neighbours merge, so a flapping check over 30 days stays a few hundred elements.
pub(crate) fn segments(
    intervals: &[StatusInterval],
    from: i64,
    to: i64,
    columns: usize,
) -> Vec<Segment> {
    let span = (to - from).max(1) as f64;
    let pct = |t: i64| (t.clamp(from, to) - from) as f64 / span * 100.0;
    // A run of one result still gets a sliver, so it can be seen and hovered.
    let min_width = 100.0 / columns.max(1) as f64;
    let mut out: Vec<Segment> = Vec::new();
    if intervals.len() <= columns {
        for i in intervals {
            let x = pct(i.start_ms);
            out.push(Segment {
                x,
                width: (pct(i.end_ms) - x).max(min_width.min(100.0 - x)),
                status: i.status,
                from_ms: i.start_ms,
                to_ms: i.end_ms,
                results: i.results,
            });
        }
        return out;
    }
    let bucket = (to - from).max(1) as f64 / columns as f64;
    let mut worst: Vec<Option<(u8, u64)>> = vec![None; columns];
    for i in intervals {
        let first = (((i.start_ms.max(from) - from) as f64 / bucket) as usize).min(columns - 1);
        let last = (((i.end_ms.min(to) - from) as f64 / bucket) as usize).min(columns - 1);
        if i.end_ms < from || i.start_ms > to || first > last {
            continue; // outside the range
        }
        for slot in &mut worst[first..=last] {
            *slot = match *slot {
                Some((s, n)) if severity(s) >= severity(i.status) => Some((s, n + i.results)),
                Some((_, n)) => Some((i.status, n + i.results)),
                None => Some((i.status, i.results)),
            };
        }
    }
    for (c, slot) in worst.into_iter().enumerate() {
        let Some((status, results)) = slot else {
            continue;
        };
        let (b_from, b_to) = (
            from + (c as f64 * bucket) as i64,
            from + ((c + 1) as f64 * bucket) as i64,
        );
        match out.last_mut() {
            Some(prev) if prev.status == status && prev.to_ms == b_from => {
                prev.width += 100.0 / columns as f64;
                prev.to_ms = b_to;
                prev.results += results;
            }
            _ => out.push(Segment {
                x: c as f64 * 100.0 / columns as f64,
                width: 100.0 / columns as f64,
                status,
                from_ms: b_from,
                to_ms: b_to,
                results,
            }),
        }
    }
    out
}

/// A series reduced to at most `columns` pixel columns: each keeps its lowest and highest
/// value (so spikes survive) at the column's time.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub(crate) struct Downsampled {
    /// True when the points are the raw samples (few enough to draw as they are).
    pub raw: bool,
    /// Time of each point or column, ms.
    pub t: Vec<i64>,
    pub min: Vec<f64>,
    pub max: Vec<f64>,
    /// Samples read.
    pub samples: usize,
}

/// Min/max per pixel column over `[from, to]`; `points` must be in time order.
pub(crate) fn downsample(points: &[(i64, f64)], from: i64, to: i64, columns: usize) -> Downsampled {
    let columns = columns.clamp(1, 10_000);
    let mut out = Downsampled {
        samples: points.len(),
        ..Downsampled::default()
    };
    if points.len() <= columns {
        out.raw = true;
        for &(t, v) in points {
            out.t.push(t);
            out.min.push(v);
            out.max.push(v);
        }
        return out;
    }
    let width = ((to - from).max(1) as f64 / columns as f64).max(1.0);
    let mut current: Option<(usize, f64, f64)> = None;
    let flush = |c: usize, lo: f64, hi: f64, out: &mut Downsampled| {
        out.t.push(from + ((c as f64 + 0.5) * width) as i64);
        out.min.push(lo);
        out.max.push(hi);
    };
    for &(t, v) in points {
        if v.is_nan() {
            continue;
        }
        let c = ((t - from).max(0) as f64 / width) as usize;
        current = match current {
            Some((col, lo, hi)) if col == c => Some((col, lo.min(v), hi.max(v))),
            Some((col, lo, hi)) => {
                flush(col, lo, hi, &mut out);
                Some((c, v, v))
            }
            None => Some((c, v, v)),
        };
    }
    if let Some((col, lo, hi)) = current {
        flush(col, lo, hi, &mut out);
    }
    out
}

/// "3 d 4 h", "5 h 2 min", "42 s": a duration for people.
pub(crate) fn human_duration(ms: i64) -> String {
    let s = ms / 1000;
    match s {
        s if s < 60 => format!("{s} s"),
        s if s < 3600 => format!("{} min {} s", s / 60, s % 60),
        s if s < 86_400 => format!("{} h {} min", s / 3600, s % 3600 / 60),
        s => format!("{} d {} h", s / 86_400, s % 86_400 / 3600),
    }
}

/// The pages' time zone as people read it: its IANA name, or `UTC`.
pub(crate) fn zone_name(tz: &jiff::tz::TimeZone) -> String {
    tz.iana_name().unwrap_or("UTC").to_string()
}

/// The zone's offset from UTC at `ms`, in ms: what the page's charts add to times so that
/// plotly, which draws in UTC, shows the pages' zone.
pub(crate) fn zone_offset_ms(tz: &jiff::tz::TimeZone, ms: i64) -> i64 {
    jiff::Timestamp::from_millisecond(ms)
        .map(|t| i64::from(tz.to_offset(t).seconds()) * 1000)
        .unwrap_or(0)
}

/// A link to `path` with the page's current parameters (`current`, in order) and
/// `change` applied over them; empty values are left out.
pub(crate) fn href_with(
    path: &str,
    current: &[(&str, Option<String>)],
    change: &[(&str, &str)],
) -> String {
    let pairs: Vec<(&str, String)> = current
        .iter()
        .filter_map(|(name, value)| {
            let value = change
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.to_string())
                .or_else(|| value.clone())?;
            (!value.is_empty()).then_some((*name, value))
        })
        .collect();
    if pairs.is_empty() {
        return path.to_string();
    }
    let pairs: Vec<(&str, &str)> = pairs.iter().map(|(k, v)| (*k, v.as_str())).collect();
    href(path, &pairs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(start: i64, end: i64, status: u8) -> StatusInterval {
        StatusInterval {
            start_ms: start,
            end_ms: end,
            status,
            results: 1,
        }
    }

    #[test]
    fn availability_counts_overlap_only_and_calls_the_rest_no_data() {
        let runs = [run(0, 50, 0), run(50, 60, 2), run(80, 200, 0)];
        let a = availability(&runs, 10, 150, 1_000, &[]);
        assert_eq!(a.by_status, [40 + 70, 0, 10, 0]);
        assert_eq!(a.no_data_ms, 20);
        let ok = a.ok_percent().expect("data");
        assert!((ok - 100.0 * 110.0 / 120.0).abs() < 1e-9);
        // The future is not "no data".
        assert_eq!(availability(&runs, 100, 300, 200, &[]).no_data_ms, 0);
        assert_eq!(availability(&[], 0, 10, 10, &[]).ok_percent(), None);
        // Maintenance is left out: of 10..150, 40..60 and 50..70 (merged: 40..70).
        let m = availability(&runs, 10, 150, 1_000, &[(50, 70), (40, 60)]);
        assert_eq!(m.maintenance_ms, 30);
        assert_eq!(m.covered_ms() + m.no_data_ms + m.maintenance_ms, 140);
    }

    #[test]
    fn many_intervals_become_buckets_of_the_worst_status_merged() {
        // 1000 alternating one-unit runs of ok and warning, then one critical.
        let mut runs: Vec<StatusInterval> = (0..1000)
            .map(|i| run(i, i + 1, if i % 2 == 0 { 0 } else { 1 }))
            .collect();
        runs.push(run(1000, 1001, 2));
        let segs = segments(&runs, 0, 1100, 11);
        // Every bucket with a warning shows it; the critical wins its bucket; the buckets
        // after the data are empty.
        assert_eq!(segs.len(), 2, "{segs:?}");
        assert_eq!((segs[0].status, segs[0].from_ms), (1, 0));
        assert_eq!(segs[1].status, 2);
        assert!((segs[0].width - 100.0 * 10.0 / 11.0).abs() < 1e-9);
        // Few intervals keep their exact extent.
        // Intervals outside the range are ignored, not a panic.
        assert!(segments(&runs, 5000, 6000, 10).is_empty());
        let segs = segments(&runs[..3], 0, 100, 50);
        assert_eq!(segs.len(), 3);
        assert!((segs[1].x - 1.0).abs() < 1e-9);
    }

    #[test]
    fn downsampling_keeps_every_spike() {
        let points: Vec<(i64, f64)> = (0..100_000)
            .map(|i| (i, if i == 31_337 { 99.0 } else { (i % 7) as f64 }))
            .collect();
        let d = downsample(&points, 0, 100_000, 1000);
        assert!(!d.raw);
        assert_eq!(d.t.len(), 1000);
        assert_eq!(d.max.iter().cloned().fold(f64::MIN, f64::max), 99.0);
        assert_eq!(d.min.iter().cloned().fold(f64::MAX, f64::min), 0.0);
        assert_eq!(d.samples, 100_000);
        let few = downsample(&points[..10], 0, 100_000, 1000);
        assert!(few.raw);
        assert_eq!(few.t, (0..10).collect::<Vec<i64>>());
    }

    #[test]
    fn ranges_come_from_names_or_from_to() {
        let now = 1_800_000_000_000;
        let r = time_range(Some("6h"), None, None, now, &jiff::tz::TimeZone::UTC).expect("6h");
        assert_eq!((r.from_ms, r.to_ms), (now - 6 * 3_600_000, now));
        let r = time_range(None, None, None, now, &jiff::tz::TimeZone::UTC).expect("default");
        assert_eq!(r.name, "24h");
        let r = time_range(
            Some("1h"),
            Some("2026-11-23T10:00"),
            Some("2026-11-23T12:00:00Z"),
            now,
            &jiff::tz::TimeZone::UTC,
        )
        .expect("custom");
        assert_eq!(r.name, "custom");
        assert_eq!(r.to_ms - r.from_ms, 2 * 3_600_000);
        // A datetime-local value is in the pages' zone: 10:00 in Shanghai is 02:00 UTC.
        let shanghai = jiff::tz::TimeZone::get("Asia/Shanghai").expect("tz");
        let r = time_range(
            None,
            Some("2026-11-23T10:00"),
            Some("2026-11-23T12:00:00Z"),
            now,
            &shanghai,
        )
        .expect("custom");
        assert_eq!(r.to_ms - r.from_ms, 10 * 3_600_000);
        assert_eq!(zone_offset_ms(&shanghai, now), 8 * 3_600_000);
        assert_eq!(zone_name(&jiff::tz::TimeZone::UTC), "UTC");
        assert!(time_range(Some("2w"), None, None, now, &jiff::tz::TimeZone::UTC).is_err());
        assert!(time_range(None, Some("yesterday"), None, now, &jiff::tz::TimeZone::UTC).is_err());
        assert!(
            time_range(
                None,
                Some("2000"),
                Some("1000"),
                now,
                &jiff::tz::TimeZone::UTC
            )
            .is_err()
        );
    }
}

//! Maintenance windows: planned time when matching checks and alerts are expected to be
//! down. During a window an alert it matches is not notified (as if silenced), a check it
//! matches shows as MAINTENANCE instead of its status, and availability leaves that time
//! out. A window is one-off (`start`..`end`), weekly (weekdays and a time of day range in
//! a time zone; a range that ends before it starts runs past midnight), or a cron pattern
//! with a duration (`0 2 1 * *` for two hours: 02:00 on the first of each month, in a time
//! zone). Windows come from the configuration and change with a reload.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use jiff::civil::{Time, Weekday};
use jiff::tz::TimeZone;
use jiff::{Timestamp, ToSpan};
use probewatch_promql::Matcher;

/// When a window is on.
#[derive(Debug, Clone)]
pub enum Schedule {
    /// From `start_ms` until `end_ms`.
    Once {
        /// Start, ms since the epoch.
        start_ms: i64,
        /// End (exclusive).
        end_ms: i64,
    },
    /// On the chosen weekdays from `from` to `to` (the next day when `to <= from`), local
    /// time in `tz`.
    Weekly {
        /// Weekdays it starts on, Monday first.
        days: [bool; 7],
        /// Local start time.
        from: Time,
        /// Local end time.
        to: Time,
        /// The time zone the times are in.
        tz: TimeZone,
    },
    /// From each local time the pattern gives, for `duration_ms`.
    Cron {
        /// When it starts.
        pattern: crate::cron::CronPattern,
        /// How long each time lasts.
        duration_ms: i64,
        /// The time zone the pattern's times are in.
        tz: TimeZone,
    },
}

/// When a window is on, as its configuration table says it: `start` and `end`; or `from`
/// and `to` with optional `days`; or `cron` and `duration`; the last two in `time_zone`.
#[derive(Debug, Default, Clone, Copy)]
pub struct WhenSpec<'a> {
    /// One-off: start (RFC 3339 or Unix seconds).
    pub start: Option<&'a str>,
    /// One-off: end.
    pub end: Option<&'a str>,
    /// Weekly: weekdays (`mon` … `sun`; every day when empty).
    pub days: &'a [String],
    /// Weekly: local start time, `HH:MM`.
    pub from: Option<&'a str>,
    /// Weekly: local end time, `HH:MM`.
    pub to: Option<&'a str>,
    /// Cron: a five-field pattern of start times.
    pub cron: Option<&'a str>,
    /// Cron: how long each time lasts (`2h`, `30m`).
    pub duration: Option<&'a str>,
    /// Weekly and cron: the IANA time zone (UTC when absent).
    pub time_zone: Option<&'a str>,
}

/// One maintenance window.
#[derive(Debug, Clone)]
pub struct Window {
    /// Its name, shown where it applies.
    pub name: String,
    /// What it covers: every matcher must hold (labels a check lacks count as empty).
    pub matchers: Vec<Matcher>,
    /// The matchers as written.
    pub matcher_texts: Vec<String>,
    /// When.
    pub schedule: Schedule,
    /// Why, for people.
    pub comment: String,
}

/// Weekday names as the configuration writes them.
const DAY_NAMES: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];

fn weekday_index(d: Weekday) -> usize {
    usize::from(d.to_monday_zero_offset().unsigned_abs())
}

impl Window {
    /// A window from its configuration: matchers (PromQL matcher texts) and when.
    pub fn from_config(
        name: &str,
        matchers: &[String],
        when: &WhenSpec<'_>,
        comment: &str,
    ) -> Result<Window, String> {
        let WhenSpec {
            start,
            end,
            days,
            from,
            to,
            cron,
            duration,
            time_zone,
        } = *when;
        let at = |what: &str| format!("maintenance window {name:?}: {what}");
        if matchers.is_empty() {
            return Err(at("needs at least one matcher (e.g. host=\"db-1\")"));
        }
        let compiled = crate::silence::parse_matchers(matchers).map_err(|e| at(&e))?;
        let zone = || match time_zone {
            None => Ok(TimeZone::UTC),
            Some(n) => TimeZone::get(n)
                .map_err(|_| at(&format!("time_zone = {n:?} is not a known time zone"))),
        };
        if cron.is_some() != duration.is_some() {
            return Err(at("cron and duration go together"));
        }
        let schedule = match (start, end, from, to) {
            _ if let (Some(c), Some(d)) = (cron, duration) => {
                if start.is_some() || end.is_some() || from.is_some() || to.is_some() {
                    return Err(at(
                        "give cron and duration, or start and end, or from and to",
                    ));
                }
                if !days.is_empty() {
                    return Err(at(
                        "days go with from/to; put the weekdays in the cron pattern",
                    ));
                }
                let pattern = crate::cron::CronPattern::parse(c).map_err(|e| at(&e))?;
                let duration_ms = probewatch_promql::parse_duration_ms(d)
                    .ok()
                    .filter(|ms| *ms > 0)
                    .ok_or_else(|| at(&format!("duration = {d:?} is not a duration like 2h")))?;
                Schedule::Cron {
                    pattern,
                    duration_ms,
                    tz: zone()?,
                }
            }
            (Some(s), Some(e), None, None) => {
                let parse = |field: &str, text: &str| {
                    probewatch_core::parse_time_ms(text).ok_or_else(|| {
                        at(&format!(
                            "{field} = {text:?} is not RFC 3339 or Unix seconds"
                        ))
                    })
                };
                let (start_ms, end_ms) = (parse("start", s)?, parse("end", e)?);
                if end_ms <= start_ms {
                    return Err(at("end must be after start"));
                }
                if !days.is_empty() || time_zone.is_some() {
                    return Err(at("days and time_zone go with from/to, not start/end"));
                }
                Schedule::Once { start_ms, end_ms }
            }
            (None, None, Some(f), Some(t)) => {
                let time = |field: &str, text: &str| {
                    Time::strptime("%H:%M", text)
                        .map_err(|_| at(&format!("{field} = {text:?} is not HH:MM")))
                };
                let (from, to) = (time("from", f)?, time("to", t)?);
                if from == to {
                    return Err(at("from and to are the same time"));
                }
                let mut chosen = [days.is_empty(); 7];
                for day in days {
                    let lower = day.to_ascii_lowercase();
                    let Some(i) = DAY_NAMES
                        .iter()
                        .position(|d| lower.starts_with(d) && lower.len() >= 3)
                    else {
                        return Err(at(&format!(
                            "day {day:?} is not one of {}",
                            DAY_NAMES.join(", ")
                        )));
                    };
                    chosen[i] = true;
                }
                Schedule::Weekly {
                    days: chosen,
                    from,
                    to,
                    tz: zone()?,
                }
            }
            _ => {
                return Err(at(
                    "give either start and end (one-off), from and to (weekly), or cron and \
                     duration",
                ));
            }
        };
        Ok(Window {
            name: name.to_string(),
            matchers: compiled,
            matcher_texts: matchers.to_vec(),
            schedule,
            comment: comment.to_string(),
        })
    }

    /// When it is on, in words: `once, 2026-12-01T02:00:00Z to …`, `sat 22:00-02:00
    /// (Europe/Berlin)`, `cron "0 2 1 * *" for 3h (Asia/Tokyo)`.
    pub fn describe(&self) -> String {
        let zone = |tz: &TimeZone| tz.iana_name().unwrap_or("UTC").to_string();
        match &self.schedule {
            Schedule::Once { start_ms, end_ms } => {
                let at = |ms: i64| {
                    Timestamp::from_millisecond(ms)
                        .map_or_else(|_| ms.to_string(), |t| t.to_string())
                };
                format!("once, {} to {}", at(*start_ms), at(*end_ms))
            }
            Schedule::Weekly { days, from, to, tz } => {
                let chosen: Vec<&str> = DAY_NAMES
                    .iter()
                    .zip(days)
                    .filter(|(_, on)| **on)
                    .map(|(d, _)| *d)
                    .collect();
                let days = if chosen.len() == 7 {
                    "daily".to_string()
                } else {
                    chosen.join(",")
                };
                format!(
                    "{days} {}-{} ({})",
                    from.strftime("%H:%M"),
                    to.strftime("%H:%M"),
                    zone(tz)
                )
            }
            Schedule::Cron {
                pattern,
                duration_ms,
                tz,
            } => format!(
                "cron {:?} for {} ({})",
                pattern.text,
                probewatch_promql::format_duration_ms(*duration_ms),
                zone(tz)
            ),
        }
    }

    /// Whether the window covers something with `labels`.
    pub fn covers(&self, labels: &BTreeMap<String, String>) -> bool {
        self.matchers
            .iter()
            .all(|m| m.matches(labels.get(&m.name).map_or("", String::as_str)))
    }

    /// Whether the window covers a check (its `probe`, `host` and `check` labels).
    pub fn covers_check(&self, probe: &str, host: &str, check: &str) -> bool {
        self.matchers.iter().all(|m| {
            m.matches(match m.name.as_str() {
                "probe" => probe,
                "host" => host,
                "check" => check,
                _ => "",
            })
        })
    }

    /// The times the window is on that overlap `[from_ms, to_ms)`, in order, clipped.
    pub fn spans(&self, from_ms: i64, to_ms: i64) -> Vec<(i64, i64)> {
        let clip = |s: i64, e: i64| (s.max(from_ms), e.min(to_ms));
        match &self.schedule {
            Schedule::Once { start_ms, end_ms } => {
                if *end_ms > from_ms && *start_ms < to_ms {
                    vec![clip(*start_ms, *end_ms)]
                } else {
                    Vec::new()
                }
            }
            Schedule::Weekly { days, from, to, tz } => {
                let (Ok(first), Ok(last)) = (
                    Timestamp::from_millisecond(from_ms),
                    Timestamp::from_millisecond(to_ms),
                ) else {
                    return Vec::new();
                };
                // From the day before the range (a window that started then may still be on).
                let mut day = tz.to_datetime(first).date().saturating_sub(1.day());
                let last_day = tz.to_datetime(last).date();
                let mut out = Vec::new();
                while day <= last_day {
                    if days[weekday_index(day.weekday())] {
                        let end_day = if to <= from {
                            day.saturating_add(1.day())
                        } else {
                            day
                        };
                        let start = day.to_datetime(*from).to_zoned_datetime(tz.clone());
                        let end = end_day.to_datetime(*to).to_zoned_datetime(tz.clone());
                        if let (Ok(s), Ok(e)) = (start, end) {
                            let (s, e) = (
                                s.timestamp().as_millisecond(),
                                e.timestamp().as_millisecond(),
                            );
                            if e > from_ms && s < to_ms && e > s {
                                out.push(clip(s, e));
                            }
                        }
                    }
                    day = day.saturating_add(1.day());
                }
                out
            }
            Schedule::Cron {
                pattern,
                duration_ms,
                tz,
            } => {
                let (Ok(first), Ok(last)) = (
                    Timestamp::from_millisecond(from_ms.saturating_sub(*duration_ms)),
                    Timestamp::from_millisecond(to_ms),
                ) else {
                    return Vec::new();
                };
                let mut day = tz.to_datetime(first).date();
                let last_day = tz.to_datetime(last).date();
                let mut out: Vec<(i64, i64)> = Vec::new();
                while day <= last_day {
                    let minutes = pattern.minutes_on(day);
                    // A day without a change of offset: each time is its minute after
                    // midnight (one zone lookup a day, not one a minute).
                    let midnight = |d: jiff::civil::Date| {
                        d.to_datetime(Time::midnight())
                            .to_zoned_datetime(tz.clone())
                            .ok()
                    };
                    let plain = match (midnight(day), midnight(day.saturating_add(1.day()))) {
                        (Some(a), Some(b)) if !minutes.is_empty() => {
                            let (a, b) = (
                                a.timestamp().as_millisecond(),
                                b.timestamp().as_millisecond(),
                            );
                            (b - a == 86_400_000).then_some(a)
                        }
                        _ => None,
                    };
                    for minute in minutes {
                        let s = match plain {
                            Some(midnight) => midnight + i64::from(minute) * 60_000,
                            None => {
                                let Ok(t) = Time::new(
                                    i8::try_from(minute / 60).unwrap_or(0),
                                    i8::try_from(minute % 60).unwrap_or(0),
                                    0,
                                    0,
                                ) else {
                                    continue;
                                };
                                let Ok(start) = day.to_datetime(t).to_zoned_datetime(tz.clone())
                                else {
                                    continue;
                                };
                                start.timestamp().as_millisecond()
                            }
                        };
                        let e = s.saturating_add(*duration_ms);
                        if e <= from_ms || s >= to_ms {
                            continue;
                        }
                        // Overlapping times (every 5 minutes for 10) are one stretch.
                        match out.last_mut() {
                            Some(prev) if s <= prev.1 => prev.1 = prev.1.max(e.min(to_ms)),
                            _ => out.push(clip(s, e)),
                        }
                    }
                    day = day.saturating_add(1.day());
                }
                out
            }
        }
    }

    /// Whether the window is on at `now_ms`.
    pub fn active_at(&self, now_ms: i64) -> bool {
        !self.spans(now_ms, now_ms + 1).is_empty()
    }

    /// When it is next on after `now_ms` (or now, if it is), within 32 days; for pages.
    pub fn next_start(&self, now_ms: i64) -> Option<i64> {
        self.spans(now_ms, now_ms + 32 * 86_400_000)
            .first()
            .map(|(s, _)| *s)
    }

    /// As a silence, for the rule engine while the window is on.
    pub fn as_silence(&self) -> crate::silence::Silence {
        crate::silence::Silence {
            id: 0,
            matchers: self.matchers.clone(),
            spare: None,
        }
    }
}

/// The configured windows, shared by the rule evaluator, the outbox and the pages, and
/// replaced by a reload.
#[derive(Debug, Default)]
pub struct Windows(RwLock<Arc<Vec<Window>>>);

impl Windows {
    /// The windows now.
    pub fn load(&self) -> Arc<Vec<Window>> {
        self.0.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Takes a reloaded configuration's windows.
    pub fn replace(&self, windows: Vec<Window>) {
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(windows);
    }

    /// The windows on at `now_ms`.
    pub fn active(&self, now_ms: i64) -> Vec<Window> {
        self.load()
            .iter()
            .filter(|w| w.active_at(now_ms))
            .cloned()
            .collect()
    }

    /// The windows on at `now_ms`, as silences for the engine.
    pub fn active_silences(&self, now_ms: i64) -> Vec<crate::silence::Silence> {
        self.active(now_ms).iter().map(Window::as_silence).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(text: &str) -> i64 {
        probewatch_core::parse_time_ms(text).expect("time")
    }

    #[test]
    fn a_weekly_window_runs_in_its_time_zone_and_past_midnight() {
        // Saturdays 22:00 to Sunday 02:00, Berlin time (UTC+1 in winter).
        let days = ["sat".to_string()];
        let w = Window::from_config(
            "backups",
            &["host=\"db-1\"".into()],
            &WhenSpec {
                days: &days,
                from: Some("22:00"),
                to: Some("02:00"),
                time_zone: Some("Europe/Berlin"),
                ..WhenSpec::default()
            },
            "",
        )
        .expect("window");
        // 2026-11-28 is a Saturday.
        assert!(!w.active_at(ms("2026-11-28T20:59:00Z")));
        assert!(w.active_at(ms("2026-11-28T21:00:00Z")));
        assert!(w.active_at(ms("2026-11-29T00:59:00Z")));
        assert!(!w.active_at(ms("2026-11-29T01:00:00Z")));
        // Friday night is not in it.
        assert!(!w.active_at(ms("2026-11-27T22:00:00Z")));
        let spans = w.spans(ms("2026-11-23T00:00:00Z"), ms("2026-12-07T00:00:00Z"));
        assert_eq!(
            spans,
            [
                (ms("2026-11-28T21:00:00Z"), ms("2026-11-29T01:00:00Z")),
                (ms("2026-12-05T21:00:00Z"), ms("2026-12-06T01:00:00Z")),
            ]
        );
        assert!(w.covers_check("any", "db-1", "x") && !w.covers_check("any", "db-2", "x"));
    }

    #[test]
    fn a_one_off_window_and_bad_ones_say_why() {
        let w = Window::from_config(
            "move",
            &["probe=~\"web|api\"".into()],
            &WhenSpec {
                start: Some("2026-12-01T02:00:00Z"),
                end: Some("2026-12-01T04:00:00Z"),
                ..WhenSpec::default()
            },
            "rack move",
        )
        .expect("window");
        assert!(w.active_at(ms("2026-12-01T03:00:00Z")));
        assert!(!w.active_at(ms("2026-12-01T04:00:00Z")));
        assert_eq!(
            w.next_start(ms("2026-11-30T00:00:00Z")),
            Some(ms("2026-12-01T02:00:00Z"))
        );
        let bad = |days: &[&str], from: Option<&str>, tz: Option<&str>| {
            let days: Vec<String> = days.iter().map(|d| d.to_string()).collect();
            Window::from_config(
                "x",
                &["host=\"a\"".into()],
                &WhenSpec {
                    days: &days,
                    from,
                    to: Some("04:00"),
                    time_zone: tz,
                    ..WhenSpec::default()
                },
                "",
            )
            .expect_err("refused")
        };
        assert!(bad(&["funday"], Some("02:00"), None).contains("funday"));
        assert!(bad(&[], Some("2am"), None).contains("HH:MM"));
        assert!(bad(&[], Some("02:00"), Some("Mars/Base")).contains("Mars/Base"));
        assert!(bad(&[], None, None).contains("either start and end"));
        let cron = |pattern: &str, duration: Option<&str>| {
            Window::from_config(
                "c",
                &["host=\"a\"".into()],
                &WhenSpec {
                    cron: Some(pattern),
                    duration,
                    time_zone: Some("Asia/Tokyo"),
                    ..WhenSpec::default()
                },
                "",
            )
        };
        assert!(
            cron("0 2 * *", Some("1h"))
                .expect_err("4 fields")
                .contains("five")
        );
        assert!(
            cron("0 2 * * *", None)
                .expect_err("no duration")
                .contains("together")
        );
        assert!(
            cron("0 2 * * *", Some("soon"))
                .expect_err("bad")
                .contains("soon")
        );
    }

    #[test]
    fn a_cron_window_recurs_in_its_time_zone_for_its_duration() {
        // 02:00 Tokyo time (17:00 UTC the day before) on the 1st of each month, for 3 hours.
        let w = Window::from_config(
            "patching",
            &["host=~\"db-.*\"".into()],
            &WhenSpec {
                cron: Some("0 2 1 * *"),
                duration: Some("3h"),
                time_zone: Some("Asia/Tokyo"),
                ..WhenSpec::default()
            },
            "",
        )
        .expect("window");
        assert_eq!(
            w.spans(ms("2026-11-15T00:00:00Z"), ms("2027-01-15T00:00:00Z")),
            [
                (ms("2026-11-30T17:00:00Z"), ms("2026-11-30T20:00:00Z")),
                (ms("2026-12-31T17:00:00Z"), ms("2026-12-31T20:00:00Z")),
            ]
        );
        assert!(w.active_at(ms("2026-11-30T19:59:00Z")));
        assert!(!w.active_at(ms("2026-11-30T20:00:00Z")));
        assert_eq!(
            w.next_start(ms("2026-12-02T00:00:00Z")),
            Some(ms("2026-12-31T17:00:00Z")),
            "a month ahead"
        );
        // A window already on at the start of the range is clipped to it; overlapping
        // times are one stretch.
        assert_eq!(
            w.spans(ms("2026-11-30T18:00:00Z"), ms("2026-12-01T00:00:00Z")),
            [(ms("2026-11-30T18:00:00Z"), ms("2026-11-30T20:00:00Z"))]
        );
        // Across a change of offset (Berlin, last Sunday of March: 02:00 becomes 03:00),
        // each time is read in the zone: 01:30 is 00:30 UTC, 03:30 is 01:30 UTC.
        let spring = Window::from_config(
            "s",
            &["host=\"a\"".into()],
            &WhenSpec {
                cron: Some("30 1,3 * * *"),
                duration: Some("10m"),
                time_zone: Some("Europe/Berlin"),
                ..WhenSpec::default()
            },
            "",
        )
        .expect("window");
        assert_eq!(
            spring.spans(ms("2026-03-29T00:00:00Z"), ms("2026-03-29T02:00:00Z")),
            [
                (ms("2026-03-29T00:30:00Z"), ms("2026-03-29T00:40:00Z")),
                (ms("2026-03-29T01:30:00Z"), ms("2026-03-29T01:40:00Z")),
            ]
        );
        // A 90-day range of a pattern that fires every minute is one stretch.
        let every = Window::from_config(
            "e",
            &["host=\"a\"".into()],
            &WhenSpec {
                cron: Some("* * * * *"),
                duration: Some("1m"),
                time_zone: Some("Europe/Berlin"),
                ..WhenSpec::default()
            },
            "",
        )
        .expect("window");
        let (from, to) = (ms("2026-01-01T00:00:00Z"), ms("2026-04-01T00:00:00Z"));
        assert_eq!(every.spans(from, to), [(from, to)]);
        let often = Window::from_config(
            "o",
            &["host=\"a\"".into()],
            &WhenSpec {
                cron: Some("*/5 * * * *"),
                duration: Some("10m"),
                ..WhenSpec::default()
            },
            "",
        )
        .expect("window");
        assert_eq!(
            often.spans(ms("2026-11-30T00:00:00Z"), ms("2026-11-30T01:00:00Z")),
            [(ms("2026-11-30T00:00:00Z"), ms("2026-11-30T01:00:00Z"))]
        );
    }
}

//! Availability reports: per probe (or host) over a calendar week or month, in a chosen time
//! zone, with a chosen policy for time without results, maintenance left out — as JSON or
//! CSV for a spreadsheet or an SLA report. `GET /api/v1/availability`.

use axum::extract::{Query, State};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use jiff::ToSpan;
use jiff::civil::Date;
use jiff::tz::TimeZone;
use serde::Deserialize;
use serde_json::json;

use crate::{ApiError, AppState};

/// `?by=probe|host&period=week|month&at=YYYY-MM-DD&tz=&nodata=ignore|up|down&filter=&format=json|csv`
#[derive(Debug, Deserialize)]
pub(crate) struct AvailabilityQuery {
    by: Option<String>,
    period: Option<String>,
    at: Option<String>,
    tz: Option<String>,
    nodata: Option<String>,
    filter: Option<String>,
    format: Option<String>,
}

/// What time without results counts as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NoData {
    /// Left out: availability is over the time with results (the dashboard's figure).
    Ignore,
    /// Counted as up.
    Up,
    /// Counted as down.
    Down,
}

/// One group's time over the period, summed over its checks.
#[derive(Debug, Default, Clone, PartialEq)]
pub(crate) struct Tally {
    pub checks: usize,
    pub ok_ms: i64,
    pub problem_ms: i64,
    pub no_data_ms: i64,
    pub maintenance_ms: i64,
}

impl Tally {
    /// Availability in percent under `policy`; None when nothing counts.
    pub(crate) fn percent(&self, policy: NoData) -> Option<f64> {
        let (up, total) = match policy {
            NoData::Ignore => (self.ok_ms, self.ok_ms + self.problem_ms),
            NoData::Up => (
                self.ok_ms + self.no_data_ms,
                self.ok_ms + self.problem_ms + self.no_data_ms,
            ),
            NoData::Down => (self.ok_ms, self.ok_ms + self.problem_ms + self.no_data_ms),
        };
        (total > 0).then(|| 100.0 * up as f64 / total as f64)
    }
}

/// The calendar period containing `at` in `tz`: an ISO week (Monday to Monday) or a month,
/// as ms since the epoch `[start, end)`.
pub(crate) fn period(kind: &str, at: Date, tz: &TimeZone) -> Result<(i64, i64), String> {
    let (start, end) = match kind {
        "week" => {
            let monday = at.saturating_sub(i64::from(at.weekday().to_monday_zero_offset()).days());
            (monday, monday.saturating_add(7.days()))
        }
        "month" => {
            let first = at.first_of_month();
            (first, first.saturating_add(1.month()))
        }
        other => return Err(format!("period={other:?}: use week or month")),
    };
    let ms = |d: Date| {
        d.to_datetime(jiff::civil::Time::midnight())
            .to_zoned_datetime(tz.clone())
            .map(|z| z.timestamp().as_millisecond())
            .map_err(|e| format!("{d}: {e}"))
    };
    Ok((ms(start)?, ms(end)?))
}

/// `GET /api/v1/availability`
pub(crate) async fn availability(
    State(state): State<AppState>,
    Query(q): Query<AvailabilityQuery>,
) -> Result<Response, ApiError> {
    let now = crate::now_ms();
    let bad = ApiError::BadRequest;
    let tz = match q.tz.as_deref() {
        None | Some("") | Some("UTC") => TimeZone::UTC,
        Some(name) => {
            TimeZone::get(name).map_err(|_| bad(format!("tz={name:?} is not a known time zone")))?
        }
    };
    let at = match q.at.as_deref() {
        None | Some("") => tz.to_datetime(jiff::Timestamp::now()).date(),
        Some(text) => text
            .parse::<Date>()
            .map_err(|_| bad(format!("at={text:?}: expected a date, YYYY-MM-DD")))?,
    };
    let kind = q.period.as_deref().unwrap_or("month");
    let (from, to) = period(kind, at, &tz).map_err(bad)?;
    let policy = match q.nodata.as_deref().unwrap_or("ignore") {
        "ignore" => NoData::Ignore,
        "up" => NoData::Up,
        "down" => NoData::Down,
        other => return Err(bad(format!("nodata={other:?}: use ignore, up or down"))),
    };
    let by_host = match q.by.as_deref().unwrap_or("probe") {
        "probe" => false,
        "host" => true,
        other => return Err(bad(format!("by={other:?}: use probe or host"))),
    };
    let filter = match q.filter.as_deref().map(str::trim).filter(|f| !f.is_empty()) {
        None => Vec::new(),
        Some(f) => probewatch_alerting::silence::parse_matchers(&[f
            .trim_start_matches('{')
            .trim_end_matches('}')
            .to_string()])
        .map_err(bad)?,
    };
    let rows = crate::read(&state, |store| store.latest_checks()).await?;
    let rows: Vec<probewatch_store::CheckRow> = rows
        .into_iter()
        .filter(|c| {
            filter.iter().all(|m| {
                m.matches(match m.name.as_str() {
                    "probe" => &c.probe,
                    "host" => &c.host,
                    "check" => &c.check,
                    _ => "",
                })
            })
        })
        .collect();
    let ids: Vec<i64> = rows.iter().map(|c| c.id).collect();
    let end = to.min(now);
    let intervals = if end > from {
        crate::read(&state, move |store| store.check_intervals(&ids, from, end)).await?
    } else {
        vec![Vec::new(); rows.len()]
    };
    let windows = state
        .maintenance
        .as_ref()
        .map(|w| w.load())
        .unwrap_or_default();
    // Each window's times over the range, worked out once for all the checks it covers.
    let window_spans: Vec<Vec<(i64, i64)>> = windows.iter().map(|w| w.spans(from, end)).collect();
    let mut groups: std::collections::BTreeMap<String, Tally> = Default::default();
    for (c, intervals) in rows.iter().zip(&intervals) {
        let spans: Vec<(i64, i64)> = windows
            .iter()
            .zip(&window_spans)
            .filter(|(w, _)| w.covers_check(&c.probe, &c.host, &c.check))
            .flat_map(|(_, spans)| spans.iter().copied())
            .collect();
        let a = crate::history::availability(intervals, from, end.max(from), now, &spans);
        let key = if by_host {
            c.host.clone()
        } else {
            c.probe.clone()
        };
        let t = groups.entry(key).or_default();
        t.checks += 1;
        t.ok_ms += a.by_status[0];
        t.problem_ms += a.by_status[1] + a.by_status[2] + a.by_status[3];
        t.no_data_ms += a.no_data_ms;
        t.maintenance_ms += a.maintenance_ms;
    }
    let from_iso = crate::rfc3339(from);
    let to_iso = crate::rfc3339(to);
    let percent = |t: &Tally| t.percent(policy).map(|p| (p * 1000.0).round() / 1000.0);
    if q.format.as_deref() == Some("csv") {
        let mut csv = format!(
            "{},checks,from,to,ok_seconds,problem_seconds,no_data_seconds,maintenance_seconds,availability_percent\n",
            if by_host { "host" } else { "probe" }
        );
        for (name, t) in &groups {
            csv.push_str(&format!(
                "{},{},{from_iso},{to_iso},{},{},{},{},{}\n",
                csv_field(name),
                t.checks,
                t.ok_ms / 1000,
                t.problem_ms / 1000,
                t.no_data_ms / 1000,
                t.maintenance_ms / 1000,
                percent(t).map_or_else(String::new, |p| format!("{p:.3}"))
            ));
        }
        let mut response = csv.into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/csv; charset=utf-8"),
        );
        if let Ok(v) = HeaderValue::from_str(&format!(
            "attachment; filename=\"availability-{kind}-{}.csv\"",
            at
        )) {
            headers.insert(header::CONTENT_DISPOSITION, v);
        }
        return Ok(response);
    }
    let data: Vec<serde_json::Value> = groups
        .iter()
        .map(|(name, t)| {
            json!({
                "name": name,
                "checks": t.checks,
                "okSeconds": t.ok_ms / 1000,
                "problemSeconds": t.problem_ms / 1000,
                "noDataSeconds": t.no_data_ms / 1000,
                "maintenanceSeconds": t.maintenance_ms / 1000,
                "availabilityPercent": percent(t),
            })
        })
        .collect();
    Ok(axum::Json(json!({
        "status": "success",
        "data": {
            "by": if by_host { "host" } else { "probe" },
            "period": kind,
            "from": from_iso,
            "to": to_iso,
            "timeZone": tz.iana_name().unwrap_or("UTC"),
            "noData": q.nodata.as_deref().unwrap_or("ignore"),
            "groups": data,
        },
    }))
    .into_response())
}

/// A CSV field, quoted when it must be (RFC 4180), and never starting a formula in a
/// spreadsheet (a probe name is text someone else wrote).
fn csv_field(text: &str) -> String {
    let text = if text.starts_with(['=', '+', '-', '@']) {
        format!("'{text}")
    } else {
        text.to_string()
    };
    if text.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weeks_start_on_monday_and_months_on_the_first_in_the_zone() {
        let utc = TimeZone::UTC;
        let (s, e) = period("week", jiff::civil::date(2026, 11, 26), &utc).expect("week");
        assert_eq!(crate::rfc3339(s), "2026-11-23T00:00:00Z");
        assert_eq!(crate::rfc3339(e), "2026-11-30T00:00:00Z");
        let shanghai = TimeZone::get("Asia/Shanghai").expect("tz");
        let (s, e) = period("month", jiff::civil::date(2026, 2, 10), &shanghai).expect("month");
        assert_eq!(crate::rfc3339(s), "2026-01-31T16:00:00Z");
        assert_eq!(crate::rfc3339(e), "2026-02-28T16:00:00Z");
        assert!(period("year", jiff::civil::date(2026, 1, 1), &utc).is_err());
    }

    #[test]
    fn the_no_data_policy_decides_what_silence_counts_as() {
        let t = Tally {
            checks: 1,
            ok_ms: 60,
            problem_ms: 20,
            no_data_ms: 20,
            maintenance_ms: 50,
        };
        assert_eq!(t.percent(NoData::Ignore), Some(75.0));
        assert_eq!(t.percent(NoData::Up), Some(80.0));
        assert_eq!(t.percent(NoData::Down), Some(60.0));
        assert_eq!(Tally::default().percent(NoData::Ignore), None);
        assert_eq!(csv_field("=cmd()"), "'=cmd()");
        assert_eq!(csv_field("a,\"b\""), "\"a,\"\"b\"\"\"");
    }
}

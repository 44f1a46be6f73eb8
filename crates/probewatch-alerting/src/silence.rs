//! Silences: validating a new one, and compiling the ones in effect for the rule engine.

use probewatch_promql::Matcher;
use probewatch_store::SilenceRow;

/// An active silence's matchers: an alert matching all of them is not notified.
#[derive(Debug, Clone)]
pub struct Silence {
    /// Store id.
    pub id: i64,
    /// Matchers, all of which must hold.
    pub matchers: Vec<Matcher>,
}

/// The silences in effect at `now_ms`, compiled; a silence whose matchers do not parse is
/// skipped with a warning (they were checked when it was created).
pub fn active_silences(rows: &[probewatch_store::SilenceRow], now_ms: i64) -> Vec<Silence> {
    rows.iter()
        .filter(|r| r.active_at(now_ms))
        .filter_map(|r| match parse_matchers(&r.matchers) {
            Ok(matchers) => Some(Silence { id: r.id, matchers }),
            Err(e) => {
                tracing::warn!(id = r.id, error = %e, "skipping a silence with bad matchers");
                None
            }
        })
        .collect()
}

/// Whether any of `silences` matches an alert with `labels`.
pub fn silenced(silences: &[Silence], labels: &std::collections::BTreeMap<String, String>) -> bool {
    silences.iter().any(|s| {
        s.matchers
            .iter()
            .all(|m| m.matches(labels.get(&m.name).map_or("", String::as_str)))
    })
}

/// Parses matcher texts such as `probe="web"` or `severity=~"page|ticket"`.
pub fn parse_matchers(texts: &[String]) -> Result<Vec<Matcher>, String> {
    let mut out = Vec::new();
    for text in texts {
        let alternatives = probewatch_promql::parse_selector(&format!("{{{text}}}"))
            .map_err(|e| format!("matcher {text:?}: {e}"))?;
        match alternatives.as_slice() {
            [one] => out.extend(one.iter().cloned()),
            _ => return Err(format!("matcher {text:?}: `or` is not allowed here")),
        }
    }
    Ok(out)
}

/// Validates a request into a silence row.
pub fn new_silence(
    matchers: Vec<String>,
    starts_at: Option<&str>,
    ends_at: Option<&str>,
    duration: Option<&str>,
    created_by: String,
    comment: String,
    now: i64,
) -> Result<SilenceRow, String> {
    if matchers.is_empty() {
        return Err("a silence needs at least one matcher".into());
    }
    parse_matchers(&matchers)?;
    if created_by.trim().is_empty() || comment.trim().is_empty() {
        return Err("createdBy and comment are required".into());
    }
    let time = |name: &str, text: &str| {
        probewatch_core::parse_time_ms(text)
            .ok_or_else(|| format!("{name}: cannot parse {text:?} as a time"))
    };
    let starts = match starts_at {
        Some(t) => time("startsAt", t)?,
        None => now,
    };
    let ends = match (ends_at, duration) {
        (Some(t), None) => time("endsAt", t)?,
        (None, Some(d)) => {
            let d = humantime::parse_duration(d).map_err(|e| format!("duration {d:?}: {e}"))?;
            starts + i64::try_from(d.as_millis()).unwrap_or(i64::MAX / 2)
        }
        _ => return Err("give exactly one of endsAt and duration".into()),
    };
    if ends <= starts || ends <= now {
        return Err("the silence must end after it starts and in the future".into());
    }
    Ok(SilenceRow {
        id: 0,
        matchers,
        starts_at_ms: starts,
        ends_at_ms: ends,
        created_by,
        comment,
        created_at_ms: now,
        expired_at_ms: None,
    })
}

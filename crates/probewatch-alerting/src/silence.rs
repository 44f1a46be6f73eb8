//! Silences: validating a new one, and compiling the ones in effect for the rule engine.

use std::collections::BTreeMap;

use probewatch_promql::Matcher;
use probewatch_store::SilenceRow;

/// An active silence's matchers: an alert matching all of them is not notified.
#[derive(Debug, Clone, Default)]
pub struct Silence {
    /// Store id (0 for what is not stored: a maintenance window, an inhibition).
    pub id: i64,
    /// Matchers, all of which must hold.
    pub matchers: Vec<Matcher>,
    /// Alerts that match all of these are spared. An inhibition caused by an alert that
    /// matches both sides of its rule spares every alert that matches the rule's source
    /// side too, as Alertmanager does: no alert mutes itself, and two alerts that each
    /// could inhibit the other mute neither.
    pub spare: Option<Vec<Matcher>>,
}

/// The silences in effect at `now_ms`, compiled; a silence whose matchers do not parse is
/// skipped with a warning (they were checked when it was created).
pub fn active_silences(rows: &[probewatch_store::SilenceRow], now_ms: i64) -> Vec<Silence> {
    rows.iter()
        .filter(|r| r.active_at(now_ms))
        .filter_map(|r| match parse_matchers(&r.matchers) {
            Ok(matchers) => Some(Silence {
                id: r.id,
                matchers,
                spare: None,
            }),
            Err(e) => {
                tracing::warn!(id = r.id, error = %e, "skipping a silence with bad matchers");
                None
            }
        })
        .collect()
}

/// Whether any of `silences` matches an alert with `labels`.
pub fn silenced(silences: &[Silence], labels: &BTreeMap<String, String>) -> bool {
    silences.iter().any(|s| {
        let all = |matchers: &[Matcher]| {
            matchers
                .iter()
                .all(|m| m.matches(labels.get(&m.name).map_or("", String::as_str)))
        };
        all(&s.matchers) && !s.spare.as_deref().is_some_and(all)
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
        acknowledgement: false,
    })
}

/// A label as a matcher, `name="value"`, escaped as PromQL reads strings.
pub fn matcher_text(name: &str, value: &str) -> String {
    let mut out = String::with_capacity(name.len() + value.len() + 3);
    out.push_str(name);
    out.push_str("=\"");
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// How long an acknowledgement lasts at most: it ends when its alert resolves, which is
/// what normally ends it; this only bounds one whose alert never does.
pub const ACKNOWLEDGEMENT_MAX_MS: i64 = 365 * 86_400_000;

/// An acknowledgement of the alert with `labels` (its `alertname` included): a silence
/// whose matchers are exactly those labels, until the alert resolves.
pub fn new_acknowledgement(
    labels: &BTreeMap<String, String>,
    created_by: String,
    comment: String,
    now: i64,
) -> Result<SilenceRow, String> {
    if !labels.contains_key("alertname") {
        return Err("an acknowledgement names its alert (alertname)".into());
    }
    if created_by.trim().is_empty() || comment.trim().is_empty() {
        return Err("createdBy and comment are required".into());
    }
    Ok(SilenceRow {
        id: 0,
        matchers: labels.iter().map(|(k, v)| matcher_text(k, v)).collect(),
        starts_at_ms: now,
        ends_at_ms: now + ACKNOWLEDGEMENT_MAX_MS,
        created_by,
        comment,
        created_at_ms: now,
        expired_at_ms: None,
        acknowledgement: true,
    })
}

/// The acknowledgements in effect at `now_ms` whose alert is no longer active (no label
/// set in `active` matches them): they end, so the next time it fires, it notifies.
pub fn acknowledgements_to_end(
    rows: &[SilenceRow],
    active: &[&BTreeMap<String, String>],
    now_ms: i64,
) -> Vec<i64> {
    let acks: Vec<SilenceRow> = rows.iter().filter(|r| r.acknowledgement).cloned().collect();
    active_silences(&acks, now_ms)
        .into_iter()
        .filter(|ack| {
            !active
                .iter()
                .any(|labels| silenced(std::slice::from_ref(ack), labels))
        })
        .map(|ack| ack.id)
        .collect()
}

/// A label map from pairs, for tests.
#[cfg(test)]
pub(crate) fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_acknowledgement_matches_its_alert_exactly_and_ends_when_it_resolves() {
        let web = labels(&[("alertname", "Down"), ("probe", "we\"b\\1")]);
        let mut ack =
            new_acknowledgement(&web, "alice".into(), "on it".into(), 1_000).expect("ack");
        ack.id = 7;
        assert!(ack.acknowledgement);
        let compiled = active_silences(std::slice::from_ref(&ack), 2_000);
        assert!(silenced(&compiled, &web), "escaped values still match");
        // The same alert with one more label is another alert.
        let other = labels(&[("alertname", "Down"), ("probe", "web"), ("host", "h")]);
        assert!(!silenced(&compiled, &other));
        assert_eq!(
            acknowledgements_to_end(&[ack.clone()], &[&web], 2_000),
            Vec::<i64>::new()
        );
        assert_eq!(
            acknowledgements_to_end(&[ack.clone()], &[&other], 2_000),
            [7]
        );
        // A plain silence is never ended this way.
        ack.acknowledgement = false;
        assert!(acknowledgements_to_end(&[ack], &[], 2_000).is_empty());
        assert!(
            new_acknowledgement(&labels(&[("probe", "x")]), "a".into(), "b".into(), 0).is_err()
        );
    }
}

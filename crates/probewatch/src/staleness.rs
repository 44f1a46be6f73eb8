//! Silence as a series: `probe_check_stale{probe,host,check}` is 1 while a check has sent
//! nothing for three of its expected intervals (declared, else learnt), written at every
//! sweep, and 0 once when it reports again. One generic rule then alerts on any silent
//! probe (`max by (probe, host) (probe_check_stale) == 1`) instead of one absence rule per
//! probe name; the dashboard's "stale" is the same test ([`CheckRow::is_silent`]).
//!
//! Only the server that evaluates the rules writes it (one writer for a cluster on one
//! store), from its rules thread ([`StaleSweep`]). Whether a check was silent before is read
//! back from the series itself at the first sweep after this server takes the lease (so a
//! restart or a change of evaluator never leaves a stale 1 behind), then carried from one
//! sweep to the next. The read goes to the store by metric name, not through PromQL's
//! series index: that index holds every series in memory, which a server that runs no
//! query should not pay for (700,000 series at 100,000 checks).

use std::collections::HashSet;
use std::time::Duration;

use anyhow::Context;
use probewatch_core::{Labels, SeriesSample};
use probewatch_store::{CheckRow, Store};

/// The series' name.
pub const STALE_METRIC: &str = "probe_check_stale";

/// How far back a 1 is looked for when deciding which checks recovered: well over one
/// sweep, so a recovery is seen even after a missed sweep or a restart.
const RECOVERY_LOOKBACK_MS: i64 = 15 * 60_000;

/// Checks a sweep reads and handles per write: at 100,000 checks, reading every check row
/// at once held ~24 MiB, and building every sample (and its label text) before writing
/// any ~20 MiB more.
const CHECKS_PER_WRITE: usize = 8_192;

/// The checks silent at the last sweep, by a hash of their canonical labels (8 bytes a check
/// instead of the text). Two checks sharing a hash cost at most one needless 0 sample for
/// the one that was not silent.
pub type SilentSet = HashSet<u64>;

/// A check's key in a [`SilentSet`]: a hash of its canonical labels, seeded per process.
pub fn silent_key(canonical: &str) -> u64 {
    use std::hash::BuildHasher;
    static SEED: std::sync::OnceLock<std::hash::RandomState> = std::sync::OnceLock::new();
    SEED.get_or_init(std::hash::RandomState::new)
        .hash_one(canonical)
}

/// One check's identity as the series labels it.
fn labels(row: &CheckRow) -> Option<Labels> {
    let mut pairs = vec![("probe", row.probe.as_str()), ("check", row.check.as_str())];
    if !row.host.is_empty() {
        pairs.push(("host", row.host.as_str()));
    }
    Labels::from_pairs(pairs).ok()
}

/// The samples of one sweep at `now_ms`: 1 for every silent check, 0 for every check in
/// `was_silent` that reports again. Returns them and how many are 1.
pub fn sweep_samples(
    checks: &[CheckRow],
    was_silent: &SilentSet,
    now_ms: i64,
) -> (Vec<SeriesSample>, usize) {
    let mut samples = Vec::new();
    let mut silent = 0;
    for row in checks {
        let Some(labels) = labels(row) else { continue };
        let canonical = labels.canonical();
        let value = if row.is_silent(now_ms) {
            silent += 1;
            1.0
        } else if was_silent.contains(&silent_key(&canonical)) {
            0.0
        } else {
            continue;
        };
        samples.push(SeriesSample {
            metric: STALE_METRIC.to_string(),
            labels: canonical,
            time_ms: now_ms,
            value,
        });
    }
    (samples, silent)
}

/// The checks whose newest `probe_check_stale` sample in the lookback is 1.
fn silent_before(store: &dyn Store, now_ms: i64) -> anyhow::Result<SilentSet> {
    let mut silent = SilentSet::new();
    store.last_values(
        STALE_METRIC,
        now_ms - RECOVERY_LOOKBACK_MS,
        now_ms,
        &mut |labels, value| {
            if value == 1.0 {
                silent.insert(silent_key(labels));
            }
        },
    )?;
    Ok(silent)
}

/// One sweep, from the checks silent at the last one (read from the store if unknown);
/// returns the checks silent now.
fn sweep(store: &dyn Store, was: Option<SilentSet>) -> anyhow::Result<SilentSet> {
    let now = crate::ingest::now_ms();
    let was = match was {
        Some(was) => was,
        None => silent_before(store, now).context("reading probe_check_stale")?,
    };
    let mut silent = SilentSet::new();
    let mut after = i64::MIN;
    loop {
        let part = store
            .checks_after(after, CHECKS_PER_WRITE)
            .context("reading the checks")?;
        let Some(last) = part.last() else { break };
        after = last.id;
        let (samples, _) = sweep_samples(&part, &was, now);
        if !samples.is_empty() {
            store
                .write_samples(&samples)
                .context("writing probe_check_stale")?;
        }
        silent.extend(
            samples
                .iter()
                .filter(|s| s.value == 1.0)
                .map(|s| silent_key(&s.labels)),
        );
    }
    Ok(silent)
}

/// The sweep's schedule, run by the rules thread before it evaluates: so only the server
/// that evaluates writes the series, never before the startup backlog is ingested (a
/// check whose results still wait in the spool is not silent), and every evaluation sees
/// a sweep at most one interval old.
#[derive(Debug)]
pub struct StaleSweep {
    every: Duration,
    last: Option<std::time::Instant>,
    failing: bool,
    /// The checks the last sweep wrote as silent; `None` until a sweep succeeds after this
    /// server took the lease.
    silent: Option<SilentSet>,
}

impl StaleSweep {
    /// Sweeps every `every` (kept within 1 s to 1 min: the series must be written well
    /// within PromQL's 5-minute lookback).
    pub fn new(every: Duration) -> StaleSweep {
        StaleSweep {
            every: every.clamp(Duration::from_secs(1), Duration::from_secs(60)),
            last: None,
            failing: false,
            silent: None,
        }
    }

    /// Forgets what the last sweep wrote: another server may have swept since (this one
    /// just took the lease), so the next sweep reads the series again.
    pub fn forget(&mut self) {
        self.silent = None;
    }

    /// Sweeps if one is due; a failure is said once, and its end too.
    pub fn run_if_due(&mut self, store: &dyn Store) {
        if self.last.is_some_and(|t| t.elapsed() < self.every) {
            return;
        }
        self.last = Some(std::time::Instant::now());
        match sweep(store, self.silent.take()) {
            Ok(silent) => {
                self.silent = Some(silent);
                if self.failing {
                    self.failing = false;
                    tracing::info!("probe_check_stale is written again");
                }
            }
            Err(err) if !self.failing => {
                self.failing = true;
                tracing::warn!(error = %format!("{err:#}"),
                    "cannot update probe_check_stale; trying again at the next sweep");
            }
            Err(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use probewatch_store::prelude::*;

    fn check(name: &str, host: &str, last_ms: i64, interval_ms: Option<i64>) -> CheckRow {
        CheckRow {
            probe: "web".into(),
            host: host.into(),
            check: name.into(),
            status: 0,
            time_ms: last_ms,
            duration_seconds: None,
            message: String::new(),
            interval_ms,
            usual_interval_ms: None,
            id: 1,
            status_since_ms: None,
        }
    }

    #[test]
    fn silent_checks_are_one_recovered_ones_zero_once_and_the_rest_nothing() {
        let now = 1_000_000;
        let checks = [
            // Three intervals and a bit without a result: silent.
            check("login", "h1", now - 31_000, Some(10_000)),
            // Exactly three intervals: one late result is not silence yet.
            check("search", "h1", now - 30_000, Some(10_000)),
            // No interval known: never silent.
            check("cart", "", now - 9_000_000, None),
            // Was silent, reports again.
            check("pay", "h2", now - 1_000, Some(10_000)),
        ];
        let was: SilentSet = [silent_key(&labels(&checks[3]).expect("labels").canonical())].into();
        let (samples, silent) = sweep_samples(&checks, &was, now);
        assert_eq!(silent, 1);
        let got: Vec<(&str, f64)> = samples
            .iter()
            .map(|s| (s.labels.as_str(), s.value))
            .collect();
        assert_eq!(
            got,
            [
                (r#"{check="login",host="h1",probe="web"}"#, 1.0),
                (r#"{check="pay",host="h2",probe="web"}"#, 0.0),
            ]
        );
        assert!(
            samples
                .iter()
                .all(|s| s.metric == STALE_METRIC && s.time_ms == now)
        );
    }

    /// After a restart (or a change of evaluator) the checks written silent are read back
    /// from the store: the newest sample in the lookback decides, so one that recovered
    /// (a 0 after its 1) and one whose 1 is older than the lookback are not silent.
    #[test]
    fn the_checks_silent_before_are_read_back_from_the_store() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = probewatch_store::SqliteStore::open(dir.path()).expect("open");
        let now = 10_000_000;
        let sample = |labels: &str, t: i64, v: f64| SeriesSample {
            metric: STALE_METRIC.into(),
            labels: labels.into(),
            time_ms: t,
            value: v,
        };
        let still = "{check=\"a\",probe=\"web\"}";
        let back = "{check=\"b\",probe=\"web\"}";
        let long_ago = "{check=\"c\",probe=\"web\"}";
        store
            .write_samples(&[
                sample(still, now - 120_000, 1.0),
                sample(still, now - 60_000, 1.0),
                sample(back, now - 120_000, 1.0),
                sample(back, now - 60_000, 0.0),
                sample(long_ago, now - RECOVERY_LOOKBACK_MS - 60_000, 1.0),
            ])
            .expect("write");
        let silent = silent_before(&store, now).expect("read");
        assert_eq!(silent, SilentSet::from([silent_key(still)]));
    }
}

//! Status intervals stay equal to the runs computed from scratch over every stored result,
//! whatever order results arrive in: in order, late, rewritten, across restarts and after
//! the migration that introduced them.

use std::collections::BTreeMap;

use probewatch_core::{CheckResult, ProbeResult, Status, TimeSource};
use probewatch_store::*;

mod common;
use common::Rng;

const INTERVAL_MS: i64 = 10_000;

fn item(file: u64, results: Vec<ProbeResult>) -> IngestItem {
    common::item(file, results, Vec::new())
}

fn result(check: &str, ts: i64, status: Status) -> ProbeResult {
    ProbeResult {
        probe: "web".into(),
        host: "h1".into(),
        time_ms: ts,
        time_source: TimeSource::Declared,
        interval_ms: Some(INTERVAL_MS),
        checks: vec![CheckResult {
            name: check.into(),
            status,
            duration_seconds: None,
            message: String::new(),
        }],
        metrics: Vec::new(),
    }
}

/// The runs, from the documented rules: a run ends at the next status's first result, or at
/// its own last result when a silence over 3 intervals follows.
fn expected(results: &BTreeMap<i64, u8>) -> Vec<StatusInterval> {
    let mut runs: Vec<StatusInterval> = Vec::new();
    for (&ts, &status) in results {
        let new = StatusInterval {
            start_ms: ts,
            end_ms: ts,
            status,
            results: 1,
        };
        match runs.last_mut() {
            Some(last) if ts - last.end_ms <= 3 * INTERVAL_MS => {
                last.end_ms = ts;
                if last.status == status {
                    last.results += 1;
                } else {
                    runs.push(new);
                }
            }
            _ => runs.push(new),
        }
    }
    runs
}

fn stored(store: &dyn Store, check: &str) -> (i64, Vec<StatusInterval>) {
    let row = store
        .find_check("web", "h1", check)
        .expect("find")
        .expect("check exists");
    let runs = store
        .check_intervals(&[row.id], i64::MIN, i64::MAX)
        .expect("intervals")
        .remove(0);
    (row.id, runs)
}

#[test]
fn intervals_match_a_rebuild_from_scratch_under_late_and_repeated_results() {
    for (i, seed) in [0x9e37_79b9_7f4a_7c15, 0x2545_f491_4f6c_dd1d, 42]
        .into_iter()
        .enumerate()
    {
        for backend in common::backends::backends(&format!("intervals_model_{i}")) {
            eprintln!("intervals model on {}, seed {seed}", backend.name());
            model_check(&backend, seed);
        }
    }
}

fn model_check(backend: &common::backends::Backend, seed: u64) {
    let statuses = [
        Status::Ok,
        Status::Warning,
        Status::Critical,
        Status::Unknown,
    ];
    let checks = ["login", "search"];
    let mut model: BTreeMap<&str, BTreeMap<i64, u8>> = BTreeMap::new();
    let mut rng = Rng(seed);
    let mut file = 0u64;
    let mut clock = 0i64;
    for round in 0..40 {
        let store = backend.open();
        for _ in 0..5 {
            let mut items = Vec::new();
            for _ in 0..=rng.below(6) {
                let check = checks[rng.below(2) as usize];
                // Mostly in order, sometimes late, sometimes after a long silence, sometimes
                // rewriting a stored time.
                let ts = match rng.below(10) {
                    0 | 2 => clock - (rng.below(20) as i64) * INTERVAL_MS,
                    3 => clock - (rng.below(200) as i64) * INTERVAL_MS / 3,
                    1 => {
                        clock += 10 * INTERVAL_MS;
                        clock
                    }
                    _ => {
                        clock += INTERVAL_MS;
                        clock
                    }
                };
                // Long runs of one status, with changes now and then.
                let status = if rng.below(4) == 0 {
                    statuses[rng.below(4) as usize]
                } else {
                    Status::Ok
                };
                model.entry(check).or_default().insert(ts, status.code());
                file += 1;
                items.push(item(file, vec![result(check, ts, status)]));
            }
            store.commit_batch(&items, false).expect("commit");
            // Sometimes the writer is idle and repairs some checks; reads repair the rest.
            if rng.below(3) == 0 {
                store.repair_intervals(1).expect("repair");
            }
        }
        for check in checks {
            let Some(results) = model.get(check) else {
                continue;
            };
            let (id, runs) = stored(&*store, check);
            assert_eq!(
                runs,
                expected(results),
                "seed {seed}, round {round}, check {check}"
            );
            // A window in the middle returns exactly the runs that overlap it.
            let (a, b) = (
                rng.below(clock.max(1) as u64) as i64,
                rng.below(clock.max(1) as u64) as i64,
            );
            let (from, to) = (a.min(b), a.max(b));
            let window = store
                .check_intervals(&[id], from, to)
                .expect("window")
                .remove(0);
            let want: Vec<StatusInterval> = expected(results)
                .into_iter()
                .filter(|r| r.start_ms <= to && r.end_ms >= from)
                .collect();
            assert_eq!(window, want, "round {round}, window {from}..{to}");
        }
    }
}

#[test]
fn the_usual_interval_is_learnt_when_the_probe_declares_none() {
    for backend in common::backends::backends("usual_interval") {
        usual_interval(&*backend.open());
    }
}

fn usual_interval(store: &dyn Store) {
    let mut items = Vec::new();
    for i in 0..20u64 {
        let mut r = result("login", 1_000_000 + i as i64 * 30_000, Status::Ok);
        r.interval_ms = None;
        items.push(item(i, vec![r]));
    }
    // One result per batch, as a live probe delivers them.
    for it in items {
        store.commit_batch(&[it], false).expect("commit");
    }
    let row = store
        .find_check("web", "h1", "login")
        .expect("find")
        .expect("exists");
    assert_eq!(row.interval_ms, None);
    assert_eq!(row.usual_interval_ms, Some(30_000));
    assert_eq!(row.expected_interval_ms(), Some(30_000));
}

#[test]
fn a_database_from_before_intervals_gets_them_built_on_open() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut results = BTreeMap::new();
    {
        let store = SqliteStore::open(dir.path()).expect("open");
        let statuses = [Status::Ok, Status::Ok, Status::Critical, Status::Ok];
        for i in 0..40u64 {
            let ts = 1_000_000 + i as i64 * INTERVAL_MS + if i > 30 { 100_000 } else { 0 };
            let status = statuses[(i / 5 % 4) as usize];
            results.insert(ts, status.code());
            store
                .commit_batch(&[item(i, vec![result("login", ts, status)])], false)
                .expect("commit");
        }
    }
    // Turn the file back into schema 6: no intervals, no usual interval.
    {
        let conn = rusqlite::Connection::open(dir.path().join(sqlite::DB_FILE)).expect("raw");
        conn.execute_batch(
            "DROP TABLE status_intervals; DROP TABLE intervals_dirty; DROP TABLE spool_stats;
             ALTER TABLE checks DROP COLUMN usual_interval_ms;
             ALTER TABLE checks DROP COLUMN run_start_ms; ALTER TABLE checks DROP COLUMN run_end_ms;
             ALTER TABLE checks DROP COLUMN run_status; ALTER TABLE checks DROP COLUMN run_results;
             ALTER TABLE check_results DROP COLUMN interval_ms;
             DROP INDEX notifications_lane; ALTER TABLE notifications DROP COLUMN failed_at_ms;
             ALTER TABLE silences DROP COLUMN acknowledgement;
             DROP TABLE head_blocks; DROP TABLE head_frozen;
             CREATE TABLE samples_head_0 (series_id INTEGER NOT NULL, ts_ms INTEGER NOT NULL,
                 value REAL, PRIMARY KEY (series_id, ts_ms)) WITHOUT ROWID;
             CREATE TABLE samples_head_1 (series_id INTEGER NOT NULL, ts_ms INTEGER NOT NULL,
                 value REAL, PRIMARY KEY (series_id, ts_ms)) WITHOUT ROWID;
             CREATE TABLE head_state (id INTEGER PRIMARY KEY, active INTEGER NOT NULL);
             INSERT INTO head_state VALUES (1, 0);
             PRAGMA user_version = 6;",
        )
        .expect("downgrade");
    }
    let store = SqliteStore::open(dir.path()).expect("reopen");
    let (_, runs) = stored(&store, "login");
    assert_eq!(runs, expected(&results));
    assert!(runs.len() > 3, "{runs:?}");
    let row = store
        .find_check("web", "h1", "login")
        .expect("find")
        .expect("row");
    // Learnt from the results: 10 s, nudged up a little by the one 110 s silence.
    let usual = row.usual_interval_ms.expect("learnt");
    assert!(
        (INTERVAL_MS..INTERVAL_MS + 1_000).contains(&usual),
        "{usual}"
    );
}

#[test]
fn a_probe_that_changes_pace_keeps_one_run_per_pace() {
    for backend in common::backends::backends("pace") {
        pace(&*backend.open());
    }
}

fn pace(store: &dyn Store) {
    // A day of history every 5 minutes, committed together with the first live results
    // every 3 s (as a backfill file and the first live files land in one batch).
    let mut items = Vec::new();
    let live_start = 86_400_000;
    for k in 0..288i64 {
        let mut r = result("login", k * 300_000, Status::Ok);
        r.interval_ms = Some(300_000);
        items.push(item(k as u64, vec![r]));
    }
    for k in 0..10i64 {
        let mut r = result("login", live_start + k * 3_000, Status::Ok);
        r.interval_ms = Some(3_000);
        items.push(item(1000 + k as u64, vec![r]));
    }
    store.commit_batch(&items, false).expect("commit");
    let (_, runs) = stored(store, "login");
    let spans: Vec<(i64, i64, u64)> = runs
        .iter()
        .map(|r| (r.start_ms, r.end_ms, r.results))
        .collect();
    // The history is one run (each result came within 3 of its own 5-minute interval);
    // the first live result declares 3 s, so the 5 minutes before it are a silence, and the
    // live results make a run of their own.
    assert_eq!(
        spans,
        vec![
            (0, 287 * 300_000, 288),
            (live_start, live_start + 27_000, 10)
        ]
    );
}

#[test]
fn a_late_result_early_in_a_long_stretch_of_one_status_is_repaired() {
    for backend in common::backends::backends("long_stretch") {
        long_stretch(&*backend.open());
    }
}

/// A late result changes the status early in a run of 3,000 results: repairing it reads the
/// whole run, more than a batched repair holds for one check on PostgreSQL (that check is
/// repaired through the database, by pages), beside a check with a short stretch (repaired
/// in the batch).
fn long_stretch(store: &dyn Store) {
    let mut model: BTreeMap<&str, BTreeMap<i64, u8>> = BTreeMap::new();
    let mut items = Vec::new();
    for k in 0..3_000i64 {
        let ts = 1_000_000 + k * INTERVAL_MS;
        let status = if k % 100 == 99 {
            Status::Critical
        } else {
            Status::Ok
        };
        for check in ["long", "short"] {
            let status = if check == "long" { Status::Ok } else { status };
            model.entry(check).or_default().insert(ts, status.code());
            items.push(item(items.len() as u64, vec![result(check, ts, status)]));
        }
    }
    store.commit_batch(&items, false).expect("commit");
    let late = 1_000_000 + 10 * INTERVAL_MS + INTERVAL_MS / 2;
    let mut items = Vec::new();
    for check in ["long", "short"] {
        model
            .entry(check)
            .or_default()
            .insert(late, Status::Critical.code());
        items.push(item(
            10_000 + items.len() as u64,
            vec![result(check, late, Status::Critical)],
        ));
    }
    store.commit_batch(&items, false).expect("commit late");
    assert!(store.repair_intervals(64).is_ok_and(|more| !more));
    for check in ["long", "short"] {
        let (_, runs) = stored(store, check);
        assert_eq!(runs, expected(&model[check]), "check {check}");
    }
    let (_, runs) = stored(store, "long");
    assert_eq!(runs.len(), 3, "ok, the late critical result, ok again");
}

//! One story through every `Store` method, on every back end (see `common/backends.rs`).

mod common;

use std::sync::Arc;

use probewatch_core::format::FileContext;
use probewatch_core::{Format, Labels, ParseLimits, Reject, RejectKind, parse};
use probewatch_store::*;

fn item(path: &str, hash: u8, xml: &str) -> IngestItem {
    let results = parse(
        Format::Xml,
        xml.as_bytes(),
        FileContext {
            mtime_ms: 0,
            name: "",
            mapping: None,
        },
        &ParseLimits::default(),
    )
    .expect("fixture parses");
    let extra = Labels::from_pairs([("env", "prod")]).expect("valid");
    let samples = results
        .iter()
        .flat_map(|r| r.series_samples(&extra))
        .collect();
    IngestItem {
        file: meta(path, hash),
        content: ItemContent::Parsed {
            results,
            samples,
            clock_skew: false,
        },
    }
}

fn meta(path: &str, hash: u8) -> FileMeta {
    FileMeta {
        spool: Arc::from("main"),
        path: path.as_bytes().to_vec(),
        size: 100,
        mtime_ns: 5,
        inode: 7,
        version_hash: [hash; 32],
    }
}

const A: &str = r#"<probe name="web" host="h1" time="1000" interval="60s">
  <check name="login" status="ok" duration="0.5">fine</check>
  <metric name="users" value="10"><label name="env" value="probe-said"/></metric>
  <metric name="ratio" value="NaN"/>
</probe>"#;

const B: &str = r#"<probe name="web" host="h1" time="1060">
  <check name="login" status="critical">down</check>
</probe>"#;

#[test]
fn store_story() {
    for backend in common::backends::backends("story") {
        eprintln!("store story on {}", backend.name());
        story(&backend);
    }
}

fn story(backend: &common::backends::Backend) {
    let store = backend.open();
    assert_eq!(store.stats().expect("stats"), Stats::default());
    assert_eq!(store.file_head(b"/s/a.xml").expect("head"), None);

    // A batch with a good file, a rejected file and the same good file again.
    let reject = IngestItem {
        file: meta("/s/bad.xml", 9),
        content: ItemContent::Rejected(Reject::new(RejectKind::Empty, "file is empty")),
    };
    let summary = store
        .commit_batch(
            &[item("/s/a.xml", 1, A), reject, item("/s/a.xml", 1, A)],
            false,
        )
        .expect("commit");
    assert!(matches!(summary.items[0], ItemResult::Stored { .. }));
    assert!(matches!(summary.items[1], ItemResult::Stored { .. }));
    assert_eq!(summary.items[2], ItemResult::Duplicate);
    assert_eq!(summary.samples, 4);

    // New bytes at the same path are a new result; the same bytes never count twice.
    let summary = store
        .commit_batch(&[item("/s/a.xml", 2, B), item("/s/a.xml", 1, A)], true)
        .expect("commit");
    assert!(matches!(summary.items[0], ItemResult::Stored { .. }));
    assert_eq!(summary.items[1], ItemResult::Duplicate);

    let stats = store.stats().expect("stats");
    assert_eq!(
        stats,
        Stats {
            files_ingested: 2,
            files_rejected: 1,
            check_results: 2,
            samples: 5,
            series: 4
        }
    );
    let head = store.file_head(b"/s/a.xml").expect("head").expect("known");
    assert_eq!(
        (head.size, head.mtime_ns, head.inode, head.outcome),
        (100, 5, 7, Outcome::Ingested)
    );

    let latest = store.latest_checks().expect("latest");
    assert_eq!(latest.len(), 1);
    assert_eq!(
        (
            latest[0].status,
            latest[0].time_ms,
            latest[0].message.as_str()
        ),
        (2, 1_060_000, "down")
    );
    assert_eq!(latest[0].interval_ms, Some(60_000));

    let history = store
        .check_history(&HistoryQuery {
            probe: "web".into(),
            check: "login".into(),
            host: None,
            from_ms: 0,
            to_ms: i64::MAX,
            limit: 100,
            newest_first: false,
        })
        .expect("history");
    assert_eq!(
        history.iter().map(|h| h.status).collect::<Vec<_>>(),
        vec![0, 2]
    );

    // Spool labels win; the probe's own value is kept as exported_<name>.
    let users = store.samples("users", 0, i64::MAX).expect("samples");
    assert_eq!(users.len(), 1);
    assert_eq!(
        users[0].labels,
        r#"{env="prod",exported_env="probe-said",host="h1",probe="web"}"#
    );
    let ratio = store.samples("ratio", 0, i64::MAX).expect("samples");
    assert!(
        ratio[0].samples[0].1.is_nan(),
        "NaN survives the round trip"
    );
    let status = store
        .samples("probe_check_status", 0, i64::MAX)
        .expect("samples");
    assert_eq!(status[0].samples, vec![(1_000_000, 0.0), (1_060_000, 2.0)]);

    let rejected = store.files(Some(Outcome::Rejected), 10).expect("files");
    assert_eq!(rejected.len(), 1);
    assert_eq!(rejected[0].error.as_deref(), Some("file is empty"));
    assert_eq!(store.files(None, 10).expect("files").len(), 3);

    // Reopen: everything is still there and the dedup still holds.
    drop(store);
    let store = backend.open();
    let summary = store
        .commit_batch(&[item("/s/a.xml", 2, B)], false)
        .expect("commit");
    assert_eq!(summary.items[0], ItemResult::Duplicate);

    // Retention: everything before t=1030s goes; ledger rows go only for files that are gone.
    let pruned = store
        .prune(1_030_000, &|path| path == b"/s/a.xml")
        .expect("prune");
    assert_eq!((pruned.samples, pruned.check_results), (4, 1));
    let pruned = store
        .prune(i64::MAX, &|path| path == b"/s/a.xml")
        .expect("prune");
    assert_eq!(pruned.files, 1, "only the vanished bad.xml row goes");
    let stats = store.stats().expect("stats");
    assert_eq!(
        (stats.samples, stats.check_results, stats.files_rejected),
        (0, 0, 0)
    );
    assert_eq!(store.file_head(b"/s/bad.xml").expect("head"), None);
    assert!(store.file_head(b"/s/a.xml").expect("head").is_some());
    // The per-spool counts kept by ingest and retention equal a count of the ledger.
    let mut counted: std::collections::BTreeMap<String, (u64, u64)> = Default::default();
    for f in store.files(None, 1_000).expect("files") {
        let entry = counted.entry(f.spool).or_default();
        match f.outcome {
            Outcome::Ingested => entry.0 += 1,
            Outcome::Rejected => entry.1 += 1,
        }
    }
    let counted: Vec<(String, u64, u64)> = counted
        .into_iter()
        .filter(|(_, (i, r))| i + r > 0)
        .map(|(s, (i, r))| (s, i, r))
        .collect();
    assert!(!counted.is_empty());
    assert_eq!(store.spool_counts().expect("counts"), counted);
    // Old batch rows went too (the ingest page's rate shows none of their files), but the
    // newest stays, so batch ids keep increasing.
    let activity = store.ingest_activity(0, 10).expect("activity");
    assert_eq!(activity.minutes.iter().map(|m| m.1).sum::<u64>(), 0);
    let newest = summary.batch_id;
    drop(store);
    let store = backend.open();
    let summary = store
        .commit_batch(&[item("/s/c.xml", 3, B)], false)
        .expect("commit");
    assert!(
        summary.batch_id > newest,
        "{} after {newest}",
        summary.batch_id
    );
}

/// The notification outbox: each receiver's lane sees its own due notifications; an
/// attempt delivers, reschedules, or fails one for good, and a failed one is never due again.
#[test]
fn outbox_lanes_retries_and_permanent_failures() {
    for backend in common::backends::backends("outbox") {
        eprintln!("outbox on {}", backend.name());
        outbox(&*backend.open());
    }
}

fn outbox(store: &dyn Store) {
    // Alert state is written by the holder of the evaluator's lease (always this process on
    // SQLite).
    assert!(store.acquire_lease("me", 60_000).expect("lease").is_some());
    let note = |receiver: &str, group: &str| NewNotification {
        receiver: receiver.into(),
        payload: "{}".into(),
        created_at_ms: 1_000,
        group_key: group.into(),
        group_wait_ms: 0,
        group_interval_ms: 0,
    };
    store
        .save_alerts(&[AlertUpdate {
            rule_key: "group\0rule\0index".into(),
            notifications: vec![note("a", "g1"), note("b", "g1"), note("a", "g2")],
            ..AlertUpdate::default()
        }])
        .expect("save");
    let due = |receiver: Option<&str>, now: i64| -> Vec<i64> {
        store
            .due_notifications(receiver, now, 100)
            .expect("due")
            .iter()
            .map(|n| n.id)
            .collect()
    };
    let a = due(Some("a"), 2_000);
    assert_eq!(a.len(), 2);
    assert_eq!(due(Some("b"), 2_000).len(), 1);
    assert_eq!(due(None, 2_000).len(), 3);
    assert!(due(Some("nobody"), 2_000).is_empty());

    store
        .record_attempt(a[0], 2_000, "POST: 503", AttemptOutcome::RetryAt(5_000))
        .expect("retry");
    store
        .record_attempt(
            a[1],
            2_000,
            "POST: 404 no such hook",
            AttemptOutcome::Failed,
        )
        .expect("fail");
    assert!(due(Some("a"), 4_999).is_empty());
    assert_eq!(due(Some("a"), 5_000), [a[0]]);
    assert!(
        !due(Some("a"), i64::MAX).contains(&a[1]),
        "a failed notification is never due again"
    );
    store
        .record_attempt(a[0], 5_000, "POST: 200", AttemptOutcome::Delivered)
        .expect("deliver");
    assert!(due(Some("a"), i64::MAX).is_empty());

    let rows = store.notifications(10).expect("list");
    let failed = rows.iter().find(|n| n.id == a[1]).expect("failed row");
    assert_eq!(
        (failed.failed_at_ms, failed.delivered_at_ms, failed.attempts),
        (Some(2_000), None, 1)
    );
    assert_eq!(failed.last_error.as_deref(), Some("POST: 404 no such hook"));
    let delivered = rows.iter().find(|n| n.id == a[0]).expect("delivered row");
    assert_eq!(
        (delivered.delivered_at_ms, delivered.attempts),
        (Some(5_000), 2)
    );
    let attempts = store.attempts(a[0]).expect("attempts");
    assert_eq!(attempts.len(), 2);
}

/// Silences and acknowledgements: both kept with who and why; an acknowledgement says it is
/// one; expiring ends each once, and both stay in the list afterwards.
#[test]
fn silences_and_acknowledgements_are_kept_and_expired_once() {
    for backend in common::backends::backends("silences") {
        eprintln!("silences on {}", backend.name());
        silences(&*backend.open());
    }
}

fn silences(store: &dyn Store) {
    let row = |ack: bool, comment: &str| probewatch_store::SilenceRow {
        id: 0,
        matchers: vec!["alertname=\"CheckCritical\"".into(), "probe=\"web\"".into()],
        starts_at_ms: 1_000,
        ends_at_ms: 1_000_000,
        created_by: "alice".into(),
        comment: comment.into(),
        created_at_ms: 1_000,
        expired_at_ms: None,
        acknowledgement: ack,
    };
    let silence = store.add_silence(&row(false, "deploy")).expect("silence");
    let ack = store.add_silence(&row(true, "on it")).expect("ack");
    let listed = store.silences().expect("list");
    assert_eq!(listed.len(), 2);
    let find = |id| listed.iter().find(|s| s.id == id).expect("listed");
    assert!(!find(silence).acknowledgement);
    assert!(find(ack).acknowledgement);
    assert_eq!(find(ack).comment, "on it");
    assert!(find(ack).active_at(2_000));
    assert!(
        store
            .expire_silence(ack, 5_000, "resolved")
            .expect("expire")
    );
    assert!(
        !store.expire_silence(ack, 6_000, "resolved").expect("again"),
        "once"
    );
    let listed = store.silences().expect("list");
    let ack_row = listed.iter().find(|s| s.id == ack).expect("kept");
    assert_eq!(ack_row.expired_at_ms, Some(5_000));
    assert!(!ack_row.active_at(5_000));
    assert!(
        listed
            .iter()
            .find(|s| s.id == silence)
            .expect("kept")
            .active_at(5_000)
    );
}

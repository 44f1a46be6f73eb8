//! Several servers, one rule evaluator: the lease, its epochs and fencing, on every back end
//! (SQLite has one process, which always leads), and notification claims between servers.

mod common;

use std::time::Duration;

use common::backends::{Backend, backends};
use probewatch_store::postgres::PgStore;
use probewatch_store::*;

fn update(rule: &str) -> AlertUpdate {
    AlertUpdate {
        rule_key: format!("g\0{rule}\00"),
        notifications: vec![NewNotification {
            receiver: "hook".into(),
            payload: "{}".into(),
            created_at_ms: 1_000,
            group_key: rule.into(),
            group_wait_ms: 0,
            group_interval_ms: 0,
        }],
        ..AlertUpdate::default()
    }
}

#[test]
fn sqlite_has_one_member_that_always_leads() {
    for backend in backends("sqlite_member") {
        let Backend::Sqlite(_) = backend else {
            continue;
        };
        let store = backend.open();
        assert_eq!(store.acquire_lease("a", 1_000).expect("lease"), Some(1));
        assert_eq!(store.acquire_lease("b", 1_000).expect("lease"), Some(1));
        store
            .heartbeat(&InstanceBeat {
                id: "a".into(),
                address: "127.0.0.1:9180".into(),
                version: "0.1.0".into(),
                started_at_ms: 5,
            })
            .expect("beat");
        let status = store.cluster(60_000).expect("cluster");
        assert_eq!(status.backend, "sqlite");
        assert_eq!(status.leader.as_deref(), Some("a"));
        assert_eq!(status.instances.len(), 1);
        store.save_alerts(&[update("r")]).expect("saved");
    }
}

#[test]
fn one_leader_at_a_time_and_a_former_leader_writes_nothing() {
    for backend in backends("lease") {
        let Some(url) = backend.postgres_url() else {
            continue;
        };
        let a = PgStore::open(url, None).expect("a");
        let b = PgStore::open(url, None).expect("b");
        // Nobody leads yet: a write without the lease is refused.
        assert!(matches!(
            a.save_alerts(&[update("r0")]),
            Err(StoreError::Fenced(_))
        ));
        let first = a.acquire_lease("a", 400).expect("a takes").expect("free");
        assert_eq!(
            b.acquire_lease("b", 400).expect("b asks"),
            None,
            "a holds it"
        );
        // Renewing keeps the epoch.
        assert_eq!(a.acquire_lease("a", 400).expect("renew"), Some(first));
        a.save_alerts(&[update("r1")]).expect("the leader writes");
        let status = b.cluster(60_000).expect("status");
        assert_eq!((status.leader.as_deref(), status.epoch), (Some("a"), first));
        assert!(status.lease_left_ms.is_some_and(|l| l > 0 && l <= 400));

        // a stops renewing (paused); its lease lapses and b takes over with a new epoch.
        std::thread::sleep(Duration::from_millis(600));
        let second = b
            .acquire_lease("b", 60_000)
            .expect("b takes")
            .expect("lapsed");
        assert!(second > first);
        // a wakes up and writes as if it still led: refused, nothing saved.
        match a.save_alerts(&[update("r2")]) {
            Err(StoreError::Fenced(msg)) => assert!(msg.contains("no longer held"), "{msg}"),
            other => panic!("expected Fenced, got {other:?}"),
        }
        assert_eq!(a.acquire_lease("a", 400).expect("a asks"), None);
        b.save_alerts(&[update("r3")])
            .expect("the new leader writes");
        let keys: Vec<String> = b
            .notifications(10)
            .expect("outbox")
            .into_iter()
            .map(|n| n.group_key)
            .collect();
        assert_eq!(keys, ["r3", "r1"], "r0 and r2 were never written");

        // A clean stop hands over at once.
        b.release_lease("b").expect("release");
        let third = a
            .acquire_lease("a", 60_000)
            .expect("a takes")
            .expect("released");
        assert!(third > second);
    }
}

#[test]
fn a_notification_is_claimed_by_one_servers_lane() {
    for backend in backends("claims") {
        let Some(url) = backend.postgres_url() else {
            continue;
        };
        let a = PgStore::open(url, None).expect("a");
        let b = PgStore::open(url, None).expect("b");
        a.acquire_lease("a", 60_000).expect("lease");
        a.save_alerts(&[update("x"), update("y")]).expect("save");
        let got_a = a.due_notifications(Some("hook"), 2_000, 10).expect("a");
        let got_b = b.due_notifications(Some("hook"), 2_000, 10).expect("b");
        assert_eq!((got_a.len(), got_b.len()), (2, 0), "a's lane claimed both");
        // a fails to deliver one and reschedules it: the claim ends with the attempt.
        a.record_attempt(
            got_a[0].id,
            2_000,
            "POST: 503",
            AttemptOutcome::RetryAt(3_000),
        )
        .expect("retry");
        let retry = b.due_notifications(Some("hook"), 3_000, 10).expect("b");
        assert_eq!(
            retry.iter().map(|n| n.id).collect::<Vec<_>>(),
            [got_a[0].id]
        );
        // a dies holding the other: after the claim lapses, another lane sends it.
        let later = 2_000 + 61_000;
        let lapsed = b.due_notifications(Some("hook"), later, 10).expect("b");
        assert!(lapsed.iter().any(|n| n.id == got_a[1].id), "{lapsed:?}");
    }
}

#[test]
fn retention_forgets_servers_gone_for_a_day() {
    for backend in backends("instances") {
        let Some(url) = backend.postgres_url() else {
            continue;
        };
        let store = PgStore::open(url, None).expect("open");
        for id in ["old", "new"] {
            store
                .heartbeat(&InstanceBeat {
                    id: id.into(),
                    address: "127.0.0.1:9180".into(),
                    version: "0.1.0".into(),
                    started_at_ms: 0,
                })
                .expect("beat");
        }
        let mut db = ::postgres::Client::connect(url, ::postgres::NoTls).expect("db");
        db.execute(
            "UPDATE instances SET heartbeat_at = now() - interval '2 days' WHERE id = 'old'",
            &[],
        )
        .expect("age");
        assert_eq!(
            store.cluster(i64::MAX / 2).expect("status").instances.len(),
            2
        );
        store.prune(0, &|_: &[u8]| true).expect("prune");
        let left: Vec<String> = store
            .cluster(i64::MAX / 2)
            .expect("status")
            .instances
            .into_iter()
            .map(|i| i.beat.id)
            .collect();
        assert_eq!(left, ["new"]);
    }
}

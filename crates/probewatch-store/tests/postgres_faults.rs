//! What the PostgreSQL back end says when it cannot be used: one clear sentence per cause,
//! never the password, and a retryable error only where retrying can help.

use probewatch_store::postgres::{PgStore, redact_url};
use probewatch_store::{LedgerStore, StoreError};
use probewatch_testpg::TestPostgres;

fn refused(result: Result<PgStore, StoreError>) -> String {
    match result {
        Err(StoreError::Refused(msg)) => msg,
        Err(other) => panic!("expected Refused, got {other:?}"),
        Ok(store) => panic!("expected Refused, opened {store:?}"),
    }
}

#[test]
fn each_fault_gets_its_own_sentence() {
    let Some(pg) = TestPostgres::start() else {
        return;
    };
    let port = pg.port();
    pg.create_database("app");
    pg.add_password_user("probewatch", "right-secret");

    // Wrong password: refused for good, and the password is in no message.
    let msg = refused(PgStore::open(
        &format!("postgres://probewatch:wrong-secret@127.0.0.1:{port}/app"),
        None,
    ));
    assert!(msg.contains("refused user \"probewatch\""), "{msg}");
    assert!(
        msg.contains(&format!("postgres://probewatch@127.0.0.1:{port}/app")),
        "{msg}"
    );
    assert!(!msg.contains("wrong-secret"), "{msg}");
    // The password given apart from the URL (from a file or the environment) wins.
    let store = PgStore::open(
        &format!("postgres://probewatch:wrong-secret@127.0.0.1:{port}/app"),
        Some("right-secret"),
    )
    .expect("the separate password is used");
    assert!(!format!("{store:?}").contains("secret"));
    store
        .stats()
        .expect("reachable with the password given apart");
    drop(store);

    // No such database.
    let msg = refused(PgStore::open(&pg.url("missing"), None));
    assert!(msg.contains("has no database \"missing\""), "{msg}");
    assert!(msg.contains("createdb"), "{msg}");

    // Nothing listening: worth retrying.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    match PgStore::open(
        &format!("postgres://probewatch:right-secret@127.0.0.1:{closed}/app"),
        None,
    ) {
        Err(StoreError::Unreachable(msg)) => {
            assert!(msg.contains(&format!("127.0.0.1:{closed}")), "{msg}");
            assert!(!msg.contains("right-secret"), "{msg}");
        }
        other => panic!("expected Unreachable, got {other:?}"),
    }

    // A schema written by a newer probewatch.
    PgStore::open(&pg.url("app"), None).expect("migrates");
    pg.psql(
        "app",
        "INSERT INTO probewatch_schema (version) VALUES (999)",
    );
    match PgStore::open(&pg.url("app"), None) {
        Err(StoreError::SchemaTooNew { found: 999, .. }) => {}
        other => panic!("expected SchemaTooNew, got {other:?}"),
    }

    // A read-only standby.
    let standby = pg.start_standby();
    let msg = refused(PgStore::open(&standby.url("postgres"), None));
    assert!(msg.contains("read-only standby"), "{msg}");
}

#[test]
fn urls_are_shown_without_their_password() {
    assert_eq!(
        redact_url("postgres://pw:s3cret@db.example:6432/probes?sslmode=disable"),
        "postgres://pw@db.example:6432/probes"
    );
    assert_eq!(
        redact_url("host=db1 user=pw password=s3cret dbname=probes"),
        "postgres://pw@db1:5432/probes"
    );
    assert!(!redact_url("postgres://pw:s3cret@[::1/").contains("s3cret"));
}

/// A reader that asks first after the server went away learns it within a moment, not
/// after the pool's whole wait for a connection (3 s: it began waiting while the server
/// was thought to be there); later readers learn it at once; and the store comes back by
/// itself when the server does.
#[test]
fn the_first_read_after_the_database_stops_fails_within_a_moment() {
    let Some(pg) = TestPostgres::start() else {
        return;
    };
    let store = PgStore::open(&pg.url("postgres"), None).expect("open");
    store.stats().expect("reachable");
    pg.stop();
    // Past the idle time after which a pooled connection is checked before use.
    std::thread::sleep(std::time::Duration::from_millis(600));
    for asked in ["first", "second"] {
        let started = std::time::Instant::now();
        match store.stats() {
            Err(StoreError::Unreachable(msg)) => {
                assert!(msg.contains(&format!("127.0.0.1:{}", pg.port())), "{msg}")
            }
            other => panic!("expected Unreachable, got {other:?}"),
        }
        assert!(
            started.elapsed() < std::time::Duration::from_millis(1_500),
            "the {asked} read waited {:?}",
            started.elapsed()
        );
    }
    pg.restart();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while store.stats().is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "the store did not come back"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

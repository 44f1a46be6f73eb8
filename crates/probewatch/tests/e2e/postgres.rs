//! `probewatch run` on a PostgreSQL store (a server the test starts itself): ingest and the
//! APIs work as on SQLite; PostgreSQL down at start is waited for; restarted under ingest,
//! nothing is lost or doubled, readiness says why while it is away.

use std::time::Duration;

use probewatch_testpg::TestPostgres;

use crate::exactly_once::ledger_of;
use crate::util::*;

fn pg_store(url: &str) -> std::sync::Arc<dyn probewatch_store::Store> {
    probewatch_store::open_store(
        &probewatch_store::StoreLocation::Postgres(url.to_string()),
        &probewatch_store::StoreOptions::default(),
    )
    .expect("open the PostgreSQL store")
}

#[test]
fn a_server_on_postgresql_survives_the_database_restarting_under_ingest() {
    let Some(pg) = TestPostgres::start() else {
        return;
    };
    let url = pg.create_database("probewatch");
    let env = Env::new();
    for n in 0..100u64 {
        std::fs::write(env.spool().join(format!("a{n:04}.xml")), result_xml(n)).expect("write");
    }
    let daemon = env.start(&["--store", &url]);
    assert!(
        daemon.log().contains(&format!("store            {url}")),
        "{}",
        daemon.log()
    );
    daemon.wait_files(100, Duration::from_secs(60));
    let checks = daemon.get("/api/v1/checks");
    assert!(
        checks.to_string().contains("login"),
        "checks listed from PostgreSQL: {checks}"
    );
    // The files are stamped from 1,700,000,000 s on, one a second.
    let up = daemon.get("/api/v1/query?query=count(probe_check_status)&time=1700000099");
    assert_eq!(up["status"], "success", "{up}");
    assert!(
        up["data"]["result"][0]["value"][1]
            .as_str()
            .is_some_and(|v| v == "7"),
        "{up}"
    );

    // The database goes away; probes keep writing.
    pg.stop();
    for n in 100..200u64 {
        std::fs::write(env.spool().join(format!("b{n:04}.xml")), result_xml(n)).expect("write");
    }
    daemon.wait_until(
        "readiness to report the store",
        Duration::from_secs(60),
        |d| {
            let r = reqwest::blocking::get(format!("{}/-/ready", d.base));
            r.is_ok_and(|r| r.status() == 503)
        },
    );
    let body = reqwest::blocking::get(format!("{}/-/ready", daemon.base))
        .and_then(|r| r.text())
        .unwrap_or_default();
    assert!(body.contains("PostgreSQL"), "{body}");
    assert!(!body.contains("password"), "{body}");

    // It comes back: everything written meanwhile is stored, once.
    pg.restart();
    daemon.wait_files(200, Duration::from_secs(90));
    daemon.wait_until("readiness", Duration::from_secs(30), |d| {
        reqwest::blocking::get(format!("{}/-/ready", d.base)).is_ok_and(|r| r.status() == 200)
    });
    let stats = daemon.stats();
    assert_eq!(stats["files_ingested"], 200, "{}", daemon.log());
    assert_eq!(stats["samples"], 200 * SAMPLES_PER_FILE);
    daemon.stop();
    assert_eq!(
        ledger_of(&*pg_store(&url)),
        (200, 200, 200 * SAMPLES_PER_FILE)
    );
}

#[test]
fn postgresql_down_at_start_is_waited_for_and_a_wrong_password_is_not() {
    let Some(pg) = TestPostgres::start() else {
        return;
    };
    let url = pg.create_database("probewatch");
    pg.add_password_user("pw", "right-secret");
    let env = Env::new();
    std::fs::write(env.spool().join("a.xml"), result_xml(1)).expect("write");

    // A wrong password is refused at once, with the reason and without the password.
    let out = std::process::Command::new(BIN)
        .args(["run", "--listen", "127.0.0.1:0", "--data"])
        .arg(env.data())
        .arg("--spool")
        .arg(env.spool())
        .args([
            "--store",
            &format!("postgres://pw@127.0.0.1:{}/probewatch", pg.port()),
        ])
        .env("PROBEWATCH_STORE_PASSWORD", "wrong-secret")
        .output()
        .expect("run");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("refused user \"pw\""), "{stderr}");
    assert!(!stderr.contains("secret"), "{stderr}");

    // Down at start: the daemon waits, says so, and starts when the database is back.
    pg.stop();
    let restarter = {
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_secs(3));
            pg.restart();
            pg
        })
    };
    let daemon = env.start(&["--store", &url]);
    let _pg = restarter.join().expect("restart");
    assert!(daemon.log().contains("retrying"), "{}", daemon.log());
    daemon.wait_files(1, Duration::from_secs(60));
    daemon.stop();
}

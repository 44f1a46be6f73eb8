//! `probewatch run` on a PostgreSQL store (a server the test starts itself): ingest and the
//! APIs work as on SQLite; PostgreSQL down at start is waited for; restarted under ingest,
//! nothing is lost or doubled, readiness says why while it is away.

use std::time::{Duration, Instant};

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
    let env = Env::without_postgres();
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

    // A scrape reads the outbox from the store (the first one aborted the process when its
    // collectors ran on the HTTP server's threads: the PostgreSQL client blocks on a runtime).
    let scrape = daemon.get_text("/metrics");
    assert!(
        scrape.contains("# TYPE probewatch_notifications_queued gauge"),
        "{scrape}"
    );
    assert!(daemon.get("/api/v1/checks").to_string().contains("login"));

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
    assert!(
        !body.contains("Unreachable("),
        "a sentence, not a debug dump: {body}"
    );
    // A page says so in HTML (and reloads itself) at once: the pool knows the server is
    // unreachable and holds no connection, so it does not wait its 3 s for one (it waited
    // 3 s, and 6 s before that; and 3 s again in one run in six under the whole suite,
    // while the pool's attempts had met only a server shutting down, which it counted as
    // busy); the query API as Prometheus would.
    let asked = Instant::now();
    let page = reqwest::blocking::get(format!("{}/", daemon.base)).expect("overview");
    assert_eq!(page.status(), 503);
    assert!(
        asked.elapsed() < Duration::from_secs(2),
        "{:?}",
        asked.elapsed()
    );
    let html = page.text().unwrap_or_default();
    assert!(
        html.contains("The store is unreachable") && html.contains("http-equiv=\"refresh\""),
        "{html}"
    );
    let query = reqwest::blocking::get(format!(
        "{}/api/v1/query?query=probe_check_status",
        daemon.base
    ))
    .expect("query");
    assert_eq!(query.status(), 503);
    let answer: serde_json::Value = query.json().expect("json");
    assert_eq!(answer["errorType"], "unavailable", "{answer}");

    // It comes back: everything written meanwhile is stored, once. (The first requests may
    // still find no connection while the pool reconnects: the daemon recovers by itself.)
    pg.restart();
    daemon.wait_until(
        "200 files after the restart",
        Duration::from_secs(90),
        |d| {
            d.try_stats()
                .is_some_and(|s| s["files_ingested"].as_u64() >= Some(200))
        },
    );
    daemon.wait_until("readiness", Duration::from_secs(30), |d| {
        reqwest::blocking::get(format!("{}/-/ready", d.base)).is_ok_and(|r| r.status() == 200)
    });
    let stats = daemon.stats();
    assert_eq!(stats["files_ingested"], 200, "{}", daemon.log());
    assert_eq!(ledger_of(&*pg_store(&url)).2, 200 * SAMPLES_PER_FILE);
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
    let env = Env::without_postgres();
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

/// Two servers on one database, each with its own spool (two hosts), one webhook.
struct Fleet {
    envs: [Env; 2],
    config: [String; 2],
}

impl Fleet {
    fn new(url: &str, hook: &Webhook) -> Fleet {
        let envs = [Env::without_postgres(), Env::without_postgres()];
        let rules = envs[0].dir.path().join("rules.yml");
        std::fs::write(
            &rules,
            "groups:\n  - name: fleet\n    interval: 500ms\n    rules:\n      - alert: LoginCritical\n        expr: probe_check_status{check=\"login\"} == 2\n        for: 5s\n",
        )
        .expect("rules");
        let config = [0, 1].map(|i| {
            format!(
                "store = {url:?}\nleader_lease = \"2s\"\nrule_files = [{:?}]\n\
                 [[receiver]]\nname = \"ops\"\nurl = {:?}\n\
                 [[route]]\nreceiver = \"ops\"\ngroup_by = [\"alertname\", \"probe\"]\n\
                 group_wait = \"0s\"\n[[spool]]\npath = {:?}\n",
                rules.display().to_string(),
                hook.url,
                envs[i].spool().display().to_string()
            )
        });
        Fleet { envs, config }
    }

    fn start(&self, i: usize) -> Daemon {
        self.envs[i].start_with_config(&self.config[i])
    }

    /// Until `stop`, every half second: a failing login of probe p0 on host h0 into the
    /// first server's spool, and of p1 on h1 into the second's.
    fn write_failing_logins(
        &self,
        stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    ) -> std::thread::JoinHandle<()> {
        let spools = [self.envs[0].spool(), self.envs[1].spool()];
        std::thread::spawn(move || {
            let mut n = 0;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                for (i, spool) in spools.iter().enumerate() {
                    let xml = format!(
                        "<probe name=\"p{i}\" host=\"h{i}\" time=\"{}\">\n  <check name=\"login\" status=\"critical\">down</check>\n</probe>\n",
                        epoch_secs()
                    );
                    write_renamed(&spool.join(format!("r{n:05}.xml")), &xml);
                }
                n += 1;
                std::thread::sleep(Duration::from_millis(500));
            }
        })
    }
}

/// Writes files `{prefix}{n:04}.xml` of [`recent_result_xml`] for every `n` of `range`.
fn write_recent_results(env: &Env, prefix: &str, range: std::ops::Range<u64>) {
    for n in range {
        std::fs::write(
            env.spool().join(format!("{prefix}{n:04}.xml")),
            recent_result_xml(n),
        )
        .expect("write");
    }
}

/// A route that silently drops every packet this host sends to 127.0.0.2 while it lives:
/// a database host gone from the network without closing its connections (a failed
/// primary's machine, a cut link), which neither a stopped server nor a killed one is.
struct Blackhole;

impl Blackhole {
    const ROUTE: [&'static str; 4] = ["blackhole", "127.0.0.2/32", "table", "local"];

    fn ip_route(verb: &str) -> bool {
        std::process::Command::new("ip")
            .args(["route", verb])
            .args(Self::ROUTE)
            .output()
            .is_ok_and(|out| out.status.success())
    }

    /// None (and the test says SKIPPED) where routes cannot be changed (no `ip`, no
    /// CAP_NET_ADMIN).
    fn start() -> Option<Blackhole> {
        // A run killed before its Drop left the route: take it away first.
        Self::ip_route("del");
        if Self::ip_route("add") {
            Some(Blackhole)
        } else {
            eprintln!("SKIPPED: cannot add a blackhole route (needs `ip` and CAP_NET_ADMIN)");
            None
        }
    }
}

impl Drop for Blackhole {
    fn drop(&mut self) {
        Self::ip_route("del");
    }
}

#[test]
fn a_database_gone_from_the_network_is_noticed_by_the_writer_and_nothing_is_lost() {
    let Some(pg) = TestPostgres::start() else {
        return;
    };
    pg.create_database("probewatch");
    // No TCP settings in the URL: the store's own defaults are what is tested.
    let url = pg.url_via_second_address("probewatch");
    let env = Env::without_postgres();
    let daemon = env.start(&["--store", &url]);
    write_recent_results(&env, "a", 0..20);
    daemon.wait_files(20, Duration::from_secs(60));

    let Some(cut) = Blackhole::start() else {
        return;
    };
    let since = Instant::now();
    write_recent_results(&env, "b", 20..40);
    // The writer's commit waits on a connection whose packets go nowhere. With the kernel's
    // defaults it would wait ~15 minutes (readiness saying only "stalled" after one);
    // the store's TCP timeouts fail it within about a minute, and the writer says so.
    daemon.wait_until(
        "the writer to see its commit fail",
        Duration::from_secs(75),
        |d| d.log().contains("committing ingest batch failed"),
    );
    eprintln!("the writer saw the cut after {:?}", since.elapsed());
    // Readiness says so too (its own read may wait for a connection that went dead).
    daemon.wait_until(
        "readiness to say commits fail",
        Duration::from_secs(120),
        |d| {
            reqwest::blocking::Client::builder()
                .timeout(Duration::from_secs(60))
                .build()
                .and_then(|c| c.get(format!("{}/-/ready", d.base)).send())
                .and_then(|r| r.text())
                .is_ok_and(|body| body.contains("commits fail"))
        },
    );
    drop(cut);
    daemon.wait_until(
        "40 files once the route is back",
        Duration::from_secs(90),
        |d| {
            d.try_stats()
                .is_some_and(|s| s["files_ingested"].as_u64() >= Some(40))
        },
    );
    let log = daemon.stop();
    assert!(
        log.contains("cannot open a connection to the store") && log.contains("127.0.0.2"),
        "the pool's failures are logged with the server they concern:\n{log}"
    );
    // The only server: whatever it says of its lease, not that another holds it.
    assert!(!log.contains("another server holds the lease"), "{log}");
    assert_eq!(
        ledger_of(&*pg_store(&pg.url("probewatch"))),
        (40, 40, 40 * SAMPLES_PER_FILE)
    );
}

#[test]
fn a_promoted_standby_takes_over_and_every_acknowledged_file_is_on_it() {
    let Some(primary) = TestPostgres::start() else {
        return;
    };
    primary.create_database("probewatch");
    let standby = primary.start_standby();
    // A commit waits for the standby (docs/scaling.md): a batch whose files were deleted is
    // on both servers.
    primary.psql(
        "postgres",
        "ALTER SYSTEM SET synchronous_standby_names = '*'",
    );
    primary.psql("postgres", "SELECT pg_reload_conf()");
    // Both servers, the writable one wanted: the driver tries them in order.
    let url = format!(
        "postgres://postgres@127.0.0.1:{},127.0.0.1:{}/probewatch?target_session_attrs=read-write",
        primary.port(),
        standby.port()
    );
    let env = Env::without_postgres();
    let daemon = env.start_with_config(&format!(
        "store = {url:?}\n[[spool]]\npath = {:?}\nafter_ingest = \"delete\"\n",
        env.spool().display().to_string()
    ));
    let spool_empty = |env: &Env| {
        std::fs::read_dir(env.spool()).is_ok_and(|mut entries| entries.next().is_none())
    };
    write_recent_results(&env, "a", 0..50);
    daemon.wait_files(50, Duration::from_secs(60));
    daemon.wait_until("the first files deleted", Duration::from_secs(30), |_| {
        spool_empty(&env)
    });

    // The primary is lost; probes keep writing; the standby is promoted a moment later.
    primary.stop();
    write_recent_results(&env, "b", 50..100);
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        !spool_empty(&env),
        "nothing is acknowledged while no server takes writes"
    );
    standby.promote();
    daemon.wait_until(
        "100 files on the promoted standby",
        Duration::from_secs(90),
        |d| {
            d.try_stats()
                .is_some_and(|s| s["files_ingested"].as_u64() >= Some(100))
        },
    );
    daemon.wait_until("every file deleted", Duration::from_secs(30), |_| {
        spool_empty(&env)
    });
    daemon.stop();
    assert_eq!(
        ledger_of(&*pg_store(&standby.url("probewatch"))),
        (100, 100, 100 * SAMPLES_PER_FILE)
    );
}

#[test]
fn a_table_locked_by_another_session_is_named_as_why_commits_fail_and_ingest_resumes() {
    let Some(pg) = TestPostgres::start() else {
        return;
    };
    let url = pg.create_database("probewatch");
    let env = Env::without_postgres();
    let daemon = env.start(&["--store", &url]);
    write_recent_results(&env, "a", 0..10);
    daemon.wait_files(10, Duration::from_secs(60));

    // Another session holds the check states' table (a LOCK TABLE, a VACUUM FULL).
    let mut holder = pg.psql_in_background(
        "probewatch",
        &[
            "BEGIN",
            "LOCK TABLE checks IN ACCESS EXCLUSIVE MODE",
            "SELECT pg_sleep(600)",
        ],
    );
    let locked = "SELECT count(*) FROM pg_locks WHERE relation = 'checks'::regclass \
                  AND mode = 'AccessExclusiveLock' AND granted";
    let since = Instant::now();
    while pg.psql("probewatch", locked) != "1" {
        assert!(
            since.elapsed() < Duration::from_secs(30),
            "the lock was not taken"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    write_recent_results(&env, "b", 10..20);
    // Readiness says why: the commit waited for a lock past the store's lock_timeout (20 s),
    // rather than "stalled" after a minute with no reason.
    daemon.wait_until("readiness to name the lock", Duration::from_secs(60), |d| {
        reqwest::blocking::get(format!("{}/-/ready", d.base))
            .and_then(|r| r.text())
            .is_ok_and(|body| body.contains("commits fail") && body.contains("lock timeout"))
    });
    pg.psql(
        "postgres",
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE query LIKE 'SELECT pg_sleep(600)%'",
    );
    let _ = holder.kill();
    let _ = holder.wait();
    daemon.wait_files(20, Duration::from_secs(60));
    daemon.wait_until("readiness", Duration::from_secs(30), |d| {
        reqwest::blocking::get(format!("{}/-/ready", d.base)).is_ok_and(|r| r.status() == 200)
    });
    daemon.stop();
    assert_eq!(ledger_of(&*pg_store(&url)), (20, 20, 20 * SAMPLES_PER_FILE));
}

/// The instance that holds the lease, as `daemon` reports the cluster.
fn leader_address(daemon: &Daemon) -> Option<String> {
    let status = daemon.get("/api/v1/status/cluster");
    status["data"]["instances"]
        .as_array()?
        .iter()
        .find(|i| i["leader"] == true)
        .and_then(|i| i["address"].as_str().map(String::from))
}

fn address(daemon: &Daemon) -> String {
    daemon.base.trim_start_matches("http://").to_string()
}

/// Waits until the servers elect a leader; returns (the leader's index, the other's), as
/// the first server reports it.
fn roles(daemons: [&Daemon; 2]) -> (usize, usize) {
    daemons[0].wait_until("a leader", Duration::from_secs(30), |d| {
        leader_address(d).is_some()
    });
    if leader_address(daemons[0]) == Some(address(daemons[0])) {
        (0, 1)
    } else {
        (1, 0)
    }
}

#[test]
fn a_killed_leader_is_replaced_and_each_state_change_is_notified_once() {
    let Some(pg) = TestPostgres::start() else {
        return;
    };
    let url = pg.create_database("probewatch");
    let hook = Webhook::start(0);
    let fleet = Fleet::new(&url, &hook);
    let mut daemons = [Some(fleet.start(0)), Some(fleet.start(1))];
    // Both see one leader, one of them.
    let (lead, follow) = {
        let running = [0, 1].map(|i| daemons[i].as_ref().expect("running"));
        let (lead, follow) = roles(running);
        assert_eq!(
            leader_address(running[follow]),
            Some(address(running[lead]))
        );
        (lead, follow)
    };

    // Results through either server: a failing login on each host, every half second.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = fleet.write_failing_logins(stop.clone());
    // Both alerts pending, as the follower shows from the store.
    let pending = |d: &Daemon| -> Vec<(String, String)> {
        d.get("/api/v1/alerts")["data"]["alerts"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter(|x| x["state"] == "pending")
                    .map(|x| {
                        (
                            x["labels"]["probe"].as_str().unwrap_or("").to_string(),
                            x["activeAt"].as_str().unwrap_or("").to_string(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    };
    let follower = daemons[follow].as_ref().expect("follower");
    // Generous under a loaded CI machine (the PostgreSQL pass of CI timed out once at 30 s
    // with only the follower's log to show); on failure both servers say what they did.
    let deadline = Instant::now() + Duration::from_secs(90);
    while pending(follower).len() != 2 {
        assert!(
            Instant::now() < deadline,
            "timed out waiting for two pending alerts on the follower;\nleader's log:\n{}\nfollower's log:\n{}",
            daemons[lead].as_ref().map(Daemon::log).unwrap_or_default(),
            follower.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let mut active_at = pending(follower);
    active_at.sort();
    // Two of the five pending seconds pass; a new leader that started pending over would
    // fire at least five seconds after it took over.
    std::thread::sleep(Duration::from_secs(2));

    // kill -9 the leader while the alerts are pending.
    let killed = Instant::now();
    daemons[lead].take().expect("leader").kill9();
    let survivor = daemons[follow].as_ref().expect("survivor");
    survivor.wait_until("the survivor to lead", Duration::from_secs(30), |d| {
        leader_address(d) == Some(address(d))
    });
    // Within one lease (2 s) and one evaluation interval (0.5 s), with room for a loaded CI.
    assert!(
        killed.elapsed() < Duration::from_secs(10),
        "{:?}",
        killed.elapsed()
    );
    let took_over = jiff::Timestamp::now();

    // Both fire, with the pending time kept (the same activeAt), each notified once.
    let got = hook.wait_for(2, Duration::from_secs(60));
    std::thread::sleep(Duration::from_secs(3));
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    writer.join().expect("writer");
    let got = if hook.received().len() > got.len() {
        hook.received()
    } else {
        got
    };
    let mut firing: Vec<(String, String)> = Vec::new();
    let mut keys = std::collections::HashSet::new();
    for body in &got {
        let key = body["idempotencyKey"]
            .as_str()
            .expect("an idempotency key")
            .to_string();
        assert!(
            keys.insert(key.clone()),
            "key {key} delivered twice: {got:?}"
        );
        for a in body["alerts"].as_array().into_iter().flatten() {
            assert_eq!(a["status"], "firing", "{body}");
            firing.push((
                a["labels"]["probe"].as_str().unwrap_or("").to_string(),
                a["startsAt"].as_str().unwrap_or("").to_string(),
            ));
        }
    }
    firing.sort();
    assert_eq!(
        firing.iter().map(|f| f.0.as_str()).collect::<Vec<_>>(),
        ["p0", "p1"],
        "each alert fired once: {got:?}"
    );
    for ((probe, starts), (pending_probe, pending_at)) in firing.iter().zip(&active_at) {
        assert_eq!(probe, pending_probe);
        let (s, p) = (
            starts.parse::<jiff::Timestamp>().expect("startsAt"),
            pending_at.parse::<jiff::Timestamp>().expect("activeAt"),
        );
        // Fired (startsAt, as Prometheus sends it) once pending for 5 s counted from the
        // first leader's activeAt: at the first evaluation after that, or right after the
        // takeover if that came later.
        let due = std::cmp::max(p + jiff::SignedDuration::from_secs(5), took_over);
        assert!(
            s >= p + jiff::SignedDuration::from_secs(5)
                && s <= due + jiff::SignedDuration::from_millis(1_500),
            "{probe}: fired at {starts}, pending since {pending_at}, new leader at {took_over}: \
             the pending time must be kept"
        );
    }
}

/// Notified (probe, startsAt) pairs and their keys; fails on a key delivered twice.
fn notified(hook: &Webhook) -> Vec<String> {
    let mut keys = std::collections::HashSet::new();
    let mut probes = Vec::new();
    for body in hook.received() {
        let key = body["idempotencyKey"].as_str().expect("a key").to_string();
        assert!(keys.insert(key.clone()), "key {key} delivered twice");
        for a in body["alerts"].as_array().into_iter().flatten() {
            probes.push(format!(
                "{} {}",
                a["labels"]["probe"].as_str().unwrap_or(""),
                a["status"].as_str().unwrap_or("")
            ));
        }
    }
    probes.sort();
    probes
}

#[test]
fn a_paused_leader_writes_nothing_and_ended_sessions_leave_one_leader() {
    let Some(pg) = TestPostgres::start() else {
        return;
    };
    let url = pg.create_database("probewatch");
    let hook = Webhook::start(0);
    let fleet = Fleet::new(&url, &hook);
    let daemons = [fleet.start(0), fleet.start(1)];
    let (lead, follow) = roles([&daemons[0], &daemons[1]]);

    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = fleet.write_failing_logins(stop.clone());
    // The leader evaluates and stores the alerts; the follower shows them from the store.
    // Generous under a loaded CI machine (one run timed out at 30 s with only the
    // follower's log to show), and on failure both servers say what they did.
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    while daemons[follow].get("/api/v1/alerts")["data"]["alerts"]
        .as_array()
        .is_none_or(|a| a.len() != 2)
    {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for two pending alerts on the follower;\nleader's log:\n{}\nfollower's log:\n{}",
            daemons[lead].log(),
            daemons[follow].log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    // The leader freezes (SIGSTOP) for well past its 2 s lease: the other server leads,
    // and the alerts fire from there.
    daemons[lead].sigstop();
    daemons[follow].wait_until("the other server to lead", Duration::from_secs(30), |d| {
        leader_address(d) == Some(address(d))
    });
    hook.wait_for(2, Duration::from_secs(60));
    std::thread::sleep(Duration::from_secs(2));
    // It wakes up believing nothing changed: whatever it was about to write is refused,
    // it sees it does not lead, and nothing is notified again.
    daemons[lead].sigcont();
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(
        leader_address(&daemons[lead]),
        Some(address(&daemons[follow])),
        "the woken server follows"
    );
    assert_eq!(
        notified(&hook),
        ["p0 firing", "p1 firing"],
        "{:?}",
        hook.received()
    );
    let woken = daemons[lead].log();
    assert!(
        woken.contains("another server took over") || woken.contains("stepping down"),
        "{woken}"
    );

    // The database ends every session of the current leader: it reconnects, and there is
    // still exactly one leader, with nothing notified twice.
    let pid = daemons[follow].child.id();
    pg.psql(
        "postgres",
        &format!(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
             WHERE application_name = 'probewatch/{pid}'"
        ),
    );
    std::thread::sleep(Duration::from_secs(4));
    let seen: Vec<Option<String>> = daemons.iter().map(leader_address).collect();
    assert!(
        seen[0].is_some() && seen[0] == seen[1],
        "one leader, seen alike: {seen:?}"
    );
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    writer.join().expect("writer");
    assert_eq!(
        notified(&hook),
        ["p0 firing", "p1 firing"],
        "{:?}",
        hook.received()
    );
}

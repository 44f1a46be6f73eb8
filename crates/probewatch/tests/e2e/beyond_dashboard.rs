//! Beyond the dashboard: the public status page and badges, and the CLI for a running
//! daemon.

use std::time::Duration;

use crate::util::{Env, Webhook, result_at};

#[test]
fn a_public_status_page_and_badges_show_their_groups_and_nothing_private() {
    let env = Env::new();
    let password_file = env.dir.path().join("ui-password");
    std::fs::write(&password_file, "correct horse\n").expect("password");
    let daemon = env.start_with_config(&format!(
        "[access]\nusername = \"ops\"\npassword_file = {:?}\n\
         [status_page]\ntitle = \"Example services\"\n\
         [[status_page.group]]\nname = \"Website\"\nmatchers = ['probe=\"web\"']\n\
         [[status_page.group]]\nname = \"API\"\nmatchers = ['probe=\"api\"']\n\
         [[status_page.announcement]]\ntext = \"Planned work on Sunday\"\n\
         [[status_page.announcement]]\ntext = \"An old notice\"\nuntil = \"2020-01-01T00:00:00Z\"\n\
         [[spool]]\npath = {:?}\n",
        password_file.display().to_string(),
        env.spool().display().to_string()
    ));
    let now = crate::util::epoch_secs();
    for (i, (probe, status)) in [
        ("web", "ok"),
        ("api", "critical"),
        ("secret-db", "critical"),
    ]
    .iter()
    .enumerate()
    {
        // Two results each: uptime is a share of time, which one result alone does not span.
        for at in [now - 120, now - 60] {
            crate::util::write_renamed(
                &env.spool().join(format!("r{i}-{at}.xml")),
                &result_at(probe, "h1", at, "1h", &[("reach", status)]),
            );
        }
    }
    daemon.wait_until("six files", Duration::from_secs(30), |d| {
        d.get_json_as("ops", "correct horse", "/api/v1/stats")["files_ingested"] == 6
    });
    let client = reqwest::blocking::Client::new();
    let get = |path: &str| {
        let r = client
            .get(format!("{}{path}", daemon.base))
            .send()
            .expect("GET");
        let status = r.status().as_u16();
        let kind = r
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        (status, kind, r.text().unwrap_or_default())
    };
    // No login for the status page, its badges and its stylesheet.
    let (status, _, page) = get("/status");
    assert_eq!(status, 200, "{page}");
    for needle in [
        "Example services",
        "Website",
        "operational",
        "API",
        "outage",
        "Planned work on Sunday",
        "Some services are down",
    ] {
        assert!(page.contains(needle), "{needle} in:\n{page}");
    }
    assert!(
        !page.contains("An old notice"),
        "an expired announcement is gone"
    );
    assert!(
        !page.contains("secret"),
        "nothing outside the groups: {page}"
    );
    assert_eq!(page.matches("</rect>").count(), 2 * 90, "90 days per group");
    assert_eq!(get("/static/app.css").0, 200);
    let (status, kind, svg) = get("/badge/Website/status.svg");
    assert_eq!((status, kind.as_str()), (200, "image/svg+xml"));
    assert!(
        svg.contains("operational") && svg.starts_with("<svg"),
        "{svg}"
    );
    let (_, _, svg) = get("/badge/API/uptime.svg?window=7d");
    assert!(svg.contains("uptime 7d") && svg.contains("0.00%"), "{svg}");
    assert_eq!(get("/badge/API/uptime.svg?window=1y").0, 400);
    // Nothing else is public: no badge for a check outside the groups, and the rest
    // still needs the login.
    assert_eq!(get("/badge/secret-db/status.svg").0, 404);
    assert_eq!(get("/badge/Website/anything.svg").0, 404);
    assert_eq!(get("/").0, 401);
    assert_eq!(get("/api/v1/checks").0, 401);
    assert_eq!(get("/static/app.js").0, 401);
    daemon.stop();
}

/// The status page and the pages' time zone follow a configuration reload: no restart.
#[test]
fn the_status_page_and_time_zone_change_on_reload() {
    let env = Env::new();
    let spool = env.spool().display().to_string();
    let daemon = env.start_with_config(&format!("[[spool]]\npath = {spool:?}\n"));
    let status_of = |path: &str| {
        reqwest::blocking::get(format!("{}{path}", daemon.base))
            .expect("GET")
            .status()
            .as_u16()
    };
    assert_eq!(status_of("/status"), 404, "no status page configured yet");
    assert!(
        daemon
            .get_text("/graph?expr=up")
            .contains("data-zone=\"UTC\"")
    );
    std::fs::write(
        env.dir.path().join("probewatch.toml"),
        format!(
            "time_zone = \"Asia/Tokyo\"\n[status_page]\ntitle = \"Reloaded services\"\n\
             [[status_page.group]]\nname = \"Website\"\nmatchers = ['probe=\"web\"']\n\
             [[spool]]\npath = {spool:?}\n"
        ),
    )
    .expect("config");
    let answer = reqwest::blocking::Client::new()
        .post(format!("{}/-/reload", daemon.base))
        .send()
        .expect("reload");
    assert_eq!(answer.status().as_u16(), 200, "{:?}", answer.text());
    let page = daemon.get_text("/status");
    assert!(
        page.contains("Reloaded services") && page.contains("Website"),
        "{page}"
    );
    assert_eq!(status_of("/badge/Website/status.svg"), 200);
    assert!(
        daemon
            .get_text("/graph?expr=up")
            .contains("data-zone=\"Asia/Tokyo\""),
        "the pages' zone changed"
    );
    daemon.stop();
}

#[test]
fn the_cli_reads_a_running_daemon_and_silences_through_it() {
    let env = Env::new();
    let hook = Webhook::start(0);
    let rules = env.dir.path().join("critical.yml");
    std::fs::write(
        &rules,
        "groups:\n  - name: checks\n    rules:\n      - alert: CheckCritical\n        \
         expr: probe_check_status == 2\n        annotations:\n          summary: login down\n",
    )
    .expect("rules");
    let daemon = crate::util::start_with_rules(&env, &hook, &rules, "api_token = \"t0ken\"");
    let now = crate::util::epoch_secs();
    crate::util::write_renamed(
        &env.spool().join("web.xml"),
        &result_at(
            "web",
            "h1",
            now,
            "1h",
            &[("login", "critical"), ("search", "ok")],
        ),
    );
    daemon.wait_until("firing", Duration::from_secs(30), |d| {
        d.get("/api/v1/alerts")["data"]["alerts"][0]["state"] == "firing"
    });
    let base = daemon.base.clone();
    let cli = |args: &[&str], token: Option<&str>| {
        let mut command = std::process::Command::new(crate::util::BIN);
        command.args(args).args(["--server", &base]);
        command.env_remove("PROBEWATCH_API_TOKEN");
        if let Some(t) = token {
            command.env("PROBEWATCH_API_TOKEN", t);
        }
        let out = command.output().expect("run the CLI");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, out, err) = cli(&["status"], None);
    assert_eq!(code, Some(0), "{out}{err}");
    for needle in [
        "ready",
        "2: 1 critical, 1 ok",
        "critical  web h1 login",
        "1 firing",
        "ops (webhook)",
    ] {
        assert!(out.contains(needle), "{needle} in:\n{out}");
    }
    let (code, out, _) = cli(&["alerts", "probe=\"web\""], None);
    assert_eq!(code, Some(0));
    assert!(
        out.contains("firing") && out.contains("CheckCritical") && out.contains("login down"),
        "{out}"
    );
    let (_, out, _) = cli(&["alerts", "probe=\"nope\""], None);
    assert!(out.is_empty(), "{out}");

    let add = [
        "silence",
        "add",
        "-m",
        "probe=\"web\"",
        "--duration",
        "1h",
        "--comment",
        "deploy",
    ];
    // Errors exit 2, as every probewatch command's do.
    let (code, _, err) = cli(&add, None);
    assert_eq!(code, Some(2));
    assert!(err.contains("401"), "without the token: {err}");
    let (code, out, err) = cli(&add, Some("t0ken"));
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("silence 1 created"), "{out}");
    let (_, out, _) = cli(&["silence", "list"], None);
    assert!(
        out.contains("active") && out.contains("probe=\"web\"") && out.contains("deploy"),
        "{out}"
    );
    let (code, out, _) = cli(&["silence", "expire", "1"], Some("t0ken"));
    assert_eq!((code, out.trim()), (Some(0), "silence 1 expired"));
    let (code, _, _) = cli(&["silence", "expire", "1"], Some("t0ken"));
    assert_eq!(code, Some(1), "already expired");
    daemon.stop();
    // An unreachable server is an error that says so.
    let (code, _, err) = cli(&["status"], None);
    assert_eq!(code, Some(2));
    assert!(err.contains("cannot reach"), "{err}");
}

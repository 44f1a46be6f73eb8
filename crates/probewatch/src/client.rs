//! A client for a running daemon's HTTP API, as amtool is for Alertmanager: `probewatch
//! status`, `probewatch alerts` and `probewatch silence … --server URL`. It works from any
//! machine that reaches the server, with the API token (`PROBEWATCH_API_TOKEN` or
//! `--token-file`) or an `[access]` login (`--user`, password from `PROBEWATCH_PASSWORD`).

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;
use serde_json::{Value, json};

/// Where the daemon is and how to prove who we are.
#[derive(Debug, Args, Clone, Default)]
pub struct ServerArgs {
    /// The daemon's base URL, e.g. http://monitor:9180.
    #[arg(long, env = "PROBEWATCH_SERVER", value_name = "URL")]
    pub server: Option<String>,
    /// A file holding the API token (else PROBEWATCH_API_TOKEN).
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<std::path::PathBuf>,
    /// Log in as this [access] user (password from PROBEWATCH_PASSWORD) instead of a token.
    #[arg(long)]
    pub user: Option<String>,
}

/// A connection to one daemon.
pub struct Client {
    base: String,
    http: reqwest::blocking::Client,
    token: Option<String>,
    user: Option<(String, String)>,
}

impl Client {
    /// A client for `args.server`, with whatever credentials were given.
    pub fn new(args: &ServerArgs) -> anyhow::Result<Client> {
        let Some(server) = &args.server else {
            bail!("give --server URL (or PROBEWATCH_SERVER)");
        };
        let token = match &args.token_file {
            Some(path) => Some(
                std::fs::read_to_string(path)
                    .with_context(|| format!("reading the token file {}", path.display()))?
                    .trim()
                    .to_string(),
            ),
            None => std::env::var("PROBEWATCH_API_TOKEN").ok(),
        }
        .filter(|t| !t.is_empty());
        let user = match &args.user {
            Some(name) => Some((
                name.clone(),
                std::env::var("PROBEWATCH_PASSWORD")
                    .context("--user needs the password in PROBEWATCH_PASSWORD")?,
            )),
            None => None,
        };
        Ok(Client {
            base: server.trim_end_matches('/').to_string(),
            http: reqwest::blocking::Client::builder()
                .timeout(Duration::from_secs(30))
                .user_agent(probewatch_alerting::notify::USER_AGENT)
                .build()?,
            token,
            user,
        })
    }

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::blocking::RequestBuilder {
        let request = self.http.request(method, format!("{}{path}", self.base));
        match (&self.user, &self.token) {
            (Some((user, password)), _) => request.basic_auth(user, Some(password)),
            (None, Some(token)) => request.bearer_auth(token),
            (None, None) => request,
        }
    }

    /// Sends a request and reads its JSON answer; an error answer becomes an error that
    /// says what the server said.
    fn call(
        &self,
        request: reqwest::blocking::RequestBuilder,
        what: &str,
    ) -> anyhow::Result<Value> {
        let response = request
            .send()
            .with_context(|| format!("{what}: cannot reach {}", self.base))?;
        let status = response.status();
        let body: Value = response.json().unwrap_or(Value::Null);
        if !status.is_success() {
            let said = body["error"].as_str().unwrap_or("no reason given");
            bail!("{what}: the server answered {status}: {said}");
        }
        Ok(body)
    }

    fn get(&self, path: &str) -> anyhow::Result<Value> {
        self.call(
            self.request(reqwest::Method::GET, path),
            &format!("GET {path}"),
        )
    }
}

/// `probewatch status`: is the server ready, what is wrong, what fires, are notifications
/// going out. Exit 1 when the server is unreachable or not ready.
pub fn status(args: &ServerArgs) -> anyhow::Result<ExitCode> {
    let client = Client::new(args)?;
    let ready = client
        .request(reqwest::Method::GET, "/-/ready")
        .send()
        .with_context(|| format!("cannot reach {}", client.base))?;
    let ready_ok = ready.status().is_success();
    let ready_text = ready.text().unwrap_or_default();
    println!(
        "server     {}  {}",
        client.base,
        if ready_ok { "ready" } else { "NOT READY" }
    );
    if !ready_ok {
        for line in ready_text.lines().filter(|l| !l.trim().is_empty()) {
            println!("           {line}");
        }
    }
    let checks = client.get("/api/v1/checks")?;
    let checks = checks["checks"].as_array().cloned().unwrap_or_default();
    let mut counts: std::collections::BTreeMap<String, usize> = Default::default();
    for c in &checks {
        *counts
            .entry(c["state"].as_str().unwrap_or("?").to_string())
            .or_default() += 1;
    }
    let order = [
        "critical",
        "warning",
        "unknown",
        "stale",
        "offline",
        "maintenance",
        "ok",
    ];
    let summary: Vec<String> = order
        .iter()
        .filter_map(|s| counts.get(*s).map(|n| format!("{n} {s}")))
        .collect();
    println!("checks     {}: {}", checks.len(), summary.join(", "));
    let mut problems: Vec<&Value> = checks
        .iter()
        .filter(|c| !matches!(c["state"].as_str(), Some("ok" | "maintenance")))
        .collect();
    let rank = |c: &Value| order.iter().position(|s| Some(*s) == c["state"].as_str());
    problems.sort_by(|a, b| {
        rank(a)
            .cmp(&rank(b))
            .then_with(|| b["since_ms"].as_i64().cmp(&a["since_ms"].as_i64()))
    });
    let now = crate::ingest::now_ms();
    for c in problems.iter().take(20) {
        let since = c["since_ms"].as_i64().unwrap_or(now);
        println!(
            "  {:<9} {} {} {}  for {}  {}",
            c["state"].as_str().unwrap_or(""),
            c["probe"].as_str().unwrap_or(""),
            c["host"].as_str().unwrap_or(""),
            c["check"].as_str().unwrap_or(""),
            humantime::format_duration(Duration::from_secs(
                u64::try_from((now - since).max(0) / 1000).unwrap_or(0)
            )),
            c["message"]
                .as_str()
                .unwrap_or("")
                .lines()
                .next()
                .unwrap_or("")
        );
    }
    if problems.len() > 20 {
        println!("  … and {} more", problems.len() - 20);
    }
    let alerts = client.get("/api/v1/alerts")?;
    let alerts = alerts["data"]["alerts"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let firing = alerts.iter().filter(|a| a["state"] == "firing").count();
    println!(
        "alerts     {firing} firing, {} pending",
        alerts.len() - firing
    );
    let receivers = client.get("/api/v1/receivers")?;
    let receivers: Vec<String> = receivers["data"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| {
            format!(
                "{} ({}): {} attempts, {} failed",
                r["name"].as_str().unwrap_or(""),
                r["kind"].as_str().unwrap_or(""),
                r["attempts"],
                r["failed"]
            )
        })
        .collect();
    println!(
        "receivers  {}",
        if receivers.is_empty() {
            "none configured".to_string()
        } else {
            receivers.join("; ")
        }
    );
    Ok(if ready_ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// `probewatch alerts [MATCHER…]`: the active alerts (only those every matcher matches),
/// one per line.
pub fn alerts(args: &ServerArgs, matchers: &[String]) -> anyhow::Result<ExitCode> {
    let filter =
        probewatch_alerting::silence::parse_matchers(matchers).map_err(anyhow::Error::msg)?;
    let wanted = [probewatch_alerting::silence::Silence {
        id: 0,
        matchers: filter,
        spare: None,
    }];
    let client = Client::new(args)?;
    let body = client.get("/api/v1/alerts")?;
    for a in body["data"]["alerts"].as_array().into_iter().flatten() {
        let labels: std::collections::BTreeMap<String, String> =
            serde_json::from_value(a["labels"].clone()).unwrap_or_default();
        if !matchers.is_empty() && !probewatch_alerting::silence::silenced(&wanted, &labels) {
            continue;
        }
        let name = labels.get("alertname").cloned().unwrap_or_default();
        let rest: Vec<String> = labels
            .iter()
            .filter(|(k, _)| *k != "alertname")
            .map(|(k, v)| probewatch_alerting::silence::matcher_text(k, v))
            .collect();
        println!(
            "{:<8} {:<24} since {}  {}  {}",
            a["state"].as_str().unwrap_or(""),
            name,
            a["activeAt"].as_str().unwrap_or(""),
            rest.join(","),
            a["annotations"]["summary"].as_str().unwrap_or("")
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `probewatch silence add … --server URL`.
pub fn silence_add(
    args: &ServerArgs,
    matchers: &[String],
    duration: Option<&str>,
    start: Option<&str>,
    end: Option<&str>,
    author: &str,
    comment: &str,
) -> anyhow::Result<i64> {
    let client = Client::new(args)?;
    let mut body = json!({"matchers": matchers, "createdBy": author, "comment": comment});
    for (key, value) in [("duration", duration), ("startsAt", start), ("endsAt", end)] {
        if let Some(v) = value {
            body[key] = json!(v);
        }
    }
    let answer = client.call(
        client
            .request(reqwest::Method::POST, "/api/v1/silences")
            .json(&body),
        "creating the silence",
    )?;
    answer["data"]["silenceID"]
        .as_i64()
        .context("the server's answer has no silenceID")
}

/// `probewatch silence list --server URL`: the server's silences, as the store lists them.
pub fn silence_list(args: &ServerArgs) -> anyhow::Result<()> {
    let client = Client::new(args)?;
    let body = client.get("/api/v1/silences")?;
    for s in body["data"].as_array().into_iter().flatten() {
        let matchers: Vec<&str> = s["matchers"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        println!(
            "{:>5}  {:<8} {} -> {}  {}  by {}: {}",
            s["id"],
            s["status"].as_str().unwrap_or(""),
            s["startsAt"].as_str().unwrap_or(""),
            s["endsAt"].as_str().unwrap_or(""),
            matchers.join(", "),
            s["createdBy"].as_str().unwrap_or(""),
            s["comment"].as_str().unwrap_or("")
        );
    }
    Ok(())
}

/// `probewatch silence expire ID --server URL`; false when the server had no such silence
/// in effect.
pub fn silence_expire(args: &ServerArgs, id: i64) -> anyhow::Result<bool> {
    let client = Client::new(args)?;
    let response = client
        .request(reqwest::Method::DELETE, &format!("/api/v1/silences/{id}"))
        .send()
        .with_context(|| format!("cannot reach {}", client.base))?;
    if response.status() == reqwest::StatusCode::NOT_FOUND {
        return Ok(false);
    }
    let status = response.status();
    if !status.is_success() {
        let body: Value = response.json().unwrap_or(Value::Null);
        bail!(
            "expiring silence {id}: the server answered {status}: {}",
            body["error"].as_str().unwrap_or("no reason given")
        );
    }
    Ok(true)
}

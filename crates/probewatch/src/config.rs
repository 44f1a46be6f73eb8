//! Configuration: the TOML file as written ([`ConfigFile`]) and the validated, resolved
//! settings the daemon runs on ([`Config`]).
//!
//! Every setting has a default, so `probewatch run` with no file at all works: spool
//! `./spool`, data `./probewatch-data`, HTTP on `127.0.0.1:9180`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use probewatch_core::{Format, Labels};
use probewatch_watch::{DEFAULT_EXCLUDE, Filter, WatchMode};
use serde::Deserialize;

/// An example configuration with every setting, printed by `probewatch config example`.
pub const EXAMPLE: &str = include_str!("../../../examples/probewatch.toml");

/// The largest result file accepted unless `max_file_bytes` says otherwise (`run`, `check`).
pub const DEFAULT_MAX_FILE_BYTES: u64 = 8 * 1024 * 1024;

/// The config file, as written. Durations are humantime strings ("90d", "5ms").
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    /// Where the database lives.
    pub data_dir: Option<PathBuf>,
    /// The store: `postgres://user@host:port/database` for a central PostgreSQL, or
    /// `sqlite:DIR`; by default SQLite in `data_dir`.
    pub store: Option<String>,
    /// A file holding the PostgreSQL password (first line), so it is in neither the URL nor
    /// the config file. `PROBEWATCH_STORE_PASSWORD` also works.
    pub store_password_file: Option<PathBuf>,
    /// HTTP listen address.
    pub listen: Option<String>,
    /// How long samples, check results and ledger rows of vanished files are kept.
    pub retention: Option<String>,
    /// How often retention runs (first run after a minute, or sooner if this is shorter).
    pub prune_interval: Option<String>,
    /// Largest result file accepted, in bytes.
    pub max_file_bytes: Option<u64>,
    /// See [`probewatch_watch::WatchConfig::settle`].
    pub settle: Option<String>,
    /// Results stamped further than this in the future are flagged as clock skew.
    pub clock_skew_tolerance: Option<String>,
    /// `auto` (default), `inotify` or `poll`.
    pub watch: Option<String>,
    /// Poll interval for polled spools.
    pub poll_interval: Option<String>,
    /// How often every spool is rescanned to make up for missed events (`0s`: never).
    pub rescan_interval: Option<String>,
    /// Most directories watched with inotify; the rest are polled (default: no cap).
    pub max_watched_dirs: Option<usize>,
    /// Most files in one transaction.
    pub batch_max_files: Option<usize>,
    /// Samples the store's ingest head collects before it is compacted into chunks.
    pub head_samples: Option<u64>,
    /// How long the rule evaluator's lease lasts when several servers share a PostgreSQL
    /// store: a server that dies is replaced within this (plus one evaluation interval).
    pub leader_lease: Option<String>,
    /// Log format: `text` or `json`.
    pub log_format: Option<String>,
    /// The spools.
    #[serde(default, rename = "spool")]
    pub spools: Vec<SpoolFile>,
    /// Prometheus rule files (a `*` in the file name matches files in its directory);
    /// relative paths are relative to the config file's directory.
    #[serde(default)]
    pub rule_files: Vec<String>,
    /// The config file's directory (set when the file is read, not written in it).
    #[serde(skip)]
    pub base_dir: Option<PathBuf>,
    /// Token that HTTP requests changing state (silences) must carry as
    /// `Authorization: Bearer <token>`; `PROBEWATCH_API_TOKEN` overrides it.
    pub api_token: Option<String>,
    /// Interval of rule groups that do not set one (default 15s).
    pub evaluation_interval: Option<String>,
    /// This probewatch's URL as people reach it, for links in notifications.
    pub external_url: Option<String>,
    /// Labels that identify this probewatch (`{ site = "eu1" }`): added to alerts sent to
    /// receivers (an alert's own label wins) and given to templates as `$externalLabels`.
    #[serde(default)]
    pub external_labels: std::collections::BTreeMap<String, String>,
    /// Who may use the dashboard and API (absent: anyone who can connect).
    pub access: Option<AccessFile>,
    /// Limits on PromQL queries served over HTTP.
    pub query: Option<QueryFile>,
    /// Notification receivers.
    #[serde(default, rename = "receiver")]
    pub receivers: Vec<crate::receiver_config::ReceiverFile>,
    /// Which alerts go to which receiver.
    #[serde(default, rename = "route")]
    pub routes: Vec<crate::alerting::RouteFile>,
    /// The public status page (`/status`, `/badge/…`): chosen groups of checks.
    pub status_page: Option<StatusPageFile>,
    /// The time zone pages show times in (an IANA name; default UTC).
    pub time_zone: Option<String>,
    /// Inhibition rules: a firing alert mutes others (Alertmanager's inhibit_rules).
    #[serde(default, rename = "inhibit")]
    pub inhibit: Vec<crate::alerting::InhibitFile>,
    /// Maintenance windows: planned time when what they cover is expected down.
    #[serde(default, rename = "maintenance")]
    pub maintenance: Vec<crate::alerting::MaintenanceFile>,
    /// Agents (and push clients) that may send results over HTTP, each with its token.
    #[serde(default, rename = "agent")]
    pub agents: Vec<AgentAuthFile>,
    /// An agent no server heard from for this long is offline (default 1m): its checks
    /// show as "agent offline", and `probewatch_agent_up` is 0.
    pub agent_offline_after: Option<String>,
}

/// One `[[agent]]` table on the server: a sender of results over HTTP.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentAuthFile {
    /// Its name (letters, digits, `.`, `_`, `-`): the host of its results that name none.
    pub name: String,
    /// Its token, written here…
    pub token: Option<String>,
    /// …or read from this file (first line; relative to the config file's directory).
    pub token_file: Option<PathBuf>,
    /// Host names it may write results for (default: its name).
    pub hosts: Option<Vec<String>>,
}

/// A secret given inline or in a file (its first line; relative paths from `base_dir`).
pub(crate) fn read_secret(
    field: &str,
    inline: Option<String>,
    file: Option<PathBuf>,
    base_dir: Option<&Path>,
) -> anyhow::Result<String> {
    let secret = match (inline, file) {
        (Some(s), None) => s,
        (None, Some(file)) => {
            let path = match base_dir {
                Some(base) if file.is_relative() => base.join(&file),
                _ => file,
            };
            let text = std::fs::read_to_string(&path)
                .with_context(|| format!("{field}_file {}", path.display()))?;
            text.lines().next().unwrap_or("").to_string()
        }
        (Some(_), Some(_)) => bail!("give {field} or {field}_file, not both"),
        (None, None) => bail!("needs {field} or {field}_file"),
    };
    if secret.is_empty() {
        bail!("{field} is empty");
    }
    Ok(secret)
}

/// Whether `name` may name an agent: it becomes a host label and part of ledger paths.
pub(crate) fn valid_agent_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

fn resolve_agents(
    agents: Vec<AgentAuthFile>,
    base_dir: Option<&Path>,
) -> anyhow::Result<Vec<crate::remote::AgentAuth>> {
    let mut out: Vec<crate::remote::AgentAuth> = Vec::new();
    for agent in agents {
        let name = agent.name;
        if !valid_agent_name(&name) {
            bail!("[[agent]] name {name:?}: use letters, digits, '.', '_' and '-' (at most 128)");
        }
        if out.iter().any(|a| *a.name == *name) {
            bail!("two [[agent]] tables are named {name:?}");
        }
        let token = read_secret("token", agent.token, agent.token_file, base_dir)
            .with_context(|| format!("[[agent]] {name}"))?
            .trim()
            .to_string();
        if token.len() < 16 {
            bail!(
                "[[agent]] {name}: the token is shorter than 16 characters; use a long random one (e.g. openssl rand -hex 24)"
            );
        }
        if out.iter().any(|a| a.token == token) {
            bail!("[[agent]] {name}: its token is another agent's too; give each its own");
        }
        let mut hosts = agent.hosts.unwrap_or_default();
        if !hosts.contains(&name) {
            hosts.insert(0, name.clone());
        }
        out.push(crate::remote::AgentAuth {
            name: Arc::from(name),
            token,
            hosts,
        });
    }
    Ok(out)
}

/// `[status_page]`: the public status page.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatusPageFile {
    /// Its title (default "Status").
    pub title: Option<String>,
    /// Its groups, in order.
    #[serde(default, rename = "group")]
    pub groups: Vec<StatusGroupFile>,
    /// Notices shown at the top.
    #[serde(default, rename = "announcement")]
    pub announcements: Vec<AnnouncementFile>,
}

/// `[[status_page.group]]`
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatusGroupFile {
    /// Shown name, also the badge path.
    pub name: String,
    /// PromQL-style matchers on probe, host and check (all must hold).
    pub matchers: Vec<String>,
}

/// `[[status_page.announcement]]`
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnnouncementFile {
    /// The text.
    pub text: String,
    /// Shown until (RFC 3339 or Unix seconds); always when absent.
    pub until: Option<String>,
}

/// Checks the `[status_page]` table.
fn resolve_status_page(
    file: Option<StatusPageFile>,
) -> anyhow::Result<Option<probewatch_web::status_page::StatusPage>> {
    let Some(file) = file else {
        return Ok(None);
    };
    let mut groups: Vec<probewatch_web::status_page::StatusGroup> = Vec::new();
    for g in file.groups {
        if g.name.is_empty() || g.name.contains('/') {
            bail!("status_page: a group needs a name without '/' (it is the badge path)");
        }
        if groups.iter().any(|x| x.name == g.name) {
            bail!("status_page: group {:?} is defined twice", g.name);
        }
        if g.matchers.is_empty() {
            bail!(
                "status_page: group {:?} needs matchers (e.g. probe=\"web\"); a group of \
                 every check would publish them all",
                g.name
            );
        }
        let matchers = probewatch_alerting::silence::parse_matchers(&g.matchers)
            .map_err(|e| anyhow::anyhow!("status_page: group {:?}: {e}", g.name))?;
        groups.push(probewatch_web::status_page::StatusGroup {
            name: g.name,
            matchers,
        });
    }
    let mut announcements = Vec::new();
    for a in file.announcements {
        let until_ms = match &a.until {
            None => None,
            Some(t) => Some(probewatch_core::parse_time_ms(t).ok_or_else(|| {
                anyhow::anyhow!(
                    "status_page: announcement until = {t:?}: not RFC 3339 or Unix seconds"
                )
            })?),
        };
        announcements.push(probewatch_web::status_page::Announcement {
            text: a.text,
            until_ms,
        });
    }
    Ok(Some(probewatch_web::status_page::StatusPage {
        title: file.title.unwrap_or_else(|| "Status".into()),
        groups,
        announcements,
    }))
}

/// The `[access]` table: basic auth for the whole dashboard and API.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccessFile {
    /// The user name people log in with.
    pub username: Option<String>,
    /// The password, written here…
    pub password: Option<String>,
    /// …or read from this file (first line; relative to the config file's directory).
    pub password_file: Option<PathBuf>,
}

/// The `[query]` table: Prometheus's query limits, with its defaults.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueryFile {
    /// How long one query may run, waiting for a slot included (default 2m).
    pub timeout: Option<String>,
    /// Most samples one query may hold in memory (default 50,000,000).
    pub max_samples: Option<usize>,
    /// Most queries evaluated at once; the others wait (default 4).
    pub max_concurrency: Option<usize>,
}

/// Validated query limits.
#[derive(Debug, Clone, Copy)]
pub struct QueryLimits {
    /// Engine options, timeout and sample budget included.
    pub options: probewatch_promql::QueryOptions,
    /// Most queries evaluated at once.
    pub max_concurrency: usize,
}

fn resolve_query(query: QueryFile) -> anyhow::Result<QueryLimits> {
    let timeout = duration(
        "[query] timeout",
        query.timeout.as_deref(),
        "2m",
        Duration::from_secs(1),
    )?;
    let max_samples = query.max_samples.unwrap_or(50_000_000);
    if max_samples < 1000 {
        bail!("[query] max_samples = {max_samples} is too small: it must be at least 1000");
    }
    let max_concurrency = query.max_concurrency.unwrap_or(4);
    if max_concurrency == 0 {
        bail!("[query] max_concurrency must be at least 1");
    }
    Ok(QueryLimits {
        options: probewatch_promql::QueryOptions {
            timeout: Some(timeout),
            max_samples,
            ..probewatch_promql::QueryOptions::default()
        },
        max_concurrency,
    })
}

/// One `[[spool]]` table.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpoolFile {
    /// Name used in metrics, logs and the ledger (default: the directory name).
    pub name: Option<String>,
    /// The directory.
    pub path: PathBuf,
    /// Result format (default `xml`).
    pub format: Option<String>,
    /// Globs of files to ingest (default `["*.xml"]`).
    pub include: Option<Vec<String>>,
    /// Globs of files and directories to skip (default: dotfiles, `*.tmp`, `*.swp`, `*~`).
    pub exclude: Option<Vec<String>>,
    /// Labels added to every series from this spool.
    #[serde(default)]
    pub labels: std::collections::BTreeMap<String, String>,
    /// `keep` (default), `delete` or `move`.
    pub after_ingest: Option<String>,
    /// Target directory for `after_ingest = "move"`.
    pub move_to: Option<PathBuf>,
    /// Where rejected files are moved (default: they stay where they are).
    pub quarantine: Option<PathBuf>,
    /// For `format = "mapping"`: where the parts of a result are in the probe's own XML.
    pub mapping: Option<MappingFile>,
}

/// The `[spool.mapping]` table: XPath selectors (docs/format-mapping.md).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MappingFile {
    probe: Option<String>,
    host: Option<String>,
    time: Option<String>,
    interval: Option<String>,
    checks: Option<String>,
    check_name: Option<String>,
    check_status: Option<String>,
    check_message: Option<String>,
    check_duration: Option<String>,
    #[serde(default)]
    status_map: std::collections::BTreeMap<String, String>,
    metrics: Option<String>,
    metric_name: Option<String>,
    metric_value: Option<String>,
    #[serde(default)]
    metric_labels: std::collections::BTreeMap<String, String>,
}

fn resolve_mapping(
    name: &str,
    m: MappingFile,
) -> anyhow::Result<probewatch_core::format::mapping::Mapping> {
    use probewatch_core::format::mapping::{Mapping, Selector};
    let sel = |field: &str, text: Option<String>| -> anyhow::Result<Option<Selector>> {
        text.map(|t| {
            Selector::parse(&t).map_err(|e| anyhow::anyhow!("spool {name}: mapping {field}: {e}"))
        })
        .transpose()
    };
    let mut status_map = std::collections::BTreeMap::new();
    for (word, status) in m.status_map {
        let parsed = probewatch_core::Status::parse(&status).with_context(|| {
            format!(
                "spool {name}: mapping status_map {word:?} = {status:?}: expected ok, warning, \
                 critical or unknown"
            )
        })?;
        status_map.insert(word, parsed);
    }
    let mut metric_labels = std::collections::BTreeMap::new();
    for (label, text) in m.metric_labels {
        if !probewatch_core::labels::is_valid_label_name(&label) {
            bail!("spool {name}: mapping metric_labels: {label:?} is not a label name");
        }
        let selector = sel(&format!("metric_labels.{label}"), Some(text))?;
        if let Some(selector) = selector {
            metric_labels.insert(label, selector);
        }
    }
    let mapping = Mapping {
        probe: sel("probe", m.probe)?
            .with_context(|| format!("spool {name}: mapping needs probe = \"<selector>\""))?,
        host: sel("host", m.host)?,
        time: sel("time", m.time)?,
        interval: sel("interval", m.interval)?,
        checks: sel("checks", m.checks)?,
        check_name: sel("check_name", m.check_name)?,
        check_status: sel("check_status", m.check_status)?,
        check_message: sel("check_message", m.check_message)?,
        check_duration: sel("check_duration", m.check_duration)?,
        status_map,
        metrics: sel("metrics", m.metrics)?,
        metric_name: sel("metric_name", m.metric_name)?,
        metric_value: sel("metric_value", m.metric_value)?,
        metric_labels,
    };
    mapping
        .validate()
        .map_err(|e| anyhow::anyhow!("spool {name}: mapping: {e}"))?;
    Ok(mapping)
}

/// What happens to a file once its result is durably stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AfterIngest {
    /// Leave it.
    Keep,
    /// Delete it.
    Delete,
    /// Move it into this directory (keeping its path relative to the spool).
    Move(PathBuf),
}

/// A validated spool.
#[derive(Debug, Clone)]
pub struct Spool {
    /// Name.
    pub name: Arc<str>,
    /// Absolute directory.
    pub root: PathBuf,
    /// Format.
    pub format: Format,
    /// Include/exclude globs.
    pub filter: Filter,
    /// Labels added to every series.
    pub labels: Arc<Labels>,
    /// What to do after ingest.
    pub after_ingest: AfterIngest,
    /// Where rejected files go, if anywhere.
    pub quarantine: Option<PathBuf>,
    /// The mapping of a `mapping` spool.
    pub mapping: Option<Arc<probewatch_core::format::mapping::Mapping>>,
}

impl Spool {
    /// True when files leave the spool after ingest or rejection, so commits must be durable
    /// before that happens.
    pub fn moves_files(&self) -> bool {
        self.after_ingest != AfterIngest::Keep || self.quarantine.is_some()
    }
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Data directory.
    pub data_dir: PathBuf,
    /// HTTP listen address.
    pub listen: SocketAddr,
    /// Retention.
    pub retention: Duration,
    /// How often retention runs.
    pub prune_interval: Duration,
    /// Largest accepted file.
    pub max_file_bytes: u64,
    /// Settle time.
    pub settle: Duration,
    /// Clock-skew tolerance.
    pub clock_skew_tolerance: Duration,
    /// Watch mode for every spool.
    pub watch_mode: WatchMode,
    /// Poll interval when `auto` falls back to polling.
    pub poll_interval: Duration,
    /// Safety rescans of every spool (`None`: off).
    pub rescan_interval: Option<Duration>,
    /// Cap on inotify watches (`None`: the kernel's limit).
    pub max_watched_dirs: Option<usize>,
    /// Most files per transaction.
    pub batch_max_files: usize,
    /// Samples in the store's ingest head before compaction (`None`: the back end's own
    /// default).
    pub head_samples: Option<u64>,
    /// Which store, SQLite (default) or PostgreSQL.
    pub store: probewatch_store::StoreLocation,
    /// The rule evaluator's lease.
    pub leader_lease: Duration,
    /// How to open it (the password is never shown by Debug).
    pub store_options: probewatch_store::StoreOptions,
    /// Log format.
    pub log_format: LogFormat,
    /// Spools, at least one.
    pub spools: Vec<Spool>,
    /// Rules, receivers, routes.
    pub alerting: crate::alerting::AlertingConfig,
    /// Token for state-changing HTTP requests.
    pub api_token: Option<String>,
    /// Basic auth for every request but `/healthz`, if configured.
    pub access: Option<probewatch_web::access::Access>,
    /// The public status page, if configured.
    pub status_page: Option<probewatch_web::status_page::StatusPage>,
    /// The time zone pages show times in.
    pub time_zone: jiff::tz::TimeZone,
    /// Limits on PromQL queries served over HTTP.
    pub query: QueryLimits,
    /// The file and flags this was loaded from, for a reload.
    pub origin: crate::reload::ConfigOrigin,
    /// Senders of results over HTTP (agents, push clients).
    pub agents: Vec<crate::remote::AgentAuth>,
    /// How long an agent may be silent before it counts as offline.
    pub agent_offline_after: Duration,
}

/// Command-line values that override the file.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    /// `--spool`: replaces the file's spools.
    pub spools: Vec<PathBuf>,
    /// `--data`.
    pub data_dir: Option<PathBuf>,
    /// `--store`.
    pub store: Option<String>,
    /// `--listen`.
    pub listen: Option<String>,
    /// `--poll INTERVAL`.
    pub poll: Option<String>,
    /// `--log-format`.
    pub log_format: Option<String>,
}

/// Parses a duration setting (`default` when absent), refusing one shorter than `min`: a
/// zero retention would delete all history, a zero interval would spin a core.
pub(crate) fn duration(
    field: &str,
    value: Option<&str>,
    default: &str,
    min: Duration,
) -> anyhow::Result<Duration> {
    let text = value.unwrap_or(default);
    let parsed = humantime::parse_duration(text)
        .with_context(|| format!("{field} = {text:?} is not a duration (e.g. 90d, 5s, 500ms)"))?;
    if parsed < min {
        bail!(
            "{field} = {text:?} is too short: it must be at least {}",
            humantime::format_duration(min)
        );
    }
    Ok(parsed)
}

fn absolute(path: &Path) -> anyhow::Result<PathBuf> {
    std::path::absolute(path).with_context(|| format!("resolving {}", path.display()))
}

impl Config {
    /// Reads the file (if given) and applies command-line overrides.
    pub fn load(file: Option<&Path>, overrides: &Overrides) -> anyhow::Result<Config> {
        let parsed = match file {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("reading config file {}", path.display()))?;
                let mut parsed: ConfigFile = toml::from_str(&text)
                    .with_context(|| format!("config file {} is invalid", path.display()))?;
                parsed.base_dir = path.parent().map(Path::to_path_buf);
                parsed
            }
            None => ConfigFile::default(),
        };
        let mut config = Config::resolve(parsed, overrides)?;
        config.origin = crate::reload::ConfigOrigin {
            file: file.map(Path::to_path_buf),
            overrides: overrides.clone(),
        };
        Ok(config)
    }

    /// Validates a parsed file plus overrides.
    pub fn resolve(file: ConfigFile, overrides: &Overrides) -> anyhow::Result<Config> {
        let data_dir = overrides
            .data_dir
            .clone()
            .or(file.data_dir)
            .unwrap_or_else(|| PathBuf::from("./probewatch-data"));
        let listen_text = overrides
            .listen
            .clone()
            .or(file.listen)
            .unwrap_or_else(|| "127.0.0.1:9180".to_string());
        let listen: SocketAddr = listen_text.parse().with_context(|| {
            format!("listen = {listen_text:?} is not an address like 127.0.0.1:9180")
        })?;
        let poll_interval = duration(
            "poll_interval",
            overrides.poll.as_deref().or(file.poll_interval.as_deref()),
            "2s",
            Duration::from_millis(100),
        )?;
        let watch_mode = match (overrides.poll.is_some(), file.watch.as_deref()) {
            (true, _) | (false, Some("poll")) => WatchMode::Poll(poll_interval),
            (false, None | Some("auto")) => WatchMode::Auto,
            (false, Some("inotify")) => WatchMode::Inotify,
            (false, Some(other)) => bail!("watch = {other:?}: expected auto, inotify or poll"),
        };
        let log_format = match overrides
            .log_format
            .as_deref()
            .or(file.log_format.as_deref())
        {
            None | Some("text") => LogFormat::Text,
            Some("json") => LogFormat::Json,
            Some(other) => bail!("log format {other:?}: expected text or json"),
        };
        let spool_files = if overrides.spools.is_empty() {
            file.spools
        } else {
            overrides
                .spools
                .iter()
                .map(|path| SpoolFile {
                    path: path.clone(),
                    ..SpoolFile::default()
                })
                .collect()
        };
        let spool_files = if spool_files.is_empty() {
            vec![SpoolFile {
                path: PathBuf::from("./spool"),
                ..SpoolFile::default()
            }]
        } else {
            spool_files
        };
        let mut spools = Vec::new();
        for spool in spool_files {
            spools.push(resolve_spool(spool)?);
        }
        for (i, a) in spools.iter().enumerate() {
            for b in &spools[i + 1..] {
                if a.name == b.name {
                    bail!(
                        "two spools are named {:?}; give them distinct names",
                        a.name
                    );
                }
                if a.root.starts_with(&b.root) || b.root.starts_with(&a.root) {
                    bail!(
                        "spools {} and {} overlap: a file would be ingested twice",
                        a.root.display(),
                        b.root.display()
                    );
                }
            }
        }
        let batch_max_files = file.batch_max_files.unwrap_or(1000);
        if batch_max_files == 0 {
            bail!("batch_max_files must be at least 1");
        }
        let head_samples = match file.head_samples {
            Some(0) => bail!("head_samples must be at least 1"),
            other => other,
        };
        let store_setting = overrides.store.clone().or(file.store.clone());
        let store = probewatch_store::StoreLocation::parse(
            store_setting.as_deref(),
            &absolute(&data_dir)?,
        )?;
        let store_password = match &file.store_password_file {
            Some(path) => {
                let path = match &file.base_dir {
                    Some(base) if path.is_relative() => base.join(path),
                    _ => path.clone(),
                };
                let text = std::fs::read_to_string(&path)
                    .with_context(|| format!("reading store_password_file {}", path.display()))?;
                Some(text.lines().next().unwrap_or("").to_string())
            }
            None => std::env::var("PROBEWATCH_STORE_PASSWORD").ok(),
        };
        Ok(Config {
            data_dir: absolute(&data_dir)?,
            listen,
            retention: duration(
                "retention",
                file.retention.as_deref(),
                "90d",
                Duration::from_secs(60),
            )?,
            prune_interval: duration(
                "prune_interval",
                file.prune_interval.as_deref(),
                "1h",
                Duration::from_secs(1),
            )?,
            max_file_bytes: file.max_file_bytes.unwrap_or(DEFAULT_MAX_FILE_BYTES),
            settle: duration(
                "settle",
                file.settle.as_deref(),
                "2s",
                Duration::from_millis(100),
            )?,
            clock_skew_tolerance: duration(
                "clock_skew_tolerance",
                file.clock_skew_tolerance.as_deref(),
                "5m",
                Duration::ZERO,
            )?,
            query: resolve_query(file.query.unwrap_or_default())?,
            watch_mode,
            poll_interval,
            rescan_interval: match file.rescan_interval.as_deref() {
                Some("0" | "0s") => None,
                other => Some(duration(
                    "rescan_interval",
                    other,
                    "10m",
                    Duration::from_secs(10),
                )?),
            },
            max_watched_dirs: file.max_watched_dirs,
            batch_max_files,
            head_samples,
            leader_lease: duration(
                "leader_lease",
                file.leader_lease.as_deref(),
                "15s",
                Duration::from_millis(500),
            )?,
            store,
            store_options: probewatch_store::StoreOptions {
                head_max_samples: head_samples,
                password: store_password,
            },
            log_format,
            spools,
            access: file
                .access
                .map(|a| resolve_access(a, file.base_dir.as_deref()))
                .transpose()?,
            status_page: resolve_status_page(file.status_page)?,
            time_zone: match file.time_zone.as_deref() {
                None | Some("UTC") => jiff::tz::TimeZone::UTC,
                Some(name) => jiff::tz::TimeZone::get(name).map_err(|_| {
                    anyhow::anyhow!("time_zone = {name:?} is not a known IANA time zone")
                })?,
            },
            api_token: std::env::var("PROBEWATCH_API_TOKEN")
                .ok()
                .or(file.api_token)
                .filter(|t| !t.is_empty()),
            alerting: crate::alerting::resolve(
                &file
                    .rule_files
                    .iter()
                    .map(|f| match &file.base_dir {
                        Some(base) if Path::new(f).is_relative() => {
                            base.join(f).display().to_string()
                        }
                        _ => f.clone(),
                    })
                    .collect::<Vec<_>>(),
                file.evaluation_interval.as_deref(),
                file.external_url,
                &file.external_labels,
                &file.receivers,
                &file.routes,
                listen,
            )
            .and_then(|mut alerting| {
                alerting.maintenance = crate::alerting::resolve_maintenance(&file.maintenance)?;
                alerting.inhibit = crate::alerting::resolve_inhibit(&file.inhibit)?;
                Ok(alerting)
            })?,
            origin: crate::reload::ConfigOrigin::default(),
            agents: resolve_agents(file.agents, file.base_dir.as_deref())?,
            agent_offline_after: duration(
                "agent_offline_after",
                file.agent_offline_after.as_deref(),
                "1m",
                Duration::from_secs(1),
            )?,
        })
    }
}

fn resolve_access(
    access: AccessFile,
    base_dir: Option<&Path>,
) -> anyhow::Result<probewatch_web::access::Access> {
    let username = access
        .username
        .filter(|u| !u.is_empty())
        .context("[access] needs a username")?;
    if username.contains(':') {
        bail!(
            "[access] username must not contain ':' (basic auth separates it from the password with one)"
        );
    }
    let password = read_secret("password", access.password, access.password_file, base_dir)
        .context("[access]")?;
    Ok(probewatch_web::access::Access { username, password })
}

fn resolve_spool(spool: SpoolFile) -> anyhow::Result<Spool> {
    let root = absolute(&spool.path)?;
    let name: Arc<str> = match spool.name {
        Some(name) => Arc::from(name),
        None => Arc::from(
            root.file_name()
                .map_or_else(|| "spool".into(), |n| n.to_string_lossy().into_owned()),
        ),
    };
    let format_name = spool.format.as_deref().unwrap_or("xml");
    let format = Format::from_name(format_name).with_context(|| {
        format!(
            "spool {name}: unknown format {format_name:?} (supported: xml, json, prometheus, nagios, mapping, auto)"
        )
    })?;
    let include = spool.include.unwrap_or_else(|| {
        format
            .default_include()
            .iter()
            .map(|s| s.to_string())
            .collect()
    });
    let exclude = spool.exclude.unwrap_or_else(|| {
        let mut exclude: Vec<String> = DEFAULT_EXCLUDE.iter().map(|s| s.to_string()).collect();
        if format == Format::Nagios {
            // Nagios marks a finished check result file with an empty `<name>.ok`.
            exclude.push("*.ok".into());
        }
        exclude
    });
    let filter = Filter::new(&include, &exclude).with_context(|| format!("spool {name}"))?;
    let labels = Labels::from_pairs(spool.labels)
        .with_context(|| format!("spool {name}: invalid labels"))?;
    let after_ingest = match (spool.after_ingest.as_deref(), spool.move_to) {
        (None | Some("keep"), None) => AfterIngest::Keep,
        (Some("delete"), None) => AfterIngest::Delete,
        (Some("move"), Some(dir)) => AfterIngest::Move(absolute(&dir)?),
        (Some("move"), None) => bail!("spool {name}: after_ingest = \"move\" needs move_to"),
        (_, Some(_)) => bail!("spool {name}: move_to is only used with after_ingest = \"move\""),
        (Some(other), None) => {
            bail!("spool {name}: after_ingest = {other:?}: expected keep, delete or move")
        }
    };
    let quarantine = spool.quarantine.as_deref().map(absolute).transpose()?;
    let mapping = match (format, spool.mapping) {
        (Format::Mapping, Some(m)) => Some(Arc::new(resolve_mapping(&name, m)?)),
        (Format::Mapping, None) => {
            bail!("spool {name}: format = \"mapping\" needs a [spool.mapping] table")
        }
        (_, Some(_)) => bail!("spool {name}: [spool.mapping] is for format = \"mapping\""),
        (_, None) => None,
    };
    Ok(Spool {
        name,
        root,
        format,
        filter,
        labels: Arc::new(labels),
        after_ingest,
        quarantine,
        mapping,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_need_no_file() {
        let config = Config::resolve(ConfigFile::default(), &Overrides::default()).expect("valid");
        assert_eq!(config.listen.to_string(), "127.0.0.1:9180");
        assert!(config.data_dir.ends_with("probewatch-data"));
        assert_eq!(config.spools.len(), 1);
        assert!(config.spools[0].root.ends_with("spool"));
        assert_eq!(config.retention, Duration::from_secs(90 * 86400));
        assert_eq!(config.watch_mode, WatchMode::Auto);
    }

    #[test]
    fn example_config_is_valid() {
        let mut file: ConfigFile = toml::from_str(EXAMPLE).expect("example parses");
        file.base_dir = Some(PathBuf::from(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../examples"
        )));
        let config = Config::resolve(file, &Overrides::default()).expect("example is valid");
        assert!(config.spools.len() >= 2);
        assert_eq!(
            config.alerting.rule_files.len(),
            1,
            "examples/rules/probes.yml"
        );
        assert_eq!(config.alerting.receivers.len(), 4);
        assert_eq!(config.alerting.routes.len(), 2);
        assert_eq!(config.alerting.inhibit.len(), 1);
        assert_eq!(config.alerting.maintenance.len(), 1);
    }

    #[test]
    fn mistakes_are_named() {
        let err = toml::from_str::<ConfigFile>("retension = \"1d\"").expect_err("typo");
        assert!(
            err.to_string().contains("unknown field `retension`"),
            "{err}"
        );
        let file: ConfigFile =
            toml::from_str("[[spool]]\npath = \"/a\"\n[[spool]]\npath = \"/a/b\"\nname = \"b\"")
                .expect("parses");
        let err = Config::resolve(file, &Overrides::default()).expect_err("overlap");
        assert!(err.to_string().contains("overlap"), "{err}");
        let file: ConfigFile =
            toml::from_str("[[spool]]\npath = \"/a\"\nafter_ingest = \"move\"").expect("parses");
        let err = Config::resolve(file, &Overrides::default()).expect_err("no target");
        assert!(err.to_string().contains("needs move_to"), "{err}");
        for (setting, says) in [
            (
                "retention = \"0s\"",
                "retention = \"0s\" is too short: it must be at least 1m",
            ),
            ("prune_interval = \"0s\"", "at least 1s"),
            ("poll_interval = \"0ms\"", "at least 100ms"),
            ("settle = \"1ms\"", "at least 100ms"),
            (
                "[query]\ntimeout = \"0s\"",
                "[query] timeout = \"0s\" is too short",
            ),
            ("[query]\nmax_concurrency = 0", "at least 1"),
            ("[query]\nmax_samples = 10", "at least 1000"),
            (
                "[[receiver]]\nname = \"s\"\ntype = \"slack\"\nurl = \"u\"\nchat_id = \"1\"",
                "receiver \"s\" (type = \"slack\"): unknown field `chat_id`, expected `url`",
            ),
            (
                "[[receiver]]\nname = \"t\"\ntype = \"telegram\"\nchat_id = \"1\"",
                "needs bot_token",
            ),
            (
                "[[receiver]]\nname = \"w\"\nurl = \"u\"\nrouting_key = \"k\"",
                "(type = \"webhook\"): unknown field `routing_key`",
            ),
            (
                "[[receiver]]\nname = \"x\"\ntype = \"carrier-pigeon\"",
                "unknown variant `carrier-pigeon`, expected one of `webhook`",
            ),
            (
                "[[receiver]]\nname = \"b\"\nurl = \"u\"\nbody_template = \"{{ .Nope \"",
                "receiver \"b\": body_template",
            ),
            (
                "[[maintenance]]\nname = \"m\"\nmatchers = ['a=\"b\"']\nfrom = \"01:00\"\nto = \"02:00\"\ntime_zone = \"Nowhere/City\"",
                "Nowhere/City",
            ),
            (
                "[[inhibit]]\nsource_matchers = []\ntarget_matchers = ['a=\"b\"']",
                "needs source_matchers",
            ),
            (
                "[status_page]\n[[status_page.group]]\nname = \"all\"\nmatchers = []",
                "needs matchers",
            ),
        ] {
            // A setting the receiver's type does not take is refused as the file is read;
            // the rest when it is resolved.
            let err = match toml::from_str::<ConfigFile>(setting) {
                Err(e) => e.to_string(),
                Ok(file) => format!(
                    "{:#}",
                    Config::resolve(file, &Overrides::default()).expect_err(setting)
                ),
            };
            assert!(err.contains(says), "{setting}: {err}");
        }
        for (access, says) in [
            ("[access]\npassword = \"x\"", "needs a username"),
            (
                "[access]\nusername = \"a\"",
                "needs password or password_file",
            ),
            (
                "[access]\nusername = \"a\"\npassword = \"x\"\npassword_file = \"f\"",
                "not both",
            ),
            (
                "[access]\nusername = \"a:b\"\npassword = \"x\"",
                "must not contain ':'",
            ),
            (
                "[access]\nusername = \"a\"\npassword_file = \"/nonexistent/pw\"",
                "/nonexistent/pw",
            ),
        ] {
            let file: ConfigFile = toml::from_str(access).expect("parses");
            let err = Config::resolve(file, &Overrides::default()).expect_err(access);
            assert!(format!("{err:#}").contains(says), "{access}: {err:#}");
        }
    }
}

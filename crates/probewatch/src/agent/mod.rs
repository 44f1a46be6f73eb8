//! `probewatch agent`: runs on a probe host, watches its spools exactly as `run` does, and
//! delivers every complete result file to the central servers, each version once.
//!
//! Three parts: the watcher (the same as the daemon's), the *collector* thread (reads each
//! reported file, never following symlinks, and queues it in the outbox with its identity)
//! and the *shipper* thread (sends the outbox to a server; see [`shipper`]). The outbox is
//! the buffer: a server outage costs only delay.

pub mod metrics;
pub mod outbox;
pub mod shipper;

use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, SyncSender};
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;
use probewatch_watch::{FileReady, WatchCounters, Watcher, mtime_ns};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::config::{Config, ConfigFile, Overrides, Spool, SpoolFile};
use crate::ingest::{now_ms, open_spool_file, read_limited, unchanged};
use crate::shutdown::Shutdown;
use outbox::{Entry, Outbox};

/// `probewatch agent`.
#[derive(Debug, Args, Clone, Default)]
pub struct AgentArgs {
    /// Agent configuration file (TOML; see docs/agent.md).
    #[arg(long, short, env = "PROBEWATCH_AGENT_CONFIG")]
    pub config: Option<PathBuf>,
    /// Server base URL(s), comma-separated, tried in turn (replaces the file's `server`).
    #[arg(long, value_delimiter = ',', env = "PROBEWATCH_SERVER")]
    pub server: Vec<String>,
    /// This agent's name, as configured on the servers (default: the host name).
    #[arg(long, env = "PROBEWATCH_AGENT_NAME")]
    pub name: Option<String>,
    /// File holding the agent's token (first line); `PROBEWATCH_AGENT_TOKEN` also works.
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    /// Data directory: the outbox (default ./probewatch-agent).
    #[arg(long, env = "PROBEWATCH_DATA")]
    pub data: Option<PathBuf>,
    /// Spool directory to watch (repeatable; replaces the file's spools).
    #[arg(long = "spool", value_name = "DIR")]
    pub spools: Vec<PathBuf>,
    /// Poll the spools every INTERVAL instead of using inotify.
    #[arg(long, value_name = "INTERVAL")]
    pub poll: Option<String>,
    /// Log format: text or json.
    #[arg(long, env = "PROBEWATCH_LOG_FORMAT")]
    pub log_format: Option<String>,
    /// Serve the agent's /metrics on this address (e.g. 127.0.0.1:9181; default: none).
    #[arg(long)]
    pub listen: Option<String>,
}

/// `server = "…"` or `server = ["…", "…"]`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Servers {
    One(String),
    Many(Vec<String>),
}

/// The agent's TOML file, as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct AgentFile {
    server: Option<Servers>,
    name: Option<String>,
    token: Option<String>,
    token_file: Option<PathBuf>,
    data_dir: Option<PathBuf>,
    #[serde(default, rename = "spool")]
    spools: Vec<SpoolFile>,
    settle: Option<String>,
    watch: Option<String>,
    poll_interval: Option<String>,
    rescan_interval: Option<String>,
    max_file_bytes: Option<u64>,
    log_format: Option<String>,
    batch_max_files: Option<usize>,
    request_timeout: Option<String>,
    heartbeat_interval: Option<String>,
    listen: Option<String>,
}

/// The validated agent configuration.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// Server base URLs.
    pub servers: Vec<String>,
    /// The agent's name.
    pub name: String,
    /// Its token (never logged).
    pub token: String,
    /// Spools, data directory, watch and size settings, resolved as `run` resolves them.
    pub common: Config,
    /// Most files in one request.
    pub batch_max_files: usize,
    /// How long one request may take.
    pub request_timeout: Duration,
    /// How often an idle agent says it is there.
    pub heartbeat: Duration,
    /// Where its /metrics are served, if anywhere.
    pub listen: Option<std::net::SocketAddr>,
}

impl AgentConfig {
    /// Reads the file (if any) and applies the command line.
    pub fn load(args: &AgentArgs) -> anyhow::Result<AgentConfig> {
        let (file, base_dir) = match &args.config {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("reading agent config {}", path.display()))?;
                let file: AgentFile = toml::from_str(&text)
                    .with_context(|| format!("agent config {} is invalid", path.display()))?;
                (file, path.parent().map(Path::to_path_buf))
            }
            None => (AgentFile::default(), None),
        };
        let servers: Vec<String> = if args.server.is_empty() {
            match file.server {
                Some(Servers::One(s)) => vec![s],
                Some(Servers::Many(v)) => v,
                None => Vec::new(),
            }
        } else {
            args.server.clone()
        };
        let servers: Vec<String> = servers
            .into_iter()
            .map(|s| s.trim().trim_end_matches('/').to_string())
            .filter(|s| !s.is_empty())
            .collect();
        if servers.is_empty() {
            bail!(
                "no server: give --server URL or server = [\"http://…:9180\"] in the agent config"
            );
        }
        for s in &servers {
            if !(s.starts_with("http://") || s.starts_with("https://")) {
                bail!("server {s:?} is not an http:// or https:// URL");
            }
        }
        let name = match args.name.clone().or(file.name) {
            Some(name) => name,
            None => rustix::system::uname()
                .nodename()
                .to_string_lossy()
                .into_owned(),
        };
        if !crate::config::valid_agent_name(&name) {
            bail!("agent name {name:?}: use letters, digits, '.', '_' and '-' (at most 128)");
        }
        let token = match std::env::var("PROBEWATCH_AGENT_TOKEN") {
            Ok(token) if args.token_file.is_none() && !token.trim().is_empty() => token,
            _ => {
                let (inline, token_file) = match &args.token_file {
                    Some(f) => (None, Some(f.clone())),
                    None => (file.token, file.token_file),
                };
                crate::config::read_secret("token", inline, token_file, base_dir.as_deref())
                    .context(
                        "the agent's token (--token-file, token_file or PROBEWATCH_AGENT_TOKEN)",
                    )?
            }
        }
        .trim()
        .to_string();
        let common_file = ConfigFile {
            data_dir: Some(
                file.data_dir
                    .unwrap_or_else(|| PathBuf::from("./probewatch-agent")),
            ),
            spools: file.spools,
            settle: file.settle,
            watch: file.watch,
            poll_interval: file.poll_interval,
            rescan_interval: file.rescan_interval,
            max_file_bytes: file.max_file_bytes,
            log_format: file.log_format,
            base_dir,
            ..ConfigFile::default()
        };
        let overrides = Overrides {
            spools: args.spools.clone(),
            data_dir: args.data.clone(),
            poll: args.poll.clone(),
            log_format: args.log_format.clone(),
            ..Overrides::default()
        };
        let common = Config::resolve(common_file, &overrides)?;
        let listen = match args.listen.clone().or(file.listen) {
            Some(text) => Some(text.parse().with_context(|| {
                format!("listen = {text:?} is not an address like 127.0.0.1:9181")
            })?),
            None => None,
        };
        let batch_max_files = file.batch_max_files.unwrap_or(500);
        if batch_max_files == 0 {
            bail!("batch_max_files must be at least 1");
        }
        Ok(AgentConfig {
            listen,
            servers,
            name,
            token,
            common,
            batch_max_files,
            request_timeout: crate::config::duration(
                "request_timeout",
                file.request_timeout.as_deref(),
                "30s",
                Duration::from_secs(1),
            )?,
            heartbeat: crate::config::duration(
                "heartbeat_interval",
                file.heartbeat_interval.as_deref(),
                "15s",
                Duration::from_millis(100),
            )?,
        })
    }
}

/// Entry point of `probewatch agent`.
pub fn agent_command(args: AgentArgs) -> anyhow::Result<ExitCode> {
    let config = AgentConfig::load(&args)?;
    crate::telemetry::init_logging(config.common.log_format);
    run(config, Shutdown::new())?;
    Ok(ExitCode::SUCCESS)
}

/// Runs the agent until SIGINT or SIGTERM (or `shutdown`).
pub fn run(config: AgentConfig, shutdown: Shutdown) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the signal listener")?;
    crate::daemon::spawn_signal_listener(&runtime, shutdown.clone(), Arc::default())?;
    let (metrics, registry) = metrics::AgentMetrics::new();
    let metrics = Arc::new(metrics);
    if let Some(addr) = config.listen {
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind(addr))
            .with_context(|| format!("listening on {addr}"))?;
        let stop = shutdown.clone();
        let registry = Arc::new(registry);
        runtime.spawn(async move {
            if let Err(err) =
                metrics::serve(listener, registry, async move { stop.wait().await }).await
            {
                tracing::error!(error = %err, "the agent's /metrics server failed");
            }
        });
        tracing::info!("agent metrics on http://{addr}/metrics");
    }
    let signals = {
        let shutdown = shutdown.clone();
        std::thread::Builder::new()
            .name("pw-signals".into())
            .spawn(move || runtime.block_on(shutdown.wait()))?
    };
    let data_dir = config.common.data_dir.clone();
    let _lock = crate::process::DataDirLock::acquire(&data_dir)?;
    for spool in &config.common.spools {
        std::fs::create_dir_all(&spool.root)
            .with_context(|| format!("creating spool {}", spool.root.display()))?;
    }
    let spools = Arc::new(config.common.spools.clone());
    let collector_outbox = Outbox::open(&data_dir)
        .with_context(|| format!("opening the outbox in {}", data_dir.display()))?;
    let shipper_outbox = Outbox::open(&data_dir)?;
    let (ready_tx, ready_rx) = std::sync::mpsc::sync_channel(16_384);
    let (wake_tx, wake_rx) = std::sync::mpsc::sync_channel(1);
    let collector = Collector {
        outbox: collector_outbox,
        spools: spools.clone(),
        max_file_bytes: config.common.max_file_bytes,
        wake: wake_tx,
        metrics: metrics.clone(),
        unreadable: crate::health::IngestHealth::default(),
    };
    let collect = std::thread::Builder::new()
        .name("pw-collect".into())
        .spawn(move || collector.run(ready_rx))?;
    let ship = {
        let shipper = shipper::Shipper {
            servers: config.servers.clone(),
            name: config.name.clone(),
            token: config.token.clone(),
            outbox: shipper_outbox,
            spools,
            max_files: config.batch_max_files,
            timeout: config.request_timeout,
            heartbeat: config.heartbeat,
            wake: wake_rx,
            shutdown: shutdown.clone(),
            metrics: metrics.clone(),
        };
        std::thread::Builder::new()
            .name("pw-ship".into())
            .spawn(move || shipper.run())?
    };
    let counters = Arc::new(WatchCounters::default());
    let watcher = Watcher::start(
        crate::daemon::watch_config(&config.common),
        ready_tx,
        counters,
    )
    .context("starting the spool watcher")?;
    tracing::info!(
        name = %config.name,
        servers = %config.servers.join(","),
        outbox = %data_dir.join(outbox::OUTBOX_FILE).display(),
        "probewatch agent {} started",
        env!("CARGO_PKG_VERSION")
    );
    let _ = signals.join();
    tracing::info!("stopping: the outbox keeps what is not delivered yet");
    watcher.stop();
    let _ = collect.join();
    let _ = ship.join();
    tracing::info!(
        stored = metrics.count("stored") + metrics.count("duplicate"),
        rejected = metrics.count("rejected"),
        "stopped"
    );
    Ok(())
}

/// Reads reported files and queues them in the outbox.
struct Collector {
    outbox: Outbox,
    spools: Arc<Vec<Spool>>,
    max_file_bytes: u64,
    wake: SyncSender<()>,
    metrics: Arc<metrics::AgentMetrics>,
    /// Files that could not be opened or read, retried with backoff.
    unreadable: crate::health::IngestHealth,
}

/// Files queued in one outbox transaction at most.
const COLLECT_BATCH: usize = 256;

impl Collector {
    fn run(mut self, ready: Receiver<FileReady>) {
        let mut forgot_at = std::time::Instant::now();
        loop {
            // The next reported file, or the unreadable ones whose retry is due.
            let (due, next_at) = self.unreadable.due_retries(std::time::Instant::now());
            let mut pending: Vec<FileReady> = due
                .into_iter()
                .map(|(spool, path)| FileReady {
                    spool,
                    path,
                    cause: probewatch_watch::ReadyCause::Scan,
                    seen_at: std::time::Instant::now(),
                })
                .collect();
            let wait = next_at.map_or(Duration::from_secs(1), |at| {
                at.saturating_duration_since(std::time::Instant::now())
            });
            if pending.is_empty() {
                match ready.recv_timeout(wait.min(Duration::from_secs(1))) {
                    Ok(file) => pending.push(file),
                    Err(std::sync::mpsc::RecvTimeoutError::Timeout) => continue,
                    Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => return,
                }
            }
            let mut entries = Vec::new();
            let mut next = pending.pop();
            while let Some(file) = next.take() {
                if let Some(entry) = self.read(file) {
                    entries.push(entry);
                }
                if entries.len() >= COLLECT_BATCH {
                    break;
                }
                next = pending.pop().or_else(|| ready.try_recv().ok());
            }
            if entries.is_empty() {
                continue;
            }
            let mut delay = Duration::from_millis(100);
            loop {
                match self.outbox.enqueue(&entries, now_ms()) {
                    Ok(new) => {
                        self.metrics.queued.inc_by(new as u64);
                        break;
                    }
                    Err(err) => {
                        // The files stay in the spool: a restart's scan finds them anyway.
                        tracing::error!(error = %err, files = entries.len(), "cannot queue files in the outbox; retrying");
                        std::thread::sleep(delay);
                        delay = (delay * 2).min(Duration::from_secs(5));
                    }
                }
            }
            let _ = self.wake.try_send(());
            if forgot_at.elapsed() >= Duration::from_secs(600) {
                forgot_at = std::time::Instant::now();
                let forgotten = self.outbox.forget_missing(|path| {
                    std::fs::symlink_metadata(std::ffi::OsStr::from_bytes(path)).is_ok()
                });
                tracing::debug!(?forgotten, "forgot files gone from the spools");
            }
        }
    }

    /// Lists a file that cannot be read for another attempt, with backoff (as the daemon
    /// does); said once, then quietly until it can be read.
    fn cannot_read(&self, path: PathBuf, spool: usize, name: Arc<str>, error: String) {
        if self
            .unreadable
            .unreadable(path.clone(), spool, name, error.clone())
        {
            tracing::error!(
                path = %path.display(),
                error = %error,
                "cannot read result file; trying again with backoff"
            );
        }
    }

    /// Reads one reported file into an outbox entry; `None` when there is nothing to queue.
    fn read(&mut self, ready: FileReady) -> Option<Entry> {
        let spool = self.spools.get(ready.spool)?;
        let path = ready.path;
        let (file, meta) = match open_spool_file(&path) {
            Ok(Some(opened)) => opened,
            Ok(None) => return None,
            Err(error) => {
                self.cannot_read(path, ready.spool, spool.name.clone(), error);
                return None;
            }
        };
        self.unreadable.readable(&path);
        let path_bytes = path.as_os_str().as_bytes().to_vec();
        if !ready.cause.is_fresh_write()
            && let Ok(Some(known)) = self.outbox.known(&path_bytes)
            && unchanged(known.size, known.mtime_ns, known.inode, &meta)
        {
            // Queued already, or delivered: its after-ingest action may be left from
            // before a restart (the file is still here).
            let outcome = match known.state.as_str() {
                "stored" => Some(probewatch_store::Outcome::Ingested),
                "rejected" => Some(probewatch_store::Outcome::Rejected),
                _ => None,
            };
            if let Some(outcome) = outcome {
                crate::ingest::after_ingest(spool, &path, outcome);
            }
            return None;
        }
        let size = meta.len();
        let mtime = mtime_ns(&meta);
        let content = match read_limited(&file, size, self.max_file_bytes) {
            Ok(Ok(bytes)) => Some(bytes),
            Ok(Err(_)) => None,
            Err(error) => {
                self.cannot_read(path, ready.spool, spool.name.clone(), error);
                return None;
            }
        };
        let mut hasher = Sha256::new();
        match &content {
            Some(bytes) => hasher.update(bytes),
            None => hasher.update(b"too-large\0"),
        }
        hasher.update(size.to_le_bytes());
        hasher.update(mtime.to_le_bytes());
        Some(Entry {
            spool: spool.name.to_string(),
            path: path_bytes,
            version: hasher.finalize().into(),
            size,
            mtime_ns: mtime,
            inode: meta.ino(),
            content,
        })
    }
}

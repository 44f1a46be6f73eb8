//! `probewatch run`: wires the watcher, the ingest pipeline, retention and the HTTP server,
//! and shuts them down in order.
//!
//! Shutdown order on SIGINT/SIGTERM (one [`Shutdown`] signal passed to every part): stop
//! the HTTP server (open requests get a few seconds; running queries are cancelled), stop the
//! watcher (no new events), let the pipeline drain its queues and commit the batch in flight
//! (a commit that keeps failing is given up after `ingest::SHUTDOWN_COMMIT_GRACE`), then
//! exit. The whole stop is bounded by [`SHUTDOWN_LIMIT`]. Anything not yet committed is still
//! in the spool and found by the startup scan next time.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::Context;
use probewatch_core::ParseLimits;
use probewatch_store::{Store, StoreError};
use probewatch_watch::{SpoolWatch, WatchConfig, WatchCounters, WatchMode, Watcher};

use crate::cli::RunArgs;
use crate::config::{AfterIngest, Config, Overrides};
use crate::ingest::{IngestSettings, Pipeline};
use crate::reload::Reloader;
use crate::shutdown::Shutdown;
use crate::telemetry::{Metrics, init_logging};

/// Entry point of `probewatch run`.
pub fn run_command(args: RunArgs) -> anyhow::Result<ExitCode> {
    let overrides = Overrides {
        spools: args.spools,
        data_dir: args.common.data,
        store: args.common.store,
        listen: args.listen,
        poll: args.poll,
        log_format: args.common.log_format,
    };
    let config = Config::load(args.common.config.as_deref(), &overrides)?;
    init_logging(config.log_format);
    run(config, Shutdown::new())?;
    Ok(ExitCode::SUCCESS)
}

/// The watcher's view of the configured spools: move and quarantine targets inside a spool
/// are never watched (their files were already ingested).
pub fn watch_config(config: &Config) -> WatchConfig {
    let spools = config
        .spools
        .iter()
        .map(|spool| {
            let mut skip_dirs = Vec::new();
            if let AfterIngest::Move(dir) = &spool.after_ingest {
                skip_dirs.push(dir.clone());
            }
            skip_dirs.extend(spool.quarantine.clone());
            SpoolWatch {
                root: spool.root.clone(),
                filter: spool.filter.clone(),
                skip_dirs,
                mode: config.watch_mode,
            }
        })
        .collect();
    WatchConfig {
        spools,
        settle: config.settle,
        auto_poll_interval: config.poll_interval,
        rescan_interval: config.rescan_interval,
        max_watches: config.max_watched_dirs,
        max_waiting: probewatch_watch::DEFAULT_MAX_WAITING,
    }
}

/// Ingest settings from the configuration.
pub fn ingest_settings(config: &Config) -> IngestSettings {
    IngestSettings {
        spools: Arc::new(config.spools.clone()),
        max_file_bytes: config.max_file_bytes,
        clock_skew_tolerance: config.clock_skew_tolerance,
        batch_max_files: config.batch_max_files,
        parse_limits: ParseLimits::default(),
        on_commit: None,
        handled: Arc::new(std::sync::atomic::AtomicU64::new(0)),
        health: Arc::new(crate::health::IngestHealth::default()),
        shutdown: crate::shutdown::Shutdown::new(),
        metadata: Arc::default(),
    }
}

/// How long the whole stop may take, whatever the store or a receiver does; past it the
/// process exits at once (anything uncommitted is still in the spool, and a commit is
/// atomic, so this is no worse than a crash).
pub const SHUTDOWN_LIMIT: Duration = Duration::from_secs(30);

/// Runs the daemon until SIGINT or SIGTERM (or until `shutdown` is triggered otherwise).
/// Fails when it cannot start, or when the HTTP server failed while running.
pub fn run(config: Config, shutdown: Shutdown) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .thread_name("pw-http")
        // Deep (but accepted) PromQL trees recurse once per level while planned and evaluated.
        .thread_stack_size(probewatch_promql::limits::STACK_BYTES)
        // Queries and pages can wait; ingest cannot.
        .on_thread_start(crate::process::lower_thread_priority)
        .build()
        .context("starting the async runtime")?;
    // Signals first, so a SIGHUP during start-up cannot kill the process.
    let reloader: Arc<std::sync::OnceLock<Arc<Reloader>>> = Arc::default();
    spawn_signal_listener(&runtime, shutdown.clone(), reloader.clone())?;
    let _lock = crate::process::DataDirLock::acquire(&config.data_dir)?;
    let open_files = crate::process::raise_open_files_limit();
    tracing::debug!(?open_files, "open-files limit");
    for spool in &config.spools {
        prepare_spool_dir(&spool.root)?;
    }
    let store = open_store_retrying(&config, &shutdown)?;
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind(config.listen))
        .with_context(|| format!("listening on {}", config.listen))?;
    let listen: SocketAddr = listener.local_addr().unwrap_or(config.listen);

    let counters = Arc::new(WatchCounters::default());
    let (metrics, mut registry) = Metrics::new(counters.clone());
    metrics.init_spools(config.spools.iter().map(|s| &*s.name));
    // Room for bursts; past it the inotify reader keeps files waiting in its own list.
    let (ready_tx, ready_rx) = std::sync::mpsc::sync_channel(16_384);
    let store_dyn: Arc<dyn Store> = store.clone();
    let index = Arc::new(probewatch_store::SeriesIndex::new());
    let (commit_tx, commit_rx) = std::sync::mpsc::sync_channel(64);
    let settings = IngestSettings {
        on_commit: Some(commit_tx),
        shutdown: shutdown.clone(),
        ..ingest_settings(&config)
    };
    crate::telemetry::register_ingest_state(
        &mut registry,
        counters.clone(),
        settings.handled.clone(),
        settings.health.clone(),
    );
    // Rules wait until the startup backlog is ingested: evaluated before, an absence rule
    // would fire for every probe whose results are still queued.
    // Nor before the agents' state is known: an agent that went away while this server was
    // down must count as offline before an absence rule looks at its hosts.
    let agents_swept = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let caught_up = {
        let (counters, handled) = (counters.clone(), settings.handled.clone());
        let swept = agents_swept.clone();
        let mut target: Option<u64> = None;
        move || {
            if target.is_none() && counters.startup_scan_done.load(Ordering::SeqCst) {
                target = Some(counters.files_ready.load(Ordering::SeqCst));
            }
            target.is_some_and(|t| handled.load(Ordering::SeqCst) >= t)
                && swept.load(Ordering::SeqCst)
        }
    };
    // One server of those sharing the store evaluates rules: the lease decides which.
    let (leadership, lease_thread) = crate::cluster::start(
        store_dyn.clone(),
        probewatch_store::InstanceBeat {
            id: crate::cluster::instance_id(),
            address: listen.to_string(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            started_at_ms: crate::ingest::now_ms(),
        },
        config.leader_lease,
        shutdown.clone(),
    )
    .context("starting the lease thread")?;
    let alerting = Arc::new(
        crate::alerting::Alerting::start(
            &config.alerting,
            store_dyn.clone(),
            index.clone(),
            commit_rx,
            Box::new(caught_up),
            shutdown.flag(),
            leadership,
            crate::telemetry::RuleMetrics::register(&mut registry),
        )
        .context("starting alerting")?,
    );
    crate::telemetry::register_outbox(
        &mut registry,
        store_dyn.clone(),
        alerting.deliveries.clone(),
    );
    let info = Arc::new(server_info(&config, listen, settings.metadata.clone()));
    let pages = Arc::new(probewatch_web::PageSettingsCell::new(page_settings(
        &config,
    )));
    let _ = reloader.set(Arc::new(Reloader::new(
        config.origin.clone(),
        config.clone(),
        alerting.clone(),
        info.clone(),
        pages.clone(),
        &mut registry,
    )));
    let health = settings.health.clone();
    let pipeline = Pipeline::start(settings, store_dyn.clone(), metrics.clone(), ready_rx)
        .context("starting the ingest threads")?;
    let watch_counters = counters.clone();
    let watcher = Watcher::start(watch_config(&config), ready_tx, counters)
        .context("starting the spool watcher")?;

    print_banner(&config, listen, &alerting);

    let retention = spawn_retention(
        store_dyn.clone(),
        config.retention,
        config.prune_interval,
        shutdown.clone(),
        metrics,
    )?;

    // Always there, so a reload can add the first [[agent]].
    let remote = Arc::new(crate::remote::RemoteIngestor::new(
        config.agents.clone(),
        pipeline.remote(),
        store_dyn.clone(),
        config.max_file_bytes,
        config.clock_skew_tolerance,
        config.agent_offline_after,
        agents_swept,
    ));
    if let Some(reloader) = reloader.get() {
        reloader.attach_remote(remote.clone());
    }
    let agent_sweeper = spawn_agent_sweeper(
        remote.clone(),
        index.clone(),
        config.agent_offline_after,
        shutdown.clone(),
    )?;
    let state = probewatch_web::AppState {
        store: store_dyn.clone(),
        registry: Arc::new(registry),
        index,
        query_options: config.query.options,
        queries: Arc::new(probewatch_web::query_gate::QueryGate::new(
            config.query.max_concurrency,
        )),
        alerting: Some(alerting.snapshots.clone()),
        api_token: config.api_token.as_deref().map(Arc::from),
        access: config.access.clone().map(Arc::new),
        reload: reloader
            .get()
            .map(|r| r.clone() as Arc<dyn probewatch_web::Reload>),
        info,
        remote: Some(remote.clone() as Arc<dyn probewatch_web::agent_api::RemoteIngest>),
        receivers: Some(alerting.clone() as Arc<dyn probewatch_web::receivers_api::Receivers>),
        maintenance: Some(alerting.maintenance.clone()),
        inhibitions: Some(alerting.inhibitions.clone()),
        pages,
        status: Some(Arc::new(crate::health::DaemonState {
            ingest: health,
            watch: watch_counters,
        })),
    };
    let served = runtime.block_on(probewatch_web::serve(
        listener,
        state,
        probewatch_web::ServeLimits::default(),
        {
            let shutdown = shutdown.clone();
            async move { shutdown.wait().await }
        },
    ));
    if let Err(err) = &served {
        tracing::error!(error = %err, "HTTP server failed; stopping");
    }
    shutdown.trigger();
    spawn_stop_watchdog();
    tracing::info!("shutting down: committing what is queued");
    watcher.stop();
    pipeline.join();
    alerting.join();
    let _ = lease_thread.join();
    let _ = retention.join();
    let _ = agent_sweeper.join();
    runtime.shutdown_timeout(Duration::from_secs(2));
    tracing::info!("stopped");
    served.context("the HTTP server failed")
}

/// Decides, every few seconds, which agents no server heard from lately (every server does
/// this; what they write is the same).
fn spawn_agent_sweeper(
    remote: Arc<crate::remote::RemoteIngestor>,
    index: Arc<probewatch_store::SeriesIndex>,
    offline_after: Duration,
    shutdown: Shutdown,
) -> anyhow::Result<std::thread::JoinHandle<()>> {
    let every = (offline_after / 3).clamp(Duration::from_millis(200), Duration::from_secs(5));
    std::thread::Builder::new()
        .name("pw-agents".into())
        .spawn(move || {
            loop {
                remote.sweep(&index);
                if shutdown.sleep(every) {
                    break;
                }
            }
        })
        .context("starting the agents' sweeper")
}

/// What the status endpoints report: start time, settings under Prometheus's flag names,
/// and the alerting configuration in Prometheus's terms.
fn server_info(
    config: &Config,
    listen: SocketAddr,
    metadata: Arc<probewatch_web::status_api::MetricMetadata>,
) -> probewatch_web::status_api::ServerInfo {
    let d = |d: Duration| {
        probewatch_promql::format_duration_ms(i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
    };
    let options = &config.query.options;
    let mut flags = std::collections::BTreeMap::new();
    for (name, value) in [
        (
            "config.file",
            config
                .origin
                .file
                .as_ref()
                .map(|f| f.display().to_string())
                .unwrap_or_default(),
        ),
        ("storage.tsdb.path", config.data_dir.display().to_string()),
        ("storage.tsdb.retention.time", d(config.retention)),
        ("web.listen-address", listen.to_string()),
        ("web.external-url", config.alerting.external_url.clone()),
        (
            "query.lookback-delta",
            d(Duration::from_millis(
                u64::try_from(options.lookback_ms).unwrap_or(0),
            )),
        ),
        ("query.max-samples", options.max_samples.to_string()),
        ("query.timeout", options.timeout.map(d).unwrap_or_default()),
        (
            "query.max-concurrency",
            config.query.max_concurrency.to_string(),
        ),
        (
            "rules.evaluation-interval",
            d(config.alerting.evaluation_interval),
        ),
    ] {
        flags.insert(name.to_string(), value);
    }
    probewatch_web::status_api::ServerInfo {
        start_time_ms: crate::ingest::now_ms(),
        storage_retention: d(config.retention),
        store: config.store.describe(),
        flags,
        settings: std::sync::RwLock::new(server_settings(config)),
        metadata,
    }
}

/// The parts of the status endpoints' answers that a reload changes.
pub fn server_settings(config: &Config) -> probewatch_web::status_api::ServerSettings {
    probewatch_web::status_api::ServerSettings {
        config_yaml: crate::alerting::prometheus_yaml(&config.alerting),
        alertmanagers: crate::alerting::alertmanager_urls(&config.alerting)
            .into_iter()
            .map(String::from)
            .collect(),
    }
}

/// Creates a spool directory that does not exist; refuses one that is a symbolic link (the
/// watcher never follows links out of a spool) or not a directory.
fn prepare_spool_dir(root: &std::path::Path) -> anyhow::Result<()> {
    match std::fs::symlink_metadata(root) {
        Ok(meta) if meta.file_type().is_symlink() => {
            let target = std::fs::read_link(root)
                .map(|t| format!(" (to {})", t.display()))
                .unwrap_or_default();
            anyhow::bail!(
                "spool {} is a symbolic link{target}; probewatch does not follow links out of a \
                 spool: configure the directory it points to",
                root.display()
            )
        }
        Ok(meta) if !meta.is_dir() => {
            anyhow::bail!("spool {} is not a directory", root.display())
        }
        Ok(_) => Ok(()),
        Err(_) => std::fs::create_dir_all(root)
            .with_context(|| format!("creating spool directory {}", root.display())),
    }
}

/// Exits the process if the stop takes longer than [`SHUTDOWN_LIMIT`].
fn spawn_stop_watchdog() {
    let spawned = std::thread::Builder::new()
        .name("pw-stop-watchdog".into())
        .spawn(|| {
            std::thread::sleep(SHUTDOWN_LIMIT);
            tracing::error!(
                "the stop took longer than {}; exiting now (uncommitted files stay in the spool)",
                humantime::format_duration(SHUTDOWN_LIMIT)
            );
            std::process::exit(1);
        });
    if let Err(err) = spawned {
        tracing::warn!(error = %err, "cannot start the stop watchdog");
    }
}

/// SIGINT and SIGTERM stop the daemon; SIGHUP reloads the configuration (once the daemon
/// has started; before that it is logged and ignored, never the default action, which would
/// kill it). Registered before this returns.
pub(crate) fn spawn_signal_listener(
    runtime: &tokio::runtime::Runtime,
    shutdown: Shutdown,
    reloader: Arc<std::sync::OnceLock<Arc<Reloader>>>,
) -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let _entered = runtime.enter();
    let mut term = signal(SignalKind::terminate()).context("listening for SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("listening for SIGINT")?;
    let mut hup = signal(SignalKind::hangup()).context("listening for SIGHUP")?;
    runtime.spawn(async move {
        loop {
            tokio::select! {
                _ = term.recv() => break,
                _ = int.recv() => break,
                _ = hup.recv() => match reloader.get() {
                    Some(reloader) => {
                        tracing::info!("SIGHUP received; reloading the configuration");
                        let reloader = reloader.clone();
                        // The outcome is logged and shown by the reloader itself.
                        tokio::task::spawn_blocking(move || reloader.reload());
                    }
                    None => tracing::warn!("SIGHUP received while starting; ignored"),
                },
                () = shutdown.wait() => return,
            }
        }
        tracing::info!("stop signal received");
        shutdown.trigger();
    });
    Ok(())
}

/// Opens the configured store. A database server that cannot be reached yet (starting,
/// restarting, a network blip) is retried with backoff until it answers or the daemon is
/// told to stop; one that answers no (wrong password, no such database, a standby, a newer
/// schema) fails at once with the reason.
fn open_store_retrying(config: &Config, shutdown: &Shutdown) -> anyhow::Result<Arc<dyn Store>> {
    let mut wait = Duration::from_secs(1);
    loop {
        match probewatch_store::open_store(&config.store, &config.store_options) {
            Ok(store) => return Ok(store),
            Err(StoreError::Unreachable(reason)) => {
                tracing::warn!(
                    store = %config.store.describe(),
                    retry_in = ?wait,
                    "{reason}; retrying"
                );
                if shutdown.sleep(wait) {
                    anyhow::bail!("stopped while waiting for the store: {reason}");
                }
                wait = (wait * 2).min(Duration::from_secs(30));
            }
            Err(err) => {
                return Err(anyhow::Error::new(err)
                    .context(format!("opening the store {}", config.store.describe())));
            }
        }
    }
}

/// Prints what the daemon watches and where it serves.
fn print_banner(config: &Config, listen: SocketAddr, alerting: &crate::alerting::Alerting) {
    println!("probewatch {} running", env!("CARGO_PKG_VERSION"));
    for spool in &config.spools {
        let after = match &spool.after_ingest {
            AfterIngest::Keep => "keep files".to_string(),
            AfterIngest::Delete => "delete files after ingest".to_string(),
            AfterIngest::Move(dir) => format!("move files to {}", dir.display()),
        };
        let how = match config.watch_mode {
            WatchMode::Poll(interval) => {
                format!("polled every {}", humantime::format_duration(interval))
            }
            _ => "inotify".to_string(),
        };
        println!(
            "  spool {:<10} {} ({}, {how}, {after})",
            spool.name,
            spool.root.display(),
            spool.format.as_str()
        );
    }
    println!("  store            {}", config.store.describe());
    println!("  http             http://{listen}/  (API: /api/v1/stats, /api/v1/checks, /metrics)");
    match &config.access {
        Some(access) => println!(
            "  access           basic auth as {:?} (or the API token); /healthz open",
            access.username
        ),
        None if !listen.ip().is_loopback() => {
            println!(
                "  access           open to anyone who can connect: set [access] in the config"
            );
            tracing::warn!(%listen, "the dashboard and API listen beyond loopback without [access]");
        }
        None => println!("  access           open (loopback only)"),
    }
    println!(
        "  promql           /api/v1/query, /api/v1/query_range, /api/v1/series, /api/v1/labels"
    );
    let engine = alerting.snapshots.load();
    let rules: usize = engine.groups().iter().map(|g| g.rules.len()).sum();
    println!(
        "  rules            {} files, {} groups, {rules} rules; {} receivers (/api/v1/rules, /api/v1/alerts)",
        config.alerting.rule_files.len(),
        engine.groups().len(),
        config.alerting.receivers.len()
    );
}

/// Prunes data older than the retention a minute after start (or after `interval`, if that
/// is shorter), then every `interval`.
fn spawn_retention(
    store: Arc<dyn Store>,
    retention: Duration,
    interval: Duration,
    shutdown: Shutdown,
    metrics: Arc<Metrics>,
) -> anyhow::Result<std::thread::JoinHandle<()>> {
    let thread = std::thread::Builder::new()
        .name("pw-retention".into())
        .spawn(move || {
            let mut wait = interval.min(Duration::from_secs(60));
            while !shutdown.sleep(wait) {
                let cutoff = crate::ingest::now_ms()
                    - i64::try_from(retention.as_millis()).unwrap_or(i64::MAX);
                let exists = |path: &[u8]| {
                    use std::os::unix::ffi::OsStrExt;
                    std::fs::symlink_metadata(std::ffi::OsStr::from_bytes(path)).is_ok()
                };
                let started = std::time::Instant::now();
                let pruned = store.prune(cutoff, &exists);
                tracing::debug!(
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    "retention pass done"
                );
                match pruned {
                    Ok(s) if s.samples + s.check_results + s.files > 0 => tracing::info!(
                        samples = s.samples,
                        check_results = s.check_results,
                        ledger_rows = s.files,
                        bytes_released = s.bytes_released,
                        "retention pruned old data"
                    ),
                    Ok(_) => {}
                    Err(err) => {
                        metrics.store_error("prune");
                        tracing::error!(error = %err, "retention pruning failed");
                    }
                }
                wait = interval;
            }
        })?;
    Ok(thread)
}

/// The status page and time zone pages use, from `config`.
pub fn page_settings(config: &Config) -> probewatch_web::PageSettings {
    probewatch_web::PageSettings {
        status_page: config.status_page.clone().map(Arc::new),
        time_zone: config.time_zone.clone(),
    }
}

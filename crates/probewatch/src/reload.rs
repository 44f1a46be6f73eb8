//! Configuration reload without a restart (SIGHUP and `POST /-/reload`), as Prometheus does
//! it: the file is read and validated whole, and only then applied; a file that does not load
//! leaves everything running as it was and says why (log, `/-/reload`'s answer,
//! `probewatch_config_last_reload_successful`, the /rules page).
//!
//! What a reload applies: rule files (globs expanded again), routes, receivers, the
//! external URL, the `[[agent]]` tokens, the status page and the pages' time zone. Settings the running threads were built from (spools, listen address, data
//! directory, limits) are compared, and a change to them is reported as needing a restart.

use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};

use probewatch_web::ReloadStatus;
use probewatch_web::status_api::ServerInfo;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::alerting::Alerting;
use crate::config::{Config, Overrides};

/// Where the running configuration came from, so a reload reads it the same way.
#[derive(Debug, Clone, Default)]
pub struct ConfigOrigin {
    /// The configuration file (`None`: defaults and flags only; a reload then re-reads the
    /// rule files it names).
    pub file: Option<PathBuf>,
    /// The command-line flags that override the file.
    pub overrides: Overrides,
}

/// Reloads the configuration; shared by the signal handler and the HTTP endpoint (one
/// reload at a time).
pub struct Reloader {
    origin: ConfigOrigin,
    running: Mutex<Config>,
    alerting: Arc<Alerting>,
    info: Arc<ServerInfo>,
    pages: Arc<probewatch_web::PageSettingsCell>,
    status: Mutex<ReloadStatus>,
    successful: Gauge,
    success_time: Gauge<f64, AtomicU64>,
    /// Takes the `[[agent]]` tables (set once the ingest pipeline runs).
    remote: std::sync::OnceLock<Arc<crate::remote::RemoteIngestor>>,
}

impl Reloader {
    /// A reloader for the daemon started with `config`; registers its two metrics
    /// (`probewatch_config_last_reload_successful` and `…_success_timestamp_seconds`).
    pub fn new(
        origin: ConfigOrigin,
        config: Config,
        alerting: Arc<Alerting>,
        info: Arc<ServerInfo>,
        pages: Arc<probewatch_web::PageSettingsCell>,
        registry: &mut Registry,
    ) -> Reloader {
        let successful = Gauge::default();
        let success_time = Gauge::<f64, AtomicU64>::default();
        registry.register(
            "config_last_reload_successful",
            "Whether the last configuration reload (or the start) succeeded",
            successful.clone(),
        );
        registry.register(
            "config_last_reload_success_timestamp_seconds",
            "When the configuration in use was loaded",
            success_time.clone(),
        );
        let now = crate::ingest::now_ms();
        successful.set(1);
        success_time.set(now as f64 / 1000.0);
        Reloader {
            origin,
            running: Mutex::new(config),
            alerting,
            info,
            pages,
            status: Mutex::new(ReloadStatus {
                successful: true,
                last_success_ms: now,
                last_error: None,
            }),
            successful,
            success_time,
            remote: std::sync::OnceLock::new(),
        }
    }

    /// Lets reloads replace the agents' tokens.
    pub fn attach_remote(&self, remote: Arc<crate::remote::RemoteIngestor>) {
        let _ = self.remote.set(remote);
    }

    /// Reads the configuration again and applies it; on error nothing changes.
    pub fn reload(&self) -> Result<(), String> {
        let mut running = self.running.lock().unwrap_or_else(|e| e.into_inner());
        let result = self.try_reload(&running);
        let now = crate::ingest::now_ms();
        let mut status = self.status.lock().unwrap_or_else(|e| e.into_inner());
        match result {
            Ok((config, needs_restart)) => {
                if !needs_restart.is_empty() {
                    tracing::warn!(
                        settings = %needs_restart.join(", "),
                        "configuration reloaded; these changed settings apply at the next restart"
                    );
                }
                tracing::info!(
                    rule_files = config.alerting.rule_files.len(),
                    receivers = config.alerting.receivers.len(),
                    "configuration reloaded"
                );
                *self
                    .info
                    .settings
                    .write()
                    .unwrap_or_else(|e| e.into_inner()) = crate::daemon::server_settings(&config);
                *running = config;
                *status = ReloadStatus {
                    successful: true,
                    last_success_ms: now,
                    last_error: None,
                };
                self.successful.set(1);
                self.success_time.set(now as f64 / 1000.0);
                Ok(())
            }
            Err(err) => {
                let text = format!("{err:#}");
                tracing::error!(error = %text,
                    "configuration reload failed; the running configuration stays in use");
                status.successful = false;
                status.last_error = Some(text.clone());
                self.successful.set(0);
                Err(text)
            }
        }
    }

    /// The new configuration, once applied, and the names of changed settings that need a
    /// restart.
    fn try_reload(&self, running: &Config) -> anyhow::Result<(Config, Vec<&'static str>)> {
        let new = match &self.origin.file {
            Some(file) => Config::load(Some(file), &self.origin.overrides)?,
            // No file: the rule files named at the start are read again.
            None => running.clone(),
        };
        self.alerting.reload(&new.alerting)?;
        if let Some(remote) = self.remote.get() {
            remote.replace_agents(new.agents.clone());
        }
        self.pages.replace(crate::daemon::page_settings(&new));
        let changed = restart_needed(running, &new);
        Ok((new, changed))
    }
}

/// Settings that differ between `old` and `new` and that only a restart applies.
fn restart_needed(old: &Config, new: &Config) -> Vec<&'static str> {
    let fields: [(&'static str, String, String); 17] = [
        ("data_dir", f(&old.data_dir), f(&new.data_dir)),
        ("listen", f(&old.listen), f(&new.listen)),
        ("retention", f(&old.retention), f(&new.retention)),
        (
            "prune_interval",
            f(&old.prune_interval),
            f(&new.prune_interval),
        ),
        (
            "max_file_bytes",
            f(&old.max_file_bytes),
            f(&new.max_file_bytes),
        ),
        ("settle", f(&old.settle), f(&new.settle)),
        (
            "clock_skew_tolerance",
            f(&old.clock_skew_tolerance),
            f(&new.clock_skew_tolerance),
        ),
        ("watch", f(&old.watch_mode), f(&new.watch_mode)),
        (
            "poll_interval",
            f(&old.poll_interval),
            f(&new.poll_interval),
        ),
        (
            "rescan_interval",
            f(&old.rescan_interval),
            f(&new.rescan_interval),
        ),
        (
            "max_watched_dirs",
            f(&old.max_watched_dirs),
            f(&new.max_watched_dirs),
        ),
        (
            "batch_max_files",
            f(&old.batch_max_files),
            f(&new.batch_max_files),
        ),
        ("spool", f(&old.spools), f(&new.spools)),
        ("api_token", f(&old.api_token), f(&new.api_token)),
        ("access", f(&old.access), f(&new.access)),
        ("query", f(&old.query), f(&new.query)),
        (
            "agent_offline_after",
            f(&old.agent_offline_after),
            f(&new.agent_offline_after),
        ),
    ];
    fields
        .into_iter()
        .filter(|(_, a, b)| a != b)
        .map(|(name, _, _)| name)
        .collect()
}

fn f(value: &impl std::fmt::Debug) -> String {
    format!("{value:?}")
}

impl probewatch_web::Reload for Reloader {
    fn reload(&self) -> Result<(), String> {
        Reloader::reload(self)
    }

    fn status(&self) -> ReloadStatus {
        self.status
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

//! The command line: `probewatch run | agent | demo | check | ingest | rules | silence |
//! status | alerts | bench* | example-config`.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// probewatch: ingests probe result files the moment they are complete, exactly once.
#[derive(Debug, Parser)]
#[command(name = "probewatch", version, about, propagate_version = true)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon: watch the spools, ingest, serve the HTTP API.
    Run(RunArgs),
    /// Run on a probe host: watch its spools and deliver every complete result file to the
    /// central servers, each version once (see docs/agent.md).
    Agent(crate::agent::AgentArgs),
    /// Run everything on a temporary directory with built-in example probes and rules, to
    /// see the dashboard and alerts working within a minute.
    Demo {
        /// HTTP listen address (default 127.0.0.1:9180).
        #[arg(long)]
        listen: Option<String>,
    },
    /// Run a Nagios plugin with a timeout and write its result (status, output, perfdata)
    /// into a spool, atomically.
    Exec(crate::exec::ExecArgs),
    /// Validate result files as probewatch would; exit 1 if any is bad.
    Check(CheckArgs),
    /// Import files or directories once, with the same exactly-once ledger; exit 1 if any
    /// file was rejected.
    Ingest(IngestArgs),
    /// Measure ingest throughput and latency with a load generator (see docs/benchmarks.md).
    Bench(crate::bench::BenchArgs),
    /// Measure PromQL query times over one long stored series (see docs/benchmarks.md).
    BenchQuery(crate::bench_query::BenchQueryArgs),
    /// Measure the dashboard's heaviest pages over HTTP (see docs/benchmarks.md).
    BenchDashboard(crate::bench_dashboard::BenchDashboardArgs),
    /// Measure PromQL and the series API over many series, beside Prometheus on the same
    /// samples (see docs/benchmarks.md).
    BenchPromql(crate::bench_promql::BenchPromqlArgs),
    /// Measure ingest batches into each store back end (SQLite, PostgreSQL) beside a bare
    /// binary-COPY loop of the same rows (see docs/benchmarks.md)
    BenchStore(crate::bench_store::BenchStoreArgs),
    /// Measure files delivered by agents to two servers on PostgreSQL, beside one server
    /// ingesting its own spool (see docs/benchmarks.md).
    BenchAgents(crate::bench_agents::BenchAgentsArgs),
    /// Measure how fast each result format parses, beside XML (see docs/benchmarks.md).
    BenchFormats(crate::bench_formats::BenchFormatsArgs),
    /// Measure one evaluation cycle of many alert rules over many series.
    BenchRules(crate::bench_rules::BenchRulesArgs),
    /// Measure the time from a failing result file to the webhook receiving the alert.
    BenchAlert(crate::bench_alert::BenchAlertArgs),
    /// Work with Prometheus rule files.
    #[command(subcommand)]
    Rules(RulesCommand),
    /// Create, list and expire silences: on a running daemon with --server URL, or in the
    /// data directory's store (a running daemon applies them at its next evaluation).
    #[command(subcommand)]
    Silence(SilenceCommand),
    /// A running daemon's state: ready or not, what is wrong, what fires, whether
    /// notifications go out (exit 1 when it is unreachable or not ready).
    Status {
        /// The daemon and credentials.
        #[command(flatten)]
        server: crate::client::ServerArgs,
    },
    /// A running daemon's active alerts, those matching every MATCHER (e.g.
    /// 'severity="page"').
    Alerts {
        /// The daemon and credentials.
        #[command(flatten)]
        server: crate::client::ServerArgs,
        /// PromQL label matchers.
        matchers: Vec<String>,
    },
    /// Print an example configuration file with every setting.
    ExampleConfig,
}

/// `probewatch silence ...`
#[derive(Debug, Subcommand)]
pub enum SilenceCommand {
    /// Silence alerts matching every --matcher, from now (or --start) for --duration (or
    /// until --end).
    Add {
        /// Config, data directory.
        #[command(flatten)]
        common: ConfigArgs,
        /// A running daemon to ask instead of the store.
        #[command(flatten)]
        remote: crate::client::ServerArgs,
        /// A PromQL label matcher, e.g. 'probe="web"' or 'severity=~"page|ticket"'
        /// (repeatable; all must match).
        #[arg(long = "matcher", short = 'm', required = true)]
        matchers: Vec<String>,
        /// How long, e.g. 2h (or give --end).
        #[arg(long)]
        duration: Option<String>,
        /// Start (RFC 3339 or Unix seconds; default now).
        #[arg(long)]
        start: Option<String>,
        /// End (RFC 3339 or Unix seconds).
        #[arg(long)]
        end: Option<String>,
        /// Why.
        #[arg(long, required = true)]
        comment: String,
        /// Who (default: $USER).
        #[arg(long)]
        author: Option<String>,
    },
    /// List silences.
    List {
        /// Config, data directory.
        #[command(flatten)]
        common: ConfigArgs,
        /// A running daemon to ask instead of the store.
        #[command(flatten)]
        remote: crate::client::ServerArgs,
    },
    /// Expire a silence now.
    Expire {
        /// Config, data directory.
        #[command(flatten)]
        common: ConfigArgs,
        /// A running daemon to ask instead of the store.
        #[command(flatten)]
        remote: crate::client::ServerArgs,
        /// Silence id.
        id: i64,
    },
}

/// `probewatch rules ...`
#[derive(Debug, Subcommand)]
pub enum RulesCommand {
    /// Check rule files: YAML structure, every PromQL expression and template; exit 1 if
    /// any file is wrong.
    Check {
        /// Rule files.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Run rule unit tests written in promtool's test-file format; exit 1 if any fails.
    Test {
        /// Test files.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
}

/// Options shared by commands that read the configuration.
#[derive(Debug, Args, Clone, Default)]
pub struct ConfigArgs {
    /// Configuration file (TOML); without it, built-in defaults.
    #[arg(long, short, env = "PROBEWATCH_CONFIG")]
    pub config: Option<PathBuf>,
    /// Data directory (default ./probewatch-data).
    #[arg(long, env = "PROBEWATCH_DATA")]
    pub data: Option<PathBuf>,
    /// The store: postgres://user@host:port/database for a central PostgreSQL (password from
    /// PROBEWATCH_STORE_PASSWORD or the config's store_password_file), or sqlite:DIR;
    /// default SQLite in the data directory.
    #[arg(long, env = "PROBEWATCH_STORE", value_name = "URL")]
    pub store: Option<String>,
    /// Log format: text or json.
    #[arg(long, env = "PROBEWATCH_LOG_FORMAT")]
    pub log_format: Option<String>,
}

/// `probewatch run`.
#[derive(Debug, Args, Clone, Default)]
pub struct RunArgs {
    /// Config, data directory, log format.
    #[command(flatten)]
    pub common: ConfigArgs,
    /// Spool directory to watch (repeatable; replaces the config file's spools).
    #[arg(long = "spool", value_name = "DIR")]
    pub spools: Vec<PathBuf>,
    /// HTTP listen address (default 127.0.0.1:9180).
    #[arg(long, env = "PROBEWATCH_LISTEN")]
    pub listen: Option<String>,
    /// Poll the spools every INTERVAL instead of using inotify (NFS, some container volumes).
    #[arg(long, value_name = "INTERVAL")]
    pub poll: Option<String>,
}

/// `probewatch check`.
#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Result files or directories.
    #[arg(required = true)]
    pub paths: Vec<PathBuf>,
    /// Largest accepted file in bytes.
    #[arg(long, default_value_t = crate::config::DEFAULT_MAX_FILE_BYTES)]
    pub max_file_bytes: u64,
    /// xml, json, prometheus, nagios or auto (default: by the file's extension, then by its
    /// content).
    #[arg(long)]
    pub format: Option<String>,
    /// Check the files as this spool of the configuration reads them (its format, and its
    /// mapping for format "mapping").
    #[arg(long, value_name = "NAME", requires = "config")]
    pub spool: Option<String>,
    /// The configuration file that names --spool.
    #[arg(long, short)]
    pub config: Option<PathBuf>,
}

/// `probewatch ingest`.
#[derive(Debug, Args)]
pub struct IngestArgs {
    /// Config, data directory, log format.
    #[command(flatten)]
    pub common: ConfigArgs,
    /// Result files or directories.
    #[arg(required = true)]
    pub paths: Vec<PathBuf>,
}

//! `probewatch bench-agents`: files delivered by real `probewatch agent` processes to two
//! servers on one PostgreSQL database, beside one server ingesting the same files from its
//! own spool into the same PostgreSQL, in one invocation.
//!
//! Three measurements, each on a fresh database:
//! 1. **direct**: one `probewatch run` ingests a backlog of `--files` files from its spool
//!    (the part-1 path), from its start to the last commit;
//! 2. **drain**: the same number of files waits in the spools of `--agents` agents (an
//!    outage's backlog); two servers start, then every agent at once; timed from the agents'
//!    start to the last commit; each agent's peak RSS and CPU are read from /proc;
//! 3. **live**: with the agents running, files are written at `--rate` a second for
//!    `--seconds`, taking turns among the agents; the latency of each, from its close to
//!    its commit on a server, as the ledger records it.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use probewatch_store::StoreLocation;

use crate::bench::{Daemon, median, percentile, proc_usage, result_file, wait_committed};

/// `probewatch bench-agents` options.
#[derive(Debug, Args, Clone)]
pub struct BenchAgentsArgs {
    /// A PostgreSQL URL whose user may create databases (each phase makes a fresh one and
    /// drops it after), e.g. postgres://postgres@127.0.0.1:5432/postgres.
    #[arg(long)]
    pub postgres: String,
    /// Agent processes.
    #[arg(long, default_value_t = 100)]
    pub agents: usize,
    /// Files in the backlog (direct and drain).
    #[arg(long, default_value_t = 100_000)]
    pub files: u64,
    /// Distinct checks the files report.
    #[arg(long, default_value_t = 1_000)]
    pub checks: u64,
    /// Files a second in the live phase.
    #[arg(long, default_value_t = 1_000)]
    pub rate: u64,
    /// How long the live phase writes.
    #[arg(long, default_value_t = 20)]
    pub seconds: u64,
    /// Leave out the direct phase (for a drain of a very large backlog alone).
    #[arg(long)]
    pub no_direct: bool,
    /// Where to make the spools and data directories (tmpfs such as /dev/shm keeps the disk
    /// out of the figures).
    #[arg(long)]
    pub dir: Option<PathBuf>,
}

/// The token of agent `i`.
fn token(i: usize) -> String {
    format!("bench-agent-token-{i:05}-0123456789")
}

/// A result file's hosts, as `result_file` writes them.
const HOSTS: &str = r#"["host-0", "host-1", "host-2", "host-3", "host-4", "host-5", "host-6"]"#;

fn write_files(spools: &[PathBuf], range: std::ops::Range<u64>, checks: u64) -> anyhow::Result<()> {
    for n in range {
        let spool = &spools[usize::try_from(n).unwrap_or(0) % spools.len()];
        std::fs::write(spool.join(format!("f{n:08}.xml")), result_file(n, checks))?;
    }
    Ok(())
}

/// One running agent.
struct AgentProcess {
    child: Child,
}

impl AgentProcess {
    fn start(work: &Path, i: usize, servers: &[String]) -> anyhow::Result<AgentProcess> {
        let home = work.join(format!("agent-{i:03}"));
        let config = home.join("agent.toml");
        // Half the agents list the other server first, so both carry load.
        let mut servers = servers.to_vec();
        let turn = i % servers.len().max(1);
        servers.rotate_left(turn);
        std::fs::write(
            &config,
            format!(
                "server = {servers:?}\nname = \"agent-{i:03}\"\ntoken = \"{}\"\ndata_dir = {:?}\n\
                 [[spool]]\npath = {:?}\n",
                token(i),
                home.join("data").display().to_string(),
                home.join("spool").display().to_string(),
            ),
        )?;
        let log = std::fs::File::create(home.join("agent.log"))?;
        let child = Command::new(std::env::current_exe()?)
            .args(["agent", "--config"])
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("starting probewatch agent")?;
        Ok(AgentProcess { child })
    }

    fn stop(mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }
}

/// A server's configuration: its own spool, the shared store and every agent's token.
fn server_config(spool: &Path, url: &str, agents: usize) -> String {
    let mut text = format!(
        "store = {url:?}\n[[spool]]\npath = {:?}\n",
        spool.display().to_string()
    );
    for i in 0..agents {
        text.push_str(&format!(
            "[[agent]]\nname = \"agent-{i:03}\"\ntoken = \"{}\"\nhosts = {HOSTS}\n",
            token(i)
        ));
    }
    text
}

fn fresh_work(base: &Path, name: &str) -> anyhow::Result<PathBuf> {
    let work = base.join(format!(
        "probewatch-bench-agents-{name}-{}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(work.join("spool"))?;
    Ok(work)
}

/// Phase 1: one server ingests the backlog from its own spool.
fn direct(args: &BenchAgentsArgs, base: &Path) -> anyhow::Result<f64> {
    let name = format!("probewatch_agents_direct_{}", std::process::id());
    let url = crate::bench_store::fresh_database(&args.postgres, &name)?;
    let work = fresh_work(base, "direct")?;
    let result = (|| {
        write_files(&[work.join("spool")], 0..args.files, args.checks)?;
        let start = Instant::now();
        let daemon = Daemon::start_with(&work, &server_config(&work.join("spool"), &url, 0))?;
        wait_committed(
            &StoreLocation::Postgres(url.clone()),
            args.files,
            Duration::from_secs(3600),
        )?;
        let rate = args.files as f64 / start.elapsed().as_secs_f64();
        daemon.stop();
        Ok(rate)
    })();
    crate::bench_store::drop_database(&args.postgres, &name);
    let _ = std::fs::remove_dir_all(&work);
    result
}

/// What the agents' phases measured.
struct AgentFigures {
    drain_files_per_sec: f64,
    rss_mib_median: f64,
    rss_mib_max: f64,
    cpu_seconds_total: f64,
    live_p50_ms: f64,
    live_p99_ms: f64,
    live_files_per_sec: f64,
}

/// Phases 2 and 3: the backlog drained through the agents, then files written live.
fn through_agents(args: &BenchAgentsArgs, base: &Path) -> anyhow::Result<AgentFigures> {
    let name = format!("probewatch_agents_fleet_{}", std::process::id());
    let url = crate::bench_store::fresh_database(&args.postgres, &name)?;
    let work = fresh_work(base, "fleet")?;
    let result = (|| {
        let spools: Vec<PathBuf> = (0..args.agents)
            .map(|i| work.join(format!("agent-{i:03}")).join("spool"))
            .collect();
        for spool in &spools {
            std::fs::create_dir_all(spool)?;
        }
        write_files(&spools, 0..args.files, args.checks)?;
        let mut servers = Vec::new();
        for s in ["server-a", "server-b"] {
            let home = work.join(s);
            std::fs::create_dir_all(home.join("spool"))?;
            servers.push(Daemon::start_with(
                &home,
                &server_config(&home.join("spool"), &url, args.agents),
            )?);
        }
        let urls: Vec<String> = servers.iter().map(|s| s.base.clone()).collect();
        let start = Instant::now();
        let agents = (0..args.agents)
            .map(|i| AgentProcess::start(&work, i, &urls))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let location = StoreLocation::Postgres(url.clone());
        wait_committed(&location, args.files, Duration::from_secs(3600))?;
        let drain = args.files as f64 / start.elapsed().as_secs_f64();
        let stats = probewatch_store::open_store(&location, &Default::default())?.stats()?;
        if stats.files_rejected > 0 || stats.files_ingested != args.files {
            anyhow::bail!(
                "the servers stored {} files and rejected {} of {}: see the agents' logs in {}",
                stats.files_ingested,
                stats.files_rejected,
                args.files,
                work.display()
            );
        }

        // Live: a paced writer, each file's close time kept by name.
        let total = args.rate * args.seconds;
        let mut closed: Vec<(String, i64)> = Vec::with_capacity(usize::try_from(total)?);
        let live_start = Instant::now();
        for k in 0..total {
            let due = live_start + Duration::from_secs_f64(k as f64 / args.rate as f64);
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
            let n = args.files + k;
            let spool = &spools[usize::try_from(k).unwrap_or(0) % spools.len()];
            let name = format!("f{n:08}.xml");
            let tmp = spool.join(format!(".{name}.tmp"));
            std::fs::write(&tmp, result_file(n, args.checks))?;
            std::fs::rename(&tmp, spool.join(&name))?;
            closed.push((name, crate::ingest::now_ms() * 1000));
        }
        let committed = wait_committed(&location, args.files + total, Duration::from_secs(600))?;
        let live_secs = live_start.elapsed().as_secs_f64();
        let mut latencies: Vec<f64> = closed
            .iter()
            .filter_map(|(name, at)| committed.get(name).map(|c| (c - at) as f64 / 1000.0))
            .collect();
        latencies.sort_by(f64::total_cmp);
        let usage: Vec<(f64, f64)> = agents.iter().map(|a| proc_usage(a.child.id())).collect();
        for agent in agents {
            agent.stop();
        }
        for server in servers {
            server.stop();
        }
        let mut rss: Vec<f64> = usage.iter().map(|u| u.1).collect();
        Ok(AgentFigures {
            drain_files_per_sec: drain,
            rss_mib_max: rss.iter().copied().fold(0.0, f64::max),
            rss_mib_median: median(&mut rss),
            cpu_seconds_total: usage.iter().map(|u| u.0).sum(),
            live_p50_ms: percentile(&latencies, 50.0),
            live_p99_ms: percentile(&latencies, 99.0),
            live_files_per_sec: total as f64 / live_secs,
        })
    })();
    crate::bench_store::drop_database(&args.postgres, &name);
    let _ = std::fs::remove_dir_all(&work);
    result
}

/// Entry point of `probewatch bench-agents`.
pub fn run(args: &BenchAgentsArgs) -> anyhow::Result<std::process::ExitCode> {
    let tmp = crate::bench::temp_work_dir(args.dir.as_deref())?;
    let base = tmp.path();
    println!(
        "bench-agents: {} files at {} checks; {} agents → 2 servers → PostgreSQL ({})",
        args.files,
        args.checks,
        args.agents,
        probewatch_store::postgres::redact_url(&args.postgres)
    );
    let direct = if args.no_direct {
        f64::NAN
    } else {
        direct(args, base)?
    };
    println!("direct (one server, its own spool):   {direct:>8.0} files/s");
    let fleet = through_agents(args, base)?;
    println!(
        "drain through {} agents:              {:>8.0} files/s   ({:.2}× direct)",
        args.agents,
        fleet.drain_files_per_sec,
        fleet.drain_files_per_sec / direct
    );
    println!(
        "agent peak RSS:                        median {:.1} MiB, max {:.1} MiB; CPU of all agents {:.1} s",
        fleet.rss_mib_median, fleet.rss_mib_max, fleet.cpu_seconds_total
    );
    println!(
        "live at {} files/s for {} s:           {:.0} files/s, close → commit p50 {:.0} ms, p99 {:.0} ms",
        args.rate, args.seconds, fleet.live_files_per_sec, fleet.live_p50_ms, fleet.live_p99_ms
    );
    Ok(std::process::ExitCode::SUCCESS)
}

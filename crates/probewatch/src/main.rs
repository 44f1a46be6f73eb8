//! The `probewatch` binary: parses the command line and hands over to a command.

use std::process::ExitCode;

use clap::Parser;
use probewatch::cli::{Cli, Command};

/// mimalloc instead of glibc malloc: the prepare thread allocates every parsed result and the
/// writer thread frees it, and glibc's per-arena locking and consolidation on those
/// cross-thread frees showed up at several percent of the hot path (docs/benchmarks.md).
#[cfg(not(feature = "heapprof"))]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    // Commands plan and evaluate PromQL on this thread (rule files, `rules test`), so it gets
    // the stack the engine's depth limits are measured against.
    let main = std::thread::Builder::new()
        .name("main".into())
        .stack_size(probewatch_promql::limits::STACK_BYTES)
        .spawn(run);
    match main.map(std::thread::JoinHandle::join) {
        Ok(Ok(code)) => code,
        Ok(Err(_)) => ExitCode::from(101),
        Err(err) => {
            eprintln!("probewatch: error: cannot start: {err}");
            ExitCode::from(2)
        }
    }
}

fn run() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run(args) => probewatch::daemon::run_command(args),
        Command::Agent(args) => probewatch::agent::agent_command(args),
        Command::Demo { listen } => probewatch::demo::run(listen),
        Command::Check(args) => probewatch::commands::check(&args),
        Command::Exec(args) => probewatch::exec::exec_command(&args),
        Command::Ingest(args) => probewatch::commands::ingest(&args),
        Command::Bench(args) => probewatch::bench::run(&args),
        Command::BenchQuery(args) => probewatch::bench_query::run(&args),
        Command::BenchDashboard(args) => probewatch::bench_dashboard::run(&args),
        Command::BenchPromql(args) => probewatch::bench_promql::run(&args),
        Command::BenchStore(args) => probewatch::bench_store::run(&args),
        Command::BenchAgents(args) => probewatch::bench_agents::run(&args),
        Command::BenchFormats(args) => probewatch::bench_formats::run(&args),
        Command::BenchRules(args) => probewatch::bench_rules::run(&args),
        Command::BenchAlert(args) => probewatch::bench_alert::run(&args),
        Command::Rules(probewatch::cli::RulesCommand::Check { files }) => {
            Ok(probewatch::commands::rules_check(&files))
        }
        Command::Rules(probewatch::cli::RulesCommand::Test { files }) => {
            Ok(probewatch::commands::rules_test(&files))
        }
        Command::Silence(command) => probewatch::commands::silence(command),
        Command::Status { server } => probewatch::client::status(&server),
        Command::Alerts { server, matchers } => probewatch::client::alerts(&server, &matchers),
        Command::ExampleConfig => {
            print!("{}", probewatch::config::EXAMPLE);
            Ok(ExitCode::SUCCESS)
        }
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("probewatch: error: {err:#}");
            ExitCode::from(2)
        }
    }
}

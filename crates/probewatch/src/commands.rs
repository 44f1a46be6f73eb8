//! One-shot commands: `probewatch check` (validate files for probe authors) and
//! `probewatch ingest` (import files or directories through the same ledger as the daemon).

use std::io::{IsTerminal, Read};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant, UNIX_EPOCH};

use anyhow::Context;
use probewatch_core::format::FileContext;
use probewatch_core::{Format, ParseLimits, parse};
use probewatch_store::Store;
use probewatch_watch::{DEFAULT_EXCLUDE, FileReady, Filter, ReadyCause, WatchCounters, walk_files};

use crate::cli::{CheckArgs, IngestArgs};
use crate::config::{AfterIngest, Config, Overrides, Spool};
use crate::daemon::ingest_settings;
use crate::ingest::Pipeline;
use crate::telemetry::{Metrics, init_logging};

/// Expands directories into the result files below them (`include`: the format's file
/// names; no hidden or temporary files); files named explicitly are always taken.
fn expand(paths: &[PathBuf], include: &[&str]) -> anyhow::Result<Vec<(PathBuf, PathBuf)>> {
    let exclude: Vec<String> = DEFAULT_EXCLUDE.iter().map(|s| s.to_string()).collect();
    let include: Vec<String> = include.iter().map(|s| s.to_string()).collect();
    let filter = Filter::new(&include, &exclude)?;
    let mut files = Vec::new();
    for path in paths {
        let meta = std::fs::metadata(path).with_context(|| format!("{}", path.display()))?;
        let path = std::path::absolute(path)?;
        if meta.is_dir() {
            walk_files(&path, &path, &filter, &[], &mut |_| {}, &mut |file, _| {
                files.push((path.clone(), file));
            });
        } else {
            let root = path.parent().map(Path::to_path_buf).unwrap_or_default();
            files.push((root, path));
        }
    }
    files.sort();
    Ok(files)
}

/// `probewatch check FILE...`: prints every error and exits 1 if any file is bad.
pub fn check(args: &CheckArgs) -> anyhow::Result<ExitCode> {
    // A spool of the configuration: its format, and the mapping a `mapping` spool needs.
    let spool = match &args.spool {
        None => None,
        Some(name) => {
            let config = Config::load(args.config.as_deref(), &Overrides::default())?;
            Some(
                config
                    .spools
                    .into_iter()
                    .find(|s| *s.name == **name)
                    .with_context(|| format!("--spool {name:?}: no spool of that name"))?,
            )
        }
    };
    let format = match (args.format.as_deref(), &spool) {
        (Some(name), _) => Format::from_name(name).with_context(|| {
            format!("--format {name:?}: expected xml, json, prometheus, nagios or auto")
        })?,
        (None, Some(spool)) => spool.format,
        (None, None) => Format::Auto,
    };
    let mapping = spool.as_ref().and_then(|s| s.mapping.clone());
    let files = expand(&args.paths, format.default_include())?;
    let mut bad = 0usize;
    for (_, path) in &files {
        // `auto` goes by the file's name first (`.json`, `.xml`), then by its content.
        let format = match (format, path.extension().and_then(|e| e.to_str())) {
            (Format::Auto, Some("json")) => Format::Json,
            (Format::Auto, Some("xml")) => Format::Xml,
            (Format::Auto, Some("prom")) => Format::Prometheus,
            (format, _) => format,
        };
        match check_one(path, args.max_file_bytes, format, mapping.as_deref()) {
            Ok(summary) => println!("ok   {}: {summary}", path.display()),
            Err(error) => {
                bad += 1;
                println!("FAIL {}: {error}", path.display());
            }
        }
    }
    println!(
        "{} file(s) checked, {} ok, {bad} bad",
        files.len(),
        files.len() - bad
    );
    Ok(if bad == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn check_one(
    path: &Path,
    max_bytes: u64,
    format: Format,
    mapping: Option<&probewatch_core::format::mapping::Mapping>,
) -> Result<String, String> {
    let file = std::fs::File::open(path).map_err(|e| format!("cannot read: {e}"))?;
    let meta = file.metadata().map_err(|e| format!("cannot stat: {e}"))?;
    if meta.len() > max_bytes {
        return Err(format!(
            "file is {} bytes, over the limit of {max_bytes} bytes",
            meta.len()
        ));
    }
    let mut bytes = Vec::new();
    file.take(max_bytes + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("cannot read: {e}"))?;
    let mtime_ms = meta
        .modified()
        .ok()
        .and_then(|m| m.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(0));
    let results = parse(
        format,
        &bytes,
        FileContext {
            mtime_ms,
            name: path.file_name().and_then(|n| n.to_str()).unwrap_or(""),
            mapping,
        },
        &ParseLimits::default(),
    )
    .map_err(|reject| reject.to_string())?;
    let checks: usize = results.iter().map(|r| r.checks.len()).sum();
    let metrics: usize = results.iter().map(|r| r.metrics.len()).sum();
    Ok(format!(
        "{} probe result(s), {checks} check(s), {metrics} metric(s)",
        results.len()
    ))
}

/// `probewatch ingest PATH...`: imports once through the ledger, with progress on a terminal.
pub fn ingest(args: &IngestArgs) -> anyhow::Result<ExitCode> {
    let overrides = Overrides {
        data_dir: args.common.data.clone(),
        store: args.common.store.clone(),
        log_format: args.common.log_format.clone(),
        ..Overrides::default()
    };
    let mut config = Config::load(args.common.config.as_deref(), &overrides)?;
    init_logging(config.log_format);
    let files = expand(&args.paths, Format::Auto.default_include())?;
    // One pseudo-spool per root, named "import", keeping files where they are, reading each
    // file as its content says (XML or JSON).
    let mut roots: Vec<PathBuf> = files.iter().map(|(root, _)| root.clone()).collect();
    roots.dedup();
    let template = config
        .spools
        .first()
        .cloned()
        .context("no spool configured")?;
    config.spools = roots
        .iter()
        .map(|root| Spool {
            name: Arc::from("import"),
            root: root.clone(),
            format: Format::Auto,
            after_ingest: AfterIngest::Keep,
            quarantine: None,
            ..template.clone()
        })
        .collect();
    let store: Arc<dyn Store> = probewatch_store::open_store(&config.store, &config.store_options)
        .with_context(|| format!("opening the store {}", config.store.describe()))?;
    let before = store.stats()?;
    let (metrics, _registry) = Metrics::new(Arc::new(WatchCounters::default()));
    let (tx, rx) = std::sync::mpsc::sync_channel(4096);
    let pipeline = Pipeline::start(ingest_settings(&config), store.clone(), metrics.clone(), rx)?;
    let progress = if std::io::stderr().is_terminal() {
        indicatif::ProgressBar::new(files.len() as u64)
    } else {
        indicatif::ProgressBar::hidden()
    };
    progress.set_style(
        indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} files {per_sec} eta {eta}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let started = Instant::now();
    let total = files.len();
    for (index, (root, path)) in files.into_iter().enumerate() {
        let spool = roots.iter().position(|r| *r == root).unwrap_or(0);
        let ready = FileReady {
            spool,
            path,
            cause: ReadyCause::Scan,
            seen_at: Instant::now(),
        };
        if tx.send(ready).is_err() {
            break;
        }
        progress.set_position(index as u64 + 1);
    }
    drop(tx);
    pipeline.join();
    progress.finish_and_clear();
    let after = store.stats()?;
    let ingested = after.files_ingested - before.files_ingested;
    let rejected = after.files_rejected - before.files_rejected;
    let elapsed = started.elapsed().max(Duration::from_millis(1));
    println!(
        "{total} file(s) in {:.1}s: {ingested} ingested, {rejected} rejected, {} already known \
         ({:.0} files/s)",
        elapsed.as_secs_f64(),
        total as u64 - ingested - rejected,
        total as f64 / elapsed.as_secs_f64()
    );
    if rejected > 0 {
        println!("rejected files (see also GET /api/v1/files?status=rejected):");
        for row in store.files(
            Some(probewatch_store::Outcome::Rejected),
            usize::try_from(rejected).unwrap_or(usize::MAX),
        )? {
            use std::os::unix::ffi::OsStrExt;
            let path = Path::new(std::ffi::OsStr::from_bytes(&row.path));
            println!("  {}: {}", path.display(), row.error.unwrap_or_default());
        }
    }
    Ok(if rejected == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// `probewatch rules check`: loads each file as the daemon would and reports it.
pub fn rules_check(files: &[PathBuf]) -> ExitCode {
    let mut failed = false;
    for file in files {
        match probewatch_alerting::rulefile::load(std::slice::from_ref(file), 15_000) {
            Ok(groups) => {
                let rules: usize = groups.iter().map(|g| g.rules.len()).sum();
                println!(
                    "{}: OK, {} groups, {rules} rules",
                    file.display(),
                    groups.len()
                );
            }
            Err(err) => {
                failed = true;
                println!("{err}");
            }
        }
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

/// `probewatch rules test`: runs promtool-format rule unit tests.
pub fn rules_test(files: &[PathBuf]) -> ExitCode {
    let mut failed = false;
    for file in files {
        match probewatch_alerting::unittest::run_file(file) {
            Ok(report) if report.failures.is_empty() => {
                println!("{}: SUCCESS ({} tests)", file.display(), report.tests);
            }
            Ok(report) => {
                failed = true;
                println!("{}: FAILED", file.display());
                for f in report.failures {
                    println!("  {f}");
                }
            }
            Err(err) => {
                failed = true;
                println!("{err}");
            }
        }
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

/// `probewatch silence add | list | expire`.
pub fn silence(command: crate::cli::SilenceCommand) -> anyhow::Result<ExitCode> {
    use crate::cli::SilenceCommand;
    let (common, remote) = match &command {
        SilenceCommand::Add { common, remote, .. }
        | SilenceCommand::List { common, remote }
        | SilenceCommand::Expire { common, remote, .. } => (common.clone(), remote.clone()),
    };
    if remote.server.is_some() {
        return silence_on_server(command, &remote);
    }
    let overrides = Overrides {
        data_dir: common.data.clone(),
        store: common.store.clone(),
        ..Overrides::default()
    };
    let config = Config::load(common.config.as_deref(), &overrides)?;
    let store = probewatch_store::open_store(&config.store, &config.store_options)
        .with_context(|| format!("opening the store {}", config.store.describe()))?;
    let now = crate::ingest::now_ms();
    match command {
        SilenceCommand::Add {
            matchers,
            duration,
            start,
            end,
            comment,
            author,
            ..
        } => {
            let author = author
                .or_else(|| std::env::var("USER").ok())
                .unwrap_or_else(|| "cli".into());
            let row = probewatch_alerting::silence::new_silence(
                matchers,
                start.as_deref(),
                end.as_deref(),
                duration.as_deref(),
                author,
                comment,
                now,
            )
            .map_err(|e| anyhow::anyhow!(e))?;
            let id = store.add_silence(&row)?;
            println!("silence {id} created");
        }
        SilenceCommand::List { .. } => {
            for s in store.silences()? {
                let json = probewatch_web::silences_api::silence_json(&s, now);
                println!(
                    "{:>5}  {:<8} {} -> {}  {}  by {}: {}",
                    s.id,
                    json["status"].as_str().unwrap_or(""),
                    json["startsAt"].as_str().unwrap_or(""),
                    json["endsAt"].as_str().unwrap_or(""),
                    s.matchers.join(", "),
                    s.created_by,
                    s.comment
                );
            }
        }
        SilenceCommand::Expire { id, .. } => {
            let actor = std::env::var("USER").unwrap_or_else(|_| "cli".into());
            if store.expire_silence(id, now, &actor)? {
                println!("silence {id} expired");
            } else {
                println!("no active or pending silence {id}");
                return Ok(ExitCode::FAILURE);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `probewatch silence … --server URL`: the same commands through a running daemon's API.
fn silence_on_server(
    command: crate::cli::SilenceCommand,
    remote: &crate::client::ServerArgs,
) -> anyhow::Result<ExitCode> {
    use crate::cli::SilenceCommand;
    match command {
        SilenceCommand::Add {
            matchers,
            duration,
            start,
            end,
            comment,
            author,
            ..
        } => {
            let author = author
                .or_else(|| std::env::var("USER").ok())
                .unwrap_or_default();
            let id = crate::client::silence_add(
                remote,
                &matchers,
                duration.as_deref(),
                start.as_deref(),
                end.as_deref(),
                &author,
                &comment,
            )?;
            println!("silence {id} created");
        }
        SilenceCommand::List { .. } => crate::client::silence_list(remote)?,
        SilenceCommand::Expire { id, .. } => {
            if crate::client::silence_expire(remote, id)? {
                println!("silence {id} expired");
            } else {
                println!("no active or pending silence {id}");
                return Ok(ExitCode::FAILURE);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

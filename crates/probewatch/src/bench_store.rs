//! `probewatch bench-store`: how fast each store back end commits ingest batches, beside a
//! bare binary-COPY loop of the same rows into PostgreSQL, in one invocation.
//!
//! The files are the ingest bench's (`probewatch bench`: 2 checks and 10 metrics each,
//! taking turns among `--checks` checks), parsed once up front; what is timed is only the
//! store: `commit_batch` of `--batch` files at a time plus the compaction step the ingest
//! writer runs after each batch (each run also shows a batch's mean time in each). The
//! baseline writes the same ledger rows, check results and samples with three binary COPYs
//! per batch into plain tables without indexes or constraints: the floor for getting those
//! bytes into PostgreSQL.

use std::time::Instant;

use anyhow::Context;
use clap::Args;
use postgres::binary_copy::BinaryCopyInWriter;
use postgres::types::Type;
use probewatch_core::format::FileContext;
use probewatch_core::{Format, Labels, ParseLimits};
use probewatch_store::{IngestItem, ItemContent, Store, StoreLocation, StoreOptions};

/// `probewatch bench-store` options.
#[derive(Debug, Args, Clone)]
pub struct BenchStoreArgs {
    /// Result files.
    #[arg(long, default_value_t = 20_000)]
    pub files: u64,
    /// Files per transaction.
    #[arg(long, default_value_t = 1_000)]
    pub batch: usize,
    /// Distinct checks the files report.
    #[arg(long, default_value_t = 1_000)]
    pub checks: u64,
    /// A PostgreSQL URL whose user may create databases (each run makes a fresh one and
    /// drops it after), e.g. postgres://postgres@127.0.0.1:5432/postgres.
    #[arg(long)]
    pub postgres: String,
    /// Runs of each; medians are reported.
    #[arg(long, default_value_t = 3)]
    pub repeat: usize,
    /// Where to make the temporary SQLite stores (default: the system temp directory).
    #[arg(long)]
    pub dir: Option<std::path::PathBuf>,
    /// First commit one file of every probe, untimed, so that the timed files find their
    /// checks and series stored: a running server's steady state. Without it each check's
    /// first file is timed too, which at `--checks 100000` is every file of a 20,000-file run.
    #[arg(long)]
    pub warm: bool,
}

/// Files number `range`, parsed as the ingest pipeline would hand them to the store.
fn items(args: &BenchStoreArgs, range: std::ops::Range<u64>) -> anyhow::Result<Vec<IngestItem>> {
    let extra = Labels::default();
    range
        .map(|n| {
            let xml = crate::bench::result_file(n, args.checks);
            let results = probewatch_core::parse(
                Format::Xml,
                xml.as_bytes(),
                FileContext {
                    mtime_ms: 0,
                    name: "",
                    mapping: None,
                },
                &ParseLimits::default(),
            )
            .map_err(|r| anyhow::anyhow!("bench file {n}: {r}"))?;
            let samples = results
                .iter()
                .flat_map(|r| r.series_samples(&extra))
                .collect();
            Ok(crate::bench::synthetic_item(n, results, samples))
        })
        .collect()
}

/// The parsed files: those committed untimed first (empty without `--warm`: one file of
/// every probe, numbered before the timed ones so that the timed results are the newest),
/// and the timed ones.
struct Workload {
    warm: Vec<IngestItem>,
    timed: Vec<IngestItem>,
}

impl Workload {
    fn new(args: &BenchStoreArgs) -> anyhow::Result<Self> {
        let warm = if args.warm {
            crate::bench::probes_of(args.checks)
        } else {
            0
        };
        Ok(Workload {
            warm: items(args, 0..warm)?,
            timed: items(args, warm..warm + args.files)?,
        })
    }

    /// Commits the warm-up files, then times the others.
    fn through_store(&self, store: &dyn Store, batch: usize) -> anyhow::Result<Timed> {
        commit_all(store, &self.warm, batch)?;
        let start = Instant::now();
        let (committing, compacting) = commit_all(store, &self.timed, batch)?;
        let batches = self.timed.len().div_ceil(batch).max(1) as f64;
        Ok(Timed {
            files_per_sec: self.timed.len() as f64 / start.elapsed().as_secs_f64(),
            commit_ms: committing * 1e3 / batches,
            compact_ms: compacting * 1e3 / batches,
        })
    }
}

/// One store's timed run: files per second, and a batch's mean time in `commit_batch` and
/// in the compaction step after it.
struct Timed {
    files_per_sec: f64,
    commit_ms: f64,
    compact_ms: f64,
}

impl std::fmt::Display for Timed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:>8.0} files/s ({:.1} + {:.1} ms a batch)",
            self.files_per_sec, self.commit_ms, self.compact_ms
        )
    }
}

/// Commits every batch as the ingest writer does, with a compaction step after each;
/// returns the seconds spent committing and compacting.
fn commit_all(store: &dyn Store, items: &[IngestItem], batch: usize) -> anyhow::Result<(f64, f64)> {
    let (mut committing, mut compacting) = (0.0, 0.0);
    for chunk in items.chunks(batch) {
        let started = Instant::now();
        let summary = store.commit_batch(chunk, false)?;
        let committed = Instant::now();
        let samples = usize::try_from(summary.samples).unwrap_or(usize::MAX);
        store.compact(samples.saturating_mul(2).max(1_000))?;
        committing += (committed - started).as_secs_f64();
        compacting += committed.elapsed().as_secs_f64();
    }
    Ok((committing, compacting))
}

/// A fresh database on the server `admin` points at (dropped first if a run left it);
/// returns its URL.
pub(crate) fn fresh_database(admin: &str, name: &str) -> anyhow::Result<String> {
    let mut client = postgres::Client::connect(admin, postgres::NoTls).with_context(|| {
        format!(
            "connecting to {}",
            probewatch_store::postgres::redact_url(admin)
        )
    })?;
    client.batch_execute(&format!("DROP DATABASE IF EXISTS {name}"))?;
    client.batch_execute(&format!("CREATE DATABASE {name}"))?;
    let url = match admin.rsplit_once('/') {
        Some((base, _)) if admin.starts_with("postgres") => format!("{base}/{name}"),
        _ => anyhow::bail!("--postgres must be a postgres://…/database URL"),
    };
    Ok(url)
}

pub(crate) fn drop_database(admin: &str, name: &str) {
    if let Ok(mut client) = postgres::Client::connect(admin, postgres::NoTls) {
        let _ = client.batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"));
    }
}

/// Runs `f` with the URL of a fresh database `name` on the server `admin` points at, and
/// drops the database after, whatever `f` returned.
pub(crate) fn in_fresh_database<T>(
    admin: &str,
    name: &str,
    f: impl FnOnce(&str) -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    let url = fresh_database(admin, name)?;
    let out = f(&url);
    drop_database(admin, name);
    out
}

/// Runs `f` on a store opened on a fresh PostgreSQL database (`probewatch_<bench>_<pid>`),
/// closed before the database is dropped: how the benches measure PostgreSQL beside
/// SQLite.
pub(crate) fn on_fresh_postgres<T>(
    admin: &str,
    bench: &str,
    options: &StoreOptions,
    f: impl FnOnce(std::sync::Arc<dyn Store>) -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    let name = format!("probewatch_{bench}_{}", std::process::id());
    in_fresh_database(admin, &name, |url| {
        f(probewatch_store::open_store(
            &StoreLocation::Postgres(url.to_string()),
            options,
        )?)
    })
}

/// Prints each measurement's PostgreSQL / SQLite ratio (labels from the SQLite run).
pub(crate) fn print_ratios(on_sqlite: &[(String, f64)], on_pg: &[(String, f64)], width: usize) {
    println!("  postgresql / sqlite, same run:");
    for ((label, s), (_, p)) in on_sqlite.iter().zip(on_pg) {
        println!("    {label:<width$} {:5.2}x", p / s);
    }
}

/// The baseline: the same rows, three binary COPYs per batch into unindexed tables.
fn bare_copy(url: &str, items: &[IngestItem], batch: usize) -> anyhow::Result<f64> {
    let mut client = postgres::Client::connect(url, postgres::NoTls)?;
    client.batch_execute(
        "CREATE TABLE files (spool text, path bytea, version_hash bytea, size int8,
            mtime_ns int8, inode int8, samples int4);
         CREATE TABLE results (probe text, host text, name text, ts_ms int8, status int2,
            duration float8, message text);
         CREATE TABLE samples (metric text, labels text, ts_ms int8, value float8);",
    )?;
    let start = Instant::now();
    for chunk in items.chunks(batch) {
        let mut tx = client.transaction()?;
        {
            let sink = tx.copy_in("COPY files FROM STDIN BINARY")?;
            let mut w = BinaryCopyInWriter::new(
                sink,
                &[
                    Type::TEXT,
                    Type::BYTEA,
                    Type::BYTEA,
                    Type::INT8,
                    Type::INT8,
                    Type::INT8,
                    Type::INT4,
                ],
            );
            for item in chunk {
                let f = &item.file;
                let samples = match &item.content {
                    ItemContent::Parsed { samples, .. } => samples.len() as i32,
                    ItemContent::Rejected(_) => 0,
                };
                w.write(&[
                    &&*f.spool,
                    &f.path,
                    &&f.version_hash[..],
                    &(f.size as i64),
                    &f.mtime_ns,
                    &(f.inode as i64),
                    &samples,
                ])?;
            }
            w.finish()?;
        }
        {
            let sink = tx.copy_in("COPY results FROM STDIN BINARY")?;
            let mut w = BinaryCopyInWriter::new(
                sink,
                &[
                    Type::TEXT,
                    Type::TEXT,
                    Type::TEXT,
                    Type::INT8,
                    Type::INT2,
                    Type::FLOAT8,
                    Type::TEXT,
                ],
            );
            for item in chunk {
                let ItemContent::Parsed { results, .. } = &item.content else {
                    continue;
                };
                for r in results {
                    for c in &r.checks {
                        w.write(&[
                            &r.probe,
                            &r.host,
                            &c.name,
                            &r.time_ms,
                            &i16::from(c.status.code()),
                            &c.duration_seconds,
                            &c.message,
                        ])?;
                    }
                }
            }
            w.finish()?;
        }
        {
            let sink = tx.copy_in("COPY samples FROM STDIN BINARY")?;
            let mut w =
                BinaryCopyInWriter::new(sink, &[Type::TEXT, Type::TEXT, Type::INT8, Type::FLOAT8]);
            for item in chunk {
                let ItemContent::Parsed { samples, .. } = &item.content else {
                    continue;
                };
                for s in samples {
                    w.write(&[&s.metric, &s.labels, &s.time_ms, &s.value])?;
                }
            }
            w.finish()?;
        }
        tx.batch_execute("SET LOCAL synchronous_commit = off")?;
        tx.commit()?;
    }
    Ok(items.len() as f64 / start.elapsed().as_secs_f64())
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

/// Runs the bench and prints one line per run and the medians.
pub fn run(args: &BenchStoreArgs) -> anyhow::Result<std::process::ExitCode> {
    let work = Workload::new(args)?;
    println!(
        "bench-store: {} files ({} checks), {} files a transaction, {} run(s){}",
        args.files,
        args.checks,
        args.batch,
        args.repeat,
        if args.warm {
            format!(
                ", after {} untimed files that store every check and series",
                work.warm.len()
            )
        } else {
            String::new()
        }
    );
    let (mut sqlite, mut pg, mut copy) = (Vec::new(), Vec::new(), Vec::new());
    for run in 0..args.repeat {
        let dir = crate::bench::temp_work_dir(args.dir.as_deref())?;
        let store = probewatch_store::open_store(
            &StoreLocation::Sqlite(dir.path().to_path_buf()),
            &StoreOptions::default(),
        )?;
        let s = work.through_store(&*store, args.batch)?;
        drop(store);

        let p = on_fresh_postgres(
            &args.postgres,
            &format!("bench_store_{run}"),
            &StoreOptions::default(),
            |store| work.through_store(&*store, args.batch),
        )?;
        let name = format!("probewatch_bench_copy_{}_{run}", std::process::id());
        let c = in_fresh_database(&args.postgres, &name, |url| {
            bare_copy(url, &work.timed, args.batch)
        })?;
        println!("  run {run}: sqlite {s}   postgresql {p}   bare COPY {c:>8.0} files/s");
        sqlite.push(s.files_per_sec);
        pg.push(p.files_per_sec);
        copy.push(c);
    }
    let (s, p, c) = (median(sqlite), median(pg), median(copy));
    println!(
        "median: sqlite {s:.0} files/s, postgresql {p:.0} files/s, bare COPY {c:.0} files/s; \
         postgresql / bare COPY = {:.2}, postgresql / sqlite = {:.2}",
        p / c,
        p / s
    );
    Ok(std::process::ExitCode::SUCCESS)
}

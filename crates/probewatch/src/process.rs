//! What the daemon sets up about its own process: an exclusive lock on the data directory
//! (two daemons on one store would both ingest, both notify, and wedge each other), the
//! open-files limit raised to what the system allows (every spool directory, HTTP
//! connection and SQLite file takes a descriptor; at the usual soft limit of 1,024 a busy
//! daemon ran out and stopped accepting), and a lower CPU priority for threads whose work
//! can wait (HTTP queries), so ingest keeps its latency under a heavy query load.

use std::fs::File;
use std::io::{Read, Seek, Write};
use std::path::Path;

use anyhow::{Context, bail};
use rustix::fs::FlockOperation;

/// Name of the lock file inside the data directory.
pub const LOCK_FILE: &str = "probewatch.lock";

/// Holds the data directory's lock while alive (the kernel drops it when the process ends,
/// however it ends).
#[derive(Debug)]
pub struct DataDirLock {
    _file: File,
}

impl DataDirLock {
    /// Takes the lock on `dir` (creating it), or fails naming the process that holds it.
    pub fn acquire(dir: &Path) -> anyhow::Result<DataDirLock> {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("creating data directory {}", dir.display()))?;
        let path = dir.join(LOCK_FILE);
        let mut file = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .with_context(|| format!("opening {}", path.display()))?;
        match rustix::fs::flock(&file, FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => {}
            Err(rustix::io::Errno::WOULDBLOCK) => {
                let mut pid = String::new();
                let _ = file.read_to_string(&mut pid);
                let pid = pid.trim();
                let who = if pid.is_empty() {
                    String::new()
                } else {
                    format!(" (pid {pid})")
                };
                bail!(
                    "another probewatch{who} is using {}; stop it first, or give this one \
                     another data directory",
                    dir.display()
                );
            }
            Err(err) => bail!("cannot lock {}: {err}", path.display()),
        }
        file.set_len(0)?;
        file.rewind()?;
        writeln!(file, "{}", std::process::id())?;
        Ok(DataDirLock { _file: file })
    }
}

/// Raises the soft open-files limit to the hard limit; returns the limit now in force.
pub fn raise_open_files_limit() -> Option<u64> {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    if limit.current != limit.maximum {
        let raised = rustix::process::Rlimit {
            current: limit.maximum,
            maximum: limit.maximum,
        };
        if let Err(err) = setrlimit(Resource::Nofile, raised) {
            tracing::warn!(error = %err, "cannot raise the open-files limit");
            return limit.current;
        }
    }
    getrlimit(Resource::Nofile).current
}

/// Lowers the calling thread's CPU priority (nice 10): the scheduler then gives the ingest
/// threads about nine tenths of a busy core against it. Linux applies nice per thread.
pub fn lower_thread_priority() {
    let tid = rustix::thread::gettid();
    if let Err(err) = rustix::process::setpriority_process(Some(tid), 10) {
        tracing::debug!(error = %err, "cannot lower a thread's priority");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_names_the_first_holder() {
        let dir = tempfile::tempdir().expect("tempdir");
        let first = DataDirLock::acquire(dir.path()).expect("first lock");
        let err = DataDirLock::acquire(dir.path()).expect_err("second lock");
        let message = err.to_string();
        assert!(
            message.contains(&format!("another probewatch (pid {})", std::process::id())),
            "{message}"
        );
        drop(first);
        DataDirLock::acquire(dir.path()).expect("free again once dropped");
    }
}

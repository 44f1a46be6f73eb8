//! Asks the kernel whether anyone has a file open for writing.
//!
//! A file found by a scan with a recent mtime may still be being written, or may have been
//! closed before its directory was watched (then no close-write event will ever come). A
//! read lease (`fcntl(F_SETLEASE, F_RDLCK)`) can only be taken while no process has the file
//! open for writing, so trying to take one, and releasing it at once, answers the question
//! without reading the file. Taking a lease needs the file's owner or CAP_LEASE; without
//! them the answer is "cannot tell" and the caller falls back to the settle timer.
#![allow(unsafe_code)]

use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// Whether a file is open for writing by any process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Writers {
    /// Nobody has it open for writing: its content is complete as of now.
    None,
    /// Some process has it open for writing.
    Some,
    /// The kernel would not say (not the owner and no CAP_LEASE, leases disabled, gone).
    Unknown,
}

/// Makes lease-break notices harmless. The kernel signals a lease holder with SIGIO when
/// another process opens the file for writing; SIGIO's default action ends the process.
/// probewatch uses no SIGIO otherwise, so ignoring it process-wide costs nothing.
pub(crate) fn ignore_lease_break_signal() {
    // SAFETY: installing SIG_IGN for SIGIO has no preconditions and affects no Rust state.
    unsafe {
        libc::signal(libc::SIGIO, libc::SIG_IGN);
    }
}

/// See [`Writers`].
pub fn writers(path: &Path) -> Writers {
    let file = match std::fs::File::options()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
    {
        Ok(file) => file,
        Err(_) => return Writers::Unknown,
    };
    let fd = file.as_raw_fd();
    // SAFETY: fd is a valid open descriptor for the duration of both calls (owned by
    // `file`); F_SETLEASE takes an int argument.
    let rc = unsafe { libc::fcntl(fd, libc::F_SETLEASE, libc::F_RDLCK) };
    if rc == 0 {
        // SAFETY: as above.
        unsafe { libc::fcntl(fd, libc::F_SETLEASE, libc::F_UNLCK) };
        return Writers::None;
    }
    match std::io::Error::last_os_error().raw_os_error() {
        Some(libc::EAGAIN) => Writers::Some,
        _ => Writers::Unknown,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn tells_open_writers_apart() {
        ignore_lease_break_signal();
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("f");
        let mut file = std::fs::File::create(&path).expect("create");
        file.write_all(b"x").expect("write");
        // Root (CI) or the owner (developers) can take leases; both see the writer.
        assert_eq!(writers(&path), Writers::Some);
        drop(file);
        assert_eq!(writers(&path), Writers::None);
        assert_eq!(writers(&dir.path().join("missing")), Writers::Unknown);
    }
}

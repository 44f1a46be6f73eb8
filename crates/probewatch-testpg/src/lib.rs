//! A throwaway PostgreSQL server for tests.
//!
//! The store's behaviour suite and the end-to-end tests run against a real PostgreSQL, not a
//! mock: [`TestPostgres::start`] runs Debian's `initdb` into a temporary directory and
//! `pg_ctl start` on a free loopback port, with trust authentication for loopback only, and
//! stops it (immediately) when dropped. As root it runs the server as the `postgres` user,
//! because PostgreSQL refuses to run as root.
//!
//! Where the server binaries are missing, [`TestPostgres::start`] returns `None` and the
//! caller reports SKIPPED; under CI (`CI=true`) it panics instead, because CI installs
//! Debian's `postgresql` and must never skip these tests.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// A running PostgreSQL server in a temporary directory; stopped when dropped.
pub struct TestPostgres {
    bin: PathBuf,
    data: PathBuf,
    port: u16,
    /// The user the server runs as when this process is root.
    run_as: Option<String>,
    /// Owns the directory (removed on drop, after the server stopped).
    dir: tempfile::TempDir,
}

/// The directory of Debian's PostgreSQL server binaries (`/usr/lib/postgresql/N/bin`, the
/// newest N), or `PROBEWATCH_PG_BIN` when set.
pub fn server_bin_dir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("PROBEWATCH_PG_BIN") {
        return Some(PathBuf::from(dir));
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(Result::ok)
        .filter_map(|e| {
            let version = e.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((version, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin)
}

impl TestPostgres {
    /// Starts a server, or returns `None` (after printing why) where PostgreSQL is not
    /// installed. Panics under CI where it is missing, and on any failure to start.
    pub fn start() -> Option<TestPostgres> {
        let Some(bin) = server_bin_dir() else {
            assert!(
                std::env::var("CI").is_err(),
                "PostgreSQL server binaries not found under /usr/lib/postgresql: CI must \
                 install Debian's postgresql package (.ci/run does)"
            );
            eprintln!(
                "SKIPPED the PostgreSQL half: no server binaries under /usr/lib/postgresql \
                 (Debian package postgresql; .ci/run installs it)"
            );
            return None;
        };
        let mut pg = TestPostgres::unstarted(bin, is_root().then(|| "postgres".to_string()));
        let out = pg.run(
            "initdb",
            &[
                "-D",
                path_str(&pg.data),
                "-U",
                "postgres",
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--no-sync",
            ],
        );
        assert!(out.status.success(), "initdb failed: {}", text(&out));
        pg.start_on_a_free_port();
        Some(pg)
    }

    /// A server yet to be made in a new temporary directory (owned by `run_as` when set).
    fn unstarted(bin: PathBuf, run_as: Option<String>) -> TestPostgres {
        let dir = tempfile::Builder::new()
            .prefix("probewatch-pg-")
            .tempdir()
            .expect("temp dir for PostgreSQL");
        if let Some(user) = &run_as {
            let (uid, gid) = user_ids(user).expect("the postgres user (Debian's package makes it)");
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid)).expect("chown temp dir");
        }
        TestPostgres {
            bin,
            data: dir.path().join("data"),
            port: 0,
            run_as,
            dir,
        }
    }

    /// Starts the server on a free port. A port taken between our probe and the server's
    /// bind makes pg_ctl fail: it tries a few.
    fn start_on_a_free_port(&mut self) {
        for attempt in 0.. {
            self.port = free_port();
            if self.pg_ctl_start() {
                return;
            }
            assert!(
                attempt < 5,
                "PostgreSQL did not start; see {}",
                self.log().display()
            );
        }
    }

    /// The port the server listens on (127.0.0.1 and 127.0.0.2).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// A connection URL for `database` as the superuser `postgres`.
    pub fn url(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }

    /// [`TestPostgres::url`] through the server's second address, 127.0.0.2 (a loopback
    /// address too), which a test may cut off from the network without touching 127.0.0.1.
    pub fn url_via_second_address(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.2:{}/{database}", self.port)
    }

    /// Creates an empty database and returns its URL.
    pub fn create_database(&self, name: &str) -> String {
        let port = self.port.to_string();
        let out = self.run(
            "createdb",
            &["-h", "127.0.0.1", "-p", &port, "-U", "postgres", name],
        );
        assert!(out.status.success(), "createdb {name}: {}", text(&out));
        self.url(name)
    }

    /// Runs SQL as the superuser on `database` with `psql`, failing the test on an error.
    pub fn psql(&self, database: &str, sql: &str) -> String {
        let out = self
            .psql_command(database, &[sql])
            .output()
            .unwrap_or_else(|e| panic!("run psql: {e}"));
        assert!(out.status.success(), "psql {sql}: {}", text(&out));
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// Starts `psql` running `commands` one after the other in one session (a `BEGIN`
    /// spans the ones after it) and returns at once: a session that holds locks for as long
    /// as its last command runs, or until the child is killed.
    pub fn psql_in_background(&self, database: &str, commands: &[&str]) -> std::process::Child {
        self.psql_command(database, commands)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("start psql: {e}"))
    }

    fn psql_command(&self, database: &str, commands: &[&str]) -> Command {
        let port = self.port.to_string();
        let mut args = vec![
            "-h",
            "127.0.0.1",
            "-p",
            &port,
            "-U",
            "postgres",
            "-d",
            database,
            "-X",
            "-q",
            "-t",
            "-A",
            "-v",
            "ON_ERROR_STOP=1",
        ];
        for sql in commands {
            args.extend(["-c", sql]);
        }
        self.command("psql", &args)
    }

    /// Makes a login role that must give `password` over TCP (scram-sha-256), where every
    /// other role is trusted, and reloads the server's configuration.
    pub fn add_password_user(&self, user: &str, password: &str) {
        self.psql(
            "postgres",
            &format!("CREATE ROLE {user} LOGIN SUPERUSER PASSWORD '{password}'"),
        );
        let hba = self.data.join("pg_hba.conf");
        let old = std::fs::read_to_string(&hba).expect("read pg_hba.conf");
        std::fs::write(
            &hba,
            format!("host all {user} 127.0.0.1/32 scram-sha-256\n{old}"),
        )
        .expect("write pg_hba.conf");
        let out = self.run("pg_ctl", &["-D", path_str(&self.data), "reload"]);
        assert!(out.status.success(), "pg_ctl reload: {}", text(&out));
    }

    /// Starts a streaming standby of this server (pg_basebackup -R) on its own port: a
    /// read-only replica, for tests of what is refused there.
    pub fn start_standby(&self) -> TestPostgres {
        let mut standby = TestPostgres::unstarted(self.bin.clone(), self.run_as.clone());
        let port = self.port.to_string();
        let out = standby.run(
            "pg_basebackup",
            &[
                "-h",
                "127.0.0.1",
                "-p",
                &port,
                "-U",
                "postgres",
                "-D",
                path_str(&standby.data),
                "-R",
                "-X",
                "stream",
                "--no-sync",
                "--checkpoint=fast",
            ],
        );
        assert!(out.status.success(), "pg_basebackup: {}", text(&out));
        standby.start_on_a_free_port();
        standby
    }

    /// Promotes a standby ([`TestPostgres::start_standby`]) to a primary, waiting until it
    /// accepts writes: what a failover manager (Patroni) does when the primary is lost.
    pub fn promote(&self) {
        let out = self.run("pg_ctl", &["-D", path_str(&self.data), "-w", "promote"]);
        assert!(out.status.success(), "pg_ctl promote: {}", text(&out));
    }

    /// The server's log file.
    pub fn log(&self) -> PathBuf {
        self.dir.path().join("server.log")
    }

    /// Stops the server (fast shutdown: sessions are ended, the data is kept).
    pub fn stop(&self) {
        let out = self.run(
            "pg_ctl",
            &["-D", path_str(&self.data), "-m", "fast", "-w", "stop"],
        );
        assert!(out.status.success(), "pg_ctl stop: {}", text(&out));
    }

    /// Starts the server again on the same port after [`TestPostgres::stop`].
    pub fn restart(&self) {
        assert!(
            self.pg_ctl_start(),
            "PostgreSQL did not restart; see {}",
            self.log().display()
        );
    }

    fn pg_ctl_start(&self) -> bool {
        let options = format!(
            "-c listen_addresses=127.0.0.1,127.0.0.2 -p {} -k {} -c fsync=off -c full_page_writes=off \
             -c max_connections=200",
            self.port,
            path_str(self.dir.path())
        );
        let out = self.run(
            "pg_ctl",
            &[
                "-D",
                path_str(&self.data),
                "-l",
                path_str(&self.log()),
                "-o",
                &options,
                "-w",
                "-t",
                "60",
                "start",
            ],
        );
        if !out.status.success() {
            return false;
        }
        // `-w` waits for the postmaster; also wait until it accepts TCP.
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }

    /// Runs one of the server's programs, as the server's user when this process is root.
    fn run(&self, program: &str, args: &[&str]) -> Output {
        self.command(program, args)
            .output()
            .unwrap_or_else(|e| panic!("run {program}: {e}"))
    }

    /// One of the server's programs with `args`, as the user the server runs as.
    fn command(&self, program: &str, args: &[&str]) -> Command {
        let program = self.bin.join(program);
        let mut cmd = match &self.run_as {
            Some(user) => {
                let mut c = Command::new("runuser");
                c.args(["-u", user, "--"]).arg(&program);
                c
            }
            None => Command::new(&program),
        };
        cmd.args(args)
            // The server's programs must not inherit a password or service from the caller.
            .env_remove("PGPASSWORD")
            .env_remove("PGSERVICE")
            .current_dir(self.dir.path());
        cmd
    }
}

impl Drop for TestPostgres {
    fn drop(&mut self) {
        let _ = self.run(
            "pg_ctl",
            &["-D", path_str(&self.data), "-m", "immediate", "-w", "stop"],
        );
    }
}

fn is_root() -> bool {
    // The effective uid from /proc (no libc call needed): the `Uid:` line's second field.
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|u| u == "0"))
        })
        .unwrap_or(false)
}

/// A user's uid and gid from /etc/passwd.
fn user_ids(user: &str) -> Option<(u32, u32)> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|line| {
        let fields: Vec<&str> = line.split(':').collect();
        (fields.first() == Some(&user))
            .then(|| Some((fields.get(2)?.parse().ok()?, fields.get(3)?.parse().ok()?)))?
    })
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

fn path_str(path: &Path) -> &str {
    path.to_str().expect("temp paths are UTF-8")
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starts_serves_and_restarts() {
        let Some(pg) = TestPostgres::start() else {
            return;
        };
        let url = pg.create_database("probe");
        assert!(url.ends_with("/probe"));
        assert!(std::net::TcpStream::connect(("127.0.0.1", pg.port())).is_ok());
        pg.stop();
        assert!(std::net::TcpStream::connect(("127.0.0.1", pg.port())).is_err());
        pg.restart();
        assert!(std::net::TcpStream::connect(("127.0.0.1", pg.port())).is_ok());
    }
}

//! Connections to PostgreSQL: the pool and its checked connections, the statements each
//! keeps prepared, and the session settings that keep every wait on the server bounded
//! (TCP timeouts for a server gone from the network, a lock timeout), with connection
//! failures logged as sentences that name the server and never its password.

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::Mutex;
use std::time::Duration;

use postgres::{Client, NoTls};
use r2d2_postgres::PostgresConnectionManager;

use super::errors::{connect_error, describe};
use crate::StoreError;

/// What a URL that leaves the TCP settings unset gets (the driver's defaults are the
/// kernel's): a database that vanishes from the network without closing its connections (a
/// failed primary's host, a cut link) is noticed within about a minute, where the kernel's
/// retransmissions would hold a commit for ~15 minutes, ingest stalled on a connection to
/// a host that is gone while a promoted standby waits. Sent data unacknowledged for
/// `TCP_USER_TIMEOUT` fails the connection; an idle one is probed after `KEEPALIVES_IDLE`.
/// A live server acknowledges both however long its statement runs.
const TCP_USER_TIMEOUT: Duration = Duration::from_secs(30);
const KEEPALIVES_IDLE: Duration = Duration::from_secs(30);
const KEEPALIVES_INTERVAL: Duration = Duration::from_secs(10);
const KEEPALIVES_RETRIES: u32 = 3;
/// The driver's default keepalive idle time, which a URL without `keepalives_idle` has.
const DRIVER_KEEPALIVES_IDLE: Duration = Duration::from_secs(2 * 60 * 60);

/// How long a statement waits for a lock another session holds before it fails (the
/// server's `lock_timeout`, set for this store's sessions unless the URL's `options` set
/// it). probewatch's own lock waits last a batch at most; a session that holds a table for
/// minutes (a `LOCK TABLE`, a `VACUUM FULL`, a stuck transaction) would otherwise hold
/// ingest with it, and readiness could only say that ingest stalled, not why. The commit
/// then fails with "canceling statement due to lock timeout", says so, and is retried.
const LOCK_TIMEOUT: &str = "20s";

/// How often the pool's failures to open a connection are logged at most: while the
/// database is away each of its threads fails several times a second.
const CONNECT_ERROR_LOG_EVERY: Duration = Duration::from_secs(10);

/// How long a caller waits for a pooled connection: short, so that a reader (a page,
/// `/-/ready`) learns soon that the database is away.
const CONNECTION_WAIT: Duration = Duration::from_secs(3);

/// How long a caller waits for a connection once the server is known to be unreachable
/// (the last attempt to connect failed with nothing to wait for: no answer, or one that is
/// not "too many connections"; see [`Manager`]): long enough to take one
/// the pool's retries have just opened, short enough that a page says at once that the
/// store is away instead of after [`CONNECTION_WAIT`]. A pool that is merely busy (every
/// connection in use, the server answering) still waits the whole [`CONNECTION_WAIT`]: its
/// attempts to connect succeed, or fail with the server's answer (too many connections).
const UNREACHABLE_WAIT: Duration = Duration::from_millis(100);

/// Connections the pool keeps at most: the writer, the rule evaluator, the notifier lanes
/// and the HTTP readers.
const POOL_SIZE: u32 = 16;

/// The pool's connection manager: rust-postgres's, but a connection is checked (one empty
/// query) only when it has been idle a while, not at every checkout — a connection broken by
/// a database restart is found before it is handed out, and a busy server pays nothing. It
/// also remembers since when the server has been unreachable ([`Pool::get`]).
#[derive(Debug)]
pub(super) struct Manager {
    connections: PostgresConnectionManager<NoTls>,
    unreachable_since: Unreachable,
}

/// Since when every attempt to connect has failed with nothing to wait for (no answer
/// from the server, or one that is not "too many connections"); `None` once one succeeds.
type Unreachable = std::sync::Arc<Mutex<Option<std::time::Instant>>>;

fn since(unreachable: &Unreachable) -> std::sync::MutexGuard<'_, Option<std::time::Instant>> {
    unreachable.lock().unwrap_or_else(|e| e.into_inner())
}

/// The store's connections: the pool, and whether its last attempt to connect reached the
/// server.
#[derive(Clone)]
pub(super) struct Pool {
    pool: r2d2::Pool<Manager>,
    unreachable_since: Unreachable,
}

impl Pool {
    /// A connection to the server shown as `shown`, waiting [`CONNECTION_WAIT`] at most, or
    /// [`UNREACHABLE_WAIT`] once the server is unreachable (the pool's own attempts go on in
    /// the background, and the next caller gets the connection they open). The wait is
    /// taken in slices of [`UNREACHABLE_WAIT`], so that a caller who began waiting while the
    /// server was thought to be there (the first after it went away) stops as soon as an
    /// attempt to connect finds it gone, not at the end of its [`CONNECTION_WAIT`]. An idle
    /// connection that passes its check is handed out either way.
    pub(super) fn get(&self, shown: &str) -> Result<r2d2::PooledConnection<Manager>, StoreError> {
        let deadline = std::time::Instant::now() + CONNECTION_WAIT;
        loop {
            let slice =
                UNREACHABLE_WAIT.min(deadline.saturating_duration_since(std::time::Instant::now()));
            let err = match self.pool.get_timeout(slice) {
                Ok(conn) => return Ok(conn),
                Err(err) => err,
            };
            let away = *since(&self.unreachable_since);
            if let Some(since) = away {
                return Err(StoreError::Unreachable(format!(
                    "no connection to PostgreSQL at {shown}: unreachable for {} s ({err})",
                    since.elapsed().as_secs()
                )));
            }
            if std::time::Instant::now() >= deadline {
                return Err(StoreError::Unreachable(format!(
                    "no connection to PostgreSQL at {shown} within {} s: {err}",
                    CONNECTION_WAIT.as_secs()
                )));
            }
        }
    }
}

/// A pooled connection, when it was last given back, and the statements prepared on it.
pub(super) struct Conn {
    client: Client,
    returned: std::time::Instant,
    statements: HashMap<&'static str, postgres::Statement>,
}

impl Conn {
    /// This connection's client with its prepared statements.
    fn prepared_client(&mut self) -> Prepared<'_, Client> {
        Prepared::new(&mut self.client, &mut self.statements)
    }

    /// `sql` prepared once on this connection, with the parameter types given (see
    /// [`Prepared::statement_typed`]).
    pub(super) fn prepared(
        &mut self,
        sql: &'static str,
        types: &[postgres::types::Type],
    ) -> Result<postgres::Statement, postgres::Error> {
        self.prepared_client().statement_typed(sql, types)
    }

    /// `sql` run with `params` as a statement prepared once on this connection: one round
    /// trip, where the client's own `query` with a text first prepares an unnamed statement
    /// (a round trip of its own) and the server plans it again each time. Every read a page
    /// makes goes through here or `query_typed`.
    pub(super) fn query(
        &mut self,
        sql: &'static str,
        params: &[&(dyn postgres::types::ToSql + Sync)],
    ) -> Result<Vec<postgres::Row>, postgres::Error> {
        self.prepared_client().query(sql, params)
    }

    /// [`Conn::query`] for exactly one row.
    pub(super) fn query_one(
        &mut self,
        sql: &'static str,
        params: &[&(dyn postgres::types::ToSql + Sync)],
    ) -> Result<postgres::Row, postgres::Error> {
        self.prepared_client().query_one(sql, params)
    }

    /// [`Conn::query`] for at most one row.
    pub(super) fn query_opt(
        &mut self,
        sql: &'static str,
        params: &[&(dyn postgres::types::ToSql + Sync)],
    ) -> Result<Option<postgres::Row>, postgres::Error> {
        self.prepared_client().query_opt(sql, params)
    }

    /// [`Conn::query`] for a statement that returns no rows: the rows it changed.
    pub(super) fn execute(
        &mut self,
        sql: &'static str,
        params: &[&(dyn postgres::types::ToSql + Sync)],
    ) -> Result<u64, postgres::Error> {
        self.prepared_client().execute(sql, params)
    }

    /// The client and the statements prepared on it, borrowed apart: a transaction of the
    /// one uses the other ([`PreparedTx`]).
    pub(super) fn parts(&mut self) -> (&mut Client, &mut Statements) {
        (&mut self.client, &mut self.statements)
    }
}

/// Statements prepared on one connection, by their text.
pub(super) type Statements = HashMap<&'static str, postgres::Statement>;

/// A client — a pooled connection, or a transaction on it — whose statements are prepared
/// once per connection. An unnamed statement costs a round trip of its own (parse and
/// describe) before it runs, and is planned again each time: an ingest batch ran a dozen of
/// them. Its `execute`, `query`, `query_one` and `query_opt` take the statement's text, as
/// the client's own do, and `statement` gives the prepared statement (for a COPY);
/// everything else is the client's (through `Deref`).
pub(super) struct Prepared<'a, C> {
    client: &'a mut C,
    statements: &'a mut Statements,
}

/// A transaction whose statements are prepared once per connection.
pub(super) type PreparedTx<'a, 't> = Prepared<'a, postgres::Transaction<'t>>;

impl<'a, C: postgres::GenericClient> Prepared<'a, C> {
    pub(super) fn new(client: &'a mut C, statements: &'a mut Statements) -> Self {
        Prepared { client, statements }
    }

    /// `sql` with its parameters of `types` (inferred where empty), prepared on this
    /// connection the first time it is asked for; the server keeps its plan.
    pub(super) fn statement_typed(
        &mut self,
        sql: &'static str,
        types: &[postgres::types::Type],
    ) -> Result<postgres::Statement, postgres::Error> {
        if let Some(statement) = self.statements.get(sql) {
            return Ok(statement.clone());
        }
        // Prepared statements outlive a transaction, even one that rolls back.
        let statement = self.client.prepare_typed(sql, types)?;
        self.statements.insert(sql, statement.clone());
        Ok(statement)
    }

    /// `sql`, prepared on this connection the first time it is asked for.
    pub(super) fn statement(
        &mut self,
        sql: &'static str,
    ) -> Result<postgres::Statement, postgres::Error> {
        self.statement_typed(sql, &[])
    }

    pub(super) fn execute(
        &mut self,
        sql: &'static str,
        params: &[&(dyn postgres::types::ToSql + Sync)],
    ) -> Result<u64, postgres::Error> {
        let statement = self.statement(sql)?;
        self.client.execute(&statement, params)
    }

    pub(super) fn query(
        &mut self,
        sql: &'static str,
        params: &[&(dyn postgres::types::ToSql + Sync)],
    ) -> Result<Vec<postgres::Row>, postgres::Error> {
        let statement = self.statement(sql)?;
        self.client.query(&statement, params)
    }

    pub(super) fn query_one(
        &mut self,
        sql: &'static str,
        params: &[&(dyn postgres::types::ToSql + Sync)],
    ) -> Result<postgres::Row, postgres::Error> {
        let statement = self.statement(sql)?;
        self.client.query_one(&statement, params)
    }

    pub(super) fn query_opt(
        &mut self,
        sql: &'static str,
        params: &[&(dyn postgres::types::ToSql + Sync)],
    ) -> Result<Option<postgres::Row>, postgres::Error> {
        let statement = self.statement(sql)?;
        self.client.query_opt(&statement, params)
    }
}

impl<C> std::ops::Deref for Prepared<'_, C> {
    type Target = C;
    fn deref(&self) -> &C {
        self.client
    }
}

impl<C> std::ops::DerefMut for Prepared<'_, C> {
    fn deref_mut(&mut self) -> &mut C {
        self.client
    }
}

impl std::ops::Deref for Conn {
    type Target = Client;
    fn deref(&self) -> &Client {
        &self.client
    }
}

impl std::ops::DerefMut for Conn {
    fn deref_mut(&mut self) -> &mut Client {
        &mut self.client
    }
}

/// Idle time after which a connection is checked before use.
const CHECK_IDLE_AFTER: Duration = Duration::from_millis(500);
/// How long that check waits for the server's answer.
const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

impl r2d2::ManageConnection for Manager {
    type Connection = Conn;
    type Error = postgres::Error;

    fn connect(&self) -> Result<Conn, postgres::Error> {
        match self.connections.connect() {
            Ok(client) => {
                *since(&self.unreachable_since) = None;
                Ok(Conn {
                    client,
                    returned: std::time::Instant::now(),
                    statements: HashMap::new(),
                })
            }
            Err(err) => {
                // Only a server that answered "too many connections" (or another lack of
                // resources) is there for a caller, who may get a connection another gives
                // back. Not answering (refused, timed out, no route), or answering that it
                // is shutting down or starting up (`57P03`, what a stopping server says
                // until its port closes) or that it refuses us, leaves nothing to wait for.
                let busy = err
                    .as_db_error()
                    .is_some_and(|db| db.code().code().starts_with("53"));
                if !busy {
                    since(&self.unreachable_since).get_or_insert_with(std::time::Instant::now);
                }
                Err(err)
            }
        }
    }

    fn is_valid(&self, conn: &mut Conn) -> Result<(), postgres::Error> {
        if conn.returned.elapsed() < CHECK_IDLE_AFTER {
            return Ok(());
        }
        // Bounded: a connection to a server gone from the network would otherwise hold the
        // caller (a page, `/-/ready`) until TCP gives up on it (`TCP_USER_TIMEOUT`). A check
        // that times out drops the connection, its empty query unanswered.
        conn.client.is_valid(CHECK_TIMEOUT)
    }

    fn has_broken(&self, conn: &mut Conn) -> bool {
        conn.returned = std::time::Instant::now();
        conn.client.is_closed()
    }
}

/// The pool every store operation takes its connection from, logging its failures to
/// connect as [`ConnectErrorLog`] does.
pub(super) fn pool(config: postgres::Config, shown: &str) -> Pool {
    let connect_errors = ConnectErrorLog::new(shown, &config);
    let unreachable_since = Unreachable::default();
    let pool = r2d2::Pool::builder()
        .max_size(POOL_SIZE)
        .min_idle(Some(1))
        .connection_timeout(CONNECTION_WAIT)
        // A connection idle for a while (perhaps broken by a database restart) is checked
        // before it is handed out, not by the request that would fail on it.
        .test_on_check_out(true)
        .error_handler(Box::new(connect_errors))
        .build_unchecked(Manager {
            connections: PostgresConnectionManager::new(config, NoTls),
            unreachable_since: unreachable_since.clone(),
        });
    Pool {
        pool,
        unreachable_since,
    }
}

/// `url` as it may be shown: `postgres://user@host:port/database`, never the password.
pub fn redact_url(url: &str) -> String {
    match postgres::Config::from_str(url) {
        Ok(config) => shown(&config),
        Err(_) => "(an unparsable PostgreSQL URL)".to_string(),
    }
}

pub(super) fn shown(config: &postgres::Config) -> String {
    let hosts: Vec<String> = config
        .get_hosts()
        .iter()
        .zip(config.get_ports().iter().chain(std::iter::repeat(&5432)))
        .map(|(host, port)| match host {
            postgres::config::Host::Tcp(name) => format!("{name}:{port}"),
            postgres::config::Host::Unix(dir) => format!("{}:{port}", dir.display()),
        })
        .collect();
    format!(
        "postgres://{}@{}/{}",
        config.get_user().unwrap_or(""),
        hosts.join(","),
        config.get_dbname().unwrap_or("")
    )
}

/// Sets the TCP timeouts a URL left to the kernel (see [`TCP_USER_TIMEOUT`]). A URL's own
/// `tcp_user_timeout`, `keepalives_idle`, `keepalives_interval` and `keepalives_retries`
/// (seconds, as the driver reads them) are kept.
pub(super) fn detect_vanished_server(config: &mut postgres::Config) {
    if config.get_tcp_user_timeout().is_none() {
        config.tcp_user_timeout(TCP_USER_TIMEOUT);
    }
    if config.get_keepalives_idle() == DRIVER_KEEPALIVES_IDLE {
        config.keepalives_idle(KEEPALIVES_IDLE);
    }
    if config.get_keepalives_interval().is_none() {
        config.keepalives_interval(KEEPALIVES_INTERVAL);
    }
    if config.get_keepalives_retries().is_none() {
        config.keepalives_retries(KEEPALIVES_RETRIES);
    }
}

/// Sets [`LOCK_TIMEOUT`] in the sessions' options, unless the URL's options set a
/// `lock_timeout` of their own.
pub(super) fn bound_lock_waits(config: &mut postgres::Config) {
    let options = config.get_options().unwrap_or("");
    if !options.contains("lock_timeout") {
        let joined = format!("{options} -c lock_timeout={LOCK_TIMEOUT}");
        config.options(joined.trim_start());
    }
}

/// The pool's failures to open a connection, logged as one sentence naming the server (its
/// password hidden) at most every [`CONNECT_ERROR_LOG_EVERY`], with how many were not
/// logged since; r2d2's own handler logs "error connecting to server" for every attempt.
struct ConnectErrorLog {
    shown: String,
    config: postgres::Config,
    /// When a failure was last logged, and the failures since.
    last: Mutex<(Option<std::time::Instant>, u64)>,
}

impl ConnectErrorLog {
    fn new(shown: &str, config: &postgres::Config) -> ConnectErrorLog {
        ConnectErrorLog {
            shown: shown.to_string(),
            config: config.clone(),
            last: Mutex::new((None, 0)),
        }
    }
}

impl std::fmt::Debug for ConnectErrorLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectErrorLog")
            .field("server", &self.shown)
            .finish_non_exhaustive()
    }
}

impl r2d2::HandleError<postgres::Error> for ConnectErrorLog {
    fn handle_error(&self, err: postgres::Error) {
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        let now = std::time::Instant::now();
        if last
            .0
            .is_some_and(|at| now.duration_since(at) < CONNECT_ERROR_LOG_EVERY)
        {
            last.1 += 1;
            return;
        }
        let suppressed = std::mem::take(&mut last.1);
        last.0 = Some(now);
        drop(last);
        // What the server said, in connect_error's words; or why it was not reached, with
        // every cause (the driver's own message is only "error connecting to server").
        let sentence = match connect_error(&self.shown, &self.config, &err) {
            StoreError::Refused(s) => s,
            _ if err.as_db_error().is_none() => {
                format!(
                    "cannot reach PostgreSQL at {}: {}",
                    self.shown,
                    describe(&err)
                )
            }
            other => other.to_string(),
        };
        tracing::warn!(
            suppressed,
            "cannot open a connection to the store: {sentence}"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_url_without_tcp_settings_gets_timeouts_and_its_own_are_kept() {
        let mut plain = postgres::Config::from_str("postgres://u@db:5432/probewatch")
            .expect("url without settings");
        detect_vanished_server(&mut plain);
        assert_eq!(plain.get_tcp_user_timeout(), Some(&TCP_USER_TIMEOUT));
        assert_eq!(plain.get_keepalives_idle(), KEEPALIVES_IDLE);
        assert_eq!(plain.get_keepalives_interval(), Some(KEEPALIVES_INTERVAL));
        assert_eq!(plain.get_keepalives_retries(), Some(KEEPALIVES_RETRIES));

        let mut own = postgres::Config::from_str(
            "postgres://u@db/probewatch?tcp_user_timeout=5&keepalives_idle=7\
             &keepalives_interval=2&keepalives_retries=9",
        )
        .expect("url with settings");
        detect_vanished_server(&mut own);
        assert_eq!(own.get_tcp_user_timeout(), Some(&Duration::from_secs(5)));
        assert_eq!(own.get_keepalives_idle(), Duration::from_secs(7));
        assert_eq!(own.get_keepalives_interval(), Some(Duration::from_secs(2)));
        assert_eq!(own.get_keepalives_retries(), Some(9));
    }

    #[test]
    fn sessions_get_a_lock_timeout_unless_the_url_sets_one() {
        let mut plain =
            postgres::Config::from_str("postgres://u@db/probewatch").expect("plain url");
        bound_lock_waits(&mut plain);
        assert_eq!(plain.get_options(), Some("-c lock_timeout=20s"));

        let mut other =
            postgres::Config::from_str("postgres://u@db/probewatch?options=-c%20search_path%3Dpw")
                .expect("url with options");
        bound_lock_waits(&mut other);
        assert_eq!(
            other.get_options(),
            Some("-c search_path=pw -c lock_timeout=20s")
        );

        let mut own = postgres::Config::from_str(
            "postgres://u@db/probewatch?options=-c%20lock_timeout%3D5min",
        )
        .expect("url with its own lock timeout");
        bound_lock_waits(&mut own);
        assert_eq!(own.get_options(), Some("-c lock_timeout=5min"));
    }
}

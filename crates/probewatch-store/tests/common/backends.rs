//! The back ends every behaviour test runs against: SQLite in a temporary directory, and
//! PostgreSQL — a server the test starts itself (`probewatch-testpg`), or the one named by
//! `PROBEWATCH_TEST_POSTGRES_URL` (an administrator's URL; each test makes its own
//! database there). `PROBEWATCH_TEST_STORE=sqlite` or `=postgres` runs only one.

use probewatch_testpg::TestPostgres;

/// Where a test's store lives; opening it again reaches the same data.
pub enum Backend {
    /// A SQLite store in its own directory.
    Sqlite(tempfile::TempDir),
    /// A PostgreSQL database (and the server, when the test started one).
    Postgres {
        url: String,
        _server: Option<TestPostgres>,
    },
}

impl Backend {
    pub fn name(&self) -> &'static str {
        match self {
            Backend::Sqlite(_) => "sqlite",
            Backend::Postgres { .. } => "postgres",
        }
    }

    /// Opens the store (again): the same data each time.
    pub fn open(&self) -> Box<dyn probewatch_store::Store> {
        self.open_with_head_max(probewatch_store::sqlite::DEFAULT_HEAD_MAX_SAMPLES)
    }

    /// Opens the store with a head that compacts after `samples` samples.
    pub fn open_with_head_max(&self, samples: u64) -> Box<dyn probewatch_store::Store> {
        match self {
            Backend::Sqlite(dir) => Box::new(
                probewatch_store::SqliteStore::open(dir.path())
                    .expect("open sqlite")
                    .with_head_max_samples(samples),
            ),
            Backend::Postgres { url, .. } => Box::new(
                probewatch_store::postgres::PgStore::open(url, None)
                    .expect("open postgres")
                    .with_head_max_samples(samples),
            ),
        }
    }

    /// The PostgreSQL URL, for tests that open a second store on the same database (two
    /// servers).
    pub fn postgres_url(&self) -> Option<&str> {
        match self {
            Backend::Postgres { url, .. } => Some(url),
            Backend::Sqlite(_) => None,
        }
    }
}

fn wanted(name: &str) -> bool {
    std::env::var("PROBEWATCH_TEST_STORE").map_or(true, |v| v == name || v == "all")
}

/// The back ends to run `test` against (its name makes the PostgreSQL database's name).
pub fn backends(test: &str) -> Vec<Backend> {
    let mut out = Vec::new();
    if wanted("sqlite") {
        out.push(Backend::Sqlite(tempfile::tempdir().expect("tempdir")));
    }
    if wanted("postgres") {
        let database = format!("pw_{test}_{}", std::process::id());
        if let Ok(admin) = std::env::var("PROBEWATCH_TEST_POSTGRES_URL") {
            let mut client = postgres::Client::connect(&admin, postgres::NoTls)
                .expect("connect to the test server");
            client
                .batch_execute(&format!("CREATE DATABASE {database}"))
                .expect("create the test database");
            let url = match admin.rsplit_once('/') {
                Some((base, _)) => format!("{base}/{database}"),
                None => panic!("PROBEWATCH_TEST_POSTGRES_URL must end in /database"),
            };
            out.push(Backend::Postgres { url, _server: None });
        } else if let Some(server) = TestPostgres::start() {
            let url = server.create_database(&database);
            out.push(Backend::Postgres {
                url,
                _server: Some(server),
            });
        }
    }
    out
}

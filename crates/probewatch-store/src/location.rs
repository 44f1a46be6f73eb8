//! Choosing a back end: [`StoreLocation`] from the `store` setting, and [`open_store`].

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::postgres::{PgStore, redact_url};
use crate::sqlite::SqliteStore;
use crate::{Store, StoreError};

/// Where the store lives: SQLite in a data directory (one host, the default), or a
/// PostgreSQL database (many hosts, several servers).
#[derive(Clone, PartialEq, Eq)]
pub enum StoreLocation {
    /// The SQLite database in this directory.
    Sqlite(PathBuf),
    /// A PostgreSQL connection URL (`postgres://…`) or `key=value` settings.
    Postgres(String),
}

impl std::fmt::Debug for StoreLocation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe())
    }
}

impl StoreLocation {
    /// Reads the `store` setting: a `postgres://` or `postgresql://` URL, `sqlite:DIR`, or
    /// nothing (SQLite in `data_dir`).
    pub fn parse(setting: Option<&str>, data_dir: &Path) -> Result<StoreLocation, StoreError> {
        let Some(setting) = setting.map(str::trim).filter(|s| !s.is_empty()) else {
            return Ok(StoreLocation::Sqlite(data_dir.to_path_buf()));
        };
        if setting.starts_with("postgres://") || setting.starts_with("postgresql://") {
            return Ok(StoreLocation::Postgres(setting.to_string()));
        }
        if let Some(dir) = setting.strip_prefix("sqlite:") {
            let dir = dir.trim_start_matches("//");
            return Ok(StoreLocation::Sqlite(if dir.is_empty() {
                data_dir.to_path_buf()
            } else {
                PathBuf::from(dir)
            }));
        }
        Err(StoreError::Refused(format!(
            "store = {:?} is not a store: use postgres://user@host:port/database, or \
             sqlite:DIRECTORY (the default is SQLite in the data directory)",
            redact_url(setting)
        )))
    }

    /// The location as it may be shown: a directory, or a URL without its password.
    pub fn describe(&self) -> String {
        match self {
            StoreLocation::Sqlite(dir) => format!("sqlite:{}", dir.display()),
            StoreLocation::Postgres(url) => redact_url(url),
        }
    }

    /// Whether this is a PostgreSQL store (several servers may share it).
    pub fn is_postgres(&self) -> bool {
        matches!(self, StoreLocation::Postgres(_))
    }
}

/// How to open a store, whichever the back end.
#[derive(Clone, Default)]
pub struct StoreOptions {
    /// Head samples before compaction (see [`SqliteStore::with_head_max_samples`]); `None`:
    /// the back end's default ([`crate::sqlite::DEFAULT_HEAD_MAX_SAMPLES`],
    /// [`crate::postgres::DEFAULT_HEAD_MAX_SAMPLES`]).
    pub head_max_samples: Option<u64>,
    /// The PostgreSQL password, when it does not come in the URL (from a file or the
    /// environment). Never shown.
    pub password: Option<String>,
}

impl std::fmt::Debug for StoreOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreOptions")
            .field("head_max_samples", &self.head_max_samples)
            .field("password", &self.password.as_ref().map(|_| "(hidden)"))
            .finish()
    }
}

/// Opens the store at `location`, creating or migrating it as needed.
pub fn open_store(
    location: &StoreLocation,
    options: &StoreOptions,
) -> Result<Arc<dyn Store>, StoreError> {
    Ok(match location {
        // A head size only when one is set: each back end has its own default (PostgreSQL's
        // also grows with the number of series, `postgres::HEAD_SAMPLES_PER_SERIES`).
        StoreLocation::Sqlite(dir) => {
            let store = SqliteStore::open(dir)?;
            Arc::new(match options.head_max_samples {
                Some(samples) => store.with_head_max_samples(samples),
                None => store,
            })
        }
        StoreLocation::Postgres(url) => {
            let store = PgStore::open(url, options.password.as_deref())?;
            Arc::new(match options.head_max_samples {
                Some(samples) => store.with_head_max_samples(samples),
                None => store,
            })
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_setting_picks_the_back_end() {
        let data = Path::new("/var/lib/probewatch");
        assert_eq!(
            StoreLocation::parse(None, data).ok(),
            Some(StoreLocation::Sqlite(data.into()))
        );
        assert_eq!(
            StoreLocation::parse(Some("sqlite:/srv/pw"), data).ok(),
            Some(StoreLocation::Sqlite("/srv/pw".into()))
        );
        let pg = StoreLocation::parse(Some("postgres://pw:secret@db:5432/probes"), data)
            .expect("postgres");
        assert!(pg.is_postgres());
        assert_eq!(pg.describe(), "postgres://pw@db:5432/probes");
        assert!(!format!("{pg:?}").contains("secret"));
        let Err(StoreError::Refused(msg)) =
            StoreLocation::parse(Some("mysql://u:secret@h/db"), data)
        else {
            panic!("an unknown scheme is refused");
        };
        assert!(msg.contains("postgres://"), "{msg}");
        assert!(!msg.contains("secret"), "{msg}");
    }
}

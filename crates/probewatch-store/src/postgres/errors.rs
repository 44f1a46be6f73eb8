//! PostgreSQL's errors as the store reports them: one sentence with what the server said,
//! `Unreachable` for what is worth retrying, and the SQLSTATE for the few a caller acts on.

use postgres::error::SqlState;

use crate::StoreError;

impl From<postgres::Error> for StoreError {
    fn from(err: postgres::Error) -> StoreError {
        let sentence = describe(&err);
        let unavailable = err.is_closed()
            || err.as_db_error().map_or_else(
                || is_connection_error(&err),
                // Class 08: connection exceptions; 57: the server is shutting down or starting.
                |db| matches!(&db.code().code()[..2], "08" | "57"),
            );
        if unavailable {
            return StoreError::Unreachable(format!("PostgreSQL is unavailable: {sentence}"));
        }
        StoreError::Database(Box::new(PgError {
            sentence,
            source: err,
        }))
    }
}

/// A PostgreSQL error whose message says what the server said (the driver's own says only
/// "db error").
#[derive(Debug)]
struct PgError {
    sentence: String,
    source: postgres::Error,
}

impl std::fmt::Display for PgError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PostgreSQL: {}", self.sentence)
    }
}

impl std::error::Error for PgError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.source)
    }
}

/// What went wrong, in one line: the server's message and code, or the error and its causes.
pub(super) fn describe(err: &postgres::Error) -> String {
    if let Some(db) = err.as_db_error() {
        let mut text = format!("{} ({})", db.message(), db.code().code());
        if let Some(detail) = db.detail() {
            text.push_str(&format!(": {detail}"));
        }
        return text;
    }
    let mut text = err.to_string();
    let mut source = std::error::Error::source(err);
    while let Some(e) = source {
        text.push_str(&format!(": {e}"));
        source = e.source();
    }
    text
}

impl From<r2d2::Error> for StoreError {
    fn from(err: r2d2::Error) -> StoreError {
        StoreError::Unreachable(format!("no PostgreSQL connection available: {err}"))
    }
}

/// Whether an error without a server error code is the connection failing (as opposed to,
/// say, a value that does not convert).
fn is_connection_error(err: &postgres::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = source {
        if e.is::<std::io::Error>() {
            return true;
        }
        source = e.source();
    }
    false
}

/// Whether a failed transaction is worth running again as it was: a deadlock with, or a
/// serialization failure against, another server's transaction.
pub(super) fn retryable(err: &StoreError) -> bool {
    sql_state(err).is_some_and(|code| {
        *code == SqlState::T_R_DEADLOCK_DETECTED || *code == SqlState::T_R_SERIALIZATION_FAILURE
    })
}

/// The SQLSTATE the server gave for a failed statement, if it got that far.
pub(super) fn sql_state(err: &StoreError) -> Option<&SqlState> {
    let StoreError::Database(source) = err else {
        return None;
    };
    source
        .downcast_ref::<PgError>()
        .and_then(|e| e.source.code())
}

/// One sentence for a failed connection: what PostgreSQL said, or that it was not reached.
pub(super) fn connect_error(
    shown: &str,
    config: &postgres::Config,
    err: &postgres::Error,
) -> StoreError {
    let user = config.get_user().unwrap_or("");
    let database = config.get_dbname().unwrap_or(user);
    let Some(db) = err.as_db_error() else {
        return StoreError::Unreachable(format!("cannot reach PostgreSQL at {shown}: {err}"));
    };
    let code = db.code();
    if *code == SqlState::INVALID_PASSWORD || *code == SqlState::INVALID_AUTHORIZATION_SPECIFICATION
    {
        StoreError::Refused(format!(
            "PostgreSQL at {shown} refused user {user:?}: wrong password, or no pg_hba.conf \
             entry lets it in ({})",
            db.message()
        ))
    } else if *code == SqlState::INVALID_CATALOG_NAME {
        StoreError::Refused(format!(
            "PostgreSQL at {shown} has no database {database:?}: create it (createdb -O \
             {user} {database}) or correct the URL"
        ))
    } else if *code == SqlState::CANNOT_CONNECT_NOW || *code == SqlState::TOO_MANY_CONNECTIONS {
        StoreError::Unreachable(format!(
            "PostgreSQL at {shown} cannot take a connection now: {}",
            db.message()
        ))
    } else {
        StoreError::Refused(format!(
            "PostgreSQL at {shown} refused the connection: {}",
            db.message()
        ))
    }
}

//! What keeps one query from taking the whole process down: a shape check before parsing
//! (the parser, the planner and the evaluator all recurse once per level of the tree, so a
//! tree deeper than the thread's stack would abort the process), a time range that keeps
//! every millisecond sum inside `i64`, and a [`Guard`] that every evaluation carries: a
//! deadline, a cancel flag the HTTP layer sets when the client goes away, and a budget of
//! samples held in memory (Prometheus's `query.max-samples`).

use std::cell::Cell;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::QueryError;

/// Deepest bracket nesting (`(`, `[`, `{`) a query may have. Real queries nest a few levels;
/// Prometheus's own test files nest at most a dozen.
pub const MAX_NESTING: usize = 128;

/// Most operator tokens a query may have. A chain `a + b + c …` is a tree as deep as it is
/// long, so this bounds the depth that brackets do not show.
pub const MAX_OPERATORS: usize = 1_000;

/// Stack that a thread planning or evaluating queries needs for the deepest tree these
/// limits let through, with room to spare even in a debug build (measured: a chain of 1,000
/// operators needs 4-8 MiB unoptimised; `tests/limits.rs` runs the limits on this stack).
pub const STACK_BYTES: usize = 16 * 1024 * 1024;

/// Longest query text accepted, in bytes.
pub const MAX_QUERY_BYTES: usize = 256 * 1024;

/// Earliest time a query may name: 0001-01-01T00:00:00Z, in ms.
pub const MIN_TIME_MS: i64 = -62_135_596_800_000;

/// Latest time a query may name: 9999-12-31T23:59:59.999Z, in ms.
pub const MAX_TIME_MS: i64 = 253_402_300_799_999;

/// Longest duration (range, offset, step) a query may name: 292 years, the longest Go's
/// `time.Duration` (and so Prometheus) can hold.
pub const MAX_DURATION_MS: i64 = 292 * 365 * 86_400_000;

/// Refuses a time outside [`MIN_TIME_MS`, `MAX_TIME_MS`]; `what` names it in the error.
pub fn check_time(what: &str, ms: i64) -> Result<i64, QueryError> {
    if (MIN_TIME_MS..=MAX_TIME_MS).contains(&ms) {
        Ok(ms)
    } else {
        Err(QueryError::Parse(format!(
            "{what} is out of range: times must lie between 0001-01-01 and 9999-12-31"
        )))
    }
}

/// Refuses a duration longer than [`MAX_DURATION_MS`] either way.
pub(crate) fn check_duration(what: &str, ms: i64) -> Result<i64, QueryError> {
    if ms.unsigned_abs() <= MAX_DURATION_MS.unsigned_abs() {
        Ok(ms)
    } else {
        Err(QueryError::Parse(format!(
            "{what} is out of range: durations may be at most 292 years"
        )))
    }
}

/// Checks the query text's size, bracket nesting and operator count before the parser sees
/// it, so no tree deeper than `MAX_NESTING + MAX_OPERATORS` levels is ever built. Counts over
/// the raw text (skipping string literals and comments), so it may overcount a little
/// (`=` in a label matcher counts as an operator), never undercount.
pub(crate) fn check_shape(text: &str) -> Result<(), QueryError> {
    if text.len() > MAX_QUERY_BYTES {
        return Err(QueryError::TooComplex(format!(
            "the query is {} bytes long; at most {MAX_QUERY_BYTES} are accepted",
            text.len()
        )));
    }
    let bytes = text.as_bytes();
    let (mut depth, mut deepest, mut operators) = (0usize, 0usize, 0usize);
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        match c {
            b'"' | b'\'' => {
                i += 1;
                while i < bytes.len() && bytes[i] != c {
                    i += if bytes[i] == b'\\' { 2 } else { 1 };
                }
            }
            b'`' => {
                i += 1;
                while i < bytes.len() && bytes[i] != b'`' {
                    i += 1;
                }
            }
            b'#' => {
                while i < bytes.len() && bytes[i] != b'\n' {
                    i += 1;
                }
            }
            b'(' | b'[' | b'{' => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            b')' | b']' | b'}' => depth = depth.saturating_sub(1),
            b'+' | b'-' | b'*' | b'/' | b'%' | b'^' | b'=' | b'!' | b'<' | b'>' => operators += 1,
            c if c.is_ascii_alphabetic() || c == b'_' => {
                let start = i;
                while i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_') {
                    i += 1;
                }
                let word = &text[start..i];
                if ["and", "or", "unless", "atan2"]
                    .iter()
                    .any(|w| word.eq_ignore_ascii_case(w))
                {
                    operators += 1;
                }
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    if deepest > MAX_NESTING {
        return Err(QueryError::TooComplex(format!(
            "the query nests brackets {deepest} deep; at most {MAX_NESTING} levels are accepted"
        )));
    }
    if operators > MAX_OPERATORS {
        return Err(QueryError::TooComplex(format!(
            "the query has {operators} operators; at most {MAX_OPERATORS} are accepted"
        )));
    }
    Ok(())
}

/// The limits one evaluation runs under, checked as it goes: a deadline, a cancel flag, and a
/// budget of samples held in memory at once.
#[derive(Debug)]
pub struct Guard {
    deadline: Option<Instant>,
    cancel: Vec<Arc<AtomicBool>>,
    max_samples: usize,
    held: Cell<usize>,
    ticks: Cell<u32>,
}

impl Guard {
    /// A guard with no deadline and no cancel flag, holding at most `max_samples`.
    pub fn new(max_samples: usize) -> Guard {
        Guard {
            deadline: None,
            cancel: Vec::new(),
            max_samples,
            held: Cell::new(0),
            ticks: Cell::new(0),
        }
    }

    /// Fails the evaluation once `timeout` has passed from now.
    pub fn with_timeout(mut self, timeout: Option<Duration>) -> Guard {
        self.deadline = timeout.and_then(|t| Instant::now().checked_add(t));
        self
    }

    /// Fails the evaluation once `cancel` is set (the client went away, or shutdown); may be
    /// given several flags.
    pub fn with_cancel(mut self, cancel: Arc<AtomicBool>) -> Guard {
        self.cancel.push(cancel);
        self
    }

    /// Fails when the deadline has passed or the query was cancelled. Cheap enough to call
    /// in every loop: the clock is read every 64th call.
    pub fn check(&self) -> Result<(), QueryError> {
        if self.cancel.iter().any(|c| c.load(Ordering::Relaxed)) {
            return Err(QueryError::Canceled);
        }
        let ticks = self.ticks.get().wrapping_add(1);
        self.ticks.set(ticks);
        if ticks.is_multiple_of(64)
            && let Some(deadline) = self.deadline
            && Instant::now() >= deadline
        {
            return Err(QueryError::Timeout);
        }
        Ok(())
    }

    /// Counts `n` more samples held in memory; fails when that passes the budget.
    pub fn charge(&self, n: usize) -> Result<(), QueryError> {
        let held = self.held.get().saturating_add(n);
        self.held.set(held);
        if held > self.max_samples {
            return Err(QueryError::TooManySamples);
        }
        Ok(())
    }

    /// Gives back `n` samples that are no longer held.
    pub fn release(&self, n: usize) {
        self.held.set(self.held.get().saturating_sub(n));
    }

    /// How many more samples may be loaded.
    pub fn remaining(&self) -> usize {
        self.max_samples.saturating_sub(self.held.get())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shape_counts_brackets_and_operators_outside_strings() {
        assert!(check_shape("sum(rate(x{a=\"((((\"}[5m]))").is_ok());
        let deep = format!("{}1{}", "(".repeat(129), ")".repeat(129));
        let err = check_shape(&deep).expect_err("too deep");
        assert!(err.to_string().contains("129 deep"), "{err}");
        assert!(check_shape(&format!("{}1{}", "(".repeat(128), ")".repeat(128))).is_ok());
        let chain = vec!["1"; 1_002].join(" + ");
        let err = check_shape(&chain).expect_err("too long a chain");
        assert!(err.to_string().contains("1001 operators"), "{err}");
        let words = vec!["a"; 1_002].join(" OR ");
        assert!(check_shape(&words).is_err());
        // Brackets and operators in strings and comments do not count.
        let quoted = format!("x{{a=\"{}\"}} # {}", "(".repeat(500), "+".repeat(2_000));
        assert!(check_shape(&quoted).is_ok());
        assert!(check_shape(&"x".repeat(MAX_QUERY_BYTES + 1)).is_err());
    }

    #[test]
    fn guard_stops_on_cancel_deadline_and_budget() {
        let cancel = Arc::new(AtomicBool::new(false));
        let guard = Guard::new(10).with_cancel(cancel.clone());
        assert!(guard.check().is_ok());
        cancel.store(true, Ordering::Relaxed);
        assert_eq!(guard.check(), Err(QueryError::Canceled));

        let guard = Guard::new(10).with_timeout(Some(Duration::ZERO));
        let stopped = (0..64).map(|_| guard.check()).find(Result::is_err);
        assert_eq!(stopped, Some(Err(QueryError::Timeout)));

        let guard = Guard::new(10);
        assert!(guard.charge(10).is_ok());
        assert_eq!(guard.charge(1), Err(QueryError::TooManySamples));
        guard.release(5);
        assert_eq!(guard.remaining(), 4);
    }

    #[test]
    fn times_and_durations_have_sane_bounds() {
        assert!(check_time("start", 0).is_ok());
        assert!(check_time("start", -9_000_000_000_000_000).is_err());
        assert!(check_duration("offset", MAX_DURATION_MS).is_ok());
        assert!(check_duration("offset", -MAX_DURATION_MS - 1).is_err());
    }
}

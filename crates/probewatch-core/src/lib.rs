//! The plain data of probewatch and the parsers that produce it.
//!
//! This crate does no IO, spawns nothing and knows no SQL: it turns the bytes of a result file
//! into [`ProbeResult`]s, or into a [`Reject`] that says exactly why the file was refused.
//! Everything else in probewatch (watcher, store, web) passes these types around.

pub mod format;
pub mod labels;
pub mod model;
pub mod reject;
pub mod time;

pub use format::{Format, ParseLimits, parse};
pub use labels::{Labels, LabelsError};
pub use model::{CheckResult, Metric, ProbeResult, SeriesSample, Status, TimeSource};
pub use reject::{Reject, RejectKind};
pub use time::{now_ms, now_us, parse_time_ms};

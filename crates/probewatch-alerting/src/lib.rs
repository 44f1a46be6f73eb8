//! probewatch's alerting: Prometheus rule files ([`rulefile`]), their evaluation and the
//! alert lifecycle ([`engine`]), annotation templates ([`template`]), and delivering the
//! notifications that evaluation queues in the store's outbox ([`notify`]), silences and
//! acknowledgements ([`silence`]), maintenance windows ([`maintenance`]), inhibition
//! ([`inhibit`]), and
//! promtool-format rule unit tests ([`unittest`]).

pub mod cron;
pub mod engine;
pub mod inhibit;
pub mod maintenance;
pub mod native;
pub mod notify;
pub mod payload;
pub mod rulefile;
pub mod silence;
pub mod template;
pub mod unittest;

pub use engine::{Engine, EngineConfig, EngineSnapshot, Route, SnapshotCell};
pub use rulefile::{Group, Rule, RuleFileError, RuleKind};

//! probewatch, the binary's library half: command line, configuration, the ingest pipeline,
//! the daemon's wiring and the one-shot commands. `main.rs` only dispatches.
//!
//! Kept as a library so the benchmark harness and tests can reach the same code paths.

pub mod agent;
pub mod alerting;
pub mod bench;
pub mod bench_agents;
pub mod bench_alert;
pub mod bench_browser;
pub mod bench_dashboard;
pub mod bench_formats;
pub mod bench_http;
pub mod bench_promql;
pub mod bench_query;
pub mod bench_rules;
pub mod bench_store;
pub mod cli;
pub mod client;
pub mod cluster;
pub mod commands;
pub mod config;
pub mod daemon;
pub mod demo;
pub mod exec;
pub mod health;
pub mod ingest;
pub mod process;
pub mod receiver_config;
pub mod reload;
pub mod remote;
pub mod shutdown;
pub mod staleness;
pub mod telemetry;

//! End-to-end tests: the real `probewatch` binary, a real spool directory, a real SQLite file
//! and a real HTTP client. One test binary (faster to link); one module per concern.

mod util;
mod webdriver;

mod agent;
mod alerting;
mod bad_input;
mod commands;
mod dashboard;
mod exactly_once;
mod formats;
mod grafana;
mod hardening;
mod history_pages;
mod notify_faults;
mod operator;
mod postgres;
mod query_api;
mod readme;
mod receivers;
mod watching;

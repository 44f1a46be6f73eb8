//! End-to-end tests: the real `probewatch` binary, a real spool directory, a real SQLite file
//! and a real HTTP client. One test binary (faster to link); one module per concern.

mod util;
mod webdriver;

mod agent;
mod alerting;
mod bad_input;
mod beyond_dashboard;
mod commands;
mod dashboard;
mod exactly_once;
mod formats;
mod grafana;
mod hardening;
mod history_pages;
mod notifications;
mod notify_faults;
mod postgres;
mod problems;
mod query_api;
mod quieting;
mod readme;
mod receivers;
mod watching;

//! The integration tests, one binary (`cargo test --test it`) with one module per area; run
//! one area with a filter, e.g. `cargo test --test it abuse::`. The shared harness is in
//! `common/`. All modules run in parallel in this one process: a test that needs the machine
//! to itself (fixed ports, fd or process limits, tight timings) takes `common::exclusive()`.

mod common;

mod abuse;
mod admin;
mod auth;
mod check;
mod crash;
mod dane;
mod dane_sts;
mod domains;
mod drills;
mod dsn;
mod e2e;
mod examples;
mod faults;
mod inbox;
mod inbox_memory;
mod inbox_web;
mod init;
mod mta_sts;
mod pg_counts;
mod pg_reclaim;
mod pg_sweep;
mod postfix;
mod postgres;
mod properties;
mod queue_cli;
mod recipients;
mod routing;
mod stream;
mod swaks;
mod tenants;
mod tls;

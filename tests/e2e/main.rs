//! End-to-end tests of the built `hxlog` binary, one module per area. The
//! helpers live in the `hxlog-test-support` crate (`tests/e2e/support/`); the
//! `use` lines below keep their short paths (`crate::pg`, `crate::wps_server`).

use hxlog_test_support::{harness as common, http as client, logger, pg, proxy, wps_server};

mod clock;
mod foundation;
mod hardening;
mod http;
mod ops;
mod pg_hang;
mod pg_quarantine;
mod pg_tls;
mod pgbouncer;
mod postgres;
mod service;
mod webpubsub;
mod wps_hardening;
mod wps_sink;

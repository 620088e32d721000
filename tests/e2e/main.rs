//! End-to-end tests of the built `hxlog` binary, one module per area.

mod clock;
mod common;
mod foundation;
mod logger;
mod ops;
mod pg;
mod pg_hang;
mod pg_quarantine;
mod pg_tls;
mod pgbouncer;
mod postgres;
mod proxy;
mod service;
mod webpubsub;
mod wps_server;
mod wps_sink;

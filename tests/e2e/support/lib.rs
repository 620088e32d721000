//! The one test-support layer of hxlog's test binaries (`tests/e2e`, the
//! end-to-end tests, and `tests/features.rs`, the cucumber runner), modelled on
//! cargo's `crates/cargo-test-support`: a library crate, so each test target
//! uses the part it needs without `#![allow(dead_code)]`.
//!
//! It owns how tests build the world hxlog runs in (a config folder, a fake
//! w1-therm sysfs tree, a database, a TCP proxy, a fake Web PubSub service) and
//! how they wait on it (deadlines scaled by `HXLOG_TEST_TIME_FACTOR`). It must
//! not depend on hxlog's own crate: it checks hxlog from the outside.

pub mod harness;
pub mod http;
pub mod logger;
pub mod pg;
pub mod proxy;
pub mod wps_server;

pub use harness::*;

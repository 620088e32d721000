//! End-to-end tests of the built `hxlog` binary, one module per area.

mod common;
mod foundation;

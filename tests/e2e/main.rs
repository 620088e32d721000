//! End-to-end tests of the built `hxlog` binary, one module per area.
mod ops;
fn main() {}

//! hxlog: a store-and-forward data logger for heat exchangers.
//!
//! Data flows one way: [`sensors`] → [`outbox`] → [`forward`] → [`sinks`].
//! See `ARCHITECTURE.md` for the map.

pub mod cli;
pub mod commands;
pub mod config;
pub mod efficiency;
pub mod forward;
pub mod logging;
pub mod notify;
pub mod outbox;
pub mod sample;
pub mod sampler;
pub mod sensors;
pub mod sinks;
pub mod when;

/// The README's Rust examples run as doc tests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;

//! hxlog: a store-and-forward data logger for heat exchangers.
//!
//! Data flows one way: [`sensors`] → [`outbox`] → [`forward`] → [`sinks`].
//! See `ARCHITECTURE.md` for the map.

#![warn(missing_docs)]

// Reading order: the domain, then the data flow, then the program around it.
pub mod when;
pub mod sample;
pub mod efficiency;
pub mod alarms;
pub mod clock;
pub mod config;
pub mod sensors;
pub mod outbox;
pub mod sampler;
pub mod forward;
pub mod sinks;
pub mod monitor;
pub mod output;
pub mod http;
pub mod cli;
pub mod logging;
pub mod notify;
pub mod commands;

/// The README's Rust examples run as doc tests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;

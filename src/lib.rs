//! hxlog: a store-and-forward data logger for heat exchangers.
//!
//! Data flows one way: [`sensors`] → [`outbox`] → [`forward`] → [`sinks`].
//! See `ARCHITECTURE.md` for the map.

pub mod sample;
pub mod efficiency;
pub mod sensors;
pub mod sinks;

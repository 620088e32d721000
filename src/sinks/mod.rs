//! Sinks: the places samples are delivered to (PostgreSQL, Azure Web PubSub).
//!
//! A sink knows its own protocol and nothing of the outbox: the forwarder hands
//! it a batch of [`Sample`]s, in outbox order, and acts on the [`SinkError`] class
//! alone (retry later, retry slowly, or record the batch, or just the samples the
//! sink names, as refused and move on).

use std::future::Future;
use std::time::Duration;

use crate::sample::Sample;

pub mod postgres;
pub mod webpubsub;

/// A delivery target. Implementations must be idempotent on [`Sample::id`]:
/// the forwarder delivers at least once, and may resend a batch after a crash.
pub trait Sink: Send + 'static {
    /// Stable name, used as the sink's cursor key in the outbox and in logs (`postgres`).
    fn name(&self) -> &'static str;

    /// The largest batch this sink accepts in one [`Sink::send`].
    fn max_batch(&self) -> usize;

    /// Delivers `batch` (non-empty, oldest first). Returns only when the sink has
    /// durably accepted every sample (for Postgres: the transaction committed).
    fn send(&mut self, batch: &[Sample]) -> impl Future<Output = Result<(), SinkError>> + Send;
}

/// Why a delivery failed, classified for the forwarder's retry decision.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// Worth retrying soon: connection refused or reset, timeouts, 5xx/429,
    /// server shutting down, serialization failures.
    #[error("{message}")]
    Transient {
        /// What went wrong, for the log and `status` (never contains a secret).
        message: String,
        /// How long the server asked us to wait (`Retry-After`), if it said.
        retry_after: Option<Duration>,
    },
    /// Needs a human: bad credentials, missing permissions, schema mismatch.
    /// The forwarder keeps the data and retries slowly.
    #[error("{message}")]
    Permanent {
        /// What went wrong and what to do about it.
        message: String,
    },
    /// The sink refused this batch itself (e.g. HTTP 400): retrying it can never
    /// succeed. The forwarder records the samples as refused and moves on.
    #[error("{message}")]
    Rejected {
        /// The sink's reason.
        message: String,
    },
    /// The sink refused these samples of the batch for their content, and
    /// durably accepted every other sample of it. The forwarder records just
    /// these as refused, acks the rest, and moves on. A sink that cannot tell
    /// which samples it refused must not use this (it answers
    /// [`SinkError::Rejected`] for the whole batch, or a transient error).
    #[error("{} sample(s) refused: {}", refused.len(), refused.first().map(|r| r.reason.as_str()).unwrap_or(""))]
    RejectedSamples {
        /// The refused samples, each with the sink's reason (non-empty).
        refused: Vec<Refusal>,
    },
}

/// One sample a sink refused, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The refused sample's [`Sample::id`].
    pub id: uuid::Uuid,
    /// The sink's reason, for the log and `status` (never a secret).
    pub reason: String,
}

impl SinkError {
    /// Shorthand for a transient error without a server-given delay.
    pub fn transient(message: impl Into<String>) -> Self {
        SinkError::Transient {
            message: message.into(),
            retry_after: None,
        }
    }

    /// Shorthand for a permanent error.
    pub fn permanent(message: impl Into<String>) -> Self {
        SinkError::Permanent {
            message: message.into(),
        }
    }

    /// The class name shown in logs and `status`: `transient`, `permanent` or `rejected`.
    pub fn class(&self) -> &'static str {
        match self {
            SinkError::Transient { .. } => "transient",
            SinkError::Permanent { .. } => "permanent",
            SinkError::Rejected { .. } | SinkError::RejectedSamples { .. } => "rejected",
        }
    }
}

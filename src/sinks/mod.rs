//! Sinks: the places samples are delivered to (PostgreSQL, Azure Web PubSub).
//!
//! A sink knows its own protocol and nothing of the outbox: the forwarder hands
//! it a batch of [`Sample`]s, in outbox order, and acts on the [`SinkError`] class
//! alone (retry later, retry slowly, or record the batch, or just the samples the
//! sink names, as refused and move on).

use std::fmt;
use std::future::Future;
use std::time::Duration;

use crate::config::{Config, Secrets};
use crate::sample::Sample;
use postgres::PostgresSink;
use webpubsub::WebPubSubSink;

pub mod postgres;
pub mod webpubsub;

/// Every sink hxlog knows, by name: the one source of sink names for the CLI
/// (`--sink`), `status`, logs and the outbox's cursor names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, clap::ValueEnum)]
pub enum SinkName {
    /// PostgreSQL
    Postgres,
    /// Azure Web PubSub
    Webpubsub,
}

impl SinkName {
    /// Every sink, in the order they are built, reported and listed.
    pub const ALL: [SinkName; 2] = [SinkName::Postgres, SinkName::Webpubsub];

    /// The name on the command line, in logs and as the outbox cursor key.
    pub fn as_str(self) -> &'static str {
        match self {
            SinkName::Postgres => "postgres",
            SinkName::Webpubsub => "webpubsub",
        }
    }

    /// Whether this sink publishes alarm events (the same answer as its
    /// [`Sink::publishes_alarms`]), known without building it: pruning waits
    /// for such a sink even while it is configured wrongly.
    pub fn publishes_alarms(self) -> bool {
        match self {
            SinkName::Postgres => false,
            SinkName::Webpubsub => true,
        }
    }

    /// Whether `secrets` configures this sink (its keys are present), without
    /// validating or building it.
    pub fn is_configured(self, secrets: &Secrets) -> bool {
        match self {
            SinkName::Postgres => secrets.postgres.is_some(),
            SinkName::Webpubsub => secrets.webpubsub.is_some(),
        }
    }

    /// Builds this sink from `config` and `secrets`: `None` when it is not
    /// configured, an error when it is configured wrongly. Does no network I/O.
    fn build(self, config: &Config, secrets: &Secrets) -> Option<anyhow::Result<AnySink>> {
        Some(match self {
            SinkName::Postgres => {
                PostgresSink::from_config(config, secrets)?.map(AnySink::Postgres)
            }
            SinkName::Webpubsub => {
                WebPubSubSink::from_config(config, secrets)?.map(AnySink::Webpubsub)
            }
        })
    }
}

impl fmt::Display for SinkName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The names of the sinks `secrets` configures (without building them), for
/// `status` and pruning.
pub fn configured(secrets: &Secrets) -> Vec<SinkName> {
    SinkName::ALL
        .into_iter()
        .filter(|n| n.is_configured(secrets))
        .collect()
}

/// The outcome of [`build`], per sink: those built, and those configured but
/// wrongly (each with its error), so a caller can act on each one.
#[derive(Default)]
pub struct Built {
    /// Sinks ready to forward to, in [`SinkName::ALL`] order.
    pub sinks: Vec<AnySink>,
    /// Sinks configured but not buildable, with why.
    pub failed: Vec<(SinkName, anyhow::Error)>,
}

/// Builds every sink `secrets` configures (only `only`, when given). Does no
/// network I/O. Model: Vector's `SinkConfig::build`.
pub fn build(config: &Config, secrets: &Secrets, only: Option<SinkName>) -> Built {
    let mut built = Built::default();
    for name in SinkName::ALL {
        if only.is_some_and(|o| o != name) {
            continue;
        }
        match name.build(config, secrets) {
            None => {}
            Some(Ok(sink)) => built.sinks.push(sink),
            Some(Err(e)) => built.failed.push((name, e)),
        }
    }
    built
}

/// Any sink, so that commands hold them in one list (`Sink::send` returns
/// `impl Future`, which rules out `dyn Sink`). Adding a sink adds an arm here.
#[allow(
    clippy::large_enum_variant,
    reason = "one value per sink, built once per process"
)]
pub enum AnySink {
    /// [`PostgresSink`]
    Postgres(PostgresSink),
    /// [`WebPubSubSink`]
    Webpubsub(WebPubSubSink),
}

impl Sink for AnySink {
    fn name(&self) -> &'static str {
        match self {
            AnySink::Postgres(s) => s.name(),
            AnySink::Webpubsub(s) => s.name(),
        }
    }

    fn max_batch(&self) -> usize {
        match self {
            AnySink::Postgres(s) => s.max_batch(),
            AnySink::Webpubsub(s) => s.max_batch(),
        }
    }

    fn publishes_alarms(&self) -> bool {
        match self {
            AnySink::Postgres(s) => s.publishes_alarms(),
            AnySink::Webpubsub(s) => s.publishes_alarms(),
        }
    }

    async fn send_alarms(&mut self, alarms: &[crate::alarms::Published]) -> Result<(), SinkError> {
        match self {
            AnySink::Postgres(s) => s.send_alarms(alarms).await,
            AnySink::Webpubsub(s) => s.send_alarms(alarms).await,
        }
    }

    async fn send(&mut self, batch: &[Sample]) -> Result<(), SinkError> {
        match self {
            AnySink::Postgres(s) => s.send(batch).await,
            AnySink::Webpubsub(s) => s.send(batch).await,
        }
    }
}

/// An error and its sources, joined with `: ` (as `{:#}` prints an
/// `anyhow::Error`), for a sink's error message.
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut chain = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        chain.push_str(": ");
        chain.push_str(&inner.to_string());
        source = inner.source();
    }
    chain
}

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

    /// Whether this sink publishes alarm events (only Web PubSub does).
    fn publishes_alarms(&self) -> bool {
        false
    }

    /// Publishes alarm events, oldest first, each once durably accepted
    /// (idempotent on [`Published::id`](crate::alarms::Published)). Only
    /// called when [`Sink::publishes_alarms`].
    fn send_alarms(
        &mut self,
        _alarms: &[crate::alarms::Published],
    ) -> impl Future<Output = Result<(), SinkError>> + Send {
        async { Ok(()) }
    }
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
    /// these as refused, acks the rest, and moves on. From
    /// [`Sink::send_alarms`] it names alarm events the same way (by
    /// [`Published::id`](crate::alarms::Published)). A sink that cannot tell
    /// which samples it refused must not use this (it answers
    /// [`SinkError::Rejected`] for the whole batch, or a transient error).
    #[error("{} sample(s) refused: {}", refused.len(), refused.first().map(|r| r.reason.as_str()).unwrap_or(""))]
    RejectedSamples {
        /// The refused samples, each with the sink's reason (non-empty).
        refused: Vec<Refusal>,
    },
}

/// One sample (or alarm event) a sink refused, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The refused sample's [`Sample::id`] (or alarm event's id).
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

#[cfg(test)]
mod tests {
    use super::*;
    use clap::ValueEnum;

    #[test]
    fn cli_names_are_the_cursor_names() {
        for name in SinkName::ALL {
            assert_eq!(SinkName::from_str(name.as_str(), false), Ok(name));
        }
        assert_eq!(SinkName::value_variants(), SinkName::ALL);
    }

    fn secrets(postgres: bool, webpubsub: Option<&str>) -> Secrets {
        Secrets {
            postgres: postgres.then(|| crate::config::PgSecrets {
                host: "127.0.0.1".into(),
                port: 5432,
                dbname: "hx".into(),
                user: "hx".into(),
                password: Default::default(),
                sslmode: None,
                sslrootcert: None,
            }),
            webpubsub: webpubsub.map(|c| crate::config::Secret::new(c.to_string())),
        }
    }

    fn config() -> Config {
        let env = crate::config::Env {
            cwd: std::env::temp_dir(),
            ..Default::default()
        };
        crate::config::RawConfig::default()
            .resolve(None, &env)
            .unwrap()
    }

    fn names(built: &Built) -> (Vec<&str>, Vec<SinkName>) {
        let ok = built.sinks.iter().map(|s| s.name()).collect();
        let failed = built.failed.iter().map(|(n, _)| *n).collect();
        (ok, failed)
    }

    #[test]
    fn build_reports_each_sink_apart() {
        let config = config();
        let wps = "Endpoint=https://x.webpubsub.azure.com;AccessKey=a2V5;Version=1.0;";
        let both = secrets(true, Some(wps));
        assert_eq!(configured(&both), SinkName::ALL);
        let built = build(&config, &both, None);
        assert_eq!(names(&built), (vec!["postgres", "webpubsub"], vec![]));
        let built = build(&config, &both, Some(SinkName::Webpubsub));
        assert_eq!(names(&built), (vec!["webpubsub"], vec![]));

        // A broken Web PubSub string fails that sink alone, and says where it came from.
        let broken = secrets(true, Some("not a connection string"));
        let built = build(&config, &broken, None);
        assert_eq!(names(&built), (vec!["postgres"], vec![SinkName::Webpubsub]));
        let error = format!("{:#}", built.failed[0].1);
        assert!(
            error.contains("AZURE_WEBPUBSUB_CONNECTION_STRING"),
            "{error}"
        );

        assert_eq!(
            names(&build(&config, &secrets(false, None), None)),
            (vec![], vec![])
        );
    }

    #[test]
    fn a_sink_name_knows_whether_its_sink_publishes_alarms() {
        let wps = "Endpoint=https://x.webpubsub.azure.com;AccessKey=a2V5;Version=1.0;";
        let built = build(&config(), &secrets(true, Some(wps)), None);
        assert_eq!(built.sinks.len(), SinkName::ALL.len());
        for (name, sink) in SinkName::ALL.into_iter().zip(&built.sinks) {
            assert_eq!(sink.name(), name.as_str());
            assert_eq!(sink.publishes_alarms(), name.publishes_alarms(), "{name}");
        }
    }

    #[test]
    fn error_chain_joins_every_source() {
        #[derive(Debug, thiserror::Error)]
        #[error("sending")]
        struct Outer(#[source] std::io::Error);
        #[derive(Debug, thiserror::Error)]
        #[error("connecting")]
        struct Middle(#[source] Outer);
        let e = Middle(Outer(std::io::Error::other("refused")));
        assert_eq!(error_chain(&e), "connecting: sending: refused");
    }
}

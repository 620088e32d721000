//! `hxlog serve`: the HTTP endpoints without sampling, for timer mode. It
//! reads the outbox read-only and takes no lock: it runs beside
//! `hxlog-sample.timer` and `hxlog-replay.timer`.

use std::process::ExitCode;

use anyhow::Context;
use tokio_util::sync::CancellationToken;

use super::{http_settings, spawn_signal_handler};
use crate::config::{Config, Secrets};
use crate::sinks::{self, SinkName};

/// Serves until SIGTERM/Ctrl-C.
pub async fn serve(config: &Config, listen: Option<&str>) -> anyhow::Result<ExitCode> {
    let shutdown = CancellationToken::new();
    spawn_signal_handler(shutdown.clone())?;
    let addr = match listen {
        Some(a) => a
            .parse()
            .with_context(|| format!("--listen {a:?} is not an address and port; use e.g. 127.0.0.1:9108"))?,
        None => config.http_listen.ok_or_else(|| {
            anyhow::anyhow!("no address to listen on: set http_listen in the config (e.g. \"127.0.0.1:9108\") or pass --listen")
        })?,
    };
    // Which sinks are configured (names only: serving never builds a sink).
    let sinks = match Secrets::load(config.secrets.as_deref()) {
        Ok(s) => sinks::configured(&s)
            .into_iter()
            .map(|n: SinkName| n.as_str().to_string())
            .collect(),
        Err(e) => {
            tracing::warn!(error = %format!("{e:#}"), "cannot read the secrets; the dashboard shows the sinks known to the outbox");
            vec![]
        }
    };
    let listener = crate::http::bind(addr).await?;
    crate::http::serve(listener, http_settings(config, sinks, true), shutdown).await?;
    tracing::info!("stopped");
    Ok(ExitCode::SUCCESS)
}

//! `hxlog replay` (drain everything pending now, or re-send a window) and
//! `hxlog migrate` (apply the Postgres schema).

use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, bail};
use indicatif::{ProgressBar, ProgressStyle};
use jiff::Timestamp;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::info;

use super::{EXIT_CONFIG, EXIT_FAILURE, SinkSet, forwarder_outbox};
use crate::cli::SinkName;
use crate::config::{Config, Secrets};
use crate::forward::{ForwardOptions, ForwardReport, Mode, forward, resend_window};
use crate::outbox::Outbox;
use crate::sinks::Sink;
use crate::sinks::postgres::{PgSettings, migrate_now};
use crate::when::{parse_duration, parse_when};

/// Forwards what is pending (or re-sends a window) to the configured sinks.
pub async fn replay(
    config: &Config,
    since: Option<&str>,
    until: Option<&str>,
    only: Option<SinkName>,
    give_up_after: &str,
) -> anyhow::Result<ExitCode> {
    let now = Timestamp::now();
    let since = since
        .map(|s| parse_when(s, now))
        .transpose()
        .context("--since")?;
    let until = until
        .map(|u| parse_when(u, now))
        .transpose()
        .context("--until")?;
    let give_up_after = parse_duration(give_up_after).context("--give-up-after")?;
    let secrets = Secrets::load(config.secrets.as_deref())?;
    let sinks = SinkSet::build(config, &secrets, only)?;
    if sinks.names().is_empty() {
        eprintln!(
            "hxlog: no sink configured{}: add PG_DB_* or AZURE_WEBPUBSUB_CONNECTION_STRING to {}",
            only.map(|s| format!(" for {}", s.as_str()))
                .unwrap_or_default(),
            config
                .secrets
                .as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_else(|| "secrets.json (set \"secrets\" in the config)".into())
        );
        return Ok(ExitCode::from(EXIT_CONFIG));
    }
    let outbox = Outbox::open_existing(&config.outbox_path())?;
    let mut total = 0u64;
    for name in sinks.names() {
        total += match since {
            None => outbox.pending_count(name)?,
            Some(_) => {
                let mut n = 0;
                outbox.for_each_in_window(since, until, |_| {
                    n += 1;
                    Ok(())
                })?;
                n
            }
        };
    }
    drop(outbox);
    let progress = progress_bar(total);
    let shutdown = CancellationToken::new();
    super::spawn_signal_handler(shutdown.clone())?;
    let mut tasks: JoinSet<(&'static str, anyhow::Result<ForwardReport>)> = JoinSet::new();
    let mut opts = ForwardOptions::new(Mode::Drain { give_up_after }, config.retry_max, shutdown);
    opts.send_timeout = config.send_timeout;
    opts.on_progress = Some({
        let p = progress.clone();
        let step = (total / 20).max(1000);
        Arc::new(move |n| {
            let before = p.position();
            p.inc(n);
            if p.is_hidden() && (before / step != p.position() / step || p.position() >= total) {
                info!(done = p.position(), total, "replay progress");
            }
        })
    });
    if let Some(pg) = sinks.postgres {
        spawn(
            &mut tasks,
            pg,
            forwarder_outbox(config)?,
            opts.clone(),
            since,
            until,
        );
    }
    if let Some(wps) = sinks.webpubsub {
        spawn(
            &mut tasks,
            wps,
            forwarder_outbox(config)?,
            opts.clone(),
            since,
            until,
        );
    }
    let mut failed = vec![];
    while let Some(joined) = tasks.join_next().await {
        let (name, result) = joined.context("replay task panicked")?;
        match result {
            Ok(r) if r.interrupted => {
                failed.push(format!("{name}: interrupted after {} samples", r.delivered))
            }
            Ok(r) => {
                progress.println(format!(
                    "{name}: {} {} samples{}",
                    if since.is_some() {
                        "re-sent"
                    } else {
                        "delivered"
                    },
                    r.delivered,
                    if r.rejected > 0 {
                        format!(", {} refused by the sink (recorded)", r.rejected)
                    } else {
                        String::new()
                    }
                ));
                info!(
                    sink = name,
                    delivered = r.delivered,
                    rejected = r.rejected,
                    "replay finished"
                );
            }
            Err(e) => failed.push(format!("{name}: {e:#}")),
        }
    }
    progress.finish_and_clear();
    if failed.is_empty() {
        Ok(ExitCode::SUCCESS)
    } else {
        for f in &failed {
            eprintln!("hxlog: replay failed: {f}");
        }
        Ok(ExitCode::from(EXIT_FAILURE))
    }
}

fn spawn<S: Sink>(
    tasks: &mut JoinSet<(&'static str, anyhow::Result<ForwardReport>)>,
    sink: S,
    outbox: crate::outbox::SharedOutbox,
    opts: ForwardOptions,
    since: Option<Timestamp>,
    until: Option<Timestamp>,
) {
    let name = sink.name();
    tasks.spawn(async move {
        let r = match since {
            None => forward(sink, outbox, opts).await,
            Some(_) => resend_window(sink, outbox, since, until, opts).await,
        };
        (name, r)
    });
}

/// A progress bar on a terminal; hidden otherwise (log lines report instead).
fn progress_bar(total: u64) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        let pb = ProgressBar::hidden();
        pb.set_length(total);
        return pb;
    }
    let pb = ProgressBar::new(total);
    pb.set_style(
        ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {wide_bar} {pos}/{len} samples ({per_sec}, eta {eta})",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    pb
}

/// Creates or updates the Postgres schema.
pub async fn migrate(config: &Config) -> anyhow::Result<ExitCode> {
    let secrets = Secrets::load(config.secrets.as_deref())?;
    let Some(pg) = &secrets.postgres else {
        bail!(
            "no Postgres configured: set PG_DB_HOST, PG_DB_NAME and PG_DB_USER in {}",
            config
                .secrets
                .as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_else(|| "secrets.json".into())
        );
    };
    let settings = PgSettings::from_secrets(pg, config.postgres_batch_size)?;
    let applied = migrate_now(&settings).await?;
    if applied.is_empty() {
        println!("schema of {} is up to date", settings.describe());
    } else {
        println!("applied {} to {}", applied.join(", "), settings.describe());
    }
    Ok(ExitCode::SUCCESS)
}

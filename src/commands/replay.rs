//! `hxlog replay`: two paths, two functions. [`drain`] forwards everything
//! pending now and exits; [`resend`] re-sends an already delivered window
//! (`--since`), which the sinks' idempotency makes harmless.

use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};
use jiff::Timestamp;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{error, info};

use super::{EXIT_CONFIG, EXIT_FAILURE, forwarder_outbox, lock};
use crate::config::{Config, Secrets};
use crate::forward::{ForwardOptions, ForwardReport, Mode, forward, resend_window};
use crate::outbox::Outbox;
use crate::outbox::lock::Role;
use crate::sinks::{self, AnySink, Sink, SinkName};
use crate::when::{parse_duration, parse_when};

/// What to do when another process (the service, or another replay) already
/// forwards to a sink.
const DRAIN_HINT: &str = "it delivers the pending samples itself and retries with backoff: `hxlog status` shows its progress and last error, and `systemctl restart hxlog` makes it retry at once (replay --since re-sends a window alongside it)";

/// Forwards what is pending to the configured sinks (only `only`, if given)
/// and exits when it is delivered.
pub async fn drain(
    config: &Config,
    only: Option<SinkName>,
    give_up_after: &str,
) -> anyhow::Result<ExitCode> {
    let give_up_after = parse_duration(give_up_after).context("--give-up-after")?;
    let Some((sinks, config_errors)) = build_sinks(config, only)? else {
        return Ok(ExitCode::from(EXIT_CONFIG));
    };
    let outbox = Outbox::open_existing(&config.outbox_path())?;
    let _forwarding = sinks
        .iter()
        .map(|s| lock(config, Role::Forwarder(s.name()), DRAIN_HINT))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let mut total = 0;
    for sink in &sinks {
        total += outbox.pending_count(sink.name())?;
    }
    let mut replay = Replay::start(config, total, give_up_after)?;
    replay.failed = config_errors;
    for sink in sinks {
        let (outbox, opts) = (forwarder_outbox(config)?, replay.opts.clone());
        replay
            .tasks
            .spawn(async move { (sink.name(), forward(sink, outbox, opts).await) });
    }
    let result = replay.finish("delivered").await;
    // Timer mode: the next process opens an empty WAL instead of rebuilding
    // the WAL index of this one's acks (most of its writes to the card).
    // Kept open until here so that this is not a first open itself.
    outbox.checkpoint_if_idle();
    result
}

/// Re-sends the samples taken in `[since, until)` to the configured sinks
/// (only `only`, if given), whether or not they were delivered before.
/// Takes no forwarder lock: it moves no cursor and the sinks are idempotent,
/// so it may run while `hxlog run` forwards.
pub async fn resend(
    config: &Config,
    since: &str,
    until: Option<&str>,
    only: Option<SinkName>,
    give_up_after: &str,
) -> anyhow::Result<ExitCode> {
    let now = Timestamp::now();
    let since = Some(parse_when(since, now).context("--since")?);
    let until = until
        .map(|u| parse_when(u, now))
        .transpose()
        .context("--until")?;
    let give_up_after = parse_duration(give_up_after).context("--give-up-after")?;
    let Some((sinks, config_errors)) = build_sinks(config, only)? else {
        return Ok(ExitCode::from(EXIT_CONFIG));
    };
    let outbox = Outbox::open_existing(&config.outbox_path())?;
    let window = outbox.for_each_in_window(since, until, |_| Ok(()))?;
    drop(outbox);
    let mut replay = Replay::start(config, window * sinks.len() as u64, give_up_after)?;
    replay.failed = config_errors;
    for sink in sinks {
        let (outbox, opts) = (forwarder_outbox(config)?, replay.opts.clone());
        replay.tasks.spawn(async move {
            let name = sink.name();
            (name, resend_window(sink, outbox, since, until, opts).await)
        });
    }
    replay.finish("re-sent").await
}

/// Starts `sink` from now: moves its cursors past every sample and alarm
/// event stored so far, sending none of them (they stay in the outbox for
/// `export` and `--since`; the dashboard and `status` still show the alarms).
pub fn skip_to_now(config: &Config, sink: SinkName) -> anyhow::Result<ExitCode> {
    let mut outbox = Outbox::open_existing(&config.outbox_path())?;
    let skipped = outbox.skip_to_newest(sink.as_str())?;
    info!(sink = %sink, skipped = skipped.samples, skipped_alarm_events = skipped.alarm_events, "cursor moved to the newest sample and alarm event (replay --skip-to-now)");
    println!(
        "{sink}: skipped {} samples and {} alarm events; it starts with the next sample taken and the next alarm raised or cleared (the skipped samples stay in the outbox: `hxlog replay --sink {sink} --since WHEN` sends a window of them)",
        skipped.samples, skipped.alarm_events
    );
    Ok(ExitCode::SUCCESS)
}

/// The sinks to replay to, and what is wrong with the configured ones that
/// cannot be built; `None` (after saying what to configure) when there are
/// none. A sink configured wrongly does not stop the others (in timer mode
/// `replay` is the only forwarder); it fails the replay at the end. When no
/// sink can be built (or the one asked for cannot), that is the error.
fn build_sinks(
    config: &Config,
    only: Option<SinkName>,
) -> anyhow::Result<Option<(Vec<AnySink>, Vec<String>)>> {
    let secrets = Secrets::load(config.secrets.as_deref())?;
    let built = sinks::build(config, &secrets, only);
    let mut errors: Vec<String> = built
        .failed
        .iter()
        .map(|(name, e)| {
            format!("sink {name} is configured wrongly, nothing was sent to it: {e:#}")
        })
        .collect();
    if built.sinks.is_empty() && !errors.is_empty() {
        anyhow::bail!("{}", errors.remove(0));
    }
    if built.sinks.is_empty() {
        eprintln!(
            "hxlog: no sink configured{}: add PG_DB_* or AZURE_WEBPUBSUB_CONNECTION_STRING to {}",
            only.map(|s| format!(" for {s}")).unwrap_or_default(),
            config.secrets_file()
        );
        return Ok(None);
    }
    for e in &errors {
        error!(error = %e, "replaying to the other sinks");
    }
    Ok(Some((built.sinks, errors)))
}

/// One forwarder task per sink, a shared progress bar, and the report at the end.
struct Replay {
    progress: ProgressBar,
    opts: ForwardOptions,
    tasks: JoinSet<(&'static str, anyhow::Result<ForwardReport>)>,
    /// Why the replay fails, whatever the forwarders do (sinks configured wrongly).
    failed: Vec<String>,
}

impl Replay {
    /// Listens for signals and prepares the options of every forwarder:
    /// drain mode, and progress over `total` samples.
    fn start(config: &Config, total: u64, give_up_after: Duration) -> anyhow::Result<Replay> {
        let progress = progress_bar(total);
        let shutdown = CancellationToken::new();
        super::spawn_signal_handler(shutdown.clone())?;
        let mut opts =
            ForwardOptions::new(Mode::Drain { give_up_after }, config.retry_max, shutdown);
        opts.send_timeout = config.send_timeout;
        opts.clock_sync_wait = Some(config.clock_sync_wait);
        opts.on_progress = Some({
            let p = progress.clone();
            let step = (total / 20).max(1000);
            Arc::new(move |n| {
                let before = p.position();
                p.inc(n);
                if p.is_hidden() && (before / step != p.position() / step || p.position() >= total)
                {
                    info!(done = p.position(), total, "replay progress");
                }
            })
        });
        Ok(Replay {
            progress,
            opts,
            tasks: JoinSet::new(),
            failed: vec![],
        })
    }

    /// Waits for every forwarder and reports each sink's outcome (`verb`:
    /// what was done to the samples); fails when any sink did not finish.
    async fn finish(mut self, verb: &str) -> anyhow::Result<ExitCode> {
        let mut failed = std::mem::take(&mut self.failed);
        while let Some(joined) = self.tasks.join_next().await {
            let (name, result) = joined.context("replay task panicked")?;
            match result {
                Ok(r) if r.interrupted => {
                    failed.push(format!("{name}: interrupted after {} samples", r.delivered))
                }
                Ok(r) => {
                    self.progress.println(format!(
                        "{name}: {verb} {} samples{}",
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
                    // Drained, but not everything arrived: say so in the exit code.
                    if r.rejected > 0 {
                        failed.push(format!(
                            "{name}: {} samples refused by the sink (recorded as rejected in the outbox; `hxlog status` shows the reason)",
                            r.rejected
                        ));
                    }
                }
                Err(e) => failed.push(format!("{name}: {e:#}")),
            }
        }
        self.progress.finish_and_clear();
        if failed.is_empty() {
            Ok(ExitCode::SUCCESS)
        } else {
            for f in &failed {
                eprintln!("hxlog: replay failed: {f}");
            }
            Ok(ExitCode::from(EXIT_FAILURE))
        }
    }
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

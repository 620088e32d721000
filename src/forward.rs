//! The forwarder: one loop per sink that claims a batch of pending samples from
//! the outbox, hands it to the sink, and acks it, or backs off.
//!
//! It knows no sink's protocol: it acts on [`SinkError`]'s class alone.
//! Every send is bounded by `send_timeout` (a sink that does not answer is a
//! transient error; the send is dropped, never acked), and `replay`'s give-up
//! time bounds a batch's attempts, the one in flight included.
//! Transient errors back off exponentially with full jitter (capped); a server's
//! `Retry-After` can only lengthen a wait, never shorten it; permanent errors
//! are retried at the cap. A failure is written to the outbox when the sink's
//! state changes, not at every attempt. A batch (or the samples of it) the sink
//! refuses outright is recorded as rejected so it never blocks the queue; the
//! rest of a partly refused batch is acked.
//! Each sink has its own cursor, so one sink down never delays another.
//!
//! Trustworthy time: with `clock_sync_wait` set, the `unsynced` samples of the
//! current boot are held back that long (the batch ends before the first of
//! them), so that they usually go out corrected. A sample the sink received
//! before it was corrected (a revision in the outbox) is sent again, before
//! new samples; sinks replace it by id.
//!
//! Architecture invariant: an ack is written only after the sink returned `Ok`
//! (or `RejectedSamples`, for the samples it does not name),
//! so a crash anywhere means a resend, never a loss; sinks are idempotent on the
//! sample id, so a resend is never a duplicate.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use backon::{BackoffBuilder, ExponentialBuilder};
use jiff::Timestamp;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::alarms::Published;
use crate::outbox::{Hold, Outbox, SharedOutbox, Stored};
use crate::sample::Sample;
use crate::sinks::{Refusal, Sink, SinkError};

/// The retry policy shared by every sink: exponential from `min` doubling up
/// to `max`, with full jitter (each wait is uniform in `[0, delay]`), forever.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// First delay before jitter.
    pub min: Duration,
    /// Cap on the delay; also the wait after a permanent error.
    pub max: Duration,
}

impl RetryPolicy {
    /// The policy with a 500 ms start and the given cap.
    pub fn with_max(max: Duration) -> Self {
        RetryPolicy {
            min: Duration::from_millis(500).min(max),
            max,
        }
    }

    /// An endless sequence of jittered delays.
    ///
    /// ```
    /// use std::time::Duration;
    /// let p = hxlog::forward::RetryPolicy::with_max(Duration::from_secs(4));
    /// assert!(p.delays().take(100).all(|d| d <= Duration::from_secs(4)));
    /// ```
    pub fn delays(&self) -> impl Iterator<Item = Duration> + Send + use<> {
        // backon computes the capped exponential sequence; we apply full jitter
        // (AWS "Exponential Backoff and Jitter") ourselves, since backon's jitter
        // only adds up to one extra delay on top.
        let exp = ExponentialBuilder::default()
            .with_min_delay(self.min)
            .with_max_delay(self.max)
            .with_factor(2.0)
            .without_max_times()
            .build();
        let mut rng = fastrand::Rng::new();
        exp.map(move |d| d.mul_f64(rng.f64()).max(Duration::from_millis(50)))
    }
}

/// The default of [`ForwardOptions::send_timeout`] (config `send_timeout`).
pub const DEFAULT_SEND_TIMEOUT: Duration = Duration::from_secs(60);

/// Whether a forwarder follows the outbox forever or stops once it is drained.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// `hxlog run`: wait for new samples, retry forever.
    Follow,
    /// `hxlog replay`: stop when nothing is pending; fail on a permanent error
    /// or when a batch is still not delivered the given time after its first
    /// attempt (a send in flight is cut off then).
    Drain {
        /// Give up on a batch this long after its first attempt.
        give_up_after: Duration,
    },
}

/// Everything a forwarder loop needs besides its sink.
#[derive(Clone)]
pub struct ForwardOptions {
    #[allow(missing_docs, reason = "documented on the type")]
    pub mode: Mode,
    #[allow(missing_docs, reason = "documented on the type")]
    pub policy: RetryPolicy,
    /// Notified by the sampler after each committed sample.
    pub wake: Arc<Notify>,
    /// Cancelled on SIGTERM/Ctrl-C; the loop stops after the batch in flight.
    pub shutdown: CancellationToken,
    /// How long a batch in flight may take to finish after shutdown (then it is
    /// abandoned: not acked, so resent next time).
    pub grace: Duration,
    /// How often to look for new samples when not woken.
    pub poll: Duration,
    /// Called with the number of samples each successful batch delivered.
    pub on_progress: Option<Arc<dyn Fn(u64) + Send + Sync>>,
    /// How long one [`Sink::send`] may take; then it is abandoned (dropped,
    /// not acked) and counted as a transient error.
    pub send_timeout: Duration,
    /// How long `unsynced` samples of the current boot are held back, waiting
    /// for the clock to synchronise (config `clock_sync_wait`); `None` sends
    /// them at once.
    pub clock_sync_wait: Option<Duration>,
}

impl ForwardOptions {
    /// Defaults for `mode` with the given retry cap and shutdown token.
    pub fn new(mode: Mode, retry_max: Duration, shutdown: CancellationToken) -> Self {
        ForwardOptions {
            mode,
            policy: RetryPolicy::with_max(retry_max),
            wake: Arc::new(Notify::new()),
            shutdown,
            grace: Duration::from_secs(5),
            poll: Duration::from_secs(1),
            on_progress: None,
            send_timeout: DEFAULT_SEND_TIMEOUT,
            clock_sync_wait: None,
        }
    }
}

/// What a forwarder did before it stopped.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ForwardReport {
    /// Samples the sink accepted.
    pub delivered: u64,
    /// Samples the sink refused outright.
    pub rejected: u64,
    /// True when the loop stopped because of shutdown.
    pub interrupted: bool,
}

enum Outcome {
    /// The sink accepted every sample of the batch except these (indices into
    /// the batch, each with the sink's reason).
    Done {
        refused: Vec<(usize, String)>,
    },
    Interrupted,
}

/// Records one batch's outcome: the refused samples as rejected (with their
/// reasons), the others as delivered; the cursor ends past the batch.
fn record_outcome(
    o: &mut Outbox,
    sink: &str,
    seqs: &[i64],
    refused: &[(usize, String)],
) -> anyhow::Result<()> {
    let mut by_reason: BTreeMap<&str, Vec<i64>> = BTreeMap::new();
    for (i, reason) in refused {
        by_reason.entry(reason).or_default().push(seqs[*i]);
    }
    for (reason, refused_seqs) in by_reason {
        o.reject(sink, &refused_seqs, reason)?;
    }
    let delivered = seqs.len() - refused.len();
    if delivered > 0 {
        o.ack(sink, *seqs.last().expect("non-empty batch"), delivered)?;
    }
    Ok(())
}

/// Forwards pending samples to `sink` until shutdown (Follow) or until drained (Drain).
pub async fn forward<S: Sink>(
    mut sink: S,
    outbox: SharedOutbox,
    opts: ForwardOptions,
) -> anyhow::Result<ForwardReport> {
    let name = sink.name();
    if let Err(e) = outbox.call(move |o| o.register_sinks(&[name])).await {
        warn!(sink = name, error = %format!("{e:#}"), "cannot register the sink in the outbox");
    }
    let mut report = ForwardReport::default();
    let max_batch = sink.max_batch().max(1);
    loop {
        if opts.shutdown.is_cancelled() {
            report.interrupted = true;
            break;
        }
        if sink.publishes_alarms() {
            match forward_alarms(&mut sink, &outbox, &opts).await {
                Ok(true) => continue,
                Ok(false) => {}
                Err(e) if matches!(opts.mode, Mode::Drain { .. }) => return Err(e),
                Err(e) => {
                    error!(sink = name, error = %format!("{e:#}"), "cannot publish alarm events; retrying");
                    if wait(&opts, Duration::from_secs(1)).await {
                        report.interrupted = true;
                        break;
                    }
                    continue;
                }
            }
        }
        match resend_revised(&mut sink, &outbox, &opts).await {
            Ok(true) => continue,
            Ok(false) => {}
            Err(e) => {
                error!(sink = name, error = %format!("{e:#}"), "cannot resend corrected samples; retrying");
                if wait(&opts, Duration::from_secs(1)).await {
                    report.interrupted = true;
                    break;
                }
                continue;
            }
        }
        let hold = opts.clock_sync_wait.map(|w| Hold {
            boot_id: crate::clock::boot_id(),
            boottime_after_us: crate::clock::boottime_us()
                .saturating_sub(w.as_micros().min(i64::MAX as u128) as i64),
        });
        let batch = match outbox
            .call(move |o| o.pending_held(name, max_batch, hold.as_ref()))
            .await
        {
            Ok(b) => b,
            Err(e) => {
                error!(sink = name, error = %format!("{e:#}"), "cannot read the outbox; retrying");
                if wait(&opts, Duration::from_secs(1)).await {
                    report.interrupted = true;
                    break;
                }
                continue;
            }
        };
        if batch.is_empty() {
            if let Mode::Drain { .. } = opts.mode {
                break;
            }
            tokio::select! {
                _ = opts.wake.notified() => {}
                _ = tokio::time::sleep(opts.poll) => {}
                _ = opts.shutdown.cancelled() => { report.interrupted = true; break; }
            }
            continue;
        }
        let seqs: Vec<i64> = batch.iter().map(|s| s.seq).collect();
        let samples: Vec<Sample> = batch.into_iter().map(|s: Stored| s.sample).collect();
        let n = samples.len();
        let outcome = send_with_retry(&mut sink, &samples, &outbox, &opts).await?;
        let Outcome::Done { refused } = outcome else {
            report.interrupted = true;
            break;
        };
        let rejected = refused.len();
        if let Some((_, reason)) = refused.first() {
            error!(sink = name, samples = rejected, of = n, reason = %reason, "sink refused samples for their content; recorded as rejected, moving on");
        }
        let recorded = outbox
            .call(move |o| record_outcome(o, name, &seqs, &refused))
            .await;
        if let Err(e) = recorded {
            if let Mode::Drain { .. } = opts.mode {
                return Err(e.context("recording the delivery in the outbox"));
            }
            // Without the record the batch is sent again later, which the
            // sink deduplicates: keep forwarding rather than stop.
            error!(sink = name, error = %format!("{e:#}"), "cannot record the delivery in the outbox (disk full?); the batch will be resent");
            if wait(&opts, Duration::from_secs(1)).await {
                report.interrupted = true;
                break;
            }
            continue;
        }
        report.rejected += rejected as u64;
        report.delivered += (n - rejected) as u64;
        if let Some(p) = &opts.on_progress {
            p(n as u64);
        }
    }
    info!(
        sink = name,
        delivered = report.delivered,
        rejected = report.rejected,
        "forwarder stopped"
    );
    Ok(report)
}

/// Sends again the samples `sink` received before their time was corrected.
/// Returns true when there were revisions to go through or shutdown
/// interrupted them (the loop then looks again), false when there were none.
async fn resend_revised<S: Sink>(
    sink: &mut S,
    outbox: &SharedOutbox,
    opts: &ForwardOptions,
) -> anyhow::Result<bool> {
    let name = sink.name();
    let max_batch = sink.max_batch().max(1);
    let (samples, rev) = outbox.call(move |o| o.revised(name, max_batch)).await?;
    let Some(rev) = rev else { return Ok(false) };
    if !samples.is_empty() {
        let samples: Vec<Sample> = samples.into_iter().map(|s| s.sample).collect();
        let n = samples.len();
        let Outcome::Done { refused } = send_with_retry(sink, &samples, outbox, opts).await? else {
            // Interrupted: the loop looks at shutdown next.
            return Ok(true);
        };
        if let Some((_, reason)) = refused.first() {
            error!(sink = name, samples = refused.len(), of = n, reason = %reason, "sink refused corrected samples; the uncorrected copies stay");
        }
        info!(
            sink = name,
            samples = n - refused.len(),
            "sent samples again with their corrected time"
        );
    }
    outbox.call(move |o| o.ack_revised(name, rev)).await?;
    Ok(true)
}

/// Re-sends every sample taken in `[since, until)` to `sink`, whether or not it
/// was delivered before (after a database restore). The cursor is not moved;
/// sinks deduplicate on the sample id.
pub async fn resend_window<S: Sink>(
    mut sink: S,
    outbox: SharedOutbox,
    since: Option<Timestamp>,
    until: Option<Timestamp>,
    opts: ForwardOptions,
) -> anyhow::Result<ForwardReport> {
    let name = sink.name();
    let max_batch = sink.max_batch().max(1);
    let mut report = ForwardReport::default();
    let mut after = None;
    loop {
        if opts.shutdown.is_cancelled() {
            report.interrupted = true;
            break;
        }
        let page = outbox
            .call(move |o| o.window(since, until, after, max_batch))
            .await?;
        let Some(last) = page.last() else { break };
        after = Some((last.sample.taken_at.as_microsecond(), last.seq));
        let samples: Vec<Sample> = page.into_iter().map(|s| s.sample).collect();
        let n = samples.len();
        let Outcome::Done { refused } =
            send_with_retry(&mut sink, &samples, &outbox, &opts).await?
        else {
            report.interrupted = true;
            break;
        };
        if let Some((_, reason)) = refused.first() {
            error!(sink = name, samples = refused.len(), of = n, reason = %reason, "sink refused re-sent samples");
        }
        let delivered = n - refused.len();
        if delivered > 0 {
            outbox.call(move |o| o.note_resent(name, delivered)).await?;
        }
        report.delivered += delivered as u64;
        report.rejected += refused.len() as u64;
        if let Some(p) = &opts.on_progress {
            p(n as u64);
        }
    }
    Ok(report)
}

/// What one delivery carries: samples, or alarm events.
#[derive(Clone, Copy)]
enum Payload<'a> {
    Samples(&'a [Sample]),
    Alarms(&'a [Published]),
}

impl Payload<'_> {
    fn len(&self) -> usize {
        match self {
            Payload::Samples(b) => b.len(),
            Payload::Alarms(a) => a.len(),
        }
    }
}

/// Sends one batch of samples until it is delivered, refused, or shutdown interrupts.
async fn send_with_retry<S: Sink>(
    sink: &mut S,
    batch: &[Sample],
    outbox: &SharedOutbox,
    opts: &ForwardOptions,
) -> anyhow::Result<Outcome> {
    deliver(sink, Payload::Samples(batch), outbox, opts).await
}

/// Publishes the alarm events `sink` has not received yet, oldest first, in
/// batches of 100, before any pending sample; acks each batch once every
/// event of it was published or refused (a refused event is logged and
/// skipped; the sink promises it published every event it does not name, so
/// the cursor never passes an event neither delivered nor refused). Returns
/// true when there were some (or shutdown interrupted them).
async fn forward_alarms<S: Sink>(
    sink: &mut S,
    outbox: &SharedOutbox,
    opts: &ForwardOptions,
) -> anyhow::Result<bool> {
    let name = sink.name();
    let pending = outbox.call(move |o| o.pending_alarms(name, 100)).await?;
    let Some(last) = pending.last().map(|e| e.seq) else {
        return Ok(false);
    };
    let alarms: Vec<Published> = pending
        .into_iter()
        .map(|e| Published {
            id: e.id,
            device_id: e.device_id,
            event: e.event,
        })
        .collect();
    let Outcome::Done { refused } = deliver(sink, Payload::Alarms(&alarms), outbox, opts).await?
    else {
        return Ok(true);
    };
    for (i, reason) in &refused {
        let a = &alarms[*i];
        error!(sink = name, id = %a.id, alarm = %a.event.key.alarm, role = %a.event.key.role, raised = a.event.raised, reason = %reason, "sink refused an alarm event; skipped, the later events are published");
    }
    let reason = refused.first().map(|(_, r)| r.clone());
    outbox
        .call(move |o| {
            if let Some(reason) = reason {
                o.note_alarms_refused(name, &reason)?;
            }
            o.ack_alarms(name, last)
        })
        .await?;
    info!(
        sink = name,
        alarms = alarms.len() - refused.len(),
        refused = refused.len(),
        "alarm events published"
    );
    Ok(true)
}

/// Delivers `payload` until it is delivered, refused, or shutdown interrupts.
async fn deliver<S: Sink>(
    sink: &mut S,
    payload: Payload<'_>,
    outbox: &SharedOutbox,
    opts: &ForwardOptions,
) -> anyhow::Result<Outcome> {
    let name = sink.name();
    let mut delays = opts.policy.delays();
    let first_attempt = Instant::now();
    // The failure last written to the outbox by this call.
    let mut recorded: Option<(&'static str, String)> = None;
    loop {
        // Every send is bounded, and in a drain never outlives the give-up time.
        let limit = match opts.mode {
            Mode::Follow => opts.send_timeout,
            Mode::Drain { give_up_after } => opts
                .send_timeout
                .min(give_up_after.saturating_sub(first_attempt.elapsed()))
                .max(Duration::from_millis(100)),
        };
        let result = tokio::select! {
            r = tokio::time::timeout(limit, async {
                match payload {
                    Payload::Samples(batch) => sink.send(batch).await,
                    Payload::Alarms(alarms) => sink.send_alarms(alarms).await,
                }
            }) => r.unwrap_or_else(|_| {
                Err(SinkError::transient(format!(
                    "no answer within {limit:?} (send_timeout); the batch was abandoned and will be sent again"
                )))
            }),
            _ = async { opts.shutdown.cancelled().await; tokio::time::sleep(opts.grace).await } => {
                warn!(sink = name, samples = payload.len(), "shutdown: abandoned the batch in flight; it will be resent");
                return Ok(Outcome::Interrupted);
            }
        };
        let err = match result {
            Ok(()) => return Ok(Outcome::Done { refused: vec![] }),
            Err(SinkError::Rejected { message }) => {
                let refused = (0..payload.len()).map(|i| (i, message.clone())).collect();
                return Ok(Outcome::Done { refused });
            }
            Err(SinkError::RejectedSamples { refused }) => {
                let ids: Vec<uuid::Uuid> = match payload {
                    Payload::Samples(batch) => batch.iter().map(|s| s.id).collect(),
                    Payload::Alarms(alarms) => alarms.iter().map(|a| a.id).collect(),
                };
                let refused = refused_indices(name, &ids, refused);
                return Ok(Outcome::Done { refused });
            }
            Err(e) => e,
        };
        let delay = match &err {
            SinkError::Transient { retry_after, .. } => retry_delay(
                delays.next().unwrap_or(opts.policy.max),
                *retry_after,
                opts.policy.max,
            ),
            _ => opts.policy.max,
        };
        let class = err.class();
        let message = err.to_string();
        let until = Timestamp::now()
            .checked_add(jiff::SignedDuration::try_from(delay).unwrap_or_default())
            .ok();
        match &err {
            SinkError::Permanent { .. } => {
                error!(sink = name, class, error = %message, retry_in = ?delay, "delivery failed and needs attention; data is kept")
            }
            _ => warn!(sink = name, class, error = %message, retry_in = ?delay, "delivery failed"),
        }
        // Only a change of state is written (each write is an fsync): an
        // outage of a day is one record, not one per attempt.
        let state = (class, message.clone());
        if recorded.as_ref() != Some(&state) {
            let message = message.clone();
            match outbox
                .call(move |o| o.record_failure(name, class, &message, until))
                .await
            {
                Ok(()) => recorded = Some(state),
                // Only `status` loses this detail; the retry goes on.
                Err(e) => {
                    warn!(sink = name, error = %format!("{e:#}"), "cannot record the failure in the outbox")
                }
            }
        }
        if let Mode::Drain { give_up_after } = opts.mode {
            if matches!(err, SinkError::Permanent { .. }) {
                anyhow::bail!("{name} refused the delivery: {message}");
            }
            if first_attempt.elapsed() >= give_up_after {
                anyhow::bail!(
                    "{name} still failing after {:?}: {message}; the samples stay in the outbox, run replay again later",
                    give_up_after
                );
            }
        }
        if wait(opts, delay).await {
            return Ok(Outcome::Interrupted);
        }
    }
}

/// The wait before retrying a transient error: the backoff schedule's own
/// value, lengthened (never shortened) by what the server asked for
/// (`Retry-After`), capped at `max`. So `Retry-After: 0` or a date in the past
/// can never turn retrying into a tight loop.
fn retry_delay(schedule: Duration, asked: Option<Duration>, max: Duration) -> Duration {
    schedule.max(asked.unwrap_or_default()).min(max)
}

/// The positions in the batch (whose ids are `ids`) of the samples or alarm
/// events a sink refused (each once; an id not in the batch is a sink bug,
/// logged and ignored).
fn refused_indices(name: &str, ids: &[uuid::Uuid], refused: Vec<Refusal>) -> Vec<(usize, String)> {
    let mut out: Vec<(usize, String)> = vec![];
    for r in refused {
        match ids.iter().position(|id| *id == r.id) {
            Some(i) if !out.iter().any(|(j, _)| *j == i) => out.push((i, r.reason)),
            Some(_) => {}
            None => {
                warn!(sink = name, id = %r.id, "the sink refused an item that is not in the batch; ignored")
            }
        }
    }
    out.sort_by_key(|(i, _)| *i);
    out
}

/// Sleeps for `d`; returns true if shutdown came first.
async fn wait(opts: &ForwardOptions, d: Duration) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(d) => false,
        _ = opts.shutdown.cancelled() => true,
    }
}

#[cfg(test)]
mod tests;

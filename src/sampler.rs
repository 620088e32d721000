//! The sampling loop: read the sensors, build a [`Sample`], commit it to the
//! outbox, wake the forwarders.
//!
//! After each write the sampler evaluates the alarms ([`crate::alarms`]) and
//! stores their events in the outbox.
//!
//! Sampling never waits on the network. A sample whose write fails (disk full,
//! outbox locked) is kept in memory, bounded, and written first next cycle;
//! the loop never stops because of a failed read or write.
//!
//! Each sample is stamped with the clock's state, boot id and boottime
//! ([`crate::clock`]); the first time the sampler sees the clock synchronised
//! (and again after writing unsynced samples) it has the outbox correct the
//! unsynced samples of the current boot. Timer mode (`hxlog sample`) does the
//! same, so whichever process first sees the sync applies the correction.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::alarms::{AlarmSettings, Evaluator, Event};
use crate::clock::{ClockSync, ClockWatch, Observation};
use crate::outbox::SharedOutbox;
use crate::sample::{ClockStamp, ClockState, Sample, Source};
use crate::sensors::Sensors;

/// Samples kept in memory while the outbox cannot be written (a week at 60 s).
pub const MAX_UNWRITTEN: usize = 10_080;

/// Alarm events kept in memory while the outbox cannot store them.
pub const MAX_UNSTORED_ALARMS: usize = 10_000;

/// Reads sensors and commits samples.
pub struct Sampler {
    sensors: Option<Sensors>,
    source: Source,
    device_id: String,
    outbox: SharedOutbox,
    unwritten: VecDeque<Sample>,
    dropped: u64,
    clock: ClockWatch,
    /// True until the outbox has been told of a sync since the last unsynced
    /// sample was written.
    correction_due: bool,
    /// The alarm rules, and their state once loaded from the outbox.
    alarm_settings: Option<AlarmSettings>,
    alarms: Option<Evaluator>,
    /// Alarm events not stored yet (oldest first), retried each cycle.
    unstored_alarms: VecDeque<Event>,
}

impl Sampler {
    /// A sampler writing `device_id`'s samples into `outbox`.
    pub fn new(sensors: Sensors, device_id: String, outbox: SharedOutbox) -> Self {
        Sampler {
            source: sensors.source(),
            sensors: Some(sensors),
            device_id,
            outbox,
            unwritten: VecDeque::new(),
            dropped: 0,
            clock: ClockWatch::new(ClockSync::default()),
            correction_due: true,
            alarm_settings: None,
            alarms: None,
            unstored_alarms: VecDeque::new(),
        }
    }

    /// Evaluates `settings`' alarms on every sample written.
    pub fn with_alarms(mut self, settings: AlarmSettings) -> Self {
        self.alarm_settings = Some(settings);
        self
    }

    /// Evaluates the alarms on `written` (oldest first, just committed): logs
    /// each raise at WARN and each clear at INFO, and stores the events. The
    /// state comes from the outbox the first time (the active alarms, and the
    /// missing readings in a row of the samples before these); active alarms
    /// no rule covers any more are cleared then. Events that cannot be stored
    /// (disk full, outbox busy) are kept in memory, bounded, and stored first
    /// next time, in order: the evaluator has already moved on, so dropping
    /// them would lose the raise or the clear for good.
    async fn check_alarms(&mut self, written: Vec<Sample>) {
        let Some(settings) = self.alarm_settings.clone() else {
            return;
        };
        let mut events: Vec<Event> = vec![];
        if self.alarms.is_none() {
            let skip = written.len();
            let n = settings.missing_for as usize + skip;
            let loaded = self
                .outbox
                .call(move |o| Ok((o.active_alarms()?, o.recent(n)?)))
                .await;
            match loaded {
                Ok((active, recent)) => {
                    let mut ev = Evaluator::new(settings, active.into_iter().map(|a| a.event.key));
                    let before: Vec<Sample> =
                        recent.into_iter().skip(skip).map(|s| s.sample).collect();
                    ev.prime(&before);
                    if let Some(first) = written.first() {
                        events.extend(ev.retire_uncovered(first));
                    }
                    self.alarms = Some(ev);
                }
                Err(e) => {
                    warn!(error = %format!("{e:#}"), "cannot read the alarm state from the outbox; alarms are checked from the next sample");
                    return;
                }
            }
        }
        let Some(ev) = self.alarms.as_mut() else {
            return;
        };
        events.extend(written.iter().flat_map(|s| ev.evaluate(s)));
        if events.is_empty() && self.unstored_alarms.is_empty() {
            return;
        }
        let held = self.unstored_alarms.len();
        for e in &events {
            if self.unstored_alarms.len() >= MAX_UNSTORED_ALARMS {
                self.unstored_alarms.pop_front();
                error!("alarm events unstorable for too long: dropped the oldest held in memory");
            }
            self.unstored_alarms.push_back(e.clone());
        }
        // Stored first, so that anyone who reads the log line finds the alarm
        // in the outbox (dashboard, status, /metrics).
        let device = self.device_id.clone();
        let stored: Vec<Event> = self.unstored_alarms.iter().cloned().collect();
        match self
            .outbox
            .call(move |o| o.record_alarms(&device, &stored))
            .await
        {
            Ok(()) => {
                if held > 0 {
                    info!(
                        alarm_events = held,
                        "stored alarm events held in memory while the outbox was unwritable"
                    );
                }
                self.unstored_alarms.clear();
            }
            Err(e) => {
                error!(error = %format!("{e:#}"), held = self.unstored_alarms.len(), "cannot store alarm events in the outbox (disk full? busy?); held in memory and retried next cycle");
            }
        }
        for e in &events {
            if e.raised {
                warn!(alarm = %e.key.alarm, role = %e.key.role, value = ?e.value, threshold = ?e.threshold, "alarm raised: {}", e.message);
            } else {
                info!(alarm = %e.key.alarm, role = %e.key.role, value = ?e.value, "alarm cleared: {}", e.message);
            }
        }
    }

    /// Alarm events waiting in memory for the outbox.
    pub fn unstored_alarms(&self) -> usize {
        self.unstored_alarms.len()
    }

    /// Decides clock synchronisation with `sync` (default: the kernel's).
    pub fn with_clock_sync(mut self, sync: ClockSync) -> Self {
        self.clock = ClockWatch::new(sync);
        self
    }

    /// Once the clock is synced: corrects the outbox's unsynced samples of
    /// this boot (a failure is logged and retried next cycle).
    async fn correct_if_synced(&mut self, obs: &Observation) {
        let Some(anchor) = obs.anchor().filter(|_| self.correction_due) else {
            return;
        };
        let now = obs.wall;
        match self.outbox.call(move |o| o.record_sync(&anchor, now)).await {
            Ok(n) => {
                self.correction_due = false;
                if n > 0 {
                    info!(
                        corrected = n,
                        "corrected the taken_at of samples taken before the clock was synchronised (taken_at_raw keeps the original)"
                    );
                }
            }
            Err(e) => {
                warn!(error = %format!("{e:#}"), "cannot record the clock synchronisation in the outbox; retrying next cycle")
            }
        }
    }

    /// Reads every sensor once (on a blocking thread) and builds the sample.
    pub async fn read(&mut self) -> anyhow::Result<Sample> {
        let obs = self.clock.observe();
        self.correct_if_synced(&obs).await;
        let taken_at = obs.wall;
        let stamp = ClockStamp {
            state: if obs.synced {
                ClockState::Synced
            } else {
                ClockState::Unsynced
            },
            boot_id: Some(obs.boot_id).filter(|b| !b.is_empty()),
            boottime_us: Some(obs.boottime_us),
            taken_at_raw: None,
        };
        let mut sensors = self
            .sensors
            .take()
            .ok_or_else(|| anyhow::anyhow!("a previous sensor read never finished"))?;
        let (sensors, readings) = tokio::task::spawn_blocking(move || {
            let r = sensors.read_cycle();
            (sensors, r)
        })
        .await?;
        self.sensors = Some(sensors);
        Ok(Sample::new(self.device_id.clone(), taken_at, self.source, readings).with_clock(stamp))
    }

    /// Commits `sample`, after any earlier samples whose write failed. On error
    /// the samples stay in memory for the next call.
    pub async fn write(&mut self, sample: Sample) -> anyhow::Result<i64> {
        if self.unwritten.len() >= MAX_UNWRITTEN {
            self.unwritten.pop_front();
            self.dropped += 1;
            error!(
                dropped = self.dropped,
                "outbox unwritable for too long: dropped the oldest sample held in memory"
            );
        }
        self.unwritten.push_back(sample);
        let batch: Vec<Sample> = self.unwritten.iter().cloned().collect();
        let result = self.outbox.call(move |o| o.take(&batch)).await;
        match result {
            Ok(seq) => {
                if self
                    .unwritten
                    .iter()
                    .any(|s| s.clock.state == ClockState::Unsynced)
                {
                    self.correction_due = true;
                }
                if self.unwritten.len() > 1 {
                    info!(samples = self.unwritten.len(), "wrote samples held in memory while the outbox was unwritable");
                }
                let written: Vec<Sample> = self.unwritten.drain(..).collect();
                self.check_alarms(written).await;
                Ok(seq)
            }
            Err(e) => Err(e.context(format!(
                "cannot write to the outbox (disk full? read-only?); {} sample(s) held in memory and retried next cycle",
                self.unwritten.len()
            ))),
        }
    }

    /// Samples waiting in memory for the outbox.
    pub fn unwritten(&self) -> usize {
        self.unwritten.len()
    }
}

/// A one-line summary of a sample for logs and `hxlog sample`.
///
/// ```
/// use hxlog::sample::{Quality, Reading, Sample, Source};
/// let s = Sample::new("hx", jiff::Timestamp::UNIX_EPOCH, Source::Mock, vec![
///     Reading::ok("T1", None, 61.25),
///     Reading::missing("T2", None, Quality::CrcNo, "crc NO"),
/// ]);
/// assert_eq!(hxlog::sampler::summary(&s), "[MOCK] T1=61.25°C T2=missing(crc_no) effectiveness=n/a lmtd=n/a");
/// ```
pub fn summary(s: &Sample) -> String {
    let mut out = String::new();
    if s.source == Source::Mock {
        out.push_str("[MOCK] ");
    }
    for r in &s.readings {
        match r.celsius {
            Some(c) => out.push_str(&format!("{}={c:.2}°C ", r.role)),
            None => out.push_str(&format!("{}=missing({}) ", r.role, r.quality)),
        }
    }
    let fmt = |v: Option<f64>, unit: &str| {
        v.map(|v| format!("{v:.3}{unit}"))
            .unwrap_or_else(|| "n/a".into())
    };
    out.push_str(&format!(
        "effectiveness={} lmtd={}",
        fmt(s.efficiency.effectiveness, ""),
        fmt(s.efficiency.lmtd, "K")
    ));
    out
}

/// Options of [`run_loop`].
pub struct LoopOptions {
    /// Time between samples.
    pub interval: Duration,
    /// Stops the loop (after the sample in flight is written).
    pub shutdown: CancellationToken,
    /// Forwarders to wake after each committed sample.
    pub wakes: Vec<Arc<Notify>>,
    /// Retention of delivered samples, and the sinks whose delivery allows pruning.
    pub retention: Duration,
    /// Configured sinks (pruning needs all of them to have delivered).
    pub sinks: Vec<&'static str>,
    /// Those of them that publish alarm events (pruning alarm events needs
    /// all of these to have received them).
    pub alarm_sinks: Vec<&'static str>,
}

/// Samples every `interval` until shutdown. Pets the systemd watchdog while
/// it is alive, so a hung sensor read gets the service restarted.
pub async fn run_loop(mut sampler: Sampler, opts: LoopOptions) -> anyhow::Result<()> {
    let mut ticker = tokio::time::interval(opts.interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut watchdog = crate::notify::watchdog_period().map(tokio::time::interval);
    let mut prune = tokio::time::interval(Duration::from_secs(3600));
    prune.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            biased;
            _ = opts.shutdown.cancelled() => break,
            _ = async { match watchdog.as_mut() { Some(w) => { w.tick().await; } None => std::future::pending().await } } => {
                crate::notify::watchdog();
            }
            _ = ticker.tick() => {
                // Not cancellable: the sample in flight is fully written or not at all.
                take_one(&mut sampler, &opts).await;
                crate::notify::watchdog();
            }
            _ = prune.tick() => {
                let Some(cutoff) = prune_cutoff(Timestamp::now(), opts.retention) else {
                    warn!(retention = ?opts.retention, "retention reaches before year -9999; nothing pruned");
                    continue;
                };
                let (sinks, alarm_sinks) = (opts.sinks.clone(), opts.alarm_sinks.clone());
                let pruned = sampler
                    .outbox
                    .call(move |o| Ok((o.prune(cutoff, &sinks)?, o.prune_alarms(cutoff, &sinks, &alarm_sinks)?)))
                    .await;
                match pruned {
                    Ok((0, 0)) => {}
                    Ok((n, a)) => info!(pruned = n, alarm_events = a, "pruned delivered samples and alarm events past the retention"),
                    Err(e) => warn!(error = %format!("{e:#}"), "pruning failed"),
                }
            }
        }
    }
    if sampler.unwritten() > 0 {
        error!(
            samples = sampler.unwritten(),
            "stopping with samples that could not be written to the outbox"
        );
    }
    if sampler.unstored_alarms() > 0 {
        error!(
            alarm_events = sampler.unstored_alarms(),
            "stopping with alarm events that could not be stored in the outbox"
        );
    }
    Ok(())
}

/// The instant before which delivered samples are pruned: `now - retention`,
/// or `None` when that is not a representable time (config bounds keep
/// retention far from it; this never panics whatever it is given).
fn prune_cutoff(now: Timestamp, retention: Duration) -> Option<Timestamp> {
    let span = jiff::SignedDuration::try_from(retention).ok()?;
    now.checked_sub(span).ok()
}

async fn take_one(sampler: &mut Sampler, opts: &LoopOptions) {
    let sample = match sampler.read().await {
        Ok(s) => s,
        Err(e) => {
            error!(error = %format!("{e:#}"), "sensor read failed");
            return;
        }
    };
    let line = summary(&sample);
    let missing = sample.missing_roles().len();
    let taken_at = sample.taken_at;
    match sampler.write(sample).await {
        Ok(seq) => {
            info!(seq, %taken_at, missing, "sample {line}");
            for w in &opts.wakes {
                w.notify_one();
            }
        }
        Err(e) => error!(error = %format!("{e:#}"), "sample not written"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Synchronous;
    use crate::outbox::Outbox;
    use crate::sensors::{SensorSettings, Sensors};

    #[test]
    fn the_prune_cutoff_never_overflows() {
        let now: Timestamp = "2026-11-28T12:00:00Z".parse().unwrap();
        let day = Duration::from_secs(86_400);
        assert_eq!(
            prune_cutoff(now, day * 90).map(|t| t.to_string()),
            Some("2026-08-30T12:00:00Z".to_string())
        );
        assert_eq!(prune_cutoff(now, day * 5_000_000), None);
        assert_eq!(prune_cutoff(now, Duration::MAX), None);
    }

    #[tokio::test]
    async fn alarm_events_that_cannot_be_stored_are_stored_next_cycle_in_order() {
        use crate::alarms::Limits;
        use crate::sample::Reading;
        let dir = tempfile::tempdir().unwrap();
        let outbox = Outbox::open(&dir.path().join("outbox.sqlite"), Synchronous::Full).unwrap();
        let shared = SharedOutbox::new(outbox);
        let settings = AlarmSettings {
            roles: [(
                "T1".to_string(),
                Limits {
                    min: None,
                    max: Some(80.0),
                },
            )]
            .into(),
            ..AlarmSettings::default()
        };
        let mut sampler = Sampler::new(
            Sensors::mock(&SensorSettings::default(), 1),
            "hx".into(),
            shared.clone(),
        )
        .with_alarms(settings);
        let t1 = |c: f64| {
            vec![Sample::new(
                "hx",
                Timestamp::UNIX_EPOCH,
                Source::Mock,
                vec![Reading::ok("T1", None, c)],
            )]
        };
        let stored = |shared: &SharedOutbox| {
            let shared = shared.clone();
            async move {
                shared
                    .call(|o| o.pending_alarms("test", 100))
                    .await
                    .unwrap()
                    .into_iter()
                    .map(|e| {
                        format!(
                            "{}{}",
                            if e.event.raised { "+" } else { "-" },
                            e.event.key.alarm
                        )
                    })
                    .collect::<Vec<_>>()
            }
        };
        sampler.check_alarms(t1(70.0)).await;
        // the outbox cannot store alarm events: raised, then cleared, both held
        shared
            .call(|o| o.fail_alarm_inserts_for_tests(true))
            .await
            .unwrap();
        sampler.check_alarms(t1(85.0)).await;
        sampler.check_alarms(t1(70.0)).await;
        assert_eq!(sampler.unstored_alarms(), 2);
        assert!(stored(&shared).await.is_empty());
        // it can again: the held events go first, in order, then the new one
        shared
            .call(|o| o.fail_alarm_inserts_for_tests(false))
            .await
            .unwrap();
        sampler.check_alarms(t1(90.0)).await;
        assert_eq!(sampler.unstored_alarms(), 0);
        assert_eq!(stored(&shared).await, ["+max", "-max", "+max"]);
        let active = shared.call(|o| o.active_alarms()).await.unwrap();
        assert_eq!(active.len(), 1);
    }

    #[tokio::test]
    async fn a_full_disk_keeps_samples_in_memory_until_it_has_room() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("outbox.sqlite");
        let outbox = Outbox::open(&path, Synchronous::Full).unwrap();
        let shared = SharedOutbox::new(outbox);
        let mut sampler = Sampler::new(
            Sensors::mock(&SensorSettings::default(), 1),
            "hx".into(),
            shared.clone(),
        );
        let first = sampler.read().await.unwrap();
        sampler.write(first).await.unwrap();
        // the disk is "full": no page can be added
        let pages: u64 = std::fs::metadata(&path).unwrap().len() / 4096;
        shared
            .call(move |o| o.limit_pages_for_tests(pages.max(1)))
            .await
            .unwrap();
        let mut failures = 0;
        for _ in 0..200 {
            let s = sampler.read().await.unwrap();
            if sampler.write(s).await.is_err() {
                failures += 1;
            }
        }
        assert!(failures > 0, "the page limit never filled the outbox");
        assert!(sampler.unwritten() > 0);
        let err = {
            let s = sampler.read().await.unwrap();
            format!("{:#}", sampler.write(s).await.unwrap_err())
        };
        assert!(
            err.contains("disk full") && err.contains("held in memory"),
            "{err}"
        );
        // room again: everything held is written, nothing lost or doubled
        shared
            .call(|o| o.limit_pages_for_tests(1_000_000))
            .await
            .unwrap();
        let s = sampler.read().await.unwrap();
        sampler.write(s).await.unwrap();
        assert_eq!(sampler.unwritten(), 0);
        let n = shared.call(|o| o.status(&[])).await.unwrap().samples;
        assert_eq!(n, 1 + 200 + 1 + 1);
    }
}

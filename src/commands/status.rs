//! `hxlog status`: the outbox, delivery per sink, and sensor health from the last sample.

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::time::Duration;

use jiff::Timestamp;
use serde_json::json;

use super::human;
use crate::config::{Config, Secrets};
use crate::outbox::{Outbox, OutboxStatus, SinkState};
use crate::sample::Quality;
use crate::sinks::{self, SinkName};

/// Prints the status as text or JSON.
pub fn status(config: &Config, as_json: bool) -> anyhow::Result<ExitCode> {
    let secrets = Secrets::load(config.secrets.as_deref())?;
    let sinks: Vec<&str> = sinks::configured(&secrets)
        .into_iter()
        .map(SinkName::as_str)
        .collect();
    // Building does no I/O: it finds what `run` logs for a sink configured wrongly.
    let config_errors: BTreeMap<&str, String> = sinks::build(config, &secrets, None)
        .failed
        .into_iter()
        .map(|(name, e)| (name.as_str(), format!("{e:#}")))
        .collect();
    let path = config.outbox_path();
    if !path.exists() {
        if as_json {
            let out = json!({
                "device_id": config.device_id,
                "source": config.effective_source(),
                "outbox": {"path": path, "samples": 0, "sinks": []},
                "configured_sinks": sinks,
                "sink_config_errors": config_errors,
                "last_sample": null,
                "bus_warning": bus_trouble(config),
            });
            println!("{}", serde_json::to_string_pretty(&out)?);
        } else {
            println!(
                "device:   {} (source {}, {})",
                config.device_id,
                config.effective_source(),
                config.source_origin
            );
            println!(
                "outbox:   none yet at {} (no sample taken; run `hxlog sample` or `hxlog run`)",
                path.display()
            );
            println!(
                "sinks:    {}",
                if sinks.is_empty() {
                    "none configured".to_string()
                } else {
                    sinks.join(", ")
                }
            );
            for (name, e) in &config_errors {
                println!("sink {name}: {NOT_FORWARDING}: {e}");
            }
        }
        return Ok(ExitCode::SUCCESS);
    }
    let outbox = Outbox::open_existing(&path)?;
    let st = outbox.status(&sinks)?;
    let last = outbox.last()?;
    let bus_trouble = bus_trouble(config);
    let clock = clock_state(config, &outbox, &st)?;
    let health = health(config, &outbox)?;
    if as_json {
        let sensors = last.as_ref().map(crate::output::sample_json);
        let out = json!({
            "device_id": config.device_id,
            "source": config.effective_source(),
            "clock": &clock,
            "health": &health,
            "alarms": outbox.active_alarms()?,
            "outbox": &st,
            "configured_sinks": sinks,
            "sink_config_errors": config_errors,
            "last_sample": sensors,
            "bus_warning": bus_trouble,
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(ExitCode::SUCCESS);
    }
    print_text(
        config,
        &st,
        &sinks,
        &config_errors,
        last.as_ref(),
        bus_trouble.as_deref(),
    );
    print_clock(&clock);
    print_health(&health, &outbox.active_alarms()?);
    Ok(ExitCode::SUCCESS)
}

/// The verdict `/healthz` gives (see `monitor`): a status run beside timer
/// mode cannot tell, so the pace of the samples counts when it is longer
/// than the interval.
fn health(config: &Config, outbox: &Outbox) -> anyhow::Result<crate::monitor::Verdict> {
    let recent = outbox.recent_times(11)?;
    let interval = crate::monitor::interval_for(config.interval, &recent, true);
    Ok(crate::monitor::judge(
        Timestamp::now(),
        interval,
        recent.first().copied(),
        None,
        crate::monitor::outbox_writable(outbox.path()),
    ))
}

fn print_health(v: &crate::monitor::Verdict, alarms: &[crate::outbox::alarms::StoredEvent]) {
    if v.healthy {
        println!("health:   ok");
    } else {
        println!("health:   NOT OK: {}", v.reason);
    }
    if alarms.is_empty() {
        println!("alarms:   none active");
    }
    for a in alarms {
        println!(
            "alarm:    {} {} since {}: {}",
            a.event.key.alarm, a.event.key.role, a.event.at, a.event.message
        );
    }
}

/// What `status` says about a sink configured wrongly.
const NOT_FORWARDING: &str =
    "CONFIGURATION ERROR, not forwarding (samples are kept for it; fix it and restart hxlog)";

/// The clock as `status` shows it.
#[derive(Debug, serde::Serialize)]
struct ClockStatus {
    /// `synced` or `unsynced`, now.
    state: crate::sample::ClockState,
    /// How synchronisation is detected (`clock_sync`).
    clock_sync: String,
    /// Synced: when hxlog first saw it synced in this boot (null if no
    /// sample was taken since). Unsynced: the boot, by the unsynced clock.
    since: Option<Timestamp>,
    /// The current boot.
    boot_id: String,
    /// Samples still marked unsynced (every boot).
    unsynced_samples: u64,
    /// Samples whose time was corrected.
    corrected_samples: u64,
    /// What to check when unsynced.
    hint: Option<String>,
}

fn clock_state(config: &Config, outbox: &Outbox, st: &OutboxStatus) -> anyhow::Result<ClockStatus> {
    use crate::sample::ClockState;
    let obs = crate::clock::Observation::now(&config.clock_sync);
    let (state, since) = if obs.synced {
        let anchor = outbox.anchor(&obs.boot_id)?;
        (ClockState::Synced, anchor.map(|a| a.synced_at))
    } else {
        let boot = obs
            .wall
            .checked_sub(jiff::SignedDuration::from_micros(obs.boottime_us))
            .ok();
        (ClockState::Unsynced, boot)
    };
    Ok(ClockStatus {
        state,
        clock_sync: config.clock_sync.to_string(),
        since,
        boot_id: obs.boot_id,
        unsynced_samples: st.unsynced_samples,
        corrected_samples: st.corrected_samples,
        hint: (!obs.synced).then(|| config.clock_sync.unsynced_hint()),
    })
}

fn print_clock(c: &ClockStatus) {
    let since = match (c.state, c.since) {
        (crate::sample::ClockState::Unsynced, Some(t)) => {
            format!(" since boot ({t} by this unsynchronised clock)")
        }
        (_, Some(t)) => format!(" since {t}"),
        (_, None) => String::new(),
    };
    println!("clock:    {}{since} (clock_sync {})", c.state, c.clock_sync);
    println!(
        "          {} samples unsynced, {} corrected",
        c.unsynced_samples, c.corrected_samples
    );
    if let Some(h) = &c.hint {
        println!("          {h}");
    }
}

fn print_text(
    config: &Config,
    st: &OutboxStatus,
    configured: &[&str],
    config_errors: &BTreeMap<&str, String>,
    last: Option<&crate::outbox::Stored>,
    bus_trouble: Option<&str>,
) {
    let now = Timestamp::now();
    let ago = |t: Timestamp| {
        let d = now.duration_since(t);
        if d.is_negative() {
            format!("{t} (in the future: check the clock)")
        } else {
            format!("{t} ({} ago)", human(d.unsigned_abs()))
        }
    };
    println!(
        "device:   {} (source {}, {})",
        config.device_id,
        config.effective_source(),
        config.source_origin
    );
    println!("outbox:   {}", st.path.display());
    println!(
        "samples:  {} stored{}",
        st.samples,
        if st.mock_samples > 0 {
            format!(", of which {} MOCK", st.mock_samples)
        } else {
            String::new()
        }
    );
    if let (Some(o), Some(n)) = (st.oldest, st.newest) {
        println!("          oldest {}", ago(o));
        println!("          newest {}", ago(n));
    }
    if configured.is_empty() {
        println!("sinks:    none configured (samples stay in the outbox; see secrets.json)");
    }
    for s in &st.sinks {
        print_sink(s, configured.contains(&s.name.as_str()), &ago, now);
        if let Some(e) = config_errors.get(s.name.as_str()) {
            println!("          {NOT_FORWARDING}: {e}");
        }
    }
    match last {
        None => println!("sensors:  no sample yet"),
        Some(l) => {
            println!(
                "sensors:  last sample {}{}",
                ago(l.sample.taken_at),
                if l.sample.source == crate::sample::Source::Mock {
                    " [MOCK]"
                } else {
                    ""
                }
            );
            for r in &l.sample.readings {
                match (r.celsius, r.quality) {
                    (Some(c), Quality::Ok) => {
                        println!("          {:<4} ok       {c:.3} °C", r.role)
                    }
                    _ => println!(
                        "          {:<4} MISSING  {} ({})",
                        r.role,
                        r.quality,
                        r.reason.as_deref().unwrap_or("")
                    ),
                }
            }
            let e = &l.sample.efficiency;
            let f = |v: Option<f64>| v.map(|v| format!("{v:.3}")).unwrap_or_else(|| "n/a".into());
            println!(
                "          effectiveness {} (hot {}, cold {}), LMTD {} K",
                f(e.effectiveness),
                f(e.hot_effectiveness),
                f(e.cold_effectiveness),
                f(e.lmtd)
            );
        }
    }
    if let Some(w) = bus_trouble {
        println!("bus:      {w}");
    }
}

fn print_sink(s: &SinkState, configured: bool, ago: &dyn Fn(Timestamp) -> String, now: Timestamp) {
    println!(
        "sink {}:{}",
        s.name,
        if configured {
            ""
        } else {
            " (not configured any more)"
        }
    );
    let oldest = s
        .oldest_pending
        .map(|t| format!(", oldest taken {}", ago(t)))
        .unwrap_or_default();
    println!("          pending {}{oldest}", s.pending);
    if s.delivered_seq == 0 && s.pending > 0 {
        println!(
            "          new sink: starts from the oldest stored sample (`hxlog replay --sink {} --skip-to-now` starts it from now instead)",
            s.name
        );
    }
    println!(
        "          last success {}",
        s.last_success.map(ago).unwrap_or_else(|| "never".into())
    );
    if let (Some(e), Some(at)) = (&s.last_error, s.last_error_at) {
        let recovered = s.last_success.is_some_and(|ok| ok > at);
        let class = s.last_error_class.as_deref().unwrap_or("?");
        // A failure is recorded when it starts (or changes), not per attempt.
        let what = if recovered || class == "rejected" {
            "last error"
        } else {
            "failing since"
        };
        println!(
            "          {what} {} [{class}]{}: {e}",
            ago(at),
            if recovered { " (recovered since)" } else { "" }
        );
    }
    if let Some(until) = s.backoff_until.filter(|u| *u > now) {
        let d: Duration = until.duration_since(now).unsigned_abs();
        println!("          backing off until {until} (in {})", human(d));
    }
    if s.rejected_count > 0 {
        println!(
            "          {} samples refused by the sink (recorded in the outbox)",
            s.rejected_count
        );
    }
}

/// A one-line warning when the bus looks unhealthy (phantoms, mapped sensors missing).
fn bus_trouble(config: &Config) -> Option<String> {
    if config.effective_source() != crate::sample::Source::W1 {
        return None;
    }
    let bus = crate::sensors::w1::W1Bus::new(&config.sensors);
    match bus.scan() {
        Err(e) => Some(format!(
            "cannot scan {}: {e}; run scripts/w1_diagnostic.sh",
            config.sensors.w1_root.display()
        )),
        Ok(scan) if !scan.phantoms.is_empty() || !scan.missing_mapped.is_empty() => Some(format!(
            "{} phantom device(s), {} mapped sensor(s) missing; run scripts/w1_diagnostic.sh (and scripts/w1_bus_recovery.sh)",
            scan.phantoms.len(),
            scan.missing_mapped.len()
        )),
        Ok(_) => None,
    }
}

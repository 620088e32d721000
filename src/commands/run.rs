//! `hxlog run`: sample and forward until stopped (the systemd service).

use std::process::ExitCode;
use std::time::Duration;

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use super::{
    build_sensors, forwarder_outbox, http_settings, lock, open_outbox, spawn_signal_handler,
};
use crate::config::{Config, Secrets};
use crate::forward::{ForwardOptions, Mode, forward};
use crate::outbox::lock::Role;
use crate::outbox::{Outbox, SharedOutbox};
use crate::sample::Source;
use crate::sampler::{LoopOptions, Sampler, run_loop};
use crate::sensors::Sensors;
use crate::sinks::{self, AnySink, Sink, SinkName};

/// What to do when another process holds one of `run`'s locks.
const RUN_HINT: &str = "stop it before starting another (systemctl stop hxlog; in timer mode systemctl stop hxlog-sample.timer hxlog-replay.timer; a manual replay ends by itself), or give this one its own data_dir";

/// Samples every interval and forwards to every configured sink until SIGTERM/Ctrl-C.
pub async fn run(config: &Config) -> anyhow::Result<ExitCode> {
    // First, before anything slow: from here on SIGTERM/SIGINT stop cleanly.
    let shutdown = CancellationToken::new();
    spawn_signal_handler(shutdown.clone())?;
    let (sinks, kept_for) = build_sinks(config);
    let outbox = open_outbox(config)?;
    // One sampler per outbox and one forwarder per sink, held until we exit;
    // taken once the outbox is known to be one (a foreign file gets no lock file).
    let _sampling = lock(config, Role::Sampler, RUN_HINT)?;
    let _forwarding = sinks
        .iter()
        .map(|s| lock(config, Role::Forwarder(s.name()), RUN_HINT))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let sensors = build_sensors(config)?;
    check_sources(&outbox, sensors.source());
    log_bus(config, &sensors);
    let sink_names: Vec<&'static str> = sinks.iter().map(|s| s.name()).collect();
    info!(
        device_id = %config.device_id,
        source = %sensors.source(),
        source_from = %config.source_origin,
        interval = ?config.interval,
        outbox = %outbox.path().display(),
        sinks = ?sink_names,
        "hxlog starting"
    );

    let mut wakes = vec![];
    let mut tasks = JoinSet::new();
    let mut follow = || {
        let mut opts = ForwardOptions::new(Mode::Follow, config.retry_max, shutdown.clone());
        opts.send_timeout = config.send_timeout;
        opts.clock_sync_wait = Some(config.clock_sync_wait);
        wakes.push(opts.wake.clone());
        opts
    };
    for sink in sinks {
        tasks.spawn(forward(sink, forwarder_outbox(config)?, follow()));
    }

    if let Some(addr) = config.http_listen {
        // A port in use is logged and sampling goes on without the dashboard.
        match crate::http::bind(addr).await {
            Ok(listener) => {
                let settings = http_settings(
                    config,
                    kept_for.iter().map(|s| s.to_string()).collect(),
                    false,
                );
                let stop = shutdown.clone();
                tokio::spawn(async move {
                    if let Err(e) = crate::http::serve(listener, settings, stop).await {
                        error!(error = %format!("{e:#}"), "the dashboard stopped; sampling continues");
                    }
                });
            }
            Err(e) => error!(
                error = %format!("{e:#}"),
                "NOT SERVING the dashboard, /metrics and /healthz; sampling continues"
            ),
        }
    }

    let sampler_outbox = SharedOutbox::new(outbox);
    let sampler = Sampler::new(sensors, config.device_id.clone(), sampler_outbox.clone())
        .with_clock_sync(config.clock_sync.clone())
        .with_alarms(config.alarms.clone());
    crate::notify::ready("sampling");
    let result = run_loop(
        sampler,
        LoopOptions {
            interval: config.interval,
            shutdown: shutdown.clone(),
            wakes,
            retention: config.retention,
            alarm_sinks: SinkName::ALL
                .into_iter()
                .filter(|n| n.publishes_alarms() && kept_for.contains(&n.as_str()))
                .map(SinkName::as_str)
                .collect(),
            sinks: kept_for,
        },
    )
    .await;
    shutdown.cancel();
    crate::notify::stopping();
    info!("stopping: waiting for the forwarders to finish their batch in flight");
    let drained = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(r) = tasks.join_next().await {
            match r {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => error!(error = %format!("{e:#}"), "forwarder failed"),
                Err(e) => error!(error = %e, "forwarder task panicked"),
            }
        }
    })
    .await;
    if drained.is_err() {
        warn!("forwarders did not stop in time; undelivered batches will be resent next start");
    }
    // At rest the outbox file holds every sample (a backup of it, or an
    // older hxlog, sees them all); the journal is the running logger's.
    if let Err(e) = sampler_outbox.call(|o| o.fold()).await {
        warn!(error = %format!("{e:#}"), "cannot fold the sample journal into the outbox; its samples stay in the journal and are read from there");
    }
    result?;
    info!("stopped");
    Ok(ExitCode::SUCCESS)
}

/// The sinks to forward to, and the names of every sink samples are kept for
/// (pruning waits for each). A sink configured wrongly is logged loudly and
/// left out of forwarding but not of pruning: sampling never stops for a
/// sink's configuration, and once it is fixed the sink gets every sample it
/// missed. Secrets that cannot be read at all leave no sink to forward to (and
/// nothing is pruned).
fn build_sinks(config: &Config) -> (Vec<AnySink>, Vec<&'static str>) {
    let secrets = match Secrets::load(config.secrets.as_deref()) {
        Ok(s) => s,
        Err(e) => {
            error!(
                error = %format!("{e:#}"),
                "cannot read the secrets: NOT FORWARDING to any sink; sampling continues and every sample is kept in the outbox; fix the file and restart hxlog"
            );
            return (vec![], vec![]);
        }
    };
    let built = sinks::build(config, &secrets, None);
    let mut kept_for: Vec<&'static str> = built.sinks.iter().map(|s| s.name()).collect();
    for (name, e) in &built.failed {
        error!(
            sink = name.as_str(),
            error = %format!("{e:#}"),
            "sink configured wrongly: NOT FORWARDING to it; sampling continues and its samples are kept in the outbox; fix the configuration and restart hxlog (`hxlog status` shows this error)"
        );
        kept_for.push(name.as_str());
    }
    if kept_for.is_empty() {
        warn!(
            "no sink configured (no PG_DB_HOST or AZURE_WEBPUBSUB_CONNECTION_STRING in secrets.json): samples stay in the outbox"
        );
    }
    (built.sinks, kept_for)
}

/// Warns when this run's source differs from the outbox's newest sample (mock
/// and real data are never mixed silently).
pub(super) fn check_sources(outbox: &Outbox, now: Source) {
    if let Ok(Some(last)) = outbox.last()
        && last.sample.source != now
    {
        warn!(
            previous = %last.sample.source,
            now = %now,
            "the outbox already holds {} samples and this run writes {} samples; every sample is marked with its source (see export's source column)",
            last.sample.source,
            now
        );
    }
}

/// Logs what the bus looks like at start: missing mapped sensors, phantom
/// devices, parasite power.
pub(super) fn log_bus(config: &Config, sensors: &Sensors) {
    let Sensors::W1(bus) = sensors else {
        let why = match config.sensor_source {
            crate::config::SensorSource::Auto => format!(
                "no 1-Wire bus at {} (sensor_source auto)",
                config.sensors.w1_root.display()
            ),
            _ => config.source_origin.clone(),
        };
        info!("using the simulated heat exchanger ({why}): every sample is marked mock");
        return;
    };
    match bus.scan() {
        Err(e) => {
            warn!(w1_root = %config.sensors.w1_root.display(), error = %e, "cannot scan the 1-Wire bus; run scripts/w1_diagnostic.sh")
        }
        Ok(scan) => {
            for (role, id) in &scan.missing_mapped {
                warn!(role, sensor = %id, "mapped sensor is not on the bus; it is recorded as missing (not_found) each cycle");
            }
            if !scan.phantoms.is_empty() {
                warn!(phantoms = ?scan.phantoms, "phantom 00-… devices on the bus (wiring or pull-up trouble); run scripts/w1_diagnostic.sh and scripts/w1_bus_recovery.sh");
            }
            for s in &scan.sensors {
                info!(sensor = %s.id, kind = s.kind, role = s.role.as_deref().unwrap_or("-"), ext_power = ?s.ext_power, resolution = ?s.resolution, "sensor found");
                if s.ext_power == Some(false) {
                    warn!(sensor = %s.id, "sensor runs on parasite power: conversions cannot overlap and 85 °C power-on values are likelier; wire VDD to 3.3 V if you can");
                }
            }
        }
    }
}

//! `hxlog sample`: take one sample, commit it to the outbox and print it.

use std::process::ExitCode;

use super::run::{check_sources, log_bus};
use super::{build_sensors, lock, open_outbox};
use crate::config::Config;
use crate::outbox::SharedOutbox;
use crate::outbox::lock::Role;
use crate::sampler::{Sampler, summary};

/// Takes exactly one sample, commits it and prints it.
pub async fn sample(config: &Config, json: bool) -> anyhow::Result<ExitCode> {
    let outbox = open_outbox(config)?;
    let _sampling = lock(
        config,
        Role::Sampler,
        "while `hxlog run` samples, its samples are in the outbox (hxlog export --since 1h); stop it (systemctl stop hxlog) to sample by hand",
    )?;
    let sensors = build_sensors(config)?;
    check_sources(&outbox, sensors.source());
    log_bus(config, &sensors);
    let mut sampler = Sampler::new(sensors, config.device_id.clone(), SharedOutbox::new(outbox))
        .with_clock_sync(config.clock_sync.clone())
        .with_alarms(config.alarms.clone());
    let sample = sampler.read().await?;
    let seq = sampler.write(sample.clone()).await?;
    if sampler.unstored_alarms() > 0 {
        // The next `hxlog sample` loads the alarm state from the outbox, so a
        // raise or clear lost here is decided again by the next sample.
        tracing::error!(
            alarm_events = sampler.unstored_alarms(),
            "alarm events could not be stored in the outbox; the next sample decides them again"
        );
    }
    if json {
        let stored = crate::outbox::Stored { seq, sample };
        println!("{}", crate::output::sample_json(&stored));
    } else {
        println!(
            "{} {} {}",
            sample.taken_at,
            sample.device_id,
            summary(&sample)
        );
    }
    Ok(ExitCode::SUCCESS)
}

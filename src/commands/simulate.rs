//! `hxlog simulate`: N mock samples ending now, in large transactions.

use std::process::ExitCode;

use anyhow::{Context, bail};
use jiff::{SignedDuration, Timestamp};

use super::{lock, open_outbox};
use crate::config::Config;
use crate::outbox::lock::Role;
use crate::sample::{Sample, Source};
use crate::sensors::mock::MockExchanger;
use crate::when::parse_duration;

/// Samples per transaction.
const CHUNK: u64 = 50_000;

/// Writes `count` mock samples spaced by `interval`, the last one now.
pub fn simulate(config: &Config, count: u64, interval: &str) -> anyhow::Result<ExitCode> {
    if count == 0 {
        bail!("--count must be at least 1");
    }
    let step = SignedDuration::try_from(parse_duration(interval).context("--interval")?)?;
    let now = Timestamp::now();
    let total = step
        .checked_mul(i32::try_from(count - 1).context("--count is too large")?)
        .context("--count × --interval is too long")?;
    let first = now
        .checked_sub(total)
        .context("--count × --interval reaches too far back")?;
    let mut outbox = open_outbox(config)?;
    let _sampling = lock(
        config,
        Role::Sampler,
        "simulated samples are written only while nothing else samples this outbox; stop it first, or give simulate its own data_dir",
    )?;
    let roles = super::roles(config);
    let mut mock = MockExchanger::new(roles, crate::sensors::mock::seed(&config.device_id));
    let mut written = 0u64;
    let mut chunk = Vec::with_capacity(CHUNK.min(count) as usize);
    while written < count {
        chunk.clear();
        let n = CHUNK.min(count - written);
        for i in written..written + n {
            let t = first + step * i as i32;
            chunk.push(Sample::new(
                config.device_id.clone(),
                t,
                Source::Mock,
                mock.read_at(t),
            ));
        }
        outbox.insert_all(&chunk)?;
        written += n;
    }
    println!(
        "wrote {count} mock samples from {first} to {now} into {}",
        outbox.path().display()
    );
    Ok(ExitCode::SUCCESS)
}

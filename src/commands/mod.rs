//! The subcommands: each wires config, sensors, outbox, forwarder and sinks
//! together for one use. This is the top of the dependency graph; nothing
//! imports it but `main`.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;

use crate::cli::{Cli, Command};
use crate::config::Config;
use crate::outbox::lock::{Lock, Role};
use crate::outbox::{Outbox, SharedOutbox};
use crate::sample::{STANDARD_ROLES, Source};
use crate::sensors::Sensors;

mod export;
mod migrate;
mod replay;
mod run;
mod sample;
mod sensors;
mod serve;
mod simulate;
mod status;

/// Exit code when a sample or delivery could not be made (the error says why).
pub const EXIT_FAILURE: u8 = 1;
/// Exit code of `replay` when no sink is configured, so there is nothing to
/// replay to. Every other error, configuration errors included, exits with
/// [`EXIT_FAILURE`].
pub const EXIT_CONFIG: u8 = 2;

/// Parses nothing, decides nothing: loads the config, sets up logging and runs
/// the command on a tokio runtime.
pub fn dispatch(cli: Cli) -> anyhow::Result<ExitCode> {
    let config = Config::load(cli.config.as_deref())?;
    crate::logging::init(
        cli.log_format,
        &config.log_level,
        config.log_file.as_deref(),
    )?;
    // glibc gives each thread that allocates its own malloc arena, and each
    // keeps the memory it freed: with the runtime's and the blocking pool's
    // threads that was megabytes of RSS for a program that allocates little.
    // One arena is enough (issue 13; measured with scripts/bench-wear.sh).
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets an allocator parameter; called before any
    // thread is started.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
    // One worker: hxlog waits on I/O; SQLite and sensor reads run on the
    // blocking pool, which is capped (each thread costs stack and a malloc
    // arena: RSS, issue 13). Threads start on demand: the HTTP endpoints'
    // reads (at most MAX_IN_FLIGHT) get their own share, so a flood of
    // requests never queues the sampler's and forwarders' work behind them.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .max_blocking_threads(crate::http::MAX_IN_FLIGHT + 8)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async move {
        match cli.command {
            Command::Run => run::run(&config).await,
            Command::Sample { json } => sample::sample(&config, json).await,
            Command::Export {
                since,
                until,
                format,
                output,
            } => export::export(&config, &since, until.as_deref(), format, output.as_deref()),
            Command::Replay {
                sink: Some(sink),
                skip_to_now: true,
                ..
            } => replay::skip_to_now(&config, sink),
            Command::Replay {
                since,
                until,
                sink,
                give_up_after,
                skip_to_now: _,
            } => match since {
                None => replay::drain(&config, sink, &give_up_after).await,
                Some(since) => {
                    replay::resend(&config, &since, until.as_deref(), sink, &give_up_after).await
                }
            },
            Command::Serve { listen } => serve::serve(&config, listen.as_deref()).await,
            Command::Status { json } => status::status(&config, json),
            Command::Sensors { json } => sensors::sensors(&config, json),
            Command::Simulate { count, interval } => simulate::simulate(&config, count, &interval),
            Command::Migrate => migrate::migrate(&config).await,
        }
    })
}

/// Opens (creating) the outbox of `config`.
fn open_outbox(config: &Config) -> anyhow::Result<Outbox> {
    Outbox::open(&config.outbox_path(), config.synchronous)
}

/// The sensors `config` asks for. On a real bus without a mapping, an error
/// that says how to write one.
fn build_sensors(config: &Config) -> anyhow::Result<Sensors> {
    match config.effective_source() {
        Source::Mock => Ok(Sensors::mock(
            &config.sensors,
            crate::sensors::mock::seed(&config.device_id),
        )),
        Source::W1 => {
            if config.sensors.mapping.is_empty() {
                anyhow::bail!(
                    "no devicenames.json found: map roles to sensor ids ({{\"T1\": \"28-…\", \"T2\": …}}) and set \"devicenames\" in the config; `hxlog sensors` lists the ids on the bus (or set USE_MOCK_SENSORS=true to simulate)"
                );
            }
            Ok(Sensors::w1(&config.sensors))
        }
    }
}

/// The roles of the export columns: the mapping's, else T1..T4.
fn roles(config: &Config) -> Vec<String> {
    if config.sensors.mapping.is_empty() {
        STANDARD_ROLES.iter().map(|r| r.to_string()).collect()
    } else {
        config.sensors.roles()
    }
}

/// What the HTTP endpoints need from `config`; `timer_mode` judges the
/// sampling pace from the samples instead of the configured interval.
fn http_settings(config: &Config, sinks: Vec<String>, timer_mode: bool) -> crate::http::Settings {
    crate::http::Settings {
        outbox: config.outbox_path(),
        interval: config.interval,
        pace_from_samples: timer_mode,
        roles: roles(config),
        sinks,
        device_id: config.device_id.clone(),
        started: jiff::Timestamp::now(),
    }
}

/// Takes the outbox lock of `role` for this command (see `outbox::lock`);
/// refused with the holder's pid and `hint` when another process holds it.
fn lock(config: &Config, role: Role, hint: &str) -> anyhow::Result<Lock> {
    crate::outbox::lock::acquire(&config.outbox_path(), role, hint)
}

/// A second connection to the outbox for one forwarder. Its commits (acks,
/// sink state) are not fsynced (`synchronous=NORMAL`): one lost in a power
/// cut means a resend, which the sinks deduplicate. The sampler's commits keep
/// `config.synchronous` (FULL by default), which also makes durable every
/// commit before them.
fn forwarder_outbox(config: &Config) -> anyhow::Result<SharedOutbox> {
    Ok(SharedOutbox::new(Outbox::open(
        &config.outbox_path(),
        crate::config::Synchronous::Normal,
    )?))
}

/// Formats a duration for humans (`3m 20s`).
fn human(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m {}s", s / 60, s % 60),
        3600..=86399 => format!("{}h {}m", s / 3600, (s % 3600) / 60),
        _ => format!("{}d {}h", s / 86400, (s % 86400) / 3600),
    }
}

/// Listens for SIGTERM and SIGINT and cancels `shutdown` on the first one.
///
/// The handlers are registered here, synchronously: registering them inside
/// the spawned task (or through `ctrl_c()`, which registers on first poll)
/// leaves a window after start-up in which a signal still has its default
/// action and kills the process instead of stopping it cleanly.
fn spawn_signal_handler(shutdown: tokio_util::sync::CancellationToken) -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("cannot listen for SIGTERM")?;
    let mut interrupt = signal(SignalKind::interrupt()).context("cannot listen for SIGINT")?;
    tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM received"),
            _ = interrupt.recv() => tracing::info!("interrupt received"),
        }
        shutdown.cancel();
    });
    Ok(())
}

//! `GET /metrics`: Prometheus text exposition (format 0.0.4), checked by
//! `promtool check metrics` in the tests.
//!
//! Gauges come from the outbox as it is now (the newest sample, per-sink
//! delivery state, the alarm state). `hxlog_samples_total` and
//! `hxlog_readings_total` count the samples stored since this process was
//! first scraped: each scrape tallies the samples stored since the previous
//! one (at most [`TALLY_BATCH`] per scrape; a backlog is caught up over the
//! next scrapes), so a scrape stays bounded.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Arc;

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use jiff::Timestamp;

use super::{ApiError, Ctx};
use crate::outbox::Outbox;

/// Most samples tallied by one scrape.
pub const TALLY_BATCH: usize = 10_000;

/// Counters of the samples stored since the first scrape.
#[derive(Debug, Default)]
pub struct Tally {
    /// The seq tallied up to (`None` until the first scrape).
    seq: Option<i64>,
    samples: u64,
    readings: BTreeMap<(String, String), u64>,
}

impl Tally {
    /// Counts the samples stored after the previous call (the first call
    /// starts from the newest sample).
    fn advance(&mut self, outbox: &Outbox) -> anyhow::Result<()> {
        let from = match self.seq {
            Some(s) => s,
            None => *self.seq.insert(outbox.max_seq()?),
        };
        let batch = outbox.after_seq(from, TALLY_BATCH)?;
        for s in &batch {
            self.samples += 1;
            for r in &s.sample.readings {
                *self
                    .readings
                    .entry((r.role.clone(), r.quality.to_string()))
                    .or_default() += 1;
            }
        }
        if let Some(last) = batch.last() {
            self.seq = Some(last.seq);
        }
        Ok(())
    }
}

/// The exposition.
pub async fn metrics(State(ctx): State<Arc<Ctx>>) -> Result<Response, ApiError> {
    let body = ctx.read(render).await?;
    Ok((
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        body,
    )
        .into_response())
}

/// A label value, escaped as the exposition format requires.
fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

struct Out(String);

impl Out {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.0, "# HELP {name} {help}\n# TYPE {name} {kind}");
    }
    fn line(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        let labels: Vec<String> = labels
            .iter()
            .map(|(k, v)| format!("{k}=\"{}\"", label(v)))
            .collect();
        let labels = if labels.is_empty() {
            String::new()
        } else {
            format!("{{{}}}", labels.join(","))
        };
        let _ = writeln!(self.0, "{name}{labels} {value}");
    }
}

fn secs(t: Timestamp) -> f64 {
    t.as_microsecond() as f64 / 1e6
}

fn render(ctx: &Ctx, outbox: &Outbox) -> anyhow::Result<String> {
    let s = &ctx.settings;
    let mut o = Out(String::new());
    o.family("hxlog_build_info", "gauge", "hxlog's version (always 1).");
    o.line(
        "hxlog_build_info",
        &[("version", env!("CARGO_PKG_VERSION"))],
        1.0,
    );

    let verdict = ctx.verdict(outbox)?;
    o.family(
        "hxlog_healthy",
        "gauge",
        "1 while sampling is on schedule and the outbox writable (as /healthz).",
    );
    o.line(
        "hxlog_healthy",
        &[],
        if verdict.healthy { 1.0 } else { 0.0 },
    );

    let last = outbox.last()?;
    o.family(
        "hxlog_temperature_celsius",
        "gauge",
        "Newest reading per role; absent while the reading is missing.",
    );
    if let Some(l) = &last {
        for r in &l.sample.readings {
            if let Some(c) = r.celsius {
                let id = r.sensor_id.as_deref().unwrap_or("");
                o.line(
                    "hxlog_temperature_celsius",
                    &[("role", &r.role), ("sensor_id", id)],
                    c,
                );
            }
        }
    }
    o.family(
        "hxlog_reading_ok",
        "gauge",
        "1 when the role's newest reading is valid, 0 when it is missing.",
    );
    if let Some(l) = &last {
        for r in &l.sample.readings {
            o.line(
                "hxlog_reading_ok",
                &[("role", &r.role)],
                if r.celsius.is_some() { 1.0 } else { 0.0 },
            );
        }
    }
    let sample = last.as_ref().map(|l| &l.sample);
    let figures: [(&str, &str, Option<f64>); 4] = [
        (
            "hxlog_effectiveness_ratio",
            "Effectiveness of the newest sample (absent when undefined).",
            sample.and_then(|s| s.efficiency.effectiveness),
        ),
        (
            "hxlog_lmtd_kelvin",
            "Log-mean temperature difference of the newest sample (absent when undefined).",
            sample.and_then(|s| s.efficiency.lmtd),
        ),
        (
            "hxlog_last_sample_timestamp_seconds",
            "When the newest sample was taken.",
            sample.map(|s| secs(s.taken_at)),
        ),
        (
            "hxlog_last_sample_mock",
            "1 when the newest sample is simulated.",
            sample.map(|s| {
                if s.source == crate::sample::Source::Mock {
                    1.0
                } else {
                    0.0
                }
            }),
        ),
    ];
    for (name, help, value) in figures {
        o.family(name, "gauge", help);
        if let Some(v) = value {
            o.line(name, &[], v);
        }
    }

    let mut tally = ctx.tally.lock().unwrap_or_else(|p| p.into_inner());
    tally.advance(outbox)?;
    o.family(
        "hxlog_samples_total",
        "counter",
        "Samples stored since this process was first scraped.",
    );
    o.line("hxlog_samples_total", &[], tally.samples as f64);
    o.family(
        "hxlog_readings_total",
        "counter",
        "Readings stored since this process was first scraped, by role and quality.",
    );
    for ((role, quality), n) in &tally.readings {
        o.line(
            "hxlog_readings_total",
            &[("role", role), ("quality", quality)],
            *n as f64,
        );
    }
    drop(tally);

    let names: Vec<&str> = s.sinks.iter().map(String::as_str).collect();
    let status = outbox.status(&names)?;
    let now = Timestamp::now();
    o.family(
        "hxlog_sink_pending_samples",
        "gauge",
        "Samples not yet delivered to the sink.",
    );
    for k in &status.sinks {
        o.line(
            "hxlog_sink_pending_samples",
            &[("sink", &k.name)],
            k.pending as f64,
        );
    }
    o.family(
        "hxlog_sink_oldest_pending_age_seconds",
        "gauge",
        "Age of the oldest sample not yet delivered (0 when none).",
    );
    for k in &status.sinks {
        let age = k
            .oldest_pending
            .map(|t| (secs(now) - secs(t)).max(0.0))
            .unwrap_or(0.0);
        o.line(
            "hxlog_sink_oldest_pending_age_seconds",
            &[("sink", &k.name)],
            age,
        );
    }
    o.family(
        "hxlog_sink_last_success_timestamp_seconds",
        "gauge",
        "Last successful delivery (absent when never).",
    );
    for k in &status.sinks {
        if let Some(t) = k.last_success {
            o.line(
                "hxlog_sink_last_success_timestamp_seconds",
                &[("sink", &k.name)],
                secs(t),
            );
        }
    }
    o.family("hxlog_sink_errors_total", "counter", "Delivery failures recorded (one per change of the sink's error state, and per refused batch), by class.");
    for e in outbox.error_counts()? {
        o.line(
            "hxlog_sink_errors_total",
            &[("sink", &e.sink), ("class", &e.class)],
            e.count as f64,
        );
    }

    o.family(
        "hxlog_alarm_active",
        "gauge",
        "1 while the alarm is raised, 0 once cleared.",
    );
    for e in outbox.alarm_states()? {
        o.line(
            "hxlog_alarm_active",
            &[("alarm", &e.event.key.alarm), ("role", &e.event.key.role)],
            if e.event.raised { 1.0 } else { 0.0 },
        );
    }
    Ok(o.0)
}

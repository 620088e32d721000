//! `hxlog export`: the samples of a window as CSV or JSON lines, oldest first.

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use jiff::Timestamp;
use serde_json::{Value, json};

use super::roles;
use crate::cli::ExportFormat;
use crate::config::Config;
use crate::outbox::{Outbox, Stored};
use crate::when::parse_when;

/// Writes every sample in `[since, until)` to `output` (stdout when `None`).
pub fn export(
    config: &Config,
    since: &str,
    until: Option<&str>,
    format: ExportFormat,
    output: Option<&Path>,
) -> anyhow::Result<ExitCode> {
    let now = Timestamp::now();
    let since = parse_when(since, now).context("--since")?;
    let until = until
        .map(|u| parse_when(u, now))
        .transpose()
        .context("--until")?;
    let outbox = Outbox::open_existing(&config.outbox_path())?;
    let roles = roles(config);
    let mut sink: Box<dyn Write> = match output {
        Some(p) => Box::new(std::io::BufWriter::new(
            std::fs::File::create(p).with_context(|| format!("cannot create {}", p.display()))?,
        )),
        None => Box::new(std::io::BufWriter::new(std::io::stdout().lock())),
    };
    let n = match format {
        ExportFormat::Csv => {
            let mut w = csv::Writer::from_writer(&mut sink);
            w.write_record(csv_header(&roles))?;
            let n = outbox.for_each_in_window(Some(since), until, |s| {
                w.write_record(csv_row(s, &roles))?;
                Ok(())
            })?;
            w.flush()?;
            n
        }
        ExportFormat::Jsonl => outbox.for_each_in_window(Some(since), until, |s| {
            serde_json::to_writer(&mut sink, &sample_json(s))?;
            sink.write_all(b"\n")?;
            Ok(())
        })?,
    };
    sink.flush().context("writing the export")?;
    tracing::info!(samples = n, since = %since, until = ?until.map(|u| u.to_string()), "exported");
    Ok(ExitCode::SUCCESS)
}

/// The CSV header: `taken_at, device_id, source, <roles…>, effectiveness,
/// hot_effectiveness, cold_effectiveness, lmtd_k, <role>_quality, <role>_reason…, sample_id`.
pub fn csv_header(roles: &[String]) -> Vec<String> {
    let mut h: Vec<String> = ["taken_at", "device_id", "source"]
        .map(String::from)
        .to_vec();
    h.extend(roles.iter().cloned());
    h.extend(
        [
            "effectiveness",
            "hot_effectiveness",
            "cold_effectiveness",
            "lmtd_k",
        ]
        .map(String::from),
    );
    for r in roles {
        h.push(format!("{r}_quality"));
        h.push(format!("{r}_reason"));
    }
    h.push("sample_id".into());
    h
}

/// One CSV row. A missing reading is an empty cell with its quality and reason
/// beside it; an undefined figure is an empty cell.
pub fn csv_row(s: &Stored, roles: &[String]) -> Vec<String> {
    let s = &s.sample;
    let num = |v: Option<f64>| v.map(|v| v.to_string()).unwrap_or_default();
    let mut row = vec![
        s.taken_at.to_string(),
        s.device_id.clone(),
        s.source.to_string(),
    ];
    for r in roles {
        row.push(num(s.celsius(r)));
    }
    let e = &s.efficiency;
    row.extend(
        [
            e.effectiveness,
            e.hot_effectiveness,
            e.cold_effectiveness,
            e.lmtd,
        ]
        .map(num),
    );
    for r in roles {
        match s.reading(r) {
            Some(reading) => {
                row.push(reading.quality.to_string());
                row.push(reading.reason.clone().unwrap_or_default());
            }
            None => {
                row.push("unmapped".into());
                row.push(format!("no {r} reading in this sample"));
            }
        }
    }
    row.push(s.id.to_string());
    row
}

/// One sample as a JSON object (export's JSON lines, `hxlog sample --json`).
pub fn sample_json(s: &Stored) -> Value {
    let x = &s.sample;
    let readings: Vec<Value> = x
        .readings
        .iter()
        .map(|r| {
            json!({
                "role": r.role,
                "sensor_id": r.sensor_id,
                "celsius": r.celsius,
                "quality": r.quality,
                "reason": r.reason,
            })
        })
        .collect();
    json!({
        "id": x.id.to_string(),
        "seq": s.seq,
        "device_id": x.device_id,
        "taken_at": x.taken_at.to_string(),
        "source": x.source,
        "mock": x.source == crate::sample::Source::Mock,
        "readings": readings,
        "efficiency": x.efficiency,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sample::{Quality, Reading, Sample, Source};

    #[test]
    fn missing_readings_are_empty_cells_with_a_reason() {
        let s = Stored {
            seq: 1,
            sample: Sample::new(
                "hx",
                Timestamp::from_second(1_800_000_000).unwrap(),
                Source::W1,
                vec![
                    Reading::ok("T1", Some("28-1".into()), 85.0),
                    Reading::missing(
                        "T2",
                        Some("28-2".into()),
                        Quality::PowerOnReset,
                        "85 °C power-on value",
                    ),
                ],
            ),
        };
        let roles: Vec<String> = ["T1", "T2"].map(String::from).to_vec();
        let h = csv_header(&roles);
        let row = csv_row(&s, &roles);
        let col = |name: &str| row[h.iter().position(|c| c == name).unwrap()].clone();
        assert_eq!(col("T1"), "85");
        assert_eq!(col("T2"), "");
        assert_eq!(col("T2_quality"), "power_on_reset");
        assert_eq!(col("T2_reason"), "85 °C power-on value");
        assert_eq!(col("effectiveness"), "");
        assert_eq!(col("taken_at"), "2027-01-15T08:00:00Z");
        assert_eq!(col("source"), "w1");
    }
}

//! `hxlog export`: the samples of a window as CSV or JSON lines, oldest first.

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use jiff::Timestamp;

use super::roles;
use crate::cli::ExportFormat;
use crate::config::Config;
use crate::outbox::Outbox;
use crate::output::{csv_header, csv_row, sample_json};
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

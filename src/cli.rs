//! The command line (clap types only; no I/O).

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

use crate::sinks::SinkName;

/// hxlog: a store-and-forward data logger for heat exchangers.
///
/// Samples four DS18B20 sensors (T1 hot inlet, T2 hot outlet, T3 cold inlet,
/// T4 cold outlet), writes every sample to a local SQLite outbox first, and
/// forwards it to PostgreSQL and Azure Web PubSub with retries.
#[derive(Debug, Parser)]
#[command(name = "hxlog", version, about, long_about)]
pub struct Cli {
    /// Config file (JSON). Default: /etc/hxlog/hxlog.json if it exists, else built-in defaults
    #[arg(long, global = true, env = "HXLOG_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Log line format on stderr
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// What to do
    #[command(subcommand)]
    pub command: Command,
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines
    Text,
    /// One JSON object per line
    Json,
}

/// Output format of `export`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ExportFormat {
    /// Comma-separated values with a header row
    Csv,
    /// One JSON object per line
    Jsonl,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Sample every interval and forward to the configured sinks until stopped (the systemd service)
    Run,
    /// Take exactly one sample, write it to the outbox, print it, exit (for a systemd timer)
    Sample {
        /// Print the sample as JSON
        #[arg(long)]
        json: bool,
    },
    /// Write the samples of a time window as CSV or JSON lines, oldest first
    Export {
        /// Start of the window: RFC 3339 with an offset (2026-11-01T07:30:00Z or +01:00), a date (UTC midnight) or a duration before now (90m, 24h, 7d); a date-time without an offset is refused
        #[arg(long, value_name = "WHEN")]
        since: String,
        /// End of the window (exclusive), same forms as --since; default now
        #[arg(long, value_name = "WHEN")]
        until: Option<String>,
        /// Output format
        #[arg(long, value_enum, default_value_t = ExportFormat::Csv)]
        format: ExportFormat,
        /// Write to FILE instead of stdout
        #[arg(short = 'o', long, value_name = "FILE")]
        output: Option<PathBuf>,
    },
    /// Forward everything pending to every configured sink now and exit when drained;
    /// with --since, re-send already delivered samples of a window (no duplicates)
    Replay {
        /// Re-send samples taken since WHEN: RFC 3339 with an offset (2026-11-01T07:30:00Z or +01:00), a date (UTC midnight), or a duration before now (7d); a date-time without an offset is refused
        #[arg(long, value_name = "WHEN")]
        since: Option<String>,
        /// End of the re-send window (exclusive)
        #[arg(long, value_name = "WHEN", requires = "since")]
        until: Option<String>,
        /// Only this sink
        #[arg(long, value_enum)]
        sink: Option<SinkName>,
        /// Give up after this long without a successful delivery (e.g. 2m)
        #[arg(long, value_name = "DURATION", default_value = "2m")]
        give_up_after: String,
        /// Start --sink from now: mark every sample stored so far as handled for
        /// it, without sending them (they stay in the outbox for export and
        /// --since). A new sink otherwise starts from the oldest stored sample
        #[arg(long, requires = "sink", conflicts_with = "since")]
        skip_to_now: bool,
    },
    /// Serve the read-only dashboard, /metrics, /healthz and /api from the outbox
    /// without sampling (timer mode; `run` serves them itself when http_listen is set)
    Serve {
        /// Address to listen on, e.g. 127.0.0.1:9108 (default: http_listen from the config)
        #[arg(long, value_name = "ADDR")]
        listen: Option<String>,
    },
    /// Show the outbox, delivery state per sink and sensor health
    Status {
        /// Machine-readable JSON
        #[arg(long)]
        json: bool,
    },
    /// List the 1-Wire temperature sensors on the bus with a current reading
    Sensors {
        /// Machine-readable JSON
        #[arg(long)]
        json: bool,
    },
    /// Write N simulated samples ending now, marked as mock (demos, backfill and benchmarks)
    Simulate {
        /// Number of samples
        #[arg(long)]
        count: u64,
        /// Spacing between samples
        #[arg(long, default_value = "30s")]
        interval: String,
    },
    /// Create or update the PostgreSQL schema (also done automatically on first connect)
    Migrate,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }
}

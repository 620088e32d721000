//! Log set-up: human-readable or JSON lines on stderr (journald picks them up),
//! level from `RUST_LOG` or the config, and an optional log file that is
//! reopened when logrotate moves it away.
//!
//! Secrets never reach a log: every secret is a [`crate::config::Secret`],
//! whose `Debug`/`Display` print `<redacted>`.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::prelude::*;

use crate::cli::LogFormat;

/// Installs the global subscriber. `default_level` applies when `RUST_LOG` is unset.
pub fn init(format: LogFormat, default_level: &str, file: Option<&Path>) -> anyhow::Result<()> {
    let filter = || {
        EnvFilter::try_from_default_env()
            .or_else(|_| EnvFilter::try_new(default_level))
            .unwrap_or_else(|_| EnvFilter::new("info"))
    };
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let stderr_layer = match format {
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_writer(io::stderr)
            .with_ansi(ansi)
            .with_target(false)
            .with_filter(filter())
            .boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .with_writer(io::stderr)
            .with_filter(filter())
            .boxed(),
    };
    let file_layer = match file {
        Some(path) => {
            let writer = ReopeningFile::open(path)?;
            Some(
                tracing_subscriber::fmt::layer()
                    .with_writer(writer)
                    .with_ansi(false)
                    .with_target(false)
                    .with_filter(filter())
                    .boxed(),
            )
        }
        None => None,
    };
    tracing_subscriber::registry()
        .with(stderr_layer)
        .with(file_layer)
        .try_init()
        .map_err(|e| anyhow::anyhow!("cannot set up logging: {e}"))
}

/// An append-only log file that reopens itself when the path now names a
/// different file (moved by logrotate) or none.
#[derive(Clone)]
pub struct ReopeningFile {
    path: PathBuf,
    inner: Arc<Mutex<(File, u64, u64)>>,
}

impl ReopeningFile {
    /// Opens (creating) `path` for appending.
    pub fn open(path: &Path) -> anyhow::Result<Self> {
        let (file, dev, ino) = open_append(path).map_err(|e| {
            anyhow::anyhow!("cannot open log file {}: {e}; create it writable for this user or remove log_file from the config", path.display())
        })?;
        Ok(ReopeningFile {
            path: path.to_path_buf(),
            inner: Arc::new(Mutex::new((file, dev, ino))),
        })
    }
}

fn open_append(path: &Path) -> io::Result<(File, u64, u64)> {
    let f = OpenOptions::new().create(true).append(true).open(path)?;
    let m = f.metadata()?;
    Ok((f, m.dev(), m.ino()))
}

/// One log event's writer.
pub struct ReopeningWriter<'a>(&'a ReopeningFile);

impl Write for ReopeningWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut g = self.0.inner.lock().unwrap_or_else(|p| p.into_inner());
        let moved = match std::fs::metadata(&self.0.path) {
            Ok(m) => m.dev() != g.1 || m.ino() != g.2,
            Err(_) => true,
        };
        if moved && let Ok(fresh) = open_append(&self.0.path) {
            *g = fresh;
        }
        g.0.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        let mut g = self.0.inner.lock().unwrap_or_else(|p| p.into_inner());
        g.0.flush()
    }
}

impl<'a> MakeWriter<'a> for ReopeningFile {
    type Writer = ReopeningWriter<'a>;
    fn make_writer(&'a self) -> Self::Writer {
        ReopeningWriter(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reopens_after_rotation() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hxlog.log");
        let f = ReopeningFile::open(&path).unwrap();
        f.make_writer().write_all(b"one\n").unwrap();
        std::fs::rename(&path, dir.path().join("hxlog.log.1")).unwrap();
        f.make_writer().write_all(b"two\n").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "two\n");
        assert_eq!(
            std::fs::read_to_string(dir.path().join("hxlog.log.1")).unwrap(),
            "one\n"
        );
    }
}

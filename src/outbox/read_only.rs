//! Read-only access for the HTTP endpoints and `status`: a connection that
//! cannot write (opened read-only, `query_only` on), and the bounded queries
//! the dashboard and `/metrics` need. Opening one per request is cheap; a
//! reader never blocks the sampler (WAL).

use std::path::Path;

use anyhow::{Context, bail};
use jiff::Timestamp;
use rusqlite::{Connection, OpenFlags, params};

use super::{COLUMNS, MIGRATIONS, Outbox, Stored, check_header, decode_row};

/// Failures recorded for one sink and class.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorCount {
    /// Sink name.
    pub sink: String,
    /// `transient`, `permanent` or `rejected`.
    pub class: String,
    /// How many.
    pub count: u64,
}

impl Outbox {
    /// Opens an existing outbox that this connection can never write to.
    /// Refuses an outbox whose schema is older or newer than this hxlog's
    /// (only a writer migrates: `hxlog run` or `hxlog sample`).
    pub fn open_read_only(path: &Path) -> anyhow::Result<Outbox> {
        if !path.exists() {
            bail!(
                "no outbox at {} yet; take a sample first (hxlog sample) or check data_dir in the config",
                path.display()
            );
        }
        check_header(path)?;
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .with_context(|| format!("cannot open the outbox {} read-only", path.display()))?;
        conn.busy_timeout(std::time::Duration::from_secs(2))?;
        conn.pragma_update(None, "query_only", true)?;
        let version: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .with_context(|| format!("outbox {} is not readable", path.display()))?;
        if version as usize != MIGRATIONS.len() {
            bail!(
                "outbox {} has schema version {version} and this hxlog reads version {}; \
                 run the matching hxlog (hxlog run or hxlog sample migrates it)",
                path.display(),
                MIGRATIONS.len()
            );
        }
        let mut outbox = Outbox {
            conn,
            path: path.to_path_buf(),
            outbox_id: String::new(),
            sync: crate::config::Synchronous::Full,
            journal: None,
            fold_failing: false,
        };
        outbox.outbox_id = outbox.read_outbox_id()?;
        Ok(outbox)
    }

    /// `taken_at` of the newest `n` samples (by seq), newest first.
    pub fn recent_times(&self, n: usize) -> anyhow::Result<Vec<Timestamp>> {
        Ok(self
            .recent(n)?
            .into_iter()
            .map(|s| s.sample.taken_at)
            .collect())
    }

    /// The newest `n` samples (by seq), newest first: the journal's, then
    /// SQLite's.
    pub fn recent(&self, n: usize) -> anyhow::Result<Vec<Stored>> {
        let (tail, hwm) = self.tail()?;
        let mut out: Vec<Stored> = tail.into_iter().rev().take(n).collect();
        let mut stmt = self.conn.prepare_cached(&format!(
            "SELECT {COLUMNS} FROM samples WHERE seq <= ?1 ORDER BY seq DESC LIMIT ?2"
        ))?;
        let rows = stmt.query_map(params![hwm, (n - out.len()) as i64], decode_row)?;
        for r in rows {
            out.push(r?);
        }
        Ok(out)
    }

    /// The highest seq ever given to a sample (0 when none): it never
    /// decreases, pruning included.
    pub fn max_seq(&self) -> anyhow::Result<i64> {
        let (tail, hwm) = self.tail()?;
        Ok(tail.last().map_or(hwm, |s| s.seq))
    }

    /// Up to `limit` samples with a seq above `seq`, in seq order.
    pub fn after_seq(&self, seq: i64, limit: usize) -> anyhow::Result<Vec<Stored>> {
        let (tail, hwm) = self.tail()?;
        let mut out = self.seq_range(seq, hwm, limit)?;
        let room = limit - out.len();
        out.extend(tail.into_iter().filter(|s| s.seq > seq).take(room));
        Ok(out)
    }

    /// Samples taken in `[since, until)` and whether any of them is mock.
    pub fn count_in(&self, since: Timestamp, until: Timestamp) -> anyhow::Result<(u64, bool)> {
        let (tail, hwm) = self.tail()?;
        let (n, mock): (i64, i64) = self.conn.query_row(
            "SELECT count(*), coalesce(max(source = 'mock'), 0) FROM samples \
             WHERE taken_at_us >= ?1 AND taken_at_us < ?2 AND seq <= ?3",
            params![since.as_microsecond(), until.as_microsecond(), hwm],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        let inside: Vec<&Stored> = tail
            .iter()
            .filter(|s| s.sample.taken_at >= since && s.sample.taken_at < until)
            .collect();
        let mock = mock != 0
            || inside
                .iter()
                .any(|s| s.sample.source == crate::sample::Source::Mock);
        Ok((n as u64 + inside.len() as u64, mock))
    }

    /// Failures recorded per sink and class.
    pub fn error_counts(&self) -> anyhow::Result<Vec<ErrorCount>> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT sink, class, count FROM sink_errors ORDER BY sink, class")?;
        let rows = stmt.query_map([], |r| {
            Ok(ErrorCount {
                sink: r.get(0)?,
                class: r.get(1)?,
                count: r.get::<_, i64>(2)? as u64,
            })
        })?;
        rows.map(|r| r.map_err(anyhow::Error::from)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Synchronous;

    #[test]
    fn a_read_only_outbox_refuses_every_write() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("outbox.sqlite");
        let mut rw = Outbox::open(&path, Synchronous::Full).unwrap();
        rw.register_sinks(&["postgres"]).unwrap();
        let mut ro = Outbox::open_read_only(&path).unwrap();
        assert!(ro.register_sinks(&["webpubsub"]).is_err());
        assert!(
            ro.record_failure("postgres", "transient", "x", None)
                .is_err()
        );
        assert_eq!(ro.known_sinks().unwrap(), vec!["postgres".to_string()]);
    }

    #[test]
    fn a_missing_outbox_is_not_created_read_only() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("outbox.sqlite");
        let err = Outbox::open_read_only(&path).unwrap_err().to_string();
        assert!(err.contains("no outbox"), "{err}");
        assert!(!path.exists());
    }
}

//! The outbox: the local SQLite file every sample is committed to before it is
//! reported as taken, and the per-sink delivery state the forwarder keeps.
//!
//! Architecture invariant: this is the only module that uses rusqlite. It knows
//! nothing of any sink's protocol; a sink is just a name with a cursor.
//!
//! Schema: `schema/sqlite/NNNN_*.sql`, applied in order in one exclusive
//! transaction keyed on `PRAGMA user_version`. A shipped migration is never
//! edited or removed.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::{Context, bail};
use jiff::Timestamp;
use rusqlite::{Connection, OpenFlags, OptionalExtension, params};
use uuid::Uuid;

use crate::clock::Anchor;
use crate::config::Synchronous;
use crate::efficiency::Efficiency;
use crate::sample::{ClockStamp, ClockState, Reading, Sample, Source};

pub mod alarms;
pub mod journal;
pub mod lock;
pub mod read_only;

/// The migrations, in order; index + 1 is the `user_version` after applying.
const MIGRATIONS: &[(&str, &str)] = &[
    (
        "0001_outbox.sql",
        include_str!("../../schema/sqlite/0001_outbox.sql"),
    ),
    (
        "0002_clock.sql",
        include_str!("../../schema/sqlite/0002_clock.sql"),
    ),
    (
        "0003_alarms.sql",
        include_str!("../../schema/sqlite/0003_alarms.sql"),
    ),
];

/// Page size of a new outbox, in bytes (see [`Outbox::open`]).
pub const PAGE_SIZE: i64 = 1024;

/// A sample as stored, with its position in the outbox.
#[derive(Debug, Clone, PartialEq)]
pub struct Stored {
    /// Local, strictly increasing sequence number (never reused).
    pub seq: i64,
    /// The sample.
    pub sample: Sample,
}

/// Delivery state of one sink.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct SinkState {
    /// Sink name (`postgres`, `webpubsub`).
    pub name: String,
    /// Samples not yet delivered.
    pub pending: u64,
    /// When the oldest pending sample was taken.
    pub oldest_pending: Option<Timestamp>,
    /// Every sample up to this seq is delivered.
    pub delivered_seq: i64,
    /// Samples delivered so far (including re-sends by `replay --since`).
    pub delivered_count: u64,
    /// Last successful delivery.
    pub last_success: Option<Timestamp>,
    /// Last error message (kept after recovery, see `last_error_at`).
    pub last_error: Option<String>,
    /// `transient`, `permanent` or `rejected`.
    pub last_error_class: Option<String>,
    /// When the last error happened.
    pub last_error_at: Option<Timestamp>,
    /// The forwarder waits until then before the next attempt.
    pub backoff_until: Option<Timestamp>,
    /// Samples the sink refused outright.
    pub rejected_count: u64,
}

/// Summary for `hxlog status`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct OutboxStatus {
    /// The outbox file.
    pub path: PathBuf,
    /// This outbox's random id (created once).
    pub outbox_id: String,
    /// Samples stored.
    pub samples: u64,
    /// Of which simulated.
    pub mock_samples: u64,
    /// Oldest stored sample.
    pub oldest: Option<Timestamp>,
    /// Newest stored sample.
    pub newest: Option<Timestamp>,
    /// Samples taken before the clock was synchronised and not corrected (yet).
    pub unsynced_samples: u64,
    /// Samples whose `taken_at` was corrected after the clock synchronised.
    pub corrected_samples: u64,
    /// Per-sink delivery state.
    pub sinks: Vec<SinkState>,
}

/// Which pending samples a forwarder holds back: the `unsynced` samples of
/// the current boot taken after `boottime_after_us` (they may still be
/// corrected), and every sample after the first of them (delivery follows seq).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hold {
    /// The current boot.
    pub boot_id: String,
    /// Samples taken (in boottime) at or before this are no longer held.
    pub boottime_after_us: i64,
}

impl Hold {
    /// Whether `s` is held back (the same rule as the SQL of
    /// [`Outbox::pending_held`]).
    fn holds(&self, s: &Sample) -> bool {
        s.clock.state == ClockState::Unsynced
            && s.clock.boot_id.as_deref() == Some(self.boot_id.as_str())
            && s.clock
                .boottime_us
                .is_some_and(|b| b > self.boottime_after_us)
    }
}

/// What [`Outbox::skip_to_newest`] skipped for a sink.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Skipped {
    /// Samples that were pending.
    pub samples: u64,
    /// Alarm events that were pending.
    pub alarm_events: u64,
}

/// The anchor kept for one boot, and when it was first seen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredAnchor {
    /// Wall = boottime + offset for the boot.
    pub anchor: Anchor,
    /// The (synchronised) wall time of the first synchronised observation.
    pub synced_at: Timestamp,
}

/// A connection to the outbox file (and, for reading, its sample journal).
pub struct Outbox {
    conn: Connection,
    path: PathBuf,
    /// This outbox's id: the journal must carry the same.
    outbox_id: String,
    sync: Synchronous,
    /// The journal's writer, once this connection took or folded samples
    /// (only under the sampler lock).
    journal: Option<journal::Writer>,
    /// The last fold failed (logged once until one succeeds).
    fold_failing: bool,
}

impl std::fmt::Debug for Outbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outbox").field("path", &self.path).finish()
    }
}

const SQLITE_MAGIC: &[u8; 16] = b"SQLite format 3\0";

fn corrupt_hint(path: &Path) -> String {
    format!(
        "the file was left untouched; move it aside (mv {p} {p}.bad) to let hxlog start a new outbox \
         (the newest samples, still in {p}.journal, go into the new one), \
         and recover its samples with `sqlite3 {p}.bad .recover` if needed",
        p = path.display()
    )
}

impl Outbox {
    /// Opens the outbox at `path`, creating it (and its folder) if absent, and
    /// applies pending migrations. A file that is not an hxlog outbox is an
    /// error and is never modified.
    pub fn open(path: &Path, sync: Synchronous) -> anyhow::Result<Outbox> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).with_context(|| {
                format!("cannot create the data folder {}; set data_dir in the config to a writable folder", dir.display())
            })?;
        }
        Self::open_inner(path, sync, true)
    }

    /// Opens an existing outbox (for `status`, `export`, `replay`); errors if
    /// there is none yet.
    pub fn open_existing(path: &Path) -> anyhow::Result<Outbox> {
        if !path.exists() {
            bail!(
                "no outbox at {} yet; take a sample first (hxlog sample) or check data_dir in the config",
                path.display()
            );
        }
        Self::open_inner(path, Synchronous::Full, false)
    }

    fn open_inner(path: &Path, sync: Synchronous, create: bool) -> anyhow::Result<Outbox> {
        check_header(path)?;
        let mut flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        if create {
            flags |= OpenFlags::SQLITE_OPEN_CREATE;
        }
        let conn = Connection::open_with_flags(path, flags)
            .with_context(|| format!("cannot open the outbox {}", path.display()))?;
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        // Validate before anything can write: a damaged header fails here.
        let version: i64 = conn
            .query_row("SELECT count(*) FROM sqlite_schema", [], |_| Ok(()))
            .and_then(|_| conn.query_row("PRAGMA user_version", [], |r| r.get(0)))
            .map_err(|e| {
                anyhow::anyhow!(
                    "outbox {} is not a readable SQLite database ({e}); {}",
                    path.display(),
                    corrupt_hint(path)
                )
            })?;
        if version as usize > MIGRATIONS.len() {
            bail!(
                "outbox {} has schema version {version}, newer than this hxlog understands ({}); upgrade hxlog",
                path.display(),
                MIGRATIONS.len()
            );
        }
        if version == 0 {
            let tables: i64 =
                conn.query_row("SELECT count(*) FROM sqlite_schema", [], |r| r.get(0))?;
            if tables > 0 {
                bail!(
                    "{} is an SQLite database but not an hxlog outbox (it has tables and no hxlog schema version); {}",
                    path.display(),
                    corrupt_hint(path)
                );
            }
        }
        if version == 0 {
            // A new file: small pages, set before the first table exists (an
            // existing outbox keeps its page size). Each commit appends every
            // page it changed to the WAL, and a sample changes about four
            // (table, two indexes, sqlite_sequence): 1 KiB pages make that
            // ~4 KiB per sample instead of ~16 KiB. A row (~400 bytes) still
            // fits a page.
            conn.pragma_update(None, "page_size", PAGE_SIZE)?;
        }
        // The last connection to close must not checkpoint: in timer mode
        // every `hxlog sample` and `hxlog replay` is the last one, and a
        // checkpoint (and a new WAL) per process costs far more writes than
        // the sample. The WAL stays and is checkpointed by size
        // (`wal_autocheckpoint`), as in `hxlog run`.
        conn.set_db_config(
            rusqlite::config::DbConfig::SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE,
            true,
        )?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .with_context(|| format!("cannot switch the outbox {} to WAL mode", path.display()))?;
        conn.pragma_update(
            None,
            "synchronous",
            match sync {
                Synchronous::Full => "FULL",
                Synchronous::Normal => "NORMAL",
            },
        )?;
        let mut outbox = Outbox {
            conn,
            path: path.to_path_buf(),
            outbox_id: String::new(),
            sync,
            journal: None,
            fold_failing: false,
        };
        outbox.migrate(version as usize)?;
        outbox.outbox_id = outbox.read_outbox_id()?;
        Ok(outbox)
    }

    fn migrate(&mut self, from: usize) -> anyhow::Result<()> {
        if from == MIGRATIONS.len() {
            return Ok(());
        }
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Exclusive)?;
        // Re-read under the lock: another process may have migrated meanwhile.
        let current: i64 = tx.query_row("PRAGMA user_version", [], |r| r.get(0))?;
        for (i, (name, sql)) in MIGRATIONS.iter().enumerate().skip(current as usize) {
            tx.execute_batch(sql)
                .with_context(|| format!("applying outbox migration {name}"))?;
            tx.pragma_update(None, "user_version", (i + 1) as i64)?;
        }
        tx.execute(
            "INSERT OR IGNORE INTO outbox_meta (key, value) VALUES ('outbox_id', ?1), ('created_at', ?2)",
            params![Uuid::now_v7().to_string(), Timestamp::now().to_string()],
        )?;
        tx.commit()
            .with_context(|| format!("committing migrations of {}", self.path.display()))?;
        Ok(())
    }

    /// The outbox file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn read_outbox_id(&self) -> anyhow::Result<String> {
        Ok(self
            .conn
            .query_row(
                "SELECT value FROM outbox_meta WHERE key = 'outbox_id'",
                [],
                |r| r.get(0),
            )
            .optional()?
            .unwrap_or_default())
    }

    /// Takes `samples`: journals them (fdatasynced unless `sqlite_synchronous`
    /// is `normal`), which is the commit that makes them durable, and returns
    /// the last one's seq. Every [`journal::FOLD_RECORDS`] samples the journal
    /// is folded into SQLite; a fold that fails is logged and retried at the
    /// next sample (the samples are safe in the journal meanwhile). Only
    /// under the sampler lock.
    pub fn take(&mut self, samples: &[Sample]) -> anyhow::Result<i64> {
        let last = self.writer()?.append(samples)?;
        if self.journal.as_ref().is_some_and(|w| w.should_fold()) {
            match self.fold() {
                Ok(_) if self.fold_failing => {
                    self.fold_failing = false;
                    tracing::info!("folded the sample journal into the outbox again");
                }
                Ok(_) => {}
                Err(e) if !self.fold_failing => {
                    self.fold_failing = true;
                    tracing::warn!(error = %format!("{e:#}"), journal = %journal::path_for(&self.path).display(),
                        "cannot fold the sample journal into the outbox (disk full?); the samples stay in the journal, which grows while there is room, and the fold is retried at every sample");
                }
                Err(_) => {}
            }
        }
        Ok(last)
    }

    /// The journal's writer, opened (and its content checked) on first use.
    fn writer(&mut self) -> anyhow::Result<&mut journal::Writer> {
        if self.journal.is_none() {
            let path = journal::path_for(&self.path);
            let hwm = self.hwm()?;
            let (w, scan) =
                journal::Writer::open(&path, &self.outbox_id, hwm, self.sync == Synchronous::Full)?;
            for (offset, bytes) in &scan.damaged {
                tracing::error!(journal = %path.display(), offset, bytes,
                    "the sample journal has an unreadable record (damaged storage?): the samples in it are lost; the others are kept");
            }
            self.journal = Some(w);
            // A seq a sink acknowledged (or refused) is never given again,
            // even when its sample is gone: records lost in a power cut with
            // sqlite_synchronous = normal, whose acks reached the disk.
            let floor: i64 = self.conn.query_row(
                "SELECT max(coalesce((SELECT max(delivered_seq) FROM sinks), 0), \
                 coalesce((SELECT max(seq) FROM rejected), 0))",
                [],
                |r| r.get(0),
            )?;
            let last = self.journal.as_ref().map_or(0, |w| w.last_seq());
            if floor > last {
                tracing::warn!(journal = %path.display(), acknowledged = floor, last_known = last,
                    "sinks acknowledged samples that are neither in the outbox nor in its journal (lost in a power cut with sqlite_synchronous = normal?); numbering goes on after them");
                self.fold()?;
                self.raise_hwm(floor)?;
                if let Some(w) = self.journal.as_mut() {
                    w.skip_past(floor);
                }
            }
        }
        Ok(self.journal.as_mut().expect("opened above"))
    }

    /// Raises SQLite's high-water mark (`sqlite_sequence`) to `seq`: readers
    /// then take every journal record at or below it as folded.
    fn raise_hwm(&self, seq: i64) -> anyhow::Result<()> {
        if seq <= 0 {
            return Ok(());
        }
        if self.conn.execute(
            "UPDATE sqlite_sequence SET seq = max(seq, ?1) WHERE name = 'samples'",
            [seq],
        )? == 0
        {
            self.conn.execute(
                "INSERT INTO sqlite_sequence (name, seq) VALUES ('samples', ?1)",
                [seq],
            )?;
        }
        Ok(())
    }

    /// Moves the journal's samples into SQLite (one transaction, fsynced
    /// whatever `sqlite_synchronous` says: the journal is then started over)
    /// and returns how many. Only under the sampler lock.
    pub fn fold(&mut self) -> anyhow::Result<usize> {
        let (first, last) = {
            let w = self.writer()?;
            (w.round_first(), w.last_seq())
        };
        let (tail, _) = self.tail()?;
        if !tail.is_empty() {
            self.conn.pragma_update(None, "synchronous", "FULL")?;
            let result = (|| {
                let tx = self.conn.transaction()?;
                {
                    let mut stmt = tx.prepare_cached(FOLD_SQL)?;
                    for s in &tail {
                        let mut values = row_values(&s.sample)?;
                        values.push(s.seq.into());
                        stmt.execute(rusqlite::params_from_iter(values))?;
                    }
                }
                // the next record's seq is then the high-water mark + 1,
                // even if a record of the round could not be read back
                tx.execute(
                    "UPDATE sqlite_sequence SET seq = max(seq, ?1) WHERE name = 'samples'",
                    [last],
                )?;
                tx.commit()?;
                anyhow::Ok(())
            })();
            if self.sync == Synchronous::Normal {
                self.conn.pragma_update(None, "synchronous", "NORMAL")?;
            }
            result.with_context(|| {
                format!("folding the sample journal into {}", self.path.display())
            })?;
        }
        // Every sample this writer journaled in the round must be in SQLite
        // now; one that is not was unreadable (damaged storage). Said, and the
        // journal kept aside for a post-mortem, before it is started over.
        if let Some(first) = first {
            let stored: i64 = self.conn.query_row(
                "SELECT count(*) FROM samples WHERE seq BETWEEN ?1 AND ?2",
                [first, last],
                |r| r.get(0),
            )?;
            let lost = last - first + 1 - stored;
            if lost > 0 {
                let path = journal::path_for(&self.path);
                let aside = PathBuf::from(format!(
                    "{}.{}.damaged",
                    path.display(),
                    Timestamp::now().as_second()
                ));
                let copied = std::fs::copy(&path, &aside).is_ok();
                tracing::error!(journal = %path.display(), lost, first, last, kept_as = %aside.display(), copied,
                    "samples journaled in this round could not be read back from the journal (damaged storage?): they are lost");
            }
        }
        if self.hwm()? < last {
            self.raise_hwm(last)?;
        }
        if let Some(w) = self.journal.as_mut() {
            w.reset();
        }
        Ok(tail.len())
    }

    /// Copies the WAL into the outbox file and empties it, if no other
    /// connection is using it at this moment (never waits); returns whether it
    /// did. A process that opens the outbox when nobody else has it open
    /// rebuilds the WAL index from the whole WAL, which in timer mode costs more
    /// writes than the sample: after `replay`, the next `sample` finds it empty.
    pub fn checkpoint_if_idle(&self) -> bool {
        let _ = self.conn.busy_timeout(std::time::Duration::ZERO);
        let done = self
            .conn
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| {
                r.get::<_, i64>(0)
            })
            .is_ok_and(|busy| busy == 0);
        let _ = self.conn.busy_timeout(std::time::Duration::from_secs(10));
        done
    }

    /// The highest seq SQLite ever gave or was given (0 when none); it never
    /// decreases, pruning included.
    fn hwm(&self) -> anyhow::Result<i64> {
        let seq: Option<i64> = self
            .conn
            .query_row(
                "SELECT seq FROM sqlite_sequence WHERE name = 'samples'",
                [],
                |r| r.get(0),
            )
            .optional()?;
        Ok(seq.unwrap_or(0))
    }

    /// The journal's samples that are not in SQLite yet (seq order), and the
    /// high-water mark of SQLite read after the journal. A reader asks SQLite
    /// only for seqs up to that mark: a fold between the two reads then
    /// shows each sample once, never twice or not at all.
    ///
    /// The journal's samples follow the mark without a gap; a read that
    /// shows a gap met an append or a restart of the journal mid-way (the
    /// kernel copies a file page by page), and is done again. A gap that
    /// stays is a damaged record, taken as it is after three reads.
    fn tail(&self) -> anyhow::Result<(Vec<Stored>, i64)> {
        let path = journal::path_for(&self.path);
        let mut attempt = 0;
        loop {
            let scan = journal::read(&path, &self.outbox_id)?;
            let hwm = self.hwm()?;
            let tail: Vec<Stored> = scan.records.into_iter().filter(|s| s.seq > hwm).collect();
            let whole = tail.iter().zip(hwm + 1..).all(|(s, want)| s.seq == want);
            attempt += 1;
            if whole || attempt == 3 {
                return Ok((tail, hwm));
            }
        }
    }

    /// A sink's cursor: every sample up to it is delivered.
    fn cursor(&self, sink: &str) -> anyhow::Result<i64> {
        Ok(self
            .conn
            .query_row(
                "SELECT delivered_seq FROM sinks WHERE name = ?1",
                [sink],
                |r| r.get(0),
            )
            .optional()?
            .unwrap_or(0))
    }

    /// Commits one sample directly to SQLite (after folding any journal) and
    /// returns its seq. Tests and imports; the sampler uses [`Outbox::take`].
    pub fn insert(&mut self, sample: &Sample) -> anyhow::Result<i64> {
        self.fold_before_insert()?;
        let mut stmt = self.conn.prepare_cached(INSERT_SQL)?;
        stmt.execute(rusqlite::params_from_iter(row_values(sample)?))?;
        Ok(self.conn.last_insert_rowid())
    }

    /// Commits many samples in one transaction, directly to SQLite (after
    /// folding any journal), as `simulate` does. Only under the sampler lock.
    pub fn insert_all(&mut self, samples: &[Sample]) -> anyhow::Result<()> {
        self.fold_before_insert()?;
        let tx = self.conn.transaction()?;
        {
            let mut stmt = tx.prepare_cached(INSERT_SQL)?;
            for s in samples {
                stmt.execute(rusqlite::params_from_iter(row_values(s)?))?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// Samples inserted directly get their seqs from SQLite, so the journal
    /// must be empty first, and the writer learns the new seqs by reopening.
    fn fold_before_insert(&mut self) -> anyhow::Result<()> {
        if self.journal.is_some() || journal::path_for(&self.path).exists() {
            self.fold()?;
            self.journal = None;
        }
        Ok(())
    }

    /// Makes sure a cursor row exists for each sink. A new sink starts from the
    /// oldest sample stored and the oldest alarm event kept
    /// ([`Outbox::skip_to_newest`] starts it from now).
    pub fn register_sinks(&mut self, names: &[&str]) -> anyhow::Result<()> {
        for name in names {
            self.conn
                .execute("INSERT OR IGNORE INTO sinks (name) VALUES (?1)", [name])?;
        }
        Ok(())
    }

    /// Up to `limit` samples not yet delivered to `sink`, oldest first.
    pub fn pending(&self, sink: &str, limit: usize) -> anyhow::Result<Vec<Stored>> {
        self.pending_held(sink, limit, None)
    }

    /// Like [`Outbox::pending`], but the batch ends before the first sample
    /// `hold` holds back.
    pub fn pending_held(
        &self,
        sink: &str,
        limit: usize,
        hold: Option<&Hold>,
    ) -> anyhow::Result<Vec<Stored>> {
        let cursor = self.cursor(sink)?;
        let (tail, hwm) = self.tail()?;
        // the first held sample in SQLite ends the batch there
        let first_held: Option<i64> = match hold {
            None => None,
            Some(h) => self.conn.query_row(
                "SELECT min(seq) FROM samples WHERE clock = 'unsynced' AND boot_id = ?1 \
                 AND boottime_us > ?2 AND seq > ?3 AND seq <= ?4",
                params![h.boot_id, h.boottime_after_us, cursor, hwm],
                |r| r.get(0),
            )?,
        };
        let bound = first_held.map_or(hwm, |s| s - 1);
        let mut out = self.seq_range(cursor, bound, limit)?;
        if first_held.is_none() {
            for s in tail.into_iter().filter(|s| s.seq > cursor) {
                if out.len() >= limit || hold.is_some_and(|h| h.holds(&s.sample)) {
                    break;
                }
                out.push(s);
            }
        }
        Ok(out)
    }

    /// Up to `limit` samples in SQLite with `after < seq <= up_to`, in order.
    fn seq_range(&self, after: i64, up_to: i64, limit: usize) -> anyhow::Result<Vec<Stored>> {
        let mut stmt = self.conn.prepare_cached(&format!(
            "SELECT {COLUMNS} FROM samples WHERE seq > ?1 AND seq <= ?2 ORDER BY seq LIMIT ?3"
        ))?;
        let rows = stmt.query_map(params![after, up_to, limit as i64], decode_row)?;
        rows.map(|r| r.map_err(anyhow::Error::from)).collect()
    }

    /// Records that the clock is synchronised in `anchor`'s boot and corrects
    /// every `unsynced` sample of that boot: `taken_at` = boottime + the
    /// boot's offset, the old value kept as `taken_at_raw`, `clock` =
    /// `corrected`, and a revision noted for the sinks. The first anchor of a
    /// boot is kept (a later step while synced does not move it). Returns the
    /// number of samples corrected; writes nothing when there is nothing to do.
    pub fn record_sync(&mut self, anchor: &Anchor, now: Timestamp) -> anyhow::Result<usize> {
        // the samples to correct must be in SQLite (a fold only when the
        // journal holds some: timer mode would otherwise fold every sample)
        let (tail, _) = self.tail()?;
        if tail.iter().any(|s| {
            s.sample.clock.state == ClockState::Unsynced
                && s.sample.clock.boot_id.as_deref() == Some(anchor.boot_id.as_str())
        }) {
            self.fold()?;
        }
        let known = self.anchor(&anchor.boot_id)?.is_some();
        let unsynced: bool = self.conn.query_row(
            "SELECT EXISTS (SELECT 1 FROM samples WHERE clock = 'unsynced' AND boot_id = ?1)",
            [&anchor.boot_id],
            |r| r.get(0),
        )?;
        if known && !unsynced {
            return Ok(0);
        }
        let tx = self.conn.transaction()?;
        tx.execute(
            "INSERT OR IGNORE INTO clock_anchors (boot_id, offset_us, synced_at_us) VALUES (?1, ?2, ?3)",
            params![anchor.boot_id, anchor.offset_us, now.as_microsecond()],
        )?;
        tx.execute(
            "INSERT INTO revisions (seq) SELECT seq FROM samples \
             WHERE clock = 'unsynced' AND boot_id = ?1 AND boottime_us IS NOT NULL ORDER BY seq",
            [&anchor.boot_id],
        )?;
        let n = tx.execute(
            "UPDATE samples SET taken_at_raw_us = taken_at_us, \
             taken_at_us = boottime_us + (SELECT offset_us FROM clock_anchors WHERE boot_id = ?1), \
             clock = 'corrected' \
             WHERE clock = 'unsynced' AND boot_id = ?1 AND boottime_us IS NOT NULL",
            [&anchor.boot_id],
        )?;
        tx.commit()?;
        Ok(n)
    }

    /// The anchor recorded for `boot_id`, if its clock was ever seen synced.
    pub fn anchor(&self, boot_id: &str) -> anyhow::Result<Option<StoredAnchor>> {
        let row: Option<(i64, i64)> = self
            .conn
            .query_row(
                "SELECT offset_us, synced_at_us FROM clock_anchors WHERE boot_id = ?1",
                [boot_id],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        Ok(row.and_then(|(offset_us, at)| {
            Some(StoredAnchor {
                anchor: Anchor {
                    boot_id: boot_id.to_string(),
                    offset_us,
                },
                synced_at: ts(at)?,
            })
        }))
    }

    /// Up to `limit` samples corrected after `sink` received them, in the
    /// order corrected, with the revision to pass to [`Outbox::ack_revised`]
    /// (`None` when there is nothing to resend). Revisions of samples the
    /// sink has not received yet are skipped: they go out corrected anyway.
    pub fn revised(&self, sink: &str, limit: usize) -> anyhow::Result<(Vec<Stored>, Option<i64>)> {
        let (delivered, from): (i64, i64) = self
            .conn
            .query_row(
                "SELECT delivered_seq, revised_rev FROM sinks WHERE name = ?1",
                [sink],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?
            .unwrap_or((0, 0));
        let mut stmt = self.conn.prepare_cached(
            "SELECT rev, seq FROM revisions WHERE rev > ?1 ORDER BY rev LIMIT ?2",
        )?;
        let revs: Vec<(i64, i64)> = stmt
            .query_map(params![from, limit as i64], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<rusqlite::Result<_>>()?;
        let Some(&(last, _)) = revs.last() else {
            return Ok((vec![], None));
        };
        let mut one = self
            .conn
            .prepare_cached(&format!("SELECT {COLUMNS} FROM samples WHERE seq = ?1"))?;
        let mut out = vec![];
        for (_, seq) in revs.into_iter().filter(|(_, seq)| *seq <= delivered) {
            if let Some(s) = one.query_row([seq], decode_row).optional()? {
                out.push(s);
            }
        }
        Ok((out, Some(last)))
    }

    /// Records that `sink` received every revision up to `rev`.
    pub fn ack_revised(&mut self, sink: &str, rev: i64) -> anyhow::Result<()> {
        self.conn.execute(
            "UPDATE sinks SET revised_rev = max(revised_rev, ?2) WHERE name = ?1",
            params![sink, rev],
        )?;
        Ok(())
    }

    /// Number of samples not yet delivered to `sink`.
    pub fn pending_count(&self, sink: &str) -> anyhow::Result<u64> {
        let cursor = self.cursor(sink)?;
        let (tail, hwm) = self.tail()?;
        self.pending_after(cursor, &tail, hwm)
    }

    /// Samples after `cursor`: SQLite's up to `hwm`, then `tail`'s.
    fn pending_after(&self, cursor: i64, tail: &[Stored], hwm: i64) -> anyhow::Result<u64> {
        let n: i64 = self.conn.query_row(
            "SELECT count(*) FROM samples WHERE seq > ?1 AND seq <= ?2",
            [cursor, hwm],
            |r| r.get(0),
        )?;
        Ok(n as u64 + tail.iter().filter(|s| s.seq > cursor).count() as u64)
    }

    /// Records that `sink` durably accepted every sample up to `up_to_seq`
    /// (`count` of them in this delivery).
    pub fn ack(&mut self, sink: &str, up_to_seq: i64, count: usize) -> anyhow::Result<()> {
        self.conn.execute(
            "INSERT INTO sinks (name, delivered_seq, delivered_count, last_success_us) VALUES (?1, ?2, ?3, ?4) \
             ON CONFLICT (name) DO UPDATE SET delivered_seq = max(delivered_seq, excluded.delivered_seq), \
             delivered_count = delivered_count + excluded.delivered_count, \
             last_success_us = excluded.last_success_us, backoff_until_us = NULL",
            params![sink, up_to_seq, count as i64, now_us()],
        )?;
        Ok(())
    }

    /// Moves `sink`'s cursors to the newest sample and the newest alarm event
    /// without delivering anything (a sink that should start from now);
    /// returns how many of each were pending for it. A cursor never moves back.
    pub fn skip_to_newest(&mut self, sink: &str) -> anyhow::Result<Skipped> {
        let (tail, hwm) = self.tail()?;
        let tx = self.conn.transaction()?;
        let (cursor, samples, newest, alarm_events): (i64, i64, i64, i64) = tx.query_row(
            "WITH c AS (SELECT coalesce((SELECT delivered_seq FROM sinks WHERE name = ?1), 0) AS seq) \
             SELECT (SELECT seq FROM c), \
             (SELECT count(*) FROM samples WHERE seq > (SELECT seq FROM c) AND seq <= ?2), \
             (SELECT coalesce(max(seq), 0) FROM samples WHERE seq <= ?2), \
             (SELECT count(*) FROM alarm_events WHERE seq > \
             (SELECT coalesce((SELECT alarm_seq FROM sinks WHERE name = ?1), 0)))",
            params![sink, hwm],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )?;
        let newest = tail.last().map_or(newest, |s| s.seq);
        let samples = samples as u64 + tail.iter().filter(|s| s.seq > cursor).count() as u64;
        tx.execute(
            "INSERT INTO sinks (name, delivered_seq, alarm_seq) \
             VALUES (?1, ?2, (SELECT coalesce(max(seq), 0) FROM alarm_events)) \
             ON CONFLICT (name) DO UPDATE SET delivered_seq = max(delivered_seq, excluded.delivered_seq), \
             alarm_seq = max(alarm_seq, excluded.alarm_seq)",
            params![sink, newest],
        )?;
        tx.commit()?;
        Ok(Skipped {
            samples,
            alarm_events: alarm_events as u64,
        })
    }

    /// Records a successful re-send (`replay --since`) without moving the cursor.
    pub fn note_resent(&mut self, sink: &str, count: usize) -> anyhow::Result<()> {
        self.conn.execute(
            "UPDATE sinks SET delivered_count = delivered_count + ?2, last_success_us = ?3 WHERE name = ?1",
            params![sink, count as i64, now_us()],
        )?;
        Ok(())
    }

    /// Records a failed delivery attempt and when the next one is due.
    pub fn record_failure(
        &mut self,
        sink: &str,
        class: &str,
        message: &str,
        backoff_until: Option<Timestamp>,
    ) -> anyhow::Result<()> {
        self.conn.execute(
            "INSERT INTO sinks (name, last_error, last_error_class, last_error_us, backoff_until_us) \
             VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (name) DO UPDATE SET \
             last_error = excluded.last_error, last_error_class = excluded.last_error_class, \
             last_error_us = excluded.last_error_us, backoff_until_us = excluded.backoff_until_us",
            params![sink, message, class, now_us(), backoff_until.map(|t| t.as_microsecond())],
        )?;
        self.count_error(sink, class, 1)?;
        Ok(())
    }

    fn count_error(&self, sink: &str, class: &str, n: i64) -> anyhow::Result<()> {
        self.conn
            .execute(COUNT_ERROR_SQL, params![sink, class, n])?;
        Ok(())
    }

    /// Records that `sink` refused these samples outright and moves its cursor
    /// past them, in one transaction.
    pub fn reject(&mut self, sink: &str, seqs: &[i64], reason: &str) -> anyhow::Result<()> {
        let tx = self.conn.transaction()?;
        let now = now_us();
        for seq in seqs {
            tx.execute(
                "INSERT OR REPLACE INTO rejected (sink, seq, reason, at_us) VALUES (?1, ?2, ?3, ?4)",
                params![sink, seq, reason, now],
            )?;
        }
        if let Some(max) = seqs.iter().max() {
            tx.execute(
                "INSERT INTO sinks (name, delivered_seq, rejected_count, last_error, last_error_class, last_error_us) \
                 VALUES (?1, ?2, ?3, ?4, 'rejected', ?5) ON CONFLICT (name) DO UPDATE SET \
                 delivered_seq = max(delivered_seq, excluded.delivered_seq), \
                 rejected_count = rejected_count + excluded.rejected_count, \
                 last_error = excluded.last_error, last_error_class = 'rejected', last_error_us = excluded.last_error_us",
                params![sink, max, seqs.len() as i64, reason, now],
            )?;
            tx.execute(COUNT_ERROR_SQL, params![sink, "rejected", 1])?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Up to `limit` samples taken in `[since, until)`, ordered by (taken_at, seq),
    /// strictly after the position `after` (a previous page's last `(taken_at_us, seq)`).
    pub fn window(
        &self,
        since: Option<Timestamp>,
        until: Option<Timestamp>,
        after: Option<(i64, i64)>,
        limit: usize,
    ) -> anyhow::Result<Vec<Stored>> {
        let since = since.map(|t| t.as_microsecond()).unwrap_or(i64::MIN);
        let until = until.map(|t| t.as_microsecond()).unwrap_or(i64::MAX);
        let (after_t, after_s) = after.unwrap_or((i64::MIN, i64::MIN));
        let (tail, hwm) = self.tail()?;
        let mut stmt = self.conn.prepare_cached(&format!(
            "SELECT {COLUMNS} FROM samples \
             WHERE taken_at_us >= ?1 AND taken_at_us < ?2 AND (taken_at_us, seq) > (?3, ?4) \
             AND seq <= ?6 ORDER BY taken_at_us, seq LIMIT ?5"
        ))?;
        let rows = stmt.query_map(
            params![since, until, after_t, after_s, limit as i64, hwm],
            decode_row,
        )?;
        let mut out = rows.collect::<rusqlite::Result<Vec<_>>>()?;
        let key = |s: &Stored| (s.sample.taken_at.as_microsecond(), s.seq);
        out.extend(tail.into_iter().filter(|s| {
            let (t, seq) = key(s);
            t >= since && t < until && (t, seq) > (after_t, after_s)
        }));
        out.sort_by_key(key);
        out.truncate(limit);
        Ok(out)
    }

    /// Calls `f` for every sample in `[since, until)`, oldest first, a page at a
    /// time (memory stays flat).
    pub fn for_each_in_window(
        &self,
        since: Option<Timestamp>,
        until: Option<Timestamp>,
        mut f: impl FnMut(&Stored) -> anyhow::Result<()>,
    ) -> anyhow::Result<u64> {
        let mut after = None;
        let mut n = 0;
        loop {
            let page = self.window(since, until, after, 10_000)?;
            let Some(last) = page.last() else { break };
            after = Some((last.sample.taken_at.as_microsecond(), last.seq));
            for s in &page {
                f(s)?;
                n += 1;
            }
        }
        Ok(n)
    }

    /// Delivery state of one sink (zeros if it never ran).
    pub fn sink_state(&self, name: &str) -> anyhow::Result<SinkState> {
        let row = self
            .conn
            .query_row(
                "SELECT delivered_seq, delivered_count, last_success_us, last_error, last_error_class, \
                 last_error_us, backoff_until_us, rejected_count FROM sinks WHERE name = ?1",
                [name],
                |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        r.get::<_, i64>(1)?,
                        r.get::<_, Option<i64>>(2)?,
                        r.get::<_, Option<String>>(3)?,
                        r.get::<_, Option<String>>(4)?,
                        r.get::<_, Option<i64>>(5)?,
                        r.get::<_, Option<i64>>(6)?,
                        r.get::<_, i64>(7)?,
                    ))
                },
            )
            .optional()?;
        let (delivered_seq, delivered_count, success, error, class, error_at, backoff, rejected) =
            row.unwrap_or((0, 0, None, None, None, None, None, 0));
        let (tail, hwm) = self.tail()?;
        let oldest_pending: Option<i64> = self
            .conn
            .query_row(
                "SELECT taken_at_us FROM samples WHERE seq > ?1 AND seq <= ?2 ORDER BY seq LIMIT 1",
                [delivered_seq, hwm],
                |r| r.get(0),
            )
            .optional()?;
        let oldest_pending = oldest_pending.or_else(|| {
            tail.iter()
                .find(|s| s.seq > delivered_seq)
                .map(|s| s.sample.taken_at.as_microsecond())
        });
        Ok(SinkState {
            name: name.to_string(),
            pending: self.pending_after(delivered_seq, &tail, hwm)?,
            oldest_pending: oldest_pending.and_then(ts),
            delivered_seq,
            delivered_count: delivered_count as u64,
            last_success: success.and_then(ts),
            last_error: error,
            last_error_class: class,
            last_error_at: error_at.and_then(ts),
            backoff_until: backoff.and_then(ts),
            rejected_count: rejected as u64,
        })
    }

    /// Names of every sink that has state in this outbox.
    pub fn known_sinks(&self) -> anyhow::Result<Vec<String>> {
        let mut stmt = self.conn.prepare("SELECT name FROM sinks ORDER BY name")?;
        let names = stmt.query_map([], |r| r.get(0))?;
        names.map(|r| r.map_err(anyhow::Error::from)).collect()
    }

    /// The newest sample, if any.
    pub fn last(&self) -> anyhow::Result<Option<Stored>> {
        let (mut tail, hwm) = self.tail()?;
        if let Some(s) = tail.pop() {
            return Ok(Some(s));
        }
        let mut stmt = self.conn.prepare_cached(&format!(
            "SELECT {COLUMNS} FROM samples WHERE seq <= ?1 ORDER BY seq DESC LIMIT 1"
        ))?;
        Ok(stmt.query_row([hwm], decode_row).optional()?)
    }

    /// Counts and per-sink state for `hxlog status`.
    pub fn status(&self, sinks: &[&str]) -> anyhow::Result<OutboxStatus> {
        let (tail, hwm) = self.tail()?;
        let (samples, mock, oldest, newest, unsynced, corrected): (i64, i64, Option<i64>, Option<i64>, i64, i64) = self.conn.query_row(
            "SELECT count(*), coalesce(sum(source = 'mock'), 0), min(taken_at_us), max(taken_at_us), \
             coalesce(sum(clock = 'unsynced'), 0), coalesce(sum(clock = 'corrected'), 0) FROM samples \
             WHERE seq <= ?1",
            [hwm],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?)),
        )?;
        let times = tail.iter().map(|s| s.sample.taken_at.as_microsecond());
        let oldest = oldest.into_iter().chain(times.clone()).min();
        let newest = newest.into_iter().chain(times).max();
        let count =
            |f: &dyn Fn(&Sample) -> bool| tail.iter().filter(|s| f(&s.sample)).count() as i64;
        let samples = samples + tail.len() as i64;
        let mock = mock + count(&|s| s.source == Source::Mock);
        let unsynced = unsynced + count(&|s| s.clock.state == ClockState::Unsynced);
        let corrected = corrected + count(&|s| s.clock.state == ClockState::Corrected);
        let outbox_id: String = self
            .conn
            .query_row(
                "SELECT value FROM outbox_meta WHERE key = 'outbox_id'",
                [],
                |r| r.get(0),
            )
            .optional()?
            .unwrap_or_default();
        let mut names: Vec<String> = sinks.iter().map(|s| s.to_string()).collect();
        for known in self.known_sinks()? {
            if !names.contains(&known) {
                names.push(known);
            }
        }
        let sinks = names
            .iter()
            .map(|n| self.sink_state(n))
            .collect::<anyhow::Result<Vec<_>>>()?;
        Ok(OutboxStatus {
            path: self.path.clone(),
            outbox_id,
            samples: samples as u64,
            mock_samples: mock as u64,
            oldest: oldest.and_then(ts),
            newest: newest.and_then(ts),
            unsynced_samples: unsynced as u64,
            corrected_samples: corrected as u64,
            sinks,
        })
    }

    /// Deletes samples taken before `cutoff` that every sink in `sinks` has
    /// delivered. With no sinks configured nothing is deleted: the outbox is
    /// then the only copy. Returns the number deleted.
    pub fn prune(&mut self, cutoff: Timestamp, sinks: &[&str]) -> anyhow::Result<usize> {
        if sinks.is_empty() {
            return Ok(0);
        }
        let mut min_delivered = i64::MAX;
        for s in sinks {
            min_delivered = min_delivered.min(self.sink_state(s)?.delivered_seq);
        }
        let n = self.conn.execute(
            "DELETE FROM samples WHERE seq <= ?1 AND taken_at_us < ?2",
            params![min_delivered, cutoff.as_microsecond()],
        )?;
        // revisions of pruned samples have nothing left to resend
        self.conn.execute(
            "DELETE FROM revisions WHERE seq NOT IN (SELECT seq FROM samples)",
            [],
        )?;
        Ok(n)
    }
}

impl Outbox {
    /// Caps the file at `pages` pages (SQLite's `max_page_count`) and the
    /// sample journal at as many 4 KiB, so tests can see what a full disk does.
    #[cfg(test)]
    pub fn limit_pages_for_tests(&mut self, pages: u64) -> anyhow::Result<()> {
        self.conn
            .pragma_update(None, "max_page_count", pages as i64)?;
        self.writer()?
            .limit_len_for_tests(pages.saturating_mul(4096));
        Ok(())
    }

    /// An integer pragma of this connection (`page_size`, `synchronous`).
    #[cfg(test)]
    pub fn pragma_for_tests(&self, name: &str) -> i64 {
        self.conn
            .pragma_query_value(None, name, |r| r.get(0))
            .unwrap()
    }

    /// Makes every alarm event insert on this connection fail (a temporary
    /// trigger), while samples are still written, so tests can see what a
    /// failure to store alarm events does.
    #[cfg(test)]
    pub fn fail_alarm_inserts_for_tests(&self, fail: bool) -> anyhow::Result<()> {
        self.conn.execute_batch(if fail {
            "CREATE TEMP TRIGGER fail_alarm_inserts BEFORE INSERT ON main.alarm_events \
             BEGIN SELECT RAISE(ABORT, 'database or disk is full (test)'); END;"
        } else {
            "DROP TRIGGER temp.fail_alarm_inserts;"
        })?;
        Ok(())
    }

    /// Makes every write on this connection fail (`query_only`), so tests can
    /// see what an outbox that cannot record anything does.
    #[cfg(test)]
    pub fn set_read_only_for_tests(&self, read_only: bool) -> anyhow::Result<()> {
        self.conn.pragma_update(None, "query_only", read_only)?;
        Ok(())
    }
}

/// An [`Outbox`] shared between async tasks; every call runs on tokio's
/// blocking pool so SQLite never blocks the runtime.
#[derive(Clone, Debug)]
pub struct SharedOutbox(Arc<Mutex<Outbox>>);

impl SharedOutbox {
    /// Wraps an open outbox.
    pub fn new(outbox: Outbox) -> Self {
        SharedOutbox(Arc::new(Mutex::new(outbox)))
    }

    /// Runs `f` with the outbox on a blocking thread.
    pub async fn call<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Outbox) -> anyhow::Result<R> + Send + 'static,
    ) -> anyhow::Result<R> {
        let inner = self.0.clone();
        tokio::task::spawn_blocking(move || {
            let mut guard = inner.lock().unwrap_or_else(|p| p.into_inner());
            f(&mut guard)
        })
        .await
        .context("outbox task panicked")?
    }
}

const COUNT_ERROR_SQL: &str = "INSERT INTO sink_errors (sink, class, count) VALUES (?1, ?2, ?3) \
     ON CONFLICT (sink, class) DO UPDATE SET count = count + excluded.count";

const COLUMNS: &str = "seq, id, device_id, taken_at_us, source, readings, \
     hot_effectiveness, cold_effectiveness, effectiveness, lmtd, \
     clock, boot_id, boottime_us, taken_at_raw_us";

const INSERT_SQL: &str = "INSERT INTO samples (id, device_id, taken_at_us, source, readings, \
     hot_effectiveness, cold_effectiveness, effectiveness, lmtd, \
     clock, boot_id, boottime_us, taken_at_raw_us) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13) ON CONFLICT (id) DO NOTHING";

/// A journaled sample keeps its seq; a fold that is repeated (a crash between
/// the fold's commit and the journal's reset) inserts nothing twice.
const FOLD_SQL: &str = "INSERT OR IGNORE INTO samples (id, device_id, taken_at_us, source, readings, \
     hot_effectiveness, cold_effectiveness, effectiveness, lmtd, \
     clock, boot_id, boottime_us, taken_at_raw_us, seq) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)";

/// A sample's column values, in `INSERT_SQL`'s order.
fn row_values(s: &Sample) -> anyhow::Result<Vec<rusqlite::types::Value>> {
    use rusqlite::types::Value;
    let e = &s.efficiency;
    let real = |v: Option<f64>| v.map_or(Value::Null, Value::Real);
    let int = |v: Option<i64>| v.map_or(Value::Null, Value::Integer);
    Ok(vec![
        Value::Blob(s.id.as_bytes().to_vec()),
        Value::Text(s.device_id.clone()),
        Value::Integer(s.taken_at.as_microsecond()),
        Value::Text(s.source.as_str().to_string()),
        Value::Text(serde_json::to_string(&s.readings)?),
        real(e.hot_effectiveness),
        real(e.cold_effectiveness),
        real(e.effectiveness),
        real(e.lmtd),
        Value::Text(s.clock.state.as_str().to_string()),
        s.clock.boot_id.clone().map_or(Value::Null, Value::Text),
        int(s.clock.boottime_us),
        int(s.clock.taken_at_raw.map(|t| t.as_microsecond())),
    ])
}

pub(crate) fn decode_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Stored> {
    let bad = |i: usize, e: Box<dyn std::error::Error + Send + Sync>| {
        rusqlite::Error::FromSqlConversionFailure(i, rusqlite::types::Type::Text, e)
    };
    let id: Vec<u8> = r.get(1)?;
    let id = Uuid::from_slice(&id).map_err(|e| bad(1, e.into()))?;
    let taken: i64 = r.get(3)?;
    let taken_at = Timestamp::from_microsecond(taken).map_err(|e| bad(3, e.into()))?;
    let source: String = r.get(4)?;
    let source: Source = source.parse().map_err(|e: String| bad(4, e.into()))?;
    let readings: String = r.get(5)?;
    let readings: Vec<Reading> = serde_json::from_str(&readings).map_err(|e| bad(5, e.into()))?;
    let state: String = r.get(10)?;
    let state: ClockState = state.parse().map_err(|e: String| bad(10, e.into()))?;
    let raw: Option<i64> = r.get(13)?;
    let taken_at_raw = raw
        .map(Timestamp::from_microsecond)
        .transpose()
        .map_err(|e| bad(13, e.into()))?;
    Ok(Stored {
        seq: r.get(0)?,
        sample: Sample {
            id,
            device_id: r.get(2)?,
            taken_at,
            source,
            readings,
            efficiency: Efficiency {
                hot_effectiveness: r.get(6)?,
                cold_effectiveness: r.get(7)?,
                effectiveness: r.get(8)?,
                lmtd: r.get(9)?,
            },
            clock: ClockStamp {
                state,
                boot_id: r.get(11)?,
                boottime_us: r.get(12)?,
                taken_at_raw,
            },
        },
    })
}

pub(crate) fn check_header(path: &Path) -> anyhow::Result<()> {
    use std::io::Read;
    let mut f = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => {
            return Err(e).with_context(|| format!("cannot read the outbox {}", path.display()));
        }
    };
    if !f.metadata()?.is_file() {
        bail!("outbox {} is not a regular file", path.display());
    }
    let mut head = [0u8; 16];
    let mut n = 0;
    while n < head.len() {
        match f.read(&mut head[n..])? {
            0 => break,
            k => n += k,
        }
    }
    if n > 0 && (n < 16 || &head != SQLITE_MAGIC) {
        bail!(
            "outbox {} is not an SQLite database (its header is wrong: corrupt or overwritten); {}",
            path.display(),
            corrupt_hint(path)
        );
    }
    Ok(())
}

fn now_us() -> i64 {
    Timestamp::now().as_microsecond()
}

pub(crate) fn ts(us: i64) -> Option<Timestamp> {
    Timestamp::from_microsecond(us).ok()
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod clock_tests;

#[cfg(test)]
mod journal_tests;

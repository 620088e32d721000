//! The sample journal: where a sample becomes durable before SQLite holds it.
//!
//! A sample is appended to `outbox.sqlite.journal` (one record per sample,
//! each in its own 512-byte sectors, written with `O_DIRECT` where the file
//! system allows it) and the file is fdatasynced: that is the commit that
//! makes it "taken". Every `FOLD_RECORDS` samples the sampler folds the
//! journal into the SQLite outbox in one transaction and starts the journal
//! over. So the SD card sees about one sector per sample plus a share of one
//! SQLite commit per fold, instead of a WAL commit of six pages per sample.
//!
//! Readers (the forwarders, `status`, `export`, the HTTP endpoints) see the
//! journal's samples as if they were in the outbox ([`super::Outbox`] merges
//! them): every sample has its seq from the moment it is journaled, and keeps
//! it in SQLite.
//!
//! The file is preallocated (written with zeros once, 64 KiB), so an append
//! changes no metadata, and it keeps working on a full disk until a fold is
//! needed. Its first sector names the outbox it belongs to. A record is
//! accepted when its hash verifies and its seq is above every record accepted
//! before it in the file: a torn write fails the hash, and what is left of
//! earlier rounds after a restart carries lower seqs.
//!
//! Owns the journal file's format; must not know SQL (the outbox folds).

use std::fs::{File, OpenOptions};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::Stored;
use crate::efficiency::Efficiency;
use crate::sample::{ClockStamp, ClockState, Reading, Sample, Source};

/// The unit of a journal write: a record starts on a sector and fills whole
/// sectors (the logical block size of SD cards and most disks).
pub const SECTOR: usize = 512;
/// Fold into SQLite after this many samples…
pub const FOLD_RECORDS: usize = 32;
/// … or once this many bytes of records are journaled.
pub const FOLD_BYTES: u64 = 32 * 1024;
/// The file grows (with zeros, once) by this much, and shrinks back to it
/// after a fold.
const GROW: u64 = 64 * 1024;
/// The file never grows past this (about 4000 samples whose fold failed):
/// then the sampler holds samples in memory, as when the disk is full.
pub const MAX_LEN: u64 = 4 * 1024 * 1024;
const HEADER_MAGIC: &[u8; 8] = b"HXJRNL01";
const RECORD_MAGIC: &[u8; 4] = b"HXR1";
/// magic, payload length (u32), seq (i64), hash (u64)
const RECORD_HEAD: usize = 4 + 4 + 8 + 8;
const MAX_PAYLOAD: usize = 1 << 20;

/// The journal of the outbox at `outbox` (`outbox.sqlite.journal`).
pub fn path_for(outbox: &Path) -> PathBuf {
    let mut name = outbox.as_os_str().to_owned();
    name.push(".journal");
    PathBuf::from(name)
}

/// A sample as journaled: the outbox row's columns.
#[derive(Serialize, Deserialize)]
struct Row {
    id: String,
    device_id: String,
    taken_at_us: i64,
    source: String,
    readings: Vec<Reading>,
    hot: Option<f64>,
    cold: Option<f64>,
    eff: Option<f64>,
    lmtd: Option<f64>,
    clock: String,
    boot_id: Option<String>,
    boottime_us: Option<i64>,
    taken_at_raw_us: Option<i64>,
}

fn encode(sample: &Sample) -> anyhow::Result<Vec<u8>> {
    let e = &sample.efficiency;
    let row = Row {
        id: sample.id.simple().to_string(),
        device_id: sample.device_id.clone(),
        taken_at_us: sample.taken_at.as_microsecond(),
        source: sample.source.as_str().to_string(),
        readings: sample.readings.clone(),
        hot: e.hot_effectiveness,
        cold: e.cold_effectiveness,
        eff: e.effectiveness,
        lmtd: e.lmtd,
        clock: sample.clock.state.as_str().to_string(),
        boot_id: sample.clock.boot_id.clone(),
        boottime_us: sample.clock.boottime_us,
        taken_at_raw_us: sample.clock.taken_at_raw.map(|t| t.as_microsecond()),
    };
    Ok(serde_json::to_vec(&row)?)
}

fn decode(seq: i64, payload: &[u8]) -> anyhow::Result<Stored> {
    let row: Row = serde_json::from_slice(payload)?;
    let ts = |us: i64| Timestamp::from_microsecond(us).map_err(anyhow::Error::from);
    Ok(Stored {
        seq,
        sample: Sample {
            id: Uuid::parse_str(&row.id)?,
            device_id: row.device_id,
            taken_at: ts(row.taken_at_us)?,
            source: row.source.parse::<Source>().map_err(anyhow::Error::msg)?,
            readings: row.readings,
            efficiency: Efficiency {
                hot_effectiveness: row.hot,
                cold_effectiveness: row.cold,
                effectiveness: row.eff,
                lmtd: row.lmtd,
            },
            clock: ClockStamp {
                state: row
                    .clock
                    .parse::<ClockState>()
                    .map_err(anyhow::Error::msg)?,
                boot_id: row.boot_id,
                boottime_us: row.boottime_us,
                taken_at_raw: row.taken_at_raw_us.map(ts).transpose()?,
            },
        },
    })
}

fn hash(seq: i64, payload: &[u8]) -> u64 {
    let mut bytes = Vec::with_capacity(8 + payload.len());
    bytes.extend_from_slice(&seq.to_le_bytes());
    bytes.extend_from_slice(payload);
    crate::sensors::mock::fnv1a(&bytes)
}

fn padded(n: usize) -> usize {
    n.div_ceil(SECTOR) * SECTOR
}

/// One sample's record, padded to whole sectors.
fn record(seq: i64, sample: &Sample) -> anyhow::Result<Vec<u8>> {
    let payload = encode(sample)?;
    if payload.len() > MAX_PAYLOAD {
        bail!(
            "a sample of {} bytes is too large to journal",
            payload.len()
        );
    }
    let mut out = Vec::with_capacity(padded(RECORD_HEAD + payload.len()));
    out.extend_from_slice(RECORD_MAGIC);
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(&hash(seq, &payload).to_le_bytes());
    out.extend_from_slice(&payload);
    out.resize(padded(out.len()), 0);
    Ok(out)
}

fn header(outbox_id: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(SECTOR);
    out.extend_from_slice(HEADER_MAGIC);
    out.extend_from_slice(&(outbox_id.len() as u32).to_le_bytes());
    out.extend_from_slice(outbox_id.as_bytes());
    let h = crate::sensors::mock::fnv1a(&out);
    out.extend_from_slice(&h.to_le_bytes());
    out.resize(SECTOR, 0);
    out
}

/// Whose journal a file is.
#[derive(Debug, PartialEq, Eq)]
enum Owner {
    /// This outbox's.
    Ours,
    /// Another outbox's (the outbox file was replaced: moved aside when
    /// damaged, or restored from a backup).
    Other(String),
    /// Not a journal (or a header torn while it was created).
    Unreadable,
}

fn owner(head: &[u8], outbox_id: &str) -> Owner {
    if head.len() < 12 || &head[..8] != HEADER_MAGIC {
        return Owner::Unreadable;
    }
    let n = u32::from_le_bytes(head[8..12].try_into().unwrap()) as usize;
    // (compared before any arithmetic: on 32-bit ARM 12 + n could wrap)
    if n > SECTOR - 20 || 12 + n + 8 > head.len() {
        return Owner::Unreadable;
    }
    let h = u64::from_le_bytes(head[12 + n..20 + n].try_into().unwrap());
    if h != crate::sensors::mock::fnv1a(&head[..12 + n]) {
        return Owner::Unreadable;
    }
    match std::str::from_utf8(&head[12..12 + n]) {
        Ok(id) if id == outbox_id => Owner::Ours,
        Ok(id) => Owner::Other(id.to_string()),
        Err(_) => Owner::Unreadable,
    }
}

/// What a scan of the journal found.
#[derive(Debug, Default)]
pub struct Scan {
    /// The accepted records, in seq order.
    pub records: Vec<Stored>,
    /// The offset after the last accepted record (where the next goes).
    pub end: u64,
    /// Unreadable records between accepted ones: (offset, bytes skipped).
    pub damaged: Vec<(u64, u64)>,
}

fn scan_bytes(bytes: &[u8]) -> Scan {
    let mut scan = Scan {
        end: SECTOR as u64,
        ..Scan::default()
    };
    let mut off = SECTOR;
    let mut last_seq = i64::MIN;
    // where bytes that are neither zeros nor an accepted record began
    let mut junk_from: Option<usize> = None;
    while off + RECORD_HEAD <= bytes.len() {
        let head = &bytes[off..off + RECORD_HEAD];
        let accepted = (|| {
            if &head[..4] != RECORD_MAGIC {
                return None;
            }
            let len = u32::from_le_bytes(head[4..8].try_into().unwrap()) as usize;
            let seq = i64::from_le_bytes(head[8..16].try_into().unwrap());
            let h = u64::from_le_bytes(head[16..24].try_into().unwrap());
            let start = off + RECORD_HEAD;
            if len > MAX_PAYLOAD || start + len > bytes.len() || seq <= last_seq {
                return None;
            }
            let payload = &bytes[start..start + len];
            if hash(seq, payload) != h {
                return None;
            }
            let stored = decode(seq, payload).ok()?;
            Some((stored, padded(RECORD_HEAD + len)))
        })();
        match accepted {
            Some((stored, size)) => {
                if let Some(from) = junk_from.take() {
                    scan.damaged.push((from as u64, (off - from) as u64));
                }
                last_seq = stored.seq;
                scan.records.push(stored);
                off += size;
                scan.end = off as u64;
            }
            None => {
                let sector = &bytes[off..(off + SECTOR).min(bytes.len())];
                if junk_from.is_none() && !scan.records.is_empty() && sector.iter().any(|&b| b != 0)
                {
                    // an earlier round's record (lower seq) is not damage
                    let stale = &sector[..4] == RECORD_MAGIC
                        && i64::from_le_bytes(sector[8..16].try_into().unwrap()) <= last_seq;
                    if !stale {
                        junk_from = Some(off);
                    }
                }
                off += SECTOR;
            }
        }
    }
    scan
}

/// Reads the journal of the outbox `outbox_id` at `path`: every accepted
/// record. A missing file, or one of another outbox, reads as empty.
pub fn read(path: &Path, outbox_id: &str) -> anyhow::Result<Scan> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Scan::default()),
        Err(e) => {
            return Err(e)
                .with_context(|| format!("cannot read the sample journal {}", path.display()));
        }
    };
    if owner(&bytes, outbox_id) != Owner::Ours {
        return Ok(Scan::default());
    }
    Ok(scan_bytes(&bytes))
}

/// The sampler's handle on the journal (taken under the sampler lock).
#[derive(Debug)]
pub struct Writer {
    path: PathBuf,
    file: File,
    /// The same file opened with `O_DIRECT`, while the file system takes it.
    direct: Option<File>,
    len: u64,
    end: u64,
    records: usize,
    last_seq: i64,
    durable: bool,
    /// The file never grows past this (tests of a full disk).
    max_len: u64,
}

impl Writer {
    /// Opens (creating) the journal of outbox `outbox_id`, whose highest
    /// stored seq is `hwm`. A file that is not this outbox's journal is moved
    /// aside (never deleted) with a warning. `durable`: fdatasync each append.
    /// Returns the writer and what the journal held.
    pub fn open(
        path: &Path,
        outbox_id: &str,
        hwm: i64,
        durable: bool,
    ) -> anyhow::Result<(Writer, Scan)> {
        let ctx = || format!("cannot open the sample journal {}", path.display());
        let mut scan = Scan::default();
        let mut existing = None;
        let mut adopted = None;
        match std::fs::read(path) {
            Ok(bytes) => match owner(&bytes, outbox_id) {
                Owner::Ours => {
                    scan = scan_bytes(&bytes);
                    existing = Some(bytes.len() as u64);
                }
                Owner::Other(id) => {
                    // The outbox was replaced; the journal's samples are the
                    // newest this logger took: they go into the new outbox.
                    scan = scan_bytes(&bytes);
                    existing = Some(bytes.len() as u64);
                    adopted = Some(format!(
                        "belonged to outbox {id} (the outbox file was replaced)"
                    ));
                }
                Owner::Unreadable if !scan_bytes(&bytes).records.is_empty() => {
                    // A damaged header, but records that verify: they are
                    // samples reported as taken, kept.
                    scan = scan_bytes(&bytes);
                    existing = Some(bytes.len() as u64);
                    adopted = Some("had a damaged header".to_string());
                }
                Owner::Unreadable => {
                    let aside = PathBuf::from(format!(
                        "{}.{}.bad",
                        path.display(),
                        Timestamp::now().as_second()
                    ));
                    std::fs::rename(path, &aside).with_context(ctx)?;
                    tracing::warn!(
                        journal = %path.display(),
                        moved_to = %aside.display(),
                        "the sample journal {} is not an hxlog journal and holds no readable sample (damaged?); moved it aside and started a new one",
                        path.display()
                    );
                }
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(ctx),
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .with_context(ctx)?;
        let len = match existing {
            Some(len) => len,
            None => {
                // A new journal: header and zeros, made durable (with its
                // directory entry) before any record relies on it.
                let mut init = header(outbox_id);
                init.resize(GROW as usize, 0);
                file.write_all_at(&init, 0).with_context(ctx)?;
                file.sync_all().with_context(ctx)?;
                if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                    File::open(dir)
                        .and_then(|d| d.sync_all())
                        .with_context(ctx)?;
                }
                GROW
            }
        };
        if let Some(why) = adopted {
            file.write_all_at(&header(outbox_id), 0).with_context(ctx)?;
            file.sync_data().with_context(ctx)?;
            tracing::warn!(journal = %path.display(), samples = scan.records.iter().filter(|s| s.seq > hwm).count(),
                "the sample journal {why}; its samples go into this outbox");
        }
        let direct = OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_DIRECT)
            .open(path)
            .ok();
        let pending: Vec<&Stored> = scan.records.iter().filter(|s| s.seq > hwm).collect();
        let (end, records) = if pending.is_empty() {
            (SECTOR as u64, 0)
        } else {
            (scan.end, pending.len())
        };
        let last_seq = scan.records.last().map_or(hwm, |s| s.seq.max(hwm));
        Ok((
            Writer {
                path: path.to_path_buf(),
                file,
                direct,
                len,
                end,
                records,
                last_seq,
                durable,
                max_len: MAX_LEN,
            },
            scan,
        ))
    }

    /// The seq the next sample gets.
    pub fn next_seq(&self) -> i64 {
        self.last_seq + 1
    }

    /// Appends `samples` with seqs from [`Writer::next_seq`] on, durably
    /// (one fdatasync) when the writer is durable; returns the last seq. On
    /// error nothing is counted as written: a retry writes the same records
    /// to the same place.
    pub fn append(&mut self, samples: &[Sample]) -> anyhow::Result<i64> {
        let ctx = || format!("cannot write to the sample journal {}", self.path.display());
        let mut buf = Vec::new();
        for (i, s) in samples.iter().enumerate() {
            buf.extend(record(self.last_seq + 1 + i as i64, s)?);
        }
        let need = self.end + buf.len() as u64;
        if need > self.len {
            let new_len = need.div_ceil(GROW) * GROW;
            if new_len > self.max_len {
                return Err(std::io::Error::from_raw_os_error(libc::ENOSPC)).with_context(|| {
                    format!(
                        "the sample journal {} reached {} bytes: the outbox file has not taken its samples (see the earlier error)",
                        self.path.display(),
                        self.len
                    )
                });
            }
            let zeros = vec![0u8; (new_len - self.len) as usize];
            self.file.write_all_at(&zeros, self.len).with_context(ctx)?;
            self.file.sync_data().with_context(ctx)?;
            self.len = new_len;
        }
        let mut written = false;
        if let Some(direct) = &self.direct {
            // O_DIRECT needs an aligned buffer: carve one out of a larger Vec.
            let mut raw = vec![0u8; buf.len() + 4096];
            let at = raw.as_ptr().align_offset(4096);
            raw[at..at + buf.len()].copy_from_slice(&buf);
            match direct.write_all_at(&raw[at..at + buf.len()], self.end) {
                Ok(()) => written = true,
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                    // this file system takes no direct I/O of this size
                    self.direct = None;
                }
                Err(e) => return Err(e).with_context(ctx),
            }
        }
        if !written {
            self.file.write_all_at(&buf, self.end).with_context(ctx)?;
        }
        if self.durable {
            self.file.sync_data().with_context(ctx)?;
        }
        self.end += buf.len() as u64;
        self.records += samples.len();
        self.last_seq += samples.len() as i64;
        Ok(self.last_seq)
    }

    /// True when the journal holds enough to fold.
    pub fn should_fold(&self) -> bool {
        self.records >= FOLD_RECORDS || self.end - SECTOR as u64 >= FOLD_BYTES
    }

    /// Samples journaled since the last reset.
    pub fn records(&self) -> usize {
        self.records
    }

    /// Starts the journal over, once everything in it is durably in the
    /// outbox (the next record overwrites the first); a file that grew while
    /// folds failed shrinks back.
    pub fn reset(&mut self) {
        self.end = SECTOR as u64;
        self.records = 0;
        if self.len > GROW && self.file.set_len(GROW).is_ok() {
            self.len = GROW;
        }
    }

    /// The seq of the first sample journaled since the last reset, if any.
    pub fn round_first(&self) -> Option<i64> {
        (self.records > 0).then(|| self.last_seq - self.records as i64 + 1)
    }

    /// The seq of the last sample journaled (or the outbox's high-water mark).
    pub fn last_seq(&self) -> i64 {
        self.last_seq
    }

    /// Numbers the next sample after `seq` at the least: seqs a sink has
    /// already acknowledged are never given again, even if their samples
    /// were lost (a power cut with `sqlite_synchronous` = `normal`).
    pub fn skip_past(&mut self, seq: i64) {
        self.last_seq = self.last_seq.max(seq);
    }

    /// Lets the file grow to at most `bytes` (a full disk, for tests).
    #[cfg(test)]
    pub fn limit_len_for_tests(&mut self, bytes: u64) {
        self.max_len = bytes;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sample::{Reading, Source};

    fn sample(i: i64) -> Sample {
        Sample::new(
            "hx-01",
            Timestamp::from_second(1_700_000_000 + i).unwrap(),
            Source::Mock,
            vec![
                Reading::ok("T1", None, 60.0 + i as f64),
                Reading::ok("T2", None, 40.0),
            ],
        )
    }

    #[test]
    fn appended_samples_read_back_with_their_seqs() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("o.sqlite.journal");
        let (mut w, scan) = Writer::open(&path, "box", 41, true).unwrap();
        assert!(scan.records.is_empty());
        assert_eq!(w.next_seq(), 42);
        let s: Vec<Sample> = (0..3).map(sample).collect();
        assert_eq!(w.append(&s[..1]).unwrap(), 42);
        assert_eq!(w.append(&s[1..]).unwrap(), 44);
        let got = read(&path, "box").unwrap().records;
        assert_eq!(got.iter().map(|r| r.seq).collect::<Vec<_>>(), [42, 43, 44]);
        assert_eq!(got.iter().map(|r| r.sample.clone()).collect::<Vec<_>>(), s);
        // another outbox's reader sees nothing
        assert!(read(&path, "other").unwrap().records.is_empty());
        // reopened: continues after the last record
        drop(w);
        let (w, scan) = Writer::open(&path, "box", 41, true).unwrap();
        assert_eq!(scan.records.len(), 3);
        assert_eq!((w.next_seq(), w.records()), (45, 3));
    }

    #[test]
    fn after_a_reset_the_earlier_round_is_not_read_again() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j");
        let (mut w, _) = Writer::open(&path, "box", 0, true).unwrap();
        w.append(&(0..5).map(sample).collect::<Vec<_>>()).unwrap();
        w.reset(); // folded: seqs 1..=5 are in SQLite now
        w.append(&[sample(5)]).unwrap();
        let scan = read(&path, "box").unwrap();
        assert_eq!(scan.records.iter().map(|r| r.seq).collect::<Vec<_>>(), [6]);
        assert!(scan.damaged.is_empty(), "{:?}", scan.damaged);
        // a restart (hwm 5) appends after seq 6, at the same place a writer would
        let (w2, _) = Writer::open(&path, "box", 5, true).unwrap();
        assert_eq!((w2.next_seq(), w2.end), (7, w.end));
        // with everything folded (hwm 6) it starts over
        let (w3, _) = Writer::open(&path, "box", 6, true).unwrap();
        assert_eq!((w3.next_seq(), w3.records()), (7, 0));
    }

    fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
        hay.windows(needle.len()).position(|w| w == needle)
    }

    #[test]
    fn a_torn_record_is_not_read_and_a_damaged_one_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j");
        let (mut w, _) = Writer::open(&path, "box", 0, true).unwrap();
        for i in 0..3 {
            w.append(&[sample(i)]).unwrap();
        }
        let mut bytes = std::fs::read(&path).unwrap();
        let rec = padded(RECORD_HEAD + encode(&sample(0)).unwrap().len());
        // the second record damaged in its payload, still valid JSON: a
        // digit of its time changed (only the hash tells)
        let at = SECTOR + rec + RECORD_HEAD;
        let digit = at + find(&bytes[at..], b"\"taken_at_us\":").unwrap() + 14;
        let good = bytes[digit];
        bytes[digit] = if good == b'1' { b'2' } else { b'1' };
        std::fs::write(&path, &bytes).unwrap();
        let scan = read(&path, "box").unwrap();
        assert_eq!(
            scan.records.iter().map(|r| r.seq).collect::<Vec<_>>(),
            [1, 3]
        );
        assert_eq!(scan.damaged, [((SECTOR + rec) as u64, rec as u64)]);
        // the last record torn: only the first two are read
        bytes[digit] = good;
        bytes[SECTOR + 2 * rec + RECORD_HEAD + 1] ^= 0x01;
        std::fs::write(&path, &bytes).unwrap();
        let scan = read(&path, "box").unwrap();
        assert_eq!(
            scan.records.iter().map(|r| r.seq).collect::<Vec<_>>(),
            [1, 2]
        );
    }

    #[test]
    fn a_replaced_outbox_adopts_the_journal_and_garbage_is_moved_aside() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("o.journal");
        let (mut w, _) = Writer::open(&path, "old-box", 0, true).unwrap();
        w.append(&[sample(0), sample(1)]).unwrap();
        drop(w);
        // the outbox was moved aside and a new one made: its samples stay
        let (w, scan) = Writer::open(&path, "new-box", 0, true).unwrap();
        assert_eq!(scan.records.len(), 2);
        assert_eq!(w.next_seq(), 3);
        assert_eq!(read(&path, "new-box").unwrap().records.len(), 2);
        assert!(read(&path, "old-box").unwrap().records.is_empty());
        drop(w);
        // garbage: moved aside, never deleted
        std::fs::write(&path, b"not a journal at all").unwrap();
        let (w, scan) = Writer::open(&path, "new-box", 0, true).unwrap();
        assert!(scan.records.is_empty());
        assert_eq!(w.next_seq(), 1);
        let aside: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.ends_with(".bad"))
            .collect();
        assert_eq!(aside.len(), 1, "{aside:?}");
        let kept = std::fs::read(dir.path().join(&aside[0])).unwrap();
        assert_eq!(kept, b"not a journal at all");
    }
}

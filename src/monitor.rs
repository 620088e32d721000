//! Is sampling on schedule? The one verdict behind `/healthz` and
//! `hxlog status`, decided from the outbox alone so that every process
//! (`run`, `serve`, `status`) judges the same way. No I/O here beyond
//! [`outbox_writable`]'s `access(2)`.
//!
//! Sampling is stalled when the newest sample is older than three intervals
//! and older than one interval plus 5 s (so a 1 s interval is not judged on
//! scheduling noise). The interval is the configured one for `run`; in timer
//! mode (`serve`, `status` without a running `run`) it is the pace of the
//! recent samples, when they show one.

use std::path::Path;
use std::time::Duration;

use jiff::Timestamp;

/// The health verdict.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Verdict {
    /// True while sampling is on schedule and the outbox writable.
    pub healthy: bool,
    /// `ok`, or why not: `last sample 95 s ago, interval 30 s`.
    pub reason: String,
}

/// How long without a sample counts as stalled for `interval`.
pub fn stall_after(interval: Duration) -> Duration {
    (interval * 3).max(interval + Duration::from_secs(5))
}

/// The interval the recent samples show (newest first): the median gap,
/// when there are at least three samples. `None` when they show nothing.
pub fn pace(recent: &[Timestamp]) -> Option<Duration> {
    let mut gaps: Vec<Duration> = recent
        .windows(2)
        .filter_map(|w| {
            let d = w[0].duration_since(w[1]);
            (!d.is_negative() && !d.is_zero()).then(|| d.unsigned_abs())
        })
        .collect();
    if gaps.len() < 2 {
        return None;
    }
    gaps.sort();
    Some(gaps[gaps.len() / 2])
}

/// The interval to judge by: the configured one, or in timer mode the pace
/// of the `recent` samples (newest first) when it is longer.
pub fn interval_for(configured: Duration, recent: &[Timestamp], timer_mode: bool) -> Duration {
    match pace(recent) {
        Some(p) if timer_mode => p.max(configured),
        _ => configured,
    }
}

/// Judges sampling: `newest` is the newest sample's time, `started` when
/// this process started sampling (`run` only: until its first sample it is
/// judged from then, and says so), `writable` the outbox check.
pub fn judge(
    now: Timestamp,
    interval: Duration,
    newest: Option<Timestamp>,
    started: Option<Timestamp>,
    writable: Result<(), String>,
) -> Verdict {
    if let Err(e) = writable {
        return Verdict {
            healthy: false,
            reason: e,
        };
    }
    // Judged from `run`'s start while it has no sample of its own yet.
    let (since, from_start) = match (newest, started) {
        (Some(n), Some(st)) if st > n => (st, true),
        (None, Some(st)) => (st, true),
        (Some(n), _) => (n, false),
        (None, None) => {
            return Verdict {
                healthy: false,
                reason: "no sample yet".into(),
            };
        }
    };
    let age = now.duration_since(since);
    // A sample in the future (the clock stepped back) is not a stall.
    let age = if age.is_negative() {
        Duration::ZERO
    } else {
        age.unsigned_abs()
    };
    if age > stall_after(interval) {
        return Verdict {
            healthy: false,
            reason: if from_start {
                format!(
                    "no sample since the start {} s ago, interval {} s",
                    age.as_secs(),
                    interval.as_secs_f64()
                )
            } else {
                format!(
                    "last sample {} s ago, interval {} s",
                    age.as_secs(),
                    interval.as_secs_f64()
                )
            },
        };
    }
    Verdict {
        healthy: true,
        reason: "ok".into(),
    }
}

/// Whether this process's user could write the outbox: the file (if any) and
/// its folder (SQLite writes its journal files beside it).
pub fn outbox_writable(path: &Path) -> Result<(), String> {
    use std::os::unix::ffi::OsStrExt;
    let check = |p: &Path| -> Result<(), String> {
        let c = std::ffi::CString::new(p.as_os_str().as_bytes())
            .map_err(|_| format!("outbox path {} has a NUL byte", p.display()))?;
        // SAFETY: access(2) reads a NUL-terminated path and has no other preconditions.
        let rc = unsafe { libc::access(c.as_ptr(), libc::W_OK) };
        if rc == 0 {
            Ok(())
        } else {
            Err(format!(
                "outbox not writable: {}: {}",
                p.display(),
                std::io::Error::last_os_error()
            ))
        }
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        check(dir)?;
    }
    if path.exists() {
        check(path)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + s).unwrap()
    }

    #[test]
    fn stalled_means_three_intervals_and_at_least_interval_plus_5s() {
        let check = |interval: u64, age: i64, healthy: bool| {
            let v = judge(
                t(age),
                Duration::from_secs(interval),
                Some(t(0)),
                None,
                Ok(()),
            );
            assert_eq!(v.healthy, healthy, "interval {interval}, age {age}: {v:?}");
        };
        check(30, 90, true);
        check(30, 95, false);
        check(1, 5, true);
        check(1, 7, false);
        check(30, -600, true);
        let v = judge(t(95), Duration::from_secs(30), Some(t(0)), None, Ok(()));
        assert_eq!(v.reason, "last sample 95 s ago, interval 30 s");
        let v = judge(
            t(0),
            Duration::from_secs(30),
            Some(t(0)),
            None,
            Err("outbox not writable".into()),
        );
        assert!(!v.healthy);
        assert!(!judge(t(0), Duration::from_secs(30), None, None, Ok(())).healthy);
        // `run` before its first sample: judged from its start, and says so
        let v = judge(t(20), Duration::from_secs(30), None, Some(t(0)), Ok(()));
        assert!(v.healthy, "{v:?}");
        let v = judge(t(95), Duration::from_secs(30), None, Some(t(0)), Ok(()));
        assert_eq!(
            v.reason,
            "no sample since the start 95 s ago, interval 30 s"
        );
        // samples from before this start do not count as its own
        let v = judge(
            t(195),
            Duration::from_secs(30),
            Some(t(0)),
            Some(t(100)),
            Ok(()),
        );
        assert_eq!(
            v.reason,
            "no sample since the start 95 s ago, interval 30 s"
        );
        let v = judge(
            t(195),
            Duration::from_secs(30),
            Some(t(100)),
            Some(t(0)),
            Ok(()),
        );
        assert_eq!(v.reason, "last sample 95 s ago, interval 30 s");
    }

    #[test]
    fn the_pace_is_the_median_gap() {
        assert_eq!(pace(&[t(120), t(60), t(0)]), Some(Duration::from_secs(60)));
        assert_eq!(
            pace(&[t(300), t(120), t(60), t(0)]),
            Some(Duration::from_secs(60))
        );
        assert_eq!(pace(&[t(60), t(0)]), None);
        assert_eq!(pace(&[]), None);
        // timer mode judges by the samples' pace when it is the longer one
        let minute = [t(120), t(60), t(0)];
        let thirty = Duration::from_secs(30);
        assert_eq!(interval_for(thirty, &minute, true), Duration::from_secs(60));
        assert_eq!(interval_for(thirty, &minute, false), thirty);
        assert_eq!(
            interval_for(Duration::from_secs(300), &minute, true),
            Duration::from_secs(300)
        );
    }
}

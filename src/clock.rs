//! Trustworthy time: whether the system clock is synchronised (config
//! `clock_sync`), the boot id and `CLOCK_BOOTTIME`, and the arithmetic that
//! corrects a sample taken before synchronisation once the clock is synced.
//!
//! A Raspberry Pi has no battery-backed clock: after a power cut it runs on a
//! stale wall clock until NTP synchronises it. `CLOCK_BOOTTIME` is true all
//! along (it counts from boot, suspend included), so once the clock is synced,
//! wall = boottime + offset for the whole boot, and a sample's true time
//! follows from the boottime it recorded ([`Anchor::wall_at`]).
//!
//! It must not touch the outbox: it observes and computes; the sampler stores.

use std::path::PathBuf;

use jiff::{SignedDuration, Timestamp};
use tracing::{info, warn};

/// A clock step larger than this while synced is logged.
pub const STEP_THRESHOLD: SignedDuration = SignedDuration::from_secs(1);

/// How hxlog learns that the system clock is synchronised (config `clock_sync`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum ClockSync {
    /// The kernel's `adjtimex()` status has `STA_UNSYNC` cleared
    /// (systemd-timesyncd, chrony and ntpd all clear it).
    #[default]
    Kernel,
    /// Always synced: a board with a battery-backed real-time clock.
    Always,
    /// Synced when this file exists (e.g. `/run/systemd/timesync/synchronized`,
    /// created by systemd-timesyncd).
    File(PathBuf),
}

impl std::str::FromStr for ClockSync {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "kernel" => Ok(ClockSync::Kernel),
            "always" => Ok(ClockSync::Always),
            p if p.starts_with('/') => Ok(ClockSync::File(PathBuf::from(p))),
            other => Err(format!(
                "clock_sync {other:?} is not understood; use \"kernel\", \"always\" or an absolute file path such as \"/run/systemd/timesync/synchronized\""
            )),
        }
    }
}

impl std::fmt::Display for ClockSync {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ClockSync::Kernel => f.write_str("kernel"),
            ClockSync::Always => f.write_str("always"),
            ClockSync::File(p) => write!(f, "{}", p.display()),
        }
    }
}

impl ClockSync {
    /// Whether the clock is synchronised now.
    pub fn is_synced(&self) -> bool {
        match self {
            ClockSync::Kernel => kernel_synced(),
            ClockSync::Always => true,
            ClockSync::File(p) => p.exists(),
        }
    }

    /// The likely cause of an unsynchronised clock and how to check it.
    pub fn unsynced_hint(&self) -> String {
        match self {
            ClockSync::Kernel => "the kernel reports the clock unsynchronised (adjtimex STA_UNSYNC): no NTP daemon has synchronised it since boot, \
                 likely no network or UDP port 123 blocked; check `timedatectl` (System clock synchronized: no) and `timedatectl timesync-status`".into(),
            ClockSync::Always => "clock_sync is \"always\"".into(),
            ClockSync::File(p) => format!(
                "{} does not exist: the time daemon has not synchronised the clock since boot, likely no network or UDP port 123 blocked; \
                 check `timedatectl` (System clock synchronized: no) and `timedatectl timesync-status`",
                p.display()
            ),
        }
    }
}

fn kernel_synced() -> bool {
    let (rc, status) = adjtimex_status();
    rc != -1 && rc != libc::TIME_ERROR && status & libc::STA_UNSYNC == 0
}

/// `adjtimex()` with `modes = 0` (reads only): the clock state it returns
/// and the `status` field.
#[cfg(not(all(target_arch = "arm", target_env = "gnu")))]
fn adjtimex_status() -> (libc::c_int, libc::c_int) {
    // SAFETY: a zeroed timex with modes = 0 only reads the kernel's state.
    let mut t: libc::timex = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::adjtimex(&mut t) };
    (rc, t.status)
}

/// On 32-bit ARM (armhf) glibc's `adjtimex` has a 32-bit `time_t` and fails
/// with EOVERFLOW once the clock is past January 2038, which would mark every
/// sample unsynced; its 64-bit-time twin `___adjtimex64` (glibc 2.34, the
/// one `-D_TIME_BITS=64` C code calls) does not.
#[cfg(all(target_arch = "arm", target_env = "gnu"))]
fn adjtimex_status() -> (libc::c_int, libc::c_int) {
    unsafe extern "C" {
        fn ___adjtimex64(buf: *mut Timex64) -> libc::c_int;
    }
    // SAFETY: a zeroed buffer at least as large as glibc's struct __timex64
    // with modes = 0: the call only writes the kernel's state into it.
    let mut t: Timex64 = unsafe { std::mem::zeroed() };
    let rc = unsafe { ___adjtimex64(&mut t) };
    (rc, t.status)
}

/// glibc's `struct __timex64` (the kernel's `__kernel_timex`) up to `status`;
/// `_rest` oversizes the remainder (20 more fields, 144 bytes).
#[cfg(all(target_arch = "arm", target_env = "gnu"))]
#[repr(C)]
struct Timex64 {
    modes: libc::c_uint,
    offset: i64,
    freq: i64,
    maxerror: i64,
    esterror: i64,
    status: libc::c_int,
    _rest: [i64; 32],
}

/// `CLOCK_BOOTTIME` in microseconds: time since boot, suspend included.
pub fn boottime_us() -> i64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut ts) };
    timespec_us(ts.tv_sec, ts.tv_nsec)
}

/// A `timespec` in microseconds, widened to `i64` before multiplying: on armhf
/// `time_t` and `c_long` are 32-bit, and `tv_sec * 1_000_000` in `time_t`
/// overflows after 36 minutes of uptime.
// On 64-bit targets the conversions are no-ops (hence the allow).
#[allow(clippy::useless_conversion)]
fn timespec_us(sec: libc::time_t, nsec: libc::c_long) -> i64 {
    i64::from(sec) * 1_000_000 + i64::from(nsec) / 1_000
}

/// The kernel's id of the current boot (empty if unreadable).
pub fn boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// One look at the clocks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observation {
    /// The wall clock (possibly wrong when not synced).
    pub wall: Timestamp,
    /// `CLOCK_BOOTTIME`, microseconds.
    pub boottime_us: i64,
    /// The current boot.
    pub boot_id: String,
    /// Whether `clock_sync` says the wall clock is synchronised.
    pub synced: bool,
}

impl Observation {
    /// Reads the clocks now.
    pub fn now(sync: &ClockSync) -> Observation {
        // Synced state first: a sync that happens in between makes us call the
        // reading unsynced, never the other way round.
        let synced = sync.is_synced();
        Observation {
            wall: Timestamp::now(),
            boottime_us: boottime_us(),
            boot_id: boot_id(),
            synced,
        }
    }

    /// The anchor of this boot, if the clock is synced (and the boot is
    /// known: without a boot id no sample can be told from another boot's).
    pub fn anchor(&self) -> Option<Anchor> {
        (self.synced && !self.boot_id.is_empty()).then(|| Anchor {
            boot_id: self.boot_id.clone(),
            offset_us: self.wall.as_microsecond() - self.boottime_us,
        })
    }
}

/// Wall time = boottime + `offset_us` for every moment of one boot, known once
/// the clock is synchronised in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Anchor {
    /// The boot it holds for.
    pub boot_id: String,
    /// Wall microseconds minus boottime microseconds.
    pub offset_us: i64,
}

impl Anchor {
    /// The true wall time of the moment whose boottime was `boottime_us`.
    ///
    /// ```
    /// use hxlog::clock::Anchor;
    /// let a = Anchor { boot_id: "b".into(), offset_us: 1_800_000_000_000_000 };
    /// assert_eq!(a.wall_at(5_000_000).unwrap().as_second(), 1_800_000_005);
    /// ```
    pub fn wall_at(&self, boottime_us: i64) -> Option<Timestamp> {
        Timestamp::from_microsecond(boottime_us.checked_add(self.offset_us)?).ok()
    }
}

/// How far the wall clock jumped between two synced observations of one boot,
/// beyond what boottime advanced; `None` within [`STEP_THRESHOLD`].
pub fn step(before: &Observation, after: &Observation) -> Option<SignedDuration> {
    if !(before.synced && after.synced) || before.boot_id != after.boot_id {
        return None;
    }
    let wall = after.wall.as_microsecond() - before.wall.as_microsecond();
    let boot = after.boottime_us - before.boottime_us;
    let jump = SignedDuration::from_micros(wall - boot);
    (jump.abs() > STEP_THRESHOLD).then_some(jump)
}

/// Watches the clock across samples: logs the first unsynchronised reading
/// (with the likely cause), the moment it synchronises, and steps while synced.
#[derive(Debug)]
pub struct ClockWatch {
    sync: ClockSync,
    last: Option<Observation>,
}

impl ClockWatch {
    /// A watch using `sync` to decide synchronisation.
    pub fn new(sync: ClockSync) -> Self {
        ClockWatch { sync, last: None }
    }

    /// Observes the clocks and logs what changed since the last call.
    pub fn observe(&mut self) -> Observation {
        let now = Observation::now(&self.sync);
        match &self.last {
            None if !now.synced => warn!(
                clock_sync = %self.sync,
                "the system clock is not synchronised: samples are marked unsynced and corrected once it is; {}",
                self.sync.unsynced_hint()
            ),
            Some(prev) if !prev.synced && now.synced => {
                info!(clock_sync = %self.sync, "the system clock is synchronised now")
            }
            Some(prev) if prev.synced && !now.synced => warn!(
                clock_sync = %self.sync,
                "the system clock lost its synchronisation: samples are marked unsynced; {}",
                self.sync.unsynced_hint()
            ),
            Some(prev) => {
                if let Some(jump) = step(prev, &now) {
                    warn!(step = %format!("{:+.3}s", jump.as_secs_f64()), from = %prev.wall, to = %now.wall, "the system clock was stepped while synchronised");
                }
            }
            None => {}
        }
        self.last = Some(now.clone());
        now
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obs(wall_s: i64, boot_s: i64, boot: &str, synced: bool) -> Observation {
        Observation {
            wall: Timestamp::from_second(wall_s).unwrap(),
            boottime_us: boot_s * 1_000_000,
            boot_id: boot.into(),
            synced,
        }
    }

    #[test]
    fn clock_sync_modes_parse() {
        assert_eq!("kernel".parse(), Ok(ClockSync::Kernel));
        assert_eq!("always".parse(), Ok(ClockSync::Always));
        assert_eq!(
            "/run/systemd/timesync/synchronized".parse(),
            Ok(ClockSync::File("/run/systemd/timesync/synchronized".into()))
        );
        let err = "ntp".parse::<ClockSync>().unwrap_err();
        assert!(err.contains("absolute file path"), "{err}");
    }

    #[test]
    fn a_file_mode_follows_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("synchronized");
        let sync = ClockSync::File(f.clone());
        assert!(!sync.is_synced());
        std::fs::write(&f, "").unwrap();
        assert!(sync.is_synced());
    }

    #[test]
    fn a_timespec_past_36_minutes_does_not_overflow_a_32_bit_time_t() {
        // 2^31 µs is 35.8 minutes; the largest second a 32-bit time_t holds
        // must come out whole in microseconds (this runs on armhf in
        // scripts/test-pi.sh, where time_t is i32).
        let max = libc::time_t::from(i32::MAX);
        assert_eq!(timespec_us(max, 999_999_999), 2_147_483_647_999_999);
        assert_eq!(timespec_us(100_000, 5_000), 100_000_000_005);
    }

    #[test]
    fn the_kernel_clock_status_is_readable() {
        let (rc, _) = adjtimex_status();
        assert_ne!(rc, -1, "{}", std::io::Error::last_os_error());
    }

    /// Before 2038 the 32-bit `adjtimex` still works, so it must agree with
    /// the 64-bit-time call field for field (checks `Timex64`'s layout).
    #[cfg(all(target_arch = "arm", target_env = "gnu"))]
    #[test]
    fn the_64_bit_time_adjtimex_agrees_with_the_32_bit_one() {
        let mut t: libc::timex = unsafe { std::mem::zeroed() };
        let rc = unsafe { libc::adjtimex(&mut t) };
        assert_eq!(adjtimex_status(), (rc, t.status));
    }

    #[test]
    fn boottime_advances_and_the_boot_id_is_stable() {
        let a = boottime_us();
        let b = boottime_us();
        assert!(a > 0 && b >= a);
        assert_eq!(boot_id(), boot_id());
        assert_eq!(boot_id().len(), 36, "{}", boot_id());
    }

    #[test]
    fn an_unsynced_observation_has_no_anchor() {
        assert_eq!(obs(1000, 10, "b", false).anchor(), None);
        assert_eq!(obs(1000, 10, "", true).anchor(), None, "unknown boot");
    }

    #[test]
    fn the_anchor_maps_boottime_to_true_wall_time() {
        // Booted at a stale clock three days behind, synced 600 s after boot.
        let truth = 1_800_000_000;
        let sync = obs(truth + 600, 600, "b", true).anchor().unwrap();
        // A sample taken 30 s after boot, recorded three days early.
        assert_eq!(sync.wall_at(30_000_000).unwrap().as_second(), truth + 30);
        assert_eq!(sync.wall_at(600_000_000).unwrap().as_second(), truth + 600);
    }

    #[test]
    fn boottime_counts_a_suspend_so_the_anchor_holds_across_it() {
        // Sample at boottime 100 s, then a one-hour suspend, sync at boottime
        // 3800 s: the sample's true time is 3700 s before the sync.
        let truth_at_sync = 1_800_000_000;
        let a = obs(truth_at_sync, 3800, "b", true).anchor().unwrap();
        assert_eq!(
            a.wall_at(100_000_000).unwrap().as_second(),
            truth_at_sync - 3700
        );
    }

    #[test]
    fn a_step_while_synced_is_measured_beyond_boottime() {
        let before = obs(1_800_000_000, 100, "b", true);
        // 60 s of boottime, wall moved 65 s: a 5 s step forward.
        let after = obs(1_800_000_065, 160, "b", true);
        assert_eq!(step(&before, &after), Some(SignedDuration::from_secs(5)));
        // backwards
        let back = obs(1_800_000_050, 160, "b", true);
        assert_eq!(step(&before, &back), Some(SignedDuration::from_secs(-10)));
        // within the threshold: slewing, not a step
        let slew = obs(1_800_000_060, 160, "b", true);
        assert_eq!(step(&before, &slew), None);
        // the sync itself is not a step, nor a new boot
        let unsynced = obs(1_000, 100, "b", false);
        assert_eq!(step(&unsynced, &after), None);
        assert_eq!(step(&before, &obs(1_900_000_000, 5, "c", true)), None);
    }
}

//! The domain types: a [`Sample`] taken in one cycle, its [`Reading`]s and their
//! [`Quality`].
//!
//! This module owns what a reading *means*; it does no I/O and knows no wire
//! format (each sink and the outbox define their own encodings from these types).
//! The quality of a reading is decided once, by the sensor module, and carried
//! here unchanged.

use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::efficiency::Efficiency;

/// The four roles of a two-stream heat exchanger, in the order the old tool's
/// `devicenames.json` lists them.
pub const STANDARD_ROLES: [&str; 4] = ["T1", "T2", "T3", "T4"];

/// Where the readings of a sample came from. Mock data is never mixed with
/// real data: a whole sample is one or the other.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// Real sensors read through the Linux w1-therm driver.
    W1,
    /// The simulated heat exchanger (`sensor_source = "mock"`, or `auto` with no bus).
    Mock,
}

impl Source {
    /// The stable lowercase name used in every output (`w1`, `mock`).
    pub fn as_str(self) -> &'static str {
        match self {
            Source::W1 => "w1",
            Source::Mock => "mock",
        }
    }
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Source {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "w1" => Ok(Source::W1),
            "mock" => Ok(Source::Mock),
            other => Err(format!(
                "unknown sample source {other:?} (expected w1 or mock)"
            )),
        }
    }
}

/// The quality of one reading: `Ok`, or the reason it is missing.
///
/// A missing reading never carries a temperature: not 0 °C, not 85 °C.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Quality {
    /// A valid temperature.
    Ok,
    /// The mapped sensor's folder is not on the bus (unplugged, or vanished mid-run).
    NotFound,
    /// The kernel reported `crc=.. NO` on the scratchpad.
    CrcNo,
    /// The CRC we recomputed over the scratchpad does not match its CRC byte.
    CrcMismatch,
    /// `w1_slave` was empty (current kernels return this after 5 failed CRC tries).
    Empty,
    /// `w1_slave` or `temperature` could not be parsed (truncated or garbage).
    Garbage,
    /// An all-zero scratchpad: passes the CRC but means a bad contact.
    AllZero,
    /// The power-on reset value 85.0 °C with scratchpad byte 6 = 0x0c: no conversion happened.
    PowerOnReset,
    /// Raw 0x07ff (127.94 °C): the sensor lacks power for a conversion.
    InsufficientPower,
    /// A decoded value outside the chip's range (−55…125 °C for the DS18B20).
    OutOfRange,
    /// The sensor reports a fault of its own (MAX31850: thermocouple open or shorted).
    SensorFault,
    /// Reading the sysfs file failed for another reason (permissions, I/O error, timeout).
    ReadError,
}

impl Quality {
    /// Every quality, for documentation and exhaustive tests.
    pub const ALL: [Quality; 12] = [
        Quality::Ok,
        Quality::NotFound,
        Quality::CrcNo,
        Quality::CrcMismatch,
        Quality::Empty,
        Quality::Garbage,
        Quality::AllZero,
        Quality::PowerOnReset,
        Quality::InsufficientPower,
        Quality::OutOfRange,
        Quality::SensorFault,
        Quality::ReadError,
    ];

    /// The stable snake_case code used in CSV, JSON, the outbox and Postgres.
    pub fn as_str(self) -> &'static str {
        match self {
            Quality::Ok => "ok",
            Quality::NotFound => "not_found",
            Quality::CrcNo => "crc_no",
            Quality::CrcMismatch => "crc_mismatch",
            Quality::Empty => "empty",
            Quality::Garbage => "garbage",
            Quality::AllZero => "all_zero",
            Quality::PowerOnReset => "power_on_reset",
            Quality::InsufficientPower => "insufficient_power",
            Quality::OutOfRange => "out_of_range",
            Quality::SensorFault => "sensor_fault",
            Quality::ReadError => "read_error",
        }
    }
}

impl std::fmt::Display for Quality {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Whether a sample's `taken_at` can be trusted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClockState {
    /// The system clock was synchronised when the sample was taken.
    #[default]
    Synced,
    /// It was not (no NTP yet after boot): `taken_at` may be far off.
    Unsynced,
    /// Taken unsynchronised, `taken_at` recomputed from boottime once the
    /// clock synchronised later in the same boot (`taken_at_raw` keeps the
    /// original).
    Corrected,
}

impl ClockState {
    /// The stable lowercase name used in every output.
    pub fn as_str(self) -> &'static str {
        match self {
            ClockState::Synced => "synced",
            ClockState::Unsynced => "unsynced",
            ClockState::Corrected => "corrected",
        }
    }
}

impl std::fmt::Display for ClockState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for ClockState {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "synced" => Ok(ClockState::Synced),
            "unsynced" => Ok(ClockState::Unsynced),
            "corrected" => Ok(ClockState::Corrected),
            other => Err(format!(
                "unknown clock state {other:?} (expected synced, unsynced or corrected)"
            )),
        }
    }
}

/// What a sample knows about the clock it was taken with.
///
/// `boot_id` and `boottime_us` are `None` only for samples stored before
/// hxlog recorded them (they count as synced: nothing better is known).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ClockStamp {
    /// `synced`, `unsynced` or `corrected`.
    pub state: ClockState,
    /// The kernel's boot id (`/proc/sys/kernel/random/boot_id`).
    pub boot_id: Option<String>,
    /// `CLOCK_BOOTTIME` at sampling, microseconds (counts suspend).
    pub boottime_us: Option<i64>,
    /// The wall time first recorded, kept when `taken_at` was corrected.
    pub taken_at_raw: Option<Timestamp>,
}

/// One sensor's contribution to a sample.
///
/// Invariant: `celsius.is_some()` exactly when `quality == Quality::Ok`; build
/// readings with [`Reading::ok`] and [`Reading::missing`] to keep it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reading {
    /// The role from `devicenames.json` (`T1`…`T4`, or any extra name).
    pub role: String,
    /// The 1-Wire id (`28-…`), `None` for mock readings.
    pub sensor_id: Option<String>,
    /// Degrees Celsius, calibration offset applied; `None` when missing.
    pub celsius: Option<f64>,
    /// `ok`, or why the value is missing.
    pub quality: Quality,
    /// A human explanation when missing (which file, what was wrong).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl Reading {
    /// A valid reading.
    ///
    /// ```
    /// let r = hxlog::sample::Reading::ok("T1", Some("28-0000000001".into()), 61.25);
    /// assert_eq!(r.celsius, Some(61.25));
    /// ```
    pub fn ok(role: impl Into<String>, sensor_id: Option<String>, celsius: f64) -> Self {
        Reading {
            role: role.into(),
            sensor_id,
            celsius: Some(celsius),
            quality: Quality::Ok,
            reason: None,
        }
    }

    /// A missing reading with its reason. `quality` must not be [`Quality::Ok`]
    /// (it is turned into [`Quality::ReadError`] if it is).
    pub fn missing(
        role: impl Into<String>,
        sensor_id: Option<String>,
        quality: Quality,
        reason: impl Into<String>,
    ) -> Self {
        let quality = if quality == Quality::Ok {
            Quality::ReadError
        } else {
            quality
        };
        Reading {
            role: role.into(),
            sensor_id,
            celsius: None,
            quality,
            reason: Some(reason.into()),
        }
    }

    /// True when the reading carries a temperature.
    pub fn is_ok(&self) -> bool {
        self.quality == Quality::Ok && self.celsius.is_some()
    }
}

/// Everything recorded in one sample cycle.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// The idempotency key, unique across every outbox ever created (a UUIDv7:
    /// 48 bits of time and 74 random bits), used by every sink to deduplicate.
    pub id: Uuid,
    /// The logger's name (config `device_id`, default the hostname).
    pub device_id: String,
    /// When the cycle started, UTC.
    pub taken_at: Timestamp,
    /// Real or simulated.
    pub source: Source,
    /// One reading per mapped role, in mapping order.
    pub readings: Vec<Reading>,
    /// Derived from T1..T4.
    pub efficiency: Efficiency,
    /// The clock's state when the sample was taken (and whether `taken_at`
    /// was corrected since).
    pub clock: ClockStamp,
}

impl Sample {
    /// Builds a sample, minting a fresh key and computing the efficiency;
    /// `taken_at` is truncated to microseconds (what every store keeps).
    ///
    /// ```
    /// use hxlog::sample::{Reading, Sample, Source};
    /// let readings = vec![
    ///     Reading::ok("T1", None, 80.0),
    ///     Reading::ok("T2", None, 50.0),
    ///     Reading::ok("T3", None, 20.0),
    ///     Reading::ok("T4", None, 40.0),
    /// ];
    /// let s = Sample::new("hx-01", jiff::Timestamp::now(), Source::Mock, readings);
    /// assert_eq!(s.efficiency.hot_effectiveness, Some(0.5));
    /// ```
    pub fn new(
        device_id: impl Into<String>,
        taken_at: Timestamp,
        source: Source,
        readings: Vec<Reading>,
    ) -> Self {
        // The outbox and every sink keep microseconds: so does the sample.
        let taken_at = Timestamp::from_microsecond(taken_at.as_microsecond()).unwrap_or(taken_at);
        let mut sample = Sample {
            id: new_key(taken_at),
            device_id: device_id.into(),
            taken_at,
            source,
            readings,
            efficiency: Efficiency::default(),
            clock: ClockStamp::default(),
        };
        // A missing reading makes every figure that needs it `None`.
        let [t1, t2, t3, t4] = STANDARD_ROLES.map(|role| sample.celsius(role));
        sample.efficiency = Efficiency::compute(t1, t2, t3, t4);
        sample
    }

    /// The sample with its clock stamp (a sample is `synced` with no boot
    /// information until stamped).
    pub fn with_clock(mut self, clock: ClockStamp) -> Self {
        self.clock = clock;
        self
    }

    /// The reading for `role`, if the mapping has it.
    pub fn reading(&self, role: &str) -> Option<&Reading> {
        self.readings.iter().find(|r| r.role == role)
    }

    /// The temperature for `role`, if present and valid.
    pub fn celsius(&self, role: &str) -> Option<f64> {
        self.reading(role).and_then(|r| r.celsius)
    }

    /// Roles whose reading is missing.
    pub fn missing_roles(&self) -> Vec<&str> {
        self.readings
            .iter()
            .filter(|r| !r.is_ok())
            .map(|r| r.role.as_str())
            .collect()
    }
}

/// Mints a UUIDv7 whose time part is `taken_at` and whose 74 random bits make it
/// unique even across deleted and recreated outboxes.
pub fn new_key(taken_at: Timestamp) -> Uuid {
    let secs = taken_at.as_second().max(0) as u64;
    let nanos = taken_at.subsec_nanosecond().max(0) as u32;
    Uuid::new_v7(uuid::Timestamp::from_unix(uuid::NoContext, secs, nanos))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_never_carries_a_value() {
        let r = Reading::missing("T2", None, Quality::Ok, "x");
        assert_eq!(r.quality, Quality::ReadError);
        assert_eq!(r.celsius, None);
        assert!(!r.is_ok());
    }

    #[test]
    fn keys_are_unique_for_the_same_instant() {
        let t = Timestamp::from_second(1_800_000_000).unwrap();
        let a = new_key(t);
        let b = new_key(t);
        assert_ne!(a, b);
        assert_eq!(a.get_version_num(), 7);
    }

    #[test]
    fn quality_codes_round_trip_through_serde() {
        for q in Quality::ALL {
            let json = serde_json::to_string(&q).unwrap();
            assert_eq!(json, format!("\"{}\"", q.as_str()));
            let back: Quality = serde_json::from_str(&json).unwrap();
            assert_eq!(back, q);
        }
    }
}

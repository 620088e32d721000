//! The w1-therm sysfs reader: DS18B20-family sensors under `/sys/bus/w1/devices`.
//!
//! This module owns the sysfs layout (bus masters, sensor folders, phantom
//! `00-…` devices), the `w1_slave` and `temperature` formats, the scratchpad
//! decoding and CRC, and the decision of each reading's
//! [`Quality`]. A failed read is never a number: it is a missing reading whose
//! reason names the file and what was wrong.
//!
//! Each open+read of `w1_slave` or `temperature` starts a ~750 ms conversion on
//! real hardware, so an attempt reads exactly one file per sensor and the
//! sensors of a cycle are read concurrently (one scoped thread each). When a
//! bus master offers a writable `therm_bulk_read`, one `trigger` converts every
//! sensor at once and the `temperature` files are then read without waiting.
//!
//! It must not know about the outbox, config files or any sink, and it blocks:
//! run it off the async runtime.

use std::collections::HashMap;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;

use super::SensorSettings;
use crate::sample::{Quality, Reading};

/// The lowest temperature a DS18B20 reports, °C.
pub const MIN_CELSIUS: f64 = -55.0;
/// The highest temperature a DS18B20 reports, °C.
pub const MAX_CELSIUS: f64 = 125.0;

/// Raw power-on value of the 12-bit families (85.0 °C).
const POWER_ON_RAW: i16 = 0x0550;
/// Raw power-on value of the DS18S20 (85.0 °C in 0.5 °C steps).
const DS18S20_POWER_ON_RAW: i16 = 0x00aa;
/// Scratchpad byte 6 right after power-on, before any conversion.
const POWER_ON_BYTE6: u8 = 0x0c;
/// Raw value of a conversion that ran out of power (127.9375 °C).
const NO_POWER_RAW: i16 = 0x07ff;
/// `temperature` value the kernel prints for [`NO_POWER_RAW`] (2047 * 1000 / 16, truncated).
const NO_POWER_MILLI: i64 = 127_937;

const WIRING_HINT: &str = "check wiring and the 4.7 kΩ pull-up";

/// The result of reading or decoding one sensor: °C, or why there is no value.
type Decoded = Result<f64, (Quality, String)>;

/// The real 1-Wire bus: reads the mapped sensors through w1-therm sysfs files.
#[derive(Debug)]
pub struct W1Bus {
    settings: SensorSettings,
    /// Set once the bulk-read fallback has been logged at warn level.
    bulk_fallback_logged: AtomicBool,
    /// The quality of each role's previous reading, to log changes once.
    last_quality: Mutex<HashMap<String, Quality>>,
}

/// What `scan` found on the bus. It reads no temperatures.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BusScan {
    /// Temperature sensors of a known family, sorted by id.
    pub sensors: Vec<SensorInfo>,
    /// Phantom `00-…` devices, sorted: a bus-health warning (noise, long
    /// stubs, a weak pull-up), never sensors.
    pub phantoms: Vec<String>,
    /// The bus masters (`w1_bus_master*`), sorted by name.
    pub masters: Vec<MasterInfo>,
    /// `(role, id)` pairs of the mapping whose sensor folder is absent.
    pub missing_mapped: Vec<(String, String)>,
}

/// One temperature sensor present on the bus.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SensorInfo {
    /// The sysfs id, e.g. `28-00000a1b2c3d`.
    pub id: String,
    /// The family code (the id's first byte).
    pub family: u8,
    /// The chip, from [`family_kind`] (`"DS18B20"` etc).
    pub kind: &'static str,
    /// The role mapped to this sensor, if any.
    pub role: Option<String>,
    /// From the sensor's `ext_power` file when present: `true` = external
    /// power, `false` = parasite power.
    pub ext_power: Option<bool>,
    /// From the sensor's `resolution` file when present, in bits (9..=12).
    pub resolution: Option<u8>,
}

/// One bus master (`w1_bus_master*` folder).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MasterInfo {
    /// The folder name, e.g. `w1_bus_master1`.
    pub name: String,
    /// From `w1_master_slave_count` when readable (phantoms included).
    pub slave_count: Option<u32>,
    /// True when the master has a `therm_bulk_read` file we may open for writing.
    pub bulk_read: bool,
}

impl W1Bus {
    /// A reader for `settings`. Does no I/O: missing mapped sensors are
    /// reported by [`W1Bus::scan`] and by each read.
    pub fn new(settings: &SensorSettings) -> W1Bus {
        W1Bus {
            settings: settings.clone(),
            bulk_fallback_logged: AtomicBool::new(false),
            last_quality: Mutex::new(HashMap::new()),
        }
    }

    /// The mapped roles, in mapping order (the order of [`W1Bus::read_all`]).
    pub fn roles(&self) -> Vec<String> {
        self.settings.roles()
    }

    /// Reads every mapped role concurrently, one thread per sensor, and returns
    /// one reading per role in mapping order, calibration applied to valid
    /// readings. Uses `therm_bulk_read` when allowed and writable, else each
    /// sensor's `w1_slave`. Never fails: a failed read is a missing reading.
    ///
    /// The cycle lasts as long as its slowest sensor (about one conversion,
    /// plus one per retry); a read stuck in the kernel is bounded only by the
    /// w1 driver's own timeouts.
    pub fn read_all(&self) -> Vec<Reading> {
        let mapping = &self.settings.mapping;
        if mapping.is_empty() {
            return Vec::new();
        }
        let bulk = self.settings.bulk_read && self.trigger_bulk_read();
        let results: Vec<Decoded> = thread::scope(|scope| {
            let handles: Vec<_> = mapping
                .iter()
                .map(|(_, id)| {
                    thread::Builder::new()
                        .name(format!("w1 {id}"))
                        .spawn_scoped(scope, move || self.read_mapped(id, bulk))
                })
                .collect();
            handles
                .into_iter()
                .zip(mapping)
                .map(|(handle, (_, id))| match handle {
                    Ok(handle) => handle.join().unwrap_or_else(|_| {
                        Err((
                            Quality::ReadError,
                            format!("{}: reader thread panicked", self.sensor_dir(id).display()),
                        ))
                    }),
                    Err(e) => {
                        // Out of threads: still read, just not in parallel.
                        tracing::warn!(sensor = %id, error = %e, "cannot spawn a reader thread; reading inline");
                        self.read_mapped(id, bulk)
                    }
                })
                .collect()
        });
        mapping
            .iter()
            .zip(results)
            .map(|((role, id), result)| self.to_reading(role, id, result))
            .collect()
    }

    /// Lists the bus: sensors of known families, phantom `00-…` devices, bus
    /// masters and mapped sensors that are absent. Reads no temperatures.
    ///
    /// Fails only when the w1 root folder itself cannot be listed (no w1
    /// driver loaded, wrong path); the error names the folder.
    pub fn scan(&self) -> io::Result<BusScan> {
        let root = &self.settings.w1_root;
        let entries = fs::read_dir(root).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!(
                    "{}: {e} (is the w1-gpio overlay enabled and w1-therm loaded?)",
                    root.display()
                ),
            )
        })?;
        let mut names: Vec<String> = entries
            .filter_map(|entry| entry.ok())
            .filter_map(|entry| entry.file_name().into_string().ok())
            .collect();
        names.sort();

        let mut scan = BusScan {
            sensors: Vec::new(),
            phantoms: Vec::new(),
            masters: Vec::new(),
            missing_mapped: Vec::new(),
        };
        for name in names {
            let path = root.join(&name);
            if name.starts_with("w1_bus_master") {
                scan.masters.push(MasterInfo {
                    slave_count: read_trimmed(&path.join("w1_master_slave_count"))
                        .and_then(|s| s.parse().ok()),
                    bulk_read: bulk_read_writable(&path.join("therm_bulk_read")),
                    name,
                });
            } else if name.starts_with("00-") {
                scan.phantoms.push(name);
            } else if let Some((family, kind)) =
                parse_id(&name).and_then(|family| family_kind(family).map(|kind| (family, kind)))
                && path.is_dir()
            {
                scan.sensors.push(SensorInfo {
                    role: self
                        .settings
                        .mapping
                        .iter()
                        .find(|(_, id)| *id == name)
                        .map(|(role, _)| role.clone()),
                    ext_power: read_trimmed(&path.join("ext_power")).and_then(|s| {
                        match s.as_str() {
                            "1" => Some(true),
                            "0" => Some(false),
                            _ => None,
                        }
                    }),
                    resolution: read_trimmed(&path.join("resolution")).and_then(|s| s.parse().ok()),
                    id: name,
                    family,
                    kind,
                });
            }
            // Anything else (unknown families, driver files) is not ours.
        }
        scan.missing_mapped = self
            .settings
            .mapping
            .iter()
            .filter(|(_, id)| !self.sensor_dir(id).is_dir())
            .cloned()
            .collect();
        Ok(scan)
    }

    /// Reads one sensor's `w1_slave` with up to `retries` extra attempts,
    /// immediately (no sleeps). Calibration is NOT applied.
    ///
    /// A missing folder is [`Quality::NotFound`] at once (retrying cannot
    /// bring it back within the cycle).
    pub fn read_sensor(&self, id: &str) -> Result<f64, (Quality, String)> {
        self.read_mapped(id, false)
    }

    fn sensor_dir(&self, id: &str) -> PathBuf {
        self.settings.w1_root.join(id)
    }

    /// One sensor with retries; in bulk mode the first attempt reads the
    /// already-converted `temperature`, retries read `w1_slave`.
    fn read_mapped(&self, id: &str, bulk: bool) -> Decoded {
        let dir = self.sensor_dir(id);
        let family = match parse_id(id) {
            Some(family) if family_kind(family).is_some() => family,
            _ => {
                return Err((
                    Quality::ReadError,
                    format!(
                        "{}: not a 1-Wire temperature sensor id (expected family 10, 22, 28, 3b or 42, e.g. 28-00000a1b2c3d)",
                        dir.display()
                    ),
                ));
            }
        };
        let mut first = true;
        with_retries(self.settings.retries, || {
            let use_temperature = bulk && first;
            first = false;
            let result = read_once(&dir, family, use_temperature);
            if let Err((quality, reason)) = &result {
                tracing::debug!(sensor = %id, quality = %quality, reason = %reason, "sensor read attempt failed");
            }
            result
        })
    }

    /// Writes `trigger` to every master's `therm_bulk_read`. True when at
    /// least one trigger was accepted. Failures are logged (warn once, then debug).
    ///
    /// With several masters and only some triggers accepted, reading
    /// `temperature` is still right everywhere: on a master that was not
    /// triggered the driver simply converts that sensor on the read.
    fn trigger_bulk_read(&self) -> bool {
        let root = &self.settings.w1_root;
        let Ok(entries) = fs::read_dir(root) else {
            return false;
        };
        let mut triggered = false;
        let mut failures = Vec::new();
        for entry in entries.filter_map(|e| e.ok()) {
            if !entry
                .file_name()
                .to_string_lossy()
                .starts_with("w1_bus_master")
            {
                continue;
            }
            let path = entry.path().join("therm_bulk_read");
            if fs::symlink_metadata(&path).is_err() {
                continue; // this kernel or master has no bulk read
            }
            let written = fs::OpenOptions::new()
                .write(true)
                .open(&path)
                .and_then(|mut file| file.write_all(b"trigger\n"));
            match written {
                Ok(()) => triggered = true,
                Err(e) => failures.push(format!("{}: {e}", path.display())),
            }
        }
        if !failures.is_empty() {
            let error = failures.join("; ");
            if self.bulk_fallback_logged.swap(true, Ordering::Relaxed) {
                tracing::debug!(error = %error, "cannot trigger therm_bulk_read");
            } else {
                tracing::warn!(
                    error = %error,
                    "cannot trigger therm_bulk_read; reading each sensor's w1_slave instead (set bulk_read = false to silence)"
                );
            }
        }
        triggered
    }

    /// Applies calibration and turns a decode result into a reading; logs a
    /// role's quality when it changes.
    fn to_reading(&self, role: &str, id: &str, result: Decoded) -> Reading {
        let quality = match &result {
            Ok(_) => Quality::Ok,
            Err((quality, _)) => *quality,
        };
        let previous = self
            .last_quality
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .insert(role.to_string(), quality);
        match result {
            Ok(celsius) => {
                if previous.is_some_and(|q| q != Quality::Ok) {
                    tracing::info!(sensor = %id, role = %role, "sensor reading recovered");
                }
                let calibrated = celsius + self.settings.offset(role, id);
                // Round away float noise from the offset (1/16 °C needs 4 decimals).
                let calibrated = (calibrated * 1e6).round() / 1e6;
                Reading::ok(role, Some(id.to_string()), calibrated)
            }
            Err((quality, reason)) => {
                if previous == Some(quality) {
                    tracing::debug!(sensor = %id, role = %role, quality = %quality, reason = %reason, "sensor reading still missing");
                } else {
                    tracing::warn!(sensor = %id, role = %role, quality = %quality, reason = %reason, "sensor reading missing");
                }
                Reading::missing(role, Some(id.to_string()), quality, reason)
            }
        }
    }
}

/// True when `root` looks like a live w1 bus (it has a `w1_bus_master*`
/// entry). Used to resolve `sensor_source = "auto"`.
pub fn bus_present(root: &Path) -> bool {
    fs::read_dir(root).is_ok_and(|entries| {
        entries
            .filter_map(|e| e.ok())
            .any(|e| e.file_name().to_string_lossy().starts_with("w1_bus_master"))
    })
}

/// The chip of a temperature-sensor family code, `None` for other families.
///
/// ```
/// use hxlog::sensors::w1::family_kind;
/// assert_eq!(family_kind(0x28), Some("DS18B20"));
/// assert_eq!(family_kind(0x01), None);
/// ```
pub fn family_kind(family: u8) -> Option<&'static str> {
    match family {
        0x10 => Some("DS18S20"),
        0x22 => Some("DS1822"),
        0x28 => Some("DS18B20"),
        0x3b => Some("DS1825/MAX31850K"),
        0x42 => Some("DS28EA00"),
        _ => None,
    }
}

/// The family code of a sysfs id (`28-00000a1b2c3d` → `0x28`), `None` when the
/// name is not `hh-serial`.
pub fn parse_id(id: &str) -> Option<u8> {
    let (family, serial) = id.split_once('-')?;
    if serial.is_empty() {
        return None;
    }
    hex_byte(family)
}

/// Dallas/Maxim CRC-8 (polynomial x⁸+x⁵+x⁴+1, 0x31 reflected = 0x8C, initial 0).
/// A block followed by its CRC has CRC 0.
///
/// ```
/// // the ROM example of Maxim application note 27
/// assert_eq!(hxlog::sensors::w1::crc8(&[0x02, 0x1c, 0xb8, 0x01, 0, 0, 0]), 0xa2);
/// ```
pub fn crc8(bytes: &[u8]) -> u8 {
    let mut crc = 0u8;
    for &byte in bytes {
        crc ^= byte;
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0x8c
            } else {
                crc >> 1
            };
        }
    }
    crc
}

/// Parses a `w1_slave` file and decodes its scratchpad (see
/// [`decode_scratchpad`]); the kernel's `t=` is required but not used, as it
/// is truncated. Errors carry the quality and what was wrong, without the path.
///
/// ```
/// use hxlog::sensors::w1::parse_w1_slave;
/// let text = "72 01 4b 46 7f ff 0e 10 57 : crc=57 YES\n72 01 4b 46 7f ff 0e 10 57 t=23125\n";
/// assert_eq!(parse_w1_slave(0x28, text), Ok(23.125));
/// ```
pub fn parse_w1_slave(family: u8, text: &str) -> Result<f64, (Quality, String)> {
    if text.trim().is_empty() {
        return Err((
            Quality::Empty,
            format!("empty (the kernel gives up after repeated CRC failures; {WIRING_HINT})"),
        ));
    }
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let [line1, line2] = lines[..] else {
        return Err(garbage(
            &format!("expected 2 lines, found {}", lines.len()),
            text,
        ));
    };
    let Some((bytes1, status)) = line1.split_once(':') else {
        return Err(garbage("line 1 has no ': crc='", line1));
    };
    let Some(scratchpad) = parse_bytes(bytes1) else {
        return Err(garbage("line 1 does not start with 9 hex bytes", line1));
    };
    let (crc, verdict) = match status.split_whitespace().collect::<Vec<_>>()[..] {
        [crc, verdict] => (crc, verdict),
        _ => return Err(garbage("line 1 does not end in 'crc=XX YES|NO'", line1)),
    };
    if crc
        .strip_prefix("crc=")
        .is_none_or(|hex| hex_byte(hex).is_none())
    {
        return Err(garbage("line 1 has a malformed crc=", line1));
    }
    match verdict {
        "YES" => {}
        "NO" => {
            return Err((
                Quality::CrcNo,
                format!("{crc} NO (kernel CRC check failed; {WIRING_HINT})"),
            ));
        }
        _ => return Err(garbage("line 1 does not end in YES or NO", line1)),
    }
    let Some((bytes2, t)) = line2.split_once("t=") else {
        return Err(garbage("line 2 has no t=", line2));
    };
    if t.trim().parse::<i64>().is_err() {
        return Err(garbage("line 2 has a malformed t=", line2));
    }
    if parse_bytes(bytes2) != Some(scratchpad) {
        return Err(garbage("line 2 bytes differ from line 1", line2));
    }
    decode_scratchpad(family, &scratchpad)
}

/// Decodes a 9-byte scratchpad to °C, judging it on the way.
///
/// * all zero → [`Quality::AllZero`] (bad contact; it passes the CRC);
/// * CRC-8 of bytes 0..8 ≠ byte 8 → [`Quality::CrcMismatch`];
/// * DS18B20/DS1822/DS1825/DS28EA00: bytes 0–1 signed LE / 16, with the bits
///   undefined at the configured resolution (byte 4) cleared; raw `0x0550`
///   with byte 6 = `0x0c` → [`Quality::PowerOnReset`] (a genuine 85.0 °C has
///   another byte 6 and is valid); raw `0x07ff` → [`Quality::InsufficientPower`];
/// * DS18S20: extended resolution from COUNT_REMAIN (byte 6) and COUNT_PER_C
///   (byte 7), plain 0.5 °C when byte 7 is 0; raw `0x00aa` with byte 6 =
///   `0x0c` → [`Quality::PowerOnReset`];
/// * outside −55…125 °C → [`Quality::OutOfRange`];
/// * a family that is not a temperature sensor → [`Quality::ReadError`].
///
/// ```
/// use hxlog::sensors::w1::decode_scratchpad;
/// let sp = [0xfb, 0xff, 0x4b, 0x46, 0x7f, 0xff, 0x05, 0x10, 0xb4];
/// assert_eq!(decode_scratchpad(0x28, &sp), Ok(-0.3125));
/// ```
pub fn decode_scratchpad(family: u8, sp: &[u8; 9]) -> Result<f64, (Quality, String)> {
    if sp.iter().all(|&b| b == 0) {
        return Err((
            Quality::AllZero,
            "all-zero scratchpad (bad contact or data line held low)".to_string(),
        ));
    }
    let computed = crc8(&sp[..8]);
    if computed != sp[8] {
        return Err((
            Quality::CrcMismatch,
            format!(
                "scratchpad CRC byte is {:02x} but the bytes give {computed:02x} (corrupted transfer; {WIRING_HINT})",
                sp[8]
            ),
        ));
    }
    let Some(kind) = family_kind(family) else {
        return Err((
            Quality::ReadError,
            format!("family {family:02x} is not a temperature sensor"),
        ));
    };
    let raw = i16::from_le_bytes([sp[0], sp[1]]);
    let celsius = if family == 0x10 {
        if raw == DS18S20_POWER_ON_RAW && sp[6] == POWER_ON_BYTE6 {
            return Err(power_on_reset(kind));
        }
        ds18s20_celsius(raw, sp[6], sp[7])
    } else {
        if raw == POWER_ON_RAW && sp[6] == POWER_ON_BYTE6 {
            return Err(power_on_reset(kind));
        }
        if raw == NO_POWER_RAW {
            return Err(insufficient_power());
        }
        f64::from(mask_undefined_bits(family, raw, sp[4])) / 16.0
    };
    in_range(celsius)
}

/// Parses a `temperature` attribute: whole millidegrees, which the kernel
/// truncates from the sensor's 1/16 °C steps; the value is snapped back to the
/// nearest 1/16 °C (`23062` → 23.0625).
///
/// It cannot tell the power-on value 85.0 °C from a genuine one, nor an
/// all-zero scratchpad from 0 °C: the reader confirms those two with `w1_slave`.
///
/// ```
/// use hxlog::sensors::w1::parse_temperature_file;
/// assert_eq!(parse_temperature_file("23062\n"), Ok(23.0625));
/// ```
pub fn parse_temperature_file(text: &str) -> Result<f64, (Quality, String)> {
    let text = text.trim();
    if text.is_empty() {
        return Err((
            Quality::Empty,
            format!("empty (the kernel could not read the sensor; {WIRING_HINT})"),
        ));
    }
    let Ok(milli) = text.parse::<i64>() else {
        return Err(garbage("not a whole number of millidegrees", text));
    };
    if milli == NO_POWER_MILLI {
        return Err(insufficient_power());
    }
    in_range((milli as f64 / 62.5).round() / 16.0)
}

/// One attempt at one sensor: exactly one conversion-starting file read
/// (plus a `w1_slave` confirmation when `temperature` says exactly 0 or 85 °C).
fn read_once(dir: &Path, family: u8, use_temperature: bool) -> Decoded {
    if !dir.is_dir() {
        return Err(not_found(dir));
    }
    if use_temperature {
        let path = dir.join("temperature");
        if path.is_file() {
            let celsius = parse_temperature_file(&read_text(dir, &path)?)
                .map_err(|(q, why)| (q, format!("{}: {why}", path.display())))?;
            if celsius != 85.0 && celsius != 0.0 {
                return Ok(celsius);
            }
            // 85.0 may be the power-on value and 0.0 an all-zero scratchpad:
            // only the scratchpad tells, so fall through to w1_slave.
        }
    }
    let path = dir.join("w1_slave");
    parse_w1_slave(family, &read_text(dir, &path)?)
        .map_err(|(q, why)| (q, format!("{}: {why}", path.display())))
}

/// Runs `attempt` once plus up to `retries` more times while it fails,
/// immediately; a [`Quality::NotFound`] is final. The last error notes the
/// number of attempts when there was more than one.
fn with_retries(retries: u32, mut attempt: impl FnMut() -> Decoded) -> Decoded {
    let mut attempts = 1;
    loop {
        match attempt() {
            Ok(celsius) => return Ok(celsius),
            Err((quality, reason)) if quality == Quality::NotFound || attempts > retries => {
                let reason = if attempts > 1 {
                    format!("{reason} ({attempts} attempts)")
                } else {
                    reason
                };
                return Err((quality, reason));
            }
            Err(_) => attempts += 1,
        }
    }
}

/// Reads a sysfs file as text; a missing sensor folder is NotFound, any other
/// I/O error a ReadError, bytes that are not UTF-8 Garbage.
fn read_text(dir: &Path, path: &Path) -> Result<String, (Quality, String)> {
    match fs::read(path) {
        Ok(bytes) => String::from_utf8(bytes)
            .map_err(|_| (Quality::Garbage, format!("{}: not text", path.display()))),
        Err(_) if !dir.is_dir() => Err(not_found(dir)),
        Err(e) => Err((Quality::ReadError, format!("{}: {e}", path.display()))),
    }
}

fn not_found(dir: &Path) -> (Quality, String) {
    (
        Quality::NotFound,
        format!(
            "{}: sensor folder not found (unplugged, or gone from the bus; {WIRING_HINT})",
            dir.display()
        ),
    )
}

fn garbage(what: &str, text: &str) -> (Quality, String) {
    const MAX: usize = 80;
    let snippet: String = text.chars().take(MAX).collect();
    let more = if text.chars().count() > MAX {
        "…"
    } else {
        ""
    };
    (Quality::Garbage, format!("{what}: {snippet:?}{more}"))
}

fn power_on_reset(kind: &str) -> (Quality, String) {
    (
        Quality::PowerOnReset,
        format!(
            "{kind} power-on value 85.0 °C with byte 6 = 0c: no conversion happened (the sensor reset; check its power supply)"
        ),
    )
}

fn insufficient_power() -> (Quality, String) {
    (
        Quality::InsufficientPower,
        "raw 0x07ff (127.94 °C): not enough power to convert (parasite power needs a strong pull-up; wire VDD to 3.3 V)".to_string(),
    )
}

fn in_range(celsius: f64) -> Decoded {
    if (MIN_CELSIUS..=MAX_CELSIUS).contains(&celsius) {
        Ok(celsius)
    } else {
        Err((
            Quality::OutOfRange,
            format!("{celsius} °C is outside the sensor range −55…125 °C"),
        ))
    }
}

/// DS18S20 extended resolution: `TEMP_READ − 0.25 + (COUNT_PER_C − COUNT_REMAIN) / COUNT_PER_C`,
/// with TEMP_READ the raw value with bit 0 truncated; plain 0.5 °C steps when
/// COUNT_PER_C is 0 (or COUNT_REMAIN exceeds it, which no genuine chip reports).
fn ds18s20_celsius(raw: i16, count_remain: u8, count_per_c: u8) -> f64 {
    if count_per_c == 0 || count_remain > count_per_c {
        return f64::from(raw) / 2.0;
    }
    let temp_read = f64::from(raw >> 1);
    temp_read - 0.25 + f64::from(count_per_c - count_remain) / f64::from(count_per_c)
}

/// Clears the low bits the datasheet calls undefined at 9, 10 or 11 bits,
/// when byte 4 is a recognisable configuration register
/// (`0 R1 R0 1 1 1 1 1`; on the DS1825 the low nibble holds address pins).
fn mask_undefined_bits(family: u8, raw: i16, config: u8) -> i16 {
    let recognised = match family {
        0x3b => config & 0x90 == 0x10,
        _ => config & 0x9f == 0x1f,
    };
    if !recognised {
        return raw;
    }
    let undefined = 3 - ((config >> 5) & 0x03);
    raw & !((1i16 << undefined) - 1)
}

/// Nine space-separated hex bytes, or `None`.
fn parse_bytes(text: &str) -> Option<[u8; 9]> {
    let mut out = [0u8; 9];
    let mut words = text.split_whitespace();
    for byte in out.iter_mut() {
        *byte = hex_byte(words.next()?)?;
    }
    words.next().is_none().then_some(out)
}

/// Exactly two hex digits as a byte (no sign, unlike `from_str_radix`).
fn hex_byte(text: &str) -> Option<u8> {
    if text.len() != 2 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u8::from_str_radix(text, 16).ok()
}

/// A trimmed small sysfs attribute, `None` when absent or unreadable.
fn read_trimmed(path: &Path) -> Option<String> {
    fs::read_to_string(path).ok().map(|s| s.trim().to_string())
}

/// True when `path` is a regular file we can open for writing. Opening a sysfs
/// attribute does not trigger anything; only a write does.
fn bulk_read_writable(path: &Path) -> bool {
    path.is_file() && fs::OpenOptions::new().write(true).open(path).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use tempfile::TempDir;

    /// A `w1_slave` text as the kernel writes it for scratchpad bytes 0..8,
    /// with a correct CRC byte and verdict YES.
    fn slave(b: [u8; 8]) -> String {
        let mut sp = [0u8; 9];
        sp[..8].copy_from_slice(&b);
        sp[8] = crc8(&b);
        slave_raw(sp, "YES")
    }

    /// A `w1_slave` text for exactly these nine bytes and verdict.
    fn slave_raw(sp: [u8; 9], verdict: &str) -> String {
        let hex: Vec<String> = sp.iter().map(|b| format!("{b:02x}")).collect();
        let hex = hex.join(" ");
        let milli = i32::from(i16::from_le_bytes([sp[0], sp[1]])) * 1000 / 16;
        format!(
            "{hex} : crc={:02x} {verdict}\n{hex} t={milli}\n",
            crc8(&sp[..8])
        )
    }

    /// A DS18B20 scratchpad at 12 bits for a raw value and byte 6.
    fn b20(raw: i16, byte6: u8) -> [u8; 8] {
        let [lo, hi] = raw.to_le_bytes();
        [lo, hi, 0x4b, 0x46, 0x7f, 0xff, byte6, 0x10]
    }

    /// A DS18S20 scratchpad for a raw value, COUNT_REMAIN and COUNT_PER_C.
    fn s20(raw: i16, remain: u8, per_c: u8) -> [u8; 8] {
        let [lo, hi] = raw.to_le_bytes();
        [lo, hi, 0x4b, 0x46, 0xff, 0xff, remain, per_c]
    }

    fn check(family: u8, text: &str, expected: Result<f64, Quality>) {
        let got = parse_w1_slave(family, text);
        match (&got, expected) {
            (Ok(g), Ok(x)) => assert_eq!(*g, x, "family {family:02x}, text {text:?}"),
            (Err((q, why)), Err(x)) => {
                assert_eq!(*q, x, "family {family:02x}, text {text:?}: {why}");
                assert!(!why.is_empty() && !why.ends_with('.'), "reason {why:?}");
                assert!(
                    why.starts_with(|c: char| !c.is_ascii_uppercase()) || why.starts_with("DS"),
                    "reason {why:?}"
                );
            }
            _ => panic!("family {family:02x}, text {text:?}: got {got:?}, expected {expected:?}"),
        }
    }

    #[test]
    fn w1_slave_table() {
        use Quality::{
            AllZero, CrcMismatch, CrcNo, Empty, Garbage, InsufficientPower, OutOfRange,
            PowerOnReset, ReadError,
        };
        // the kernel's own output, byte for byte
        check(
            0x28,
            "72 01 4b 46 7f ff 0e 10 57 : crc=57 YES\n72 01 4b 46 7f ff 0e 10 57 t=23125\n",
            Ok(23.125),
        );
        check(0x28, &slave(b20(0x0172, 0x0e)), Ok(23.125));
        check(0x28, &slave(b20(-5, 0x05)), Ok(-0.3125));
        check(0x28, &slave(b20(0, 0x10)), Ok(0.0));
        check(0x28, &slave(b20(0x0191, 0x0f)), Ok(25.0625));
        // 85.0 after a real conversion (byte 6 is not 0c) is a valid reading
        check(0x28, &slave(b20(0x0550, 0x10)), Ok(85.0));
        // the power-on scratchpad, as a freshly reset DS18B20 reports it
        check(
            0x28,
            "50 05 4b 46 7f ff 0c 10 1c : crc=1c YES\n50 05 4b 46 7f ff 0c 10 1c t=85000\n",
            Err(PowerOnReset),
        );
        check(0x28, &slave(b20(0x0550, 0x0c)), Err(PowerOnReset));
        check(0x28, &slave(b20(0x07ff, 0x01)), Err(InsufficientPower));
        check(0x28, &slave(b20(-880, 0x10)), Ok(-55.0));
        check(0x28, &slave(b20(2000, 0x10)), Ok(125.0));
        check(0x28, &slave(b20(2001, 0x0f)), Err(OutOfRange));
        check(0x28, &slave(b20(-881, 0x0f)), Err(OutOfRange));
        // the kernel says NO
        check(
            0x28,
            "72 01 4b 46 7f ff 0e 10 57 : crc=57 NO\n72 01 4b 46 7f ff 0e 10 57 t=23125\n",
            Err(CrcNo),
        );
        // the kernel says YES but the CRC byte does not match the bytes
        check(
            0x28,
            &slave_raw(
                [0x72, 0x01, 0x4b, 0x46, 0x7f, 0xff, 0x0e, 0x10, 0x58],
                "YES",
            ),
            Err(CrcMismatch),
        );
        check(
            0x28,
            &slave_raw(
                [0x73, 0x01, 0x4b, 0x46, 0x7f, 0xff, 0x0e, 0x10, 0x57],
                "YES",
            ),
            Err(CrcMismatch),
        );
        check(0x28, "", Err(Empty));
        check(0x28, "\n", Err(Empty));
        check(
            0x28,
            "00 00 00 00 00 00 00 00 00 : crc=00 YES\n00 00 00 00 00 00 00 00 00 t=0\n",
            Err(AllZero),
        );
        check(
            0x10,
            "00 00 00 00 00 00 00 00 00 : crc=00 YES\n00 00 00 00 00 00 00 00 00 t=0\n",
            Err(AllZero),
        );
        // garbage of every kind
        check(
            0x28,
            "72 01 4b 46 7f ff 0e 10 57 : crc=57 YES\n",
            Err(Garbage),
        );
        check(
            0x28,
            "72 01 4b 46 7f ff 0e 10 : crc=57 YES\n72 01 4b 46 7f ff 0e 10 t=23125\n",
            Err(Garbage),
        );
        check(
            0x28,
            "72 01 4b 46 7f ff 0e 10 57 00 : crc=57 YES\n72 01 4b 46 7f ff 0e 10 57 00 t=23125\n",
            Err(Garbage),
        );
        check(
            0x28,
            "72 01 4b 46 7f zz 0e 10 57 : crc=57 YES\n72 01 4b 46 7f zz 0e 10 57 t=23125\n",
            Err(Garbage),
        );
        check(
            0x28,
            "72 01 4b 46 7f +f 0e 10 57 : crc=57 YES\n72 01 4b 46 7f +f 0e 10 57 t=23125\n",
            Err(Garbage),
        );
        check(
            0x28,
            "72 01 4b 46 7f ff 0e 10 57 : crc=57 YES\n72 01 4b 46 7f ff 0e 10 57\n",
            Err(Garbage),
        );
        check(
            0x28,
            "72 01 4b 46 7f ff 0e 10 57 : crc=57 YES\n72 01 4b 46 7f ff 0e 10 57 t=\n",
            Err(Garbage),
        );
        check(
            0x28,
            "72 01 4b 46 7f ff 0e 10 57 : crc=57 MAYBE\n72 01 4b 46 7f ff 0e 10 57 t=23125\n",
            Err(Garbage),
        );
        check(
            0x28,
            "72 01 4b 46 7f ff 0e 10 57 : crc=5 YES\n72 01 4b 46 7f ff 0e 10 57 t=23125\n",
            Err(Garbage),
        );
        check(
            0x28,
            "72 01 4b 46 7f ff 0e 10 57 crc=57 YES\n72 01 4b 46 7f ff 0e 10 57 t=23125\n",
            Err(Garbage),
        );
        check(
            0x28,
            "72 01 4b 46 7f ff 0e 10 57 : crc=57 YES\n50 05 4b 46 7f ff 0c 10 1c t=85000\n",
            Err(Garbage),
        );
        check(
            0x28,
            "72 01 4b 46 7f ff 0e 10 57 : crc=57 YES\n72 01 4b 46 7f ff 0e 10 57 t=23125\nextra\n",
            Err(Garbage),
        );
        check(0x28, "hello world", Err(Garbage));
        check(0x28, "\u{0}\u{0}\u{0}", Err(Garbage));
        // DS18S20: 0.5 °C steps refined by COUNT_REMAIN / COUNT_PER_C
        check(0x10, &slave(s20(0x0032, 0x0c, 0x10)), Ok(25.0));
        check(0x10, &slave(s20(0x0032, 0x07, 0x10)), Ok(25.3125));
        check(0x10, &slave(s20(0x0033, 0x0c, 0x10)), Ok(25.0));
        check(0x10, &slave(s20(-50, 0x0a, 0x10)), Ok(-24.875));
        check(0x10, &slave(s20(-1, 0x0f, 0x10)), Ok(-1.1875));
        check(0x10, &slave(s20(0x0033, 0x07, 0x00)), Ok(25.5));
        check(0x10, &slave(s20(-1, 0x07, 0x00)), Ok(-0.5));
        check(0x10, &slave(s20(0x00aa, 0x0c, 0x10)), Err(PowerOnReset));
        check(0x10, &slave(s20(0x00aa, 0x0b, 0x10)), Ok(85.0625));
        check(0x10, &slave(s20(0x00fa, 0x0c, 0x10)), Ok(125.0));
        check(0x10, &slave(s20(0x00fb, 0x00, 0x10)), Err(OutOfRange));
        // DS1822, DS1825 and DS28EA00 decode like the DS18B20
        check(0x22, &slave(b20(0x0191, 0x0f)), Ok(25.0625));
        check(0x22, &slave(b20(-5, 0x05)), Ok(-0.3125));
        check(0x22, &slave(b20(0x0550, 0x0c)), Err(PowerOnReset));
        check(
            0x3b,
            &slave([0x91, 0x01, 0x4b, 0x46, 0x70, 0xff, 0x0f, 0x10]),
            Ok(25.0625),
        );
        check(0x42, &slave(b20(0x0191, 0x0f)), Ok(25.0625));
        // lower resolutions: the undefined low bits are cleared
        check(
            0x28,
            &slave([0x97, 0x01, 0x4b, 0x46, 0x1f, 0xff, 0x09, 0x10]),
            Ok(25.0),
        ); // 9 bits
        check(
            0x28,
            &slave([0x97, 0x01, 0x4b, 0x46, 0x3f, 0xff, 0x09, 0x10]),
            Ok(25.25),
        ); // 10 bits
        check(
            0x28,
            &slave([0x97, 0x01, 0x4b, 0x46, 0x5f, 0xff, 0x09, 0x10]),
            Ok(25.375),
        ); // 11 bits
        check(
            0x28,
            &slave([0x97, 0x01, 0x4b, 0x46, 0x7f, 0xff, 0x09, 0x10]),
            Ok(25.4375),
        ); // 12 bits
        check(
            0x28,
            &slave([0xf8, 0xff, 0x4b, 0x46, 0x1f, 0xff, 0x09, 0x10]),
            Ok(-0.5),
        ); // 9 bits, negative
        check(
            0x3b,
            &slave([0x97, 0x01, 0x4b, 0x46, 0x10, 0xff, 0x09, 0x10]),
            Ok(25.0),
        ); // DS1825 9 bits, address 0
        // not a temperature sensor
        check(0x3a, &slave(b20(0x0191, 0x0f)), Err(ReadError));
    }

    fn check_temperature(text: &str, expected: Result<f64, Quality>) {
        let got = parse_temperature_file(text);
        match (&got, expected) {
            (Ok(g), Ok(x)) => assert_eq!(*g, x, "text {text:?}"),
            (Err((q, why)), Err(x)) => assert_eq!(*q, x, "text {text:?}: {why}"),
            _ => panic!("text {text:?}: got {got:?}, expected {expected:?}"),
        }
    }

    #[test]
    fn temperature_file_table() {
        use Quality::{Empty, Garbage, InsufficientPower, OutOfRange};
        check_temperature("23125\n", Ok(23.125));
        check_temperature("23062\n", Ok(23.0625)); // the kernel truncated 23062.5
        check_temperature("-312\n", Ok(-0.3125));
        check_temperature("-62\n", Ok(-0.0625));
        check_temperature("0\n", Ok(0.0));
        check_temperature("85000\n", Ok(85.0)); // the reader confirms this one with w1_slave
        check_temperature("-55000\n", Ok(-55.0));
        check_temperature("125000\n", Ok(125.0));
        check_temperature("125062\n", Err(OutOfRange));
        check_temperature("-55062\n", Err(OutOfRange));
        check_temperature("127937\n", Err(InsufficientPower));
        check_temperature("", Err(Empty));
        check_temperature("\n", Err(Empty));
        check_temperature("23.125\n", Err(Garbage));
        check_temperature("t=23125\n", Err(Garbage));
    }

    #[test]
    fn crc8_vectors() {
        let check = |bytes: &[u8], expected: u8| assert_eq!(crc8(bytes), expected, "{bytes:02x?}");
        // Maxim application note 27, the ROM example
        check(&[0x02, 0x1c, 0xb8, 0x01, 0x00, 0x00, 0x00], 0xa2);
        // scratchpads the kernel accepted (crc=.. YES)
        check(&[0x72, 0x01, 0x4b, 0x46, 0x7f, 0xff, 0x0e, 0x10], 0x57);
        check(&[0x50, 0x05, 0x4b, 0x46, 0x7f, 0xff, 0x0c, 0x10], 0x1c);
        check(&[], 0x00);
        check(&[0u8; 8], 0x00);
        // a block followed by its CRC checks to 0
        check(&[0x02, 0x1c, 0xb8, 0x01, 0x00, 0x00, 0x00, 0xa2], 0x00);
        check(
            &[0x72, 0x01, 0x4b, 0x46, 0x7f, 0xff, 0x0e, 0x10, 0x57],
            0x00,
        );
    }

    #[test]
    fn ids_and_families() {
        let check = |id: &str, expected: Option<(u8, &str)>| {
            let got = parse_id(id).and_then(|f| family_kind(f).map(|k| (f, k)));
            assert_eq!(got, expected, "{id}");
        };
        check("28-00000a1b2c3d", Some((0x28, "DS18B20")));
        check("10-000802b4ba0c", Some((0x10, "DS18S20")));
        check("22-000000123456", Some((0x22, "DS1822")));
        check("3b-000000123456", Some((0x3b, "DS1825/MAX31850K")));
        check("42-000000123456", Some((0x42, "DS28EA00")));
        check("3a-000000123456", None); // DS2413 switch
        check("00-400000000000", None);
        check("w1_bus_master1", None);
        check("28-", None);
        check("+8-000000000001", None);
        check("28000000000001", None);
    }

    #[test]
    fn retries_are_bounded_and_immediate() {
        let check = |retries: u32, script: Vec<Decoded>, expected: Decoded, calls: usize| {
            let mut script = script.into_iter();
            let mut n = 0;
            let got = with_retries(retries, || {
                n += 1;
                script.next().expect("attempted more often than scripted")
            });
            assert_eq!(got, expected);
            assert_eq!(n, calls);
        };
        let crc = || Err((Quality::CrcNo, "x: crc=57 NO".to_string()));
        check(2, vec![crc(), crc(), Ok(20.0)], Ok(20.0), 3);
        check(2, vec![Ok(20.0)], Ok(20.0), 1);
        check(
            2,
            vec![crc(), crc(), crc()],
            Err((Quality::CrcNo, "x: crc=57 NO (3 attempts)".to_string())),
            3,
        );
        check(
            0,
            vec![crc()],
            Err((Quality::CrcNo, "x: crc=57 NO".to_string())),
            1,
        );
        // a vanished folder is not retried
        check(
            5,
            vec![Err((Quality::NotFound, "gone".to_string()))],
            Err((Quality::NotFound, "gone".to_string())),
            1,
        );
        // the last failure is the one reported
        check(
            1,
            vec![crc(), Err((Quality::Empty, "x: empty".to_string()))],
            Err((Quality::Empty, "x: empty (2 attempts)".to_string())),
            2,
        );
    }

    /// A fake `/sys/bus/w1/devices`.
    struct Tree {
        dir: TempDir,
    }

    impl Tree {
        fn new() -> Self {
            let tree = Tree {
                dir: TempDir::new().unwrap(),
            };
            tree.file("w1_bus_master1/w1_master_slave_count", "4\n");
            tree
        }

        fn file(&self, rel: &str, contents: &str) {
            let path = self.dir.path().join(rel);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(path, contents).unwrap();
        }

        fn read(&self, rel: &str) -> String {
            fs::read_to_string(self.dir.path().join(rel)).unwrap()
        }

        fn sensor(&self, id: &str, w1_slave: &str) {
            self.file(&format!("{id}/w1_slave"), w1_slave);
        }

        fn path(&self, rel: &str) -> String {
            self.dir.path().join(rel).display().to_string()
        }

        fn settings(&self, mapping: &[(&str, &str)]) -> SensorSettings {
            SensorSettings {
                w1_root: self.dir.path().to_path_buf(),
                mapping: mapping
                    .iter()
                    .map(|(role, id)| (role.to_string(), id.to_string()))
                    .collect(),
                calibration: BTreeMap::new(),
                retries: 2,
                bulk_read: true,
            }
        }
    }

    const FOUR: [(&str, &str); 4] = [
        ("T1", "28-000000000001"),
        ("T2", "28-000000000002"),
        ("T3", "28-000000000003"),
        ("T4", "28-000000000004"),
    ];

    /// (role, celsius, quality) of each reading, for compact assertions.
    fn summary(readings: &[Reading]) -> Vec<(String, Option<f64>, Quality)> {
        readings
            .iter()
            .map(|r| (r.role.clone(), r.celsius, r.quality))
            .collect()
    }

    fn expect(rows: &[(&str, Option<f64>, Quality)]) -> Vec<(String, Option<f64>, Quality)> {
        rows.iter()
            .map(|(r, c, q)| (r.to_string(), *c, *q))
            .collect()
    }

    #[test]
    fn scan_of_a_fake_tree() {
        let tree = Tree::new();
        tree.file("w1_bus_master1/therm_bulk_read", "0\n");
        fs::create_dir_all(tree.dir.path().join("w1_bus_master2/therm_bulk_read")).unwrap();
        tree.sensor("28-000000000001", &slave(b20(0x0172, 0x0e)));
        tree.file("28-000000000001/ext_power", "1\n");
        tree.file("28-000000000001/resolution", "12\n");
        tree.sensor("10-000000000009", &slave(s20(0x0032, 0x0c, 0x10)));
        tree.file("10-000000000009/ext_power", "0\n");
        tree.sensor("3a-000000000005", "");
        fs::create_dir_all(tree.dir.path().join("00-800000000000")).unwrap();
        fs::create_dir_all(tree.dir.path().join("00-400000000000")).unwrap();
        let bus =
            W1Bus::new(&tree.settings(&[("T1", "28-000000000001"), ("T2", "28-000000000002")]));
        let scan = bus.scan().unwrap();
        assert_eq!(
            scan,
            BusScan {
                sensors: vec![
                    SensorInfo {
                        id: "10-000000000009".into(),
                        family: 0x10,
                        kind: "DS18S20",
                        role: None,
                        ext_power: Some(false),
                        resolution: None,
                    },
                    SensorInfo {
                        id: "28-000000000001".into(),
                        family: 0x28,
                        kind: "DS18B20",
                        role: Some("T1".into()),
                        ext_power: Some(true),
                        resolution: Some(12),
                    },
                ],
                phantoms: vec!["00-400000000000".into(), "00-800000000000".into()],
                masters: vec![
                    MasterInfo {
                        name: "w1_bus_master1".into(),
                        slave_count: Some(4),
                        bulk_read: true,
                    },
                    MasterInfo {
                        name: "w1_bus_master2".into(),
                        slave_count: None,
                        bulk_read: false,
                    },
                ],
                missing_mapped: vec![("T2".into(), "28-000000000002".into())],
            }
        );
        // scanning reads no temperatures: the bulk trigger was not written
        assert_eq!(tree.read("w1_bus_master1/therm_bulk_read"), "0\n");
        assert!(bus_present(tree.dir.path()));
    }

    #[test]
    fn scan_without_a_bus_names_the_folder() {
        let tree = Tree::new();
        let root = tree.dir.path().join("nowhere");
        let bus = W1Bus::new(&SensorSettings {
            w1_root: root.clone(),
            ..SensorSettings::default()
        });
        let err = bus.scan().unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
        assert!(
            err.to_string().contains(&root.display().to_string()),
            "{err}"
        );
        assert!(!bus_present(&root));
        // no mapping, no bus: a cycle is empty, not an error
        assert_eq!(bus.read_all(), vec![]);
    }

    #[test]
    fn read_all_reports_missing_and_garbage_in_mapping_order() {
        let tree = Tree::new();
        tree.sensor("28-000000000001", &slave(b20(0x0172, 0x0e)));
        // 28-000000000002 is not on the bus
        tree.sensor(
            "28-000000000003",
            "72 01 4b 46 7f ff 0e 10 57 : crc=57 YES\n",
        );
        tree.sensor("28-000000000004", &slave(b20(-5, 0x05)));
        let bus = W1Bus::new(&tree.settings(&FOUR));
        let readings = bus.read_all();
        assert_eq!(
            summary(&readings),
            expect(&[
                ("T1", Some(23.125), Quality::Ok),
                ("T2", None, Quality::NotFound),
                ("T3", None, Quality::Garbage),
                ("T4", Some(-0.3125), Quality::Ok),
            ])
        );
        let ids: Vec<_> = readings.iter().map(|r| r.sensor_id.as_deref()).collect();
        assert_eq!(ids, FOUR.map(|(_, id)| Some(id)));
        let reason = |i: usize| readings[i].reason.clone().unwrap();
        assert!(
            reason(1).starts_with(&format!(
                "{}: sensor folder not found",
                tree.path("28-000000000002")
            )),
            "{}",
            reason(1)
        );
        assert!(
            reason(2).starts_with(&format!(
                "{}: expected 2 lines",
                tree.path("28-000000000003/w1_slave")
            )),
            "{}",
            reason(2)
        );
        assert!(reason(2).ends_with("(3 attempts)"), "{}", reason(2));
        assert_eq!(readings[0].reason, None);
        // read_sensor agrees, one sensor at a time
        assert_eq!(bus.read_sensor("28-000000000001"), Ok(23.125));
        assert_eq!(
            bus.read_sensor("28-000000000002").unwrap_err().0,
            Quality::NotFound
        );
        assert_eq!(
            bus.read_sensor("nonsense").unwrap_err().0,
            Quality::ReadError
        );
    }

    #[test]
    fn each_bad_scratchpad_becomes_its_quality() {
        let tree = Tree::new();
        let cases = [
            (
                "28-0000000000a1",
                "72 01 4b 46 7f ff 0e 10 57 : crc=57 NO\n72 01 4b 46 7f ff 0e 10 57 t=23125\n"
                    .to_string(),
                Quality::CrcNo,
            ),
            ("28-0000000000a2", String::new(), Quality::Empty),
            (
                "28-0000000000a3",
                slave(b20(0x0550, 0x0c)),
                Quality::PowerOnReset,
            ),
            (
                "28-0000000000a4",
                slave(b20(0x07ff, 0x01)),
                Quality::InsufficientPower,
            ),
            (
                "28-0000000000a5",
                slave_raw([0; 9], "YES"),
                Quality::AllZero,
            ),
            ("28-0000000000a6", slave(b20(0x0550, 0x10)), Quality::Ok),
        ];
        for (id, text, _) in &cases {
            tree.sensor(id, text);
        }
        let mapping: Vec<(String, &str)> = cases
            .iter()
            .enumerate()
            .map(|(i, (id, _, _))| (format!("R{i}"), *id))
            .collect();
        let mapping: Vec<(&str, &str)> = mapping.iter().map(|(r, id)| (r.as_str(), *id)).collect();
        let readings = W1Bus::new(&tree.settings(&mapping)).read_all();
        for ((id, _, quality), reading) in cases.iter().zip(&readings) {
            assert_eq!(reading.quality, *quality, "{id}: {reading:?}");
            if *quality != Quality::Ok {
                assert_eq!(reading.celsius, None);
                let reason = reading.reason.as_deref().unwrap();
                assert!(
                    reason.starts_with(&tree.path(&format!("{id}/w1_slave"))),
                    "{reason}"
                );
            }
        }
        assert_eq!(readings[5].celsius, Some(85.0));
        assert_eq!(
            readings[0].reason.as_deref(),
            Some(format!(
                "{}: crc=57 NO (kernel CRC check failed; check wiring and the 4.7 kΩ pull-up) (3 attempts)",
                tree.path("28-0000000000a1/w1_slave")
            ))
            .as_deref()
        );
    }

    #[test]
    fn calibration_by_role_and_by_id_applies_to_valid_readings_only() {
        let tree = Tree::new();
        tree.sensor("28-000000000001", &slave(b20(0x0172, 0x0e))); // 23.125
        tree.sensor("28-000000000002", &slave(b20(0x0172, 0x0e)));
        tree.sensor("28-000000000003", "garbage\n");
        tree.sensor("28-000000000004", &slave(b20(0x0172, 0x0e)));
        let mut settings = tree.settings(&FOUR);
        settings.calibration = BTreeMap::from([
            ("T1".to_string(), 0.5),
            ("28-000000000002".to_string(), -0.1),
            ("T3".to_string(), 1.0),
            // both keys match T4: the sensor's own offset wins
            ("T4".to_string(), 3.0),
            ("28-000000000004".to_string(), 0.25),
        ]);
        let bus = W1Bus::new(&settings);
        assert_eq!(
            summary(&bus.read_all()),
            expect(&[
                ("T1", Some(23.625), Quality::Ok),
                ("T2", Some(23.025), Quality::Ok),
                ("T3", None, Quality::Garbage),
                ("T4", Some(23.375), Quality::Ok),
            ])
        );
        // read_sensor is raw
        assert_eq!(bus.read_sensor("28-000000000001"), Ok(23.125));
    }

    /// A tree where `temperature` and `w1_slave` disagree, so a test can tell
    /// which file was read: `temperature` says 30.5, `w1_slave` 23.125.
    fn bulk_tree(bulk_read_file: bool) -> Tree {
        let tree = Tree::new();
        if bulk_read_file {
            tree.file("w1_bus_master1/therm_bulk_read", "");
        } else {
            // a directory: opening it for writing fails even as root
            fs::create_dir_all(tree.dir.path().join("w1_bus_master1/therm_bulk_read")).unwrap();
        }
        for (_, id) in FOUR {
            tree.sensor(id, &slave(b20(0x0172, 0x0e)));
            tree.file(&format!("{id}/temperature"), "30500\n");
        }
        // T3 is on an old kernel: no temperature file
        fs::remove_file(tree.dir.path().join("28-000000000003/temperature")).unwrap();
        // T4 says 85.0 in `temperature`; only the scratchpad tells whether it is real
        tree.file("28-000000000004/temperature", "85000\n");
        tree.sensor("28-000000000004", &slave(b20(0x0550, 0x0c)));
        tree
    }

    #[test]
    fn bulk_read_triggers_once_then_reads_temperature_files() {
        let tree = bulk_tree(true);
        let bus = W1Bus::new(&tree.settings(&FOUR));
        assert_eq!(
            summary(&bus.read_all()),
            expect(&[
                ("T1", Some(30.5), Quality::Ok),
                ("T2", Some(30.5), Quality::Ok),
                ("T3", Some(23.125), Quality::Ok),
                ("T4", None, Quality::PowerOnReset),
            ])
        );
        assert_eq!(tree.read("w1_bus_master1/therm_bulk_read"), "trigger\n");
        // a genuine 85.0: the scratchpad's byte 6 is not 0c
        tree.sensor("28-000000000004", &slave(b20(0x0550, 0x10)));
        assert_eq!(bus.read_all()[3].celsius, Some(85.0));
        // an unreadable temperature file is retried through w1_slave
        tree.file("28-000000000001/temperature", "garbage\n");
        assert_eq!(bus.read_all()[0].celsius, Some(23.125));
        // 0 °C in `temperature` may be an all-zero scratchpad: confirmed with w1_slave
        tree.file("28-000000000002/temperature", "0\n");
        tree.sensor("28-000000000002", &slave_raw([0; 9], "YES"));
        assert_eq!(bus.read_all()[1].quality, Quality::AllZero);
    }

    #[test]
    fn bulk_read_falls_back_when_the_trigger_cannot_be_written() {
        let check = |tree: &Tree, bulk_read: bool| {
            let mut settings = tree.settings(&FOUR);
            settings.bulk_read = bulk_read;
            let bus = W1Bus::new(&settings);
            for _ in 0..2 {
                assert_eq!(
                    summary(&bus.read_all()),
                    expect(&[
                        ("T1", Some(23.125), Quality::Ok),
                        ("T2", Some(23.125), Quality::Ok),
                        ("T3", Some(23.125), Quality::Ok),
                        ("T4", None, Quality::PowerOnReset),
                    ])
                );
            }
        };
        // therm_bulk_read is a directory: the write fails, w1_slave is read
        check(&bulk_tree(false), true);
        // no therm_bulk_read at all
        let tree = bulk_tree(false);
        fs::remove_dir(tree.dir.path().join("w1_bus_master1/therm_bulk_read")).unwrap();
        check(&tree, true);
        // bulk reads switched off: the file is left alone
        let tree = bulk_tree(true);
        check(&tree, false);
        assert_eq!(tree.read("w1_bus_master1/therm_bulk_read"), "");
    }

    #[test]
    fn a_sensor_that_vanishes_and_returns() {
        let tree = Tree::new();
        for (_, id) in FOUR {
            tree.sensor(id, &slave(b20(0x0172, 0x0e)));
        }
        let bus = W1Bus::new(&tree.settings(&FOUR));
        assert!(bus.read_all().iter().all(Reading::is_ok));
        fs::remove_dir_all(tree.dir.path().join("28-000000000002")).unwrap();
        let readings = bus.read_all();
        assert_eq!(
            summary(&readings),
            expect(&[
                ("T1", Some(23.125), Quality::Ok),
                ("T2", None, Quality::NotFound),
                ("T3", Some(23.125), Quality::Ok),
                ("T4", Some(23.125), Quality::Ok),
            ])
        );
        assert_eq!(
            readings[1].reason.as_deref(),
            Some(format!(
                "{}: sensor folder not found (unplugged, or gone from the bus; check wiring and the 4.7 kΩ pull-up)",
                tree.path("28-000000000002")
            ))
            .as_deref()
        );
        assert_eq!(
            bus.scan().unwrap().missing_mapped,
            vec![("T2".to_string(), "28-000000000002".to_string())]
        );
        tree.sensor("28-000000000002", &slave(b20(0x0191, 0x0f)));
        assert_eq!(bus.read_all()[1].celsius, Some(25.0625));
    }

    #[test]
    fn unreadable_files_are_read_errors_not_not_found() {
        let tree = Tree::new();
        // the folder is there but w1_slave is a directory: EISDIR
        fs::create_dir_all(tree.dir.path().join("28-000000000001/w1_slave")).unwrap();
        // bytes that are not text
        tree.file("28-000000000002/w1_slave", "\u{0}");
        fs::write(
            tree.dir.path().join("28-000000000002/w1_slave"),
            [0xff, 0xfe, 0x00],
        )
        .unwrap();
        let bus = W1Bus::new(&tree.settings(&FOUR[..2]));
        assert_eq!(
            summary(&bus.read_all()),
            expect(&[
                ("T1", None, Quality::ReadError),
                ("T2", None, Quality::Garbage)
            ])
        );
    }
}

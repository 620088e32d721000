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
//!
//! The pure decoding (text and scratchpad → °C or a [`Quality`]) lives in
//! [`decode`]; this file does the sysfs I/O around it.

use std::collections::HashMap;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;

use super::SensorSettings;
use crate::sample::{Quality, Reading};

mod decode;

use decode::{Decoded, WIRING_HINT};
pub use decode::{
    MAX_CELSIUS, MIN_CELSIUS, crc8, decode_scratchpad, family_kind, parse_id,
    parse_temperature_file, parse_w1_slave,
};

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
        let ids: Vec<&str> = mapping.iter().map(|(_, id)| id.as_str()).collect();
        let results = self.read_concurrently(&ids, bulk);
        mapping
            .iter()
            .zip(results)
            .map(|((role, id), result)| self.to_reading(role, id, result))
            .collect()
    }

    /// Reads `ids` without bulk read, all at once (a conversion takes about
    /// 750 ms), each with up to `retries` extra attempts, immediately (no
    /// sleeps); results in `ids` order. Calibration is NOT applied. A missing
    /// folder is [`Quality::NotFound`] at once (retrying cannot bring it back
    /// within the cycle).
    pub fn read_sensors(&self, ids: &[&str]) -> Vec<Result<f64, (Quality, String)>> {
        self.read_concurrently(ids, false)
    }

    /// The one fan-out: each sensor of `ids` on its own named scoped thread
    /// (inline when no thread can be spawned), results in `ids` order.
    fn read_concurrently(&self, ids: &[&str], bulk: bool) -> Vec<Decoded> {
        thread::scope(|scope| {
            let handles: Vec<_> = ids
                .iter()
                .map(|id| {
                    thread::Builder::new()
                        .name(format!("w1 {id}"))
                        .spawn_scoped(scope, move || self.read_mapped(id, bulk))
                })
                .collect();
            handles
                .into_iter()
                .zip(ids)
                .map(|(handle, id)| match handle {
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
        })
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

/// One attempt at one sensor: exactly one conversion-starting file read
/// (plus a `w1_slave` confirmation when `temperature` says exactly 0 or 85 °C).
fn read_once(dir: &Path, family: u8, use_temperature: bool) -> Decoded {
    if !dir.is_dir() {
        return Err(not_found(dir));
    }
    // Family 3b may be a MAX31850, whose fault bits only the scratchpad shows.
    if use_temperature && family != 0x3b {
        let path = dir.join("temperature");
        if path.is_file() {
            let celsius = parse_temperature_file(family, &read_text(dir, &path)?)
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
    use super::decode::tests::{b20, s20, slave, slave_raw};
    use super::*;
    use std::collections::BTreeMap;
    use tempfile::TempDir;

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
        for (i, file, what) in [
            (1, "28-000000000002", "sensor folder not found"),
            (2, "28-000000000003/w1_slave", "expected 2 lines"),
        ] {
            let prefix = format!("{}: {what}", tree.path(file));
            assert!(reason(i).starts_with(&prefix), "{}", reason(i));
        }
        assert!(reason(2).ends_with("(3 attempts)"), "{}", reason(2));
        assert_eq!(readings[0].reason, None);
        // read_sensors agrees, one sensor at a time
        assert_eq!(bus.read_sensors(&["28-000000000001"]).remove(0), Ok(23.125));
        assert_eq!(
            bus.read_sensors(&["28-000000000002"])
                .remove(0)
                .unwrap_err()
                .0,
            Quality::NotFound
        );
        assert_eq!(
            bus.read_sensors(&["nonsense"]).remove(0).unwrap_err().0,
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
        // read_sensors is raw
        assert_eq!(bus.read_sensors(&["28-000000000001"]).remove(0), Ok(23.125));
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
        // every sensor through w1_slave: T4's 85.0 is the power-on value
        let mut w1_slave: Vec<_> = ["T1", "T2", "T3"]
            .map(|role| (role, Some(23.125), Quality::Ok))
            .to_vec();
        w1_slave.push(("T4", None, Quality::PowerOnReset));
        let check = |tree: &Tree, bulk_read: bool| {
            let mut settings = tree.settings(&FOUR);
            settings.bulk_read = bulk_read;
            let bus = W1Bus::new(&settings);
            for _ in 0..2 {
                assert_eq!(summary(&bus.read_all()), expect(&w1_slave));
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
        let qualities: Vec<Quality> = readings.iter().map(|r| r.quality).collect();
        assert_eq!(
            qualities,
            [Quality::Ok, Quality::NotFound, Quality::Ok, Quality::Ok]
        );
        let celsius: Vec<Option<f64>> = readings.iter().map(|r| r.celsius).collect();
        assert_eq!(celsius, [Some(23.125), None, Some(23.125), Some(23.125)]);
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

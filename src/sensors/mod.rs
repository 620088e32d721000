//! The sensor layer: turns the 1-Wire bus (or the simulated exchanger) into one
//! [`Reading`] per mapped role per cycle.
//!
//! This module owns the w1-therm sysfs reader ([`w1`]), the mock heat exchanger
//! ([`mock`]), the calibration offsets and the decision of a reading's
//! [`Quality`](crate::sample::Quality): a failed read becomes a missing reading
//! here, once, and nobody downstream re-judges it.
//!
//! It must not know about the outbox, config files or any sink: it is handed a
//! [`SensorSettings`] built elsewhere and returns readings. It is blocking code
//! (`std::fs`, `std::thread`); callers run it on a dedicated thread or in
//! `spawn_blocking`, never directly on the async runtime.

pub mod mock;
pub mod w1;

use std::collections::BTreeMap;
use std::path::PathBuf;

use crate::sample::{Reading, STANDARD_ROLES, Source};

/// The default sysfs folder of the w1 bus.
pub const DEFAULT_W1_ROOT: &str = "/sys/bus/w1/devices";

/// What the sensor layer needs to know (built by config elsewhere).
#[derive(Debug, Clone, PartialEq)]
pub struct SensorSettings {
    /// The folder holding the `w1_bus_master*` and sensor folders
    /// (default [`DEFAULT_W1_ROOT`]).
    pub w1_root: PathBuf,
    /// `(role, sensor id)` pairs in `devicenames.json` order, e.g.
    /// `("T1", "28-0000000001")`.
    pub mapping: Vec<(String, String)>,
    /// Calibration offsets in °C keyed by role or by sensor id, added to valid
    /// readings only. When both a role key and an id key match a reading, the
    /// id key wins (the offset belongs to the physical sensor).
    pub calibration: BTreeMap<String, f64>,
    /// Extra read attempts within one cycle for a failed read (default 2).
    pub retries: u32,
    /// Use `therm_bulk_read` when a bus master has it and it is writable (default true).
    pub bulk_read: bool,
}

impl Default for SensorSettings {
    fn default() -> Self {
        SensorSettings {
            w1_root: PathBuf::from(DEFAULT_W1_ROOT),
            mapping: Vec::new(),
            calibration: BTreeMap::new(),
            retries: 2,
            bulk_read: true,
        }
    }
}

impl SensorSettings {
    /// The roles of the mapping, in mapping order.
    pub fn roles(&self) -> Vec<String> {
        self.mapping.iter().map(|(role, _)| role.clone()).collect()
    }

    /// The calibration offset for a sensor: its id key if present, else its
    /// role key, else 0.
    ///
    /// ```
    /// let mut s = hxlog::sensors::SensorSettings::default();
    /// s.calibration.insert("T1".into(), 0.5);
    /// s.calibration.insert("28-0000000001".into(), -0.25);
    /// assert_eq!(s.offset("T1", "28-0000000001"), -0.25);
    /// assert_eq!(s.offset("T1", "28-0000000002"), 0.5);
    /// assert_eq!(s.offset("T2", "28-0000000002"), 0.0);
    /// ```
    pub fn offset(&self, role: &str, sensor_id: &str) -> f64 {
        self.calibration
            .get(sensor_id)
            .or_else(|| self.calibration.get(role))
            .copied()
            .unwrap_or(0.0)
    }
}

/// The chosen reader. [`Sensors::source`] returns [`Source::W1`] or [`Source::Mock`].
#[derive(Debug)]
pub enum Sensors {
    /// Real DS18B20-family sensors through the w1-therm sysfs driver.
    W1(w1::W1Bus),
    /// The simulated counter-flow heat exchanger.
    Mock(mock::MockExchanger),
}

impl Sensors {
    /// A reader for the real bus described by `settings`; no I/O happens here.
    pub fn w1(settings: &SensorSettings) -> Self {
        Sensors::W1(w1::W1Bus::new(settings))
    }

    /// A simulated exchanger with the mapping's roles (T1..T4 when the mapping is empty).
    pub fn mock(settings: &SensorSettings, seed: u64) -> Self {
        Sensors::Mock(mock::MockExchanger::new(settings.roles(), seed))
    }

    /// Where this reader's samples come from.
    pub fn source(&self) -> Source {
        match self {
            Sensors::W1(_) => Source::W1,
            Sensors::Mock(_) => Source::Mock,
        }
    }

    /// One reading per mapped role, in mapping order (mock: the mapping's
    /// roles, or T1..T4 when the mapping is empty). Never fails: a failed read
    /// is a [`Reading::missing`] with a quality and a reason naming the file.
    pub fn read_cycle(&mut self) -> Vec<Reading> {
        match self {
            Sensors::W1(bus) => bus.read_all(),
            Sensors::Mock(mock) => mock.read_cycle(),
        }
    }
}

/// The standard roles T1..T4 as owned strings (the mock's default mapping).
pub fn standard_roles() -> Vec<String> {
    STANDARD_ROLES.iter().map(|r| r.to_string()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(mapping: &[(&str, &str)], expected_roles: &[&str]) {
        let settings = SensorSettings {
            mapping: mapping
                .iter()
                .map(|(r, i)| (r.to_string(), i.to_string()))
                .collect(),
            ..SensorSettings::default()
        };
        let mut mock = Sensors::mock(&settings, 7);
        assert_eq!(mock.source(), Source::Mock);
        let got: Vec<String> = mock.read_cycle().into_iter().map(|r| r.role).collect();
        assert_eq!(got, expected_roles, "mock read_cycle roles for {mapping:?}");
        if !mapping.is_empty() {
            // no bus at w1_root: every mapped role is a missing reading, in mapping order
            let mut w1 = Sensors::w1(&SensorSettings {
                w1_root: std::env::temp_dir().join("hxlog-no-w1-bus-here"),
                ..settings
            });
            assert_eq!(w1.source(), Source::W1);
            let got: Vec<String> = w1.read_cycle().into_iter().map(|r| r.role).collect();
            assert_eq!(got, expected_roles, "w1 read_cycle roles for {mapping:?}");
        }
    }

    #[test]
    fn roles_follow_the_mapping() {
        check(&[], &["T1", "T2", "T3", "T4"]);
        check(
            &[
                ("T3", "28-03"),
                ("T1", "28-01"),
                ("T2", "28-02"),
                ("T4", "28-04"),
            ],
            &["T3", "T1", "T2", "T4"],
        );
        check(
            &[("T1", "28-01"), ("T2", "28-02"), ("Tamb", "28-05")],
            &["T1", "T2", "Tamb"],
        );
    }

    #[test]
    fn defaults_match_the_documentation() {
        let s = SensorSettings::default();
        assert_eq!(s.w1_root, PathBuf::from("/sys/bus/w1/devices"));
        assert_eq!(s.retries, 2);
        assert!(s.bulk_read);
    }
}

//! The simulated heat exchanger, for demos, tests and machines without a bus.
//!
//! This module owns a small counter-flow exchanger model: T1 hot inlet around
//! 70 °C drifting ±5 °C over hours, T3 cold inlet around 15 °C with a daily
//! swing, an effectiveness between about 0.57 and 0.69, outlets from an energy
//! balance, ±0.1 °C noise and 1/16 °C rounding like a DS18B20. Roles other than
//! T1..T4 read an ambient-like value.
//!
//! Every value is a pure function of the seed, the role and the timestamp (an
//! inline splitmix64 hash, no global RNG), so runs are reproducible, and a
//! reading costs a few `sin` calls: a million samples take well under a second.
//! It does no I/O and must not know about the outbox, config or sinks.

use std::f64::consts::TAU;

use jiff::Timestamp;

use crate::sample::Reading;

const HOUR: f64 = 3600.0;

/// A deterministic simulated counter-flow heat exchanger.
#[derive(Debug, Clone, PartialEq)]
pub struct MockExchanger {
    roles: Vec<String>,
    seed: u64,
    /// Phases of the slow drifts, derived from the seed.
    phases: [f64; 6],
    /// Per-role constant offsets for roles beyond T1..T4, derived from seed and name.
    extra_offsets: Vec<f64>,
}

/// The noise-free state of the exchanger at one instant, °C.
struct State {
    t1: f64,
    t2: f64,
    t3: f64,
    t4: f64,
    ambient: f64,
}

impl MockExchanger {
    /// An exchanger reporting `roles` in that order (T1..T4 when empty),
    /// deterministic for `seed`.
    ///
    /// ```
    /// use hxlog::sensors::mock::MockExchanger;
    /// let t = jiff::Timestamp::from_second(1_800_000_000).unwrap();
    /// let a = MockExchanger::new(vec![], 42).read_at(t);
    /// let b = MockExchanger::new(vec![], 42).read_at(t);
    /// assert_eq!(a, b);
    /// assert_eq!(a.len(), 4);
    /// ```
    pub fn new(roles: Vec<String>, seed: u64) -> Self {
        let roles = if roles.is_empty() {
            super::standard_roles()
        } else {
            roles
        };
        let phases = std::array::from_fn(|i| TAU * unit(splitmix64(seed ^ (i as u64 + 1))));
        let extra_offsets = roles
            .iter()
            .map(|role| 2.0 * unit(splitmix64(seed ^ fnv1a(role.as_bytes()))) - 1.0)
            .collect();
        MockExchanger {
            roles,
            seed,
            phases,
            extra_offsets,
        }
    }

    /// The roles, in the order readings are returned.
    pub fn roles(&self) -> &[String] {
        &self.roles
    }

    /// The readings at `t`: one per role, `sensor_id` `None`, quality ok,
    /// multiples of 1/16 °C.
    pub fn read_at(&mut self, t: Timestamp) -> Vec<Reading> {
        let secs = t.as_second() as f64 + f64::from(t.subsec_nanosecond()) * 1e-9;
        let state = self.state(secs);
        let instant = t.as_nanosecond() as u64 ^ ((t.as_nanosecond() >> 64) as u64);
        let time_hash = splitmix64(self.seed ^ splitmix64(instant));
        self.roles
            .iter()
            .enumerate()
            .map(|(i, role)| {
                let base = match role.as_str() {
                    "T1" => state.t1,
                    "T2" => state.t2,
                    "T3" => state.t3,
                    "T4" => state.t4,
                    _ => state.ambient + self.extra_offsets[i],
                };
                let noise = 0.2 * unit(splitmix64(time_hash ^ (i as u64 + 1))) - 0.1;
                Reading::ok(role.as_str(), None, round_sixteenth(base + noise))
            })
            .collect()
    }

    /// The readings now.
    pub fn read_cycle(&mut self) -> Vec<Reading> {
        self.read_at(Timestamp::now())
    }

    fn state(&self, secs: f64) -> State {
        let p = &self.phases;
        let wave =
            |period_hours: f64, phase: f64| (TAU * secs / (period_hours * HOUR) + phase).sin();
        let t1 = 70.0 + 5.0 * (0.6 * wave(5.0, p[0]) + 0.4 * wave(13.0, p[1]));
        let t3 = 15.0 + 1.5 * wave(24.0, p[2]);
        let ambient = 21.0 + 2.0 * wave(24.0, p[5]);
        // The hot stream has the smaller heat-capacity rate: it sees the
        // larger change, and the cold stream gains capacity_ratio of it.
        let effectiveness = 0.63 + 0.06 * wave(2.5, p[3]);
        let capacity_ratio = 0.8 + 0.05 * wave(7.0, p[4]);
        let hot_drop = effectiveness * (t1 - t3);
        State {
            t1,
            t2: t1 - hot_drop,
            t3,
            t4: t3 + capacity_ratio * hot_drop,
            ambient,
        }
    }
}

/// Rounds to the DS18B20's 12-bit step, 1/16 °C.
fn round_sixteenth(celsius: f64) -> f64 {
    (celsius * 16.0).round() / 16.0
}

/// splitmix64: a fast, well-mixed 64-bit hash step.
fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The seed of a device's simulated exchanger: the same device id always
/// simulates the same exchanger.
pub fn seed(device_id: &str) -> u64 {
    fnv1a(device_id.as_bytes())
}

/// FNV-1a, to turn a name into a hash input (and the sample journal's
/// check on a record: a torn write fails it).
pub(crate) fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// A hash as a fraction in [0, 1).
fn unit(hash: u64) -> f64 {
    (hash >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::efficiency::Efficiency;

    fn at(second: i64) -> Timestamp {
        Timestamp::from_second(second).unwrap()
    }

    fn values(readings: &[Reading]) -> Vec<f64> {
        readings.iter().map(|r| r.celsius.unwrap()).collect()
    }

    /// Checks the mock's readings over two days, one every 97 s.
    fn check(roles: &[&str], seed: u64, expected_ranges: &[(f64, f64)]) {
        let roles: Vec<String> = roles.iter().map(|r| r.to_string()).collect();
        let mut mock = MockExchanger::new(roles.clone(), seed);
        let start = 1_800_000_000;
        for k in 0..(2 * 86_400 / 97) {
            let readings = mock.read_at(at(start + 97 * k));
            let got = values(&readings);
            for (i, r) in readings.iter().enumerate() {
                assert!(
                    r.is_ok() && r.sensor_id.is_none() && r.reason.is_none(),
                    "{r:?}"
                );
                assert_eq!(
                    got[i] * 16.0,
                    (got[i] * 16.0).round(),
                    "{got:?} not in 1/16 °C steps"
                );
                let (lo, hi) = expected_ranges[i];
                assert!(
                    (lo..=hi).contains(&got[i]),
                    "{} = {} outside {lo}..{hi}",
                    r.role,
                    got[i]
                );
            }
            if roles.len() >= 4 && roles[..4] == ["T1", "T2", "T3", "T4"] {
                let (t1, t2, t3, t4) = (got[0], got[1], got[2], got[3]);
                let e = Efficiency::compute(Some(t1), Some(t2), Some(t3), Some(t4));
                let eff = e.effectiveness.unwrap();
                assert!(
                    (0.5..=0.75).contains(&eff),
                    "effectiveness {eff} at {got:?}"
                );
                // energy balance: the cold side gains the capacity ratio of the hot side's loss
                let ratio = (t4 - t3) / (t1 - t2);
                assert!((0.7..=0.9).contains(&ratio), "gain/loss {ratio} at {got:?}");
                assert!(t1 - t4 > 0.0 && t2 - t3 > 0.0, "LMTD undefined at {got:?}");
            }
        }
    }

    #[test]
    fn plausible_energy_balanced_exchanger() {
        let standard = [(64.0, 76.0), (28.0, 44.0), (13.0, 17.0), (33.0, 54.0)];
        check(&["T1", "T2", "T3", "T4"], 1, &standard);
        check(&["T1", "T2", "T3", "T4"], 0xdead_beef, &standard);
        check(
            &["T1", "T2", "T3", "T4", "Tamb", "Troom"],
            7,
            &[
                standard[0],
                standard[1],
                standard[2],
                standard[3],
                (17.5, 24.5),
                (17.5, 24.5),
            ],
        );
        check(&["Tamb"], 3, &[(17.5, 24.5)]);
    }

    #[test]
    fn deterministic_for_seed_and_time() {
        let t = at(1_800_000_123);
        let a = MockExchanger::new(vec![], 9).read_at(t);
        let b = MockExchanger::new(vec![], 9).read_at(t);
        assert_eq!(a, b);
        // the same exchanger asked twice for the same instant agrees too
        let mut m = MockExchanger::new(vec![], 9);
        assert_eq!(m.read_at(t), m.read_at(t));
        // another seed is another exchanger
        let c = MockExchanger::new(vec![], 10).read_at(t);
        assert_ne!(values(&a), values(&c));
        // and time moves it: over an hour the inlet is not frozen
        let later: Vec<Vec<f64>> = (0..60)
            .map(|k| values(&m.read_at(at(1_800_000_123 + 60 * k))))
            .collect();
        assert!(later.iter().any(|v| v != &later[0]));
    }

    #[test]
    fn empty_roles_mean_the_standard_four() {
        let mock = MockExchanger::new(vec![], 1);
        assert_eq!(mock.roles(), ["T1", "T2", "T3", "T4"]);
        let mut custom = MockExchanger::new(vec!["T2".into(), "T1".into()], 1);
        let r = custom.read_at(at(1_800_000_000));
        assert_eq!(r[0].role, "T2");
        assert!(
            r[1].celsius > r[0].celsius,
            "T1 hot inlet above T2 hot outlet"
        );
    }
}

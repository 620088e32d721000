//! Sensor alarms, decided from samples: a pure evaluator with no I/O.
//!
//! Four alarms, each per role except the last: `max` (a temperature above the
//! role's `max`), `min` (below its `min`), `missing` (`missing_for` consecutive
//! missing readings; 0 turns it off) and `effectiveness` (below
//! `effectiveness_below`). There is no hysteresis: an alarm is raised by the
//! first sample that breaks its rule and cleared by the first that does not.
//! A missing reading neither raises nor clears `min`/`max`.
//!
//! The evaluator only turns samples into [`Event`]s (raised or cleared);
//! the sampler stores them in the outbox, which holds the alarm state (the
//! newest event per alarm) for the dashboard, `status`, `/metrics` and the
//! Web PubSub forwarder. It must not do I/O.

use std::collections::{BTreeMap, BTreeSet};

use jiff::Timestamp;

use crate::sample::Sample;

/// A role's temperature limits (°C).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Limits {
    /// Alarm while below.
    pub min: Option<f64>,
    /// Alarm while above.
    pub max: Option<f64>,
}

/// The resolved `alarms` config.
#[derive(Debug, Clone, PartialEq)]
pub struct AlarmSettings {
    /// Limits per role.
    pub roles: BTreeMap<String, Limits>,
    /// Consecutive missing readings that raise `missing` (0: off).
    pub missing_for: u32,
    /// Effectiveness threshold.
    pub effectiveness_below: Option<f64>,
}

impl Default for AlarmSettings {
    fn default() -> Self {
        AlarmSettings {
            roles: BTreeMap::new(),
            missing_for: 3,
            effectiveness_below: None,
        }
    }
}

/// Which alarm: its name (`max`, `min`, `missing`, `effectiveness`) and role
/// (empty for `effectiveness`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
pub struct AlarmKey {
    /// `max`, `min`, `missing` or `effectiveness`.
    pub alarm: String,
    /// The role, or `""`.
    pub role: String,
}

impl AlarmKey {
    fn new(alarm: &str, role: &str) -> Self {
        AlarmKey {
            alarm: alarm.into(),
            role: role.into(),
        }
    }
}

/// An alarm raised or cleared by one sample.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Event {
    /// Which alarm.
    #[serde(flatten)]
    pub key: AlarmKey,
    /// True when raised, false when cleared.
    pub raised: bool,
    /// The sample's `taken_at`.
    pub at: Timestamp,
    /// The value that decided it (°C, the ratio, or the count of missing readings).
    pub value: Option<f64>,
    /// The configured threshold.
    pub threshold: Option<f64>,
    /// One line for people: `T1 above 80 °C: 81.250 °C`.
    pub message: String,
}

/// An alarm event as a sink publishes it: the event with its idempotency key
/// and the logger's name.
#[derive(Debug, Clone, PartialEq)]
pub struct Published {
    /// UUIDv7 given when the event was stored (subscribers deduplicate on it).
    pub id: uuid::Uuid,
    /// The logger.
    pub device_id: String,
    /// The event.
    pub event: Event,
}

/// Evaluates samples one after another; knows which alarms are active.
#[derive(Debug, Clone)]
pub struct Evaluator {
    settings: AlarmSettings,
    active: BTreeSet<AlarmKey>,
    missing_run: BTreeMap<String, u32>,
}

impl Evaluator {
    /// An evaluator that starts with `active` alarms raised (from the outbox).
    pub fn new(settings: AlarmSettings, active: impl IntoIterator<Item = AlarmKey>) -> Self {
        Evaluator {
            settings,
            active: active.into_iter().collect(),
            missing_run: BTreeMap::new(),
        }
    }

    /// Counts the missing readings of `recent` samples (newest first) as if
    /// they had been evaluated, without raising or clearing anything: a new
    /// process (a timer's `hxlog sample`) continues the count.
    pub fn prime(&mut self, recent: &[Sample]) {
        self.missing_run.clear();
        let mut roles: BTreeSet<&str> = BTreeSet::new();
        for s in recent {
            for r in &s.readings {
                roles.insert(&r.role);
            }
        }
        for role in roles {
            let run = recent
                .iter()
                .take_while(|s| s.reading(role).is_some_and(|r| r.celsius.is_none()))
                .count();
            self.missing_run.insert(role.to_string(), run as u32);
        }
    }

    /// Clears the active alarms (loaded from the outbox) that no rule covers
    /// any more, as of `sample`, the first sample this evaluator sees: the
    /// rule was removed from the config (`min`/`max` of the role, `missing_for`
    /// 0, `effectiveness_below`), or the role is no longer read. Without this
    /// such an alarm would stay active forever, since nothing evaluates it.
    /// Returns the `cleared` events, in a stable order, to store like any other.
    pub fn retire_uncovered(&mut self, sample: &Sample) -> Vec<Event> {
        let uncovered: Vec<AlarmKey> = self
            .active
            .iter()
            .filter(|k| !self.covers(k, sample))
            .cloned()
            .collect();
        let mut out = vec![];
        for key in uncovered {
            let name = if key.role.is_empty() {
                key.alarm.clone()
            } else {
                format!("{} {}", key.alarm, key.role)
            };
            let message = if key.role.is_empty() || sample.reading(&key.role).is_some() {
                format!("{name}: its rule was removed from the config")
            } else {
                format!(
                    "{name}: {} is no longer read (removed from the config)",
                    key.role
                )
            };
            self.set(&mut out, key, false, sample.taken_at, None, None, message);
        }
        out
    }

    /// Whether a rule still decides `key` for samples like `sample`.
    fn covers(&self, key: &AlarmKey, sample: &Sample) -> bool {
        let read = || sample.reading(&key.role).is_some();
        let limits = || {
            self.settings
                .roles
                .get(&key.role)
                .copied()
                .unwrap_or_default()
        };
        match key.alarm.as_str() {
            "missing" => self.settings.missing_for > 0 && read(),
            "max" => limits().max.is_some() && read(),
            "min" => limits().min.is_some() && read(),
            "effectiveness" => self.settings.effectiveness_below.is_some(),
            _ => false,
        }
    }

    /// The alarms active now.
    pub fn active(&self) -> impl Iterator<Item = &AlarmKey> {
        self.active.iter()
    }

    /// The events `sample` causes, in a stable order.
    pub fn evaluate(&mut self, sample: &Sample) -> Vec<Event> {
        let mut out = vec![];
        let at = sample.taken_at;
        for r in &sample.readings {
            let role = r.role.as_str();
            let run = self.missing_run.entry(role.to_string()).or_default();
            *run = if r.celsius.is_none() {
                run.saturating_add(1)
            } else {
                0
            };
            let run = *run;
            let n = self.settings.missing_for;
            if n > 0 {
                let raise = run >= n;
                let message = if raise {
                    format!(
                        "{role} missing for {run} readings ({}: {})",
                        r.quality,
                        r.reason.as_deref().unwrap_or("no reason")
                    )
                } else {
                    format!("{role} reads again")
                };
                // A reading that is missing but not yet `n` times changes nothing.
                if raise || run == 0 {
                    self.set(
                        &mut out,
                        AlarmKey::new("missing", role),
                        raise,
                        at,
                        Some(run as f64),
                        Some(n as f64),
                        message,
                    );
                }
            }
            let (Some(limits), Some(c)) = (self.settings.roles.get(role).copied(), r.celsius)
            else {
                continue;
            };
            if let Some(max) = limits.max {
                let msg = if c > max {
                    format!("{role} above {max} °C: {c:.3} °C")
                } else {
                    format!("{role} back at or below {max} °C: {c:.3} °C")
                };
                self.set(
                    &mut out,
                    AlarmKey::new("max", role),
                    c > max,
                    at,
                    Some(c),
                    Some(max),
                    msg,
                );
            }
            if let Some(min) = limits.min {
                let msg = if c < min {
                    format!("{role} below {min} °C: {c:.3} °C")
                } else {
                    format!("{role} back at or above {min} °C: {c:.3} °C")
                };
                self.set(
                    &mut out,
                    AlarmKey::new("min", role),
                    c < min,
                    at,
                    Some(c),
                    Some(min),
                    msg,
                );
            }
        }
        if let (Some(below), Some(e)) = (
            self.settings.effectiveness_below,
            sample.efficiency.effectiveness,
        ) {
            let msg = if e < below {
                format!("effectiveness {e:.3} below {below}")
            } else {
                format!("effectiveness {e:.3} back at or above {below}")
            };
            self.set(
                &mut out,
                AlarmKey::new("effectiveness", ""),
                e < below,
                at,
                Some(e),
                Some(below),
                msg,
            );
        }
        out
    }

    #[allow(clippy::too_many_arguments)]
    fn set(
        &mut self,
        out: &mut Vec<Event>,
        key: AlarmKey,
        raised: bool,
        at: Timestamp,
        value: Option<f64>,
        threshold: Option<f64>,
        message: String,
    ) {
        let changed = if raised {
            self.active.insert(key.clone())
        } else {
            self.active.remove(&key)
        };
        if changed {
            out.push(Event {
                key,
                raised,
                at,
                value,
                threshold,
                message,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sample::{Quality, Reading, Source};

    fn sample(t1: Option<f64>) -> Sample {
        let r = match t1 {
            Some(c) => Reading::ok("T1", None, c),
            None => Reading::missing("T1", None, Quality::CrcNo, "crc NO"),
        };
        Sample::new("hx", Timestamp::UNIX_EPOCH, Source::Mock, vec![r])
    }

    /// Feeds T1 values and returns the events as `+alarm`/`-alarm`.
    fn check(settings: AlarmSettings, t1: &[Option<f64>], expected: &[&str]) {
        let mut ev = Evaluator::new(settings, []);
        let got: Vec<String> = t1
            .iter()
            .flat_map(|v| ev.evaluate(&sample(*v)))
            .map(|e| format!("{}{}", if e.raised { "+" } else { "-" }, e.key.alarm))
            .collect();
        assert_eq!(got, expected, "{t1:?}");
    }

    #[test]
    fn alarms_are_raised_once_and_cleared_once() {
        let limits = |min, max| AlarmSettings {
            roles: [("T1".to_string(), Limits { min, max })].into(),
            ..AlarmSettings::default()
        };
        check(
            limits(None, Some(80.0)),
            &[Some(70.0), Some(81.0), Some(82.0), Some(80.0)],
            &["+max", "-max"],
        );
        check(
            limits(Some(10.0), None),
            &[Some(9.0), Some(9.5), Some(10.0), Some(9.0)],
            &["+min", "-min", "+min"],
        );
        // a missing reading neither raises nor clears a limit
        check(
            limits(None, Some(80.0)),
            &[Some(81.0), None, Some(81.0), Some(20.0)],
            &["+max", "-max"],
        );
        // missing_for 3 (default): the third missing reading raises, a value clears
        check(
            AlarmSettings::default(),
            &[None, None, Some(1.0), None, None, None, None, Some(2.0)],
            &["+missing", "-missing"],
        );
        check(
            AlarmSettings {
                missing_for: 0,
                ..AlarmSettings::default()
            },
            &[None, None, None, None],
            &[],
        );
        check(
            AlarmSettings {
                missing_for: 1,
                ..AlarmSettings::default()
            },
            &[None, Some(3.0)],
            &["+missing", "-missing"],
        );
    }

    #[test]
    fn an_alarm_active_before_a_restart_is_not_raised_again() {
        let mut ev = Evaluator::new(
            AlarmSettings {
                missing_for: 1,
                ..AlarmSettings::default()
            },
            [AlarmKey::new("missing", "T1")],
        );
        assert!(ev.evaluate(&sample(None)).is_empty());
        let cleared = ev.evaluate(&sample(Some(5.0)));
        assert_eq!(cleared.len(), 1);
        assert!(!cleared[0].raised);
        assert_eq!(ev.active().count(), 0);
    }

    #[test]
    fn an_active_alarm_whose_rule_was_removed_is_cleared_at_start() {
        let key = |alarm: &str, role: &str| AlarmKey::new(alarm, role);
        let settings = AlarmSettings {
            roles: [(
                "T1".to_string(),
                Limits {
                    min: None,
                    max: Some(80.0),
                },
            )]
            .into(),
            ..AlarmSettings::default()
        };
        let active = [
            key("max", "T1"),
            key("min", "T1"),
            key("missing", "T1"),
            key("missing", "T9"),
            key("effectiveness", ""),
        ];
        let mut ev = Evaluator::new(settings, active);
        let cleared: Vec<(String, bool, String)> = ev
            .retire_uncovered(&sample(Some(85.0)))
            .into_iter()
            .map(|e| {
                (
                    format!("{} {}", e.key.alarm, e.key.role),
                    e.raised,
                    e.message,
                )
            })
            .collect();
        assert_eq!(
            cleared,
            [
                (
                    "effectiveness ".into(),
                    false,
                    "effectiveness: its rule was removed from the config".into()
                ),
                (
                    "min T1".into(),
                    false,
                    "min T1: its rule was removed from the config".into()
                ),
                (
                    "missing T9".into(),
                    false,
                    "missing T9: T9 is no longer read (removed from the config)".into()
                ),
            ]
        );
        let left: Vec<&AlarmKey> = ev.active().collect();
        assert_eq!(left, [&key("max", "T1"), &key("missing", "T1")]);
        assert!(ev.retire_uncovered(&sample(Some(85.0))).is_empty(), "once");
        // missing_for 0 turns the missing alarm off: an active one is cleared
        let mut ev = Evaluator::new(
            AlarmSettings {
                missing_for: 0,
                ..AlarmSettings::default()
            },
            [key("missing", "T1")],
        );
        assert_eq!(ev.retire_uncovered(&sample(None)).len(), 1);
        assert_eq!(ev.active().count(), 0);
    }

    #[test]
    fn a_new_process_continues_the_count_of_missing_readings() {
        let mut ev = Evaluator::new(AlarmSettings::default(), []);
        ev.prime(&[sample(None), sample(None), sample(Some(1.0)), sample(None)]);
        let raised = ev.evaluate(&sample(None));
        assert_eq!(raised.len(), 1, "the third missing reading in a row raises");
        assert!(raised[0].raised && raised[0].message.contains("missing for 3"));
    }

    #[test]
    fn effectiveness_below_its_threshold_raises() {
        let settings = AlarmSettings {
            effectiveness_below: Some(0.9),
            ..AlarmSettings::default()
        };
        let mut ev = Evaluator::new(settings, []);
        let s = Sample::new(
            "hx",
            Timestamp::UNIX_EPOCH,
            Source::Mock,
            vec![
                Reading::ok("T1", None, 80.0),
                Reading::ok("T2", None, 60.0),
                Reading::ok("T3", None, 20.0),
                Reading::ok("T4", None, 40.0),
            ],
        );
        let events = ev.evaluate(&s);
        assert_eq!(events.len(), 1, "{events:?}");
        assert_eq!(events[0].key, AlarmKey::new("effectiveness", ""));
        assert!(
            events[0].message.contains("below 0.9"),
            "{}",
            events[0].message
        );
    }
}

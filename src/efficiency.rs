//! Heat-exchanger performance figures computed from T1..T4.
//!
//! * T1 hot inlet, T2 hot outlet, T3 cold inlet, T4 cold outlet, all °C.
//! * hot-side temperature effectiveness `(T1 − T2) / (T1 − T3)` (fraction)
//! * cold-side temperature effectiveness `(T4 − T3) / (T1 − T3)` (fraction)
//! * exchanger effectiveness: the larger of the two (the side with the smaller
//!   heat-capacity rate sees the larger temperature change; valid under energy balance)
//! * counter-flow LMTD `(ΔT1 − ΔT2) / ln(ΔT1 / ΔT2)` in kelvin, with
//!   `ΔT1 = T1 − T4` and `ΔT2 = T2 − T3`; when `ΔT1 = ΔT2` the limit `ΔT1`.
//!
//! Undefined cases are `None` (JSON `null`, an empty CSV cell): never NaN or infinity.
//! This module does no I/O and imports nothing of hxlog: [`crate::sample`]
//! computes a sample's figures where it builds the sample.

use serde::{Deserialize, Serialize};

/// The efficiency figures of one sample; each is `None` where undefined.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Efficiency {
    /// `(T1 − T2) / (T1 − T3)`, a fraction (0.4, not 40).
    pub hot_effectiveness: Option<f64>,
    /// `(T4 − T3) / (T1 − T3)`, a fraction.
    pub cold_effectiveness: Option<f64>,
    /// The larger of the hot- and cold-side effectiveness.
    pub effectiveness: Option<f64>,
    /// Counter-flow log-mean temperature difference, kelvin.
    pub lmtd: Option<f64>,
}

impl Efficiency {
    /// Computes the figures from the four temperatures (°C).
    ///
    /// ```
    /// use hxlog::efficiency::Efficiency;
    /// let e = Efficiency::compute(Some(80.0), Some(50.0), Some(20.0), Some(40.0));
    /// assert_eq!(e.hot_effectiveness, Some(0.5));
    /// assert_eq!(e.cold_effectiveness, Some(20.0 / 60.0));
    /// assert_eq!(e.effectiveness, Some(0.5));
    /// // ΔT1 = 80 − 40 = 40 K, ΔT2 = 50 − 20 = 30 K
    /// let lmtd = e.lmtd.unwrap();
    /// assert!((lmtd - 10.0 / (40.0f64 / 30.0).ln()).abs() < 1e-12);
    /// // T1 <= T3: no driving difference, nothing is defined but the LMTD's inputs
    /// assert_eq!(Efficiency::compute(Some(20.0), Some(20.0), Some(20.0), None).effectiveness, None);
    /// ```
    pub fn compute(t1: Option<f64>, t2: Option<f64>, t3: Option<f64>, t4: Option<f64>) -> Self {
        let span = match (t1, t3) {
            (Some(t1), Some(t3)) if t1 - t3 > 0.0 => Some(t1 - t3),
            _ => None,
        };
        let hot = match (t1, t2, span) {
            (Some(t1), Some(t2), Some(span)) => finite((t1 - t2) / span),
            _ => None,
        };
        let cold = match (t4, t3, span) {
            (Some(t4), Some(t3), Some(span)) => finite((t4 - t3) / span),
            _ => None,
        };
        let effectiveness = match (hot, cold) {
            (Some(h), Some(c)) => Some(h.max(c)),
            _ => None,
        };
        let lmtd = match (t1, t2, t3, t4) {
            (Some(t1), Some(t2), Some(t3), Some(t4)) => lmtd(t1 - t4, t2 - t3),
            _ => None,
        };
        Efficiency {
            hot_effectiveness: hot,
            cold_effectiveness: cold,
            effectiveness,
            lmtd,
        }
    }
}

/// Log-mean of two terminal temperature differences (kelvin); `None` unless both are positive.
pub fn lmtd(dt1: f64, dt2: f64) -> Option<f64> {
    if !(dt1.is_finite() && dt2.is_finite()) || dt1 <= 0.0 || dt2 <= 0.0 {
        return None;
    }
    // Near-equal differences: the quotient tends to their common value; the
    // series avoids 0/0 and cancellation.
    let x = dt1 / dt2 - 1.0;
    if x.abs() < 1e-6 {
        // (dt1 - dt2) / ln(1 + x) = dt2 * x / (x - x²/2 + …) ≈ dt2 * (1 + x/2)
        return finite(dt2 * (1.0 + x / 2.0));
    }
    finite((dt1 - dt2) / (dt1 / dt2).ln())
}

fn finite(v: f64) -> Option<f64> {
    v.is_finite().then_some(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(t: [Option<f64>; 4], expected: [Option<f64>; 4]) {
        let e = Efficiency::compute(t[0], t[1], t[2], t[3]);
        let got = [
            e.hot_effectiveness,
            e.cold_effectiveness,
            e.effectiveness,
            e.lmtd,
        ];
        for (i, (g, x)) in got.iter().zip(expected.iter()).enumerate() {
            match (g, x) {
                (Some(g), Some(x)) => assert!(
                    (g - x).abs() < 1e-9,
                    "figure {i} for {t:?}: got {g}, expected {x}"
                ),
                (None, None) => {}
                _ => panic!("figure {i} for {t:?}: got {g:?}, expected {x:?}"),
            }
        }
    }

    #[test]
    fn table() {
        let ln = |a: f64, b: f64| (a - b) / (a / b).ln();
        // typical counter-flow operation
        check(
            [Some(80.0), Some(50.0), Some(20.0), Some(40.0)],
            [Some(0.5), Some(1.0 / 3.0), Some(0.5), Some(ln(40.0, 30.0))],
        );
        // cold side changes more: effectiveness is the cold figure
        check(
            [Some(60.0), Some(50.0), Some(10.0), Some(40.0)],
            [Some(0.2), Some(0.6), Some(0.6), Some(ln(20.0, 40.0))],
        );
        // equal terminal differences: the limit, not 0/0
        check(
            [Some(70.0), Some(40.0), Some(20.0), Some(50.0)],
            [Some(0.6), Some(0.6), Some(0.6), Some(20.0)],
        );
        // T1 == T3: effectiveness undefined, LMTD needs positive differences
        check(
            [Some(20.0), Some(20.0), Some(20.0), Some(20.0)],
            [None, None, None, None],
        );
        // T1 < T3 (streams swapped or sensors mislabelled)
        check(
            [Some(10.0), Some(15.0), Some(30.0), Some(25.0)],
            [None, None, None, None],
        );
        // a missing reading only blanks what needs it
        check(
            [Some(80.0), None, Some(20.0), Some(40.0)],
            [None, Some(1.0 / 3.0), None, None],
        );
        check([None, Some(50.0), Some(20.0), Some(40.0)], [None; 4]);
        // temperature cross (T4 > T1): ΔT1 negative, no LMTD
        check(
            [Some(50.0), Some(30.0), Some(20.0), Some(55.0)],
            [Some(2.0 / 3.0), Some(35.0 / 30.0), Some(35.0 / 30.0), None],
        );
        // negative temperatures work
        check(
            [Some(-5.0), Some(-10.0), Some(-20.0), Some(-12.0)],
            [
                Some(1.0 / 3.0),
                Some(8.0 / 15.0),
                Some(8.0 / 15.0),
                Some(ln(7.0, 10.0)),
            ],
        );
    }

    #[test]
    fn lmtd_is_continuous_near_equal_differences() {
        for dt2 in [10.0, 10.0 + 1e-9, 10.0 + 1e-7, 10.0 + 1e-5, 10.1] {
            let v = lmtd(10.0, dt2).unwrap();
            assert!(v.is_finite());
            assert!((v - (10.0 + dt2) / 2.0).abs() < 1e-3, "{dt2} -> {v}");
        }
    }

    #[test]
    fn never_nan_or_infinite() {
        let vals = [
            None,
            Some(f64::NAN),
            Some(f64::INFINITY),
            Some(-55.0),
            Some(0.0),
            Some(125.0),
            Some(20.0),
        ];
        for a in vals {
            for b in vals {
                for c in vals {
                    for d in vals {
                        let e = Efficiency::compute(a, b, c, d);
                        for v in [
                            e.hot_effectiveness,
                            e.cold_effectiveness,
                            e.effectiveness,
                            e.lmtd,
                        ]
                        .into_iter()
                        .flatten()
                        {
                            assert!(v.is_finite(), "{a:?} {b:?} {c:?} {d:?}");
                        }
                    }
                }
            }
        }
    }
}

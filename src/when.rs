//! Parsing of the durations and instants users type: `30s`, `90m`, `7d`,
//! `2026-11-01`, `2026-11-01T00:00:00Z`.
//!
//! Pure functions over `jiff`; no I/O.

use std::time::Duration;

use anyhow::{Context, bail};
use jiff::{Span, SpanRelativeTo, Timestamp, civil::Date, tz::TimeZone};

/// Parses a positive duration such as `30s`, `90m`, `24h`, `7d`, `1h 30m` or
/// ISO 8601 `PT30S` (days are 24 hours).
///
/// ```
/// use std::time::Duration;
/// assert_eq!(hxlog::when::parse_duration("90m").unwrap(), Duration::from_secs(5400));
/// assert_eq!(hxlog::when::parse_duration("7d").unwrap(), Duration::from_secs(7 * 86400));
/// assert!(hxlog::when::parse_duration("-5s").is_err());
/// ```
pub fn parse_duration(text: &str) -> anyhow::Result<Duration> {
    let span: Span = text.trim().parse().with_context(|| {
        format!("{text:?} is not a duration (examples: 30s, 90m, 24h, 7d, 1h 30m)")
    })?;
    let signed = span
        .to_duration(SpanRelativeTo::days_are_24_hours())
        .with_context(|| {
            format!("{text:?} cannot be used as a fixed duration (use s, m, h, d or w)")
        })?;
    if signed.is_negative() {
        bail!("{text:?} is negative; give a positive duration such as 30s");
    }
    Ok(signed.unsigned_abs())
}

/// Parses an instant for `--since`/`--until`: RFC 3339 (`2026-11-01T00:00:00Z`,
/// offsets allowed), a date (`2026-11-01`, midnight UTC), or a duration before
/// `now` (`90m`, `24h`, `7d`). A date-time without an offset
/// (`2026-11-01T07:30:00`) is refused: local time or UTC would be a guess.
///
/// ```
/// let now: jiff::Timestamp = "2026-11-28T12:00:00Z".parse().unwrap();
/// let at = |s| hxlog::when::parse_when(s, now).unwrap().to_string();
/// assert_eq!(at("2026-11-01"), "2026-11-01T00:00:00Z");
/// assert_eq!(at("24h"), "2026-11-27T12:00:00Z");
/// assert_eq!(at("2026-11-01T02:00:00+02:00"), "2026-11-01T00:00:00Z");
/// ```
pub fn parse_when(text: &str, now: Timestamp) -> anyhow::Result<Timestamp> {
    let t = text.trim();
    if let Ok(ts) = t.parse::<Timestamp>() {
        return Ok(ts);
    }
    if let Ok(date) = t.parse::<Date>() {
        // jiff reads a date-time as its date: never drop the time of day.
        if t.contains(['T', 't', ' ']) {
            bail!(
                "{text:?} has no UTC offset, so it is ambiguous: add one, e.g. {}Z (UTC) or {}+01:00; {FORMS}",
                t.replace([' ', 't'], "T"),
                t.replace([' ', 't'], "T")
            );
        }
        return TimeZone::UTC
            .to_timestamp(date.to_datetime(jiff::civil::Time::midnight()))
            .with_context(|| format!("{text:?} is out of range"));
    }
    if let Ok(d) = parse_duration(t) {
        let d = jiff::SignedDuration::try_from(d).context("duration too large")?;
        return now
            .checked_sub(d)
            .with_context(|| format!("{text:?} reaches before the representable range"));
    }
    bail!("{text:?} is not a time: {FORMS}")
}

/// The forms [`parse_when`] accepts, for its errors.
const FORMS: &str = "use RFC 3339 with an offset (2026-11-01T07:30:00Z or 2026-11-01T07:30:00+01:00), a date (2026-11-01, UTC midnight) or a duration before now (90m, 24h, 7d)";

#[cfg(test)]
mod tests {
    use super::*;

    fn check(input: &str, expected: Option<&str>) {
        let now: Timestamp = "2026-11-28T12:00:00Z".parse().unwrap();
        let got = parse_when(input, now).ok().map(|t| t.to_string());
        assert_eq!(got.as_deref(), expected, "input {input:?}");
    }

    #[test]
    fn when_table() {
        check("2026-11-01T00:00:00Z", Some("2026-11-01T00:00:00Z"));
        check("2026-11-01T00:00:00.5Z", Some("2026-11-01T00:00:00.5Z"));
        check("2026-11-01", Some("2026-11-01T00:00:00Z"));
        check("90m", Some("2026-11-28T10:30:00Z"));
        check("24h", Some("2026-11-27T12:00:00Z"));
        check("7d", Some("2026-11-21T12:00:00Z"));
        check(" 7d ", Some("2026-11-21T12:00:00Z"));
        check("yesterday", None);
        check("2026-11-28T07:30:00", None);
        check("2026-11-28 07:30", None);
        check("2026-11-28t07:30:00", None);
        check("2026-11-28 07:30:00Z", Some("2026-11-28T07:30:00Z"));
        check("2026-11-28T07:30:00-05:00", Some("2026-11-28T12:30:00Z"));
        check("2026-13-01", None);
        check("", None);
    }

    #[test]
    fn durations() {
        for (input, secs) in [
            ("30s", Some(30)),
            ("1h 30m", Some(5400)),
            ("PT2M", Some(120)),
            ("2w", Some(14 * 86400)),
            ("abc", None),
            ("-1s", None),
        ] {
            assert_eq!(
                parse_duration(input).ok().map(|d| d.as_secs()),
                secs,
                "{input}"
            );
        }
    }
}

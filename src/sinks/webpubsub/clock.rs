//! The local clock, as evidence for why the service refused a token.

use std::time::Duration;

use jiff::Timestamp;

pub(super) const CLOCK_HINT: &str = "the system clock may not be synchronised (no NTP yet); tokens minted before NTP sync are rejected";

/// What the logger knows about its own clock, used to explain a refused token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClockState {
    /// An NTP client says the clock is synchronised.
    Synchronised,
    /// The clock is certainly wrong (before 2024: a Raspberry Pi without RTC
    /// that has not reached an NTP server yet).
    Unsynchronised,
    /// No evidence either way.
    Unknown,
}

/// Looks at the local clock: `Synchronised` when systemd-timesyncd has created
/// `/run/systemd/timesync/synchronized`, `Unsynchronised` when the time is
/// before 2024, otherwise `Unknown`.
pub fn system_clock_state() -> ClockState {
    if std::path::Path::new("/run/systemd/timesync/synchronized").exists() {
        return ClockState::Synchronised;
    }
    // 2024-01-01T00:00:00Z
    if Timestamp::now().as_second() < 1_704_067_200 {
        return ClockState::Unsynchronised;
    }
    ClockState::Unknown
}

/// The largest difference from the service's `Date` header we put down to
/// network delay; beyond it the local clock is called wrong.
pub(super) const CLOCK_SKEW_TOLERANCE: Duration = Duration::from_secs(30);

/// Explains a 401 by the local clock when the evidence points there: the
/// service's `Date` header far from `now` (says by how much), or else a clock
/// the [`ClockState`] check calls unsynchronised.
pub(super) fn clock_hint(
    state: ClockState,
    server_date: Option<Timestamp>,
    now: Timestamp,
) -> Option<String> {
    if let Some(server) = server_date {
        let skew = now.duration_since(server).as_secs();
        if skew.unsigned_abs() > CLOCK_SKEW_TOLERANCE.as_secs() {
            let direction = if skew < 0 { "behind" } else { "ahead of" };
            return Some(format!(
                "the system clock is {} s {direction} the service's; {CLOCK_HINT}",
                skew.unsigned_abs()
            ));
        }
    }
    (state == ClockState::Unsynchronised).then(|| CLOCK_HINT.to_string())
}

//! The message schema (see the parent module's documentation) and packing a
//! batch into messages of at most a given size.

use std::ops::Range;

use serde::Serialize;
use serde::ser::SerializeMap;

use crate::efficiency::Efficiency;
use crate::sample::{Reading, Sample, Source};

/// The `type` of every message.
pub const MESSAGE_TYPE: &str = "hxlog.samples";

/// The `type` of an alarm message.
pub const ALARM_TYPE: &str = "hxlog.alarm";

/// The schema `version` of every message. Only an incompatible change (a field
/// removed, renamed or changing meaning) bumps it; added fields (such as
/// `clock` and `taken_at_raw`) keep it, since subscribers ignore unknown keys.
pub const MESSAGE_VERSION: u32 = 1;

#[derive(Serialize)]
struct Envelope<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    version: u32,
    samples: &'a [WireSample<'a>],
}

#[derive(Serialize)]
struct WireSample<'a> {
    id: String,
    device_id: &'a str,
    taken_at: String,
    clock: crate::sample::ClockState,
    taken_at_raw: Option<String>,
    source: Source,
    mock: bool,
    readings: WireReadings<'a>,
    efficiency: &'a Efficiency,
}

/// The readings as a JSON object keyed by role, in mapping order.
struct WireReadings<'a>(&'a [Reading]);

#[derive(Serialize)]
struct WireReading<'a> {
    celsius: Option<f64>,
    quality: crate::sample::Quality,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'a str>,
}

impl Serialize for WireReadings<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for r in self.0 {
            let wire = WireReading {
                celsius: r
                    .celsius
                    .filter(|_| r.quality == crate::sample::Quality::Ok),
                quality: r.quality,
                reason: r.reason.as_deref(),
            };
            map.serialize_entry(&r.role, &wire)?;
        }
        map.end()
    }
}

impl<'a> WireSample<'a> {
    fn new(s: &'a Sample) -> Self {
        WireSample {
            id: s.id.to_string(),
            device_id: &s.device_id,
            taken_at: s.taken_at.to_string(),
            clock: s.clock.state,
            taken_at_raw: s.clock.taken_at_raw.map(|t| t.to_string()),
            source: s.source,
            mock: s.source == Source::Mock,
            readings: WireReadings(&s.readings),
            efficiency: &s.efficiency,
        }
    }
}

/// Encodes `batch` as messages (JSON bodies) of at most `max_bytes` each,
/// keeping the samples in order and each sample in exactly one message.
///
/// A sample too big to fit in `max_bytes` on its own still gets a message of
/// its own (the service decides whether to refuse it). An empty batch gives no
/// messages.
///
/// ```
/// use hxlog::sample::{Reading, Sample, Source};
/// use hxlog::sinks::webpubsub::encode_messages;
/// let s = Sample::new("hx-01", jiff::Timestamp::UNIX_EPOCH, Source::Mock,
///     vec![Reading::ok("T1", None, 61.25)]);
/// let messages = encode_messages(&[s], 256 * 1024);
/// let v: serde_json::Value = serde_json::from_slice(&messages[0]).unwrap();
/// assert_eq!(v["type"], "hxlog.samples");
/// assert_eq!(v["samples"][0]["mock"], true);
/// assert_eq!(v["samples"][0]["readings"]["T1"]["celsius"], 61.25);
/// ```
pub fn encode_messages(batch: &[Sample], max_bytes: usize) -> Vec<Vec<u8>> {
    pack(batch, max_bytes)
        .into_iter()
        .map(|(_, body)| body)
        .collect()
}

/// [`encode_messages`], each message with the positions in `batch` of the
/// samples it holds (so a refusal can name exactly those samples).
pub(super) fn pack(batch: &[Sample], max_bytes: usize) -> Vec<(Range<usize>, Vec<u8>)> {
    let wire: Vec<WireSample<'_>> = batch.iter().map(WireSample::new).collect();
    let envelope = |samples: &[WireSample<'_>]| {
        serde_json::to_vec(&Envelope {
            kind: MESSAGE_TYPE,
            version: MESSAGE_VERSION,
            samples,
        })
        .expect("a message of plain strings, numbers and maps always serializes")
    };
    // Size of the envelope around an empty array, and of each sample: a message
    // of n samples is overhead + their sizes + (n - 1) commas.
    let overhead = envelope(&[]).len();
    let sizes: Vec<usize> = wire
        .iter()
        .map(|w| serde_json::to_vec(w).map_or(0, |v| v.len()))
        .collect();
    let mut messages = Vec::new();
    let mut start = 0;
    while start < wire.len() {
        let mut end = start + 1;
        let mut len = overhead + sizes[start];
        while end < wire.len() && len + 1 + sizes[end] <= max_bytes {
            len += 1 + sizes[end];
            end += 1;
        }
        messages.push((start..end, envelope(&wire[start..end])));
        start = end;
    }
    messages
}

/// The `hxlog.alarm` message of one alarm event (version 1): `id`,
/// `device_id`, `alarm` (`max`, `min`, `missing`, `effectiveness`), `role`
/// (`""` for effectiveness), `state` (`raised` or `cleared`), `at` (the
/// deciding sample's `taken_at`), `value`, `threshold`, `message`.
///
/// ```
/// use hxlog::alarms::{AlarmKey, Event, Published};
/// let a = Published {
///     id: uuid::Uuid::nil(),
///     device_id: "hx-01".into(),
///     event: Event {
///         key: AlarmKey { alarm: "missing".into(), role: "T2".into() },
///         raised: true,
///         at: jiff::Timestamp::UNIX_EPOCH,
///         value: Some(3.0),
///         threshold: Some(3.0),
///         message: "T2 missing for 3 readings".into(),
///     },
/// };
/// let v: serde_json::Value =
///     serde_json::from_slice(&hxlog::sinks::webpubsub::alarm_message(&a)).unwrap();
/// assert_eq!(v["type"], "hxlog.alarm");
/// assert_eq!(v["state"], "raised");
/// assert_eq!(v["at"], "1970-01-01T00:00:00Z");
/// ```
pub fn alarm_message(a: &crate::alarms::Published) -> Vec<u8> {
    let e = &a.event;
    serde_json::to_vec(&serde_json::json!({
        "type": ALARM_TYPE,
        "version": MESSAGE_VERSION,
        "id": a.id.to_string(),
        "device_id": a.device_id,
        "alarm": e.key.alarm,
        "role": e.key.role,
        "state": if e.raised { "raised" } else { "cleared" },
        "at": e.at.to_string(),
        "value": e.value,
        "threshold": e.threshold,
        "message": e.message,
    }))
    .expect("plain strings and numbers always serialize")
}

//! How a sample looks to a user: the JSON and CSV shapes printed by
//! `hxlog sample --json`, `hxlog status --json` and `hxlog export`. One owner,
//! so every command shows a sample the same way (a sink's wire format is the
//! sink's own, and versioned).
//!
//! It must not do I/O: callers write the values it returns.

use serde_json::{Value, json};

use crate::outbox::Stored;
use crate::sample::{Reading, Source};

/// The CSV header: `taken_at, device_id, source, <roles…>, effectiveness,
/// hot_effectiveness, cold_effectiveness, lmtd_k, <role>_quality, <role>_reason…, sample_id,
/// clock, taken_at_raw` (the last two appended so older readers by position keep working).
pub fn csv_header(roles: &[String]) -> Vec<String> {
    let mut h: Vec<String> = ["taken_at", "device_id", "source"]
        .map(String::from)
        .to_vec();
    h.extend(roles.iter().cloned());
    h.extend(
        [
            "effectiveness",
            "hot_effectiveness",
            "cold_effectiveness",
            "lmtd_k",
        ]
        .map(String::from),
    );
    for r in roles {
        h.push(format!("{r}_quality"));
        h.push(format!("{r}_reason"));
    }
    h.push("sample_id".into());
    h.push("clock".into());
    h.push("taken_at_raw".into());
    h
}

/// One CSV row. A missing reading is an empty cell with its quality and reason
/// beside it; an undefined figure is an empty cell.
pub fn csv_row(s: &Stored, roles: &[String]) -> Vec<String> {
    let s = &s.sample;
    let num = |v: Option<f64>| v.map(|v| v.to_string()).unwrap_or_default();
    let mut row = vec![
        s.taken_at.to_string(),
        s.device_id.clone(),
        s.source.to_string(),
    ];
    for r in roles {
        row.push(num(s.celsius(r)));
    }
    let e = &s.efficiency;
    row.extend(
        [
            e.effectiveness,
            e.hot_effectiveness,
            e.cold_effectiveness,
            e.lmtd,
        ]
        .map(num),
    );
    for r in roles {
        match s.reading(r) {
            Some(reading) => {
                row.push(reading.quality.to_string());
                row.push(reading.reason.clone().unwrap_or_default());
            }
            None => {
                row.push("unmapped".into());
                row.push(format!("no {r} reading in this sample"));
            }
        }
    }
    row.push(s.id.to_string());
    row.push(s.clock.state.to_string());
    row.push(
        s.clock
            .taken_at_raw
            .map(|t| t.to_string())
            .unwrap_or_default(),
    );
    row
}

/// One reading as JSON: `role`, `sensor_id`, `celsius`, `quality` and
/// `reason`, every key always present (`null` when it has no value).
pub fn reading_json(r: &Reading) -> Value {
    json!({
        "role": r.role,
        "sensor_id": r.sensor_id,
        "celsius": r.celsius,
        "quality": r.quality,
        "reason": r.reason,
    })
}

/// One sample as a JSON object: export's JSON lines, `hxlog sample --json`
/// and `status --json`'s `last_sample`.
pub fn sample_json(s: &Stored) -> Value {
    let x = &s.sample;
    let readings: Vec<Value> = x.readings.iter().map(reading_json).collect();
    json!({
        "id": x.id.to_string(),
        "seq": s.seq,
        "device_id": x.device_id,
        "taken_at": x.taken_at.to_string(),
        "clock": x.clock.state,
        "taken_at_raw": x.clock.taken_at_raw.map(|t| t.to_string()),
        "source": x.source,
        "mock": x.source == Source::Mock,
        "readings": readings,
        "efficiency": x.efficiency,
    })
}

#[cfg(test)]
mod tests {
    use jiff::Timestamp;

    use super::*;
    use crate::sample::{Quality, Sample};

    fn stored(seq: i64, source: Source, readings: Vec<Reading>) -> Stored {
        let taken_at = Timestamp::from_second(1_800_000_000).unwrap();
        Stored {
            seq,
            sample: Sample::new("hx", taken_at, source, readings),
        }
    }

    #[test]
    fn every_reading_has_every_key_null_when_absent() {
        let s = stored(
            7,
            Source::Mock,
            vec![
                Reading::ok("T1", None, 61.5),
                Reading::missing("T2", Some("28-2".into()), Quality::CrcNo, "crc=.. NO"),
            ],
        );
        let v = sample_json(&s);
        assert_eq!(
            v["readings"],
            json!([
                {"role": "T1", "sensor_id": null, "celsius": 61.5, "quality": "ok", "reason": null},
                {"role": "T2", "sensor_id": "28-2", "celsius": null, "quality": "crc_no", "reason": "crc=.. NO"},
            ])
        );
        let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            [
                "id",
                "seq",
                "device_id",
                "taken_at",
                "clock",
                "taken_at_raw",
                "source",
                "mock",
                "readings",
                "efficiency"
            ]
        );
        assert_eq!(
            (v["seq"].clone(), v["mock"].clone()),
            (json!(7), json!(true))
        );
    }

    #[test]
    fn missing_readings_are_empty_cells_with_a_reason() {
        let s = stored(
            1,
            Source::W1,
            vec![
                Reading::ok("T1", Some("28-1".into()), 85.0),
                Reading::missing(
                    "T2",
                    Some("28-2".into()),
                    Quality::PowerOnReset,
                    "85 °C power-on value",
                ),
            ],
        );
        let roles: Vec<String> = ["T1", "T2"].map(String::from).to_vec();
        let h = csv_header(&roles);
        let row = csv_row(&s, &roles);
        let col = |name: &str| row[h.iter().position(|c| c == name).unwrap()].clone();
        assert_eq!(col("T1"), "85");
        assert_eq!(col("T2"), "");
        assert_eq!(col("T2_quality"), "power_on_reset");
        assert_eq!(col("T2_reason"), "85 °C power-on value");
        assert_eq!(col("effectiveness"), "");
        assert_eq!(col("taken_at"), "2027-01-15T08:00:00Z");
        assert_eq!(col("source"), "w1");
        assert_eq!(
            (col("clock"), col("taken_at_raw")),
            ("synced".into(), "".into())
        );
    }

    #[test]
    fn a_corrected_sample_shows_its_raw_time() {
        let mut s = stored(1, Source::Mock, vec![Reading::ok("T1", None, 60.0)]);
        s.sample.clock = crate::sample::ClockStamp {
            state: crate::sample::ClockState::Corrected,
            boot_id: Some("b".into()),
            boottime_us: Some(5),
            taken_at_raw: Some(Timestamp::from_second(1_799_740_800).unwrap()),
        };
        let v = sample_json(&s);
        assert_eq!(v["clock"], json!("corrected"));
        assert_eq!(v["taken_at_raw"], json!("2027-01-12T08:00:00Z"));
        let roles = vec!["T1".to_string()];
        let h = csv_header(&roles);
        let row = csv_row(&s, &roles);
        assert_eq!(&h[h.len() - 2..], ["clock", "taken_at_raw"]);
        assert_eq!(&row[row.len() - 2..], ["corrected", "2027-01-12T08:00:00Z"]);
        let unsynced = crate::sample::ClockStamp {
            state: crate::sample::ClockState::Unsynced,
            ..s.sample.clock.clone()
        };
        s.sample.clock = crate::sample::ClockStamp {
            taken_at_raw: None,
            ..unsynced
        };
        assert_eq!(sample_json(&s)["clock"], json!("unsynced"));
        assert_eq!(sample_json(&s)["taken_at_raw"], json!(null));
    }
}

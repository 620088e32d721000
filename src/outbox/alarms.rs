//! Alarm events in the outbox: appended by the sampler in the order they
//! happen, read as state (the newest event per alarm) by the dashboard,
//! `status` and `/metrics`, and delivered to a sink through its own cursor
//! (`sinks.alarm_seq`), so an alarm raised during an outage is sent later, in
//! order, and never lost. A new sink's cursor is 0: it receives every event
//! still kept, oldest first (`skip_to_newest` starts it after the newest).
//! Pruning (`prune_alarms`) deletes the events every alarm-publishing sink
//! received once they are older than the retention, but never the newest
//! event of an alarm: the state.

use jiff::Timestamp;
use rusqlite::{OptionalExtension, params};
use uuid::Uuid;

use super::{Outbox, ts};
use crate::alarms::{AlarmKey, Event};

/// An alarm event as stored.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct StoredEvent {
    /// Position among alarm events (never reused).
    pub seq: i64,
    /// Idempotency key.
    #[serde(serialize_with = "as_text")]
    pub id: Uuid,
    /// The logger.
    pub device_id: String,
    /// The event.
    #[serde(flatten)]
    pub event: Event,
}

fn as_text<S: serde::Serializer>(id: &Uuid, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(id)
}

const COLUMNS: &str = "seq, id, device_id, alarm, role, raised, at_us, value, threshold, message";

fn decode(r: &rusqlite::Row<'_>) -> rusqlite::Result<StoredEvent> {
    let id: Vec<u8> = r.get(1)?;
    let at: i64 = r.get(6)?;
    Ok(StoredEvent {
        seq: r.get(0)?,
        id: Uuid::from_slice(&id).unwrap_or_default(),
        device_id: r.get(2)?,
        event: Event {
            key: AlarmKey {
                alarm: r.get(3)?,
                role: r.get(4)?,
            },
            raised: r.get::<_, i64>(5)? != 0,
            at: ts(at).unwrap_or(Timestamp::UNIX_EPOCH),
            value: r.get(7)?,
            threshold: r.get(8)?,
            message: r.get(9)?,
        },
    })
}

impl Outbox {
    /// Appends `events` in one transaction, in order.
    pub fn record_alarms(&mut self, device_id: &str, events: &[Event]) -> anyhow::Result<()> {
        let tx = self.conn.transaction()?;
        for e in events {
            tx.execute(
                "INSERT INTO alarm_events (id, device_id, alarm, role, raised, at_us, value, threshold, message) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                params![
                    Uuid::now_v7().as_bytes().as_slice(),
                    device_id,
                    e.key.alarm,
                    e.key.role,
                    e.raised as i64,
                    e.at.as_microsecond(),
                    e.value,
                    e.threshold,
                    e.message
                ],
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    /// The state of every alarm ever raised: its newest event.
    pub fn alarm_states(&self) -> anyhow::Result<Vec<StoredEvent>> {
        let mut stmt = self.conn.prepare_cached(&format!(
            "SELECT {COLUMNS} FROM alarm_events WHERE seq IN \
             (SELECT max(seq) FROM alarm_events GROUP BY alarm, role) ORDER BY alarm, role"
        ))?;
        let rows = stmt.query_map([], decode)?;
        rows.map(|r| r.map_err(anyhow::Error::from)).collect()
    }

    /// The alarms active now: the newest event of each alarm, where it raised.
    pub fn active_alarms(&self) -> anyhow::Result<Vec<StoredEvent>> {
        let mut all = self.alarm_states()?;
        all.retain(|e| e.event.raised);
        Ok(all)
    }

    /// Up to `limit` alarm events not yet delivered to `sink`, oldest first.
    pub fn pending_alarms(&self, sink: &str, limit: usize) -> anyhow::Result<Vec<StoredEvent>> {
        let mut stmt = self.conn.prepare_cached(&format!(
            "SELECT {COLUMNS} FROM alarm_events WHERE seq > \
             (SELECT coalesce((SELECT alarm_seq FROM sinks WHERE name = ?1), 0)) \
             ORDER BY seq LIMIT ?2"
        ))?;
        let rows = stmt.query_map(params![sink, limit as i64], decode)?;
        rows.map(|r| r.map_err(anyhow::Error::from)).collect()
    }

    /// Deletes alarm events taken before `cutoff` that every sink in
    /// `alarm_sinks` (the configured sinks that publish alarms) has received,
    /// always keeping the newest event of each alarm: it is the alarm's state,
    /// so an active alarm survives restarts and a new sink still learns it.
    /// With no sink configured at all (`sinks` empty) nothing is deleted, as
    /// for samples: the outbox is then the only copy. Returns the number deleted.
    pub fn prune_alarms(
        &mut self,
        cutoff: Timestamp,
        sinks: &[&str],
        alarm_sinks: &[&str],
    ) -> anyhow::Result<usize> {
        if sinks.is_empty() {
            return Ok(0);
        }
        let mut delivered = i64::MAX;
        for s in alarm_sinks {
            let seq: Option<i64> = self
                .conn
                .query_row("SELECT alarm_seq FROM sinks WHERE name = ?1", [s], |r| {
                    r.get(0)
                })
                .optional()?;
            delivered = delivered.min(seq.unwrap_or(0));
        }
        let n = self.conn.execute(
            "DELETE FROM alarm_events WHERE seq <= ?1 AND at_us < ?2 \
             AND seq NOT IN (SELECT max(seq) FROM alarm_events GROUP BY alarm, role)",
            params![delivered, cutoff.as_microsecond()],
        )?;
        Ok(n)
    }

    /// Records that `sink` refused alarm events for their content (as the
    /// sink's last error, class `rejected`, and in its error count); the
    /// cursor is moved by [`Outbox::ack_alarms`].
    pub fn note_alarms_refused(&mut self, sink: &str, reason: &str) -> anyhow::Result<()> {
        self.conn.execute(
            "INSERT INTO sinks (name, last_error, last_error_class, last_error_us) \
             VALUES (?1, ?2, 'rejected', ?3) ON CONFLICT (name) DO UPDATE SET \
             last_error = excluded.last_error, last_error_class = 'rejected', \
             last_error_us = excluded.last_error_us",
            params![sink, reason, super::now_us()],
        )?;
        self.count_error(sink, "rejected", 1)
    }

    /// Records that `sink` received every alarm event up to `seq`.
    pub fn ack_alarms(&mut self, sink: &str, seq: i64) -> anyhow::Result<()> {
        self.conn.execute(
            "INSERT INTO sinks (name, alarm_seq, last_success_us) VALUES (?1, ?2, ?3) \
             ON CONFLICT (name) DO UPDATE SET alarm_seq = max(alarm_seq, excluded.alarm_seq), \
             last_success_us = excluded.last_success_us, backoff_until_us = NULL",
            params![sink, seq, super::now_us()],
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Synchronous;

    fn event(alarm: &str, raised: bool) -> Event {
        Event {
            key: AlarmKey {
                alarm: alarm.into(),
                role: "T1".into(),
            },
            raised,
            at: Timestamp::UNIX_EPOCH,
            value: Some(1.0),
            threshold: None,
            message: format!("{alarm} {raised}"),
        }
    }

    fn at(e: Event, role: &str, at: Timestamp) -> Event {
        Event {
            key: AlarmKey {
                role: role.into(),
                ..e.key
            },
            at,
            ..e
        }
    }

    fn keys(events: Vec<StoredEvent>) -> Vec<String> {
        events
            .into_iter()
            .map(|e| {
                let sign = if e.event.raised { "+" } else { "-" };
                format!("{sign}{} {}", e.event.key.alarm, e.event.key.role)
            })
            .collect()
    }

    #[test]
    fn pruning_keeps_the_newest_event_of_each_alarm_and_what_a_sink_has_not_received() {
        let dir = tempfile::tempdir().unwrap();
        let mut o = Outbox::open(&dir.path().join("o.sqlite"), Synchronous::Full).unwrap();
        let old = Timestamp::UNIX_EPOCH;
        let now = Timestamp::now();
        let cutoff = now
            .checked_sub(jiff::SignedDuration::from_hours(24))
            .unwrap();
        o.record_alarms(
            "hx",
            &[
                at(event("max", true), "T1", old),
                at(event("max", false), "T1", old),
                at(event("max", true), "T1", old),
                at(event("missing", true), "T2", old),
                at(event("missing", false), "T2", old),
                at(event("min", true), "T3", now),
            ],
        )
        .unwrap();
        let all = o.pending_alarms("webpubsub", 100).unwrap();
        let sinks = ["postgres", "webpubsub"];
        // no sink at all, or the alarm sink has received nothing: nothing goes
        assert_eq!(o.prune_alarms(cutoff, &[], &[]).unwrap(), 0);
        assert_eq!(o.prune_alarms(cutoff, &sinks, &["webpubsub"]).unwrap(), 0);
        // received up to "+missing T2": the older events of each alarm go,
        // the newest of each stays, and so does everything not received yet
        o.ack_alarms("webpubsub", all[3].seq).unwrap();
        assert_eq!(o.prune_alarms(cutoff, &sinks, &["webpubsub"]).unwrap(), 3);
        assert_eq!(
            keys(o.pending_alarms("new-sink", 100).unwrap()),
            ["+max T1", "-missing T2", "+min T3"]
        );
        // received everything: the newest of each alarm still stays (the
        // state: an active alarm survives a restart)
        o.ack_alarms("webpubsub", all[5].seq).unwrap();
        assert_eq!(o.prune_alarms(cutoff, &sinks, &["webpubsub"]).unwrap(), 0);
        assert_eq!(keys(o.active_alarms().unwrap()), ["+max T1", "+min T3"]);
        // a sink that publishes no alarms (postgres) holds nothing back
        assert_eq!(o.prune_alarms(now, &sinks, &[]).unwrap(), 0);
    }

    #[test]
    fn a_sink_started_from_now_skips_the_alarm_events_too() {
        let dir = tempfile::tempdir().unwrap();
        let mut o = Outbox::open(&dir.path().join("o.sqlite"), Synchronous::Full).unwrap();
        o.record_alarms("hx", &[event("max", true), event("missing", true)])
            .unwrap();
        let skipped = o.skip_to_newest("webpubsub").unwrap();
        assert_eq!((skipped.samples, skipped.alarm_events), (0, 2));
        assert!(o.pending_alarms("webpubsub", 10).unwrap().is_empty());
        o.record_alarms("hx", &[event("max", false)]).unwrap();
        assert_eq!(
            keys(o.pending_alarms("webpubsub", 10).unwrap()),
            ["-max T1"]
        );
        // a sink registered the usual way starts at the oldest event kept
        o.register_sinks(&["other"]).unwrap();
        assert_eq!(o.pending_alarms("other", 10).unwrap().len(), 3);
    }

    #[test]
    fn the_state_is_the_newest_event_and_a_sink_gets_every_event_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let mut o = Outbox::open(&dir.path().join("o.sqlite"), Synchronous::Full).unwrap();
        o.record_alarms("hx", &[event("max", true), event("missing", true)])
            .unwrap();
        o.record_alarms("hx", &[event("max", false)]).unwrap();
        let active: Vec<String> = o
            .active_alarms()
            .unwrap()
            .into_iter()
            .map(|e| e.event.key.alarm)
            .collect();
        assert_eq!(active, ["missing"]);
        let pending = o.pending_alarms("webpubsub", 2).unwrap();
        assert_eq!(
            pending
                .iter()
                .map(|e| e.event.message.as_str())
                .collect::<Vec<_>>(),
            ["max true", "missing true"]
        );
        o.ack_alarms("webpubsub", pending[1].seq).unwrap();
        let rest = o.pending_alarms("webpubsub", 10).unwrap();
        assert_eq!(rest.len(), 1);
        assert_eq!(rest[0].event.message, "max false");
        assert_eq!(o.pending_alarms("postgres", 10).unwrap().len(), 3);
    }
}

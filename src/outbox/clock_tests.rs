//! The outbox's part of trustworthy time: correcting a boot's unsynced
//! samples, holding them back from sinks, and revisions for re-delivery.

use super::*;
use crate::clock::Anchor;
use crate::sample::{ClockStamp, ClockState, Reading, Sample, Source};

/// True time of the sync in these tests; the stale clock runs 3 days behind.
const TRUTH: i64 = 1_800_000_000;
const BEHIND: i64 = 3 * 86_400;

/// A sample taken `boot_s` seconds after boot of `boot`, by a wall clock that
/// read `wall_s`.
fn taken(boot: &str, boot_s: i64, wall_s: i64, state: ClockState) -> Sample {
    Sample::new(
        "hx-test",
        Timestamp::from_second(wall_s).unwrap(),
        Source::Mock,
        vec![Reading::ok("T1", None, 70.0)],
    )
    .with_clock(ClockStamp {
        state,
        boot_id: Some(boot.into()),
        boottime_us: Some(boot_s * 1_000_000),
        taken_at_raw: None,
    })
}

/// The anchor of `boot` when the clock synchronised `sync_boot_s` after boot,
/// at true time `TRUTH`.
fn anchor(boot: &str, sync_boot_s: i64) -> Anchor {
    Anchor {
        boot_id: boot.into(),
        offset_us: (TRUTH - sync_boot_s) * 1_000_000,
    }
}

fn open(dir: &tempfile::TempDir) -> Outbox {
    Outbox::open(&dir.path().join("outbox.sqlite"), Synchronous::Full).unwrap()
}

fn all(ob: &Outbox) -> Vec<Sample> {
    ob.pending("none", 1000)
        .unwrap()
        .into_iter()
        .map(|s| s.sample)
        .collect()
}

fn now() -> Timestamp {
    Timestamp::from_second(TRUTH).unwrap()
}

#[test]
fn a_sync_corrects_every_unsynced_sample_of_its_boot_from_boottime() {
    let dir = tempfile::tempdir().unwrap();
    let mut ob = open(&dir);
    // boot b: taken 10 s and 20 s after boot on a clock 3 days behind,
    // synchronised 100 s after boot.
    for t in [10, 20] {
        ob.insert(&taken(
            "b",
            t,
            TRUTH - 100 + t - BEHIND,
            ClockState::Unsynced,
        ))
        .unwrap();
    }
    assert_eq!(ob.record_sync(&anchor("b", 100), now()).unwrap(), 2);
    let got = all(&ob);
    for (s, t) in got.iter().zip([10, 20]) {
        assert_eq!(s.clock.state, ClockState::Corrected);
        assert_eq!(s.taken_at.as_second(), TRUTH - 100 + t);
        assert_eq!(
            s.clock.taken_at_raw.unwrap().as_second(),
            TRUTH - 100 + t - BEHIND
        );
    }
    // nothing left to do: a second sync writes nothing and changes nothing
    assert_eq!(ob.record_sync(&anchor("b", 100), now()).unwrap(), 0);
    assert_eq!(all(&ob), got);
    let st = ob.status(&[]).unwrap();
    assert_eq!((st.unsynced_samples, st.corrected_samples), (0, 2));
}

#[test]
fn a_sync_before_the_first_sample_leaves_synced_samples_alone() {
    let dir = tempfile::tempdir().unwrap();
    let mut ob = open(&dir);
    assert_eq!(ob.record_sync(&anchor("b", 5), now()).unwrap(), 0);
    let s = taken("b", 10, TRUTH + 5, ClockState::Synced);
    ob.insert(&s).unwrap();
    assert_eq!(ob.record_sync(&anchor("b", 5), now()).unwrap(), 0);
    assert_eq!(all(&ob), vec![s]);
    assert_eq!(
        ob.anchor("b").unwrap().unwrap().synced_at,
        now(),
        "the first sync of the boot is kept"
    );
}

#[test]
fn several_boots_in_one_outbox_are_corrected_each_by_its_own_anchor() {
    let dir = tempfile::tempdir().unwrap();
    let mut ob = open(&dir);
    // boot a never synchronised; boot b did, 50 s after boot; boot c is current
    // and unsynced.
    ob.insert(&taken("a", 30, 1_000, ClockState::Unsynced))
        .unwrap();
    ob.insert(&taken("b", 30, 2_000, ClockState::Unsynced))
        .unwrap();
    ob.insert(&taken("c", 30, 3_000, ClockState::Unsynced))
        .unwrap();
    assert_eq!(ob.record_sync(&anchor("b", 50), now()).unwrap(), 1);
    let got = all(&ob);
    let states: Vec<_> = got.iter().map(|s| s.clock.state).collect();
    assert_eq!(
        states,
        [
            ClockState::Unsynced,
            ClockState::Corrected,
            ClockState::Unsynced
        ]
    );
    assert_eq!(got[0].taken_at.as_second(), 1_000);
    assert_eq!(got[1].taken_at.as_second(), TRUTH - 20);
    assert_eq!(got[2].taken_at.as_second(), 3_000);
}

#[test]
fn a_step_while_synced_keeps_the_boots_first_anchor() {
    let dir = tempfile::tempdir().unwrap();
    let mut ob = open(&dir);
    ob.insert(&taken("b", 10, 500, ClockState::Unsynced))
        .unwrap();
    assert_eq!(ob.record_sync(&anchor("b", 100), now()).unwrap(), 1);
    // an unsynced sample written late (held in memory while the disk was
    // full), then a sync observed after a 7 s step: the first anchor still
    // places the sample.
    ob.insert(&taken("b", 20, 600, ClockState::Unsynced))
        .unwrap();
    let stepped = Anchor {
        offset_us: anchor("b", 100).offset_us + 7_000_000,
        ..anchor("b", 100)
    };
    assert_eq!(ob.record_sync(&stepped, now()).unwrap(), 1);
    let got = all(&ob);
    assert_eq!(got[0].taken_at.as_second(), TRUTH - 90);
    assert_eq!(got[1].taken_at.as_second(), TRUTH - 80);
}

#[test]
fn the_correction_survives_a_restart_within_the_boot() {
    let dir = tempfile::tempdir().unwrap();
    let mut ob = open(&dir);
    ob.insert(&taken("b", 10, 500, ClockState::Unsynced))
        .unwrap();
    drop(ob);
    let mut ob = open(&dir);
    assert_eq!(ob.record_sync(&anchor("b", 100), now()).unwrap(), 1);
    assert_eq!(all(&ob)[0].taken_at.as_second(), TRUTH - 90);
}

#[test]
fn unsynced_samples_of_the_current_boot_are_held_until_old_enough() {
    let dir = tempfile::tempdir().unwrap();
    let mut ob = open(&dir);
    ob.insert(&taken("old", 10, 100, ClockState::Unsynced))
        .unwrap();
    ob.insert(&taken("b", 5, 200, ClockState::Synced)).unwrap();
    ob.insert(&taken("b", 10, 300, ClockState::Unsynced))
        .unwrap();
    ob.insert(&taken("b", 20, 400, ClockState::Unsynced))
        .unwrap();
    ob.insert(&taken("b", 30, 500, ClockState::Synced)).unwrap();
    let hold = |after_s: i64| Hold {
        boot_id: "b".into(),
        boottime_after_us: after_s * 1_000_000,
    };
    let walls = |h: Option<&Hold>| -> Vec<i64> {
        ob.pending_held("pg", 10, h)
            .unwrap()
            .iter()
            .map(|s| s.sample.taken_at.as_second())
            .collect()
    };
    // the old boot never synchronises: never held; the batch stops before
    // the first held sample, so order stays on seq
    assert_eq!(walls(Some(&hold(0))), [100, 200]);
    assert_eq!(walls(Some(&hold(10))), [100, 200, 300]);
    assert_eq!(walls(Some(&hold(20))), [100, 200, 300, 400, 500]);
    assert_eq!(walls(None), [100, 200, 300, 400, 500]);
}

#[test]
fn a_sample_corrected_after_delivery_is_a_revision_for_that_sink_only() {
    let dir = tempfile::tempdir().unwrap();
    let mut ob = open(&dir);
    ob.register_sinks(&["pg", "wps"]).unwrap();
    let s1 = ob
        .insert(&taken("b", 10, 500, ClockState::Unsynced))
        .unwrap();
    ob.insert(&taken("b", 20, 510, ClockState::Unsynced))
        .unwrap();
    // pg received the first sample unsynced; wps nothing yet
    ob.ack("pg", s1, 1).unwrap();
    assert_eq!(ob.revised("pg", 10).unwrap(), (vec![], None));
    assert_eq!(ob.record_sync(&anchor("b", 100), now()).unwrap(), 2);
    let (pg, rev) = ob.revised("pg", 10).unwrap();
    assert_eq!(pg.len(), 1);
    assert_eq!(pg[0].seq, s1);
    assert_eq!(pg[0].sample.clock.state, ClockState::Corrected);
    let (wps, wps_rev) = ob.revised("wps", 10).unwrap();
    assert!(wps.is_empty(), "wps gets them corrected through its cursor");
    assert_eq!(wps_rev, rev);
    ob.ack_revised("pg", rev.unwrap()).unwrap();
    assert_eq!(ob.revised("pg", 10).unwrap(), (vec![], None));
    assert_eq!(ob.revised("wps", 10).unwrap().1, rev);
}

#[test]
fn an_outbox_of_schema_version_1_is_migrated_and_its_samples_count_as_synced() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("outbox.sqlite");
    {
        let c = rusqlite::Connection::open(&path).unwrap();
        c.execute_batch(MIGRATIONS[0].1).unwrap();
        c.pragma_update(None, "user_version", 1).unwrap();
        c.execute(
            "INSERT INTO samples (id, device_id, taken_at_us, source, readings) VALUES (?1, 'hx', 5, 'mock', '[]')",
            [uuid::Uuid::now_v7().as_bytes().as_slice()],
        )
        .unwrap();
    }
    let ob = Outbox::open(&path, Synchronous::Full).unwrap();
    let got = all(&ob);
    assert_eq!(got[0].clock, ClockStamp::default());
}

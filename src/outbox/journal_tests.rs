//! The outbox with its sample journal: a taken sample is seen by every reader
//! from the moment it is journaled, keeps its seq when folded, and is never
//! seen twice or missed while folds happen.

use super::*;
use crate::clock::Anchor;
use crate::sample::{ClockStamp, ClockState, Reading, Sample, Source};

fn sample_at(secs: i64) -> Sample {
    Sample::new(
        "hx-test",
        Timestamp::from_second(1_800_000_000 + secs).unwrap(),
        Source::Mock,
        vec![Reading::ok("T1", None, 70.0), Reading::ok("T2", None, 45.0)],
    )
}

fn path(dir: &tempfile::TempDir) -> PathBuf {
    dir.path().join("outbox.sqlite")
}

fn open(dir: &tempfile::TempDir) -> Outbox {
    Outbox::open(&path(dir), Synchronous::Full).unwrap()
}

/// Rows in SQLite itself (not the journal).
fn in_sqlite(ob: &Outbox) -> i64 {
    ob.conn
        .query_row("SELECT count(*) FROM samples", [], |r| r.get(0))
        .unwrap()
}

fn seqs(v: &[Stored]) -> Vec<i64> {
    v.iter().map(|s| s.seq).collect()
}

#[test]
fn a_taken_sample_is_seen_by_every_reader_before_and_after_the_fold() {
    let dir = tempfile::tempdir().unwrap();
    let mut ob = open(&dir);
    ob.register_sinks(&["postgres"]).unwrap();
    let samples: Vec<Sample> = (0..5).map(sample_at).collect();
    for (i, s) in samples.iter().enumerate() {
        assert_eq!(ob.take(std::slice::from_ref(s)).unwrap(), i as i64 + 1);
    }
    assert_eq!(in_sqlite(&ob), 0, "5 samples do not fold yet");
    let check = |ob: &Outbox, n: usize| {
        let got = ob.pending("postgres", 100).unwrap();
        assert_eq!(seqs(&got), (1..=n as i64).collect::<Vec<_>>());
        assert_eq!(got[0].sample, samples[0]);
        assert_eq!(ob.pending_count("postgres").unwrap(), n as u64);
        let st = ob.status(&["postgres"]).unwrap();
        assert_eq!((st.samples, st.mock_samples), (n as u64, n as u64));
        assert_eq!(st.newest, Some(samples[n - 1].taken_at));
        assert_eq!(st.sinks[0].oldest_pending, Some(samples[0].taken_at));
        assert_eq!(ob.last().unwrap().unwrap().seq, n as i64);
        assert_eq!(ob.window(None, None, None, 100).unwrap().len(), n);
        let ro = Outbox::open_read_only(&path(&dir)).unwrap();
        assert_eq!(ro.max_seq().unwrap(), n as i64);
        assert_eq!(seqs(&ro.recent(2).unwrap()), [n as i64, n as i64 - 1]);
        assert_eq!(ro.after_seq(2, 100).unwrap().len(), n - 2);
        let (count, mock) = ro
            .count_in(samples[0].taken_at, samples[n - 1].taken_at)
            .unwrap();
        assert_eq!((count, mock), (n as u64 - 1, true));
    };
    check(&ob, 5);
    // a second connection (a forwarder, status) sees the same
    check(&open(&dir), 5);
    // ack some, take until the journal folds
    ob.ack("postgres", 2, 2).unwrap();
    assert_eq!(ob.pending_count("postgres").unwrap(), 3);
    let more: Vec<Sample> = (5..journal::FOLD_RECORDS as i64 + 3)
        .map(sample_at)
        .collect();
    for s in &more {
        ob.take(std::slice::from_ref(s)).unwrap();
    }
    let total = journal::FOLD_RECORDS + 3;
    assert_eq!(in_sqlite(&ob), journal::FOLD_RECORDS as i64, "folded once");
    let got = ob.pending("postgres", 1000).unwrap();
    assert_eq!(seqs(&got), (3..=total as i64).collect::<Vec<_>>());
    assert_eq!(ob.status(&[]).unwrap().samples, total as u64);
    // the forwarder's cursor is a seq: it means the same before and after
    ob.ack("postgres", total as i64, total - 2).unwrap();
    assert_eq!(ob.pending_count("postgres").unwrap(), 0);
}

#[test]
fn a_fold_cut_before_the_journal_restarts_stores_nothing_twice() {
    let dir = tempfile::tempdir().unwrap();
    let mut sampler = open(&dir);
    sampler
        .take(&(0..3).map(sample_at).collect::<Vec<_>>())
        .unwrap();
    // another connection folds (as a sampler that then died before its reset)
    let mut other = open(&dir);
    assert_eq!(other.fold().unwrap(), 3);
    assert_eq!(in_sqlite(&other), 3);
    // the journal still holds seqs 1..=3; the first writer goes on
    sampler.take(&[sample_at(3)]).unwrap();
    let all = sampler.pending("x", 100).unwrap();
    assert_eq!(seqs(&all), [1, 2, 3, 4]);
    // a restart: the new writer continues after seq 4
    drop(sampler);
    drop(other);
    let mut again = open(&dir);
    assert_eq!(again.take(&[sample_at(4)]).unwrap(), 5);
    assert_eq!(again.fold().unwrap(), 2);
    assert_eq!(seqs(&again.pending("x", 100).unwrap()), [1, 2, 3, 4, 5]);
    assert_eq!(in_sqlite(&again), 5);
    // inserting directly (simulate) folds first and seqs stay unique
    again.take(&[sample_at(5)]).unwrap();
    again.insert_all(&[sample_at(6)]).unwrap();
    assert_eq!(again.take(&[sample_at(7)]).unwrap(), 8);
    assert_eq!(
        seqs(&again.pending("x", 100).unwrap()),
        (1..=8).collect::<Vec<_>>()
    );
}

#[test]
fn readers_never_see_a_sample_twice_or_miss_one_while_folds_happen() {
    let dir = tempfile::tempdir().unwrap();
    let mut sampler = open(&dir);
    sampler.take(&[sample_at(0)]).unwrap();
    let p = path(&dir);
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = {
        let done = done.clone();
        std::thread::spawn(move || {
            let ro = Outbox::open_read_only(&p).unwrap();
            let mut checks = 0;
            while !done.load(std::sync::atomic::Ordering::Relaxed) || checks == 0 {
                let got = seqs(&ro.after_seq(0, 100_000).unwrap());
                let want: Vec<i64> = (1..=got.len() as i64).collect();
                assert_eq!(got, want, "a sample seen twice or missed");
                let n = ro.count_in(Timestamp::MIN, Timestamp::MAX).unwrap().0;
                assert!(n as usize >= got.len(), "count {n} < {}", got.len());
                checks += 1;
            }
            checks
        })
    };
    for i in 1..300 {
        sampler.take(&[sample_at(i)]).unwrap();
    }
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    let checks = reader.join().unwrap();
    assert!(checks > 10, "only {checks} checks ran");
    assert_eq!(sampler.status(&[]).unwrap().samples, 300);
}

#[test]
fn held_back_unsynced_samples_in_the_journal_end_the_batch() {
    let dir = tempfile::tempdir().unwrap();
    let mut ob = open(&dir);
    let stamp = |state, boot_s: i64| ClockStamp {
        state,
        boot_id: Some("b".into()),
        boottime_us: Some(boot_s * 1_000_000),
        taken_at_raw: None,
    };
    ob.take(&[
        sample_at(0).with_clock(stamp(ClockState::Synced, 10)),
        sample_at(1).with_clock(stamp(ClockState::Unsynced, 20)),
        sample_at(2).with_clock(stamp(ClockState::Unsynced, 30)),
    ])
    .unwrap();
    let hold = Hold {
        boot_id: "b".into(),
        boottime_after_us: 20_000_000,
    };
    // seq 3 (boottime 30 s) is held, so the batch is seqs 1 and 2
    assert_eq!(
        seqs(&ob.pending_held("x", 10, Some(&hold)).unwrap()),
        [1, 2]
    );
    assert_eq!(ob.status(&[]).unwrap().unsynced_samples, 2);
    // a sync corrects them, journal or not (the fold comes first)
    let n = ob
        .record_sync(
            &Anchor {
                boot_id: "b".into(),
                offset_us: 1_900_000_000_000_000,
            },
            Timestamp::from_second(1_900_000_100).unwrap(),
        )
        .unwrap();
    assert_eq!(n, 2);
    let all = ob.pending("x", 10).unwrap();
    assert_eq!(seqs(&all), [1, 2, 3]);
    assert_eq!(all[2].sample.clock.state, ClockState::Corrected);
    assert_eq!(
        all[2].sample.taken_at,
        Timestamp::from_second(1_900_000_030).unwrap()
    );
}

#[test]
fn skip_to_newest_skips_the_journaled_samples_too() {
    let dir = tempfile::tempdir().unwrap();
    let mut ob = open(&dir);
    ob.insert_all(&[sample_at(0), sample_at(1)]).unwrap();
    ob.take(&[sample_at(2), sample_at(3)]).unwrap();
    let skipped = ob.skip_to_newest("new").unwrap();
    assert_eq!(skipped.samples, 4);
    assert_eq!(ob.pending_count("new").unwrap(), 0);
    ob.take(&[sample_at(4)]).unwrap();
    assert_eq!(seqs(&ob.pending("new", 10).unwrap()), [5]);
}

#[test]
fn a_journal_with_a_damaged_header_keeps_its_samples_and_their_seqs() {
    let dir = tempfile::tempdir().unwrap();
    let mut ob = open(&dir);
    ob.register_sinks(&["postgres"]).unwrap();
    ob.take(&(0..3).map(sample_at).collect::<Vec<_>>()).unwrap();
    let mut fw = open(&dir);
    assert_eq!(seqs(&fw.pending("postgres", 100).unwrap()), [1, 2, 3]);
    fw.ack("postgres", 2, 2).unwrap();
    drop(ob);
    // the header sector damaged (a torn write-back, a bad block)
    let jp = journal::path_for(&path(&dir));
    let mut bytes = std::fs::read(&jp).unwrap();
    bytes[0] ^= 0xff;
    std::fs::write(&jp, &bytes).unwrap();
    let mut ob = open(&dir);
    assert_eq!(ob.take(&[sample_at(10)]).unwrap(), 4);
    assert_eq!(seqs(&ob.pending("postgres", 100).unwrap()), [3, 4]);
}

#[test]
fn a_seq_a_sink_acknowledged_is_never_given_again_even_if_its_sample_was_lost() {
    // sqlite_synchronous = normal: journal records not yet on the card when
    // the power went, the forwarder's ack was (a checkpoint, a write-back)
    let dir = tempfile::tempdir().unwrap();
    let mut ob = Outbox::open(&path(&dir), Synchronous::Normal).unwrap();
    ob.register_sinks(&["postgres"]).unwrap();
    ob.take(&(0..3).map(sample_at).collect::<Vec<_>>()).unwrap();
    let mut fw = Outbox::open(&path(&dir), Synchronous::Normal).unwrap();
    assert_eq!(seqs(&fw.pending("postgres", 100).unwrap()), [1, 2, 3]);
    fw.ack("postgres", 3, 3).unwrap();
    drop((ob, fw));
    let jp = journal::path_for(&path(&dir));
    let mut bytes = std::fs::read(&jp).unwrap();
    bytes[journal::SECTOR..].fill(0);
    std::fs::write(&jp, &bytes).unwrap();
    let mut ob = Outbox::open(&path(&dir), Synchronous::Normal).unwrap();
    let seq = ob.take(&[sample_at(10)]).unwrap();
    assert_eq!(seq, 4, "a delivered sample's seq given again");
    assert_eq!(seqs(&ob.pending("postgres", 100).unwrap()), [4]);
    // and a reader in another process sees it too
    let ro = Outbox::open_read_only(&path(&dir)).unwrap();
    assert_eq!(seqs(&ro.after_seq(3, 10).unwrap()), [4]);
}

#[test]
fn a_record_damaged_before_its_fold_is_reported_and_its_seq_not_reused() {
    let dir = tempfile::tempdir().unwrap();
    let mut ob = open(&dir);
    ob.take(&(0..3).map(sample_at).collect::<Vec<_>>()).unwrap();
    // the second record goes bad on the card before the fold
    let jp = journal::path_for(&path(&dir));
    let mut bytes = std::fs::read(&jp).unwrap();
    let second = (journal::SECTOR + 1..bytes.len())
        .step_by(journal::SECTOR)
        .map(|o| o - 1)
        .filter(|&o| &bytes[o..o + 4] == b"HXR1")
        .nth(1)
        .unwrap();
    bytes[second + 40] ^= 0x01;
    std::fs::write(&jp, &bytes).unwrap();
    assert_eq!(ob.fold().unwrap(), 2);
    let kept: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".damaged"))
        .collect();
    assert_eq!(kept.len(), 1, "the damaged journal kept for a post-mortem");
    assert_eq!(ob.take(&[sample_at(3)]).unwrap(), 4);
    assert_eq!(seqs(&ob.pending("x", 10).unwrap()), [1, 3, 4]);
    drop(ob);
    // a restart numbers after it too
    assert_eq!(open(&dir).take(&[sample_at(4)]).unwrap(), 5);
}

#[test]
fn a_journal_that_grew_while_folds_failed_shrinks_after_the_fold() {
    let dir = tempfile::tempdir().unwrap();
    let mut ob = open(&dir);
    ob.take(&[sample_at(0)]).unwrap();
    ob.set_read_only_for_tests(true).unwrap();
    for i in 1..200 {
        ob.take(&[sample_at(i)]).unwrap();
    }
    let jp = journal::path_for(&path(&dir));
    assert!(std::fs::metadata(&jp).unwrap().len() > 64 * 1024);
    assert_eq!(in_sqlite(&ob), 0);
    assert_eq!(ob.status(&[]).unwrap().samples, 200);
    ob.set_read_only_for_tests(false).unwrap();
    ob.take(&[sample_at(200)]).unwrap();
    assert_eq!(in_sqlite(&ob), 201);
    assert_eq!(std::fs::metadata(&jp).unwrap().len(), 64 * 1024);
    assert_eq!(
        seqs(&ob.pending("x", 1000).unwrap()),
        (1..=201).collect::<Vec<_>>()
    );
}

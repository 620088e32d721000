use super::*;
use crate::sample::{Quality, Reading, Sample, Source};

fn sample_at(secs: i64) -> Sample {
    Sample::new(
        "hx-test",
        Timestamp::from_second(1_800_000_000 + secs).unwrap(),
        Source::Mock,
        vec![
            Reading::ok("T1", None, 70.0),
            Reading::ok("T2", None, 45.0),
            Reading::ok("T3", None, 15.0),
            Reading::missing(
                "T4",
                Some("28-000000000004".into()),
                Quality::CrcNo,
                "crc NO",
            ),
        ],
    )
}

fn open(dir: &tempfile::TempDir) -> Outbox {
    Outbox::open(&dir.path().join("outbox.sqlite"), Synchronous::Full).unwrap()
}

#[test]
fn round_trips_a_sample_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let mut ob = open(&dir);
    let s = sample_at(0);
    let seq = ob.insert(&s).unwrap();
    let got = ob.pending("postgres", 10).unwrap();
    assert_eq!(got, vec![Stored { seq, sample: s }]);
}

#[test]
fn cursors_are_per_sink_and_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let mut ob = open(&dir);
    ob.register_sinks(&["postgres", "webpubsub"]).unwrap();
    let samples: Vec<_> = (0..10).map(sample_at).collect();
    ob.insert_all(&samples).unwrap();
    let batch = ob.pending("postgres", 4).unwrap();
    assert_eq!(batch.len(), 4);
    ob.ack("postgres", batch.last().unwrap().seq, 4).unwrap();
    drop(ob);
    let ob = open(&dir);
    assert_eq!(ob.pending_count("postgres").unwrap(), 6);
    assert_eq!(ob.pending_count("webpubsub").unwrap(), 10);
    assert_eq!(ob.pending("postgres", 1).unwrap()[0].sample, samples[4]);
    let st = ob.status(&["postgres", "webpubsub"]).unwrap();
    assert_eq!(st.samples, 10);
    assert_eq!(st.sinks[0].pending, 6);
    assert!(st.sinks[0].last_success.is_some());
}

#[test]
fn ack_never_moves_a_cursor_backwards() {
    let dir = tempfile::tempdir().unwrap();
    let mut ob = open(&dir);
    ob.insert_all(&(0..5).map(sample_at).collect::<Vec<_>>())
        .unwrap();
    ob.ack("postgres", 4, 4).unwrap();
    ob.ack("postgres", 2, 2).unwrap();
    assert_eq!(ob.sink_state("postgres").unwrap().delivered_seq, 4);
}

#[test]
fn garbage_file_is_refused_and_left_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("outbox.sqlite");
    let garbage = b"this is not a database, it is a shopping list\n".repeat(100);
    std::fs::write(&path, &garbage).unwrap();
    let err = format!("{:#}", Outbox::open(&path, Synchronous::Full).unwrap_err());
    assert!(
        err.contains("not an SQLite database") && err.contains("left untouched"),
        "{err}"
    );
    assert_eq!(std::fs::read(&path).unwrap(), garbage);
    assert!(!dir.path().join("outbox.sqlite-wal").exists());
}

#[test]
fn damaged_database_is_refused_and_left_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("outbox.sqlite");
    {
        let mut ob = Outbox::open(&path, Synchronous::Full).unwrap();
        ob.insert_all(&(0..2000).map(sample_at).collect::<Vec<_>>())
            .unwrap();
        ob.conn
            .execute_batch("PRAGMA wal_checkpoint(TRUNCATE)")
            .unwrap();
    }
    let mut bytes = std::fs::read(&path).unwrap();
    // keep the magic, wreck the page size and the first pages
    for b in bytes.iter_mut().skip(16).take(8192) {
        *b = 0xAB;
    }
    std::fs::write(&path, &bytes).unwrap();
    let err = format!("{:#}", Outbox::open(&path, Synchronous::Full).unwrap_err());
    assert!(err.contains("left untouched"), "{err}");
    assert_eq!(std::fs::read(&path).unwrap(), bytes);
}

#[test]
fn foreign_and_newer_databases_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("other.sqlite");
    let c = Connection::open(&path).unwrap();
    c.execute_batch("CREATE TABLE recipes (name TEXT)").unwrap();
    drop(c);
    let err = format!("{:#}", Outbox::open(&path, Synchronous::Full).unwrap_err());
    assert!(err.contains("not an hxlog outbox"), "{err}");

    let path = dir.path().join("newer.sqlite");
    drop(Outbox::open(&path, Synchronous::Full).unwrap());
    let c = Connection::open(&path).unwrap();
    c.pragma_update(None, "user_version", 99).unwrap();
    drop(c);
    let err = format!("{:#}", Outbox::open(&path, Synchronous::Full).unwrap_err());
    assert!(err.contains("upgrade hxlog"), "{err}");
}

#[test]
fn open_existing_does_not_create() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nothing.sqlite");
    assert!(Outbox::open_existing(&path).is_err());
    assert!(!path.exists());
}

#[test]
fn window_pages_in_time_order() {
    let dir = tempfile::tempdir().unwrap();
    let mut ob = open(&dir);
    // inserted out of time order: export must still be oldest first
    let samples: Vec<_> = [5, 1, 3, 2, 4, 0].into_iter().map(sample_at).collect();
    ob.insert_all(&samples).unwrap();
    let since = Some(Timestamp::from_second(1_800_000_001).unwrap());
    let until = Some(Timestamp::from_second(1_800_000_005).unwrap());
    let mut seen = vec![];
    let mut after = None;
    loop {
        let page = ob.window(since, until, after, 2).unwrap();
        let Some(last) = page.last() else { break };
        after = Some((last.sample.taken_at.as_microsecond(), last.seq));
        seen.extend(
            page.iter()
                .map(|s| s.sample.taken_at.as_second() - 1_800_000_000),
        );
    }
    assert_eq!(seen, vec![1, 2, 3, 4]);
    let n = ob.for_each_in_window(None, None, |_| Ok(())).unwrap();
    assert_eq!(n, 6);
}

#[test]
fn prune_keeps_undelivered_samples() {
    let dir = tempfile::tempdir().unwrap();
    let mut ob = open(&dir);
    ob.insert_all(&(0..10).map(sample_at).collect::<Vec<_>>())
        .unwrap();
    let cutoff = Timestamp::from_second(1_800_000_100).unwrap();
    // no sink configured: the outbox is the only copy
    assert_eq!(ob.prune(cutoff, &[]).unwrap(), 0);
    ob.ack("postgres", 6, 6).unwrap();
    ob.ack("webpubsub", 3, 3).unwrap();
    assert_eq!(ob.prune(cutoff, &["postgres", "webpubsub"]).unwrap(), 3);
    assert_eq!(ob.prune(cutoff, &["postgres"]).unwrap(), 3);
    assert_eq!(ob.pending_count("postgres").unwrap(), 4);
    // recent samples are kept even when delivered
    ob.ack("postgres", 10, 4).unwrap();
    let early = Timestamp::from_second(1_800_000_008).unwrap();
    assert_eq!(ob.prune(early, &["postgres"]).unwrap(), 2);
}

#[test]
fn rejected_samples_advance_the_cursor_and_are_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let mut ob = open(&dir);
    ob.insert_all(&(0..3).map(sample_at).collect::<Vec<_>>())
        .unwrap();
    ob.reject("webpubsub", &[1, 2], "400 bad message").unwrap();
    let st = ob.sink_state("webpubsub").unwrap();
    assert_eq!(st.delivered_seq, 2);
    assert_eq!(st.rejected_count, 2);
    assert_eq!(st.last_error_class.as_deref(), Some("rejected"));
    assert_eq!(ob.pending_count("webpubsub").unwrap(), 1);
}

#[test]
fn seq_is_never_reused_after_pruning() {
    let dir = tempfile::tempdir().unwrap();
    let mut ob = open(&dir);
    ob.insert_all(&(0..3).map(sample_at).collect::<Vec<_>>())
        .unwrap();
    ob.ack("postgres", 3, 3).unwrap();
    ob.prune(
        Timestamp::from_second(1_900_000_000).unwrap(),
        &["postgres"],
    )
    .unwrap();
    let seq = ob.insert(&sample_at(4)).unwrap();
    assert_eq!(seq, 4);
    assert_eq!(ob.pending_count("postgres").unwrap(), 1);
}

#[test]
fn a_new_outbox_has_small_pages_and_the_sampler_commits_with_fsync() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("outbox.sqlite");
    let ob = Outbox::open(&path, Synchronous::Full).unwrap();
    assert_eq!(ob.pragma_for_tests("page_size"), PAGE_SIZE);
    // FULL (2): the WAL is fsynced at every commit, so a sample reported as
    // taken survives a power cut
    assert_eq!(ob.pragma_for_tests("synchronous"), 2);
    let forwarder = Outbox::open(&path, Synchronous::Normal).unwrap();
    assert_eq!(forwarder.pragma_for_tests("synchronous"), 1);
    assert_eq!(forwarder.pragma_for_tests("page_size"), PAGE_SIZE);
}

#[test]
fn an_existing_outbox_keeps_its_page_size() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("outbox.sqlite");
    {
        let conn = Connection::open(&path).unwrap();
        conn.pragma_update(None, "page_size", 4096).unwrap();
        conn.execute_batch("VACUUM").unwrap();
    }
    let mut ob = Outbox::open(&path, Synchronous::Full).unwrap();
    ob.insert(&sample_at(0)).unwrap();
    assert_eq!(ob.pragma_for_tests("page_size"), 4096);
}

//! Samples the database refuses for their data (SQLSTATE classes 22 and 23)
//! are quarantined: recorded as rejected in the outbox, counted in `status`,
//! and the queue moves on. A batch is split to find the refused samples; the
//! others of the batch are delivered, never rejected with them.

use std::time::Duration;

use serde_json::json;

use crate::logger::{Logger, terminate, wait_until};
use crate::pg::TestDb;

fn logger(db: &TestDb) -> Logger {
    let l = Logger::new(json!({"postgres_batch_size": 100}));
    db.write_secrets(l.path(), None, &[("PG_DB_SSLMODE", "disable")]);
    l
}

/// The outbox's sample ids, oldest first.
fn sample_ids(l: &Logger) -> Vec<String> {
    let out = l.ok(&["export", "--since", "30d", "--format", "jsonl"]);
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|line| {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            v["id"].as_str().unwrap().to_string()
        })
        .collect()
}

#[test]
fn refused_samples_are_quarantined_and_their_batch_delivered() {
    let Some(db) = TestDb::create() else { return };
    let l = logger(&db);
    l.ok(&["migrate"]);
    l.ok(&["simulate", "--count", "200", "--interval", "1m"]);
    let ids = sample_ids(&l);
    assert_eq!(ids.len(), 200);
    let (by_check, by_trigger) = (&ids[37], &ids[150]);
    // 23514: a CHECK a DBA added; 22P05: what Postgres says of a NUL in text
    db.execute(&format!(
        "ALTER TABLE samples ADD CONSTRAINT test_refuses CHECK (sample_id <> '{by_check}');
         CREATE FUNCTION test_refuse() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN
           IF NEW.sample_id = '{by_trigger}' THEN
             RAISE EXCEPTION 'unsupported Unicode escape sequence' USING ERRCODE = '22P05';
           END IF;
           RETURN NEW;
         END $$;
         CREATE TRIGGER test_refuse BEFORE INSERT ON samples
           FOR EACH ROW EXECUTE FUNCTION test_refuse();"
    ));
    // exit code aside (whether refusals fail a replay is the forwarder's
    // policy): the queue must drain
    let out = l.output(&["replay", "--give-up-after", "60s"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(db.samples(), 198, "{err}");
    for bad in [by_check, by_trigger] {
        assert_eq!(
            db.scalar(&format!(
                "SELECT count(*) FROM samples WHERE sample_id = '{bad}'"
            )),
            0
        );
    }
    let s = l.sink("postgres");
    assert_eq!(s["pending"], 0, "{s}");
    assert_eq!(s["rejected_count"], 2, "{s}");
    assert_eq!(s["last_error_class"], "rejected", "{s}");
    let reasons = s["last_error"].as_str().unwrap();
    assert!(
        reasons.contains("SQLSTATE 22P05") || reasons.contains("SQLSTATE 23514"),
        "{s}"
    );
    assert!(err.contains("refused"), "{err}");
    let text = String::from_utf8_lossy(&l.ok(&["status"]).stdout).to_string();
    assert!(
        text.contains("2 samples refused by the sink"),
        "status must count them:\n{text}"
    );
    // once the database is fixed, a window replay sends them after all
    db.execute(
        "ALTER TABLE samples DROP CONSTRAINT test_refuses; DROP TRIGGER test_refuse ON samples",
    );
    l.ok(&["replay", "--since", "30d", "--sink", "postgres"]);
    assert_eq!(db.samples(), 200);
}

#[test]
fn run_keeps_delivering_past_refused_samples() {
    let Some(db) = TestDb::create() else { return };
    let l = logger(&db);
    l.ok(&["migrate"]);
    // refuses about one sample in three, as they are taken
    db.execute(
        "ALTER TABLE samples ADD CONSTRAINT test_refuses \
         CHECK (extract(epoch FROM taken_at)::bigint % 3 <> 0)",
    );
    let mut child = l.spawn_run();
    wait_until(
        Duration::from_secs(60),
        "samples before and after refused ones are delivered",
        || {
            let s = l.sink("postgres");
            s["rejected_count"].as_u64().unwrap_or(0) >= 2 && db.samples() >= 4
        },
    );
    // the queue is not stuck behind the refused samples
    let taken = l.samples();
    wait_until(Duration::from_secs(60), "the queue keeps moving", || {
        let s = l.sink("postgres");
        s["pending"].as_u64().unwrap() <= 1 && l.samples() > taken
    });
    assert!(terminate(&mut child, hxlog_test_support::SIGTERM_DEADLINE).success());
    let _ = l.output(&["replay"]);
    let s = l.sink("postgres");
    assert_eq!(s["pending"], 0, "{s}");
    // every sample is in Postgres or quarantined, none both, none lost
    assert_eq!(
        db.samples() as u64 + s["rejected_count"].as_u64().unwrap(),
        l.samples()
    );
    assert_eq!(
        db.scalar(
            "SELECT count(*) FROM samples WHERE extract(epoch FROM taken_at)::bigint % 3 = 0"
        ),
        0
    );
}

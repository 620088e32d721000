//! The Postgres forwarder against the real server: steady forwarding,
//! outages, kill -9 mid-drain, replay windows, permanent errors, TLS modes.

use hxlog_test_support::SpawnGuarded;
use std::time::Duration;

use serde_json::json;

use crate::logger::{Logger, terminate, wait_until};
use crate::pg::{Cluster, TestDb};
use crate::proxy::Proxy;

/// A logger writing to `db` (optionally through a port other than the server's).
fn logger(
    db: &TestDb,
    port: Option<u16>,
    extra: &[(&str, &str)],
    cfg: serde_json::Value,
) -> Logger {
    let l = Logger::new(cfg);
    db.write_secrets(l.path(), port, extra);
    l
}

macro_rules! db_or_skip {
    () => {
        match TestDb::create() {
            Some(db) => db,
            None => return,
        }
    };
}

#[test]
fn replay_drains_a_backlog_exactly_once() {
    let db = db_or_skip!();
    let l = logger(
        &db,
        None,
        &[("PG_DB_SSLMODE", "disable")],
        json!({"postgres_batch_size": 700}),
    );
    l.ok(&["simulate", "--count", "5000", "--interval", "10s"]);
    assert_eq!(
        l.sink("postgres")["pending"],
        5000,
        "a configured sink starts with everything pending"
    );
    let out = l.ok(&["replay"]);
    // the progress bar is hidden without a terminal, so the count is in the log
    let stderr = String::from_utf8_lossy(&out.stderr);
    // (the "replay finished" line's own count: the forwarder's log line
    // says delivered= too)
    let delivered = stderr
        .lines()
        .find(|l| l.contains("replay finished"))
        .and_then(|l| {
            l.split_whitespace()
                .find_map(|f| f.strip_prefix("delivered="))
        })
        .and_then(|n| n.parse::<u64>().ok());
    assert_eq!(delivered, Some(5000), "{stderr}");
    assert_eq!(db.samples(), 5000);
    assert_eq!(
        db.scalar("SELECT count(DISTINCT sample_id) FROM samples"),
        5000
    );
    assert_eq!(l.sink("postgres")["pending"], 0);
    // nothing pending: a second replay sends nothing and changes nothing
    l.ok(&["replay"]);
    assert_eq!(db.samples(), 5000);
    // the rows are complete
    assert_eq!(db.scalar("SELECT count(*) FROM samples WHERE source = 'mock' AND device_id = 'hx-test' AND t1 IS NOT NULL AND t1_quality = 'ok' AND effectiveness BETWEEN 0 AND 1 AND readings ? 'T4'"), 5000);
    assert_eq!(db.scalar("SELECT count(*) FROM hxlog_migrations"), 2);
}

#[test]
fn run_forwards_each_sample_promptly_and_stops_on_sigterm() {
    let db = db_or_skip!();
    let l = logger(&db, None, &[], json!({}));
    let mut child = l.spawn_run();
    wait_until(Duration::from_secs(60), "3 samples reach Postgres", || {
        db.samples() >= 3
    });
    let status = terminate(&mut child, hxlog_test_support::SIGTERM_DEADLINE);
    assert!(status.success(), "exit {status}");
    let log = std::fs::read_to_string(l.log_path()).unwrap();
    let sampled = log.lines().filter(|l| l.contains("INFO sample ")).count() as u64;
    assert_eq!(
        l.samples(),
        sampled,
        "one log line per committed sample:\n{log}"
    );
    // whatever was not yet forwarded at SIGTERM is pending, not lost
    let pending = l.sink("postgres")["pending"].as_u64().unwrap();
    assert_eq!(db.samples() as u64 + pending, l.samples());
    l.ok(&["replay"]);
    assert_eq!(db.samples() as u64, l.samples());
}

#[test]
fn an_outage_loses_nothing_and_duplicates_nothing() {
    let db = db_or_skip!();
    let proxy = Proxy::start(format!("{}:{}", db.server.host, db.server.port), false);
    let l = logger(
        &db,
        Some(proxy.port),
        &[("PG_DB_SSLMODE", "disable")],
        json!({}),
    );
    let mut child = l.spawn_run();
    wait_until(
        Duration::from_secs(60),
        "samples accumulate during the outage",
        || {
            let s = l.sink("postgres");
            l.samples() >= 3 && s["last_error_class"] == "transient"
        },
    );
    assert_eq!(db.samples(), 0);
    proxy.restore();
    wait_until(Duration::from_secs(60), "the backlog is delivered", || {
        let n = l.samples();
        n >= 4 && db.samples() as u64 >= n - 1
    });
    // a second cut mid-run, then back
    proxy.cut();
    let before = l.samples();
    wait_until(
        Duration::from_secs(60),
        "more samples during the second outage",
        || l.samples() >= before + 2,
    );
    proxy.restore();
    wait_until(Duration::from_secs(60), "caught up again", || {
        l.sink("postgres")["pending"].as_u64().unwrap() <= 1 && db.samples() as u64 > before
    });
    stop_and_check_exactly_once(&l, &db, &mut child);
}

#[test]
fn kill_9_mid_drain_never_loses_or_duplicates() {
    let db = db_or_skip!();
    let l = logger(
        &db,
        None,
        &[("PG_DB_SSLMODE", "disable")],
        json!({"postgres_batch_size": 250}),
    );
    const N: i64 = 20_000;
    l.ok(&["simulate", "--count", &N.to_string(), "--interval", "1s"]);
    let mut progressed = 0;
    for i in 0..20 {
        let before = db.samples();
        let mut child = l
            .cmd(&["replay"])
            .stderr(std::process::Stdio::null())
            .spawn_guarded();
        if i % 2 == 0 {
            // a random point: during start-up, migration, or the first batch
            std::thread::sleep(Duration::from_millis(fastrand::u64(0..300)));
        } else {
            // once rows arrive, so this kill lands mid-drain, whatever the
            // machine's speed (or after the drain, if it finished first)
            let mut exited = false;
            wait_until(
                Duration::from_secs(60),
                "the replay delivers rows or ends",
                || {
                    exited = child.try_wait().unwrap().is_some();
                    exited || db.samples() > before
                },
            );
        }
        let _ = child.kill(); // SIGKILL
        let _ = child.wait();
        let after = db.samples();
        if after > before && after < N {
            progressed += 1;
        }
        // the outbox stays consistent with Postgres: nothing acked that is not there
        let pending = l.sink("postgres")["pending"].as_i64().unwrap_or(N);
        assert!(
            N - pending <= after,
            "iteration {i}: outbox says {} delivered, Postgres has {after}",
            N - pending
        );
    }
    assert!(
        progressed > 0,
        "no kill landed between the first and the last row; the test proves nothing"
    );
    l.ok(&["replay"]);
    assert_eq!(db.samples(), N);
    assert_eq!(
        db.scalar("SELECT count(DISTINCT sample_id) FROM samples"),
        N
    );
    assert_eq!(l.sink("postgres")["pending"], 0);
}

/// Samples are journaled first and folded into SQLite every 32: `hxlog
/// sample` killed at random moments (mid-journal write, mid-fold), then
/// replayed: every sample it reported taken is in Postgres exactly once, and
/// the outbox's seqs have no hole and no double.
#[test]
fn kill_9_across_journal_folds_loses_and_duplicates_nothing() {
    let db = db_or_skip!();
    let l = logger(
        &db,
        None,
        &[("PG_DB_SSLMODE", "disable")],
        json!({"sqlite_synchronous": "full"}),
    );
    // how long one `hxlog sample` takes here (under qemu several times
    // longer): the kills land anywhere within that, mid-write or mid-fold
    let started = std::time::Instant::now();
    l.ok(&["sample"]);
    let span = started.elapsed().as_millis().max(10) as u64;
    let (mut reported, mut killed) = (1, 0);
    // 70 samples taken to the end: the journal folds at least twice
    for i in 0..105 {
        if i % 3 == 2 {
            let mut child = l
                .cmd(&["sample"])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn_guarded();
            std::thread::sleep(Duration::from_millis(fastrand::u64(0..span)));
            let _ = child.kill(); // SIGKILL
            if child.wait().unwrap().success() {
                reported += 1;
            } else {
                killed += 1;
            }
        } else {
            l.ok(&["sample"]);
            reported += 1;
        }
        if i % 20 == 19 {
            l.ok(&["replay"]);
        }
    }
    assert!(killed > 0, "no kill landed while a sample was taken");
    let stored = l.samples();
    assert!(
        stored >= reported && stored <= reported + killed,
        "{stored} samples stored, {reported} reported taken, {killed} killed"
    );
    assert!(stored > 64, "the journal never folded twice: {stored}");
    l.ok(&["replay"]);
    assert_eq!(db.samples() as u64, stored);
    assert_eq!(
        db.scalar("SELECT count(DISTINCT sample_id) FROM samples") as u64,
        stored
    );
    // the outbox: seqs 1..=stored, each once (the export lists them in time order)
    let csv = l.ok(&["export", "--since", "1h"]);
    let rows = String::from_utf8(csv.stdout).unwrap().lines().count() as u64 - 1;
    assert_eq!(rows, stored);
    assert_eq!(l.sink("postgres")["pending"], 0);
    assert_eq!(l.sink("postgres")["delivered_seq"].as_u64(), Some(stored));
}

#[test]
fn replay_of_a_window_is_idempotent_and_restores_lost_rows() {
    let db = db_or_skip!();
    let l = logger(&db, None, &[("PG_DB_SSLMODE", "disable")], json!({}));
    l.ok(&["simulate", "--count", "300", "--interval", "1m"]);
    l.ok(&["replay"]);
    assert_eq!(db.samples(), 300);
    l.ok(&["replay", "--since", "1d", "--sink", "postgres"]);
    assert_eq!(db.samples(), 300, "re-sending never duplicates");
    // the database is "restored from an old backup": the last 2 hours are gone
    db.execute("DELETE FROM samples WHERE taken_at > now() - interval '2 hours'");
    let left = db.samples();
    assert!(left < 300 && left > 150, "{left}");
    l.ok(&["replay", "--since", "3h", "--sink", "postgres"]);
    assert_eq!(db.samples(), 300);
    // --until bounds the window
    db.execute("DELETE FROM samples");
    l.ok(&["replay", "--since", "1d", "--until", "1h"]);
    let n = db.samples();
    assert!(n > 200 && n < 300, "{n}");
}

#[test]
fn a_permanent_error_is_reported_and_the_data_kept() {
    let db = db_or_skip!();
    let l = logger(
        &db,
        None,
        &[
            ("PG_DB_USER", "no_such_hxlog_user"),
            ("PG_DB_PASSWORD", "pw-7c1e-secret"),
        ],
        json!({}),
    );
    l.ok(&["simulate", "--count", "10"]);
    let out = l.output(&["replay"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("no_such_hxlog_user") && err.contains("PG_DB_USER"),
        "{err}"
    );
    assert!(
        !err.contains("pw-7c1e-secret"),
        "the password leaked: {err}"
    );
    let s = l.sink("postgres");
    assert_eq!(s["pending"], 10);
    assert_eq!(s["last_error_class"], "permanent");
    let text = String::from_utf8_lossy(&l.ok(&["status"]).stdout).to_string();
    assert!(text.contains("[permanent]"), "{text}");
}

#[test]
fn tls_modes_against_the_local_server() {
    let db = db_or_skip!();
    let ssl_on = db
        .scalar("SELECT CASE WHEN current_setting('ssl') = 'on' THEN 1::int8 ELSE 0::int8 END")
        == 1;
    for (mode, works) in [
        ("disable", true),
        ("prefer", true),
        ("require", ssl_on),
        ("verify-full", false),
    ] {
        db.execute("DROP TABLE IF EXISTS samples; DROP TABLE IF EXISTS hxlog_migrations");
        let l = logger(&db, None, &[("PG_DB_SSLMODE", mode)], json!({}));
        l.ok(&["simulate", "--count", "5"]);
        // a permanent error fails at once; a working mode gets time to connect
        let out = l.output(&["replay", "--give-up-after", "60s"]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.success(), works, "sslmode {mode}: {err}");
        if !works && mode == "verify-full" {
            assert!(
                err.contains("PG_DB_SSLMODE"),
                "sslmode {mode} should explain the TLS failure: {err}"
            );
        }
        if works {
            assert_eq!(db.samples(), 5, "sslmode {mode}");
        }
    }
    // a bad mode is a configuration error naming the key
    let l = logger(&db, None, &[("PG_DB_SSLMODE", "sometimes")], json!({}));
    l.ok(&["simulate", "--count", "1"]);
    let out = l.output(&["replay"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("PG_DB_SSLMODE"));
}

/// Stops `hxlog run` with SIGTERM (clean exit), replays what was pending, and
/// checks that Postgres holds every outbox sample exactly once.
fn stop_and_check_exactly_once(l: &Logger, db: &TestDb, child: &mut std::process::Child) {
    assert!(terminate(child, hxlog_test_support::SIGTERM_DEADLINE).success());
    l.ok(&["replay"]);
    assert_eq!(db.samples() as u64, l.samples());
    assert_eq!(
        db.scalar("SELECT count(DISTINCT sample_id) FROM samples") as u64,
        l.samples()
    );
}

/// Runs the logger against `db`, calls `disrupt` once samples flow, and checks
/// that delivery resumes and ends with every sample exactly once.
fn delivery_survives(db: &TestDb, disrupt: impl FnOnce()) {
    let l = logger(db, None, &[("PG_DB_SSLMODE", "disable")], json!({}));
    let mut child = l.spawn_run();
    wait_until(Duration::from_secs(60), "first samples delivered", || {
        db.samples() >= 2
    });
    disrupt();
    let after = db.samples();
    wait_until(Duration::from_secs(60), "delivery resumes", || {
        db.samples() >= after + 3
    });
    stop_and_check_exactly_once(&l, db, &mut child);
}

#[test]
fn a_terminated_backend_is_survived() {
    let db = db_or_skip!();
    delivery_survives(&db, || {
        // what a server shutdown looks like to a client: 57P01 admin_shutdown
        let killed = db.scalar(&format!(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = 'hxlog' AND datname = '{}'",
            db.name
        ));
        assert!(killed >= 1, "no hxlog backend found");
    });
}

#[test]
fn migrations_are_safe_when_many_devices_start_at_once() {
    let db = db_or_skip!();
    let loggers: Vec<Logger> = (0..6).map(|_| logger(&db, None, &[], json!({}))).collect();
    // all six start before any is waited for, so the advisory lock is contended
    let children: Vec<_> = loggers
        .iter()
        .map(|l| {
            l.cmd(&["migrate"])
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn_guarded()
        })
        .collect();
    for child in children {
        let out = child.wait_with_output();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert_eq!(db.scalar("SELECT count(*) FROM hxlog_migrations"), 2);
    let again = loggers[0].ok(&["migrate"]);
    assert!(String::from_utf8_lossy(&again.stdout).contains("up to date"));
}

#[test]
fn a_fleet_shares_one_table_and_the_engineers_query_uses_the_index() {
    let db = db_or_skip!();
    for device in ["hx-01", "hx-02"] {
        let l = logger(&db, None, &[], json!({"device_id": device}));
        l.ok(&["simulate", "--count", "500", "--interval", "1h"]);
        l.ok(&["replay"]);
    }
    assert_eq!(
        db.scalar("SELECT count(DISTINCT device_id) FROM samples"),
        2
    );
    assert_eq!(
        db.scalar("SELECT count(t1) FROM samples WHERE device_id = 'hx-01' AND taken_at > now() - interval '7 days'"),
        7 * 24
    );
    let plan = crate::pg::explain(
        &db,
        "SELECT taken_at, t1 FROM samples WHERE device_id = 'hx-01' AND taken_at > now() - interval '7 days'",
    );
    assert!(plan.contains("samples_device_taken_at"), "{plan}");
}

#[test]
fn a_postgres_restart_mid_run_loses_and_duplicates_nothing() {
    // A cluster of this test's own, so restarting it disturbs no other test.
    let Some(cluster) = Cluster::start() else {
        assert!(
            std::env::var("HXLOG_REQUIRE_PG").as_deref() != Ok("1"),
            "HXLOG_REQUIRE_PG=1 but no throwaway cluster could be started (initdb/pg_ctl)"
        );
        eprintln!("*** SKIPPED: cannot start a throwaway PostgreSQL cluster here ***");
        return;
    };
    let db = TestDb::create_on(cluster.server());
    delivery_survives(&db, || cluster.restart());
    drop(db);
}

/// Records the first word of every statement that inserts into `samples`
/// (`COPY` or `INSERT`) in `hxlog_test_statements`, from Postgres' own
/// `current_query()`: a statement rolled back leaves no record.
fn record_insert_statements(db: &TestDb) {
    db.execute(
        "CREATE TABLE hxlog_test_statements (kind text NOT NULL);
         CREATE FUNCTION hxlog_test_record() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN
             INSERT INTO hxlog_test_statements VALUES (upper(split_part(ltrim(current_query()), ' ', 1)));
             RETURN NULL;
         END $$;
         CREATE TRIGGER hxlog_test_record AFTER INSERT ON samples
             FOR EACH STATEMENT EXECUTE FUNCTION hxlog_test_record();",
    );
}

fn statements(db: &TestDb, kind: &str) -> i64 {
    db.scalar(&format!(
        "SELECT count(*) FROM hxlog_test_statements WHERE kind = '{kind}'"
    ))
}

#[test]
fn a_drain_copies_its_batches() {
    let db = db_or_skip!();
    let l = logger(
        &db,
        None,
        &[("PG_DB_SSLMODE", "disable")],
        json!({"postgres_batch_size": 200}),
    );
    l.ok(&["migrate"]);
    record_insert_statements(&db);
    l.ok(&["simulate", "--count", "1000", "--interval", "10s"]);
    l.ok(&["replay"]);
    assert_eq!(db.samples(), 1000);
    assert_eq!(statements(&db, "COPY"), 5, "one COPY per batch of 200");
    assert_eq!(
        db.scalar("SELECT count(*) FROM hxlog_test_statements WHERE kind <> 'COPY'"),
        0,
        "nothing but COPY when no sample is stored yet"
    );
}

#[test]
fn a_partly_stored_batch_is_delivered_exactly_once_through_the_fallback() {
    let db = db_or_skip!();
    let l = logger(
        &db,
        None,
        &[("PG_DB_SSLMODE", "disable")],
        json!({"postgres_batch_size": 200}),
    );
    l.ok(&["simulate", "--count", "1000", "--interval", "10s"]);
    l.ok(&["replay"]);
    assert_eq!(db.samples(), 1000);
    // Every other row is lost, so each batch of the resend (as after a crash
    // between the commit and the outbox's bookkeeping) is partly stored: its
    // COPY hits unique violations, and the INSERT … ON CONFLICT stores the rest.
    db.lose_every_other_row("taken_at");
    assert_eq!(db.samples(), 500);
    record_insert_statements(&db);
    l.ok(&["replay", "--since", "1d", "--sink", "postgres"]);
    assert_eq!(db.samples(), 1000, "every lost row restored");
    assert_eq!(
        db.scalar("SELECT count(DISTINCT sample_id) FROM samples"),
        1000
    );
    assert_eq!(
        statements(&db, "INSERT"),
        5,
        "one fallback INSERT per batch"
    );
    assert_eq!(statements(&db, "COPY"), 0, "every COPY was rolled back");
    assert_eq!(l.sink("postgres")["pending"], 0);
}

#[test]
fn a_refused_copy_whose_rollback_fails_still_takes_the_fallback() {
    let db = db_or_skip!();
    // The link is lost whenever hxlog sends the simple query `ROLLBACK`
    // (`Q`, its length, the text): only after a COPY that failed.
    let proxy = Proxy::cutting_on(
        format!("{}:{}", db.server.host, db.server.port),
        b"Q\0\0\0\x0dROLLBACK\0",
    );
    let l = logger(
        &db,
        Some(proxy.port),
        &[("PG_DB_SSLMODE", "disable")],
        json!({"postgres_batch_size": 200}),
    );
    l.ok(&["simulate", "--count", "1000", "--interval", "10s"]);
    l.ok(&["replay"]);
    assert_eq!(db.samples(), 1000);
    assert_eq!(proxy.cuts(), 0, "a COPY that commits sends no ROLLBACK");
    // Every other row lost: each batch's COPY hits unique violations (23505),
    // and its ROLLBACK never gets an answer.
    db.lose_every_other_row("taken_at");
    assert_eq!(db.samples(), 500);
    record_insert_statements(&db);
    // The fallback needs no retry, so the give-up time is never approached;
    // a batch retried as a transient failure meets the same cut every time.
    let out = l.output(&[
        "replay",
        "--since",
        "1d",
        "--sink",
        "postgres",
        "--give-up-after",
        "30s",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert_eq!(proxy.cuts(), 5, "one ROLLBACK cut per batch of 200: {err}");
    assert!(
        err.contains("cannot roll back the failed COPY"),
        "the lost connection is logged: {err}"
    );
    assert_eq!(db.samples(), 1000, "every lost row restored");
    assert_eq!(
        db.scalar("SELECT count(DISTINCT sample_id) FROM samples"),
        1000
    );
    assert_eq!(
        statements(&db, "INSERT"),
        5,
        "one fallback INSERT per batch, each on a fresh connection"
    );
    assert_eq!(statements(&db, "COPY"), 0, "no COPY committed");
    let s = l.sink("postgres");
    assert_eq!(s["pending"], 0, "{s}");
    assert!(s["last_error_class"].is_null(), "no send failed: {s}");
}

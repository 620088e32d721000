//! A Postgres statement that hangs (blocked on a lock another session holds):
//! every send has a timeout, counted as a transient error; `replay` honours
//! `--give-up-after` whatever the sink is doing; the abandoned statement is
//! cancelled on the server, so retries do not pile up blocked backends.

use hxlog_test_support::SpawnGuarded;
use std::time::Duration;

use serde_json::json;

use crate::logger::{Logger, terminate, wait_until};
use crate::pg::TestDb;

/// A session of the test's own holding `LOCK TABLE samples IN SHARE MODE`
/// (reads pass, inserts wait) until dropped.
struct TableLock {
    runtime: tokio::runtime::Runtime,
    client: Option<tokio_postgres::Client>,
}

impl TableLock {
    fn take(db: &TestDb) -> TableLock {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let client = runtime.block_on(async {
            let (client, conn) = tokio_postgres::Config::new()
                .host(&db.server.host)
                .port(db.server.port)
                .user(&db.server.user)
                .dbname(&db.name)
                .connect(tokio_postgres::NoTls)
                .await
                .expect("connect");
            tokio::spawn(conn);
            client
                .batch_execute("BEGIN; LOCK TABLE samples IN SHARE MODE")
                .await
                .expect("lock samples");
            client
        });
        TableLock {
            runtime,
            client: Some(client),
        }
    }

    fn release(mut self) {
        let client = self.client.take().unwrap();
        self.runtime
            .block_on(client.batch_execute("COMMIT"))
            .expect("release the lock");
    }
}

impl Drop for TableLock {
    fn drop(&mut self) {
        // Dropping the client closes the session, which releases the lock.
        self.client.take();
    }
}

/// hxlog's backends on `db` waiting for a lock.
fn blocked_backends(db: &TestDb) -> i64 {
    db.scalar(&format!(
        "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'hxlog' \
         AND datname = '{}' AND wait_event_type = 'Lock'",
        db.name
    ))
}

fn logger(db: &TestDb) -> Logger {
    let l = Logger::new(json!({"send_timeout": "2s"}));
    db.write_secrets(l.path(), None, &[("PG_DB_SSLMODE", "disable")]);
    l
}

#[test]
fn replay_gives_up_on_time_while_a_statement_is_blocked() {
    let Some(db) = TestDb::create() else { return };
    let l = logger(&db);
    l.ok(&["migrate"]);
    l.ok(&["simulate", "--count", "5"]);
    let lock = TableLock::take(&db);
    let log = std::fs::File::create(l.path().join("replay.log")).unwrap();
    let mut child = l
        .cmd(&["replay", "--give-up-after", "5s"])
        .stdout(std::process::Stdio::null())
        .stderr(log)
        .spawn_guarded();
    let status = crate::common::wait_exit(&mut child, Duration::from_secs(60));
    let _ = child.kill();
    let err = std::fs::read_to_string(l.path().join("replay.log")).unwrap();
    let status = status
        .unwrap_or_else(|| panic!("replay --give-up-after 5s still running after 60 s:\n{err}"));
    assert!(!status.success(), "{err}");
    assert!(
        err.contains("still failing after 5s") && err.contains("no answer within"),
        "{err}"
    );
    let s = l.sink("postgres");
    assert_eq!(s["last_error_class"], "transient", "{s}");
    assert!(
        s["last_error"]
            .as_str()
            .unwrap()
            .contains("no answer within"),
        "{s}"
    );
    assert_eq!(s["pending"], 5);
    lock.release();
    l.ok(&["replay"]);
    assert_eq!(db.samples(), 5);
    assert_eq!(l.sink("postgres")["pending"], 0);
}

#[test]
fn run_times_out_cancels_and_resumes_when_the_lock_is_released() {
    let Some(db) = TestDb::create() else { return };
    let l = logger(&db);
    l.ok(&["migrate"]);
    let lock = TableLock::take(&db);
    let mut child = l.spawn_run();
    let cancelled = || {
        std::fs::read_to_string(l.log_path())
            .unwrap_or_default()
            .matches("cancelled the abandoned statement")
            .count()
    };
    wait_until(
        Duration::from_secs(60),
        "three sends time out and are cancelled",
        || cancelled() >= 3,
    );
    let s = l.sink("postgres");
    assert_eq!(s["last_error_class"], "transient", "{s}");
    assert!(
        s["last_error"]
            .as_str()
            .unwrap()
            .contains("no answer within"),
        "{s}"
    );
    // each abandoned statement was cancelled: at most the one in flight waits
    wait_until(
        Duration::from_secs(20),
        "abandoned statements no longer wait on the lock",
        || blocked_backends(&db) <= 1,
    );
    assert_eq!(db.samples(), 0);
    lock.release();
    let before = l.samples();
    wait_until(Duration::from_secs(60), "delivery resumes", || {
        db.samples() as u64 >= before
    });
    assert!(terminate(&mut child, hxlog_test_support::SIGTERM_DEADLINE).success());
    l.ok(&["replay"]);
    assert_eq!(db.samples() as u64, l.samples());
    assert_eq!(
        db.scalar("SELECT count(DISTINCT sample_id) FROM samples") as u64,
        l.samples()
    );
}

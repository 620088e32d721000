//! Delivery through PgBouncer in transaction mode (Azure Database for
//! PostgreSQL's built-in pooler, port 6432): a real `pgbouncer` with a pool
//! smaller than the number of loggers, so consecutive statements of one logger
//! land on different server connections. Named prepared statements and any
//! other session state break there; hxlog must deliver exactly once anyway.

use hxlog_test_support::SpawnGuarded;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::json;

use crate::logger::{Logger, wait_until};
use crate::pg::{Server, TestDb, free_port};

/// A `pgbouncer` of a test's own in front of `server`, in transaction mode with
/// a pool of `pool` server connections per database and user. Killed when dropped.
struct Bouncer {
    child: Child,
    dir: tempfile::TempDir,
    port: u16,
}

/// `pgbouncer`'s path, if it is installed (Debian puts it in /usr/sbin).
fn pgbouncer_path() -> Option<PathBuf> {
    [
        "/usr/sbin/pgbouncer",
        "/usr/bin/pgbouncer",
        "/usr/local/bin/pgbouncer",
    ]
    .into_iter()
    .map(PathBuf::from)
    .find(|p| p.exists())
}

/// The uid and gid of the `postgres` user (pgbouncer refuses to run as root).
fn postgres_ids() -> (u32, u32) {
    let name = std::ffi::CString::new("postgres").unwrap();
    // SAFETY: getpwnam takes a NUL-terminated name and returns a pointer to a
    // static record or null; we read two integers from it at once.
    let pw = unsafe { libc::getpwnam(name.as_ptr()) };
    assert!(!pw.is_null(), "no postgres user to run pgbouncer as");
    // SAFETY: checked non-null above.
    unsafe { ((*pw).pw_uid, (*pw).pw_gid) }
}

impl Bouncer {
    /// Starts pgbouncer, or `None` when it is not installed (never under `HXLOG_REQUIRE_PG=1`).
    fn start(server: &Server, pool: u32) -> Option<Bouncer> {
        let Some(exe) = pgbouncer_path() else {
            assert!(
                std::env::var("HXLOG_REQUIRE_PG").as_deref() != Ok("1"),
                "HXLOG_REQUIRE_PG=1 but pgbouncer is not installed (apt-get install pgbouncer)"
            );
            eprintln!("*** SKIPPED: pgbouncer is not installed ***");
            return None;
        };
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let p = |f: &str| dir.path().join(f).display().to_string();
        std::fs::write(
            dir.path().join("userlist.txt"),
            format!("\"{}\" \"\"\n", server.user),
        )
        .unwrap();
        let ini = format!(
            "[databases]\n\
             * = host={host} port={sport}\n\
             [pgbouncer]\n\
             listen_addr = 127.0.0.1\n\
             listen_port = {port}\n\
             unix_socket_dir =\n\
             auth_type = trust\n\
             auth_file = {users}\n\
             admin_users = {user}\n\
             pool_mode = transaction\n\
             default_pool_size = {pool}\n\
             min_pool_size = 0\n\
             reserve_pool_size = 0\n\
             max_client_conn = 200\n\
             server_reset_query =\n\
             logfile = {log}\n\
             pidfile = {pid}\n",
            host = server.host,
            sport = server.port,
            users = p("userlist.txt"),
            user = server.user,
            log = p("pgbouncer.log"),
            pid = p("pgbouncer.pid"),
        );
        std::fs::write(dir.path().join("pgbouncer.ini"), ini).unwrap();
        let mut cmd = Command::new(exe);
        cmd.arg(dir.path().join("pgbouncer.ini"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } == 0 {
            use std::os::unix::fs::PermissionsExt;
            use std::os::unix::process::CommandExt;
            let (uid, gid) = postgres_ids();
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid)).unwrap();
            std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
            for f in ["userlist.txt", "pgbouncer.ini"] {
                std::os::unix::fs::chown(dir.path().join(f), Some(uid), Some(gid)).unwrap();
            }
            cmd.uid(uid).gid(gid);
        }
        let child = cmd.spawn().expect("start pgbouncer");
        let mut b = Bouncer { child, dir, port };
        wait_until(Duration::from_secs(30), "pgbouncer listens", || {
            assert!(
                b.child.try_wait().unwrap().is_none(),
                "pgbouncer exited at start:\n{}",
                b.log()
            );
            std::net::TcpStream::connect(("127.0.0.1", b.port)).is_ok()
        });
        Some(b)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("pgbouncer.log")).unwrap_or_default()
    }

    /// Transactions pgbouncer relayed for `db` (from the admin console's `SHOW STATS`).
    fn transactions(&self, db: &str, user: &str) -> i64 {
        let rows = admin_query(self.port, user, "SHOW STATS");
        rows.iter()
            .find(|r| r.get("database").map(String::as_str) == Some(db))
            .and_then(|r| r.get("total_xact_count"))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    }
}

impl Drop for Bouncer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs a command on pgbouncer's admin console (simple protocol only) and
/// returns its rows as column → text maps.
fn admin_query(port: u16, user: &str, sql: &str) -> Vec<std::collections::HashMap<String, String>> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let (client, conn) = tokio_postgres::Config::new()
            .host("127.0.0.1")
            .port(port)
            .user(user)
            .dbname("pgbouncer")
            .connect(tokio_postgres::NoTls)
            .await
            .expect("connect to pgbouncer's admin console");
        tokio::spawn(conn);
        client
            .simple_query(sql)
            .await
            .expect("admin query")
            .into_iter()
            .filter_map(|m| match m {
                tokio_postgres::SimpleQueryMessage::Row(r) => Some(
                    r.columns()
                        .iter()
                        .enumerate()
                        .map(|(i, c)| (c.name().to_string(), r.get(i).unwrap_or("").to_string()))
                        .collect(),
                ),
                _ => None,
            })
            .collect()
    })
}

/// A logger of device `device` whose Postgres is reached through `port`.
fn logger_via(db: &TestDb, dir_port: u16, device: &str) -> Logger {
    let l = Logger::new(json!({"device_id": device, "postgres_batch_size": 100}));
    db.write_secrets(l.path(), Some(dir_port), &[("PG_DB_SSLMODE", "disable")]);
    l
}

fn pending(l: &Logger) -> u64 {
    l.sink("postgres")["pending"].as_u64().unwrap()
}

#[test]
fn several_loggers_drain_exactly_once_through_pgbouncer_in_transaction_mode() {
    let Some(db) = TestDb::create() else { return };
    let Some(bouncer) = Bouncer::start(&db.server, 2) else {
        return;
    };
    const N: u64 = 1500;
    let loggers: Vec<Logger> = (1..=4)
        .map(|i| logger_via(&db, bouncer.port, &format!("hx-{i:02}")))
        .collect();
    for l in &loggers {
        l.ok(&["simulate", "--count", &N.to_string(), "--interval", "1s"]);
    }
    // All four at once: first connection migrates (advisory lock, one
    // transaction), then 15 batches each, interleaved over 2 server connections.
    replay_all(&loggers, &bouncer, &["replay", "--give-up-after", "60s"]);
    assert_eq!(db.samples() as u64, 4 * N);
    assert_eq!(
        db.scalar("SELECT count(DISTINCT sample_id) FROM samples") as u64,
        4 * N
    );
    for i in 1..=4 {
        assert_eq!(
            db.scalar(&format!(
                "SELECT count(*) FROM samples WHERE device_id = 'hx-{i:02}'"
            )) as u64,
            N
        );
    }
    assert_eq!(db.scalar("SELECT count(*) FROM hxlog_migrations"), 2);
    // the rows really travelled through the pooler, one transaction per batch at least
    let xacts = bouncer.transactions(&db.name, &db.server.user);
    assert!(
        xacts >= (4 * N / 100) as i64,
        "pgbouncer relayed only {xacts} transactions"
    );
    // Every other row lost, all four resend everything at once: each batch's
    // COPY fails on a unique violation and is rolled back, and the INSERT
    // fallback stores the rest. The COPY's named statement must not outlive
    // its transaction on a server connection the other loggers share (they
    // name theirs alike: s0, s1, …), or they would fail with 42P05.
    db.lose_every_other_row("sample_id");
    assert_eq!(db.samples() as u64, 2 * N);
    replay_all(
        &loggers,
        &bouncer,
        &[
            "replay",
            "--since",
            "1d",
            "--sink",
            "postgres",
            "--give-up-after",
            "60s",
        ],
    );
    assert_eq!(db.samples() as u64, 4 * N);
    assert_eq!(
        db.scalar("SELECT count(DISTINCT sample_id) FROM samples") as u64,
        4 * N
    );
}

/// Runs `args` on every logger at once, through `bouncer`; each must succeed.
fn replay_all(loggers: &[Logger], bouncer: &Bouncer, args: &[&str]) {
    let mut children: Vec<_> = loggers
        .iter()
        .map(|l| {
            let log = std::fs::File::create(l.path().join("replay.log")).unwrap();
            l.cmd(args)
                .stdout(Stdio::null())
                .stderr(log)
                .spawn_guarded()
        })
        .collect();
    for (l, child) in loggers.iter().zip(&mut children) {
        let exited = crate::common::wait_exit(child, Duration::from_secs(180));
        let Some(status) = exited else {
            let _ = child.kill();
            panic!("replay through pgbouncer did not finish in 180 s");
        };
        let out = std::fs::read_to_string(l.path().join("replay.log")).unwrap();
        assert!(
            status.success(),
            "replay through pgbouncer failed for {}:\n{out}\npgbouncer log:\n{}",
            l.path().display(),
            bouncer.log()
        );
        assert_eq!(pending(l), 0);
    }
}

#[test]
fn run_delivers_promptly_through_pgbouncer() {
    let Some(db) = TestDb::create() else { return };
    let Some(bouncer) = Bouncer::start(&db.server, 1) else {
        return;
    };
    // two services share one server connection: every statement of one may
    // follow a statement of the other on it
    let loggers: Vec<Logger> = (1..=2)
        .map(|i| logger_via(&db, bouncer.port, &format!("hx-{i:02}")))
        .collect();
    loggers[0].ok(&["migrate"]);
    let mut children: Vec<_> = loggers.iter().map(|l| l.spawn_run()).collect();
    wait_until(
        Duration::from_secs(60),
        "both services deliver several samples",
        || {
            (1..=2).all(|i| {
                db.scalar(&format!(
                    "SELECT count(*) FROM samples WHERE device_id = 'hx-{i:02}'"
                )) >= 3
            })
        },
    );
    for (l, child) in loggers.iter().zip(&mut children) {
        assert!(crate::logger::terminate(child, hxlog_test_support::SIGTERM_DEADLINE).success());
        let log = std::fs::read_to_string(l.log_path()).unwrap();
        assert!(
            !log.contains("permanent"),
            "a permanent error through pgbouncer:\n{log}"
        );
        l.ok(&["replay"]);
        assert_eq!(pending(l), 0);
    }
    let total: u64 = loggers.iter().map(|l| l.samples()).sum();
    assert_eq!(db.samples() as u64, total);
    assert_eq!(
        db.scalar("SELECT count(DISTINCT sample_id) FROM samples") as u64,
        total
    );
}

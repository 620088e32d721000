//! A real PostgreSQL for tests: the server from `HXLOG_TEST_DATABASE_URL`
//! (default `postgres://postgres@127.0.0.1:5432/postgres`), else a throwaway
//! cluster started with `initdb`/`pg_ctl` when those exist; else the test is
//! skipped with a loud reason, except under `HXLOG_REQUIRE_PG=1` (CI), where
//! it fails. Each test gets its own database, dropped at the end.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio_postgres::{Client, NoTls};

/// Where the server is.
#[derive(Debug, Clone)]
pub struct Server {
    pub host: String,
    pub port: u16,
    pub user: String,
}

static SERVER: OnceLock<Option<Server>> = OnceLock::new();
static COUNTER: AtomicUsize = AtomicUsize::new(0);

fn parse_url(url: &str) -> Server {
    let cfg: tokio_postgres::Config = url
        .parse()
        .expect("HXLOG_TEST_DATABASE_URL is not a postgres URL");
    let host = match cfg.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
        _ => "127.0.0.1".into(),
    };
    Server {
        host,
        port: cfg.get_ports().first().copied().unwrap_or(5432),
        user: cfg.get_user().unwrap_or("postgres").to_string(),
    }
}

/// Runs `f` to completion on a runtime of its own, on a thread of its own, so
/// these helpers work from sync and async tests alike.
fn block<T: Send>(f: impl std::future::Future<Output = T> + Send) -> T {
    std::thread::scope(|s| {
        s.spawn(|| {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(f)
        })
        .join()
        .unwrap_or_else(|e| std::panic::resume_unwind(e))
    })
}

async fn connect(s: &Server, db: &str) -> Result<Client, tokio_postgres::Error> {
    let (client, conn) = tokio_postgres::Config::new()
        .host(&s.host)
        .port(s.port)
        .user(&s.user)
        .dbname(db)
        .connect_timeout(crate::harness::scaled(std::time::Duration::from_secs(5)))
        .connect(NoTls)
        .await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(client)
}

fn answers(s: &Server) -> bool {
    block(async { connect(s, "postgres").await.is_ok() })
}

/// A throwaway PostgreSQL cluster of a test's own, started with `initdb` and
/// `pg_ctl` (as the `postgres` user when we are root, since initdb refuses
/// root). Stopped and deleted when dropped.
pub struct Cluster {
    dir: PathBuf,
    bin: PathBuf,
    root: bool,
    pub port: u16,
}

impl Cluster {
    /// The folder with `initdb` and `pg_ctl`, if PostgreSQL's server binaries are installed.
    fn bin_dir() -> Option<PathBuf> {
        let mut candidates: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
            .into_iter()
            .flatten()
            .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
            .collect();
        candidates.sort();
        candidates.reverse();
        candidates.push(PathBuf::from("/usr/local/bin"));
        candidates.push(PathBuf::from("/usr/bin"));
        candidates
            .into_iter()
            .find(|d| d.join("initdb").exists() && d.join("pg_ctl").exists())
    }

    fn run(&self, tool: &str, args: &[&str]) -> bool {
        let exe = self.bin.join(tool);
        let mut c = if self.root {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&exe);
            c
        } else {
            Command::new(&exe)
        };
        c.args(args)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    }

    fn data(&self) -> String {
        self.dir.join("data").display().to_string()
    }

    /// Creates and starts a cluster on a free port, or `None` when that is not possible here.
    pub fn start() -> Option<Cluster> {
        let bin = Self::bin_dir()?;
        let dir = std::env::temp_dir().join(format!(
            "hxlog-pg-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::SeqCst)
        ));
        std::fs::create_dir_all(&dir).ok()?;
        // SAFETY: geteuid has no preconditions.
        let root = unsafe { libc::geteuid() } == 0;
        if root {
            let ok = Command::new("chown")
                .args(["postgres:postgres", dir.to_str()?])
                .status()
                .is_ok_and(|s| s.success());
            if !ok {
                return None;
            }
        }
        let cluster = Cluster {
            dir,
            bin,
            root,
            port: free_port(),
        };
        let data = cluster.data();
        if !cluster.run("initdb", &["-D", &data, "-A", "trust", "-U", "postgres"]) {
            return None;
        }
        cluster.pg_ctl("start").then_some(cluster)
    }

    fn pg_ctl(&self, action: &str) -> bool {
        let opts = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
            self.port,
            self.dir.display()
        );
        let log = self.dir.join("log").display().to_string();
        self.run(
            "pg_ctl",
            &[
                "-D",
                &self.data(),
                "-o",
                &opts,
                "-l",
                &log,
                "-m",
                "fast",
                "-w",
                action,
            ],
        )
    }

    /// Restarts the server (fast shutdown: clients are disconnected, as in a real restart).
    pub fn restart(&self) {
        assert!(
            self.pg_ctl("restart"),
            "pg_ctl restart failed; see {}/log",
            self.dir.display()
        );
    }

    /// How to reach it.
    pub fn server(&self) -> Server {
        Server {
            host: "127.0.0.1".into(),
            port: self.port,
            user: "postgres".into(),
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let data = self.data();
        self.run("pg_ctl", &["-D", &data, "-m", "immediate", "-w", "stop"]);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A free TCP port on loopback (nothing listens there once this returns).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The server, or `None` when tests must be skipped (never under `HXLOG_REQUIRE_PG=1`).
pub fn server() -> Option<Server> {
    SERVER
        .get_or_init(|| {
            let url = std::env::var("HXLOG_TEST_DATABASE_URL")
                .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
            let s = parse_url(&url);
            if answers(&s) {
                return Some(s);
            }
            eprintln!("tests: no PostgreSQL answers at {url}; trying a throwaway cluster");
            let cluster = Cluster::start()?;
            eprintln!("tests: started a throwaway PostgreSQL cluster on port {}", cluster.port);
            let server = cluster.server();
            // It serves every test of this process, so it is not dropped; it
            // outlives the run (stop it with `pg_ctl -D <its dir>/data stop`).
            eprintln!("tests: leaving it running after the tests: {}", cluster.dir.display());
            std::mem::forget(cluster);
            Some(server)
        })
        .clone()
        .or_else(|| {
            if std::env::var("HXLOG_REQUIRE_PG").as_deref() == Ok("1") {
                panic!("HXLOG_REQUIRE_PG=1 but no PostgreSQL is reachable (set HXLOG_TEST_DATABASE_URL or start the server)");
            }
            eprintln!("\n*** SKIPPED: no PostgreSQL reachable and no initdb/pg_ctl to start one; Postgres tests did not run ***\n");
            None
        })
}

/// A database of its own for one test; dropped (with its connections) at the end.
pub struct TestDb {
    pub server: Server,
    pub name: String,
}

impl TestDb {
    /// Creates a fresh database, or `None` when Postgres tests are skipped.
    pub fn create() -> Option<TestDb> {
        Some(Self::create_on(server()?))
    }

    /// Creates a fresh database on `server`.
    pub fn create_on(server: Server) -> TestDb {
        let name = format!(
            "hxlog_test_{}_{}_{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::SeqCst),
            fastrand::u32(..)
        );
        block(async {
            let c = connect(&server, "postgres")
                .await
                .expect("connect to postgres");
            c.batch_execute(&format!("CREATE DATABASE {name}"))
                .await
                .expect("create database");
        });
        TestDb { server, name }
    }

    /// Writes a seed-format `secrets.json` for this database into `dir`, with
    /// extra keys (e.g. `PG_DB_SSLMODE`) and the port overridable.
    pub fn write_secrets(&self, dir: &Path, port: Option<u16>, extra: &[(&str, &str)]) -> PathBuf {
        let mut m = serde_json::Map::new();
        m.insert("PG_DB_HOST".into(), self.server.host.clone().into());
        m.insert(
            "PG_DB_PORT".into(),
            port.unwrap_or(self.server.port).to_string().into(),
        );
        m.insert("PG_DB_NAME".into(), self.name.clone().into());
        m.insert("PG_DB_USER".into(), self.server.user.clone().into());
        m.insert("PG_DB_PASSWORD".into(), "not-needed-with-trust".into());
        for (k, v) in extra {
            m.insert(k.to_string(), v.to_string().into());
        }
        let p = dir.join("secrets.json");
        std::fs::write(&p, serde_json::Value::Object(m).to_string()).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        p
    }

    /// Runs a query returning one i64.
    pub fn scalar(&self, sql: &str) -> i64 {
        block(async {
            let c = connect(&self.server, &self.name).await.expect("connect");
            c.query_one(sql, &[])
                .await
                .unwrap_or_else(|e| panic!("{sql}: {e}"))
                .get(0)
        })
    }

    /// Runs statements.
    pub fn execute(&self, sql: &str) {
        block(async {
            let c = connect(&self.server, &self.name).await.expect("connect");
            c.batch_execute(sql)
                .await
                .unwrap_or_else(|e| panic!("{sql}: {e}"));
        })
    }

    /// Deletes every other row of `samples`, in `order_by` order: the
    /// database "lost" half of what it stored, spread over every batch, so a
    /// resend's COPY meets unique violations in each one.
    pub fn lose_every_other_row(&self, order_by: &str) {
        self.execute(&format!(
            "DELETE FROM samples s USING (SELECT sample_id, row_number() OVER (ORDER BY {order_by}) AS n \
             FROM samples) x WHERE s.sample_id = x.sample_id AND x.n % 2 = 0"
        ));
    }

    /// Rows in `samples`, or 0 when the table does not exist yet.
    pub fn samples(&self) -> i64 {
        block(async {
            let c = connect(&self.server, &self.name).await.expect("connect");
            match c.query_one("SELECT count(*) FROM samples", &[]).await {
                Ok(r) => r.get(0),
                Err(_) => 0,
            }
        })
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let (server, name) = (self.server.clone(), self.name.clone());
        let _ = std::thread::spawn(move || {
            block(async {
                if let Ok(c) = connect(&server, "postgres").await {
                    let _ = c
                        .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                        .await;
                }
            })
        })
        .join();
    }
}

/// The plan of `sql` (with sequential scans discouraged, as on a large table).
pub fn explain(db: &TestDb, sql: &str) -> String {
    block(async {
        let c = connect(&db.server, &db.name).await.expect("connect");
        c.batch_execute("SET enable_seqscan = off").await.unwrap();
        let rows = c.query(&format!("EXPLAIN {sql}"), &[]).await.unwrap();
        rows.iter()
            .map(|r| r.get::<_, String>(0))
            .collect::<Vec<_>>()
            .join("\n")
    })
}

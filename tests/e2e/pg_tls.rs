//! TLS to PostgreSQL, end to end: a throwaway cluster with `ssl=on` and a
//! certificate from a test CA made with `openssl`; every `PG_DB_SSLMODE` that
//! should connect does, and the session is really encrypted (`pg_stat_ssl` of
//! hxlog's backend during `run`); the ones that should refuse do, as a
//! permanent error. A handshake cut short by the network is transient.

use hxlog_test_support::SpawnGuarded;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::json;

use crate::logger::{Logger, terminate, wait_until};
use crate::pg::{Cluster, TestDb};

/// A test PKI: two unrelated CAs and a server certificate signed by the first,
/// valid for `127.0.0.1` and `db.hxlog.test` (not for `localhost`).
struct Pki {
    dir: tempfile::TempDir,
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .expect("run openssl");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Pki {
    fn new() -> Pki {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        for ca in ["ca1", "ca2"] {
            openssl(
                d,
                &[
                    "req",
                    "-x509",
                    "-newkey",
                    "ec",
                    "-pkeyopt",
                    "ec_paramgen_curve:prime256v1",
                    "-nodes",
                    "-keyout",
                    &format!("{ca}.key"),
                    "-out",
                    &format!("{ca}.pem"),
                    "-days",
                    "2",
                    "-subj",
                    &format!("/CN=hxlog test {ca}"),
                    "-addext",
                    "basicConstraints=critical,CA:TRUE",
                    "-addext",
                    "keyUsage=critical,keyCertSign,cRLSign",
                ],
            );
        }
        openssl(
            d,
            &[
                "req",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-keyout",
                "server.key",
                "-out",
                "server.csr",
                "-subj",
                "/CN=db.hxlog.test",
            ],
        );
        std::fs::write(
            d.join("server.ext"),
            "subjectAltName=IP:127.0.0.1,DNS:db.hxlog.test\nextendedKeyUsage=serverAuth\n",
        )
        .unwrap();
        openssl(
            d,
            &[
                "x509",
                "-req",
                "-in",
                "server.csr",
                "-CA",
                "ca1.pem",
                "-CAkey",
                "ca1.key",
                "-CAcreateserial",
                "-out",
                "server.pem",
                "-days",
                "2",
                "-extfile",
                "server.ext",
            ],
        );
        // Azure's advice: concatenate the roots into one file. The right one second.
        let both = [
            std::fs::read_to_string(d.join("ca2.pem")).unwrap(),
            std::fs::read_to_string(d.join("ca1.pem")).unwrap(),
        ]
        .concat();
        std::fs::write(d.join("both.pem"), both).unwrap();
        Pki { dir }
    }

    fn path(&self, file: &str) -> PathBuf {
        self.dir.path().join(file)
    }
}

/// A throwaway cluster serving TLS with the PKI's server certificate, or `None`
/// when clusters cannot be started here (never under `HXLOG_REQUIRE_PG=1`).
fn tls_cluster(pki: &Pki) -> Option<Cluster> {
    let Some(cluster) = Cluster::start() else {
        assert!(
            std::env::var("HXLOG_REQUIRE_PG").as_deref() != Ok("1"),
            "HXLOG_REQUIRE_PG=1 but no throwaway cluster could be started (initdb/pg_ctl)"
        );
        eprintln!("*** SKIPPED: cannot start a throwaway PostgreSQL cluster here ***");
        return None;
    };
    // The server reads its key as the postgres user and wants it private.
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        let ok = Command::new("chown")
            .args(["-R", "postgres:postgres"])
            .arg(pki.dir.path())
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "chown the test PKI to postgres");
    }
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(pki.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(
        pki.path("server.key"),
        std::fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    let admin = TestDb::create_on(cluster.server());
    admin.execute(&format!(
        "ALTER SYSTEM SET ssl_cert_file = '{}'",
        pki.path("server.pem").display()
    ));
    admin.execute(&format!(
        "ALTER SYSTEM SET ssl_key_file = '{}'",
        pki.path("server.key").display()
    ));
    admin.execute("ALTER SYSTEM SET ssl = on");
    admin.execute("SELECT pg_reload_conf()");
    wait_until(Duration::from_secs(30), "the cluster serves TLS", || {
        admin.scalar("SELECT CASE WHEN current_setting('ssl') = 'on' THEN 1::int8 ELSE 0::int8 END")
            == 1
    });
    drop(admin);
    Some(cluster)
}

/// A logger with 5 samples whose secrets point at `db` with these extra keys.
fn logger(db: &TestDb, extra: &[(&str, &str)]) -> Logger {
    let l = Logger::new(json!({}));
    db.write_secrets(l.path(), None, extra);
    l
}

/// hxlog's backends on `db`: (encrypted, not encrypted).
fn hxlog_sessions(db: &TestDb) -> (i64, i64) {
    let q = |ssl: bool| {
        db.scalar(&format!(
            "SELECT count(*) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) \
             WHERE a.application_name = 'hxlog' AND a.datname = '{}' AND s.ssl = {ssl}",
            db.name
        ))
    };
    (q(true), q(false))
}

/// `run` delivers through this configuration over an encrypted session.
fn delivers_encrypted(db: &TestDb, what: &str, extra: &[(&str, &str)]) {
    db.execute("DROP TABLE IF EXISTS samples; DROP TABLE IF EXISTS hxlog_migrations");
    let l = logger(db, extra);
    let mut child = l.spawn_run();
    wait_until(
        Duration::from_secs(60),
        &format!("{what}: samples reach Postgres"),
        || db.samples() >= 2,
    );
    let (encrypted, plain) = hxlog_sessions(db);
    assert!(
        encrypted >= 1 && plain == 0,
        "{what}: hxlog's sessions: {encrypted} encrypted, {plain} in clear text"
    );
    assert!(terminate(&mut child, hxlog_test_support::SIGTERM_DEADLINE).success());
    let log = std::fs::read_to_string(l.log_path()).unwrap();
    assert!(!log.contains("delivery failed"), "{what}:\n{log}");
}

/// `replay` refuses this configuration at once with a permanent error that
/// points at the TLS settings, and delivers nothing.
fn refused_as_permanent(db: &TestDb, what: &str, extra: &[(&str, &str)]) {
    db.execute("DROP TABLE IF EXISTS samples; DROP TABLE IF EXISTS hxlog_migrations");
    let l = logger(db, extra);
    l.ok(&["simulate", "--count", "5"]);
    let out = l.output(&["replay", "--give-up-after", "60s"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{what}: expected a refusal:\n{err}");
    assert!(
        err.contains("refused the delivery") && err.contains("PG_DB_SSLROOTCERT"),
        "{what}: expected a permanent certificate error:\n{err}"
    );
    assert_eq!(
        l.sink("postgres")["last_error_class"],
        "permanent",
        "{what}"
    );
    assert_eq!(db.samples(), 0, "{what}");
}

#[test]
fn verify_modes_with_a_test_ca() {
    let pki = Pki::new();
    let Some(cluster) = tls_cluster(&pki) else {
        return;
    };
    let db = TestDb::create_on(cluster.server());
    let ca1 = pki.path("ca1.pem").display().to_string();
    let ca2 = pki.path("ca2.pem").display().to_string();
    let both = pki.path("both.pem").display().to_string();
    delivers_encrypted(
        &db,
        "verify-full",
        &[
            ("PG_DB_SSLMODE", "verify-full"),
            ("PG_DB_SSLROOTCERT", &ca1),
        ],
    );
    // the certificate does not name `localhost`: verify-ca does not care
    delivers_encrypted(
        &db,
        "verify-ca via localhost",
        &[
            ("PG_DB_HOST", "localhost"),
            ("PG_DB_SSLMODE", "verify-ca"),
            ("PG_DB_SSLROOTCERT", &ca1),
        ],
    );
    delivers_encrypted(
        &db,
        "require",
        &[("PG_DB_SSLMODE", "require"), ("PG_DB_SSLROOTCERT", &ca1)],
    );
    delivers_encrypted(
        &db,
        "require without a root",
        &[("PG_DB_SSLMODE", "require")],
    );
    // every certificate of the file is trusted, not only the first
    delivers_encrypted(
        &db,
        "verify-full with several roots in the file",
        &[
            ("PG_DB_SSLMODE", "verify-full"),
            ("PG_DB_SSLROOTCERT", &both),
        ],
    );
    refused_as_permanent(
        &db,
        "verify-full via a host name the certificate does not name",
        &[
            ("PG_DB_HOST", "localhost"),
            ("PG_DB_SSLMODE", "verify-full"),
            ("PG_DB_SSLROOTCERT", &ca1),
        ],
    );
    refused_as_permanent(
        &db,
        "verify-ca with another CA",
        &[("PG_DB_SSLMODE", "verify-ca"), ("PG_DB_SSLROOTCERT", &ca2)],
    );
    // as libpq: with a root certificate file, require checks the chain
    refused_as_permanent(
        &db,
        "require with another CA",
        &[("PG_DB_SSLMODE", "require"), ("PG_DB_SSLROOTCERT", &ca2)],
    );
    drop(db);
}

/// What the fake server does with one connection's TLS handshake.
#[derive(Clone, Copy, Debug)]
enum Break {
    /// Accept TLS, read the ClientHello, then reset the connection (RST).
    Reset,
    /// Accept TLS, read the ClientHello, then close it (EOF).
    Eof,
    /// Accept TLS and say nothing more.
    Stall,
}

/// A loopback server that breaks the TLS handshake of its first connections,
/// one way each (`plan`), then relays to `upstream`.
struct HandshakeBreaker {
    port: u16,
    broken: Arc<AtomicUsize>,
}

impl HandshakeBreaker {
    fn start(upstream: String, plan: Vec<Break>) -> HandshakeBreaker {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let broken = Arc::new(AtomicUsize::new(0));
        let counter = broken.clone();
        std::thread::spawn(move || {
            let mut plan = plan.into_iter();
            let mut stalled = vec![];
            for client in listener.incoming() {
                let Ok(mut client) = client else { continue };
                let Some(how) = plan.next() else {
                    let Ok(server) = TcpStream::connect(&upstream) else {
                        continue;
                    };
                    pump(client.try_clone().unwrap(), server.try_clone().unwrap());
                    pump(server, client);
                    continue;
                };
                let mut ssl_request = [0u8; 8];
                if client.read_exact(&mut ssl_request).is_err() {
                    continue;
                }
                assert_eq!(
                    &ssl_request[4..],
                    &[0x04, 0xd2, 0x16, 0x2f],
                    "not an SSLRequest"
                );
                client.write_all(b"S").unwrap();
                let mut hello = [0u8; 512];
                let _ = client.read(&mut hello);
                counter.fetch_add(1, Ordering::SeqCst);
                match how {
                    Break::Reset => {
                        let linger = libc::linger {
                            l_onoff: 1,
                            l_linger: 0,
                        };
                        // SAFETY: setsockopt on an open socket with a
                        // correctly sized `linger`; closing then sends RST.
                        unsafe {
                            libc::setsockopt(
                                client.as_raw_fd(),
                                libc::SOL_SOCKET,
                                libc::SO_LINGER,
                                (&linger as *const libc::linger).cast(),
                                std::mem::size_of::<libc::linger>() as libc::socklen_t,
                            );
                        }
                        drop(client);
                    }
                    Break::Eof => {
                        let _ = client.shutdown(Shutdown::Both);
                    }
                    Break::Stall => stalled.push(client),
                }
            }
        });
        HandshakeBreaker { port, broken }
    }
}

fn pump(mut from: TcpStream, mut to: TcpStream) {
    std::thread::spawn(move || {
        let mut buf = [0u8; 16384];
        while let Ok(n) = from.read(&mut buf) {
            if n == 0 || to.write_all(&buf[..n]).is_err() {
                break;
            }
        }
        let _ = to.shutdown(Shutdown::Write);
    });
}

#[test]
fn a_tls_handshake_cut_by_the_network_is_transient() {
    let Some(db) = TestDb::create() else { return };
    let tls_on = db
        .scalar("SELECT CASE WHEN current_setting('ssl') = 'on' THEN 1::int8 ELSE 0::int8 END")
        == 1;
    // after the breaks, the real server: TLS when it offers it
    let mode = if tls_on { "require" } else { "prefer" };
    let plan = vec![
        Break::Reset,
        Break::Eof,
        Break::Reset,
        Break::Stall,
        Break::Eof,
    ];
    let breaks = plan.len();
    let breaker = HandshakeBreaker::start(format!("{}:{}", db.server.host, db.server.port), plan);
    let l = Logger::new(json!({}));
    db.write_secrets(l.path(), Some(breaker.port), &[("PG_DB_SSLMODE", mode)]);
    l.ok(&["simulate", "--count", "5"]);
    let log = std::fs::File::create(l.path().join("replay.log")).unwrap();
    let mut child = l
        .cmd(&["replay", "--give-up-after", "120s"])
        .stdout(Stdio::null())
        .stderr(log)
        .spawn_guarded();
    let status = crate::common::wait_exit(&mut child, Duration::from_secs(150));
    let _ = child.kill();
    let log = std::fs::read_to_string(l.path().join("replay.log")).unwrap();
    let status = status.unwrap_or_else(|| panic!("replay hung on a stalled handshake:\n{log}"));
    assert!(
        status.success(),
        "a broken handshake must be retried:\n{log}"
    );
    assert_eq!(breaker.broken.load(Ordering::SeqCst), breaks, "{log}");
    assert_eq!(db.samples(), 5);
    assert!(
        log.contains("class=\"transient\""),
        "the broken handshakes are transient failures:\n{log}"
    );
    assert!(!log.contains("permanent"), "{log}");
}

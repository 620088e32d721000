//! The PostgreSQL sink: idempotent batch inserts into the `samples` table.
//!
//! Architecture invariant: the only module that uses tokio-postgres. It never
//! sees the outbox; it is handed batches and answers with a [`SinkError`] class.
//!
//! Delivery: each batch first goes as one binary `COPY samples FROM STDIN` in
//! a transaction (the fast path: about \copy's rate on a drain). COPY knows no
//! `ON CONFLICT`, so when the database refuses it for its data (SQLSTATE
//! classes 22 and 23; usually 23505, a sample already stored: a resend after a
//! crash, or a clock correction) it is rolled back and the batch goes again as
//! one `INSERT … SELECT FROM UNNEST(…) ON CONFLICT (sample_id) DO UPDATE …
//! WHERE`, a single statement, so the batch commits atomically and a resend
//! inserts nothing twice. The conflict clause updates only one thing in place:
//! a row stored `unsynced` whose sample now arrives `corrected` gets the
//! corrected `taken_at`, `clock` and `taken_at_raw` (one row per sample); any
//! other resend changes nothing. A batch the INSERT too is refused for its
//! data is split in halves until the refused samples are alone; they are
//! reported as [`SinkError::RejectedSamples`], everything else is inserted.
//! When the `ROLLBACK` of a refused COPY fails (the link lost), the connection
//! is dropped (the server ends the transaction with it) and the INSERT runs on
//! a fresh one: the COPY's answer, never the ROLLBACK's, decides the batch's
//! path.
//! The schema is applied from `schema/postgres/NNNN_*.sql` under a
//! transaction-scoped advisory lock, so many devices can start at once.
//!
//! Poolers: nothing relies on session state (no `SET`, no session advisory
//! locks). Statements outside a transaction are unnamed (tokio-postgres's
//! `*_typed` calls: parse, bind and execute in one round trip). The COPY's
//! statement is named (tokio-postgres prepares COPY), but it is prepared, used
//! and closed inside the batch's transaction, so PgBouncer in transaction mode
//! — Azure Flexible Server's built-in pooler on port 6432 — keeps all of it on
//! one server connection and it never outlives it; any other statement may
//! run on another server connection.
//!
//! Timeouts: connecting (socket, TLS, start-up) is bounded by
//! `connect_timeout`; a send is bounded by the forwarder, which drops it. A
//! dropped send drops its connection and asks the server to cancel the
//! statement in flight (`CancelOnDrop`).
//!
//! TLS: libpq's `sslmode` names, mapped onto tokio-postgres (which itself only
//! knows disable/prefer/require) and a native-tls connector:
//! `disable`, `prefer` and `require` (encrypted, certificate not checked),
//! `verify-ca` (chain checked), `verify-full` (chain and host name checked).
//! The default is `verify-full` off loopback and `prefer` on loopback or a Unix socket.
//! As in libpq, `PG_DB_SSLROOTCERT` (every certificate in the file) replaces
//! the OS store, and with it `require` checks the chain like `verify-ca`.
//! Only a certificate that fails verification is a permanent error; a reset,
//! EOF or stall during the handshake is transient (classified from the
//! error's types, not its text).

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use anyhow::{Context, bail};
use bytes::{BufMut, Bytes, BytesMut};
use futures_util::SinkExt;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::{IsNull, ToSql, Type, to_sql_checked};
use tokio_postgres::{Client, NoTls};
use tracing::{debug, info, instrument, warn};

use crate::config::{Config, PgSecrets, Secret, Secrets};
use crate::sample::{STANDARD_ROLES, Sample};
use crate::sinks::{Refusal, Sink, SinkError, SinkName};

/// The Postgres migrations, in order: (version, file name, SQL).
const MIGRATIONS: &[(i32, &str, &str)] = &[
    (
        1,
        "0001_samples.sql",
        include_str!("../../schema/postgres/0001_samples.sql"),
    ),
    (
        2,
        "0002_clock.sql",
        include_str!("../../schema/postgres/0002_clock.sql"),
    ),
];

/// Advisory lock key serialising migrations across devices (`hxlog` in ASCII).
const MIGRATION_LOCK: i64 = 0x68_786c_6f67;

/// libpq-style TLS modes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    /// Plain TCP.
    Disable,
    /// TLS if the server offers it, certificate not checked; plain otherwise.
    Prefer,
    /// TLS required, certificate not checked.
    Require,
    /// TLS required, certificate chain checked, host name not.
    VerifyCa,
    /// TLS required, chain and host name checked.
    VerifyFull,
}

impl SslMode {
    /// Parses `PG_DB_SSLMODE`; without one, `verify-full` off loopback and
    /// `prefer` on loopback.
    ///
    /// ```
    /// use hxlog::sinks::postgres::SslMode;
    /// assert_eq!(SslMode::resolve(None, "127.0.0.1").unwrap(), SslMode::Prefer);
    /// assert_eq!(SslMode::resolve(None, "db.example.com").unwrap(), SslMode::VerifyFull);
    /// assert_eq!(SslMode::resolve(Some("require"), "db.example.com").unwrap(), SslMode::Require);
    /// assert!(SslMode::resolve(Some("allow-anything"), "db").is_err());
    /// ```
    pub fn resolve(mode: Option<&str>, host: &str) -> anyhow::Result<SslMode> {
        Ok(
            match mode.map(|m| m.trim().to_ascii_lowercase()).as_deref() {
                None | Some("") => {
                    if is_local(host) {
                        SslMode::Prefer
                    } else {
                        SslMode::VerifyFull
                    }
                }
                Some("disable") => SslMode::Disable,
                Some("prefer") | Some("allow") => SslMode::Prefer,
                Some("require") => SslMode::Require,
                Some("verify-ca") => SslMode::VerifyCa,
                Some("verify-full") => SslMode::VerifyFull,
                Some(other) => bail!(
                    "PG_DB_SSLMODE {other:?} is not understood; use disable, prefer, require, verify-ca or verify-full"
                ),
            },
        )
    }

    /// The libpq name.
    pub fn as_str(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }
}

/// True for loopback addresses, `localhost` and Unix socket folders.
pub fn is_local(host: &str) -> bool {
    host.starts_with('/')
        || host.eq_ignore_ascii_case("localhost")
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
            .map(|ip| ip.is_loopback())
            .unwrap_or(false)
}

/// Resolved connection settings: libpq's parameters, validated.
#[derive(Debug, Clone)]
#[allow(missing_docs, reason = "the fields are libpq's connection parameters")]
pub struct PgSettings {
    /// Host name, IP address, or the folder of a Unix socket.
    pub host: String,
    pub port: u16,
    pub dbname: String,
    pub user: String,
    /// Redacted in `Debug`.
    pub password: Secret,
    pub sslmode: SslMode,
    /// Trusted root certificates (PEM, every one in the file), instead of the
    /// system's, as in libpq.
    pub sslrootcert: Option<PathBuf>,
    pub connect_timeout: Duration,
    /// Largest batch per statement.
    pub batch_size: usize,
}

impl PgSettings {
    /// Builds settings from `secrets.json` values, validating the TLS mode.
    pub fn from_secrets(s: &PgSecrets, batch_size: usize) -> anyhow::Result<PgSettings> {
        Ok(PgSettings {
            host: s.host.clone(),
            port: s.port,
            dbname: s.dbname.clone(),
            user: s.user.clone(),
            password: s.password.clone(),
            sslmode: SslMode::resolve(s.sslmode.as_deref(), &s.host)?,
            sslrootcert: s.sslrootcert.clone(),
            connect_timeout: Duration::from_secs(10),
            batch_size,
        })
    }

    /// The settings `config` and `secrets` give: `None` when Postgres is not
    /// configured (no `PG_DB_HOST`).
    pub fn from_config(config: &Config, secrets: &Secrets) -> Option<anyhow::Result<PgSettings>> {
        let pg = secrets.postgres.as_ref()?;
        Some(
            PgSettings::from_secrets(pg, config.postgres_batch_size)
                .with_context(|| format!("secrets file {}", config.secrets_file())),
        )
    }

    /// `user@host:port/dbname (sslmode)`, safe to log.
    pub fn describe(&self) -> String {
        format!(
            "{}@{}:{}/{} (sslmode {})",
            self.user,
            self.host,
            self.port,
            self.dbname,
            self.sslmode.as_str()
        )
    }
}

/// Connects (TLS per [`SslMode`]) and returns a client whose connection runs
/// on a background task.
pub async fn connect(settings: &PgSettings) -> Result<Client, SinkError> {
    Ok(open(settings).await?.client)
}

/// An open connection and what it takes to cancel its statement in flight.
struct Live {
    client: Client,
    /// The TLS connector of the connection (a cancel request is a connection
    /// of its own, encrypted like the first), `None` for plain TCP.
    tls: Option<postgres_native_tls::MakeTlsConnector>,
}

#[instrument(skip_all, fields(target = %settings.describe()), err(Display))]
async fn open(settings: &PgSettings) -> Result<Live, SinkError> {
    let mut cfg = tokio_postgres::Config::new();
    cfg.host(&settings.host)
        .port(settings.port)
        .dbname(&settings.dbname)
        .user(&settings.user)
        .application_name("hxlog")
        .connect_timeout(settings.connect_timeout)
        .keepalives(true)
        .keepalives_idle(Duration::from_secs(30));
    if !settings.password.expose().is_empty() {
        cfg.password(settings.password.expose());
    }
    let what = settings.describe();
    if settings.sslmode == SslMode::Disable {
        cfg.ssl_mode(tokio_postgres::config::SslMode::Disable);
        let (client, conn) = within(settings.connect_timeout, &what, cfg.connect(NoTls)).await?;
        spawn_connection(conn);
        Ok(Live { client, tls: None })
    } else {
        let connector = tls_connector(settings)?;
        cfg.ssl_mode(if settings.sslmode == SslMode::Prefer {
            tokio_postgres::config::SslMode::Prefer
        } else {
            tokio_postgres::config::SslMode::Require
        });
        let tls = postgres_native_tls::MakeTlsConnector::new(connector);
        let (client, conn) =
            within(settings.connect_timeout, &what, cfg.connect(tls.clone())).await?;
        spawn_connection(conn);
        Ok(Live {
            client,
            tls: Some(tls),
        })
    }
}

/// Asks the server to cancel the statement in flight on `live`'s connection
/// if dropped before [`CancelOnDrop::disarm`]. The forwarder drops a send that
/// outlived `send_timeout`; without this, a statement blocked on a lock would
/// hold its server connection (and, through a pooler, a pool slot) until the
/// lock is released, one more at every retry.
struct CancelOnDrop(
    Option<(
        tokio_postgres::CancelToken,
        Option<postgres_native_tls::MakeTlsConnector>,
    )>,
);

impl CancelOnDrop {
    fn new(live: &Live) -> Self {
        CancelOnDrop(Some((live.client.cancel_token(), live.tls.clone())))
    }

    fn disarm(mut self) {
        self.0 = None;
    }
}

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        let Some((token, tls)) = self.0.take() else {
            return;
        };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        runtime.spawn(async move {
            let sent = tokio::time::timeout(Duration::from_secs(10), async {
                match tls {
                    Some(tls) => token.cancel_query(tls).await,
                    None => token.cancel_query(NoTls).await,
                }
            })
            .await;
            match sent {
                Ok(Ok(())) => info!(sink = "postgres", "cancelled the abandoned statement"),
                Ok(Err(e)) => {
                    warn!(sink = "postgres", error = %e, "cannot cancel the abandoned statement")
                }
                Err(_) => warn!(
                    sink = "postgres",
                    "cannot cancel the abandoned statement: no answer"
                ),
            }
        });
    }
}

/// Runs a connection attempt (socket, TLS handshake, start-up) within
/// `limit`: tokio-postgres's own connect timeout covers only the socket, and a
/// server that stalls mid-handshake must not stall the forwarder.
async fn within<T>(
    limit: Duration,
    what: &str,
    attempt: impl std::future::Future<Output = Result<T, tokio_postgres::Error>>,
) -> Result<T, SinkError> {
    match tokio::time::timeout(limit, attempt).await {
        Ok(r) => r.map_err(|e| classify(&e, what)),
        Err(_) => Err(SinkError::transient(format!(
            "{what}: no answer within {limit:?} while connecting (TLS handshake or start-up)"
        ))),
    }
}

/// The native-tls connector for `settings.sslmode`, trusting every
/// certificate in `PG_DB_SSLROOTCERT` when it is set. As in libpq, a root
/// certificate file replaces the OS store, and makes `require` check the chain
/// (like `verify-ca`).
fn tls_connector(settings: &PgSettings) -> Result<native_tls::TlsConnector, SinkError> {
    let mut b = native_tls::TlsConnector::builder();
    let has_roots = settings.sslrootcert.is_some();
    match settings.sslmode {
        SslMode::Prefer => {
            b.danger_accept_invalid_certs(true)
                .danger_accept_invalid_hostnames(true);
        }
        SslMode::Require if !has_roots => {
            b.danger_accept_invalid_certs(true)
                .danger_accept_invalid_hostnames(true);
        }
        SslMode::Require | SslMode::VerifyCa => {
            b.danger_accept_invalid_hostnames(true);
        }
        SslMode::VerifyFull | SslMode::Disable => {}
    }
    if let Some(path) = &settings.sslrootcert {
        for cert in root_certificates(path)? {
            b.add_root_certificate(cert);
        }
        b.disable_built_in_roots(true);
    }
    b.build()
        .map_err(|e| SinkError::permanent(format!("cannot set up TLS: {e}")))
}

/// Every certificate of a PEM file (Azure's documentation has users
/// concatenate several roots into one).
fn root_certificates(path: &std::path::Path) -> Result<Vec<native_tls::Certificate>, SinkError> {
    let pem = std::fs::read(path).map_err(|e| {
        SinkError::permanent(format!(
            "cannot read PG_DB_SSLROOTCERT {}: {e}",
            path.display()
        ))
    })?;
    let certs = native_tls::Certificate::stack_from_pem(&pem).map_err(|e| {
        SinkError::permanent(format!(
            "PG_DB_SSLROOTCERT {} is not a PEM certificate file: {e}",
            path.display()
        ))
    })?;
    if certs.is_empty() {
        return Err(SinkError::permanent(format!(
            "PG_DB_SSLROOTCERT {} holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
            path.display()
        )));
    }
    Ok(certs)
}

fn spawn_connection<F>(conn: F)
where
    F: std::future::Future<Output = Result<(), tokio_postgres::Error>> + Send + 'static,
{
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            debug!(sink = "postgres", error = %e, "connection closed");
        }
    });
}

/// Applies pending migrations under an advisory lock. Returns the names applied.
pub async fn migrate(client: &mut Client) -> Result<Vec<&'static str>, tokio_postgres::Error> {
    let tx = client.transaction().await?;
    tx.execute_typed(
        "SELECT pg_advisory_xact_lock($1)",
        &[(&MIGRATION_LOCK, Type::INT8)],
    )
    .await?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS hxlog_migrations (\
         version integer PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())",
    )
    .await?;
    let done: Vec<i32> = tx
        .query_typed("SELECT version FROM hxlog_migrations", &[])
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let mut applied = vec![];
    for (version, name, sql) in MIGRATIONS {
        if done.contains(version) {
            continue;
        }
        tx.batch_execute(sql).await?;
        tx.execute_typed(
            "INSERT INTO hxlog_migrations (version, name) VALUES ($1, $2)",
            &[(version, Type::INT4), (name, Type::TEXT)],
        )
        .await?;
        applied.push(*name);
    }
    tx.commit().await?;
    Ok(applied)
}

const INSERT_SQL: &str = "INSERT INTO samples (sample_id, device_id, taken_at, source, \
     t1, t2, t3, t4, t1_quality, t2_quality, t3_quality, t4_quality, readings, \
     hot_effectiveness, cold_effectiveness, effectiveness, lmtd, \
     clock, taken_at_raw, boot_id, boottime_us) \
     SELECT u.id, u.dev, u.at, u.src, u.t1, u.t2, u.t3, u.t4, u.q1, u.q2, u.q3, u.q4, u.r::jsonb, \
     u.he, u.ce, u.e, u.l, u.clk, u.raw, u.boot, u.bt \
     FROM UNNEST($1::uuid[], $2::text[], $3::timestamptz[], $4::text[], \
     $5::float8[], $6::float8[], $7::float8[], $8::float8[], \
     $9::text[], $10::text[], $11::text[], $12::text[], $13::text[], \
     $14::float8[], $15::float8[], $16::float8[], $17::float8[], \
     $18::text[], $19::timestamptz[], $20::text[], $21::int8[]) \
     AS u(id, dev, at, src, t1, t2, t3, t4, q1, q2, q3, q4, r, he, ce, e, l, clk, raw, boot, bt) \
     ON CONFLICT (sample_id) DO UPDATE SET taken_at = excluded.taken_at, clock = excluded.clock, \
     taken_at_raw = excluded.taken_at_raw \
     WHERE samples.clock = 'unsynced' AND excluded.clock = 'corrected'";

/// The columns the COPY path fills, in [`COPY_TYPES`]' order (the same as
/// [`INSERT_SQL`]'s).
const COPY_SQL: &str = "COPY samples (sample_id, device_id, taken_at, source, \
     t1, t2, t3, t4, t1_quality, t2_quality, t3_quality, t4_quality, readings, \
     hot_effectiveness, cold_effectiveness, effectiveness, lmtd, \
     clock, taken_at_raw, boot_id, boottime_us) FROM STDIN (FORMAT binary)";

/// The binary COPY's column types, one per column of [`COPY_SQL`].
const COPY_TYPES: [Type; 21] = [
    Type::UUID,
    Type::TEXT,
    Type::TIMESTAMPTZ,
    Type::TEXT,
    Type::FLOAT8,
    Type::FLOAT8,
    Type::FLOAT8,
    Type::FLOAT8,
    Type::TEXT,
    Type::TEXT,
    Type::TEXT,
    Type::TEXT,
    Type::JSONB,
    Type::FLOAT8,
    Type::FLOAT8,
    Type::FLOAT8,
    Type::FLOAT8,
    Type::TEXT,
    Type::TIMESTAMPTZ,
    Type::TEXT,
    Type::INT8,
];

/// COPY data sent to the connection at a time: large enough that a batch
/// costs few wake-ups of the connection task and few writes, small enough that
/// Postgres starts on a batch while the rest is being encoded.
const COPY_CHUNK: usize = 64 * 1024;

/// The signature, flags and header extension length that open binary COPY data.
const COPY_HEADER: &[u8] = b"PGCOPY\n\xff\r\n\0\0\0\0\0\0\0\0\0";

/// Why a COPY did not commit.
enum CopyFailure {
    /// The database's answer, or the connection's.
    Db(tokio_postgres::Error),
    /// A value of the sample could not be encoded (nothing was committed).
    Encode(String),
}

impl From<tokio_postgres::Error> for CopyFailure {
    fn from(e: tokio_postgres::Error) -> Self {
        CopyFailure::Db(e)
    }
}

/// A COPY that did not commit: why, and whether its connection is still fit
/// for the next statement.
struct CopyFailed {
    /// The COPY's own failure, which decides what becomes of the batch.
    cause: CopyFailure,
    /// The `ROLLBACK` after it failed too: the connection is in an unknown
    /// state (perhaps still in the aborted transaction) and must be dropped.
    /// The COPY committed nothing all the same: it never reached a `COMMIT`
    /// that succeeded, and the server rolls back a connection that goes away.
    rollback: Option<tokio_postgres::Error>,
}

/// Writes `piece` with one binary `COPY … FROM STDIN` inside a transaction
/// and commits: all rows or none. On a failure the transaction is rolled back
/// and the failure is returned, with the `ROLLBACK`'s own error if that failed
/// too (then the connection is unusable).
///
/// Three round trips per batch: `BEGIN` pipelined with preparing the COPY,
/// the COPY's start, and its end pipelined with `COMMIT` (a `COMMIT` after a
/// failed COPY rolls back). COPY takes a prepared statement in
/// tokio-postgres, which names it (`sN`); it is closed as soon as the COPY has
/// started, so its Close goes out before `COMMIT` and, through PgBouncer in
/// transaction mode, never reaches another server connection.
///
/// The rows are framed here (the binary COPY format: a header, then per row
/// a field count and length-prefixed fields, then -1) rather than with
/// tokio-postgres's `BinaryCopyInWriter`, which hands the connection every
/// 4 KiB; here it gets [`COPY_CHUNK`]s.
async fn copy_rows(client: &Client, piece: &[Sample]) -> Result<u64, CopyFailed> {
    let (begun, statement) = tokio::join!(
        client.batch_execute("BEGIN"),
        client.prepare_typed(COPY_SQL, &[])
    );
    if let Err(e) = begun {
        return Err(CopyFailed {
            cause: CopyFailure::Db(e),
            rollback: None,
        });
    }
    let copied = async {
        let sink = client.copy_in::<_, Bytes>(&statement?).await?;
        let mut sink = std::pin::pin!(sink);
        let mut buf = BytesMut::with_capacity(COPY_CHUNK + 4096);
        buf.put_slice(COPY_HEADER);
        for s in piece {
            encode_row(s, &mut buf).map_err(|e| {
                CopyFailure::Encode(format!("sample {} cannot be encoded: {e}", s.id))
            })?;
            if buf.len() >= COPY_CHUNK {
                sink.send(buf.split().freeze()).await?;
            }
        }
        buf.put_i16(-1);
        sink.send(buf.split().freeze()).await?;
        let (rows, committed) = tokio::join!(sink.finish(), client.batch_execute("COMMIT"));
        let rows = rows?;
        committed?;
        Ok(rows)
    }
    .await;
    let cause = match copied {
        Ok(rows) => return Ok(rows),
        Err(cause) => cause,
    };
    // Ends the transaction if the COPY never reached its COMMIT (a warning,
    // no error, if it did). A closed connection has no transaction left.
    let rollback = match client.is_closed() {
        true => None,
        false => client.batch_execute("ROLLBACK").await.err(),
    };
    Err(CopyFailed { cause, rollback })
}

/// Appends one row of binary COPY data: the field count, then each field as
/// its length (-1 for NULL) and its binary value, in [`COPY_TYPES`]' order.
fn encode_row(
    s: &Sample,
    buf: &mut BytesMut,
) -> Result<(), Box<dyn std::error::Error + Sync + Send>> {
    let at = system_time(s.taken_at);
    let roles = STANDARD_ROLES.map(|role| s.reading(role));
    let t = roles.map(|r| r.and_then(|r| r.celsius));
    let q = roles.map(|r| r.map(|r| r.quality.as_str()));
    let raw = s.clock.taken_at_raw.map(system_time);
    let values: [&(dyn ToSql + Sync); COPY_TYPES.len()] = [
        &s.id,
        &s.device_id,
        &at,
        &s.source.as_str(),
        &t[0],
        &t[1],
        &t[2],
        &t[3],
        &q[0],
        &q[1],
        &q[2],
        &q[3],
        &ReadingsJsonb(s),
        &s.efficiency.hot_effectiveness,
        &s.efficiency.cold_effectiveness,
        &s.efficiency.effectiveness,
        &s.efficiency.lmtd,
        &s.clock.state.as_str(),
        &raw,
        &s.clock.boot_id,
        &s.clock.boottime_us,
    ];
    buf.put_i16(COPY_TYPES.len() as i16);
    for (value, ty) in values.into_iter().zip(&COPY_TYPES) {
        let at = buf.len();
        buf.put_i32(0);
        let len = match value.to_sql_checked(ty, buf)? {
            IsNull::Yes => -1,
            IsNull::No => i32::try_from(buf.len() - at - 4)?,
        };
        buf[at..at + 4].copy_from_slice(&len.to_be_bytes());
    }
    Ok(())
}

/// A sample's readings as binary `jsonb` (the version, 1, then the JSON
/// text of [`write_readings_json`]), written straight into the COPY data.
#[derive(Debug)]
struct ReadingsJsonb<'a>(&'a Sample);

impl ToSql for ReadingsJsonb<'_> {
    fn to_sql(
        &self,
        _: &Type,
        out: &mut BytesMut,
    ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        out.put_u8(1);
        write_readings_json(self.0, &mut out.writer())?;
        Ok(IsNull::No)
    }

    fn accepts(ty: &Type) -> bool {
        *ty == Type::JSONB
    }

    to_sql_checked!();
}

/// Column-wise buffers for one batch (UNNEST takes one array per column).
#[derive(Default)]
struct Columns {
    id: Vec<uuid::Uuid>,
    dev: Vec<String>,
    at: Vec<SystemTime>,
    src: Vec<&'static str>,
    t: [Vec<Option<f64>>; 4],
    q: [Vec<Option<&'static str>>; 4],
    readings: Vec<String>,
    he: Vec<Option<f64>>,
    ce: Vec<Option<f64>>,
    e: Vec<Option<f64>>,
    l: Vec<Option<f64>>,
    clock: Vec<&'static str>,
    raw: Vec<Option<SystemTime>>,
    boot: Vec<Option<String>>,
    bt: Vec<Option<i64>>,
}

impl Columns {
    fn from_batch(batch: &[Sample]) -> Columns {
        let mut c = Columns::default();
        for s in batch {
            c.id.push(s.id);
            c.dev.push(s.device_id.clone());
            c.at.push(system_time(s.taken_at));
            c.src.push(s.source.as_str());
            for (i, role) in STANDARD_ROLES.iter().enumerate() {
                let r = s.reading(role);
                c.t[i].push(r.and_then(|r| r.celsius));
                c.q[i].push(r.map(|r| r.quality.as_str()));
            }
            c.readings.push(readings_json(s));
            c.he.push(s.efficiency.hot_effectiveness);
            c.ce.push(s.efficiency.cold_effectiveness);
            c.e.push(s.efficiency.effectiveness);
            c.l.push(s.efficiency.lmtd);
            c.clock.push(s.clock.state.as_str());
            c.raw.push(s.clock.taken_at_raw.map(system_time));
            c.boot.push(s.clock.boot_id.clone());
            c.bt.push(s.clock.boottime_us);
        }
        c
    }
}

fn system_time(t: jiff::Timestamp) -> SystemTime {
    let d = Duration::new(
        t.as_second().unsigned_abs(),
        t.subsec_nanosecond().unsigned_abs(),
    );
    if t.as_second() >= 0 {
        SystemTime::UNIX_EPOCH + d
    } else {
        SystemTime::UNIX_EPOCH - d
    }
}

/// `{"T1": {"celsius": 61.25, "quality": "ok", "sensor_id": "28-…"}, …}` in role order.
fn readings_json(s: &Sample) -> String {
    let mut out = Vec::with_capacity(256);
    write_readings_json(s, &mut out).expect("writing to a Vec cannot fail");
    String::from_utf8(out).expect("serde_json writes UTF-8")
}

/// Writes [`readings_json`]'s JSON text (keys `celsius`, `quality`, then
/// `sensor_id` and `reason` when present; a non-finite or missing `celsius`
/// is `null`), without building a `serde_json::Value` on the way.
fn write_readings_json(s: &Sample, out: &mut impl std::io::Write) -> std::io::Result<()> {
    out.write_all(b"{")?;
    for (i, r) in s.readings.iter().enumerate() {
        if i > 0 {
            out.write_all(b",")?;
        }
        serde_json::to_writer(&mut *out, &r.role)?;
        out.write_all(b":{\"celsius\":")?;
        serde_json::to_writer(&mut *out, &r.celsius)?;
        out.write_all(b",\"quality\":")?;
        serde_json::to_writer(&mut *out, r.quality.as_str())?;
        if let Some(id) = &r.sensor_id {
            out.write_all(b",\"sensor_id\":")?;
            serde_json::to_writer(&mut *out, id)?;
        }
        if let Some(reason) = &r.reason {
            out.write_all(b",\"reason\":")?;
            serde_json::to_writer(&mut *out, reason.as_str())?;
        }
        out.write_all(b"}")?;
    }
    out.write_all(b"}")
}

/// The Postgres sink: holds one connection, reconnects after errors, migrates
/// on first connect.
pub struct PostgresSink {
    settings: PgSettings,
    conn: Option<Live>,
}

impl PostgresSink {
    /// A sink that connects lazily on the first send.
    pub fn new(settings: PgSettings) -> Self {
        PostgresSink {
            settings,
            conn: None,
        }
    }

    /// The sink `config` and `secrets` configure, `None` when they configure none.
    pub fn from_config(config: &Config, secrets: &Secrets) -> Option<anyhow::Result<Self>> {
        Some(PgSettings::from_config(config, secrets)?.map(PostgresSink::new))
    }

    async fn ensure_connected(&mut self) -> Result<(), SinkError> {
        if self.conn.as_ref().is_some_and(|c| !c.client.is_closed()) {
            return Ok(());
        }
        self.conn = None;
        let what = self.settings.describe();
        let mut live = open(&self.settings).await?;
        let applied = migrate(&mut live.client)
            .await
            .map_err(|e| classify(&e, &what))?;
        if !applied.is_empty() {
            info!(sink = "postgres", migrations = ?applied, "applied Postgres schema migrations");
        }
        info!(sink = "postgres", target = %what, "connected");
        self.conn = Some(live);
        Ok(())
    }
}

impl Sink for PostgresSink {
    fn name(&self) -> &'static str {
        SinkName::Postgres.as_str()
    }

    fn max_batch(&self) -> usize {
        self.settings.batch_size
    }

    /// Writes the batch with one binary COPY in a transaction, the fast path
    /// of a drain. When the database refuses that for the data (SQLSTATE class
    /// 22 or 23: usually 23505, a sample already stored, as after a resend
    /// following a crash, or a clock correction of a stored sample), the COPY
    /// is rolled back and the batch goes through `INSERT … ON CONFLICT` in one
    /// statement. When the database refuses that too, the batch is split in
    /// halves, and those again, until each refused sample is alone: every
    /// other sample is inserted, and only the refused ones are reported, each
    /// with its reason.
    async fn send(&mut self, batch: &[Sample]) -> Result<(), SinkError> {
        match self.copy(batch).await? {
            None => return Ok(()),
            Some(reason) => debug!(
                sink = "postgres",
                batch = batch.len(),
                %reason,
                "COPY refused, inserting the batch with ON CONFLICT"
            ),
        }
        let mut refused = vec![];
        let mut statements = 0;
        // Pieces still to insert, the next one last.
        let mut pieces = vec![batch];
        while let Some(piece) = pieces.pop() {
            statements += 1;
            match self.insert(piece).await? {
                None => {}
                Some(reason) if piece.len() == 1 => refused.push(Refusal {
                    id: piece[0].id,
                    reason,
                }),
                Some(_) => {
                    let (first, second) = piece.split_at(piece.len() / 2);
                    pieces.push(second);
                    pieces.push(first);
                }
            }
        }
        if refused.is_empty() {
            return Ok(());
        }
        warn!(
            sink = "postgres",
            refused = refused.len(),
            batch = batch.len(),
            statements,
            "the database refused samples for their data"
        );
        Err(SinkError::RejectedSamples { refused })
    }
}

impl PostgresSink {
    /// One binary COPY of `piece` in a transaction: `None` when it committed,
    /// the database's reason when it refused the data (SQLSTATE class 22 or
    /// 23; rolled back, nothing of `piece` was written), an error for
    /// everything else.
    async fn copy(&mut self, piece: &[Sample]) -> Result<Option<String>, SinkError> {
        self.ensure_connected().await?;
        // Held here while the COPY runs, as in `insert`.
        let live = self.conn.take().expect("connected above");
        let guard = CancelOnDrop::new(&live);
        let result = copy_rows(&live.client, piece).await;
        guard.disarm();
        let CopyFailed { cause, rollback } = match result {
            Ok(copied) => {
                debug!(
                    sink = "postgres",
                    batch = piece.len(),
                    copied,
                    "batch copied"
                );
                self.conn = Some(live);
                return Ok(None);
            }
            Err(failed) => failed,
        };
        // The COPY's own failure decides what becomes of the batch, whether or
        // not the ROLLBACK after it worked: a refused batch still goes to the
        // INSERT fallback, on a fresh connection if this one is dropped.
        let refused = match cause {
            CopyFailure::Encode(reason) => Ok(reason),
            CopyFailure::Db(e) => match e.code().filter(|c| is_data_error(c)) {
                Some(code) => Ok(format!("{} (SQLSTATE {})", error_text(&e), code.code())),
                None => Err(e),
            },
        };
        match (&rollback, &refused) {
            // Dropping `live` closes the connection; the server rolls back.
            (Some(e), _) => warn!(
                sink = "postgres",
                error = %error_text(e),
                "cannot roll back the failed COPY; dropping the connection"
            ),
            (None, Ok(_)) => self.conn = Some(live),
            // Start from a fresh connection next time.
            (None, Err(_)) => {}
        }
        refused
            .map(Some)
            .map_err(|e| classify(&e, &self.settings.describe()))
    }

    /// One `INSERT … FROM UNNEST` of `piece`: `None` when it committed, the
    /// database's reason when it refused the data (SQLSTATE class 22 or 23;
    /// nothing of `piece` was inserted then), an error for everything else.
    async fn insert(&mut self, piece: &[Sample]) -> Result<Option<String>, SinkError> {
        self.ensure_connected().await?;
        // Held here, not in `self`, while the statement runs: if the forwarder
        // drops this send (timeout, shutdown), the connection goes with it and
        // the guard cancels the statement on the server.
        let live = self.conn.take().expect("connected above");
        let guard = CancelOnDrop::new(&live);
        let c = Columns::from_batch(piece);
        // An unnamed statement (parse, bind and execute in one round trip), so
        // it works through PgBouncer in transaction mode, where a named
        // prepared statement may live on another server connection.
        let result = live
            .client
            .execute_typed(
                INSERT_SQL,
                &[
                    (&c.id, Type::UUID_ARRAY),
                    (&c.dev, Type::TEXT_ARRAY),
                    (&c.at, Type::TIMESTAMPTZ_ARRAY),
                    (&c.src, Type::TEXT_ARRAY),
                    (&c.t[0], Type::FLOAT8_ARRAY),
                    (&c.t[1], Type::FLOAT8_ARRAY),
                    (&c.t[2], Type::FLOAT8_ARRAY),
                    (&c.t[3], Type::FLOAT8_ARRAY),
                    (&c.q[0], Type::TEXT_ARRAY),
                    (&c.q[1], Type::TEXT_ARRAY),
                    (&c.q[2], Type::TEXT_ARRAY),
                    (&c.q[3], Type::TEXT_ARRAY),
                    (&c.readings, Type::TEXT_ARRAY),
                    (&c.he, Type::FLOAT8_ARRAY),
                    (&c.ce, Type::FLOAT8_ARRAY),
                    (&c.e, Type::FLOAT8_ARRAY),
                    (&c.l, Type::FLOAT8_ARRAY),
                    (&c.clock, Type::TEXT_ARRAY),
                    (&c.raw, Type::TIMESTAMPTZ_ARRAY),
                    (&c.boot, Type::TEXT_ARRAY),
                    (&c.bt, Type::INT8_ARRAY),
                ],
            )
            .await;
        guard.disarm();
        match result {
            Ok(inserted) => {
                debug!(
                    sink = "postgres",
                    batch = piece.len(),
                    inserted,
                    "batch committed"
                );
                self.conn = Some(live);
                Ok(None)
            }
            Err(e) => match e.code().filter(|c| is_data_error(c)) {
                Some(code) => {
                    // The statement failed on its own; the connection is fine.
                    self.conn = Some(live);
                    Ok(Some(format!(
                        "{} (SQLSTATE {})",
                        error_text(&e),
                        code.code()
                    )))
                }
                // Start from a fresh connection next time.
                None => Err(classify(&e, &self.settings.describe())),
            },
        }
    }
}

/// SQLSTATE classes 22 (data exception: an untranslatable character, a value
/// out of range) and 23 (integrity constraint violation: a `CHECK` a DBA
/// added): the database refuses the data itself, so resending it cannot help.
fn is_data_error(code: &SqlState) -> bool {
    matches!(&code.code()[..2], "22" | "23")
}

/// Classifies a tokio-postgres error: connection trouble (including a reset,
/// EOF or stall during the TLS handshake), shutdowns, serialization failures
/// and resource limits are transient; a certificate the server presented and
/// we do not trust, authentication, missing database, privileges and schema
/// mismatches are permanent. Decided from the error's types and SQLSTATE,
/// never from its text.
pub fn classify(e: &tokio_postgres::Error, target: &str) -> SinkError {
    let detail = error_text(e);
    let Some(code) = e.code() else {
        if certificate_rejected(e) {
            return SinkError::permanent(format!(
                "TLS to {target} failed: the server's certificate was not accepted: {detail}; check PG_DB_SSLMODE and PG_DB_SSLROOTCERT (verify-full checks chain and host name, verify-ca the chain, against PG_DB_SSLROOTCERT or else the OS store)"
            ));
        }
        return SinkError::transient(format!("{target}: {detail}"));
    };
    let class = &code.code()[..2];
    let transient = matches!(class, "08" | "53" | "57" | "40" | "55" | "58")
        || *code == SqlState::QUERY_CANCELED;
    if transient {
        return SinkError::transient(format!("{target}: {detail} (SQLSTATE {})", code.code()));
    }
    let hint = match class {
        "28" => "; check PG_DB_USER and PG_DB_PASSWORD in secrets.json",
        "3D" => "; check PG_DB_NAME in secrets.json, or create the database",
        "42" => {
            "; the database schema or privileges do not match: run `hxlog migrate` as a user allowed to create tables"
        }
        _ => "",
    };
    warn!(sink = "postgres", sqlstate = code.code(), "permanent error");
    SinkError::permanent(format!(
        "{target}: {detail} (SQLSTATE {}){hint}",
        code.code()
    ))
}

/// OpenSSL's library code for its TLS layer (`ERR_LIB_SSL` in `err.h`).
const ERR_LIB_SSL: i32 = 20;
/// OpenSSL's reason for a failed certificate check, chain or host name
/// (`SSL_R_CERTIFICATE_VERIFY_FAILED` in `sslerr.h`).
const SSL_R_CERTIFICATE_VERIFY_FAILED: i32 = 134;

/// True when the TLS handshake failed because the server's certificate did not
/// verify. Any other handshake failure (an I/O error such as a reset, an
/// unexpected EOF, a broken record) is not a verdict on the certificate.
fn certificate_rejected(e: &tokio_postgres::Error) -> bool {
    let mut src = std::error::Error::source(e);
    while let Some(inner) = src {
        if let Some(stack) = inner.downcast_ref::<openssl::error::ErrorStack>() {
            return stack.errors().iter().any(|e| {
                e.library_code() == ERR_LIB_SSL
                    && e.reason_code() == SSL_R_CERTIFICATE_VERIFY_FAILED
            });
        }
        src = inner.source();
    }
    false
}

fn error_text(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => db.message().to_string(),
        None => super::error_chain(e),
    }
}

/// Connects and applies the schema (`hxlog migrate`).
pub async fn migrate_now(settings: &PgSettings) -> anyhow::Result<Vec<&'static str>> {
    let mut client = connect(settings)
        .await
        .with_context(|| format!("connecting to {}", settings.describe()))?;
    migrate(&mut client)
        .await
        .map_err(|e| classify(&e, &settings.describe()))
        .context("applying the Postgres schema")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_detection() {
        for (host, local) in [
            ("127.0.0.1", true),
            ("127.1.2.3", true),
            ("::1", true),
            ("[::1]", true),
            ("localhost", true),
            ("/var/run/postgresql", true),
            ("10.0.0.5", false),
            ("db.example.com", false),
            ("localhost.example.com", false),
        ] {
            assert_eq!(is_local(host), local, "{host}");
        }
    }

    #[test]
    fn sslmode_table() {
        for (mode, host, expected) in [
            (None, "127.0.0.1", Some(SslMode::Prefer)),
            (None, "/run/postgresql", Some(SslMode::Prefer)),
            (None, "pg.example.org", Some(SslMode::VerifyFull)),
            (Some("disable"), "pg.example.org", Some(SslMode::Disable)),
            (Some("REQUIRE"), "127.0.0.1", Some(SslMode::Require)),
            (Some("verify-ca"), "x", Some(SslMode::VerifyCa)),
            (Some("verify-full"), "127.0.0.1", Some(SslMode::VerifyFull)),
            (Some("yes"), "x", None),
        ] {
            assert_eq!(
                SslMode::resolve(mode, host).ok(),
                expected,
                "{mode:?} {host}"
            );
        }
    }

    #[test]
    fn readings_json_is_the_json_of_the_readings() {
        let mut s = Sample::new(
            "hx-01",
            jiff::Timestamp::UNIX_EPOCH,
            crate::sample::Source::Mock,
            ["T1", "T2", "T3", "T4", "extra"]
                .into_iter()
                .map(|role| crate::sample::Reading::ok(role, None, 61.25))
                .collect(),
        );
        s.readings[0].celsius = Some(f64::NAN);
        s.readings[1].reason = Some("file \"w1_slave\" said: crc=00 NO\n".into());
        s.readings[2].sensor_id = Some("28-00000a1b2c3d".into());
        s.readings[3].celsius = None;
        let mut expected = serde_json::Map::new();
        for r in &s.readings {
            let mut o = serde_json::Map::new();
            o.insert("celsius".into(), r.celsius.into());
            o.insert("quality".into(), r.quality.as_str().into());
            if let Some(id) = &r.sensor_id {
                o.insert("sensor_id".into(), id.as_str().into());
            }
            if let Some(reason) = &r.reason {
                o.insert("reason".into(), reason.as_str().into());
            }
            expected.insert(r.role.clone(), o.into());
        }
        let written: serde_json::Value = serde_json::from_str(&readings_json(&s)).unwrap();
        assert_eq!(written, serde_json::Value::Object(expected));
        assert_eq!(written["T1"]["celsius"], serde_json::Value::Null);
    }

    #[test]
    fn settings_never_show_the_password() {
        let s = PgSettings {
            host: "h".into(),
            port: 5432,
            dbname: "d".into(),
            user: "u".into(),
            password: Secret::new("s3cr3t-pw"),
            sslmode: SslMode::Require,
            sslrootcert: None,
            connect_timeout: Duration::from_secs(1),
            batch_size: 10,
        };
        let shown = format!("{s:?} {}", s.describe());
        assert!(!shown.contains("s3cr3t-pw"), "{shown}");
    }
}

//! The read-only HTTP endpoints: the dashboard (`/`), `/metrics`,
//! `/healthz` and `/api/*`, served by `hxlog run` (config `http_listen`) and
//! `hxlog serve` (timer mode).
//!
//! Architecture invariant: HTTP is read-only and never on the sampling path.
//! Every request opens its own read-only outbox connection on the blocking
//! pool ([`Ctx::read`]); at most [`MAX_IN_FLIGHT`] requests run at once (the
//! rest get a 503 with `Retry-After: 1`), each bounded by [`REQUEST_TIMEOUT`];
//! an outbox scan stops at its request's timeout ([`Stop`]). The CSV download
//! streams its rows within [`api::CSV_TIMEOUT`]. At most [`MAX_CONNECTIONS`]
//! connections are open at once (the next waits in the listen backlog), and a
//! connection that sends no request head within [`HEADER_READ_TIMEOUT`] is
//! closed, idle keep-alive ones too; none lives past [`MAX_CONNECTION_AGE`]
//! (a client that stops reading an answer). Nothing here holds a lock the
//! sampler or a forwarder waits on. It must not write to the outbox or show a
//! secret (it never sees one).

use std::cell::Cell;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use jiff::Timestamp;
use tokio::net::TcpListener;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::monitor::{self, Verdict};
use crate::outbox::Outbox;

mod api;
mod dashboard;
mod health;
mod metrics;

/// Requests served at once; more get a 503 with `Retry-After: 1`.
pub const MAX_IN_FLIGHT: usize = 8;
/// Longest a request may take before it is answered with a 503.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections open at once; the next waits in the listen backlog.
pub const MAX_CONNECTIONS: usize = 64;
/// Longest a connection may take to send a request head, also after an
/// answer on a keep-alive connection; then it is closed.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest a connection lives: then it finishes its answer (within
/// [`HEADER_READ_TIMEOUT`]) and is closed. Above [`api::CSV_TIMEOUT`].
pub const MAX_CONNECTION_AGE: Duration = Duration::from_secs(120);
/// Longest `serve` waits at shutdown for open connections to finish.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// What the endpoints need to know, resolved by the command that serves them.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The outbox file (opened read-only per request).
    pub outbox: PathBuf,
    /// The configured sampling interval.
    pub interval: Duration,
    /// Timer mode (`serve`): judge the interval from the recent samples.
    pub pace_from_samples: bool,
    /// The roles shown, in order.
    pub roles: Vec<String>,
    /// The configured sinks.
    pub sinks: Vec<String>,
    /// This logger's name.
    pub device_id: String,
    /// When this process started: `run` is judged from then until its first
    /// sample. Taken before the sampler starts, so that no sample of this
    /// process is older.
    pub started: Timestamp,
}

/// Shared state of the endpoints.
#[derive(Debug)]
pub struct Ctx {
    settings: Settings,
    started: Timestamp,
    tally: Mutex<metrics::Tally>,
    /// Outbox reads on the blocking pool, at most [`MAX_IN_FLIGHT`] at once;
    /// a read keeps its permit until it ends, also past its request's
    /// timeout (a scan then stops at its next row).
    readers: Arc<Semaphore>,
    /// [`REQUEST_TIMEOUT`], shorter in tests.
    timeout: Duration,
    /// [`api::CSV_TIMEOUT`], shorter in tests.
    csv_timeout: Duration,
    /// Rows read by outbox scans so far (see [`Stop::row`]).
    scanned: AtomicU64,
}

/// When an outbox scan gives up: its request's timeout fired (the handler
/// was dropped, see [`CancelOnDrop`]) or its deadline passed. A scan calls
/// [`Stop::row`] before each row.
#[derive(Debug)]
pub struct Stop {
    cancelled: Arc<AtomicBool>,
    deadline: Instant,
    rows: Cell<u64>,
}

/// What a scan that gave up returns (inside its `anyhow::Error`).
#[derive(Debug, thiserror::Error)]
#[error("the request timed out; its outbox scan stopped after {rows} rows")]
pub struct TimedOut {
    /// Rows read before it stopped.
    pub rows: u64,
}

impl Stop {
    /// A scan that gives up at `deadline` or when cancelled.
    pub fn new(deadline: Instant) -> Self {
        Stop {
            cancelled: Arc::new(AtomicBool::new(false)),
            deadline,
            rows: Cell::new(0),
        }
    }

    /// Cancels the scan when dropped: held by the request's future, dropped
    /// when its timeout fires or its client goes away.
    pub fn cancel_on_drop(&self) -> CancelOnDrop {
        CancelOnDrop(self.cancelled.clone())
    }

    /// Counts the next row; [`TimedOut`] once the scan must give up (the
    /// clock is read every 64 rows).
    pub fn row(&self) -> anyhow::Result<()> {
        let n = self.rows.get();
        if self.cancelled.load(Ordering::Relaxed)
            || (n.is_multiple_of(64) && Instant::now() >= self.deadline)
        {
            return Err(TimedOut { rows: n }.into());
        }
        self.rows.set(n + 1);
        Ok(())
    }

    /// Rows counted so far.
    pub fn rows(&self) -> u64 {
        self.rows.get()
    }
}

/// Cancels a [`Stop`] when dropped.
#[derive(Debug)]
pub struct CancelOnDrop(Arc<AtomicBool>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// An answer other than 200: a status and a one-line message (`text/plain`).
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    /// A 400 for a bad request parameter.
    pub fn bad(message: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
        }
    }

    fn unavailable(message: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            message: message.into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, format!("{}\n", self.message)).into_response()
    }
}

impl Ctx {
    /// The state for `settings`; counters start now.
    pub fn new(settings: Settings) -> Self {
        Ctx {
            started: settings.started,
            settings,
            tally: Mutex::new(metrics::Tally::default()),
            readers: Arc::new(Semaphore::new(MAX_IN_FLIGHT)),
            timeout: REQUEST_TIMEOUT,
            csv_timeout: api::CSV_TIMEOUT,
            scanned: AtomicU64::new(0),
        }
    }

    /// The same with other timeouts for a request and a CSV download.
    #[cfg(test)]
    fn with_timeouts(self, timeout: Duration, csv_timeout: Duration) -> Self {
        Ctx {
            timeout,
            csv_timeout,
            ..self
        }
    }

    /// Runs `f` on the blocking pool with a fresh read-only outbox connection.
    async fn read<R: Send + 'static>(
        self: &Arc<Self>,
        f: impl FnOnce(&Ctx, &Outbox) -> anyhow::Result<R> + Send + 'static,
    ) -> Result<R, ApiError> {
        self.read_scan(move |ctx, o, _| f(ctx, o)).await
    }

    /// [`Ctx::read`] for a scan: `f` calls [`Stop::row`] per row, and gives
    /// up when this request times out.
    async fn read_scan<R: Send + 'static>(
        self: &Arc<Self>,
        f: impl FnOnce(&Ctx, &Outbox, &Stop) -> anyhow::Result<R> + Send + 'static,
    ) -> Result<R, ApiError> {
        let stop = Stop::new(Instant::now() + self.timeout);
        let _cancel = stop.cancel_on_drop();
        self.spawn_read(stop, f)?
            .await
            .map_err(|e| ApiError::unavailable(format!("request failed: {e}")))?
            .map_err(read_error)
    }

    /// Spawns `f` on the blocking pool with a reader permit (503 when none is
    /// free) and a fresh read-only outbox connection; it gives up at `stop`.
    fn spawn_read<R: Send + 'static>(
        self: &Arc<Self>,
        stop: Stop,
        f: impl FnOnce(&Ctx, &Outbox, &Stop) -> anyhow::Result<R> + Send + 'static,
    ) -> Result<JoinHandle<anyhow::Result<R>>, ApiError> {
        let permit = self.reader_permit()?;
        let ctx = self.clone();
        Ok(tokio::task::spawn_blocking(move || {
            let _permit = permit;
            let outbox = Outbox::open_read_only(&ctx.settings.outbox)?;
            let result = f(&ctx, &outbox, &stop);
            ctx.scanned.fetch_add(stop.rows(), Ordering::Relaxed);
            if let Err(e) = &result
                && let Some(t) = e.downcast_ref::<TimedOut>()
            {
                debug!(
                    rows = t.rows,
                    "an outbox scan stopped at its request's timeout"
                );
            }
            result
        }))
    }

    fn reader_permit(&self) -> Result<OwnedSemaphorePermit, ApiError> {
        self.readers.clone().try_acquire_owned().map_err(|_| {
            ApiError::unavailable("too many outbox reads in flight; retry in a second")
        })
    }

    /// The health verdict from `outbox` (see [`crate::monitor`]).
    fn verdict(&self, outbox: &Outbox) -> anyhow::Result<Verdict> {
        let recent = outbox.recent_times(11)?;
        let interval = monitor::interval_for(
            self.settings.interval,
            &recent,
            self.settings.pace_from_samples,
        );
        // `run` samples at start: judge from then until its first sample.
        let started = (!self.settings.pace_from_samples).then_some(self.started);
        Ok(monitor::judge(
            Timestamp::now(),
            interval,
            recent.first().copied(),
            started,
            monitor::outbox_writable(&self.settings.outbox),
        ))
    }
}

/// The answer for a read that failed.
fn read_error(e: anyhow::Error) -> ApiError {
    if e.is::<TimedOut>() {
        ApiError::unavailable("request timed out")
    } else {
        ApiError::unavailable(format!("outbox unavailable: {e:#}"))
    }
}

/// The routes, with the in-flight limit and the timeout.
pub fn router(ctx: Arc<Ctx>) -> Router {
    let gate = Gate {
        permits: Arc::new(Semaphore::new(MAX_IN_FLIGHT)),
        timeout: ctx.timeout,
    };
    Router::new()
        .route("/", get(dashboard::page))
        .route("/assets/{name}", get(dashboard::asset))
        .route("/healthz", get(health::healthz))
        .route("/metrics", get(metrics::metrics))
        .route("/api/samples", get(api::samples))
        .route("/api/current", get(api::current))
        .route("/api/export.csv", get(api::export_csv))
        .with_state(ctx)
        .layer(middleware::from_fn_with_state(gate, limit))
}

/// The in-flight limit and the timeout.
#[derive(Debug, Clone)]
struct Gate {
    permits: Arc<Semaphore>,
    timeout: Duration,
}

/// At most [`MAX_IN_FLIGHT`] requests at once, each within [`REQUEST_TIMEOUT`].
async fn limit(State(gate): State<Gate>, req: Request, next: Next) -> Response {
    let Ok(_permit) = gate.permits.try_acquire() else {
        let mut r = (
            StatusCode::SERVICE_UNAVAILABLE,
            "too many requests in flight; retry in a second\n",
        )
            .into_response();
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        return r;
    };
    match tokio::time::timeout(gate.timeout, next.run(req)).await {
        Ok(r) => r,
        Err(_) => ApiError::unavailable("request timed out").into_response(),
    }
}

/// Binds `addr`, warning when it is not loopback. The error says what to do
/// when the port is taken.
pub async fn bind(addr: SocketAddr) -> anyhow::Result<TcpListener> {
    let listener = TcpListener::bind(addr).await.with_context(|| {
        format!(
            "cannot listen on {addr} for the dashboard; another process (hxlog run or hxlog serve?) may use the port: stop it or set http_listen to a free address"
        )
    })?;
    if !addr.ip().is_loopback() {
        warn!(
            %addr,
            "http_listen is not a loopback address: the dashboard, /metrics and /api are reachable from the network without authentication (they are read-only and show no secret); put a firewall or an authenticating proxy in front, or listen on 127.0.0.1"
        );
    }
    Ok(listener)
}

/// Serves on `listener` until `shutdown`: at most [`MAX_CONNECTIONS`] at
/// once, each closed when it sends no request head within
/// [`HEADER_READ_TIMEOUT`] (HTTP/1.1 only, as before).
pub async fn serve(
    listener: TcpListener,
    settings: Settings,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let addr = listener.local_addr()?;
    info!(%addr, "serving the dashboard, /metrics, /healthz and /api (read-only)");
    let limits = Limits {
        open: Arc::new(Semaphore::new(MAX_CONNECTIONS)),
        max_age: MAX_CONNECTION_AGE,
    };
    serve_app(
        listener,
        router(Arc::new(Ctx::new(settings))),
        limits,
        shutdown,
    )
    .await
}

/// How [`serve_app`] bounds its connections.
#[derive(Debug, Clone)]
struct Limits {
    /// A permit per open connection ([`MAX_CONNECTIONS`]).
    open: Arc<Semaphore>,
    /// [`MAX_CONNECTION_AGE`], shorter in tests.
    max_age: Duration,
}

/// Serves `app` on `listener` until `shutdown` (see [`serve`]).
async fn serve_app(
    listener: TcpListener,
    app: Router,
    limits: Limits,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let open = limits.open.clone();
    let size = open.available_permits() as u32;
    loop {
        let permit = tokio::select! {
            _ = shutdown.cancelled() => break,
            p = open.clone().acquire_owned() => p.context("the connection limit closed")?,
        };
        let stream = tokio::select! {
            _ = shutdown.cancelled() => break,
            r = listener.accept() => match r {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // EMFILE and the like: wait, as axum::serve does
                    warn!(error = %e, "cannot accept a dashboard connection");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            },
        };
        tokio::spawn(connection(
            stream,
            app.clone(),
            permit,
            limits.max_age,
            shutdown.clone(),
        ));
    }
    // every open connection holds a permit until it ends
    let drained = tokio::time::timeout(SHUTDOWN_GRACE, open.acquire_many(size)).await;
    if drained.is_err() {
        debug!("dashboard connections still open at shutdown");
    }
    Ok(())
}

/// Serves one connection, holding `permit` until it ends, at most `max_age`
/// and then [`HEADER_READ_TIMEOUT`] to finish its answer.
async fn connection(
    stream: tokio::net::TcpStream,
    app: Router,
    permit: OwnedSemaphorePermit,
    max_age: Duration,
    shutdown: CancellationToken,
) {
    let _permit = permit;
    let mut conn = pin!(
        hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(HEADER_READ_TIMEOUT)
            .serve_connection(TokioIo::new(stream), TowerToHyperService::new(app))
    );
    tokio::select! {
        r = conn.as_mut() => {
            if let Err(e) = r {
                debug!(error = %e, "dashboard connection ended");
            }
            return;
        }
        _ = shutdown.cancelled() => {}
        _ = tokio::time::sleep(max_age) => {}
    }
    // shutdown or too old: finish the answer in flight, then close
    conn.as_mut().graceful_shutdown();
    match tokio::time::timeout(HEADER_READ_TIMEOUT, conn).await {
        Ok(Err(e)) => debug!(error = %e, "dashboard connection ended"),
        Ok(Ok(())) => {}
        Err(_) => debug!("closed a dashboard connection that did not finish its answer"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Synchronous;
    use crate::sample::{Sample, Source};
    use crate::sensors::mock::MockExchanger;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    const ROWS: u64 = 50_000;

    /// An outbox of [`ROWS`] mock samples, 10 s apart, ending now.
    fn outbox(dir: &std::path::Path) -> Settings {
        let path = dir.join("outbox.sqlite");
        let mut o = Outbox::open(&path, Synchronous::Normal).unwrap();
        let roles: Vec<String> = ["T1", "T2", "T3", "T4"].map(String::from).into();
        let mut mock = MockExchanger::new(roles.clone(), 1);
        let first = Timestamp::now() - jiff::SignedDuration::from_secs(10 * ROWS as i64);
        let samples: Vec<Sample> = (0..ROWS)
            .map(|i| {
                let t = first + jiff::SignedDuration::from_secs(10 * i as i64);
                Sample::new("hx-test", t, Source::Mock, mock.read_at(t))
            })
            .collect();
        o.insert_all(&samples).unwrap();
        Settings {
            outbox: path,
            interval: Duration::from_secs(10),
            pace_from_samples: true,
            roles,
            sinks: vec![],
            device_id: "hx-test".into(),
            started: Timestamp::now(),
        }
    }

    /// `GET path` over a real connection: the raw answer, also when the
    /// server cuts it.
    async fn get(addr: SocketAddr, path: &str) -> Vec<u8> {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(
            format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .unwrap();
        let mut raw = vec![];
        let _ = s.read_to_end(&mut raw).await;
        raw
    }

    async fn wait_until(mut f: impl FnMut() -> bool) -> bool {
        let end = Instant::now() + Duration::from_secs(120);
        while Instant::now() < end {
            if f() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        f()
    }

    async fn serving(
        ctx: &Arc<Ctx>,
    ) -> (
        SocketAddr,
        CancellationToken,
        JoinHandle<anyhow::Result<()>>,
    ) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shutdown = CancellationToken::new();
        let limits = Limits {
            open: Arc::new(Semaphore::new(MAX_CONNECTIONS)),
            max_age: MAX_CONNECTION_AGE,
        };
        let server = tokio::spawn(serve_app(
            listener,
            router(ctx.clone()),
            limits,
            shutdown.clone(),
        ));
        (addr, shutdown, server)
    }

    /// A download past its deadline must not look complete: hyper cuts the
    /// connection without the final chunk.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_csv_download_past_its_deadline_is_cut_without_its_last_chunk() {
        let dir = tempfile::tempdir().unwrap();
        let settings = outbox(dir.path());
        let ctx = Arc::new(
            Ctx::new(settings.clone())
                .with_timeouts(Duration::from_secs(3600), Duration::from_millis(1)),
        );
        let (addr, shutdown, server) = serving(&ctx).await;
        let raw =
            String::from_utf8_lossy(&get(addr, "/api/export.csv?since=30d").await).into_owned();
        // cut before the head went out or after it, never with the final chunk
        assert!(raw.is_empty() || raw.starts_with("HTTP/1.1 200"), "{raw}");
        assert!(
            !raw.ends_with("0\r\n\r\n"),
            "a cut download ends like a whole one: {raw}"
        );
        let whole = Arc::new(Ctx::new(settings));
        let (addr2, shutdown2, server2) = serving(&whole).await;
        let raw = get(addr2, "/api/export.csv?since=30d").await;
        assert!(
            raw.ends_with(b"\r\n0\r\n\r\n"),
            "the whole download ends with its last chunk"
        );
        for (s, t) in [(shutdown, server), (shutdown2, server2)] {
            s.cancel();
            t.await.unwrap().unwrap();
        }
    }

    #[test]
    fn a_scan_past_its_deadline_stops_with_a_timeout() {
        let dir = tempfile::tempdir().unwrap();
        let s = outbox(dir.path());
        let o = Outbox::open_read_only(&s.outbox).unwrap();
        let (since, until) = (
            Timestamp::now() - jiff::SignedDuration::from_hours(24 * 30),
            Timestamp::now(),
        );
        let stop = Stop::new(Instant::now());
        let e = api::downsample(&o, &s.roles, since, until, ROWS, 1000, &stop).unwrap_err();
        assert_eq!(
            e.downcast_ref::<TimedOut>().map(|t| t.rows),
            Some(0),
            "{e:#}"
        );
        let stop = Stop::new(Instant::now() + Duration::from_secs(3600));
        drop(stop.cancel_on_drop());
        assert!(api::downsample(&o, &s.roles, since, until, ROWS, 1000, &stop).is_err());
        let stop = Stop::new(Instant::now() + Duration::from_secs(3600));
        api::downsample(&o, &s.roles, since, until, ROWS, 1000, &stop).unwrap();
        assert_eq!(stop.rows(), ROWS);
    }

    /// The handler's timeout reaches the scan on the blocking pool: it stops
    /// short of the window's rows and gives its reader permit back.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_timed_out_request_stops_its_outbox_scan() {
        let dir = tempfile::tempdir().unwrap();
        let tiny = Duration::from_millis(1);
        let ctx = Arc::new(Ctx::new(outbox(dir.path())).with_timeouts(tiny, tiny));
        let (addr, shutdown, server) = serving(&ctx).await;
        for path in [
            "/api/samples?since=30d&max_points=5000",
            "/api/export.csv?since=30d",
        ] {
            let before = ctx.scanned.load(Ordering::Relaxed);
            let raw = String::from_utf8_lossy(&get(addr, path).await).into_owned();
            let timed_out = raw.starts_with("HTTP/1.1 503") && raw.contains("request timed out");
            // or the CSV's head went out: its body is cut, without the last chunk
            let cut = raw.starts_with("HTTP/1.1 200") && !raw.ends_with("\r\n0\r\n\r\n");
            assert!(timed_out || cut, "{path}: {}", &raw[..raw.len().min(300)]);
            assert!(
                wait_until(|| ctx.readers.available_permits() == MAX_IN_FLIGHT).await,
                "{path}: the scan kept its reader permit"
            );
            let scanned = ctx.scanned.load(Ordering::Relaxed) - before;
            assert!(
                scanned < ROWS,
                "{path}: the scan read all {scanned} rows after the timeout"
            );
        }
        shutdown.cancel();
        server.await.unwrap().unwrap();
    }

    /// A client that asks for a large CSV and never reads it holds its
    /// connection (and its reader permit) no longer than the connection's
    /// age limit.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_client_that_stops_reading_loses_its_connection_at_the_age_limit() {
        let dir = tempfile::tempdir().unwrap();
        let ctx = Arc::new(Ctx::new(outbox(dir.path())));
        let open = Arc::new(Semaphore::new(4));
        let limits = Limits {
            open: open.clone(),
            max_age: Duration::from_millis(300),
        };
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shutdown = CancellationToken::new();
        let server = tokio::spawn(serve_app(
            listener,
            router(ctx.clone()),
            limits,
            shutdown.clone(),
        ));
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET /api/export.csv?since=30d HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        // the answer (10 MB) fills the socket buffers: hyper waits to write.
        // Of 4 permits the accept loop holds one for the next connection.
        assert!(wait_until(|| open.available_permits() == 2).await);
        assert!(
            wait_until(|| open.available_permits() == 3
                && ctx.readers.available_permits() == MAX_IN_FLIGHT)
            .await,
            "a client that reads nothing kept its connection ({} of 3 connections, {} of {MAX_IN_FLIGHT} readers free)",
            open.available_permits(),
            ctx.readers.available_permits()
        );
        drop(s);
        shutdown.cancel();
        server.await.unwrap().unwrap();
    }
}

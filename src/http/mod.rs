//! The read-only HTTP endpoints: the dashboard (`/`), `/metrics`,
//! `/healthz` and `/api/*`, served by `hxlog run` (config `http_listen`) and
//! `hxlog serve` (timer mode).
//!
//! Architecture invariant: HTTP is read-only and never on the sampling path.
//! Every request opens its own read-only outbox connection on the blocking
//! pool ([`Ctx::read`]); at most [`MAX_IN_FLIGHT`] requests run at once (the
//! rest get a 503 with `Retry-After: 1`), each bounded by [`REQUEST_TIMEOUT`].
//! Nothing here holds a lock the sampler or a forwarder waits on. It must not
//! write to the outbox or show a secret (it never sees one).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use jiff::Timestamp;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

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
    /// Outbox reads on the blocking pool, at most [`MAX_IN_FLIGHT`] at once
    /// even when timed-out requests leave their read running.
    readers: Arc<Semaphore>,
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
        }
    }

    /// Runs `f` on the blocking pool with a fresh read-only outbox connection.
    async fn read<R: Send + 'static>(
        self: &Arc<Self>,
        f: impl FnOnce(&Ctx, &Outbox) -> anyhow::Result<R> + Send + 'static,
    ) -> Result<R, ApiError> {
        let ctx = self.clone();
        let Ok(permit) = self.readers.clone().try_acquire_owned() else {
            return Err(ApiError::unavailable(
                "too many outbox reads in flight; retry in a second",
            ));
        };
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            let outbox = Outbox::open_read_only(&ctx.settings.outbox)?;
            f(&ctx, &outbox)
        })
        .await
        .map_err(|e| ApiError::unavailable(format!("request failed: {e}")))?
        .map_err(|e| ApiError::unavailable(format!("outbox unavailable: {e:#}")))
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

/// The routes, with the in-flight limit and the timeout.
pub fn router(ctx: Arc<Ctx>) -> Router {
    let gate = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
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

/// At most [`MAX_IN_FLIGHT`] requests at once, each within [`REQUEST_TIMEOUT`].
async fn limit(State(gate): State<Arc<Semaphore>>, req: Request, next: Next) -> Response {
    let Ok(_permit) = gate.try_acquire() else {
        let mut r = (
            StatusCode::SERVICE_UNAVAILABLE,
            "too many requests in flight; retry in a second\n",
        )
            .into_response();
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        return r;
    };
    match tokio::time::timeout(REQUEST_TIMEOUT, next.run(req)).await {
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

/// Serves on `listener` until `shutdown`.
pub async fn serve(
    listener: TcpListener,
    settings: Settings,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let addr = listener.local_addr()?;
    info!(%addr, "serving the dashboard, /metrics, /healthz and /api (read-only)");
    let app = router(Arc::new(Ctx::new(settings)));
    axum::serve(listener, app)
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
        .context("the HTTP server failed")
}

//! An in-process fake Azure Web PubSub service for tests.
//!
//! This module owns a small axum server on `127.0.0.1:<random port>` that checks
//! every publish request the way the service does (method, path, api-version,
//! content type, the HS256 bearer token and its audience and expiry, the body
//! against the `hxlog.samples` schema), records what it accepted, and can inject
//! faults (503, 429 with `Retry-After`, 401, 400, 413, slow answers, refused
//! connections). It must not depend on hxlog's own types: it checks the JSON the
//! way a subscriber would see it. The end-to-end test binary includes it with
//! `mod`; no unit test in `src/` drives it. It has no `mod` items.
//!
//! Deviations from the real service, on purpose: it serves one hub only (a
//! request for another hub is answered 400, so a misconfigured hub fails loudly),
//! and any check it makes fails the request rather than being ignored.
#![allow(dead_code)]

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::{Notify, oneshot};
use tokio::task::JoinHandle;

/// The only `api-version` the fake accepts.
pub const API_VERSION: &str = "2024-12-01";

/// The service's limit on a message body.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// A fault to inject into one request; queued with [`TestServer::inject`].
/// A fault applies to the next request that passes the service's checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// Answer 503 Service Unavailable.
    Unavailable,
    /// Answer 429 Too Many Requests with `Retry-After: <secs>`.
    TooManyRequests {
        /// The `Retry-After` value in seconds.
        retry_after_secs: u64,
    },
    /// Answer 503 Service Unavailable with this header (`Retry-After`,
    /// `retry-after-ms`) set to this value.
    UnavailableRetryAfter {
        /// The header's name.
        header: &'static str,
        /// Its value, as sent.
        value: String,
    },
    /// Answer 401 Unauthorized, as for a bad key.
    Unauthorized,
    /// Answer 400 Bad Request, as for a message the service refuses.
    BadRequest,
    /// Answer 413 Payload Too Large.
    PayloadTooLarge,
    /// Wait this long, then handle the request normally (accepting it).
    Delay(Duration),
}

/// One message the fake accepted.
#[derive(Debug, Clone, PartialEq)]
pub struct Accepted {
    /// The group it was sent to, `None` for the whole hub.
    pub group: Option<String>,
    /// The message body.
    pub body: Value,
}

#[derive(Debug, Default)]
struct Recorded {
    requests: usize,
    request_times: Vec<Instant>,
    faults: VecDeque<Fault>,
    accepted: Vec<Accepted>,
    tokens: Vec<String>,
    refusals: Vec<(u16, String)>,
}

#[derive(Debug)]
struct Shared {
    hub: String,
    key: String,
    recorded: Mutex<Recorded>,
    changed: Notify,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Recorded> {
        // A panicking test thread must not hide what was recorded.
        self.recorded.lock().unwrap_or_else(|e| e.into_inner())
    }
}

struct Running {
    shutdown: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

/// A running fake Web PubSub service. Dropping it stops the server.
pub struct TestServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    running: Mutex<Option<Running>>,
}

/// Starts a fake service for `hub` that accepts tokens signed with `key`.
pub async fn start(hub: &str, key: &str) -> TestServer {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind the fake web pubsub server");
    let addr = listener.local_addr().expect("local address");
    let shared = Arc::new(Shared {
        hub: hub.to_string(),
        key: key.to_string(),
        recorded: Mutex::new(Recorded::default()),
        changed: Notify::new(),
    });
    let running = serve(listener, shared.clone());
    TestServer {
        addr,
        shared,
        running: Mutex::new(Some(running)),
    }
}

fn serve(listener: TcpListener, shared: Arc<Shared>) -> Running {
    let app = Router::new().fallback(handle).with_state(shared);
    let (shutdown, signal) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = signal.await;
            })
            .await;
    });
    Running { shutdown, task }
}

impl TestServer {
    /// The port the server listens on (kept across [`TestServer::stop`] and [`TestServer::restart`]).
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// `Endpoint=http://127.0.0.1;Port=<port>;AccessKey=<key>;Version=1.0;`
    pub fn connection_string(&self) -> String {
        format!(
            "Endpoint=http://127.0.0.1;Port={};AccessKey={};Version=1.0;",
            self.port(),
            self.shared.key
        )
    }

    /// Queues `fault` for each of the next `times` requests that pass the checks.
    pub fn inject(&self, fault: Fault, times: usize) {
        let mut r = self.shared.lock();
        r.faults.extend(std::iter::repeat_n(fault, times));
    }

    /// Drops every queued fault.
    pub fn clear_faults(&self) {
        self.shared.lock().faults.clear();
    }

    /// How many requests reached the server (accepted or not).
    pub fn request_count(&self) -> usize {
        self.shared.lock().requests
    }

    /// When each request reached the server (accepted or not), in order.
    pub fn request_times(&self) -> Vec<Instant> {
        self.shared.lock().request_times.clone()
    }

    /// The accepted message bodies, in the order accepted.
    pub fn accepted_messages(&self) -> Vec<Value> {
        self.shared
            .lock()
            .accepted
            .iter()
            .map(|a| a.body.clone())
            .collect()
    }

    /// The accepted messages with their target group, in the order accepted.
    pub fn accepted(&self) -> Vec<Accepted> {
        self.shared.lock().accepted.clone()
    }

    /// The `id` of every accepted sample, in the order accepted (duplicates kept).
    pub fn accepted_ids(&self) -> Vec<String> {
        ids_of(&self.shared.lock().accepted)
    }

    /// Every bearer token presented, valid or not (for tests that check no
    /// token leaks into logs or errors).
    pub fn tokens_seen(&self) -> Vec<String> {
        self.shared.lock().tokens.clone()
    }

    /// The status and error message of every refused request, in order.
    pub fn refusals(&self) -> Vec<(u16, String)> {
        self.shared.lock().refusals.clone()
    }

    /// Waits until at least `count` sample ids have been accepted and returns
    /// them; panics when fewer were accepted by `timeout`, so a caller cannot
    /// mistake "nothing arrived" for success.
    pub async fn wait_for_ids(&self, count: usize, timeout: Duration) -> Vec<String> {
        let timeout = crate::harness::scaled(timeout);
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.shared.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let ids = self.accepted_ids();
            if ids.len() >= count {
                return ids;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                let ids = self.accepted_ids();
                assert!(
                    ids.len() >= count,
                    "timed out after {timeout:?} with {} of {count} ids accepted",
                    ids.len()
                );
                return ids;
            }
        }
    }

    /// Stops listening and closes every connection: clients now get
    /// "connection refused". Waits (up to 5 s, then aborts) for in-flight
    /// requests to finish. Does nothing if already stopped.
    pub async fn stop(&self) {
        let running = self
            .running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(Running { shutdown, mut task }) = running {
            let _ = shutdown.send(());
            if tokio::time::timeout(crate::harness::scaled(Duration::from_secs(5)), &mut task)
                .await
                .is_err()
            {
                task.abort();
                let _ = task.await;
            }
        }
    }

    /// Listens again on the same port. Does nothing if running.
    pub async fn restart(&self) {
        if self
            .running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some()
        {
            return;
        }
        let listener = TcpListener::bind(self.addr)
            .await
            .expect("rebind the fake web pubsub server on its port");
        let running = serve(listener, self.shared.clone());
        *self.running.lock().unwrap_or_else(|e| e.into_inner()) = Some(running);
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(r) = self
            .running
            .get_mut()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        {
            let _ = r.shutdown.send(());
            r.task.abort();
        }
    }
}

fn ids_of(accepted: &[Accepted]) -> Vec<String> {
    accepted
        .iter()
        .flat_map(|a| a.body["samples"].as_array().cloned().unwrap_or_default())
        .filter_map(|s| s["id"].as_str().map(str::to_string))
        .collect()
}

fn error(status: StatusCode, code: &str, message: impl Into<String>) -> Response {
    let body = json!({"error": {"code": code, "message": message.into()}});
    (status, axum::Json(body)).into_response()
}

async fn handle(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    {
        let mut recorded = shared.lock();
        recorded.requests += 1;
        recorded.request_times.push(Instant::now());
    }
    let response = check_and_accept(&shared, &method, &uri, &headers, &body).await;
    let status = response.status();
    if !status.is_success() {
        shared
            .lock()
            .refusals
            .push((status.as_u16(), status.to_string()));
    }
    shared.changed.notify_waiters();
    response
}

async fn check_and_accept(
    shared: &Shared,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &Bytes,
) -> Response {
    if method != Method::POST {
        return error(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            format!("{method} is not allowed; use POST"),
        );
    }
    let group = match parse_path(uri.path(), &shared.hub) {
        Ok(g) => g,
        Err(m) => return error(StatusCode::BAD_REQUEST, "InvalidPath", m),
    };
    if uri.query() != Some(&format!("api-version={API_VERSION}")) {
        return error(
            StatusCode::BAD_REQUEST,
            "InvalidApiVersion",
            format!(
                "the query must be api-version={API_VERSION}, got {:?}",
                uri.query()
            ),
        );
    }
    if let Err(m) = check_token(shared, uri, headers) {
        return error(StatusCode::UNAUTHORIZED, "Unauthorized", m);
    }
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let media = content_type.split(';').next().unwrap_or("").trim();
    if !media.eq_ignore_ascii_case("application/json") {
        return error(
            StatusCode::BAD_REQUEST,
            "InvalidContentType",
            format!("content type must be application/json, got {content_type:?}"),
        );
    }
    let fault = shared.lock().faults.pop_front();
    match fault {
        None => {}
        Some(Fault::Delay(d)) => tokio::time::sleep(d).await,
        Some(Fault::Unavailable) => {
            return error(
                StatusCode::SERVICE_UNAVAILABLE,
                "ServiceUnavailable",
                "injected: the service is unavailable",
            );
        }
        Some(Fault::TooManyRequests { retry_after_secs }) => {
            let mut r = error(
                StatusCode::TOO_MANY_REQUESTS,
                "TooManyRequests",
                "injected: too many requests",
            );
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(retry_after_secs));
            return r;
        }
        Some(Fault::UnavailableRetryAfter { header, value }) => {
            let mut r = error(
                StatusCode::SERVICE_UNAVAILABLE,
                "ServiceUnavailable",
                "injected: the service is unavailable",
            );
            r.headers_mut().insert(
                header,
                HeaderValue::from_str(&value).expect("a header value"),
            );
            return r;
        }
        Some(Fault::Unauthorized) => {
            return error(
                StatusCode::UNAUTHORIZED,
                "Unauthorized",
                "injected: invalid access token",
            );
        }
        Some(Fault::BadRequest) => {
            return error(
                StatusCode::BAD_REQUEST,
                "InvalidMessage",
                "injected: the message is invalid",
            );
        }
        Some(Fault::PayloadTooLarge) => {
            return error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "PayloadTooLarge",
                "injected: the message is too large",
            );
        }
    }
    if body.len() > MAX_BODY_BYTES {
        return error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "PayloadTooLarge",
            format!(
                "the message is {} bytes, more than {MAX_BODY_BYTES}",
                body.len()
            ),
        );
    }
    let message: Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                "InvalidMessage",
                format!("not JSON: {e}"),
            );
        }
    };
    if let Err(m) = check_message(&message) {
        return error(StatusCode::BAD_REQUEST, "InvalidMessage", m);
    }
    shared.lock().accepted.push(Accepted {
        group,
        body: message,
    });
    StatusCode::ACCEPTED.into_response()
}

/// `/api/hubs/{hub}/:send` → `None`; `/api/hubs/{hub}/groups/{group}/:send` → the group.
fn parse_path(path: &str, hub: &str) -> Result<Option<String>, String> {
    let rest = path
        .strip_prefix("/api/hubs/")
        .and_then(|r| r.strip_suffix("/:send"))
        .ok_or_else(|| format!("unknown path {path}"))?;
    let (got_hub, group) = match rest.split_once("/groups/") {
        None => (rest, None),
        Some((h, g)) => (h, Some(g)),
    };
    if percent_decode(got_hub).as_deref() != Some(hub) {
        return Err(format!(
            "this fake serves hub {hub:?}, not {got_hub:?} (path {path})"
        ));
    }
    // The REST reference's rules: hub `^[A-Za-z][A-Za-z0-9_`,.[\]]{0,127}$`
    // (percent-encoded backtick allowed), group 1..=1024 characters, not only
    // whitespace, no line break (percent-encoded as needed).
    let hub_ok = |h: &str| {
        h.starts_with(|c: char| c.is_ascii_alphabetic())
            && h.len() <= 128
            && h.chars()
                .all(|c| c.is_ascii_alphanumeric() || "_`,.[]".contains(c))
    };
    match percent_decode(got_hub) {
        Some(h) if hub_ok(&h) => {}
        _ => return Err(format!("invalid hub name {got_hub:?}")),
    }
    let group = match group {
        None => None,
        Some(raw) => match percent_decode(raw) {
            Some(g)
                if (1..=1024).contains(&g.chars().count())
                    && !g.trim().is_empty()
                    && !g.contains(['\n', '\r']) =>
            {
                Some(g)
            }
            _ => return Err(format!("invalid group name {raw:?}")),
        },
    };
    Ok(group)
}

/// Decodes `%XX` escapes (UTF-8); `None` for a bad escape or bad UTF-8.
fn percent_decode(s: &str) -> Option<String> {
    let mut out = Vec::with_capacity(s.len());
    let mut bytes = s.bytes();
    while let Some(b) = bytes.next() {
        if b == b'%' {
            let hex = [bytes.next()?, bytes.next()?];
            out.push(u8::from_str_radix(std::str::from_utf8(&hex).ok()?, 16).ok()?);
        } else {
            out.push(b);
        }
    }
    String::from_utf8(out).ok()
}

/// Checks the bearer token: HS256 with the key, header `{"alg":"HS256","typ":"JWT"}`,
/// `aud` equal to the URL this request was sent to, `exp` in the future.
fn check_token(shared: &Shared, uri: &Uri, headers: &HeaderMap) -> Result<(), String> {
    let auth = headers
        .get(header::AUTHORIZATION)
        .ok_or("no Authorization header")?
        .to_str()
        .map_err(|_| "the Authorization header is not text")?;
    let token = auth
        .strip_prefix("Bearer ")
        .ok_or("the Authorization header is not a Bearer token")?;
    shared.lock().tokens.push(token.to_string());
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .ok_or("no Host header")?;
    let path_and_query = uri.path_and_query().map_or("/", |p| p.as_str());
    let url = format!("http://{host}{path_and_query}");

    let head = jsonwebtoken::decode_header(token).map_err(|e| format!("bad token header: {e}"))?;
    if head.alg != jsonwebtoken::Algorithm::HS256 || head.typ.as_deref() != Some("JWT") {
        return Err(format!(
            "token header must be HS256/JWT, got {:?}/{:?}",
            head.alg, head.typ
        ));
    }
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
    validation.leeway = 0;
    validation.set_audience(&[&url]);
    validation.set_required_spec_claims(&["exp", "aud"]);
    jsonwebtoken::decode::<Value>(
        token,
        &jsonwebtoken::DecodingKey::from_secret(shared.key.as_bytes()),
        &validation,
    )
    .map_err(|e| format!("invalid token for audience {url}: {e}"))?;
    Ok(())
}

/// Checks a message against the `hxlog.samples` or `hxlog.alarm` version 1 schema.
pub fn check_message(v: &Value) -> Result<(), String> {
    let obj = v.as_object().ok_or("the message is not a JSON object")?;
    if obj.get("type") == Some(&json!("hxlog.alarm")) {
        return check_alarm(v);
    }
    if obj.get("type") != Some(&json!("hxlog.samples")) {
        return Err(format!(
            "type must be \"hxlog.samples\", got {:?}",
            obj.get("type")
        ));
    }
    if obj.get("version") != Some(&json!(1)) {
        return Err(format!("version must be 1, got {:?}", obj.get("version")));
    }
    let samples = obj
        .get("samples")
        .and_then(Value::as_array)
        .ok_or("samples must be an array")?;
    if samples.is_empty() {
        return Err("samples must not be empty".into());
    }
    for (i, s) in samples.iter().enumerate() {
        check_sample(s).map_err(|m| format!("samples[{i}]: {m}"))?;
    }
    Ok(())
}

/// An `hxlog.alarm` message: one alarm event.
fn check_alarm(v: &Value) -> Result<(), String> {
    if v.get("version") != Some(&json!(1)) {
        return Err(format!("version must be 1, got {:?}", v.get("version")));
    }
    for name in ["id", "device_id", "alarm", "role", "state", "at", "message"] {
        v.get(name)
            .and_then(Value::as_str)
            .ok_or(format!("alarm {name} must be a string"))?;
    }
    if !matches!(
        v["alarm"].as_str(),
        Some("max" | "min" | "missing" | "effectiveness")
    ) {
        return Err(format!("unknown alarm {:?}", v["alarm"]));
    }
    if !matches!(v["state"].as_str(), Some("raised" | "cleared")) {
        return Err(format!(
            "state must be raised or cleared, got {:?}",
            v["state"]
        ));
    }
    if v["at"]
        .as_str()
        .and_then(|t| t.parse::<jiff::Timestamp>().ok())
        .is_none()
    {
        return Err(format!("at {:?} is not an RFC 3339 time", v["at"]));
    }
    for name in ["value", "threshold"] {
        if !matches!(v.get(name), Some(Value::Number(_) | Value::Null)) {
            return Err(format!("alarm {name} must be a number or null"));
        }
    }
    Ok(())
}

fn check_sample(s: &Value) -> Result<(), String> {
    let str_field = |name: &str| {
        s.get(name)
            .and_then(Value::as_str)
            .ok_or(format!("{name} must be a string"))
    };
    let id = str_field("id")?;
    if id.len() != 36 || id.chars().filter(|&c| c == '-').count() != 4 {
        return Err(format!("id {id:?} is not a UUID"));
    }
    str_field("device_id")?;
    let taken_at = str_field("taken_at")?;
    if !taken_at.ends_with('Z') || taken_at.parse::<jiff::Timestamp>().is_err() {
        return Err(format!("taken_at {taken_at:?} is not an RFC 3339 UTC time"));
    }
    match (
        s.get("clock").and_then(Value::as_str),
        s.get("taken_at_raw"),
    ) {
        (Some("synced" | "unsynced"), Some(Value::Null))
        | (Some("corrected"), Some(Value::String(_))) => {}
        (c, raw) => {
            return Err(format!(
                "clock {c:?} does not agree with taken_at_raw {raw:?}"
            ));
        }
    }
    let source = str_field("source")?;
    let mock = s
        .get("mock")
        .and_then(Value::as_bool)
        .ok_or("mock must be a boolean")?;
    match (source, mock) {
        ("w1", false) | ("mock", true) => {}
        _ => return Err(format!("source {source:?} does not agree with mock {mock}")),
    }
    let readings = s
        .get("readings")
        .and_then(Value::as_object)
        .ok_or("readings must be an object")?;
    for (role, r) in readings {
        let quality = r
            .get("quality")
            .and_then(Value::as_str)
            .ok_or(format!("readings.{role}.quality must be a string"))?;
        match (quality, r.get("celsius")) {
            ("ok", Some(Value::Number(_))) => {}
            (q, Some(Value::Null)) if q != "ok" => {}
            (q, c) => {
                return Err(format!(
                    "readings.{role}: celsius {c:?} does not fit quality {q:?}"
                ));
            }
        }
    }
    let efficiency = s
        .get("efficiency")
        .and_then(Value::as_object)
        .ok_or("efficiency must be an object")?;
    for name in [
        "hot_effectiveness",
        "cold_effectiveness",
        "effectiveness",
        "lmtd",
    ] {
        match efficiency.get(name) {
            Some(Value::Number(_) | Value::Null) => {}
            other => {
                return Err(format!(
                    "efficiency.{name} must be a number or null, got {other:?}"
                ));
            }
        }
    }
    Ok(())
}

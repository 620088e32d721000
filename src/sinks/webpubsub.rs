//! The Azure Web PubSub sink: publishes samples as JSON messages to a hub (or
//! one group of a hub) through the service's REST API.
//!
//! This module owns the Web PubSub wire protocol: parsing the connection
//! string, minting the access token, the message schema, splitting a batch into
//! messages and classifying the service's answers into [`SinkError`]s. It is the
//! only user of `reqwest` and `jsonwebtoken`. It must not see the outbox or
//! decide about retries: the forwarder does that from the error class alone.
//! It never logs, prints or returns the access key or a token.
//!
//! # Requests
//!
//! `POST {endpoint}[:port]/api/hubs/{hub}/:send?api-version=2024-12-01` (to
//! every connection of the hub) or
//! `POST {endpoint}[:port]/api/hubs/{hub}/groups/{group}/:send?api-version=2024-12-01`,
//! `Content-Type: application/json`, `Authorization: Bearer <JWT>`. The token is
//! HS256-signed with the UTF-8 bytes of the access key, header
//! `{"alg":"HS256","typ":"JWT"}`, claims `{"aud":<the exact request URL>,"exp":<now + 60 s>}`
//! (what the official Python SDK sends). Any 2xx is success.
//!
//! | answer | class |
//! |---|---|
//! | 2xx | delivered |
//! | 429, 5xx, connection refused/reset, timeout | [`SinkError::Transient`] (with `Retry-After`) |
//! | 400, 413 | [`SinkError::Rejected`]: this message can never be accepted |
//! | 401, 403, other 4xx, 3xx | [`SinkError::Permanent`]: a human must fix the key or config |
//!
//! # Message schema
//!
//! Every message is one JSON object of type `hxlog.samples`, version 1, holding
//! one or more samples, oldest first. In steady state a message holds one
//! sample; when catching up after an outage the samples of a batch are packed
//! into as few messages as fit in [`MAX_MESSAGE_BYTES`] each. Delivery is at
//! least once: a subscriber must deduplicate on `id`.
//!
//! ```json
//! {
//!   "type": "hxlog.samples",
//!   "version": 1,
//!   "samples": [
//!     {
//!       "id": "019ac9e2-3c00-7d4e-9f3a-2b1c0d9e8f70",
//!       "device_id": "hx-01",
//!       "taken_at": "2026-11-28T10:00:00Z",
//!       "source": "w1",
//!       "mock": false,
//!       "readings": {
//!         "T1": {"celsius": 61.25, "quality": "ok"},
//!         "T2": {"celsius": null, "quality": "crc_no", "reason": "kernel reported crc=.. NO"},
//!         "T3": {"celsius": 18.5, "quality": "ok"},
//!         "T4": {"celsius": 40.0, "quality": "ok"}
//!       },
//!       "efficiency": {
//!         "hot_effectiveness": null,
//!         "cold_effectiveness": 0.5116279069767442,
//!         "effectiveness": null,
//!         "lmtd": null
//!       }
//!     }
//!   ]
//! }
//! ```
//!
//! * `id`: the sample's UUIDv7, unique across devices and restarts; the dedup key.
//! * `taken_at`: RFC 3339, UTC.
//! * `source`: `w1` (real sensors) or `mock` (simulated); `mock` is `true`
//!   exactly when `source` is `mock`, so simulated data is visibly marked.
//! * `readings`: one entry per mapped role, in mapping order. `celsius` is a
//!   number when `quality` is `ok` and `null` otherwise; `reason` is present
//!   only for a missing reading.
//! * `efficiency`: fractions (0.5, not 50) and the LMTD in kelvin; `null` where undefined.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use jiff::Timestamp;
use serde::Serialize;
use serde::ser::SerializeMap;
use tracing::debug;

use crate::efficiency::Efficiency;
use crate::sample::{Reading, Sample, Source};
use crate::sinks::{Sink, SinkError};

/// The REST API version every request names (`?api-version=`).
pub const API_VERSION: &str = "2024-12-01";

/// Lifetime of an access token: the official Python SDK's value. A token is
/// minted per request, so this only has to cover one request.
pub const TOKEN_LIFETIME: Duration = Duration::from_secs(60);

/// The hub used when the config names none.
pub const DEFAULT_HUB: &str = "heatexchanger";

/// The per-request timeout used when the config names none.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// The largest message body this sink sends, well under the service's 1 MB limit.
pub const MAX_MESSAGE_BYTES: usize = 256 * 1024;

/// The largest batch [`WebPubSubSink::send`] accepts from the forwarder.
pub const MAX_BATCH: usize = 500;

/// The longest group name the service accepts.
pub const MAX_GROUP_LEN: usize = 1024;

/// The `type` of every message.
pub const MESSAGE_TYPE: &str = "hxlog.samples";

/// The schema `version` of every message.
pub const MESSAGE_VERSION: u32 = 1;

const PERMANENT_KEY_HINT: &str =
    "the access key was refused; check AZURE_WEBPUBSUB_CONNECTION_STRING in secrets.json";
const CLOCK_HINT: &str = "the system clock may not be synchronised (no NTP yet); tokens minted before NTP sync are rejected";

// ---------------------------------------------------------------------------
// Connection string

/// A secret string (the access key). Its `Debug` never shows the value and it
/// has no `Display`; read it with [`Secret::expose`].
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The secret itself. Never log or format the result.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// A parsed Web PubSub connection string
/// (`Endpoint=https://<name>.webpubsub.azure.com;AccessKey=<key>;Version=1.0;`).
///
/// Keys are case-insensitive and may come in any order; values may contain
/// `=`; the trailing `;` is optional; `Port=<n>` is optional; other keys
/// (`Version`) are accepted and ignored. `Debug` and `Display` redact the key.
///
/// ```
/// use hxlog::sinks::webpubsub::ConnectionString;
/// let c: ConnectionString = "Endpoint=http://127.0.0.1;Port=8080;AccessKey=abc=;Version=1.0"
///     .parse()
///     .unwrap();
/// assert_eq!(c.endpoint(), "http://127.0.0.1");
/// assert_eq!(c.port(), Some(8080));
/// assert_eq!(c.access_key().expose(), "abc=");
/// assert!(!format!("{c:?} {c}").contains("abc="));
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct ConnectionString {
    /// `scheme://host[:port]`, scheme and host lowercased, no trailing `/`.
    endpoint: String,
    access_key: Secret,
    port: Option<u16>,
}

/// Why a connection string was refused. The text names the bad part and never
/// contains the access key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConnectionStringError {
    /// The string is empty or whitespace.
    #[error("the Web PubSub connection string is empty")]
    Empty,
    /// A `;`-separated part has no `=` (its text is not shown: it may be the key).
    #[error("part {0} of the Web PubSub connection string is not Key=Value")]
    Malformed(usize),
    /// A key appears twice.
    #[error("the Web PubSub connection string has {0} twice")]
    Duplicate(String),
    /// A required key is missing or empty.
    #[error("the Web PubSub connection string has no {0}")]
    Missing(&'static str),
    /// The endpoint is not an `http://` or `https://` URL with a host and no path.
    #[error("the Web PubSub Endpoint {endpoint:?} is invalid: {reason}")]
    BadEndpoint {
        /// The endpoint as given (not secret).
        endpoint: String,
        /// What is wrong with it.
        reason: String,
    },
    /// `Port` is not a number in 1..=65535.
    #[error("the Web PubSub Port {0:?} is not a port number (1-65535)")]
    BadPort(String),
}

impl ConnectionString {
    /// Parses a connection string; see the type's documentation for the format.
    pub fn parse(s: &str) -> Result<Self, ConnectionStringError> {
        if s.trim().is_empty() {
            return Err(ConnectionStringError::Empty);
        }
        let mut endpoint = None;
        let mut access_key = None;
        let mut port = None;
        for (i, part) in s.split(';').enumerate() {
            if part.trim().is_empty() {
                continue;
            }
            let Some((key, value)) = part.split_once('=') else {
                return Err(ConnectionStringError::Malformed(i + 1));
            };
            let key = key.trim();
            let value = value.trim();
            let slot = match key.to_ascii_lowercase().as_str() {
                "endpoint" => &mut endpoint,
                "accesskey" => &mut access_key,
                "port" => &mut port,
                _ => continue,
            };
            if slot.is_some() {
                return Err(ConnectionStringError::Duplicate(key.to_string()));
            }
            *slot = Some(value.to_string());
        }
        let endpoint = endpoint
            .filter(|e| !e.is_empty())
            .ok_or(ConnectionStringError::Missing("Endpoint"))?;
        let access_key = access_key
            .filter(|k| !k.is_empty())
            .ok_or(ConnectionStringError::Missing("AccessKey"))?;
        let port = match port {
            None => None,
            Some(p) => match p.parse::<u16>() {
                Ok(n) if n > 0 => Some(n),
                _ => return Err(ConnectionStringError::BadPort(p)),
            },
        };
        let endpoint = normalise_endpoint(&endpoint, port)?;
        Ok(ConnectionString {
            endpoint,
            access_key: Secret(access_key),
            port,
        })
    }

    /// `scheme://host[:port]` as given by `Endpoint=` (lowercased, no trailing `/`).
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// The `Port=` value, if the string had one.
    pub fn port(&self) -> Option<u16> {
        self.port
    }

    /// The access key.
    pub fn access_key(&self) -> &Secret {
        &self.access_key
    }

    /// The base URL requests go to: the endpoint with `Port=` applied.
    fn base_url(&self) -> Result<reqwest::Url, ConnectionStringError> {
        let bad = |reason: &str| ConnectionStringError::BadEndpoint {
            endpoint: self.endpoint.clone(),
            reason: reason.to_string(),
        };
        let mut url = reqwest::Url::parse(&self.endpoint).map_err(|e| bad(&e.to_string()))?;
        if let Some(p) = self.port {
            url.set_port(Some(p)).map_err(|()| bad("cannot carry a port"))?;
        }
        Ok(url)
    }
}

fn normalise_endpoint(raw: &str, port: Option<u16>) -> Result<String, ConnectionStringError> {
    let bad = |reason: &str| ConnectionStringError::BadEndpoint {
        endpoint: raw.to_string(),
        reason: reason.to_string(),
    };
    let url = reqwest::Url::parse(raw).map_err(|e| bad(&e.to_string()))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(bad("the scheme must be http or https"));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(bad("it has no host"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(bad("it must not contain credentials"));
    }
    if url.path() != "/" || url.query().is_some() || url.fragment().is_some() {
        return Err(bad("it must not have a path, query or fragment"));
    }
    if url.port().is_some() && port.is_some() {
        return Err(bad("it has a port and Port= is also given"));
    }
    Ok(url.as_str().trim_end_matches('/').to_string())
}

impl FromStr for ConnectionString {
    type Err = ConnectionStringError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl fmt::Debug for ConnectionString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnectionString")
            .field("endpoint", &self.endpoint)
            .field("access_key", &self.access_key)
            .field("port", &self.port)
            .finish()
    }
}

impl fmt::Display for ConnectionString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Endpoint={};", self.endpoint)?;
        if let Some(p) = self.port {
            write!(f, "Port={p};")?;
        }
        f.write_str("AccessKey=<redacted>;Version=1.0;")
    }
}

// ---------------------------------------------------------------------------
// Names

/// Checks a hub name the way the service does: letters, digits and `_`,
/// starting with a letter.
pub fn validate_hub(hub: &str) -> Result<(), String> {
    if !hub.starts_with(|c: char| c.is_ascii_alphabetic()) {
        return Err(format!(
            "Web PubSub hub {hub:?} must start with a letter (letters, digits and _ only)"
        ));
    }
    if !hub.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return Err(format!(
            "Web PubSub hub {hub:?} may contain only letters, digits and _"
        ));
    }
    Ok(())
}

/// Checks a group name the way the service does: 1 to 1024 letters, digits and `_`.
pub fn validate_group(group: &str) -> Result<(), String> {
    if group.is_empty() || group.len() > MAX_GROUP_LEN {
        return Err(format!(
            "Web PubSub group name must be 1 to {MAX_GROUP_LEN} characters long (it is {})",
            group.len()
        ));
    }
    if !group.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return Err(format!(
            "Web PubSub group {group:?} may contain only letters, digits and _"
        ));
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Messages

#[derive(Serialize)]
struct Envelope<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    version: u32,
    samples: &'a [WireSample<'a>],
}

#[derive(Serialize)]
struct WireSample<'a> {
    id: String,
    device_id: &'a str,
    taken_at: String,
    source: Source,
    mock: bool,
    readings: WireReadings<'a>,
    efficiency: &'a Efficiency,
}

/// The readings as a JSON object keyed by role, in mapping order.
struct WireReadings<'a>(&'a [Reading]);

#[derive(Serialize)]
struct WireReading<'a> {
    celsius: Option<f64>,
    quality: crate::sample::Quality,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'a str>,
}

impl Serialize for WireReadings<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for r in self.0 {
            let wire = WireReading {
                celsius: r.celsius.filter(|_| r.quality == crate::sample::Quality::Ok),
                quality: r.quality,
                reason: r.reason.as_deref(),
            };
            map.serialize_entry(&r.role, &wire)?;
        }
        map.end()
    }
}

impl<'a> WireSample<'a> {
    fn new(s: &'a Sample) -> Self {
        WireSample {
            id: s.id.to_string(),
            device_id: &s.device_id,
            taken_at: s.taken_at.to_string(),
            source: s.source,
            mock: s.source == Source::Mock,
            readings: WireReadings(&s.readings),
            efficiency: &s.efficiency,
        }
    }
}

/// Encodes `batch` as messages (JSON bodies) of at most `max_bytes` each,
/// keeping the samples in order and each sample in exactly one message.
///
/// A sample too big to fit in `max_bytes` on its own still gets a message of
/// its own (the service decides whether to refuse it). An empty batch gives no
/// messages.
///
/// ```
/// use hxlog::sample::{Reading, Sample, Source};
/// use hxlog::sinks::webpubsub::encode_messages;
/// let s = Sample::new("hx-01", jiff::Timestamp::UNIX_EPOCH, Source::Mock,
///     vec![Reading::ok("T1", None, 61.25)]);
/// let messages = encode_messages(&[s], 256 * 1024);
/// let v: serde_json::Value = serde_json::from_slice(&messages[0]).unwrap();
/// assert_eq!(v["type"], "hxlog.samples");
/// assert_eq!(v["samples"][0]["mock"], true);
/// assert_eq!(v["samples"][0]["readings"]["T1"]["celsius"], 61.25);
/// ```
pub fn encode_messages(batch: &[Sample], max_bytes: usize) -> Vec<Vec<u8>> {
    let wire: Vec<WireSample<'_>> = batch.iter().map(WireSample::new).collect();
    let envelope = |samples: &[WireSample<'_>]| {
        serde_json::to_vec(&Envelope {
            kind: MESSAGE_TYPE,
            version: MESSAGE_VERSION,
            samples,
        })
        .expect("a message of plain strings, numbers and maps always serializes")
    };
    // Size of the envelope around an empty array, and of each sample: a message
    // of n samples is overhead + their sizes + (n - 1) commas.
    let overhead = envelope(&[]).len();
    let sizes: Vec<usize> = wire
        .iter()
        .map(|w| serde_json::to_vec(w).map_or(0, |v| v.len()))
        .collect();
    let mut messages = Vec::new();
    let mut start = 0;
    while start < wire.len() {
        let mut end = start + 1;
        let mut len = overhead + sizes[start];
        while end < wire.len() && len + 1 + sizes[end] <= max_bytes {
            len += 1 + sizes[end];
            end += 1;
        }
        messages.push(envelope(&wire[start..end]));
        start = end;
    }
    messages
}

// ---------------------------------------------------------------------------
// Tokens

#[derive(Serialize)]
struct Claims<'a> {
    aud: &'a str,
    exp: i64,
}

/// The token header, byte for byte what the Python SDK (PyJWT) sends.
const JWT_HEADER: &str = r#"{"alg":"HS256","typ":"JWT"}"#;

/// Mints the bearer token for one request to `url` (the exact URL sent).
fn mint_token(key: &Secret, url: &str, now: Timestamp) -> Result<String, String> {
    let exp = now.as_second() + TOKEN_LIFETIME.as_secs() as i64;
    let claims = serde_json::to_vec(&Claims { aud: url, exp })
        .map_err(|e| format!("cannot encode token claims: {e}"))?;
    let message = format!(
        "{}.{}",
        base64url(JWT_HEADER.as_bytes()),
        base64url(&claims)
    );
    let signature = jsonwebtoken::crypto::sign(
        message.as_bytes(),
        &jsonwebtoken::EncodingKey::from_secret(key.expose().as_bytes()),
        jsonwebtoken::Algorithm::HS256,
    )
    .map_err(|e| format!("cannot sign the access token: {e}"))?;
    Ok(format!("{message}.{signature}"))
}

/// Base64url without padding (RFC 7515 §2), as JWTs use.
fn base64url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] =
        b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        let chars = chunk.len() + 1;
        for i in 0..chars {
            out.push(ALPHABET[(n >> (18 - 6 * i)) as usize & 63] as char);
        }
    }
    out
}

// ---------------------------------------------------------------------------
// Clock

/// What the logger knows about its own clock, used to explain a refused token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClockState {
    /// An NTP client says the clock is synchronised.
    Synchronised,
    /// The clock is certainly wrong (before 2024: a Raspberry Pi without RTC
    /// that has not reached an NTP server yet).
    Unsynchronised,
    /// No evidence either way.
    Unknown,
}

/// Looks at the local clock: `Synchronised` when systemd-timesyncd has created
/// `/run/systemd/timesync/synchronized`, `Unsynchronised` when the time is
/// before 2024, otherwise `Unknown`.
pub fn system_clock_state() -> ClockState {
    if std::path::Path::new("/run/systemd/timesync/synchronized").exists() {
        return ClockState::Synchronised;
    }
    // 2024-01-01T00:00:00Z
    if Timestamp::now().as_second() < 1_704_067_200 {
        return ClockState::Unsynchronised;
    }
    ClockState::Unknown
}

/// The largest difference from the service's `Date` header we put down to
/// network delay; beyond it the local clock is called wrong.
const CLOCK_SKEW_TOLERANCE: Duration = Duration::from_secs(30);

/// Explains a 401 by the local clock when the evidence points there: the
/// service's `Date` header far from `now`, or a clock known to be unsynchronised.
fn clock_hint(state: ClockState, server_date: Option<Timestamp>, now: Timestamp) -> Option<String> {
    if let Some(server) = server_date {
        let skew = now.duration_since(server).as_secs();
        if skew.unsigned_abs() > CLOCK_SKEW_TOLERANCE.as_secs() {
            let direction = if skew < 0 { "behind" } else { "ahead of" };
            return Some(format!(
                "the system clock is {} s {direction} the service's; {CLOCK_HINT}",
                skew.unsigned_abs()
            ));
        }
        return None;
    }
    (state == ClockState::Unsynchronised).then(|| CLOCK_HINT.to_string())
}

// ---------------------------------------------------------------------------
// The sink

/// The resolved Web PubSub settings from the config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebPubSubSettings {
    /// The hub to publish to (`webpubsub_hub`, default [`DEFAULT_HUB`]).
    pub hub: String,
    /// Publish only to this group of the hub (`webpubsub_group`), or to every
    /// connection of the hub when `None`.
    pub group: Option<String>,
    /// How long one request may take, connecting included (default [`DEFAULT_TIMEOUT`]).
    pub timeout: Duration,
}

impl Default for WebPubSubSettings {
    fn default() -> Self {
        WebPubSubSettings {
            hub: DEFAULT_HUB.to_string(),
            group: None,
            timeout: DEFAULT_TIMEOUT,
        }
    }
}

/// Publishes samples to Azure Web PubSub. See the module documentation.
pub struct WebPubSubSink {
    client: reqwest::Client,
    url: String,
    key: Secret,
    timeout: Duration,
    max_message_bytes: usize,
    clock_state: fn() -> ClockState,
}

impl fmt::Debug for WebPubSubSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebPubSubSink")
            .field("url", &self.url)
            .field("key", &self.key)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl WebPubSubSink {
    /// Builds the sink: validates the hub and group names and builds the HTTP
    /// client. Does no network I/O.
    pub fn new(conn: ConnectionString, settings: WebPubSubSettings) -> anyhow::Result<Self> {
        validate_hub(&settings.hub).map_err(anyhow::Error::msg)?;
        if let Some(group) = &settings.group {
            validate_group(group).map_err(anyhow::Error::msg)?;
        }
        if settings.timeout.is_zero() {
            anyhow::bail!("the Web PubSub request timeout must be more than zero");
        }
        let mut url = conn.base_url()?;
        let path = match &settings.group {
            None => format!("/api/hubs/{}/:send", settings.hub),
            Some(g) => format!("/api/hubs/{}/groups/{g}/:send", settings.hub),
        };
        url.set_path(&path);
        url.set_query(Some(&format!("api-version={API_VERSION}")));
        let client = reqwest::Client::builder()
            .timeout(settings.timeout)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| anyhow::anyhow!("cannot build the Web PubSub HTTP client: {e}"))?;
        Ok(WebPubSubSink {
            client,
            url: url.to_string(),
            key: conn.access_key,
            timeout: settings.timeout,
            max_message_bytes: MAX_MESSAGE_BYTES,
            clock_state: system_clock_state,
        })
    }

    /// Replaces the clock check used to explain a 401 (default [`system_clock_state`]).
    pub fn with_clock_state(mut self, check: fn() -> ClockState) -> Self {
        self.clock_state = check;
        self
    }

    /// The `:send` URL every request goes to (and the token's audience).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Sends one message; the token is minted for exactly the URL sent.
    async fn send_message(&self, body: Vec<u8>) -> Result<reqwest::StatusCode, SinkError> {
        let token = mint_token(&self.key, &self.url, Timestamp::now()).map_err(SinkError::permanent)?;
        let result = self
            .client
            .post(&self.url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(reqwest::header::AUTHORIZATION, format!("Bearer {token}"))
            .body(body)
            .send()
            .await;
        let response = match result {
            Ok(r) => r,
            Err(e) => return Err(self.redact(classify_transport(&e, self.timeout), &token)),
        };
        let status = response.status();
        if status.is_success() {
            return Ok(status);
        }
        let headers = response.headers().clone();
        // The error body is small; a failure to read it only loses detail.
        let body = response.text().await.unwrap_or_default();
        let clock = if status == reqwest::StatusCode::UNAUTHORIZED {
            let server_date = headers
                .get(reqwest::header::DATE)
                .and_then(|v| v.to_str().ok())
                .and_then(parse_http_date);
            clock_hint((self.clock_state)(), server_date, Timestamp::now())
        } else {
            None
        };
        let error = classify_status(status, &headers, &body, clock, Timestamp::now());
        Err(self.redact(error, &token))
    }

    /// Makes sure neither the key nor the token can leave in an error message,
    /// whatever a server or a library put there.
    fn redact(&self, error: SinkError, token: &str) -> SinkError {
        let clean = |m: String| {
            m.replace(token, "<redacted>")
                .replace(self.key.expose(), "<redacted>")
        };
        match error {
            SinkError::Transient {
                message,
                retry_after,
            } => SinkError::Transient {
                message: clean(message),
                retry_after,
            },
            SinkError::Permanent { message } => SinkError::Permanent {
                message: clean(message),
            },
            SinkError::Rejected { message } => SinkError::Rejected {
                message: clean(message),
            },
        }
    }
}

impl Sink for WebPubSubSink {
    fn name(&self) -> &'static str {
        "webpubsub"
    }

    fn max_batch(&self) -> usize {
        MAX_BATCH
    }

    async fn send(&mut self, batch: &[Sample]) -> Result<(), SinkError> {
        let messages = encode_messages(batch, self.max_message_bytes);
        let total = messages.len();
        for (i, body) in messages.into_iter().enumerate() {
            let bytes = body.len();
            match self.send_message(body).await {
                Ok(status) => debug!(
                    sink = "webpubsub",
                    status = status.as_u16(),
                    message = i + 1,
                    messages = total,
                    samples = batch.len(),
                    bytes,
                    "message delivered"
                ),
                Err(e) => {
                    debug!(
                        sink = "webpubsub",
                        class = e.class(),
                        error = %e,
                        message = i + 1,
                        messages = total,
                        samples = batch.len(),
                        bytes,
                        "message failed"
                    );
                    return Err(e);
                }
            }
        }
        Ok(())
    }
}

/// Classifies a request that got no HTTP answer.
fn classify_transport(e: &reqwest::Error, timeout: Duration) -> SinkError {
    let what = if e.is_timeout() {
        format!("no answer within {} s", timeout.as_secs_f64())
    } else if e.is_connect() {
        "cannot connect".to_string()
    } else {
        "request failed".to_string()
    };
    // The chain says why (refused, reset, DNS); the URL in it holds no secret.
    let mut chain = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        chain.push_str(": ");
        chain.push_str(&s.to_string());
        source = s.source();
    }
    if e.is_builder() {
        return SinkError::permanent(format!("webpubsub: cannot build the request: {chain}"));
    }
    SinkError::transient(format!("webpubsub: {what}: {chain}"))
}

/// Classifies a non-2xx answer from its status, headers and body.
fn classify_status(
    status: reqwest::StatusCode,
    headers: &reqwest::header::HeaderMap,
    body: &str,
    clock_hint: Option<String>,
    now: Timestamp,
) -> SinkError {
    let detail = error_detail(status, body);
    match status.as_u16() {
        429 | 500..=599 => SinkError::Transient {
            message: format!("webpubsub: the service is busy or failing ({detail})"),
            retry_after: retry_after(headers, now),
        },
        401 | 403 => {
            let mut message = format!("webpubsub: {PERMANENT_KEY_HINT} ({detail})");
            if let Some(hint) = clock_hint {
                message.push_str("; ");
                message.push_str(&hint);
            }
            SinkError::Permanent { message }
        }
        400 | 413 => SinkError::Rejected {
            message: format!("webpubsub: the service refused the message ({detail})"),
        },
        300..=399 => SinkError::permanent(format!(
            "webpubsub: unexpected redirect ({detail}); check the Endpoint in AZURE_WEBPUBSUB_CONNECTION_STRING"
        )),
        _ => SinkError::permanent(format!(
            "webpubsub: the service refused the request ({detail}); check the hub, group and endpoint"
        )),
    }
}

/// `401 Unauthorized: code: message` from the service's error body
/// `{"error":{"code":…,"message":…}}`, or the start of a body that is not that.
fn error_detail(status: reqwest::StatusCode, body: &str) -> String {
    let mut detail = status.to_string();
    let parsed: Option<serde_json::Value> = serde_json::from_str(body).ok();
    let error = parsed.as_ref().and_then(|v| v.get("error"));
    let field = |name: &str| error.and_then(|e| e.get(name)).and_then(|v| v.as_str());
    match (field("code"), field("message")) {
        (None, None) => {
            let text: String = body.trim().chars().take(200).collect();
            if !text.is_empty() {
                detail.push_str(": ");
                detail.push_str(&text);
            }
        }
        (code, message) => {
            for part in [code, message].into_iter().flatten() {
                detail.push_str(": ");
                detail.push_str(part);
            }
        }
    }
    detail
}

/// The delay a 429/503 asks for: `retry-after-ms`, or `Retry-After` in seconds
/// or as an HTTP date.
fn retry_after(headers: &reqwest::header::HeaderMap, now: Timestamp) -> Option<Duration> {
    let get = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(str::trim);
    if let Some(ms) = get("retry-after-ms").and_then(|v| v.parse::<u64>().ok()) {
        return Some(Duration::from_millis(ms));
    }
    let value = get("retry-after")?;
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = parse_http_date(value)?;
    let wait = at.duration_since(now);
    Some(Duration::try_from(wait).unwrap_or(Duration::ZERO))
}

/// Parses an HTTP date (`Sun, 06 Nov 1994 08:49:37 GMT`).
fn parse_http_date(value: &str) -> Option<Timestamp> {
    static PARSER: jiff::fmt::rfc2822::DateTimeParser = jiff::fmt::rfc2822::DateTimeParser::new();
    PARSER.parse_timestamp(value.trim()).ok()
}

#[cfg(test)]
#[path = "../../tests/e2e/wps_server.rs"]
mod wps_server;

#[cfg(test)]
mod tests {
    use super::*;
}

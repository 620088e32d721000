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
//!         "cold_effectiveness": 0.5029239766081871,
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

use crate::config::Secret;
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
            access_key: Secret::new(access_key),
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
            url.set_port(Some(p))
                .map_err(|()| bad("cannot carry a port"))?;
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
                celsius: r
                    .celsius
                    .filter(|_| r.quality == crate::sample::Quality::Ok),
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
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
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
/// service's `Date` header far from `now` (says by how much), or else a clock
/// the [`ClockState`] check calls unsynchronised.
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
        let token =
            mint_token(&self.key, &self.url, Timestamp::now()).map_err(SinkError::permanent)?;
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
    let get = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
    };
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
#[path = "../../tests/e2e/support/wps_server.rs"]
mod wps_server;

#[cfg(test)]
mod tests {
    use super::wps_server::{self, Fault, TestServer};
    use super::*;
    use crate::sample::Quality;

    const KEY: &str = "s3cr3t+Key/With=Equals==";
    const HUB: &str = "heatexchanger";

    fn sample(i: i64, source: Source) -> Sample {
        let readings = vec![
            Reading::ok(
                "T1",
                Some("28-000000000001".into()),
                61.25 + i as f64 * 0.01,
            ),
            Reading::missing("T2", None, Quality::CrcNo, "kernel reported crc=.. NO"),
            Reading::ok("T3", None, 18.5),
            Reading::ok("T4", None, 40.0),
        ];
        Sample::new(
            "hx-01",
            Timestamp::from_second(1_800_000_000 + i).unwrap(),
            source,
            readings,
        )
    }

    fn samples(n: i64) -> Vec<Sample> {
        (0..n).map(|i| sample(i, Source::W1)).collect()
    }

    fn settings(group: Option<&str>) -> WebPubSubSettings {
        WebPubSubSettings {
            hub: HUB.into(),
            group: group.map(str::to_string),
            timeout: Duration::from_secs(10),
        }
    }

    fn sink_for(server: &TestServer, settings: WebPubSubSettings) -> WebPubSubSink {
        let conn = ConnectionString::parse(&server.connection_string()).unwrap();
        WebPubSubSink::new(conn, settings).unwrap()
    }

    /// Fails if the key, or any token the server saw, appears in `text`.
    fn assert_no_secret(text: &str, server: Option<&TestServer>) {
        assert!(!text.contains(KEY), "the key leaked: {text}");
        for token in server.map(TestServer::tokens_seen).unwrap_or_default() {
            assert!(!text.contains(&token), "a token leaked: {text}");
            // not even its signature
            let signature = token.rsplit('.').next().unwrap();
            assert!(
                !text.contains(signature),
                "a token signature leaked: {text}"
            );
        }
    }

    fn ids(batch: &[Sample]) -> Vec<String> {
        batch.iter().map(|s| s.id.to_string()).collect()
    }

    // --- connection string -------------------------------------------------

    fn check_conn(input: &str, expected: Result<(&str, Option<u16>, &str), ConnectionStringError>) {
        let got = ConnectionString::parse(input);
        match (&got, &expected) {
            (Ok(c), Ok((endpoint, port, key))) => {
                assert_eq!(c.endpoint(), *endpoint, "{input}");
                assert_eq!(c.port(), *port, "{input}");
                assert_eq!(c.access_key().expose(), *key, "{input}");
                assert_no_secret(&format!("{c:?} {c}"), None);
            }
            (Err(e), Err(x)) => {
                assert_eq!(e, x, "{input}");
                assert_no_secret(&format!("{e} {e:?}"), None);
                assert!(!format!("{e} {e:?}").contains("hunter2"), "{e}");
            }
            _ => panic!("{input}: got {got:?}, expected {expected:?}"),
        }
    }

    #[test]
    fn connection_strings() {
        use ConnectionStringError as E;
        let azure = "https://hx.webpubsub.azure.com";
        for (input, expected) in [
            (
                format!("Endpoint={azure};AccessKey={KEY};Version=1.0;"),
                Ok((azure, None, KEY)),
            ),
            // order, case, no trailing ;, spaces
            (
                format!("accesskey={KEY};VERSION=1.0;ENDPOINT={azure}"),
                Ok((azure, None, KEY)),
            ),
            (
                format!(" Version=1.0 ; AccessKey = {KEY} ; Endpoint = {azure}/ ;"),
                Ok((azure, None, KEY)),
            ),
            (
                format!("Endpoint=HTTPS://HX.WebPubSub.Azure.com;AccessKey={KEY}"),
                Ok((azure, None, KEY)),
            ),
            // the local emulator and the tests
            (
                format!("Endpoint=http://127.0.0.1;Port=8080;AccessKey={KEY};Version=1.0;"),
                Ok(("http://127.0.0.1", Some(8080), KEY)),
            ),
            (
                format!("Endpoint=http://localhost:7071;AccessKey={KEY}"),
                Ok(("http://localhost:7071", None, KEY)),
            ),
            // a key that is only `=` signs beyond the first
            (
                format!("Endpoint={azure};AccessKey=a==b="),
                Ok((azure, None, "a==b=")),
            ),
            ("".into(), Err(E::Empty)),
            ("  ;; ".into(), Err(E::Missing("Endpoint"))),
            (format!("AccessKey={KEY}"), Err(E::Missing("Endpoint"))),
            (
                format!("Endpoint=;AccessKey={KEY}"),
                Err(E::Missing("Endpoint")),
            ),
            (
                format!("Endpoint={azure};Version=1.0"),
                Err(E::Missing("AccessKey")),
            ),
            (
                format!("Endpoint={azure};AccessKey="),
                Err(E::Missing("AccessKey")),
            ),
            // a part without `=` is not echoed: it may be the key itself
            (
                format!("Endpoint={azure};AccessKey:hunter2"),
                Err(E::Malformed(2)),
            ),
            // a key pasted without its name is an unknown key: ignored, never echoed
            (
                format!("Endpoint={azure};{KEY}"),
                Err(E::Missing("AccessKey")),
            ),
            (
                format!("Endpoint={azure};AccessKey={KEY};accesskey={KEY}"),
                Err(E::Duplicate("accesskey".into())),
            ),
            (
                format!("Endpoint=ftp://hx;AccessKey={KEY}"),
                Err(E::BadEndpoint {
                    endpoint: "ftp://hx".into(),
                    reason: "the scheme must be http or https".into(),
                }),
            ),
            (
                format!("Endpoint=hx.webpubsub.azure.com;AccessKey={KEY}"),
                Err(E::BadEndpoint {
                    endpoint: "hx.webpubsub.azure.com".into(),
                    reason: "relative URL without a base".into(),
                }),
            ),
            (
                format!("Endpoint={azure}/api;AccessKey={KEY}"),
                Err(E::BadEndpoint {
                    endpoint: format!("{azure}/api"),
                    reason: "it must not have a path, query or fragment".into(),
                }),
            ),
            (
                format!("Endpoint=http://127.0.0.1:1;Port=2;AccessKey={KEY}"),
                Err(E::BadEndpoint {
                    endpoint: "http://127.0.0.1:1".into(),
                    reason: "it has a port and Port= is also given".into(),
                }),
            ),
            (
                format!("Endpoint={azure};Port=0;AccessKey={KEY}"),
                Err(E::BadPort("0".into())),
            ),
            (
                format!("Endpoint={azure};Port=65536;AccessKey={KEY}"),
                Err(E::BadPort("65536".into())),
            ),
            (
                format!("Endpoint={azure};Port=http;AccessKey={KEY}"),
                Err(E::BadPort("http".into())),
            ),
        ] {
            check_conn(&input, expected);
        }
    }

    #[test]
    fn error_texts_name_the_bad_part() {
        for (input, needle) in [
            ("", "empty"),
            ("AccessKey=x", "no Endpoint"),
            ("Endpoint=https://h", "no AccessKey"),
            ("Endpoint=https://h;AccessKey=x;Port=abc", "Port \"abc\""),
            ("Endpoint=ftp://h;AccessKey=x", "http or https"),
            ("Endpoint=https://h;x", "part 2"),
        ] {
            let e = ConnectionString::parse(input).unwrap_err().to_string();
            assert!(e.contains(needle), "{input}: {e}");
            assert!(
                e.starts_with(char::is_lowercase) && !e.ends_with('.'),
                "{e}"
            );
        }
    }

    // --- URL and names -----------------------------------------------------

    #[test]
    fn send_urls() {
        let q = "?api-version=2024-12-01";
        for (conn, hub, group, expected) in [
            (
                "Endpoint=https://hx.webpubsub.azure.com;AccessKey=k",
                "heatexchanger",
                None,
                format!("https://hx.webpubsub.azure.com/api/hubs/heatexchanger/:send{q}"),
            ),
            (
                "Endpoint=https://hx.webpubsub.azure.com/;AccessKey=k",
                "hx_2",
                Some("site_A1"),
                format!("https://hx.webpubsub.azure.com/api/hubs/hx_2/groups/site_A1/:send{q}"),
            ),
            (
                "Endpoint=http://127.0.0.1;Port=8080;AccessKey=k",
                "Hub",
                None,
                format!("http://127.0.0.1:8080/api/hubs/Hub/:send{q}"),
            ),
            // the default port is not written, exactly as the request line and Host header carry it
            (
                "Endpoint=https://hx.webpubsub.azure.com;Port=443;AccessKey=k",
                "h",
                None,
                format!("https://hx.webpubsub.azure.com/api/hubs/h/:send{q}"),
            ),
        ] {
            let settings = WebPubSubSettings {
                hub: hub.into(),
                group: group.map(str::to_string),
                ..WebPubSubSettings::default()
            };
            let sink = WebPubSubSink::new(conn.parse().unwrap(), settings).unwrap();
            assert_eq!(sink.url(), expected);
        }
    }

    #[test]
    fn hub_and_group_names() {
        let long = "g".repeat(MAX_GROUP_LEN);
        let too_long = "g".repeat(MAX_GROUP_LEN + 1);
        for (hub, group, ok) in [
            ("heatexchanger", None, true),
            ("Hx_01", Some("site_1"), true),
            ("h", Some("_1"), true),
            ("h", Some(long.as_str()), true),
            ("h", Some(too_long.as_str()), false),
            ("h", Some(""), false),
            ("h", Some("a-b"), false),
            ("h", Some("a/b"), false),
            ("1hub", None, false),
            ("_hub", None, false),
            ("", None, false),
            ("heat-exchanger", None, false),
            ("heat exchanger", None, false),
            ("hüb", None, false),
        ] {
            let settings = WebPubSubSettings {
                hub: hub.into(),
                group: group.map(str::to_string),
                ..WebPubSubSettings::default()
            };
            let conn: ConnectionString = format!("Endpoint=https://h;AccessKey={KEY}")
                .parse()
                .unwrap();
            let got = WebPubSubSink::new(conn, settings);
            assert_eq!(got.is_ok(), ok, "{hub:?} {group:?}: {got:?}");
            if let Err(e) = got {
                assert_no_secret(&format!("{e:#}"), None);
            }
        }
    }

    #[test]
    fn debug_never_shows_the_key() {
        let conn: ConnectionString = format!("Endpoint=https://h;AccessKey={KEY}")
            .parse()
            .unwrap();
        let sink = WebPubSubSink::new(conn.clone(), WebPubSubSettings::default()).unwrap();
        for text in [
            format!("{conn:?}"),
            format!("{conn:#?}"),
            format!("{conn}"),
            format!("{sink:?}"),
            format!("{:?}", conn.access_key()),
        ] {
            assert_no_secret(&text, None);
            assert!(text.contains("<redacted>"), "{text}");
        }
    }

    // --- token ---------------------------------------------------------------

    fn b64url_decode(s: &str) -> Vec<u8> {
        let value = |c: u8| match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'-' => 62,
            b'_' => 63,
            _ => panic!("not base64url: {c}"),
        };
        let mut bits = 0u32;
        let mut n = 0;
        let mut out = Vec::new();
        for c in s.bytes() {
            bits = (bits << 6) | u32::from(value(c));
            n += 6;
            if n >= 8 {
                n -= 8;
                out.push((bits >> n) as u8);
            }
        }
        out
    }

    #[test]
    fn base64url_matches_rfc_4648_vectors() {
        for (input, expected) in [
            (&b""[..], ""),
            (b"f", "Zg"),
            (b"fo", "Zm8"),
            (b"foo", "Zm9v"),
            (b"foob", "Zm9vYg"),
            (b"fooba", "Zm9vYmE"),
            (b"foobar", "Zm9vYmFy"),
            (&[0xfb, 0xff], "-_8"),
        ] {
            assert_eq!(base64url(input), expected);
            assert_eq!(b64url_decode(expected), input);
        }
    }

    #[test]
    fn token_header_and_claims_are_exactly_the_sdks() {
        let url = "http://127.0.0.1:8080/api/hubs/heatexchanger/:send?api-version=2024-12-01";
        let now = Timestamp::from_second(1_800_000_000).unwrap();
        let token = mint_token(&Secret::new(KEY), url, now).unwrap();
        let parts: Vec<&str> = token.split('.').collect();
        assert_eq!(parts.len(), 3);
        assert_eq!(
            String::from_utf8(b64url_decode(parts[0])).unwrap(),
            r#"{"alg":"HS256","typ":"JWT"}"#
        );
        assert_eq!(
            String::from_utf8(b64url_decode(parts[1])).unwrap(),
            format!(r#"{{"aud":"{url}","exp":1800000060}}"#)
        );
        // signed with the key's UTF-8 bytes (not base64-decoded)
        let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
        validation.validate_exp = false;
        validation.set_audience(&[url]);
        let data = jsonwebtoken::decode::<serde_json::Value>(
            &token,
            &jsonwebtoken::DecodingKey::from_secret(KEY.as_bytes()),
            &validation,
        )
        .unwrap();
        assert_eq!(
            data.claims,
            serde_json::json!({"aud": url, "exp": 1_800_000_060})
        );
        assert_eq!(data.header.kid, None);
        let wrong = jsonwebtoken::decode::<serde_json::Value>(
            &token,
            &jsonwebtoken::DecodingKey::from_secret(b"another key"),
            &validation,
        );
        assert!(wrong.is_err());
    }

    // --- messages ------------------------------------------------------------

    /// The sample of the module documentation's example: keep the two in step.
    #[test]
    fn message_schema() {
        let mut s = sample(0, Source::Mock);
        s.id = uuid::Uuid::parse_str("019ac9e2-3c00-7d4e-9f3a-2b1c0d9e8f70").unwrap();
        s.taken_at = "2026-11-28T10:00:00Z".parse().unwrap();
        let messages = encode_messages(std::slice::from_ref(&s), MAX_MESSAGE_BYTES);
        assert_eq!(messages.len(), 1);
        let got: serde_json::Value = serde_json::from_slice(&messages[0]).unwrap();
        let expected = serde_json::json!({
            "type": "hxlog.samples",
            "version": 1,
            "samples": [{
                "id": "019ac9e2-3c00-7d4e-9f3a-2b1c0d9e8f70",
                "device_id": "hx-01",
                "taken_at": "2026-11-28T10:00:00Z",
                "source": "mock",
                "mock": true,
                "readings": {
                    "T1": {"celsius": 61.25, "quality": "ok"},
                    "T2": {"celsius": null, "quality": "crc_no", "reason": "kernel reported crc=.. NO"},
                    "T3": {"celsius": 18.5, "quality": "ok"},
                    "T4": {"celsius": 40.0, "quality": "ok"}
                },
                "efficiency": {
                    "hot_effectiveness": null,
                    "cold_effectiveness": 0.5029239766081871,
                    "effectiveness": null,
                    "lmtd": null
                }
            }]
        });
        assert_eq!(got, expected);
        // key order on the wire: roles in mapping order, fields as documented
        let text = String::from_utf8(messages[0].clone()).unwrap();
        let at = |needle: &str| {
            text.find(needle)
                .unwrap_or_else(|| panic!("{needle} in {text}"))
        };
        assert!(
            at("\"T1\"") < at("\"T2\"")
                && at("\"T2\"") < at("\"T3\"")
                && at("\"T3\"") < at("\"T4\"")
        );
        assert!(at("\"type\"") < at("\"version\"") && at("\"version\"") < at("\"samples\""));
        wps_server::check_message(&got).unwrap();
        // real sensors are not marked mock
        let w1: serde_json::Value = serde_json::from_slice(
            &encode_messages(&[sample(1, Source::W1)], MAX_MESSAGE_BYTES)[0],
        )
        .unwrap();
        assert_eq!(w1["samples"][0]["source"], "w1");
        assert_eq!(w1["samples"][0]["mock"], false);
        assert!(encode_messages(&[], MAX_MESSAGE_BYTES).is_empty());
    }

    #[test]
    fn batches_split_into_messages_under_the_limit_in_order() {
        let batch = samples(2000);
        let one = encode_messages(&batch[..1], usize::MAX)[0].len();
        for max_bytes in [
            1,
            one,
            one + 1,
            2 * one,
            4096,
            64 * 1024,
            MAX_MESSAGE_BYTES,
            usize::MAX,
        ] {
            let messages = encode_messages(&batch, max_bytes);
            let mut got = Vec::new();
            for m in &messages {
                let v: serde_json::Value = serde_json::from_slice(m).unwrap();
                wps_server::check_message(&v).unwrap();
                let n = v["samples"].as_array().unwrap().len();
                assert!(
                    m.len() <= max_bytes || n == 1,
                    "max {max_bytes}: a message of {n} samples has {} bytes",
                    m.len()
                );
                got.extend(
                    v["samples"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|s| s["id"].as_str().unwrap().to_string()),
                );
            }
            assert_eq!(got, ids(&batch), "max {max_bytes}: every id once, in order");
            // packing is tight: no two neighbours would have fitted together
            for pair in messages.windows(2) {
                assert!(
                    pair[0].len() + one > max_bytes,
                    "max {max_bytes}: under-packed"
                );
            }
        }
        let at_limit = encode_messages(&batch, MAX_MESSAGE_BYTES);
        assert!(
            at_limit.len() > 1,
            "2,000 samples need more than one 256 KiB message"
        );
    }

    // --- error classification ----------------------------------------------

    #[test]
    fn retry_after_forms() {
        let now = Timestamp::from_second(784_111_777).unwrap(); // Sun, 06 Nov 1994 08:49:37 GMT
        for (headers, expected) in [
            (vec![("retry-after", "7")], Some(Duration::from_secs(7))),
            (vec![("retry-after", " 0 ")], Some(Duration::ZERO)),
            (
                vec![("retry-after", "Sun, 06 Nov 1994 08:50:07 GMT")],
                Some(Duration::from_secs(30)),
            ),
            (
                vec![("retry-after", "Sun, 06 Nov 1994 08:49:00 GMT")],
                Some(Duration::ZERO),
            ),
            (vec![("retry-after", "soon")], None),
            (
                vec![("retry-after-ms", "1500"), ("retry-after", "9")],
                Some(Duration::from_millis(1500)),
            ),
            (vec![], None),
        ] {
            let mut map = reqwest::header::HeaderMap::new();
            for (k, v) in &headers {
                map.insert(*k, v.parse().unwrap());
            }
            assert_eq!(retry_after(&map, now), expected, "{headers:?}");
        }
    }

    #[test]
    fn statuses_map_to_classes() {
        let body = r#"{"error":{"code":"SomeCode","message":"some message","target":null}}"#;
        for (status, class) in [
            (429, "transient"),
            (500, "transient"),
            (502, "transient"),
            (503, "transient"),
            (504, "transient"),
            (400, "rejected"),
            (413, "rejected"),
            (401, "permanent"),
            (403, "permanent"),
            (404, "permanent"),
            (405, "permanent"),
            (301, "permanent"),
        ] {
            let status = reqwest::StatusCode::from_u16(status).unwrap();
            let e = classify_status(status, &Default::default(), body, None, Timestamp::now());
            assert_eq!(e.class(), class, "{status}");
            let text = e.to_string();
            assert!(text.contains("SomeCode: some message"), "{text}");
            assert!(text.contains(&status.as_u16().to_string()), "{text}");
        }
    }

    #[test]
    fn error_details() {
        let s = reqwest::StatusCode::BAD_REQUEST;
        for (body, expected) in [
            (
                r#"{"error":{"code":"C","message":"M"}}"#,
                "400 Bad Request: C: M",
            ),
            (r#"{"error":{"message":"M"}}"#, "400 Bad Request: M"),
            ("", "400 Bad Request"),
            ("plain text", "400 Bad Request: plain text"),
        ] {
            assert_eq!(error_detail(s, body), expected);
        }
        assert_eq!(
            error_detail(s, &"x".repeat(1000)).len(),
            "400 Bad Request: ".len() + 200
        );
    }

    #[test]
    fn clock_hints() {
        let now = Timestamp::from_second(1_800_000_000).unwrap();
        let at = |offset: i64| Some(Timestamp::from_second(1_800_000_000 + offset).unwrap());
        for (state, server, expected) in [
            (ClockState::Unknown, None, None),
            (ClockState::Synchronised, None, None),
            (
                ClockState::Unsynchronised,
                None,
                Some(CLOCK_HINT.to_string()),
            ),
            (ClockState::Unknown, at(5), None),
            (ClockState::Unknown, at(-30), None),
            (
                ClockState::Unknown,
                at(3600),
                Some(format!(
                    "the system clock is 3600 s behind the service's; {CLOCK_HINT}"
                )),
            ),
            (
                ClockState::Synchronised,
                at(-120),
                Some(format!(
                    "the system clock is 120 s ahead of the service's; {CLOCK_HINT}"
                )),
            ),
            (
                ClockState::Unsynchronised,
                at(0),
                Some(CLOCK_HINT.to_string()),
            ),
        ] {
            assert_eq!(
                clock_hint(state, server, now),
                expected,
                "{state:?} {server:?}"
            );
        }
        assert_eq!(
            parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT"),
            Some(Timestamp::from_second(784_111_777).unwrap())
        );
    }

    // --- against the fake service --------------------------------------------

    #[tokio::test]
    async fn steady_state_publish_is_accepted() {
        for group in [None, Some("site_1")] {
            let server = wps_server::start(HUB, KEY).await;
            let mut sink = sink_for(&server, settings(group));
            assert_eq!(sink.name(), "webpubsub");
            assert_eq!(sink.max_batch(), MAX_BATCH);
            let batch = samples(3);
            for s in &batch {
                sink.send(std::slice::from_ref(s)).await.unwrap();
            }
            assert_eq!(server.accepted_ids(), ids(&batch));
            let accepted = server.accepted();
            assert_eq!(accepted.len(), 3, "one message per sample");
            assert!(accepted.iter().all(|a| a.group.as_deref() == group));
            assert!(server.refusals().is_empty(), "{:?}", server.refusals());
            // an empty batch sends nothing
            sink.send(&[]).await.unwrap();
            assert_eq!(server.request_count(), 3);
        }
    }

    #[tokio::test]
    async fn the_fake_refuses_bad_tokens() {
        let server = wps_server::start(HUB, KEY).await;
        let conn = ConnectionString::parse(&server.connection_string().replace(KEY, "not-the-key"))
            .unwrap();
        let mut sink = WebPubSubSink::new(conn, settings(None)).unwrap();
        let e = sink.send(&samples(1)).await.unwrap_err();
        assert_eq!(e.class(), "permanent", "{e}");
        assert!(e.to_string().contains("Unauthorized"), "{e}");
        assert!(server.accepted_ids().is_empty());
        // a hub the fake does not serve is a 400
        let conn = ConnectionString::parse(&server.connection_string()).unwrap();
        let other = WebPubSubSettings {
            hub: "other".into(),
            ..settings(None)
        };
        let e = WebPubSubSink::new(conn, other)
            .unwrap()
            .send(&samples(1))
            .await
            .unwrap_err();
        assert_eq!(e.class(), "rejected", "{e}");
        assert_no_secret(&e.to_string(), Some(&server));
    }

    #[tokio::test]
    async fn service_answers_map_to_error_classes() {
        let server = wps_server::start(HUB, KEY).await;
        let mut sink = sink_for(&server, settings(None)).with_clock_state(|| ClockState::Unknown);
        for (fault, class, retry, needle) in [
            (Fault::Unavailable, "transient", None, "ServiceUnavailable"),
            (
                Fault::TooManyRequests {
                    retry_after_secs: 7,
                },
                "transient",
                Some(Duration::from_secs(7)),
                "TooManyRequests",
            ),
            (
                Fault::Unauthorized,
                "permanent",
                None,
                "the access key was refused; check AZURE_WEBPUBSUB_CONNECTION_STRING in secrets.json",
            ),
            (Fault::BadRequest, "rejected", None, "InvalidMessage"),
            (Fault::PayloadTooLarge, "rejected", None, "PayloadTooLarge"),
        ] {
            server.inject(fault.clone(), 1);
            let e = sink.send(&samples(1)).await.unwrap_err();
            assert_eq!(e.class(), class, "{fault:?}: {e}");
            let text = e.to_string();
            assert!(text.contains(needle), "{fault:?}: {text}");
            assert!(!text.contains("NTP"), "{fault:?}: {text}");
            assert!(
                text.starts_with(char::is_lowercase) && !text.ends_with('.'),
                "{text}"
            );
            assert_no_secret(&format!("{e} {e:?}"), Some(&server));
            if let SinkError::Transient { retry_after, .. } = &e {
                assert_eq!(*retry_after, retry, "{fault:?}");
            }
            // the next request goes through again
            let batch = samples(1);
            sink.send(&batch).await.unwrap();
            assert_eq!(server.accepted_ids().last(), Some(&batch[0].id.to_string()));
        }
    }

    #[tokio::test]
    async fn a_refused_token_on_an_unsynchronised_clock_says_so() {
        let server = wps_server::start(HUB, KEY).await;
        let cases: [(fn() -> ClockState, bool); 3] = [
            (|| ClockState::Unsynchronised, true),
            (|| ClockState::Synchronised, false),
            (|| ClockState::Unknown, false),
        ];
        for (check, mentions_ntp) in cases {
            let state = check();
            let mut sink = sink_for(&server, settings(None)).with_clock_state(check);
            server.inject(Fault::Unauthorized, 1);
            let e = sink.send(&samples(1)).await.unwrap_err();
            assert_eq!(e.class(), "permanent");
            assert_eq!(
                e.to_string().contains("no NTP yet"),
                mentions_ntp,
                "{state:?}: {e}"
            );
            assert_no_secret(&e.to_string(), Some(&server));
        }
    }

    #[tokio::test]
    async fn connection_refused_is_transient_and_recovers() {
        let server = wps_server::start(HUB, KEY).await;
        let mut sink = sink_for(&server, settings(None));
        let first = samples(1);
        sink.send(&first).await.unwrap();
        server.stop().await;
        let e = sink.send(&samples(1)).await.unwrap_err();
        assert_eq!(e.class(), "transient", "{e}");
        assert!(matches!(
            e,
            SinkError::Transient {
                retry_after: None,
                ..
            }
        ));
        assert_no_secret(&format!("{e} {e:?}"), Some(&server));
        server.restart().await;
        let again = samples(1);
        sink.send(&again).await.unwrap();
        assert_eq!(server.accepted_ids(), [ids(&first), ids(&again)].concat());
    }

    #[tokio::test]
    async fn a_slow_answer_past_the_timeout_is_transient() {
        let server = wps_server::start(HUB, KEY).await;
        let timeout = Duration::from_millis(300);
        let mut sink = sink_for(
            &server,
            WebPubSubSettings {
                timeout,
                ..settings(None)
            },
        );
        server.inject(Fault::Delay(Duration::from_secs(5)), 1);
        let e = sink.send(&samples(1)).await.unwrap_err();
        assert_eq!(e.class(), "transient", "{e}");
        assert!(e.to_string().contains("no answer within 0.3 s"), "{e}");
        assert_no_secret(&format!("{e} {e:?}"), Some(&server));
    }

    #[tokio::test]
    async fn a_catch_up_batch_arrives_in_order_in_several_messages() {
        let server = wps_server::start(HUB, KEY).await;
        let mut sink = sink_for(&server, settings(None));
        sink.max_message_bytes = 16 * 1024;
        let batch = samples(MAX_BATCH as i64);
        sink.send(&batch).await.unwrap();
        let messages = server.accepted_messages();
        assert!(messages.len() > 1, "{} messages", messages.len());
        for m in &messages {
            assert!(serde_json::to_vec(m).unwrap().len() <= 16 * 1024);
        }
        assert_eq!(server.accepted_ids(), ids(&batch));
    }

    #[tokio::test]
    async fn a_failure_mid_batch_returns_the_error_and_a_resend_delivers_all() {
        let server = wps_server::start(HUB, KEY).await;
        let mut sink = sink_for(&server, settings(None));
        sink.max_message_bytes = 4 * 1024;
        let batch = samples(40);
        let messages = encode_messages(&batch, sink.max_message_bytes);
        assert!(messages.len() >= 3);
        let first_len =
            serde_json::from_slice::<serde_json::Value>(&messages[0]).unwrap()["samples"]
                .as_array()
                .unwrap()
                .len();
        // message 1 passes, message 2 meets a 503
        server.inject(Fault::Delay(Duration::ZERO), 1);
        server.inject(Fault::Unavailable, 1);
        let e = sink.send(&batch).await.unwrap_err();
        assert_eq!(e.class(), "transient");
        assert_eq!(server.request_count(), 2, "no message after the failed one");
        assert_eq!(server.accepted_ids(), ids(&batch[..first_len]));
        // at least once: the resend repeats message 1, subscribers dedupe on id
        sink.send(&batch).await.unwrap();
        assert_eq!(
            server.accepted_ids(),
            [ids(&batch[..first_len]), ids(&batch)].concat()
        );
    }
}

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
//! `POST {endpoint}[:port]/api/hubs/{hub}/groups/{group}/:send?api-version=2024-12-01`
//! (hub and group percent-encoded as path segments; names checked by the
//! service's rules, see [`validate_hub`] and [`validate_group`]),
//! `Content-Type: application/json`, `Authorization: Bearer <JWT>`. The token is
//! HS256-signed with the UTF-8 bytes of the access key, header
//! `{"alg":"HS256","typ":"JWT"}`, claims `{"aud":<the exact request URL>,"exp":<now + 60 s>}`
//! (what the official Python SDK sends). Any 2xx is success.
//!
//! | answer | class |
//! |---|---|
//! | 2xx | delivered |
//! | 429, 5xx, connection refused/reset, timeout | [`SinkError::Transient`] (with `Retry-After`) |
//! | 400, 413 | this message can never be accepted: its samples alone are refused ([`SinkError::RejectedSamples`], once the batch's other messages went through; [`SinkError::Rejected`] when every message was refused) |
//! | 401, 403, other 4xx, 3xx | [`SinkError::Permanent`]: a human must fix the key or config |
//!
//! Tokens are minted on the service's time: a 401 whose `Date` header is more
//! than 30 s from our clock (a Pi before NTP) teaches the difference and the
//! request is retried once, so a logger whose clock is days off still publishes.
//!
//! # Message schema
//!
//! Alarms go out as messages of type `hxlog.alarm` (one event each, see
//! [`alarm_message`]), before the pending samples, in the order they happened.
//!
//! Every message is one JSON object of type `hxlog.samples`, version 1, holding
//! one or more samples, oldest first. In steady state a message holds one
//! sample; when catching up after an outage the samples of a batch are packed
//! into as few messages as fit in [`MAX_MESSAGE_BYTES`] each. Delivery is at
//! least once: a subscriber must deduplicate on `id`, **replacing** an earlier
//! copy by the later one: a sample taken before the device's clock was
//! synchronised may be published `unsynced` and, once its time is corrected,
//! published again with the same `id`, `"clock": "corrected"` and the true
//! `taken_at`.
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
//!       "clock": "synced",
//!       "taken_at_raw": null,
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
//! * `clock`: `synced` (the device's clock was synchronised), `unsynced` (it
//!   was not: `taken_at` may be far off; sent once `clock_sync_wait` passed
//!   without a sync) or `corrected` (`taken_at` recomputed from the boot clock
//!   after the sync); `taken_at_raw` is the time first recorded, set only when
//!   `corrected`. Added in version 1 without a bump: adding fields is
//!   compatible, subscribers ignore keys they do not know. A removed or
//!   renamed field, or one whose meaning changes, bumps `version`.
//! * `source`: `w1` (real sensors) or `mock` (simulated); `mock` is `true`
//!   exactly when `source` is `mock`, so simulated data is visibly marked.
//! * `readings`: one entry per mapped role, in mapping order. `celsius` is a
//!   number when `quality` is `ok` and `null` otherwise; `reason` is present
//!   only for a missing reading.
//! * `efficiency`: fractions (0.5, not 50) and the LMTD in kelvin; `null` where undefined.

use std::fmt;
use std::time::Duration;

use anyhow::Context;
use jiff::Timestamp;
use tracing::debug;

use crate::config::{Config, Secret, Secrets};
use crate::sample::Sample;
use crate::sinks::{Refusal, Sink, SinkError, SinkName};

mod classify;
mod clock;
mod connection_string;
mod message;
mod token;
#[cfg(test)]
mod tests;

use classify::{classify_status, classify_transport, parse_http_date};
use clock::clock_hint;
pub use clock::{ClockState, system_clock_state};
pub use connection_string::{ConnectionString, ConnectionStringError};
use message::pack;
pub use message::{ALARM_TYPE, MESSAGE_TYPE, MESSAGE_VERSION, alarm_message, encode_messages};
pub use token::TOKEN_LIFETIME;
use token::mint_token;

/// The REST API version every request names (`?api-version=`).
pub const API_VERSION: &str = "2024-12-01";

/// The hub used when the config names none.
pub const DEFAULT_HUB: &str = "heatexchanger";

/// The per-request timeout used when the config names none.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// The largest message body this sink sends, well under the service's 1 MB limit.
pub const MAX_MESSAGE_BYTES: usize = 256 * 1024;

/// The largest batch [`WebPubSubSink::send`] accepts from the forwarder.
pub const MAX_BATCH: usize = 500;

/// The longest hub name the service accepts.
pub const MAX_HUB_LEN: usize = 128;

/// The longest group name the service accepts.
pub const MAX_GROUP_LEN: usize = 1024;

/// Checks a hub name by the service's rule (REST reference, `hub` parameter:
/// `^[A-Za-z][A-Za-z0-9_`,.[\]]{0,127}$`): a letter, then up to 127 letters,
/// digits and `` _`,.[] ``.
pub fn validate_hub(hub: &str) -> Result<(), String> {
    const RULE: &str = "a letter, then up to 127 letters, digits and _`,.[]";
    if !hub.starts_with(|c: char| c.is_ascii_alphabetic()) {
        return Err(format!(
            "Web PubSub hub {hub:?} must start with a letter ({RULE})"
        ));
    }
    if let Some(c) = hub
        .chars()
        .find(|&c| !(c.is_ascii_alphanumeric() || "_`,.[]".contains(c)))
    {
        return Err(format!(
            "Web PubSub hub {hub:?} may not contain {c:?} ({RULE})"
        ));
    }
    if hub.len() > MAX_HUB_LEN {
        return Err(format!(
            "Web PubSub hub name is {} characters long, more than {MAX_HUB_LEN} ({RULE})",
            hub.len()
        ));
    }
    Ok(())
}

/// Checks a group name by the service's rule (REST reference, `group`
/// parameter: 1 to 1024 characters, pattern `^(?!\s+$).+$`: not only
/// whitespace, no line break). Any other character is allowed: it is
/// percent-encoded in the URL. `.` and `..` are refused because a URL cannot
/// carry them as a path segment.
pub fn validate_group(group: &str) -> Result<(), String> {
    let len = group.chars().count();
    if len == 0 || len > MAX_GROUP_LEN {
        return Err(format!(
            "Web PubSub group name must be 1 to {MAX_GROUP_LEN} characters long (it is {len})"
        ));
    }
    if group.trim().is_empty() {
        return Err("Web PubSub group name must not be only whitespace".to_string());
    }
    if group.contains(['\n', '\r']) {
        return Err(format!(
            "Web PubSub group {group:?} must not contain a line break"
        ));
    }
    if group == "." || group == ".." {
        return Err(format!(
            "Web PubSub group {group:?} cannot be addressed in a URL; choose another name"
        ));
    }
    Ok(())
}

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
    /// The service's clock minus ours, learned from the `Date` of a 401, in
    /// microseconds: tokens are minted on the service's time, so a clock days
    /// off (no NTP yet) still publishes (0 until a 401 says otherwise).
    skew_us: std::sync::atomic::AtomicI64,
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
        {
            // Each name is one path segment, percent-encoded as needed.
            let mut path = url
                .path_segments_mut()
                .map_err(|()| anyhow::anyhow!("the Web PubSub endpoint cannot carry a path"))?;
            path.clear().extend(["api", "hubs", &settings.hub]);
            if let Some(group) = &settings.group {
                path.extend(["groups", group]);
            }
            path.push(":send");
        }
        url.set_query(Some(&format!("api-version={API_VERSION}")));
        let client = reqwest::Client::builder()
            .timeout(settings.timeout)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| anyhow::anyhow!("cannot build the Web PubSub HTTP client: {e}"))?;
        Ok(WebPubSubSink {
            client,
            url: url.to_string(),
            key: conn.access_key().clone(),
            timeout: settings.timeout,
            max_message_bytes: MAX_MESSAGE_BYTES,
            clock_state: system_clock_state,
            skew_us: std::sync::atomic::AtomicI64::new(0),
        })
    }

    /// The sink `config` and `secrets` configure, `None` when they configure
    /// none (no `AZURE_WEBPUBSUB_CONNECTION_STRING`).
    pub fn from_config(config: &Config, secrets: &Secrets) -> Option<anyhow::Result<Self>> {
        let conn = secrets.webpubsub.as_ref()?;
        let conn = match ConnectionString::parse(conn.expose()) {
            Ok(c) => c,
            Err(e) => {
                return Some(Err(anyhow::anyhow!(
                    "secrets file {}: AZURE_WEBPUBSUB_CONNECTION_STRING: {e}",
                    config.secrets_file()
                )));
            }
        };
        let settings = WebPubSubSettings {
            hub: config.webpubsub_hub.clone(),
            group: config.webpubsub_group.clone(),
            timeout: config.webpubsub_timeout,
        };
        Some(WebPubSubSink::new(conn, settings).context("Web PubSub settings"))
    }

    /// Replaces the clock check used to explain a 401 (default [`system_clock_state`]).
    pub fn with_clock_state(mut self, check: fn() -> ClockState) -> Self {
        self.clock_state = check;
        self
    }

    /// Caps every message at `bytes` instead of [`MAX_MESSAGE_BYTES`] (a
    /// sample too big for the cap still goes alone in one message).
    pub fn with_max_message_bytes(mut self, bytes: usize) -> Self {
        self.max_message_bytes = bytes;
        self
    }

    /// The `:send` URL every request goes to (and the token's audience).
    #[cfg(test)]
    fn url(&self) -> &str {
        &self.url
    }

    /// Sends one message; the token is minted for exactly the URL sent, on
    /// the service's time. A 401 whose `Date` shows our clock off by more than
    /// the tolerance (a Pi before NTP) teaches the skew and is retried once.
    async fn send_message(&self, body: Vec<u8>) -> Result<reqwest::StatusCode, SinkError> {
        use std::sync::atomic::Ordering;
        match self.send_once(body.clone()).await {
            Err((e, Some(server))) => {
                let skew = server.as_microsecond() - Timestamp::now().as_microsecond();
                let known = self.skew_us.load(Ordering::Relaxed);
                if (skew - known).unsigned_abs() <= clock::CLOCK_SKEW_TOLERANCE.as_micros() as u64 {
                    return Err(e);
                }
                self.skew_us.store(skew, Ordering::Relaxed);
                tracing::warn!(
                    sink = "webpubsub",
                    skew_s = skew / 1_000_000,
                    "the service refused a token and its clock differs from ours: minting tokens on the service's time"
                );
                self.send_once(body).await.map_err(|(e, _)| e)
            }
            other => other.map_err(|(e, _)| e),
        }
    }

    /// One request; on a 401 also the service's `Date`, if it sent one.
    async fn send_once(
        &self,
        body: Vec<u8>,
    ) -> Result<reqwest::StatusCode, (SinkError, Option<Timestamp>)> {
        let skew = jiff::SignedDuration::from_micros(
            self.skew_us.load(std::sync::atomic::Ordering::Relaxed),
        );
        let now = Timestamp::now()
            .checked_add(skew)
            .unwrap_or(Timestamp::now());
        let token =
            mint_token(&self.key, &self.url, now).map_err(|e| (SinkError::permanent(e), None))?;
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
            Err(e) => {
                return Err((
                    self.redact(classify_transport(&e, self.timeout), &token),
                    None,
                ));
            }
        };
        let status = response.status();
        if status.is_success() {
            return Ok(status);
        }
        let headers = response.headers().clone();
        // The error body is small; a failure to read it only loses detail.
        let body = response.text().await.unwrap_or_default();
        let server_date = (status == reqwest::StatusCode::UNAUTHORIZED)
            .then(|| {
                headers
                    .get(reqwest::header::DATE)
                    .and_then(|v| v.to_str().ok())
                    .and_then(parse_http_date)
            })
            .flatten();
        let clock = (status == reqwest::StatusCode::UNAUTHORIZED)
            .then(|| clock_hint((self.clock_state)(), server_date, Timestamp::now()))
            .flatten();
        let error = classify_status(status, &headers, &body, clock, Timestamp::now());
        Err((self.redact(error, &token), server_date))
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
            SinkError::RejectedSamples { refused } => SinkError::RejectedSamples {
                refused: refused
                    .into_iter()
                    .map(|r| crate::sinks::Refusal {
                        reason: clean(r.reason),
                        ..r
                    })
                    .collect(),
            },
        }
    }
}

impl Sink for WebPubSubSink {
    fn name(&self) -> &'static str {
        SinkName::Webpubsub.as_str()
    }

    fn max_batch(&self) -> usize {
        MAX_BATCH
    }

    fn publishes_alarms(&self) -> bool {
        true
    }

    /// One `hxlog.alarm` message per event, in order. An event the service
    /// refuses (400, 413) refuses only itself: the later events are still
    /// sent, and the refusal is returned once they all went through
    /// ([`SinkError::RejectedSamples`] naming the refused events' ids, or
    /// [`SinkError::Rejected`] when every event was refused). Any other
    /// failure stops at once and is returned as is: the forwarder sends the
    /// events again from the first, and subscribers deduplicate on the id.
    async fn send_alarms(&mut self, alarms: &[crate::alarms::Published]) -> Result<(), SinkError> {
        let mut refused: Vec<Refusal> = vec![];
        let mut reason = None;
        for a in alarms {
            match self.send_message(message::alarm_message(a)).await {
                Ok(status) => {
                    debug!(sink = "webpubsub", status = status.as_u16(), alarm = %a.event.key.alarm, role = %a.event.key.role, "alarm published")
                }
                Err(SinkError::Rejected { message }) => {
                    debug!(sink = "webpubsub", error = %message, alarm = %a.event.key.alarm, role = %a.event.key.role, "alarm refused");
                    refused.push(Refusal {
                        id: a.id,
                        reason: message.clone(),
                    });
                    reason.get_or_insert(message);
                }
                Err(e) => return Err(e),
            }
        }
        match reason {
            None => Ok(()),
            Some(message) if refused.len() == alarms.len() => Err(SinkError::Rejected { message }),
            Some(_) => Err(SinkError::RejectedSamples { refused }),
        }
    }

    /// Sends every message of the batch. A message the service refuses (400,
    /// 413) refuses only its own samples: the other messages are still sent,
    /// and the refusal is returned once they all went through
    /// ([`SinkError::RejectedSamples`], or [`SinkError::Rejected`] when every
    /// message was refused). Any other failure stops the batch at once and is
    /// returned as is: the forwarder sends the whole batch again later.
    async fn send(&mut self, batch: &[Sample]) -> Result<(), SinkError> {
        let messages = pack(batch, self.max_message_bytes);
        let total = messages.len();
        let mut refused: Vec<Refusal> = vec![];
        let mut reason = None;
        for (i, (samples, body)) in messages.into_iter().enumerate() {
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
                    let SinkError::Rejected { message } = e else {
                        return Err(e);
                    };
                    refused.extend(batch[samples].iter().map(|s| Refusal {
                        id: s.id,
                        reason: message.clone(),
                    }));
                    reason.get_or_insert(message);
                }
            }
        }
        match reason {
            None => Ok(()),
            Some(message) if refused.len() == batch.len() => Err(SinkError::Rejected { message }),
            Some(_) => Err(SinkError::RejectedSamples { refused }),
        }
    }
}

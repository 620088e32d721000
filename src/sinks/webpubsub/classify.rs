//! The service's answers (or their absence), classified into [`SinkError`]s.

use std::time::Duration;

use jiff::Timestamp;

use crate::sinks::SinkError;

const PERMANENT_KEY_HINT: &str =
    "the access key was refused; check AZURE_WEBPUBSUB_CONNECTION_STRING in secrets.json";

/// Classifies a request that got no HTTP answer.
pub(super) fn classify_transport(e: &reqwest::Error, timeout: Duration) -> SinkError {
    let what = if e.is_timeout() {
        format!("no answer within {} s", timeout.as_secs_f64())
    } else if e.is_connect() {
        "cannot connect".to_string()
    } else {
        "request failed".to_string()
    };
    // The chain says why (refused, reset, DNS); the URL in it holds no secret.
    let chain = crate::sinks::error_chain(e);
    if e.is_builder() {
        return SinkError::permanent(format!("webpubsub: cannot build the request: {chain}"));
    }
    SinkError::transient(format!("webpubsub: {what}: {chain}"))
}

/// Classifies a non-2xx answer from its status, headers and body.
pub(super) fn classify_status(
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
pub(super) fn error_detail(status: reqwest::StatusCode, body: &str) -> String {
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
pub(super) fn retry_after(
    headers: &reqwest::header::HeaderMap,
    now: Timestamp,
) -> Option<Duration> {
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
pub(super) fn parse_http_date(value: &str) -> Option<Timestamp> {
    static PARSER: jiff::fmt::rfc2822::DateTimeParser = jiff::fmt::rfc2822::DateTimeParser::new();
    PARSER.parse_timestamp(value.trim()).ok()
}

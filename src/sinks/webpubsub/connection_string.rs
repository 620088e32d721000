//! The connection string the Azure portal hands out: parsed, validated,
//! and redacted in every `Debug`/`Display`.

use std::fmt;
use std::str::FromStr;

use crate::config::Secret;

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
    pub(super) fn base_url(&self) -> Result<reqwest::Url, ConnectionStringError> {
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

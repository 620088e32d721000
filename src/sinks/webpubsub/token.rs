//! The bearer token: an HS256 JWT minted per request for its exact URL.

use std::time::Duration;

use jiff::Timestamp;
use serde::Serialize;

use crate::config::Secret;

/// Lifetime of an access token: the official Python SDK's value. A token is
/// minted per request, so this only has to cover one request.
pub const TOKEN_LIFETIME: Duration = Duration::from_secs(60);

#[derive(Serialize)]
struct Claims<'a> {
    aud: &'a str,
    exp: i64,
}

/// The token header, byte for byte what the Python SDK (PyJWT) sends.
const JWT_HEADER: &str = r#"{"alg":"HS256","typ":"JWT"}"#;

/// Mints the bearer token for one request to `url` (the exact URL sent).
pub(super) fn mint_token(key: &Secret, url: &str, now: Timestamp) -> Result<String, String> {
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
pub(super) fn base64url(bytes: &[u8]) -> String {
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

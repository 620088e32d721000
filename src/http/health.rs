//! `GET /healthz`: 200 `ok` while sampling is on schedule and the outbox is
//! writable, else 503 with the reason (the verdict of [`crate::monitor`],
//! the same `hxlog status` prints).

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use super::{ApiError, Ctx};

/// The health check.
pub async fn healthz(State(ctx): State<Arc<Ctx>>) -> Result<Response, ApiError> {
    let v = ctx.read(|ctx, o| ctx.verdict(o)).await?;
    let status = if v.healthy {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    Ok((status, format!("{}\n", v.reason)).into_response())
}

//! `GET /` and `/assets/*`: the dashboard, a static page and its assets,
//! compiled into the binary (no external request; about 75 KB in all).
//!
//! The charts use uPlot 1.6.32 (MIT, `assets/uplot/LICENSE`), vendored from
//! the npm registry: 50 KB minified, no dependencies, canvas drawing that
//! stays fast with thousands of points, and min/max bands for downsampled
//! data. The page polls `/api/current` at the sampling interval and
//! `/api/samples` once a new point can show (every interval, or every bucket).

use axum::extract::Path;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

const PAGE: &str = include_str!("../../assets/dashboard.html");

/// The assets: name, content type, body.
const ASSETS: &[(&str, &str, &str)] = &[
    (
        "dashboard.js",
        "text/javascript; charset=utf-8",
        include_str!("../../assets/dashboard.js"),
    ),
    (
        "dashboard.css",
        "text/css; charset=utf-8",
        include_str!("../../assets/dashboard.css"),
    ),
    (
        "uPlot.iife.min.js",
        "text/javascript; charset=utf-8",
        include_str!("../../assets/uplot/uPlot.iife.min.js"),
    ),
    (
        "uPlot.min.css",
        "text/css; charset=utf-8",
        include_str!("../../assets/uplot/uPlot.min.css"),
    ),
    (
        "uPlot.LICENSE",
        "text/plain; charset=utf-8",
        include_str!("../../assets/uplot/LICENSE"),
    ),
];

/// Headers every page answer carries: no external origin may be used.
const CSP: &str = "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; connect-src 'self'";

/// The page.
pub async fn page() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CONTENT_SECURITY_POLICY, CSP),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        PAGE,
    )
        .into_response()
}

/// One asset, or 404.
pub async fn asset(Path(name): Path<String>) -> Response {
    match ASSETS.iter().find(|(n, _, _)| *n == name) {
        Some((_, kind, body)) => (
            [
                (header::CONTENT_TYPE, *kind),
                (header::CACHE_CONTROL, "no-cache"),
            ],
            *body,
        )
            .into_response(),
        None => (StatusCode::NOT_FOUND, "no such asset\n").into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_weighs_at_most_200_kb_and_names_only_its_own_assets() {
        let total: usize = PAGE.len() + ASSETS.iter().map(|(_, _, b)| b.len()).sum::<usize>();
        assert!(total <= 200 * 1024, "{total} bytes");
        for src in PAGE
            .split(['"', '\''])
            .filter(|s| s.starts_with("/assets/"))
        {
            let name = src.trim_start_matches("/assets/");
            assert!(
                ASSETS.iter().any(|(n, _, _)| *n == name),
                "{src} is not served"
            );
        }
        for text in [PAGE, ASSETS[0].2] {
            assert!(
                !text.contains("http://") && !text.contains("https://"),
                "an external URL"
            );
        }
    }
}

//! The chat page, embedded in the binary at build time (see build.rs) so that it is served the
//! same from any working directory.

use axum::extract::Path;
use axum::http::header;
use axum::response::{IntoResponse, Response};

include!(concat!(env!("OUT_DIR"), "/web_files.rs"));

fn content_type(name: &str) -> &'static str {
    match name.rsplit('.').next() {
        Some("html") => "text/html; charset=utf-8",
        Some("js") | Some("mjs") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        Some("ico") => "image/x-icon",
        Some("json") => "application/json",
        _ => "application/octet-stream",
    }
}

/// The page's policy, sent as a header (a `<meta>` tag cannot carry `frame-ancestors`): only
/// its own scripts, styles and connections; no plugins, no `<base>`, no form posts; never framed
/// (clickjacking of the stop and key buttons).
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; \
    style-src 'self'; img-src 'self' data:; connect-src 'self'; object-src 'none'; \
    base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

fn file(name: &str) -> Response {
    match WEB_FILES.iter().find(|(n, _)| *n == name) {
        Some((n, bytes)) => (
            [
                (header::CONTENT_TYPE, content_type(n)),
                (header::CACHE_CONTROL, "no-cache"),
                (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
                (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
                (header::REFERRER_POLICY, "no-referrer"),
                (header::X_FRAME_OPTIONS, "DENY"),
            ],
            *bytes,
        )
            .into_response(),
        // Every error is JSON in OpenAI's shape, including a mistyped path (`/v1x`, say).
        None => crate::error::GatewayError::NotFound(format!("no such endpoint: /{name}"))
            .into_response(),
    }
}

pub async fn index() -> Response {
    file("index.html")
}

pub async fn asset(Path(name): Path<String>) -> Response {
    file(&name)
}

/// Names of the embedded files (for tests).
pub fn names() -> Vec<&'static str> {
    WEB_FILES.iter().map(|(n, _)| *n).collect()
}

//! The console's only script and stylesheet, compiled into the binary and served from its own
//! origin (the CSP admits nothing else): no JS build step, no third-party code.

use axum::http::header;
use axum::response::IntoResponse;

/// Live batch progress through an `EventSource`; pages work without it.
const SCRIPT: &str = include_str!("assets/console.js");
/// Layout and colours, including the SVG charts'.
const STYLE: &str = include_str!("assets/console.css");

/// `GET /static/console.js`.
pub(crate) async fn script() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        SCRIPT,
    )
}

/// `GET /static/console.css`.
pub(crate) async fn style() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/css; charset=utf-8")], STYLE)
}

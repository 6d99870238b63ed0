//! The pages: one HTML shell, one stylesheet and one JavaScript module, compiled into the binary. The module
//! routes on the URL's fragment (`#/topics/orders`), so every view has a link and a reload keeps it.

use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;

const INDEX: &str = include_str!("../assets/index.html");
const APP_JS: &str = include_str!("../assets/app.js");
const STYLE: &str = include_str!("../assets/style.css");

fn asset(kind: &'static str, body: &'static str) -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, kind),
            // The assets change only with the binary; a short cache keeps an upgrade visible within minutes.
            (header::CACHE_CONTROL, "max-age=60"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        body,
    )
}

/// The page, with a fresh CSRF token in a cookie when the browser has none yet (its script sends it back in a
/// header on every change, see `api::guard`). Not cached, so a reload always passes here.
fn index(headers: axum::http::HeaderMap) -> axum::response::Response {
    let mut r = (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        INDEX,
    )
        .into_response();
    if crate::api::csrf_cookie(&headers).is_none_or(str::is_empty) {
        let token = uuid::Uuid::new_v4().simple().to_string();
        // Readable by the page's script (not HttpOnly); never sent with another site's request (SameSite).
        let cookie = format!(
            "{}={token}; Path=/; SameSite=Strict",
            crate::api::CSRF_COOKIE
        );
        if let Ok(v) = axum::http::HeaderValue::from_str(&cookie) {
            r.headers_mut().insert(header::SET_COOKIE, v);
        }
    }
    r
}

pub fn routes() -> axum::Router {
    axum::Router::new()
        .route("/", get(|h: axum::http::HeaderMap| async move { index(h) }))
        .route(
            "/assets/app.js",
            get(|| async { asset("text/javascript; charset=utf-8", APP_JS) }),
        )
        .route(
            "/assets/style.css",
            get(|| async { asset("text/css; charset=utf-8", STYLE) }),
        )
}

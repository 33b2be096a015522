//! The browser console at `/console`: one HTML page, one script, one stylesheet, embedded in
//! the binary (no CDN, no build step). The page talks to the JSON API with the API key the
//! user signs in with; these handlers only serve the files.
//!
//! Unknown paths under `/console/` are the router's envelope 404 like any other unknown path:
//! the page routes by `#/…` fragments, which never reach the server.

use crate::app::AppState;
use axum::Router;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use http::{HeaderValue, header};

const INDEX_HTML: &str = include_str!("console/index.html");
const APP_JS: &str = include_str!("console/app.js");
const APP_CSS: &str = include_str!("console/app.css");

/// Only our own files, no inline script or style, no framing, no form posts elsewhere: the
/// page holds an API key, so an injected script must have nowhere to run or send it.
pub const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/console", get(index))
        .route("/console/", get(index))
        .route("/console/app.js", get(script))
        .route("/console/app.css", get(style))
}

/// The page itself is revalidated on every load so a new server version is picked up at once;
/// the assets may be cached briefly (they change only with the binary).
fn asset(body: &'static str, content_type: &'static str, cache: &'static str) -> Response {
    let mut r = body.into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    r
}

async fn index() -> Response {
    asset(INDEX_HTML, "text/html; charset=utf-8", "no-cache")
}

async fn script() -> Response {
    asset(APP_JS, "text/javascript; charset=utf-8", "public, max-age=300")
}

async fn style() -> Response {
    asset(APP_CSS, "text/css; charset=utf-8", "public, max-age=300")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::adapters::{Sqlite, SqliteQueue, SqliteStore};
    use crate::api::{Part, router_for};
    use crate::app::{App, AppConfig};
    use axum::body::Body;
    use http::{Method, Request, StatusCode};
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    /// Serving files reads nothing, but the routers need a state (and its database directory
    /// must outlive the test's requests).
    fn state() -> (AppState, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let db = Sqlite::open(&dir.path().join("t.db")).unwrap();
        let state = App::new(
            std::sync::Arc::new(SqliteStore::new(db.clone())),
            std::sync::Arc::new(SqliteQueue::new(db, "steps", 5)),
            std::sync::Arc::new(crate::secrets::SecretBox::ephemeral()),
            AppConfig::default(),
        );
        (state, dir)
    }

    async fn get_path(part: Part, path: &str) -> (StatusCode, http::HeaderMap, String) {
        let (state, _dir) = state();
        let app = router_for(part, state);
        let res = app.oneshot(Request::get(path).body(Body::empty()).unwrap()).await.unwrap();
        let (parts, body) = res.into_parts();
        let bytes = body.collect().await.unwrap().to_bytes();
        (parts.status, parts.headers, String::from_utf8_lossy(&bytes).into_owned())
    }

    #[tokio::test]
    async fn console_serves_the_page_with_a_strict_csp() {
        for path in ["/console", "/console/"] {
            let (status, h, body) = get_path(Part::Api, path).await;
            assert_eq!(status, StatusCode::OK, "{path}");
            assert_eq!(h[header::CONTENT_TYPE], "text/html; charset=utf-8");
            let csp = h[header::CONTENT_SECURITY_POLICY].to_str().unwrap();
            assert!(csp.starts_with("default-src 'self'"), "{csp}");
            assert!(!csp.contains("unsafe-inline") && !csp.contains("unsafe-eval"), "{csp}");
            assert_eq!(h[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
            assert_eq!(h[header::CACHE_CONTROL], "no-cache");
            assert!(body.contains("<script src=\"/console/app.js\""), "{body}");
        }
    }

    #[tokio::test]
    async fn console_page_has_no_inline_script_or_style() {
        // The CSP would block them; a page relying on one would break silently.
        let lower = INDEX_HTML.to_ascii_lowercase();
        for script in lower.match_indices("<script").map(|(i, _)| &lower[i..]) {
            assert!(script.starts_with("<script src="), "inline script in index.html");
        }
        assert!(
            !lower.contains("<style") && !lower.contains(" style=") && !lower.contains(" on"),
            "inline style or handler"
        );
    }

    #[tokio::test]
    async fn console_assets_have_their_content_types() {
        let (status, h, body) = get_path(Part::Api, "/console/app.js").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(h[header::CONTENT_TYPE], "text/javascript; charset=utf-8");
        assert_eq!(h[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
        assert_eq!(body, APP_JS);
        let (status, h, body) = get_path(Part::Api, "/console/app.css").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(h[header::CONTENT_TYPE], "text/css; charset=utf-8");
        assert_eq!(body, APP_CSS);
    }

    #[tokio::test]
    async fn unknown_console_asset_is_the_envelope_404() {
        let (status, h, body) = get_path(Part::Api, "/console/nope.js").await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert!(h[header::CONTENT_TYPE].to_str().unwrap().starts_with("application/json"));
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["error"]["code"], "NOT_FOUND", "{v}");
    }

    #[tokio::test]
    async fn console_is_the_api_function_and_on_the_full_router() {
        assert_eq!(Part::of(&Method::GET, "/console"), Part::Api);
        assert_eq!(Part::of(&Method::GET, "/console/app.js"), Part::Api);
        let (state, _dir) = state();
        let app = crate::api::router(state);
        let res = app.oneshot(Request::get("/console").body(Body::empty()).unwrap()).await.unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        // Another function's router does not serve it.
        let (status, _, _) = get_path(Part::Hook, "/console").await;
        assert_eq!(status, StatusCode::NOT_FOUND);
    }

    #[test]
    fn console_assets_stay_small() {
        // The api Lambda's zip is near its 5 MB budget (DESIGN.md §8).
        let total = INDEX_HTML.len() + APP_JS.len() + APP_CSS.len();
        assert!(total < 40 * 1024, "console assets are {total} bytes");
    }
}

//! The HTTP surface: one axum router every deployment mounts (local server, Lambda).
//!
//! Handlers stay thin: extract (our [`extract`] types, so rejections use the error
//! envelope) → call the domain → map the result. Errors become responses in [`error`] only.

pub mod accounts;
pub mod auth;
pub mod callbacks;
pub mod error;
pub mod extract;
pub mod hooks;
pub mod runs;
pub mod triggers;
pub mod workflows;

#[cfg(test)]
mod tests;

use crate::app::AppState;
use crate::error::{Error, Result};
use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use http::header;
use serde::Deserialize;
use serde_json::json;

/// The OpenAPI 3.1 description of the API, served at `GET /api/v1/openapi.json`.
pub const OPENAPI_JSON: &str = include_str!("openapi.json");

pub const DEFAULT_PAGE_LIMIT: usize = 20;
pub const MAX_PAGE_LIMIT: usize = 100;

/// The whole API. Paths are absolute (`/api/v1/...`); unknown paths are 404 and known paths
/// with the wrong method 405, both in the error envelope; bodies over
/// `config.max_body_bytes` are 413; too many or too large headers are 431
/// ([`extract::limit_headers`]).
pub fn router(state: AppState) -> Router {
    let max_body = state.config.max_body_bytes;
    Router::new()
        .route("/api/v1/health", get(health))
        .route("/api/v1/openapi.json", get(openapi))
        .merge(accounts::routes())
        .merge(workflows::routes())
        .merge(runs::routes())
        .merge(triggers::routes())
        .merge(callbacks::routes())
        .merge(hooks::routes())
        .fallback(extract::not_found)
        .method_not_allowed_fallback(extract::method_not_allowed)
        .layer(DefaultBodyLimit::max(max_body))
        .layer(axum::middleware::from_fn(extract::limit_headers))
        .with_state(state)
}

async fn health() -> impl IntoResponse {
    axum::Json(json!({"status": "ok", "version": env!("CARGO_PKG_VERSION")}))
}

async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI_JSON).into_response()
}

/// `?limit=&cursor=` of list endpoints.
#[derive(Debug, Default, Deserialize)]
pub struct ListParams {
    #[serde(default)]
    pub limit: Option<String>,
    #[serde(default)]
    pub cursor: Option<String>,
}

impl ListParams {
    /// `limit` as 1..=[`MAX_PAGE_LIMIT`], [`DEFAULT_PAGE_LIMIT`] when absent.
    pub fn limit(&self) -> Result<usize> {
        parse_limit(self.limit.as_deref())
    }
    pub fn cursor(&self) -> Option<String> {
        self.cursor.clone().filter(|c| !c.is_empty())
    }
}

pub fn parse_limit(raw: Option<&str>) -> Result<usize> {
    match raw {
        None | Some("") => Ok(DEFAULT_PAGE_LIMIT),
        Some(s) => match s.parse::<usize>() {
            Ok(n) if (1..=MAX_PAGE_LIMIT).contains(&n) => Ok(n),
            _ => Err(Error::validation_at(
                vec![json!("limit")],
                format!("`limit` must be an integer from 1 to {MAX_PAGE_LIMIT}"),
            )),
        },
    }
}

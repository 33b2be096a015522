//! The HTTP surface: one axum router every deployment mounts (local server, Lambda).
//!
//! Handlers stay thin: extract (our [`extract`] types, so rejections use the error
//! envelope) → call the domain → map the result. Errors become responses in [`error`] only.

pub mod accounts;
pub mod ai;
pub mod auth;
pub mod callbacks;
pub mod client;
pub mod connections;
pub mod console;
pub mod deadline;
pub mod error;
pub mod extract;
pub mod hooks;
pub mod inbound;
pub mod runs;
pub mod triggers;
pub mod workflows;

#[cfg(test)]
mod openapi_tests;
#[cfg(test)]
mod parts_tests;
#[cfg(test)]
mod tests;

use crate::app::AppState;
use crate::error::{Error, Result};
use axum::Router;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use http::{Method, header};
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
    parts::execute_blocks(&state);
    finish(
        api_routes()
            .merge(accounts::register_routes())
            .merge(runs::start_routes())
            .merge(runs::execute_routes())
            .merge(runs::task_routes())
            .merge(door_routes()),
        state,
    )
}

/// What every router answers besides its routes: the envelope 404 and 405, the body and
/// header limits.
fn finish(routes: Router<AppState>, state: AppState) -> Router {
    let max_body = state.config.max_body_bytes;
    routes
        .fallback(extract::not_found)
        .method_not_allowed_fallback(extract::method_not_allowed)
        .layer(DefaultBodyLimit::max(max_body))
        .layer(axum::middleware::from_fn(extract::limit_headers))
        .with_state(state)
}

/// The doors without an API key: trigger URLs, webhooks, inbound callbacks.
fn door_routes() -> Router<AppState> {
    hooks::routes().merge(inbound::routes())
}

/// Everything API Gateway sends to the catch-all `api` function.
fn api_routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/health", get(health))
        .route("/api/v1/openapi.json", get(openapi))
        .merge(accounts::routes())
        .merge(workflows::routes())
        .merge(runs::routes())
        .merge(ai::routes())
        .merge(triggers::routes())
        .merge(connections::routes())
        .merge(callbacks::routes())
        .merge(console::routes())
}

/// One router per Lambda function, each naming only its own handlers, so that a function's
/// binary links only the code its routes reach (DESIGN.md §8: zips ≤ 5 MB): a function calls
/// its own, never [`router_for`], whose `match` would reach them all.
pub mod parts {
    use super::*;

    pub fn register(state: AppState) -> Router {
        only(Part::Register, accounts::register_routes(), state)
    }
    pub fn trigger(state: AppState) -> Router {
        only(Part::Trigger, runs::start_routes(), state)
    }
    pub fn hook(state: AppState) -> Router {
        only(Part::Hook, door_routes(), state)
    }
    pub fn task_complete(state: AppState) -> Router {
        only(Part::TaskComplete, runs::task_routes(), state)
    }
    /// The only HTTP function that runs blocks: it plugs in the executors that call out.
    pub fn execute(state: AppState) -> Router {
        execute_blocks(&state);
        only(Part::Execute, runs::execute_routes(), state)
    }
    pub fn api(state: AppState) -> Router {
        // A method the table gives another function, on a path the api function also
        // serves (`GET /runs`) or not at all (`PUT /auth/register`), is the full router's
        // 405 here, not a 404: API Gateway sends every method it does not route to this one.
        let mut routes = api_routes();
        for (method, path, _) in ROUTES {
            if let Some(filter) =
                method.and_then(|m| axum::routing::MethodFilter::try_from(Method::from_bytes(m.as_bytes()).ok()?).ok())
            {
                routes = routes.route(path, axum::routing::on(filter, extract::method_not_allowed));
            }
        }
        only(Part::Api, routes, state)
    }

    pub(super) fn execute_blocks(state: &AppState) {
        state.plug_block_executors();
    }

    fn only(part: Part, routes: Router<AppState>, state: AppState) -> Router {
        finish(routes, state).layer(middleware::from_fn_with_state(part, only_part))
    }
}

/// One Lambda function's share of the API (DESIGN.md §1: one function per
/// `functions/<name>`). API Gateway routes each request to one function by method and path
/// (`template.yaml`); [`Part::of`] is the same table, so a function answers only its own
/// routes and the envelope 404 for the rest, whoever calls it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Part {
    /// `POST /auth/register`: the only door without a key that creates something.
    Register,
    /// Run starts with an API key: `POST /workflows/{id}/run`, `POST /trigger`, `POST /runs`.
    Trigger,
    /// Doors without an API key: trigger URLs, webhooks, inbound callbacks.
    Hook,
    /// Sync execute: held open up to the sync deadline, so it gets its own timeout and concurrency.
    Execute,
    /// `POST /runs/{id}/tasks/{task_id}/complete`: a person answering.
    TaskComplete,
    /// Everything else (reads, management, meta): API Gateway's catch-all route.
    Api,
}

/// Method (`None`: any), path pattern (`{x}` is one segment, a trailing `{x+}` one or more),
/// and the part serving it. Anything not listed is [`Part::Api`]. Keep in step with the
/// `HttpApi` events in `template.yaml` (a test in `tests/` compares them).
pub const ROUTES: &[(Option<&str>, &str, Part)] = &[
    (Some("POST"), "/api/v1/auth/register", Part::Register),
    (Some("POST"), "/api/v1/workflows/{id}/run", Part::Trigger),
    (Some("POST"), "/api/v1/trigger", Part::Trigger),
    (Some("POST"), "/api/v1/runs", Part::Trigger),
    (Some("POST"), "/api/v1/workflows/{id}/execute", Part::Execute),
    (Some("POST"), "/api/workflows/{id}/execute", Part::Execute),
    (Some("POST"), "/api/v1/runs/{id}/tasks/{task_id}/complete", Part::TaskComplete),
    (None, "/api/v1/hooks/{proxy+}", Part::Hook),
    (None, "/api/v1/webhooks/{proxy+}", Part::Hook),
    (None, "/api/webhooks/{proxy+}", Part::Hook),
    (Some("POST"), "/api/v1/callback", Part::Hook),
];

impl Part {
    pub const ALL: [Part; 6] =
        [Part::Register, Part::Trigger, Part::Hook, Part::Execute, Part::TaskComplete, Part::Api];

    /// The function's name: `functions/<name>`, the binary `cargo lambda build` packages.
    pub fn name(self) -> &'static str {
        match self {
            Part::Register => "register",
            Part::Trigger => "trigger",
            Part::Hook => "hook",
            Part::Execute => "execute",
            Part::TaskComplete => "task-complete",
            Part::Api => "api",
        }
    }

    /// The part's router, e.g. [`parts::hook`]. Naming them all, it is for tests and tools;
    /// a function names its own (see [`parts`]).
    pub fn router(self) -> fn(AppState) -> Router {
        match self {
            Part::Register => parts::register,
            Part::Trigger => parts::trigger,
            Part::Hook => parts::hook,
            Part::Execute => parts::execute,
            Part::TaskComplete => parts::task_complete,
            Part::Api => parts::api,
        }
    }

    /// The part that serves `method` on `path`.
    pub fn of(method: &Method, path: &str) -> Part {
        ROUTES
            .iter()
            .find(|(m, pattern, _)| m.is_none_or(|m| m == method.as_str()) && path_matches(pattern, path))
            .map_or(Part::Api, |r| r.2)
    }
}

/// API Gateway's path matching: `{x}` matches one non-empty segment, a final `{x+}` the
/// non-empty rest.
fn path_matches(pattern: &str, path: &str) -> bool {
    let mut want = pattern.split('/');
    let mut got = path.split('/');
    loop {
        match (want.next(), got.next()) {
            (None, None) => return true,
            (Some(w), Some(g)) if w.starts_with('{') && w.ends_with("+}") => {
                return !g.is_empty() || got.any(|s| !s.is_empty());
            }
            (Some(w), Some(g)) if w.starts_with('{') => {
                if g.is_empty() {
                    return false;
                }
            }
            (Some(w), Some(g)) if w == g => {}
            _ => return false,
        }
    }
}

/// The routes of one part; other paths are the envelope 404 (and never reach a handler).
/// For tests and tools: a Lambda function calls its own [`parts`] router instead.
pub fn router_for(part: Part, state: AppState) -> Router {
    (part.router())(state)
}

async fn only_part(State(part): State<Part>, req: Request, next: Next) -> Response {
    if Part::of(req.method(), req.uri().path()) == part {
        next.run(req).await
    } else {
        extract::not_found(req.method().clone(), req.uri().clone()).await.into_response()
    }
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
    /// `limit` as 1..=[`MAX_PAGE_LIMIT`], `default` when absent.
    pub fn limit_or(&self, default: usize) -> Result<usize> {
        Ok(if self.limit.as_deref().is_none_or(str::is_empty) { default } else { self.limit()? })
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

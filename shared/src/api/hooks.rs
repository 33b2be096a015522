//! Doors without an API key (DESIGN.md §5 "hooks"): per-trigger URLs, app webhooks with
//! signature checks, webhook blocks. Served by the `hook` function on AWS.
//!
//! - `POST /api/v1/hooks/{token}`: 201 with the run (200 when `Idempotency-Key` repeats);
//!   404 unknown token, 409 disabled trigger, 422 when the run cannot start.
//! - `POST /api/v1/webhooks/{id}` and `POST /api/webhooks/{id}`: an id `app_…` is an app
//!   (signature checked over the raw body, then JSON parsed); a UUID is a webhook block
//!   (Bearer secret or `?token=`; deployed, or armed for one call; else 409).
//!
//! Every door answers 422 `UNPROCESSABLE` when the run cannot start (workflow not active,
//! input fails the schema, with the validation details), and counts each call twice: against
//! the caller's address before anything is looked up (guessing tokens costs budget too), and
//! against the door's own window (both of the API-key limit's size).

use super::auth::rate_limit_headers;
use super::client::Client;
use super::extract::{Path, Query, RawBody, optional_json_body, parse_json};
use crate::accounts;
use crate::app::AppState;
use crate::engine::{StartRequest, Started};
use crate::error::{Error, Result};
use crate::webhooks::{self, Admission};
use crate::{apps, triggers};
use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde::Deserialize;
use serde_json::{Value, json};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/hooks/{token}", post(hook))
        .route("/api/v1/webhooks/{id}", post(webhook))
        .route("/api/webhooks/{id}", post(webhook))
}

/// Query parameters a door reads; anything else a sender appends is ignored.
#[derive(Debug, Default, Deserialize)]
struct DoorQuery {
    token: Option<String>,
    workflow_id: Option<String>,
}

/// An engine refusal that means "this run cannot start" becomes 422; the rest pass through.
fn could_not_start(e: Error) -> Error {
    match e {
        Error::InvalidStatus(m) | Error::NotFound(m) => {
            Error::Unprocessable { message: format!("The run could not start: {m}"), details: Vec::new() }
        }
        Error::Validation { message, details } => Error::Unprocessable { message, details },
        other => other,
    }
}

/// `Idempotency-Key`, checked here so a bad one is a 400 and not a refusal to start.
fn idempotency_header(headers: &HeaderMap) -> Result<Option<String>> {
    let Some(v) = headers.get("idempotency-key") else { return Ok(None) };
    match v.to_str() {
        Ok(k) if !k.is_empty() && k.len() <= 200 => Ok(Some(k.to_string())),
        _ => Err(Error::validation_at(vec![json!("Idempotency-Key")], "must be 1..=200 visible ASCII characters")),
    }
}

/// Counts the call against the door's own window.
async fn rate_limit(state: &AppState, door: &str) -> Result<HeaderMap> {
    let limit = state.config.rate_limit_per_minute;
    let info = accounts::check_window(&*state.store, &format!("door:{door}"), limit, 60, "calls of this door").await?;
    Ok(rate_limit_headers(&info))
}

/// Counts the call against the caller's address, across every door.
async fn client_limit(state: &AppState, client: Client) -> Result<()> {
    client.check(state, "calls without an API key", state.config.rate_limit_per_minute, 60).await.map(drop)
}

/// Starts the run to its end even if the client goes away (commit-then-enqueue is never cut
/// in half), as the API-key endpoints do.
async fn start(state: &AppState, acct: &str, wf: &str, req: StartRequest) -> Result<Started> {
    let (st, acct, wf) = (state.clone(), acct.to_string(), wf.to_string());
    tokio::spawn(async move { st.engine.start_run(&acct, &wf, req).await })
        .await
        .map_err(|e| Error::internal(format!("run start task failed: {e}")))?
}

fn started(headers: HeaderMap, s: Started) -> Response {
    let code = if s.created { StatusCode::CREATED } else { StatusCode::OK };
    (code, headers, axum::Json(s.run)).into_response()
}

/// `POST /api/v1/hooks/{token}`: the body (JSON, or empty for `{}`) is the run input.
async fn hook(
    State(state): State<AppState>,
    client: Client,
    Path(token): Path<String>,
    headers: HeaderMap,
    RawBody(body): RawBody,
) -> Result<Response> {
    client_limit(&state, client).await?;
    let h = triggers::lookup(&*state.store, &token).await?;
    let input: Value = optional_json_body(&headers, &body)?;
    let idempotency_key = idempotency_header(&headers)?;
    let rl = rate_limit(&state, &h.trigger_id).await?;
    let req = StartRequest {
        input,
        idempotency_key,
        metadata: json!({"trigger_id": h.trigger_id}),
        callback_url: h.callback_url,
        source: "hook".into(),
        ..StartRequest::default()
    };
    let s = start(&state, &h.account_id, &h.workflow_id, req).await.map_err(could_not_start)?;
    Ok(started(rl, s))
}

/// `POST /api/v1/webhooks/{id}`, `POST /api/webhooks/{id}`: an app (`app_…`) or a webhook
/// block (a UUID); any other id is unknown.
async fn webhook(
    State(state): State<AppState>,
    client: Client,
    Path(id): Path<String>,
    Query(q): Query<DoorQuery>,
    headers: HeaderMap,
    RawBody(body): RawBody,
) -> Result<Response> {
    client_limit(&state, client).await?;
    if apps::is_app_id(&id) {
        app_webhook(state, id, q, headers, body).await
    } else {
        block_webhook(state, id, q, headers, body).await
    }
}

async fn block_webhook(
    state: AppState,
    id: String,
    q: DoorQuery,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response> {
    let target = webhooks::lookup(&*state.store, &id).await?;
    let authorization = match headers.get(header::AUTHORIZATION) {
        Some(v) => Some(v.to_str().map_err(|_| Error::Unauthorized("Malformed Authorization header".into()))?),
        None => None,
    };
    target.authenticate(&webhooks::presented(authorization, q.token.as_deref()))?;
    // Everything the caller can get wrong is checked before the arm is taken.
    let input: Value = optional_json_body(&headers, &body)?;
    let idempotency_key = idempotency_header(&headers)?;
    let (acct, wf) = (target.account_id.clone(), target.workflow_id.clone());
    let rl = rate_limit(&state, &id).await?;
    let req = StartRequest {
        input,
        idempotency_key,
        metadata: json!({"webhook_id": id.to_ascii_lowercase(), "block_id": target.block_id}),
        callback_url: None,
        source: "webhook".into(),
        ..StartRequest::default()
    };
    // Taking the arm and starting the run finish together even if the client goes away, so
    // an arm is never used up by a call that started nothing.
    let st = state.clone();
    let s = tokio::spawn(async move { admit_and_start(&st, &acct, &wf, req).await })
        .await
        .map_err(|e| Error::internal(format!("webhook start task failed: {e}")))??;
    Ok(started(rl, s))
}

async fn admit_and_start(state: &AppState, acct: &str, wf: &str, req: StartRequest) -> Result<Started> {
    let admission = webhooks::admit(&*state.store, acct, wf).await?;
    match state.engine.start_run(acct, wf, req).await {
        Ok(s) => Ok(s),
        Err(e) => {
            if let Admission::Armed { until } = &admission
                && let Err(give_back) = webhooks::give_back(&*state.store, acct, wf, until).await
            {
                tracing::warn!(error = %give_back, workflow_id = %wf, "could not give the arm back");
            }
            Err(could_not_start(e))
        }
    }
}

/// The `{workflow_id, input | task, metadata}` form of an app webhook body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AppBody {
    workflow_id: Value,
    #[serde(default)]
    input: Value,
    #[serde(default)]
    task: Option<Value>,
    #[serde(default)]
    metadata: Value,
}

async fn app_webhook(
    state: AppState,
    id: String,
    q: DoorQuery,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response> {
    let door = apps::door(&*state.store, &id).await?;
    let now = crate::ids::now_ms() / 1000;
    let verified = door.verify(&state.secrets, |n| headers.get(n).and_then(|v| v.to_str().ok()), &body, now)?;
    // Only now, with the bytes vouched for, is the body parsed.
    let parsed: Value = optional_json_body(&headers, &body)?;
    let is_envelope = parsed.as_object().is_some_and(|o| o.contains_key("workflow_id"));
    let (wf, mut input, task, mut metadata) = if is_envelope {
        let b: AppBody = parse_json(&body)?;
        let wf = match &b.workflow_id {
            Value::String(s) if !s.is_empty() => s.clone(),
            _ => return Err(Error::validation_at(vec![json!("workflow_id")], "`workflow_id` must be a string")),
        };
        (wf, b.input, b.task, b.metadata)
    } else {
        // A sender's own payload (GitHub, Stripe...): all of it is the input.
        let wf = q.workflow_id.clone().or_else(|| door.workflow_id.clone()).ok_or_else(|| {
            Error::validation_at(
                vec![json!("workflow_id")],
                "No workflow to start: send {\"workflow_id\", \"input\"}, add ?workflow_id=, or set the app's workflow_id",
            )
        })?;
        (wf, parsed.clone(), None, Value::Null)
    };
    if metadata.is_null() {
        metadata = json!({});
    }
    let Value::Object(meta) = &mut metadata else {
        return Err(Error::validation_at(vec![json!("metadata")], "`metadata` must be an object"));
    };
    if let Some(task) = task {
        // As in POST /trigger: `input.task` for templates (unless the input says otherwise).
        meta.insert("task".into(), task.clone());
        if input.is_null() {
            input = json!({});
        }
        if let Value::Object(i) = &mut input {
            i.entry("task").or_insert(task);
        }
    }
    meta.insert("app_id".into(), json!(id));
    // The sender's delivery id makes a redelivery return the original run: it is the same on
    // every retry of one delivery, and scoped to this app.
    let stripe_event = matches!(door.scheme, Some(crate::signature::Scheme::Stripe))
        .then(|| parsed.get("id").and_then(Value::as_str).filter(|s| !s.is_empty() && s.len() <= 200))
        .flatten()
        .map(str::to_string);
    let delivery = verified.delivery_id.or(stripe_event.clone());
    if let Some(d) = &delivery {
        meta.insert("delivery_id".into(), json!(d));
    }
    // A replay of a signed request is its first delivery again (`signature` module doc): by
    // the signed id where there is one, else by the digest of the signed bytes, which no
    // header of the caller's can change. Only unsigned apps go by the caller's key.
    let idempotency_key = match (stripe_event, verified.replay_digest, delivery, idempotency_header(&headers)?) {
        (Some(event), _, _, _) => Some(format!("app:{id}:{event}")),
        (None, Some(digest), _, _) => Some(format!("app:{id}:sig:{digest}")),
        (None, None, Some(d), _) => Some(format!("app:{id}:{d}")),
        (None, None, None, h) => h.map(|k| format!("app:{id}:{k}")),
    };
    let rl = rate_limit(&state, &id).await?;
    let req = StartRequest {
        input,
        idempotency_key,
        metadata,
        callback_url: None,
        source: "app".into(),
        ..StartRequest::default()
    };
    match start(&state, &door.account_id, &wf, req).await {
        Ok(s) => Ok(started(rl, s)),
        // The caller named the workflow: an unknown one is theirs to fix, not a refusal to start.
        Err(Error::NotFound(_)) => Err(Error::NotFound(format!("Workflow '{wf}' not found"))),
        Err(e) => Err(could_not_start(e)),
    }
}

#[cfg(test)]
#[path = "hooks_tests.rs"]
mod tests;

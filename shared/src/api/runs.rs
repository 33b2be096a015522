//! Run endpoints: start, sync execute, read, list, events, tasks, cancel, redrive, and the
//! open tasks across runs.

use super::extract::{Json, OptionalJson, Path, Query};
use super::{ListParams, MAX_PAGE_LIMIT};
use crate::accounts::{self, Principal};
use crate::app::AppState;
use crate::engine::{RunFilter, StartRequest};
use crate::error::{Error, Result};
use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::{Value, json};
use std::time::Duration;

/// Run starts with an API key (the trigger function).
pub fn start_routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/workflows/{id}/run", post(start))
        .route("/api/v1/trigger", post(trigger))
        .route("/api/v1/runs", post(planned_run))
}

/// Sync execution (the execute function, the only HTTP function that runs blocks).
pub fn execute_routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/workflows/{id}/execute", post(execute))
        .route("/api/workflows/{id}/execute", post(execute))
}

/// A person's answer (the task-complete function).
pub fn task_routes() -> Router<AppState> {
    Router::new().route("/api/v1/runs/{id}/tasks/{task_id}/complete", post(complete_task))
}

/// Reading and steering runs (the api function).
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/runs", get(list))
        .route("/api/v1/runs/{id}", get(detail).delete(cancel))
        .route("/api/v1/runs/{id}/events", get(events))
        .route("/api/v1/runs/{id}/tasks", get(tasks))
        .route("/api/v1/runs/{id}/redrive", post(redrive))
        .route("/api/v1/tasks", get(open_tasks))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct StartBody {
    #[serde(default)]
    input: Value,
    #[serde(default, alias = "idempotency_key")]
    #[serde(rename = "idempotencyKey")]
    idempotency_key: Option<String>,
    #[serde(default, alias = "connection_id")]
    #[serde(rename = "connectionId")]
    connection_id: Option<String>,
    #[serde(default)]
    metadata: Value,
    #[serde(default, alias = "callbackUrl")]
    callback_url: Option<String>,
    /// Sync execute only: how long to drive the run inline before answering 202.
    #[serde(default, deserialize_with = "whole_number")]
    timeout_ms: Option<u64>,
}

/// A whole number that may be written `500.0` ([`crate::error::whole_number`]).
fn whole_number<'de, D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Option<u64>, D::Error> {
    match Option::<Value>::deserialize(d)? {
        None | Some(Value::Null) => Ok(None),
        Some(v) => crate::error::whole_number(&v)
            .map(Some)
            .ok_or_else(|| serde::de::Error::custom(format!("expected a whole number, not {v}"))),
    }
}

fn idempotency_key(headers: &HeaderMap, body: Option<String>) -> Result<Option<String>> {
    let header = match headers.get("idempotency-key") {
        Some(v) => Some(
            v.to_str()
                .map_err(|_| Error::validation_at(vec![json!("Idempotency-Key")], "header must be visible ASCII"))?
                .to_string(),
        ),
        None => None,
    };
    match (header, body) {
        (Some(h), Some(b)) if h != b => {
            Err(Error::validation("Idempotency-Key header and body idempotencyKey differ; send one"))
        }
        (h, b) => h.or(b).map(bounded_key).transpose(),
    }
}

/// A key is stored with every run that names it: 1..=200 characters, as the doors take.
fn bounded_key(k: String) -> Result<String> {
    if (1..=MAX_IDEMPOTENCY_KEY).contains(&k.chars().count()) {
        Ok(k)
    } else {
        Err(Error::validation_at(
            vec![json!("idempotencyKey")],
            format!("an idempotency key must be 1..={MAX_IDEMPOTENCY_KEY} characters"),
        ))
    }
}

const MAX_IDEMPOTENCY_KEY: usize = 200;

fn start_request(headers: &HeaderMap, b: StartBody, source: &str) -> Result<StartRequest> {
    let mut metadata = b.metadata;
    if let Some(c) = b.connection_id {
        if metadata.is_null() {
            metadata = json!({});
        }
        if let Value::Object(m) = &mut metadata {
            m.insert("connection_id".into(), json!(c));
        }
    }
    Ok(StartRequest {
        input: b.input,
        idempotency_key: idempotency_key(headers, b.idempotency_key)?,
        metadata,
        callback_url: b.callback_url,
        source: source.to_string(),
        ..StartRequest::default()
    })
}

async fn rate_limited(state: &AppState, p: &Principal) -> Result<HeaderMap> {
    let info = accounts::check_run_starts(&*state.store, &p.account_id, state.config.rate_limit_per_minute).await?;
    Ok(super::auth::rate_limit_headers(&info))
}

/// Runs a run-changing operation to its end even if the client goes away. These operations
/// commit to the store and then enqueue; a request future dropped between the two (the
/// client disconnected) would leave steps that no message names.
async fn detached<T, F>(state: &AppState, op: impl FnOnce(AppState) -> F) -> Result<T>
where
    T: Send + 'static,
    F: std::future::Future<Output = Result<T>> + Send + 'static,
{
    tokio::spawn(op(state.clone())).await.map_err(|e| Error::internal(format!("run operation task failed: {e}")))?
}

fn started(headers: HeaderMap, s: crate::engine::Started) -> Response {
    let code = if s.created { StatusCode::CREATED } else { StatusCode::OK };
    (code, headers, axum::Json(s.run)).into_response()
}

async fn start(
    State(state): State<AppState>,
    p: Principal,
    Path(id): Path<String>,
    headers: HeaderMap,
    OptionalJson(body): OptionalJson<StartBody>,
) -> Result<Response> {
    p.require(accounts::EXECUTE)?;
    let rl = rate_limited(&state, &p).await?;
    let req = start_request(&headers, body, "api")?;
    let acct = p.account_id.clone();
    let s = detached(&state, |st| async move { st.engine.start_run(&acct, &id, req).await }).await?;
    Ok(started(rl, s))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TriggerBody {
    workflow_id: Value,
    #[serde(default)]
    input: Value,
    #[serde(default)]
    task: Option<Value>,
    #[serde(default)]
    metadata: Value,
    #[serde(default, alias = "idempotency_key")]
    #[serde(rename = "idempotencyKey")]
    idempotency_key: Option<String>,
    #[serde(default, alias = "callbackUrl")]
    callback_url: Option<String>,
}

async fn trigger(
    State(state): State<AppState>,
    p: Principal,
    headers: HeaderMap,
    Json(b): Json<TriggerBody>,
) -> Result<Response> {
    p.require(accounts::EXECUTE)?;
    // Some senders only have numbers; ids are strings.
    let wf = match &b.workflow_id {
        Value::String(s) if !s.is_empty() => s.clone(),
        Value::Number(n) => n.to_string(),
        _ => {
            return Err(Error::validation_at(vec![json!("workflow_id")], "`workflow_id` must be a non-empty string"));
        }
    };
    let rl = rate_limited(&state, &p).await?;
    let mut metadata = b.metadata;
    let mut input = b.input;
    if let Some(task) = b.task {
        // A trigger's `task` is what the run is asked to do: visible to templates as
        // `input.task` unless the input already says otherwise, and kept in metadata.
        if metadata.is_null() {
            metadata = json!({});
        }
        if let Value::Object(m) = &mut metadata {
            m.insert("task".into(), task.clone());
        }
        if input.is_null() {
            input = json!({});
        }
        if let Value::Object(i) = &mut input {
            i.entry("task").or_insert(task);
        }
    }
    let body = StartBody {
        input,
        idempotency_key: b.idempotency_key,
        connection_id: None,
        metadata,
        callback_url: b.callback_url,
        timeout_ms: None,
    };
    let req = start_request(&headers, body, "trigger")?;
    let acct = p.account_id.clone();
    let s = detached(&state, |st| async move { st.engine.start_run(&acct, &wf, req).await }).await?;
    Ok(started(rl, s))
}

async fn execute(
    State(state): State<AppState>,
    p: Principal,
    Path(id): Path<String>,
    headers: HeaderMap,
    OptionalJson(body): OptionalJson<StartBody>,
) -> Result<Response> {
    p.require(accounts::EXECUTE)?;
    let mut rl = rate_limited(&state, &p).await?;
    let deadline = match body.timeout_ms {
        Some(0) => {
            return Err(Error::validation_at(vec![json!("timeout_ms")], "must be at least 1"));
        }
        Some(ms) => Duration::from_millis(ms).min(state.config.sync_deadline),
        None => state.config.sync_deadline,
    };
    let req = start_request(&headers, body, "execute")?;
    let acct = p.account_id.clone();
    let r = detached(&state, |st| async move { st.engine.execute_sync(&acct, &id, req, deadline).await }).await?;
    if !r.finished {
        return Ok((StatusCode::ACCEPTED, rl, axum::Json(r.run)).into_response());
    }
    let code = r.response_status.and_then(|s| StatusCode::from_u16(s).ok()).unwrap_or(StatusCode::OK);
    if let Some(Value::Object(h)) = &r.response_headers {
        for (k, v) in h {
            let val = v.as_str().map(str::to_string).unwrap_or_else(|| v.to_string());
            if let (Ok(k), Ok(v)) = (HeaderName::try_from(k.as_str()), HeaderValue::try_from(val)) {
                rl.insert(k, v);
            }
        }
    }
    Ok((code, rl, axum::Json(r.run)).into_response())
}

async fn planned_run(State(state): State<AppState>, p: Principal, Json(body): Json<Value>) -> Result<Response> {
    p.require(accounts::EXECUTE)?;
    let rl = rate_limited(&state, &p).await?;
    let acct = p.account_id.clone();
    let run = detached(&state, |st| async move { crate::ai::runs::start(&st, &acct, &body).await }).await?;
    Ok((StatusCode::CREATED, rl, axum::Json(run)).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RunListParams {
    status: Option<String>,
    workflow_id: Option<String>,
    limit: Option<String>,
    cursor: Option<String>,
}

async fn list(
    State(state): State<AppState>,
    p: Principal,
    Query(q): Query<RunListParams>,
) -> Result<axum::Json<Value>> {
    p.require("runs:read")?;
    let page = ListParams { limit: q.limit, cursor: q.cursor };
    let f = RunFilter { status: q.status, workflow_id: q.workflow_id, limit: page.limit()?, cursor: page.cursor() };
    Ok(axum::Json(state.engine.list_runs(&p.account_id, f).await?))
}

async fn detail(State(state): State<AppState>, p: Principal, Path(id): Path<String>) -> Result<axum::Json<Value>> {
    p.require("runs:read")?;
    let view = state.engine.get_run(&p.account_id, &id).await?;
    Ok(axum::Json(crate::ai::runs::decorate(&*state.store, view).await?))
}

async fn events(
    State(state): State<AppState>,
    p: Principal,
    Path(id): Path<String>,
    Query(q): Query<ListParams>,
) -> Result<axum::Json<Value>> {
    p.require("runs:read")?;
    let limit = q.limit_or(MAX_PAGE_LIMIT)?;
    Ok(axum::Json(state.engine.run_events(&p.account_id, &id, limit, q.cursor()).await?))
}

async fn tasks(
    State(state): State<AppState>,
    p: Principal,
    Path(id): Path<String>,
    Query(q): Query<ListParams>,
) -> Result<axum::Json<Value>> {
    p.require("runs:read")?;
    let limit = q.limit_or(MAX_PAGE_LIMIT)?;
    // A planned run lists its whole subtask tree (every task, at any point of the run).
    let view = crate::ai::runs::decorate(&*state.store, state.engine.get_run(&p.account_id, &id).await?).await?;
    if let Some(page) = crate::ai::runs::tasks_page(&view) {
        return Ok(axum::Json(page));
    }
    Ok(axum::Json(state.engine.run_tasks(&p.account_id, &id, limit, q.cursor()).await?))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TaskListParams {
    status: Option<String>,
    limit: Option<String>,
    cursor: Option<String>,
}

/// `GET /tasks?status=open`: the people's inbox across runs. Only open tasks are listed
/// (answered ones stay on their run); `status` may be left out.
async fn open_tasks(
    State(state): State<AppState>,
    p: Principal,
    Query(q): Query<TaskListParams>,
) -> Result<axum::Json<Value>> {
    p.require("runs:read")?;
    if q.status.as_deref().is_some_and(|s| s != "open") {
        return Err(Error::validation_at(vec![json!("status")], "only `status=open` is supported"));
    }
    let page = ListParams { limit: q.limit, cursor: q.cursor };
    Ok(axum::Json(state.engine.open_tasks(&p.account_id, page.limit()?, page.cursor()).await?))
}

async fn cancel(State(state): State<AppState>, p: Principal, Path(id): Path<String>) -> Result<axum::Json<Value>> {
    p.require("runs:write")?;
    let acct = p.account_id.clone();
    Ok(axum::Json(detached(&state, |st| async move { st.engine.cancel_run(&acct, &id).await }).await?))
}

async fn redrive(State(state): State<AppState>, p: Principal, Path(id): Path<String>) -> Result<axum::Json<Value>> {
    p.require("runs:write")?;
    let acct = p.account_id.clone();
    Ok(axum::Json(detached(&state, |st| async move { st.engine.redrive_run(&acct, &id).await }).await?))
}

async fn complete_task(
    State(state): State<AppState>,
    p: Principal,
    Path((id, task_id)): Path<(String, String)>,
    Json(answer): Json<Value>,
) -> Result<axum::Json<Value>> {
    p.require("runs:write")?;
    let acct = p.account_id.clone();
    let run = detached(&state, |st| async move {
        // A planned run's tasks are also completed by their plan ids (`T1`).
        let view = crate::ai::runs::decorate(&*st.store, st.engine.get_run(&acct, &id).await?).await?;
        let task_id = crate::ai::runs::wait_id(&view, &task_id)?;
        let run = st.engine.complete_task(&acct, &id, &task_id, answer).await?;
        crate::ai::runs::decorate(&*st.store, run).await
    })
    .await?;
    Ok(axum::Json(run))
}

#[cfg(test)]
#[path = "runs_tests.rs"]
mod tests;

//! Workflow endpoints: create, list, read, patch, delete, graph versions, status, deploy state.

use super::ListParams;
use super::extract::{Json, Path, Query};
use crate::accounts::Principal;
use crate::app::AppState;
use crate::error::Result;
use crate::net_guard::Targets;
use crate::workflows;
use axum::Router;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use http::StatusCode;
use serde_json::Value;

pub const READ: &str = "workflows:read";
pub const WRITE: &str = "workflows:write";

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/workflows", post(create).get(list))
        .route("/api/v1/workflows/{id}", get(read).patch(patch).delete(remove))
        .route("/api/v1/workflows/{id}/graph", put(put_graph))
        .route("/api/v1/workflows/{id}/versions", get(versions))
        .route("/api/v1/workflows/{id}/activate", post(activate))
        .route("/api/v1/workflows/{id}/deactivate", post(deactivate))
        .route("/api/v1/workflows/{id}/deploy", post(deploy))
        .route("/api/v1/workflows/{id}/undeploy", post(undeploy))
        .route("/api/v1/workflows/{id}/arm", post(arm))
        // Seed 004's paths, without the version segment; the same handlers and auth.
        .route("/api/workflows/{id}/graph", put(put_graph))
        .route("/api/workflows/{id}/activate", post(activate))
        .route("/api/workflows/{id}/deactivate", post(deactivate))
        .route("/api/workflows/{id}/deploy", post(deploy))
        .route("/api/workflows/{id}/undeploy", post(undeploy))
        .route("/api/workflows/{id}/arm", post(arm))
}

async fn create(State(state): State<AppState>, p: Principal, Json(body): Json<Value>) -> Result<Response> {
    p.require(WRITE)?;
    let targets = Targets::from_allow_private(state.config.allow_private_targets);
    let wf = workflows::create_with(state.store.as_ref(), &p.account_id, body, targets).await?;
    Ok((StatusCode::CREATED, Json(wf)).into_response())
}

async fn list(State(state): State<AppState>, p: Principal, Query(q): Query<ListParams>) -> Result<Json<Value>> {
    p.require(READ)?;
    Ok(Json(workflows::list(state.store.as_ref(), &p.account_id, q.limit()?, q.cursor()).await?))
}

async fn read(State(state): State<AppState>, p: Principal, Path(id): Path<String>) -> Result<Json<Value>> {
    p.require(READ)?;
    Ok(Json(workflows::get(state.store.as_ref(), &p.account_id, &id).await?))
}

async fn patch(
    State(state): State<AppState>,
    p: Principal,
    Path(id): Path<String>,
    Json(body): Json<Value>,
) -> Result<Json<Value>> {
    p.require(WRITE)?;
    let targets = Targets::from_allow_private(state.config.allow_private_targets);
    Ok(Json(workflows::patch_with(state.store.as_ref(), &p.account_id, &id, body, targets).await?))
}

async fn remove(State(state): State<AppState>, p: Principal, Path(id): Path<String>) -> Result<StatusCode> {
    p.require(WRITE)?;
    workflows::delete(state.store.as_ref(), &p.account_id, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn put_graph(
    State(state): State<AppState>,
    p: Principal,
    Path(id): Path<String>,
    Json(body): Json<Value>,
) -> Result<(StatusCode, Json<Value>)> {
    p.require(WRITE)?;
    let (wf, created) = workflows::put_graph(state.store.as_ref(), &p.account_id, &id, body).await?;
    Ok((if created { StatusCode::CREATED } else { StatusCode::OK }, Json(wf)))
}

async fn versions(
    State(state): State<AppState>,
    p: Principal,
    Path(id): Path<String>,
    Query(q): Query<ListParams>,
) -> Result<Json<Value>> {
    p.require(READ)?;
    Ok(Json(workflows::versions(state.store.as_ref(), &p.account_id, &id, q.limit()?, q.cursor()).await?))
}

async fn activate(State(state): State<AppState>, p: Principal, Path(id): Path<String>) -> Result<Json<Value>> {
    p.require(WRITE)?;
    Ok(Json(workflows::activate(state.store.as_ref(), &p.account_id, &id).await?))
}

async fn deactivate(State(state): State<AppState>, p: Principal, Path(id): Path<String>) -> Result<Json<Value>> {
    p.require(WRITE)?;
    Ok(Json(workflows::deactivate(state.store.as_ref(), &p.account_id, &id).await?))
}

/// `/deploy`: the workflow's webhook blocks take every call until `/undeploy`.
async fn deploy(State(state): State<AppState>, p: Principal, Path(id): Path<String>) -> Result<Json<Value>> {
    p.require(WRITE)?;
    Ok(Json(workflows::deploy(state.store.as_ref(), &p.account_id, &id).await?))
}

async fn undeploy(State(state): State<AppState>, p: Principal, Path(id): Path<String>) -> Result<Json<Value>> {
    p.require(WRITE)?;
    Ok(Json(workflows::undeploy(state.store.as_ref(), &p.account_id, &id).await?))
}

/// `/arm`: the workflow's webhook blocks take exactly one call within 10 minutes.
async fn arm(State(state): State<AppState>, p: Principal, Path(id): Path<String>) -> Result<Json<Value>> {
    p.require(WRITE)?;
    Ok(Json(workflows::arm(state.store.as_ref(), &p.account_id, &id).await?))
}

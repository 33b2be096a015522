//! AI endpoints: providers (`POST/GET /providers`, `GET/DELETE /providers/{id}`) and the
//! agent templates (`GET /agents/templates`). Planned runs (`POST /runs`) live with the
//! other run endpoints.

use super::extract::{Json, Path};
use crate::accounts::Principal;
use crate::ai::{providers, templates};
use crate::app::AppState;
use crate::error::Result;
use crate::net_guard::Targets;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use serde_json::Value;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/providers", get(list).post(create))
        .route("/api/v1/providers/{id}", get(read).delete(deactivate))
        .route("/api/v1/agents/templates", get(agent_templates))
}

async fn create(
    State(state): State<AppState>,
    p: Principal,
    Json(body): Json<Value>,
) -> Result<(StatusCode, axum::Json<Value>)> {
    p.require("workflows:write")?;
    let targets = Targets::from_allow_private(state.config.allow_private_targets);
    let v = providers::create(&*state.store, &state.secrets, targets, &p.account_id, &body).await?;
    Ok((StatusCode::CREATED, axum::Json(v)))
}

async fn list(State(state): State<AppState>, p: Principal) -> Result<axum::Json<Value>> {
    p.require("workflows:read")?;
    Ok(axum::Json(providers::list(&*state.store, &p.account_id).await?))
}

async fn read(State(state): State<AppState>, p: Principal, Path(id): Path<String>) -> Result<axum::Json<Value>> {
    p.require("workflows:read")?;
    Ok(axum::Json(providers::get(&*state.store, &p.account_id, &id).await?))
}

async fn deactivate(State(state): State<AppState>, p: Principal, Path(id): Path<String>) -> Result<axum::Json<Value>> {
    p.require("workflows:write")?;
    Ok(axum::Json(providers::deactivate(&*state.store, &p.account_id, &id).await?))
}

async fn agent_templates(p: Principal) -> Result<axum::Json<Value>> {
    p.require("workflows:read")?;
    Ok(axum::Json(templates::list()))
}

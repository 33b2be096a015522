//! Outbound callbacks (API key): a run's delivery log, one delivery, and redelivery. The
//! account's signing secret is read and rotated under `/account` (see `accounts`).

use super::ListParams;
use super::extract::{Path, Query};
use crate::accounts::Principal;
use crate::app::AppState;
use crate::error::Result;
use axum::Router;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use http::StatusCode;
use serde_json::Value;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/runs/{id}/callbacks", get(list))
        .route("/api/v1/runs/{id}/callbacks/{delivery_id}", get(detail))
        .route("/api/v1/runs/{id}/callbacks/{delivery_id}/redeliver", post(redeliver))
}

async fn list(
    State(state): State<AppState>,
    p: Principal,
    Path(id): Path<String>,
    Query(q): Query<ListParams>,
) -> Result<axum::Json<Value>> {
    p.require("runs:read")?;
    Ok(axum::Json(state.engine.list_callbacks(&p.account_id, &id, q.limit()?, q.cursor()).await?))
}

async fn detail(
    State(state): State<AppState>,
    p: Principal,
    Path((id, delivery_id)): Path<(String, String)>,
) -> Result<axum::Json<Value>> {
    p.require("runs:read")?;
    Ok(axum::Json(state.engine.get_callback(&p.account_id, &id, &delivery_id).await?))
}

/// 202: the delivery is queued again; the log shows the attempt when it has been made.
async fn redeliver(
    State(state): State<AppState>,
    p: Principal,
    Path((id, delivery_id)): Path<(String, String)>,
) -> Result<Response> {
    p.require("runs:write")?;
    let acct = p.account_id.clone();
    // Like other run-changing calls: finish the write-then-enqueue even if the client leaves.
    let state2 = state.clone();
    let v = tokio::spawn(async move { state2.engine.redeliver_callback(&acct, &id, &delivery_id).await })
        .await
        .map_err(|e| crate::error::Error::internal(format!("redeliver task failed: {e}")))??;
    Ok((StatusCode::ACCEPTED, axum::Json(v)).into_response())
}

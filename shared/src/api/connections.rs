//! `/connections`: an account's credentials for outside services (sealed; never returned).
//! Managing them takes `workflows:write`, reading them `workflows:read`: connections are
//! part of what workflows are built from.

use super::ListParams;
use super::extract::{Json, Path, Query};
use super::workflows::{READ, WRITE};
use crate::accounts::Principal;
use crate::app::AppState;
use crate::connections;
use crate::error::Result;
use axum::Router;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use http::StatusCode;
use serde_json::Value;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/connections", post(create).get(list))
        .route("/api/v1/connections/{id}", get(read).patch(patch).delete(remove))
}

async fn create(State(state): State<AppState>, p: Principal, Json(body): Json<Value>) -> Result<Response> {
    p.require(WRITE)?;
    let c = connections::create(&*state.store, &state.secrets, &p.account_id, &body).await?;
    Ok((StatusCode::CREATED, Json(c)).into_response())
}

async fn list(State(state): State<AppState>, p: Principal, Query(q): Query<ListParams>) -> Result<Json<Value>> {
    p.require(READ)?;
    Ok(Json(connections::list(&*state.store, &p.account_id, q.limit()?, q.cursor()).await?))
}

async fn read(State(state): State<AppState>, p: Principal, Path(id): Path<String>) -> Result<Json<Value>> {
    p.require(READ)?;
    Ok(Json(connections::get(&*state.store, &p.account_id, &id).await?))
}

async fn patch(
    State(state): State<AppState>,
    p: Principal,
    Path(id): Path<String>,
    Json(body): Json<Value>,
) -> Result<Json<Value>> {
    p.require(WRITE)?;
    Ok(Json(connections::patch(&*state.store, &state.secrets, &p.account_id, &id, &body).await?))
}

async fn remove(State(state): State<AppState>, p: Principal, Path(id): Path<String>) -> Result<StatusCode> {
    p.require(WRITE)?;
    connections::delete(&*state.store, &p.account_id, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

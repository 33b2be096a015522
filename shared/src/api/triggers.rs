//! Managing the doors (API key): a workflow's trigger URLs and the account's apps.

use super::ListParams;
use super::extract::{Json, OptionalJson, Path, Query};
use crate::accounts::Principal;
use crate::app::AppState;
use crate::error::Result;
use crate::{apps, triggers};
use axum::Router;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use http::StatusCode;
use serde_json::{Value, json};

use super::workflows::{READ, WRITE};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/workflows/{id}/triggers", post(create_trigger).get(list_triggers))
        .route(
            "/api/v1/workflows/{id}/triggers/{trigger_id}",
            get(read_trigger).patch(patch_trigger).delete(delete_trigger),
        )
        .route("/api/v1/workflows/{id}/triggers/{trigger_id}/enable", post(enable_trigger))
        .route("/api/v1/workflows/{id}/triggers/{trigger_id}/disable", post(disable_trigger))
        .route("/api/v1/apps", post(create_app).get(list_apps))
        .route("/api/v1/apps/{app_id}", get(read_app).patch(patch_app).delete(delete_app))
}

async fn create_trigger(
    State(state): State<AppState>,
    p: Principal,
    Path(wf): Path<String>,
    OptionalJson(body): OptionalJson<Value>,
) -> Result<Response> {
    p.require(WRITE)?;
    let t =
        triggers::create(&*state.store, &p.account_id, &wf, &body, &state.config.public_url, targets(&state)).await?;
    Ok((StatusCode::CREATED, Json(t)).into_response())
}

async fn list_triggers(
    State(state): State<AppState>,
    p: Principal,
    Path(wf): Path<String>,
    Query(q): Query<ListParams>,
) -> Result<Json<Value>> {
    p.require(READ)?;
    let url = &state.config.public_url;
    Ok(Json(triggers::list(&*state.store, &p.account_id, &wf, q.limit()?, q.cursor(), url).await?))
}

async fn read_trigger(
    State(state): State<AppState>,
    p: Principal,
    Path((wf, tid)): Path<(String, String)>,
) -> Result<Json<Value>> {
    p.require(READ)?;
    Ok(Json(triggers::get(&*state.store, &p.account_id, &wf, &tid, &state.config.public_url).await?))
}

async fn patch_trigger(
    State(state): State<AppState>,
    p: Principal,
    Path((wf, tid)): Path<(String, String)>,
    Json(body): Json<Value>,
) -> Result<Json<Value>> {
    p.require(WRITE)?;
    Ok(Json(
        triggers::patch(&*state.store, &p.account_id, &wf, &tid, &body, &state.config.public_url, targets(&state))
            .await?,
    ))
}

async fn set_enabled(state: &AppState, p: &Principal, wf: &str, tid: &str, enabled: bool) -> Result<Json<Value>> {
    p.require(WRITE)?;
    let body = json!({"enabled": enabled});
    Ok(Json(
        triggers::patch(&*state.store, &p.account_id, wf, tid, &body, &state.config.public_url, targets(state)).await?,
    ))
}

async fn enable_trigger(
    State(state): State<AppState>,
    p: Principal,
    Path((wf, tid)): Path<(String, String)>,
) -> Result<Json<Value>> {
    set_enabled(&state, &p, &wf, &tid, true).await
}

async fn disable_trigger(
    State(state): State<AppState>,
    p: Principal,
    Path((wf, tid)): Path<(String, String)>,
) -> Result<Json<Value>> {
    set_enabled(&state, &p, &wf, &tid, false).await
}

async fn delete_trigger(
    State(state): State<AppState>,
    p: Principal,
    Path((wf, tid)): Path<(String, String)>,
) -> Result<StatusCode> {
    p.require(WRITE)?;
    triggers::delete(&*state.store, &p.account_id, &wf, &tid).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn create_app(State(state): State<AppState>, p: Principal, Json(body): Json<Value>) -> Result<Response> {
    p.require(WRITE)?;
    let app = apps::create(&*state.store, &state.secrets, &p.account_id, &body, &state.config.public_url).await?;
    Ok((StatusCode::CREATED, Json(app)).into_response())
}

async fn list_apps(State(state): State<AppState>, p: Principal, Query(q): Query<ListParams>) -> Result<Json<Value>> {
    p.require(READ)?;
    Ok(Json(apps::list(&*state.store, &p.account_id, q.limit()?, q.cursor(), &state.config.public_url).await?))
}

async fn read_app(State(state): State<AppState>, p: Principal, Path(id): Path<String>) -> Result<Json<Value>> {
    p.require(READ)?;
    Ok(Json(apps::get(&*state.store, &p.account_id, &id, &state.config.public_url).await?))
}

async fn patch_app(
    State(state): State<AppState>,
    p: Principal,
    Path(id): Path<String>,
    Json(body): Json<Value>,
) -> Result<Json<Value>> {
    p.require(WRITE)?;
    let url = &state.config.public_url;
    Ok(Json(apps::patch(&*state.store, &state.secrets, &p.account_id, &id, &body, url).await?))
}

async fn delete_app(State(state): State<AppState>, p: Principal, Path(id): Path<String>) -> Result<StatusCode> {
    p.require(WRITE)?;
    apps::delete(&*state.store, &p.account_id, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

fn targets(state: &AppState) -> crate::net_guard::Targets {
    crate::net_guard::Targets::from_allow_private(state.config.allow_private_targets)
}

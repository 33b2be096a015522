//! Account and API key endpoints: register, account, callback secret, key management.

use super::ListParams;
use super::client::Client;
use super::extract::{Json, OptionalJson, Path, Query};
use crate::accounts::{self, IssuedKey, KEYS_MANAGE, Principal};
use crate::app::AppState;
use crate::error::{Error, Result};
use axum::Router;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};

/// `POST /auth/register`, the register function's only route.
pub fn register_routes() -> Router<AppState> {
    Router::new().route("/api/v1/auth/register", post(register))
}

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/account", get(account))
        .route("/api/v1/account/rotate-callback-secret", post(rotate_callback_secret))
        .route("/api/v1/api-keys", get(list_keys).post(create_key))
        .route("/api/v1/api-keys/{id}", delete(revoke_key))
        .route("/api/v1/api-keys/{id}/rotate", post(rotate_key))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RegisterBody {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    email: Option<String>,
}

/// `{...key metadata, "api_key": "<secret>"}`: the secret is shown here only.
fn with_secret(issued: IssuedKey) -> Value {
    let mut v = issued.key;
    if let Value::Object(m) = &mut v {
        m.insert("api_key".into(), json!(issued.secret));
    }
    v
}

/// Registrations are counted per client address (`AppConfig::register_limit_per_hour`)
/// before the body is read: each one creates an account and a key.
async fn register(State(state): State<AppState>, client: Client, Json(b): Json<RegisterBody>) -> Result<Response> {
    let limit = state.config.register_limit_per_hour;
    let rate = client.check(&state, "registrations", limit, 3600).await?;
    let name = b.name.ok_or_else(|| Error::validation_at(vec![json!("name")], "`name` is required"))?;
    let (account, issued) = accounts::register(state.store.as_ref(), &name, b.email.as_deref()).await?;
    let body = json!({"account": account, "api_key": issued.secret, "key": issued.key});
    let mut resp = (StatusCode::CREATED, Json(body)).into_response();
    resp.headers_mut().extend(super::auth::rate_limit_headers(&rate));
    Ok(resp)
}

async fn account(State(state): State<AppState>, p: Principal) -> Result<Json<Value>> {
    p.require(KEYS_MANAGE)?;
    Ok(Json(accounts::get_account(state.store.as_ref(), &p.account_id).await?))
}

async fn rotate_callback_secret(State(state): State<AppState>, p: Principal) -> Result<Json<Value>> {
    p.require(KEYS_MANAGE)?;
    Ok(Json(accounts::rotate_callback_secret(state.store.as_ref(), &p.account_id).await?))
}

async fn list_keys(State(state): State<AppState>, p: Principal, Query(q): Query<ListParams>) -> Result<Json<Value>> {
    p.require(KEYS_MANAGE)?;
    Ok(Json(accounts::list_keys(state.store.as_ref(), &p.account_id, q.limit()?, q.cursor()).await?))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateKeyBody {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    scopes: Option<Vec<String>>,
}

async fn create_key(
    State(state): State<AppState>,
    p: Principal,
    OptionalJson(b): OptionalJson<CreateKeyBody>,
) -> Result<Response> {
    p.require(KEYS_MANAGE)?;
    let issued = accounts::create_key(state.store.as_ref(), &p, b.name.as_deref(), b.scopes).await?;
    Ok((StatusCode::CREATED, Json(with_secret(issued))).into_response())
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RevokeParams {
    #[serde(default)]
    force: Option<String>,
}

async fn revoke_key(
    State(state): State<AppState>,
    p: Principal,
    Path(id): Path<String>,
    Query(q): Query<RevokeParams>,
) -> Result<Json<Value>> {
    p.require(KEYS_MANAGE)?;
    let force = match q.force.as_deref() {
        None | Some("false" | "0") => false,
        Some("true" | "1" | "") => true,
        Some(_) => return Err(Error::validation_at(vec![json!("force")], "`force` must be true or false")),
    };
    Ok(Json(accounts::revoke_key(state.store.as_ref(), &p, &id, force).await?))
}

async fn rotate_key(State(state): State<AppState>, p: Principal, Path(id): Path<String>) -> Result<Json<Value>> {
    p.require(KEYS_MANAGE)?;
    Ok(Json(with_secret(accounts::rotate_key(state.store.as_ref(), &p, &id).await?)))
}

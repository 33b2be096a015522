//! HTTP tests of the router: accounts, API keys, workflows, and the error envelope.

use super::auth::{RateLimited, rate_limit_headers};
use super::router;
use crate::app::{App, AppConfig, AppState};
use crate::error::{Detail, Error};
use crate::testing::{MemQueue, MemStore};
use axum::Router;
use axum::body::Body;
use axum::response::IntoResponse;
use axum::routing::post;
use http::{HeaderMap, Method, Request, StatusCode, header};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use std::sync::Arc;
use tower::ServiceExt;

const BODY_LIMIT: usize = 16 * 1024;
const RATE_LIMIT: u64 = 2;

fn state() -> AppState {
    let config = AppConfig { max_body_bytes: BODY_LIMIT, rate_limit_per_minute: RATE_LIMIT, ..AppConfig::default() };
    App::new(
        Arc::new(MemStore::new()),
        Arc::new(MemQueue::new()),
        Arc::new(crate::secrets::SecretBox::ephemeral()),
        config,
    )
}

async fn limited(r: RateLimited) -> impl IntoResponse {
    (rate_limit_headers(&r.rate), "ok")
}

/// The production router plus one test route that uses the run-start rate limit.
fn app() -> Router {
    let s = state();
    router(s.clone()).merge(Router::new().route("/test/limited", post(limited)).with_state(s))
}

struct Resp {
    status: StatusCode,
    headers: HeaderMap,
    body: Value,
}

impl Resp {
    fn code(&self) -> &str {
        self.body["error"]["code"].as_str().unwrap_or("")
    }
    fn message(&self) -> &str {
        self.body["error"]["message"].as_str().unwrap_or("")
    }
}

async fn send(app: &Router, req: Request<Body>) -> Resp {
    let res = app.clone().oneshot(req).await.unwrap();
    let status = res.status();
    let headers = res.headers().clone();
    let bytes = res.into_body().collect().await.unwrap().to_bytes();
    let body = serde_json::from_slice(&bytes).unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()));
    Resp { status, headers, body }
}

async fn call(app: &Router, method: Method, uri: &str, key: Option<&str>, body: Option<Value>) -> Resp {
    let mut req = Request::builder().method(method).uri(uri);
    if let Some(k) = key {
        req = req.header("x-api-key", k);
    }
    let req = match body {
        Some(b) => req.header(header::CONTENT_TYPE, "application/json").body(Body::from(b.to_string())),
        None => req.body(Body::empty()),
    };
    send(app, req.unwrap()).await
}

async fn raw(app: &Router, method: Method, uri: &str, headers: &[(&str, &str)], body: impl Into<Body>) -> Resp {
    let mut req = Request::builder().method(method).uri(uri);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    send(app, req.body(body.into()).unwrap()).await
}

/// Registers an account; returns (account id, api key).
async fn register(app: &Router) -> (String, String) {
    let r = call(app, Method::POST, "/api/v1/auth/register", None, Some(json!({"name": "Acme"}))).await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    (r.body["account"]["id"].as_str().unwrap().into(), r.body["api_key"].as_str().unwrap().into())
}

async fn key_with_scopes(app: &Router, admin: &str, scopes: Value) -> String {
    let r =
        call(app, Method::POST, "/api/v1/api-keys", Some(admin), Some(json!({"name": "k", "scopes": scopes}))).await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    r.body["api_key"].as_str().unwrap().into()
}

fn workflow(id: &str) -> Value {
    json!({"id": id, "name": "Orders", "description": "d",
           "inputSchema": {"type": "object", "required": ["amount"], "properties": {"amount": {"type": "number"}}},
           "blocks": [
               {"id": "start", "type": "starter"},
               {"id": "check", "type": "condition"},
               {"id": "review", "type": "human", "config": {"kind": "approval", "prompt": "Approve?"}},
               {"id": "done", "type": "response", "config": {"body": {"ok": true}}}],
           "edges": [
               {"from": "start", "to": "check"},
               {"from": "check", "to": "review", "when": "input.amount > 1000"},
               {"from": "check", "to": "done"},
               {"from": "review", "to": "done"}]})
}

fn assert_envelope(r: &Resp, status: StatusCode, code: &str) {
    assert_eq!(r.status, status, "{:?}", r.body);
    assert_eq!(r.code(), code, "{:?}", r.body);
    assert!(r.body["error"]["message"].is_string(), "{:?}", r.body);
    assert!(r.body["error"]["details"].is_array(), "{:?}", r.body);
}

// ---- envelope and meta -------------------------------------------------------------

#[tokio::test]
async fn every_error_variant_maps_to_its_status_code_and_envelope() {
    let cases = [
        (Error::Unauthorized("u".into()), StatusCode::UNAUTHORIZED, "UNAUTHORIZED"),
        (Error::Forbidden("f".into()), StatusCode::FORBIDDEN, "FORBIDDEN"),
        (Error::NotFound("n".into()), StatusCode::NOT_FOUND, "NOT_FOUND"),
        (Error::Conflict("c".into()), StatusCode::CONFLICT, "CONFLICT"),
        (Error::validation("v"), StatusCode::BAD_REQUEST, "VALIDATION_ERROR"),
        (Error::InvalidStatus("i".into()), StatusCode::BAD_REQUEST, "INVALID_STATUS"),
        (Error::PayloadTooLarge("p".into()), StatusCode::PAYLOAD_TOO_LARGE, "PAYLOAD_TOO_LARGE"),
        (Error::HeadersTooLarge("h".into()), StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE, "HEADERS_TOO_LARGE"),
        (
            Error::Unprocessable { message: "x".into(), details: vec![Detail::new(vec![json!("a")], "m")] },
            StatusCode::UNPROCESSABLE_ENTITY,
            "UNPROCESSABLE",
        ),
        (Error::RateLimited("r".into(), 7), StatusCode::TOO_MANY_REQUESTS, "RATE_LIMITED"),
        (Error::NotImplemented("ni".into()), StatusCode::NOT_IMPLEMENTED, "NOT_IMPLEMENTED"),
        (Error::Internal("db password is hunter2".into()), StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL"),
    ];
    for (e, status, code) in cases {
        let res = e.into_response();
        let (status_got, headers) = (res.status(), res.headers().clone());
        let bytes = res.into_body().collect().await.unwrap().to_bytes();
        let r = Resp { status: status_got, headers, body: serde_json::from_slice(&bytes).unwrap() };
        assert_envelope(&r, status, code);
        if code == "RATE_LIMITED" {
            assert_eq!(r.headers[header::RETRY_AFTER], "7");
        }
        if code == "INTERNAL" {
            assert!(!r.message().contains("hunter2"), "internal detail leaked: {:?}", r.body);
        }
        if code == "UNPROCESSABLE" {
            assert_eq!(r.body["error"]["details"][0]["path"], json!(["a"]));
        }
    }
}

#[tokio::test]
async fn health_is_public_and_reports_the_version() {
    let r = call(&app(), Method::GET, "/api/v1/health", None, None).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body, json!({"status": "ok", "version": env!("CARGO_PKG_VERSION")}));
}

#[tokio::test]
async fn openapi_document_is_openapi_3_1_and_lists_the_routes() {
    let r = call(&app(), Method::GET, "/api/v1/openapi.json", None, None).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.headers[header::CONTENT_TYPE], "application/json");
    assert_eq!(r.body["openapi"], "3.1.0");
    for p in [
        "/api/v1/auth/register",
        "/api/v1/account",
        "/api/v1/account/rotate-callback-secret",
        "/api/v1/api-keys",
        "/api/v1/api-keys/{id}",
        "/api/v1/api-keys/{id}/rotate",
        "/api/v1/workflows",
        "/api/v1/workflows/{id}",
        "/api/v1/workflows/{id}/graph",
        "/api/v1/workflows/{id}/versions",
        "/api/v1/workflows/{id}/activate",
        "/api/v1/workflows/{id}/deactivate",
        "/api/v1/workflows/{id}/deploy",
        "/api/v1/workflows/{id}/undeploy",
        "/api/v1/workflows/{id}/arm",
        "/api/v1/workflows/{id}/triggers",
        "/api/v1/workflows/{id}/triggers/{trigger_id}",
        "/api/v1/workflows/{id}/triggers/{trigger_id}/enable",
        "/api/v1/workflows/{id}/triggers/{trigger_id}/disable",
        "/api/v1/apps",
        "/api/v1/apps/{app_id}",
        "/api/v1/hooks/{token}",
        "/api/v1/webhooks/{id}",
        "/api/webhooks/{id}",
        "/api/v1/runs/{id}/callbacks",
        "/api/v1/runs/{id}/callbacks/{delivery_id}",
        "/api/v1/runs/{id}/callbacks/{delivery_id}/redeliver",
        "/api/v1/callback",
        "/api/v1/connections",
        "/api/v1/connections/{id}",
        "/api/v1/runs",
        "/api/v1/tasks",
        "/console",
        "/api/v1/providers",
        "/api/v1/providers/{id}",
        "/api/v1/agents/templates",
    ] {
        assert!(r.body["paths"].get(p).is_some(), "{p} missing from openapi.json");
    }
}

#[tokio::test]
async fn unknown_route_is_a_404_envelope() {
    let r = call(&app(), Method::GET, "/api/v1/nope", None, None).await;
    assert_envelope(&r, StatusCode::NOT_FOUND, "NOT_FOUND");
    assert!(r.message().contains("/api/v1/nope"));
}

#[tokio::test]
async fn wrong_method_is_a_405_envelope_with_allow_header() {
    let r = call(&app(), Method::DELETE, "/api/v1/health", None, None).await;
    assert_envelope(&r, StatusCode::METHOD_NOT_ALLOWED, "METHOD_NOT_ALLOWED");
    assert!(r.headers.get(header::ALLOW).is_some(), "{:?}", r.headers);
}

// ---- authentication ----------------------------------------------------------------

#[tokio::test]
async fn missing_api_key_is_401_with_a_hint() {
    let r = call(&app(), Method::GET, "/api/v1/workflows", None, None).await;
    assert_envelope(&r, StatusCode::UNAUTHORIZED, "UNAUTHORIZED");
    assert_eq!(r.message(), "Missing API key: send X-API-Key or Authorization: Bearer");
}

#[tokio::test]
async fn invalid_api_key_is_401_in_both_header_forms() {
    let app = app();
    let r = call(&app, Method::GET, "/api/v1/workflows", Some("bk_0000"), None).await;
    assert_envelope(&r, StatusCode::UNAUTHORIZED, "UNAUTHORIZED");
    assert_eq!(r.message(), "Invalid API key");
    let r = raw(&app, Method::GET, "/api/v1/workflows", &[("authorization", "Bearer bk_0000")], "").await;
    assert_envelope(&r, StatusCode::UNAUTHORIZED, "UNAUTHORIZED");
    assert_eq!(r.message(), "Invalid API key");
}

#[tokio::test]
async fn malformed_authorization_header_is_401() {
    let app = app();
    for v in ["Basic dXNlcjpwYXNz", "Bearer", "Bearer    ", "bk_abc"] {
        let r = raw(&app, Method::GET, "/api/v1/workflows", &[("authorization", v)], "").await;
        assert_envelope(&r, StatusCode::UNAUTHORIZED, "UNAUTHORIZED");
        assert!(r.message().contains("Malformed Authorization"), "{v}: {:?}", r.body);
    }
}

#[tokio::test]
async fn bearer_and_x_api_key_both_authenticate() {
    let app = app();
    let (_, key) = register(&app).await;
    let r = call(&app, Method::GET, "/api/v1/workflows", Some(&key), None).await;
    assert_eq!(r.status, StatusCode::OK);
    let bearer = format!("Bearer {key}");
    let r = raw(&app, Method::GET, "/api/v1/workflows", &[("authorization", &bearer)], "").await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(r.body, json!({"data": [], "next_cursor": null}));
}

#[tokio::test]
async fn a_key_without_the_scope_is_403() {
    let app = app();
    let (_, admin) = register(&app).await;
    let reader = key_with_scopes(&app, &admin, json!(["workflows:read"])).await;
    let r = call(&app, Method::POST, "/api/v1/workflows", Some(&reader), Some(workflow("wf1"))).await;
    assert_envelope(&r, StatusCode::FORBIDDEN, "FORBIDDEN");
    assert!(r.message().contains("workflows:write"));
    let r = call(&app, Method::GET, "/api/v1/api-keys", Some(&reader), None).await;
    assert_envelope(&r, StatusCode::FORBIDDEN, "FORBIDDEN");
    let r = call(&app, Method::GET, "/api/v1/workflows", Some(&reader), None).await;
    assert_eq!(r.status, StatusCode::OK);
}

#[tokio::test]
async fn run_starts_over_the_limit_are_429_with_retry_after() {
    let app = app();
    let (_, key) = register(&app).await;
    for remaining in (0..RATE_LIMIT).rev() {
        let r = call(&app, Method::POST, "/test/limited", Some(&key), None).await;
        assert_eq!((r.status, r.body.clone()), (StatusCode::OK, json!("ok")));
        assert_eq!(r.headers["ratelimit-limit"], RATE_LIMIT.to_string().as_str());
        assert_eq!(r.headers["ratelimit-remaining"], remaining.to_string().as_str());
        assert!(r.headers.contains_key("ratelimit-reset"));
    }
    let r = call(&app, Method::POST, "/test/limited", Some(&key), None).await;
    assert_envelope(&r, StatusCode::TOO_MANY_REQUESTS, "RATE_LIMITED");
    let retry: u64 = r.headers[header::RETRY_AFTER].to_str().unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
}

// ---- accounts and keys -------------------------------------------------------------

#[tokio::test]
async fn register_returns_201_with_account_secret_and_a_full_scope_key() {
    let app = app();
    let r =
        call(&app, Method::POST, "/api/v1/auth/register", None, Some(json!({"name": "Acme", "email": "a@b.co"}))).await;
    assert_eq!(r.status, StatusCode::CREATED);
    assert!(r.body["account"]["id"].as_str().unwrap().starts_with("acct_"));
    assert_eq!(r.body["account"]["email"], "a@b.co");
    assert!(r.body["account"]["callback_signing_secret"].as_str().unwrap().starts_with("whsec_"));
    let key = r.body["api_key"].as_str().unwrap();
    assert!(key.starts_with("bk_") && key.len() == 67);
    assert_eq!(r.body["key"]["scopes"], json!(["*"]));
    assert!(r.body["key"]["key_id"].as_str().unwrap().starts_with("key_"));
}

#[tokio::test]
async fn register_validation_errors_name_the_field() {
    let app = app();
    let r = call(&app, Method::POST, "/api/v1/auth/register", None, Some(json!({}))).await;
    assert_envelope(&r, StatusCode::BAD_REQUEST, "VALIDATION_ERROR");
    assert_eq!(r.body["error"]["details"][0]["path"], json!(["name"]));
    let r = call(&app, Method::POST, "/api/v1/auth/register", None, Some(json!({"name": 5}))).await;
    assert_envelope(&r, StatusCode::BAD_REQUEST, "VALIDATION_ERROR");
    assert_eq!(r.body["error"]["details"][0]["path"], json!(["name"]));
    let r = call(&app, Method::POST, "/api/v1/auth/register", None, Some(json!({"name": "A", "email": "nope"}))).await;
    assert_eq!(r.body["error"]["details"][0]["path"], json!(["email"]));
    let r = call(&app, Method::POST, "/api/v1/auth/register", None, Some(json!({"name": "A", "plan": "pro"}))).await;
    assert_envelope(&r, StatusCode::BAD_REQUEST, "VALIDATION_ERROR");
    assert!(r.message().contains("plan"), "{:?}", r.body);
}

#[tokio::test]
async fn account_shows_and_rotates_the_callback_signing_secret() {
    let app = app();
    let (acct, key) = register(&app).await;
    let r = call(&app, Method::GET, "/api/v1/account", Some(&key), None).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body["id"], acct.as_str());
    let before = r.body["callback_signing_secret"].as_str().unwrap().to_string();
    let r = call(&app, Method::POST, "/api/v1/account/rotate-callback-secret", Some(&key), None).await;
    assert_eq!(r.status, StatusCode::OK);
    let after = r.body["callback_signing_secret"].as_str().unwrap();
    assert!(after.starts_with("whsec_") && after != before);
    // The old secret keeps signing for a grace period, and the account says until when.
    assert_eq!(r.body["callback_signing_secret_previous"], before.as_str());
    assert!(r.body["callback_signing_secret_previous_until"].as_str().is_some_and(|t| t.ends_with('Z')));
}

#[tokio::test]
async fn api_keys_are_created_listed_without_secrets_and_revoked() {
    let app = app();
    let (_, admin) = register(&app).await;
    let r = call(
        &app,
        Method::POST,
        "/api/v1/api-keys",
        Some(&admin),
        Some(json!({"name": "ci", "scopes": ["runs:write"]})),
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED);
    let secret = r.body["api_key"].as_str().unwrap().to_string();
    let key_id = r.body["key_id"].as_str().unwrap().to_string();
    assert_eq!(r.body["prefix"], &secret[..10]);

    let r = call(&app, Method::GET, "/api/v1/api-keys", Some(&admin), None).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body["data"].as_array().unwrap().len(), 2);
    let text = r.body.to_string();
    assert!(!text.contains(&secret) && !text.contains("hash") && !text.contains("api_key"), "{text}");

    let r = call(&app, Method::GET, "/api/v1/api-keys?limit=1", Some(&admin), None).await;
    assert_eq!(r.body["data"].as_array().unwrap().len(), 1);
    let cursor = r.body["next_cursor"].as_str().unwrap().to_string();
    let r = call(&app, Method::GET, &format!("/api/v1/api-keys?limit=1&cursor={cursor}"), Some(&admin), None).await;
    assert_eq!(r.body["data"].as_array().unwrap().len(), 1);

    let r = call(&app, Method::DELETE, &format!("/api/v1/api-keys/{key_id}"), Some(&admin), None).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.body["revoked_at"].is_string());
    let r = call(&app, Method::GET, "/api/v1/api-keys", Some(&secret), None).await;
    assert_envelope(&r, StatusCode::UNAUTHORIZED, "UNAUTHORIZED");
}

#[tokio::test]
async fn creating_a_key_with_no_body_gets_the_callers_scopes() {
    let app = app();
    let (_, admin) = register(&app).await;
    let r = raw(&app, Method::POST, "/api/v1/api-keys", &[("x-api-key", &admin)], "").await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    assert_eq!(r.body["scopes"], json!(["*"]));
}

#[tokio::test]
async fn rotating_a_key_retires_the_old_secret() {
    let app = app();
    let (_, admin) = register(&app).await;
    let r = call(&app, Method::POST, "/api/v1/api-keys", Some(&admin), Some(json!({"name": "ci"}))).await;
    let (old, key_id) =
        (r.body["api_key"].as_str().unwrap().to_string(), r.body["key_id"].as_str().unwrap().to_string());
    let r = call(&app, Method::POST, &format!("/api/v1/api-keys/{key_id}/rotate"), Some(&admin), None).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body["key_id"], key_id.as_str());
    let new = r.body["api_key"].as_str().unwrap().to_string();
    assert_ne!(new, old);
    let r = call(&app, Method::GET, "/api/v1/workflows", Some(&old), None).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    let r = call(&app, Method::GET, "/api/v1/workflows", Some(&new), None).await;
    assert_eq!(r.status, StatusCode::OK);
    // A revoked key cannot be rotated.
    call(&app, Method::DELETE, &format!("/api/v1/api-keys/{key_id}"), Some(&admin), None).await;
    let r = call(&app, Method::POST, &format!("/api/v1/api-keys/{key_id}/rotate"), Some(&admin), None).await;
    assert_envelope(&r, StatusCode::BAD_REQUEST, "INVALID_STATUS");
}

#[tokio::test]
async fn another_accounts_key_cannot_be_revoked_or_rotated() {
    let app = app();
    let (_, a) = register(&app).await;
    let (_, b) = register(&app).await;
    let r = call(&app, Method::GET, "/api/v1/api-keys", Some(&b), None).await;
    let b_key_id = r.body["data"][0]["key_id"].as_str().unwrap().to_string();
    let r = call(&app, Method::DELETE, &format!("/api/v1/api-keys/{b_key_id}"), Some(&a), None).await;
    assert_envelope(&r, StatusCode::NOT_FOUND, "NOT_FOUND");
    let r = call(&app, Method::POST, &format!("/api/v1/api-keys/{b_key_id}/rotate"), Some(&a), None).await;
    assert_envelope(&r, StatusCode::NOT_FOUND, "NOT_FOUND");
    let r = call(&app, Method::GET, "/api/v1/workflows", Some(&b), None).await;
    assert_eq!(r.status, StatusCode::OK);
}

#[tokio::test]
async fn a_keys_manage_key_cannot_rotate_or_revoke_the_star_key() {
    let app = app();
    let (_, root) = register(&app).await;
    let r = call(&app, Method::GET, "/api/v1/api-keys", Some(&root), None).await;
    let root_id = r.body["data"][0]["key_id"].as_str().unwrap().to_string();
    let manager = key_with_scopes(&app, &root, json!(["keys:manage"])).await;
    let r = call(&app, Method::POST, &format!("/api/v1/api-keys/{root_id}/rotate"), Some(&manager), None).await;
    assert_envelope(&r, StatusCode::FORBIDDEN, "FORBIDDEN");
    assert!(r.body.get("api_key").is_none(), "{:?}", r.body);
    let r = call(&app, Method::DELETE, &format!("/api/v1/api-keys/{root_id}?force=true"), Some(&manager), None).await;
    assert_envelope(&r, StatusCode::FORBIDDEN, "FORBIDDEN");
    let r = call(&app, Method::POST, "/api/v1/workflows", Some(&root), Some(workflow("still-mine"))).await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
}

#[tokio::test]
async fn the_last_managing_key_revokes_itself_only_with_force() {
    let app = app();
    let (_, root) = register(&app).await;
    let r = call(&app, Method::GET, "/api/v1/api-keys", Some(&root), None).await;
    let root_id = r.body["data"][0]["key_id"].as_str().unwrap().to_string();
    let r = call(&app, Method::DELETE, &format!("/api/v1/api-keys/{root_id}"), Some(&root), None).await;
    assert_envelope(&r, StatusCode::CONFLICT, "CONFLICT");
    assert!(r.message().contains("force=true"), "{:?}", r.body);
    let r = call(&app, Method::DELETE, &format!("/api/v1/api-keys/{root_id}?force=maybe"), Some(&root), None).await;
    assert_envelope(&r, StatusCode::BAD_REQUEST, "VALIDATION_ERROR");
    let r = call(&app, Method::DELETE, &format!("/api/v1/api-keys/{root_id}?force=true"), Some(&root), None).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    let r = call(&app, Method::GET, "/api/v1/api-keys", Some(&root), None).await;
    assert_envelope(&r, StatusCode::UNAUTHORIZED, "UNAUTHORIZED");
}

/// A request from `peer` (the address the local server's socket reports).
async fn from_peer(app: &Router, peer: &str, uri: &str, headers: &[(&str, &str)], body: Value) -> Resp {
    let mut req = Request::builder().method(Method::POST).uri(uri).header(header::CONTENT_TYPE, "application/json");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let mut req = req.body(Body::from(body.to_string())).unwrap();
    let addr: std::net::SocketAddr = format!("{peer}:40000").parse().unwrap();
    req.extensions_mut().insert(axum::extract::ConnectInfo(addr));
    send(app, req).await
}

fn app_with(config: AppConfig) -> Router {
    let s = App::new(
        Arc::new(MemStore::new()),
        Arc::new(MemQueue::new()),
        Arc::new(crate::secrets::SecretBox::ephemeral()),
        config,
    );
    router(s.clone()).merge(Router::new().route("/test/limited", post(limited)).with_state(s))
}

#[tokio::test]
async fn registrations_are_limited_per_client_address_and_forwarded_for_is_ignored_by_default() {
    let app = app_with(AppConfig { register_limit_per_hour: 2, ..AppConfig::default() });
    let reg = |peer: &'static str, xff: &'static str| {
        let app = app.clone();
        async move {
            let h: Vec<(&str, &str)> = if xff.is_empty() { vec![] } else { vec![("x-forwarded-for", xff)] };
            from_peer(&app, peer, "/api/v1/auth/register", &h, json!({"name": "n"})).await
        }
    };
    let first = reg("198.51.100.1", "").await;
    assert_eq!(first.status, StatusCode::CREATED);
    // The window shows in RateLimit-* headers, as on every rate-limited route.
    assert_eq!(
        (first.headers["ratelimit-limit"].to_str().unwrap(), first.headers["ratelimit-remaining"].to_str().unwrap()),
        ("2", "1")
    );
    assert!(first.headers.contains_key("ratelimit-reset"));
    assert_eq!(reg("198.51.100.1", "1.1.1.1").await.status, StatusCode::CREATED);
    let r = reg("198.51.100.1", "2.2.2.2").await;
    assert_envelope(&r, StatusCode::TOO_MANY_REQUESTS, "RATE_LIMITED");
    assert!(r.headers.contains_key(header::RETRY_AFTER));
    assert!(r.message().contains("registrations"), "{:?}", r.body);
    assert_eq!(reg("198.51.100.2", "").await.status, StatusCode::CREATED);
}

#[tokio::test]
async fn behind_a_trusted_proxy_the_forwarded_client_is_counted() {
    let app = app_with(AppConfig { register_limit_per_hour: 1, trusted_proxy_hops: 1, ..AppConfig::default() });
    let proxy = "10.0.0.9";
    let reg = |xff: &'static str| {
        let app = app.clone();
        async move {
            from_peer(&app, proxy, "/api/v1/auth/register", &[("x-forwarded-for", xff)], json!({"name": "n"})).await
        }
    };
    assert_eq!(reg("203.0.113.1").await.status, StatusCode::CREATED);
    assert_eq!(reg("203.0.113.2").await.status, StatusCode::CREATED);
    // A client that writes its own entry first is still counted by what the proxy appended.
    assert_eq!(reg("9.9.9.9, 203.0.113.1").await.status, StatusCode::TOO_MANY_REQUESTS);
}

#[tokio::test]
async fn every_key_of_an_account_draws_on_one_run_start_budget() {
    let app = app();
    let (_, a) = register(&app).await;
    let b = key_with_scopes(&app, &a, json!(["runs:write"])).await;
    assert_eq!(call(&app, Method::POST, "/test/limited", Some(&a), None).await.status, StatusCode::OK);
    assert_eq!(call(&app, Method::POST, "/test/limited", Some(&b), None).await.status, StatusCode::OK);
    let fresh = key_with_scopes(&app, &a, json!(["runs:write"])).await;
    let r = call(&app, Method::POST, "/test/limited", Some(&fresh), None).await;
    assert_envelope(&r, StatusCode::TOO_MANY_REQUESTS, "RATE_LIMITED");
    // Another account has its own budget.
    let (_, other) = register(&app).await;
    assert_eq!(call(&app, Method::POST, "/test/limited", Some(&other), None).await.status, StatusCode::OK);
}

#[tokio::test]
async fn doors_without_a_key_are_limited_per_client_address_before_any_lookup() {
    let app = app();
    for _ in 0..RATE_LIMIT {
        let r = from_peer(&app, "198.51.100.7", "/api/v1/hooks/guess", &[], json!({})).await;
        assert_envelope(&r, StatusCode::NOT_FOUND, "NOT_FOUND");
    }
    for uri in [
        "/api/v1/hooks/guess-again",
        "/api/v1/webhooks/app_guess",
        "/api/webhooks/3f1d2c3b-4a5e-4f60-8a7b-9c0d1e2f3a4b",
    ] {
        let r = from_peer(&app, "198.51.100.7", uri, &[], json!({})).await;
        assert_envelope(&r, StatusCode::TOO_MANY_REQUESTS, "RATE_LIMITED");
    }
    let r = from_peer(&app, "198.51.100.8", "/api/v1/hooks/guess", &[], json!({})).await;
    assert_envelope(&r, StatusCode::NOT_FOUND, "NOT_FOUND");
}

#[tokio::test]
async fn json_object_bodies_refuse_arrays_and_scalars_with_400() {
    let app = app();
    let (_, key) = register(&app).await;
    for (uri, body) in [
        ("/api/v1/api-keys", json!([null, null])),
        ("/api/v1/api-keys", json!("keys")),
        ("/api/v1/workflows", json!([workflow("wf-array")])),
        ("/api/v1/trigger", json!(["wf", {}])),
        ("/api/v1/workflows/wf/run", json!([{"n": 1}])),
    ] {
        let r = call(&app, Method::POST, uri, Some(&key), Some(body.clone())).await;
        assert_envelope(&r, StatusCode::BAD_REQUEST, "VALIDATION_ERROR");
        assert!(r.message().contains("must be a JSON object"), "{uri} {body}: {:?}", r.body);
    }
    let r = call(&app, Method::POST, "/api/v1/auth/register", None, Some(json!(["name"]))).await;
    assert_envelope(&r, StatusCode::BAD_REQUEST, "VALIDATION_ERROR");
    assert_eq!(r.message(), "The request body must be a JSON object, not an array");
    // Nothing was created by the refused requests.
    let r = call(&app, Method::GET, "/api/v1/api-keys", Some(&key), None).await;
    assert_eq!(r.body["data"].as_array().unwrap().len(), 1);
}

// ---- request bodies ----------------------------------------------------------------

#[tokio::test]
async fn wrong_content_type_is_400() {
    let app = app();
    let (_, key) = register(&app).await;
    let r = raw(
        &app,
        Method::POST,
        "/api/v1/workflows",
        &[("x-api-key", &key), ("content-type", "text/plain")],
        workflow("wf1").to_string(),
    )
    .await;
    assert_envelope(&r, StatusCode::BAD_REQUEST, "VALIDATION_ERROR");
    assert_eq!(r.message(), "Content-Type must be application/json");
}

#[tokio::test]
async fn json_syntax_errors_are_400_with_line_and_column() {
    let app = app();
    let (_, key) = register(&app).await;
    let r = raw(
        &app,
        Method::POST,
        "/api/v1/workflows",
        &[("x-api-key", &key), ("content-type", "application/json; charset=utf-8")],
        "{\n  \"name\": \"x\",\n  oops\n}",
    )
    .await;
    assert_envelope(&r, StatusCode::BAD_REQUEST, "VALIDATION_ERROR");
    assert!(r.message().contains("line 3 column"), "{:?}", r.body);
}

#[tokio::test]
async fn bodies_over_the_limit_are_413() {
    let app = app();
    let (_, key) = register(&app).await;
    let big = json!({"name": "x", "description": "y".repeat(BODY_LIMIT + 1)}).to_string();
    let r =
        raw(&app, Method::POST, "/api/v1/workflows", &[("x-api-key", &key), ("content-type", "application/json")], big)
            .await;
    assert_envelope(&r, StatusCode::PAYLOAD_TOO_LARGE, "PAYLOAD_TOO_LARGE");
}

// ---- workflows ---------------------------------------------------------------------

#[tokio::test]
async fn workflow_is_created_read_and_listed() {
    let app = app();
    let (_, key) = register(&app).await;
    let r = call(&app, Method::POST, "/api/v1/workflows", Some(&key), Some(workflow("wf_orders"))).await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    assert_eq!(r.body["id"], "wf_orders");
    assert_eq!(r.body["status"], "draft");
    assert_eq!(r.body["deploy_state"], "internal");
    assert_eq!(r.body["armed_until"], Value::Null);
    assert_eq!(r.body["version"], 1);
    assert_eq!(r.body["input_schema"]["required"], json!(["amount"]));
    assert_eq!(r.body["blocks"].as_array().unwrap().len(), 4);
    assert_eq!(r.body["edges"].as_array().unwrap().len(), 4);

    let r = call(&app, Method::GET, "/api/v1/workflows/wf_orders", Some(&key), None).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body["name"], "Orders");
    assert_eq!(r.body["blocks"][2]["config"]["kind"], "approval");

    let r = call(
        &app,
        Method::POST,
        "/api/v1/workflows",
        Some(&key),
        Some(json!({"name": "Linear",
        "steps": [{"id": "a", "type": "starter"}, {"id": "b", "type": "function", "config": {"code": "return 1"}}]})),
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    assert!(r.body["id"].as_str().unwrap().starts_with("wf_"));
    assert_eq!(r.body["blocks"][1]["type"], "code");
    assert_eq!(r.body["edges"], json!([{"from": "a", "to": "b"}]));

    let r = call(&app, Method::GET, "/api/v1/workflows?limit=1", Some(&key), None).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body["data"].as_array().unwrap().len(), 1);
    assert!(r.body["data"][0].get("blocks").is_none());
    let cursor = r.body["next_cursor"].as_str().unwrap().to_string();
    let r = call(&app, Method::GET, &format!("/api/v1/workflows?limit=1&cursor={cursor}"), Some(&key), None).await;
    assert_eq!(r.body["data"].as_array().unwrap().len(), 1);
    assert_eq!(r.body["next_cursor"], Value::Null);
}

#[tokio::test]
async fn list_limit_out_of_range_is_400() {
    let app = app();
    let (_, key) = register(&app).await;
    for q in ["limit=0", "limit=101", "limit=abc"] {
        let r = call(&app, Method::GET, &format!("/api/v1/workflows?{q}"), Some(&key), None).await;
        assert_envelope(&r, StatusCode::BAD_REQUEST, "VALIDATION_ERROR");
        assert_eq!(r.body["error"]["details"][0]["path"], json!(["limit"]), "{q}");
    }
}

#[tokio::test]
async fn duplicate_workflow_id_is_409() {
    let app = app();
    let (_, key) = register(&app).await;
    call(&app, Method::POST, "/api/v1/workflows", Some(&key), Some(workflow("orders"))).await;
    let r = call(&app, Method::POST, "/api/v1/workflows", Some(&key), Some(workflow("orders"))).await;
    assert_envelope(&r, StatusCode::CONFLICT, "CONFLICT");
    assert!(r.message().contains("orders"));
}

#[tokio::test]
async fn unknown_block_type_is_400_with_its_name() {
    let app = app();
    let (_, key) = register(&app).await;
    let body = json!({"name": "x", "blocks": [{"id": "a", "type": "teleport"}]});
    let r = call(&app, Method::POST, "/api/v1/workflows", Some(&key), Some(body)).await;
    assert_envelope(&r, StatusCode::BAD_REQUEST, "VALIDATION_ERROR");
    assert_eq!(r.message(), "Unknown block type: teleport");
    assert_eq!(r.body["error"]["details"][0]["path"], json!(["blocks", 0, "type"]));
}

#[tokio::test]
async fn invalid_workflows_are_400_with_detail_paths() {
    let app = app();
    let (_, key) = register(&app).await;
    let body =
        json!({"name": "x", "blocks": [{"id": "a", "type": "starter"}], "edges": [{"from": "a", "to": "ghost"}]});
    let r = call(&app, Method::POST, "/api/v1/workflows", Some(&key), Some(body)).await;
    assert_envelope(&r, StatusCode::BAD_REQUEST, "VALIDATION_ERROR");
    assert_eq!(r.body["error"]["details"][0]["path"], json!(["edges", 0, "to"]));

    let body = json!({"name": "x", "inputSchema": {"type": 12}, "steps": [{"id": "a", "type": "starter"}]});
    let r = call(&app, Method::POST, "/api/v1/workflows", Some(&key), Some(body)).await;
    assert_envelope(&r, StatusCode::BAD_REQUEST, "VALIDATION_ERROR");
    assert_eq!(r.body["error"]["details"][0]["path"], json!(["inputSchema"]));
    assert!(r.message().contains("not a valid JSON Schema"), "{:?}", r.body);

    let r = call(&app, Method::POST, "/api/v1/workflows", Some(&key), Some(json!(["not", "an", "object"]))).await;
    assert_envelope(&r, StatusCode::BAD_REQUEST, "VALIDATION_ERROR");
}

#[tokio::test]
async fn patch_changes_metadata_and_versions_schema_changes() {
    let app = app();
    let (_, key) = register(&app).await;
    call(&app, Method::POST, "/api/v1/workflows", Some(&key), Some(workflow("orders"))).await;
    let r = call(
        &app,
        Method::PATCH,
        "/api/v1/workflows/orders",
        Some(&key),
        Some(json!({"name": "Orders v2", "description": null, "callback_url": "https://example.com/cb"})),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(r.body["name"], "Orders v2");
    assert_eq!(r.body["description"], Value::Null);
    assert_eq!(r.body["callback_url"], "https://example.com/cb");
    assert_eq!(r.body["version"], 1);

    let r = call(
        &app,
        Method::PATCH,
        "/api/v1/workflows/orders",
        Some(&key),
        Some(json!({"inputSchema": null, "variables": {"region": "eu"}})),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(r.body["version"], 2);
    assert_eq!(r.body["input_schema"], Value::Null);
    assert_eq!(r.body["variables"], json!({"region": "eu"}));
    assert_eq!(r.body["blocks"].as_array().unwrap().len(), 4);

    let r = call(&app, Method::PATCH, "/api/v1/workflows/orders", Some(&key), Some(json!({"status": "paused"}))).await;
    assert_envelope(&r, StatusCode::BAD_REQUEST, "VALIDATION_ERROR");
    assert_eq!(r.body["error"]["details"][0]["path"], json!(["status"]));
    let r = call(&app, Method::PATCH, "/api/v1/workflows/orders", Some(&key), Some(json!({"version": 9}))).await;
    assert_envelope(&r, StatusCode::BAD_REQUEST, "VALIDATION_ERROR");
    assert!(r.message().contains("read-only"), "{:?}", r.body);
}

#[tokio::test]
async fn put_graph_makes_a_new_version_and_versions_lists_them() {
    let app = app();
    let (_, key) = register(&app).await;
    call(&app, Method::POST, "/api/v1/workflows", Some(&key), Some(workflow("orders"))).await;
    let r = call(
        &app,
        Method::PUT,
        "/api/v1/workflows/orders/graph",
        Some(&key),
        Some(json!({"steps": [{"id": "s", "type": "starter"}, {"id": "r", "type": "response"}]})),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(r.body["version"], 2);
    assert_eq!(r.body["blocks"].as_array().unwrap().len(), 2);

    let r = call(
        &app,
        Method::PUT,
        "/api/v1/workflows/orders/graph",
        Some(&key),
        Some(json!({"blocks": [{"id": "a", "type": "nope"}]})),
    )
    .await;
    assert_eq!(r.message(), "Unknown block type: nope");

    let r = call(&app, Method::GET, "/api/v1/workflows/orders/versions", Some(&key), None).await;
    assert_eq!(r.status, StatusCode::OK);
    let versions: Vec<_> = r.body["data"].as_array().unwrap().iter().map(|v| v["version"].clone()).collect();
    assert_eq!(versions, vec![json!(2), json!(1)]);
    assert!(r.body["data"][0]["created_at"].is_string());
}

#[tokio::test]
async fn activate_and_deactivate_switch_status() {
    let app = app();
    let (_, key) = register(&app).await;
    call(&app, Method::POST, "/api/v1/workflows", Some(&key), Some(workflow("orders"))).await;
    let r = call(&app, Method::POST, "/api/v1/workflows/orders/activate", Some(&key), None).await;
    assert_eq!((r.status, r.body["status"].clone()), (StatusCode::OK, json!("active")));
    let r = call(&app, Method::POST, "/api/v1/workflows/orders/deactivate", Some(&key), None).await;
    assert_eq!((r.status, r.body["status"].clone()), (StatusCode::OK, json!("draft")));
}

#[tokio::test]
async fn delete_removes_the_workflow() {
    let app = app();
    let (_, key) = register(&app).await;
    call(&app, Method::POST, "/api/v1/workflows", Some(&key), Some(workflow("orders"))).await;
    let r = call(&app, Method::DELETE, "/api/v1/workflows/orders", Some(&key), None).await;
    assert_eq!((r.status, r.body.clone()), (StatusCode::NO_CONTENT, json!("")));
    let r = call(&app, Method::GET, "/api/v1/workflows/orders", Some(&key), None).await;
    assert_envelope(&r, StatusCode::NOT_FOUND, "NOT_FOUND");
    let r = call(&app, Method::DELETE, "/api/v1/workflows/orders", Some(&key), None).await;
    assert_envelope(&r, StatusCode::NOT_FOUND, "NOT_FOUND");
}

#[tokio::test]
async fn another_accounts_workflow_is_404_on_every_route() {
    let app = app();
    let (_, a) = register(&app).await;
    let (_, b) = register(&app).await;
    call(&app, Method::POST, "/api/v1/workflows", Some(&a), Some(workflow("orders"))).await;
    let graph = json!({"steps": [{"id": "s", "type": "starter"}]});
    let cases = [
        (Method::GET, "/api/v1/workflows/orders", None),
        (Method::PATCH, "/api/v1/workflows/orders", Some(json!({"name": "mine"}))),
        (Method::DELETE, "/api/v1/workflows/orders", None),
        (Method::GET, "/api/v1/workflows/orders/versions", None),
        (Method::POST, "/api/v1/workflows/orders/activate", None),
        (Method::POST, "/api/v1/workflows/orders/deactivate", None),
    ];
    for (m, uri, body) in cases {
        let r = call(&app, m.clone(), uri, Some(&b), body).await;
        assert_envelope(&r, StatusCode::NOT_FOUND, "NOT_FOUND");
        assert!(!r.message().contains("acct_"), "{m} {uri}: {:?}", r.body);
    }
    let r = call(&app, Method::GET, "/api/v1/workflows", Some(&b), None).await;
    assert_eq!(r.body["data"], json!([]));
    // PUT .../graph creates a missing workflow: the other account gets one of its own.
    let r = call(&app, Method::PUT, "/api/v1/workflows/orders/graph", Some(&b), Some(graph)).await;
    assert_eq!(
        (r.status, r.body["name"].clone(), r.body["version"].clone()),
        (StatusCode::CREATED, json!("orders"), json!(1))
    );
    let r = call(&app, Method::GET, "/api/v1/workflows/orders", Some(&a), None).await;
    assert_eq!((r.status, r.body["name"].clone()), (StatusCode::OK, json!("Orders")));
    assert_eq!(r.body["version"], json!(1), "the first account's workflow is untouched");
}

#[tokio::test]
async fn deploy_undeploy_and_arm_set_the_deploy_state() {
    let app = app();
    let (_, key) = register(&app).await;
    call(&app, Method::POST, "/api/v1/workflows", Some(&key), Some(workflow("orders"))).await;
    let r = call(&app, Method::POST, "/api/v1/workflows/orders/deploy", Some(&key), None).await;
    assert_eq!((r.status, r.body["deploy_state"].clone()), (StatusCode::OK, json!("deployed")), "{:?}", r.body);
    let r = call(&app, Method::POST, "/api/v1/workflows/orders/undeploy", Some(&key), None).await;
    assert_eq!((r.body["deploy_state"].clone(), r.body["armed_until"].clone()), (json!("internal"), Value::Null));
    let r = call(&app, Method::POST, "/api/v1/workflows/orders/arm", Some(&key), None).await;
    let until = r.body["armed_until"].as_str().expect("armed_until").to_string();
    let ms = chrono::DateTime::parse_from_rfc3339(&until).unwrap().timestamp_millis() - crate::ids::now_ms();
    assert!((590_000..=600_000).contains(&ms), "armed for {ms} ms");
    let r = call(&app, Method::POST, "/api/v1/workflows/ghost/arm", Some(&key), None).await;
    assert_envelope(&r, StatusCode::NOT_FOUND, "NOT_FOUND");
}

#[tokio::test]
async fn seed_004s_paths_are_served_as_written_with_its_answers() {
    let app = app();
    let (_, key) = register(&app).await;
    let graph = json!({"name": "Seed 004", "steps": [{"id": "start", "type": "starter"}]});
    let r = call(&app, Method::PUT, "/api/workflows/s4/graph", Some(&key), Some(graph.clone())).await;
    assert_eq!((r.status, r.body["id"].clone()), (StatusCode::CREATED, json!("s4")), "{:?}", r.body);
    let r = call(&app, Method::PUT, "/api/workflows/s4/graph", Some(&key), Some(graph)).await;
    assert_eq!((r.status, r.body["version"].clone()), (StatusCode::OK, json!(2)), "{:?}", r.body);
    let r = call(&app, Method::POST, "/api/workflows/s4/activate", Some(&key), None).await;
    assert_eq!((r.status, r.body["status"].clone()), (StatusCode::OK, json!("active")), "{:?}", r.body);
    let r = call(&app, Method::POST, "/api/workflows/s4/deploy", Some(&key), None).await;
    assert_eq!((r.body["ok"].clone(), r.body["state"].clone()), (json!(true), json!("deployed")), "{:?}", r.body);
    assert_eq!(r.body["deploy_state"], json!("deployed"), "today's fields stay beside seed 004's");
    let r = call(&app, Method::POST, "/api/workflows/s4/undeploy", Some(&key), None).await;
    assert_eq!((r.body["ok"].clone(), r.body["state"].clone()), (json!(true), json!("internal")), "{:?}", r.body);
    let r = call(&app, Method::POST, "/api/workflows/s4/arm", Some(&key), None).await;
    assert_eq!(r.body["ok"], json!(true), "{:?}", r.body);
    assert!(r.body["armed_until"].as_str().is_some_and(|t| t.ends_with('Z')), "{:?}", r.body);
    let r = call(&app, Method::POST, "/api/workflows/s4/execute", Some(&key), Some(json!({"input": {"x": 1}}))).await;
    assert_eq!((r.status, r.body["status"].clone()), (StatusCode::OK, json!("completed")), "{:?}", r.body);
    // The same auth as the versioned paths.
    let r = call(&app, Method::POST, "/api/workflows/s4/deploy", None, None).await;
    assert_envelope(&r, StatusCode::UNAUTHORIZED, "UNAUTHORIZED");
}

// ---- connections ----------------------------------------------------------------------

#[tokio::test]
async fn connections_are_created_read_patched_and_deleted_without_showing_secrets() {
    let app = app();
    let (_, key) = register(&app).await;
    let body = json!({"id": "conn_production_stripe", "name": "Stripe live", "provider": "stripe",
        "credentials": {"api_key": "sk_live_secret"}});
    let r = call(&app, Method::POST, "/api/v1/connections", Some(&key), Some(body.clone())).await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    assert_eq!(r.body["connection_id"], "conn_production_stripe");
    assert!(!r.body.to_string().contains("sk_live_secret"));
    let again = call(&app, Method::POST, "/api/v1/connections", Some(&key), Some(body)).await;
    assert_envelope(&again, StatusCode::CONFLICT, "CONFLICT");
    let r = call(&app, Method::GET, "/api/v1/connections", Some(&key), None).await;
    assert_eq!((r.status, r.body["data"].as_array().map(Vec::len)), (StatusCode::OK, Some(1)));
    assert!(!r.body.to_string().contains("sk_live_secret"));
    let r = call(
        &app,
        Method::PATCH,
        "/api/v1/connections/conn_production_stripe",
        Some(&key),
        Some(json!({"name": "Live"})),
    )
    .await;
    assert_eq!((r.status, r.body["name"].as_str()), (StatusCode::OK, Some("Live")));
    let r = call(&app, Method::GET, "/api/v1/connections/conn_production_stripe", Some(&key), None).await;
    assert_eq!(r.body["credentials"], json!({}), "nothing of a stripe key is shown");
    let r = call(&app, Method::DELETE, "/api/v1/connections/conn_production_stripe", Some(&key), None).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    let r = call(&app, Method::GET, "/api/v1/connections/conn_production_stripe", Some(&key), None).await;
    assert_envelope(&r, StatusCode::NOT_FOUND, "NOT_FOUND");
}

#[tokio::test]
async fn bad_connection_bodies_are_400_with_the_path_and_reads_need_the_scope() {
    let app = app();
    let (_, key) = register(&app).await;
    let r = call(
        &app,
        Method::POST,
        "/api/v1/connections",
        Some(&key),
        Some(json!({"name": "m", "provider": "smtp",
        "credentials": {"host": "smtp.example.com", "from": "a@b.example", "tls": "ssl"}})),
    )
    .await;
    assert_envelope(&r, StatusCode::BAD_REQUEST, "VALIDATION_ERROR");
    assert_eq!(r.body["error"]["details"][0]["path"], json!(["credentials", "tls"]));
    let r = call(&app, Method::POST, "/api/v1/connections", Some(&key), Some(json!([1, 2]))).await;
    assert_envelope(&r, StatusCode::BAD_REQUEST, "VALIDATION_ERROR");
    let reader = key_with_scopes(&app, &key, json!(["runs:read"])).await;
    let r = call(&app, Method::GET, "/api/v1/connections", Some(&reader), None).await;
    assert_envelope(&r, StatusCode::FORBIDDEN, "FORBIDDEN");
}

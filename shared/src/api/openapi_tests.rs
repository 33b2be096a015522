//! The served OpenAPI document against the server: it is hand-written, so these tests are
//! what keeps it true. Every route of the part table is documented and every documented
//! operation is served; every response is typed; the Error schema names every code the
//! server can answer; and real requests through the router, a success and a failure for
//! each operation, answer a status the document lists with a body its schema accepts.

use super::{OPENAPI_JSON, ROUTES, path_matches, router};
use crate::adapters::{Sqlite, SqliteQueue, SqliteStore};
use crate::app::{App, AppConfig, AppState};
use crate::error::{Detail, Error};
use axum::Router;
use axum::body::Body;
use axum::response::IntoResponse;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tower::ServiceExt;

const METHODS: [&str; 5] = ["get", "post", "put", "patch", "delete"];

fn doc() -> Value {
    serde_json::from_str(OPENAPI_JSON).expect("openapi.json is JSON")
}

/// Every (method, path template) the document describes.
fn operations(doc: &Value) -> Vec<(String, String)> {
    let mut ops = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for m in METHODS {
            if item.get(m).is_some() {
                ops.push((m.to_string(), path.clone()));
            }
        }
    }
    ops
}

/// `#/components/...` followed to what it names.
fn deref<'a>(doc: &'a Value, v: &'a Value) -> &'a Value {
    match v.get("$ref").and_then(Value::as_str) {
        Some(r) => deref(doc, doc.pointer(r.trim_start_matches('#')).unwrap_or_else(|| panic!("dangling $ref {r}"))),
        None => v,
    }
}

/// A path template with every `{param}` replaced.
fn concrete(template: &str) -> String {
    template.split('/').map(|s| if s.starts_with('{') { "x" } else { s }).collect::<Vec<_>>().join("/")
}

fn test_state() -> (AppState, tempfile::TempDir) {
    limited_state(1000)
}

fn limited_state(rate_limit_per_minute: u64) -> (AppState, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let db = Sqlite::open(&dir.path().join("t.db")).unwrap();
    // Private targets allowed: a run's callback goes to a closed loopback port, so that a
    // delivery (failed, retried) exists to read and redeliver.
    let cfg = AppConfig {
        rate_limit_per_minute,
        max_body_bytes: 64 * 1024,
        allow_private_targets: true,
        callback_timeout: Duration::from_secs(2),
        ..AppConfig::default()
    };
    let state = App::new(
        Arc::new(SqliteStore::new(db.clone())),
        Arc::new(SqliteQueue::new(db, "steps", 5)),
        Arc::new(crate::secrets::SecretBox::ephemeral()),
        cfg,
    );
    (state, dir)
}

async fn send(app: &Router, req: Request<Body>) -> (StatusCode, HeaderMap, Value) {
    let res = app.clone().oneshot(req).await.unwrap();
    let (status, headers) = (res.status(), res.headers().clone());
    let bytes = res.into_body().collect().await.unwrap().to_bytes();
    let body = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()))
    };
    (status, headers, body)
}

#[tokio::test]
async fn every_route_of_the_part_table_is_documented_and_every_documented_operation_is_served() {
    let doc = doc();
    let ops = operations(&doc);
    for (method, pattern, part) in ROUTES {
        let documented = ops.iter().any(|(m, p)| {
            method.is_none_or(|want| want.eq_ignore_ascii_case(m)) && path_matches(pattern, &concrete(p))
        });
        assert!(documented, "{method:?} {pattern} ({part:?}) is not in openapi.json");
    }
    // Served: the router answers neither its fallback 404 (no such route) nor a 405.
    let (state, _dir) = test_state();
    let app = router(state);
    for (m, p) in &ops {
        let req = Request::builder()
            .method(Method::from_bytes(m.to_uppercase().as_bytes()).unwrap())
            .uri(concrete(p))
            .body(Body::empty())
            .unwrap();
        let (status, _, body) = send(&app, req).await;
        let message = body["error"]["message"].as_str().unwrap_or("");
        assert!(!message.starts_with("No route for"), "{m} {p} is documented but not served: {body}");
        assert_ne!(status, StatusCode::METHOD_NOT_ALLOWED, "{m} {p} is documented but not served: {body}");
    }
}

#[test]
fn every_documented_response_is_typed_and_none_is_a_catch_all() {
    let doc = doc();
    for (m, p) in operations(&doc) {
        let op = &doc["paths"][&p][&m];
        assert!(op["operationId"].is_string(), "{m} {p}: no operationId (links name operations by it)");
        let responses = op["responses"].as_object().unwrap();
        assert!(!responses.contains_key("default"), "{m} {p}: `default` would let any status pass");
        assert!(responses.keys().any(|s| s.starts_with('2')), "{m} {p}: no success response");
        for (status, r) in responses {
            let r = deref(&doc, r);
            if status == "204" {
                assert!(r.get("content").is_none(), "{m} {p} 204 has content");
                continue;
            }
            // The console's page is the one answer that is not JSON.
            let media = if p == "/console" && status == "200" { "text/html" } else { "application/json" };
            let schema = &r["content"][media]["schema"];
            assert!(schema.is_object(), "{m} {p} {status}: no {media} schema");
            if !status.starts_with('2') {
                assert_eq!(schema["$ref"], "#/components/schemas/Error", "{m} {p} {status} is not the error envelope");
            }
        }
        if let Some(body) = op.get("requestBody") {
            assert!(body["content"]["application/json"]["schema"].is_object(), "{m} {p}: untyped request body");
        }
    }
}

#[test]
fn every_link_names_an_operation_of_the_document() {
    let doc = doc();
    let ids: BTreeSet<String> =
        operations(&doc).iter().map(|(m, p)| doc["paths"][p][m]["operationId"].as_str().unwrap().to_string()).collect();
    let mut links = 0;
    for (m, p) in operations(&doc) {
        for (status, r) in doc["paths"][&p][&m]["responses"].as_object().unwrap() {
            for (name, l) in r.get("links").and_then(Value::as_object).into_iter().flatten() {
                let target = l["operationId"].as_str().unwrap_or("");
                assert!(ids.contains(target), "{m} {p} {status} link {name} names unknown operation {target:?}");
                links += 1;
            }
        }
    }
    assert!(links > 40, "only {links} links");
}

/// One of each variant: the `match` fails to compile when a variant is added, until it is
/// added here too (and so checked against the document).
fn one_of_each_error() -> Vec<Error> {
    let all = vec![
        Error::Unauthorized("u".into()),
        Error::Forbidden("f".into()),
        Error::NotFound("n".into()),
        Error::Conflict("c".into()),
        Error::validation("v"),
        Error::InvalidStatus("i".into()),
        Error::PayloadTooLarge("p".into()),
        Error::HeadersTooLarge("h".into()),
        Error::RequestTimeout("t".into()),
        Error::Unprocessable { message: "x".into(), details: vec![Detail::new(vec![json!("a")], "m")] },
        Error::RateLimited("r".into(), 7),
        Error::PaymentRequired("pay".into()),
        Error::NotImplemented("ni".into()),
        Error::Internal("i".into()),
    ];
    for e in &all {
        match e {
            Error::Unauthorized(_)
            | Error::Forbidden(_)
            | Error::NotFound(_)
            | Error::Conflict(_)
            | Error::Validation { .. }
            | Error::InvalidStatus(_)
            | Error::PayloadTooLarge(_)
            | Error::HeadersTooLarge(_)
            | Error::RequestTimeout(_)
            | Error::Unprocessable { .. }
            | Error::RateLimited(..)
            | Error::PaymentRequired(_)
            | Error::NotImplemented(_)
            | Error::Internal(_) => {}
        }
    }
    all
}

#[tokio::test]
async fn the_error_schema_names_exactly_the_codes_the_server_answers() {
    let doc = doc();
    let documented: BTreeSet<String> =
        doc["components"]["schemas"]["Error"]["properties"]["error"]["properties"]["code"]["enum"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c.as_str().unwrap().to_string())
            .collect();
    let mut answered = BTreeSet::new();
    for e in one_of_each_error() {
        let res = e.into_response();
        let bytes = res.into_body().collect().await.unwrap().to_bytes();
        let body: Value = serde_json::from_slice(&bytes).unwrap();
        answered.insert(body["error"]["code"].as_str().unwrap().to_string());
    }
    // The one envelope no variant makes: the router's 405.
    let (state, _dir) = test_state();
    let req = Request::builder().method(Method::DELETE).uri("/api/v1/health").body(Body::empty()).unwrap();
    let (_, _, body) = send(&router(state), req).await;
    answered.insert(body["error"]["code"].as_str().unwrap().to_string());
    assert_eq!(documented, answered);
}

/// Sends requests through the real router and checks each answer against the document.
struct Checker {
    doc: Value,
    app: Router,
    state: AppState,
    key: String,
    /// (method, template) -> statuses seen.
    seen: Mutex<BTreeMap<(String, String), BTreeSet<u16>>>,
    _dir: tempfile::TempDir,
}

struct Req<'a> {
    method: &'a str,
    template: &'a str,
    uri: String,
    body: Option<Value>,
    headers: Vec<(&'a str, String)>,
    key: bool,
}

fn req<'a>(method: &'a str, template: &'a str, uri: impl Into<String>) -> Req<'a> {
    Req { method, template, uri: uri.into(), body: None, headers: Vec::new(), key: true }
}

impl<'a> Req<'a> {
    fn body(mut self, b: Value) -> Self {
        self.body = Some(b);
        self
    }
    fn header(mut self, k: &'a str, v: impl Into<String>) -> Self {
        self.headers.push((k, v.into()));
        self
    }
    fn no_key(mut self) -> Self {
        self.key = false;
        self
    }
}

impl Checker {
    async fn new() -> Checker {
        Checker::limited(1000).await
    }

    async fn limited(rate_limit_per_minute: u64) -> Checker {
        let (state, dir) = limited_state(rate_limit_per_minute);
        let app = router(state.clone());
        let mut c =
            Checker { doc: doc(), app, state, key: String::new(), seen: Mutex::new(BTreeMap::new()), _dir: dir };
        let (s, b) =
            c.check(req("post", "/api/v1/auth/register", "/api/v1/auth/register").body(json!({"name": "t"}))).await;
        assert_eq!(s, 201);
        c.key = b["api_key"].as_str().unwrap().to_string();
        c
    }

    /// Sends `r`; the status must be one the operation lists, the body must match that
    /// response's schema, and its required headers must be there.
    async fn check(&self, r: Req<'_>) -> (u16, Value) {
        let mut b =
            Request::builder().method(Method::from_bytes(r.method.to_uppercase().as_bytes()).unwrap()).uri(&r.uri);
        if r.key && !self.key.is_empty() {
            b = b.header("x-api-key", &self.key);
        }
        for (k, v) in &r.headers {
            b = b.header(*k, v);
        }
        let request = match &r.body {
            Some(body) => b.header("content-type", "application/json").body(Body::from(body.to_string())).unwrap(),
            None => b.body(Body::empty()).unwrap(),
        };
        let (status, headers, body) = send(&self.app, request).await;
        let what = format!("{} {} ({})", r.method.to_uppercase(), r.template, r.uri);
        let op = &self.doc["paths"][r.template][r.method];
        assert!(op.is_object(), "{what}: not in the document");
        let documented = op["responses"]
            .get(status.as_str())
            .unwrap_or_else(|| panic!("{what} answered {status}, which the document does not list: {body}"));
        let documented = deref(&self.doc, documented);
        if let Some(schema) = documented["content"]["application/json"].get("schema") {
            self.validate(schema, &body, &what, status);
        } else if documented["content"].get("text/html").is_some() {
            let html = body.as_str().unwrap_or_default();
            assert!(html.starts_with("<!doctype html>") || html.starts_with("<!DOCTYPE html>"), "{what}: not a page");
        } else {
            assert!(body.is_null(), "{what} {status}: a body the document does not describe: {body}");
        }
        for (name, h) in documented.get("headers").and_then(Value::as_object).into_iter().flatten() {
            if deref(&self.doc, h)["required"] == true {
                let v = headers.get(name.as_str()).unwrap_or_else(|| panic!("{what} {status}: no {name} header"));
                assert!(v.to_str().unwrap().parse::<u64>().is_ok(), "{what}: {name}: {v:?}");
            }
        }
        self.seen.lock().unwrap().entry((r.method.into(), r.template.into())).or_default().insert(status.as_u16());
        (status.as_u16(), body)
    }

    fn validate(&self, schema: &Value, body: &Value, what: &str, status: StatusCode) {
        // The schema inside a document that carries the components, so `$ref`s resolve.
        let root = json!({"$schema": "https://json-schema.org/draft/2020-12/schema",
                          "components": self.doc["components"], "allOf": [schema]});
        let v = jsonschema::validator_for(&root).unwrap_or_else(|e| panic!("{what}: bad schema: {e}"));
        let errors: Vec<String> = v.iter_errors(body).map(|e| format!("{} at {}", e, e.instance_path())).collect();
        assert!(errors.is_empty(), "{what} {status}: the body does not match the document: {errors:?}\n{body}");
    }

    async fn drain(&self) {
        crate::testing::drain(&self.state).await
    }
}

/// Operations whose success needs what this test does not make (a token minted by an async
/// HTTP step, answered): only their failures are checked here; `inbound_tests` and
/// `tests/tests/blocks.rs` cover their successes.
const FAILURES_ONLY: &[(&str, &str)] = &[("post", "/api/v1/callback")];

#[tokio::test]
async fn real_answers_have_a_documented_status_and_match_its_schema() {
    let c = Checker::new().await;
    let v1 = "/api/v1";
    // meta and accounts
    c.check(req("get", "/api/v1/health", "/api/v1/health").no_key()).await;
    c.check(req("get", "/api/v1/openapi.json", "/api/v1/openapi.json").no_key()).await;
    c.check(req("get", "/console", "/console").no_key()).await;
    let r = c.check(req("post", "/api/v1/auth/register", "/api/v1/auth/register").body(json!({"email": 3}))).await;
    assert_eq!(r.0, 400);
    c.check(req("get", "/api/v1/account", "/api/v1/account")).await;
    c.check(req("get", "/api/v1/account", "/api/v1/account").no_key()).await;
    c.check(req("post", "/api/v1/account/rotate-callback-secret", "/api/v1/account/rotate-callback-secret")).await;
    c.check(req("post", "/api/v1/account/rotate-callback-secret", "/api/v1/account/rotate-callback-secret").no_key())
        .await;
    c.check(req("get", "/api/v1/api-keys", "/api/v1/api-keys?limit=1")).await;
    c.check(req("get", "/api/v1/api-keys", "/api/v1/api-keys?limit=0")).await;
    let (s, k) =
        c.check(req("post", "/api/v1/api-keys", "/api/v1/api-keys").body(json!({"scopes": ["runs:read"]}))).await;
    assert_eq!(s, 201);
    let kid = k["key_id"].as_str().unwrap();
    c.check(req("post", "/api/v1/api-keys", "/api/v1/api-keys").body(json!({"scopes": ["nope"]}))).await;
    c.check(req("post", "/api/v1/api-keys/{id}/rotate", format!("{v1}/api-keys/{kid}/rotate"))).await;
    c.check(req("post", "/api/v1/api-keys/{id}/rotate", format!("{v1}/api-keys/key_nope/rotate"))).await;
    c.check(req("delete", "/api/v1/api-keys/{id}", format!("{v1}/api-keys/{kid}"))).await;
    c.check(req("delete", "/api/v1/api-keys/{id}", format!("{v1}/api-keys/{kid}?force=maybe"))).await;

    // workflows
    let wf = "/api/v1/workflows/{id}";
    let approval = json!({"id": "orders", "name": "Orders", "blocks": [
        {"id": "start", "type": "starter"},
        {"id": "review", "type": "human", "config": {"kind": "approval", "prompt": "Approve?"}},
        {"id": "done", "type": "response", "config": {"body": {"ok": true}}}],
        "edges": [{"from": "start", "to": "review"}, {"from": "review", "to": "done"}]});
    assert_eq!(c.check(req("post", "/api/v1/workflows", "/api/v1/workflows").body(approval.clone())).await.0, 201);
    assert_eq!(c.check(req("post", "/api/v1/workflows", "/api/v1/workflows").body(approval)).await.0, 409);
    c.check(req("post", "/api/v1/workflows", "/api/v1/workflows").body(json!({"name": "x"}))).await;
    c.check(req("get", "/api/v1/workflows", "/api/v1/workflows")).await;
    c.check(req("get", "/api/v1/workflows", "/api/v1/workflows?cursor=garbage")).await;
    c.check(req("get", wf, format!("{v1}/workflows/orders"))).await;
    c.check(req("get", wf, format!("{v1}/workflows/nope"))).await;
    c.check(req("patch", wf, format!("{v1}/workflows/orders")).body(json!({"description": "d"}))).await;
    c.check(req("patch", wf, format!("{v1}/workflows/orders")).body(json!({"version": 3}))).await;
    let linear = json!({"name": "chain", "steps": [{"id": "start", "type": "starter"},
        {"id": "out", "type": "response", "config": {"body": {"n": 1}}}]});
    assert_eq!(
        c.check(req("put", "/api/v1/workflows/{id}/graph", format!("{v1}/workflows/chain/graph")).body(linear.clone()))
            .await
            .0,
        201
    );
    assert_eq!(
        c.check(req("put", "/api/v1/workflows/{id}/graph", format!("{v1}/workflows/chain/graph")).body(linear)).await.0,
        200
    );
    c.check(
        req("put", "/api/v1/workflows/{id}/graph", format!("{v1}/workflows/chain/graph")).body(json!({"blocks": []})),
    )
    .await;
    c.check(req("get", "/api/v1/workflows/{id}/versions", format!("{v1}/workflows/chain/versions"))).await;
    c.check(req("get", "/api/v1/workflows/{id}/versions", format!("{v1}/workflows/nope/versions"))).await;
    for a in ["activate", "deploy", "undeploy", "arm", "deactivate"] {
        let t = format!("/api/v1/workflows/{{id}}/{a}");
        c.check(req("post", &t, format!("{v1}/workflows/chain/{a}"))).await;
        c.check(req("post", &t, format!("{v1}/workflows/nope/{a}"))).await;
    }
    // The unversioned aliases answer as the /api/v1 operations do.
    for a in ["deploy", "undeploy", "arm", "deactivate", "activate"] {
        let t = format!("/api/workflows/{{id}}/{a}");
        c.check(req("post", &t, format!("/api/workflows/chain/{a}"))).await;
        c.check(req("post", &t, format!("/api/workflows/nope/{a}"))).await;
    }
    let graph = "/api/workflows/{id}/graph";
    let one_step = json!({"steps": [{"id": "start", "type": "starter"}]});
    assert_eq!(c.check(req("put", graph, "/api/workflows/alias/graph").body(one_step)).await.0, 201);
    c.check(req("put", graph, "/api/workflows/alias/graph").body(json!({"steps": "no"}))).await;
    c.check(req("post", "/api/v1/workflows/{id}/activate", format!("{v1}/workflows/chain/activate"))).await;
    c.check(req("post", "/api/v1/workflows/{id}/activate", format!("{v1}/workflows/orders/activate"))).await;

    // run starts: 201, the idempotent repeat's 200, execute's 200 and 202, and refusals
    let run = "/api/v1/workflows/{id}/run";
    let (s, first) = c
        .check(
            req("post", run, format!("{v1}/workflows/orders/run"))
                .header("idempotency-key", "k1")
                .body(json!({"input": {}})),
        )
        .await;
    assert_eq!(s, 201);
    let (s, again) = c
        .check(
            req("post", run, format!("{v1}/workflows/orders/run"))
                .header("idempotency-key", "k1")
                .body(json!({"input": {}})),
        )
        .await;
    assert_eq!((s, &again["run_id"]), (200, &first["run_id"]));
    c.check(req("post", run, format!("{v1}/workflows/nope/run"))).await;
    c.check(req("post", run, format!("{v1}/workflows/orders/run")).body(json!({"nope": 1}))).await;
    let t = "/api/v1/trigger";
    assert_eq!(c.check(req("post", t, t).body(json!({"workflow_id": "orders"}))).await.0, 201);
    c.check(req("post", t, t).body(json!({"workflow_id": ""}))).await;
    let ex = "/api/v1/workflows/{id}/execute";
    assert_eq!(c.check(req("post", ex, format!("{v1}/workflows/chain/execute"))).await.0, 200);
    assert_eq!(
        c.check(req("post", ex, format!("{v1}/workflows/orders/execute")).body(json!({"timeout_ms": 50}))).await.0,
        202
    );
    c.check(req("post", ex, format!("{v1}/workflows/orders/execute")).body(json!({"timeout_ms": 0}))).await;
    let legacy = "/api/workflows/{id}/execute";
    assert_eq!(c.check(req("post", legacy, "/api/workflows/chain/execute")).await.0, 200);
    c.check(req("post", legacy, "/api/workflows/nope/execute")).await;
    c.check(req("post", "/api/v1/runs", "/api/v1/runs").body(json!({"task": "Write"}))).await;
    c.check(req("post", "/api/v1/runs", "/api/v1/runs").body(json!({}))).await;
    let (s, p) = c
        .check(req("post", "/api/v1/providers", "/api/v1/providers").body(json!({"provider": "mock", "responses": [
            {"output": {"summary": "A plan", "tasks": [{"id": "T1", "agent": "writer", "title": "Write", "instructions": "Write it"}]}},
            {"output": "Done"}]})))
        .await;
    assert_eq!(s, 201);
    let pid = p["provider_id"].as_str().unwrap().to_string();
    let (s, planned) = c
        .check(req("post", "/api/v1/runs", "/api/v1/runs").body(json!({"task": "Write a haiku", "provider_id": pid})))
        .await;
    assert_eq!(s, 201, "{planned}");

    // reading and steering runs
    c.drain().await;
    let id = first["run_id"].as_str().unwrap();
    let one = "/api/v1/runs/{id}";
    c.check(req("get", "/api/v1/runs", "/api/v1/runs?status=waiting_human&workflow_id=orders")).await;
    c.check(req("get", "/api/v1/runs", "/api/v1/runs?limit=500")).await;
    c.check(req("get", one, format!("{v1}/runs/{id}"))).await;
    c.check(req("get", one, format!("{v1}/runs/run_nope"))).await;
    c.check(req("get", one, format!("{v1}/runs/{}", planned["run_id"].as_str().unwrap()))).await;
    c.check(req("get", "/api/v1/runs/{id}/events", format!("{v1}/runs/{id}/events"))).await;
    c.check(req("get", "/api/v1/runs/{id}/events", format!("{v1}/runs/run_nope/events"))).await;
    let (_, tasks) = c.check(req("get", "/api/v1/runs/{id}/tasks", format!("{v1}/runs/{id}/tasks"))).await;
    c.check(req("get", "/api/v1/runs/{id}/tasks", format!("{v1}/runs/run_nope/tasks"))).await;
    c.check(req("get", "/api/v1/runs/{id}/callbacks", format!("{v1}/runs/{id}/callbacks"))).await;
    c.check(req("get", "/api/v1/runs/{id}/callbacks", format!("{v1}/runs/run_nope/callbacks"))).await;
    let dl = "/api/v1/runs/{id}/callbacks/{delivery_id}";
    c.check(req("get", dl, format!("{v1}/runs/{id}/callbacks/dlv_nope"))).await;
    c.check(req("post", &format!("{dl}/redeliver"), format!("{v1}/runs/{id}/callbacks/dlv_nope/redeliver"))).await;
    c.check(req("get", "/api/v1/tasks", "/api/v1/tasks?status=open")).await;
    c.check(req("get", "/api/v1/tasks", "/api/v1/tasks?status=done")).await;
    c.check(req("get", "/api/v1/tasks", "/api/v1/tasks").no_key()).await;
    let task_id = tasks["data"][0]["task_id"].as_str().unwrap();
    let complete = "/api/v1/runs/{id}/tasks/{task_id}/complete";
    c.check(req("post", complete, format!("{v1}/runs/{id}/tasks/task_nope/complete")).body(json!({"approved": true})))
        .await;
    c.check(req("post", complete, format!("{v1}/runs/{id}/tasks/{task_id}/complete")).body(json!({"approved": true})))
        .await;
    c.check(req("post", "/api/v1/runs/{id}/redrive", format!("{v1}/runs/{id}/redrive"))).await;
    let (_, other) = c.check(req("post", run, format!("{v1}/workflows/orders/run"))).await;
    let other = other["run_id"].as_str().unwrap();
    c.check(req("delete", one, format!("{v1}/runs/{other}"))).await;
    c.check(req("delete", one, format!("{v1}/runs/{other}"))).await;
    let broken = json!({"id": "broken", "name": "b", "status": "active",
        "steps": [{"id": "s", "type": "starter"}, {"id": "ai", "type": "agent", "config": {"prompt": "no provider named"}}]});
    c.check(req("post", "/api/v1/workflows", "/api/v1/workflows").body(broken)).await;
    let (_, b) = c.check(req("post", run, format!("{v1}/workflows/broken/run"))).await;
    c.drain().await;
    let (s, _) = c
        .check(req("post", "/api/v1/runs/{id}/redrive", format!("{v1}/runs/{}/redrive", b["run_id"].as_str().unwrap())))
        .await;
    assert_eq!(s, 200);
    // A run whose callback finds nobody: its delivery is read and sent again.
    let cb = json!({"id": "cb", "name": "cb", "status": "active", "callback_url": "http://127.0.0.1:9/cb",
        "steps": [{"id": "start", "type": "starter"}]});
    c.check(req("post", "/api/v1/workflows", "/api/v1/workflows").body(cb)).await;
    let (_, r) = c.check(req("post", run, format!("{v1}/workflows/cb/run"))).await;
    let rid = r["run_id"].as_str().unwrap();
    c.drain().await;
    let (_, page) = c.check(req("get", "/api/v1/runs/{id}/callbacks", format!("{v1}/runs/{rid}/callbacks"))).await;
    let did = page["data"][0]["delivery_id"].as_str().unwrap_or_else(|| panic!("no delivery: {page}"));
    assert_eq!(c.check(req("get", dl, format!("{v1}/runs/{rid}/callbacks/{did}"))).await.0, 200);
    let redeliver = format!("{dl}/redeliver");
    assert_eq!(c.check(req("post", &redeliver, format!("{v1}/runs/{rid}/callbacks/{did}/redeliver"))).await.0, 202);
    c.check(req("post", "/api/v1/callback", "/api/v1/callback").no_key().body(json!({"token": "nope"}))).await;
    c.check(req("post", "/api/v1/callback", "/api/v1/callback").no_key()).await;

    // triggers and their hook
    let trs = "/api/v1/workflows/{id}/triggers";
    let tr1 = "/api/v1/workflows/{id}/triggers/{trigger_id}";
    let (s, tr) = c.check(req("post", trs, format!("{v1}/workflows/orders/triggers")).body(json!({"name": "t"}))).await;
    assert_eq!(s, 201);
    c.check(req("post", trs, format!("{v1}/workflows/nope/triggers"))).await;
    c.check(req("get", trs, format!("{v1}/workflows/orders/triggers"))).await;
    c.check(req("get", trs, format!("{v1}/workflows/nope/triggers"))).await;
    let tid = tr["trigger_id"].as_str().unwrap();
    c.check(req("get", tr1, format!("{v1}/workflows/orders/triggers/{tid}"))).await;
    c.check(req("get", tr1, format!("{v1}/workflows/orders/triggers/trg_nope"))).await;
    c.check(req("patch", tr1, format!("{v1}/workflows/orders/triggers/{tid}")).body(json!({"name": "u"}))).await;
    c.check(req("patch", tr1, format!("{v1}/workflows/orders/triggers/{tid}")).body(json!({"enabled": "yes"}))).await;
    let hook = "/api/v1/hooks/{token}";
    let token = tr["token"].as_str().unwrap();
    assert_eq!(c.check(req("post", hook, format!("{v1}/hooks/{token}")).no_key().body(json!({"a": 1}))).await.0, 201);
    c.check(req("post", hook, format!("{v1}/hooks/tk_nope")).no_key()).await;
    for a in ["disable", "enable"] {
        let t = format!("{tr1}/{a}");
        c.check(req("post", &t, format!("{v1}/workflows/orders/triggers/{tid}/{a}"))).await;
        c.check(req("post", &t, format!("{v1}/workflows/orders/triggers/trg_nope/{a}"))).await;
    }
    c.check(req("delete", tr1, format!("{v1}/workflows/orders/triggers/{tid}"))).await;
    c.check(req("delete", tr1, format!("{v1}/workflows/orders/triggers/{tid}"))).await;

    // apps and their webhooks (both paths); a webhook block id that names nothing
    let (s, app) =
        c.check(req("post", "/api/v1/apps", "/api/v1/apps").body(json!({"name": "gh", "workflow_id": "orders"}))).await;
    assert_eq!(s, 201);
    c.check(req("post", "/api/v1/apps", "/api/v1/apps").body(json!({"name": ""}))).await;
    c.check(req("get", "/api/v1/apps", "/api/v1/apps")).await;
    c.check(req("get", "/api/v1/apps", "/api/v1/apps?limit=x")).await;
    let aid = app["app_id"].as_str().unwrap();
    let a1 = "/api/v1/apps/{app_id}";
    c.check(req("get", a1, format!("{v1}/apps/{aid}"))).await;
    c.check(req("get", a1, format!("{v1}/apps/app_nope"))).await;
    c.check(req("patch", a1, format!("{v1}/apps/{aid}")).body(json!({"name": "gh2"}))).await;
    c.check(req("patch", a1, format!("{v1}/apps/{aid}")).body(json!({"nope": 1}))).await;
    for (t, base) in [("/api/v1/webhooks/{id}", "/api/v1/webhooks"), ("/api/webhooks/{id}", "/api/webhooks")] {
        assert_eq!(c.check(req("post", t, format!("{base}/{aid}")).no_key().body(json!({"a": 1}))).await.0, 201);
        c.check(req("post", t, format!("{base}/app_nope")).no_key()).await;
        c.check(req("post", t, format!("{base}/00000000-0000-0000-0000-000000000000")).no_key()).await;
    }
    c.check(req("delete", a1, format!("{v1}/apps/{aid}"))).await;
    c.check(req("delete", a1, format!("{v1}/apps/{aid}"))).await;

    // connections and providers
    let body = json!({"name": "c", "provider": "http", "base_url": "https://api.example.com",
                      "credentials": {"type": "bearer", "token": "s"}});
    let (s, conn) = c.check(req("post", "/api/v1/connections", "/api/v1/connections").body(body)).await;
    assert_eq!(s, 201);
    c.check(req("post", "/api/v1/connections", "/api/v1/connections").body(json!({"name": "c", "provider": "nope"})))
        .await;
    c.check(req("get", "/api/v1/connections", "/api/v1/connections")).await;
    c.check(req("get", "/api/v1/connections", "/api/v1/connections?limit=-1")).await;
    let cid = conn["connection_id"].as_str().unwrap();
    let c1 = "/api/v1/connections/{id}";
    c.check(req("get", c1, format!("{v1}/connections/{cid}"))).await;
    c.check(req("get", c1, format!("{v1}/connections/nope"))).await;
    c.check(req("patch", c1, format!("{v1}/connections/{cid}")).body(json!({"name": "c2"}))).await;
    c.check(req("patch", c1, format!("{v1}/connections/{cid}")).body(json!({"provider": "stripe"}))).await;
    c.check(req("delete", c1, format!("{v1}/connections/{cid}"))).await;
    c.check(req("delete", c1, format!("{v1}/connections/{cid}"))).await;
    c.check(req("get", "/api/v1/providers", "/api/v1/providers")).await;
    c.check(req("get", "/api/v1/providers", "/api/v1/providers").no_key()).await;
    c.check(req("post", "/api/v1/providers", "/api/v1/providers").body(json!({"provider": "openai"}))).await;
    let p1 = "/api/v1/providers/{id}";
    c.check(req("get", p1, format!("{v1}/providers/{pid}"))).await;
    c.check(req("get", p1, format!("{v1}/providers/prov_nope"))).await;
    c.check(req("delete", p1, format!("{v1}/providers/{pid}"))).await;
    c.check(req("delete", p1, format!("{v1}/providers/prov_nope"))).await;
    c.check(req("get", "/api/v1/agents/templates", "/api/v1/agents/templates")).await;
    c.check(req("get", "/api/v1/agents/templates", "/api/v1/agents/templates").no_key()).await;
    c.check(req("delete", wf, format!("{v1}/workflows/chain"))).await;
    c.check(req("delete", wf, format!("{v1}/workflows/chain"))).await;

    // Every operation was checked, with a success and a failure (but FAILURES_ONLY).
    let seen = c.seen.lock().unwrap();
    for (m, p) in operations(&c.doc) {
        let statuses = seen.get(&(m.clone(), p.clone())).unwrap_or_else(|| panic!("{m} {p} was never called"));
        let public = matches!(p.as_str(), "/api/v1/health" | "/api/v1/openapi.json" | "/console");
        if !public {
            assert!(statuses.iter().any(|s| *s >= 400), "{m} {p}: no failure checked ({statuses:?})");
        }
        if !FAILURES_ONLY.contains(&(m.as_str(), p.as_str())) {
            assert!(statuses.iter().any(|s| *s < 300), "{m} {p}: no success checked ({statuses:?})");
        }
    }
}

#[tokio::test]
async fn over_the_limit_every_rate_limited_route_answers_a_documented_429_with_retry_after() {
    let c = Checker::limited(1).await;
    let wf = json!({"id": "w", "name": "w", "status": "active", "steps": [{"id": "start", "type": "starter"}]});
    assert_eq!(c.check(req("post", "/api/v1/workflows", "/api/v1/workflows").body(wf)).await.0, 201);
    let (s, tr) = c.check(req("post", "/api/v1/workflows/{id}/triggers", "/api/v1/workflows/w/triggers")).await;
    assert_eq!(s, 201);
    let hook = format!("/api/v1/hooks/{}", tr["token"].as_str().unwrap());
    // One start of the account's one a minute, then every way to start is over it; the
    // door has its own window, and its first call passes.
    let starts = [
        ("/api/v1/workflows/{id}/run", "/api/v1/workflows/w/run".to_string(), None),
        ("/api/v1/workflows/{id}/run", "/api/v1/workflows/w/run".into(), None),
        ("/api/v1/trigger", "/api/v1/trigger".into(), Some(json!({"workflow_id": "w"}))),
        ("/api/v1/workflows/{id}/execute", "/api/v1/workflows/w/execute".into(), None),
        ("/api/workflows/{id}/execute", "/api/workflows/w/execute".into(), None),
        ("/api/v1/runs", "/api/v1/runs".into(), Some(json!({"task": "t"}))),
    ];
    let mut seen = Vec::new();
    for (template, uri, body) in starts {
        let mut r = req("post", template, uri);
        if let Some(b) = body {
            r = r.body(b);
        }
        seen.push(c.check(r).await.0);
    }
    assert_eq!(seen, [201, 429, 429, 429, 429, 429]);
    assert_eq!(c.check(req("post", "/api/v1/hooks/{token}", &hook).no_key()).await.0, 201);
    assert_eq!(c.check(req("post", "/api/v1/hooks/{token}", &hook).no_key()).await.0, 429);
}

//! HTTP tests of the doors without an API key (trigger URLs, apps, webhook blocks) and of
//! their management endpoints, on the real SQLite adapters. Signatures here come from our
//! own signer; `tests/tests/hooks.rs` signs with independent tools (openssl, the
//! standardwebhooks package) against the real binary.

use crate::adapters::{Sqlite, SqliteQueue, SqliteStore};
use crate::api::router;
use crate::app::{App, AppConfig, AppState};
use crate::signature::hmac_sha256;
use crate::{ids, keys};
use axum::Router;
use axum::body::Body;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use http::{Method, Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use std::sync::Arc;
use tower::ServiceExt;

const BODY_LIMIT: usize = 8 * 1024;

struct T {
    app: Router,
    state: AppState,
    key: String,
    _dir: tempfile::TempDir,
}

struct Resp {
    status: StatusCode,
    body: Value,
}

impl Resp {
    fn code(&self) -> &str {
        self.body["error"]["code"].as_str().unwrap_or("")
    }
    fn message(&self) -> &str {
        self.body["error"]["message"].as_str().unwrap_or("")
    }
    fn run_id(&self) -> String {
        self.body["run_id"].as_str().unwrap_or_else(|| panic!("no run_id in {}", self.body)).to_string()
    }
    #[track_caller]
    fn expect(&self, status: StatusCode, code: &str) {
        assert_eq!(self.status, status, "{}", self.body);
        assert_eq!(self.code(), code, "{}", self.body);
        assert!(self.body["error"]["details"].is_array(), "{}", self.body);
    }
}

async fn setup() -> T {
    let dir = tempfile::tempdir().unwrap();
    let db = Sqlite::open(&dir.path().join("t.db")).unwrap();
    let cfg = AppConfig { max_body_bytes: BODY_LIMIT, public_url: "https://baton.test".into(), ..AppConfig::default() };
    let state = App::new(
        Arc::new(SqliteStore::new(db.clone())),
        Arc::new(SqliteQueue::new(db, "steps", 5)),
        Arc::new(crate::secrets::SecretBox::ephemeral()),
        cfg,
    );
    let mut t = T { app: router(state.clone()), state, key: String::new(), _dir: dir };
    let r = t.api(Method::POST, "/api/v1/auth/register", Some(json!({"name": "t"}))).await;
    t.key = r.body["api_key"].as_str().unwrap().to_string();
    t
}

impl T {
    async fn send(&self, req: Request<Body>) -> Resp {
        let res = self.app.clone().oneshot(req).await.unwrap();
        let status = res.status();
        let bytes = res.into_body().collect().await.unwrap().to_bytes();
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| panic!("non-JSON {status} body: {}", String::from_utf8_lossy(&bytes)))
        };
        Resp { status, body }
    }

    /// A call with the API key.
    async fn api(&self, m: Method, uri: &str, body: Option<Value>) -> Resp {
        let mut req = Request::builder().method(m).uri(uri).header("x-api-key", &self.key);
        if body.is_some() {
            req = req.header("content-type", "application/json");
        }
        let body = body.map(|b| Body::from(b.to_string())).unwrap_or_else(Body::empty);
        self.send(req.body(body).unwrap()).await
    }

    /// A call without the API key, with the given headers and raw body.
    async fn door(&self, uri: &str, headers: &[(&str, &str)], body: impl Into<Body>) -> Resp {
        let mut req = Request::builder().method(Method::POST).uri(uri);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        self.send(req.body(body.into()).unwrap()).await
    }

    async fn workflow(&self, def: Value) -> Resp {
        self.api(Method::POST, "/api/v1/workflows", Some(def)).await
    }

    async fn stored_run(&self, run_id: &str) -> crate::store::Item {
        self.state.store.get(&keys::run(run_id)).await.unwrap().expect("run item")
    }
}

const JSON: (&str, &str) = ("content-type", "application/json");

fn orders(id: &str, status: &str) -> Value {
    json!({"id": id, "name": "Orders", "status": status,
           "inputSchema": {"type": "object", "required": ["amount"], "properties": {"amount": {"type": "number"}}},
           "steps": [{"id": "start", "type": "starter"},
                     {"id": "done", "type": "response", "config": {"body": {"amount": "{{input.amount}}"}}}]})
}

fn with_webhook(id: &str, webhook_id: &str, secret: Option<&str>) -> Value {
    let mut config = json!({"webhook_id": webhook_id});
    if let Some(s) = secret {
        config["webhook_secret"] = json!(s);
    }
    json!({"id": id, "name": "Hooked", "status": "active",
           "blocks": [{"id": "hook", "type": "webhook", "config": config},
                      {"id": "done", "type": "response", "config": {"body": {"got": "{{input.order}}"}}}],
           "edges": [{"from": "hook", "to": "done"}]})
}

async fn trigger(t: &T, wf: &str, body: Value) -> (String, String) {
    let r = t.api(Method::POST, &format!("/api/v1/workflows/{wf}/triggers"), Some(body)).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    (r.body["token"].as_str().unwrap().to_string(), r.body["trigger_id"].as_str().unwrap().to_string())
}

// ---- trigger URLs ------------------------------------------------------------------

#[tokio::test]
async fn a_trigger_url_starts_a_run_with_the_body_as_input() {
    let t = setup().await;
    t.workflow(orders("orders", "active")).await;
    let r = t
        .api(Method::POST, "/api/v1/workflows/orders/triggers", Some(json!({"callback_url": "https://cb.test/x"})))
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let token = r.body["token"].as_str().unwrap();
    assert_eq!(r.body["url"], json!(format!("https://baton.test/api/v1/hooks/{token}")));
    assert_eq!(r.body["enabled"], json!(true));
    let tid = r.body["trigger_id"].as_str().unwrap();

    let run = t.door(&format!("/api/v1/hooks/{token}"), &[JSON], r#"{"amount": 7}"#).await;
    assert_eq!(run.status, StatusCode::CREATED, "{}", run.body);
    assert_eq!(run.body["input"], json!({"amount": 7}));
    assert_eq!(run.body["metadata"]["trigger_id"], json!(tid));
    let stored = t.stored_run(&run.run_id()).await;
    assert_eq!(stored.str("callback_url"), Some("https://cb.test/x"));
    assert_eq!(stored.str("source"), Some("hook"));

    // The token is shown once: never in a listing or a read.
    let list = t.api(Method::GET, "/api/v1/workflows/orders/triggers", None).await;
    assert_eq!(list.body["data"].as_array().unwrap().len(), 1);
    assert!(!list.body.to_string().contains(token));
    let one = t.api(Method::GET, &format!("/api/v1/workflows/orders/triggers/{tid}"), None).await;
    assert!(!one.body.to_string().contains(token));
    assert_eq!(one.body["token_prefix"], json!(&token[..10]));
}

#[tokio::test]
async fn a_repeated_idempotency_key_on_a_trigger_returns_the_original_run() {
    let t = setup().await;
    t.workflow(orders("orders", "active")).await;
    let (token, _) = trigger(&t, "orders", json!({})).await;
    let uri = format!("/api/v1/hooks/{token}");
    let a = t.door(&uri, &[JSON, ("idempotency-key", "k1")], r#"{"amount": 1}"#).await;
    let b = t.door(&uri, &[JSON, ("idempotency-key", "k1")], r#"{"amount": 1}"#).await;
    assert_eq!((a.status, b.status), (StatusCode::CREATED, StatusCode::OK));
    assert_eq!(a.run_id(), b.run_id());
    t.door(&uri, &[JSON, ("idempotency-key", "k1")], r#"{"amount": 2}"#).await.expect(StatusCode::CONFLICT, "CONFLICT");
}

#[tokio::test]
async fn unknown_tokens_are_404_and_disabled_triggers_409() {
    let t = setup().await;
    t.workflow(orders("orders", "active")).await;
    t.door("/api/v1/hooks/tk_nope", &[JSON], "{}").await.expect(StatusCode::NOT_FOUND, "NOT_FOUND");
    let (token, tid) = trigger(&t, "orders", json!({})).await;
    let uri = format!("/api/v1/hooks/{token}");
    let r = t.api(Method::POST, &format!("/api/v1/workflows/orders/triggers/{tid}/disable"), None).await;
    assert_eq!(r.body["enabled"], json!(false), "{}", r.body);
    let r = t.door(&uri, &[JSON], r#"{"amount": 1}"#).await;
    r.expect(StatusCode::CONFLICT, "CONFLICT");
    assert!(r.message().contains("disabled"), "{}", r.body);
    let r =
        t.api(Method::PATCH, &format!("/api/v1/workflows/orders/triggers/{tid}"), Some(json!({"enabled": true}))).await;
    assert_eq!(r.body["enabled"], json!(true), "{}", r.body);
    assert_eq!(t.door(&uri, &[JSON], r#"{"amount": 1}"#).await.status, StatusCode::CREATED);
    let r = t.api(Method::DELETE, &format!("/api/v1/workflows/orders/triggers/{tid}"), None).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    t.door(&uri, &[JSON], r#"{"amount": 1}"#).await.expect(StatusCode::NOT_FOUND, "NOT_FOUND");
}

#[tokio::test]
async fn a_run_that_cannot_start_is_422_with_the_details() {
    let t = setup().await;
    t.workflow(orders("draft-one", "draft")).await;
    let (token, _) = trigger(&t, "draft-one", json!({})).await;
    let r = t.door(&format!("/api/v1/hooks/{token}"), &[JSON], r#"{"amount": 1}"#).await;
    r.expect(StatusCode::UNPROCESSABLE_ENTITY, "UNPROCESSABLE");
    assert!(r.message().contains("activate"), "{}", r.body);

    t.workflow(orders("live", "active")).await;
    let (token, _) = trigger(&t, "live", json!({})).await;
    let r = t.door(&format!("/api/v1/hooks/{token}"), &[JSON], r#"{"amount": "lots"}"#).await;
    r.expect(StatusCode::UNPROCESSABLE_ENTITY, "UNPROCESSABLE");
    assert_eq!(r.body["error"]["details"][0]["path"], json!(["amount"]), "{}", r.body);
    // An empty body is the input {}: here it misses `amount`.
    let r = t.door(&format!("/api/v1/hooks/{token}"), &[], "").await;
    r.expect(StatusCode::UNPROCESSABLE_ENTITY, "UNPROCESSABLE");
}

#[tokio::test]
async fn hook_doors_refuse_non_json_bad_utf8_bad_json_and_large_bodies() {
    let t = setup().await;
    t.workflow(orders("orders", "active")).await;
    let (token, _) = trigger(&t, "orders", json!({})).await;
    let uri = format!("/api/v1/hooks/{token}");
    let r = t.door(&uri, &[("content-type", "text/plain")], "amount=1").await;
    r.expect(StatusCode::BAD_REQUEST, "VALIDATION_ERROR");
    assert!(r.message().contains("Content-Type"), "{}", r.body);
    let r = t.door(&uri, &[JSON], &b"{\"amount\": \"\xff\"}"[..]).await;
    r.expect(StatusCode::BAD_REQUEST, "VALIDATION_ERROR");
    assert!(r.message().contains("UTF-8"), "{}", r.body);
    let r = t.door(&uri, &[JSON], "{\"amount\": ").await;
    r.expect(StatusCode::BAD_REQUEST, "VALIDATION_ERROR");
    assert!(r.message().contains("line 1"), "{}", r.body);
    let big = format!("{{\"amount\": 1, \"pad\": \"{}\"}}", "x".repeat(BODY_LIMIT));
    t.door(&uri, &[JSON], big.clone()).await.expect(StatusCode::PAYLOAD_TOO_LARGE, "PAYLOAD_TOO_LARGE");
    let id = uuid::Uuid::new_v4().to_string();
    t.door(&format!("/api/webhooks/{id}"), &[JSON], big.clone())
        .await
        .expect(StatusCode::PAYLOAD_TOO_LARGE, "PAYLOAD_TOO_LARGE");
    t.door("/api/v1/webhooks/app_x", &[JSON], big).await.expect(StatusCode::PAYLOAD_TOO_LARGE, "PAYLOAD_TOO_LARGE");
}

#[tokio::test]
async fn too_many_or_too_large_headers_are_431() {
    let t = setup().await;
    let mut req = Request::builder().method(Method::GET).uri("/api/v1/health");
    for i in 0..(super::super::extract::MAX_HEADERS + 1) {
        req = req.header(format!("x-h-{i}"), "v");
    }
    t.send(req.body(Body::empty()).unwrap())
        .await
        .expect(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE, "HEADERS_TOO_LARGE");
    let big = "v".repeat(super::super::extract::MAX_HEADER_VALUE_BYTES + 1);
    let r = t.door("/api/v1/hooks/tk_x", &[("x-big", big.as_str())], "").await;
    r.expect(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE, "HEADERS_TOO_LARGE");
    let mid = "v".repeat(4000);
    let hs: Vec<(&str, &str)> = vec![("x-a", &mid), ("x-b", &mid), ("x-c", &mid), ("x-d", &mid), ("x-e", &mid)];
    t.door("/api/v1/hooks/tk_x", &hs, "")
        .await
        .expect(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE, "HEADERS_TOO_LARGE");
    // Within the limits the request goes through.
    t.door("/api/v1/hooks/tk_x", &[("x-a", &mid)], "").await.expect(StatusCode::NOT_FOUND, "NOT_FOUND");
}

// ---- webhook blocks ----------------------------------------------------------------

#[tokio::test]
async fn webhook_ids_must_be_uuids_and_are_claimed_once() {
    let t = setup().await;
    let r = t.workflow(with_webhook("bad", "not-a-uuid", Some("s"))).await;
    r.expect(StatusCode::BAD_REQUEST, "VALIDATION_ERROR");
    assert_eq!(r.body["error"]["details"][0]["path"], json!(["blocks", 0, "config"]), "{}", r.body);

    let id = uuid::Uuid::new_v4().to_string();
    assert_eq!(t.workflow(with_webhook("first", &id, Some("s1"))).await.status, StatusCode::CREATED);
    let r = t.workflow(with_webhook("second", &id, Some("s2"))).await;
    r.expect(StatusCode::CONFLICT, "CONFLICT");
    assert!(r.message().contains(&id), "{}", r.body);
    // Another account cannot take it either, and is not told whose it is.
    let other = t.api(Method::POST, "/api/v1/auth/register", Some(json!({"name": "o"}))).await;
    let okey = other.body["api_key"].as_str().unwrap();
    let req = Request::builder()
        .method(Method::POST)
        .uri("/api/v1/workflows")
        .header("x-api-key", okey)
        .header("content-type", "application/json")
        .body(Body::from(with_webhook("theirs", &id, Some("x")).to_string()))
        .unwrap();
    let r = t.send(req).await;
    r.expect(StatusCode::CONFLICT, "CONFLICT");
    assert!(!r.message().contains("first"), "{}", r.body);

    // Re-saving "first" without the block frees the id; re-saving with it again is fine.
    let plain = json!({"steps": [{"id": "s", "type": "starter"}]});
    assert_eq!(t.api(Method::PUT, "/api/v1/workflows/first/graph", Some(plain)).await.status, StatusCode::OK);
    assert_eq!(t.workflow(with_webhook("second", &id, Some("s2"))).await.status, StatusCode::CREATED);
    let g = with_webhook("x", &id, Some("s1"));
    let graph = json!({"blocks": g["blocks"], "edges": g["edges"]});
    t.api(Method::PUT, "/api/v1/workflows/first/graph", Some(graph.clone()))
        .await
        .expect(StatusCode::CONFLICT, "CONFLICT");
    // Deleting "second" frees it again.
    assert_eq!(t.api(Method::DELETE, "/api/v1/workflows/second", None).await.status, StatusCode::NO_CONTENT);
    assert_eq!(t.api(Method::PUT, "/api/v1/workflows/first/graph", Some(graph)).await.status, StatusCode::OK);
    assert!(t.state.store.get(&keys::webhook(&id)).await.unwrap().unwrap().str("workflow_id") == Some("first"));
}

#[tokio::test]
async fn the_webhook_secret_is_stored_hashed_and_survives_a_round_trip() {
    let t = setup().await;
    let id = uuid::Uuid::new_v4().to_string();
    t.workflow(with_webhook("w", &id, Some("plain-secret"))).await;
    t.api(Method::POST, "/api/v1/workflows/w/deploy", None).await;
    let got = t.api(Method::GET, "/api/v1/workflows/w", None).await;
    let stored = got.body["blocks"][0]["config"]["webhook_secret"].as_str().unwrap().to_string();
    assert_eq!(stored, format!("sha256:{}", ids::hash_secret("plain-secret")));
    // GET, then PUT the same graph back: the secret still works.
    let graph = json!({"blocks": got.body["blocks"], "edges": got.body["edges"]});
    assert_eq!(t.api(Method::PUT, "/api/v1/workflows/w/graph", Some(graph)).await.status, StatusCode::OK);
    let r = t.door(&format!("/api/webhooks/{id}"), &[JSON, ("authorization", "Bearer plain-secret")], "{}").await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
}

#[tokio::test]
async fn webhook_block_authentication() {
    let t = setup().await;
    let id = uuid::Uuid::new_v4().to_string();
    t.workflow(with_webhook("w", &id, Some("right"))).await;
    t.api(Method::POST, "/api/v1/workflows/w/deploy", None).await;
    let uri = format!("/api/webhooks/{id}");
    let body = r#"{"order": 42}"#;
    let r = t.door(&uri, &[JSON, ("authorization", "Bearer right")], body).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    assert_eq!(r.body["input"], json!({"order": 42}));
    assert_eq!(r.body["metadata"]["webhook_id"], json!(id));
    let r = t.door(&format!("{uri}?token=right"), &[JSON], body).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let r = t.door(&format!("/api/v1/webhooks/{id}?token=right"), &[JSON], body).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);

    t.door(&uri, &[JSON, ("authorization", "Bearer wrong")], body)
        .await
        .expect(StatusCode::UNAUTHORIZED, "UNAUTHORIZED");
    t.door(&format!("{uri}?token=wrong"), &[JSON], body).await.expect(StatusCode::UNAUTHORIZED, "UNAUTHORIZED");
    t.door(&uri, &[JSON], body).await.expect(StatusCode::UNAUTHORIZED, "UNAUTHORIZED");
    // A Bearer header decides even when empty: the right query token is not consulted.
    let r = t.door(&format!("{uri}?token=right"), &[JSON, ("authorization", "Bearer ")], body).await;
    r.expect(StatusCode::UNAUTHORIZED, "UNAUTHORIZED");
    let r = t.door(&format!("{uri}?token=right"), &[JSON, ("authorization", "Bearer wrong")], body).await;
    r.expect(StatusCode::UNAUTHORIZED, "UNAUTHORIZED");
    // Another Authorization scheme is not a Bearer: the query token counts.
    let r = t.door(&format!("{uri}?token=right"), &[JSON, ("authorization", "Basic eDp5")], body).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);

    // A block without a secret can never be triggered.
    let open = uuid::Uuid::new_v4().to_string();
    t.workflow(with_webhook("open", &open, None)).await;
    t.api(Method::POST, "/api/v1/workflows/open/deploy", None).await;
    let r = t.door(&format!("/api/webhooks/{open}?token=x"), &[JSON, ("authorization", "Bearer anything")], body).await;
    r.expect(StatusCode::UNAUTHORIZED, "UNAUTHORIZED");
    assert!(r.message().contains("no webhook_secret"), "{}", r.body);

    // Unknown ids, UUID or not.
    let ghost = uuid::Uuid::new_v4().to_string();
    t.door(&format!("/api/webhooks/{ghost}?token=x"), &[JSON], body).await.expect(StatusCode::NOT_FOUND, "NOT_FOUND");
    t.door("/api/webhooks/whatever?token=x", &[JSON], body).await.expect(StatusCode::NOT_FOUND, "NOT_FOUND");
    // Auth comes before the body: a bad body with a good secret is a 400.
    let r = t.door(&uri, &[("content-type", "text/plain"), ("authorization", "Bearer right")], "x").await;
    r.expect(StatusCode::BAD_REQUEST, "VALIDATION_ERROR");
}

#[tokio::test]
async fn deployed_takes_every_call_armed_one_and_internal_none() {
    let t = setup().await;
    let id = uuid::Uuid::new_v4().to_string();
    t.workflow(with_webhook("w", &id, Some("s"))).await;
    let uri = format!("/api/webhooks/{id}?token=s");
    let r = t.door(&uri, &[JSON], "{}").await;
    r.expect(StatusCode::CONFLICT, "CONFLICT");
    assert!(r.message().contains("not deployed"), "{}", r.body);

    t.api(Method::POST, "/api/v1/workflows/w/deploy", None).await;
    for _ in 0..3 {
        assert_eq!(t.door(&uri, &[JSON], "{}").await.status, StatusCode::CREATED);
    }
    t.api(Method::POST, "/api/v1/workflows/w/undeploy", None).await;
    t.door(&uri, &[JSON], "{}").await.expect(StatusCode::CONFLICT, "CONFLICT");

    let armed = t.api(Method::POST, "/api/v1/workflows/w/arm", None).await;
    assert!(armed.body["armed_until"].is_string(), "{}", armed.body);
    assert_eq!(t.door(&uri, &[JSON], "{}").await.status, StatusCode::CREATED);
    t.door(&uri, &[JSON], "{}").await.expect(StatusCode::CONFLICT, "CONFLICT");
    let wf = t.api(Method::GET, "/api/v1/workflows/w", None).await;
    assert_eq!(wf.body["armed_until"], Value::Null);
}

#[tokio::test]
async fn an_expired_arm_lets_nothing_in() {
    let t = setup().await;
    let id = uuid::Uuid::new_v4().to_string();
    t.workflow(with_webhook("w", &id, Some("s"))).await;
    let past = ids::ms_to_rfc3339(ids::now_ms() - 1000);
    let upd = crate::store::Update::default().set("armed_until", past);
    t.state.store.update(&keys::workflow(&account_of(&t).await, "w"), upd, None).await.unwrap();
    t.door(&format!("/api/webhooks/{id}?token=s"), &[JSON], "{}").await.expect(StatusCode::CONFLICT, "CONFLICT");
}

async fn account_of(t: &T) -> String {
    t.api(Method::GET, "/api/v1/account", None).await.body["id"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn an_arm_is_given_back_when_the_run_cannot_start() {
    let t = setup().await;
    let id = uuid::Uuid::new_v4().to_string();
    let mut def = with_webhook("w", &id, Some("s"));
    def["inputSchema"] = json!({"type": "object", "required": ["order"]});
    t.workflow(def).await;
    t.api(Method::POST, "/api/v1/workflows/w/arm", None).await;
    let uri = format!("/api/webhooks/{id}?token=s");
    t.door(&uri, &[JSON], "{}").await.expect(StatusCode::UNPROCESSABLE_ENTITY, "UNPROCESSABLE");
    assert_eq!(t.door(&uri, &[JSON], r#"{"order": 1}"#).await.status, StatusCode::CREATED);
    t.door(&uri, &[JSON], r#"{"order": 1}"#).await.expect(StatusCode::CONFLICT, "CONFLICT");
}

/// The SQLite store, except that the next `n` reads of a workflow head wait for each other:
/// two racing calls both see the workflow armed before either takes the arm, the
/// interleaving that a plain read-then-write would get wrong.
struct RaceGate {
    inner: SqliteStore,
    barrier: tokio::sync::Barrier,
    remaining: std::sync::atomic::AtomicUsize,
}

#[async_trait::async_trait]
impl crate::store::Store for RaceGate {
    async fn get(&self, key: &crate::store::Key) -> crate::Result<Option<crate::store::Item>> {
        use std::sync::atomic::Ordering::SeqCst;
        let item = self.inner.get(key).await?;
        let is_head = key.pk.starts_with("ACCT#") && key.pk.ends_with("#WF");
        if is_head && self.remaining.fetch_update(SeqCst, SeqCst, |n| n.checked_sub(1)).is_ok() {
            self.barrier.wait().await;
        }
        Ok(item)
    }
    async fn put(&self, item: crate::store::Item, cond: Option<crate::store::Cond>) -> crate::Result<()> {
        self.inner.put(item, cond).await
    }
    async fn update(
        &self,
        key: &crate::store::Key,
        update: crate::store::Update,
        cond: Option<crate::store::Cond>,
    ) -> crate::Result<crate::store::Item> {
        self.inner.update(key, update, cond).await
    }
    async fn delete(&self, key: &crate::store::Key, cond: Option<crate::store::Cond>) -> crate::Result<()> {
        self.inner.delete(key, cond).await
    }
    async fn transact(&self, writes: Vec<crate::store::Write>) -> crate::Result<()> {
        self.inner.transact(writes).await
    }
    async fn query(&self, q: crate::store::Query) -> crate::Result<crate::store::Page> {
        self.inner.query(q).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_racing_calls_on_an_armed_webhook_start_exactly_one_run() {
    let dir = tempfile::tempdir().unwrap();
    let db = Sqlite::open(&dir.path().join("race.db")).unwrap();
    let gate = Arc::new(RaceGate {
        inner: SqliteStore::new(db.clone()),
        barrier: tokio::sync::Barrier::new(2),
        remaining: std::sync::atomic::AtomicUsize::new(0),
    });
    let state = App::new(
        gate.clone(),
        Arc::new(SqliteQueue::new(db, "steps", 5)),
        Arc::new(crate::secrets::SecretBox::ephemeral()),
        AppConfig::default(),
    );
    let mut t = T { app: router(state.clone()), state, key: String::new(), _dir: dir };
    t.key = t.api(Method::POST, "/api/v1/auth/register", Some(json!({"name": "r"}))).await.body["api_key"]
        .as_str()
        .unwrap()
        .to_string();
    let id = uuid::Uuid::new_v4().to_string();
    t.workflow(with_webhook("w", &id, Some("s"))).await;
    for round in 0..3 {
        t.api(Method::POST, "/api/v1/workflows/w/arm", None).await;
        gate.remaining.store(2, std::sync::atomic::Ordering::SeqCst);
        let call = |n: u32| {
            let app = t.app.clone();
            let uri = format!("/api/webhooks/{id}?token=s");
            tokio::spawn(async move {
                let req = Request::builder()
                    .method(Method::POST)
                    .uri(uri)
                    .header("content-type", "application/json")
                    .body(Body::from(format!("{{\"order\": {n}}}")))
                    .unwrap();
                app.oneshot(req).await.unwrap().status()
            })
        };
        let (a, b) = tokio::join!(call(1), call(2));
        let mut codes = [a.unwrap(), b.unwrap()];
        codes.sort();
        assert_eq!(codes, [StatusCode::CREATED, StatusCode::CONFLICT], "round {round}");
    }
    let runs = t.api(Method::GET, "/api/v1/runs?workflow_id=w&limit=100", None).await;
    assert_eq!(runs.body["data"].as_array().unwrap().len(), 3, "{}", runs.body);
}

// ---- apps ---------------------------------------------------------------------------

async fn app_with(t: &T, body: Value) -> String {
    let r = t.api(Method::POST, "/api/v1/apps", Some(body)).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    assert!(r.body.get("signing_secret").is_none() && r.body.get("signing_secret_sealed").is_none(), "{}", r.body);
    r.body["app_id"].as_str().unwrap().to_string()
}

fn hex_hmac(key: &[u8], parts: &[&[u8]]) -> String {
    hex::encode(hmac_sha256(key, parts))
}

#[tokio::test]
async fn an_app_checks_x_signature_256_over_the_raw_body() {
    let t = setup().await;
    t.workflow(orders("orders", "active")).await;
    let app = app_with(&t, json!({"name": "acme", "signing_secret": "acme-secret-1"})).await;
    let got = t.api(Method::GET, &format!("/api/v1/apps/{app}"), None).await;
    assert_eq!(got.body["webhook_url"], json!(format!("https://baton.test/api/v1/webhooks/{app}")));
    assert_eq!(got.body["signature"]["scheme"], json!("hmac-sha256"));
    let uri = format!("/api/v1/webhooks/{app}");
    // Odd spacing on purpose: the signature is over these bytes, not a re-serialization.
    let body = r#"{"workflow_id":"orders",  "input": {"amount": 3}, "task": "ship it"}"#;
    let sig = format!("sha256={}", hex_hmac(b"acme-secret-1", &[body.as_bytes()]));
    let r = t.door(&uri, &[JSON, ("x-signature-256", &sig)], body).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    assert_eq!(r.body["input"], json!({"amount": 3, "task": "ship it"}));
    assert_eq!(r.body["metadata"]["app_id"], json!(app));
    // A replay of the signed request (at the other path, with a key of the replayer's own)
    // starts nothing: the digest of the signed body makes it the first delivery again.
    let replay = t.door(&format!("/api/webhooks/{app}"), &[JSON, ("x-signature-256", &sig)], body).await;
    assert_eq!((replay.status, replay.run_id()), (StatusCode::OK, r.run_id()), "{}", replay.body);
    let replay = t.door(&uri, &[JSON, ("x-signature-256", &sig), ("idempotency-key", "fresh-key")], body).await;
    assert_eq!((replay.status, replay.run_id()), (StatusCode::OK, r.run_id()), "{}", replay.body);
    let body2 = r#"{"workflow_id":"orders",  "input": {"amount": 4}}"#;
    let sig2 = format!("sha256={}", hex_hmac(b"acme-secret-1", &[body2.as_bytes()]));
    let next = t.door(&uri, &[JSON, ("x-signature-256", &sig2)], body2).await;
    assert_eq!(next.status, StatusCode::CREATED, "another body is another delivery: {}", next.body);

    let wrong = format!("sha256={}", hex_hmac(b"not-the-secret", &[body.as_bytes()]));
    t.door(&uri, &[JSON, ("x-signature-256", &wrong)], body).await.expect(StatusCode::UNAUTHORIZED, "UNAUTHORIZED");
    t.door(&uri, &[JSON], body).await.expect(StatusCode::UNAUTHORIZED, "UNAUTHORIZED");
    let tampered = body.replace('3', "4");
    t.door(&uri, &[JSON, ("x-signature-256", &sig)], tampered).await.expect(StatusCode::UNAUTHORIZED, "UNAUTHORIZED");
    // Signed garbage passes the signature and is then refused as JSON.
    let junk = "not json";
    let sig = format!("sha256={}", hex_hmac(b"acme-secret-1", &[junk.as_bytes()]));
    t.door(&uri, &[JSON, ("x-signature-256", &sig)], junk).await.expect(StatusCode::BAD_REQUEST, "VALIDATION_ERROR");
    // An unknown workflow is 404; a draft one 422.
    let body = r#"{"workflow_id": "ghost"}"#;
    let sig = format!("sha256={}", hex_hmac(b"acme-secret-1", &[body.as_bytes()]));
    t.door(&uri, &[JSON, ("x-signature-256", &sig)], body).await.expect(StatusCode::NOT_FOUND, "NOT_FOUND");
    t.workflow(orders("drafty", "draft")).await;
    let body = r#"{"workflow_id": "drafty", "input": {"amount": 1}}"#;
    let sig = format!("sha256={}", hex_hmac(b"acme-secret-1", &[body.as_bytes()]));
    let r = t.door(&uri, &[JSON, ("x-signature-256", &sig)], body).await;
    r.expect(StatusCode::UNPROCESSABLE_ENTITY, "UNPROCESSABLE");
}

#[tokio::test]
async fn unknown_apps_are_404_and_apps_without_receive_403() {
    let t = setup().await;
    t.door("/api/v1/webhooks/app_01nope", &[JSON], "{}").await.expect(StatusCode::NOT_FOUND, "NOT_FOUND");
    let app = app_with(&t, json!({"name": "mute", "capabilities": []})).await;
    t.door(&format!("/api/v1/webhooks/{app}"), &[JSON], "{}").await.expect(StatusCode::FORBIDDEN, "FORBIDDEN");
    let r = t.api(Method::DELETE, &format!("/api/v1/apps/{app}"), None).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    t.door(&format!("/api/v1/webhooks/{app}"), &[JSON], "{}").await.expect(StatusCode::NOT_FOUND, "NOT_FOUND");
    let r = t.api(Method::POST, "/api/v1/apps", Some(json!({"name": "x", "signature": {"scheme": "sha1"}}))).await;
    r.expect(StatusCode::BAD_REQUEST, "VALIDATION_ERROR");
}

#[tokio::test]
async fn a_github_redelivery_returns_the_original_run() {
    let t = setup().await;
    t.workflow(json!({"id": "gh", "name": "GH", "status": "active", "steps": [{"id": "s", "type": "starter"}]})).await;
    let app = app_with(
        &t,
        json!({"name": "github", "signing_secret": "gh-secret-xyz", "signature": {"scheme": "github"}, "workflow_id": "gh"}),
    )
    .await;
    let uri = format!("/api/v1/webhooks/{app}");
    let body = r#"{"action": "opened", "number": 7}"#;
    let sig = format!("sha256={}", hex_hmac(b"gh-secret-xyz", &[body.as_bytes()]));
    let h = |d: &'static str| vec![JSON, ("x-hub-signature-256", sig.as_str()), ("x-github-delivery", d)];
    let first = t.door(&uri, &h("d-1"), body).await;
    assert_eq!(first.status, StatusCode::CREATED, "{}", first.body);
    assert_eq!(first.body["input"], json!({"action": "opened", "number": 7}));
    let again = t.door(&uri, &h("d-1"), body).await;
    assert_eq!(again.status, StatusCode::OK, "{}", again.body);
    assert_eq!(again.run_id(), first.run_id());
    // `X-GitHub-Delivery` is not signed: a replay with a fresh one is still the same body.
    let replay = t.door(&uri, &h("d-2"), body).await;
    assert_eq!((replay.status, replay.run_id()), (StatusCode::OK, first.run_id()), "{}", replay.body);
    let body2 = r#"{"action": "closed", "number": 7}"#;
    let sig2 = format!("sha256={}", hex_hmac(b"gh-secret-xyz", &[body2.as_bytes()]));
    let other =
        t.door(&uri, &[JSON, ("x-hub-signature-256", sig2.as_str()), ("x-github-delivery", "d-3")], body2).await;
    assert_eq!(other.status, StatusCode::CREATED);
    assert_ne!(other.run_id(), first.run_id());
    let runs = t.api(Method::GET, "/api/v1/runs?workflow_id=gh", None).await;
    assert_eq!(runs.body["data"].as_array().unwrap().len(), 2);
    let bad = format!("sha256={}", hex_hmac(b"gh-secret-xyz", &[b"other"]));
    let r = t.door(&uri, &[JSON, ("x-hub-signature-256", &bad), ("x-github-delivery", "d-3")], body).await;
    r.expect(StatusCode::UNAUTHORIZED, "UNAUTHORIZED");
    // Without a workflow anywhere the body cannot be placed.
    let app2 = app_with(&t, json!({"name": "nowf"})).await;
    let r = t.door(&format!("/api/v1/webhooks/{app2}"), &[JSON], body).await;
    r.expect(StatusCode::BAD_REQUEST, "VALIDATION_ERROR");
    let r = t.door(&format!("/api/v1/webhooks/{app2}?workflow_id=gh"), &[JSON], body).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
}

#[tokio::test]
async fn stripe_signatures_are_checked_with_their_timestamp() {
    let t = setup().await;
    t.workflow(json!({"id": "pay", "name": "P", "status": "active", "steps": [{"id": "s", "type": "starter"}]})).await;
    let secret = "whsec_stripe_local_test";
    let app = app_with(
        &t,
        json!({"name": "stripe", "signing_secret": secret, "signature": {"scheme": "stripe"}, "workflow_id": "pay"}),
    )
    .await;
    let uri = format!("/api/v1/webhooks/{app}");
    let body = r#"{"id": "evt_123", "type": "charge.succeeded"}"#;
    let header = |t: i64| {
        let ts = t.to_string();
        format!("t={ts},v1={}", hex_hmac(secret.as_bytes(), &[ts.as_bytes(), b".", body.as_bytes()]))
    };
    let now = ids::now_ms() / 1000;
    let r = t.door(&uri, &[JSON, ("stripe-signature", &header(now))], body).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    // Stripe retries the same event with a fresh signature: the event id makes it the same run.
    let again = t.door(&uri, &[JSON, ("stripe-signature", &header(now + 1))], body).await;
    assert_eq!((again.status, again.run_id()), (StatusCode::OK, r.run_id()));
    let r = t.door(&uri, &[JSON, ("stripe-signature", &header(now - 301))], body).await;
    r.expect(StatusCode::UNAUTHORIZED, "UNAUTHORIZED");
    assert!(r.message().contains("tolerance"), "{}", r.body);
    // An event without an id, replayed within the tolerance: the same signed bytes.
    let bare = r#"{"type": "ping"}"#;
    let ts = now.to_string();
    let sig = format!("t={ts},v1={}", hex_hmac(secret.as_bytes(), &[ts.as_bytes(), b".", bare.as_bytes()]));
    let first = t.door(&uri, &[JSON, ("stripe-signature", &sig)], bare).await;
    assert_eq!(first.status, StatusCode::CREATED, "{}", first.body);
    let replay = t.door(&uri, &[JSON, ("stripe-signature", &sig)], bare).await;
    assert_eq!((replay.status, replay.run_id()), (StatusCode::OK, first.run_id()), "{}", replay.body);
}

#[tokio::test]
async fn standard_webhooks_redeliveries_and_replays() {
    let t = setup().await;
    t.workflow(json!({"id": "sw", "name": "S", "status": "active", "steps": [{"id": "s", "type": "starter"}]})).await;
    let key = [9u8; 32];
    let secret = format!("whsec_{}", B64.encode(key));
    let app = app_with(
        &t,
        json!({"name": "sw", "signing_secret": secret, "signature": {"scheme": "standard-webhooks"}, "workflow_id": "sw"}),
    )
    .await;
    let uri = format!("/api/v1/webhooks/{app}");
    let body = r#"{"event": "thing.happened"}"#;
    let sign = |id: &str, ts: i64| {
        let ts = ts.to_string();
        let s = B64.encode(hmac_sha256(&key, &[id.as_bytes(), b".", ts.as_bytes(), b".", body.as_bytes()]));
        (ts, format!("v1,{s}"))
    };
    let now = ids::now_ms() / 1000;
    let (ts, sig) = sign("msg_1", now);
    let h = |id: &'static str, ts: &str, sig: &str| -> Vec<(String, String)> {
        vec![
            ("content-type".into(), "application/json".into()),
            ("webhook-id".into(), id.into()),
            ("webhook-timestamp".into(), ts.into()),
            ("webhook-signature".into(), sig.into()),
        ]
    };
    let (t, uri) = (&t, &uri);
    let send = |hs: Vec<(String, String)>| async move {
        let refs: Vec<(&str, &str)> = hs.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
        t.door(uri, &refs, body).await
    };
    let first = send(h("msg_1", &ts, &sig)).await;
    assert_eq!(first.status, StatusCode::CREATED, "{}", first.body);
    assert_eq!(first.body["metadata"]["delivery_id"], json!("msg_1"));
    let (ts2, sig2) = sign("msg_1", now + 5);
    let retry = send(h("msg_1", &ts2, &sig2)).await;
    assert_eq!((retry.status, retry.run_id()), (StatusCode::OK, first.run_id()));
    let (old, old_sig) = sign("msg_2", now - 600);
    let r = send(h("msg_2", &old, &old_sig)).await;
    r.expect(StatusCode::UNAUTHORIZED, "UNAUTHORIZED");
    let r = send(h("msg_2", &ts, &sig)).await; // signature made for another id
    r.expect(StatusCode::UNAUTHORIZED, "UNAUTHORIZED");
}

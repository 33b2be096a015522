//! HTTP tests of the run endpoints, on the real SQLite adapters with the queue played by
//! the same per-message function the local poller uses.

use crate::adapters::{Sqlite, SqliteQueue, SqliteStore};
use crate::api::router;
use crate::app::{App, AppConfig, AppState};
use axum::Router;
use axum::body::Body;
use http::{Method, Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;
use tower::ServiceExt;

struct T {
    app: Router,
    state: AppState,
    key: String,
    _dir: tempfile::TempDir,
}

async fn setup(rate_limit: u64) -> T {
    let dir = tempfile::tempdir().unwrap();
    let db = Sqlite::open(&dir.path().join("t.db")).unwrap();
    let cfg = AppConfig { rate_limit_per_minute: rate_limit, max_body_bytes: 64 * 1024, ..AppConfig::default() };
    let state = App::new(
        Arc::new(SqliteStore::new(db.clone())),
        Arc::new(SqliteQueue::new(db, "steps", 5)),
        Arc::new(crate::secrets::SecretBox::ephemeral()),
        cfg,
    );
    let app = router(state.clone());
    let mut t = T { app, state, key: String::new(), _dir: dir };
    let (s, b) = t.call(Method::POST, "/api/v1/auth/register", Some(json!({"name": "t"}))).await;
    assert_eq!(s, StatusCode::CREATED);
    t.key = b["api_key"].as_str().unwrap().to_string();
    t
}

impl T {
    async fn call(&self, m: Method, uri: &str, body: Option<Value>) -> (StatusCode, Value) {
        let (s, _, b) = self.call_with(m, uri, body, &[]).await;
        (s, b)
    }

    async fn call_with(
        &self,
        m: Method,
        uri: &str,
        body: Option<Value>,
        headers: &[(&str, &str)],
    ) -> (StatusCode, http::HeaderMap, Value) {
        let mut req = Request::builder().method(m).uri(uri);
        if !self.key.is_empty() {
            req = req.header("x-api-key", &self.key);
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let req = match body {
            Some(b) => req.header("content-type", "application/json").body(Body::from(b.to_string())).unwrap(),
            None => req.body(Body::empty()).unwrap(),
        };
        let res = self.app.clone().oneshot(req).await.unwrap();
        let status = res.status();
        let headers = res.headers().clone();
        let bytes = res.into_body().collect().await.unwrap().to_bytes();
        let v = if bytes.is_empty() { Value::Null } else { serde_json::from_slice(&bytes).unwrap() };
        (status, headers, v)
    }

    /// Plays the queue until nothing is left to do right now.
    async fn drain(&self) {
        crate::testing::drain(&self.state).await
    }

    async fn workflow(&self, def: Value) {
        let (s, b) = self.call(Method::POST, "/api/v1/workflows", Some(def)).await;
        assert_eq!(s, StatusCode::CREATED, "{b}");
    }
}

fn approval(id: &str, status: &str) -> Value {
    json!({"id": id, "name": "Orders", "status": status,
      "inputSchema": {"type": "object", "required": ["amount"], "properties": {"amount": {"type": "number"}}},
      "blocks": [
        {"id": "start", "type": "starter"},
        {"id": "check", "type": "condition"},
        {"id": "review", "type": "human", "config": {"kind": "approval", "prompt": "Approve {{input.amount}}?"}},
        {"id": "done", "type": "response", "config": {"body": {"ok": true, "amount": "{{input.amount}}"}}}],
      "edges": [
        {"from": "start", "to": "check"},
        {"from": "check", "to": "review", "when": "input.amount > 1000"},
        {"from": "check", "to": "done"},
        {"from": "review", "to": "done"}]})
}

fn chain(id: &str) -> Value {
    json!({"id": id, "name": "chain", "status": "active", "steps": [
        {"id": "start", "type": "starter"},
        {"id": "a", "type": "transform", "config": {"mapping": {"n": "{{input.n | plus: 1}}"}}},
        {"id": "out", "type": "response", "config": {"body": {"n": "{{steps.a.output.n}}"}, "status": 201, "headers": {"x-baton-test": "yes"}}}]})
}

#[tokio::test]
async fn start_wait_approve_and_read_the_output() {
    let t = setup(1000).await;
    t.workflow(approval("orders", "active")).await;
    let (s, run) = t.call(Method::POST, "/api/v1/workflows/orders/run", Some(json!({"input": {"amount": 5000}}))).await;
    assert_eq!(s, StatusCode::CREATED, "{run}");
    assert_eq!(run["status"], "pending");
    assert_eq!(run["workflow_version"], 1);
    let id = run["run_id"].as_str().unwrap().to_string();
    assert!(id.starts_with("run_"));
    t.drain().await;
    let (_, r) = t.call(Method::GET, &format!("/api/v1/runs/{id}"), None).await;
    assert_eq!(r["status"], "waiting_human", "{r:#}");
    let (s, tasks) = t.call(Method::GET, &format!("/api/v1/runs/{id}/tasks"), None).await;
    assert_eq!(s, StatusCode::OK);
    let task = tasks["data"][0]["task_id"].as_str().unwrap().to_string();
    assert!(task.starts_with("task_"));
    let uri = format!("/api/v1/runs/{id}/tasks/{task}/complete");
    let (s, b) = t.call(Method::POST, &uri, Some(json!({"feedback": "no verdict"}))).await;
    assert_eq!((s, b["error"]["code"].as_str()), (StatusCode::BAD_REQUEST, Some("VALIDATION_ERROR")));
    let (s, _) = t.call(Method::POST, &uri, Some(json!({"approved": true}))).await;
    assert_eq!(s, StatusCode::OK);
    let (s, b) = t.call(Method::POST, &uri, Some(json!({"approved": true}))).await;
    assert_eq!((s, b["error"]["code"].as_str()), (StatusCode::CONFLICT, Some("CONFLICT")));
    let (s, _) = t
        .call(Method::POST, &format!("/api/v1/runs/{id}/tasks/task_nope/complete"), Some(json!({"approved": true})))
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    t.drain().await;
    let (_, r) = t.call(Method::GET, &format!("/api/v1/runs/{id}"), None).await;
    assert_eq!(r["status"], "completed");
    assert_eq!(r["output"], json!({"ok": true, "amount": 5000}));
    let (_, ev) = t.call(Method::GET, &format!("/api/v1/runs/{id}/events?limit=3"), None).await;
    assert_eq!(ev["data"].as_array().unwrap().len(), 3);
    assert_eq!(ev["data"][0]["type"], "run.started");
    let cursor = ev["next_cursor"].as_str().unwrap();
    let (_, ev2) = t.call(Method::GET, &format!("/api/v1/runs/{id}/events?limit=100&cursor={cursor}"), None).await;
    assert_eq!(ev2["data"].as_array().unwrap().last().unwrap()["type"], "run.completed");
}

#[tokio::test]
async fn draft_workflow_is_invalid_status_and_bad_input_is_validation_error() {
    let t = setup(1000).await;
    t.workflow(approval("draft", "draft")).await;
    let (s, b) = t.call(Method::POST, "/api/v1/workflows/draft/run", Some(json!({"input": {"amount": 1}}))).await;
    assert_eq!((s, b["error"]["code"].as_str()), (StatusCode::BAD_REQUEST, Some("INVALID_STATUS")), "{b}");
    t.workflow(approval("live", "active")).await;
    let (s, b) = t.call(Method::POST, "/api/v1/workflows/live/run", Some(json!({"input": {"amount": "lots"}}))).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_eq!(b["error"]["details"][0]["path"], json!(["amount"]));
    let (s, b) = t.call(Method::POST, "/api/v1/workflows/live/run", Some(json!({"input": {}}))).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{b}");
    // Seed 003's shape: the missing property's own path, "Required".
    assert_eq!(b["error"]["details"], json!([{"path": ["amount"], "message": "Required"}]), "{b}");
    let (s, _) = t.call(Method::POST, "/api/v1/workflows/nope/run", Some(json!({}))).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, b) = t.call(Method::POST, "/api/v1/workflows/live/run", Some(json!({"inputs": {}}))).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "unknown fields are named: {b}");
}

#[tokio::test]
async fn idempotency_key_in_body_or_header_returns_the_same_run() {
    let t = setup(1000).await;
    t.workflow(chain("c")).await;
    let body = json!({"input": {"n": 1}, "idempotencyKey": "order-1"});
    let (s1, a) = t.call(Method::POST, "/api/v1/workflows/c/run", Some(body.clone())).await;
    let (s2, b) = t.call(Method::POST, "/api/v1/workflows/c/run", Some(body)).await;
    assert_eq!((s1, s2), (StatusCode::CREATED, StatusCode::OK));
    assert_eq!(a["run_id"], b["run_id"]);
    let (s, _, c) = t
        .call_with(
            Method::POST,
            "/api/v1/workflows/c/run",
            Some(json!({"input": {"n": 1}})),
            &[("idempotency-key", "order-1")],
        )
        .await;
    assert_eq!((s, &c["run_id"]), (StatusCode::OK, &a["run_id"]));
    let (s, d) = t
        .call(Method::POST, "/api/v1/workflows/c/run", Some(json!({"input": {"n": 2}, "idempotencyKey": "order-1"})))
        .await;
    assert_eq!((s, d["error"]["code"].as_str()), (StatusCode::CONFLICT, Some("CONFLICT")));
}

#[tokio::test]
async fn trigger_reads_a_numeric_workflow_id_and_puts_the_task_in_input() {
    let t = setup(1000).await;
    t.workflow(chain("42")).await;
    let (s, r) = t
        .call(
            Method::POST,
            "/api/v1/trigger",
            Some(json!({"workflow_id": 42, "input": {"n": 1}, "task": "sum it", "metadata": {"from": "ci"}})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{r}");
    assert_eq!(r["workflow_id"], "42");
    assert_eq!(r["input"]["task"], "sum it");
    assert_eq!(r["metadata"], json!({"from": "ci", "task": "sum it"}));
    let (s, b) = t.call(Method::POST, "/api/v1/trigger", Some(json!({"workflow_id": true}))).await;
    assert_eq!((s, b["error"]["code"].as_str()), (StatusCode::BAD_REQUEST, Some("VALIDATION_ERROR")));
    let (s, _) = t.call(Method::POST, "/api/v1/trigger", Some(json!({"input": {}}))).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "workflow_id is required");
}

#[tokio::test]
async fn execute_answers_with_the_response_block_or_202_at_the_deadline() {
    let t = setup(1000).await;
    t.workflow(chain("c")).await;
    let (s, h, r) =
        t.call_with(Method::POST, "/api/v1/workflows/c/execute", Some(json!({"input": {"n": 4}})), &[]).await;
    assert_eq!(s, StatusCode::CREATED, "the response block's status: {r}");
    assert_eq!(h.get("x-baton-test").unwrap(), "yes");
    assert_eq!(r["status"], "completed");
    assert_eq!(r["output"], json!({"n": 5}));
    t.workflow(approval("orders", "active")).await;
    let (s, r) =
        t.call(Method::POST, "/api/v1/workflows/orders/execute", Some(json!({"input": {"amount": 5000}}))).await;
    assert_eq!(s, StatusCode::ACCEPTED);
    assert_eq!(r["status"], "waiting_human", "{r}");
    let (s, _) = t
        .call(Method::POST, "/api/v1/workflows/orders/execute", Some(json!({"input": {"amount": 1}, "timeout_ms": 0})))
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn runs_list_pages_with_a_cursor_and_filters() {
    let t = setup(1000).await;
    t.workflow(chain("c")).await;
    t.workflow(approval("orders", "active")).await;
    for n in 0..5 {
        t.call(Method::POST, "/api/v1/workflows/c/run", Some(json!({"input": {"n": n}}))).await;
    }
    t.call(Method::POST, "/api/v1/workflows/orders/run", Some(json!({"input": {"amount": 5000}}))).await;
    t.drain().await;
    let (_, p1) = t.call(Method::GET, "/api/v1/runs?limit=4", None).await;
    assert_eq!(p1["data"].as_array().unwrap().len(), 4);
    assert_eq!(p1["data"][0]["workflow_id"], "orders", "newest first");
    let (_, p2) = t
        .call(Method::GET, &format!("/api/v1/runs?limit=4&cursor={}", p1["next_cursor"].as_str().unwrap()), None)
        .await;
    assert_eq!(p2["data"].as_array().unwrap().len(), 2);
    assert!(p2["next_cursor"].is_null());
    let (_, w) = t.call(Method::GET, "/api/v1/runs?status=waiting_human", None).await;
    assert_eq!(w["data"].as_array().unwrap().len(), 1);
    let (_, c) = t.call(Method::GET, "/api/v1/runs?workflow_id=c&status=completed", None).await;
    assert_eq!(c["data"].as_array().unwrap().len(), 5);
    let (s, b) = t.call(Method::GET, "/api/v1/runs?status=bogus", None).await;
    assert_eq!((s, b["error"]["code"].as_str()), (StatusCode::BAD_REQUEST, Some("VALIDATION_ERROR")));
}

#[tokio::test]
async fn cancel_and_redrive_follow_the_run_status() {
    let t = setup(1000).await;
    t.workflow(approval("orders", "active")).await;
    let (_, r) = t.call(Method::POST, "/api/v1/workflows/orders/run", Some(json!({"input": {"amount": 5000}}))).await;
    let id = r["run_id"].as_str().unwrap().to_string();
    t.drain().await;
    let (s, b) = t.call(Method::POST, &format!("/api/v1/runs/{id}/redrive"), None).await;
    assert_eq!((s, b["error"]["code"].as_str()), (StatusCode::BAD_REQUEST, Some("INVALID_STATUS")));
    let (s, r) = t.call(Method::DELETE, &format!("/api/v1/runs/{id}"), None).await;
    assert_eq!((s, r["status"].as_str()), (StatusCode::OK, Some("cancelled")));
    let (s, b) = t.call(Method::DELETE, &format!("/api/v1/runs/{id}"), None).await;
    assert_eq!((s, b["error"]["code"].as_str()), (StatusCode::BAD_REQUEST, Some("INVALID_STATUS")));

    t.workflow(json!({"id": "broken", "name": "b", "status": "active", "steps": [{"id": "s", "type": "starter"}, {"id": "ai", "type": "agent", "config": {"prompt": "no provider named"}}]})).await;
    let (_, r) = t.call(Method::POST, "/api/v1/workflows/broken/run", None).await;
    let id = r["run_id"].as_str().unwrap().to_string();
    t.drain().await;
    let (_, r) = t.call(Method::GET, &format!("/api/v1/runs/{id}"), None).await;
    assert_eq!(r["status"], "failed");
    assert_eq!(r["error"]["code"], "PROVIDER_REQUIRED");
    let (s, r) = t.call(Method::POST, &format!("/api/v1/runs/{id}/redrive"), None).await;
    assert_eq!((s, r["status"].as_str()), (StatusCode::OK, Some("running")));
}

#[tokio::test]
async fn another_accounts_run_is_404_everywhere() {
    let t = setup(1000).await;
    t.workflow(approval("orders", "active")).await;
    let (_, r) = t.call(Method::POST, "/api/v1/workflows/orders/run", Some(json!({"input": {"amount": 5000}}))).await;
    let id = r["run_id"].as_str().unwrap().to_string();
    let mut other = setup(1000).await;
    // Same app, second account.
    other.app = t.app.clone();
    other.state = t.state.clone();
    let (_, b) = other.call(Method::POST, "/api/v1/auth/register", Some(json!({"name": "other"}))).await;
    other.key = b["api_key"].as_str().unwrap().to_string();
    for (m, uri) in [
        (Method::GET, format!("/api/v1/runs/{id}")),
        (Method::GET, format!("/api/v1/runs/{id}/events")),
        (Method::GET, format!("/api/v1/runs/{id}/tasks")),
        (Method::DELETE, format!("/api/v1/runs/{id}")),
        (Method::POST, format!("/api/v1/runs/{id}/redrive")),
        (Method::POST, "/api/v1/workflows/orders/run".to_string()),
    ] {
        let (s, b) = other.call(m.clone(), &uri, None).await;
        assert_eq!((s, b["error"]["code"].as_str()), (StatusCode::NOT_FOUND, Some("NOT_FOUND")), "{m} {uri}");
    }
}

#[tokio::test]
async fn run_starts_are_rate_limited_with_retry_after() {
    let t = setup(2).await;
    t.workflow(chain("c")).await;
    for _ in 0..2 {
        let (s, h, _) =
            t.call_with(Method::POST, "/api/v1/workflows/c/run", Some(json!({"input": {"n": 1}})), &[]).await;
        assert_eq!(s, StatusCode::CREATED);
        assert!(h.contains_key("ratelimit-remaining"));
    }
    let (s, h, b) = t.call_with(Method::POST, "/api/v1/workflows/c/run", Some(json!({"input": {"n": 1}})), &[]).await;
    assert_eq!((s, b["error"]["code"].as_str()), (StatusCode::TOO_MANY_REQUESTS, Some("RATE_LIMITED")));
    assert!(h.contains_key("retry-after"));
}

#[tokio::test]
async fn oversized_run_input_is_413_and_planned_runs_without_a_provider_are_402() {
    let t = setup(1000).await;
    t.workflow(chain("c")).await;
    let big = "x".repeat(70 * 1024);
    let (s, b) = t.call(Method::POST, "/api/v1/workflows/c/run", Some(json!({"input": {"n": big}}))).await;
    assert_eq!((s, b["error"]["code"].as_str()), (StatusCode::PAYLOAD_TOO_LARGE, Some("PAYLOAD_TOO_LARGE")));
    let (s, b) = t.call(Method::POST, "/api/v1/runs", Some(json!({"task": "x"}))).await;
    assert_eq!((s, b["error"]["code"].as_str()), (StatusCode::PAYMENT_REQUIRED, Some("PAYMENT_REQUIRED")));
}

/// A store that commits, then takes its time to answer: the window in which a client that
/// goes away used to leave a committed run with no queue message.
struct CommitThenPause(Arc<dyn crate::store::Store>);

#[async_trait::async_trait]
impl crate::store::Store for CommitThenPause {
    async fn get(&self, key: &crate::store::Key) -> crate::Result<Option<crate::store::Item>> {
        self.0.get(key).await
    }
    async fn put(&self, item: crate::store::Item, cond: Option<crate::store::Cond>) -> crate::Result<()> {
        self.0.put(item, cond).await
    }
    async fn update(
        &self,
        key: &crate::store::Key,
        update: crate::store::Update,
        cond: Option<crate::store::Cond>,
    ) -> crate::Result<crate::store::Item> {
        self.0.update(key, update, cond).await
    }
    async fn delete(&self, key: &crate::store::Key, cond: Option<crate::store::Cond>) -> crate::Result<()> {
        self.0.delete(key, cond).await
    }
    async fn transact(&self, writes: Vec<crate::store::Write>) -> crate::Result<()> {
        let r = self.0.transact(writes).await;
        tokio::time::sleep(Duration::from_millis(30)).await;
        r
    }
    async fn query(&self, q: crate::store::Query) -> crate::Result<crate::store::Page> {
        self.0.query(q).await
    }
}

#[tokio::test]
async fn a_client_that_disconnects_mid_start_does_not_strand_the_run() {
    let dir = tempfile::tempdir().unwrap();
    let db = Sqlite::open(&dir.path().join("t.db")).unwrap();
    let store = Arc::new(CommitThenPause(Arc::new(SqliteStore::new(db.clone()))));
    let state = App::new(
        store,
        Arc::new(SqliteQueue::new(db, "steps", 5)),
        Arc::new(crate::secrets::SecretBox::ephemeral()),
        AppConfig::default(),
    );
    let mut t = T { app: router(state.clone()), state, key: String::new(), _dir: dir };
    let (_, b) = t.call(Method::POST, "/api/v1/auth/register", Some(json!({"name": "t"}))).await;
    t.key = b["api_key"].as_str().unwrap().to_string();
    t.workflow(chain("c")).await;
    let req = Request::builder()
        .method(Method::POST)
        .uri("/api/v1/workflows/c/run")
        .header("x-api-key", &t.key)
        .header("content-type", "application/json")
        .body(Body::from(json!({"input": {"n": 1}}).to_string()))
        .unwrap();
    // The client gives up while the run's transaction is committed but not yet answered.
    let gone = tokio::time::timeout(Duration::from_millis(10), t.app.clone().oneshot(req)).await;
    assert!(gone.is_err(), "the request should still have been in flight");
    tokio::time::sleep(Duration::from_millis(200)).await;
    t.drain().await;
    let (_, runs) = t.call(Method::GET, "/api/v1/runs", None).await;
    let runs = runs["data"].as_array().unwrap();
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0]["status"], "completed", "{runs:?}");
}

#[tokio::test]
async fn a_workflows_execute_key_starts_runs_and_nothing_else() {
    let mut t = setup(1000).await;
    t.workflow(chain("c")).await;
    let (s, k) = t
        .call(Method::POST, "/api/v1/api-keys", Some(json!({"name": "seed 003", "scopes": ["workflows:execute"]})))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{k}");
    assert_eq!(k["scopes"], json!(["workflows:execute"]));
    t.key = k["api_key"].as_str().unwrap().to_string();
    let (s, run) = t.call(Method::POST, "/api/v1/workflows/c/run", Some(json!({"input": {"n": 1}}))).await;
    assert_eq!(s, StatusCode::CREATED, "{run}");
    let (s, b) = t.call(Method::POST, "/api/v1/trigger", Some(json!({"workflow_id": "c", "input": {"n": 2}}))).await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    let (s, b) = t.call(Method::POST, "/api/v1/workflows/c/execute", Some(json!({"input": {"n": 3}}))).await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    for (m, uri) in
        [(Method::GET, "/api/v1/workflows"), (Method::GET, "/api/v1/runs"), (Method::GET, "/api/v1/api-keys")]
    {
        let (s, b) = t.call(m, uri, None).await;
        assert_eq!((s, b["error"]["code"].as_str()), (StatusCode::FORBIDDEN, Some("FORBIDDEN")), "{uri}");
    }
    let id = run["run_id"].as_str().unwrap();
    let (s, _) = t.call(Method::DELETE, &format!("/api/v1/runs/{id}"), None).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn every_list_takes_limit_1_to_100_and_honours_its_cursor() {
    let t = setup(1000).await;
    let two_questions = json!({"id": "q", "name": "q", "status": "active", "blocks": [
        {"id": "start", "type": "starter"},
        {"id": "a", "type": "human", "config": {"kind": "question", "prompt": "A?"}},
        {"id": "b", "type": "human", "config": {"kind": "question", "prompt": "B?"}}],
        "edges": [{"from": "start", "to": "a"}, {"from": "start", "to": "b"}]});
    t.workflow(two_questions).await;
    let (_, run) = t.call(Method::POST, "/api/v1/workflows/q/run", Some(json!({"input": {}}))).await;
    t.call(Method::POST, "/api/v1/workflows/q/run", Some(json!({"input": {}}))).await;
    t.drain().await;
    let id = run["run_id"].as_str().unwrap();
    let lists = ["/api/v1/runs".to_string(), format!("/api/v1/runs/{id}/events"), format!("/api/v1/runs/{id}/tasks")];
    for list in &lists {
        for bad in ["0", "101", "-1", "x"] {
            let (s, b) = t.call(Method::GET, &format!("{list}?limit={bad}"), None).await;
            assert_eq!(
                (s, b["error"]["code"].as_str()),
                (StatusCode::BAD_REQUEST, Some("VALIDATION_ERROR")),
                "{list} {bad}"
            );
            assert_eq!(b["error"]["details"][0]["path"], json!(["limit"]), "{list} {bad}");
        }
        // One at a time, following the cursor, reads every item once.
        let (_, all) = t.call(Method::GET, &format!("{list}?limit=100"), None).await;
        let want = all["data"].as_array().unwrap().len();
        assert!(want >= 2, "{list}: {all}");
        let (mut seen, mut cursor) = (Vec::new(), None::<String>);
        loop {
            let uri = match &cursor {
                Some(c) => format!("{list}?limit=1&cursor={c}"),
                None => format!("{list}?limit=1"),
            };
            let (s, page) = t.call(Method::GET, &uri, None).await;
            assert_eq!(s, StatusCode::OK, "{uri}: {page}");
            assert!(page["data"].as_array().unwrap().len() <= 1, "{uri}: {page}");
            seen.extend(page["data"].as_array().unwrap().iter().cloned());
            match page["next_cursor"].as_str() {
                Some(c) => cursor = Some(c.to_string()),
                None => break,
            }
        }
        assert_eq!(seen, all["data"].as_array().unwrap().clone(), "{list}");
    }
}

#[tokio::test]
async fn open_tasks_lists_every_waiting_persons_task_across_runs_of_the_account_only() {
    let t = setup(1000).await;
    t.workflow(approval("orders", "active")).await;
    let mut runs = Vec::new();
    for amount in [5000, 7000, 10] {
        let (_, r) =
            t.call(Method::POST, "/api/v1/workflows/orders/run", Some(json!({"input": {"amount": amount}}))).await;
        runs.push(r["run_id"].as_str().unwrap().to_string());
    }
    t.drain().await;
    let (s, page) = t.call(Method::GET, "/api/v1/tasks?status=open", None).await;
    assert_eq!(s, StatusCode::OK, "{page}");
    let tasks = page["data"].as_array().unwrap();
    // The run of 10 skips the review: only the two waiting runs have a task.
    let mut got: Vec<&str> = tasks.iter().map(|t| t["run_id"].as_str().unwrap()).collect();
    got.sort();
    let mut want = vec![runs[0].as_str(), runs[1].as_str()];
    want.sort();
    assert_eq!(got, want, "{page}");
    for task in tasks {
        assert_eq!(task["status"], "open");
        assert_eq!(task["kind"], "approval");
        assert_eq!(task["workflow_id"], "orders");
        assert!(task["task_id"].as_str().unwrap().starts_with("task_"), "{task}");
    }
    let prompts: Vec<&str> = tasks.iter().map(|t| t["prompt"].as_str().unwrap()).collect();
    assert!(prompts.contains(&"Approve 5000?") && prompts.contains(&"Approve 7000?"), "{prompts:?}");

    // One page per waiting run with limit=1, following the cursor, reads each task once.
    let (_, first) = t.call(Method::GET, "/api/v1/tasks?limit=1", None).await;
    assert_eq!(first["data"].as_array().unwrap().len(), 1, "{first}");
    let cursor = first["next_cursor"].as_str().expect("a second page").to_string();
    let (_, second) = t.call(Method::GET, &format!("/api/v1/tasks?limit=1&cursor={cursor}"), None).await;
    assert_eq!(second["data"].as_array().unwrap().len(), 1, "{second}");
    assert_ne!(first["data"][0]["task_id"], second["data"][0]["task_id"]);

    // An answered task leaves the inbox.
    let done = &tasks[0];
    let uri = format!(
        "/api/v1/runs/{}/tasks/{}/complete",
        done["run_id"].as_str().unwrap(),
        done["task_id"].as_str().unwrap()
    );
    let (s, b) = t.call(Method::POST, &uri, Some(json!({"approved": true}))).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    t.drain().await;
    let (_, after) = t.call(Method::GET, "/api/v1/tasks", None).await;
    assert_eq!(after["data"].as_array().unwrap().len(), 1, "{after}");
    assert_ne!(after["data"][0]["task_id"], done["task_id"]);

    // Another account sees none of them.
    let mut other = setup(1000).await;
    other.app = t.app.clone();
    other.state = t.state.clone();
    let (_, b) = other.call(Method::POST, "/api/v1/auth/register", Some(json!({"name": "other"}))).await;
    other.key = b["api_key"].as_str().unwrap().to_string();
    let (s, mine) = other.call(Method::GET, "/api/v1/tasks?status=open", None).await;
    assert_eq!((s, mine["data"].as_array().map(Vec::len)), (StatusCode::OK, Some(0)), "{mine}");
}

#[tokio::test]
async fn open_tasks_refuses_other_statuses_unknown_parameters_and_missing_keys() {
    let mut t = setup(1000).await;
    for uri in ["/api/v1/tasks?status=completed", "/api/v1/tasks?state=open", "/api/v1/tasks?limit=0"] {
        let (s, b) = t.call(Method::GET, uri, None).await;
        assert_eq!((s, b["error"]["code"].as_str()), (StatusCode::BAD_REQUEST, Some("VALIDATION_ERROR")), "{uri}: {b}");
    }
    t.key.clear();
    let (s, _) = t.call(Method::GET, "/api/v1/tasks", None).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
}

#[test]
fn timeout_ms_takes_a_whole_number_written_with_a_fraction_and_refuses_a_fractional_one() {
    let b: super::StartBody = serde_json::from_value(json!({"timeout_ms": 560.0})).unwrap();
    assert_eq!(b.timeout_ms, Some(560));
    let b: super::StartBody = serde_json::from_value(json!({"timeout_ms": 7})).unwrap();
    assert_eq!(b.timeout_ms, Some(7));
    let b: super::StartBody = serde_json::from_value(json!({"timeout_ms": null})).unwrap();
    assert_eq!(b.timeout_ms, None);
    for bad in [json!(1.5), json!(-1), json!("5")] {
        assert!(serde_json::from_value::<super::StartBody>(json!({"timeout_ms": bad})).is_err(), "{bad}");
    }
}

#[test]
fn an_idempotency_key_is_one_to_two_hundred_characters_in_the_header_or_the_body() {
    let mut h = http::HeaderMap::new();
    assert_eq!(super::idempotency_key(&h, Some("é".repeat(200))).unwrap().map(|k| k.chars().count()), Some(200));
    assert!(super::idempotency_key(&h, Some("k".repeat(201))).is_err());
    assert!(super::idempotency_key(&h, Some(String::new())).is_err());
    assert_eq!(super::idempotency_key(&h, None).unwrap(), None);
    h.insert("idempotency-key", "k".repeat(201).parse().unwrap());
    assert!(super::idempotency_key(&h, None).is_err());
    h.insert("idempotency-key", "key-1".parse().unwrap());
    assert_eq!(super::idempotency_key(&h, None).unwrap().as_deref(), Some("key-1"));
}

//! `POST /api/v1/callback` resuming async `general_api` steps, end to end over the router on
//! the real SQLite adapters, with a loopback receiver as the called API.

use crate::adapters::{Sqlite, SqliteQueue, SqliteStore};
use crate::api::router;
use crate::app::{App, AppConfig, AppState};
use axum::Router;
use axum::body::Body;
use axum::http::HeaderMap;
use http::{Method, Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use std::sync::{Arc, Mutex};
use tower::ServiceExt;

struct T {
    app: Router,
    state: AppState,
    key: String,
    /// The headers of each request the called API got.
    seen: Arc<Mutex<Vec<HeaderMap>>>,
    api_url: String,
    _dir: tempfile::TempDir,
}

async fn setup() -> T {
    let seen: Arc<Mutex<Vec<HeaderMap>>> = Arc::default();
    let log = seen.clone();
    let api = axum::Router::new().fallback(move |h: HeaderMap| {
        let log = log.clone();
        async move {
            log.lock().unwrap().push(h);
            (StatusCode::ACCEPTED, axum::Json(json!({"queued": true})))
        }
    });
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let api_url = format!("http://127.0.0.1:{}/jobs", l.local_addr().unwrap().port());
    tokio::spawn(async move { axum::serve(l, api).await.unwrap() });

    let dir = tempfile::tempdir().unwrap();
    let db = Sqlite::open(&dir.path().join("t.db")).unwrap();
    let cfg =
        AppConfig { allow_private_targets: true, public_url: "https://baton.test".into(), ..AppConfig::default() };
    let state = App::new(
        Arc::new(SqliteStore::new(db.clone())),
        Arc::new(SqliteQueue::new(db, "steps", 5)),
        Arc::new(crate::secrets::SecretBox::ephemeral()),
        cfg,
    );
    let mut t = T { app: router(state.clone()), state, key: String::new(), seen, api_url, _dir: dir };
    let (_, b) = t.call(Method::POST, "/api/v1/auth/register", Some(json!({"name": "t"})), &[]).await;
    t.key = b["api_key"].as_str().unwrap().to_string();
    t
}

impl T {
    async fn call(&self, m: Method, uri: &str, body: Option<Value>, headers: &[(&str, &str)]) -> (StatusCode, Value) {
        let mut req = Request::builder().method(m).uri(uri);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let req = match body {
            Some(b) => req.header("content-type", "application/json").body(Body::from(b.to_string())).unwrap(),
            None => req.body(Body::empty()).unwrap(),
        };
        let res = self.app.clone().oneshot(req).await.unwrap();
        let status = res.status();
        let bytes = res.into_body().collect().await.unwrap().to_bytes();
        (status, if bytes.is_empty() { Value::Null } else { serde_json::from_slice(&bytes).unwrap() })
    }

    async fn with_key(&self, m: Method, uri: &str, body: Option<Value>) -> (StatusCode, Value) {
        let key = self.key.clone();
        self.call(m, uri, body, &[("x-api-key", &key)]).await
    }

    async fn drain(&self) {
        crate::testing::drain(&self.state).await
    }

    /// Saves a workflow whose `job` step calls the receiver asynchronously, starts a run,
    /// plays it to the wait; the run id and the token the receiver was given.
    async fn waiting_run(&self, wf: &str, extra: Value) -> (String, String) {
        let mut job = json!({"method": "POST", "url": self.api_url, "async": true,
            "body": {"notify": "{{callback.url}}", "order": "{{input.order}}"}});
        job.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        let def = json!({"id": wf, "name": wf, "status": "active", "steps": [
            {"id": "start", "type": "starter"},
            {"id": "job", "type": "api_call", "config": job},
            {"id": "after", "type": "transform", "config": {"mapping": {"got": "{{steps.job.output.result}}"}}}]});
        let (s, b) = self.with_key(Method::POST, "/api/v1/workflows", Some(def)).await;
        assert_eq!(s, StatusCode::CREATED, "{b}");
        let (s, b) = self
            .with_key(Method::POST, &format!("/api/v1/workflows/{wf}/run"), Some(json!({"input": {"order": 7}})))
            .await;
        assert_eq!(s, StatusCode::CREATED, "{b}");
        let run_id = b["run_id"].as_str().unwrap().to_string();
        self.drain().await;
        let token = self.seen.lock().unwrap().last().unwrap()["baton-callback-token"].to_str().unwrap().to_string();
        (run_id, token)
    }

    async fn run(&self, id: &str) -> Value {
        self.with_key(Method::GET, &format!("/api/v1/runs/{id}"), None).await.1
    }
}

#[tokio::test]
async fn a_callback_with_the_token_resumes_the_step_once_and_the_run_completes() {
    let t = setup().await;
    let (run_id, token) = t.waiting_run("async-ok", json!({})).await;
    let r = t.run(&run_id).await;
    assert_eq!(r["status"], "running", "{r:#}");
    let url = t.seen.lock().unwrap()[0]["baton-callback-url"].to_str().unwrap().to_string();
    assert_eq!(url, format!("https://baton.test/api/v1/callback?token={token}"));

    let (s, b) = t.call(Method::POST, "/api/v1/callback", Some(json!({"output": {"result": 1}})), &[]).await;
    assert_eq!((s, b["error"]["code"].as_str()), (StatusCode::UNAUTHORIZED, Some("UNAUTHORIZED")), "{b}");
    let (s, b) = t.call(Method::POST, "/api/v1/callback?token=wt_nobody", Some(json!({"output": 1})), &[]).await;
    assert_eq!((s, b["error"]["code"].as_str()), (StatusCode::NOT_FOUND, Some("NOT_FOUND")), "{b}");

    let bearer = format!("Bearer {token}");
    let answer = Some(json!({"output": {"result": 42}}));
    let (s, b) = t.call(Method::POST, "/api/v1/callback", answer.clone(), &[("authorization", &bearer)]).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b, json!({"run_id": run_id, "step_key": "job"}));
    let (s, b) = t.call(Method::POST, &format!("/api/v1/callback?token={token}"), answer, &[]).await;
    assert_eq!((s, b["error"]["code"].as_str()), (StatusCode::CONFLICT, Some("CONFLICT")), "{b}");

    t.drain().await;
    let r = t.run(&run_id).await;
    assert_eq!(r["status"], "completed", "{r:#}");
    assert_eq!(r["output"], json!({"got": 42}));
}

#[tokio::test]
async fn a_token_in_the_body_and_an_error_answer_fail_the_step() {
    let t = setup().await;
    let (run_id, token) = t.waiting_run("async-err", json!({})).await;
    let body = json!({"token": token, "error": {"message": "card declined"}});
    let (s, b) = t.call(Method::POST, "/api/v1/callback", Some(body), &[]).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    t.drain().await;
    let r = t.run(&run_id).await;
    assert_eq!((r["status"].as_str(), r["error"]["code"].as_str()), (Some("failed"), Some("CALLBACK_ERROR")), "{r:#}");
    assert!(r["error"]["message"].as_str().unwrap().contains("card declined"));
}

#[tokio::test]
async fn any_other_json_is_the_output_and_the_body_token_is_not_part_of_it() {
    let t = setup().await;
    let (run_id, token) = t.waiting_run("async-any", json!({})).await;
    let (s, b) = t.call(Method::POST, "/api/v1/callback", Some(json!({"token": token, "result": "done"})), &[]).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    t.drain().await;
    let r = t.run(&run_id).await;
    let job = r["steps"].as_array().unwrap().iter().find(|s| s["step_key"] == "job").unwrap().clone();
    assert_eq!(job["output"], json!({"result": "done"}), "{r:#}");
    assert_eq!(r["output"], json!({"got": "done"}));
}

#[tokio::test]
async fn a_callback_that_never_comes_takes_the_default_at_the_timeout() {
    let t = setup().await;
    let (run_id, _token) =
        t.waiting_run("async-late", json!({"callback_timeout": 0, "default": {"result": "none"}})).await;
    t.drain().await;
    let r = t.run(&run_id).await;
    assert_eq!(r["status"], "completed", "{r:#}");
    assert_eq!(r["output"], json!({"got": "none"}));
}

#[tokio::test]
async fn a_body_that_is_not_json_is_400_and_a_cancelled_runs_token_409() {
    let t = setup().await;
    let (run_id, token) = t.waiting_run("async-cancel", json!({})).await;
    let req = Request::post(format!("/api/v1/callback?token={token}"))
        .header("content-type", "text/plain")
        .body(Body::from("done"))
        .unwrap();
    let res = t.app.clone().oneshot(req).await.unwrap();
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    let (s, _) = t.with_key(Method::DELETE, &format!("/api/v1/runs/{run_id}"), None).await;
    assert!(s.is_success(), "{s}");
    let (s, b) =
        t.call(Method::POST, &format!("/api/v1/callback?token={token}"), Some(json!({"output": 1})), &[]).await;
    assert_eq!((s, b["error"]["code"].as_str()), (StatusCode::CONFLICT, Some("CONFLICT")), "{b}");
}

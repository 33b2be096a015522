//! Callbacks: the signer against an independent verifier (the `standardwebhooks` Python
//! package), the retry schedule, and the engine's deliveries on the real SQLite adapters
//! with a real HTTP receiver on loopback.

use super::*;
use crate::adapters::{Sqlite, SqliteQueue, SqliteStore};
use crate::app::{App, AppConfig, AppState};
use crate::blocks::{BlockContext, Executor, Outcome as BlockOutcome, StepError};
use crate::engine::{Msg, StartRequest};
use crate::keys;
use crate::model::{Block, build_graph};
use crate::queue::Outcome;
use crate::store::query_all;
use crate::store::{Attrs, Query, Update};
use axum::extract::State;
use axum::response::IntoResponse;
use http::{HeaderMap, StatusCode};
use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Instant;

// ---------------------------------------------------------------- signer

/// The workspace's Python with `standardwebhooks` (infra/requirements.txt), else `python3`.
fn python() -> PathBuf {
    let venv = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/python");
    if venv.exists() { venv } else { PathBuf::from("python3") }
}

/// Verifies each case with `standardwebhooks.Webhook(secret).verify(body, headers)`;
/// true where it accepted the signature.
fn python_verifies(cases: &[Value]) -> Vec<bool> {
    const SCRIPT: &str = r#"
import json, sys
from standardwebhooks import Webhook
out = []
for c in json.load(sys.stdin):
    try:
        Webhook(c["secret"]).verify(c["body"], {
            "webhook-id": c["id"], "webhook-timestamp": str(c["ts"]), "webhook-signature": c["sig"]})
        out.append(True)
    except Exception:
        out.append(False)
print(json.dumps(out))
"#;
    use std::io::Write as _;
    let mut child = std::process::Command::new(python())
        .args(["-c", SCRIPT])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("python with standardwebhooks (bash infra/venv.sh)");
    child.stdin.take().unwrap().write_all(serde_json::to_vec(cases).unwrap().as_slice()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "verifier failed: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn signatures_verify_with_the_standardwebhooks_library() {
    let secret = new_signing_secret();
    let other = new_signing_secret();
    let id = "dlv_01hzzzzzzzzzzzzzzzzzzzzzzz";
    let ts = ids::now_ms() / 1000;
    let body = r#"{"type":"run.completed","data":{"run_id":"run_1","output":{"ü":"✓"}}}"#;
    let sig = sign(&secret, id, ts, body.as_bytes()).unwrap();
    assert!(sig.starts_with("v1,"));
    let both = signature_header(&[&other, &secret], id, ts, body.as_bytes()).unwrap();
    let case = |secret: &str, body: &str, sig: &str, id: &str, ts: i64| json!({"secret": secret, "body": body, "sig": sig, "id": id, "ts": ts});
    let verdicts = python_verifies(&[
        case(&secret, body, &sig, id, ts),
        case(&secret, &body.replace("run_1", "run_2"), &sig, id, ts),
        case(&other, body, &sig, id, ts),
        case(&secret, body, &sig, "dlv_other", ts),
        case(&secret, body, &sig, id, ts + 1),
        // During a rotation both signatures are sent; either secret verifies.
        case(&secret, body, &both, id, ts),
        case(&other, body, &both, id, ts),
    ]);
    assert_eq!(verdicts, [true, false, false, false, false, true, true]);
}

#[test]
fn secrets_are_whsec_and_base64_of_32_bytes() {
    let s = new_signing_secret();
    assert!(s.starts_with("whsec_"));
    assert_eq!(signing_key(&s).unwrap().len(), 32);
    assert_ne!(s, new_signing_secret());
    // A known vector: key bytes 0..32, message "id.1.{}".
    let key: Vec<u8> = (0u8..32).collect();
    let secret = format!("whsec_{}", B64.encode(&key));
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).unwrap();
    mac.update(b"id.1.{}");
    let expected = format!("v1,{}", B64.encode(mac.finalize().into_bytes()));
    assert_eq!(sign(&secret, "id", 1, b"{}").unwrap(), expected);
}

#[test]
fn backoff_grows_threefold_with_jitter_and_is_capped() {
    let base = Duration::from_secs(10);
    for (attempt, nominal) in [(1u32, 10_000u64), (2, 30_000), (3, 90_000), (4, 270_000)] {
        for _ in 0..20 {
            let d = backoff(base, attempt).as_millis() as u64;
            assert!(d >= nominal * 8 / 10 && d <= nominal * 12 / 10, "attempt {attempt}: {d}");
        }
    }
    let cap = 10_000u64 * 1440;
    for attempt in [9, 12, 40, u32::MAX] {
        let d = backoff(base, attempt).as_millis() as u64;
        assert!(d <= cap * 12 / 10 && d >= cap * 8 / 10, "attempt {attempt}: {d}");
    }
}

// ---------------------------------------------------------------- engine + receiver

const ACCT: &str = "acct_cb";

/// An HTTP receiver on loopback: answers with the scripted statuses in order, then 200,
/// and records what it received.
#[derive(Default)]
struct Receiver {
    script: Mutex<VecDeque<u16>>,
    got: Mutex<Vec<(HeaderMap, Vec<u8>)>>,
}

struct Listening {
    url: String,
    rx: Arc<Receiver>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Listening {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Listening {
    fn received(&self) -> Vec<(HeaderMap, Value)> {
        let got = self.rx.got.lock().unwrap();
        got.iter().map(|(h, b)| (h.clone(), serde_json::from_slice(b).unwrap_or(Value::Null))).collect()
    }
    fn events(&self) -> Vec<String> {
        self.received().iter().map(|(_, b)| b["type"].as_str().unwrap_or_default().to_string()).collect()
    }
}

async fn receive(State(rx): State<Arc<Receiver>>, headers: HeaderMap, body: axum::body::Bytes) -> impl IntoResponse {
    rx.got.lock().unwrap().push((headers, body.to_vec()));
    let code = rx.script.lock().unwrap().pop_front().unwrap_or(200);
    (StatusCode::from_u16(code).unwrap(), "thanks")
}

async fn listen(script: &[u16]) -> Listening {
    let rx = Arc::new(Receiver { script: Mutex::new(script.iter().copied().collect()), ..Default::default() });
    let app = axum::Router::new().route("/hook", axum::routing::post(receive)).with_state(rx.clone());
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", l.local_addr().unwrap());
    let task = tokio::spawn(async move {
        let _ = axum::serve(l, app).await;
    });
    Listening { url, rx, task }
}

struct Env {
    app: AppState,
    secret: String,
    _dir: tempfile::TempDir,
}

async fn env_with(cfg: AppConfig) -> Env {
    let dir = tempfile::tempdir().unwrap();
    let db = Sqlite::open(&dir.path().join("t.db")).unwrap();
    let app = App::new(
        Arc::new(SqliteStore::new(db.clone())),
        Arc::new(SqliteQueue::new(db, "steps", 20)),
        Arc::new(crate::secrets::SecretBox::ephemeral()),
        cfg,
    );
    let secret = new_signing_secret();
    let mut a = Attrs::new();
    a.insert("id".into(), json!(ACCT));
    a.insert("callback_signing_secret".into(), json!(secret));
    app.store.put(Item::new(keys::account(ACCT), a), None).await.unwrap();
    Env { app, secret, _dir: dir }
}

fn test_cfg() -> AppConfig {
    AppConfig {
        lease: Duration::from_secs(2),
        allow_private_targets: true,
        callback_backoff: Duration::from_millis(50),
        callback_timeout: Duration::from_secs(2),
        ..AppConfig::default()
    }
}

async fn env() -> Env {
    env_with(test_cfg()).await
}

async fn install(app: &AppState, wf: &str, def: Value, callback_url: Option<&str>) {
    let g = build_graph(def.get("blocks"), def.get("edges"), def.get("steps")).unwrap();
    let mut head = Attrs::new();
    head.insert("id".into(), json!(wf));
    head.insert("status".into(), json!("active"));
    head.insert("version".into(), json!(1));
    if let Some(u) = callback_url {
        head.insert("callback_url".into(), json!(u));
    }
    app.store.put(Item::new(keys::workflow(ACCT, wf), head), None).await.unwrap();
    let mut v = Attrs::new();
    v.insert("version".into(), json!(1));
    v.insert("graph".into(), serde_json::to_value(&g).unwrap());
    v.insert("variables".into(), json!({}));
    app.store.put(Item::new(keys::version(ACCT, wf, 1), v), None).await.unwrap();
}

async fn start(app: &AppState, wf: &str, callback_url: Option<&str>) -> String {
    let req = StartRequest {
        input: json!({"n": 1}),
        callback_url: callback_url.map(str::to_string),
        source: "test".into(),
        ..Default::default()
    };
    let s = app.engine.start_run(ACCT, wf, req).await.unwrap();
    s.run["run_id"].as_str().unwrap().to_string()
}

/// Plays the queue until `done` holds or `limit` passes; false on timeout.
async fn pump_until<F, Fut>(app: &AppState, limit: Duration, mut done: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let t0 = Instant::now();
    while t0.elapsed() < limit {
        if done().await {
            return true;
        }
        let msgs = app.queue.receive(10, Duration::from_secs(3), Duration::from_millis(20)).await.unwrap();
        for m in msgs {
            match app.engine.process(&m.body).await {
                Outcome::Ack => app.queue.delete(&m.receipt).await.unwrap(),
                Outcome::RetryAfter(d) => {
                    app.queue.change_visibility(&m.receipt, d.min(Duration::from_millis(200))).await.unwrap()
                }
            }
        }
    }
    done().await
}

async fn deliveries(app: &AppState, run_id: &str) -> Vec<Item> {
    query_all(&*app.store, Query::prefix(keys::run_pk(run_id), keys::CALLBACK_PREFIX)).await.unwrap()
}

async fn all_settled(app: &AppState, run_id: &str, want: usize) -> bool {
    let d = deliveries(app, run_id).await;
    d.len() >= want && d.iter().all(|i| i.str("status") != Some("pending"))
}

fn chain() -> Value {
    json!({"steps": [
        {"id": "start", "type": "starter"},
        {"id": "a", "type": "transform", "config": {"mapping": {"n": "{{input.n | plus: 1}}"}}},
        {"id": "done", "type": "response", "config": {"body": {"n": "{{steps.a.output.n}}"}}}]})
}

/// Checks a received callback the way a receiver would (with our signer; the signer itself
/// is checked against the independent library above).
fn assert_signed(secret: &str, headers: &HeaderMap, body: &Value) {
    let h = |n: &str| headers.get(n).and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
    let ts: i64 = h("webhook-timestamp").parse().unwrap();
    assert!((ids::now_ms() / 1000 - ts).abs() < 60);
    let raw = serde_json::to_vec(body).unwrap();
    assert_eq!(h("webhook-signature"), sign(secret, &h("webhook-id"), ts, &raw).unwrap());
    assert_eq!(h("content-type"), "application/json");
    assert!(h("user-agent").starts_with("Baton-Callbacks/"));
    assert!(h("webhook-id").starts_with("dlv_"));
}

#[tokio::test]
async fn completed_run_is_delivered_once_signed_with_its_summary() {
    let e = env().await;
    let rx = listen(&[]).await;
    install(&e.app, "wf", chain(), Some(&rx.url)).await;
    let id = start(&e.app, "wf", None).await;
    assert!(pump_until(&e.app, Duration::from_secs(10), || all_settled(&e.app, &id, 1)).await);
    let got = rx.received();
    assert_eq!(rx.events(), ["run.completed"]);
    let (headers, body) = &got[0];
    assert_signed(&e.secret, headers, body);
    assert_eq!(body["data"]["run_id"], json!(id));
    assert_eq!(body["data"]["workflow_id"], "wf");
    assert_eq!(body["data"]["workflow_version"], 1);
    assert_eq!(body["data"]["status"], "completed");
    assert_eq!(body["data"]["output"], json!({"n": 2}));
    assert!(body["data"]["finished_at"].is_string());

    // Redelivered step and callback messages change nothing: one delivery, one POST.
    let again = [Msg::step(&id, "done"), Msg::step(&id, "a")];
    for m in again {
        e.app.engine.process(&m.encode()).await;
    }
    let d = deliveries(&e.app, &id).await;
    assert_eq!(d.len(), 1);
    let dlv = d[0].str("delivery_id").unwrap().to_string();
    assert_eq!(headers.get("webhook-id").unwrap(), dlv.as_str());
    for n in [0, 1] {
        let m = Msg::Callback { r: id.clone(), d: dlv.clone(), n };
        assert_eq!(e.app.engine.process(&m.encode()).await, Outcome::Ack);
    }
    pump_until(&e.app, Duration::from_millis(500), || async { false }).await;
    assert_eq!(rx.received().len(), 1);
    let log = e.app.engine.list_callbacks(ACCT, &id, 20, None).await.unwrap();
    assert_eq!(log["data"][0]["status"], "delivered");
    assert_eq!(log["data"][0]["attempts"][0]["response_status"], 200);
    assert_eq!(log["data"][0]["attempts"][0]["response_body"], "thanks");
}

#[tokio::test]
async fn the_runs_callback_url_wins_over_the_workflows() {
    let e = env().await;
    let wf_rx = listen(&[]).await;
    let run_rx = listen(&[]).await;
    install(&e.app, "wf", chain(), Some(&wf_rx.url)).await;
    let id = start(&e.app, "wf", Some(&run_rx.url)).await;
    assert!(pump_until(&e.app, Duration::from_secs(10), || all_settled(&e.app, &id, 1)).await);
    assert_eq!(run_rx.events(), ["run.completed"]);
    assert!(wf_rx.received().is_empty());
    // Without any callback URL nothing is written.
    install(&e.app, "quiet", chain(), None).await;
    let quiet = start(&e.app, "quiet", None).await;
    let finished = || async { e.app.engine.get_run(ACCT, &quiet).await.unwrap()["status"] == "completed" };
    assert!(pump_until(&e.app, Duration::from_secs(10), finished).await);
    assert!(deliveries(&e.app, &quiet).await.is_empty());
}

struct Boom;

#[async_trait]
impl Executor for Boom {
    async fn execute(&self, _block: &Block, _cx: &BlockContext<'_>) -> BlockOutcome {
        BlockOutcome::Fail(StepError::fatal("BOOM", "it broke"))
    }
}

#[tokio::test]
async fn failed_run_sends_run_failed_once_with_the_error() {
    let e = env().await;
    e.app.engine.register_executor("code", Arc::new(Boom));
    let rx = listen(&[]).await;
    let def =
        json!({"steps": [{"id": "start", "type": "starter"}, {"id": "x", "type": "code", "config": {"code": "1"}}]});
    install(&e.app, "wf", def, Some(&rx.url)).await;
    let id = start(&e.app, "wf", None).await;
    assert!(pump_until(&e.app, Duration::from_secs(10), || all_settled(&e.app, &id, 1)).await);
    e.app.engine.process(&Msg::step(&id, "x").encode()).await;
    assert_eq!(deliveries(&e.app, &id).await.len(), 1);
    assert_eq!(rx.events(), ["run.failed"]);
    let body = &rx.received()[0].1;
    assert_eq!(body["data"]["status"], "failed");
    assert_eq!(body["data"]["error"]["code"], "BOOM");
    assert_eq!(body["data"]["error"]["step_key"], "x");
}

fn approval() -> Value {
    json!({"steps": [
        {"id": "start", "type": "starter"},
        {"id": "review", "type": "human", "config": {"kind": "approval", "prompt": "OK?"}},
        {"id": "done", "type": "transform", "config": {"mapping": {"ok": true}}}]})
}

#[tokio::test]
async fn waiting_human_then_completed_each_once() {
    let e = env().await;
    let rx = listen(&[]).await;
    install(&e.app, "wf", approval(), Some(&rx.url)).await;
    let id = start(&e.app, "wf", None).await;
    assert!(pump_until(&e.app, Duration::from_secs(10), || all_settled(&e.app, &id, 1)).await);
    assert_eq!(rx.events(), ["run.waiting_human"]);
    let body = rx.received()[0].1.clone();
    assert_eq!(body["data"]["status"], "waiting_human");
    let task_id = body["data"]["task"]["task_id"].as_str().unwrap().to_string();
    assert_eq!(body["data"]["task_ids"], json!([task_id]));
    assert_eq!(body["data"]["task"]["kind"], "approval");
    // The waiting step's message comes again: no second event.
    e.app.engine.process(&Msg::step(&id, "review").encode()).await;
    e.app.engine.complete_task(ACCT, &id, &task_id, json!({"approved": true})).await.unwrap();
    assert!(pump_until(&e.app, Duration::from_secs(10), || all_settled(&e.app, &id, 2)).await);
    assert_eq!(rx.events(), ["run.waiting_human", "run.completed"]);
    assert_eq!(deliveries(&e.app, &id).await.len(), 2);
}

#[tokio::test]
async fn cancelling_a_waiting_run_sends_run_cancelled() {
    let e = env().await;
    let rx = listen(&[]).await;
    install(&e.app, "wf", approval(), Some(&rx.url)).await;
    let id = start(&e.app, "wf", None).await;
    assert!(pump_until(&e.app, Duration::from_secs(10), || all_settled(&e.app, &id, 1)).await);
    e.app.engine.cancel_run(ACCT, &id).await.unwrap();
    assert!(e.app.engine.cancel_run(ACCT, &id).await.is_err(), "a second cancel is refused");
    assert!(pump_until(&e.app, Duration::from_secs(10), || all_settled(&e.app, &id, 2)).await);
    assert_eq!(rx.events(), ["run.waiting_human", "run.cancelled"]);
    assert_eq!(rx.received()[1].1["data"]["status"], "cancelled");
}

#[tokio::test]
async fn failed_attempts_are_retried_with_the_same_id_until_delivered() {
    let e = env().await;
    let rx = listen(&[500, 503]).await;
    install(&e.app, "wf", chain(), Some(&rx.url)).await;
    let id = start(&e.app, "wf", None).await;
    assert!(pump_until(&e.app, Duration::from_secs(15), || all_settled(&e.app, &id, 1)).await);
    let got = rx.received();
    assert_eq!(got.len(), 3);
    let ids: Vec<_> = got.iter().map(|(h, _)| h.get("webhook-id").unwrap().clone()).collect();
    assert!(ids.iter().all(|i| *i == ids[0]), "one webhook-id across retries");
    for (h, b) in &got {
        assert_signed(&e.secret, h, b);
    }
    let log = e.app.engine.list_callbacks(ACCT, &id, 20, None).await.unwrap();
    let d = &log["data"][0];
    assert_eq!(d["status"], "delivered");
    assert_eq!(d["attempt_count"], 3);
    let codes: Vec<_> = d["attempts"].as_array().unwrap().iter().map(|a| a["response_status"].clone()).collect();
    assert_eq!(codes, [json!(500), json!(503), json!(200)]);
    assert!(d["delivered_at"].is_string());
    assert!(d["next_attempt_at"].is_null());
}

#[tokio::test]
async fn delivery_fails_after_the_retry_window_and_can_be_redelivered() {
    let e = env_with(AppConfig { callback_window: Duration::from_millis(400), ..test_cfg() }).await;
    let rx = listen(&[500; 100]).await;
    install(&e.app, "wf", chain(), Some(&rx.url)).await;
    let id = start(&e.app, "wf", None).await;
    assert!(pump_until(&e.app, Duration::from_secs(15), || all_settled(&e.app, &id, 1)).await);
    let d = &e.app.engine.list_callbacks(ACCT, &id, 20, None).await.unwrap()["data"][0];
    assert_eq!(d["status"], "failed");
    let tries = d["attempt_count"].as_i64().unwrap();
    assert!(tries >= 2, "{d:#}");
    assert_eq!(rx.received().len() as i64, tries);

    rx.rx.script.lock().unwrap().clear();
    let dlv = d["delivery_id"].as_str().unwrap().to_string();
    let r = e.app.engine.redeliver_callback(ACCT, &id, &dlv).await.unwrap();
    assert_eq!(r["status"], "pending");
    assert!(pump_until(&e.app, Duration::from_secs(10), || all_settled(&e.app, &id, 1)).await);
    let d = e.app.engine.get_callback(ACCT, &id, &dlv).await.unwrap();
    assert_eq!(d["status"], "delivered");
    assert_eq!(d["attempt_count"].as_i64().unwrap(), tries + 1);
    assert_eq!(d["redeliveries"], 1);
    assert_eq!(d["payload"]["type"], "run.completed");
    // Another account sees none of it.
    assert!(matches!(e.app.engine.list_callbacks("acct_other", &id, 20, None).await, Err(Error::NotFound(_))));
    assert!(matches!(e.app.engine.redeliver_callback(ACCT, &id, "dlv_nope").await, Err(Error::NotFound(_))));
}

#[tokio::test]
async fn private_targets_are_refused_at_start_and_at_delivery_without_the_flag() {
    let e = env_with(AppConfig { allow_private_targets: false, ..test_cfg() }).await;
    let rx = listen(&[]).await;
    install(&e.app, "wf", chain(), None).await;
    let req = StartRequest { callback_url: Some(rx.url.clone()), source: "test".into(), ..Default::default() };
    match e.app.engine.start_run(ACCT, "wf", req).await {
        Err(Error::Validation { details, .. }) => assert_eq!(details[0].path, vec![json!("callback_url")]),
        other => panic!("{other:?}"),
    }
    // A URL stored before the rule (or resolving elsewhere then): refused when delivering.
    install(&e.app, "old", chain(), Some(&rx.url)).await;
    let id = start(&e.app, "old", None).await;
    assert!(pump_until(&e.app, Duration::from_secs(10), || all_settled(&e.app, &id, 1)).await);
    let d = &e.app.engine.list_callbacks(ACCT, &id, 20, None).await.unwrap()["data"][0];
    assert_eq!(d["status"], "failed", "{d:#}");
    assert!(d["attempts"][0]["error"].as_str().unwrap().contains("loopback"), "{d:#}");
    assert!(rx.received().is_empty());
}

#[tokio::test]
async fn messages_for_uncommitted_or_stale_deliveries_do_nothing() {
    let e = env().await;
    let rx = listen(&[]).await;
    // The safety message of a transition that never committed.
    let ghost = Msg::Callback { r: "run_x".into(), d: "dlv_x".into(), n: 0 };
    assert_eq!(e.app.engine.process(&ghost.encode()).await, Outcome::Ack);
    install(&e.app, "wf", chain(), Some(&rx.url)).await;
    let id = start(&e.app, "wf", None).await;
    assert!(pump_until(&e.app, Duration::from_secs(10), || all_settled(&e.app, &id, 1)).await);
    let dlv = deliveries(&e.app, &id).await[0].str("delivery_id").unwrap().to_string();
    // A message from the future (its attempt is not due) does nothing either.
    let early = Msg::Callback { r: id.clone(), d: dlv, n: 7 };
    assert_eq!(e.app.engine.process(&early.encode()).await, Outcome::Ack);
    assert_eq!(rx.received().len(), 1);
}

#[tokio::test]
async fn concurrent_duplicate_step_messages_still_make_one_delivery() {
    let e = env().await;
    let rx = listen(&[]).await;
    install(&e.app, "wf", chain(), Some(&rx.url)).await;
    let id = start(&e.app, "wf", None).await;
    // Every step message is handled by four workers at once, as a redelivering queue might.
    for _ in 0..5 {
        // Callback messages stay hidden for a moment and are played below.
        let msgs = e.app.queue.receive(10, Duration::from_secs(1), Duration::from_millis(200)).await.unwrap();
        for m in msgs.into_iter().filter(|m| m.body.contains("\"step\"")) {
            let mut tasks = Vec::new();
            for _ in 0..4 {
                let app = e.app.clone();
                let body = m.body.clone();
                tasks.push(tokio::spawn(async move { app.engine.process(&body).await }));
            }
            for t in tasks {
                t.await.unwrap();
            }
            e.app.queue.delete(&m.receipt).await.unwrap();
        }
    }
    assert!(pump_until(&e.app, Duration::from_secs(10), || all_settled(&e.app, &id, 1)).await);
    pump_until(&e.app, Duration::from_millis(300), || async { false }).await;
    assert_eq!(deliveries(&e.app, &id).await.len(), 1);
    assert_eq!(rx.events(), ["run.completed"]);
}

#[tokio::test]
async fn redeliver_waits_for_an_attempt_in_flight_and_takes_over_a_dead_ones() {
    let e = env().await;
    let rx = listen(&[]).await;
    install(&e.app, "wf", chain(), Some(&rx.url)).await;
    let id = start(&e.app, "wf", None).await;
    assert!(pump_until(&e.app, Duration::from_secs(10), || all_settled(&e.app, &id, 1)).await);
    let dlv = deliveries(&e.app, &id).await[0].str("delivery_id").unwrap().to_string();
    let key = keys::callback(&id, &dlv);
    let now = ids::now_ms();
    let held = Update::default().set("claim", "clm_other").set("lease_until", now + 60_000);
    e.app.store.update(&key, held, None).await.unwrap();
    assert!(matches!(e.app.engine.redeliver_callback(ACCT, &id, &dlv).await, Err(Error::Conflict(_))));
    let dead = Update::default().set("lease_until", now - 1);
    e.app.store.update(&key, dead, None).await.unwrap();
    e.app.engine.redeliver_callback(ACCT, &id, &dlv).await.unwrap();
    let twice = || async { e.app.engine.get_callback(ACCT, &id, &dlv).await.unwrap()["attempt_count"] == 2 };
    assert!(pump_until(&e.app, Duration::from_secs(10), twice).await);
    assert_eq!(rx.received().len(), 2);
    assert!(e.app.store.get(&key).await.unwrap().unwrap().get("claim").is_none());
}

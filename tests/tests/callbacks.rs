//! Outbound callbacks end to end, against the real `baton-local` binary: a receiver on
//! loopback checks every Standard Webhooks signature (with its own implementation of the
//! spec), answers 500 twice and then 200; the test sees the retries, the final delivery,
//! the delivery log, a redelivery after a secret rotation, and the events of a run that
//! waits for a person and is cancelled. Without `BATON_ALLOW_PRIVATE_TARGETS=1`, loopback
//! and private targets are refused with 400.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use baton_tests::{Api, Server, ServerOptions, parse_rfc3339_ms};
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Bound on waiting for any one callback outcome.
const WAIT: Duration = Duration::from_secs(30);
/// The server's first retry delay (later ones grow ×3), so the test retries within seconds.
const BACKOFF_MS: u64 = 300;

/// What the receiver saw of one request.
#[derive(Clone, Debug)]
struct Seen {
    id: String,
    timestamp: i64,
    /// Which of the receiver's known secrets verified one of the signatures.
    verified_by: Vec<usize>,
    body: Value,
    at: Instant,
}

struct Receiver {
    secrets: Mutex<Vec<String>>,
    script: Mutex<VecDeque<u16>>,
    seen: Mutex<Vec<Seen>>,
}

/// Standard Webhooks, as a receiver implements it: HMAC-SHA256 over `{id}.{ts}.{body}` with
/// the base64-decoded part of `whsec_…`, compared with each `v1,` signature of the header.
fn verified_by(secrets: &[String], id: &str, ts: &str, body: &[u8], header: &str) -> Vec<usize> {
    let mut out = Vec::new();
    for (i, s) in secrets.iter().enumerate() {
        let key = B64.decode(s.strip_prefix("whsec_").expect("whsec_ prefix")).expect("base64 key");
        let hit = header.split(' ').filter_map(|sig| sig.strip_prefix("v1,")).any(|b64| {
            B64.decode(b64).is_ok_and(|got| {
                let mut m = Hmac::<Sha256>::new_from_slice(&key).unwrap();
                m.update(format!("{id}.{ts}.").as_bytes());
                m.update(body);
                // Constant-time comparison, as a receiver should.
                m.verify_slice(&got).is_ok()
            })
        });
        if hit {
            out.push(i);
        }
    }
    out
}

async fn receive(State(rx): State<Arc<Receiver>>, headers: HeaderMap, body: axum::body::Bytes) -> impl IntoResponse {
    let h = |n: &str| headers.get(n).and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
    let (id, ts, sig) = (h("webhook-id"), h("webhook-timestamp"), h("webhook-signature"));
    let secrets = rx.secrets.lock().unwrap().clone();
    let verified = verified_by(&secrets, &id, &ts, &body, &sig);
    let seen = Seen {
        id,
        timestamp: ts.parse().unwrap_or(0),
        verified_by: verified.clone(),
        body: serde_json::from_slice(&body).unwrap_or(Value::Null),
        at: Instant::now(),
    };
    rx.seen.lock().unwrap().push(seen);
    if verified.is_empty() || h("content-type") != "application/json" {
        return (StatusCode::UNAUTHORIZED, "bad signature");
    }
    let code = rx.script.lock().unwrap().pop_front().unwrap_or(200);
    (StatusCode::from_u16(code).unwrap(), "ok")
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
    fn seen(&self) -> Vec<Seen> {
        self.rx.seen.lock().unwrap().clone()
    }
}

async fn listen(secret: &str, script: &[u16]) -> Listening {
    let rx = Arc::new(Receiver {
        secrets: Mutex::new(vec![secret.to_string()]),
        script: Mutex::new(script.iter().copied().collect()),
        seen: Mutex::new(Vec::new()),
    });
    let app = axum::Router::new().route("/hook", axum::routing::post(receive)).with_state(rx.clone());
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", l.local_addr().unwrap());
    let task = tokio::spawn(async move {
        let _ = axum::serve(l, app).await;
    });
    Listening { url, rx, task }
}

/// Polls `GET path` until `done(body)` or [`WAIT`] passes (then panics with the last body).
async fn wait_for(api: &Api, path: &str, done: impl Fn(&Value) -> bool) -> Value {
    let t0 = Instant::now();
    loop {
        let (code, body) = api.get(path).await.unwrap();
        assert_eq!(code, 200, "GET {path}: {body}");
        if done(&body) {
            return body;
        }
        assert!(t0.elapsed() < WAIT, "GET {path} did not get there within {WAIT:?}: {body:#}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn start_server(private_ok: bool) -> Server {
    let mut o = ServerOptions::default().workers(2).arg("--callback-backoff-ms").arg(&BACKOFF_MS.to_string());
    if private_ok {
        o = o.env("BATON_ALLOW_PRIVATE_TARGETS", "1");
    }
    Server::start(o)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callbacks_are_signed_retried_after_500_logged_and_redeliverable() {
    let server = start_server(true);
    let mut api = Api::for_server(&server);
    let reg = api.register("callbacks-e2e").await.unwrap();
    let (code, account) = api.get("/account").await.unwrap();
    assert_eq!(code, 200, "{account}");
    let secret = account["callback_signing_secret"].as_str().unwrap().to_string();
    assert_eq!(reg["account"]["callback_signing_secret"], json!(secret));
    assert!(secret.starts_with("whsec_"), "{secret}");

    let hook = listen(&secret, &[500, 500]).await;
    let wf = json!({"id": "cb-chain", "name": "callbacks", "status": "active", "callback_url": hook.url,
        "steps": [{"id": "start", "type": "starter"},
                  {"id": "double", "type": "transform", "config": {"mapping": {"n": "{{input.n | times: 2}}"}}}]});
    let created = api.create_workflow(&wf).await.unwrap();
    assert_eq!(created["callback_url"], json!(hook.url));
    let (code, run) = api.start_run("cb-chain", &json!({"n": 21})).await.unwrap();
    assert_eq!(code, 201, "{run}");
    let run_id = run["run_id"].as_str().unwrap().to_string();

    // The delivery log shows two 500s, then the 200.
    let log_path = format!("/runs/{run_id}/callbacks");
    let log = wait_for(&api, &log_path, |b| b["data"][0]["status"] == "delivered").await;
    let d = &log["data"][0];
    assert_eq!(log["data"].as_array().unwrap().len(), 1, "{log:#}");
    assert_eq!(d["event"], "run.completed");
    assert_eq!(d["url"], json!(hook.url));
    assert_eq!(d["attempt_count"], 3);
    let attempts = d["attempts"].as_array().unwrap();
    let codes: Vec<&Value> = attempts.iter().map(|a| &a["response_status"]).collect();
    assert_eq!(codes, [&json!(500), &json!(500), &json!(200)], "{d:#}");
    let at: Vec<i64> = attempts.iter().map(|a| parse_rfc3339_ms(a["at"].as_str().unwrap()).unwrap()).collect();
    assert!(at[1] - at[0] >= (BACKOFF_MS * 8 / 10) as i64, "first retry after the backoff: {at:?}");
    assert!(at[2] - at[1] >= (BACKOFF_MS * 3 * 8 / 10) as i64, "second retry waits ×3: {at:?}");
    assert!(d["delivered_at"].is_string() && d["next_attempt_at"].is_null());

    // The receiver saw the same three requests, each correctly signed, one webhook-id.
    let seen = hook.seen();
    assert_eq!(seen.len(), 3, "{seen:#?}");
    let delivery_id = d["delivery_id"].as_str().unwrap();
    for s in &seen {
        assert_eq!(s.verified_by, [0], "signature of attempt {s:?}");
        assert_eq!(s.id, delivery_id);
        assert!((s.timestamp * 1000 - baton_tests::now_ms()).abs() < 60_000);
    }
    assert!(seen[1].at.duration_since(seen[0].at) >= Duration::from_millis(BACKOFF_MS * 8 / 10));
    let body = &seen[2].body;
    assert_eq!(body["type"], "run.completed");
    assert_eq!(body["data"]["run_id"], json!(run_id));
    assert_eq!(body["data"]["workflow_id"], "cb-chain");
    assert_eq!(body["data"]["status"], "completed");
    assert_eq!(body["data"]["output"], json!({"n": 42}));
    let (code, one) = api.get(&format!("{log_path}/{delivery_id}")).await.unwrap();
    assert_eq!(code, 200);
    assert_eq!(&one["payload"], body);

    // Rotate the secret, then redeliver: the receiver that knows only the old secret still
    // verifies (both signatures are sent during the grace period), and so does the new one.
    let (code, rotated) = api.post("/account/rotate-callback-secret", &json!({})).await.unwrap();
    assert_eq!(code, 200, "{rotated}");
    let new_secret = rotated["callback_signing_secret"].as_str().unwrap().to_string();
    assert_ne!(new_secret, secret);
    hook.rx.secrets.lock().unwrap().push(new_secret);
    let (code, r) = api.post(&format!("{log_path}/{delivery_id}/redeliver"), &json!({})).await.unwrap();
    assert_eq!(code, 202, "{r}");
    let log = wait_for(&api, &log_path, |b| b["data"][0]["attempt_count"] == 4).await;
    assert_eq!(log["data"][0]["status"], "delivered");
    assert_eq!(log["data"][0]["redeliveries"], 1);
    let seen = hook.seen();
    assert_eq!(seen.len(), 4);
    assert_eq!(seen[3].id, delivery_id, "a redelivery keeps the webhook-id");
    assert_eq!(seen[3].verified_by, [0, 1], "old and new secret both verify");

    let (code, e) = api.post(&format!("{log_path}/dlv_nope/redeliver"), &json!({})).await.unwrap();
    assert_eq!((code, e["error"]["code"].as_str()), (404, Some("NOT_FOUND")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_start_callback_url_gets_waiting_human_then_cancelled() {
    let server = start_server(true);
    let mut api = Api::for_server(&server);
    api.register("callbacks-human").await.unwrap();
    let secret = api.get("/account").await.unwrap().1["callback_signing_secret"].as_str().unwrap().to_string();
    let hook = listen(&secret, &[]).await;
    let wf = json!({"id": "cb-human", "name": "approval", "status": "active",
        "steps": [{"id": "start", "type": "starter"},
                  {"id": "review", "type": "human", "config": {"kind": "approval", "prompt": "Ship it?"}}]});
    api.create_workflow(&wf).await.unwrap();
    let (code, run) =
        api.post("/workflows/cb-human/run", &json!({"input": {}, "callback_url": hook.url})).await.unwrap();
    assert_eq!(code, 201, "{run}");
    let run_id = run["run_id"].as_str().unwrap().to_string();
    let log_path = format!("/runs/{run_id}/callbacks");
    wait_for(&api, &log_path, |b| b["data"][0]["status"] == "delivered").await;
    let (_, tasks) = api.get(&format!("/runs/{run_id}/tasks")).await.unwrap();
    let task_id = tasks["data"][0]["task_id"].clone();
    let waiting = &hook.seen()[0].body;
    assert_eq!(waiting["type"], "run.waiting_human");
    assert_eq!(waiting["data"]["status"], "waiting_human");
    assert_eq!(waiting["data"]["task_ids"], json!([task_id]));

    let (code, _) = api.delete(&format!("/runs/{run_id}")).await.unwrap();
    assert_eq!(code, 200);
    let log = wait_for(&api, &log_path, |b| {
        b["data"].as_array().is_some_and(|d| d.len() == 2 && d.iter().all(|x| x["status"] == "delivered"))
    })
    .await;
    let events: Vec<&Value> = log["data"].as_array().unwrap().iter().map(|d| &d["event"]).collect();
    assert_eq!(events, [&json!("run.waiting_human"), &json!("run.cancelled")]);
    let seen = hook.seen();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[1].body["data"]["status"], "cancelled");
    assert!(seen.iter().all(|s| s.verified_by == [0]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn private_and_loopback_targets_are_refused_without_the_flag() {
    let server = start_server(false);
    let mut api = Api::for_server(&server);
    api.register("callbacks-guard").await.unwrap();
    let refused = [
        "http://127.0.0.1:9/hook",
        "http://localhost:8080/hook",
        "http://10.1.2.3/hook",
        "http://[::1]/hook",
        "http://[::ffff:192.168.1.1]/hook",
        "http://[::ffff:0:127.0.0.1]/hook",
        "http://[2001:0:4136:e378::80ff:fffe]/hook",
        "http://[2002:a00:1::1]/hook",
        "http://[64:ff9b::7f00:1]/hook",
        "http://169.254.169.254/latest/meta-data",
    ];
    let steps = json!([{"id": "start", "type": "starter"}]);
    for (i, url) in refused.iter().enumerate() {
        let wf =
            json!({"id": format!("guard-{i}"), "name": "g", "status": "active", "callback_url": url, "steps": steps});
        let (code, body) = api.post("/workflows", &wf).await.unwrap();
        assert_eq!(code, 400, "{url}: {body}");
        assert_eq!(body["error"]["code"], "VALIDATION_ERROR");
        assert_eq!(body["error"]["details"][0]["path"], json!(["callback_url"]), "{body}");
        assert!(body["error"]["message"].as_str().unwrap().contains("BATON_ALLOW_PRIVATE_TARGETS"), "{body}");
    }
    for bad in ["ftp://example.com/x", "https://user:pw@example.com/x", "not a url", "/relative"] {
        let wf = json!({"id": "guard-bad", "name": "g", "callback_url": bad, "steps": steps});
        let (code, body) = api.post("/workflows", &wf).await.unwrap();
        assert_eq!((code, body["error"]["code"].as_str()), (400, Some("VALIDATION_ERROR")), "{bad}: {body}");
    }
    let wf = json!({"id": "guard-ok", "name": "g", "status": "active", "steps": steps});
    api.create_workflow(&wf).await.unwrap();
    let (code, body) = api.patch("/workflows/guard-ok", &json!({"callback_url": refused[0]})).await.unwrap();
    assert_eq!((code, body["error"]["code"].as_str()), (400, Some("VALIDATION_ERROR")), "{body}");
    let (code, body) =
        api.post("/workflows/guard-ok/run", &json!({"input": {}, "callback_url": refused[1]})).await.unwrap();
    assert_eq!((code, body["error"]["code"].as_str()), (400, Some("VALIDATION_ERROR")), "{body}");
    // Nothing was started by the refused request.
    assert!(api.list_runs(None).await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trigger_callback_url_hears_the_run_its_hook_started() {
    let server = start_server(true);
    let mut api = Api::for_server(&server);
    api.register("callbacks-trigger").await.unwrap();
    let secret = api.get("/account").await.unwrap().1["callback_signing_secret"].as_str().unwrap().to_string();
    let hook = listen(&secret, &[]).await;
    let wf = json!({"id": "cb-trigger", "name": "t", "status": "active",
        "steps": [{"id": "start", "type": "starter"},
                  {"id": "echo", "type": "transform", "config": {"mapping": {"got": "{{input.n}}"}}}]});
    api.create_workflow(&wf).await.unwrap();
    let (code, trigger) = api.post("/workflows/cb-trigger/triggers", &json!({"callback_url": hook.url})).await.unwrap();
    assert_eq!(code, 201, "{trigger}");
    let url = trigger["url"].as_str().unwrap().to_string();

    // The hook door takes no API key: the token in the URL is the credential.
    let keyless = Api::new(server.base_url());
    let path = url.strip_prefix(&format!("{}/api/v1", server.base_url())).expect("trigger URL on this server");
    let (code, run) = keyless.post(path, &json!({"n": 7})).await.unwrap();
    assert_eq!(code, 201, "{run}");
    let run_id = run["run_id"].as_str().unwrap().to_string();
    let log = wait_for(&api, &format!("/runs/{run_id}/callbacks"), |b| b["data"][0]["status"] == "delivered").await;
    assert_eq!(log["data"][0]["event"], "run.completed");
    assert_eq!(log["data"][0]["url"], json!(hook.url));
    let seen = hook.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].body["data"]["run_id"], json!(run_id));
    assert_eq!(seen[0].body["data"]["output"], json!({"got": 7}));
    assert_eq!(seen[0].verified_by, [0]);
}

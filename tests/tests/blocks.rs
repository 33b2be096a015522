//! The `code` and `general_api` blocks end to end, against the real `baton-local` binary: a
//! script's output and logs, an async HTTP call to a loopback API that answers later through
//! `POST /api/v1/callback` (seed 001), as an outside system would, over HTTP.

use axum::http::HeaderMap;
use baton_tests::{Api, Server, ServerOptions};
use serde_json::{Value, json};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(30);

async fn wait_for_run(api: &Api, run_id: &str, done: impl Fn(&Value) -> bool) -> Value {
    let t0 = Instant::now();
    loop {
        let r = api.run(run_id).await.unwrap();
        if done(&r) {
            return r;
        }
        assert!(t0.elapsed() < WAIT, "run {run_id} did not get there within {WAIT:?}: {r:#}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_script_and_an_async_call_answered_by_callback_run_to_completion() {
    let server = Server::start(ServerOptions::default().workers(2).env("BATON_ALLOW_PRIVATE_TARGETS", "1"));
    let mut api = Api::for_server(&server);
    api.register("blocks-e2e").await.unwrap();

    // The called API: records what it was sent and answers 202 (the work is done later).
    let seen: Arc<Mutex<Vec<(HeaderMap, Value)>>> = Arc::default();
    let log = seen.clone();
    let app = axum::Router::new().fallback(move |h: HeaderMap, body: axum::body::Bytes| {
        let log = log.clone();
        async move {
            log.lock().unwrap().push((h, serde_json::from_slice(&body).unwrap_or(Value::Null)));
            (axum::http::StatusCode::ACCEPTED, axum::Json(json!({"job": "j_1"})))
        }
    });
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://127.0.0.1:{}/jobs", l.local_addr().unwrap().port());
    tokio::spawn(async move { axum::serve(l, app).await.unwrap() });

    let wf = json!({"id": "blocks-e2e", "name": "blocks", "status": "active", "steps": [
        {"id": "start", "type": "starter"},
        {"id": "total", "type": "function", "config": {"code":
            "console.log('lines', input.items.length);\nreturn {total: input.items.reduce((s, i) => s + i.q * i.p, 0)}"}},
        {"id": "job", "type": "api_call", "config": {"method": "POST", "url": url, "async": true,
            "body": {"total": "{{steps.total.output.total}}", "reply_to": "{{callback.url}}"}}},
        {"id": "done", "type": "response", "config": {"body": {"total": "{{steps.total.output.total}}", "receipt": "{{steps.job.output.receipt}}"}}}]});
    api.create_workflow(&wf).await.unwrap();
    let (code, run) =
        api.start_run("blocks-e2e", &json!({"items": [{"q": 2, "p": 5}, {"q": 1, "p": 3}]})).await.unwrap();
    assert_eq!(code, 201, "{run}");
    let run_id = run["run_id"].as_str().unwrap().to_string();
    let r = wait_for_run(&api, &run_id, |r| {
        r["steps"]
            .as_array()
            .is_some_and(|s| s.iter().any(|s| s["step_key"] == "job" && s["status"] == "waiting_human"))
    })
    .await;
    assert_eq!(r["status"], "running", "a callback wait is not a person's: {r:#}");

    let (headers, body) = seen.lock().unwrap()[0].clone();
    assert_eq!(body["total"], 13);
    let reply_to = body["reply_to"].as_str().unwrap().to_string();
    assert_eq!(headers["baton-callback-url"].to_str().unwrap(), reply_to);
    assert!(reply_to.starts_with(&format!("{}/api/v1/callback?token=", server.base_url())), "{reply_to}");

    // The outside system answers, with no API key.
    let outsider = reqwest::Client::new();
    let answer = json!({"output": {"receipt": "r_9"}});
    let res = outsider.post(&reply_to).json(&answer).send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.json::<Value>().await.unwrap(), json!({"run_id": run_id, "step_key": "job"}));
    let again = outsider.post(&reply_to).json(&answer).send().await.unwrap();
    assert_eq!(again.status(), 409);

    let r = wait_for_run(&api, &run_id, |r| r["status"] == "completed").await;
    assert_eq!(r["output"], json!({"total": 13, "receipt": "r_9"}));
    let logs: Vec<Value> =
        api.run_events(&run_id).await.unwrap().into_iter().filter(|e| e["type"] == "step.log").collect();
    assert_eq!(logs.len(), 1, "{logs:#?}");
    assert_eq!(logs[0]["data"]["lines"], json!(["lines 2"]));
}

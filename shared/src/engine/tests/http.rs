//! `general_api` steps through the engine: retries of 429/5xx after `Retry-After`.

use super::*;
use std::sync::atomic::AtomicUsize;

/// A loopback API that answers 503 with `Retry-After: 1` to its first `fails` calls, then 200.
async fn flaky_api(fails: usize) -> (String, Arc<AtomicUsize>) {
    let calls = Arc::new(AtomicUsize::new(0));
    let c = calls.clone();
    let app = axum::Router::new().fallback(move || {
        let n = c.fetch_add(1, Ordering::SeqCst);
        async move {
            use axum::response::IntoResponse;
            if n < fails {
                (axum::http::StatusCode::SERVICE_UNAVAILABLE, [("retry-after", "1")], "busy").into_response()
            } else {
                axum::Json(json!({"ok": true, "call": n + 1})).into_response()
            }
        }
    });
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://127.0.0.1:{}/x", l.local_addr().unwrap().port());
    tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
    (url, calls)
}

fn private_env() -> Env {
    let cfg = AppConfig { lease: Duration::from_secs(2), allow_private_targets: true, ..AppConfig::default() };
    env_with(cfg, |db| Arc::new(SqliteQueue::new(db, "steps", 5))).0
}

#[tokio::test]
async fn a_server_error_is_retried_by_the_configs_policy_no_sooner_than_retry_after() {
    let e = private_env();
    let (url, calls) = flaky_api(1).await;
    let flow = json!({"steps": [{"id": "s", "type": "starter"},
        {"id": "call", "type": "general_api", "config": {"url": url, "retry": {"max_attempts": 3, "backoff_ms": 10}}}]});
    install(&e.app, "wf", flow).await;
    let id = start(&e.app, "wf", json!({})).await;
    // The retry is a delayed message, which the drain does not wait for: play until the run ends.
    let mut r = Value::Null;
    for _ in 0..100 {
        drain(&e.app, Duration::from_secs(5)).await;
        r = run(&e.app, &id).await;
        if crate::engine::is_terminal_run(r["status"].as_str().unwrap_or("")) {
            break;
        }
    }
    assert_eq!(r["status"], "completed", "{r:#}");
    assert_eq!(r["output"]["body"], json!({"ok": true, "call": 2}));
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    let retry = events(&e.app, &id).await.into_iter().find(|ev| ev["type"] == "step.retrying").unwrap();
    assert_eq!(retry["data"]["error"]["code"], "HTTP_503");
    assert!(retry["data"]["delay_ms"].as_u64().unwrap() >= 1000, "the 10 ms backoff yields to Retry-After: {retry}");
}

#[tokio::test]
async fn without_a_retry_policy_a_server_error_fails_the_run_at_once() {
    let e = private_env();
    let (url, calls) = flaky_api(5).await;
    let flow =
        json!({"steps": [{"id": "s", "type": "starter"}, {"id": "call", "type": "api_call", "config": {"url": url}}]});
    install(&e.app, "wf", flow).await;
    let id = start(&e.app, "wf", json!({})).await;
    drain(&e.app, Duration::from_secs(10)).await;
    let r = run(&e.app, &id).await;
    assert_eq!((r["status"].as_str(), r["error"]["code"].as_str()), (Some("failed"), Some("HTTP_503")), "{r:#}");
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

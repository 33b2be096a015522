//! What a block is told (its context), and where a block too long for a worker invocation
//! runs: the long-step queue.

use super::*;
use crate::queue::Queue;
use tokio::time::Instant as TokioInstant;

/// Records what each execution was told; fails retryably the first `fail_times` times;
/// sleeps `sleep` first.
#[derive(Default)]
struct Recorder {
    seen: std::sync::Mutex<Vec<Value>>,
    fail_times: usize,
    sleep: Duration,
}

#[async_trait]
impl Executor for Recorder {
    async fn execute(&self, _b: &Block, cx: &BlockContext<'_>) -> BlockOutcome {
        let n = {
            let mut seen = self.seen.lock().unwrap();
            seen.push(json!({
                "run_id": cx.run_id, "step_key": cx.step_key, "attempt": cx.attempt,
                "idempotency_key": cx.idempotency_key, "remaining_ms": cx.remaining().as_millis() as u64,
                "input": cx.data["input"], "secret_box_works": cx.services.secrets.open_str(&cx.services.secrets.seal_str("s")).is_ok(),
                "http_refuses_loopback": cx.services.http.vet("url", "http://127.0.0.1:9/").is_err(),
            }));
            seen.len()
        };
        tokio::time::sleep(self.sleep).await;
        if n <= self.fail_times {
            return BlockOutcome::Fail(StepError::retryable("UPSTREAM", "try again"));
        }
        BlockOutcome::Output(json!({"attempt": cx.attempt}))
    }
}

impl Recorder {
    fn seen(&self) -> Vec<Value> {
        self.seen.lock().unwrap().clone()
    }
}

#[tokio::test]
async fn a_block_is_told_its_run_step_attempt_deadline_and_a_stable_idempotency_key() {
    let e = env();
    let rec = Arc::new(Recorder { fail_times: 1, ..Recorder::default() });
    e.app.engine.register_executor("code", rec.clone());
    let mut flow = code_flow(json!({"max_attempts": 2, "backoff_ms": 10}), Some(4_000));
    flow["steps"][1]["id"] = json!("work");
    install(&e.app, "wf", flow).await;
    let id = start(&e.app, "wf", json!({"n": 1})).await;
    drain(&e.app, Duration::from_secs(10)).await;
    let r = run(&e.app, &id).await;
    assert_eq!(r["status"], "completed", "{r:#}");
    let seen = rec.seen();
    assert_eq!(seen.len(), 2, "{seen:?}");
    for (i, s) in seen.iter().enumerate() {
        assert_eq!(s["run_id"], id.as_str());
        assert_eq!(s["step_key"], "work");
        assert_eq!(s["attempt"], i + 1);
        assert_eq!(s["idempotency_key"], format!("{id}:work"), "the same on every attempt");
        assert_eq!(s["input"], json!({"n": 1}));
        let left = s["remaining_ms"].as_u64().unwrap();
        assert!(left > 3_000 && left <= 4_000, "the block's own timeout: {left}");
        assert_eq!(s["secret_box_works"], true);
        assert_eq!(s["http_refuses_loopback"], true, "private targets refused by default");
    }
    assert_eq!(r["output"], json!({"attempt": 2}));
}

#[tokio::test]
async fn a_block_never_runs_past_the_invocation_deadline() {
    let e = env();
    let rec = Arc::new(Recorder { sleep: Duration::from_secs(30), ..Recorder::default() });
    e.app.engine.register_executor("code", rec.clone());
    install(&e.app, "wf", code_flow(json!({"max_attempts": 1}), Some(60_000))).await;
    let id = start(&e.app, "wf", json!({})).await;
    let starter = e.app.queue.receive(1, Duration::from_secs(5), Duration::from_millis(50)).await.unwrap();
    assert_eq!(e.app.engine.process(&starter[0].body).await, Outcome::Ack);
    let m = e.app.queue.receive(1, Duration::from_secs(5), Duration::from_millis(50)).await.unwrap();
    let t0 = Instant::now();
    // An invocation with 3 s left (2 s of it kept for the commit) and no long-step queue.
    let deadline = TokioInstant::now() + Duration::from_secs(3);
    let (outcome, _) = e.app.engine.process_until(&m[0].body, false, Some(deadline)).await;
    assert_eq!(outcome, Outcome::Ack);
    assert!(t0.elapsed() < Duration::from_secs(3), "stopped at the deadline: {:?}", t0.elapsed());
    assert!(rec.seen()[0]["remaining_ms"].as_u64().unwrap() <= 1_000, "{:?}", rec.seen());
    let r = run(&e.app, &id).await;
    assert_eq!(r["status"], "failed", "{r:#}");
    assert_eq!(r["error"]["code"], "TIMEOUT");
}

#[tokio::test]
async fn a_block_longer_than_the_invocation_goes_to_the_long_step_worker_and_runs_once() {
    let dir = tempfile::tempdir().unwrap();
    let db = Sqlite::open(&dir.path().join("t.db")).unwrap();
    let store = Arc::new(crate::testing::CountingStore::new(Arc::new(SqliteStore::new(db.clone()))));
    let steps: Arc<dyn Queue> = Arc::new(SqliteQueue::new(db.clone(), "steps", 5));
    let long: Arc<dyn Queue> = Arc::new(SqliteQueue::new(db, "long", 5));
    let secrets = Arc::new(crate::secrets::SecretBox::ephemeral());
    let cfg = AppConfig { lease: Duration::from_secs(2), ..AppConfig::default() };
    // The step worker (30 s invocations) and the long-step worker (15 minutes), as on AWS.
    let worker = App::with_long_queue(store.clone(), steps.clone(), Some(long.clone()), secrets.clone(), cfg.clone());
    let long_worker = App::with_long_queue(store.clone(), steps.clone(), None, secrets, cfg);
    let rec = Arc::new(Recorder::default());
    worker.engine.register_executor("code", rec.clone());
    long_worker.engine.register_executor("code", rec.clone());
    install(&worker, "wf", code_flow(json!({"max_attempts": 1}), Some(120_000))).await;
    let id = start(&worker, "wf", json!({})).await;

    let invocation = || TokioInstant::now() + Duration::from_secs(30);
    for _ in 0..2 {
        let m = steps.receive(1, Duration::from_secs(5), Duration::from_millis(50)).await.unwrap();
        let (outcome, next) = worker.engine.process_until(&m[0].body, false, Some(invocation())).await;
        assert_eq!(outcome, Outcome::Ack);
        steps.delete(&m[0].receipt).await.unwrap();
        if !next.is_empty() {
            steps.send_batch(next).await.unwrap();
        }
    }
    assert!(rec.seen().is_empty(), "the step worker did not run the long block");
    assert_eq!(run(&worker, &id).await["steps"][1]["status"], "pending", "not claimed either");
    let handed = long.receive(10, Duration::from_secs(5), Duration::from_millis(50)).await.unwrap();
    assert_eq!(handed.len(), 1, "on the long-step queue");
    let deadline = TokioInstant::now() + Duration::from_secs(900);
    let (outcome, _) = long_worker.engine.process_until(&handed[0].body, false, Some(deadline)).await;
    assert_eq!(outcome, Outcome::Ack);
    let r = run(&worker, &id).await;
    assert_eq!(r["status"], "completed", "{r:#}");
    let seen = rec.seen();
    assert_eq!(seen.len(), 1, "ran once, on the long-step worker");
    let left = seen[0]["remaining_ms"].as_u64().unwrap();
    assert!(left > 110_000 && left <= 120_000, "its own timeout, not the invocation's: {left}");
    assert_eq!(store.commits_of(&id, "work"), 1);
}

#[tokio::test]
async fn a_sync_execute_leaves_a_block_longer_than_its_deadline_to_the_workers() {
    let e = env();
    let rec = Arc::new(Recorder::default());
    e.app.engine.register_executor("code", rec.clone());
    install(&e.app, "wf", code_flow(json!({"max_attempts": 1}), Some(600_000))).await;
    let req = StartRequest { input: json!({}), source: "test".into(), ..Default::default() };
    let t0 = Instant::now();
    let res = e.app.engine.execute_sync(ACCT, "wf", req, Duration::from_secs(25)).await.unwrap();
    assert!(t0.elapsed() < Duration::from_secs(5));
    assert!(!res.finished, "answered at once, the run still going: {:?}", res.run);
    assert!(rec.seen().is_empty(), "not run inline");
    drain(&e.app, Duration::from_secs(10)).await;
    let id = res.run["run_id"].as_str().unwrap();
    assert_eq!(run(&e.app, id).await["status"], "completed");
    assert_eq!(rec.seen().len(), 1, "run once, by a worker");
}

/// Waits for an outside callback: mints a token and hands it out through `tokens`.
#[derive(Default)]
struct AwaitsCallback {
    tokens: std::sync::Mutex<Vec<String>>,
}

#[async_trait]
impl Executor for AwaitsCallback {
    async fn execute(&self, _b: &Block, _cx: &BlockContext<'_>) -> BlockOutcome {
        let (token, hash) = crate::engine::new_wait_token();
        self.tokens.lock().unwrap().push(token);
        BlockOutcome::Wait(crate::blocks::WaitSpec {
            kind: "callback".into(),
            prompt: Value::Null,
            timeout: None,
            default: None,
            extra: json!({}),
            token_hash: Some(hash),
        })
    }
}

#[tokio::test]
async fn a_wait_resumed_by_its_token_commits_once_and_the_token_is_single_use() {
    let e = env();
    let cb = Arc::new(AwaitsCallback::default());
    e.app.engine.register_executor("code", cb.clone());
    let mut flow = code_flow(json!({"max_attempts": 1}), None);
    flow["steps"]
        .as_array_mut()
        .unwrap()
        .push(json!({"id": "after", "type": "transform", "config": {"mapping": {"got": "{{steps.work.output.n}}"}}}));
    flow["steps"][1]["id"] = json!("work");
    install(&e.app, "wf", flow).await;
    let id = start(&e.app, "wf", json!({})).await;
    drain(&e.app, Duration::from_secs(10)).await;
    let r = run(&e.app, &id).await;
    assert_eq!(r["status"], "running", "a callback wait is not a person's: {r:#}");
    assert!(r["tasks"][0].get("token_hash").is_none(), "the hash is never shown: {r:#}");
    let token = cb.tokens.lock().unwrap()[0].clone();

    let unknown = e.app.engine.resume_by_token("wt_nope", json!({"output": 1})).await.unwrap_err();
    assert!(matches!(unknown, Error::NotFound(_)), "{unknown:?}");
    let (run_id, step_key) = e.app.engine.resume_by_token(&token, json!({"output": {"n": 5}})).await.unwrap();
    assert_eq!((run_id.as_str(), step_key.as_str()), (id.as_str(), "work"));
    let again = e.app.engine.resume_by_token(&token, json!({"output": {"n": 6}})).await.unwrap_err();
    assert!(matches!(again, Error::Conflict(_)), "{again:?}");
    drain(&e.app, Duration::from_secs(10)).await;
    let r = run(&e.app, &id).await;
    assert_eq!(r["status"], "completed", "{r:#}");
    assert_eq!(r["output"], json!({"got": 5}));
    assert_eq!(e.counts.commits_of(&id, "work"), 1);
}

#[tokio::test]
async fn a_callback_reporting_an_error_fails_its_step() {
    let e = env();
    let cb = Arc::new(AwaitsCallback::default());
    e.app.engine.register_executor("code", cb.clone());
    install(&e.app, "wf", code_flow(json!({"max_attempts": 1}), None)).await;
    let id = start(&e.app, "wf", json!({})).await;
    drain(&e.app, Duration::from_secs(10)).await;
    let token = cb.tokens.lock().unwrap()[0].clone();
    e.app.engine.resume_by_token(&token, json!({"error": {"message": "card declined"}})).await.unwrap();
    let r = run(&e.app, &id).await;
    assert_eq!(r["status"], "failed", "{r:#}");
    assert_eq!(r["error"]["code"], "CALLBACK_ERROR");
    assert!(r["error"]["message"].as_str().unwrap().contains("card declined"));
}

#[tokio::test]
async fn a_token_of_a_cancelled_run_resumes_nothing() {
    let e = env();
    let cb = Arc::new(AwaitsCallback::default());
    e.app.engine.register_executor("code", cb.clone());
    install(&e.app, "wf", code_flow(json!({"max_attempts": 1}), None)).await;
    let id = start(&e.app, "wf", json!({})).await;
    drain(&e.app, Duration::from_secs(10)).await;
    let token = cb.tokens.lock().unwrap()[0].clone();
    e.app.engine.cancel_run(ACCT, &id).await.unwrap();
    let err = e.app.engine.resume_by_token(&token, json!({"output": 1})).await.unwrap_err();
    assert!(matches!(err, Error::Conflict(_) | Error::InvalidStatus(_)), "{err:?}");
    let r = run(&e.app, &id).await;
    assert_eq!(r["status"], "cancelled", "{r:#}");
    assert_eq!(step(&r, "work")["status"], "cancelled", "ended by the cancel, not by the token: {r:#}");
    assert!(step(&r, "work")["output"].is_null(), "{r:#}");
}

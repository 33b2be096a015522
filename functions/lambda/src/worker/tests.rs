//! The worker's batch handling on the real SQLite store and queue, with the event source
//! mapping played by the test: receive, hand the batch over, delete what was not reported.

use super::{Settled, handle_batch, settle};
use async_trait::async_trait;
use axum::Router;
use axum::body::Body;
use baton::adapters::{Sqlite, SqliteQueue, SqliteStore};
use baton::app::{App, AppConfig, AppState};
use baton::error::{Error, Result};
use baton::queue::{Message, Queue, Received};
use baton::secrets::SecretBox;
use baton::store::{Cond, Item, Key, Page, Query, Store, Update, Write};
use http::{Method, Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tempfile::TempDir;
use tower::ServiceExt;

/// The SQLite queue, with sends that can be made to fail and visibility changes recorded.
struct Flaky {
    inner: SqliteQueue,
    fail_sends: AtomicBool,
    visibility: Mutex<Vec<(String, Duration)>>,
}

#[async_trait]
impl Queue for Flaky {
    async fn send(&self, msg: Message) -> Result<()> {
        self.send_batch(vec![msg]).await
    }
    async fn send_batch(&self, msgs: Vec<Message>) -> Result<()> {
        if self.fail_sends.load(Ordering::SeqCst) {
            return Err(Error::internal("sqs unavailable"));
        }
        self.inner.send_batch(msgs).await
    }
    async fn receive(&self, max: usize, visibility: Duration, wait: Duration) -> Result<Vec<Received>> {
        self.inner.receive(max, visibility, wait).await
    }
    async fn delete(&self, receipt: &str) -> Result<()> {
        self.inner.delete(receipt).await
    }
    async fn change_visibility(&self, receipt: &str, visibility: Duration) -> Result<()> {
        self.visibility.lock().unwrap().push((receipt.to_string(), visibility));
        self.inner.change_visibility(receipt, visibility).await
    }
    async fn dead_letters(&self, max: usize) -> Result<Vec<Received>> {
        self.inner.dead_letters(max).await
    }
}

/// The SQLite store, with reads that can be made to fail.
struct FlakyStore {
    inner: SqliteStore,
    fail_reads: AtomicBool,
}

#[async_trait]
impl Store for FlakyStore {
    async fn get(&self, key: &Key) -> Result<Option<Item>> {
        if self.fail_reads.load(Ordering::SeqCst) {
            return Err(Error::internal("dynamodb throttled"));
        }
        self.inner.get(key).await
    }
    async fn put(&self, item: Item, cond: Option<Cond>) -> Result<()> {
        self.inner.put(item, cond).await
    }
    async fn update(&self, key: &Key, update: Update, cond: Option<Cond>) -> Result<Item> {
        self.inner.update(key, update, cond).await
    }
    async fn delete(&self, key: &Key, cond: Option<Cond>) -> Result<()> {
        self.inner.delete(key, cond).await
    }
    async fn transact(&self, writes: Vec<Write>) -> Result<()> {
        self.inner.transact(writes).await
    }
    async fn query(&self, query: Query) -> Result<Page> {
        if self.fail_reads.load(Ordering::SeqCst) {
            return Err(Error::internal("dynamodb throttled"));
        }
        self.inner.query(query).await
    }
}

struct Fixture {
    _dir: TempDir,
    app: AppState,
    store: Arc<FlakyStore>,
    queue: Arc<Flaky>,
    key: String,
}

impl Fixture {
    async fn new() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let db = Sqlite::open(&dir.path().join("baton.db")).unwrap();
        let store = Arc::new(FlakyStore { inner: SqliteStore::new(db.clone()), fail_reads: AtomicBool::new(false) });
        let queue = Arc::new(Flaky {
            inner: SqliteQueue::new(db, "steps", 10),
            fail_sends: AtomicBool::new(false),
            visibility: Mutex::new(Vec::new()),
        });
        let app = App::new(store.clone(), queue.clone(), Arc::new(SecretBox::ephemeral()), AppConfig::default());
        let mut f = Fixture { _dir: dir, app, store, queue, key: String::new() };
        let (status, body) = f.call(Method::POST, "/api/v1/auth/register", Some(json!({"name": "w"}))).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        f.key = body["api_key"].as_str().unwrap().to_string();
        let wf = json!({"id": "double", "name": "Double", "status": "active",
            "blocks": [
                {"id": "start", "type": "starter"},
                {"id": "calc", "type": "transform", "config": {"mapping": {"twice": "{{input.n | times: 2}}"}}},
                {"id": "done", "type": "response", "config": {"body": {"result": "{{steps.calc.output.twice}}"}}}],
            "edges": [{"from": "start", "to": "calc"}, {"from": "calc", "to": "done"}]});
        let (status, body) = f.call(Method::POST, "/api/v1/workflows", Some(wf)).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        f
    }

    fn router(&self) -> Router {
        baton::api::router(self.app.clone())
    }

    async fn call(&self, method: Method, uri: &str, body: Option<Value>) -> (StatusCode, Value) {
        let req = Request::builder()
            .method(method)
            .uri(uri)
            .header("x-api-key", &self.key)
            .header("content-type", "application/json")
            .body(body.map_or_else(Body::empty, |b| Body::from(b.to_string())))
            .unwrap();
        let res = self.router().oneshot(req).await.unwrap();
        let status = res.status();
        let bytes = res.into_body().collect().await.unwrap().to_bytes();
        (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
    }

    async fn start(&self, n: i64) -> String {
        let (status, run) =
            self.call(Method::POST, "/api/v1/workflows/double/run", Some(json!({"input": {"n": n}}))).await;
        assert_eq!(status, StatusCode::CREATED, "{run}");
        run["run_id"].as_str().unwrap().to_string()
    }

    async fn run(&self, run_id: &str) -> Value {
        self.call(Method::GET, &format!("/api/v1/runs/{run_id}"), None).await.1
    }

    /// One round of the event source mapping: receive a batch, invoke, delete what the
    /// response did not name. Returns (received, reported) message ids.
    async fn play(&self) -> (Vec<String>, Vec<String>) {
        let received = self.queue.inner.receive(10, Duration::from_secs(30), Duration::from_millis(50)).await.unwrap();
        let event = sqs_event(&received);
        let response = handle_batch(&self.app, event).await;
        let reported: Vec<String> = response.batch_item_failures.iter().map(|f| f.item_identifier.clone()).collect();
        for m in &received {
            if !reported.contains(&m.id) {
                self.queue.inner.delete(&m.receipt).await.unwrap();
            }
        }
        (received.iter().map(|m| m.id.clone()).collect(), reported)
    }
}

fn sqs_event(msgs: &[Received]) -> aws_lambda_events::event::sqs::SqsEvent {
    let records: Vec<Value> = msgs
        .iter()
        .map(|m| {
            json!({"messageId": m.id, "receiptHandle": m.receipt, "body": m.body,
                   "attributes": {"ApproximateReceiveCount": m.receive_count.to_string()},
                   "messageAttributes": {}, "eventSource": "aws:sqs",
                   "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:steps", "awsRegion": "us-east-1"})
        })
        .collect();
    serde_json::from_value(json!({ "Records": records })).unwrap()
}

#[tokio::test]
async fn batches_drive_runs_to_completion_and_nothing_is_reported() {
    let f = Fixture::new().await;
    let runs = [f.start(1).await, f.start(2).await, f.start(3).await];
    let mut rounds = 0;
    loop {
        let (received, reported) = f.play().await;
        assert!(reported.is_empty(), "round {rounds}: {reported:?}");
        if received.is_empty() {
            break;
        }
        rounds += 1;
        assert!(rounds < 20, "the queue never drained");
    }
    assert!(rounds >= 3, "three blocks in a row take at least three rounds, took {rounds}");
    for (i, run_id) in runs.iter().enumerate() {
        let run = f.run(run_id).await;
        assert_eq!(run["status"], "completed", "{run}");
        assert_eq!(run["output"], json!({"result": 2 * (i as i64 + 1)}));
    }
}

#[tokio::test]
async fn a_message_whose_successors_cannot_be_sent_is_reported_and_redelivery_finishes_it() {
    let f = Fixture::new().await;
    let run_id = f.start(21).await;
    let received = f.queue.inner.receive(10, Duration::from_secs(30), Duration::from_millis(50)).await.unwrap();
    assert_eq!(received.len(), 1);
    f.queue.fail_sends.store(true, Ordering::SeqCst);
    let response = handle_batch(&f.app, sqs_event(&received)).await;
    let reported: Vec<&str> = response.batch_item_failures.iter().map(|x| x.item_identifier.as_str()).collect();
    assert_eq!(reported, [received[0].id.as_str()], "kept in the queue: its successor was never sent");
    f.queue.fail_sends.store(false, Ordering::SeqCst);
    // The mapping leaves it in the queue; its visibility lapses (here: at once).
    f.queue.inner.change_visibility(&received[0].receipt, Duration::ZERO).await.unwrap();
    let mut rounds = 0;
    while f.run(&run_id).await["status"] != "completed" {
        let (_, reported) = f.play().await;
        assert!(reported.is_empty(), "{reported:?}");
        rounds += 1;
        assert!(rounds < 20, "never completed: {}", f.run(&run_id).await);
    }
    assert_eq!(f.run(&run_id).await["output"], json!({"result": 42}));
}

#[tokio::test]
async fn a_store_failure_reports_the_message_and_schedules_its_retry() {
    let f = Fixture::new().await;
    f.start(5).await;
    let received = f.queue.inner.receive(10, Duration::from_secs(30), Duration::from_millis(50)).await.unwrap();
    assert_eq!(received.len(), 1);
    f.store.fail_reads.store(true, Ordering::SeqCst);
    let response = handle_batch(&f.app, sqs_event(&received)).await;
    let reported: Vec<&str> = response.batch_item_failures.iter().map(|x| x.item_identifier.as_str()).collect();
    assert_eq!(reported, [received[0].id.as_str()]);
    let changes = f.queue.visibility.lock().unwrap().clone();
    assert_eq!(changes.len(), 1);
    assert_eq!(changes[0].0, received[0].receipt, "the retry delay is set on this receipt");
    assert!(changes[0].1 > Duration::ZERO && changes[0].1 <= baton::queue::MAX_DELAY, "{changes:?}");
}

#[tokio::test]
async fn one_bad_record_never_fails_the_others() {
    let f = Fixture::new().await;
    let run_id = f.start(4).await;
    let mut received = f.queue.inner.receive(10, Duration::from_secs(30), Duration::from_millis(50)).await.unwrap();
    received.push(Received {
        id: "m-garbage".into(),
        receipt: "r-garbage".into(),
        body: "not json".into(),
        receive_count: 1,
    });
    let mut event = sqs_event(&received);
    let mut bodiless = event.records[0].clone();
    bodiless.message_id = Some("m-no-body".into());
    bodiless.body = None;
    event.records.push(bodiless);
    let response = handle_batch(&f.app, event).await;
    let reported: Vec<&str> = response.batch_item_failures.iter().map(|x| x.item_identifier.as_str()).collect();
    // An unreadable step message is dropped (acknowledged); a record without a body is kept.
    assert_eq!(reported, ["m-no-body"]);
    // The good record ran: its successor is on the queue.
    let next = f.queue.inner.receive(10, Duration::from_secs(30), Duration::from_millis(50)).await.unwrap();
    assert_eq!(next.len(), 1, "{next:?}");
    assert!(next[0].body.contains(&run_id));
    let bad = aws_lambda_events::event::sqs::SqsMessage::default();
    assert!(settle(&f.app, &bad).await.is_err());
    let mut unreadable = aws_lambda_events::event::sqs::SqsMessage::default();
    unreadable.body = Some("{}".into());
    assert_eq!(settle(&f.app, &unreadable).await.unwrap(), Settled::Done);
}

#[tokio::test]
async fn the_last_delivery_by_receive_count_fails_an_unfinished_step_instead_of_dead_lettering() {
    let f = Fixture::new().await;
    let run_id = f.start(3).await;
    let mut received = f.queue.inner.receive(10, Duration::from_secs(30), Duration::from_millis(50)).await.unwrap();
    assert_eq!(received.len(), 1);
    // The store fails every read: the step cannot even be loaded.
    f.store.fail_reads.store(true, Ordering::SeqCst);
    received[0].receive_count = f.app.config.max_receives - 1;
    let response = handle_batch(&f.app, sqs_event(&received)).await;
    assert_eq!(response.batch_item_failures.len(), 1, "not yet the last delivery: kept for a retry");
    // The store is back, and SQS says this is the delivery its redrive policy allows last.
    f.store.fail_reads.store(false, Ordering::SeqCst);
    received[0].receive_count = f.app.config.max_receives;
    let response = handle_batch(&f.app, sqs_event(&received)).await;
    assert!(response.batch_item_failures.is_empty(), "acknowledged, never dead-lettered");
    let run = f.run(&run_id).await;
    assert_eq!(run["status"], "failed", "{run}");
    assert_eq!(run["error"]["code"], "DELIVERY_EXHAUSTED", "{run}");
}

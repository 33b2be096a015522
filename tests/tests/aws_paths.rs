//! Every run ends, on the AWS adapters too: the failure paths of the engine suite
//! (`shared/src/engine/tests/paths.rs`, on SQLite) run here on DynamoDB + SQS + S3 (moto): a
//! condition whose `when` fails, a split wider than a transaction with failing items (with
//! and without an error edge), a result too large to store, a panicking block.

use async_trait::async_trait;
use baton::adapters::sqs::SqsQueue;
use baton::app::AppState;
use baton::blocks::{BlockContext, Executor, Outcome as BlockOutcome};
use baton::engine::StartRequest;
use baton::model::Block;
use baton::queue::{Outcome, Queue};
use baton_tests::moto::moto;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::{Duration, Instant};

struct Env {
    app: AppState,
    queue: Arc<SqsQueue>,
    acct: String,
}

async fn env() -> Env {
    let m = baton_tests::cost::moto_app(moto(), "paths", Duration::from_secs(10)).await.unwrap();
    Env { app: m.app, queue: m.queue, acct: m.acct }
}

impl Env {
    async fn workflow(&self, def: Value) {
        baton::workflows::create(self.app.store.as_ref(), &self.acct, def).await.unwrap();
    }

    /// Starts a run and plays the worker's event source until the run has ended.
    async fn run(&self, wf: &str, input: Value) -> Value {
        let req = StartRequest { input, source: "test".into(), ..Default::default() };
        let started = self.app.engine.start_run(&self.acct, wf, req).await.unwrap();
        let id = started.run["run_id"].as_str().unwrap().to_string();
        let t0 = Instant::now();
        loop {
            let r = self.app.engine.get_run(&self.acct, &id).await.unwrap();
            if matches!(r["status"].as_str(), Some("completed" | "failed" | "cancelled")) {
                return r;
            }
            assert!(t0.elapsed() < Duration::from_secs(240), "the run did not end: {r:#}");
            let msgs = self.queue.receive(10, Duration::from_secs(30), Duration::from_millis(200)).await.unwrap();
            let mut set = tokio::task::JoinSet::new();
            for m in msgs {
                let (app, queue) = (self.app.clone(), self.queue.clone());
                set.spawn(async move {
                    let (outcome, successors) = app.engine.process_deferred(&m.body, false).await;
                    if !successors.is_empty() {
                        queue.send_batch(successors).await.unwrap();
                    }
                    match outcome {
                        Outcome::Ack => queue.delete(&m.receipt).await.unwrap(),
                        Outcome::RetryAfter(d) => {
                            queue.change_visibility(&m.receipt, d.min(Duration::from_secs(2))).await.unwrap()
                        }
                    }
                });
            }
            while set.join_next().await.is_some() {}
        }
    }
}

fn step<'a>(run: &'a Value, key: &str) -> &'a Value {
    run["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["step_key"] == key)
        .unwrap_or_else(|| panic!("no step {key}: {run:#}"))
}

/// No step is left pending, running or waiting when the run has ended.
fn all_ended(run: &Value) {
    for s in run["steps"].as_array().unwrap() {
        let st = s["status"].as_str().unwrap_or("");
        assert!(matches!(st, "completed" | "failed" | "skipped" | "cancelled"), "{st}: {s:#}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_condition_whose_when_fails_takes_its_error_edge_on_dynamodb() {
    let e = env().await;
    e.workflow(json!({"id": "cond", "name": "c", "status": "active",
        "blocks": [
            {"id": "start", "type": "starter"},
            {"id": "check", "type": "condition"},
            {"id": "big", "type": "transform", "config": {"mapping": {"v": "big"}}},
            {"id": "oops", "type": "transform", "config": {"mapping": {"handled": true}}}],
        "edges": [
            {"from": "start", "to": "check"},
            {"from": "check", "to": "big", "when": "1 / input.x > 0"},
            {"from": "check", "to": "oops", "on": "error"}]}))
        .await;
    let r = e.run("cond", json!({"x": 0})).await;
    assert_eq!(r["status"], "completed", "{r:#}");
    assert_eq!(step(&r, "check")["error"]["code"], "EXPRESSION_ERROR", "{r:#}");
    assert_eq!(r["output"], json!({"handled": true}));
    all_ended(&r);
}

fn split_flow(id: &str, on_error: bool) -> Value {
    let mut edges = vec![json!({"from": "start", "to": "fan"}), json!({"from": "fan", "to": "each"})];
    let mut blocks = vec![
        json!({"id": "start", "type": "starter"}),
        json!({"id": "fan", "type": "split", "config": {"items": "{{input.xs}}"}}),
        json!({"id": "each", "type": "transform", "config": {"mapping": {"inv": "{{ 1 / item }}"}}}),
    ];
    if on_error {
        blocks.push(json!({"id": "rescue", "type": "transform", "config": {"mapping": {"rescued": true}}}));
        edges.push(json!({"from": "each", "to": "rescue", "on": "error"}));
    }
    json!({"id": id, "name": id, "status": "active", "blocks": blocks, "edges": edges})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_split_of_150_items_with_a_failing_item_ends_on_dynamodb_with_and_without_an_error_edge() {
    let e = env().await;
    e.workflow(split_flow("handled", true)).await;
    e.workflow(split_flow("unhandled", false)).await;
    let mut xs: Vec<i64> = (1..=150).collect();
    xs[75] = 0;
    let r = e.run("handled", json!({"xs": xs})).await;
    assert_eq!(r["status"], "completed", "{r:#}");
    assert_eq!(r["output"], json!({"rescued": true}));
    all_ended(&r);
    let r = e.run("unhandled", json!({"xs": xs})).await;
    assert_eq!(r["status"], "failed", "{r:#}");
    assert_eq!(r["error"]["code"], "TEMPLATE_ERROR", "{r:#}");
    assert!(r["error"]["message"].as_str().is_some_and(|m| m.contains("item 75")), "{r:#}");
    all_ended(&r);
    // Every item fine: the collection holds all 150 outputs, in order.
    let ok: Vec<i64> = (1..=150).collect();
    let r = e.run("unhandled", json!({"xs": ok})).await;
    assert_eq!(r["status"], "completed", "{r:#}");
    assert_eq!(r["output"].as_array().map(Vec::len), Some(150), "{:#}", r["output"]);
    assert_eq!(r["output"][149], json!({"inv": 1.0 / 150.0}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_result_too_large_to_store_fails_its_step_and_takes_its_error_edge_on_dynamodb() {
    let e = env().await;
    e.workflow(json!({"id": "big", "name": "b", "status": "active",
        "blocks": [
            {"id": "start", "type": "starter"},
            {"id": "double", "type": "transform", "config": {"mapping": {"a": "{{input.s}}", "b": "{{input.s}}"}}},
            {"id": "small", "type": "transform", "config": {"mapping": {"fallback": true}}}],
        "edges": [
            {"from": "start", "to": "double"},
            {"from": "double", "to": "small", "on": "error"}]}))
        .await;
    let r = e.run("big", json!({"s": "x".repeat(600 * 1024)})).await;
    assert_eq!(r["status"], "completed", "{r:#}");
    assert_eq!(step(&r, "double")["error"]["code"], "OUTPUT_TOO_LARGE");
    assert_eq!(r["output"], json!({"fallback": true}));
    all_ended(&r);
}

struct Panics;

#[async_trait]
impl Executor for Panics {
    async fn execute(&self, _b: &Block, _cx: &BlockContext<'_>) -> BlockOutcome {
        panic!("a bug in a block")
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_block_fails_its_step_and_the_run_ends_on_dynamodb() {
    let e = env().await;
    e.app.engine.register_executor("code", Arc::new(Panics));
    e.workflow(json!({"id": "boom", "name": "p", "status": "active",
        "steps": [{"id": "start", "type": "starter"}, {"id": "bug", "type": "code", "config": {"code": "return 1"}}]}))
        .await;
    let r = e.run("boom", json!({})).await;
    assert_eq!(r["status"], "failed", "{r:#}");
    assert_eq!(step(&r, "bug")["error"]["code"], "BLOCK_PANICKED", "{r:#}");
    all_ended(&r);
}

//! Every run ends: failures on every path (a condition's `when`, a split's items, a result
//! too large to store, a panicking block) and fan-outs wider than one transaction.

use super::*;

/// A block that fails for the items (by `index`) listed, panics when told, or returns a
/// large output; counts its executions by step.
struct Scripted {
    fail_items: Vec<i64>,
    output_bytes: usize,
    panic: bool,
    calls: std::sync::Mutex<std::collections::HashMap<String, usize>>,
}

impl Scripted {
    fn new() -> Self {
        Scripted { fail_items: Vec::new(), output_bytes: 0, panic: false, calls: Default::default() }
    }
    fn calls(&self, key: &str) -> usize {
        self.calls.lock().unwrap().get(key).copied().unwrap_or(0)
    }
    fn total_calls(&self) -> usize {
        self.calls.lock().unwrap().values().sum()
    }
}

#[async_trait]
impl Executor for Scripted {
    async fn execute(&self, _b: &Block, cx: &BlockContext<'_>) -> BlockOutcome {
        let ctx = cx.data;
        let key = cx.step_key.to_string();
        *self.calls.lock().unwrap().entry(key).or_default() += 1;
        if self.panic {
            panic!("scripted panic");
        }
        if let Some(i) = ctx["index"].as_i64()
            && self.fail_items.contains(&i)
        {
            return BlockOutcome::Fail(StepError::fatal("ITEM_BROKEN", format!("item {i} is broken")));
        }
        if self.output_bytes > 0 {
            return BlockOutcome::Output(json!({"blob": "x".repeat(self.output_bytes)}));
        }
        BlockOutcome::Output(json!({"item": ctx["item"], "index": ctx["index"]}))
    }
}

/// No step of a finished run is left pending, running or waiting.
fn assert_all_steps_ended(r: &Value) {
    for s in r["steps"].as_array().unwrap() {
        let st = s["status"].as_str().unwrap_or("");
        assert!(crate::engine::is_terminal_step(st), "step {} is {st} in a {} run: {r:#}", s["step_key"], r["status"]);
    }
}

fn condition_flow() -> Value {
    json!({"blocks": [
        {"id": "start", "type": "starter"},
        {"id": "check", "type": "condition"},
        {"id": "big", "type": "transform", "config": {"mapping": {"path": "big"}}},
        {"id": "small", "type": "transform", "config": {"mapping": {"path": "small"}}},
        {"id": "oops", "type": "transform", "config": {"mapping": {"path": "error", "code": "{{steps.check.error.code}}"}}}],
      "edges": [
        {"from": "start", "to": "check"},
        {"from": "check", "to": "big", "when": "1 / input.x > 0"},
        {"from": "check", "to": "small"},
        {"from": "check", "to": "oops", "on": "error"}]})
}

#[tokio::test]
async fn a_condition_whose_when_fails_takes_its_error_edge() {
    let e = env();
    install(&e.app, "wf", condition_flow()).await;
    let id = start(&e.app, "wf", json!({"x": 0})).await;
    drain(&e.app, Duration::from_secs(10)).await;
    let r = run(&e.app, &id).await;
    assert_eq!(r["status"], "completed", "{r:#}");
    assert_eq!(r["output"], json!({"path": "error", "code": "EXPRESSION_ERROR"}));
    assert_eq!(step(&r, "check")["status"], "failed");
    assert_eq!(step(&r, "big")["status"], "skipped");
    assert_eq!(step(&r, "small")["status"], "skipped");
    assert_all_steps_ended(&r);

    // The same condition that evaluates takes its branch, and the error edge is skipped.
    let id = start(&e.app, "wf", json!({"x": 2})).await;
    drain(&e.app, Duration::from_secs(10)).await;
    let r = run(&e.app, &id).await;
    assert_eq!(r["output"], json!({"path": "big"}), "{r:#}");
    assert_eq!(step(&r, "oops")["status"], "skipped");
}

#[tokio::test]
async fn a_condition_whose_when_fails_without_an_error_edge_fails_the_run() {
    let e = env();
    let mut def = condition_flow();
    def["blocks"].as_array_mut().unwrap().pop();
    def["edges"].as_array_mut().unwrap().pop();
    install(&e.app, "wf", def).await;
    let id = start(&e.app, "wf", json!({"x": 0})).await;
    drain(&e.app, Duration::from_secs(10)).await;
    let r = run(&e.app, &id).await;
    assert_eq!(r["status"], "failed", "{r:#}");
    assert_eq!(r["error"]["code"], "EXPRESSION_ERROR");
    assert!(r["error"]["message"].as_str().unwrap().contains("division by zero"), "{r:#}");
}

fn split_flow(on_error: bool) -> Value {
    let mut def = json!({"blocks": [
        {"id": "s", "type": "starter"},
        {"id": "each", "type": "split", "config": {"items": "{{input.items}}"}},
        {"id": "work", "type": "code", "config": {"code": "return 1"}},
        {"id": "sum", "type": "transform", "config": {"mapping": {"n": "{{steps.work.output | size}}", "last": "{{steps.work.output | last}}"}}}],
      "edges": [{"from": "s", "to": "each"}, {"from": "each", "to": "work"}, {"from": "work", "to": "sum"}]});
    if on_error {
        def["blocks"].as_array_mut().unwrap().push(
            json!({"id": "recover", "type": "transform", "config": {"mapping": {"recovered": "{{steps.work.error.code}}"}}}),
        );
        def["edges"].as_array_mut().unwrap().push(json!({"from": "work", "to": "recover", "on": "error"}));
    }
    def
}

#[tokio::test]
async fn a_split_wider_than_a_transaction_completes_with_every_item_once() {
    let e = env();
    let exec = Arc::new(Scripted::new());
    e.app.engine.register_executor("code", exec.clone());
    install(&e.app, "wf", split_flow(false)).await;
    // More than one transaction's worth of items, and more than one fan-out chunk.
    let n = crate::engine::FAN_CHUNK + 250;
    let items: Vec<Value> = (0..n).map(|i| json!(i * 10)).collect();
    let id = start(&e.app, "wf", json!({"items": items})).await;
    drain(&e.app, Duration::from_secs(120)).await;
    let r = run(&e.app, &id).await;
    assert_eq!(r["status"], "completed", "{r:#}");
    assert_eq!(r["output"]["n"], n);
    assert_eq!(r["output"]["last"], json!({"item": (n - 1) * 10, "index": n - 1}));
    assert_eq!(exec.total_calls(), n, "every item ran once");
    for i in [0, 1, 499, 500, n - 1] {
        assert_eq!(e.counts.commits_of(&id, &format!("work[{i}]")), 1, "item {i} committed once");
    }
    assert_eq!(e.counts.commits_of(&id, "work"), 1, "the collection committed once");
    assert_eq!(step(&r, "work")["items"], json!({"expected": n, "completed": n}));
    assert_all_steps_ended(&r);
}

#[tokio::test]
async fn a_failing_item_with_an_error_edge_ends_the_run_completed_and_its_siblings_ended() {
    let e = env();
    let exec = Arc::new(Scripted { fail_items: vec![3], ..Scripted::new() });
    e.app.engine.register_executor("code", exec.clone());
    install(&e.app, "wf", split_flow(true)).await;
    let items: Vec<Value> = (0..40).map(|i| json!(i)).collect();
    let id = start(&e.app, "wf", json!({"items": items})).await;
    drain(&e.app, Duration::from_secs(30)).await;
    let r = run(&e.app, &id).await;
    assert_eq!(r["status"], "completed", "{r:#}");
    assert_eq!(r["output"], json!({"recovered": "ITEM_BROKEN"}));
    assert_eq!(step(&r, "work")["status"], "failed");
    assert_eq!(step(&r, "work[3]")["status"], "failed");
    assert_eq!(step(&r, "sum")["status"], "skipped");
    assert_all_steps_ended(&r);
    assert_eq!(e.counts.commits_of(&id, "recover"), 1);
}

#[tokio::test]
async fn a_failing_item_without_an_error_edge_fails_the_run_with_its_error() {
    let e = env();
    let exec = Arc::new(Scripted { fail_items: vec![7], ..Scripted::new() });
    e.app.engine.register_executor("code", exec.clone());
    install(&e.app, "wf", split_flow(false)).await;
    let items: Vec<Value> = (0..20).map(|i| json!(i)).collect();
    let id = start(&e.app, "wf", json!({"items": items})).await;
    drain(&e.app, Duration::from_secs(30)).await;
    let r = run(&e.app, &id).await;
    assert_eq!(r["status"], "failed", "{r:#}");
    assert_eq!(r["error"]["code"], "ITEM_BROKEN");
    assert!(r["error"]["message"].as_str().unwrap().starts_with("item 7:"), "{r:#}");
    assert_all_steps_ended(&r);

    // Redrive runs the failed item again, and only what did not complete.
    let fixed = Arc::new(Scripted::new());
    e.app.engine.register_executor("code", fixed.clone());
    e.app.engine.redrive_run(ACCT, &id).await.unwrap();
    drain(&e.app, Duration::from_secs(30)).await;
    let r = run(&e.app, &id).await;
    assert_eq!(r["status"], "completed", "{r:#}");
    assert_eq!(r["output"]["n"], 20);
    assert_eq!(fixed.calls("work[7]"), 1);
    assert!(fixed.total_calls() < 20, "completed items are not run again ({} ran)", fixed.total_calls());
    assert_eq!(exec.calls("work[7]"), 1);
}

#[tokio::test]
async fn a_fork_and_a_skipped_branch_wider_than_a_transaction_end_in_one_commit_each() {
    let e = env();
    let width = 150;
    let mut blocks = vec![json!({"id": "start", "type": "starter"}), json!({"id": "check", "type": "condition"})];
    let mut edges = vec![json!({"from": "start", "to": "check"})];
    for i in 0..width {
        blocks.push(json!({"id": format!("b{i}"), "type": "transform", "config": {"mapping": {"i": i}}}));
        edges.push(json!({"from": "check", "to": format!("b{i}"), "when": "input.wide"}));
        edges.push(json!({"from": format!("b{i}"), "to": "join"}));
    }
    blocks.push(json!({"id": "narrow", "type": "transform", "config": {"mapping": {"narrow": true}}}));
    edges.push(json!({"from": "check", "to": "narrow"}));
    edges.push(json!({"from": "narrow", "to": "join"}));
    blocks.push(json!({"id": "join", "type": "transform", "config": {"mapping": {"last": "{{steps.b149.output.i}}"}}}));
    install(&e.app, "wf", json!({"blocks": blocks.clone(), "edges": edges.clone()})).await;

    // All 150 branches skipped: the condition's commit names them.
    let id = start(&e.app, "wf", json!({"wide": false})).await;
    drain(&e.app, Duration::from_secs(30)).await;
    let r = run(&e.app, &id).await;
    assert_eq!(r["status"], "completed", "{r:#}");
    assert_eq!(step(&r, "b0")["status"], "skipped");
    assert_eq!(step(&r, "join")["status"], "completed");
    let skipped = events(&e.app, &id).await.iter().filter(|e| e["type"] == "step.skipped").count();
    assert_eq!(skipped, width, "every skipped branch is on the timeline");

    // A fork of 150 (a plain block's edges are all taken) and a join of 151.
    let mut blocks = blocks;
    blocks[1] = json!({"id": "check", "type": "transform", "config": {"mapping": {}}});
    let edges: Vec<Value> = edges
        .into_iter()
        .map(|mut e| {
            e.as_object_mut().unwrap().remove("when");
            e
        })
        .collect();
    install(&e.app, "fork", json!({"blocks": blocks, "edges": edges})).await;
    let id = start(&e.app, "fork", json!({})).await;
    drain(&e.app, Duration::from_secs(60)).await;
    let r = run(&e.app, &id).await;
    assert_eq!(r["status"], "completed", "{r:#}");
    assert_eq!(r["output"], json!({"last": 149}), "{:#} {:#}", step(&r, "b149"), step(&r, "join"));
    assert_eq!(e.counts.commits_of(&id, "join"), 1);
    assert_all_steps_ended(&r);
}

#[tokio::test]
async fn an_output_too_large_to_store_fails_the_step_and_takes_its_error_edge() {
    let e = env();
    let exec = Arc::new(Scripted { output_bytes: 2 * 1024 * 1024, ..Scripted::new() });
    e.app.engine.register_executor("code", exec.clone());
    install(
        &e.app,
        "wf",
        json!({"blocks": [
            {"id": "s", "type": "starter"},
            {"id": "work", "type": "code", "config": {"code": "return 1"}},
            {"id": "recover", "type": "transform", "config": {"mapping": {"code": "{{steps.work.error.code}}"}}}],
          "edges": [{"from": "s", "to": "work"}, {"from": "work", "to": "recover", "on": "error"}]}),
    )
    .await;
    let id = start(&e.app, "wf", json!({})).await;
    drain(&e.app, Duration::from_secs(20)).await;
    let r = run(&e.app, &id).await;
    assert_eq!(r["status"], "completed", "{r:#}");
    assert_eq!(r["output"], json!({"code": "OUTPUT_TOO_LARGE"}));
    assert_eq!(exec.calls("work"), 1, "the block ran once: its failure is final");
    assert_all_steps_ended(&r);

    // Without an error edge, the run fails with the code.
    install(&e.app, "bare", json!({"steps": [{"id": "s", "type": "starter"}, {"id": "work", "type": "code", "config": {"code": "return 1"}}]})).await;
    let id = start(&e.app, "bare", json!({})).await;
    drain(&e.app, Duration::from_secs(20)).await;
    let r = run(&e.app, &id).await;
    assert_eq!(r["status"], "failed", "{r:#}");
    assert_eq!(r["error"]["code"], "OUTPUT_TOO_LARGE");
    assert_eq!(step(&r, "work")["status"], "failed");
}

#[tokio::test]
async fn a_panicking_block_fails_its_step_with_block_panicked() {
    let e = env();
    let exec = Arc::new(Scripted { panic: true, ..Scripted::new() });
    e.app.engine.register_executor("code", exec.clone());
    install(&e.app, "wf", json!({"steps": [{"id": "s", "type": "starter"}, {"id": "work", "type": "code", "config": {"code": "return 1"}}]})).await;
    let id = start(&e.app, "wf", json!({})).await;
    drain(&e.app, Duration::from_secs(20)).await;
    let r = run(&e.app, &id).await;
    assert_eq!(r["status"], "failed", "{r:#}");
    assert_eq!(r["error"]["code"], "BLOCK_PANICKED");
    assert!(r["error"]["message"].as_str().unwrap().contains("scripted panic"), "{r:#}");
    assert_eq!(exec.calls("work"), 1);
}

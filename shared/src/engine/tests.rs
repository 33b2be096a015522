//! Engine behaviour on the real SQLite adapters: the step protocol under redelivery,
//! duplicate delivery, joins, skips, retries, timeouts, cancel, human tasks, splits.

use crate::adapters::{Sqlite, SqliteQueue, SqliteStore};
use crate::app::{App, AppConfig, AppState};
use crate::blocks::{BlockContext, Executor, Outcome as BlockOutcome, StepError};
use crate::engine::{Msg, StartRequest};
use crate::error::Error;
use crate::keys;
use crate::model::{Block, build_graph};
use crate::queue::Outcome;
use crate::store::{Attrs, Item};
use async_trait::async_trait;
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

const ACCT: &str = "acct_test";

struct Env {
    app: AppState,
    /// Counts the landed commits of each step (see `testing::CountingStore`).
    counts: Arc<crate::testing::CountingStore>,
    _dir: tempfile::TempDir,
}

fn env() -> Env {
    let cfg = AppConfig { lease: Duration::from_secs(2), max_receives: 5, ..AppConfig::default() };
    env_with(cfg, |db| Arc::new(SqliteQueue::new(db, "steps", 5))).0
}

/// An engine on a fresh database, its queue made by `queue` on that database.
fn env_with<Q: crate::queue::Queue>(cfg: AppConfig, queue: impl FnOnce(Arc<Sqlite>) -> Arc<Q>) -> (Env, Arc<Q>) {
    let dir = tempfile::tempdir().unwrap();
    let db = Sqlite::open(&dir.path().join("t.db")).unwrap();
    let counts = Arc::new(crate::testing::CountingStore::new(Arc::new(SqliteStore::new(db.clone()))));
    let queue = queue(db);
    let app = App::new(counts.clone(), queue.clone(), Arc::new(crate::secrets::SecretBox::ephemeral()), cfg);
    (Env { app, counts, _dir: dir }, queue)
}

async fn install(app: &AppState, wf: &str, def: Value) {
    let g = build_graph(def.get("blocks"), def.get("edges"), def.get("steps")).unwrap();
    let mut head = Attrs::new();
    head.insert("id".into(), json!(wf));
    head.insert("name".into(), json!(wf));
    head.insert("status".into(), json!("active"));
    head.insert("version".into(), json!(1));
    app.store.put(Item::new(keys::workflow(ACCT, wf), head), None).await.unwrap();
    let mut v = Attrs::new();
    v.insert("version".into(), json!(1));
    v.insert("graph".into(), serde_json::to_value(&g).unwrap());
    v.insert("input_schema".into(), def.get("inputSchema").cloned().unwrap_or(Value::Null));
    v.insert("variables".into(), def.get("variables").cloned().unwrap_or(json!({})));
    app.store.put(Item::new(keys::version(ACCT, wf, 1), v), None).await.unwrap();
}

async fn start(app: &AppState, wf: &str, input: Value) -> String {
    let s = app
        .engine
        .start_run(ACCT, wf, StartRequest { input, source: "test".into(), ..Default::default() })
        .await
        .unwrap();
    s.run["run_id"].as_str().unwrap().to_string()
}

/// Plays the queue until it is empty (delayed messages included) or `limit` passes.
async fn drain(app: &AppState, limit: Duration) {
    let t0 = Instant::now();
    let mut idle = 0;
    while t0.elapsed() < limit {
        let msgs = app.queue.receive(10, Duration::from_secs(2), Duration::from_millis(50)).await.unwrap();
        if msgs.is_empty() {
            idle += 1;
            if idle > 4 && !pending_work(app).await {
                return;
            }
            continue;
        }
        idle = 0;
        for m in msgs {
            match app.engine.process(&m.body).await {
                Outcome::Ack => app.queue.delete(&m.receipt).await.unwrap(),
                Outcome::RetryAfter(d) => {
                    app.queue.change_visibility(&m.receipt, d.min(Duration::from_secs(1))).await.unwrap()
                }
            }
        }
    }
}

async fn pending_work(app: &AppState) -> bool {
    // Any message still in the queue (visible or not) counts as work.
    let q = app.queue.clone();
    let any = q.receive(1, Duration::ZERO, Duration::from_millis(300)).await.unwrap();
    !any.is_empty()
}

async fn run(app: &AppState, run_id: &str) -> Value {
    app.engine.get_run(ACCT, run_id).await.unwrap()
}

async fn events(app: &AppState, run_id: &str) -> Vec<Value> {
    let page = app.engine.run_events(ACCT, run_id, 1000, None).await.unwrap();
    assert!(page["next_cursor"].is_null(), "one page holds a test run's timeline");
    page["data"].as_array().unwrap().clone()
}

fn step<'a>(run: &'a Value, key: &str) -> &'a Value {
    run["steps"].as_array().unwrap().iter().find(|s| s["step_key"] == key).unwrap_or(&Value::Null)
}

fn chain5() -> Value {
    json!({"steps": [
        {"id": "start", "type": "starter"},
        {"id": "a", "type": "transform", "config": {"mapping": {"n": "{{input.n | plus: 1}}"}}},
        {"id": "b", "type": "transform", "config": {"mapping": {"n": "{{steps.a.output.n | times: 2}}"}}},
        {"id": "c", "type": "transform", "config": {"mapping": {"n": "{{steps.b.output.n | minus: 3}}"}}},
        {"id": "done", "type": "response", "config": {"body": {"result": "{{steps.c.output.n}}"}}}]})
}

#[tokio::test]
async fn linear_run_completes_with_response_output() {
    let e = env();
    install(&e.app, "wf", chain5()).await;
    let id = start(&e.app, "wf", json!({"n": 4})).await;
    drain(&e.app, Duration::from_secs(10)).await;
    let r = run(&e.app, &id).await;
    assert_eq!(r["status"], "completed", "{r:#}");
    assert_eq!(r["output"], json!({"result": 7}));
    assert_eq!(r["steps"].as_array().unwrap().len(), 5);
}

#[tokio::test]
async fn redelivery_after_commit_republishes_successors_and_commits_once() {
    let e = env();
    install(&e.app, "wf", chain5()).await;
    let id = start(&e.app, "wf", json!({"n": 1})).await;
    // Take the first message and handle it, but "crash" before publishing or acking.
    let m = e.app.queue.receive(1, Duration::from_millis(200), Duration::from_millis(200)).await.unwrap().remove(0);
    let first = e.app.engine.handle_message(&m.body).await;
    assert_eq!(named(&first.publish), vec![(id.clone(), "a".to_string())]);
    // Successor messages name the run's workflow version (what the step reads follows from it)
    // and the order of the commit that named them.
    assert!(matches!(&first.publish[0], Msg::Step { p: Some(p), .. } if p.w == "wf" && p.v == 1 && p.q.is_some()));
    // The queue redelivers the same message; the step is already committed.
    tokio::time::sleep(Duration::from_millis(250)).await;
    let again = e.app.queue.receive(1, Duration::from_secs(2), Duration::from_millis(500)).await.unwrap().remove(0);
    assert_eq!(again.body, m.body);
    assert_eq!(again.receive_count, 2);
    let second = e.app.engine.handle_message(&again.body).await;
    assert_eq!(second.outcome, Some(Outcome::Ack));
    assert_eq!(named(&second.publish), vec![(id.clone(), "a".to_string())], "the lost successor is published again");
    e.app.engine.send(second.publish.into_iter().map(|m| (m, Duration::ZERO)).collect()).await.unwrap();
    e.app.queue.delete(&again.receipt).await.unwrap();
    drain(&e.app, Duration::from_secs(10)).await;
    assert_eq!(run(&e.app, &id).await["status"], "completed");
    assert_eq!(e.counts.commits_of(&id, "start"), 1);
}

/// The (run, step) of step messages.
fn named(msgs: &[Msg]) -> Vec<(String, String)> {
    msgs.iter()
        .filter_map(|m| match m {
            Msg::Step { r, s, .. } => Some((r.clone(), s.clone())),
            _ => None,
        })
        .collect()
}

/// Takes the next message off the queue and handles it, publishing nothing.
async fn handle_next(app: &AppState) -> (crate::queue::Received, crate::engine::Handled) {
    let m = app.queue.receive(1, Duration::from_secs(5), Duration::from_millis(500)).await.unwrap().remove(0);
    let h = app.engine.handle_message(&m.body).await;
    (m, h)
}

#[tokio::test]
async fn a_chain_commit_writes_only_its_step_and_the_successor_appears_on_its_claim() {
    let e = env();
    install(&e.app, "wf", chain5()).await;
    let id = start(&e.app, "wf", json!({"n": 4})).await;
    let run_item = e.app.store.get(&keys::run(&id)).await.unwrap().unwrap();
    assert_eq!(run_item.get("next"), Some(&json!(["start"])));
    assert_eq!(e.app.store.get(&keys::step(&id, "start")).await.unwrap(), None, "the entry step too");
    assert_eq!(step(&run(&e.app, &id).await, "start")["status"], "pending");
    let (m, h) = handle_next(&e.app).await;
    assert_eq!(named(&h.publish), vec![(id.clone(), "a".to_string())]);
    let start_step = e.app.store.get(&keys::step(&id, "start")).await.unwrap().unwrap();
    assert_eq!(start_step.str("status"), Some("completed"));
    assert_eq!(start_step.get("next"), Some(&json!(["a"])));
    assert_eq!(e.app.store.get(&keys::step(&id, "a")).await.unwrap(), None, "no item before the claim");
    assert_eq!(e.app.store.get(&keys::run(&id)).await.unwrap().unwrap(), run_item, "the run item is untouched");
    // Readers see the successor pending all the same.
    let r = run(&e.app, &id).await;
    assert_eq!(step(&r, "a")["status"], "pending");
    assert_eq!(r["status"], "running");
    e.app.engine.send(h.publish.into_iter().map(|m| (m, Duration::ZERO)).collect()).await.unwrap();
    e.app.queue.delete(&m.receipt).await.unwrap();
    drain(&e.app, Duration::from_secs(10)).await;
    let r = run(&e.app, &id).await;
    assert_eq!(r["status"], "completed", "{r:#}");
    assert_eq!(r["output"], json!({"result": 7}));
    for k in ["start", "a", "b", "c", "done"] {
        let s = e.app.store.get(&keys::step(&id, k)).await.unwrap().unwrap();
        assert_eq!(s.str("status"), Some("completed"), "step {k}");
        assert_eq!(s.str("block"), Some(k));
        assert_eq!(s.get(crate::engine::LAZY), None, "the snapshot-only marker is never stored");
        assert_eq!(e.counts.commits_of(&id, k), 1, "step {k}");
    }
    assert!(r["updated_at"].as_str() >= step(&r, "done")["finished_at"].as_str(), "{r:#}");
}

#[tokio::test]
async fn a_successor_without_an_item_is_cancelled_with_its_run() {
    let e = env();
    install(&e.app, "wf", chain5()).await;
    let id = start(&e.app, "wf", json!({"n": 1})).await;
    let (m, h) = handle_next(&e.app).await;
    e.app.engine.send(h.publish.into_iter().map(|m| (m, Duration::ZERO)).collect()).await.unwrap();
    e.app.queue.delete(&m.receipt).await.unwrap();
    e.app.engine.cancel_run(ACCT, &id).await.unwrap();
    drain(&e.app, Duration::from_secs(10)).await;
    let r = run(&e.app, &id).await;
    assert_eq!(r["status"], "cancelled");
    assert_eq!(step(&r, "a")["status"], "cancelled", "{r:#}");
    assert_eq!(r["steps"].as_array().unwrap().len(), 2);
    let a = e.app.store.get(&keys::step(&id, "a")).await.unwrap().unwrap();
    assert_eq!((a.str("status"), a.str("block")), (Some("cancelled"), Some("a")));
}

#[tokio::test]
async fn the_timeline_pages_through_stored_and_step_events_in_order() {
    let e = env();
    install(&e.app, "wf", chain5()).await;
    let id = start(&e.app, "wf", json!({"n": 1})).await;
    drain(&e.app, Duration::from_secs(10)).await;
    let all = events(&e.app, &id).await;
    let kinds: Vec<(&str, &str)> =
        all.iter().map(|e| (e["type"].as_str().unwrap(), e["step_key"].as_str().unwrap_or(""))).collect();
    assert_eq!(
        kinds,
        [
            ("run.started", ""),
            ("step.completed", "start"),
            ("step.completed", "a"),
            ("step.completed", "b"),
            ("step.completed", "c"),
            ("step.completed", "done"),
            ("run.completed", "")
        ]
    );
    assert_eq!(all[2]["data"], json!({"attempt": 1}));
    let mut paged = Vec::new();
    let mut cursor = None;
    loop {
        let page = e.app.engine.run_events(ACCT, &id, 2, cursor).await.unwrap();
        paged.extend(page["data"].as_array().unwrap().iter().cloned());
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    assert_eq!(paged, all);
    let bad = e.app.engine.run_events(ACCT, &id, 2, Some("zz".into())).await.unwrap_err();
    assert!(matches!(bad, Error::Validation { .. }), "{bad:?}");
}

#[tokio::test]
async fn a_step_left_running_by_a_dead_worker_fails_on_its_last_delivery() {
    let e = env();
    install(&e.app, "wf", chain5()).await;
    let id = start(&e.app, "wf", json!({"n": 1})).await;
    let m = e.app.queue.receive(1, Duration::from_secs(5), Duration::from_millis(500)).await.unwrap().remove(0);
    // A worker claimed the step and died; its lease has run out.
    let dead = crate::store::Update::default()
        .set("status", "running")
        .set("claim", "clm_dead")
        .set("lease_until", 1)
        .set("attempt", 1)
        .set("started_at", 1);
    e.app.store.update(&keys::step(&id, "start"), dead, None).await.unwrap();
    let (outcome, successors) = e.app.engine.process_deferred(&m.body, true).await;
    assert_eq!(outcome, Outcome::Ack);
    assert!(successors.is_empty());
    let r = run(&e.app, &id).await;
    assert_eq!(r["status"], "failed", "{r:#}");
    assert_eq!(step(&r, "start")["error"]["code"], "DELIVERY_EXHAUSTED");
    assert_eq!(r["error"]["code"], "DELIVERY_EXHAUSTED");
    assert_eq!(step(&r, "start")["attempt"], 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_failing_every_delivery_fails_its_step_before_the_dead_letter_queue() {
    let cfg = AppConfig { lease: Duration::from_secs(1), max_receives: 3, ..AppConfig::default() };
    let (e, _) = env_with(cfg, |db| Arc::new(SqliteQueue::new(db, "steps", 3)));
    let app = e.app.clone();
    install(&app, "wf", chain5()).await;
    let id = start(&app, "wf", json!({"n": 1})).await;
    // A step whose block the pinned graph does not have: every delivery errors.
    let mut ghost = Attrs::new();
    ghost.insert("block".into(), json!("ghost"));
    ghost.insert("status".into(), json!("pending"));
    ghost.insert("attempt".into(), json!(0));
    app.store.put(Item::new(keys::step(&id, "ghost"), ghost), None).await.unwrap();
    // Counted like any pending step (the run's completion goes by the counter).
    app.store.update(&keys::run(&id), crate::store::Update::default().add("active", 1), None).await.unwrap();
    app.engine.send(vec![(Msg::step(&id, "ghost"), Duration::ZERO)]).await.unwrap();
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let pool = tokio::spawn(crate::poller::run(app.clone(), 2, stopped));
    let t0 = Instant::now();
    let r = loop {
        let r = run(&app, &id).await;
        if r["status"] == "failed" || t0.elapsed() > Duration::from_secs(20) {
            break r;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    stop.send(true).unwrap();
    pool.await.unwrap();
    assert_eq!(r["status"], "failed", "{r:#}");
    assert_eq!(step(&r, "ghost")["error"]["code"], "DELIVERY_EXHAUSTED", "{r:#}");
    assert!(app.queue.dead_letters(10).await.unwrap().is_empty(), "nothing was dead-lettered");
}

#[tokio::test]
async fn concurrent_duplicate_delivery_commits_each_step_once() {
    let e = env();
    install(&e.app, "wf", chain5()).await;
    let id = start(&e.app, "wf", json!({"n": 1})).await;
    // Deliver the same step message several times at once, at every step.
    for _ in 0..5 {
        let msgs = e.app.queue.receive(10, Duration::from_secs(5), Duration::from_millis(500)).await.unwrap();
        if msgs.is_empty() {
            break;
        }
        for m in msgs {
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
    drain(&e.app, Duration::from_secs(15)).await;
    let r = run(&e.app, &id).await;
    assert_eq!(r["status"], "completed", "{r:#}");
    for k in ["start", "a", "b", "c", "done"] {
        assert_eq!(e.counts.commits_of(&id, k), 1, "step {k}");
    }
}

#[tokio::test]
async fn join_runs_once_after_both_branches() {
    let e = env();
    install(
        &e.app,
        "wf",
        json!({"blocks": [
            {"id": "s", "type": "starter"},
            {"id": "l", "type": "transform", "config": {"mapping": {"v": "left"}}},
            {"id": "r", "type": "transform", "config": {"mapping": {"v": "right"}}},
            {"id": "j", "type": "transform", "config": {"mapping": {"both": "{{steps.l.output.v}}+{{steps.r.output.v}}"}}}],
          "edges": [{"from": "s", "to": "l"}, {"from": "s", "to": "r"}, {"from": "l", "to": "j"}, {"from": "r", "to": "j"}]}),
    )
    .await;
    let id = start(&e.app, "wf", json!({})).await;
    drain(&e.app, Duration::from_secs(10)).await;
    let r = run(&e.app, &id).await;
    assert_eq!(r["status"], "completed", "{r:#}");
    assert_eq!(r["output"], json!({"both": "left+right"}));
    assert_eq!(e.counts.commits_of(&id, "j"), 1);
}

fn approval_flow() -> Value {
    json!({"blocks": [
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

/// A queue whose sends start failing once `allowed` more have gone through: a request
/// that dies between its store commit and its enqueue.
struct LosingQueue {
    inner: SqliteQueue,
    allowed: AtomicUsize,
}

impl LosingQueue {
    fn on(db: Arc<Sqlite>, allowed: usize) -> Arc<Self> {
        Arc::new(LosingQueue { inner: SqliteQueue::new(db, "steps", 5), allowed: AtomicUsize::new(allowed) })
    }
    fn take(&self) -> crate::error::Result<()> {
        match self.allowed.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)) {
            Ok(_) => Ok(()),
            Err(_) => Err(Error::Internal("the process died here".into())),
        }
    }
}

#[async_trait]
impl crate::queue::Queue for LosingQueue {
    async fn send(&self, msg: crate::queue::Message) -> crate::error::Result<()> {
        self.take()?;
        self.inner.send(msg).await
    }
    async fn send_batch(&self, msgs: Vec<crate::queue::Message>) -> crate::error::Result<()> {
        self.take()?;
        self.inner.send_batch(msgs).await
    }
    async fn receive(
        &self,
        max: usize,
        visibility: Duration,
        wait: Duration,
    ) -> crate::error::Result<Vec<crate::queue::Received>> {
        self.inner.receive(max, visibility, wait).await
    }
    async fn delete(&self, receipt: &str) -> crate::error::Result<()> {
        self.inner.delete(receipt).await
    }
    async fn change_visibility(&self, receipt: &str, visibility: Duration) -> crate::error::Result<()> {
        self.inner.change_visibility(receipt, visibility).await
    }
    async fn dead_letters(&self, max: usize) -> crate::error::Result<Vec<crate::queue::Received>> {
        self.inner.dead_letters(max).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_answer_whose_successors_were_never_enqueued_is_finished_by_the_safety_sweep() {
    let cfg = AppConfig { lease: Duration::from_millis(500), ..AppConfig::default() };
    let (e, queue) = env_with(cfg, |db| LosingQueue::on(db, usize::MAX));
    let app = e.app.clone();
    install(&app, "wf", approval_flow()).await;
    let id = start(&app, "wf", json!({"amount": 5000})).await;
    drain(&app, Duration::from_secs(10)).await;
    let r = run(&app, &id).await;
    assert_eq!(r["status"], "waiting_human", "{r:#}");
    let task = r["tasks"][0]["task_id"].as_str().unwrap().to_string();
    // The answer commits, then the process dies before the successor reaches the queue.
    queue.allowed.store(1, Ordering::SeqCst);
    let err = app.engine.complete_task(ACCT, &id, &task, json!({"approved": true})).await.unwrap_err();
    assert!(matches!(err, Error::Internal(_)), "{err:?}");
    queue.allowed.store(usize::MAX, Ordering::SeqCst);
    assert_eq!(run(&app, &id).await["tasks"][0]["status"], "completed", "the answer was committed");
    drain(&app, Duration::from_secs(15)).await;
    assert_eq!(run(&app, &id).await["status"], "running", "nothing moves before the sweep is due");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    drain(&app, Duration::from_secs(15)).await;
    let r = run(&app, &id).await;
    assert_eq!(r["status"], "completed", "the sweep published the stranded step: {r:#}");
    assert_eq!(r["output"], json!({"ok": true, "amount": 5000}));
}

#[tokio::test]
async fn condition_skips_the_unchosen_branch_and_the_join_still_runs() {
    let e = env();
    install(&e.app, "wf", approval_flow()).await;
    let id = start(&e.app, "wf", json!({"amount": 10})).await;
    drain(&e.app, Duration::from_secs(10)).await;
    let r = run(&e.app, &id).await;
    assert_eq!(r["status"], "completed", "{r:#}");
    assert_eq!(step(&r, "review")["status"], "skipped");
    assert_eq!(r["output"], json!({"ok": true, "amount": 10}));
}

#[tokio::test]
async fn human_approval_waits_then_resumes_on_completion() {
    let e = env();
    install(&e.app, "wf", approval_flow()).await;
    let id = start(&e.app, "wf", json!({"amount": 5000})).await;
    drain(&e.app, Duration::from_secs(10)).await;
    let r = run(&e.app, &id).await;
    assert_eq!(r["status"], "waiting_human", "{r:#}");
    let task = r["tasks"][0].clone();
    assert_eq!(task["prompt"], "Approve 5000?");
    let tid = task["task_id"].as_str().unwrap();
    // Bad answers are 400s and change nothing.
    let bad = e.app.engine.complete_task(ACCT, &id, tid, json!({"approved": "yes"})).await.unwrap_err();
    assert!(matches!(bad, Error::Validation { .. }));
    e.app.engine.complete_task(ACCT, &id, tid, json!({"approved": true, "feedback": "fine"})).await.unwrap();
    let twice = e.app.engine.complete_task(ACCT, &id, tid, json!({"approved": true})).await.unwrap_err();
    assert!(twice.is_conflict(), "{twice}");
    drain(&e.app, Duration::from_secs(10)).await;
    let r = run(&e.app, &id).await;
    assert_eq!(r["status"], "completed", "{r:#}");
    assert_eq!(step(&r, "review")["output"], json!({"approved": true, "feedback": "fine"}));
}

#[tokio::test]
async fn rejected_approval_fails_the_run_with_rejected() {
    let e = env();
    install(&e.app, "wf", approval_flow()).await;
    let id = start(&e.app, "wf", json!({"amount": 5000})).await;
    drain(&e.app, Duration::from_secs(10)).await;
    let tid = run(&e.app, &id).await["tasks"][0]["task_id"].as_str().unwrap().to_string();
    e.app.engine.complete_task(ACCT, &id, &tid, json!({"approved": false, "feedback": "too much"})).await.unwrap();
    drain(&e.app, Duration::from_secs(10)).await;
    let r = run(&e.app, &id).await;
    assert_eq!(r["status"], "failed");
    assert_eq!(r["error"]["code"], "REJECTED");
}

#[tokio::test]
async fn human_task_timeout_applies_the_default_outcome() {
    let e = env();
    install(
        &e.app,
        "wf",
        json!({"steps": [
            {"id": "ask", "type": "human", "config": {"kind": "question", "prompt": "Name?", "timeout": "300ms", "default": {"output": "anon"}}},
            {"id": "greet", "type": "transform", "config": {"mapping": {"hi": "hello {{steps.ask.output}}"}}}]}),
    )
    .await;
    let id = start(&e.app, "wf", json!({})).await;
    drain(&e.app, Duration::from_secs(10)).await;
    let r = run(&e.app, &id).await;
    assert_eq!(r["status"], "completed", "{r:#}");
    assert_eq!(r["output"], json!({"hi": "hello anon"}));
    assert_eq!(r["tasks"][0]["status"], "timed_out");
}

/// Fails `fail_times` times, then answers; counts its attempts.
struct Flaky {
    calls: AtomicUsize,
    fail_times: usize,
    sleep: Duration,
}

#[async_trait]
impl Executor for Flaky {
    async fn execute(&self, _b: &Block, _cx: &BlockContext<'_>) -> BlockOutcome {
        let n = self.calls.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(self.sleep).await;
        if n < self.fail_times {
            BlockOutcome::Fail(StepError::retryable("UPSTREAM", format!("attempt {} failed", n + 1)))
        } else {
            BlockOutcome::Output(json!({"attempts": n + 1}))
        }
    }
}

fn code_flow(retry: Value, timeout_ms: Option<u64>) -> Value {
    let mut b = json!({"id": "work", "type": "code", "config": {"code": "return 1"}, "retry": retry});
    if let Some(t) = timeout_ms {
        b["timeout_ms"] = json!(t);
    }
    json!({"steps": [{"id": "s", "type": "starter"}, b]})
}

#[tokio::test]
async fn retry_then_succeed_and_retry_then_fail() {
    let e = env();
    let flaky = Arc::new(Flaky { calls: AtomicUsize::new(0), fail_times: 2, sleep: Duration::ZERO });
    e.app.engine.register_executor("code", flaky.clone());
    install(&e.app, "ok", code_flow(json!({"max_attempts": 3, "backoff_ms": 20}), None)).await;
    let id = start(&e.app, "ok", json!({})).await;
    drain(&e.app, Duration::from_secs(10)).await;
    let r = run(&e.app, &id).await;
    assert_eq!(r["status"], "completed", "{r:#}");
    assert_eq!(r["output"], json!({"attempts": 3}));
    assert_eq!(step(&r, "work")["attempt"], 3);

    let e = env();
    let always = Arc::new(Flaky { calls: AtomicUsize::new(0), fail_times: 99, sleep: Duration::ZERO });
    e.app.engine.register_executor("code", always.clone());
    install(&e.app, "bad", code_flow(json!({"max_attempts": 2, "backoff_ms": 20}), None)).await;
    let id = start(&e.app, "bad", json!({})).await;
    drain(&e.app, Duration::from_secs(10)).await;
    let r = run(&e.app, &id).await;
    assert_eq!(r["status"], "failed", "{r:#}");
    assert_eq!(r["error"]["code"], "UPSTREAM");
    assert_eq!(always.calls.load(Ordering::SeqCst), 2);
    let retries = events(&e.app, &id).await.iter().filter(|e| e["type"] == "step.retrying").count();
    assert_eq!(retries, 1);
}

#[tokio::test]
async fn block_timeout_fails_the_step_with_timeout() {
    let e = env();
    let slow = Arc::new(Flaky { calls: AtomicUsize::new(0), fail_times: 0, sleep: Duration::from_millis(500) });
    e.app.engine.register_executor("code", slow.clone());
    install(&e.app, "wf", code_flow(json!({"max_attempts": 1}), Some(50))).await;
    let id = start(&e.app, "wf", json!({})).await;
    drain(&e.app, Duration::from_secs(10)).await;
    let r = run(&e.app, &id).await;
    assert_eq!(r["status"], "failed", "{r:#}");
    assert_eq!(r["error"]["code"], "TIMEOUT");
}

#[tokio::test]
async fn error_edge_handles_a_failure_and_redrive_restarts_a_failed_run() {
    let e = env();
    let always = Arc::new(Flaky { calls: AtomicUsize::new(0), fail_times: 1, sleep: Duration::ZERO });
    e.app.engine.register_executor("code", always.clone());
    install(&e.app, "wf", code_flow(json!({"max_attempts": 1}), None)).await;
    let id = start(&e.app, "wf", json!({})).await;
    drain(&e.app, Duration::from_secs(10)).await;
    assert_eq!(run(&e.app, &id).await["status"], "failed");
    // The second attempt succeeds: redrive picks up from the failed step.
    let r = e.app.engine.redrive_run(ACCT, &id).await.unwrap();
    assert_eq!(r["status"], "running", "a step already ran, so the run is running again");
    drain(&e.app, Duration::from_secs(10)).await;
    let r = run(&e.app, &id).await;
    assert_eq!(r["status"], "completed", "{r:#}");
    assert_eq!(e.counts.commits_of(&id, "s"), 1, "completed steps are not re-run");
    let again = e.app.engine.redrive_run(ACCT, &id).await.unwrap_err();
    assert!(matches!(again, Error::InvalidStatus(_)));

    install(
        &e.app,
        "handled",
        json!({"blocks": [
            {"id": "s", "type": "starter"},
            {"id": "work", "type": "agent", "config": {"prompt": "no provider named"}},
            {"id": "fallback", "type": "transform", "config": {"mapping": {"why": "{{steps.work.error.code}}"}}}],
          "edges": [{"from": "s", "to": "work"}, {"from": "work", "to": "fallback", "on": "error"}]}),
    )
    .await;
    let id = start(&e.app, "handled", json!({})).await;
    drain(&e.app, Duration::from_secs(10)).await;
    let r = run(&e.app, &id).await;
    assert_eq!(r["status"], "completed", "{r:#}");
    assert_eq!(r["output"], json!({"why": "PROVIDER_REQUIRED"}));
}

#[tokio::test]
async fn cancel_stops_pending_steps_and_closes_tasks() {
    let e = env();
    install(&e.app, "wf", approval_flow()).await;
    let id = start(&e.app, "wf", json!({"amount": 5000})).await;
    drain(&e.app, Duration::from_secs(10)).await;
    let r = e.app.engine.cancel_run(ACCT, &id).await.unwrap();
    assert_eq!(r["status"], "cancelled");
    assert_eq!(r["tasks"][0]["status"], "cancelled");
    let again = e.app.engine.cancel_run(ACCT, &id).await.unwrap_err();
    assert!(matches!(again, Error::InvalidStatus(_)));

    // A run cancelled before its first step ran drops it.
    install(&e.app, "chain", chain5()).await;
    let id = start(&e.app, "chain", json!({"n": 1})).await;
    e.app.engine.cancel_run(ACCT, &id).await.unwrap();
    drain(&e.app, Duration::from_secs(10)).await;
    let r = run(&e.app, &id).await;
    assert_eq!(r["status"], "cancelled");
    assert_eq!(step(&r, "start")["status"], "cancelled");
    assert_eq!(r["steps"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn split_fans_out_and_the_join_collects_results_in_order() {
    let e = env();
    install(
        &e.app,
        "wf",
        json!({"steps": [
            {"id": "s", "type": "starter"},
            {"id": "each", "type": "split", "config": {"items": "{{input.items}}"}},
            {"id": "price", "type": "transform", "config": {"mapping": {"i": "{{index}}", "total": "{{item.quantity | times: item.price}}"}}},
            {"id": "sum", "type": "transform", "config": {"mapping": {"total": "{{steps.price.output | map: 'total' | sum}}", "n": "{{steps.price.output | size}}"}}}]}),
    )
    .await;
    let items: Vec<Value> = (1..=7).map(|i| json!({"quantity": i, "price": 10})).collect();
    let id = start(&e.app, "wf", json!({"items": items})).await;
    drain(&e.app, Duration::from_secs(15)).await;
    let r = run(&e.app, &id).await;
    assert_eq!(r["status"], "completed", "{r:#}");
    assert_eq!(r["output"]["n"], 7);
    assert_eq!(r["output"]["total"].as_f64().unwrap(), 280.0);
    assert_eq!(step(&r, "price")["output"][6]["i"], 6);

    let id = start(&e.app, "wf", json!({"items": []})).await;
    drain(&e.app, Duration::from_secs(10)).await;
    let r = run(&e.app, &id).await;
    assert_eq!(r["status"], "completed", "{r:#}");
    assert_eq!(r["output"]["n"], 0);
}

#[tokio::test]
async fn delay_block_sleeps_through_the_queue() {
    let e = env();
    install(&e.app, "wf", json!({"steps": [{"id": "s", "type": "starter"}, {"id": "wait", "type": "delay", "config": {"duration": "300ms"}}]})).await;
    let t0 = Instant::now();
    let id = start(&e.app, "wf", json!({})).await;
    drain(&e.app, Duration::from_secs(10)).await;
    let r = run(&e.app, &id).await;
    assert_eq!(r["status"], "completed", "{r:#}");
    assert!(t0.elapsed() >= Duration::from_millis(300));
    assert_eq!(r["output"], json!({"waited_ms": 300}));
}

#[tokio::test]
async fn sync_execute_finishes_inline_or_returns_at_the_deadline() {
    let e = env();
    install(&e.app, "wf", chain5()).await;
    let r = e
        .app
        .engine
        .execute_sync(ACCT, "wf", StartRequest { input: json!({"n": 2}), ..Default::default() }, Duration::from_secs(5))
        .await
        .unwrap();
    assert!(r.finished);
    assert_eq!(r.run["output"], json!({"result": 3}));

    install(&e.app, "slow", json!({"steps": [{"id": "s", "type": "starter"}, {"id": "wait", "type": "delay", "config": {"duration": "200ms"}}]})).await;
    let r = e.app.engine.execute_sync(ACCT, "slow", StartRequest::default(), Duration::from_millis(50)).await.unwrap();
    assert!(!r.finished);
    let id = r.run["run_id"].as_str().unwrap().to_string();
    drain(&e.app, Duration::from_secs(10)).await;
    assert_eq!(run(&e.app, &id).await["status"], "completed");
}

#[tokio::test]
async fn idempotency_key_returns_the_same_run_and_conflicts_on_other_payload() {
    let e = env();
    install(&e.app, "wf", chain5()).await;
    let req =
        |n: i64| StartRequest { input: json!({"n": n}), idempotency_key: Some("k1".into()), ..Default::default() };
    let a = e.app.engine.start_run(ACCT, "wf", req(1)).await.unwrap();
    let b = e.app.engine.start_run(ACCT, "wf", req(1)).await.unwrap();
    assert!(a.created && !b.created);
    assert_eq!(a.run["run_id"], b.run["run_id"]);
    let c = e.app.engine.start_run(ACCT, "wf", req(2)).await.unwrap_err();
    assert!(c.is_conflict());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_start_that_died_before_its_send_gets_going_when_the_caller_retries_with_its_key() {
    let (e, queue) = env_with(AppConfig::default(), |db| LosingQueue::on(db, 0));
    let app = e.app.clone();
    install(&app, "wf", chain5()).await;
    let req = || StartRequest { input: json!({"n": 4}), idempotency_key: Some("k1".into()), ..Default::default() };
    // The run is committed, then the process dies before the first step is enqueued.
    app.engine.start_run(ACCT, "wf", req()).await.unwrap_err();
    queue.allowed.store(usize::MAX, Ordering::SeqCst);
    let again = app.engine.start_run(ACCT, "wf", req()).await.unwrap();
    assert!(!again.created, "the same run");
    drain(&app, Duration::from_secs(10)).await;
    let r = run(&app, again.run["run_id"].as_str().unwrap()).await;
    assert_eq!(r["status"], "completed", "{r:#}");
    assert_eq!(r["output"], json!({"result": 7}));
    // Once its first step was claimed, a replay sends nothing more.
    let (replayed, msgs) = app.engine.create_run(ACCT, "wf", req(), false).await.unwrap();
    assert!(!replayed.created && msgs.is_empty());
}

#[tokio::test]
async fn input_schema_applies_defaults_and_reports_paths() {
    let e = env();
    let mut def = chain5();
    def["inputSchema"] = json!({"type": "object", "required": ["n"], "properties": {"n": {"type": "number"}, "cur": {"type": "string", "default": "EUR"}}});
    install(&e.app, "wf", def).await;
    let s = e
        .app
        .engine
        .start_run(ACCT, "wf", StartRequest { input: json!({"n": 1}), ..Default::default() })
        .await
        .unwrap();
    assert_eq!(s.run["input"], json!({"n": 1, "cur": "EUR"}));
    let err = e
        .app
        .engine
        .start_run(ACCT, "wf", StartRequest { input: json!({"n": "x"}), ..Default::default() })
        .await
        .unwrap_err();
    let Error::Validation { details, .. } = err else { panic!("{err}") };
    assert_eq!(details[0].path, vec![json!("n")]);
}

#[tokio::test]
async fn every_input_error_is_listed_at_its_place_inside_the_input() {
    let e = env();
    let mut def = chain5();
    def["inputSchema"] = json!({"type": "object", "required": ["customerId", "items"], "properties": {
        "customerId": {"type": "string"},
        "items": {"type": "array", "items": {"type": "object", "required": ["quantity"],
            "properties": {"quantity": {"type": "integer", "minimum": 1}}}}}});
    install(&e.app, "wf", def).await;
    let input = json!({"items": [{"quantity": 0}, {}]});
    let err = e.app.engine.start_run(ACCT, "wf", StartRequest { input, ..Default::default() }).await.unwrap_err();
    let Error::Validation { details, message } = err else { panic!("{err}") };
    let mut got: Vec<(Vec<Value>, String)> = details.into_iter().map(|d| (d.path, d.message)).collect();
    got.sort_by_key(|(p, _)| format!("{p:?}"));
    assert_eq!(got.len(), 3, "{got:?}");
    assert_eq!(got[0], (vec![json!("customerId")], "Required".to_string()));
    assert_eq!(got[1].0, vec![json!("items"), json!(0), json!("quantity")], "{got:?}");
    assert_eq!(got[2], (vec![json!("items"), json!(1), json!("quantity")], "Required".to_string()));
    assert!(message.contains("(and 2 more)"), "{message}");
}

#[tokio::test]
async fn another_accounts_run_is_not_found() {
    let e = env();
    install(&e.app, "wf", chain5()).await;
    let id = start(&e.app, "wf", json!({"n": 1})).await;
    let err = e.app.engine.get_run("acct_other", &id).await.unwrap_err();
    assert!(matches!(err, Error::NotFound(_)));
    let err = e.app.engine.cancel_run("acct_other", &id).await.unwrap_err();
    assert!(matches!(err, Error::NotFound(_)));
}

#[tokio::test]
async fn run_output_is_the_last_block_even_when_steps_finish_in_the_same_millisecond() {
    let e = env();
    // No response block: the output is the last block that ran, which the clock cannot tell
    // when several steps finish in one millisecond (most do, inline).
    install(
        &e.app,
        "wf",
        json!({"steps": [
            {"id": "start", "type": "starter"},
            {"id": "t1", "type": "transform", "config": {"mapping": {"n": "{{input.n | plus: 1}}"}}},
            {"id": "t2", "type": "transform", "config": {"mapping": {"n": "{{steps.t1.output.n | plus: 1}}"}}},
            {"id": "t3", "type": "transform", "config": {"mapping": {"n": "{{steps.t2.output.n | plus: 1}}"}}},
            {"id": "t4", "type": "transform", "config": {"mapping": {"n": "{{steps.t3.output.n | plus: 1}}"}}}]}),
    )
    .await;
    for n in 0..60 {
        let r = e
            .app
            .engine
            .execute_sync(
                ACCT,
                "wf",
                StartRequest { input: json!({"n": n}), ..Default::default() },
                Duration::from_secs(5),
            )
            .await
            .unwrap();
        assert_eq!(r.run["output"], json!({"n": n + 4}), "run {n}");
        let id = r.run["run_id"].as_str().unwrap();
        let kinds: Vec<String> = events(&e.app, id)
            .await
            .iter()
            .filter(|e| e["type"] == "step.completed")
            .map(|e| e["step_key"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(kinds, ["start", "t1", "t2", "t3", "t4"], "events in causal order, run {n}");
    }
}

#[cfg(feature = "js")]
mod code;
mod context;
mod http;
mod orchestration;
mod paths;
mod reads;
mod templates;

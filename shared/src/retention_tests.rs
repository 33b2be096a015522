//! Retention: the TTLs [`Retained`] stamps (on the in-memory store, with a set clock), the
//! SQLite sweep on a real database file, and whole runs driven through the engine.

use super::*;
use crate::adapters::{SqliteQueue, SqliteStore};
use crate::app::{App, AppConfig, AppState};
use crate::engine::StartRequest;
use crate::store::{Attrs, query_all};
use crate::testing::MemStore;
use serde_json::json;
use std::cell::Cell;
use std::time::Instant;

const DAY: i64 = 24 * 3600;
const R: i64 = 30 * DAY;

thread_local! {
    /// What [`clock`] answers, in epoch ms (tests run on one thread each: the default tokio
    /// test runtime is single-threaded).
    static NOW_MS: Cell<i64> = const { Cell::new(0) };
}

fn clock() -> i64 {
    NOW_MS.with(Cell::get)
}

fn now0() -> i64 {
    *NOW_SECS
}

fn set_now(secs: i64) {
    NOW_MS.with(|n| n.set(secs * 1000));
}

/// "Now" for the tests on the in-memory store: fixed once per process, and real (the store
/// hides items whose TTL has passed by the real clock).
static NOW_SECS: std::sync::LazyLock<i64> = std::sync::LazyLock::new(|| crate::ids::now_ms() / 1000);

/// A run id as Baton makes them, for a run started at `secs`.
fn run_started_at(secs: i64) -> String {
    let ulid = ulid::Ulid::from_parts(secs as u64 * 1000 + 123, rand::random());
    format!("run_{}", ulid.to_string().to_ascii_lowercase())
}

fn retained(inner: Arc<dyn Store>, days: i64) -> Retained {
    Retained::with_clock(inner, Duration::from_secs((days * DAY) as u64), clock)
}

fn attrs(v: serde_json::Value) -> Attrs {
    v.as_object().cloned().unwrap()
}

/// The TTL of `key` as stored (expired items are invisible, so ask only for live ones).
async fn ttl(store: &dyn Store, key: &Key) -> Option<i64> {
    store.get(key).await.unwrap().unwrap_or_else(|| panic!("{key:?} is there")).expires_at
}

#[test]
fn days_parse_with_a_default_zero_for_ever_and_clear_refusals() {
    assert_eq!(parse_days(None), Ok(Some(Duration::from_secs(30 * DAY as u64))));
    assert_eq!(parse_days(Some("  ")), Ok(Some(Duration::from_secs(30 * DAY as u64))));
    assert_eq!(parse_days(Some("1")), Ok(Some(Duration::from_secs(DAY as u64))));
    assert_eq!(parse_days(Some("0")), Ok(None));
    for bad in ["-3", "ten", "2.5", "36501"] {
        let e = parse_days(Some(bad)).unwrap_err();
        assert!(e.starts_with("BATON_RUN_RETENTION_DAYS") && e.contains(&format!("`{bad}`")), "{e}");
    }
}

#[test]
fn a_run_id_tells_when_the_run_started() {
    assert_eq!(run_start(&run_started_at(now0())), Some(now0()));
    assert_eq!(run_start(&crate::ids::new_id("run")).map(|s| (s - crate::ids::now_ms() / 1000).abs() < 5), Some(true));
    assert_eq!(run_start("run_1"), None);
    assert_eq!(run_start("nonsense"), None);
}

#[tokio::test]
async fn every_write_of_a_run_gets_the_ttl_and_nothing_else_does() {
    let mem = Arc::new(MemStore::new());
    let store = retained(mem.clone(), 30);
    let start = now0() - 2 * DAY;
    let run = run_started_at(start);
    let horizon = start + 2 * R;
    set_now(start);

    // Start: header and list entry open (the horizon), like every other item of the run.
    store.put(Item::new(keys::run(&run), attrs(json!({"status": "running"}))), Some(Cond::NotExists)).await.unwrap();
    store.put(Item::new(keys::run_index("acct_1", &run), attrs(json!({"status": "running"}))), None).await.unwrap();
    assert_eq!(ttl(&*mem, &keys::run(&run)).await, Some(horizon));
    assert_eq!(ttl(&*mem, &keys::run_index("acct_1", &run)).await, Some(horizon));

    // Later writes of steps, tasks, events and deliveries: the same horizon, whenever written.
    set_now(now0());
    store.update(&keys::step(&run, "a"), Update::default().set("status", "running"), None).await.unwrap();
    store.put(Item::new(keys::task(&run, "task_1"), attrs(json!({"status": "open"}))), None).await.unwrap();
    store
        .transact(vec![
            Write::Put { item: Item::new(keys::step(&run, "body[3]"), Attrs::new()), cond: None },
            Write::Put { item: Item::new(keys::event(&run, 1, 1), Attrs::new()), cond: None },
            Write::Put { item: Item::new(keys::callback(&run, "dlv_1"), Attrs::new()), cond: None },
            // A header write that leaves the status alone leaves the TTL alone.
            Write::Update { key: keys::run(&run), update: Update::default().add("active", 1), cond: None },
        ])
        .await
        .unwrap();
    for k in [
        keys::step(&run, "a"),
        keys::task(&run, "task_1"),
        keys::step(&run, "body[3]"),
        keys::callback(&run, "dlv_1"),
        keys::run(&run),
    ] {
        assert_eq!(ttl(&*mem, &k).await, Some(horizon), "{k:?}");
    }

    // The end: header and list entry get R days from now (two days after the start here).
    store
        .transact(vec![
            Write::Update { key: keys::run(&run), update: Update::default().set("status", "completed"), cond: None },
            Write::Update {
                key: keys::run_index("acct_1", &run),
                update: Update::default().set("status", "completed"),
                cond: Some(Cond::Exists),
            },
            Write::Update {
                key: keys::step(&run, "a"),
                update: Update::default().set("status", "completed"),
                cond: None,
            },
            Write::Check { key: keys::task(&run, "task_1"), cond: Cond::Exists },
        ])
        .await
        .unwrap();
    assert_eq!(ttl(&*mem, &keys::run(&run)).await, Some(now0() + R));
    assert_eq!(ttl(&*mem, &keys::run_index("acct_1", &run)).await, Some(now0() + R));
    assert_eq!(ttl(&*mem, &keys::step(&run, "a")).await, Some(horizon), "never before the header");

    // A redrive opens the run again.
    store.update(&keys::run(&run), Update::default().set("status", "running"), None).await.unwrap();
    assert_eq!(ttl(&*mem, &keys::run(&run)).await, Some(horizon));

    // Not run data: no TTL added, own TTLs untouched.
    store.put(Item::new(keys::account("acct_1"), attrs(json!({"name": "a"}))), None).await.unwrap();
    store.put(Item::new(keys::workflow("acct_1", "wf"), attrs(json!({"status": "active"}))), None).await.unwrap();
    store.put(Item::new(keys::api_key_meta("acct_1", "key_1"), Attrs::new()), None).await.unwrap();
    store.update(&keys::api_key_lookup("h"), Update::default().set("k", 1), None).await.unwrap();
    let mut idem = Item::new(keys::idempotency("acct_1", "wf", "k"), attrs(json!({"run_id": run})));
    idem.expires_at = Some(now0() + DAY);
    store.transact(vec![Write::Put { item: idem, cond: Some(Cond::NotExists) }]).await.unwrap();
    let window = Update { expires_at: Some(Some(now0() + 120)), ..Update::default().add("n", 1) };
    store.update(&keys::rate_window("key_1", 7), window, None).await.unwrap();
    assert_eq!(ttl(&*mem, &keys::account("acct_1")).await, None);
    assert_eq!(ttl(&*mem, &keys::workflow("acct_1", "wf")).await, None);
    assert_eq!(ttl(&*mem, &keys::api_key_meta("acct_1", "key_1")).await, None);
    assert_eq!(ttl(&*mem, &keys::api_key_lookup("h")).await, None);
    assert_eq!(ttl(&*mem, &keys::idempotency("acct_1", "wf", "k")).await, Some(now0() + DAY));
    assert_eq!(ttl(&*mem, &keys::rate_window("key_1", 7)).await, Some(now0() + 120));
}

#[tokio::test]
async fn explicit_ttls_on_run_data_are_kept_when_shorter_and_never_cleared() {
    let mem = Arc::new(MemStore::new());
    let store = retained(mem.clone(), 30);
    set_now(now0());
    let run = run_started_at(now0());
    let mut short = Item::new(keys::step(&run, "a"), Attrs::new());
    short.expires_at = Some(now0() + 60);
    let mut long = Item::new(keys::step(&run, "b"), Attrs::new());
    long.expires_at = Some(now0() + 10 * R);
    store.put(short, None).await.unwrap();
    store.put(long, None).await.unwrap();
    assert_eq!(ttl(&*mem, &keys::step(&run, "a")).await, Some(now0() + 60));
    assert_eq!(ttl(&*mem, &keys::step(&run, "b")).await, Some(now0() + 2 * R));

    store.update(&keys::step(&run, "a"), Update { expires_at: Some(None), ..Update::default() }, None).await.unwrap();
    assert_eq!(ttl(&*mem, &keys::step(&run, "a")).await, Some(now0() + 2 * R), "clearing is not possible");
    store.put(Item::new(keys::run(&run), attrs(json!({"status": "running"}))), None).await.unwrap();
    let clear = Update { expires_at: Some(None), ..Update::default().set("updated_at", 1) };
    store.update(&keys::run(&run), clear, None).await.unwrap();
    assert_eq!(ttl(&*mem, &keys::run(&run)).await, Some(now0() + 2 * R));
    let shorter = Update { expires_at: Some(Some(now0() + 5)), ..Update::default().set("status", "failed") };
    store.update(&keys::run(&run), shorter, None).await.unwrap();
    assert_eq!(ttl(&*mem, &keys::run(&run)).await, Some(now0() + 5));
}

#[tokio::test]
async fn a_run_that_ends_late_is_kept_until_twice_the_retention_after_its_start() {
    let mem = Arc::new(MemStore::new());
    let store = retained(mem.clone(), 30);
    let start = now0() - 50 * DAY;
    let run = run_started_at(start);
    set_now(now0());
    store.put(Item::new(keys::run(&run), attrs(json!({"status": "cancelled"}))), None).await.unwrap();
    assert_eq!(ttl(&*mem, &keys::run(&run)).await, Some(start + 2 * R), "not now0() + R");
    // A run id that is not a ULID counts from now.
    store.put(Item::new(keys::step("run_x", "a"), Attrs::new()), None).await.unwrap();
    assert_eq!(ttl(&*mem, &keys::step("run_x", "a")).await, Some(now0() + 2 * R));
}

/// Rows in the database file, expired or not.
fn rows(path: &std::path::Path, pk: &str) -> Vec<(String, Option<i64>)> {
    let c = rusqlite::Connection::open(path).unwrap();
    let mut st = c.prepare("SELECT sk, expires_at FROM items WHERE pk = ?1 ORDER BY sk").unwrap();
    st.query_map([pk], |r| Ok((r.get(0)?, r.get(1)?))).unwrap().map(Result::unwrap).collect()
}

/// Writes a finished run (header, a step, a task, an event; an index entry) as the engine would:
/// started at `start`, ended at `end`.
async fn write_run(store: &Retained, acct: &str, start: i64, end: i64) -> String {
    let run = run_started_at(start);
    set_now(start);
    store
        .transact(vec![
            Write::Put { item: Item::new(keys::run(&run), attrs(json!({"status": "running"}))), cond: None },
            Write::Put {
                item: Item::new(keys::run_index(acct, &run), attrs(json!({"status": "running"}))),
                cond: None,
            },
            Write::Put { item: Item::new(keys::step(&run, "a"), attrs(json!({"status": "completed"}))), cond: None },
            Write::Put { item: Item::new(keys::task(&run, "t"), attrs(json!({"status": "done"}))), cond: None },
            Write::Put { item: Item::new(keys::event(&run, start * 1000, 1), Attrs::new()), cond: None },
        ])
        .await
        .unwrap();
    set_now(end);
    let done = || Update::default().set("status", "completed");
    store
        .transact(vec![
            Write::Update { key: keys::run(&run), update: done(), cond: None },
            Write::Update { key: keys::run_index(acct, &run), update: done(), cond: None },
        ])
        .await
        .unwrap();
    run
}

#[tokio::test]
async fn the_sqlite_sweep_deletes_expired_runs_whole_and_leaves_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.db");
    let db = Sqlite::open(&path).unwrap();
    let raw: Arc<dyn Store> = Arc::new(SqliteStore::new(db.clone()));
    // Ten days' retention; "now" is the real clock here, since the sweep reads it.
    let store = retained(raw.clone(), 10);
    let now = crate::ids::now_ms() / 1000;
    // Ended 11 days ago: header expired, its other items (start + 20 days) not yet.
    let old = write_run(&store, "acct_1", now - 12 * DAY, now - 11 * DAY).await;
    // Ended yesterday: kept.
    let recent = write_run(&store, "acct_1", now - 2 * DAY, now - DAY).await;
    // Open, started today.
    let open = run_started_at(now - 60);
    set_now(now - 60);
    store.put(Item::new(keys::run(&open), attrs(json!({"status": "running"}))), None).await.unwrap();
    store.put(Item::new(keys::step(&open, "a"), Attrs::new()), None).await.unwrap();
    // Not run data, one of it with a passed TTL of its own.
    set_now(now);
    store.put(Item::new(keys::account("acct_1"), Attrs::new()), None).await.unwrap();
    let mut idem = Item::new(keys::idempotency("acct_1", "wf", "k"), Attrs::new());
    idem.expires_at = Some(now - 5);
    raw.put(idem, None).await.unwrap();

    let old_rows = rows(&path, &keys::run_pk(&old));
    assert_eq!(old_rows.len(), 4, "{old_rows:?}");
    assert!(old_rows.iter().any(|(sk, t)| sk != keys::RUN_SK && t.unwrap() > now), "children outlive the header");
    assert!(raw.get(&keys::run(&old)).await.unwrap().is_none(), "an expired run is invisible before the sweep");

    let swept = sweep_sqlite(&db).unwrap();
    assert_eq!(swept, Swept { run_items: 3, expired: 3 }, "old run: 3 children, then its header, index, idempotency");
    assert!(rows(&path, &keys::run_pk(&old)).is_empty());
    assert_eq!(rows(&path, &keys::run_pk(&recent)).len(), 4);
    assert_eq!(rows(&path, &keys::run_pk(&open)).len(), 2);
    let index: Vec<String> = rows(&path, &keys::runs_index_pk("acct_1")).into_iter().map(|(sk, _)| sk).collect();
    assert_eq!(index, vec![recent]);
    assert_eq!(rows(&path, "ACCT#acct_1").len(), 1, "the account stays");
    assert!(rows(&path, &keys::idempotency("acct_1", "wf", "k").pk).is_empty());
    assert_eq!(sweep_sqlite(&db).unwrap(), Swept::default(), "nothing left to sweep");
}

#[tokio::test]
async fn the_sweep_works_in_batches_and_the_sweeper_stops_with_its_signal() {
    let dir = tempfile::tempdir().unwrap();
    let db = Sqlite::open(&dir.path().join("t.db")).unwrap();
    let store = retained(Arc::new(SqliteStore::new(db.clone())), 1);
    let now = crate::ids::now_ms() / 1000;
    let run = run_started_at(now - 10 * DAY);
    set_now(now - 10 * DAY);
    store.put(Item::new(keys::run(&run), attrs(json!({"status": "failed"}))), None).await.unwrap();
    // More items than one batch deletes.
    for chunk in (0..2500).collect::<Vec<_>>().chunks(100) {
        let writes = chunk
            .iter()
            .map(|i| Write::Put { item: Item::new(keys::event(&run, *i, *i as usize), Attrs::new()), cond: None })
            .collect();
        store.transact(writes).await.unwrap();
    }
    let (stop_tx, stop_rx) = watch::channel(false);
    let sweeper = tokio::spawn(sweep_sqlite_every(db.clone(), Duration::from_secs(3600), stop_rx));
    let t0 = Instant::now();
    while !rows(&dir.path().join("t.db"), &keys::run_pk(&run)).is_empty() {
        assert!(t0.elapsed() < Duration::from_secs(20), "the first sweep runs at start");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop_tx.send(true).unwrap();
    tokio::time::timeout(Duration::from_secs(5), sweeper).await.expect("stops when told").unwrap();
}

// ---- whole runs through the engine ---------------------------------------------------------

const ACCT: &str = "acct_ret";

struct Env {
    app: AppState,
    /// The store under the retention wrapper: what was really written.
    raw: Arc<dyn Store>,
    _dir: tempfile::TempDir,
}

fn env() -> Env {
    let dir = tempfile::tempdir().unwrap();
    let db = Sqlite::open(&dir.path().join("t.db")).unwrap();
    let raw: Arc<dyn Store> = Arc::new(SqliteStore::new(db.clone()));
    let queue = Arc::new(SqliteQueue::new(db, "steps", 5));
    let cfg = AppConfig { lease: Duration::from_secs(2), ..AppConfig::default() };
    assert_eq!(cfg.run_retention, Some(Duration::from_secs(R as u64)), "on by default");
    let app = App::new(raw.clone(), queue, Arc::new(crate::secrets::SecretBox::ephemeral()), cfg);
    Env { app, raw, _dir: dir }
}

async fn install(app: &AppState, wf: &str, def: serde_json::Value) {
    let g = crate::model::build_graph(def.get("blocks"), def.get("edges"), def.get("steps")).unwrap();
    let head = attrs(json!({"id": wf, "name": wf, "status": "active", "version": 1}));
    app.store.put(Item::new(keys::workflow(ACCT, wf), head), None).await.unwrap();
    let v = attrs(json!({"version": 1, "graph": serde_json::to_value(&g).unwrap(), "variables": {}}));
    app.store.put(Item::new(keys::version(ACCT, wf, 1), v), None).await.unwrap();
}

/// Plays the queue until run `run_id` has status `want` (or 10 s pass).
async fn drive_until(app: &AppState, run_id: &str, want: &str) {
    let t0 = Instant::now();
    loop {
        let r = app.engine.get_run(ACCT, run_id).await.unwrap();
        if r["status"] == want {
            return;
        }
        assert!(t0.elapsed() < Duration::from_secs(10), "run never became {want}: {r:#}");
        for m in app.queue.receive(10, Duration::from_secs(2), Duration::from_millis(50)).await.unwrap() {
            if app.engine.process(&m.body).await == crate::queue::Outcome::Ack {
                app.queue.delete(&m.receipt).await.unwrap();
            }
        }
    }
}

/// Every item of the run (its partition) and its list entry, as stored.
async fn items_of(e: &Env, run_id: &str) -> (Vec<Item>, Item) {
    let items = query_all(&*e.raw, Query::partition(keys::run_pk(run_id))).await.unwrap();
    let index = e.raw.get(&keys::run_index(ACCT, run_id)).await.unwrap().expect("listed");
    (items, index)
}

fn near(t: Option<i64>, want: i64) -> bool {
    t.is_some_and(|t| (t - want).abs() <= 5)
}

#[tokio::test]
async fn a_finished_run_and_everything_of_it_carry_the_retention() {
    let e = env();
    install(
        &e.app,
        "chain",
        json!({"steps": [
            {"id": "start", "type": "starter"},
            {"id": "a", "type": "transform", "config": {"mapping": {"n": "{{input.n | plus: 1}}"}}},
            {"id": "b", "type": "transform", "config": {"mapping": {"n": "{{steps.a.output.n | times: 2}}"}}},
            {"id": "done", "type": "response", "config": {"body": {"n": "{{steps.b.output.n}}"}}}]}),
    )
    .await;
    let req = StartRequest { input: json!({"n": 1}), source: "test".into(), ..Default::default() };
    let r = e.app.engine.execute_sync(ACCT, "chain", req, Duration::from_secs(10)).await.unwrap();
    assert!(r.finished, "{:#}", r.run);
    let id = r.run["run_id"].as_str().unwrap();
    let now = crate::ids::now_ms() / 1000;
    let horizon = run_start(id).unwrap() + 2 * R;

    let (items, index) = items_of(&e, id).await;
    assert!(items.len() >= 5, "header and four steps at least: {items:?}");
    for it in &items {
        let want = if it.key.sk == keys::RUN_SK { now + R } else { horizon };
        assert!(near(it.expires_at, want), "{:?} expires at {:?}, not ≈ {want}", it.key, it.expires_at);
    }
    assert!(near(index.expires_at, now + R), "{index:?}");
    // The workflow it ran is not run data.
    assert_eq!(e.raw.get(&keys::workflow(ACCT, "chain")).await.unwrap().unwrap().expires_at, None);
}

#[tokio::test]
async fn a_run_waiting_for_a_person_is_kept_until_the_horizon_then_retention_counts_from_its_end() {
    let e = env();
    install(
        &e.app,
        "ask",
        json!({"steps": [
            {"id": "start", "type": "starter"},
            {"id": "review", "type": "human", "config": {"kind": "approval", "prompt": "ok?"}},
            {"id": "done", "type": "transform", "config": {"mapping": {"ok": true}}}]}),
    )
    .await;
    let req = StartRequest { input: json!({}), source: "test".into(), ..Default::default() };
    let id = e.app.engine.start_run(ACCT, "ask", req).await.unwrap().run["run_id"].as_str().unwrap().to_string();
    drive_until(&e.app, &id, "waiting_human").await;
    let horizon = run_start(&id).unwrap() + 2 * R;
    let (items, index) = items_of(&e, &id).await;
    assert!(items.iter().any(|i| i.key.sk.starts_with("TASK#")), "{items:?}");
    for it in items.iter().chain([&index]) {
        assert_eq!(it.expires_at, Some(horizon), "open: {:?}", it.key);
    }

    let tasks = e.app.engine.run_tasks(ACCT, &id, 100, None).await.unwrap();
    let tid = tasks["data"][0]["task_id"].as_str().unwrap().to_string();
    e.app.engine.complete_task(ACCT, &id, &tid, json!({"approved": true})).await.unwrap();
    drive_until(&e.app, &id, "completed").await;
    let now = crate::ids::now_ms() / 1000;
    let (items, index) = items_of(&e, &id).await;
    for it in &items {
        let want = if it.key.sk == keys::RUN_SK { now + R } else { horizon };
        assert!(near(it.expires_at, want), "{:?} expires at {:?}, not ≈ {want}", it.key, it.expires_at);
    }
    assert!(near(index.expires_at, now + R), "{index:?}");
}

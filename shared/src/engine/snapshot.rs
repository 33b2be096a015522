//! One read of a run: the run item, its steps and its tasks (events excluded), in a single
//! partition query. Everything the worker decides is decided on a snapshot, and every write
//! it makes is conditional on the snapshot still being true.
//!
//! A step that a chain commit named in its predecessor's `next` (see `worker::finish_step`),
//! or a run in its own `next` (its entry steps), has no item until its first claim; the snapshot shows it as `pending` with
//! [`LAZY`] set, and writes about it are conditional on the item not existing yet.

use crate::error::{Error, Result};
use crate::keys;
use crate::store::{Attrs, Cond, Item, Query, SkRange, Store, Write, apply_update, query_all};
use serde_json::{Value, json};
use std::collections::HashMap;

/// Attribute of a snapshot-only step item: pending, named by a predecessor's `next`, not
/// written yet. Never stored.
pub const LAZY: &str = "lazy";

#[derive(Clone)]
pub struct Snapshot {
    pub run: Item,
    pub steps: HashMap<String, Item>,
    pub tasks: HashMap<String, Item>,
}

impl Snapshot {
    pub async fn load(store: &dyn Store, run_id: &str) -> Result<Option<Snapshot>> {
        // Sort keys: EVT#… < RUN < STEP#… < TASK#…; '$' sorts right after '#', so this range
        // takes the run, steps and tasks and leaves the (many) events out.
        let q =
            Query { range: SkRange::Between("RUN".into(), "TASK$".into()), ..Query::partition(keys::run_pk(run_id)) };
        let items = query_all(store, q).await?;
        Ok(Self::from_items(items))
    }

    fn from_items(items: Vec<Item>) -> Option<Snapshot> {
        let mut run = None;
        let mut steps = HashMap::new();
        let mut tasks = HashMap::new();
        for it in items {
            if it.key.sk == "RUN" {
                run = Some(it);
            } else if let Some(k) = it.key.sk.strip_prefix("STEP#") {
                steps.insert(k.to_string(), it);
            } else if let Some(k) = keys::item_step_key(&it.key.sk) {
                steps.insert(k, it);
            } else if let Some(k) = it.key.sk.strip_prefix("TASK#") {
                tasks.insert(k.to_string(), it);
            }
        }
        let mut snap = Snapshot { run: run?, steps, tasks };
        snap.add_lazy_steps();
        Some(snap)
    }

    /// The snapshot of a run about to be created from `run`: its entry steps pending.
    pub fn of_new_run(run: Item) -> Snapshot {
        let mut snap = Snapshot { run, steps: HashMap::new(), tasks: HashMap::new() };
        snap.add_lazy_steps();
        snap
    }

    /// Shows the steps named (by the run, or by a finished step: `next` pending, `skip`
    /// skipped) that have no item yet, marked [`LAZY`].
    fn add_lazy_steps(&mut self) {
        let run_id = self.run.key.pk.trim_start_matches("RUN#").to_string();
        let names = |item: &Item, attr: &str| -> Vec<String> {
            let list = item.get(attr).and_then(Value::as_array);
            list.into_iter().flatten().filter_map(|n| n.as_str().map(str::to_string)).collect()
        };
        // (name, status, time, event order)
        let mut lazy: Vec<(String, &str, i64, i64)> = Vec::new();
        let at = self.run.i64("created_at").unwrap_or(0);
        lazy.extend(names(&self.run, "next").into_iter().map(|n| (n, "pending", at, 0)));
        for s in self.steps.values().filter(|s| matches!(s.str("status"), Some("completed" | "failed"))) {
            let at = s.i64("finished_at").unwrap_or(0);
            let seq = s.i64("ev_seq").unwrap_or(0) + 1;
            lazy.extend(names(s, "next").into_iter().map(|n| (n, "pending", at, seq)));
            lazy.extend(names(s, "skip").into_iter().map(|n| (n, "skipped", at, seq)));
        }
        for (n, status, at, seq) in lazy {
            if self.steps.contains_key(&n) {
                continue;
            }
            let mut a = Attrs::new();
            a.insert("block".into(), json!(n));
            a.insert("status".into(), json!(status));
            a.insert("created_at".into(), json!(at));
            if status == "pending" {
                a.insert("attempt".into(), json!(0));
            } else {
                a.insert("finished_at".into(), json!(at));
                a.insert("ev_seq".into(), json!(seq));
            }
            a.insert(LAZY.into(), json!(true));
            self.steps.insert(n.clone(), Item::new(keys::step(&run_id, &n), a));
        }
    }

    /// The snapshot a message for `key` works on: the run's, plus the step itself when it is
    /// one of a split's items (those live outside the snapshot's range). An item that has no
    /// item yet is shown pending while its collection is still collecting.
    pub async fn load_for(store: &dyn Store, run_id: &str, key: &str) -> Result<Option<Snapshot>> {
        let Some(mut snap) = Self::load(store, run_id).await? else { return Ok(None) };
        if let Some((body, i)) = keys::split_item(key) {
            match store.get(&keys::step(run_id, key)).await? {
                Some(item) => {
                    snap.steps.insert(key.to_string(), item);
                }
                None => {
                    let agg = snap.steps.get(body);
                    let expected = agg.and_then(|a| a.i64("expected")).unwrap_or(0);
                    if agg.and_then(|a| a.str("status")) == Some("collecting") && (i as i64) < expected {
                        let mut a = Attrs::new();
                        a.insert("block".into(), json!(body));
                        a.insert("status".into(), json!("pending"));
                        a.insert("attempt".into(), json!(0));
                        a.insert("index".into(), json!(i));
                        a.insert(
                            "created_at".into(),
                            agg.and_then(|a| a.get("created_at")).cloned().unwrap_or(json!(0)),
                        );
                        a.insert(LAZY.into(), json!(true));
                        snap.steps.insert(key.to_string(), Item::new(keys::step(run_id, key), a));
                    }
                }
            }
        }
        Ok(Some(snap))
    }

    /// The value an item step runs on: element `i` of its split's output.
    pub fn item_value(&self, key: &str) -> Value {
        let Some((body, i)) = keys::split_item(key) else { return Value::Null };
        let split = self.steps.get(body).and_then(|a| a.str("split")).unwrap_or_default();
        self.steps.get(split).and_then(|s| s.get("output")).and_then(|o| o.get(i)).cloned().unwrap_or(Value::Null)
    }

    pub async fn require(store: &dyn Store, run_id: &str) -> Result<Snapshot> {
        Self::load(store, run_id).await?.ok_or_else(|| Error::not_found(format!("run {run_id}")))
    }

    pub async fn require_for(store: &dyn Store, run_id: &str, key: &str) -> Result<Snapshot> {
        Self::load_for(store, run_id, key).await?.ok_or_else(|| Error::not_found(format!("run {run_id}")))
    }

    /// Orders events written in the same millisecond by different commits: a commit that
    /// follows another causally sees more finished steps in its snapshot.
    pub fn event_seq(&self) -> usize {
        100 + 16 * self.steps.values().filter(|s| is_terminal_step(s.str("status").unwrap_or(""))).count()
    }

    /// The steps as they will be once `writes` (a commit of this run) have landed.
    pub fn after(&self, writes: &[Write]) -> Snapshot {
        let mut next = self.clone();
        for w in writes {
            // Item steps are not part of a snapshot.
            let Some(k) = w.key().sk.strip_prefix("STEP#") else { continue };
            match w {
                Write::Put { item, .. } => {
                    next.steps.insert(k.to_string(), item.clone());
                }
                Write::Update { key, update, .. } => {
                    let cur = next.steps.remove(k);
                    next.steps.insert(k.to_string(), apply_update(key, cur, update));
                }
                Write::Delete { .. } => {
                    next.steps.remove(k);
                }
                Write::Check { .. } => {}
            }
        }
        next.add_lazy_steps();
        next
    }

    /// The condition under which a step is still as this snapshot shows it, as far as its
    /// status goes.
    pub fn status_cond(&self, key: &str) -> Cond {
        match self.steps.get(key) {
            Some(s) if is_lazy(s) => Cond::NotExists,
            Some(s) => Cond::eq("status", s.str("status").unwrap_or("pending")),
            None => Cond::NotExists,
        }
    }

    pub fn run_status(&self) -> &str {
        self.run.str("status").unwrap_or("running")
    }

    pub fn step_status(&self, key: &str) -> Option<&str> {
        self.steps.get(key).and_then(|s| s.str("status"))
    }

    /// The context templates see: `input`, `steps.<id>.output`, `vars`, `run`.
    pub fn context(&self, variables: &Value) -> Value {
        let mut steps = serde_json::Map::new();
        for (k, s) in &self.steps {
            if k.contains('[') {
                continue;
            }
            let mut o = serde_json::Map::new();
            o.insert("status".into(), s.get("status").cloned().unwrap_or(Value::Null));
            o.insert("output".into(), s.get("output").cloned().unwrap_or(Value::Null));
            if let Some(e) = s.get("error") {
                o.insert("error".into(), e.clone());
            }
            steps.insert(k.clone(), Value::Object(o));
        }
        serde_json::json!({
            "input": self.run.get("input").cloned().unwrap_or(Value::Null),
            "steps": steps,
            "vars": variables,
            "run": {"id": self.run.key.pk.trim_start_matches("RUN#"), "metadata": self.run.get("metadata").cloned().unwrap_or(Value::Null)},
        })
    }
}

pub fn is_lazy(step: &Item) -> bool {
    step.get(LAZY).and_then(Value::as_bool).unwrap_or(false)
}

pub fn is_terminal_step(status: &str) -> bool {
    matches!(status, "completed" | "failed" | "skipped" | "cancelled")
}

pub fn is_terminal_run(status: &str) -> bool {
    matches!(status, "completed" | "failed" | "cancelled")
}

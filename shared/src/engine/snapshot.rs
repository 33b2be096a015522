//! One read of a run: the run item, its steps and its tasks (events excluded), in a single
//! partition query. Everything the worker decides is decided on a snapshot, and every write
//! it makes is conditional on the snapshot still being true.
//!
//! A step that a chain commit named in its predecessor's `next` (see `worker::finish_step`),
//! or a run in its own `next` (its entry steps), has no item until its first claim; the snapshot shows it as `pending` with
//! [`LAZY`] set, and writes about it are conditional on the item not existing yet.

use super::reads::Needs;
use super::state::{RunStatus, StepStatus};
use crate::error::{Error, Result};
use crate::keys;
use crate::model::Graph;
use crate::store::{Attrs, Cond, Item, Query, SkRange, Store, Write, apply_update, query_all};
use serde_json::{Value, json};
use std::collections::{BTreeSet, HashMap, HashSet};

/// Attribute of a snapshot-only step item: pending, named by a predecessor's `next`, not
/// written yet. Never stored.
pub const LAZY: &str = "lazy";

#[derive(Clone)]
pub struct Snapshot {
    pub run: Item,
    pub steps: HashMap<String, Item>,
    pub tasks: HashMap<String, Item>,
    /// Only the steps one message needs were read ([`Snapshot::load_step`]): what is not in
    /// `steps` may still exist, and `tasks` is empty.
    pub partial: bool,
    /// Events of this snapshot's commit go after this order (the naming commit's `ev_seq`,
    /// when its predecessors were not read).
    pub seq_floor: i64,
    /// The step keys a partial snapshot read (found or not): only those can be shown as
    /// named but not yet written; a name of another step says nothing about its item.
    read: HashSet<String>,
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
        let mut snap = Snapshot { run: run?, steps, tasks, partial: false, seq_floor: 0, read: HashSet::new() };
        snap.add_lazy_steps();
        Some(snap)
    }

    /// The snapshot of a run about to be created from `run`: its entry steps pending.
    pub fn of_new_run(run: Item) -> Snapshot {
        let mut snap = Snapshot {
            run,
            steps: HashMap::new(),
            tasks: HashMap::new(),
            partial: false,
            seq_floor: 0,
            read: HashSet::new(),
        };
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
        let mut lazy: Vec<(String, StepStatus, i64, i64)> = Vec::new();
        let at = self.run.i64("created_at").unwrap_or(0);
        lazy.extend(names(&self.run, "next").into_iter().map(|n| (n, StepStatus::Pending, at, 0)));
        for s in self.steps.values().filter(|s| matches!(StepStatus::of(s), StepStatus::Completed | StepStatus::Failed))
        {
            let at = s.i64("finished_at").unwrap_or(0);
            let seq = s.i64("ev_seq").unwrap_or(0) + 1;
            lazy.extend(names(s, "next").into_iter().map(|n| (n, StepStatus::Pending, at, seq)));
            lazy.extend(names(s, "skip").into_iter().map(|n| (n, StepStatus::Skipped, at, seq)));
        }
        for (n, status, at, seq) in lazy {
            if self.steps.contains_key(&n) || (self.partial && !self.read.contains(&n)) {
                continue;
            }
            let mut a = Attrs::new();
            a.insert("block".into(), json!(n));
            a.insert("status".into(), Value::from(status));
            a.insert("created_at".into(), json!(at));
            if status == StepStatus::Pending {
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
        if keys::split_item(key).is_some() {
            let item = store.get(&keys::step(run_id, key)).await?;
            snap.add_item_step(run_id, key, item);
        }
        Ok(Some(snap))
    }

    /// What a step message for `key` (a step of `block`) reads, in one `get_many`: the run
    /// item, the step, and the steps of the blocks `needs` names (for an item step also its
    /// collection and split). `named`: the `ev_seq` of the commit that named the step, which
    /// the message carries; then the predecessors are not read (they are only needed to find
    /// the name of a step that has no item yet, and to order events after theirs), and a
    /// missing step is shown pending. Steps the templates name that have no item and are not
    /// named by a step read so far cost one more read each round, which follows their
    /// predecessors (rare: a template naming a step that was skipped, or has not run).
    pub async fn load_step(
        store: &dyn Store,
        run_id: &str,
        key: &str,
        graph: &Graph,
        needs: &Needs,
        named: Option<i64>,
    ) -> Result<Option<Snapshot>> {
        if needs.all {
            return Self::load_for(store, run_id, key).await;
        }
        let item = keys::split_item(key);
        let block = item.map_or(key, |(body, _)| body);
        let mut wanted: BTreeSet<String> = needs.blocks(block).into_iter().map(str::to_string).collect();
        if named.is_some() && item.is_none() {
            for p in &needs.preds {
                if !needs.joins.contains(p) && !needs.refs.contains(p) {
                    wanted.remove(p);
                }
            }
        }
        if let Some((body, _)) = item {
            wanted.insert(body.to_string());
            wanted.extend(graph.incoming(body).map(|e| e.from.clone()));
        }
        let mut ks = vec![keys::run(run_id), keys::step(run_id, key)];
        ks.extend(wanted.iter().map(|b| keys::step(run_id, b)));
        let mut got = store.get_many(&ks).await?.into_iter();
        let Some(run) = got.next().flatten() else { return Ok(None) };
        let own = got.next().flatten();
        let mut steps: HashMap<String, Item> = HashMap::new();
        for (b, it) in wanted.iter().zip(got) {
            if let Some(it) = it {
                steps.insert(b.clone(), it);
            }
        }
        if item.is_none()
            && let Some(o) = own.clone()
        {
            steps.insert(key.to_string(), o);
        }
        let mut read: HashSet<String> = wanted.iter().cloned().collect();
        read.insert(key.to_string());
        let mut snap =
            Snapshot { run, steps, tasks: HashMap::new(), partial: true, seq_floor: named.unwrap_or(0), read };
        snap.add_lazy_steps();
        if let (Some(_), None) = (named, item)
            && !snap.steps.contains_key(key)
        {
            // Named by a commit that has landed (the message was sent after it): pending
            // until its first claim creates its item.
            let mut a = Attrs::new();
            a.insert("block".into(), json!(key));
            a.insert("status".into(), Value::from(StepStatus::Pending));
            a.insert("attempt".into(), json!(0));
            a.insert("created_at".into(), json!(crate::ids::now_ms()));
            a.insert(LAZY.into(), json!(true));
            snap.steps.insert(key.to_string(), Item::new(keys::step(run_id, key), a));
        }
        // Named steps without an item: read their predecessors until one names them (or
        // nothing is left to read).
        let mut asked = wanted;
        asked.insert(block.to_string());
        loop {
            let missing: Vec<String> = needs.refs.iter().filter(|r| !snap.steps.contains_key(*r)).cloned().collect();
            let more: BTreeSet<String> = missing
                .iter()
                .flat_map(|r| graph.incoming(r).map(|e| e.from.clone()))
                .filter(|p| !asked.contains(p))
                .collect();
            if more.is_empty() {
                break;
            }
            let ks: Vec<_> = more.iter().map(|b| keys::step(run_id, b)).collect();
            for (b, it) in more.iter().zip(store.get_many(&ks).await?) {
                if let Some(it) = it {
                    snap.steps.insert(b.clone(), it);
                }
            }
            snap.read.extend(more.iter().cloned());
            asked.extend(more);
            snap.add_lazy_steps();
        }
        if item.is_some() {
            snap.add_item_step(run_id, key, own);
        }
        Ok(Some(snap))
    }

    /// Puts a split's item step into the snapshot: its item, or while its collection is
    /// still collecting one shown pending.
    fn add_item_step(&mut self, run_id: &str, key: &str, item: Option<Item>) {
        let Some((body, i)) = keys::split_item(key) else { return };
        match item {
            Some(item) => {
                self.steps.insert(key.to_string(), item);
            }
            None => {
                let agg = self.steps.get(body);
                let expected = agg.and_then(|a| a.i64("expected")).unwrap_or(0);
                if agg.is_some_and(|a| StepStatus::of(a) == StepStatus::Collecting) && (i as i64) < expected {
                    let mut a = Attrs::new();
                    a.insert("block".into(), json!(body));
                    a.insert("status".into(), Value::from(StepStatus::Pending));
                    a.insert("attempt".into(), json!(0));
                    a.insert("index".into(), json!(i));
                    a.insert("created_at".into(), agg.and_then(|a| a.get("created_at")).cloned().unwrap_or(json!(0)));
                    a.insert(LAZY.into(), json!(true));
                    self.steps.insert(key.to_string(), Item::new(keys::step(run_id, key), a));
                }
            }
        }
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
    /// follows another causally has read the steps it follows (its predecessors at least),
    /// and goes 16 past the latest of them (room for the events of one commit).
    pub fn event_seq(&self) -> usize {
        let latest = self.steps.values().filter_map(|s| s.i64("ev_seq")).chain([self.seq_floor]).max().unwrap_or(0);
        (latest.max(84) + 16) as usize
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
            Some(s) => Cond::eq("status", StepStatus::of(s)),
            None => Cond::NotExists,
        }
    }

    pub fn run_status(&self) -> RunStatus {
        RunStatus::of(&self.run)
    }

    pub fn step_status(&self, key: &str) -> Option<StepStatus> {
        self.steps.get(key).map(StepStatus::of)
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

/// Whether a stored step status is a terminal one (see [`StepStatus::is_terminal`]).
pub fn is_terminal_step(status: &str) -> bool {
    StepStatus::parse(status).is_some_and(StepStatus::is_terminal)
}

/// Whether a stored run status is a terminal one.
pub fn is_terminal_run(status: &str) -> bool {
    RunStatus::parse(status).is_some_and(RunStatus::is_terminal)
}

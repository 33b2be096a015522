//! Turning "this step finished" into the writes of one commit: successor steps, join counters
//! (conditional on the value read), skipped branches (dead-path elimination), the run's
//! active-step counter, and events.
//!
//! Successors and skipped blocks that nothing else can resolve (one incoming edge, or a join
//! every edge of which resolves in this same plan) get no write: they are *named* on the
//! committing step's item (`next`, `skip`) and the snapshot shows them (see
//! `snapshot::LAZY`). So a fork or a skipped branch of any width costs one write, and only join
//! counters — one per distinct join — add to the transaction.

use super::snapshot::Snapshot;
use super::state::{RunStatus, StepStatus};
use crate::keys;
use crate::model::Graph;
use crate::store::{Attrs, Cond, Item, Update, Write};
use crate::template;
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashSet};

pub struct Plan<'a> {
    pub run_id: &'a str,
    pub graph: &'a Graph,
    pub snap: &'a Snapshot,
    pub ctx: &'a Value,
    pub now: i64,
    pub writes: Vec<Write>,
    /// Step keys to enqueue once the transaction has committed.
    pub publish: Vec<String>,
    pub active_delta: i64,
    /// Pending successors named on the committing step instead of written.
    pub lazy_next: Vec<String>,
    /// Skipped blocks named on the committing step instead of written.
    pub lazy_skip: Vec<String>,
    events: Vec<(String, Option<String>, Value)>,
    /// Join counters touched in this plan: key → (resolved before, resolved, taken).
    joins: BTreeMap<String, (Option<i64>, i64, i64)>,
    created: HashSet<String>,
}

impl<'a> Plan<'a> {
    pub fn new(run_id: &'a str, graph: &'a Graph, snap: &'a Snapshot, ctx: &'a Value, now: i64) -> Self {
        Plan {
            run_id,
            graph,
            snap,
            ctx,
            now,
            writes: Vec::new(),
            publish: Vec::new(),
            active_delta: 0,
            lazy_next: Vec::new(),
            lazy_skip: Vec::new(),
            events: Vec::new(),
            joins: BTreeMap::new(),
            created: HashSet::new(),
        }
    }

    pub fn event(&mut self, kind: &str, step: Option<&str>, data: Value) {
        self.events.push((kind.to_string(), step.map(str::to_string), data));
    }

    /// Resolves the outgoing edges of `block_id` after it completed (`failed == false`) or
    /// failed with error edges (`failed == true`). After a failure every error edge whose
    /// `when` holds (or that has none) is taken, whatever the block's type, and the normal
    /// edges are skipped; after a completion the error edges are skipped.
    pub fn resolve_outgoing(&mut self, block_id: &str, failed: bool) -> Result<(), String> {
        let block = self.graph.block(block_id).ok_or_else(|| format!("no block {block_id}"))?;
        let first_wins = block.kind == "condition" && !failed;
        let edges: Vec<_> = self.graph.outgoing(block_id).cloned().collect();
        let mut chosen = false;
        let mut decisions = Vec::with_capacity(edges.len());
        // Out of a condition block, `when` edges are tried in order and the default (no
        // `when`) is taken only if none matched.
        for e in &edges {
            let take = if e.is_error() != failed {
                false
            } else if let Some(w) = &e.when {
                if first_wins && chosen {
                    false
                } else {
                    let v = template::eval(w, self.ctx).map_err(|err| format!("edge {}→{}: {err}", e.from, e.to))?;
                    template::truthy(&v)
                }
            } else {
                !first_wins
            };
            chosen |= take;
            decisions.push(take);
        }
        if first_wins && !chosen {
            for (i, e) in edges.iter().enumerate() {
                if e.when.is_none() && !e.is_error() {
                    decisions[i] = true;
                    break;
                }
            }
        }
        for (e, take) in edges.iter().zip(decisions) {
            self.resolve_incoming(&e.to, take);
        }
        Ok(())
    }

    /// Resolves the edges of another block that ended in this same commit (a split's
    /// collection, a failed item's aggregate), with `state` as that block's step in the
    /// context, and folds the result into this plan. Returns what the sub-plan names
    /// lazily: those go on that block's own item (`next`, `skip`), not the committing step's.
    pub fn resolve_also(&mut self, block_id: &str, state: Value, failed: bool) -> Result<Lazy, String> {
        let mut ctx = self.ctx.clone();
        ctx["steps"][block_id] = state;
        let mut sub = Plan::new(self.run_id, self.graph, self.snap, &ctx, self.now);
        sub.resolve_outgoing(block_id, failed)?;
        let done = sub.finish();
        self.writes.extend(done.writes);
        self.publish.extend(done.publish);
        self.active_delta += done.active_delta;
        Ok(done.lazy)
    }

    /// Marks the error edges out of `block_id` as not taken (the block completed).
    pub fn skip_error_edges(&mut self, block_id: &str) {
        let targets: Vec<String> =
            self.graph.outgoing(block_id).filter(|e| e.is_error()).map(|e| e.to.clone()).collect();
        for t in targets {
            self.resolve_incoming(&t, false);
        }
    }

    /// Marks every outgoing edge of `block_id` as not taken (the block was skipped).
    pub fn skip_outgoing(&mut self, block_id: &str) {
        let targets: Vec<String> = self.graph.outgoing(block_id).map(|e| e.to.clone()).collect();
        for t in targets {
            self.resolve_incoming(&t, false);
        }
    }

    fn resolve_incoming(&mut self, target: &str, taken: bool) {
        let expected = self.graph.incoming(target).count() as i64;
        if expected <= 1 {
            if taken {
                self.create_pending(target);
            } else {
                self.create_skipped(target);
            }
            return;
        }
        let entry = self.joins.entry(target.to_string()).or_insert_with(|| {
            let cur = self.snap.steps.get(target);
            let resolved = cur.and_then(|s| s.i64("resolved"));
            (resolved, resolved.unwrap_or(0), cur.and_then(|s| s.i64("taken")).unwrap_or(0))
        });
        entry.1 += 1;
        entry.2 += i64::from(taken);
        let (resolved, took) = (entry.1, entry.2);
        if resolved == expected {
            if took > 0 {
                self.create_pending(target);
            } else {
                self.create_skipped(target);
            }
        }
    }

    /// A pending step to enqueue. Per-item steps are named by their split's collection.
    fn create_pending(&mut self, key: &str) {
        if !self.created.insert(key.to_string()) {
            return;
        }
        let cond = self.absent_or_join(key);
        if cond == Cond::NotExists {
            self.lazy_next.push(key.to_string());
        } else {
            let mut a = Attrs::new();
            a.insert("block".into(), json!(key));
            a.insert("status".into(), Value::from(StepStatus::Pending));
            a.insert("attempt".into(), json!(0));
            a.insert("created_at".into(), json!(self.now));
            self.writes.push(Write::Put { item: Item::new(keys::step(self.run_id, key), a), cond: Some(cond) });
        }
        self.publish.push(key.to_string());
        self.active_delta += 1;
    }

    /// A skipped block; its `step.skipped` event is read from the step (`runs::run_events`).
    fn create_skipped(&mut self, key: &str) {
        if !self.created.insert(key.to_string()) {
            return;
        }
        let cond = self.absent_or_join(key);
        if cond == Cond::NotExists {
            self.lazy_skip.push(key.to_string());
        } else {
            let mut a = Attrs::new();
            a.insert("block".into(), json!(key));
            a.insert("status".into(), Value::from(StepStatus::Skipped));
            a.insert("created_at".into(), json!(self.now));
            a.insert("finished_at".into(), json!(self.now));
            self.writes.push(Write::Put { item: Item::new(keys::step(self.run_id, key), a), cond: Some(cond) });
        }
        self.skip_outgoing(key);
    }

    /// A join's counter item may already exist; its creation (or final write) must be
    /// conditional on the counter we read, so that two predecessors committing at once
    /// cannot both miss, or both see, the last resolution.
    fn absent_or_join(&self, key: &str) -> Cond {
        match self.joins.get(key) {
            Some((Some(before), _, _)) => {
                Cond::And(vec![Cond::eq("status", StepStatus::Joining), Cond::eq("resolved", *before)])
            }
            _ => Cond::NotExists,
        }
    }

    /// Writes the join counters that did not complete in this plan, then the events.
    pub fn finish(mut self) -> Planned {
        let joins = std::mem::take(&mut self.joins);
        for (key, (before, resolved, taken)) in joins {
            if self.created.contains(&key) {
                continue;
            }
            let mut a = Attrs::new();
            a.insert("block".into(), json!(key));
            a.insert("status".into(), Value::from(StepStatus::Joining));
            a.insert("resolved".into(), json!(resolved));
            a.insert("taken".into(), json!(taken));
            a.insert("created_at".into(), json!(self.now));
            let cond = match before {
                Some(b) => Cond::And(vec![Cond::eq("status", StepStatus::Joining), Cond::eq("resolved", b)]),
                None => Cond::NotExists,
            };
            self.writes.push(Write::Put { item: Item::new(keys::step(self.run_id, &key), a), cond: Some(cond) });
        }
        let events = std::mem::take(&mut self.events);
        for (seq, (kind, step, data)) in events.into_iter().enumerate() {
            self.writes.push(event_write(
                self.run_id,
                self.now,
                // After the `step.completed` of this commit's step (+0) and collection (+1).
                self.snap.event_seq() + 2 + seq,
                &kind,
                step.as_deref(),
                data,
            ));
        }
        Planned {
            writes: self.writes,
            publish: self.publish,
            active_delta: self.active_delta,
            lazy: Lazy { next: self.lazy_next, skip: self.lazy_skip },
        }
    }
}

/// What a plan comes to.
pub struct Planned {
    pub writes: Vec<Write>,
    /// Step keys to enqueue once the commit has landed.
    pub publish: Vec<String>,
    pub active_delta: i64,
    pub lazy: Lazy,
}

/// Steps a commit names on the item of the step that resolved them instead of writing them.
#[derive(Debug, Default)]
pub struct Lazy {
    pub next: Vec<String>,
    pub skip: Vec<String>,
}

impl Lazy {
    /// Adds the names to the update of the step that resolved them.
    pub fn onto(self, mut u: Update) -> Update {
        if !self.next.is_empty() {
            u = u.set("next", json!(self.next));
        }
        if !self.skip.is_empty() {
            u = u.set("skip", json!(self.skip));
        }
        u
    }
}

pub fn event_write(run_id: &str, now: i64, seq: usize, kind: &str, step: Option<&str>, data: Value) -> Write {
    let mut a = Attrs::new();
    a.insert("type".into(), json!(kind));
    a.insert("at".into(), json!(now));
    if let Some(s) = step {
        a.insert("step_key".into(), json!(s));
    }
    if !data.is_null() {
        a.insert("data".into(), data);
    }
    Write::Put { item: Item::new(keys::event(run_id, now, seq), a), cond: None }
}

/// The run item's part of a commit: the active-step counter moves, and the commit only
/// lands while the run is still running (a cancel or failure in between makes it conflict).
pub fn run_write(run_id: &str, now: i64, active_delta: i64, waiting_delta: i64) -> Write {
    let mut u = Update::default().set("updated_at", now);
    if active_delta != 0 {
        u = u.add("active", active_delta);
    }
    if waiting_delta != 0 {
        u = u.add("waiting", waiting_delta);
    }
    Write::Update { key: keys::run(run_id), update: u, cond: Some(Cond::eq("status", RunStatus::Running)) }
}

//! The end of a run: completing it when its last step commits (or, after racing commits,
//! when `finalize` finds nothing left active), and which step's output becomes the run's.

use super::plan::event_write;
use super::snapshot::Snapshot;
use super::state::{RunStatus, StepStatus};
use super::worker::index_status;
use super::{Engine, now_ms};
use crate::callbacks;
use crate::error::{Error, Result};
use crate::keys;
use crate::store::{Cond, Item, Update, Write};
use serde_json::{Value, json};
use tracing::warn;

impl Engine {
    /// Completes the run if no step is left active. Idempotent and safe to call often.
    pub(super) async fn finalize(&self, run_id: &str) -> Result<()> {
        // Most calls find steps still active: the run item alone says so.
        let Some(run) = self.store.get(&keys::run(run_id)).await? else { return Ok(()) };
        if RunStatus::of(&run) != RunStatus::Running || run.i64("active").unwrap_or(0) > 0 {
            return Ok(());
        }
        let snap = Snapshot::require(&*self.store, run_id).await?;
        if snap.run_status() != RunStatus::Running || snap.run.i64("active").unwrap_or(0) > 0 {
            return Ok(());
        }
        if let Some((k, _)) = snap.steps.iter().find(|(_, s)| !StepStatus::of(s).is_terminal()) {
            // A join still counting, with nothing active to complete it, would be an engine
            // bug; leave the run running and loud in the logs rather than guess an output.
            if !snap.steps.get(k).is_some_and(|s| StepStatus::of(s) == StepStatus::Joining) {
                return Ok(());
            }
            warn!(step_key = %k, "run has no active steps but an unresolved join");
        }
        let pinned = self.pinned_of(&snap.run).await?;
        let now = now_ms();
        let (upd, rest, outbox) = self.completion(run_id, &snap, &pinned.graph, now, None).await?;
        let mut writes = vec![Write::Update {
            key: keys::run(run_id),
            update: upd.set("updated_at", now),
            cond: Some(Cond::And(vec![Cond::eq("status", RunStatus::Running), Cond::Le("active".into(), json!(0))])),
        }];
        writes.extend(rest);
        self.child_end_safety(&snap.run).await?;
        match self.store.transact(writes).await {
            Ok(()) => {
                self.flush_outbox(outbox.into_iter().collect()).await;
                self.child_ended(&snap.run).await;
                Ok(())
            }
            Err(Error::Conflict(_)) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// What completing a run writes, given the run as it is once its last step (`own`, when
    /// a step's commit completes it) committed: the run item's changes (status, output,
    /// response), and the other writes (index, `run.completed` event, callback delivery).
    pub(super) async fn completion(
        &self,
        run_id: &str,
        snap: &Snapshot,
        graph: &crate::model::Graph,
        now: i64,
        own: Option<&str>,
    ) -> Result<(Update, Vec<Write>, Option<super::deliveries::Outbox>)> {
        let acct = snap.run.str("account_id").unwrap_or_default();
        let last = self.output_of(run_id, snap, graph, own).await?;
        let last = last.as_ref();
        let output = last.and_then(|s| s.get("output")).cloned().unwrap_or(Value::Null);
        let mut upd =
            Update::default().set("status", RunStatus::Completed).set("output", output.clone()).set("finished_at", now);
        if let Some(s) = last.and_then(|s| s.get("response_status")) {
            upd = upd.set("response_status", s.clone());
        }
        if let Some(h) = last.and_then(|s| s.get("response_headers")) {
            upd = upd.set("response_headers", h.clone());
        }
        let mut writes = vec![
            index_status(acct, run_id, "completed", now),
            // Sorts after the step events of the same millisecond.
            event_write(run_id, now, 999_999, "run.completed", None, Value::Null),
        ];
        let summary = callbacks::run_summary(&snap.run, "completed", Some(&output), Some(&Value::Null), now);
        let outbox = self.callback_outbox(&snap.run, callbacks::RUN_COMPLETED, summary, now).await?;
        if let Some(o) = &outbox {
            writes.push(o.write.clone());
        }
        Ok((upd, writes, outbox))
    }
    /// [`output_step`] of a run whose snapshot may hold only part of it: the response
    /// blocks' steps are read (the graph names them), and without a completed one the step
    /// whose commit completes the run is the last that ran. Only a run that ends on a
    /// handled failure reads every step.
    pub(super) async fn output_of(
        &self,
        run_id: &str,
        snap: &Snapshot,
        graph: &crate::model::Graph,
        own: Option<&str>,
    ) -> Result<Option<Item>> {
        if !snap.partial {
            return Ok(output_step(snap, graph).cloned());
        }
        let responses: Vec<&str> =
            graph.blocks.iter().filter(|b| b.kind == "response").map(|b| b.id.as_str()).collect();
        let unread: Vec<&str> = responses.iter().copied().filter(|b| !snap.steps.contains_key(*b)).collect();
        let fetched = if unread.is_empty() {
            Vec::new()
        } else {
            self.store.get_many(&unread.iter().map(|b| keys::step(run_id, b)).collect::<Vec<_>>()).await?
        };
        let mut found: Vec<(&str, Item)> = responses
            .iter()
            .filter_map(|b| snap.steps.get(*b).map(|s| (*b, s.clone())))
            .chain(unread.iter().copied().zip(fetched).filter_map(|(b, s)| s.map(|s| (b, s))))
            .filter(|(_, s)| StepStatus::of(s) == StepStatus::Completed)
            .collect();
        let position = |k: &str| graph.blocks.iter().position(|b| b.id == k).unwrap_or(0);
        found.sort_by_key(|(k, s)| (s.i64("finished_at").unwrap_or(0), position(k)));
        if let Some((_, s)) = found.pop() {
            return Ok(Some(s));
        }
        if let Some(s) = own.and_then(|k| snap.steps.get(k)).filter(|s| StepStatus::of(s) == StepStatus::Completed) {
            return Ok(Some(s.clone()));
        }
        let mut merged = Snapshot::require(&*self.store, run_id).await?;
        for (k, s) in &snap.steps {
            merged.steps.insert(k.clone(), s.clone());
        }
        Ok(output_step(&merged, graph).cloned())
    }
}

/// The step whose output becomes the run's: the latest response block if any completed,
/// else the last block that ran. "Last" is read from the graph, not the clock: a completed
/// step none of whose successors completed (a sink of what ran); among several such sinks
/// (parallel branches), the latest to finish, ties broken by the order of the blocks.
fn output_step<'a>(snap: &'a Snapshot, graph: &crate::model::Graph) -> Option<&'a Item> {
    let done = |k: &str| snap.steps.get(k).is_some_and(|s| StepStatus::of(s) == StepStatus::Completed);
    let position = |k: &str| graph.blocks.iter().position(|b| b.id == k).unwrap_or(0);
    let rank = |k: &str, s: &Item| (s.i64("finished_at").unwrap_or(0), position(k));
    let completed: Vec<(&String, &Item)> =
        snap.steps.iter().filter(|(k, s)| !k.contains('[') && StepStatus::of(s) == StepStatus::Completed).collect();
    let responses = completed.iter().filter(|(k, _)| graph.block(k).is_some_and(|b| b.kind == "response"));
    if let Some((_, s)) = responses.max_by_key(|(k, s)| rank(k, s)) {
        return Some(s);
    }
    completed
        .iter()
        .filter(|(k, _)| !graph.outgoing(k).any(|e| done(&e.to)))
        .max_by_key(|(k, s)| rank(k, s))
        .map(|(_, s)| *s)
}

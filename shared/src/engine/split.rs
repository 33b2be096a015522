//! Splits: a split's commit names its collection (the body block's step counting the items)
//! and sends the item messages in chunks; each item counts itself on the collection, and
//! the item that finds the count full makes the collection, which then commits like any
//! step. A failed item fails the collection.

use super::plan::Plan;
use super::snapshot::Snapshot;
use super::state::{RunStatus, StepStatus};
use super::worker::{Finish, Guard, Handled};
use super::{Engine, FAN_CHUNK, Msg, now_ms};
use crate::blocks::StepError;
use crate::error::{Error, Result};
use crate::keys;
use crate::store::{Attrs, Cond, Item, Query, Update, Write, query_all};
use serde_json::{Value, json};
use tracing::warn;

impl Engine {
    /// A split's commit: its collection step (the body block's step, counting the items) and
    /// the first item messages. Item steps get no write: each is claimed into being (see
    /// `Snapshot::load_for`), so a split of any width is one write here.
    pub(super) fn split_writes(
        &self,
        run_id: &str,
        split_key: &str,
        output: &Value,
        plan: &mut Plan<'_>,
        ev_seq: i64,
        now: i64,
    ) -> Result<(Write, Vec<Msg>)> {
        let n = output.as_array().map(Vec::len).unwrap_or(0);
        let body = plan
            .graph
            .outgoing(split_key)
            .find(|e| !e.is_error())
            .map(|e| e.to.clone())
            .ok_or_else(|| Error::Internal(format!("split {split_key} has no body")))?;
        // The split completed: its error edges are not taken.
        plan.skip_error_edges(split_key);
        let mut agg = Attrs::new();
        agg.insert("block".into(), json!(body));
        agg.insert("split".into(), json!(split_key));
        agg.insert("expected".into(), json!(n));
        agg.insert("done".into(), json!(0));
        agg.insert("created_at".into(), json!(now));
        let mut msgs = Vec::new();
        if n == 0 {
            agg.insert("status".into(), Value::from(StepStatus::Completed));
            agg.insert("output".into(), json!([]));
            agg.insert("finished_at".into(), json!(now));
            agg.insert("ev_seq".into(), json!(ev_seq + 1));
            let lazy = plan
                .resolve_also(&body, json!({"status": "completed", "output": []}), false)
                .map_err(Error::Internal)?;
            if let Some(next) = (!lazy.next.is_empty()).then(|| json!(lazy.next)) {
                agg.insert("next".into(), next);
            }
            if let Some(skip) = (!lazy.skip.is_empty()).then(|| json!(lazy.skip)) {
                agg.insert("skip".into(), skip);
            }
        } else {
            agg.insert("status".into(), Value::from(StepStatus::Collecting));
            // The collection is the active step until its last item is in.
            plan.active_delta += 1;
            msgs = fan_messages(&plan.snap.run, &body, 0, n);
        }
        Ok((Write::Put { item: Item::new(keys::step(run_id, &body), agg), cond: Some(Cond::NotExists) }, msgs))
    }

    /// One try at committing the end of one of a split's item steps. A completed item counts
    /// itself on its collection (an atomic add, so items never race each other); the item
    /// that finds the count full makes the collection. A failed item fails the collection,
    /// which then goes through the body block's error edges or fails the run; items still in
    /// flight end `cancelled` when they come back.
    pub(super) async fn finish_item(
        &self,
        run_id: &str,
        key: &str,
        body: &str,
        guard: &Guard,
        finish: &Finish,
        snap: &Snapshot,
    ) -> Result<ItemCommit> {
        let now = now_ms();
        let index = keys::split_item(key).map(|(_, i)| i).unwrap_or(0);
        let collecting = snap.steps.get(body).is_some_and(|a| StepStatus::of(a) == StepStatus::Collecting);
        if !collecting {
            // The collection ended (an item failed, or the run was redriven meanwhile).
            let upd = Update::default()
                .set("status", StepStatus::Cancelled)
                .set("finished_at", now)
                .set("index", index)
                .remove("claim")
                .remove("lease_until");
            match self.store.update(&keys::step(run_id, key), guard.stamp(upd, key), Some(guard.cond())).await {
                Ok(_) | Err(Error::Conflict(_)) => return Ok(ItemCommit::Done(Vec::new())),
                Err(e) => return Err(e),
            }
        }
        let own = Update::default().set("finished_at", now).set("index", index).remove("claim").remove("lease_until");
        match finish {
            Finish::Completed { output, .. } => {
                let writes = vec![
                    Write::Update {
                        key: keys::step(run_id, key),
                        update: guard
                            .stamp(own.set("status", StepStatus::Completed).set("output", output.clone()), key),
                        cond: Some(guard.cond()),
                    },
                    Write::Update {
                        key: keys::step(run_id, body),
                        update: Update::default().add("done", 1),
                        cond: Some(Cond::eq("status", StepStatus::Collecting)),
                    },
                    Write::Check { key: keys::run(run_id), cond: Cond::eq("status", RunStatus::Running) },
                ];
                match self.store.transact(writes).await {
                    Ok(()) => Ok(ItemCommit::Done(self.collect_if_done(run_id, body).await?)),
                    Err(Error::Conflict(_)) => Ok(ItemCommit::Retry),
                    Err(e) => Err(e),
                }
            }
            Finish::Failed(err) => {
                let own_write = Write::Update {
                    key: keys::step(run_id, key),
                    update: guard.stamp(own.set("status", StepStatus::Failed).set("error", err.to_json()), key),
                    cond: Some(guard.cond()),
                };
                let err = StepError { message: format!("item {index}: {}", err.message), ..err.clone() };
                let publish = Box::pin(self.finish_step(
                    run_id,
                    body,
                    Guard::Collecting { complete: None },
                    Finish::Failed(err),
                    vec![own_write],
                    None,
                ))
                .await?;
                match publish {
                    Some(p) => Ok(ItemCommit::Done(p)),
                    None => Ok(ItemCommit::Retry),
                }
            }
        }
    }

    /// Makes a split's collection once every item has completed: reads the items in index
    /// order and commits their outputs, as an array, as the body block's step. Idempotent:
    /// only the first of several callers lands it.
    pub(crate) async fn collect_if_done(&self, run_id: &str, body: &str) -> Result<Vec<Msg>> {
        let Some(agg) = self.store.get(&keys::step(run_id, body)).await? else { return Ok(Vec::new()) };
        let expected = agg.i64("expected").unwrap_or(0);
        if StepStatus::of(&agg) != StepStatus::Collecting || agg.i64("done").unwrap_or(0) < expected {
            return Ok(Vec::new());
        }
        let items = query_all(&*self.store, Query::prefix(keys::run_pk(run_id), keys::items_prefix(body))).await?;
        let outputs: Vec<Value> = items
            .iter()
            .filter(|it| StepStatus::of(it) == StepStatus::Completed)
            .map(|it| it.get("output").cloned().unwrap_or(Value::Null))
            .collect();
        if outputs.len() as i64 != expected {
            warn!(step_key = %body, expected, completed = outputs.len(), "a full collection does not hold every item");
            return Ok(Vec::new());
        }
        let finish = Finish::Completed { output: Value::Array(outputs), status: None, headers: None };
        let guard = Guard::Collecting { complete: Some(expected) };
        let landed = Box::pin(self.finish_step(run_id, body, guard, finish, Vec::new(), None)).await?;
        Ok(landed.unwrap_or_default())
    }

    /// Publishes the next chunk of a split's item messages, and the message for the chunk after.
    pub(super) async fn handle_fan(&self, run_id: &str, body: &str, from: usize) -> Result<Handled> {
        let mut got = self.store.get_many(&[keys::run(run_id), keys::step(run_id, body)]).await?.into_iter();
        let (Some(run), Some(agg)) = (got.next().flatten(), got.next().flatten()) else {
            return Ok(Handled::done());
        };
        if RunStatus::of(&run) != RunStatus::Running || StepStatus::of(&agg) != StepStatus::Collecting {
            return Ok(Handled::done());
        }
        let n = agg.i64("expected").unwrap_or(0) as usize;
        Ok(Handled::ack(fan_messages(&run, body, from, n)))
    }
}

/// Messages for items `from..` of a split of `n` items: one chunk, and a [`Msg::Fan`] for the
/// rest.
pub(super) fn fan_messages(run: &Item, body: &str, from: usize, n: usize) -> Vec<Msg> {
    let run_id = run.key.pk.trim_start_matches("RUN#");
    let to = n.min(from + FAN_CHUNK);
    let mut msgs: Vec<Msg> = (from..to).map(|i| Msg::step_of(run, &format!("{body}[{i}]"))).collect();
    if to < n {
        msgs.push(Msg::Fan { r: run_id.to_string(), s: body.to_string(), f: to });
    }
    msgs
}

pub(super) enum ItemCommit {
    Done(Vec<Msg>),
    Retry,
}

//! One wait primitive: a step that waits for something outside the engine — a person's
//! answer today; an HTTP callback, a child run or an approval gate next — goes through one
//! record and one way back.
//!
//! The wait record (`TASK#{id}` in the run's partition, shown as a task for a person's wait)
//! holds the kind, the prompt, an optional timeout with the default outcome, and, when the
//! block minted one ([`new_wait_token`]), the SHA-256 of a 256-bit token; the token's lookup
//! item names the run and the wait, so `POST /callback` needs no run id. Resuming — a
//! person's answer, a token, a timeout — is the same idempotent commit of the waiting step
//! ([`Guard::Waiting`]): whichever comes first lands, the others find the wait closed.

use super::plan::{event_write, run_write};
use super::snapshot::Snapshot;
use super::state::{RunStatus, StepStatus};
use super::worker::{Finish, Guard, Handled, index_status};
use super::{Engine, Msg, now_ms};
use crate::blocks::{StepError, WaitSpec};
use crate::callbacks;
use crate::error::{Error, Result};
use crate::keys;
use crate::store::{Attrs, Cond, Item, Query, Update, Write};
use serde_json::{Value, json};
use std::time::Duration;

/// Whether a wait of this kind is a person's (it counts in the run's `waiting`, and the run
/// shows `waiting_human`).
pub(crate) fn is_human(kind: &str) -> bool {
    matches!(kind, "question" | "approval")
}

impl Engine {
    /// Puts a claimed step to waiting: the wait record (and its token's lookup), the step's
    /// status, the run's counters, the event and, for a person, the `run.waiting_human`
    /// callback; then the timeout message.
    pub(crate) async fn wait_step(&self, run_id: &str, key: &str, guard: Guard, spec: WaitSpec) -> Result<()> {
        let task_id = crate::ids::new_id("task");
        let now = now_ms();
        let snap = Snapshot::require(&*self.store, run_id).await?;
        if !guard.holds(&snap, key) {
            return Ok(());
        }
        let acct = snap.run.str("account_id").unwrap_or_default().to_string();
        let timeout_at = spec.timeout.map(|d| now + d.as_millis() as i64);
        let mut task = Attrs::new();
        task.insert("task_id".into(), json!(task_id));
        task.insert("step_key".into(), json!(key));
        task.insert("kind".into(), json!(spec.kind));
        task.insert("prompt".into(), spec.prompt);
        task.insert("status".into(), json!("open"));
        task.insert("created_at".into(), json!(now));
        if let Some(t) = timeout_at {
            task.insert("timeout_at".into(), json!(t));
        }
        if let Some(d) = spec.default {
            task.insert("default".into(), d);
        }
        if let Some(h) = &spec.token_hash {
            task.insert("token_hash".into(), json!(h));
        }
        if let Value::Object(extra) = spec.extra {
            task.extend(extra);
        }
        let mut task_ids: Vec<String> =
            snap.tasks.iter().filter(|(_, t)| t.str("status") == Some("open")).map(|(k, _)| k.clone()).collect();
        task_ids.push(task_id.clone());
        task_ids.sort();
        let mut summary = callbacks::run_summary(&snap.run, "waiting_human", None, None, now);
        summary["task_ids"] = json!(task_ids);
        summary["task"] = json!({
            "task_id": task_id, "step_key": key, "kind": task.get("kind"), "prompt": task.get("prompt"),
            "timeout_at": timeout_at.map(crate::ids::ms_to_rfc3339),
        });
        // Only a person's wait makes the run `waiting_human` and tells its callback URL.
        let human = is_human(&spec.kind);
        let outbox = if human {
            self.callback_outbox(&snap.run, callbacks::RUN_WAITING_HUMAN, summary, now).await?
        } else {
            None
        };
        let mut writes = vec![
            Write::Update {
                key: keys::step(run_id, key),
                update: guard.stamp(
                    Update::default()
                        .set("status", StepStatus::WaitingHuman)
                        .set("task_id", task_id.as_str())
                        .remove("claim")
                        .remove("lease_until"),
                    key,
                ),
                cond: Some(guard.cond()),
            },
            Write::Put { item: Item::new(keys::task(run_id, &task_id), task), cond: Some(Cond::NotExists) },
            run_write(run_id, now, 0, if human { 1 } else { 0 }),
            event_write(run_id, now, snap.event_seq(), "step.waiting", Some(key), json!({"task_id": task_id})),
        ];
        if human {
            writes.push(index_status(&acct, run_id, "waiting_human", now));
        }
        if let Some(h) = &spec.token_hash {
            // The lookup the token resumes the wait by; a token is good for one wait only.
            let mut a = Attrs::new();
            a.insert("run_id".into(), json!(run_id));
            a.insert("task_id".into(), json!(task_id));
            writes.push(Write::Put { item: Item::new(keys::wait_token(h, run_id), a), cond: Some(Cond::NotExists) });
        }
        if let Some(o) = &outbox {
            writes.push(o.write.clone());
        }
        match self.store.transact(writes).await {
            Ok(()) => self.flush_outbox(outbox.into_iter().collect()).await,
            Err(Error::Conflict(_)) => {
                // Cancelled meanwhile, or the lease was lost: the new owner decides.
                let snap = Snapshot::require(&*self.store, run_id).await?;
                if snap.run_status() != RunStatus::Running && guard.holds(&snap, key) {
                    self.cancel_step(run_id, key, Cond::eq("status", StepStatus::Running)).await?;
                }
                return Ok(());
            }
            Err(e) => return Err(e),
        }
        if let Some(d) = spec.timeout {
            self.send(vec![(Msg::TaskTimeout { r: run_id.into(), k: task_id }, d)]).await?;
        }
        Ok(())
    }

    /// A wait's timeout message: applies the default outcome, or fails the step with `TIMEOUT`.
    pub(crate) async fn handle_task_timeout(&self, run_id: &str, task_id: &str) -> Result<Handled> {
        let Some(snap) = Snapshot::load(&*self.store, run_id).await? else { return Ok(Handled::ack(Vec::new())) };
        let Some(task) = snap.tasks.get(task_id) else { return Ok(Handled::ack(Vec::new())) };
        if task.str("status") != Some("open") || snap.run_status() != RunStatus::Running {
            return Ok(Handled::ack(Vec::new()));
        }
        let now = now_ms();
        let due = task.i64("timeout_at").unwrap_or(0);
        if now < due {
            self.send(vec![(
                Msg::TaskTimeout { r: run_id.into(), k: task_id.into() },
                Duration::from_millis((due - now) as u64),
            )])
            .await?;
            return Ok(Handled::ack(Vec::new()));
        }
        let publish = match task.get("default").cloned() {
            Some(default) => self.resolve_task(&snap, task_id, default, "timed_out").await?,
            None => {
                let step_key = task.str("step_key").unwrap_or_default().to_string();
                let err = StepError::fatal("TIMEOUT", "the task was not completed before its timeout");
                let extra = vec![task_close(run_id, task_id, "timed_out", Value::Null, now)];
                self.finish_step(run_id, &step_key, Guard::Waiting(task_id.into()), Finish::Failed(err), extra, None)
                    .await?
                    .unwrap_or_default()
            }
        };
        Ok(Handled::ack(publish))
    }

    /// Applies a person's answer (or a timeout's default) to a waiting step.
    pub(crate) async fn resolve_task(
        &self,
        snap: &Snapshot,
        task_id: &str,
        answer: Value,
        closed_as: &str,
    ) -> Result<Vec<Msg>> {
        let run_id = snap.run.key.pk.trim_start_matches("RUN#").to_string();
        let task = snap.tasks.get(task_id).ok_or_else(|| Error::not_found(format!("task {task_id}")))?;
        let step_key = task.str("step_key").unwrap_or_default().to_string();
        let kind = task.str("kind").unwrap_or("question");
        let acct = snap.run.str("account_id").unwrap_or_default();
        let pinned = self
            .pinned(acct, snap.run.str("workflow_id").unwrap_or_default(), snap.run.i64("version").unwrap_or(1) as u64)
            .await?;
        let block_id = snap.steps.get(&step_key).and_then(|s| s.str("block")).unwrap_or(&step_key).to_string();
        let on_reject = pinned
            .graph
            .block(&block_id)
            .and_then(|b| b.config.get("on_reject"))
            .and_then(Value::as_str)
            .unwrap_or("fail");
        let (output, finish) = task_outcome(kind, &answer, on_reject)?;
        let extra = vec![task_close(&run_id, task_id, closed_as, output, now_ms())];
        self.finish_step(&run_id, &step_key, Guard::Waiting(task_id.into()), finish, extra, None)
            .await?
            .ok_or_else(|| Error::Conflict(format!("task {task_id} is no longer open")))
    }

    /// Resumes the wait `token` was minted for with `answer` (its kind says how the answer
    /// is read). `(run_id, step_key)` of the resumed step; an unknown token is `NotFound`, a
    /// wait already resumed (or timed out, or cancelled) `Conflict`.
    pub async fn resume_by_token(&self, token: &str, answer: Value) -> Result<(String, String)> {
        let q = Query { limit: 1, ..Query::partition(keys::wait_token_pk(&crate::ids::hash_secret(token))) };
        let page = self.store.query(q).await?;
        let lookup = page.items.into_iter().next().ok_or_else(|| Error::not_found("callback token"))?;
        let run_id = lookup.str("run_id").unwrap_or_default().to_string();
        let task_id = lookup.str("task_id").unwrap_or_default().to_string();
        let snap = Snapshot::require(&*self.store, &run_id).await?;
        let task = snap.tasks.get(&task_id).ok_or_else(|| Error::not_found("callback token"))?;
        let step_key = task.str("step_key").unwrap_or_default().to_string();
        let used = |s: &str| format!("this token was already used (the wait is {s})");
        self.resume(&snap, &task_id, answer, used).await.map_err(|e| match e {
            // Resumed by someone else between the read and the commit.
            Error::Conflict(_) => Error::Conflict("this token was already used".into()),
            e => e,
        })?;
        Ok((run_id, step_key))
    }

    /// Resumes the open wait `task_id` of the run in `snap` with `answer`, and sends what
    /// follows. A wait no longer open is `Conflict` with `closed(its status)` as message; one
    /// closed between the read and the commit is `Conflict` too.
    pub(crate) async fn resume(
        &self,
        snap: &Snapshot,
        task_id: &str,
        answer: Value,
        closed: impl Fn(&str) -> String,
    ) -> Result<()> {
        let run_id = snap.run.key.pk.trim_start_matches(keys::RUN_PK_PREFIX);
        let task = snap.tasks.get(task_id).ok_or_else(|| Error::not_found(format!("task {task_id}")))?;
        match task.str("status") {
            Some("open") => {}
            Some(s) => return Err(Error::Conflict(closed(s))),
            None => return Err(Error::Internal(format!("task {task_id} has no status"))),
        }
        if snap.run_status() != RunStatus::Running {
            return Err(Error::InvalidStatus(format!("run {run_id} is {}", snap.run_status())));
        }
        // The commit below and the send after it are two systems: a safety sweep queued first
        // publishes the successors if this request dies in between.
        self.send(vec![(Msg::Sweep { r: run_id.to_string() }, self.sweep_after())]).await?;
        let publish = self.resolve_task(snap, task_id, answer, "completed").await?;
        self.send(publish.into_iter().map(|m| (m, Duration::ZERO)).collect()).await
    }
}

/// Validates a task answer and turns it into the step's output (or its failure).
pub(crate) fn task_outcome(kind: &str, answer: &Value, on_reject: &str) -> Result<(Value, Finish)> {
    let Value::Object(obj) = answer else {
        return Err(Error::validation("A task answer must be a JSON object"));
    };
    if kind == "approval" {
        let approved = match obj.get("approved") {
            Some(Value::Bool(b)) => *b,
            Some(_) => return Err(Error::validation_at(vec![json!("approved")], "`approved` must be true or false")),
            None => {
                return Err(Error::validation_at(
                    vec![json!("approved")],
                    "`approved` (true or false) is required for an approval task",
                ));
            }
        };
        if let Some(f) = obj.get("feedback")
            && !f.is_string()
            && !f.is_null()
        {
            return Err(Error::validation_at(vec![json!("feedback")], "`feedback` must be a string"));
        }
        let out = answer.clone();
        if !approved && on_reject != "continue" {
            let fb = obj.get("feedback").and_then(Value::as_str).unwrap_or("");
            let msg = if fb.is_empty() {
                "rejected by the reviewer".to_string()
            } else {
                format!("rejected by the reviewer: {fb}")
            };
            return Ok((out, Finish::Failed(StepError::fatal("REJECTED", msg))));
        }
        return Ok((out.clone(), Finish::Completed { output: out, status: None, headers: None }));
    }
    if kind == "child" {
        return Ok(match super::child::child_outcome(answer) {
            Ok(crate::blocks::Outcome::Output(out)) => {
                (out.clone(), Finish::Completed { output: out, status: None, headers: None })
            }
            Ok(_) => return Err(Error::internal("a child run's end is an output or a failure")),
            Err(e) => (answer.clone(), Finish::Failed(e)),
        });
    }
    if kind == "callback" {
        // `{"error": {"message"}}` fails the step; `{"output": …}`, or any other object, is
        // its output.
        if let Some(e) = obj.get("error").filter(|e| !e.is_null()) {
            let message =
                e.get("message").and_then(Value::as_str).or(e.as_str()).unwrap_or("the callback reported an error");
            let err = StepError::fatal("CALLBACK_ERROR", message);
            return Ok((answer.clone(), Finish::Failed(err)));
        }
        let out = obj.get("output").cloned().unwrap_or_else(|| answer.clone());
        return Ok((out.clone(), Finish::Completed { output: out, status: None, headers: None }));
    }
    let Some(output) = obj.get("output") else {
        return Err(Error::validation_at(vec![json!("output")], "`output` is required to answer a question task"));
    };
    Ok((output.clone(), Finish::Completed { output: output.clone(), status: None, headers: None }))
}

pub(crate) fn task_close(run_id: &str, task_id: &str, status: &str, output: Value, now: i64) -> Write {
    Write::Update {
        key: keys::task(run_id, task_id),
        update: Update::default().set("status", status).set("output", output).set("completed_at", now),
        cond: Some(Cond::eq("status", "open")),
    }
}

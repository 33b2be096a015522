//! Child runs (the `orchestration` block): a step starts a run of another workflow of the
//! account and waits for it through the wait primitive (kind `child`).
//!
//! The child is started first, with an idempotency key of the parent's step (so a redelivered
//! step finds the same child) and its link to the parent `{run_id, step_key, token}` on its
//! run item; then the step waits on the token's hash. When the child ends (completed, failed,
//! cancelled), a [`Msg::Child`] sent before that commit (delayed, the safety net) and after it
//! (at once) resumes the parent with `resume_by_token`, which lands once: every later try
//! finds the wait closed.

use super::runs::{ParentLink, StartRequest};
use super::state::{RunStatus, StepStatus};
use super::{Engine, Handled, Msg};
use crate::blocks::orchestration::{self, MAX_DEPTH};
use crate::blocks::{BlockContext, Outcome, StepError, WaitSpec};
use crate::callbacks::SAFETY_DELAY;
use crate::error::{Detail, Error, Result};
use crate::graph::Block;
use crate::keys;
use crate::store::{Item, Store};
use serde_json::{Value, json};
use std::time::Duration;
use tracing::{debug, warn};

impl Engine {
    /// Runs an `orchestration` step: starts (or, on a redelivery, finds) its child run and
    /// waits for it.
    pub(super) async fn start_child(&self, block: &Block, cx: &BlockContext<'_>, run: &Item) -> Outcome {
        let depth = run.i64("depth").unwrap_or(1).max(1) as u64;
        if depth >= MAX_DEPTH {
            return Outcome::Fail(StepError::fatal(
                "NESTING_TOO_DEEP",
                format!(
                    "this run is already at nesting depth {depth} (a child of a child …); runs nest at most {MAX_DEPTH} deep, so it cannot start another child run"
                ),
            ));
        }
        let spec = match orchestration::spec(&block.config, cx.data) {
            Ok(s) => s,
            Err(e) => return Outcome::Fail(e),
        };
        let (token, _) = crate::ids::new_wait_token();
        let epoch = run.i64("epoch").unwrap_or(0);
        let req = StartRequest {
            input: spec.input,
            // The same child for every delivery of this step; a redrive starts a new one.
            idempotency_key: Some(format!("child:{}:{}:{epoch}", cx.run_id, cx.step_key)),
            source: "orchestration".into(),
            version: spec.version,
            parent: Some(ParentLink {
                run_id: cx.run_id.to_string(),
                step_key: cx.step_key.to_string(),
                token,
                depth: depth + 1,
            }),
            ..StartRequest::default()
        };
        let started = match self.start_run(cx.account_id, &spec.workflow_id, req).await {
            Ok(s) => s,
            Err(e) => return Outcome::Fail(start_error(&spec.workflow_id, e)),
        };
        let child_id = started.run["run_id"].as_str().unwrap_or_default().to_string();
        // A replay returns the child an earlier delivery started, with that delivery's token.
        let child = match self.store.get(&keys::run(&child_id)).await {
            Ok(Some(c)) => c,
            Ok(None) => return Outcome::Fail(StepError::retryable("CHILD_START_FAILED", "the child run vanished")),
            Err(e) => return Outcome::Fail(start_error(&spec.workflow_id, e)),
        };
        if let Some(answer) = child_answer(&child) {
            // Ended already (a redelivery after the child ran): no need to wait.
            return match child_outcome(&answer) {
                Ok(o) => o,
                Err(e) => Outcome::Fail(e),
            };
        }
        let Some(token) = child.get("parent").and_then(|p| p.get("token")).and_then(Value::as_str) else {
            return Outcome::Fail(StepError::fatal(
                "CHILD_START_FAILED",
                format!("run {child_id} is not a child of this step"),
            ));
        };
        Outcome::Wait(WaitSpec {
            kind: "child".into(),
            prompt: json!({"workflow_id": spec.workflow_id, "child_run_id": child_id}),
            timeout: None,
            default: None,
            extra: json!({"child_run_id": child_id}),
            token_hash: Some(crate::ids::hash_secret(token)),
        })
    }

    /// Before a commit that ends `run`: if it is a child, the message that resumes its parent
    /// should this process die right after the commit.
    pub(super) async fn child_end_safety(&self, run: &Item) -> Result<()> {
        if run.get("parent").is_some() {
            self.send(vec![(Msg::Child { r: run_id(run) }, SAFETY_DELAY)]).await?;
        }
        Ok(())
    }

    /// After a commit that ended `run`: resume its parent now (the safety message covers a
    /// failed send).
    pub(super) async fn child_ended(&self, run: &Item) {
        if run.get("parent").is_some()
            && let Err(e) = self.send(vec![(Msg::Child { r: run_id(run) }, Duration::ZERO)]).await
        {
            warn!(error = %e, "could not enqueue the parent's resume; its safety message will");
        }
    }

    /// [`Msg::Child`]: resumes the parent of a child run that ended. Idempotent.
    pub(crate) async fn handle_child_end(&self, child_id: &str) -> Result<Handled> {
        let Some(child) = self.store.get(&keys::run(child_id)).await? else { return Ok(Handled::done()) };
        let (Some(parent), Some(answer)) = (child.get("parent").cloned(), child_answer(&child)) else {
            // Not a child, or the commit that was to end it did not land.
            return Ok(Handled::done());
        };
        let token = parent["token"].as_str().unwrap_or_default();
        match self.resume_by_token(token, answer).await {
            Ok(_) => Ok(Handled::done()),
            Err(Error::NotFound(_)) => {
                // The child was started before the parent's wait was committed: wait for it
                // while the parent's step is still running.
                let (prun, pstep) =
                    (parent["run_id"].as_str().unwrap_or(""), parent["step_key"].as_str().unwrap_or(""));
                let run = self.store.get(&keys::run(prun)).await?;
                let step = self.store.get(&keys::step(prun, pstep)).await?;
                let live = run.is_some_and(|r| RunStatus::of(&r) == RunStatus::Running)
                    && step.is_none_or(|s| !StepStatus::of(&s).is_terminal());
                if live { Ok(Handled::retry(Duration::from_secs(1))) } else { Ok(Handled::done()) }
            }
            // Resumed already, or the parent ended (cancelled) meanwhile.
            Err(Error::Conflict(_)) | Err(Error::InvalidStatus(_)) => {
                debug!("the parent's wait is closed");
                Ok(Handled::done())
            }
            Err(e) => Err(e),
        }
    }

    /// After a parent's cancel committed: cancel the children its steps were waiting on.
    pub(super) async fn cancel_children(&self, acct: &str, children: Vec<String>) {
        for c in children {
            match Box::pin(self.cancel_run(acct, &c)).await {
                Ok(_) | Err(Error::InvalidStatus(_)) | Err(Error::NotFound(_)) => {}
                Err(e) => warn!(error = %e, child_run_id = %c, "could not cancel a child run"),
            }
        }
    }
}

fn run_id(run: &Item) -> String {
    run.key.pk.trim_start_matches(keys::RUN_PK_PREFIX).to_string()
}

/// How a child that ended resumes its parent's wait; `None` while it runs.
fn child_answer(child: &Item) -> Option<Value> {
    let id = run_id(child);
    match RunStatus::of(child) {
        RunStatus::Completed => Some(
            json!({"status": "completed", "run_id": id, "output": child.get("output").cloned().unwrap_or(Value::Null)}),
        ),
        RunStatus::Failed => {
            Some(json!({"status": "failed", "run_id": id, "error": child.get("error").cloned().unwrap_or(Value::Null)}))
        }
        RunStatus::Cancelled => Some(json!({"status": "cancelled", "run_id": id})),
        _ => None,
    }
}

/// What a child's end (`child_answer`) makes of the waiting step.
pub(super) fn child_outcome(answer: &Value) -> std::result::Result<Outcome, StepError> {
    let id = answer["run_id"].as_str().unwrap_or("");
    match answer["status"].as_str() {
        Some("completed") => Ok(Outcome::Output(answer["output"].clone())),
        Some("failed") => {
            let e = &answer["error"];
            let message = e["message"].as_str().unwrap_or("the child run failed");
            let code = e["code"].as_str().map(|c| format!(" ({c})")).unwrap_or_default();
            let at = e["step_key"].as_str().map(|s| format!(" at step '{s}'")).unwrap_or_default();
            Err(StepError::fatal("CHILD_FAILED", format!("child run {id} failed{at}{code}: {message}")))
        }
        Some("cancelled") => Err(StepError::fatal("CHILD_CANCELLED", format!("child run {id} was cancelled"))),
        _ => Err(StepError::fatal("CHILD_FAILED", format!("child run {id} ended with an unreadable result"))),
    }
}

fn start_error(wf: &str, e: Error) -> StepError {
    match e {
        Error::NotFound(m) => {
            StepError::fatal("CHILD_NOT_FOUND", format!("cannot start a child run of {wf}: {m} not found"))
        }
        Error::InvalidStatus(m) => StepError::fatal("CHILD_NOT_ACTIVE", m),
        Error::Validation { message, .. } => StepError::fatal("CHILD_INPUT_INVALID", message),
        Error::PayloadTooLarge(m) => StepError::fatal("CHILD_INPUT_INVALID", m),
        Error::Conflict(m) => StepError::fatal("CHILD_START_FAILED", m),
        e => StepError::retryable("CHILD_START_FAILED", format!("could not start a child run of {wf}: {e}")),
    }
}

/// Checked at save: an orchestration step whose `workflow_id` is written out (not a template)
/// names a workflow of the account.
pub async fn check_graph(store: &dyn Store, acct: &str, graph: &crate::model::Graph, field: &str) -> Result<()> {
    let mut details = Vec::new();
    for (i, b) in graph.blocks.iter().enumerate() {
        if b.kind != "orchestration" {
            continue;
        }
        let Some(Value::String(id)) = b.config.get("workflow_id") else { continue };
        if id.contains("{{") {
            continue;
        }
        let exists = crate::workflows::valid_id(id) && store.get(&keys::workflow(acct, id)).await?.is_some();
        if !exists {
            details.push(Detail::new(
                vec![json!(field), json!(i), json!("config"), json!("workflow_id")],
                format!(
                    "no workflow with id '{id}' (create it first; a child run starts the workflow's active version)"
                ),
            ));
        }
    }
    if details.is_empty() {
        return Ok(());
    }
    Err(Error::Validation { message: format!("Invalid workflow: {}", details[0].message), details })
}

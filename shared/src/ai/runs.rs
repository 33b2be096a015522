//! Planned runs end to end: `POST /runs` (provider or managed trial, start), the plan step
//! (planner, compile, the run moved onto the compiled version), and the planned run's view (`tasks` as the subtask tree, usage per step and in
//! total) that `GET /runs/{id}` and `GET /runs/{id}/tasks` show.

use super::journal;
use super::planner::{self, PlanRequest, PlannedTask};
use super::providers::{self, Resolved};
use super::wire;
use crate::app::App;
use crate::blocks::agent::{AgentExecutor, PLANNED_SOURCE};
use crate::blocks::{BlockContext, Outcome, StepError};
use crate::engine::StartRequest;
use crate::error::{Error, Result};
use crate::graph::Block;
use crate::keys;
use crate::net_guard::Targets;
use crate::store::{Cond, Store, Update};
use serde_json::{Value, json};

/// Takes one managed trial run of the account, or says why there is none.
async fn take_trial(store: &dyn Store, acct: &str, allowance: u64) -> Result<()> {
    let used_up =
        || Error::PaymentRequired("Managed trial runs used up: register a provider and pass provider_id".into());
    if allowance == 0 {
        return Err(used_up());
    }
    let cond = Cond::Or(vec![Cond::AttrAbsent("used".into()), Cond::Lt("used".into(), json!(allowance))]);
    match store.update(&keys::trial(acct), Update::default().add("used", 1), Some(cond)).await {
        Ok(_) => Ok(()),
        Err(Error::Conflict(_)) => Err(used_up()),
        Err(e) => Err(e),
    }
}

async fn give_back_trial(store: &dyn Store, acct: &str) {
    if let Err(e) = store.update(&keys::trial(acct), Update::default().add("used", -1), Some(Cond::Exists)).await {
        tracing::warn!(error = %e, "could not give a trial run back");
    }
}

/// `POST /runs`: checks the body and the providers (or takes a managed trial run), then
/// starts the run on a workflow of `start → plan` and answers at once; planning is the
/// run's first durable step ([`plan_step`]).
pub async fn start(app: &App, acct: &str, body: &Value) -> Result<Value> {
    let req = planner::parse_request(body)?;
    let store = &*app.store;
    let targets = Targets::from_allow_private(app.config.allow_private_targets);
    if let Some(u) = &req.callback_url {
        crate::net_guard::check_url("callback_url", u, targets).await?;
    }
    for id in req.agents.iter().filter_map(|a| a.provider_id.as_ref()).chain(&req.provider_id) {
        providers::resolve(store, &app.secrets, acct, id).await?;
    }
    let managed = req.provider_id.is_none();
    if managed {
        if app.config.ai.managed.is_none() {
            return Err(Error::PaymentRequired(
                "This deployment has no managed provider: bring your own key (POST /api/v1/providers) and pass provider_id".into(),
            ));
        }
        take_trial(store, acct, app.config.ai.trial_runs).await?;
    }
    let started = async {
        let wf = crate::workflows::create_with(store, acct, planner::bootstrap(&req, body), targets).await?;
        let wf_id = wf["id"].as_str().unwrap_or_default().to_string();
        let mut metadata = req.metadata.clone();
        metadata["plan"] = json!({"workflow_id": wf_id});
        metadata["managed_trial"] = json!(managed);
        if let Some(m) = req.max_tokens {
            metadata["max_tokens"] = json!(m);
        }
        let sr = StartRequest {
            input: planner::run_input(&req),
            idempotency_key: None,
            metadata,
            callback_url: req.callback_url.clone(),
            source: PLANNED_SOURCE.into(),
            ..StartRequest::default()
        };
        let s = app.engine.start_run(acct, &wf_id, sr).await?;
        Ok::<_, Error>(s.run["run_id"].as_str().unwrap_or_default().to_string())
    }
    .await;
    match started {
        Ok(run_id) => decorate(store, app.engine.get_run(acct, &run_id).await?).await,
        Err(e) => {
            if managed {
                give_back_trial(store, acct).await;
            }
            Err(e)
        }
    }
}

/// The plan step (block `plan`): asks the planner (journaled answers, one repair), else
/// takes the fallback plan; compiles the plan into the workflow's next version, moves the
/// run onto it and ends with the plan, so the engine goes on with the planned tasks. On the
/// compiled version the block holds its plan (`planned`) and only repeats it: a redelivery
/// after the move, and a re-run of the workflow, do not plan again.
pub async fn plan_step(agent: &AgentExecutor, block: &Block, cx: &BlockContext<'_>) -> Outcome {
    if let Some(planned) = block.config.get("planned") {
        return Outcome::Output(planned.clone());
    }
    match plan_and_move(agent, block, cx).await {
        Ok(plan) => Outcome::Replanned(plan),
        Err(e) => Outcome::Fail(e),
    }
}

fn internal(e: Error) -> StepError {
    tracing::error!(error = %e, "plan step failed on the store");
    StepError::retryable("INTERNAL", "the plan could not be stored; retried")
}

async fn plan_and_move(
    agent: &AgentExecutor,
    block: &Block,
    cx: &BlockContext<'_>,
) -> std::result::Result<Value, StepError> {
    let store = &*agent.store;
    let req = planner::parse_request(&block.config["request"])
        .map_err(|e| StepError::fatal("INVALID_CONFIG", format!("the plan block's request: {e}")))?;
    let run = store
        .get(&keys::run(cx.run_id))
        .await
        .map_err(internal)?
        .ok_or_else(|| StepError::fatal("NOT_FOUND", "the run is gone"))?;
    let acct = run.str("account_id").unwrap_or_default().to_string();
    let wf = run.str("workflow_id").unwrap_or_default().to_string();
    let pinned = run.i64("version").unwrap_or(1);
    let selector = match &req.provider_id {
        Some(id) => json!({"provider_id": id}),
        None => json!({"managed": true}),
    };
    let p = agent.provider(&acct, &run, &selector).await?;
    let budget = run.get("metadata").and_then(|m| m.get("max_tokens")).and_then(Value::as_u64);
    let last_attempt = cx.attempt >= block.retry.as_ref().map_or(1, |r| r.max_attempts);
    let (tasks, planned_by) = plan(agent, cx, &p, &req, budget, last_attempt).await?;
    let compiled = planner::compile(&req, &tasks, req.provider_id.as_deref(), &planned_by);
    // An earlier delivery may have saved the version already: the journal gave it the same
    // answers, so it is this plan.
    let head = crate::workflows::load_head(store, &acct, &wf).await.map_err(internal)?;
    let version = match head["version"].as_i64().unwrap_or(pinned) {
        v if v > pinned => v,
        _ => {
            let saved = crate::workflows::patch_with(store, &acct, &wf, compiled.workflow, Targets::PublicOnly)
                .await
                .map_err(|e| match e {
                Error::Validation { .. } => {
                    StepError::fatal("INVALID_PLAN", format!("the compiled plan was refused: {e}"))
                }
                e => internal(e),
            })?;
            saved["version"].as_i64().unwrap_or(pinned + 1)
        }
    };
    let cond = Cond::And(vec![
        Cond::eq("status", crate::engine::RunStatus::Running),
        Cond::Or(vec![Cond::eq("version", pinned), Cond::eq("version", version)]),
    ]);
    match store.update(&keys::run(cx.run_id), Update::default().set("version", version), Some(cond)).await {
        // Cancelled meanwhile: the engine cancels the step when it commits.
        Ok(_) | Err(Error::Conflict(_)) => Ok(compiled.output),
        Err(e) => Err(internal(e)),
    }
}

/// The planner's answer: the model's plan (one repair), else the fallback plan, and who
/// planned. A retryable provider failure retries the step while attempts are left.
async fn plan(
    agent: &AgentExecutor,
    cx: &BlockContext<'_>,
    p: &Resolved,
    req: &PlanRequest,
    budget: Option<u64>,
    last_attempt: bool,
) -> std::result::Result<(Vec<PlannedTask>, String), StepError> {
    let journaled = journal::of_step(&*agent.store, cx.run_id, cx.step_key).await.map_err(internal)?;
    let mut creq = planner::plan_request(p, req);
    let mut why = String::new();
    for n in 1..=2 {
        let entry = match agent.answer(cx, p, &creq, n, &journaled, budget).await {
            Ok(e) => e,
            Err(e) if e.retryable && !last_attempt => return Err(e),
            Err(e) => {
                why = format!("{}: {}", e.code, e.message);
                break;
            }
        };
        let value = entry.answer.structured.clone().map(Ok).unwrap_or_else(|| {
            serde_json::from_str::<Value>(
                entry.answer.text.trim().trim_start_matches("```json").trim_matches('`').trim(),
            )
            .map_err(|e| format!("not JSON: {e}"))
        });
        match value.and_then(|v| planner::check_plan(&v, &req.agents)) {
            Ok(tasks) => return Ok((tasks, "model".into())),
            Err(e) if n == 1 => {
                creq.messages.push(wire::Message { role: "assistant".into(), content: entry.answer.text.clone() });
                creq.messages.push(wire::Message {
                    role: "user".into(),
                    content: format!("That plan is invalid: {e}. Answer again with only the corrected JSON plan."),
                });
                why = e;
            }
            Err(e) => why = e,
        }
    }
    tracing::info!(reason = %why, "planner gave no valid plan; using one task per agent");
    Ok((planner::fallback_plan(req), format!("fallback ({why})")))
}

fn is_planned(view: &Value) -> bool {
    view.pointer("/metadata/plan/workflow_id").is_some_and(Value::is_string)
}

/// The plan step's output once it has planned: `{"tasks", "tree", "planned_by"}`.
fn plan_of(view: &Value) -> Option<&Value> {
    view["steps"]
        .as_array()?
        .iter()
        .find(|s| s["block_id"] == planner::PLAN_BLOCK && s["status"] == "completed")
        .map(|s| &s["output"])
}

/// The subtask tree of a planned run: the plan's tasks with their steps' state, output,
/// usage and, while one waits for a person, its `task_id`.
fn tree(view: &Value, usage: &serde_json::Map<String, Value>) -> Value {
    let steps = view["steps"].as_array().cloned().unwrap_or_default();
    let nodes = plan_of(view).and_then(|p| p["tree"].as_array()).cloned().unwrap_or_default();
    let open: Vec<&Value> = view["tasks"].as_array().into_iter().flatten().collect();
    Value::Array(
        nodes
            .into_iter()
            .map(|mut n| {
                let id = n["id"].as_str().unwrap_or_default().to_string();
                let step = steps.iter().find(|s| s["block_id"] == id.as_str());
                let status = step.and_then(|s| s["status"].as_str()).unwrap_or("pending");
                n["status"] = json!(status);
                n["output"] = step.map(|s| s["output"].clone()).unwrap_or(Value::Null);
                n["error"] = step.map(|s| s["error"].clone()).unwrap_or(Value::Null);
                n["usage"] = usage.get(&id).cloned().unwrap_or(Value::Null);
                let wait = open.iter().find(|t| t["step_key"] == id.as_str()).copied();
                n["task_id"] = wait.map(|t| t["task_id"].clone()).unwrap_or(Value::Null);
                if let Some(w) = wait {
                    n["prompt"] = w["prompt"].clone();
                }
                n
            })
            .collect(),
    )
}

/// Adds usage (per step and the run's totals) to a run view; a planned run's `tasks`
/// become its subtask tree (the person-facing waits stay under `human_tasks`).
pub async fn decorate(store: &dyn Store, mut view: Value) -> Result<Value> {
    let run_id = view["run_id"].as_str().unwrap_or_default().to_string();
    let (usage, total) = journal::run_usage(store, &run_id).await?;
    if let Some(steps) = view["steps"].as_array_mut() {
        for s in steps {
            if let Some(u) = s["step_key"].as_str().and_then(|k| usage.get(k)) {
                s["usage"] = u.clone();
            }
        }
    }
    view["usage"] = total;
    if is_planned(&view) {
        let t = tree(&view, &usage);
        let (status, by) = match plan_of(&view) {
            Some(p) => ("planned", p["planned_by"].clone()),
            None => ("planning", Value::Null),
        };
        view["metadata"]["plan"]["status"] = json!(status);
        view["metadata"]["plan"]["planned_by"] = by;
        view["human_tasks"] = view["tasks"].take();
        view["tasks"] = t;
    }
    Ok(view)
}

/// `GET /runs/{id}/tasks` of a planned run: every subtask, at any point of the run.
pub fn tasks_page(view: &Value) -> Option<Value> {
    is_planned(view).then(|| json!({"data": view["tasks"], "next_cursor": null}))
}

/// The wait a plan id (`T1`, `T3-review`) stands for in a decorated planned run, so
/// `POST /runs/{id}/tasks/T1/complete` works; other ids are returned as they are.
pub fn wait_id(view: &Value, id: &str) -> Result<String> {
    if id.starts_with("task_") || !is_planned(view) {
        return Ok(id.to_string());
    }
    if plan_of(view).is_none() && matches!(view["status"].as_str(), Some("pending" | "running")) {
        return Err(Error::Conflict(format!(
            "The run is still planning: task {id} does not exist yet; read GET /runs/{{id}} until its status is waiting_human"
        )));
    }
    let node = view["tasks"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|n| n["id"] == id)
        .ok_or_else(|| Error::NotFound(format!("Task {id} not found in this run's plan")))?;
    match node["task_id"].as_str() {
        Some(t) => Ok(t.to_string()),
        None => Err(Error::Conflict(format!(
            "Task {id} is not waiting for a person (it is {})",
            node["status"].as_str().unwrap_or("pending")
        ))),
    }
}

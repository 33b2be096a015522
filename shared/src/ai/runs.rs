//! Planned runs end to end: `POST /runs` (provider or managed trial, planner, compile,
//! start), and the planned run's view (`tasks` as the subtask tree, usage per step and in
//! total) that `GET /runs/{id}` and `GET /runs/{id}/tasks` show.

use super::journal::{self, Entry};
use super::planner::{self, PlanRequest, PlannedTask};
use super::providers::{self, Resolved};
use super::{call, wire};
use crate::app::App;
use crate::blocks::agent::PLANNED_SOURCE;
use crate::engine::StartRequest;
use crate::error::{Error, Result};
use crate::keys;
use crate::net_guard::Targets;
use crate::store::{Cond, Store, Update};
use serde_json::{Value, json};
use std::time::Duration;

/// How long `POST /runs` waits for the planner before using the fallback plan (under
/// API Gateway's 30 s).
pub const PLANNER_TIMEOUT: Duration = Duration::from_secs(20);

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

/// The planner's answer: the model's plan (one repair), else the fallback plan. Also the
/// answers to journal on the run, and who planned.
async fn plan(app: &App, p: &Resolved, req: &PlanRequest) -> (Vec<PlannedTask>, Vec<Entry>, String) {
    let mut creq = planner::plan_request(p, req);
    let mut answers = Vec::new();
    let mut why = String::new();
    for attempt in 0..2 {
        let called = match call::chat(&app.engine.services.http, p, &creq, PLANNER_TIMEOUT).await {
            Ok(c) => c,
            Err(f) => {
                why = format!("{}: {}", f.code, f.message);
                break;
            }
        };
        let entry = Entry { answer: called.answer, provider: p.kind.name().into(), latency_ms: called.latency_ms };
        let value = entry.answer.structured.clone().map(Ok).unwrap_or_else(|| {
            serde_json::from_str::<Value>(
                entry.answer.text.trim().trim_start_matches("```json").trim_matches('`').trim(),
            )
            .map_err(|e| format!("not JSON: {e}"))
        });
        let text = entry.answer.text.clone();
        answers.push(entry);
        match value.and_then(|v| planner::check_plan(&v, &req.agents)) {
            Ok(tasks) => return (tasks, answers, "model".into()),
            Err(e) if attempt == 0 => {
                creq.messages.push(wire::Message { role: "assistant".into(), content: text });
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
    (planner::fallback_plan(req), answers, format!("fallback ({why})"))
}

/// `POST /runs`: checks the body and the provider (or takes a managed trial run), plans,
/// compiles the plan into a workflow, starts its run; the run as `GET /runs/{id}` shows it.
pub async fn start(app: &App, acct: &str, body: &Value) -> Result<Value> {
    let req = planner::parse_request(body)?;
    let store = &*app.store;
    let targets = Targets::from_allow_private(app.config.allow_private_targets);
    if let Some(u) = &req.callback_url {
        crate::net_guard::check_url("callback_url", u, targets).await?;
    }
    for a in &req.agents {
        if let Some(id) = &a.provider_id {
            providers::resolve(store, &app.secrets, acct, id).await?;
        }
    }
    let (provider, managed) = match &req.provider_id {
        Some(id) => (providers::resolve(store, &app.secrets, acct, id).await?, false),
        None => match &app.config.ai.managed {
            None => {
                return Err(Error::PaymentRequired(
                    "This deployment has no managed provider: bring your own key (POST /api/v1/providers) and pass provider_id".into(),
                ));
            }
            Some(m) => {
                take_trial(store, acct, app.config.ai.trial_runs).await?;
                (m.clone(), true)
            }
        },
    };
    let started = async {
        let (tasks, answers, planned_by) = plan(app, &provider, &req).await;
        let compiled = planner::compile(&req, &tasks, req.provider_id.as_deref(), &planned_by);
        let wf = crate::workflows::create_with(store, acct, compiled.workflow, targets).await?;
        let wf_id = wf["id"].as_str().unwrap_or_default().to_string();
        let mut metadata = req.metadata.clone();
        metadata["plan"] = json!({"tasks": compiled.tree, "planned_by": planned_by, "workflow_id": wf_id});
        metadata["managed_trial"] = json!(managed);
        if let Some(m) = req.max_tokens {
            metadata["max_tokens"] = json!(m);
        }
        let sr = StartRequest {
            input: compiled.input,
            idempotency_key: None,
            metadata,
            callback_url: req.callback_url.clone(),
            source: PLANNED_SOURCE.into(),
            ..StartRequest::default()
        };
        let s = app.engine.start_run(acct, &wf_id, sr).await?;
        let run_id = s.run["run_id"].as_str().unwrap_or_default().to_string();
        for (i, a) in answers.into_iter().enumerate() {
            journal::record(store, &run_id, "planner", i as u32 + 1, a).await?;
        }
        Ok::<_, Error>(run_id)
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

fn is_planned(view: &Value) -> bool {
    view.pointer("/metadata/plan/tasks").is_some_and(Value::is_array)
}

/// The subtask tree of a planned run: the plan's tasks with their steps' state, output,
/// usage and, while one waits for a person, its `task_id`.
fn tree(view: &Value, usage: &serde_json::Map<String, Value>) -> Value {
    let steps = view["steps"].as_array().cloned().unwrap_or_default();
    let nodes = view.pointer("/metadata/plan/tasks").and_then(Value::as_array).cloned().unwrap_or_default();
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

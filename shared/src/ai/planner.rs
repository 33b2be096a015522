//! Planned runs (`POST /runs`, seed 002): the planner asks the model for a plan, checks it,
//! and compiles it, with the human parts Baton adds, into an ordinary workflow.
//!
//! Planning is the run's first durable step (`plan`, see `ai::runs`): the run starts on a
//! workflow of `start → plan`, and the plan step puts the compiled version in its place.
//!
//! The compiled workflow holds no caller text in its templates: the task and the agents'
//! system prompts are the run's *input* (`{{input.task}}`), the subtasks' titles and prompts
//! the plan step's *output* (`{{steps.plan.output.tasks.T2.prompt}}`), so no text can inject
//! a template, and the workflow can be run again with another task.

use super::providers::Resolved;
use super::templates;
use super::wire::{ChatRequest, Message};
use crate::error::{Detail, Error, Result, object_body};
use serde_json::{Map, Value, json};
use std::collections::{HashMap, HashSet};

pub const MAX_TASKS: usize = 25;
const MAX_TASK_CHARS: usize = 20_000;
const MAX_AGENTS: usize = 10;
const MAX_ITEMS: usize = 20;
const FIELDS: &[&str] = &[
    "task",
    "agents",
    "ask_me_about",
    "human_gates",
    "require_approval",
    "provider_id",
    "max_tokens",
    "metadata",
    "callback_url",
];

#[derive(Clone, Debug, PartialEq)]
pub struct Agent {
    pub name: String,
    pub system_prompt: String,
    pub model: Option<String>,
    pub provider_id: Option<String>,
}

/// A checked `POST /runs` body.
#[derive(Clone, Debug, PartialEq)]
pub struct PlanRequest {
    pub task: String,
    pub agents: Vec<Agent>,
    pub ask_me_about: Vec<String>,
    pub human_gates: Vec<String>,
    pub require_approval: bool,
    pub provider_id: Option<String>,
    pub max_tokens: Option<u64>,
    pub metadata: Value,
    pub callback_url: Option<String>,
}

fn at(path: &[Value], message: impl Into<String>) -> Detail {
    Detail::new(path.to_vec(), message)
}

fn strings(o: &Map<String, Value>, field: &str, details: &mut Vec<Detail>) -> Vec<String> {
    match o.get(field) {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(a)) if a.len() <= MAX_ITEMS => {
            let mut out = Vec::new();
            for (i, v) in a.iter().enumerate() {
                match v.as_str().map(str::trim) {
                    Some(s) if !s.is_empty() && s.chars().count() <= 500 => out.push(s.to_string()),
                    _ => details
                        .push(at(&[json!(field), json!(i)], "must be a non-empty string of at most 500 characters")),
                }
            }
            out
        }
        Some(_) => {
            details.push(at(&[json!(field)], format!("`{field}` must be an array of at most {MAX_ITEMS} strings")));
            Vec::new()
        }
    }
}

/// Checks a `POST /runs` body; every problem is one detail of one `VALIDATION_ERROR`.
pub fn parse_request(body: &Value) -> Result<PlanRequest> {
    let o = object_body(body, FIELDS)?;
    let mut d = Vec::new();
    let task = match o.get("task") {
        Some(Value::String(s)) if !s.trim().is_empty() && s.chars().count() <= MAX_TASK_CHARS => s.trim().to_string(),
        Some(Value::String(s)) if !s.trim().is_empty() => {
            d.push(at(&[json!("task")], format!("`task` is longer than {MAX_TASK_CHARS} characters")));
            String::new()
        }
        _ => {
            d.push(at(&[json!("task")], "`task` is required: a non-empty string saying what the run should do"));
            String::new()
        }
    };
    let mut agents = Vec::new();
    match o.get("agents") {
        None | Some(Value::Null) => {
            for n in ["research", "analyst", "writer"] {
                let t = templates::find(n).expect("built-in template");
                agents.push(Agent {
                    name: n.into(),
                    system_prompt: t.system_prompt.into(),
                    model: None,
                    provider_id: None,
                });
            }
        }
        Some(Value::Array(a)) if !a.is_empty() && a.len() <= MAX_AGENTS => {
            for (i, v) in a.iter().enumerate() {
                let p = |k: &str| vec![json!("agents"), json!(i), json!(k)];
                let Some(ao) = v.as_object() else {
                    d.push(at(
                        &[json!("agents"), json!(i)],
                        "must be {\"name\"} or {\"name\", \"system_prompt\", \"model\"?, \"provider_id\"?}",
                    ));
                    continue;
                };
                if let Some(k) =
                    ao.keys().find(|k| !["name", "system_prompt", "model", "provider_id"].contains(&k.as_str()))
                {
                    d.push(at(&p(k), format!("unknown field `{k}`; expected name, system_prompt, model, provider_id")));
                    continue;
                }
                let s = |k: &str| {
                    ao.get(k).and_then(Value::as_str).map(str::trim).filter(|s| !s.is_empty()).map(str::to_string)
                };
                for k in ["name", "system_prompt", "model", "provider_id"] {
                    if ao.get(k).is_some_and(|v| !v.is_string()) {
                        d.push(at(&p(k), format!("`{k}` must be a string")));
                    }
                }
                let Some(name) = s("name").filter(|n| crate::workflows::valid_id(n) && n.len() <= 50) else {
                    d.push(at(&p("name"), "`name` is required: 1..=50 characters of a-z, 0-9, '_' and '-'"));
                    continue;
                };
                if agents.iter().any(|a: &Agent| a.name == name) {
                    d.push(at(&p("name"), format!("agent `{name}` is named twice")));
                    continue;
                }
                let system_prompt = match (s("system_prompt"), templates::find(&name)) {
                    (Some(sp), _) if sp.len() <= MAX_TASK_CHARS => sp,
                    (Some(_), _) => {
                        d.push(at(&p("system_prompt"), format!("longer than {MAX_TASK_CHARS} characters")));
                        continue;
                    }
                    (None, Some(t)) => t.system_prompt.to_string(),
                    (None, None) => {
                        let names: Vec<&str> = templates::TEMPLATES.iter().map(|t| t.name).collect();
                        d.push(at(
                            &p("name"),
                            format!(
                                "`{name}` is not a built-in template ({}); give a custom agent a `system_prompt`",
                                names.join(", ")
                            ),
                        ));
                        continue;
                    }
                };
                agents.push(Agent { name, system_prompt, model: s("model"), provider_id: s("provider_id") });
            }
        }
        Some(_) => d.push(at(&[json!("agents")], format!("`agents` must be an array of 1..={MAX_AGENTS} agents"))),
    }
    let ask_me_about = strings(o, "ask_me_about", &mut d);
    let human_gates = strings(o, "human_gates", &mut d);
    let require_approval = match o.get("require_approval") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => {
            d.push(at(&[json!("require_approval")], "`require_approval` must be true or false"));
            false
        }
    };
    let opt_str = |k: &str, d: &mut Vec<Detail>| match o.get(k) {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
        Some(_) => {
            d.push(at(&[json!(k)], format!("`{k}` must be a non-empty string")));
            None
        }
    };
    let provider_id = opt_str("provider_id", &mut d);
    let callback_url = opt_str("callback_url", &mut d);
    let max_tokens = match o.get("max_tokens") {
        None | Some(Value::Null) => None,
        Some(v) => match crate::error::whole_number(v).filter(|n| *n > 0) {
            Some(n) => Some(n),
            None => {
                d.push(at(
                    &[json!("max_tokens")],
                    "`max_tokens` (the run's token budget) must be a positive whole number",
                ));
                None
            }
        },
    };
    let metadata = match o.get("metadata") {
        None | Some(Value::Null) => json!({}),
        Some(m @ Value::Object(_)) => m.clone(),
        Some(_) => {
            d.push(at(&[json!("metadata")], "`metadata` must be an object"));
            json!({})
        }
    };
    if !d.is_empty() {
        let message = format!("Invalid planned run: {}", d[0].message);
        return Err(Error::Validation { message, details: d });
    }
    Ok(PlanRequest {
        task,
        agents,
        ask_me_about,
        human_gates,
        require_approval,
        provider_id,
        max_tokens,
        metadata,
        callback_url,
    })
}

/// One task of a plan, as the model proposes it.
#[derive(Clone, Debug, PartialEq, serde::Deserialize)]
pub struct PlannedTask {
    pub id: String,
    pub title: String,
    pub agent: String,
    pub prompt: String,
    #[serde(default)]
    pub depends_on: Vec<String>,
}

/// The JSON Schema the planner's answer must match.
pub fn plan_schema(agents: &[Agent]) -> Value {
    let names: Vec<&str> = agents.iter().map(|a| a.name.as_str()).collect();
    json!({
        "type": "object", "required": ["tasks"], "additionalProperties": false,
        "properties": {"tasks": {"type": "array", "minItems": 1, "maxItems": MAX_TASKS, "items": {
            "type": "object", "required": ["id", "title", "agent", "prompt", "depends_on"], "additionalProperties": false,
            "properties": {
                "id": {"type": "string"}, "title": {"type": "string"},
                "agent": {"type": "string", "enum": names}, "prompt": {"type": "string"},
                "depends_on": {"type": "array", "items": {"type": "string"}}}}}}
    })
}

/// The planner's request.
pub fn plan_request(p: &Resolved, req: &PlanRequest) -> ChatRequest {
    let agents: Vec<String> = req
        .agents
        .iter()
        .map(|a| format!("- {}: {}", a.name, a.system_prompt.chars().take(300).collect::<String>()))
        .collect();
    let prompt = format!(
        "Task:\n{}\n\nAvailable agents:\n{}\n\nSplit the task into at most {MAX_TASKS} subtasks (usually 2 to 6). Each has a short id (T1, T2, ...), a title, the agent that does it (one of the names above), a self-contained prompt for that agent, and depends_on: the ids of the subtasks whose output it needs. No cycles. The last subtask should produce the final deliverable.",
        req.task,
        agents.join("\n")
    );
    ChatRequest {
        model: p.model.clone(),
        system: Some(templates::find("planner").expect("planner template").system_prompt.to_string()),
        messages: vec![Message { role: "user".into(), content: prompt }],
        schema: Some(plan_schema(&req.agents)),
        temperature: Some(0.2),
        max_tokens: Some(4096),
    }
}

/// The plan in an answer, or what is wrong with it: unique ids, known agents, known
/// dependencies, no cycle, 1..=25 tasks.
pub fn check_plan(v: &Value, agents: &[Agent]) -> std::result::Result<Vec<PlannedTask>, String> {
    let tasks: Vec<PlannedTask> = serde_json::from_value(v.get("tasks").cloned().unwrap_or(Value::Null))
        .map_err(|e| format!("`tasks` must be an array of {{id, title, agent, prompt, depends_on}}: {e}"))?;
    if tasks.is_empty() || tasks.len() > MAX_TASKS {
        return Err(format!("a plan has 1..={MAX_TASKS} tasks, not {}", tasks.len()));
    }
    let mut ids = HashSet::new();
    for t in &tasks {
        if t.id.trim().is_empty() || !ids.insert(t.id.as_str()) {
            return Err(format!("task ids must be unique and non-empty (`{}`)", t.id));
        }
        if !agents.iter().any(|a| a.name == t.agent) {
            return Err(format!("task {} names agent `{}`, which is not one of the run's agents", t.id, t.agent));
        }
        if t.prompt.trim().is_empty() {
            return Err(format!("task {} has an empty prompt", t.id));
        }
    }
    for t in &tasks {
        if let Some(d) = t.depends_on.iter().find(|d| !ids.contains(d.as_str()) || *d == &t.id) {
            return Err(format!("task {} depends on `{d}`, which is not another task of the plan", t.id));
        }
    }
    topo_order(&tasks).ok_or_else(|| "the tasks' dependencies form a cycle".to_string())?;
    Ok(tasks)
}

/// The tasks' indices in an order where every task follows its dependencies (stable:
/// the plan's own order where it is free); `None` on a cycle.
fn topo_order(tasks: &[PlannedTask]) -> Option<Vec<usize>> {
    let index: HashMap<&str, usize> = tasks.iter().enumerate().map(|(i, t)| (t.id.as_str(), i)).collect();
    let mut done = vec![false; tasks.len()];
    let mut out = Vec::with_capacity(tasks.len());
    while out.len() < tasks.len() {
        let next =
            (0..tasks.len()).find(|&i| !done[i] && tasks[i].depends_on.iter().all(|d| done[index[d.as_str()]]))?;
        done[next] = true;
        out.push(next);
    }
    Some(out)
}

/// The plan used when the model gives no valid one: one task per agent, in order, each
/// after the one before.
pub fn fallback_plan(req: &PlanRequest) -> Vec<PlannedTask> {
    req.agents
        .iter()
        .enumerate()
        .map(|(i, a)| PlannedTask {
            id: format!("P{}", i + 1),
            title: format!("{} step", a.name),
            agent: a.name.clone(),
            prompt: format!("Do your part of the task as the {} agent, building on the earlier outputs.", a.name),
            depends_on: if i == 0 { Vec::new() } else { vec![format!("P{i}")] },
        })
        .collect()
}

/// The compiled plan: the workflow body (its `plan` block holds `output`), and the plan
/// step's output: `{"tasks": {T2: {title, prompt, agent}}, "tree": [...], "planned_by"}`.
pub struct Compiled {
    pub workflow: Value,
    pub output: Value,
}

/// The block id of a planned run's planning step.
pub const PLAN_BLOCK: &str = "plan";

/// The run input of a planned run: what the templates read besides the plan.
pub fn run_input(req: &PlanRequest) -> Value {
    let agents: Map<String, Value> =
        req.agents.iter().map(|a| (a.name.clone(), json!({"system_prompt": a.system_prompt}))).collect();
    json!({"task": req.task, "agents": agents,
        "question": format!("Before the agents start, please tell us about: {}.", req.ask_me_about.join("; ")),
        "question_items": req.ask_me_about.join(", ")})
}

/// The workflow a planned run starts on: `start → plan`, the plan block carrying the request
/// (without its `metadata` and `callback_url`, which are the run's).
pub fn bootstrap(req: &PlanRequest, body: &Value) -> Value {
    let mut request = body.clone();
    if let Value::Object(o) = &mut request {
        o.remove("metadata");
        o.remove("callback_url");
    }
    json!({"name": plan_name(req), "status": "active", "description": "Planned run (planning)",
        "blocks": [{"id": "start", "type": "starter"}, {"id": PLAN_BLOCK, "type": "plan", "config": {"request": request}}],
        "edges": [{"from": "start", "to": PLAN_BLOCK}]})
}

fn plan_name(req: &PlanRequest) -> String {
    let name: String = req.task.chars().take(80).collect();
    format!("Plan: {name}")
}

/// An edge dependents of a task come from: the block, and the edge's `when`.
type Exit = (String, Option<String>);

fn mentions(t: &PlannedTask, gates: &[String]) -> Vec<String> {
    let hay = format!("{} {}", t.title, t.prompt).to_lowercase();
    gates.iter().filter(|g| hay.contains(&g.to_lowercase())).cloned().collect()
}

/// Compiles a checked plan into a workflow: `T1` a question naming every `ask_me_about`
/// item when there are some; each planned task an agent block (`T2`, `T3`, … in dependency
/// order); an approval after each task that mentions a `human_gates` item; with
/// `require_approval`, a review of each agent task whose rejection re-runs it once with the
/// feedback (a second rejection fails it); and a response block with the last task's output.
pub fn compile(req: &PlanRequest, plan: &[PlannedTask], provider: Option<&str>, planned_by: &str) -> Compiled {
    let order = topo_order(plan).unwrap_or_else(|| (0..plan.len()).collect());
    let mut blocks = vec![json!({"id": "start", "type": "starter"})];
    let mut edges: Vec<Value> = Vec::new();
    let mut tree: Vec<Value> = Vec::new();
    let mut tasks_input = Map::new();
    let mut n = 0;
    let mut root_exits: Vec<(String, Option<String>)> = vec![(PLAN_BLOCK.into(), None)];
    let ask = !req.ask_me_about.is_empty();
    if ask {
        n += 1;
        blocks.push(json!({"id": "T1", "type": "human", "config": {
            "kind": "question", "title": "Context for the agents", "prompt": "{{input.question}}"}}));
        edges.push(json!({"from": PLAN_BLOCK, "to": "T1"}));
        tree.push(json!({"id": "T1", "title": "Context for the agents", "kind": "question", "depends_on": []}));
        root_exits = vec![("T1".into(), None)];
    }
    // Plan id → (our id, the edges dependents come from, the template of its output).
    let mut ours: HashMap<String, (String, Vec<Exit>, String)> = HashMap::new();
    let mut used_by: HashSet<String> = HashSet::new();
    for t in plan {
        used_by.extend(t.depends_on.iter().cloned());
    }
    let mut last_output = String::new();
    let mut sinks: Vec<(String, Option<String>)> = Vec::new();
    for &i in &order {
        let t = &plan[i];
        n += 1;
        let id = format!("T{n}");
        let agent = req.agents.iter().find(|a| a.name == t.agent).expect("checked plan");
        tasks_input.insert(id.clone(), json!({"title": t.title, "prompt": t.prompt, "agent": t.agent}));
        let mut prompt = format!(
            "Overall task:\n{{{{input.task}}}}\n\nYour subtask ({id}: {{{{steps.plan.output.tasks.{id}.title}}}}):\n{{{{steps.plan.output.tasks.{id}.prompt}}}}\n"
        );
        if ask {
            prompt.push_str("\nThe human's answers (about: {{input.question_items}}):\n{{steps.T1.output}}\n");
        }
        let mut deps_ours = Vec::new();
        for d in &t.depends_on {
            let (did, _, out) = &ours[d];
            prompt.push_str(&format!("\nOutput of {did} ({{{{steps.plan.output.tasks.{did}.title}}}}):\n{out}\n"));
            deps_ours.push(json!(did));
        }
        if ask {
            deps_ours.insert(0, json!("T1"));
        }
        let mut config = json!({"system": format!("{{{{input.agents.{}.system_prompt}}}}", agent.name), "prompt": prompt, "agent": agent.name});
        match agent.provider_id.as_deref().or(provider) {
            Some(p) => config["provider_id"] = json!(p),
            None => config["managed"] = json!(true),
        }
        if let Some(m) = &agent.model {
            config["model"] = json!(m);
        }
        blocks.push(json!({"id": id, "type": "agent", "config": config.clone()}));
        let from: Vec<(String, Option<String>)> = if t.depends_on.is_empty() {
            root_exits.clone()
        } else {
            t.depends_on.iter().flat_map(|d| ours[d].1.clone()).collect()
        };
        for (f, when) in from {
            edges.push(json!({"from": f, "to": id, "when": when}));
        }
        tree.push(json!({"id": id, "title": t.title, "agent": t.agent, "kind": "agent", "depends_on": deps_ours, "plan_id": t.id}));
        let mut exits = vec![(id.clone(), None)];
        let mut output = format!("{{{{steps.{id}.output}}}}");
        let gates = mentions(t, &req.human_gates);
        if req.require_approval {
            let (review, revise, review2) = (format!("{id}-review"), format!("{id}-revise"), format!("{id}-review-2"));
            let approve = |rid: &str, what: &str, on_reject: &str| {
                json!({"id": rid, "type": "human", "config": {"kind": "approval", "title": format!("Approve {what}"),
                    "on_reject": on_reject, "prompt": {"task": id, "title": format!("{{{{steps.plan.output.tasks.{id}.title}}}}"), "output": format!("{{{{steps.{what}.output}}}}")}}})
            };
            blocks.push(approve(&review, &id, "continue"));
            edges.push(json!({"from": id, "to": review}));
            let mut rc = config.clone();
            rc["prompt"] = json!(format!(
                "{prompt}\nYour earlier answer:\n{{{{steps.{id}.output}}}}\n\nThe reviewer rejected it with this feedback; revise your answer accordingly:\n{{{{steps.{review}.output.feedback}}}}\n"
            ));
            blocks.push(json!({"id": revise, "type": "agent", "config": rc}));
            edges.push(
                json!({"from": review, "to": revise, "when": format!("steps.{review}.output.approved == false")}),
            );
            blocks.push(approve(&review2, &revise, "fail"));
            edges.push(json!({"from": revise, "to": review2}));
            for (rid, kind, deps) in [
                (&review, "approval", vec![json!(id)]),
                (&revise, "agent", vec![json!(review)]),
                (&review2, "approval", vec![json!(revise)]),
            ] {
                let title = match kind {
                    "agent" => format!("Revise {id} with the reviewer's feedback"),
                    _ => format!("Approve {}", deps[0].as_str().unwrap_or_default()),
                };
                let mut node = json!({"id": rid, "title": title, "kind": kind, "depends_on": deps});
                if kind == "agent" {
                    node["agent"] = json!(t.agent);
                }
                tree.push(node);
            }
            exits = vec![(review.clone(), Some(format!("steps.{review}.output.approved == true"))), (review2, None)];
            output = format!("{{{{steps.{revise}.output | default: steps.{id}.output}}}}");
        } else if !gates.is_empty() {
            let gate = format!("{id}-gate");
            blocks.push(json!({"id": gate, "type": "human", "config": {"kind": "approval", "title": format!("Gate: {}", gates.join(", ")),
                "prompt": {"task": id, "gates": gates, "title": format!("{{{{steps.plan.output.tasks.{id}.title}}}}"), "output": format!("{{{{steps.{id}.output}}}}")}}}));
            edges.push(json!({"from": id, "to": gate}));
            tree.push(json!({"id": gate, "title": format!("Gate: {}", gates.join(", ")), "kind": "approval", "depends_on": [id]}));
            exits = vec![(gate, None)];
        }
        if !used_by.contains(&t.id) {
            sinks.extend(exits.clone());
        }
        last_output = output.clone();
        ours.insert(t.id.clone(), (id, exits, output));
    }
    blocks.push(json!({"id": "result", "type": "response", "config": {"body": last_output}}));
    for (f, when) in sinks {
        edges.push(json!({"from": f, "to": "result", "when": when}));
    }
    // `when: null` is no condition.
    for e in &mut edges {
        if e["when"].is_null()
            && let Value::Object(o) = e
        {
            o.remove("when");
        }
    }
    let output = json!({"tasks": tasks_input, "tree": tree, "planned_by": planned_by});
    blocks.insert(1, json!({"id": PLAN_BLOCK, "type": "plan", "config": {"planned": output}}));
    edges.insert(0, json!({"from": "start", "to": PLAN_BLOCK}));
    Compiled {
        workflow: json!({"name": plan_name(req), "status": "active", "description": format!("Planned run ({planned_by})"),
            "blocks": blocks, "edges": edges}),
        output,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(body: Value) -> PlanRequest {
        parse_request(&body).unwrap()
    }

    fn task(id: &str, agent: &str, deps: &[&str]) -> Value {
        json!({"id": id, "title": format!("{id} title"), "agent": agent, "prompt": format!("do {id}"), "depends_on": deps})
    }

    #[test]
    fn seed_002_bodies_parse_with_templates_filled_in() {
        let r = req(
            json!({"task": "Plan a channel", "agents": [{"name": "research"}, {"name": "analyst"}, {"name": "writer"}],
            "ask_me_about": ["brand voice", "target audience"], "require_approval": false}),
        );
        assert_eq!(r.agents.len(), 3);
        assert!(r.agents[0].system_prompt.contains("research"));
        let r = req(
            json!({"task": "Research 5 competitors", "human_gates": ["pricing", "launch strategy"], "require_approval": false}),
        );
        assert_eq!(r.agents.iter().map(|a| a.name.as_str()).collect::<Vec<_>>(), ["research", "analyst", "writer"]);
        assert_eq!(r.human_gates, ["pricing", "launch strategy"]);
    }

    #[test]
    fn lengths_are_counted_in_characters_as_the_messages_say() {
        let r = req(json!({"task": "é".repeat(MAX_TASK_CHARS), "human_gates": ["€".repeat(500)]}));
        assert_eq!(r.human_gates[0].chars().count(), 500);
        assert!(parse_request(&json!({"task": "é".repeat(MAX_TASK_CHARS + 1)})).is_err());
        assert!(parse_request(&json!({"task": "t", "human_gates": ["€".repeat(501)]})).is_err());
    }

    #[test]
    fn max_tokens_is_a_positive_whole_number_also_when_written_with_a_fraction() {
        assert_eq!(req(json!({"task": "t", "max_tokens": 500.0})).max_tokens, Some(500));
        assert_eq!(req(json!({"task": "t", "max_tokens": 500})).max_tokens, Some(500));
        for bad in [json!(0), json!(2.5), json!(-3), json!("9")] {
            assert!(parse_request(&json!({"task": "t", "max_tokens": bad})).is_err(), "{bad}");
        }
    }

    #[test]
    fn bad_bodies_list_every_problem_with_its_path() {
        let e = parse_request(&json!({"agents": [{"name": "poet"}, {"name": "x", "system_prompt": 3}], "require_approval": "yes", "ask_me_about": "voice"}))
            .unwrap_err();
        let Error::Validation { details, .. } = e else { panic!() };
        let paths: Vec<Value> = details.iter().map(|d| json!(d.path)).collect();
        for p in [
            json!(["task"]),
            json!(["agents", 0, "name"]),
            json!(["agents", 1, "system_prompt"]),
            json!(["require_approval"]),
            json!(["ask_me_about"]),
        ] {
            assert!(paths.contains(&p), "{p} in {paths:?}");
        }
    }

    #[test]
    fn plans_with_duplicate_ids_unknown_agents_or_cycles_are_refused() {
        let r = req(json!({"task": "t"}));
        assert!(
            check_plan(&json!({"tasks": [task("A", "research", &[]), task("B", "writer", &["A"])]}), &r.agents).is_ok()
        );
        for (plan, says) in [
            (json!({"tasks": [task("A", "research", &[]), task("A", "writer", &[])]}), "unique"),
            (json!({"tasks": [task("A", "poet", &[])]}), "poet"),
            (json!({"tasks": [task("A", "research", &["B"]), task("B", "writer", &["A"])]}), "cycle"),
            (json!({"tasks": [task("A", "research", &["Z"])]}), "`Z`"),
            (json!({"tasks": []}), "1..=25"),
            (json!({"steps": []}), "tasks"),
        ] {
            let e = check_plan(&plan, &r.agents).unwrap_err();
            assert!(e.contains(says), "{plan}: {e}");
        }
        let many: Vec<Value> = (0..26).map(|i| task(&format!("X{i}"), "research", &[])).collect();
        assert!(check_plan(&json!({"tasks": many}), &r.agents).is_err());
    }

    #[test]
    fn the_fallback_plan_is_one_task_per_agent_in_order() {
        let r = req(json!({"task": "t", "agents": [{"name": "research"}, {"name": "writer"}]}));
        let p = fallback_plan(&r);
        assert_eq!(p.len(), 2);
        assert_eq!(p[1].depends_on, ["P1"]);
        assert!(check_plan(&json!({"tasks": p.iter().map(|t| json!({"id": t.id, "title": t.title, "agent": t.agent, "prompt": t.prompt, "depends_on": t.depends_on})).collect::<Vec<_>>()}), &r.agents).is_ok());
    }

    #[test]
    fn compiling_adds_the_question_first_and_gates_after_matching_tasks() {
        let r = req(json!({"task": "t", "ask_me_about": ["brand voice"], "human_gates": ["Pricing"]}));
        let plan: Vec<PlannedTask> = serde_json::from_value(json!([
            task("a", "research", &[]),
            {"id": "b", "title": "Compare pricing", "agent": "analyst", "prompt": "compare", "depends_on": ["a"]},
            task("c", "writer", &["b"])]))
        .unwrap();
        let c = compile(&r, &plan, Some("prov_1"), "model");
        let ids: Vec<&str> = c.output["tree"].as_array().unwrap().iter().map(|t| t["id"].as_str().unwrap()).collect();
        assert_eq!(ids, ["T1", "T2", "T3", "T3-gate", "T4"]);
        let graph = crate::model::build_graph(c.workflow.get("blocks"), c.workflow.get("edges"), None).unwrap();
        let t4 = graph.block("T4").unwrap();
        let prompt = t4.config["prompt"].as_str().unwrap();
        assert!(prompt.contains("{{steps.T1.output}}") && prompt.contains("{{steps.T3.output}}"), "{prompt}");
        assert_eq!(t4.config["provider_id"], "prov_1");
        assert!(graph.outgoing("T3-gate").any(|e| e.to == "T4"));
        assert!(graph.outgoing("T4").any(|e| e.to == "result"));
        assert_eq!(c.output["tasks"]["T3"]["title"], "Compare pricing");
        // The plan block comes first and carries the plan, so a re-run does not plan again.
        assert!(graph.outgoing("start").any(|e| e.to == PLAN_BLOCK));
        assert!(graph.outgoing(PLAN_BLOCK).any(|e| e.to == "T1"));
        assert_eq!(graph.block(PLAN_BLOCK).unwrap().config["planned"], c.output);
    }

    #[test]
    fn require_approval_adds_a_review_and_one_revision_per_agent_task() {
        let r = req(json!({"task": "t", "agents": [{"name": "writer"}], "require_approval": true}));
        let plan: Vec<PlannedTask> = serde_json::from_value(json!([task("a", "writer", &[])])).unwrap();
        let c = compile(&r, &plan, None, "model");
        let graph = crate::model::build_graph(c.workflow.get("blocks"), c.workflow.get("edges"), None).unwrap();
        assert_eq!(graph.block("T1").unwrap().config["managed"], true);
        assert_eq!(graph.block("T1-review").unwrap().config["on_reject"], "continue");
        assert_eq!(graph.block("T1-review-2").unwrap().config["on_reject"], "fail");
        let to_result: Vec<_> =
            c.workflow["edges"].as_array().unwrap().iter().filter(|e| e["to"] == "result").collect();
        assert_eq!(to_result.len(), 2);
    }
}

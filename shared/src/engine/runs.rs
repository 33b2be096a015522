//! Starting runs and everything a caller does to one: read, list, cancel, redrive, answer
//! a task, execute synchronously.

use super::plan::event_write;
use super::snapshot::{Snapshot, is_lazy};
use super::state::{RunStatus, StepStatus};
use super::worker::{Delivery, index_status};
use super::{Engine, Msg, now_ms};
use crate::error::{Detail, Error, Result};
use crate::ids;
use crate::keys;
use crate::store::{Attrs, Cond, Item, Query, SkRange, Update, Write, query_all};
use serde_json::{Value, json};
use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Most item steps `GET /runs/{id}` lists (the split's step counts them all).
const MAX_ITEMS_SHOWN: usize = 1000;
/// Largest run input (serialized): the payload limit of every backend.
pub const MAX_INPUT_BYTES: usize = crate::store::MAX_PAYLOAD_BYTES;
const IDEMPOTENCY_WINDOW_SECS: i64 = 24 * 3600;

#[derive(Clone, Debug, Default)]
pub struct StartRequest {
    pub input: Value,
    pub idempotency_key: Option<String>,
    pub metadata: Value,
    pub callback_url: Option<String>,
    /// Where the run came from: "api", "trigger", "execute", "hook"...
    pub source: String,
    /// The workflow version to run; `None`: the active one (and the workflow must be active).
    pub version: Option<u64>,
    /// The step this run is a child of (`orchestration`).
    pub parent: Option<ParentLink>,
}

/// A child run's link to the step that started it and waits for it.
#[derive(Clone, Debug)]
pub struct ParentLink {
    pub run_id: String,
    pub step_key: String,
    /// Resumes the parent's wait (`Engine::resume_by_token`); kept on the child's run item,
    /// never shown.
    pub token: String,
    /// The child's nesting depth (a run started from outside is at 1).
    pub depth: u64,
}

#[derive(Debug)]
pub struct Started {
    pub run: Value,
    /// False when an idempotency key matched an earlier run.
    pub created: bool,
}

#[derive(Debug)]
pub struct SyncResult {
    pub run: Value,
    pub finished: bool,
    pub response_status: Option<u16>,
    pub response_headers: Option<Value>,
}

#[derive(Clone, Debug, Default)]
pub struct RunFilter {
    pub status: Option<String>,
    pub workflow_id: Option<String>,
    pub limit: usize,
    pub cursor: Option<String>,
}

const RUN_STATUSES: &[&str] = &["pending", "running", "waiting_human", "completed", "failed", "cancelled"];

impl Engine {
    /// Starts a run of the workflow's current version and enqueues its entry steps.
    /// When a safety-net sweep runs: after a lease and then some, so that a step a live
    /// worker holds is not published again while it runs (2 min by default).
    pub(super) fn sweep_after(&self) -> Duration {
        (self.cfg.lease * 2).min(crate::queue::MAX_DELAY)
    }

    pub async fn start_run(&self, acct: &str, wf_id: &str, req: StartRequest) -> Result<Started> {
        let (started, msgs) = self.create_run(acct, wf_id, req, false).await?;
        self.send(msgs.into_iter().map(|m| (m, Duration::ZERO)).collect()).await?;
        Ok(started)
    }

    /// Starts a run and drives it inline until it ends or `deadline` passes; whatever is
    /// left then continues on the queue.
    pub async fn execute_sync(
        &self,
        acct: &str,
        wf_id: &str,
        req: StartRequest,
        deadline: Duration,
    ) -> Result<SyncResult> {
        let t0 = Instant::now();
        let (started, msgs) = self.create_run(acct, wf_id, req, true).await?;
        let run_id = started.run["run_id"].as_str().unwrap_or_default().to_string();
        if started.created {
            let mut todo: VecDeque<Msg> = msgs.into();
            while let Some(m) = todo.pop_front() {
                if t0.elapsed() >= deadline {
                    todo.push_front(m);
                    break;
                }
                let d = Delivery {
                    inline: true,
                    deadline: Some(tokio::time::Instant::from_std(t0 + deadline)),
                    ..Delivery::default()
                };
                let h = self.handle_message_with(&m.encode(), d).await;
                if let Some(crate::queue::Outcome::RetryAfter(d)) = h.outcome {
                    // Leave it to the queue, which will retry it.
                    self.send(vec![(m, d.min(crate::queue::MAX_DELAY))]).await?;
                }
                todo.extend(h.publish);
            }
            if !todo.is_empty() {
                self.send(todo.into_iter().map(|m| (m, Duration::ZERO)).collect()).await?;
            }
        }
        let snap = Snapshot::require(&*self.store, &run_id).await?;
        let finished = snap.run_status().is_terminal();
        Ok(SyncResult {
            response_status: snap.run.get("response_status").and_then(Value::as_u64).map(|s| s as u16),
            response_headers: snap.run.get("response_headers").cloned(),
            run: run_view(&snap, false),
            finished,
        })
    }

    pub(super) async fn create_run(
        &self,
        acct: &str,
        wf_id: &str,
        req: StartRequest,
        inline: bool,
    ) -> Result<(Started, Vec<Msg>)> {
        let head = self
            .store
            .get(&keys::workflow(acct, wf_id))
            .await?
            .ok_or_else(|| Error::not_found(format!("workflow {wf_id}")))?;
        if req.version.is_none() && head.str("status") != Some("active") {
            return Err(Error::InvalidStatus(format!(
                "workflow {wf_id} is a draft: activate it (POST /api/v1/workflows/{wf_id}/activate) before starting runs"
            )));
        }
        let version = match req.version {
            Some(v) if v == 0 || v > head.i64("version").unwrap_or(1) as u64 => {
                return Err(Error::not_found(format!("version {v} of workflow {wf_id}")));
            }
            Some(v) => v,
            None => head.i64("version").unwrap_or(1) as u64,
        };
        let pinned = self.pinned(acct, wf_id, version).await?;
        let mut input = if req.input.is_null() { json!({}) } else { req.input };
        let size = serde_json::to_vec(&input)?.len();
        if size > MAX_INPUT_BYTES {
            return Err(Error::PayloadTooLarge(format!(
                "The run input is {size} bytes of JSON; the limit is {MAX_INPUT_BYTES} bytes (1 MiB)"
            )));
        }
        if let (Some(schema), Some(validator)) = (&pinned.input_schema, &pinned.validator) {
            apply_defaults(schema, &mut input, 0);
            validate_input(validator, &input)?;
        }
        // The run's own callback URL (from the start request or its trigger) wins over the
        // workflow's; the workflow's was checked when it was set.
        if let Some(u) = &req.callback_url {
            let targets = crate::net_guard::Targets::from_allow_private(self.cfg.allow_private_targets);
            crate::net_guard::check_url("callback_url", u, targets).await?;
        }
        let metadata = if req.metadata.is_null() { json!({}) } else { req.metadata };
        if !metadata.is_object() {
            return Err(Error::validation_at(vec![json!("metadata")], "`metadata` must be an object"));
        }
        // What a repeat of the key must match. Not the sender's delivery id: an app's signed
        // delivery replayed with another (unsigned) id is the same delivery (`api::hooks`).
        let mut compared = metadata.clone();
        if let Some(m) = compared.as_object_mut() {
            m.remove("delivery_id");
        }
        let fingerprint = ids::hash_secret(&serde_json::to_string(&json!([input, compared]))?);
        let idem_key = match &req.idempotency_key {
            Some(k) if k.is_empty() || k.len() > 255 => {
                return Err(Error::validation_at(vec![json!("idempotencyKey")], "must be 1..=255 characters"));
            }
            Some(k) => Some(keys::idempotency(acct, wf_id, k)),
            None => None,
        };
        if let Some(ik) = &idem_key
            && let Some(existing) = self.store.get(ik).await?
        {
            return self.idempotent_replay(&existing, &fingerprint).await;
        }

        let run_id = ids::new_id("run");
        let now = now_ms();
        let entries: Vec<String> = pinned.graph.entries().iter().map(|b| b.id.clone()).collect();
        let mut run = Attrs::new();
        run.insert("run_id".into(), json!(run_id));
        run.insert("account_id".into(), json!(acct));
        run.insert("workflow_id".into(), json!(wf_id));
        run.insert("version".into(), json!(version));
        run.insert("status".into(), Value::from(RunStatus::Running));
        run.insert("input".into(), input);
        run.insert("metadata".into(), metadata);
        run.insert("source".into(), json!(req.source));
        run.insert("active".into(), json!(entries.len()));
        // Entry steps get their items on their first claim; until then the snapshot shows
        // them pending (as a chain commit's successor). `run.started` is read from this item.
        run.insert("next".into(), json!(entries));
        run.insert("waiting".into(), json!(0));
        run.insert("created_at".into(), json!(now));
        run.insert("updated_at".into(), json!(now));
        if let Some(c) = req.callback_url.or_else(|| head.str("callback_url").map(str::to_string)) {
            run.insert("callback_url".into(), json!(c));
        }
        if let Some(k) = &req.idempotency_key {
            run.insert("idempotency_key".into(), json!(k));
        }
        if let Some(p) = &req.parent {
            run.insert("parent".into(), json!({"run_id": p.run_id, "step_key": p.step_key, "token": p.token}));
            run.insert("depth".into(), json!(p.depth));
        }
        let run_item = Item::new(keys::run(&run_id), run);
        let view = Snapshot::of_new_run(run_item.clone());
        let mut writes = vec![Write::Put { item: run_item, cond: Some(Cond::NotExists) }];
        let mut index = Attrs::new();
        index.insert("workflow_id".into(), json!(wf_id));
        index.insert("status".into(), Value::from(RunStatus::Running));
        index.insert("created_at".into(), json!(now));
        index.insert("updated_at".into(), json!(now));
        writes.push(Write::Put { item: Item::new(keys::run_index(acct, &run_id), index), cond: None });
        if let Some(ik) = &idem_key {
            let mut a = Attrs::new();
            a.insert("run_id".into(), json!(run_id));
            a.insert("fingerprint".into(), json!(fingerprint));
            let mut it = Item::new(ik.clone(), a);
            it.expires_at = Some(now / 1000 + IDEMPOTENCY_WINDOW_SECS);
            writes.push(Write::Put { item: it, cond: Some(Cond::NotExists) });
        }
        if inline {
            // Sent before the commit: if this process dies after it, the sweep still finds
            // the run and publishes what nobody drove. Without a run it is dropped.
            self.send(vec![(Msg::Sweep { r: run_id.clone() }, self.sweep_after())]).await?;
        }
        match self.store.transact(writes).await {
            Ok(()) => {}
            Err(Error::Conflict(_)) if idem_key.is_some() => {
                // Another request with the same key won the race.
                let ik = idem_key.expect("checked");
                let existing = self
                    .store
                    .get(&ik)
                    .await?
                    .ok_or_else(|| Error::Conflict("idempotency key in use; retry".into()))?;
                return self.idempotent_replay(&existing, &fingerprint).await;
            }
            Err(e) => return Err(e),
        }
        let mut msgs: Vec<Msg> = entries.iter().map(|e| Msg::step_of(&view.run, e)).collect();
        if !inline {
            self.send(msgs.drain(..).map(|m| (m, Duration::ZERO)).collect()).await?;
        }
        // The view is built from what was just written: no second read on the start path.
        Ok((Started { run: run_view(&view, false), created: true }, msgs))
    }

    /// The run an idempotency key already started. Its entry steps go out again if none has
    /// been claimed yet: the request that started it may have died between its commit and its
    /// send, and a caller retrying with the same key is how that run gets going (a duplicate
    /// message is harmless).
    async fn idempotent_replay(&self, existing: &Item, fingerprint: &str) -> Result<(Started, Vec<Msg>)> {
        if existing.str("fingerprint") != Some(fingerprint) {
            return Err(Error::Conflict("this idempotency key was already used with a different payload".into()));
        }
        let run_id = existing.str("run_id").unwrap_or_default();
        let snap = Snapshot::require(&*self.store, run_id).await?;
        let entries = snap.run.get("next").and_then(Value::as_array).cloned().unwrap_or_default();
        let unclaimed: Vec<Msg> = entries
            .iter()
            .filter_map(Value::as_str)
            .filter(|k| snap.run_status() == RunStatus::Running && snap.steps.get(*k).is_some_and(is_lazy))
            .map(|k| Msg::step_of(&snap.run, k))
            .collect();
        Ok((Started { run: run_view(&snap, false), created: false }, unclaimed))
    }

    /// The run as the API shows it; another account's run is not found.
    pub async fn get_run(&self, acct: &str, run_id: &str) -> Result<Value> {
        let mut snap = self.owned(acct, run_id).await?;
        if snap.steps.values().any(|s| s.get("expected").is_some()) {
            // A split's item steps live outside the snapshot; the view shows the first page
            // of them (a split's own step carries the counts).
            let page = self
                .store
                .query(Query { limit: MAX_ITEMS_SHOWN, ..Query::prefix(keys::run_pk(run_id), keys::ITEM_PREFIX) })
                .await?;
            for it in page.items {
                if let Some(k) = keys::item_step_key(&it.key.sk) {
                    snap.steps.insert(k, it);
                }
            }
        }
        Ok(run_view(&snap, true))
    }

    /// The run's snapshot if the run belongs to `acct`, else `NotFound`.
    pub(crate) async fn owned_run(&self, acct: &str, run_id: &str) -> Result<Snapshot> {
        self.owned(acct, run_id).await
    }

    async fn owned(&self, acct: &str, run_id: &str) -> Result<Snapshot> {
        match Snapshot::load(&*self.store, run_id).await? {
            Some(s) if s.run.str("account_id") == Some(acct) => Ok(s),
            _ => Err(Error::not_found(format!("run {run_id}"))),
        }
    }

    pub async fn list_runs(&self, acct: &str, f: RunFilter) -> Result<Value> {
        if let Some(s) = &f.status
            && !RUN_STATUSES.contains(&s.as_str())
        {
            return Err(Error::validation_at(
                vec![json!("status")],
                format!("unknown status '{s}'; use one of {}", RUN_STATUSES.join(", ")),
            ));
        }
        let limit = f.limit.clamp(1, 100);
        let mut cursor = f.cursor.clone();
        let mut data = Vec::new();
        // Filters apply to the index page by page; keep reading until the page is full or
        // the index ends, bounded so one request never walks the whole index.
        for _ in 0..20 {
            let page = self
                .store
                .query(Query {
                    pk: keys::runs_index_pk(acct),
                    range: SkRange::All,
                    limit: limit - data.len(),
                    cursor: cursor.clone(),
                    descending: true,
                })
                .await?;
            for it in page.items {
                let status = it.str("status").unwrap_or("running");
                let status = if status == "running" { "running" } else { status };
                if f.status.as_deref().is_some_and(|s| s != status && !(s == "pending" && status == "running")) {
                    continue;
                }
                if f.workflow_id.as_deref().is_some_and(|w| Some(w) != it.str("workflow_id")) {
                    continue;
                }
                data.push(json!({
                    "run_id": it.key.sk,
                    "workflow_id": it.get("workflow_id"),
                    "status": status,
                    "created_at": ids::ms_to_rfc3339(it.i64("created_at").unwrap_or(0)),
                    "updated_at": ids::ms_to_rfc3339(it.i64("updated_at").unwrap_or(0)),
                }));
            }
            cursor = page.next_cursor;
            if data.len() >= limit || cursor.is_none() {
                break;
            }
        }
        Ok(json!({"data": data, "next_cursor": cursor}))
    }

    /// Every open task of a person across the account's runs (`GET /tasks?status=open`, the
    /// console's inbox). Built from existing reads, no store query of its own: the runs index
    /// filtered to `waiting_human`, then each such run's tasks. A page holds the open tasks of
    /// up to `limit` waiting runs (so possibly more than `limit` tasks); the cursor is the
    /// index's. A run deleted in between (retention) is left out.
    pub async fn open_tasks(&self, acct: &str, limit: usize, cursor: Option<String>) -> Result<Value> {
        let filter = RunFilter { status: Some("waiting_human".into()), workflow_id: None, limit, cursor };
        let runs = self.list_runs(acct, filter).await?;
        let mut data = Vec::new();
        for r in runs["data"].as_array().into_iter().flatten() {
            let Some(run_id) = r["run_id"].as_str() else { continue };
            let snap = match self.owned(acct, run_id).await {
                Ok(s) => s,
                Err(Error::NotFound(_)) => continue,
                Err(e) => return Err(e),
            };
            let mut tasks: Vec<Value> = snap
                .tasks
                .values()
                .filter(|t| t.str("status") == Some("open") && super::wait::is_human(t.str("kind").unwrap_or("")))
                .map(|t| {
                    let mut v = task_view(run_id, t);
                    v["workflow_id"] = r["workflow_id"].clone();
                    v
                })
                .collect();
            tasks.sort_by(|a, b| a["task_id"].as_str().cmp(&b["task_id"].as_str()));
            data.extend(tasks);
        }
        Ok(json!({"data": data, "next_cursor": runs["next_cursor"]}))
    }

    /// The run's timeline: stored events, and a `step.completed` for every completed step,
    /// read from the step itself (a chain commit writes no event item). Ordered as the
    /// events' sort keys order them; the cursor is the last sort key of the page.
    pub async fn run_events(&self, acct: &str, run_id: &str, limit: usize, cursor: Option<String>) -> Result<Value> {
        let snap = self.owned(acct, run_id).await?;
        let after = match cursor {
            Some(c) => Some(
                hex::decode(&c)
                    .ok()
                    .and_then(|b| String::from_utf8(b).ok())
                    .ok_or_else(|| Error::validation("invalid cursor"))?,
            ),
            None => None,
        };
        let stored = query_all(&*self.store, Query::prefix(keys::run_pk(run_id), "EVT#")).await?;
        let mut all: Vec<(String, Value)> = stored
            .iter()
            .map(|e| (e.key.sk.clone(), event_view(e.get("type"), e.i64("at"), e.get("step_key"), e.get("data"))))
            .collect();
        let r = &snap.run;
        let started = r.i64("created_at").unwrap_or(0);
        let data = json!({"version": r.i64("version"), "source": r.get("source")});
        all.push((
            format!("EVT#{started:013}#000000#!"),
            event_view(Some(&json!("run.started")), Some(started), None, Some(&data)),
        ));
        for (k, s) in &snap.steps {
            let (kind, data) = match s.str("status") {
                Some("completed") if !is_lazy(s) => match s.i64("expected") {
                    Some(n) => ("step.completed", json!({"items": n})),
                    None => ("step.completed", json!({"attempt": s.i64("attempt")})),
                },
                Some("skipped") => ("step.skipped", Value::Null),
                _ => continue,
            };
            let at = s.i64("finished_at").unwrap_or(0);
            // '!' sorts before the suffix of stored events: a step's completion comes before
            // what its commit wrote in the same millisecond.
            let sk = format!("EVT#{at:013}#{:06}#!{k}", s.i64("ev_seq").unwrap_or(0));
            all.push((sk, event_view(Some(&json!(kind)), Some(at), Some(&json!(k)), Some(&data))));
        }
        all.sort_by(|x, y| x.0.cmp(&y.0));
        let start = after.map(|c| all.partition_point(|(sk, _)| *sk <= c)).unwrap_or(0);
        let limit = limit.clamp(1, 1000);
        let page: Vec<(String, Value)> = all.into_iter().skip(start).take(limit + 1).collect();
        let next = (page.len() > limit).then(|| hex::encode(page[limit - 1].0.as_bytes()));
        let data: Vec<Value> = page.into_iter().take(limit).map(|(_, v)| v).collect();
        Ok(json!({"data": data, "next_cursor": next}))
    }

    /// The run's tasks by id, `limit` at a time after `cursor` (the last id of the previous
    /// page, hex-encoded as the events' cursor is).
    pub async fn run_tasks(&self, acct: &str, run_id: &str, limit: usize, cursor: Option<String>) -> Result<Value> {
        let after = cursor
            .map(|c| hex::decode(&c).ok().and_then(|b| String::from_utf8(b).ok()))
            .map(|c| c.ok_or_else(|| Error::validation_at(vec![json!("cursor")], "invalid cursor")))
            .transpose()?;
        let snap = self.owned(acct, run_id).await?;
        let mut tasks: Vec<Value> = snap.tasks.values().map(|t| task_view(run_id, t)).collect();
        tasks.sort_by(|a, b| a["task_id"].as_str().cmp(&b["task_id"].as_str()));
        let limit = limit.clamp(1, 1000);
        let page: Vec<Value> = tasks
            .into_iter()
            .filter(|t| after.as_deref().is_none_or(|a| t["task_id"].as_str().is_some_and(|id| id > a)))
            .take(limit + 1)
            .collect();
        let next = (page.len() > limit).then(|| hex::encode(page[limit - 1]["task_id"].as_str().unwrap_or_default()));
        let data: Vec<Value> = page.into_iter().take(limit).collect();
        Ok(json!({"data": data, "next_cursor": next}))
    }

    /// Answers a human task: `{"output": ...}` for a question, `{"approved", "feedback"}`
    /// for an approval. Returns the run afterwards.
    pub async fn complete_task(&self, acct: &str, run_id: &str, task_id: &str, answer: Value) -> Result<Value> {
        let snap = self.owned(acct, run_id).await?;
        self.resume(&snap, task_id, answer, |s| format!("task {task_id} is already {s}")).await?;
        self.get_run(acct, run_id).await
    }

    pub async fn cancel_run(&self, acct: &str, run_id: &str) -> Result<Value> {
        let snap = self.owned(acct, run_id).await?;
        let status = snap.run_status();
        if status.is_terminal() {
            return Err(Error::InvalidStatus(format!("run {run_id} is already {status}")));
        }
        let now = now_ms();
        let mut writes = vec![
            Write::Update {
                key: keys::run(run_id),
                update: Update::default()
                    .set("status", RunStatus::Cancelled)
                    .set("finished_at", now)
                    .set("updated_at", now),
                cond: Some(Cond::eq("status", RunStatus::Running)),
            },
            index_status(acct, run_id, "cancelled", now),
            event_write(run_id, now, 0, "run.cancelled", None, Value::Null),
        ];
        // Steps that wait on the outside world are closed now; pending ones are dropped by
        // the worker when their message arrives.
        for (k, t) in snap.tasks.iter().filter(|(_, t)| t.str("status") == Some("open")) {
            if writes.len() >= crate::store::MAX_TRANSACT_ITEMS - 3 {
                break;
            }
            writes.push(Write::Update {
                key: keys::task(run_id, k),
                update: Update::default().set("status", "cancelled").set("completed_at", now),
                cond: Some(Cond::eq("status", "open")),
            });
            if let Some(sk) = t.str("step_key") {
                writes.push(Write::Update {
                    key: keys::step(run_id, sk),
                    update: Update::default().set("status", StepStatus::Cancelled).set("finished_at", now),
                    cond: None,
                });
            }
        }
        // The child runs its steps wait on end with it (after the commit).
        let children: Vec<String> = snap
            .tasks
            .values()
            .filter(|t| t.str("status") == Some("open") && t.str("kind") == Some("child"))
            .filter_map(|t| t.str("child_run_id").map(str::to_string))
            .collect();
        let summary = crate::callbacks::run_summary(&snap.run, "cancelled", None, None, now);
        let outbox = self.callback_outbox(&snap.run, crate::callbacks::RUN_CANCELLED, summary, now).await?;
        if let Some(o) = &outbox {
            writes.insert(1, o.write.clone());
        }
        self.child_end_safety(&snap.run).await?;
        match self.store.transact(writes).await {
            Ok(()) => {
                self.flush_outbox(outbox.into_iter().collect()).await;
                self.child_ended(&snap.run).await;
                self.cancel_children(acct, children).await;
            }
            Err(Error::Conflict(_)) => return Err(Error::Conflict(format!("run {run_id} changed meanwhile; retry"))),
            Err(e) => return Err(e),
        }
        self.get_run(acct, run_id).await
    }

    /// Restarts a failed run from its failed steps (fresh attempts); completed steps keep
    /// their outputs.
    pub async fn redrive_run(&self, acct: &str, run_id: &str) -> Result<Value> {
        let snap = self.owned(acct, run_id).await?;
        if snap.run_status() != RunStatus::Failed {
            return Err(Error::InvalidStatus(format!(
                "only failed runs can be redriven; run {run_id} is {}",
                snap.run_status()
            )));
        }
        let now = now_ms();
        let mut steps = Vec::new();
        let mut publish = Vec::new();
        let mut active = 0;
        for (k, s) in &snap.steps {
            let st = s.str("status").unwrap_or("");
            let reset = match st {
                "failed" => !s.get("handled").and_then(Value::as_bool).unwrap_or(false),
                "cancelled" => true,
                _ => false,
            };
            if reset && let Some(expected) = s.i64("expected") {
                // A split's collection: its failed and unfinished items go back to having no
                // item (so they are claimed into being again) and run once more.
                let items = query_all(&*self.store, Query::prefix(keys::run_pk(run_id), keys::items_prefix(k))).await?;
                let mut done = vec![false; expected.max(0) as usize];
                for it in &items {
                    let Some(sk) = keys::item_step_key(&it.key.sk) else { continue };
                    let Some((_, i)) = keys::split_item(&sk) else { continue };
                    if StepStatus::of(it) == StepStatus::Completed && i < done.len() {
                        done[i] = true;
                    } else {
                        steps.push(Write::Delete { key: it.key.clone(), cond: None });
                    }
                }
                steps.push(Write::Update {
                    key: keys::step(run_id, k),
                    update: Update::default()
                        .set("status", StepStatus::Collecting)
                        .set("done", done.iter().filter(|d| **d).count())
                        .remove("error")
                        .remove("finished_at"),
                    cond: Some(Cond::eq("status", st)),
                });
                publish.extend(
                    done.iter()
                        .enumerate()
                        .filter(|(_, d)| !**d)
                        .map(|(i, _)| Msg::step_of(&snap.run, &format!("{k}[{i}]"))),
                );
                active += 1;
            } else if reset {
                steps.push(Write::Update {
                    key: keys::step(run_id, k),
                    update: Update::default()
                        .set("status", StepStatus::Pending)
                        .set("attempt", 0)
                        .remove("error")
                        .remove("finished_at")
                        .remove("not_before")
                        .remove("next")
                        .remove("skip"),
                    cond: Some(Cond::eq("status", st)),
                });
                publish.push(Msg::step_of(&snap.run, k));
                active += 1;
            } else if matches!(st, "pending" | "running" | "sleeping" | "waiting_human") {
                active += 1;
                if st == "pending" {
                    publish.push(Msg::step_of(&snap.run, k));
                }
            }
        }
        if publish.is_empty() {
            return Err(Error::InvalidStatus(format!("run {run_id} has no failed step to redrive")));
        }
        let mut first = vec![
            Write::Update {
                key: keys::run(run_id),
                update: Update::default()
                    .set("status", RunStatus::Running)
                    .set("active", active)
                    // Step messages sent before this say which redrive they belong to.
                    .add("epoch", 1)
                    .remove("error")
                    .remove("finished_at")
                    .set("updated_at", now),
                cond: Some(Cond::eq("status", RunStatus::Failed)),
            },
            index_status(acct, run_id, "running", now),
            event_write(run_id, now, 0, "run.redriven", None, json!({"steps": publish.len()})),
        ];
        // As in `complete_task`: the sweep covers a death between the commit and the sends.
        self.send(vec![(Msg::Sweep { r: run_id.to_string() }, self.sweep_after())]).await?;
        let room = crate::store::MAX_TRANSACT_ITEMS - first.len();
        let rest = if steps.len() > room { steps.split_off(room) } else { Vec::new() };
        first.extend(steps);
        self.store.transact(first).await.map_err(|e| match e {
            Error::Conflict(_) => Error::Conflict(format!("run {run_id} changed meanwhile; retry")),
            e => e,
        })?;
        for chunk in rest.chunks(crate::store::MAX_TRANSACT_ITEMS) {
            self.store.transact(chunk.to_vec()).await?;
        }
        self.send(publish.into_iter().map(|m| (m, Duration::ZERO)).collect()).await?;
        self.get_run(acct, run_id).await
    }
}

/// The last change to the run: chain commits write only their step, not the run item.
fn updated_at(snap: &Snapshot) -> i64 {
    let steps = snap.steps.values().flat_map(|s| [s.i64("started_at"), s.i64("finished_at")]).flatten();
    steps.chain(snap.run.i64("updated_at")).max().unwrap_or(0)
}

/// The API shape of a run. Status is derived: a run that is not finished is
/// `waiting_human` while a person's task is open, `running` once a step has started, else `pending`.
pub fn run_view(snap: &Snapshot, with_steps: bool) -> Value {
    let r = &snap.run;
    let stored = snap.run_status();
    // The view's own states: a person's open task, and no step started yet.
    let status = if stored.is_terminal() {
        stored.as_str()
    } else if snap
        .tasks
        .values()
        .any(|t| t.str("status") == Some("open") && super::wait::is_human(t.str("kind").unwrap_or("")))
    {
        "waiting_human"
    } else if snap.steps.values().any(|s| StepStatus::of(s) != StepStatus::Pending || s.i64("attempt").unwrap_or(0) > 0)
    {
        "running"
    } else {
        "pending"
    };
    let ts = |k: &str| r.i64(k).map(ids::ms_to_rfc3339).map(Value::from).unwrap_or(Value::Null);
    let mut v = json!({
        "run_id": r.str("run_id"),
        "workflow_id": r.str("workflow_id"),
        "workflow_version": r.i64("version"),
        "status": status,
        "input": r.get("input"),
        "output": r.get("output").cloned().unwrap_or(Value::Null),
        "error": r.get("error").cloned().unwrap_or(Value::Null),
        "metadata": r.get("metadata").cloned().unwrap_or(json!({})),
        "idempotency_key": r.get("idempotency_key").cloned().unwrap_or(Value::Null),
        "parent_run_id": r.get("parent").and_then(|p| p.get("run_id")).cloned().unwrap_or(Value::Null),
        "parent_step_key": r.get("parent").and_then(|p| p.get("step_key")).cloned().unwrap_or(Value::Null),
        "created_at": ts("created_at"),
        "updated_at": ids::ms_to_rfc3339(updated_at(snap)),
        "finished_at": ts("finished_at"),
    });
    if with_steps {
        let mut steps: Vec<(&String, &Item)> =
            snap.steps.iter().filter(|(_, s)| StepStatus::of(s) != StepStatus::Joining).collect();
        steps.sort_by_key(|(k, s)| {
            (s.i64("created_at").unwrap_or(0), s.i64("started_at").unwrap_or(i64::MAX), (*k).clone())
        });
        v["steps"] = steps
            .into_iter()
            .map(|(k, s)| {
                let t = |n: &str| s.i64(n).map(ids::ms_to_rfc3339).map(Value::from).unwrap_or(Value::Null);
                let mut v = json!({
                    "step_key": k,
                    "block_id": s.str("block"),
                    "status": s.str("status"),
                    "attempt": s.i64("attempt").unwrap_or(0),
                    "output": s.get("output").cloned().unwrap_or(Value::Null),
                    "error": s.get("error").cloned().unwrap_or(Value::Null),
                    "task_id": s.get("task_id").cloned().unwrap_or(Value::Null),
                    "started_at": t("started_at"),
                    "finished_at": t("finished_at"),
                });
                if let Some(n) = s.i64("expected") {
                    v["items"] = json!({"expected": n, "completed": s.i64("done").unwrap_or(0)});
                }
                v
            })
            .collect();
        let run_id = r.str("run_id").unwrap_or_default();
        let mut tasks: Vec<Value> = snap.tasks.values().map(|t| task_view(run_id, t)).collect();
        tasks.sort_by(|a, b| a["task_id"].as_str().cmp(&b["task_id"].as_str()));
        v["tasks"] = Value::Array(tasks);
    }
    v
}

fn event_view(kind: Option<&Value>, at: Option<i64>, step: Option<&Value>, data: Option<&Value>) -> Value {
    let mut o = json!({"type": kind, "at": ids::ms_to_rfc3339(at.unwrap_or(0))});
    if let Some(s) = step {
        o["step_key"] = s.clone();
    }
    if let Some(d) = data.filter(|d| !d.is_null()) {
        o["data"] = d.clone();
    }
    o
}

fn task_view(run_id: &str, t: &Item) -> Value {
    let ts = |k: &str| t.i64(k).map(ids::ms_to_rfc3339).map(Value::from).unwrap_or(Value::Null);
    let mut v = json!({
        "task_id": t.str("task_id"),
        "run_id": run_id,
        "step_key": t.str("step_key"),
        "kind": t.str("kind"),
        "prompt": t.get("prompt").cloned().unwrap_or(Value::Null),
        "status": t.str("status"),
        "output": t.get("output").cloned().unwrap_or(Value::Null),
        "created_at": ts("created_at"),
        "completed_at": ts("completed_at"),
        "timeout_at": ts("timeout_at"),
    });
    for k in ["assignee", "options", "schema", "title"] {
        if let Some(x) = t.get(k) {
            v[k] = x.clone();
        }
    }
    v
}

/// Fills in `default`s from the schema's `properties`, recursively, before validation.
fn apply_defaults(schema: &Value, value: &mut Value, depth: usize) {
    if depth > 32 {
        return;
    }
    let (Some(props), Value::Object(obj)) = (schema.get("properties").and_then(Value::as_object), value) else {
        return;
    };
    for (name, sub) in props {
        if !obj.contains_key(name)
            && let Some(d) = sub.get("default")
        {
            obj.insert(name.clone(), d.clone());
        }
        if let Some(child) = obj.get_mut(name) {
            apply_defaults(sub, child, depth + 1);
        }
    }
}

fn validate_input(validator: &jsonschema::Validator, input: &Value) -> Result<()> {
    // Every error, each at its place inside the input (seed 003: `["customerId"]`,
    // "Required"); a missing property is named at its own path, not at its parent's.
    let details: Vec<Detail> = validator
        .iter_errors(input)
        .take(50)
        .map(|e| {
            let mut path: Vec<Value> = Vec::new();
            for seg in e.instance_path().as_str().split('/').skip(1) {
                let seg = seg.replace("~1", "/").replace("~0", "~");
                match seg.parse::<u64>() {
                    Ok(n) => path.push(json!(n)),
                    Err(_) => path.push(json!(seg)),
                }
            }
            match e.kind() {
                jsonschema::error::ValidationErrorKind::Required { property } => {
                    path.push(property.clone());
                    Detail::new(path, "Required")
                }
                _ => Detail::new(path, e.to_string()),
            }
        })
        .collect();
    if details.is_empty() {
        return Ok(());
    }
    let first = &details[0];
    let at = if first.path.is_empty() {
        "the input".to_string()
    } else {
        first
            .path
            .iter()
            .map(|p| p.as_str().map_or_else(|| p.to_string(), str::to_string))
            .collect::<Vec<_>>()
            .join(".")
    };
    let more = match details.len() {
        1 => String::new(),
        n => format!(" (and {} more)", n - 1),
    };
    let message = format!("Input does not match the workflow's inputSchema: {at}: {}{more}", first.message);
    Err(Error::Validation { message, details })
}

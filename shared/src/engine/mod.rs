//! The durable engine (DESIGN.md §3), written once against the Store and Queue ports.
//!
//! A step message names `(run_id, step_key)` and what its worker needs to know to read only
//! that step's part of the run (`reads`). Per message the worker reads that part, claims the
//! step with a conditional write, runs the block, and commits the result together with its
//! successors in one conditional write (a linear hand-over) or transaction (anything else);
//! only then are the successors enqueued and the message acknowledged. Any crash in between
//! ends in a redelivery that reaches the same state: at-least-once delivery, exactly-once
//! commit.
//!
//! Where things are, in the order a step meets them:
//! - `worker`: a message's way through: read (`step_snapshot`), claim, execute, and commit
//!   (`finish_step` → `plan_end`, then `hand_over` or a transaction with `run_change`);
//! - `reads` and `snapshot`: what a step reads, and the view of the run it decides on;
//! - `plan`: successors, join counters and skipped branches of one commit;
//! - `split`: a split's collection and its items; `wait`: every wait (people, callbacks);
//! - `finish`: completing a run and choosing its output; `runs`: starting, viewing,
//!   cancelling and redriving runs; `deliveries`: outbound callbacks' outbox and attempts;
//! - `child`: child runs (the `orchestration` block) and resuming their parents;
//! - `state`: the step and run states.

mod child;
mod deliveries;
mod finish;
mod logs;
mod plan;
mod reads;
mod runs;
mod snapshot;
mod split;
mod state;
mod wait;
mod worker;

#[cfg(test)]
mod tests;

pub use crate::ids::new_wait_token;
pub use child::check_graph as check_child_workflows;
pub use reads::{Needs, Reads, StepRefs, step_refs};
pub use runs::{RunFilter, StartRequest, Started, SyncResult};
pub use snapshot::{LAZY, Snapshot, is_terminal_run, is_terminal_step};
pub use state::{RunStatus, StepStatus};
pub use worker::Handled;

use crate::adapters::http::{GuardedHttp, HttpTransport};
use crate::app::AppConfig;
use crate::blocks::{Executor, Services};
use crate::callbacks::Transport;
use crate::error::{Error, Result};
use crate::model::Graph;
use crate::net_guard::Targets;
use crate::queue::{MAX_DELAY, Message, Queue};
use crate::secrets::SecretBox;
use crate::store::Store;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

/// What travels on the queue. Never the data: that lives in the store.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "t")]
pub enum Msg {
    /// Run (or re-check) one step. `p`: what the publisher knew (absent in messages of
    /// older builds, whose steps read the whole run).
    #[serde(rename = "step")]
    Step {
        r: String,
        s: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        p: Option<StepHint>,
    },
    /// A human task's timeout may have passed.
    #[serde(rename = "task")]
    TaskTimeout { r: String, k: String },
    /// Safety net for runs driven inline (sync execute): re-publish whatever is left.
    #[serde(rename = "sweep")]
    Sweep { r: String },
    /// Attempt `n` (0-based) of callback delivery `d` of run `r` (see `crate::callbacks`).
    #[serde(rename = "cb")]
    Callback { r: String, d: String, n: u32 },
    /// Publish the item steps of split body `s` from index `f` on, [`FAN_CHUNK`] at a time:
    /// a wide split is sent out by a chain of these rather than by one worker at once.
    #[serde(rename = "fan")]
    Fan { r: String, s: String, f: usize },
    /// Child run `r` ended (or is about to): resume the parent step waiting on it.
    #[serde(rename = "child")]
    Child { r: String },
}

/// How many item messages one split commit or one [`Msg::Fan`] publishes.
pub const FAN_CHUNK: usize = 500;

/// What a step message tells its worker besides the step, so that the worker reads only
/// what the step needs, in one request ([`Snapshot::load_step`]).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct StepHint {
    /// The run's account, workflow and version: which block the step runs, so which items
    /// it reads.
    pub a: String,
    pub w: String,
    pub v: u64,
    /// The run's redrive count when the message was sent (see `q`).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub e: u64,
    /// Sent by the commit that named the step, whose events had this order (`ev_seq`): the
    /// step exists even without an item, and its events go after those. Only a redrive
    /// (which may take a name back) makes the worker check with the predecessors.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub q: Option<i64>,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl StepHint {
    /// The hint of a run item: its workflow version and redrive count.
    pub fn of_run(run: &crate::store::Item) -> Option<StepHint> {
        Some(StepHint {
            a: run.str("account_id")?.to_string(),
            w: run.str("workflow_id")?.to_string(),
            v: run.i64("version").unwrap_or(1) as u64,
            e: run.i64("epoch").unwrap_or(0) as u64,
            q: None,
        })
    }

    /// Whether `run` is pinned to the same version.
    pub fn same_version(&self, run: &crate::store::Item) -> bool {
        StepHint::of_run(run).is_some_and(|h| h.a == self.a && h.w == self.w && h.v == self.v)
    }
}

impl Msg {
    pub fn step(run: &str, step: &str) -> Self {
        Msg::Step { r: run.to_string(), s: step.to_string(), p: None }
    }
    /// A step message naming the run's workflow version (`run`: the run item).
    pub fn step_of(run: &crate::store::Item, step: &str) -> Self {
        let id = run.key.pk.trim_start_matches("RUN#");
        Msg::Step { r: id.to_string(), s: step.to_string(), p: StepHint::of_run(run) }
    }
    /// [`step_of`](Self::step_of) from the commit that named the step, its events ordered by
    /// `ev_seq`.
    pub fn named_by(run: &crate::store::Item, step: &str, ev_seq: i64) -> Self {
        let mut m = Self::step_of(run, step);
        if let Msg::Step { p: Some(h), .. } = &mut m {
            h.q = Some(ev_seq);
        }
        m
    }
    pub fn encode(&self) -> String {
        serde_json::to_string(self).expect("messages always serialize")
    }
    pub fn run_id(&self) -> &str {
        match self {
            Msg::Step { r, .. }
            | Msg::TaskTimeout { r, .. }
            | Msg::Sweep { r }
            | Msg::Callback { r, .. }
            | Msg::Fan { r, .. }
            | Msg::Child { r } => r,
        }
    }
}

/// A pinned, immutable workflow version: safe to cache forever.
#[derive(Debug)]
pub struct Pinned {
    pub graph: Graph,
    pub variables: Value,
    pub input_schema: Option<Value>,
    /// Compiled once per version: compiling a schema costs more than validating with it.
    pub validator: Option<Arc<jsonschema::Validator>>,
    /// What a step of each block reads.
    pub reads: Reads,
}

const VERSION_CACHE_MAX: usize = 1024;

pub struct Engine {
    pub(crate) store: Arc<dyn Store>,
    pub(crate) queue: Arc<dyn Queue>,
    /// Where steps go whose block needs more time than a worker invocation has (on AWS, a
    /// worker function with a 15-minute timeout); `None`: every worker runs every block.
    pub(crate) long_queue: Option<Arc<dyn Queue>>,
    pub(crate) cfg: AppConfig,
    pub(crate) services: Services,
    /// Where outbound callbacks go out.
    pub(crate) transport: Arc<dyn Transport>,
    versions: Mutex<HashMap<(String, String, u64), Arc<Pinned>>>,
    executors: RwLock<HashMap<String, Arc<dyn Executor>>>,
}

impl Engine {
    pub fn new(
        store: Arc<dyn Store>,
        queue: Arc<dyn Queue>,
        long_queue: Option<Arc<dyn Queue>>,
        secrets: Arc<SecretBox>,
        cfg: AppConfig,
    ) -> Self {
        // One client (one connection pool) for callbacks and blocks.
        let http = GuardedHttp::new(Targets::from_allow_private(cfg.allow_private_targets));
        let transport = Arc::new(HttpTransport::over(http.clone()));
        let services = Services { store: Arc::clone(&store), secrets, http, public_url: cfg.public_url.clone() };
        Engine {
            store,
            queue,
            long_queue,
            services,
            cfg,
            transport,
            versions: Mutex::new(HashMap::new()),
            executors: RwLock::new(HashMap::new()),
        }
    }

    /// Lets a block type be run by `exec` instead of the built-ins (used for blocks that
    /// need outside services, and by tests).
    pub fn register_executor(&self, block_type: &str, exec: Arc<dyn Executor>) {
        self.executors.write().expect("executor registry poisoned").insert(block_type.to_string(), exec);
    }

    pub(crate) fn executor(&self, block_type: &str) -> Option<Arc<dyn Executor>> {
        self.executors.read().expect("executor registry poisoned").get(block_type).cloned()
    }

    pub fn config(&self) -> &AppConfig {
        &self.cfg
    }

    /// Loads a workflow version, from memory when seen before (versions never change).
    pub async fn pinned(&self, acct: &str, wf: &str, version: u64) -> Result<Arc<Pinned>> {
        let k = (acct.to_string(), wf.to_string(), version);
        if let Some(p) = self.versions.lock().expect("cache poisoned").get(&k) {
            return Ok(p.clone());
        }
        let v = crate::workflows::load_version(&*self.store, acct, wf, version).await?;
        let validator = match &v.input_schema {
            Some(s) => Some(Arc::new(jsonschema::validator_for(s).map_err(|e| {
                Error::Internal(format!("stored input schema of {wf} v{version} does not compile: {e}"))
            })?)),
            None => None,
        };
        let reads = Reads::of_graph(&v.graph);
        let pinned =
            Arc::new(Pinned { graph: v.graph, variables: v.variables, input_schema: v.input_schema, validator, reads });
        let mut cache = self.versions.lock().expect("cache poisoned");
        if cache.len() >= VERSION_CACHE_MAX {
            cache.clear();
        }
        cache.insert(k, pinned.clone());
        Ok(pinned)
    }

    /// Sends messages, splitting delays longer than the queue allows: the receiver sees the
    /// deadline has not passed and sends the message on again.
    pub(crate) async fn send(&self, msgs: Vec<(Msg, Duration)>) -> Result<()> {
        if msgs.is_empty() {
            return Ok(());
        }
        let batch: Vec<Message> =
            msgs.into_iter().map(|(m, d)| Message::delayed(m.encode(), d.min(MAX_DELAY))).collect();
        if batch.len() == 1 {
            self.queue.send(batch.into_iter().next().expect("one")).await
        } else {
            self.queue.send_batch(batch).await
        }
    }
}

pub(crate) fn now_ms() -> i64 {
    crate::ids::now_ms()
}

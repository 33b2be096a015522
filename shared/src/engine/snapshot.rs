//! One read of a run: the run item, its steps and its tasks (events excluded), in a single
//! partition query. Everything the worker decides is decided on a snapshot, and every write
//! it makes is conditional on the snapshot still being true.

use crate::error::{Error, Result};
use crate::keys;
use crate::store::{Item, Query, SkRange, Store, query_all};
use serde_json::Value;
use std::collections::HashMap;

pub struct Snapshot {
    pub run: Item,
    pub steps: HashMap<String, Item>,
    pub tasks: HashMap<String, Item>,
}

impl Snapshot {
    pub async fn load(store: &dyn Store, run_id: &str) -> Result<Option<Snapshot>> {
        // Sort keys: EVT#… < RUN < STEP#… < TASK#…; '$' sorts right after '#', so this range
        // takes the run, steps and tasks and leaves the (many) events out.
        let q =
            Query { range: SkRange::Between("RUN".into(), "TASK$".into()), ..Query::partition(keys::run_pk(run_id)) };
        let items = query_all(store, q).await?;
        let mut run = None;
        let mut steps = HashMap::new();
        let mut tasks = HashMap::new();
        for it in items {
            if it.key.sk == "RUN" {
                run = Some(it);
            } else if let Some(k) = it.key.sk.strip_prefix("STEP#") {
                steps.insert(k.to_string(), it);
            } else if let Some(k) = it.key.sk.strip_prefix("TASK#") {
                tasks.insert(k.to_string(), it);
            }
        }
        Ok(run.map(|run| Snapshot { run, steps, tasks }))
    }

    pub async fn require(store: &dyn Store, run_id: &str) -> Result<Snapshot> {
        Self::load(store, run_id).await?.ok_or_else(|| Error::not_found(format!("run {run_id}")))
    }

    /// Orders events written in the same millisecond by different commits: a commit that
    /// follows another causally sees more finished steps in its snapshot.
    pub fn event_seq(&self) -> usize {
        100 + 16 * self.steps.values().filter(|s| is_terminal_step(s.str("status").unwrap_or(""))).count()
    }

    pub fn run_status(&self) -> &str {
        self.run.str("status").unwrap_or("running")
    }

    pub fn step_status(&self, key: &str) -> Option<&str> {
        self.steps.get(key).and_then(|s| s.str("status"))
    }

    /// The context templates see: `input`, `steps.<id>.output`, `vars`, `run`.
    pub fn context(&self, variables: &Value) -> Value {
        let mut steps = serde_json::Map::new();
        for (k, s) in &self.steps {
            if k.contains('[') {
                continue;
            }
            let mut o = serde_json::Map::new();
            o.insert("status".into(), s.get("status").cloned().unwrap_or(Value::Null));
            o.insert("output".into(), s.get("output").cloned().unwrap_or(Value::Null));
            if let Some(e) = s.get("error") {
                o.insert("error".into(), e.clone());
            }
            steps.insert(k.clone(), Value::Object(o));
        }
        serde_json::json!({
            "input": self.run.get("input").cloned().unwrap_or(Value::Null),
            "steps": steps,
            "vars": variables,
            "run": {"id": self.run.key.pk.trim_start_matches("RUN#"), "metadata": self.run.get("metadata").cloned().unwrap_or(Value::Null)},
        })
    }
}

pub fn is_terminal_step(status: &str) -> bool {
    matches!(status, "completed" | "failed" | "skipped" | "cancelled")
}

pub fn is_terminal_run(status: &str) -> bool {
    matches!(status, "completed" | "failed" | "cancelled")
}

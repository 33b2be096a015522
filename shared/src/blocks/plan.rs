//! `plan`: a planned run's first step (`POST /runs`, seed 002). It asks the planner, compiles
//! the plan into the next version of the run's workflow and moves the run onto it; see
//! `ai::runs::plan_step`. Baton writes these blocks; its config is the request
//! (`{"request": {...}}`) before planning, and the plan (`{"planned": {...}}`) after.

use super::agent::AgentExecutor;
use super::{BlockContext, Executor, Outcome};
use crate::model::Block;
use async_trait::async_trait;
use serde_json::Value;

/// Default `timeout_ms` of a plan block: the planner is one model call and one repair.
pub const DEFAULT_TIMEOUT_MS: u64 = 120_000;

/// Calls the planner with the agent block's providers, journal and budget.
pub struct PlanExecutor(pub AgentExecutor);

/// Checks a plan block's config at save time.
pub fn check(c: &Value) -> Result<(), String> {
    match (c.get("request"), c.get("planned")) {
        (Some(Value::Object(_)), None) | (None, Some(Value::Object(_))) => Ok(()),
        _ => {
            Err("a plan block is written by POST /runs: its config is {\"request\": {...}} or {\"planned\": {...}}"
                .into())
        }
    }
}

#[async_trait]
impl Executor for PlanExecutor {
    async fn execute(&self, block: &Block, cx: &BlockContext<'_>) -> Outcome {
        crate::ai::runs::plan_step(&self.0, block, cx).await
    }
}

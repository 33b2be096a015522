//! Lines a block logged (a `code` step's `console.log`), kept in the run's timeline as one
//! `step.log` event per attempt: beside the step, outside its commit, so a step that logs
//! commits as one that does not.

use super::plan::event_write;
use super::{Engine, now_ms};
use crate::error::Result;
use serde_json::json;

impl Engine {
    pub(crate) async fn keep_logs(&self, run_id: &str, key: &str, attempt: i64, lines: Vec<String>) -> Result<()> {
        // Sequence 0: before whatever the commit that follows writes in the same millisecond.
        let w = event_write(run_id, now_ms(), 0, "step.log", Some(key), json!({"attempt": attempt, "lines": lines}));
        match w {
            crate::store::Write::Put { item, cond } => self.store.put(item, cond).await,
            other => self.store.transact(vec![other]).await,
        }
    }
}

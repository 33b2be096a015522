//! `human`: asks a person a question or for an approval, and waits for the answer.

use super::{Outcome, StepError, WaitSpec, invalid, render};
use crate::duration::parse_duration;
use crate::graph::Block;
use serde_json::{Value, json};

pub(super) fn run(block: &Block, data: &Value) -> Result<Outcome, StepError> {
    let c = &block.config;
    let kind = c.get("kind").and_then(Value::as_str).unwrap_or("question").to_string();
    let prompt = render(c.get("prompt").unwrap_or(&Value::Null), data)?;
    let timeout = c.get("timeout").map(parse_duration).transpose().map_err(invalid)?;
    let default = c.get("default").map(|d| render(d, data)).transpose()?;
    let mut extra = json!({});
    for k in ["assignee", "options", "schema", "title"] {
        if let Some(v) = c.get(k) {
            extra[k] = render(v, data)?;
        }
    }
    Ok(Outcome::Wait(WaitSpec { kind, prompt, timeout, default, extra, token_hash: None }))
}

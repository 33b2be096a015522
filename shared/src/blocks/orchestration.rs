//! `orchestration`: starts a child run of another workflow of the account and waits for it
//! to end. The engine starts the child (`engine::child`); this file reads the config.

use super::{StepError, invalid, render};
use serde_json::{Value, json};

/// How deep runs nest: the root run is at depth 1, its children at 2, and a run at this
/// depth starts no child (`NESTING_TOO_DEEP`).
pub const MAX_DEPTH: u64 = 8;

/// What one orchestration step starts.
#[derive(Clone, Debug, PartialEq)]
pub struct ChildSpec {
    pub workflow_id: String,
    pub input: Value,
    /// `None`: the child workflow's active version.
    pub version: Option<u64>,
}

/// Checked when the workflow is saved (a literal `workflow_id` that does not exist is
/// checked against the store by `engine::child::check_graph`).
pub fn check(c: &Value) -> Result<(), String> {
    match c.get("workflow_id") {
        Some(Value::String(s)) if !s.trim().is_empty() => {}
        Some(Value::String(_)) | None => {
            return Err("orchestration needs `workflow_id` (the id of the workflow to run as a child)".into());
        }
        Some(_) => return Err("`workflow_id` must be a string".into()),
    }
    match c.get("version") {
        None | Some(Value::Null) => {}
        Some(v) if v.as_u64().is_some_and(|n| n >= 1) => {}
        Some(Value::String(s)) if s.contains("{{") => {}
        Some(_) => return Err("`version` must be a positive integer (a version of the child workflow)".into()),
    }
    Ok(())
}

/// The child to start, its templates rendered against `data`.
pub fn spec(c: &Value, data: &Value) -> Result<ChildSpec, StepError> {
    check(c).map_err(invalid)?;
    let workflow_id = match render(&c["workflow_id"], data)? {
        Value::String(s) if !s.is_empty() => s,
        v => return Err(invalid(format!("`workflow_id` rendered to {v}, not a workflow id"))),
    };
    let input = match c.get("input") {
        Some(i) => render(i, data)?,
        None => json!({}),
    };
    let version = match c.get("version").map(|v| render(v, data)).transpose()? {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => {
            Some(s.trim().parse::<u64>().map_err(|_| invalid(format!("`version` rendered to \"{s}\", not a number")))?)
        }
        Some(v) => Some(v.as_u64().ok_or_else(|| invalid(format!("`version` rendered to {v}, not a version")))?),
    };
    Ok(ChildSpec { workflow_id, input, version })
}

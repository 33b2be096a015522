//! `response`: the body (and optionally status and headers) a sync caller gets.

use super::{Outcome, StepError, invalid, render};
use crate::graph::Block;
use serde_json::Value;

pub(super) fn run(block: &Block, data: &Value) -> Result<Outcome, StepError> {
    let c = &block.config;
    let body = render(c.get("body").unwrap_or(&Value::Null), data)?;
    let status = match c.get("status") {
        None | Some(Value::Null) => None,
        Some(s) => match render(s, data)?.as_u64() {
            Some(n @ 200..=599) => Some(n as u16),
            _ => return Err(invalid("response `status` must be 200..=599")),
        },
    };
    let headers = match c.get("headers") {
        None | Some(Value::Null) => None,
        Some(h) => Some(render(h, data)?),
    };
    Ok(Outcome::Response { body, status, headers })
}

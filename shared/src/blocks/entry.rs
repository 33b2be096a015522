//! `starter` and `webhook`: a run's entry points. A webhook block is an entry point like a
//! starter: the request body is the run input.

use super::{Outcome, StepError};
use serde_json::Value;

pub(super) fn run(data: &Value) -> Result<Outcome, StepError> {
    Ok(Outcome::Output(data.get("input").cloned().unwrap_or(Value::Null)))
}

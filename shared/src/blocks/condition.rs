//! `condition`: the branch is chosen on the edges (first true `when` wins, see
//! `engine::plan`); the block passes its input through so later blocks can read it.

use super::{Outcome, StepError};
use serde_json::Value;

pub(super) fn run(data: &Value) -> Result<Outcome, StepError> {
    Ok(Outcome::Output(data.get("input").cloned().unwrap_or(Value::Null)))
}

//! `split`: renders `config.items` into the array the block after it runs over, once per
//! item (the engine fans out and collects).

use super::{Outcome, StepError, render, type_name};
use crate::graph::Block;
use serde_json::Value;

/// Largest array a split fans out over.
pub const MAX_SPLIT_ITEMS: usize = 10_000;

pub(super) fn run(block: &Block, data: &Value) -> Result<Outcome, StepError> {
    match render(block.config.get("items").unwrap_or(&Value::Null), data)? {
        Value::Array(a) if a.len() <= MAX_SPLIT_ITEMS => Ok(Outcome::Output(Value::Array(a))),
        Value::Array(a) => {
            Err(StepError::fatal("SPLIT_TOO_LARGE", format!("split over {} items; at most {MAX_SPLIT_ITEMS}", a.len())))
        }
        other => Err(StepError::fatal(
            "SPLIT_NOT_ARRAY",
            format!("split `items` must yield an array, got {}", type_name(&other)),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::super::{block, execute_builtin};
    use super::*;
    use serde_json::json;

    #[test]
    fn split_requires_an_array() {
        let ctx = json!({"input": {"xs": 3}});
        let Outcome::Fail(e) = execute_builtin(&block("split", json!({"items": "{{input.xs}}"})), &ctx) else {
            panic!()
        };
        assert_eq!(e.code, "SPLIT_NOT_ARRAY");
    }

    #[test]
    fn split_refuses_more_than_its_limit() {
        let ctx = json!({"input": {"xs": vec![0; MAX_SPLIT_ITEMS + 1]}});
        let Outcome::Fail(e) = execute_builtin(&block("split", json!({"items": "{{input.xs}}"})), &ctx) else {
            panic!()
        };
        assert_eq!(e.code, "SPLIT_TOO_LARGE");
    }
}

//! `transform`: `config.mapping`, an object of templates, rendered into the output.

use super::{Outcome, StepError, render};
use crate::graph::Block;
use serde_json::{Value, json};

pub(super) fn run(block: &Block, data: &Value) -> Result<Outcome, StepError> {
    Ok(Outcome::Output(render(block.config.get("mapping").unwrap_or(&json!({})), data)?))
}

#[cfg(test)]
mod tests {
    use super::super::{block, execute_builtin};
    use super::*;

    #[test]
    fn transform_renders_mapping_with_types() {
        let ctx = json!({"input": {"a": 2, "name": "x"}});
        let out = execute_builtin(
            &block("transform", json!({"mapping": {"n": "{{input.a}}", "s": "hi {{input.name}}"}})),
            &ctx,
        );
        assert_eq!(out, Outcome::Output(json!({"n": 2, "s": "hi x"})));
    }
}

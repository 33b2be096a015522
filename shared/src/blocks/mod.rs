//! What each block type does when its step runs. The engine owns the step protocol
//! (claim, commit, successors); a block only turns a context into an outcome.

use crate::model::{Block, NOT_BUILT};
use crate::template;
use async_trait::async_trait;
use serde_json::{Value, json};
use std::time::Duration;

/// Largest array a split fans out over.
pub const MAX_SPLIT_ITEMS: usize = 10_000;
/// Longest delay block (chained through the queue's maximum delay).
pub const MAX_DELAY: Duration = Duration::from_secs(366 * 24 * 3600);

/// Why a step attempt failed. `retryable` errors go through the block's retry policy;
/// the others fail the step at once.
#[derive(Clone, Debug, PartialEq)]
pub struct StepError {
    pub code: String,
    pub message: String,
    pub retryable: bool,
}

impl StepError {
    pub fn fatal(code: &str, message: impl Into<String>) -> Self {
        Self { code: code.into(), message: message.into(), retryable: false }
    }
    pub fn retryable(code: &str, message: impl Into<String>) -> Self {
        Self { code: code.into(), message: message.into(), retryable: true }
    }
    pub fn to_json(&self) -> Value {
        json!({"code": self.code, "message": self.message})
    }
}

/// A human task a block asks for.
#[derive(Clone, Debug, PartialEq)]
pub struct TaskSpec {
    pub kind: String,
    pub prompt: Value,
    pub timeout: Option<Duration>,
    /// The outcome applied when the timeout passes; `None` fails the step with `TIMEOUT`.
    pub default: Option<Value>,
    pub extra: Value,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    Output(Value),
    /// Output plus what a sync caller should see as HTTP status/headers.
    Response {
        body: Value,
        status: Option<u16>,
        headers: Option<Value>,
    },
    Wait(TaskSpec),
    Sleep(Duration),
    Fail(StepError),
}

/// A block implementation the engine can be extended with (agent and code blocks plug in
/// here). Must be cancel-safe: the engine drops the future when the block's timeout passes.
#[async_trait]
pub trait Executor: Send + Sync {
    async fn execute(&self, block: &Block, ctx: &Value) -> Outcome;
}

fn render(v: &Value, ctx: &Value) -> Result<Value, StepError> {
    template::render(v, ctx).map_err(|e| StepError::fatal("TEMPLATE_ERROR", e.to_string()))
}

/// Runs a built-in block. `ctx` has `input`, `steps`, `vars`, `run` and, per item, `item`
/// and `index`.
pub fn execute_builtin(block: &Block, ctx: &Value) -> Outcome {
    let c = &block.config;
    let res: Result<Outcome, StepError> = (|| match block.kind.as_str() {
        // A webhook block is an entry point like a starter: the request body is the run input.
        "starter" | "webhook" => Ok(Outcome::Output(ctx.get("input").cloned().unwrap_or(Value::Null))),
        "transform" => Ok(Outcome::Output(render(c.get("mapping").unwrap_or(&json!({})), ctx)?)),
        // The branch is chosen on the edges (first true `when` wins); the block passes its
        // input through so later blocks can read it.
        "condition" => Ok(Outcome::Output(ctx.get("input").cloned().unwrap_or(Value::Null))),
        "split" => {
            let items = render(c.get("items").unwrap_or(&Value::Null), ctx)?;
            match items {
                Value::Array(a) if a.len() <= MAX_SPLIT_ITEMS => Ok(Outcome::Output(Value::Array(a))),
                Value::Array(a) => Err(StepError::fatal(
                    "SPLIT_TOO_LARGE",
                    format!("split over {} items; at most {MAX_SPLIT_ITEMS}", a.len()),
                )),
                other => Err(StepError::fatal(
                    "SPLIT_NOT_ARRAY",
                    format!("split `items` must yield an array, got {}", type_name(&other)),
                )),
            }
        }
        "response" => {
            let body = render(c.get("body").unwrap_or(&Value::Null), ctx)?;
            let status = match c.get("status") {
                None | Some(Value::Null) => None,
                Some(s) => match render(s, ctx)?.as_u64() {
                    Some(n @ 200..=599) => Some(n as u16),
                    _ => return Err(StepError::fatal("INVALID_CONFIG", "response `status` must be 200..=599")),
                },
            };
            let headers = match c.get("headers") {
                None | Some(Value::Null) => None,
                Some(h) => Some(render(h, ctx)?),
            };
            Ok(Outcome::Response { body, status, headers })
        }
        "delay" => {
            let cfg = render(c, ctx)?;
            delay_of(&cfg).map(Outcome::Sleep).map_err(|m| StepError::fatal("INVALID_CONFIG", m))
        }
        "human" => {
            let kind = c.get("kind").and_then(Value::as_str).unwrap_or("question").to_string();
            let prompt = render(c.get("prompt").unwrap_or(&Value::Null), ctx)?;
            let timeout = match c.get("timeout") {
                Some(t) => Some(parse_duration(t).map_err(|m| StepError::fatal("INVALID_CONFIG", m))?),
                None => None,
            };
            let default = match c.get("default") {
                Some(d) => Some(render(d, ctx)?),
                None => None,
            };
            let mut extra = json!({});
            for k in ["assignee", "options", "schema", "title"] {
                if let Some(v) = c.get(k) {
                    extra[k] = render(v, ctx)?;
                }
            }
            Ok(Outcome::Wait(TaskSpec { kind, prompt, timeout, default, extra }))
        }
        k if NOT_BUILT.contains(&k) => Err(StepError::fatal(
            "NOT_IMPLEMENTED",
            format!("Block type '{k}' is not implemented yet in this version of Baton"),
        )),
        k => Err(StepError::fatal("NOT_IMPLEMENTED", format!("Block type '{k}' has no executor"))),
    })();
    res.unwrap_or_else(Outcome::Fail)
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// How long a delay block waits: `duration` ("90s", "5m", "2h", "1d", "250ms"),
/// `duration_ms`, or `seconds`.
pub fn delay_of(c: &Value) -> Result<Duration, String> {
    let d = if let Some(v) = c.get("duration") {
        parse_duration(v)?
    } else if let Some(v) = c.get("duration_ms") {
        Duration::from_millis(v.as_u64().ok_or("`duration_ms` must be a non-negative integer")?)
    } else if let Some(v) = c.get("seconds") {
        let s = v.as_f64().filter(|s| *s >= 0.0 && s.is_finite()).ok_or("`seconds` must be a non-negative number")?;
        Duration::from_secs_f64(s.min(MAX_DELAY.as_secs_f64() + 1.0))
    } else {
        return Err("delay needs `duration`, `duration_ms` or `seconds`".into());
    };
    if d > MAX_DELAY {
        return Err("a delay can be at most 366 days".into());
    }
    Ok(d)
}

/// Parses "250ms", "30s", "5m", "2h", "1d" or a number of seconds.
pub fn parse_duration(v: &Value) -> Result<Duration, String> {
    let bad = || format!("invalid duration {v}: use e.g. \"30s\", \"5m\", \"2h\", \"1d\" or a number of seconds");
    let secs = match v {
        Value::Number(n) => n.as_f64().filter(|s| *s >= 0.0).ok_or_else(bad)?,
        Value::String(s) => {
            let s = s.trim();
            let split = s.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(s.len());
            let (num, unit) = s.split_at(split);
            let n: f64 = num.parse().map_err(|_| bad())?;
            let mul = match unit.trim() {
                "ms" => 0.001,
                "" | "s" | "sec" | "secs" | "seconds" => 1.0,
                "m" | "min" | "mins" | "minutes" => 60.0,
                "h" | "hour" | "hours" => 3600.0,
                "d" | "day" | "days" => 86400.0,
                _ => return Err(bad()),
            };
            n * mul
        }
        _ => return Err(bad()),
    };
    if !secs.is_finite() || secs > MAX_DELAY.as_secs_f64() {
        return Err("a duration can be at most 366 days".into());
    }
    Ok(Duration::from_secs_f64(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block(kind: &str, config: Value) -> Block {
        Block { id: "b".into(), kind: kind.into(), name: None, config, retry: None, timeout_ms: None }
    }

    #[test]
    fn durations_parse_in_every_unit() {
        assert_eq!(parse_duration(&json!("250ms")).unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration(&json!("5m")).unwrap(), Duration::from_secs(300));
        assert_eq!(parse_duration(&json!(2)).unwrap(), Duration::from_secs(2));
        assert!(parse_duration(&json!("5 parsecs")).is_err());
        assert!(parse_duration(&json!("400d")).is_err());
    }

    #[test]
    fn transform_renders_mapping_with_types() {
        let ctx = json!({"input": {"a": 2, "name": "x"}});
        let out = execute_builtin(
            &block("transform", json!({"mapping": {"n": "{{input.a}}", "s": "hi {{input.name}}"}})),
            &ctx,
        );
        assert_eq!(out, Outcome::Output(json!({"n": 2, "s": "hi x"})));
    }

    #[test]
    fn split_requires_an_array() {
        let ctx = json!({"input": {"xs": 3}});
        let Outcome::Fail(e) = execute_builtin(&block("split", json!({"items": "{{input.xs}}"})), &ctx) else {
            panic!()
        };
        assert_eq!(e.code, "SPLIT_NOT_ARRAY");
    }

    #[test]
    fn unbuilt_blocks_fail_with_not_implemented() {
        let Outcome::Fail(e) = execute_builtin(&block("agent", json!({})), &json!({})) else { panic!() };
        assert_eq!(e.code, "NOT_IMPLEMENTED");
        assert!(!e.retryable);
    }
}

//! What each block type does when its step runs. The engine owns the step protocol
//! (claim, commit, successors); a block only turns its [`BlockContext`] into an [`Outcome`].
//! One file per built-in block type; blocks that need outside services plug in through
//! [`Executor`].

pub mod actions;
pub mod agent;
pub mod code;
mod condition;
mod delay;
pub mod email;
mod entry;
pub mod http_call;
mod human;
pub mod orchestration;
pub mod plan;
pub mod platform_api;
mod response;
mod split;
mod transform;

pub use split::MAX_SPLIT_ITEMS;

use crate::adapters::http::GuardedHttp;
use crate::graph::Block;
use crate::secrets::SecretBox;
use crate::template;
use async_trait::async_trait;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// Why a step attempt failed. `retryable` errors go through the block's retry policy;
/// the others fail the step at once.
#[derive(Clone, Debug, PartialEq)]
pub struct StepError {
    pub code: String,
    pub message: String,
    pub retryable: bool,
    /// The least wait before a retry (an HTTP answer's `Retry-After`).
    pub retry_after: Option<Duration>,
}

impl StepError {
    pub fn fatal(code: &str, message: impl Into<String>) -> Self {
        Self { code: code.into(), message: message.into(), retryable: false, retry_after: None }
    }
    pub fn retryable(code: &str, message: impl Into<String>) -> Self {
        Self { code: code.into(), message: message.into(), retryable: true, retry_after: None }
    }
    pub fn to_json(&self) -> Value {
        json!({"code": self.code, "message": self.message})
    }
}

/// What a step waits for, outside the engine, before it can end (see `engine::wait`): a
/// person's answer today; callbacks, child runs and approval gates use the same record.
#[derive(Clone, Debug, PartialEq)]
pub struct WaitSpec {
    /// `question` or `approval` for a person.
    pub kind: String,
    pub prompt: Value,
    pub timeout: Option<Duration>,
    /// The outcome applied when the timeout passes; `None` fails the step with `TIMEOUT`.
    pub default: Option<Value>,
    /// Shown with the wait (assignee, options, schema, title).
    pub extra: Value,
    /// SHA-256 of the token that resumes the wait from outside (`ids::new_wait_token`);
    /// `None` for a wait resumed by id (a person's task).
    pub token_hash: Option<String>,
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
    /// Output of a step that moved its run onto another version of its workflow (a planned
    /// run's `plan` step, which saved the compiled plan as that version; the version holds
    /// this block, with the same id): the engine goes on with that version's successors.
    Replanned(Value),
    Wait(WaitSpec),
    Sleep(Duration),
    Fail(StepError),
    /// `outcome`, and the lines the block logged on the way (a `code` step's
    /// `console.log`): kept in the run's timeline as a `step.log` event of this attempt.
    Logged {
        outcome: Box<Outcome>,
        logs: Vec<String>,
    },
}

/// What the engine offers every block besides the data: shared by all steps of a process.
pub struct Services {
    /// Where the account's connections are read from (`crate::connections::resolve`).
    pub store: Arc<dyn crate::store::Store>,
    /// Opens sealed credentials (providers, connections).
    pub secrets: Arc<SecretBox>,
    /// The only way a block may reach the network: private targets refused unless the
    /// operator allows them (`BATON_ALLOW_PRIVATE_TARGETS`).
    pub http: GuardedHttp,
    /// Where this deployment is reached from outside (`BATON_PUBLIC_URL`): the base of the
    /// callback URLs blocks hand out.
    pub public_url: String,
}

/// Everything one execution of a block knows.
pub struct BlockContext<'a> {
    /// The run's account: whose connections a block may use.
    pub account_id: &'a str,
    pub run_id: &'a str,
    /// The run item as the step's claim read it (account, source, metadata): what a block
    /// needs of its run, without reading it again.
    pub run: &'a crate::store::Item,
    pub step_key: &'a str,
    /// 1 on the first attempt; a retry after a retryable failure counts up.
    pub attempt: u32,
    /// When the engine stops waiting for the block: its timeout, or the end of the worker's
    /// invocation if that comes first. A block that calls out passes what is left as the
    /// call's own timeout.
    pub deadline: Instant,
    /// The same for every attempt and redelivery of this step (`<run_id>:<step_key>`):
    /// what an outside API that deduplicates (an `Idempotency-Key` header) should be given.
    pub idempotency_key: String,
    /// The template context: `input`, `steps`, `vars`, `run` and, per item, `item`, `index`.
    pub data: &'a Value,
    pub services: &'a Services,
}

impl BlockContext<'_> {
    /// Time left before [`deadline`](Self::deadline).
    pub fn remaining(&self) -> Duration {
        self.deadline.saturating_duration_since(Instant::now())
    }
}

/// A block implementation the engine can be extended with (agent and code blocks plug in
/// here). Must be cancel-safe: the engine drops the future when the block's deadline passes.
/// May be called again for the same step after a crash (at-least-once); outside effects
/// should carry [`BlockContext::idempotency_key`].
#[async_trait]
pub trait Executor: Send + Sync {
    async fn execute(&self, block: &Block, cx: &BlockContext<'_>) -> Outcome;
}

fn render(v: &Value, ctx: &Value) -> Result<Value, StepError> {
    template::render(v, ctx).map_err(|e| StepError::fatal("TEMPLATE_ERROR", e.to_string()))
}

fn invalid(message: impl Into<String>) -> StepError {
    StepError::fatal("INVALID_CONFIG", message)
}

/// Runs a built-in block: those that call out or compute at length here, the rest in
/// [`execute_builtin`].
pub async fn execute(block: &Block, cx: &BlockContext<'_>) -> Outcome {
    match block.kind.as_str() {
        #[cfg(feature = "js")]
        "code" => match code::run(block, cx).await {
            (outcome, logs) if logs.is_empty() => outcome,
            (outcome, logs) => Outcome::Logged { outcome: Box::new(outcome), logs },
        },
        "general_api" => http_call::run(block, cx).await,
        "platform_api" => platform_api::run(block, cx).await,
        "action" => actions::run(block, cx).await,
        "email" => email::run(block, cx).await,
        _ => execute_builtin(block, cx.data),
    }
}

/// Runs a built-in block that needs nothing but `data`, the template context.
pub fn execute_builtin(block: &Block, data: &Value) -> Outcome {
    let res = match block.kind.as_str() {
        "starter" | "webhook" => entry::run(data),
        "transform" => transform::run(block, data),
        "condition" => condition::run(data),
        "split" => split::run(block, data),
        "response" => response::run(block, data),
        "delay" => delay::run(block, data),
        "human" => human::run(block, data),
        "code" => Err(StepError::fatal(
            "NOT_IMPLEMENTED",
            "this Baton binary was built without JavaScript (the `js` feature of the baton crate), so it cannot run `code` steps",
        )),
        // Saving accepts only the catalog's types (`model`), so what reaches here is a type
        // the catalog names but this version does not run yet.
        k => Err(StepError::fatal(
            "NOT_IMPLEMENTED",
            format!("Block type '{k}' is not implemented yet in this version of Baton"),
        )),
    };
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

#[cfg(test)]
pub(crate) fn block(kind: &str, config: Value) -> Block {
    Block { id: "b".into(), kind: kind.into(), name: None, config, retry: None, timeout_ms: None, action: None }
}

/// The run item of `run_1` in account `acct_a`, as a claim would have read it.
#[cfg(test)]
pub(crate) fn run_item() -> crate::store::Item {
    let mut a = crate::store::Attrs::new();
    a.insert("account_id".into(), Value::from("acct_a"));
    crate::store::Item::new(crate::keys::run("run_1"), a)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unbuilt_blocks_fail_with_not_implemented() {
        // `agent` too when no executor is registered for it (an engine without the AI runtime).
        for k in crate::model::NOT_BUILT.iter().chain(&["agent"]) {
            let Outcome::Fail(e) = execute_builtin(&block(k, json!({})), &json!({})) else { panic!() };
            assert_eq!(e.code, "NOT_IMPLEMENTED");
            assert!(!e.retryable);
        }
    }
}

//! `agent`: one LLM call through a provider, with templates in `system`, `prompt` and
//! `messages`; the output is the text, or with `output_schema` the parsed object (the
//! provider's native structured output, validated with `jsonschema`, one repair call, then
//! `SCHEMA_MISMATCH`).
//!
//! Every answer is journaled (`ai::journal`) before the block returns: the engine commits
//! the step afterwards, and a redelivery in between finds the answer instead of calling
//! again. Provider failures go through the one classifier (`ai::wire::classify`); retryable
//! ones are retried by the block's retry policy (4 attempts by default), never sooner than
//! the provider asked.

use super::{BlockContext, Executor, Outcome, StepError, render};
use crate::adapters::http::GuardedHttp;
use crate::ai::journal::{self, Entry};
use crate::ai::providers::{self, Resolved};
use crate::ai::wire::{ChatRequest, Failure, Message};
use crate::ai::{AiSettings, call};
use crate::error::Error;
use crate::model::Block;
use crate::secrets::SecretBox;
use crate::store::Store;
use async_trait::async_trait;
use serde_json::{Value, json};
use std::sync::Arc;

/// Default `timeout_ms` of an agent block: models can take minutes; longer than a worker
/// invocation has, the step goes to the long-step worker (AWS).
pub const DEFAULT_TIMEOUT_MS: u64 = 120_000;
/// Default attempts of an agent block (rate limits and outages are retried).
pub const DEFAULT_ATTEMPTS: u32 = 4;
const FIELDS: &[&str] = &[
    "provider_id",
    "model",
    "system",
    "prompt",
    "messages",
    "output_schema",
    "temperature",
    "max_tokens",
    "timeout_ms",
    "retry",
    "managed",
    "agent",
];
/// Run sources whose agent steps may use the operator's managed provider.
pub const PLANNED_SOURCE: &str = "planned";

/// Checks an agent block's config at save time.
pub fn check(c: &Value) -> Result<(), String> {
    let Value::Object(o) = c else { return Err("must be an object".into()) };
    if let Some(k) = o.keys().find(|k| !FIELDS.contains(&k.as_str())) {
        return Err(format!("unknown agent field `{k}`; expected one of: {}", FIELDS.join(", ")));
    }
    match (o.get("prompt"), o.get("messages")) {
        (None, None) => return Err("agent needs `prompt` (a template) or `messages`".into()),
        (Some(p), _) if !p.is_string() => return Err("`prompt` must be a string (a template)".into()),
        (_, Some(Value::Array(ms))) => {
            for m in ms {
                let role = m.get("role").and_then(Value::as_str);
                if !matches!(role, Some("user" | "assistant")) || !m.get("content").is_some_and(Value::is_string) {
                    return Err(
                        "each of `messages` must be {\"role\": \"user\" | \"assistant\", \"content\": \"...\"}".into(),
                    );
                }
            }
        }
        (_, Some(m)) if !m.is_null() => return Err("`messages` must be an array".into()),
        _ => {}
    }
    for k in ["system", "provider_id", "model"] {
        if o.get(k).is_some_and(|v| !v.is_string()) {
            return Err(format!("`{k}` must be a string"));
        }
    }
    if let Some(s) = o.get("output_schema") {
        if !s.is_object() {
            return Err("`output_schema` must be a JSON Schema object".into());
        }
        jsonschema::validator_for(s).map_err(|e| format!("`output_schema` is not a valid JSON Schema: {e}"))?;
    }
    if let Some(t) = o.get("temperature")
        && !t.as_f64().is_some_and(|t| (0.0..=2.0).contains(&t))
    {
        return Err("`temperature` must be a number from 0 to 2".into());
    }
    if let Some(m) = o.get("max_tokens")
        && !m.as_u64().is_some_and(|m| (1..=1_000_000).contains(&m))
    {
        return Err("`max_tokens` must be a whole number from 1 to 1000000".into());
    }
    Ok(())
}

/// Runs agent blocks: reads the provider records and the journal from the store.
pub struct AgentExecutor {
    pub store: Arc<dyn Store>,
    pub secrets: Arc<SecretBox>,
    pub http: GuardedHttp,
    pub ai: AiSettings,
}

fn step_error(f: Failure) -> StepError {
    StepError { code: f.code.to_string(), message: f.message, retryable: f.retryable, retry_after: f.retry_after }
}

fn internal(e: Error) -> StepError {
    // A store failure: retried, like any infrastructure error of a step.
    StepError::retryable("STORE_ERROR", e.to_string())
}

/// A structured answer's value: the provider's own JSON, else the text parsed (code fences
/// around it allowed).
fn structured(entry: &Entry) -> Result<Value, String> {
    if let Some(v) = &entry.answer.structured {
        return Ok(v.clone());
    }
    let t = entry.answer.text.trim();
    let t = t.strip_prefix("```json").or_else(|| t.strip_prefix("```")).unwrap_or(t);
    let t = t.strip_suffix("```").unwrap_or(t).trim();
    serde_json::from_str(t).map_err(|e| format!("the answer is not JSON ({e})"))
}

fn schema_errors(validator: &jsonschema::Validator, v: &Value) -> Option<String> {
    let errs: Vec<String> =
        validator.iter_errors(v).take(5).map(|e| format!("{} at `{}`", e, e.instance_path().as_str())).collect();
    (!errs.is_empty()).then(|| errs.join("; "))
}

fn clip(s: &str, max: usize) -> &str {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

impl AgentExecutor {
    /// The provider `c` names (`provider_id`), or the managed one for a planned trial run's
    /// `managed` block.
    pub(crate) async fn provider(
        &self,
        acct: &str,
        run: &crate::store::Item,
        c: &Value,
    ) -> Result<Resolved, StepError> {
        if let Some(id) = c.get("provider_id").and_then(Value::as_str).filter(|s| !s.is_empty()) {
            return providers::resolve(&*self.store, &self.secrets, acct, id).await.map_err(|e| match e {
                Error::NotFound(m) => StepError::fatal("PROVIDER_NOT_FOUND", m),
                e => internal(e),
            });
        }
        // The managed provider serves only the planned runs that were counted as trial runs.
        let managed_run = run.str("source") == Some(PLANNED_SOURCE)
            && run.get("metadata").and_then(|m| m.get("managed_trial")).and_then(Value::as_bool) == Some(true);
        match (&self.ai.managed, managed_run && c.get("managed").and_then(Value::as_bool) == Some(true)) {
            (Some(m), true) => Ok(m.clone()),
            _ => Err(StepError::fatal(
                "PROVIDER_REQUIRED",
                "this agent block names no `provider_id`: register a provider (POST /api/v1/providers) and set it",
            )),
        }
    }

    async fn run(&self, block: &Block, cx: &BlockContext<'_>) -> Result<Value, StepError> {
        let c = &block.config;
        let run = cx.run;
        let p = self.provider(cx.account_id, run, c).await?;
        let text = |k: &str| -> Result<Option<String>, StepError> {
            match c.get(k) {
                None | Some(Value::Null) => Ok(None),
                Some(v) => Ok(Some(match render(v, cx.data)? {
                    Value::String(s) => s,
                    other => other.to_string(),
                })),
            }
        };
        let mut messages = Vec::new();
        for m in c.get("messages").and_then(Value::as_array).into_iter().flatten() {
            let role = m.get("role").and_then(Value::as_str).unwrap_or("user").to_string();
            let content = match render(m.get("content").unwrap_or(&Value::Null), cx.data)? {
                Value::String(s) => s,
                other => other.to_string(),
            };
            messages.push(Message { role, content });
        }
        if let Some(prompt) = text("prompt")? {
            messages.push(Message { role: "user".into(), content: prompt });
        }
        let schema = c.get("output_schema").cloned();
        let req = ChatRequest {
            model: c.get("model").and_then(Value::as_str).map(str::to_string).unwrap_or_else(|| p.model.clone()),
            system: text("system")?,
            messages,
            schema: schema.clone(),
            temperature: c.get("temperature").and_then(Value::as_f64),
            max_tokens: c.get("max_tokens").and_then(Value::as_u64),
        };
        let budget = run.get("metadata").and_then(|m| m.get("max_tokens")).and_then(Value::as_u64);
        let journaled = journal::of_step(&*self.store, cx.run_id, cx.step_key).await.map_err(internal)?;
        let first = self.answer(cx, &p, &req, 1, &journaled, budget).await?;
        let Some(schema) = schema else { return Ok(json!(first.answer.text)) };
        let validator = jsonschema::validator_for(&schema)
            .map_err(|e| StepError::fatal("INVALID_CONFIG", format!("`output_schema`: {e}")))?;
        let problem = match structured(&first) {
            Ok(v) => match schema_errors(&validator, &v) {
                None => return Ok(v),
                Some(e) => e,
            },
            Err(e) => e,
        };
        // One repair: the model sees its answer and what was wrong with it.
        let mut repair = req.clone();
        repair.messages.push(Message { role: "assistant".into(), content: first.answer.text.clone() });
        repair.messages.push(Message {
            role: "user".into(),
            content: format!(
                "That answer does not match the required JSON Schema: {problem}. Answer again with only the JSON value, matching this schema: {schema}"
            ),
        });
        let second = self.answer(cx, &p, &repair, 2, &journaled, budget).await?;
        let problem = match structured(&second) {
            Ok(v) => match schema_errors(&validator, &v) {
                None => return Ok(v),
                Some(e) => e,
            },
            Err(e) => e,
        };
        // Redriven, the step asks afresh instead of failing on the same answers again.
        journal::forget(&*self.store, cx.run_id, cx.step_key).await.map_err(internal)?;
        Err(StepError::fatal(
            "SCHEMA_MISMATCH",
            format!(
                "the answer did not match output_schema after one repair: {problem}; raw answer: {}",
                clip(&second.answer.text, 4000)
            ),
        ))
    }

    /// The journaled answer of call `n`, or a new call journaled before it is used.
    pub(crate) async fn answer(
        &self,
        cx: &BlockContext<'_>,
        p: &Resolved,
        req: &ChatRequest,
        n: u32,
        journaled: &[(u32, Entry)],
        budget: Option<u64>,
    ) -> Result<Entry, StepError> {
        if let Some((_, e)) = journaled.iter().find(|(c, _)| *c == n) {
            tracing::debug!(call = n, "provider answer read from the journal; not calling again");
            return Ok(e.clone());
        }
        if let Some(max) = budget {
            let used = journal::run_tokens(&*self.store, cx.run_id).await.map_err(internal)?;
            let chars: usize = req.system.as_deref().map(str::len).unwrap_or(0)
                + req.messages.iter().map(|m| m.content.len()).sum::<usize>();
            // About four characters a token: the call's input alone must fit in what is left.
            let next = (chars as u64).div_ceil(4);
            if used + next > max {
                return Err(StepError::fatal(
                    "BUDGET_EXCEEDED",
                    format!(
                        "the run's max_tokens budget ({max}) would be passed: {used} used, this call needs about {next} more"
                    ),
                ));
            }
        }
        let called = call::chat(&self.http, p, req, cx.remaining()).await.map_err(step_error)?;
        let e = Entry { answer: called.answer, provider: p.kind.name().to_string(), latency_ms: called.latency_ms };
        journal::record(&*self.store, cx.run_id, cx.step_key, n, e).await.map_err(internal)
    }
}

#[async_trait]
impl Executor for AgentExecutor {
    async fn execute(&self, block: &Block, cx: &BlockContext<'_>) -> Outcome {
        match self.run(block, cx).await {
            Ok(v) => Outcome::Output(v),
            Err(e) => Outcome::Fail(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configs_are_checked_at_save_with_a_clear_message() {
        assert!(check(&json!({"prompt": "hi {{input.x}}"})).is_ok());
        for (c, says) in [
            (json!({}), "prompt"),
            (json!({"prompt": 3}), "prompt"),
            (json!({"prompt": "x", "temperature": 5}), "temperature"),
            (json!({"prompt": "x", "output_schema": {"type": "nope"}}), "output_schema"),
            (json!({"prompt": "x", "output_schema": "object"}), "output_schema"),
            (json!({"prompt": "x", "max_tokens": 0}), "max_tokens"),
            (json!({"prompt": "x", "mdoel": "m"}), "mdoel"),
            (json!({"messages": [{"role": "system", "content": "x"}]}), "messages"),
        ] {
            let e = check(&c).unwrap_err();
            assert!(e.contains(says), "{c}: {e}");
        }
    }

    #[test]
    fn structured_answers_may_come_in_code_fences() {
        let e = |t: &str| Entry {
            answer: crate::ai::wire::Answer {
                text: t.into(),
                structured: None,
                usage: Default::default(),
                model: "m".into(),
            },
            provider: "openai".into(),
            latency_ms: 0,
        };
        assert_eq!(structured(&e("```json\n{\"a\": 1}\n```")).unwrap(), json!({"a": 1}));
        assert!(structured(&e("sure! here it is")).is_err());
    }
}

//! The `action` catalog (seed 003): `{"type": "action", "action": "stripe.createInvoice",
//! "config": {…}}`. Each provider's actions are declared in its own file ([`Spec`]s: name,
//! the config fields it needs and takes) and run there; a step's connection is found by
//! `crate::connections::resolve` (the step's `config.connection_id`, the run's
//! `connectionId`, the account's only one of the provider).

pub mod github;
pub mod http;
pub mod slack;
pub mod stripe;

use super::{BlockContext, Outcome, StepError, invalid, render};
use crate::model::Block;
use serde_json::Value;

/// One action of the catalog.
#[derive(Debug)]
pub struct Spec {
    /// `provider.verb`, as steps name it.
    pub name: &'static str,
    pub provider: &'static str,
    /// Config fields that must be present (checked at save).
    pub required: &'static [&'static str],
    /// Every config field it reads besides `connection_id`; others are refused at save.
    pub fields: &'static [&'static str],
    pub summary: &'static str,
}

/// The whole catalog, provider by provider.
pub fn catalog() -> impl Iterator<Item = &'static Spec> {
    [stripe::ACTIONS, slack::ACTIONS, github::ACTIONS, http::ACTIONS].into_iter().flatten()
}

pub fn find(name: &str) -> Option<&'static Spec> {
    catalog().find(|s| s.name == name)
}

/// An action name is in the catalog.
pub fn check_name(name: &str) -> Result<(), String> {
    match find(name) {
        Some(_) => Ok(()),
        None => {
            let names: Vec<&str> = catalog().map(|s| s.name).collect();
            Err(format!("unknown action '{name}'; the catalog has: {}", names.join(", ")))
        }
    }
}

/// The check at save of an action step's config (its name is checked by the model).
pub fn check(b: &Block) -> Result<(), String> {
    let Some(spec) = b.action.as_deref().and_then(find) else { return Ok(()) };
    let Value::Object(c) = &b.config else { return Ok(()) };
    for f in spec.required {
        if c.get(*f).is_none_or(Value::is_null) {
            return Err(format!("{} needs `{f}`", spec.name));
        }
    }
    if let Some(k) = c.keys().find(|k| *k != "connection_id" && *k != "retry" && !spec.fields.contains(&k.as_str())) {
        return Err(format!("{} has no field `{k}`; it takes: {}", spec.name, spec.fields.join(", ")));
    }
    if let Some(v) = c.get("connection_id").filter(|v| !v.is_null())
        && !v.is_string()
    {
        return Err("`connection_id` must be a string".into());
    }
    match spec.provider {
        "stripe" => stripe::check(spec.name, c),
        "github" => github::check(c),
        "http" => http::check(c),
        _ => Ok(()),
    }
}

pub(super) async fn run(block: &Block, cx: &BlockContext<'_>) -> Outcome {
    match execute(block, cx).await {
        Ok(v) => Outcome::Output(v),
        Err(e) => Outcome::Fail(e),
    }
}

async fn execute(block: &Block, cx: &BlockContext<'_>) -> Result<Value, StepError> {
    let name = block.action.as_deref().unwrap_or_default();
    let spec = find(name).ok_or_else(|| invalid(format!("unknown action '{name}'")))?;
    let cfg = render(&block.config, cx.data)?;
    let step_conn = super::platform_api::connection_id(&cfg)?;
    let conn = super::platform_api::connection_for(cx, &[spec.provider], step_conn, spec.name).await?;
    match spec.provider {
        "stripe" => stripe::run(spec.name, cx, &conn, &cfg).await,
        "slack" => slack::run(spec.name, cx, &conn, &cfg).await,
        "github" => github::run(spec.name, cx, &conn, &cfg).await,
        "http" => http::run(cx, &conn, &cfg).await,
        p => Err(StepError::fatal("NOT_IMPLEMENTED", format!("no runner for {p} actions"))),
    }
}

/// A required string field of a rendered config.
fn text<'a>(cfg: &'a Value, name: &str, action: &str) -> Result<&'a str, StepError> {
    match cfg.get(name) {
        Some(Value::String(s)) if !s.trim().is_empty() => Ok(s),
        Some(Value::Null) | None => Err(invalid(format!("{action}: `{name}` is required (it rendered empty)"))),
        Some(v) => Err(invalid(format!("{action}: `{name}` must be a string, not {}", super::type_name(v)))),
    }
}

/// The fields of `cfg` among `names` that are set.
fn pick(cfg: &Value, names: &[&str]) -> serde_json::Map<String, Value> {
    names.iter().filter_map(|n| cfg.get(*n).filter(|v| !v.is_null()).map(|v| (n.to_string(), v.clone()))).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::blocks::block;
    use serde_json::json;

    fn action(name: &str, config: Value) -> Block {
        Block { action: Some(name.into()), ..block("action", config) }
    }

    #[test]
    fn the_catalog_has_each_issued_action_once() {
        let names: Vec<&str> = catalog().map(|s| s.name).collect();
        for n in
            ["stripe.createCustomer", "stripe.createInvoice", "slack.postMessage", "github.createIssue", "http.request"]
        {
            assert_eq!(names.iter().filter(|x| **x == n).count(), 1, "{n}");
        }
        assert!(catalog().all(|s| s.name.starts_with(&format!("{}.", s.provider))));
    }

    #[test]
    fn configs_are_checked_at_save_against_the_actions_declaration() {
        assert!(check_name("stripe.nope").unwrap_err().contains("stripe.createInvoice"));
        let e = check(&action("stripe.createInvoice", json!({"amount": 5}))).unwrap_err();
        assert!(e.contains("`customerId`"), "{e}");
        let e = check(&action("stripe.createInvoice", json!({"customerId": "cus_1", "amount": 5, "colour": 1})))
            .unwrap_err();
        assert!(e.contains("`colour`"), "{e}");
        let e = check(&action("stripe.createInvoice", json!({"customerId": "cus_1", "amount": "lots"}))).unwrap_err();
        assert!(e.contains("amount"), "{e}");
        let e =
            check(&action("stripe.createInvoice", json!({"customerId": "cus_1", "amount": 5, "currency": "dollars"})))
                .unwrap_err();
        assert!(e.contains("currency"), "{e}");
        assert!(
            check(&action(
                "stripe.createInvoice",
                json!({"customerId": "{{input.c}}", "amount": "{{steps.t.output.total}}"})
            ))
            .is_ok()
        );
        assert!(check(&action("slack.postMessage", json!({"text": "hi"}))).unwrap_err().contains("`channel`"));
        assert!(
            check(&action("github.createIssue", json!({"owner": "a b", "repo": "r", "title": "t"})))
                .unwrap_err()
                .contains("owner")
        );
        assert!(check(&action("http.request", json!({"path": "x"}))).unwrap_err().contains("'/'"));
        assert!(
            check(&action("http.request", json!({"path": "/x", "connection_id": 3})))
                .unwrap_err()
                .contains("connection_id")
        );
    }
}

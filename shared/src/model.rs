//! Workflow definitions: blocks, edges, the linear `steps` form, and validation at save time.

use crate::error::{Detail, Error, Result};
use crate::graph::{default_backoff, default_max_backoff};
use serde::Deserialize;
use serde_json::{Value, json};
use std::collections::{HashMap, HashSet, VecDeque};

pub const MAX_BLOCKS: usize = 500;
pub const MAX_EDGES: usize = 2000;
pub const MAX_DEFINITION_BYTES: usize = 256 * 1024;
pub const MAX_ID_LEN: usize = 64;

/// Canonical block types (DESIGN.md §4).
pub const BLOCK_TYPES: &[&str] = &[
    "starter",
    "agent",
    "code",
    "condition",
    "general_api",
    "platform_api",
    "response",
    "split",
    "webhook",
    "orchestration",
    "transform",
    "human",
    "delay",
    // Seed 003's step types.
    "action",
    "email",
    // A planned run's first step (`POST /runs`), written by Baton.
    "plan",
];

/// Block types accepted in a graph whose execution is not built yet.
pub const NOT_BUILT: &[&str] = &[];

pub fn canonical_type(t: &str) -> Option<&'static str> {
    match t {
        "function" => Some("code"),
        "api_call" => Some("general_api"),
        _ => BLOCK_TYPES.iter().copied().find(|c| *c == t),
    }
}

// The graph's types live in `crate::graph`, which depends on nothing: blocks and webhooks
// use them without depending on the validation here (which calls into both).
pub use crate::graph::{Block, Edge, Graph, RetryPolicy};

/// The body of `POST /workflows` and `PUT /workflows/{id}/graph`: graph form or linear form.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GraphInput {
    #[serde(default)]
    pub blocks: Option<Vec<Value>>,
    #[serde(default)]
    pub edges: Option<Vec<Value>>,
    #[serde(default)]
    pub steps: Option<Vec<Value>>,
}

fn path(parts: &[Value]) -> Vec<Value> {
    parts.to_vec()
}

/// Turns a graph-or-steps body into a validated [`Graph`]. All problems are collected into
/// one `VALIDATION_ERROR` with a detail per problem, except unknown block types, which are
/// reported alone as `Unknown block type: <type>` (the contract's exact message).
pub fn build_graph(blocks: Option<&Value>, edges: Option<&Value>, steps: Option<&Value>) -> Result<Graph> {
    let mut details = Vec::new();
    let (raw_blocks, raw_edges, linear) = match (blocks, steps) {
        (Some(_), Some(_)) => {
            return Err(Error::validation("Give either `blocks` (with `edges`) or `steps`, not both"));
        }
        (Some(b), None) => (b.clone(), edges.cloned().unwrap_or(json!([])), false),
        (None, Some(s)) => {
            if edges.is_some() {
                return Err(Error::validation_at(vec![json!("edges")], "`edges` go with `blocks`, not with `steps`"));
            }
            (s.clone(), json!([]), true)
        }
        (None, None) => return Err(Error::validation("A workflow needs `blocks` (with `edges`) or `steps`")),
    };
    let field = if linear { "steps" } else { "blocks" };
    let Value::Array(raw_blocks) = raw_blocks else {
        return Err(Error::validation_at(vec![json!(field)], format!("`{field}` must be an array")));
    };
    let Value::Array(raw_edges) = raw_edges else {
        return Err(Error::validation_at(vec![json!("edges")], "`edges` must be an array"));
    };
    if raw_blocks.is_empty() {
        return Err(Error::validation_at(vec![json!(field)], format!("`{field}` must not be empty")));
    }
    if raw_blocks.len() > MAX_BLOCKS {
        return Err(Error::validation_at(vec![json!(field)], format!("at most {MAX_BLOCKS} blocks")));
    }
    if raw_edges.len() > MAX_EDGES {
        return Err(Error::validation_at(vec![json!("edges")], format!("at most {MAX_EDGES} edges")));
    }

    let mut out_blocks: Vec<Block> = Vec::with_capacity(raw_blocks.len());
    let mut seen = HashSet::new();
    for (i, raw) in raw_blocks.iter().enumerate() {
        let at = |k: &str| path(&[json!(field), json!(i), json!(k)]);
        let Value::Object(obj) = raw else {
            details.push(Detail::new(path(&[json!(field), json!(i)]), "must be an object"));
            continue;
        };
        let kind = obj.get("type").and_then(Value::as_str);
        let Some(kind) = kind else {
            details.push(Detail::new(at("type"), "is required (a string)"));
            continue;
        };
        let Some(canon) = canonical_type(kind) else {
            return Err(Error::Validation {
                message: format!("Unknown block type: {kind}"),
                details: vec![Detail::new(at("type"), format!("Unknown block type: {kind}"))],
            });
        };
        let mut obj = obj.clone();
        obj.insert("type".into(), json!(canon));
        let mut block: Block = match serde_json::from_value(Value::Object(obj)) {
            Ok(b) => b,
            Err(e) => {
                details.push(Detail::new(path(&[json!(field), json!(i)]), e.to_string()));
                continue;
            }
        };
        if let Err(m) = lift_retry(&mut block) {
            details.push(Detail::new(path(&[json!(field), json!(i), json!("config"), json!("retry")]), m));
        }
        if let Err(m) = check_id(&block.id) {
            details.push(Detail::new(at("id"), m));
        } else if !seen.insert(block.id.clone()) {
            details.push(Detail::new(at("id"), format!("duplicate block id '{}'", block.id)));
        }
        if let Err((field, m)) = check_action(&block) {
            details.push(Detail::new(at(field), m));
        }
        if !block.config.is_object() {
            details.push(Detail::new(at("config"), "must be an object"));
        } else if let Err(e) = crate::template::check(&block.config) {
            details.push(Detail::new(at("config"), e.to_string()));
        } else if let Err(m) = check_config(&block) {
            details.push(Detail::new(at("config"), m));
        }
        if let Some(r) = &block.retry
            && (r.max_attempts == 0 || r.max_attempts > 100)
        {
            details.push(Detail::new(at("retry"), "max_attempts must be 1..=100"));
        }
        if let Some(t) = block.timeout_ms
            && (t == 0 || t > 15 * 60 * 1000)
        {
            details.push(Detail::new(at("timeout_ms"), "must be 1..=900000"));
        }
        out_blocks.push(block);
    }

    let mut out_edges = Vec::with_capacity(raw_edges.len());
    if linear {
        for w in out_blocks.windows(2) {
            out_edges.push(Edge { from: w[0].id.clone(), to: w[1].id.clone(), when: None, on: None });
        }
    } else {
        for (i, raw) in raw_edges.iter().enumerate() {
            let edge: Edge = match serde_json::from_value(raw.clone()) {
                Ok(e) => e,
                Err(e) => {
                    details.push(Detail::new(path(&[json!("edges"), json!(i)]), e.to_string()));
                    continue;
                }
            };
            for (k, id) in [("from", &edge.from), ("to", &edge.to)] {
                if !seen.contains(id) {
                    details.push(Detail::new(
                        path(&[json!("edges"), json!(i), json!(k)]),
                        format!("no block with id '{id}'"),
                    ));
                }
            }
            if let Some(w) = &edge.when
                && let Err(e) = crate::template::check_expr(w)
            {
                details.push(Detail::new(path(&[json!("edges"), json!(i), json!("when")]), e.to_string()));
            }
            if let Some(on) = &edge.on
                && on != "error"
            {
                details.push(Detail::new(path(&[json!("edges"), json!(i), json!("on")]), "only \"error\" is allowed"));
            }
            if edge.from == edge.to {
                details.push(Detail::new(path(&[json!("edges"), json!(i)]), "an edge cannot loop to its own block"));
            }
            if out_edges.iter().any(|e: &Edge| e.from == edge.from && e.to == edge.to && e.on == edge.on) {
                details.push(Detail::new(path(&[json!("edges"), json!(i)]), "duplicate edge"));
            }
            out_edges.push(edge);
        }
    }
    if !details.is_empty() {
        return Err(Error::Validation { message: summarize(&details), details });
    }
    let graph = Graph { blocks: out_blocks, edges: out_edges };
    check_shape(&graph)?;
    Ok(graph)
}

fn summarize(details: &[Detail]) -> String {
    let first = &details[0];
    let p: Vec<String> =
        first.path.iter().map(|v| v.as_str().map(str::to_string).unwrap_or_else(|| v.to_string())).collect();
    let more = if details.len() > 1 { format!(" (and {} more)", details.len() - 1) } else { String::new() };
    format!("Invalid workflow: {}: {}{more}", p.join("."), first.message)
}

fn check_id(id: &str) -> std::result::Result<(), String> {
    if id.is_empty() || id.len() > MAX_ID_LEN {
        return Err(format!("must be 1..={MAX_ID_LEN} characters"));
    }
    if !id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
        return Err("may contain only letters, digits, '-' and '_'".into());
    }
    if id.starts_with('-') || id.chars().next().is_some_and(|c| c.is_ascii_digit()) {
        return Err("must start with a letter or '_'".into());
    }
    Ok(())
}

/// An HTTP block's `config.retry` (`3`, or `{"max_attempts", "backoff_ms", …}`) is its
/// retry policy when the block has none of its own: the engine retries from `block.retry`.
fn lift_retry(b: &mut Block) -> std::result::Result<(), String> {
    if b.kind == "agent" || b.kind == "plan" {
        lift_agent(b);
    }
    if !matches!(b.kind.as_str(), "general_api" | "platform_api" | "action" | "email" | "agent") || b.retry.is_some() {
        return Ok(());
    }
    let policy = match b.config.get("retry") {
        None | Some(Value::Null) => return Ok(()),
        Some(Value::Number(n)) => match n.as_u64() {
            Some(n) => RetryPolicy {
                max_attempts: n as u32,
                backoff_ms: default_backoff(),
                max_backoff_ms: default_max_backoff(),
            },
            None => return Err("must be a whole number of attempts, or a retry policy object".into()),
        },
        Some(v @ Value::Object(_)) => serde_json::from_value(v.clone()).map_err(|e| e.to_string())?,
        Some(_) => {
            return Err("must be a number of attempts or {\"max_attempts\", \"backoff_ms\", \"max_backoff_ms\"}".into());
        }
    };
    b.retry = Some(policy);
    Ok(())
}

/// An `action` step names a catalog entry at its top level; no other block has one.
fn check_action(b: &Block) -> std::result::Result<(), (&'static str, String)> {
    match (b.kind.as_str(), &b.action) {
        ("action", None) => Err(("action", "an action step needs `action` (e.g. \"stripe.createInvoice\")".into())),
        ("action", Some(a)) => crate::blocks::actions::check_name(a).map_err(|m| ("action", m)),
        (_, Some(_)) => Err(("action", format!("only `action` steps have an `action`; this one is a {} step", b.kind))),
        _ => Ok(()),
    }
}

/// An agent block's `config.timeout_ms` is its block timeout (so a long call takes the
/// long-step route), and without a retry policy it gets the agent default: provider rate
/// limits and outages are retried.
fn lift_agent(b: &mut Block) {
    if b.timeout_ms.is_none() {
        let t = b.config.get("timeout_ms").and_then(Value::as_u64);
        let default = if b.kind == "plan" {
            crate::blocks::plan::DEFAULT_TIMEOUT_MS
        } else {
            crate::blocks::agent::DEFAULT_TIMEOUT_MS
        };
        b.timeout_ms = Some(t.unwrap_or(default));
    }
    if b.retry.is_none() && b.config.get("retry").is_none_or(Value::is_null) {
        b.retry = Some(RetryPolicy {
            max_attempts: crate::blocks::agent::DEFAULT_ATTEMPTS,
            backoff_ms: 2000,
            max_backoff_ms: default_max_backoff(),
        });
    }
}

fn check_config(b: &Block) -> std::result::Result<(), String> {
    let c = &b.config;
    match b.kind.as_str() {
        "agent" => crate::blocks::agent::check(c),
        "plan" => crate::blocks::plan::check(c),
        "code" => crate::blocks::code::config(c).map(|_| ()),
        "general_api" => crate::blocks::http_call::check(c),
        "platform_api" => crate::blocks::platform_api::check(c),
        "action" => crate::blocks::actions::check(b),
        "email" => crate::blocks::email::check(c),
        "orchestration" => crate::blocks::orchestration::check(c),
        "transform" => match c.get("mapping") {
            Some(Value::Object(_)) => Ok(()),
            Some(_) => Err("`mapping` must be an object of templates".into()),
            None => Err("transform needs `mapping` (an object of templates)".into()),
        },
        "split" => match c.get("items") {
            Some(_) => Ok(()),
            None => Err("split needs `items` (a template that yields an array)".into()),
        },
        "human" => {
            match c.get("kind").and_then(Value::as_str).unwrap_or("question") {
                "question" | "approval" => {}
                k => return Err(format!("human `kind` must be \"question\" or \"approval\", not \"{k}\"")),
            }
            match c.get("on_reject").and_then(Value::as_str) {
                None | Some("fail") | Some("continue") => {}
                Some(o) => return Err(format!("`on_reject` must be \"fail\" or \"continue\", not \"{o}\"")),
            }
            if let Some(t) = c.get("timeout") {
                crate::duration::parse_duration(t).map_err(|e| format!("`timeout`: {e}"))?;
            }
            Ok(())
        }
        "webhook" => crate::webhooks::check_block_config(c),
        "delay" => {
            let d = c.get("duration").or_else(|| c.get("duration_ms")).or_else(|| c.get("seconds"));
            match d {
                Some(Value::String(s)) if s.contains("{{") => Ok(()),
                Some(_) => crate::duration::delay_of(c).map(|_| ()),
                None => {
                    Err("delay needs `duration` (\"30s\", \"5m\", \"2h\", \"1d\"), `duration_ms` or `seconds`".into())
                }
            }
        }
        _ => Ok(()),
    }
}

/// Graph-level rules: at least one entry, acyclic, split bodies well formed.
fn check_shape(g: &Graph) -> Result<()> {
    if g.entries().is_empty() {
        return Err(Error::validation_at(
            vec![json!("edges")],
            "the graph has no entry block (every block has an incoming edge)",
        ));
    }
    // Kahn's algorithm: anything left over sits on a cycle.
    let mut indeg: HashMap<&str, usize> = g.blocks.iter().map(|b| (b.id.as_str(), 0)).collect();
    for e in &g.edges {
        *indeg.entry(e.to.as_str()).or_default() += 1;
    }
    let mut q: VecDeque<&str> = indeg.iter().filter(|(_, d)| **d == 0).map(|(k, _)| *k).collect();
    let mut visited = 0;
    while let Some(n) = q.pop_front() {
        visited += 1;
        for e in g.outgoing(n) {
            let d = indeg.get_mut(e.to.as_str()).expect("edge targets are checked");
            *d -= 1;
            if *d == 0 {
                q.push_back(e.to.as_str());
            }
        }
    }
    if visited != g.blocks.len() {
        let on_cycle: Vec<&str> = indeg.iter().filter(|(_, d)| **d > 0).map(|(k, _)| *k).collect();
        return Err(Error::validation_at(
            vec![json!("edges")],
            format!("the graph has a cycle through {}", on_cycle.join(", ")),
        ));
    }
    for b in g.blocks.iter().filter(|b| b.kind == "split") {
        let body: Vec<&Edge> = g.outgoing(&b.id).filter(|e| !e.is_error()).collect();
        if body.len() != 1 || body[0].when.is_some() {
            return Err(Error::validation_at(
                vec![json!("blocks"), json!(b.id)],
                "a split block needs exactly one outgoing edge (to the block that runs per item)",
            ));
        }
        let item_block = &body[0].to;
        if g.incoming(item_block).count() != 1 {
            return Err(Error::validation_at(
                vec![json!("blocks"), json!(item_block)],
                "the block after a split runs per item and cannot have other incoming edges",
            ));
        }
        if g.block(item_block).is_some_and(|x| matches!(x.kind.as_str(), "split" | "human" | "delay")) {
            return Err(Error::validation_at(
                vec![json!("blocks"), json!(item_block)],
                "the block after a split cannot be a split, human or delay block",
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn graph(v: Value) -> Result<Graph> {
        build_graph(v.get("blocks"), v.get("edges"), v.get("steps"))
    }

    #[test]
    fn linear_steps_become_a_chain() {
        let g = graph(json!({"steps": [
            {"id": "a", "type": "starter"},
            {"id": "b", "type": "transform", "config": {"mapping": {"x": "{{input.x}}"}}},
            {"id": "c", "type": "response"}]}))
        .unwrap();
        assert_eq!(g.edges.len(), 2);
        assert_eq!((g.edges[1].from.as_str(), g.edges[1].to.as_str()), ("b", "c"));
    }

    #[test]
    fn unknown_type_is_rejected_with_its_name() {
        let e = graph(json!({"blocks": [{"id": "a", "type": "teleport"}]})).unwrap_err();
        assert_eq!(e.to_string(), "Unknown block type: teleport");
    }

    #[test]
    fn aliases_are_canonicalized() {
        let g = graph(json!({"blocks": [{"id": "a", "type": "function", "config": {"code": "return 1"}}, {"id": "b", "type": "api_call", "config": {"url": "https://example.com/"}}],
                             "edges": [{"from": "a", "to": "b"}]}))
        .unwrap();
        assert_eq!(g.blocks[0].kind, "code");
        assert_eq!(g.blocks[1].kind, "general_api");
    }

    #[test]
    fn cycles_and_dangling_edges_are_rejected_with_paths() {
        let e = graph(json!({"blocks": [{"id": "a", "type": "starter"}, {"id": "b", "type": "transform", "config": {"mapping": {}}}],
                             "edges": [{"from": "a", "to": "b"}, {"from": "b", "to": "zz"}]}))
        .unwrap_err();
        let Error::Validation { details, .. } = e else { panic!() };
        assert_eq!(details[0].path, vec![json!("edges"), json!(1), json!("to")]);
        let e = graph(json!({"blocks": [{"id": "s", "type": "starter"}, {"id": "a", "type": "starter"}, {"id": "b", "type": "starter"}],
                             "edges": [{"from": "s", "to": "a"}, {"from": "a", "to": "b"}, {"from": "b", "to": "a"}]}))
        .unwrap_err();
        assert!(e.to_string().contains("cycle"), "{e}");
    }

    #[test]
    fn duplicate_ids_and_bad_templates_are_reported() {
        let e = graph(json!({"steps": [{"id": "a", "type": "starter"}, {"id": "a", "type": "transform", "config": {"mapping": {"x": "{{input.x"}}}]}))
            .unwrap_err();
        let Error::Validation { details, .. } = e else { panic!() };
        assert!(details.len() >= 2, "{details:?}");
    }

    #[test]
    fn code_and_http_blocks_are_checked_at_save_with_the_path() {
        let e = graph(json!({"steps": [{"id": "a", "type": "starter"}, {"id": "b", "type": "api_call", "config": {"method": "GET"}}]}))
            .unwrap_err();
        let Error::Validation { details, message } = e else { panic!() };
        assert_eq!(details[0].path, vec![json!("steps"), json!(1), json!("config")]);
        assert!(message.contains("needs `url`"), "{message}");
        let e = graph(
            json!({"steps": [{"id": "a", "type": "function", "config": {"code": "return 1", "timeout_ms": -1}}]}),
        )
        .unwrap_err();
        assert!(e.to_string().contains("timeout_ms"), "{e}");
        let e = graph(json!({"steps": [{"id": "a", "type": "code"}]})).unwrap_err();
        assert!(e.to_string().contains("needs `code`"), "{e}");
    }

    #[test]
    fn an_http_blocks_config_retry_becomes_its_retry_policy() {
        let g = graph(
            json!({"steps": [{"id": "a", "type": "general_api", "config": {"url": "https://x.test/", "retry": 4}}]}),
        )
        .unwrap();
        assert_eq!(g.blocks[0].retry.as_ref().map(|r| r.max_attempts), Some(4));
        let e = graph(json!({"steps": [{"id": "a", "type": "general_api", "config": {"url": "https://x.test/", "retry": "often"}}]}))
            .unwrap_err();
        let Error::Validation { details, .. } = e else { panic!() };
        assert_eq!(details[0].path, vec![json!("steps"), json!(0), json!("config"), json!("retry")]);
    }

    #[test]
    fn seed_003s_action_and_email_steps_are_kept_with_their_action_and_checked() {
        let g = graph(json!({"steps": [
            {"id": "a", "type": "action", "action": "stripe.createInvoice", "config": {"customerId": "{{input.c}}", "amount": 5}},
            {"id": "b", "type": "email", "config": {"to": "a@b.test", "subject": "s", "body": {"text": "t"}}}]}))
        .unwrap();
        assert_eq!(g.blocks[0].action.as_deref(), Some("stripe.createInvoice"));
        assert_eq!(serde_json::to_value(&g.blocks[0]).unwrap()["action"], "stripe.createInvoice");
        let e =
            graph(json!({"steps": [{"id": "a", "type": "action", "action": "stripe.refundEverything"}]})).unwrap_err();
        let Error::Validation { details, .. } = e else { panic!() };
        assert_eq!(details[0].path, vec![json!("steps"), json!(0), json!("action")]);
        assert!(details[0].message.contains("stripe.createInvoice"), "{}", details[0].message);
        let e = graph(json!({"steps": [{"id": "a", "type": "transform", "action": "x", "config": {"mapping": {}}}]}))
            .unwrap_err();
        let Error::Validation { details, .. } = e else { panic!() };
        assert_eq!(details[0].path, vec![json!("steps"), json!(0), json!("action")]);
    }
}

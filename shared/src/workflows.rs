//! Workflows: a mutable head plus immutable, numbered versions (DESIGN.md §3, §5).
//!
//! Items (layout in [`crate::keys`]; the engine reads these attribute names):
//! - head at `keys::workflow(acct, wf)`: `{id, name, description, status ("draft" |
//!   "active"), deploy_state ("internal" | "deployed"), armed_until, version (latest),
//!   input_schema, variables, callback_url, webhook_ids, created_at, updated_at}`
//! - version at `keys::version(acct, wf, v)`: `{version, graph: {blocks, edges},
//!   input_schema, variables, created_at}`
//!
//! Every change to the graph, input schema or variables writes version `latest + 1`
//! together with the head, conditional on the head still naming `latest`, and with the
//! index items of its webhook blocks ([`crate::webhooks`]). Deleting a workflow removes its
//! head, webhook index items and triggers: runs pin their version, so versions stay readable.

use crate::error::{Detail, Error, Result};
use crate::model::{self, Graph};
use crate::net_guard::{self, Targets};
use crate::store::{Cond, Item, Query, Store, Update, Write};
use crate::{ids, keys, triggers, webhooks};
use serde_json::{Map, Value, json};

pub const DEFAULT_LIST_LIMIT: usize = 20;
pub const MAX_LIST_LIMIT: usize = 100;
pub const MAX_ID_LEN: usize = 64;
pub const MAX_NAME_LEN: usize = 200;
pub const MAX_DESCRIPTION_LEN: usize = 4000;
pub const MAX_URL_LEN: usize = net_guard::MAX_URL_LEN;
pub const STATUSES: &[&str] = &["draft", "active"];
const WRITE_RETRIES: usize = 5;

/// One immutable version, as the engine runs it.
#[derive(Clone, Debug, PartialEq)]
pub struct Version {
    pub version: u64,
    pub graph: Graph,
    pub input_schema: Option<Value>,
    pub variables: Value,
}

/// Which fields a body may carry, by operation.
const CREATE_FIELDS: &[&str] = &[
    "id",
    "name",
    "description",
    "status",
    "inputSchema",
    "input_schema",
    "variables",
    "vars",
    "callback_url",
    "callbackUrl",
    "trigger",
    "blocks",
    "edges",
    "steps",
];
const READ_ONLY_FIELDS: &[&str] = &["version", "deploy_state", "armed_until", "created_at", "updated_at"];
const GRAPH_FIELDS: &[&str] = &["blocks", "edges", "steps"];

/// `[a-z0-9_-]{1,64}`: the shape of every workflow id, caller-chosen or generated.
pub fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_ID_LEN
        && id.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

fn not_found(wf: &str) -> Error {
    Error::NotFound(format!("Workflow '{wf}' not found"))
}

fn at(field: &str, message: impl Into<String>) -> Error {
    Error::validation_at(vec![json!(field)], message)
}

/// The body as an object whose fields are all in `allowed` (read-only fields are named as such).
fn body_object<'a>(body: &'a Value, allowed: &[&str]) -> Result<&'a Map<String, Value>> {
    let Value::Object(obj) = body else {
        return Err(Error::validation("The request body must be a JSON object"));
    };
    let mut details = Vec::new();
    for k in obj.keys() {
        if allowed.contains(&k.as_str()) {
            continue;
        }
        let m = if READ_ONLY_FIELDS.contains(&k.as_str()) || k == "id" {
            format!("`{k}` is read-only")
        } else {
            format!("unknown field `{k}`; expected one of: {}", allowed.join(", "))
        };
        details.push(Detail::new(vec![json!(k)], m));
    }
    if details.is_empty() {
        Ok(obj)
    } else {
        Err(Error::Validation { message: format!("Invalid request body: {}", details[0].message), details })
    }
}

/// A field that may be spelled two ways (`inputSchema` / `input_schema`).
fn either<'a>(obj: &'a Map<String, Value>, a: &str, b: &str) -> Result<Option<(&'a str, &'a Value)>> {
    match (obj.get_key_value(a), obj.get_key_value(b)) {
        (Some(_), Some(_)) => Err(at(b, format!("give `{a}` or `{b}`, not both"))),
        (Some((k, v)), None) | (None, Some((k, v))) => Ok(Some((k.as_str(), v))),
        (None, None) => Ok(None),
    }
}

pub(crate) fn text(
    obj: &Map<String, Value>,
    field: &str,
    max: usize,
    required: bool,
) -> Result<Option<Option<String>>> {
    match obj.get(field) {
        None if required => Err(at(field, format!("`{field}` is required"))),
        None => Ok(None),
        Some(Value::Null) if !required => Ok(Some(None)),
        Some(Value::String(s)) => {
            let s = s.trim();
            if (required && s.is_empty()) || s.chars().count() > max {
                let min = if required { 1 } else { 0 };
                return Err(at(field, format!("`{field}` must be {min}..={max} characters")));
            }
            Ok(Some(Some(s.to_string())))
        }
        Some(_) => Err(at(field, format!("`{field}` must be a string"))),
    }
}

fn check_status(v: &Value) -> Result<String> {
    match v.as_str() {
        Some(s) if STATUSES.contains(&s) => Ok(s.to_string()),
        _ => Err(at("status", format!("`status` must be \"draft\" or \"active\", not {v}"))),
    }
}

/// `null`, or an object / boolean that compiles as a JSON Schema.
fn check_schema(field: &str, v: &Value) -> Result<Value> {
    match v {
        Value::Null => Ok(Value::Null),
        Value::Object(_) | Value::Bool(_) => match jsonschema::validator_for(v) {
            Ok(_) => Ok(v.clone()),
            Err(e) => Err(at(field, format!("`{field}` is not a valid JSON Schema: {e}"))),
        },
        _ => Err(at(field, format!("`{field}` must be a JSON Schema (an object) or null"))),
    }
}

fn check_variables(field: &str, v: &Value) -> Result<Value> {
    match v {
        Value::Object(_) => Ok(v.clone()),
        Value::Null => Ok(json!({})),
        _ => Err(at(field, format!("`{field}` must be an object"))),
    }
}

/// `null`, or a callback target [`net_guard::check_url`] accepts (stored normalized).
pub(crate) async fn check_callback_url(field: &str, v: &Value, targets: Targets) -> Result<Value> {
    match v {
        Value::Null => Ok(Value::Null),
        Value::String(s) => Ok(json!(net_guard::check_url(field, s, targets).await?.as_str())),
        _ => Err(at(field, format!("`{field}` must be an http(s) URL or null"))),
    }
}

/// Seed 003's `"trigger": {"type": "api"}`: how runs of the workflow start (`api`: by API
/// key; `webhook`: by a trigger URL, an app or a webhook block). Stored and shown as given.
fn check_trigger(v: &Value) -> Result<Value> {
    const TYPES: &[&str] = &["api", "webhook"];
    match v {
        Value::Null => Ok(Value::Null),
        Value::Object(o) => {
            if let Some(k) = o.keys().find(|k| *k != "type") {
                return Err(Error::validation_at(
                    vec![json!("trigger"), json!(k)],
                    format!("unknown field `{k}`; a trigger has `type`"),
                ));
            }
            match o.get("type") {
                Some(Value::String(t)) if TYPES.contains(&t.as_str()) => Ok(v.clone()),
                other => Err(Error::validation_at(
                    vec![json!("trigger"), json!("type")],
                    format!(
                        "`trigger.type` must be one of {} (got {})",
                        TYPES.join(", "),
                        other.map_or_else(|| "nothing".to_string(), |t| t.to_string())
                    ),
                )),
            }
        }
        _ => Err(at("trigger", "`trigger` must be an object: {\"type\": \"api\"}")),
    }
}

fn has_graph(obj: &Map<String, Value>) -> bool {
    GRAPH_FIELDS.iter().any(|f| obj.contains_key(*f))
}

fn graph_of(obj: &Map<String, Value>) -> Result<Graph> {
    let mut graph = model::build_graph(obj.get("blocks"), obj.get("edges"), obj.get("steps"))?;
    webhooks::hash_secrets(&mut graph);
    webhooks::claims(&graph)?;
    Ok(graph)
}

/// [`graph_of`] plus the checks that read the store: the connections blocks name exist.
async fn checked_graph(store: &dyn Store, acct: &str, obj: &Map<String, Value>) -> Result<Graph> {
    let graph = graph_of(obj)?;
    let field = if obj.contains_key("steps") { "steps" } else { "blocks" };
    crate::connections::check_graph(store, acct, &graph, field).await?;
    crate::engine::check_child_workflows(store, acct, &graph, field).await?;
    Ok(graph)
}

fn into_map(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

/// The version item's attributes, size-checked.
fn version_attrs(v: u64, graph: &Graph, input_schema: &Value, variables: &Value) -> Result<Map<String, Value>> {
    let attrs = json!({
        "version": v,
        "graph": graph,
        "input_schema": input_schema,
        "variables": variables,
        "created_at": ids::now_rfc3339(),
    });
    let size = serde_json::to_vec(&attrs)?.len();
    if size > model::MAX_DEFINITION_BYTES {
        return Err(Error::PayloadTooLarge(format!(
            "The workflow definition is {size} bytes; the limit is {} bytes",
            model::MAX_DEFINITION_BYTES
        )));
    }
    Ok(into_map(attrs))
}

/// The workflow as callers see it: head fields, then the latest version's `blocks`, `edges`.
fn view(head: &Map<String, Value>, graph: Option<&Value>) -> Value {
    let mut out = Map::new();
    for f in ["id", "name", "description", "status", "deploy_state", "armed_until", "version"] {
        out.insert(f.into(), head.get(f).cloned().unwrap_or(Value::Null));
    }
    // An arm that has run out is no arm.
    if out.get("armed_until").and_then(Value::as_str).is_some_and(|u| u <= ids::now_rfc3339().as_str()) {
        out.insert("armed_until".into(), Value::Null);
    }
    for f in ["input_schema", "variables", "callback_url", "trigger"] {
        out.insert(f.into(), head.get(f).cloned().unwrap_or(Value::Null));
    }
    if let Some(g) = graph {
        out.insert("blocks".into(), g.get("blocks").cloned().unwrap_or_else(|| json!([])));
        out.insert("edges".into(), g.get("edges").cloned().unwrap_or_else(|| json!([])));
    }
    for f in ["created_at", "updated_at"] {
        out.insert(f.into(), head.get(f).cloned().unwrap_or(Value::Null));
    }
    Value::Object(out)
}

fn head_version(head: &Map<String, Value>) -> Result<u64> {
    head.get("version").and_then(Value::as_u64).ok_or_else(|| Error::internal("workflow head without a version"))
}

/// The highest version number ever written for `wf` (0 if none): a workflow created again
/// after a delete continues its numbering, so old versions that runs pin are never replaced.
async fn highest_version(store: &dyn Store, acct: &str, wf: &str) -> Result<u64> {
    let mut q = Query::partition(keys::versions_pk(acct, wf));
    q.limit = 1;
    q.descending = true;
    let page = store.query(q).await?;
    Ok(page.items.first().and_then(|i| i.get("version")).and_then(Value::as_u64).unwrap_or(0))
}

/// [`create_with`] refusing private callback targets.
pub async fn create(store: &dyn Store, acct: &str, body: Value) -> Result<Value> {
    create_with(store, acct, body, Targets::PublicOnly).await
}

/// `POST /workflows`: validates the body, then writes the head and its first version in one
/// transaction. An existing id is `Conflict`. `targets` says which `callback_url`s pass.
pub async fn create_with(store: &dyn Store, acct: &str, body: Value, targets: Targets) -> Result<Value> {
    let obj = body_object(&body, CREATE_FIELDS)?;
    let id = match obj.get("id") {
        None | Some(Value::Null) => ids::new_id("wf"),
        Some(Value::String(s)) if valid_id(s) => s.clone(),
        Some(_) => {
            return Err(at("id", format!("`id` must be 1..={MAX_ID_LEN} characters of a-z, 0-9, '_' and '-'")));
        }
    };
    let name = text(obj, "name", MAX_NAME_LEN, true)?.flatten().unwrap_or_default();
    let description = text(obj, "description", MAX_DESCRIPTION_LEN, false)?.flatten();
    let status = obj.get("status").map(check_status).transpose()?.unwrap_or_else(|| "draft".into());
    let input_schema = match either(obj, "inputSchema", "input_schema")? {
        Some((k, v)) => check_schema(k, v)?,
        None => Value::Null,
    };
    let variables = match either(obj, "variables", "vars")? {
        Some((k, v)) => check_variables(k, v)?,
        None => json!({}),
    };
    let callback_url = match either(obj, "callback_url", "callbackUrl")? {
        Some((k, v)) => check_callback_url(k, v, targets).await?,
        None => Value::Null,
    };
    let trigger = obj.get("trigger").map(check_trigger).transpose()?.unwrap_or(Value::Null);
    let graph = checked_graph(store, acct, obj).await?;
    let claims = webhooks::claims(&graph)?;
    let webhook_ids: Vec<&str> = claims.iter().map(|c| c.webhook_id.as_str()).collect();

    if store.get(&keys::workflow(acct, &id)).await?.is_some() {
        return Err(Error::Conflict(format!("A workflow with id '{id}' already exists")));
    }
    let v = highest_version(store, acct, &id).await? + 1;
    let now = ids::now_rfc3339();
    let head = json!({
        "id": id, "name": name, "description": description, "status": status,
        "deploy_state": "internal", "armed_until": null, "version": v,
        "input_schema": input_schema, "variables": variables, "callback_url": callback_url,
        "trigger": trigger, "webhook_ids": webhook_ids, "created_at": now, "updated_at": now,
    });
    let version = version_attrs(v, &graph, &input_schema, &variables)?;
    let graph_json = version.get("graph").cloned();
    let head = into_map(head);
    let mut writes = vec![
        Write::Put { item: Item::new(keys::workflow(acct, &id), head.clone()), cond: Some(Cond::NotExists) },
        Write::Put { item: Item::new(keys::version(acct, &id, v), version), cond: Some(Cond::NotExists) },
    ];
    writes.extend(webhooks::index_writes(acct, &id, &[], &claims));
    match store.transact(writes).await {
        Ok(()) => Ok(view(&head, graph_json.as_ref())),
        Err(e) if e.is_conflict() => {
            if store.get(&keys::workflow(acct, &id)).await?.is_none()
                && let Some(taken) = webhooks::taken_conflict(store, acct, &id, &claims).await?
            {
                return Err(taken);
            }
            Err(Error::Conflict(format!("A workflow with id '{id}' already exists")))
        }
        Err(e) => Err(e),
    }
}

/// The head item's attributes; `NotFound` when absent (or another account's).
pub async fn load_head(store: &dyn Store, acct: &str, wf: &str) -> Result<Value> {
    Ok(Value::Object(load_head_attrs(store, acct, wf).await?))
}

async fn load_head_attrs(store: &dyn Store, acct: &str, wf: &str) -> Result<Map<String, Value>> {
    if !valid_id(wf) {
        return Err(not_found(wf));
    }
    let item = store.get(&keys::workflow(acct, wf)).await?.ok_or_else(|| not_found(wf))?;
    Ok(item.attrs)
}

async fn load_version_attrs(store: &dyn Store, acct: &str, wf: &str, v: u64) -> Result<Map<String, Value>> {
    let item = store
        .get(&keys::version(acct, wf, v))
        .await?
        .ok_or_else(|| Error::NotFound(format!("Version {v} of workflow '{wf}' not found")))?;
    Ok(item.attrs)
}

/// One immutable version, parsed for the engine.
pub async fn load_version(store: &dyn Store, acct: &str, wf: &str, v: u64) -> Result<Version> {
    if !valid_id(wf) {
        return Err(not_found(wf));
    }
    let attrs = load_version_attrs(store, acct, wf, v).await?;
    let graph: Graph = serde_json::from_value(attrs.get("graph").cloned().unwrap_or(Value::Null))
        .map_err(|e| Error::internal(format!("workflow {wf} version {v}: bad graph: {e}")))?;
    let input_schema = attrs.get("input_schema").filter(|s| !s.is_null()).cloned();
    let variables = attrs.get("variables").filter(|s| !s.is_null()).cloned().unwrap_or_else(|| json!({}));
    Ok(Version { version: v, graph, input_schema, variables })
}

/// `GET /workflows/{id}`: head plus the latest version's graph.
pub async fn get(store: &dyn Store, acct: &str, wf: &str) -> Result<Value> {
    let head = load_head_attrs(store, acct, wf).await?;
    let version = load_version_attrs(store, acct, wf, head_version(&head)?).await?;
    Ok(view(&head, version.get("graph")))
}

/// `GET /workflows`: heads only (no graphs), by id: `{"data": [...], "next_cursor"}`.
pub async fn list(store: &dyn Store, acct: &str, limit: usize, cursor: Option<String>) -> Result<Value> {
    let mut q = Query::partition(keys::workflows_pk(acct));
    q.limit = limit.clamp(1, MAX_LIST_LIMIT);
    q.cursor = cursor;
    let page = store.query(q).await?;
    let data: Vec<Value> = page.items.iter().map(|i| view(&i.attrs, None)).collect();
    Ok(json!({"data": data, "next_cursor": page.next_cursor}))
}

/// `GET /workflows/{id}/versions`: newest first, `{"data": [{version, created_at}], "next_cursor"}`.
pub async fn versions(store: &dyn Store, acct: &str, wf: &str, limit: usize, cursor: Option<String>) -> Result<Value> {
    load_head_attrs(store, acct, wf).await?;
    let mut q = Query::partition(keys::versions_pk(acct, wf));
    q.limit = limit.clamp(1, MAX_LIST_LIMIT);
    q.cursor = cursor;
    q.descending = true;
    let page = store.query(q).await?;
    let data: Vec<Value> =
        page.items.iter().map(|i| json!({"version": i.get("version"), "created_at": i.get("created_at")})).collect();
    Ok(json!({"data": data, "next_cursor": page.next_cursor}))
}

/// A change to the head; a given graph, schema or variables go into a new version.
struct Change {
    set: Map<String, Value>,
    graph: Option<Graph>,
    input_schema: Option<Value>,
    variables: Option<Value>,
}

/// Applies `change` to the head, writing a new version when the graph, schema or variables
/// differ from the latest. Retries when another writer moved the head in between.
async fn apply(store: &dyn Store, acct: &str, wf: &str, change: Change, force_version: bool) -> Result<Value> {
    for _ in 0..WRITE_RETRIES {
        let head = load_head_attrs(store, acct, wf).await?;
        let v = head_version(&head)?;
        let mut update = Update::default();
        for (k, val) in &change.set {
            update = update.set(k, val.clone());
        }
        update = update.set("updated_at", ids::now_rfc3339());
        let cur_schema = head.get("input_schema").cloned().unwrap_or(Value::Null);
        let cur_vars = head.get("variables").cloned().unwrap_or_else(|| json!({}));
        let schema = change.input_schema.clone().unwrap_or_else(|| cur_schema.clone());
        let vars = change.variables.clone().unwrap_or_else(|| cur_vars.clone());
        let needs_version = force_version || change.graph.is_some() || schema != cur_schema || vars != cur_vars;
        if !needs_version {
            let cond = Cond::eq("version", v);
            match store.update(&keys::workflow(acct, wf), update, Some(cond)).await {
                Ok(_) => return get(store, acct, wf).await,
                Err(e) if e.is_conflict() => continue,
                Err(e) => return Err(e),
            }
        }
        let graph = match &change.graph {
            Some(g) => g.clone(),
            None => load_version(store, acct, wf, v).await?.graph,
        };
        let next = v + 1;
        let version = version_attrs(next, &graph, &schema, &vars)?;
        update = update.set("version", next).set("input_schema", schema).set("variables", vars);
        let claims = match &change.graph {
            Some(g) => Some(webhooks::claims(g)?),
            None => None,
        };
        if let Some(c) = &claims {
            let ids: Vec<&str> = c.iter().map(|c| c.webhook_id.as_str()).collect();
            update = update.set("webhook_ids", json!(ids));
        }
        let mut writes = vec![
            Write::Put { item: Item::new(keys::version(acct, wf, next), version), cond: Some(Cond::NotExists) },
            Write::Update { key: keys::workflow(acct, wf), update, cond: Some(Cond::eq("version", v)) },
        ];
        if let Some(c) = &claims {
            writes.extend(webhooks::index_writes(acct, wf, &webhooks::claimed_ids(&head), c));
        }
        match store.transact(writes).await {
            Ok(()) => return get(store, acct, wf).await,
            Err(e) if e.is_conflict() => {
                if let Some(c) = &claims
                    && let Some(taken) = webhooks::taken_conflict(store, acct, wf, c).await?
                {
                    return Err(taken);
                }
                continue;
            }
            Err(e) => return Err(e),
        }
    }
    Err(Error::Conflict(format!("Workflow '{wf}' is being changed concurrently; try again")))
}

/// `PATCH /workflows/{id}`: name, description, status, inputSchema, variables, callback_url
/// (and optionally blocks+edges or steps). A change to the graph, schema or variables
/// makes a new version.
pub async fn patch(store: &dyn Store, acct: &str, wf: &str, body: Value) -> Result<Value> {
    patch_with(store, acct, wf, body, Targets::PublicOnly).await
}

/// [`patch`], with `targets` saying which `callback_url`s pass.
pub async fn patch_with(store: &dyn Store, acct: &str, wf: &str, body: Value, targets: Targets) -> Result<Value> {
    let mut allowed: Vec<&str> = CREATE_FIELDS.to_vec();
    allowed.retain(|f| *f != "id");
    let Value::Object(raw) = &body else {
        return Err(Error::validation("The request body must be a JSON object"));
    };
    // Echoing the id back unchanged is allowed (GET, edit, PATCH).
    let mut body_obj = raw.clone();
    if body_obj.get("id").and_then(Value::as_str) == Some(wf) {
        body_obj.remove("id");
    }
    let body = Value::Object(body_obj);
    let obj = body_object(&body, &allowed)?;
    let mut set = Map::new();
    if obj.contains_key("name") {
        set.insert("name".into(), json!(text(obj, "name", MAX_NAME_LEN, true)?.flatten()));
    }
    if let Some(d) = text(obj, "description", MAX_DESCRIPTION_LEN, false)? {
        set.insert("description".into(), json!(d));
    }
    if let Some(s) = obj.get("status") {
        set.insert("status".into(), json!(check_status(s)?));
    }
    if let Some((k, v)) = either(obj, "callback_url", "callbackUrl")? {
        set.insert("callback_url".into(), check_callback_url(k, v, targets).await?);
    }
    if let Some(t) = obj.get("trigger") {
        set.insert("trigger".into(), check_trigger(t)?);
    }
    let input_schema = either(obj, "inputSchema", "input_schema")?.map(|(k, v)| check_schema(k, v)).transpose()?;
    let variables = either(obj, "variables", "vars")?.map(|(k, v)| check_variables(k, v)).transpose()?;
    let graph = if has_graph(obj) { Some(checked_graph(store, acct, obj).await?) } else { None };
    apply(store, acct, wf, Change { set, graph, input_schema, variables }, false).await
}

/// `PUT /workflows/{id}/graph`: creates or replaces. A workflow that does not exist is
/// created (a draft named after its id unless the body names it); an existing one gets a new
/// version. The workflow's own fields (`name`, `description`, `variables`, `inputSchema`,
/// `trigger`, …) may come beside the graph, as seed 004 sends them. Returns the workflow and
/// whether it was created.
pub async fn put_graph(store: &dyn Store, acct: &str, wf: &str, body: Value) -> Result<(Value, bool)> {
    let mut allowed: Vec<&str> = CREATE_FIELDS.to_vec();
    allowed.retain(|f| *f != "id");
    let Value::Object(raw) = &body else {
        return Err(Error::validation("The request body must be a JSON object"));
    };
    let mut fields = raw.clone();
    if fields.get("id").and_then(Value::as_str) == Some(wf) {
        fields.remove("id");
    }
    let body = Value::Object(fields);
    let obj = body_object(&body, &allowed)?;
    if !has_graph(obj) {
        return Err(Error::validation("The body needs the graph: `blocks` (and `edges`), or `steps`"));
    }
    if !valid_id(wf) {
        return Err(at("id", format!("`id` must be 1..={MAX_ID_LEN} characters of a-z, 0-9, '_' and '-'")));
    }
    if store.get(&keys::workflow(acct, wf)).await?.is_none() {
        let mut create = obj.clone();
        create.insert("id".into(), json!(wf));
        create.entry("name").or_insert_with(|| json!(wf));
        match create_with(store, acct, Value::Object(create), Targets::PublicOnly).await {
            Ok(v) => return Ok((v, true)),
            // Created meanwhile by another request: this one replaces it.
            Err(Error::Conflict(m)) if store.get(&keys::workflow(acct, wf)).await?.is_none() => {
                return Err(Error::Conflict(m));
            }
            Err(Error::Conflict(_)) => {}
            Err(e) => return Err(e),
        }
    }
    Ok((patch_with(store, acct, wf, body, Targets::PublicOnly).await?, false))
}

async fn set_status(store: &dyn Store, acct: &str, wf: &str, status: &str) -> Result<Value> {
    if !valid_id(wf) {
        return Err(not_found(wf));
    }
    let update = Update::default().set("status", status).set("updated_at", ids::now_rfc3339());
    match store.update(&keys::workflow(acct, wf), update, Some(Cond::Exists)).await {
        Ok(_) => get(store, acct, wf).await,
        Err(e) if e.is_conflict() => Err(not_found(wf)),
        Err(e) => Err(e),
    }
}

/// `POST /workflows/{id}/activate`.
pub async fn activate(store: &dyn Store, acct: &str, wf: &str) -> Result<Value> {
    set_status(store, acct, wf, "active").await
}

/// `POST /workflows/{id}/deactivate`: back to `draft`.
pub async fn deactivate(store: &dyn Store, acct: &str, wf: &str) -> Result<Value> {
    set_status(store, acct, wf, "draft").await
}

/// `DELETE /workflows/{id}`: removes the head, its webhook index items and its triggers;
/// versions stay for the runs that pin them.
pub async fn delete(store: &dyn Store, acct: &str, wf: &str) -> Result<()> {
    for _ in 0..WRITE_RETRIES {
        let head = load_head_attrs(store, acct, wf).await?;
        let v = head_version(&head)?;
        let mut writes = vec![Write::Delete { key: keys::workflow(acct, wf), cond: Some(Cond::eq("version", v)) }];
        writes.extend(webhooks::index_writes(acct, wf, &webhooks::claimed_ids(&head), &[]));
        let mut trigger_writes = triggers::delete_writes(store, acct, wf).await?;
        // Triggers created in a race can exceed the transaction limit: those go first, in
        // batches (a trigger of a deleted workflow only ever answers 422 meanwhile).
        while writes.len() + trigger_writes.len() > crate::store::MAX_TRANSACT_ITEMS {
            let n = trigger_writes.len().min(crate::store::MAX_TRANSACT_ITEMS) & !1;
            store.transact(trigger_writes.drain(..n).collect()).await?;
        }
        writes.extend(trigger_writes);
        match store.transact(writes).await {
            Ok(()) => return Ok(()),
            Err(e) if e.is_conflict() => continue,
            Err(e) => return Err(e),
        }
    }
    Err(Error::Conflict(format!("Workflow '{wf}' is being changed concurrently; try again")))
}

async fn set_deploy(store: &dyn Store, acct: &str, wf: &str, update: Update) -> Result<Value> {
    if !valid_id(wf) {
        return Err(not_found(wf));
    }
    match store
        .update(&keys::workflow(acct, wf), update.set("updated_at", ids::now_rfc3339()), Some(Cond::Exists))
        .await
    {
        Ok(_) => {
            // Seed 004's answer (`{"ok": true, "state": …}`, `armed_until`) beside the workflow.
            let mut wf = get(store, acct, wf).await?;
            if let Value::Object(o) = &mut wf {
                o.insert("ok".into(), json!(true));
                let state = o.get("deploy_state").cloned().unwrap_or(Value::Null);
                o.insert("state".into(), state);
            }
            Ok(wf)
        }
        Err(e) if e.is_conflict() => Err(not_found(wf)),
        Err(e) => Err(e),
    }
}

/// `POST /workflows/{id}/deploy`: its webhook blocks take every call until undeploy.
pub async fn deploy(store: &dyn Store, acct: &str, wf: &str) -> Result<Value> {
    set_deploy(store, acct, wf, Update::default().set("deploy_state", "deployed").remove("armed_until")).await
}

/// `POST /workflows/{id}/undeploy`: back to `internal`; any arm is cancelled too.
pub async fn undeploy(store: &dyn Store, acct: &str, wf: &str) -> Result<Value> {
    set_deploy(store, acct, wf, Update::default().set("deploy_state", "internal").remove("armed_until")).await
}

/// `POST /workflows/{id}/arm`: its webhook blocks take exactly one call within the next
/// [`webhooks::ARM_WINDOW_SECS`] (arming again restarts the window).
pub async fn arm(store: &dyn Store, acct: &str, wf: &str) -> Result<Value> {
    let until = ids::ms_to_rfc3339(ids::now_ms() + webhooks::ARM_WINDOW_SECS * 1000);
    set_deploy(store, acct, wf, Update::default().set("armed_until", until)).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::MemStore;

    fn body() -> Value {
        json!({"id": "orders", "name": "Orders",
               "inputSchema": {"type": "object", "required": ["amount"]},
               "steps": [{"id": "start", "type": "starter"},
                         {"id": "t", "type": "transform", "config": {"mapping": {"x": "{{input.amount}}"}}}]})
    }

    #[tokio::test]
    async fn create_writes_head_and_version_one() {
        let s = MemStore::new();
        let wf = create(&s, "acct_a", body()).await.unwrap();
        assert_eq!(wf["version"], json!(1));
        assert_eq!(wf["status"], json!("draft"));
        assert_eq!(wf["deploy_state"], json!("internal"));
        assert_eq!(wf["edges"], json!([{"from": "start", "to": "t"}]));
        let v = load_version(&s, "acct_a", "orders", 1).await.unwrap();
        assert_eq!(v.graph.blocks.len(), 2);
        assert_eq!(v.input_schema.unwrap()["required"], json!(["amount"]));
        assert_eq!(v.variables, json!({}));
        let head = load_head(&s, "acct_a", "orders").await.unwrap();
        assert_eq!(head["version"], json!(1));
    }

    #[tokio::test]
    async fn generated_ids_are_prefixed() {
        let s = MemStore::new();
        let mut b = body();
        b.as_object_mut().unwrap().remove("id");
        let wf = create(&s, "acct_a", b).await.unwrap();
        assert!(wf["id"].as_str().unwrap().starts_with("wf_"));
    }

    #[tokio::test]
    async fn schema_or_variable_changes_make_versions_and_metadata_changes_do_not() {
        let s = MemStore::new();
        create(&s, "acct_a", body()).await.unwrap();
        let wf = patch(&s, "acct_a", "orders", json!({"name": "Renamed"})).await.unwrap();
        assert_eq!((wf["name"].clone(), wf["version"].clone()), (json!("Renamed"), json!(1)));
        let wf = patch(&s, "acct_a", "orders", json!({"variables": {"k": 1}})).await.unwrap();
        assert_eq!(wf["version"], json!(2));
        let v2 = load_version(&s, "acct_a", "orders", 2).await.unwrap();
        assert_eq!(v2.variables, json!({"k": 1}));
        assert_eq!(v2.graph.blocks.len(), 2);
        // Same variables again: nothing new.
        let wf = patch(&s, "acct_a", "orders", json!({"vars": {"k": 1}})).await.unwrap();
        assert_eq!(wf["version"], json!(2));
    }

    #[tokio::test]
    async fn put_graph_appends_a_version_and_keeps_old_ones() {
        let s = MemStore::new();
        create(&s, "acct_a", body()).await.unwrap();
        let (wf, created) =
            put_graph(&s, "acct_a", "orders", json!({"steps": [{"id": "only", "type": "starter"}]})).await.unwrap();
        assert_eq!((wf["version"].clone(), created), (json!(2), false));
        assert_eq!(load_version(&s, "acct_a", "orders", 1).await.unwrap().graph.blocks.len(), 2);
        let vs = versions(&s, "acct_a", "orders", 20, None).await.unwrap();
        let nums: Vec<_> = vs["data"].as_array().unwrap().iter().map(|v| v["version"].clone()).collect();
        assert_eq!(nums, vec![json!(2), json!(1)]);
    }

    #[tokio::test]
    async fn put_graph_creates_a_missing_workflow_with_its_fields_beside_the_graph() {
        let s = MemStore::new();
        let body = json!({
            "name": "Invoices", "description": "seed 003", "trigger": {"type": "api"},
            "variables": {"currency": "usd"},
            "steps": [{"id": "start", "type": "starter"}]
        });
        let (wf, created) = put_graph(&s, "acct_a", "invoices", body).await.unwrap();
        assert!(created);
        assert_eq!(
            (wf["id"].clone(), wf["name"].clone(), wf["status"].clone()),
            (json!("invoices"), json!("Invoices"), json!("draft"))
        );
        assert_eq!(wf["trigger"], json!({"type": "api"}));
        assert_eq!(wf["variables"], json!({"currency": "usd"}));
        // Without a name the id names it; a second PUT replaces the graph in a new version.
        let (wf, created) =
            put_graph(&s, "acct_a", "bare", json!({"blocks": [{"id": "s", "type": "starter"}]})).await.unwrap();
        assert_eq!((wf["name"].clone(), created), (json!("bare"), true));
        let (wf, created) = put_graph(&s, "acct_a", "bare", json!({"name": "Bare", "trigger": {"type": "webhook"},
            "blocks": [{"id": "s", "type": "starter"}, {"id": "t", "type": "transform", "config": {"mapping": {"a": 1}}}], "edges": [{"from": "s", "to": "t"}]})).await.unwrap();
        assert_eq!(
            (wf["version"].clone(), wf["name"].clone(), wf["trigger"]["type"].clone(), created),
            (json!(2), json!("Bare"), json!("webhook"), false)
        );
    }

    #[tokio::test]
    async fn a_trigger_of_an_unknown_type_or_a_body_without_a_graph_is_refused() {
        let s = MemStore::new();
        let e = put_graph(
            &s,
            "acct_a",
            "x",
            json!({"trigger": {"type": "cron"}, "steps": [{"id": "s", "type": "starter"}]}),
        )
        .await
        .unwrap_err();
        assert!(
            matches!(&e, Error::Validation { details, .. } if details[0].path == vec![json!("trigger"), json!("type")]),
            "{e:?}"
        );
        assert!(e.to_string().contains("cron"), "{e}");
        let e = put_graph(&s, "acct_a", "x", json!({"name": "no graph"})).await.unwrap_err();
        assert!(matches!(e, Error::Validation { .. }), "{e:?}");
        let e = create(&s, "acct_a", json!({"name": "n", "trigger": "api", "steps": [{"id": "s", "type": "starter"}]}))
            .await
            .unwrap_err();
        assert!(e.to_string().contains("trigger"), "{e}");
        assert!(s.get(&keys::workflow("acct_a", "x")).await.unwrap().is_none(), "nothing was written");
    }

    #[tokio::test]
    async fn recreating_a_deleted_workflow_continues_its_version_numbers() {
        let s = MemStore::new();
        create(&s, "acct_a", body()).await.unwrap();
        delete(&s, "acct_a", "orders").await.unwrap();
        assert!(matches!(get(&s, "acct_a", "orders").await, Err(Error::NotFound(_))));
        let wf = create(&s, "acct_a", body()).await.unwrap();
        assert_eq!(wf["version"], json!(2));
        assert!(load_version(&s, "acct_a", "orders", 1).await.is_ok());
    }

    #[tokio::test]
    async fn bad_inputs_are_validation_errors_with_paths() {
        let s = MemStore::new();
        let cases = [
            (
                json!({"name": "x", "inputSchema": {"type": "nope"}, "steps": [{"id": "a", "type": "starter"}]}),
                "inputSchema",
            ),
            (json!({"name": "x", "status": "live", "steps": [{"id": "a", "type": "starter"}]}), "status"),
            (json!({"name": "x", "id": "Bad Id", "steps": [{"id": "a", "type": "starter"}]}), "id"),
            (json!({"name": "x", "color": "red", "steps": [{"id": "a", "type": "starter"}]}), "color"),
            (
                json!({"name": "x", "callback_url": "ftp://x", "steps": [{"id": "a", "type": "starter"}]}),
                "callback_url",
            ),
            (json!({"steps": [{"id": "a", "type": "starter"}]}), "name"),
        ];
        for (b, field) in cases {
            match create(&s, "acct_a", b).await {
                Err(Error::Validation { details, .. }) => {
                    assert_eq!(details[0].path, vec![json!(field)])
                }
                other => panic!("{field}: {other:?}"),
            }
        }
    }

    #[tokio::test]
    async fn remote_schema_refs_are_rejected_without_fetching() {
        let s = MemStore::new();
        let b = json!({"name": "x", "inputSchema": {"$ref": "http://127.0.0.1:9/schema.json"},
                       "steps": [{"id": "a", "type": "starter"}]});
        assert!(matches!(create(&s, "acct_a", b).await, Err(Error::Validation { .. })));
    }

    #[tokio::test]
    async fn another_accounts_workflow_is_not_found() {
        let s = MemStore::new();
        create(&s, "acct_a", body()).await.unwrap();
        assert!(matches!(get(&s, "acct_b", "orders").await, Err(Error::NotFound(_))));
        assert!(matches!(activate(&s, "acct_b", "orders").await, Err(Error::NotFound(_))));
        assert!(matches!(delete(&s, "acct_b", "orders").await, Err(Error::NotFound(_))));
        assert!(matches!(patch(&s, "acct_b", "orders", json!({"name": "y"})).await, Err(Error::NotFound(_))));
    }
}

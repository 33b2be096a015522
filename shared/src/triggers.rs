//! Trigger URLs (DESIGN.md §5): a secret URL per trigger that starts its workflow without an
//! API key, `POST /api/v1/hooks/{token}`.
//!
//! Items (layout in [`crate::keys`]):
//! - listing `TRIGS#{acct}#{wf}/{trigger_id}`: `{trigger_id, workflow_id, name, enabled,
//!   callback_url, token_prefix, created_at, updated_at, hash}` (`hash` internal)
//! - lookup `HOOK#{sha256(token)}/HOOK`: `{account_id, workflow_id, trigger_id, enabled,
//!   callback_url}`, changed together with the listing item in one transaction
//!
//! The token (`tk_<64 hex>`) is shown once, in the creation response; only its SHA-256 is
//! stored, so the door finds a trigger with one read by hash.

use crate::error::{Error, Result};
use crate::net_guard::Targets;
use crate::store::{Cond, Item, Query, Store, Update, Write};
use crate::workflows::{self, MAX_NAME_LEN};
use crate::{ids, keys};
use serde_json::{Map, Value, json};

/// Most triggers one workflow may have (deleting the workflow deletes them in one transaction).
pub const MAX_TRIGGERS_PER_WORKFLOW: usize = 20;
const TOKEN_PREFIX: &str = "tk";
const PREFIX_CHARS: usize = 10;
const FIELDS: &[&str] = &["name", "callback_url", "callbackUrl", "enabled"];

fn not_found(tid: &str) -> Error {
    Error::NotFound(format!("Trigger '{tid}' not found"))
}

fn obj(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

/// The trigger as callers see it (never the hash; the token only at creation).
fn view(attrs: &Map<String, Value>, public_url: &str) -> Value {
    let mut out = Map::new();
    for f in
        ["trigger_id", "workflow_id", "name", "enabled", "callback_url", "token_prefix", "created_at", "updated_at"]
    {
        out.insert(f.into(), attrs.get(f).cloned().unwrap_or(Value::Null));
    }
    out.insert("url_template".into(), json!(format!("{}/api/v1/hooks/{{token}}", public_url.trim_end_matches('/'))));
    Value::Object(out)
}

fn check_fields(body: &Value) -> Result<&Map<String, Value>> {
    crate::error::object_body(body, FIELDS)
}

async fn callback_of(o: &Map<String, Value>, targets: Targets) -> Result<Option<Value>> {
    match (o.get_key_value("callback_url"), o.get_key_value("callbackUrl")) {
        (Some(_), Some(_)) => {
            Err(Error::validation_at(vec![json!("callbackUrl")], "give `callback_url` or `callbackUrl`, not both"))
        }
        (Some((k, v)), None) | (None, Some((k, v))) => Ok(Some(workflows::check_callback_url(k, v, targets).await?)),
        (None, None) => Ok(None),
    }
}

fn enabled_of(o: &Map<String, Value>) -> Result<Option<bool>> {
    match o.get("enabled") {
        None => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(_) => Err(Error::validation_at(vec![json!("enabled")], "`enabled` must be true or false")),
    }
}

/// `POST /workflows/{id}/triggers {"name"?, "callback_url"?, "enabled"?}`: the trigger with its
/// `token` and full `url`, shown this once.
pub async fn create(
    store: &dyn Store,
    acct: &str,
    wf: &str,
    body: &Value,
    public_url: &str,
    targets: Targets,
) -> Result<Value> {
    let o = check_fields(body)?;
    let name = workflows::text(o, "name", MAX_NAME_LEN, false)?.flatten();
    let callback_url = callback_of(o, targets).await?.unwrap_or(Value::Null);
    let enabled = enabled_of(o)?.unwrap_or(true);
    workflows::load_head(store, acct, wf).await?;
    let mut q = Query::partition(keys::triggers_pk(acct, wf));
    q.limit = MAX_TRIGGERS_PER_WORKFLOW + 1;
    if store.query(q).await?.items.len() >= MAX_TRIGGERS_PER_WORKFLOW {
        return Err(Error::Conflict(format!(
            "Workflow '{wf}' already has {MAX_TRIGGERS_PER_WORKFLOW} triggers; delete one first"
        )));
    }
    let token = ids::new_secret(TOKEN_PREFIX);
    let hash = ids::hash_secret(&token);
    let trigger_id = ids::new_id("trg");
    let now = ids::now_rfc3339();
    let listing = obj(json!({
        "trigger_id": trigger_id, "workflow_id": wf, "name": name, "enabled": enabled,
        "callback_url": callback_url, "token_prefix": &token[..PREFIX_CHARS],
        "created_at": now, "updated_at": now, "hash": hash,
    }));
    let lookup = obj(json!({
        "account_id": acct, "workflow_id": wf, "trigger_id": trigger_id, "enabled": enabled,
        "callback_url": callback_url,
    }));
    store
        .transact(vec![
            Write::Put {
                item: Item::new(keys::trigger(acct, wf, &trigger_id), listing.clone()),
                cond: Some(Cond::NotExists),
            },
            Write::Put { item: Item::new(keys::hook_lookup(&hash), lookup), cond: Some(Cond::NotExists) },
        ])
        .await?;
    let mut out = view(&listing, public_url);
    out["token"] = json!(token);
    out["url"] = json!(format!("{}/api/v1/hooks/{token}", public_url.trim_end_matches('/')));
    Ok(out)
}

async fn load(store: &dyn Store, acct: &str, wf: &str, tid: &str) -> Result<Item> {
    if !workflows::valid_id(wf) || tid.len() > 64 {
        return Err(not_found(tid));
    }
    store.get(&keys::trigger(acct, wf, tid)).await?.ok_or_else(|| not_found(tid))
}

/// `GET /workflows/{id}/triggers`: `{"data": [...], "next_cursor"}`, oldest first.
pub async fn list(
    store: &dyn Store,
    acct: &str,
    wf: &str,
    limit: usize,
    cursor: Option<String>,
    public_url: &str,
) -> Result<Value> {
    workflows::load_head(store, acct, wf).await?;
    let mut q = Query::partition(keys::triggers_pk(acct, wf));
    q.limit = limit.clamp(1, MAX_TRIGGERS_PER_WORKFLOW);
    q.cursor = cursor;
    let page = store.query(q).await?;
    let data: Vec<Value> = page.items.iter().map(|i| view(&i.attrs, public_url)).collect();
    Ok(json!({"data": data, "next_cursor": page.next_cursor}))
}

/// `GET /workflows/{id}/triggers/{trigger_id}`.
pub async fn get(store: &dyn Store, acct: &str, wf: &str, tid: &str, public_url: &str) -> Result<Value> {
    Ok(view(&load(store, acct, wf, tid).await?.attrs, public_url))
}

/// `PATCH /workflows/{id}/triggers/{trigger_id} {"enabled"?, "name"?, "callback_url"?}`
/// (also behind `/enable` and `/disable`).
pub async fn patch(
    store: &dyn Store,
    acct: &str,
    wf: &str,
    tid: &str,
    body: &Value,
    public_url: &str,
    targets: Targets,
) -> Result<Value> {
    let o = check_fields(body)?;
    let name = workflows::text(o, "name", MAX_NAME_LEN, false)?;
    let callback_url = callback_of(o, targets).await?;
    let enabled = enabled_of(o)?;
    let item = load(store, acct, wf, tid).await?;
    let hash = item.str("hash").ok_or_else(|| Error::internal(format!("trigger {tid} has no hash")))?.to_string();
    let mut listing = Update::default().set("updated_at", ids::now_rfc3339());
    let mut lookup = Update::default();
    if let Some(n) = name {
        listing = listing.set("name", json!(n));
    }
    if let Some(c) = callback_url {
        listing = listing.set("callback_url", c.clone());
        lookup = lookup.set("callback_url", c);
    }
    if let Some(e) = enabled {
        listing = listing.set("enabled", e);
        lookup = lookup.set("enabled", e);
    }
    let mut writes = vec![Write::Update { key: item.key.clone(), update: listing, cond: Some(Cond::Exists) }];
    if !lookup.set.is_empty() {
        writes.push(Write::Update { key: keys::hook_lookup(&hash), update: lookup, cond: Some(Cond::Exists) });
    }
    match store.transact(writes).await {
        Ok(()) => get(store, acct, wf, tid, public_url).await,
        Err(e) if e.is_conflict() => Err(not_found(tid)),
        Err(e) => Err(e),
    }
}

/// `DELETE /workflows/{id}/triggers/{trigger_id}`: the URL stops working at once.
pub async fn delete(store: &dyn Store, acct: &str, wf: &str, tid: &str) -> Result<()> {
    let item = load(store, acct, wf, tid).await?;
    let mut writes = vec![Write::Delete { key: item.key.clone(), cond: Some(Cond::Exists) }];
    if let Some(h) = item.str("hash") {
        writes.push(Write::Delete { key: keys::hook_lookup(h), cond: None });
    }
    match store.transact(writes).await {
        Ok(()) => Ok(()),
        Err(e) if e.is_conflict() => Err(not_found(tid)),
        Err(e) => Err(e),
    }
}

/// The writes that delete every trigger of a workflow (for deleting the workflow).
pub async fn delete_writes(store: &dyn Store, acct: &str, wf: &str) -> Result<Vec<Write>> {
    let mut q = Query::partition(keys::triggers_pk(acct, wf));
    q.limit = MAX_TRIGGERS_PER_WORKFLOW * 2;
    let items = crate::store::query_all(store, q).await?;
    let mut writes = Vec::new();
    for it in items {
        if let Some(h) = it.str("hash") {
            writes.push(Write::Delete { key: keys::hook_lookup(h), cond: None });
        }
        writes.push(Write::Delete { key: it.key, cond: None });
    }
    Ok(writes)
}

/// What a trigger token leads to.
#[derive(Clone, Debug, PartialEq)]
pub struct Hook {
    pub account_id: String,
    pub workflow_id: String,
    pub trigger_id: String,
    pub enabled: bool,
    pub callback_url: Option<String>,
}

/// Finds the trigger of a token: `NotFound` for an unknown one, `Conflict` for a disabled one.
pub async fn lookup(store: &dyn Store, token: &str) -> Result<Hook> {
    let unknown = || Error::NotFound("No trigger with this token".into());
    if token.is_empty() || token.len() > 200 {
        return Err(unknown());
    }
    let hash = ids::hash_secret(token);
    // The comparison is the keyed read of the token's SHA-256: whatever its timing reveals
    // is about the hash, which says nothing usable about a token (no byte-wise compare of
    // the token itself ever happens).
    let item = store.get(&keys::hook_lookup(&hash)).await?.ok_or_else(unknown)?;
    let field = |n: &str| item.str(n).map(str::to_string).ok_or_else(|| Error::internal(format!("hook: no {n}")));
    let hook = Hook {
        account_id: field("account_id")?,
        workflow_id: field("workflow_id")?,
        trigger_id: field("trigger_id")?,
        enabled: item.get("enabled").and_then(Value::as_bool).unwrap_or(false),
        callback_url: item.str("callback_url").map(str::to_string),
    };
    if !hook.enabled {
        return Err(Error::Conflict(format!(
            "Trigger '{}' is disabled; enable it with PATCH /api/v1/workflows/{}/triggers/{} {{\"enabled\": true}}",
            hook.trigger_id, hook.workflow_id, hook.trigger_id
        )));
    }
    Ok(hook)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::MemStore;

    async fn setup() -> MemStore {
        let s = MemStore::new();
        workflows::create(&s, "acct_a", json!({"id": "wf", "name": "W", "steps": [{"id": "s", "type": "starter"}]}))
            .await
            .unwrap();
        s
    }

    #[tokio::test]
    async fn the_token_is_shown_once_and_stored_hashed() {
        let s = setup().await;
        let t = create(&s, "acct_a", "wf", &json!({}), "http://h", Targets::PublicOnly).await.unwrap();
        let token = t["token"].as_str().unwrap();
        assert!(token.starts_with("tk_"));
        assert_eq!(t["url"], json!(format!("http://h/api/v1/hooks/{token}")));
        let dump = format!("{:?}", s.dump());
        assert!(!dump.contains(token));
        let listed = list(&s, "acct_a", "wf", 20, None, "http://h").await.unwrap();
        assert!(listed["data"][0].get("token").is_none());
        assert!(!listed.to_string().contains(token));
        assert_eq!(lookup(&s, token).await.unwrap().workflow_id, "wf");
    }

    #[tokio::test]
    async fn disabled_is_conflict_unknown_is_not_found_and_delete_forgets() {
        let s = setup().await;
        let t = create(&s, "acct_a", "wf", &json!({}), "http://h", Targets::PublicOnly).await.unwrap();
        let (token, tid) = (t["token"].as_str().unwrap(), t["trigger_id"].as_str().unwrap());
        patch(&s, "acct_a", "wf", tid, &json!({"enabled": false}), "http://h", Targets::PublicOnly).await.unwrap();
        assert!(matches!(lookup(&s, token).await, Err(Error::Conflict(_))));
        patch(&s, "acct_a", "wf", tid, &json!({"enabled": true}), "http://h", Targets::PublicOnly).await.unwrap();
        assert!(lookup(&s, token).await.is_ok());
        assert!(matches!(lookup(&s, "tk_nope").await, Err(Error::NotFound(_))));
        delete(&s, "acct_a", "wf", tid).await.unwrap();
        assert!(matches!(lookup(&s, token).await, Err(Error::NotFound(_))));
        assert!(matches!(delete(&s, "acct_a", "wf", tid).await, Err(Error::NotFound(_))));
    }

    #[tokio::test]
    async fn deleting_the_workflow_deletes_its_triggers() {
        let s = setup().await;
        let t = create(&s, "acct_a", "wf", &json!({}), "http://h", Targets::PublicOnly).await.unwrap();
        workflows::delete(&s, "acct_a", "wf").await.unwrap();
        assert!(matches!(lookup(&s, t["token"].as_str().unwrap()).await, Err(Error::NotFound(_))));
    }

    #[tokio::test]
    async fn bad_bodies_and_other_accounts_are_refused() {
        let s = setup().await;
        assert!(matches!(
            create(&s, "acct_a", "wf", &json!({"color": 1}), "h", Targets::PublicOnly).await,
            Err(Error::Validation { .. })
        ));
        let bad_url = json!({"callback_url": "ftp://x"});
        assert!(matches!(
            create(&s, "acct_a", "wf", &bad_url, "h", Targets::PublicOnly).await,
            Err(Error::Validation { .. })
        ));
        assert!(matches!(
            create(&s, "acct_b", "wf", &json!({}), "h", Targets::PublicOnly).await,
            Err(Error::NotFound(_))
        ));
    }
}

//! Apps (DESIGN.md §5): an outside system that sends webhooks to
//! `POST /api/v1/webhooks/{app_id}`, optionally signed.
//!
//! Items (layout in [`crate::keys`]):
//! - `APP#{app_id}/APP`: `{app_id, account_id, name, capabilities, signature, workflow_id,
//!   signing_secret_sealed, created_at, updated_at}`: what the door reads (one read, no
//!   account known yet)
//! - `ACCT#{acct}#APPS/{app_id}`: `{app_id, name, created_at}`, for listing
//!
//! The signing secret must be read back to compute HMACs, so it is sealed with the
//! deployment's [`SecretBox`] and never returned. An app without a signing secret takes
//! unsigned calls: its id in the URL is then the only secret (documented in the README).

use crate::error::{Error, Result};
use crate::secrets::SecretBox;
use crate::signature::{self, Scheme, Verified};
use crate::store::{Cond, Item, Query, Store, Update, Write};
use crate::workflows::{self, MAX_NAME_LEN};
use crate::{ids, keys};
use serde_json::{Map, Value, json};

pub const CAPABILITIES: &[&str] = &["receive"];
const FIELDS: &[&str] = &["name", "capabilities", "signing_secret", "signature", "workflow_id"];

fn not_found(app_id: &str) -> Error {
    Error::NotFound(format!("App '{app_id}' not found"))
}

fn obj(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

/// An app id's shape (`app_<ulid>`), checked before any read.
pub fn is_app_id(s: &str) -> bool {
    s.strip_prefix("app_")
        .is_some_and(|r| !r.is_empty() && r.len() <= 40 && r.bytes().all(|b| b.is_ascii_alphanumeric()))
}

fn webhook_url(public_url: &str, app_id: &str) -> String {
    format!("{}/api/v1/webhooks/{app_id}", public_url.trim_end_matches('/'))
}

fn view(attrs: &Map<String, Value>, public_url: &str) -> Value {
    let mut out = Map::new();
    for f in ["app_id", "name", "capabilities", "signature", "workflow_id"] {
        out.insert(f.into(), attrs.get(f).cloned().unwrap_or(Value::Null));
    }
    let has_secret = attrs.get("signing_secret_sealed").is_some_and(|s| s.is_string());
    out.insert("has_signing_secret".into(), json!(has_secret));
    let id = attrs.get("app_id").and_then(Value::as_str).unwrap_or_default();
    out.insert("webhook_url".into(), json!(webhook_url(public_url, id)));
    for f in ["created_at", "updated_at"] {
        out.insert(f.into(), attrs.get(f).cloned().unwrap_or(Value::Null));
    }
    Value::Object(out)
}

fn check_fields(body: &Value) -> Result<&Map<String, Value>> {
    crate::error::object_body(body, FIELDS)
}

fn capabilities_of(v: Option<&Value>) -> Result<Vec<String>> {
    let bad = || {
        Error::validation_at(
            vec![json!("capabilities")],
            format!("`capabilities` must be a list of: {}", CAPABILITIES.join(", ")),
        )
    };
    match v {
        None | Some(Value::Null) => Ok(vec!["receive".into()]),
        Some(Value::Array(a)) => {
            let mut out: Vec<String> = Vec::new();
            for c in a {
                let c = c.as_str().filter(|c| CAPABILITIES.contains(c)).ok_or_else(bad)?;
                if !out.iter().any(|o| o == c) {
                    out.push(c.to_string());
                }
            }
            Ok(out)
        }
        Some(_) => Err(bad()),
    }
}

fn workflow_of(v: Option<&Value>) -> Result<Value> {
    match v {
        None | Some(Value::Null) => Ok(Value::Null),
        Some(Value::String(s)) if workflows::valid_id(s) => Ok(json!(s)),
        Some(_) => Err(Error::validation_at(vec![json!("workflow_id")], "`workflow_id` must be a workflow id")),
    }
}

/// `POST /apps {"name", "capabilities"?, "signing_secret"?, "signature"?, "workflow_id"?}`.
/// `signature` defaults to `hmac-sha256` when a secret is given and needs one otherwise.
pub async fn create(
    store: &dyn Store,
    secrets: &SecretBox,
    acct: &str,
    body: &Value,
    public_url: &str,
) -> Result<Value> {
    let o = check_fields(body)?;
    let name = workflows::text(o, "name", MAX_NAME_LEN, true)?.flatten().unwrap_or_default();
    let capabilities = capabilities_of(o.get("capabilities"))?;
    let workflow_id = workflow_of(o.get("workflow_id"))?;
    let secret = match o.get("signing_secret") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.as_str()),
        Some(_) => {
            return Err(Error::validation_at(vec![json!("signing_secret")], "`signing_secret` must be a string"));
        }
    };
    let scheme = match (o.get("signature").filter(|v| !v.is_null()), secret) {
        (Some(sig), Some(_)) => Some(Scheme::parse(sig)?),
        (None, Some(_)) => Some(Scheme::default()),
        (Some(_), None) => {
            return Err(Error::validation_at(vec![json!("signing_secret")], "a `signature` needs a `signing_secret`"));
        }
        (None, None) => None,
    };
    if let (Some(s), Some(secret)) = (&scheme, secret) {
        s.check_secret(secret)?;
    }
    if let Value::String(wf) = &workflow_id {
        workflows::load_head(store, acct, wf).await?;
    }
    let app_id = ids::new_id("app");
    let now = ids::now_rfc3339();
    let attrs = obj(json!({
        "app_id": app_id, "account_id": acct, "name": name, "capabilities": capabilities,
        "signature": scheme, "workflow_id": workflow_id,
        "signing_secret_sealed": secret.map(|s| secrets.seal_str(s)),
        "created_at": now, "updated_at": now,
    }));
    let listing = obj(json!({"app_id": app_id, "name": name, "created_at": now}));
    store
        .transact(vec![
            Write::Put { item: Item::new(keys::app(&app_id), attrs.clone()), cond: Some(Cond::NotExists) },
            Write::Put { item: Item::new(keys::app_listing(acct, &app_id), listing), cond: Some(Cond::NotExists) },
        ])
        .await?;
    Ok(view(&attrs, public_url))
}

async fn load_owned(store: &dyn Store, acct: &str, app_id: &str) -> Result<Item> {
    if !is_app_id(app_id) {
        return Err(not_found(app_id));
    }
    match store.get(&keys::app(app_id)).await? {
        Some(i) if i.str("account_id") == Some(acct) => Ok(i),
        _ => Err(not_found(app_id)),
    }
}

/// `GET /apps/{app_id}` (another account's app is not found).
pub async fn get(store: &dyn Store, acct: &str, app_id: &str, public_url: &str) -> Result<Value> {
    Ok(view(&load_owned(store, acct, app_id).await?.attrs, public_url))
}

/// `GET /apps`: `{"data": [...], "next_cursor"}`, oldest first.
pub async fn list(
    store: &dyn Store,
    acct: &str,
    limit: usize,
    cursor: Option<String>,
    public_url: &str,
) -> Result<Value> {
    let mut q = Query::partition(keys::apps_pk(acct));
    q.limit = limit.clamp(1, 100);
    q.cursor = cursor;
    let page = store.query(q).await?;
    let mut data = Vec::with_capacity(page.items.len());
    for it in &page.items {
        if let Some(app) = store.get(&keys::app(&it.key.sk)).await? {
            data.push(view(&app.attrs, public_url));
        }
    }
    Ok(json!({"data": data, "next_cursor": page.next_cursor}))
}

/// `PATCH /apps/{app_id}`: any of the create fields; `"signing_secret": null` removes the
/// secret (and the signature check with it).
pub async fn patch(
    store: &dyn Store,
    secrets: &SecretBox,
    acct: &str,
    app_id: &str,
    body: &Value,
    public_url: &str,
) -> Result<Value> {
    let o = check_fields(body)?;
    let item = load_owned(store, acct, app_id).await?;
    let mut update = Update::default().set("updated_at", ids::now_rfc3339());
    let mut listing = Update::default();
    if o.contains_key("name") {
        let name = workflows::text(o, "name", MAX_NAME_LEN, true)?.flatten().unwrap_or_default();
        update = update.set("name", name.clone());
        listing = listing.set("name", name);
    }
    if o.contains_key("capabilities") {
        update = update.set("capabilities", json!(capabilities_of(o.get("capabilities"))?));
    }
    if o.contains_key("workflow_id") {
        let wf = workflow_of(o.get("workflow_id"))?;
        if let Value::String(w) = &wf {
            workflows::load_head(store, acct, w).await?;
        }
        update = update.set("workflow_id", wf);
    }
    let old_scheme: Option<Scheme> = item.get("signature").and_then(|s| serde_json::from_value(s.clone()).ok());
    let scheme = match o.get("signature") {
        Some(Value::Null) => None,
        Some(sig) => Some(Scheme::parse(sig)?),
        None => old_scheme,
    };
    let secret = match o.get("signing_secret") {
        None => item.str("signing_secret_sealed").map(|s| secrets.open_str(s)).transpose()?,
        Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => {
            return Err(Error::validation_at(vec![json!("signing_secret")], "`signing_secret` must be a string"));
        }
    };
    let scheme = match (scheme, &secret) {
        (Some(s), Some(secret)) => {
            s.check_secret(secret)?;
            Some(s)
        }
        (None, Some(secret)) => {
            let s = Scheme::default();
            s.check_secret(secret)?;
            Some(s)
        }
        (Some(_), None) if o.contains_key("signature") => {
            return Err(Error::validation_at(vec![json!("signing_secret")], "a `signature` needs a `signing_secret`"));
        }
        (_, None) => None,
    };
    update = update.set("signature", json!(scheme));
    if o.contains_key("signing_secret") {
        update = update.set("signing_secret_sealed", json!(secret.map(|s| secrets.seal_str(&s))));
    }
    let mut writes = vec![Write::Update { key: item.key.clone(), update, cond: Some(Cond::eq("account_id", acct)) }];
    if !listing.set.is_empty() {
        writes.push(Write::Update { key: keys::app_listing(acct, app_id), update: listing, cond: Some(Cond::Exists) });
    }
    match store.transact(writes).await {
        Ok(()) => get(store, acct, app_id, public_url).await,
        Err(e) if e.is_conflict() => Err(not_found(app_id)),
        Err(e) => Err(e),
    }
}

/// `DELETE /apps/{app_id}`: its webhook URL stops working at once.
pub async fn delete(store: &dyn Store, acct: &str, app_id: &str) -> Result<()> {
    let item = load_owned(store, acct, app_id).await?;
    let writes = vec![
        Write::Delete { key: item.key, cond: Some(Cond::eq("account_id", acct)) },
        Write::Delete { key: keys::app_listing(acct, app_id), cond: None },
    ];
    match store.transact(writes).await {
        Ok(()) => Ok(()),
        Err(e) if e.is_conflict() => Err(not_found(app_id)),
        Err(e) => Err(e),
    }
}

/// An app as its webhook door sees it.
#[derive(Debug)]
pub struct Door {
    pub app_id: String,
    pub account_id: String,
    /// The workflow a body without `workflow_id` starts.
    pub workflow_id: Option<String>,
    pub scheme: Option<Scheme>,
    sealed_secret: Option<String>,
}

/// Finds an app for its door: unknown → `NotFound`, no `receive` capability → `Forbidden`.
pub async fn door(store: &dyn Store, app_id: &str) -> Result<Door> {
    if !is_app_id(app_id) {
        return Err(not_found(app_id));
    }
    let item = store.get(&keys::app(app_id)).await?.ok_or_else(|| not_found(app_id))?;
    let receives = item.get("capabilities").and_then(Value::as_array).is_some_and(|c| c.iter().any(|c| c == "receive"));
    if !receives {
        return Err(Error::Forbidden(format!("App '{app_id}' does not have the `receive` capability")));
    }
    let scheme = match item.get("signature") {
        Some(Value::Null) | None => None,
        Some(s) => Some(
            serde_json::from_value(s.clone()).map_err(|e| Error::internal(format!("app {app_id}: signature: {e}")))?,
        ),
    };
    Ok(Door {
        app_id: app_id.to_string(),
        account_id: item.str("account_id").ok_or_else(|| Error::internal("app without account"))?.to_string(),
        workflow_id: item.str("workflow_id").map(str::to_string),
        scheme,
        sealed_secret: item.str("signing_secret_sealed").map(str::to_string),
    })
}

impl Door {
    /// Checks the request's signature (no secret: nothing to check). `get` looks headers up
    /// by lower-case name; `now` is Unix seconds.
    pub fn verify<'a>(
        &self,
        secrets: &SecretBox,
        get: impl Fn(&str) -> Option<&'a str>,
        body: &[u8],
        now: i64,
    ) -> Result<Verified> {
        match (&self.scheme, &self.sealed_secret) {
            (Some(scheme), Some(sealed)) => {
                let secret = secrets.open_str(sealed)?;
                signature::verify(scheme, &secret, get, body, now)
            }
            _ => Ok(Verified::default()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::MemStore;

    #[tokio::test]
    async fn the_signing_secret_is_sealed_and_never_shown() {
        let s = MemStore::new();
        let b = SecretBox::ephemeral();
        let app = create(
            &s,
            &b,
            "acct_a",
            &json!({"name": "gh", "signing_secret": "s3cret-value", "signature": {"scheme": "github"}}),
            "http://h",
        )
        .await
        .unwrap();
        let id = app["app_id"].as_str().unwrap();
        assert!(is_app_id(id));
        assert_eq!(app["webhook_url"], json!(format!("http://h/api/v1/webhooks/{id}")));
        assert_eq!(app["has_signing_secret"], json!(true));
        assert!(!app.to_string().contains("s3cret-value"));
        assert!(!format!("{:?}", s.dump()).contains("s3cret-value"));
        let d = door(&s, id).await.unwrap();
        assert_eq!(d.scheme, Some(Scheme::Github));
        let listed = list(&s, "acct_a", 20, None, "http://h").await.unwrap();
        assert_eq!(listed["data"][0]["app_id"], json!(id));
        assert!(matches!(get(&s, "acct_b", id, "h").await, Err(Error::NotFound(_))));
    }

    #[tokio::test]
    async fn a_signature_needs_a_secret_and_a_scheme_needs_the_right_secret() {
        let s = MemStore::new();
        let b = SecretBox::ephemeral();
        let no_secret = json!({"name": "x", "signature": {"scheme": "stripe"}});
        assert!(matches!(create(&s, &b, "a", &no_secret, "h").await, Err(Error::Validation { .. })));
        let bad = json!({"name": "x", "signing_secret": "plain-secret", "signature": {"scheme": "standard-webhooks"}});
        assert!(matches!(create(&s, &b, "a", &bad, "h").await, Err(Error::Validation { .. })));
        let cap = json!({"name": "x", "capabilities": ["send"]});
        assert!(matches!(create(&s, &b, "a", &cap, "h").await, Err(Error::Validation { .. })));
    }

    #[tokio::test]
    async fn an_app_without_receive_is_forbidden_at_the_door_and_deleted_apps_are_gone() {
        let s = MemStore::new();
        let b = SecretBox::ephemeral();
        let app = create(&s, &b, "a", &json!({"name": "x", "capabilities": []}), "h").await.unwrap();
        let id = app["app_id"].as_str().unwrap();
        assert!(matches!(door(&s, id).await, Err(Error::Forbidden(_))));
        patch(&s, &b, "a", id, &json!({"capabilities": ["receive"]}), "h").await.unwrap();
        assert!(door(&s, id).await.is_ok());
        delete(&s, "a", id).await.unwrap();
        assert!(matches!(door(&s, id).await, Err(Error::NotFound(_))));
    }
}

//! Connections (DESIGN.md §9): an account's credentials for an outside service, used by
//! `general_api` (`connection_id`), `platform_api`, the `action` catalog and `email`.
//!
//! Item `ACCT#{acct}#CONN/{connection_id}` (layout in [`crate::keys`]): `{connection_id,
//! name, description, provider, base_url, settings, sealed, credentials_sealed, created_at,
//! updated_at}`. The whole `credentials` object is sealed with the deployment's
//! [`SecretBox`] (one blob); its fields that are not secret (an SMTP host, an HTTP header's
//! name) are also kept in `settings`, which is all a caller ever sees of them.
//!
//! At most [`MAX_CONNECTIONS`] per account, so that finding "the account's only stripe
//! connection" is one query.

use crate::blocks::StepError;
use crate::error::{Detail, Error, Result};
use crate::secrets::SecretBox;
use crate::store::{Cond, Item, Query, Store, Update};
use crate::workflows::{self, MAX_NAME_LEN};
use crate::{ids, keys};
use serde_json::{Map, Value, json};

pub const PROVIDERS: &[&str] = &["http", "stripe", "smtp", "ses", "slack", "github"];
pub const MAX_CONNECTIONS: usize = 100;
const MAX_DESCRIPTION_LEN: usize = 1000;
const MAX_SECRET_LEN: usize = 4096;
const FIELDS: &[&str] = &["id", "name", "description", "provider", "base_url", "credentials"];
const PATCH_FIELDS: &[&str] = &["name", "description", "base_url", "credentials"];
/// Credential fields that are sealed and never shown.
const SECRET_FIELDS: &[&str] =
    &["token", "value", "password", "api_key", "secret_access_key", "session_token", "bot_token"];

fn not_found(id: &str) -> Error {
    Error::NotFound(format!("Connection '{id}' not found"))
}

fn at(path: &[&str], message: impl Into<String>) -> Error {
    Error::validation_at(path.iter().map(|p| json!(p)).collect(), message)
}

/// The API base a provider's connections default to; `None`: the caller must give one
/// (`http`) or the provider has none (`smtp`; `ses` derives it from the region).
fn default_base_url(provider: &str) -> Option<&'static str> {
    match provider {
        "stripe" => Some("https://api.stripe.com"),
        "slack" => Some("https://slack.com/api"),
        "github" => Some("https://api.github.com"),
        _ => None,
    }
}

/// `(field, required)` of each provider's credentials, and for `http` of each auth type.
fn credential_fields(
    provider: &str,
    http_type: Option<&str>,
) -> std::result::Result<&'static [(&'static str, bool)], String> {
    Ok(match (provider, http_type) {
        ("http", Some("bearer")) => &[("type", true), ("token", true)],
        ("http", Some("header")) => &[("type", true), ("name", true), ("value", true)],
        ("http", Some("basic")) => &[("type", true), ("username", true), ("password", true)],
        ("http", Some("query")) => &[("type", true), ("name", true), ("value", true)],
        ("http", _) => return Err("`credentials.type` must be \"bearer\", \"header\", \"basic\" or \"query\"".into()),
        ("stripe", _) => &[("api_key", true)],
        ("smtp", _) => {
            &[("host", true), ("port", false), ("username", false), ("password", false), ("from", true), ("tls", false)]
        }
        ("ses", _) => &[
            ("region", true),
            ("access_key_id", true),
            ("secret_access_key", true),
            ("session_token", false),
            ("from", true),
        ],
        ("slack", _) => &[("bot_token", true)],
        ("github", _) => &[("token", true)],
        (p, _) => return Err(format!("unknown provider '{p}'; expected one of: {}", PROVIDERS.join(", "))),
    })
}

/// Checks `credentials` for `provider`: the object as it will be sealed (defaults filled
/// in), or the problem with its path.
fn check_credentials(provider: &str, v: Option<&Value>) -> Result<Map<String, Value>> {
    let Some(Value::Object(c)) = v else {
        return Err(at(&["credentials"], "`credentials` is required (an object)"));
    };
    let fields = credential_fields(provider, c.get("type").and_then(Value::as_str))
        .map_err(|m| at(&["credentials", "type"], m))?;
    let mut details = Vec::new();
    let mut out = Map::new();
    for (k, v) in c {
        if !fields.iter().any(|(f, _)| f == k) {
            let names: Vec<&str> = fields.iter().map(|(f, _)| *f).collect();
            details.push(Detail::new(
                vec![json!("credentials"), json!(k)],
                format!("unknown field `{k}` for a {provider} connection; expected: {}", names.join(", ")),
            ));
            continue;
        }
        match (k.as_str(), v) {
            (_, Value::Null) => {}
            ("port", Value::Number(n)) if n.as_u64().is_some_and(|p| (1..=65535).contains(&p)) => {
                out.insert(k.clone(), v.clone());
            }
            ("port", _) => details.push(Detail::new(
                vec![json!("credentials"), json!("port")],
                "`port` must be an integer from 1 to 65535",
            )),
            ("tls", Value::String(t)) if matches!(t.as_str(), "none" | "starttls" | "tls") => {
                out.insert(k.clone(), v.clone());
            }
            ("tls", _) => details.push(Detail::new(
                vec![json!("credentials"), json!("tls")],
                "`tls` must be \"none\", \"starttls\" or \"tls\"",
            )),
            (_, Value::String(s)) if !s.trim().is_empty() && s.len() <= MAX_SECRET_LEN => {
                out.insert(k.clone(), json!(s.trim()));
            }
            _ => details.push(Detail::new(
                vec![json!("credentials"), json!(k)],
                format!("`{k}` must be a non-empty string of at most {MAX_SECRET_LEN} bytes"),
            )),
        }
    }
    for (f, required) in fields {
        if *required && !out.contains_key(*f) && !details.iter().any(|d| d.path.get(1) == Some(&json!(f))) {
            details.push(Detail::new(
                vec![json!("credentials"), json!(f)],
                format!("`{f}` is required for a {provider} connection"),
            ));
        }
    }
    if let Some(from) = out.get("from").and_then(Value::as_str)
        && !crate::blocks::email::is_address(from)
    {
        details.push(Detail::new(vec![json!("credentials"), json!("from")], "`from` must be an email address"));
    }
    if provider == "stripe"
        && let Some(k) = out.get("api_key").and_then(Value::as_str)
        && !(k.starts_with("sk_") || k.starts_with("rk_"))
    {
        details.push(Detail::new(
            vec![json!("credentials"), json!("api_key")],
            "`api_key` must be a Stripe secret or restricted key (sk_… or rk_…)",
        ));
    }
    if provider == "http"
        && c.get("type").and_then(Value::as_str) == Some("header")
        && let Some(n) = out.get("name").and_then(Value::as_str)
        && http::HeaderName::from_bytes(n.as_bytes()).is_err()
    {
        details.push(Detail::new(
            vec![json!("credentials"), json!("name")],
            format!("\"{n}\" is not a valid header name"),
        ));
    }
    if provider == "smtp" && !out.contains_key("tls") {
        out.insert("tls".into(), json!("starttls"));
    }
    if !details.is_empty() {
        let message = format!("Invalid connection: {}", details[0].message);
        return Err(Error::Validation { message, details });
    }
    Ok(out)
}

fn base_url_of(provider: &str, v: Option<&Value>, creds: Option<&Map<String, Value>>) -> Result<Option<String>> {
    match v {
        None | Some(Value::Null) => match provider {
            "http" => Ok(None),
            "ses" => {
                let region = creds.and_then(|c| c.get("region")).and_then(Value::as_str).unwrap_or("us-east-1");
                Ok(Some(format!("https://email.{region}.amazonaws.com")))
            }
            p => Ok(default_base_url(p).map(str::to_string)),
        },
        Some(Value::String(_)) if provider == "smtp" => {
            Err(at(&["base_url"], "an smtp connection has no `base_url`; give `credentials.host` and `port`"))
        }
        Some(Value::String(s)) => {
            let url = crate::net_guard::parse_url("base_url", s)?;
            if url.query().is_some() || url.fragment().is_some() {
                return Err(at(&["base_url"], "`base_url` must not carry a query or fragment"));
            }
            Ok(Some(s.trim_end_matches('/').to_string()))
        }
        Some(_) => Err(at(&["base_url"], "`base_url` must be an http(s) URL")),
    }
}

fn settings_of(creds: &Map<String, Value>) -> Map<String, Value> {
    creds.iter().filter(|(k, _)| !SECRET_FIELDS.contains(&k.as_str())).map(|(k, v)| (k.clone(), v.clone())).collect()
}

fn sealed_names(creds: &Map<String, Value>) -> Vec<&str> {
    creds.keys().map(String::as_str).filter(|k| SECRET_FIELDS.contains(k)).collect()
}

/// The connection as callers see it: never a secret.
fn view(a: &Map<String, Value>) -> Value {
    let mut out = Map::new();
    out.insert("connection_id".into(), a.get("connection_id").cloned().unwrap_or(Value::Null));
    out.insert("id".into(), a.get("connection_id").cloned().unwrap_or(Value::Null));
    for f in ["name", "description", "provider", "base_url"] {
        out.insert(f.into(), a.get(f).cloned().unwrap_or(Value::Null));
    }
    out.insert("credentials".into(), a.get("settings").cloned().unwrap_or_else(|| json!({})));
    out.insert("sealed".into(), a.get("sealed").cloned().unwrap_or_else(|| json!([])));
    for f in ["created_at", "updated_at"] {
        out.insert(f.into(), a.get(f).cloned().unwrap_or(Value::Null));
    }
    Value::Object(out)
}

/// `POST /connections {id?, name, provider, base_url?, credentials, description?}`.
pub async fn create(store: &dyn Store, secrets: &SecretBox, acct: &str, body: &Value) -> Result<Value> {
    let o = crate::error::object_body(body, FIELDS)?;
    let id = match o.get("id") {
        None | Some(Value::Null) => ids::new_id("conn"),
        Some(Value::String(s)) if workflows::valid_id(s) => s.clone(),
        Some(_) => return Err(at(&["id"], "`id` must be 1..=64 characters of a-z, 0-9, '_' and '-'")),
    };
    let name = workflows::text(o, "name", MAX_NAME_LEN, true)?.flatten().unwrap_or_default();
    let description = workflows::text(o, "description", MAX_DESCRIPTION_LEN, false)?.flatten();
    let provider = match o.get("provider") {
        Some(Value::String(p)) if PROVIDERS.contains(&p.as_str()) => p.clone(),
        Some(Value::String(p)) => {
            return Err(at(
                &["provider"],
                format!("unknown provider '{p}'; expected one of: {}", PROVIDERS.join(", ")),
            ));
        }
        _ => return Err(at(&["provider"], format!("`provider` is required: one of {}", PROVIDERS.join(", ")))),
    };
    let creds = check_credentials(&provider, o.get("credentials"))?;
    let base_url = base_url_of(&provider, o.get("base_url"), Some(&creds))?;
    let mut q = Query::partition(keys::connections_pk(acct));
    q.limit = MAX_CONNECTIONS;
    if store.query(q).await?.items.len() >= MAX_CONNECTIONS {
        return Err(Error::Conflict(format!(
            "The account already has {MAX_CONNECTIONS} connections; delete one first"
        )));
    }
    let now = ids::now_rfc3339();
    let attrs = json!({
        "connection_id": id, "name": name, "description": description, "provider": provider,
        "base_url": base_url, "settings": settings_of(&creds), "sealed": sealed_names(&creds),
        "credentials_sealed": secrets.seal_str(&Value::Object(creds.clone()).to_string()),
        "created_at": now, "updated_at": now,
    });
    let Value::Object(attrs) = attrs else { unreachable!("a json! object") };
    match store.put(Item::new(keys::connection(acct, &id), attrs.clone()), Some(Cond::NotExists)).await {
        Ok(()) => Ok(view(&attrs)),
        Err(e) if e.is_conflict() => Err(Error::Conflict(format!("A connection with id '{id}' already exists"))),
        Err(e) => Err(e),
    }
}

async fn load(store: &dyn Store, acct: &str, id: &str) -> Result<Item> {
    if !workflows::valid_id(id) {
        return Err(not_found(id));
    }
    store.get(&keys::connection(acct, id)).await?.ok_or_else(|| not_found(id))
}

/// `GET /connections/{id}`.
pub async fn get(store: &dyn Store, acct: &str, id: &str) -> Result<Value> {
    Ok(view(&load(store, acct, id).await?.attrs))
}

/// `GET /connections`: `{"data": [...], "next_cursor"}`, by id.
pub async fn list(store: &dyn Store, acct: &str, limit: usize, cursor: Option<String>) -> Result<Value> {
    let mut q = Query::partition(keys::connections_pk(acct));
    q.limit = limit;
    q.cursor = cursor;
    let page = store.query(q).await?;
    let data: Vec<Value> = page.items.iter().map(|i| view(&i.attrs)).collect();
    Ok(json!({"data": data, "next_cursor": page.next_cursor}))
}

/// `PATCH /connections/{id} {name?, description?, base_url?, credentials?}`: `credentials`
/// replaces the sealed object whole; the provider never changes.
pub async fn patch(store: &dyn Store, secrets: &SecretBox, acct: &str, id: &str, body: &Value) -> Result<Value> {
    let o = match crate::error::object_body(body, PATCH_FIELDS) {
        Err(_) if body.get("provider").is_some() || body.get("id").is_some() => {
            let f = if body.get("provider").is_some() { "provider" } else { "id" };
            return Err(at(&[f], format!("`{f}` cannot change; create a new connection instead")));
        }
        r => r?,
    };
    let name = workflows::text(o, "name", MAX_NAME_LEN, true)
        .or_else(|e| if o.contains_key("name") { Err(e) } else { Ok(None) })?;
    let description = workflows::text(o, "description", MAX_DESCRIPTION_LEN, false)?;
    let item = load(store, acct, id).await?;
    let provider = item.str("provider").unwrap_or_default().to_string();
    let creds = match o.get("credentials") {
        Some(c) => Some(check_credentials(&provider, Some(c))?),
        None => None,
    };
    let mut u = Update::default().set("updated_at", ids::now_rfc3339());
    if let Some(Some(n)) = name {
        u = u.set("name", n);
    }
    if let Some(d) = description {
        u = u.set("description", json!(d));
    }
    if o.contains_key("base_url") {
        u = u.set("base_url", json!(base_url_of(&provider, o.get("base_url"), creds.as_ref())?));
    }
    if let Some(c) = creds {
        u = u
            .set("settings", Value::Object(settings_of(&c)))
            .set("sealed", json!(sealed_names(&c)))
            .set("credentials_sealed", secrets.seal_str(&Value::Object(c).to_string()));
    }
    match store.update(&item.key, u, Some(Cond::Exists)).await {
        Ok(it) => Ok(view(&it.attrs)),
        Err(e) if e.is_conflict() => Err(not_found(id)),
        Err(e) => Err(e),
    }
}

/// `DELETE /connections/{id}`. Workflows that name it fail at their next step that uses it
/// (`CONNECTION_NOT_FOUND`), as they would for any connection deleted between save and run.
pub async fn delete(store: &dyn Store, acct: &str, id: &str) -> Result<()> {
    let item = load(store, acct, id).await?;
    match store.delete(&item.key, Some(Cond::Exists)).await {
        Err(e) if e.is_conflict() => Err(not_found(id)),
        r => r,
    }
}

/// Name/value pairs: headers or query parameters.
pub type Pairs = Vec<(String, String)>;

/// An opened connection: what a block calls out with.
#[derive(Clone, Debug, PartialEq)]
pub struct Connection {
    pub id: String,
    pub provider: String,
    pub base_url: Option<String>,
    /// The opened credentials (secrets included): never logged, never in an output.
    pub credentials: Map<String, Value>,
}

impl Connection {
    pub fn field(&self, name: &str) -> Option<&str> {
        self.credentials.get(name).and_then(Value::as_str)
    }

    /// The headers and query parameters that authenticate an HTTP request; `Err` for
    /// a provider that is not spoken over HTTP by Baton (`smtp`, `ses`).
    pub fn http_auth(&self) -> std::result::Result<(Pairs, Pairs), StepError> {
        let bearer = |t: Option<&str>| vec![("Authorization".to_string(), format!("Bearer {}", t.unwrap_or_default()))];
        let none = Vec::new;
        Ok(match self.provider.as_str() {
            "stripe" => (bearer(self.field("api_key")), none()),
            "slack" => (bearer(self.field("bot_token")), none()),
            "github" => {
                let mut h = bearer(self.field("token"));
                // GitHub refuses requests without a User-Agent and asks for its media type.
                h.push(("User-Agent".into(), "baton".into()));
                h.push(("Accept".into(), "application/vnd.github+json".into()));
                h.push(("X-GitHub-Api-Version".into(), "2022-11-28".into()));
                (h, none())
            }
            "http" => match self.field("type") {
                Some("bearer") => (bearer(self.field("token")), none()),
                Some("header") => (
                    vec![(
                        self.field("name").unwrap_or_default().into(),
                        self.field("value").unwrap_or_default().into(),
                    )],
                    none(),
                ),
                Some("basic") => {
                    use base64::Engine as _;
                    let raw = format!(
                        "{}:{}",
                        self.field("username").unwrap_or_default(),
                        self.field("password").unwrap_or_default()
                    );
                    let enc = base64::engine::general_purpose::STANDARD.encode(raw);
                    (vec![("Authorization".into(), format!("Basic {enc}"))], none())
                }
                Some("query") => (
                    none(),
                    vec![(
                        self.field("name").unwrap_or_default().into(),
                        self.field("value").unwrap_or_default().into(),
                    )],
                ),
                other => {
                    return Err(StepError::fatal(
                        "CONNECTION_INVALID",
                        format!("connection '{}' has an unknown auth type {other:?}", self.id),
                    ));
                }
            },
            p => {
                return Err(StepError::fatal(
                    "CONNECTION_MISMATCH",
                    format!("connection '{}' is a {p} connection, which is not used over HTTP", self.id),
                ));
            }
        })
    }

    /// Whether `url` lies under the connection's `base_url` (always, for one without): a
    /// connection's secret goes only where it was configured to go, whatever a template
    /// renders.
    pub fn covers(&self, url: &str) -> bool {
        match &self.base_url {
            None => true,
            Some(b) => url == b || url.strip_prefix(b.as_str()).is_some_and(|rest| rest.starts_with(['/', '?'])),
        }
    }
}

fn open(secrets: &SecretBox, item: &Item) -> std::result::Result<Connection, StepError> {
    let id = item.str("connection_id").unwrap_or_default().to_string();
    let broken =
        |why: String| StepError::fatal("CONNECTION_INVALID", format!("connection '{id}' cannot be opened: {why}"));
    let sealed = item.str("credentials_sealed").ok_or_else(|| broken("no credentials".into()))?;
    let text = secrets.open_str(sealed).map_err(|e| broken(e.to_string()))?;
    let credentials = match serde_json::from_str(&text) {
        Ok(Value::Object(m)) => m,
        _ => return Err(broken("the credentials are not an object".into())),
    };
    Ok(Connection {
        id,
        provider: item.str("provider").unwrap_or_default().to_string(),
        base_url: item.str("base_url").map(str::to_string),
        credentials,
    })
}

fn store_error(e: Error) -> StepError {
    StepError::retryable("STORE_ERROR", format!("reading connections: {e}"))
}

/// Which connection a step uses, of one of `providers` (`what`: the step's kind, for the
/// messages): the step's `connection_id`, else the run's `connectionId` when it names one of
/// those providers, else the account's only one. Several and none named →
/// `CONNECTION_AMBIGUOUS`; none at all → `CONNECTION_MISSING`.
pub async fn resolve(
    store: &dyn Store,
    secrets: &SecretBox,
    acct: &str,
    providers: &[&str],
    step_conn: Option<&str>,
    run_conn: Option<&str>,
    what: &str,
) -> std::result::Result<Connection, StepError> {
    let wanted = providers.join(" or ");
    if let Some(id) = step_conn {
        let item = match load(store, acct, id).await {
            Ok(i) => i,
            Err(Error::NotFound(_)) => {
                return Err(StepError::fatal("CONNECTION_NOT_FOUND", format!("{what}: connection '{id}' not found")));
            }
            Err(e) => return Err(store_error(e)),
        };
        let p = item.str("provider").unwrap_or_default();
        if !providers.contains(&p) {
            return Err(StepError::fatal(
                "CONNECTION_MISMATCH",
                format!("{what}: connection '{id}' is a {p} connection; this step needs {wanted}"),
            ));
        }
        return open(secrets, &item);
    }
    if let Some(id) = run_conn {
        match load(store, acct, id).await {
            Ok(item) if providers.contains(&item.str("provider").unwrap_or_default()) => return open(secrets, &item),
            Ok(_) | Err(Error::NotFound(_)) => {}
            Err(e) => return Err(store_error(e)),
        }
    }
    let mut q = Query::partition(keys::connections_pk(acct));
    q.limit = MAX_CONNECTIONS;
    let items = crate::store::query_all(store, q).await.map_err(store_error)?;
    let of: Vec<&Item> = items.iter().filter(|i| providers.contains(&i.str("provider").unwrap_or_default())).collect();
    match of.as_slice() {
        [one] => open(secrets, one),
        [] => Err(StepError::fatal(
            "CONNECTION_MISSING",
            format!("{what} needs a {wanted} connection and the account has none (POST /api/v1/connections)"),
        )),
        many => {
            let ids: Vec<&str> = many.iter().filter_map(|i| i.str("connection_id")).collect();
            Err(StepError::fatal(
                "CONNECTION_AMBIGUOUS",
                format!(
                    "{what}: the account has {} {wanted} connections ({}); name one with the step's `connection_id` or the run's `connectionId`",
                    ids.len(),
                    ids.join(", ")
                ),
            ))
        }
    }
}

/// The check at save: every literal `connection_id` a block names exists in the account.
/// `field`: `steps` or `blocks`, as the body gave them (for the error's path).
pub async fn check_graph(store: &dyn Store, acct: &str, graph: &crate::model::Graph, field: &str) -> Result<()> {
    let mut details = Vec::new();
    for (i, b) in graph.blocks.iter().enumerate() {
        let Some(Value::String(id)) = b.config.get("connection_id") else { continue };
        if id.contains("{{") {
            continue;
        }
        let exists = workflows::valid_id(id) && store.get(&keys::connection(acct, id)).await?.is_some();
        if !exists {
            details.push(Detail::new(
                vec![json!(field), json!(i), json!("config"), json!("connection_id")],
                format!("no connection with id '{id}' (create it with POST /api/v1/connections first)"),
            ));
        }
    }
    if details.is_empty() {
        return Ok(());
    }
    Err(Error::Validation { message: format!("Invalid workflow: {}", details[0].message), details })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::MemStore;

    fn stripe(id: &str) -> Value {
        json!({"id": id, "name": "Stripe", "provider": "stripe", "credentials": {"api_key": "sk_test_123"}})
    }

    #[tokio::test]
    async fn secrets_are_sealed_never_returned_and_open_for_the_block() {
        let (s, sb) = (MemStore::new(), SecretBox::ephemeral());
        let c = create(&s, &sb, "acct_a", &stripe("conn_production_stripe")).await.unwrap();
        assert_eq!(c["connection_id"], "conn_production_stripe");
        assert_eq!(c["base_url"], "https://api.stripe.com");
        assert_eq!(c["sealed"], json!(["api_key"]));
        assert!(!c.to_string().contains("sk_test_123"));
        assert!(!format!("{:?}", s.dump()).contains("sk_test_123"), "stored sealed");
        let listed = list(&s, "acct_a", 20, None).await.unwrap();
        assert!(!listed.to_string().contains("sk_test_123"));
        let conn = resolve(&s, &sb, "acct_a", &["stripe"], None, None, "t").await.unwrap();
        assert_eq!(conn.field("api_key"), Some("sk_test_123"));
        assert_eq!(conn.http_auth().unwrap().0, vec![("Authorization".to_string(), "Bearer sk_test_123".to_string())]);
    }

    #[tokio::test]
    async fn generated_ids_and_the_same_id_twice() {
        let (s, sb) = (MemStore::new(), SecretBox::ephemeral());
        let body = json!({"name": "S", "provider": "slack", "credentials": {"bot_token": "xoxb-1"}});
        let c = create(&s, &sb, "acct_a", &body).await.unwrap();
        assert!(c["connection_id"].as_str().unwrap().starts_with("conn_"));
        create(&s, &sb, "acct_a", &stripe("conn_x")).await.unwrap();
        assert!(matches!(create(&s, &sb, "acct_a", &stripe("conn_x")).await, Err(Error::Conflict(_))));
    }

    #[tokio::test]
    async fn bad_bodies_are_refused_with_the_path_of_the_problem() {
        let (s, sb) = (MemStore::new(), SecretBox::ephemeral());
        let cases = [
            (json!({"name": "x", "provider": "ftp", "credentials": {}}), vec![json!("provider")]),
            (
                json!({"name": "x", "provider": "stripe", "credentials": {"api_key": "pk_live_1"}}),
                vec![json!("credentials"), json!("api_key")],
            ),
            (json!({"name": "x", "provider": "stripe"}), vec![json!("credentials")]),
            (
                json!({"name": "x", "provider": "http", "credentials": {"type": "oauth"}}),
                vec![json!("credentials"), json!("type")],
            ),
            (
                json!({"name": "x", "provider": "http", "credentials": {"type": "bearer"}}),
                vec![json!("credentials"), json!("token")],
            ),
            (
                json!({"name": "x", "provider": "smtp", "credentials": {"host": "h", "from": "a@b.c", "port": 0}}),
                vec![json!("credentials"), json!("port")],
            ),
            (
                json!({"name": "x", "provider": "smtp", "credentials": {"host": "h", "from": "nobody"}}),
                vec![json!("credentials"), json!("from")],
            ),
            (
                json!({"name": "x", "provider": "smtp", "base_url": "https://x", "credentials": {"host": "h", "from": "a@b.c"}}),
                vec![json!("base_url")],
            ),
            (
                json!({"name": "x", "provider": "github", "credentials": {"token": "t", "extra": 1}}),
                vec![json!("credentials"), json!("extra")],
            ),
            (
                json!({"name": "x", "provider": "github", "base_url": "ftp://x", "credentials": {"token": "t"}}),
                vec![json!("base_url")],
            ),
            (
                json!({"id": "Bad Id", "name": "x", "provider": "github", "credentials": {"token": "t"}}),
                vec![json!("id")],
            ),
            (
                json!({"name": "x", "provider": "github", "credentials": {"token": "t"}, "colour": 1}),
                vec![json!("colour")],
            ),
        ];
        for (body, path) in cases {
            match create(&s, &sb, "acct_a", &body).await {
                Err(Error::Validation { details, .. }) => assert_eq!(details[0].path, path, "{body}"),
                other => panic!("{body}: {other:?}"),
            }
        }
    }

    #[tokio::test]
    async fn patch_replaces_credentials_keeps_the_provider_and_delete_forgets() {
        let (s, sb) = (MemStore::new(), SecretBox::ephemeral());
        create(&s, &sb, "acct_a", &stripe("conn_s")).await.unwrap();
        let p = patch(&s, &sb, "acct_a", "conn_s", &json!({"name": "Live", "credentials": {"api_key": "sk_live_9"}}))
            .await
            .unwrap();
        assert_eq!(p["name"], "Live");
        let conn = resolve(&s, &sb, "acct_a", &["stripe"], Some("conn_s"), None, "t").await.unwrap();
        assert_eq!(conn.field("api_key"), Some("sk_live_9"));
        assert!(matches!(
            patch(&s, &sb, "acct_a", "conn_s", &json!({"provider": "slack"})).await,
            Err(Error::Validation { .. })
        ));
        assert!(matches!(get(&s, "acct_b", "conn_s").await, Err(Error::NotFound(_))), "another account's is 404");
        delete(&s, "acct_a", "conn_s").await.unwrap();
        assert!(matches!(delete(&s, "acct_a", "conn_s").await, Err(Error::NotFound(_))));
    }

    #[tokio::test]
    async fn resolution_prefers_the_step_then_the_run_then_the_only_one() {
        let (s, sb) = (MemStore::new(), SecretBox::ephemeral());
        let r = |step: Option<&'static str>, run: Option<&'static str>| {
            let (s, sb) = (&s, &sb);
            async move { resolve(s, sb, "acct_a", &["stripe"], step, run, "stripe.createInvoice").await.map(|c| c.id) }
        };
        assert_eq!(r(None, None).await.unwrap_err().code, "CONNECTION_MISSING");
        create(&s, &sb, "acct_a", &stripe("conn_dev")).await.unwrap();
        assert_eq!(r(None, None).await.unwrap(), "conn_dev");
        create(&s, &sb, "acct_a", &stripe("conn_prod")).await.unwrap();
        let e = r(None, None).await.unwrap_err();
        assert_eq!(e.code, "CONNECTION_AMBIGUOUS");
        assert!(e.message.contains("conn_dev, conn_prod"), "{}", e.message);
        assert_eq!(r(None, Some("conn_prod")).await.unwrap(), "conn_prod");
        assert_eq!(r(Some("conn_dev"), Some("conn_prod")).await.unwrap(), "conn_dev");
        create(
            &s,
            &sb,
            "acct_a",
            &json!({"id": "conn_slack", "name": "S", "provider": "slack", "credentials": {"bot_token": "xoxb"}}),
        )
        .await
        .unwrap();
        assert_eq!(
            r(None, Some("conn_slack")).await.unwrap_err().code,
            "CONNECTION_AMBIGUOUS",
            "a run connection of another provider is passed over"
        );
        assert_eq!(r(Some("conn_slack"), None).await.unwrap_err().code, "CONNECTION_MISMATCH");
        assert_eq!(r(Some("conn_gone"), None).await.unwrap_err().code, "CONNECTION_NOT_FOUND");
    }

    #[test]
    fn http_auth_of_each_credential_type_and_base_url_cover() {
        let conn = |creds: Value, base: Option<&str>| Connection {
            id: "c".into(),
            provider: "http".into(),
            base_url: base.map(str::to_string),
            credentials: creds.as_object().unwrap().clone(),
        };
        let h = |c: &Connection| c.http_auth().unwrap();
        assert_eq!(h(&conn(json!({"type": "bearer", "token": "t"}), None)).0[0].1, "Bearer t");
        assert_eq!(
            h(&conn(json!({"type": "header", "name": "X-Key", "value": "v"}), None)).0[0],
            ("X-Key".into(), "v".into())
        );
        assert_eq!(h(&conn(json!({"type": "basic", "username": "u", "password": "p"}), None)).0[0].1, "Basic dTpw");
        assert_eq!(
            h(&conn(json!({"type": "query", "name": "key", "value": "v"}), None)).1[0],
            ("key".into(), "v".into())
        );
        let c = conn(json!({"type": "bearer", "token": "t"}), Some("https://api.example.com/v2"));
        assert!(c.covers("https://api.example.com/v2/things?x=1"));
        assert!(c.covers("https://api.example.com/v2"));
        assert!(!c.covers("https://api.example.com/v2evil/x"));
        assert!(!c.covers("https://evil.example/v2"));
    }
}

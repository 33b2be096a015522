//! The account's model providers: `POST/GET/DELETE /providers`. A record holds the kind,
//! label, default model, optional `base_url` and the sealed key; the key is opened only to
//! make a call and is never returned, logged or put in an error.

use crate::error::{Error, Result, object_body};
use crate::ids;
use crate::keys;
use crate::net_guard::{self, Targets};
use crate::secrets::SecretBox;
use crate::store::{Attrs, Cond, Item, Query, Store, Update};
use serde_json::{Value, json};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Chat Completions; with `base_url`, any compatible server (Ollama, vLLM, gateways).
    OpenAi,
    /// Messages API.
    Anthropic,
    /// `generateContent`.
    Gemini,
    /// Converse, signed with the process's AWS credentials, or a Bedrock API key.
    Bedrock,
    /// Scripted answers for a user's own workflow tests; never used unless named.
    Mock,
}

impl Kind {
    pub fn parse(s: &str) -> Option<Kind> {
        Some(match s {
            "openai" => Kind::OpenAi,
            "anthropic" => Kind::Anthropic,
            "gemini" | "google" => Kind::Gemini,
            "bedrock" => Kind::Bedrock,
            "mock" => Kind::Mock,
            _ => return None,
        })
    }
    pub fn name(self) -> &'static str {
        match self {
            Kind::OpenAi => "openai",
            Kind::Anthropic => "anthropic",
            Kind::Gemini => "gemini",
            Kind::Bedrock => "bedrock",
            Kind::Mock => "mock",
        }
    }
    /// Whether a call needs an API key (Bedrock signs with the role's credentials instead;
    /// a mock calls nobody; an OpenAI-compatible local server such as Ollama takes none).
    fn key_required(self, base_url: Option<&str>) -> bool {
        match self {
            Kind::Bedrock | Kind::Mock => false,
            Kind::OpenAi => base_url.is_none(),
            Kind::Anthropic | Kind::Gemini => true,
        }
    }
}

const KINDS: &str = "openai, anthropic, gemini, bedrock, mock";
const FIELDS: &[&str] = &["provider", "api_key", "label", "model", "base_url", "region", "responses"];
const MAX_LABEL: usize = 200;
const MAX_KEY: usize = 8 * 1024;
const MAX_MODEL: usize = 200;
/// A mock's scripted answers: `[{"match"?: "substring", "output": <text or object>}]`.
const MAX_RESPONSES: usize = 100;

/// A provider ready for a call: everything the wire format needs, the key opened.
#[derive(Clone, PartialEq)]
pub struct Resolved {
    pub provider_id: Option<String>,
    pub kind: Kind,
    pub model: String,
    pub base_url: Option<String>,
    pub api_key: Option<String>,
    /// Bedrock's region (else from the base URL or `AWS_REGION`).
    pub region: Option<String>,
    /// A mock's scripted answers.
    pub responses: Value,
}

impl std::fmt::Debug for Resolved {
    // Never the key.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Resolved")
            .field("provider_id", &self.provider_id)
            .field("kind", &self.kind)
            .field("model", &self.model)
            .field("base_url", &self.base_url)
            .field("has_key", &self.api_key.is_some())
            .finish()
    }
}

impl Resolved {
    /// The operator's managed provider from `BATON_MANAGED_PROVIDER`'s JSON.
    pub fn managed(v: &Value) -> std::result::Result<Resolved, String> {
        let s = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_string).filter(|s| !s.is_empty());
        let kind = s("provider")
            .as_deref()
            .and_then(Kind::parse)
            .ok_or_else(|| format!("`provider` must be one of {KINDS}"))?;
        let base_url = s("base_url");
        let api_key = s("api_key");
        if kind.key_required(base_url.as_deref()) && api_key.is_none() {
            return Err(format!("`api_key` is required for {}", kind.name()));
        }
        Ok(Resolved {
            provider_id: None,
            kind,
            model: s("model").unwrap_or_else(|| default_model(kind).to_string()),
            base_url,
            api_key,
            region: s("region"),
            responses: Value::Null,
        })
    }
}

/// The model used when neither the provider nor the block names one.
pub fn default_model(kind: Kind) -> &'static str {
    match kind {
        Kind::OpenAi => "gpt-4o-mini",
        Kind::Anthropic => "claude-3-5-haiku-latest",
        Kind::Gemini => "gemini-2.0-flash",
        Kind::Bedrock => "anthropic.claude-3-haiku-20240307-v1:0",
        Kind::Mock => "mock",
    }
}

fn at(field: &str, message: impl Into<String>) -> Error {
    Error::validation_at(vec![json!(field)], message)
}

fn text(o: &serde_json::Map<String, Value>, field: &str, max: usize) -> Result<Option<String>> {
    match o.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.trim().is_empty() => Err(at(field, format!("`{field}` must not be empty"))),
        Some(Value::String(s)) if s.len() > max => Err(at(field, format!("`{field}` is longer than {max} bytes"))),
        Some(Value::String(s)) => Ok(Some(s.trim().to_string())),
        Some(_) => Err(at(field, format!("`{field}` must be a string"))),
    }
}

/// `POST /providers`: validates, seals the key, stores the record; the view (no key).
pub async fn create(
    store: &dyn Store,
    secrets: &SecretBox,
    targets: Targets,
    acct: &str,
    body: &Value,
) -> Result<Value> {
    let o = object_body(body, FIELDS)?;
    let kind_name =
        text(o, "provider", 50)?.ok_or_else(|| at("provider", format!("`provider` is required: one of {KINDS}")))?;
    let kind = Kind::parse(&kind_name)
        .ok_or_else(|| at("provider", format!("unknown provider `{kind_name}`; expected one of {KINDS}")))?;
    let base_url = match text(o, "base_url", 2048)? {
        // The guard's check now (scheme, host, private addresses unless allowed); the
        // resolver checks again at every call, whatever the name resolves to by then.
        Some(u) => {
            Some(net_guard::check_url("base_url", &u, targets).await?.as_str().trim_end_matches('/').to_string())
        }
        None => None,
    };
    let api_key = text(o, "api_key", MAX_KEY)?;
    if kind.key_required(base_url.as_deref()) && api_key.is_none() {
        return Err(at("api_key", format!("`api_key` is required for provider `{}`", kind.name())));
    }
    let model = text(o, "model", MAX_MODEL)?.unwrap_or_else(|| default_model(kind).to_string());
    let label = text(o, "label", MAX_LABEL)?.unwrap_or_else(|| kind.name().to_string());
    let region = text(o, "region", 50)?;
    if region.is_some() && kind != Kind::Bedrock {
        return Err(at("region", "`region` is for provider `bedrock` only"));
    }
    let responses = match o.get("responses") {
        None | Some(Value::Null) => Value::Null,
        Some(_) if kind != Kind::Mock => return Err(at("responses", "`responses` is for provider `mock` only")),
        Some(Value::Array(a)) if a.len() <= MAX_RESPONSES && a.iter().all(scripted_answer) => Value::Array(a.clone()),
        Some(_) => {
            return Err(at(
                "responses",
                format!("`responses` must be an array of at most {MAX_RESPONSES} {{\"match\"?, \"output\"}} objects"),
            ));
        }
    };
    let id = ids::new_id("prov");
    let now = ids::now_ms();
    let mut a = Attrs::new();
    a.insert("provider_id".into(), json!(id));
    a.insert("provider".into(), json!(kind.name()));
    a.insert("label".into(), json!(label));
    a.insert("model".into(), json!(model));
    a.insert("base_url".into(), json!(base_url));
    a.insert("region".into(), json!(region));
    a.insert("active".into(), json!(true));
    a.insert("created_at".into(), json!(now));
    if let Some(k) = &api_key {
        a.insert("key".into(), json!(secrets.seal_str(k)));
    }
    if !responses.is_null() {
        a.insert("responses".into(), responses);
    }
    let item = Item::new(keys::provider(acct, &id), a);
    let view = view(&item);
    store.put(item, Some(Cond::NotExists)).await?;
    Ok(view)
}

/// What the API shows of a provider: never the key.
/// One of a mock's `responses`: an `output`, and a `match` that is a substring to look for
/// (anything else there would never match, and the script would silently skip it).
fn scripted_answer(r: &Value) -> bool {
    r.get("output").is_some() && r.get("match").is_none_or(|m| m.is_string() || m.is_null())
}

pub fn view(item: &Item) -> Value {
    json!({
        "provider_id": item.str("provider_id"),
        "provider": item.str("provider"),
        "label": item.str("label"),
        "model": item.str("model"),
        "base_url": item.get("base_url").cloned().unwrap_or(Value::Null),
        "region": item.get("region").cloned().unwrap_or(Value::Null),
        "active": item.get("active").and_then(Value::as_bool).unwrap_or(false),
        "has_api_key": item.get("key").is_some(),
        "created_at": item.i64("created_at").map(ids::ms_to_rfc3339),
    })
}

/// `GET /providers/{id}`: an active provider (no key).
pub async fn get(store: &dyn Store, acct: &str, id: &str) -> Result<Value> {
    match store.get(&keys::provider(acct, id)).await? {
        Some(item) if item.get("active").and_then(Value::as_bool) == Some(true) => Ok(view(&item)),
        _ => Err(not_found(id)),
    }
}

/// `GET /providers`: the active ones, oldest first.
pub async fn list(store: &dyn Store, acct: &str) -> Result<Value> {
    let items = crate::store::query_all(store, Query::partition(keys::providers_pk(acct))).await?;
    let data: Vec<Value> =
        items.iter().filter(|i| i.get("active").and_then(Value::as_bool) == Some(true)).map(view).collect();
    Ok(json!({"data": data, "next_cursor": null}))
}

/// `DELETE /providers/{id}`: deactivates; later use of it is `NotFound`, never a fallback.
pub async fn deactivate(store: &dyn Store, acct: &str, id: &str) -> Result<Value> {
    let upd = Update::default().set("active", false).set("deactivated_at", ids::now_ms());
    let cond = Cond::Exists.and(Cond::eq("active", true));
    match store.update(&keys::provider(acct, id), upd, Some(cond)).await {
        Ok(item) => Ok(view(&item)),
        Err(Error::Conflict(_)) => Err(not_found(id)),
        Err(e) => Err(e),
    }
}

fn not_found(id: &str) -> Error {
    Error::NotFound(format!("Provider {id} not found (or deactivated)"))
}

/// An active provider of `acct`, key opened; a missing or deactivated one is `NotFound`.
pub async fn resolve(store: &dyn Store, secrets: &SecretBox, acct: &str, id: &str) -> Result<Resolved> {
    let item = store.get(&keys::provider(acct, id)).await?.ok_or_else(|| not_found(id))?;
    if item.get("active").and_then(Value::as_bool) != Some(true) {
        return Err(not_found(id));
    }
    let kind =
        item.str("provider").and_then(Kind::parse).ok_or_else(|| Error::internal("provider record without kind"))?;
    let api_key = match item.str("key") {
        Some(sealed) => Some(secrets.open_str(sealed)?),
        None => None,
    };
    Ok(Resolved {
        provider_id: Some(id.to_string()),
        kind,
        model: item.str("model").unwrap_or(default_model(kind)).to_string(),
        base_url: item.str("base_url").map(str::to_string),
        api_key,
        region: item.str("region").map(str::to_string),
        responses: item.get("responses").cloned().unwrap_or(Value::Null),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::MemStore;

    async fn made(store: &MemStore, body: Value) -> Result<Value> {
        create(store, &SecretBox::ephemeral(), Targets::PublicOnly, "acct_1", &body).await
    }

    #[tokio::test]
    async fn a_registered_key_is_sealed_and_never_shown() {
        let store = MemStore::new();
        let secrets = SecretBox::ephemeral();
        let body =
            json!({"provider": "gemini", "api_key": "AIza-secret", "label": "My Gemini key", "model": "gemini-x"});
        let v = create(&store, &secrets, Targets::PublicOnly, "acct_1", &body).await.unwrap();
        assert_eq!(v["provider"], "gemini");
        assert_eq!(v["active"], true);
        assert!(v["provider_id"].as_str().unwrap().starts_with("prov_"));
        let dump = format!("{:?}", store.dump());
        assert!(!dump.contains("AIza-secret"), "the key is sealed at rest");
        assert!(!v.to_string().contains("AIza-secret"));
        let r = resolve(&store, &secrets, "acct_1", v["provider_id"].as_str().unwrap()).await.unwrap();
        assert_eq!(r.api_key.as_deref(), Some("AIza-secret"));
        assert!(!format!("{r:?}").contains("AIza-secret"));
    }

    #[tokio::test]
    async fn bad_bodies_are_validation_errors_naming_the_field() {
        let store = MemStore::new();
        for (body, field) in [
            (json!({"provider": "cohere", "api_key": "k"}), "provider"),
            (json!({"api_key": "k"}), "provider"),
            (json!({"provider": "anthropic"}), "api_key"),
            (json!({"provider": "openai", "api_key": "k", "base_url": "ftp://x"}), "base_url"),
            (json!({"provider": "openai", "api_key": "k", "base_url": "http://127.0.0.1:11434/v1"}), "base_url"),
            (json!({"provider": "openai", "api_key": "k", "colour": "red"}), "colour"),
            (json!({"provider": "openai", "api_key": 7}), "api_key"),
            (json!({"provider": "mock", "responses": [{"output": "x", "match": {}}]}), "responses"),
            (json!({"provider": "mock", "responses": [{"match": "x"}]}), "responses"),
        ] {
            match made(&store, body.clone()).await {
                Err(Error::Validation { details, .. }) => assert_eq!(details[0].path, vec![json!(field)], "{body}"),
                other => panic!("{body}: {other:?}"),
            }
        }
    }

    #[tokio::test]
    async fn a_deactivated_provider_is_not_listed_and_not_found_afterwards() {
        let store = MemStore::new();
        let secrets = SecretBox::ephemeral();
        let v = made(&store, json!({"provider": "openai", "api_key": "sk"})).await.unwrap();
        let id = v["provider_id"].as_str().unwrap();
        assert_eq!(list(&store, "acct_1").await.unwrap()["data"].as_array().unwrap().len(), 1);
        deactivate(&store, "acct_1", id).await.unwrap();
        assert!(list(&store, "acct_1").await.unwrap()["data"].as_array().unwrap().is_empty());
        assert!(matches!(resolve(&store, &secrets, "acct_1", id).await, Err(Error::NotFound(_))));
        assert!(matches!(deactivate(&store, "acct_1", id).await, Err(Error::NotFound(_))));
        assert!(matches!(resolve(&store, &secrets, "acct_2", id).await, Err(Error::NotFound(_))), "another account's");
    }

    #[tokio::test]
    async fn bedrock_needs_no_key_and_a_local_openai_server_none_either() {
        let store = MemStore::new();
        let v = made(&store, json!({"provider": "bedrock", "region": "eu-west-1"})).await.unwrap();
        assert_eq!(v["has_api_key"], false);
        let local = create(
            &store,
            &SecretBox::ephemeral(),
            Targets::AllowPrivate,
            "acct_1",
            &json!({"provider": "openai", "base_url": "http://127.0.0.1:11434/v1/", "model": "llama3.2"}),
        )
        .await
        .unwrap();
        assert_eq!(local["base_url"], "http://127.0.0.1:11434/v1");
    }
}

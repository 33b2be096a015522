//! Accounts, API keys, scopes and per-key rate limits (DESIGN.md §5, §6).
//!
//! Items (layout in [`crate::keys`]):
//! - account `ACCT#{acct}/ACCOUNT`: `{id, name, email, callback_signing_secret, created_at,
//!   key_count}`, after a rotation also the previous secret and until when it still signs (ms)
//! - key metadata `ACCT#{acct}/KEY#{key_id}`: `{key_id, name, prefix, scopes, created_at,
//!   rotated_at, revoked_at, hash}` (`hash` is internal and never returned)
//! - key lookup `APIKEY#{sha256}/APIKEY`: `{account_id, key_id, scopes}`; deleted on revoke
//! - rate window `RL#{bucket}#{window}/RL`: `{count}` with a TTL; buckets are `acct:{acct}`
//!   (run starts with any of the account's keys), `door:{door}` and `ip:{addr}:{what}`
//!
//! `key_count` on the account counts its active keys, so the cap
//! ([`MAX_KEYS_PER_ACCOUNT`]) is one conditional write, not a count of every key.
//!
//! A key's secret (`bk_<64 hex>`) is shown once; only its SHA-256 is stored.

use crate::error::{Error, Result};
use crate::store::{Cond, Item, Query, Store, Update, Write};
use crate::{ids, keys};
use serde_json::{Map, Value, json};

/// Every scope a key can carry; `"*"` stands for all of them. `workflows:execute` (seed 003)
/// only starts runs; `runs:write` includes it.
pub const SCOPES: &[&str] =
    &["workflows:read", "workflows:write", "workflows:execute", "runs:read", "runs:write", "keys:manage"];
/// The scope that starts runs.
pub const EXECUTE: &str = "workflows:execute";
/// The scope that manages keys and the account.
pub const KEYS_MANAGE: &str = "keys:manage";
pub const ALL_SCOPES: &str = "*";
pub const MAX_NAME_LEN: usize = 200;
const KEY_PREFIX: &str = "bk";
const PREFIX_CHARS: usize = 10;
const MAX_SECRET_LEN: usize = 256;
const WRITE_RETRIES: usize = 3;
/// Most active keys an account may hold: minting keys must not multiply anything.
pub const MAX_KEYS_PER_ACCOUNT: i64 = 50;
const KEY_COUNT: &str = "key_count";

/// Who is calling: the account and key behind a valid API key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Principal {
    pub account_id: String,
    pub key_id: String,
    pub scopes: Vec<String>,
}

/// Whether holding `held` gives the power of `wanted`.
fn implies(held: &str, wanted: &str) -> bool {
    held == ALL_SCOPES || held == wanted || (held == "runs:write" && wanted == EXECUTE)
}

/// Whether a key holding `held` has every power of a key holding `wanted`: what it may
/// create, rotate (and so see the secret of) or revoke.
pub fn covers(held: &[String], wanted: &[String]) -> bool {
    wanted.iter().all(|w| held.iter().any(|h| implies(h, w)))
}

impl Principal {
    pub fn has(&self, scope: &str) -> bool {
        self.scopes.iter().any(|s| implies(s, scope))
    }

    /// `Err(Forbidden)` unless the key carries `scope` (or `*`).
    pub fn require(&self, scope: &str) -> Result<()> {
        if self.has(scope) { Ok(()) } else { Err(Error::Forbidden(format!("This API key lacks the scope '{scope}'"))) }
    }
}

/// A freshly issued key: the secret (shown once) and its public metadata.
#[derive(Clone, Debug, PartialEq)]
pub struct IssuedKey {
    pub secret: String,
    pub key: Value,
}

/// What the caller may know of a rate-limit window (for `RateLimit-*` headers).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateInfo {
    pub limit: u64,
    pub remaining: u64,
    pub reset_secs: u64,
}

fn check_name(name: &str, field: &str) -> Result<String> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > MAX_NAME_LEN {
        return Err(Error::validation_at(
            vec![json!(field)],
            format!("`{field}` must be 1..={MAX_NAME_LEN} characters"),
        ));
    }
    Ok(name.to_string())
}

fn check_email(email: &str) -> Result<String> {
    let email = email.trim();
    let ok = email.len() <= 254
        && !email.chars().any(char::is_whitespace)
        && email.split_once('@').is_some_and(|(a, b)| !a.is_empty() && !b.is_empty() && !b.contains('@'));
    if !ok {
        return Err(Error::validation_at(vec![json!("email")], "`email` must be an email address"));
    }
    Ok(email.to_string())
}

/// The previous callback signing secret, kept for a grace period after a rotation.
pub const PREVIOUS_SECRET: &str = "callback_signing_secret_previous";
/// Until when (epoch ms) the previous secret still signs callbacks.
pub const PREVIOUS_SECRET_UNTIL: &str = "callback_signing_secret_previous_until";

fn new_callback_secret() -> String {
    crate::callbacks::new_signing_secret()
}

/// The account as callers see it (timestamps as RFC 3339).
fn account_view(mut attrs: Map<String, Value>) -> Value {
    if let Some(ms) = attrs.get(PREVIOUS_SECRET_UNTIL).and_then(Value::as_i64) {
        attrs.insert(PREVIOUS_SECRET_UNTIL.into(), json!(ids::ms_to_rfc3339(ms)));
    }
    Value::Object(attrs)
}

/// The key metadata as callers see it (no hash, never the secret).
fn public_key(attrs: &Map<String, Value>) -> Value {
    let mut out = Map::new();
    for f in ["key_id", "name", "prefix", "scopes", "created_at", "rotated_at", "revoked_at"] {
        out.insert(f.into(), attrs.get(f).cloned().unwrap_or(Value::Null));
    }
    Value::Object(out)
}

fn check_scopes(scopes: &[String], granter: Option<&Principal>) -> Result<Vec<String>> {
    if scopes.is_empty() {
        return Err(Error::validation_at(vec![json!("scopes")], "`scopes` must not be empty"));
    }
    let mut out: Vec<String> = Vec::new();
    for (i, s) in scopes.iter().enumerate() {
        if s != ALL_SCOPES && !SCOPES.contains(&s.as_str()) {
            return Err(Error::validation_at(
                vec![json!("scopes"), json!(i)],
                format!("Unknown scope '{s}'; known scopes: *, {}", SCOPES.join(", ")),
            ));
        }
        if let Some(p) = granter
            && !covers(&p.scopes, std::slice::from_ref(s))
        {
            return Err(Error::Forbidden(format!("This API key cannot grant the scope '{s}' it does not hold")));
        }
        if !out.contains(s) {
            out.push(s.clone());
        }
    }
    Ok(out)
}

/// The writes that create one key (lookup + metadata).
fn key_writes(acct: &str, name: &str, scopes: &[String]) -> (IssuedKey, Vec<Write>) {
    let secret = ids::new_secret(KEY_PREFIX);
    let hash = ids::hash_secret(&secret);
    let key_id = ids::new_id("key");
    let now = ids::now_rfc3339();
    let meta = json!({
        "key_id": key_id, "name": name, "prefix": &secret[..PREFIX_CHARS], "scopes": scopes,
        "created_at": now, "rotated_at": null, "revoked_at": null, "hash": hash,
    });
    let lookup = json!({"account_id": acct, "key_id": key_id, "scopes": scopes});
    let key = public_key(meta.as_object().expect("object"));
    let writes = vec![
        Write::Put { item: Item::new(keys::api_key_lookup(&hash), obj(lookup)), cond: Some(Cond::NotExists) },
        Write::Put { item: Item::new(keys::api_key_meta(acct, &key_id), obj(meta)), cond: Some(Cond::NotExists) },
    ];
    (IssuedKey { secret, key }, writes)
}

fn obj(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

/// Creates an account and its first API key (scopes `["*"]`), in one transaction.
/// Returns the account (with its `callback_signing_secret`) and the issued key.
pub async fn register(store: &dyn Store, name: &str, email: Option<&str>) -> Result<(Value, IssuedKey)> {
    let name = check_name(name, "name")?;
    let email = email.map(check_email).transpose()?;
    let acct = ids::new_id("acct");
    let account = json!({
        "id": acct, "name": name, "email": email,
        "callback_signing_secret": new_callback_secret(), "created_at": ids::now_rfc3339(),
        KEY_COUNT: 1,
    });
    let (issued, mut writes) = key_writes(&acct, "default", &[ALL_SCOPES.to_string()]);
    writes
        .push(Write::Put { item: Item::new(keys::account(&acct), obj(account.clone())), cond: Some(Cond::NotExists) });
    store.transact(writes).await?;
    Ok((account, issued))
}

/// The account behind `acct`, including its `callback_signing_secret`.
pub async fn get_account(store: &dyn Store, acct: &str) -> Result<Value> {
    let item = store.get(&keys::account(acct)).await?.ok_or_else(|| Error::not_found("Account"))?;
    Ok(account_view(item.attrs))
}

/// Replaces the account's callback signing secret; returns the updated account. The old
/// secret keeps signing (as a second `webhook-signature`) for
/// [`crate::callbacks::PREVIOUS_SECRET_GRACE`], so receivers can switch over.
pub async fn rotate_callback_secret(store: &dyn Store, acct: &str) -> Result<Value> {
    for _ in 0..WRITE_RETRIES {
        let item = store.get(&keys::account(acct)).await?.ok_or_else(|| Error::not_found("Account"))?;
        let old = item.str("callback_signing_secret").unwrap_or_default().to_string();
        let until = ids::now_ms() + crate::callbacks::PREVIOUS_SECRET_GRACE.as_millis() as i64;
        let update = Update::default()
            .set("callback_signing_secret", new_callback_secret())
            .set(PREVIOUS_SECRET, old.as_str())
            .set(PREVIOUS_SECRET_UNTIL, until);
        match store.update(&keys::account(acct), update, Some(Cond::eq("callback_signing_secret", old.as_str()))).await
        {
            Ok(item) => return Ok(account_view(item.attrs)),
            Err(e) if e.is_conflict() => continue,
            Err(e) => return Err(e),
        }
    }
    Err(Error::Conflict("The callback signing secret changed concurrently; try again".into()))
}

/// Resolves an API key secret to its principal. Unknown or revoked keys are `Unauthorized`.
pub async fn authenticate(store: &dyn Store, secret: &str) -> Result<Principal> {
    let invalid = || Error::Unauthorized("Invalid API key".into());
    if secret.is_empty() || secret.len() > MAX_SECRET_LEN {
        return Err(invalid());
    }
    let item = store.get(&keys::api_key_lookup(&ids::hash_secret(secret))).await?.ok_or_else(invalid)?;
    let (Some(account_id), Some(key_id)) = (item.str("account_id"), item.str("key_id")) else {
        return Err(Error::internal("API key lookup item without account_id/key_id"));
    };
    Ok(Principal { account_id: account_id.to_string(), key_id: key_id.to_string(), scopes: scopes_of(&item) })
}

/// Issues a new key for the caller's account. `scopes` default to the caller's own; a key
/// can only grant scopes it holds (only a `*` key grants `*`).
pub async fn create_key(
    store: &dyn Store,
    principal: &Principal,
    name: Option<&str>,
    scopes: Option<Vec<String>>,
) -> Result<IssuedKey> {
    let name = check_name(name.unwrap_or("unnamed"), "name")?;
    let scopes = check_scopes(&scopes.unwrap_or_else(|| principal.scopes.clone()), Some(principal))?;
    let (issued, mut writes) = key_writes(&principal.account_id, &name, &scopes);
    // An account from before the counter counts from its first new key.
    let below_cap =
        Cond::Or(vec![Cond::AttrAbsent(KEY_COUNT.into()), Cond::Lt(KEY_COUNT.into(), json!(MAX_KEYS_PER_ACCOUNT))]);
    writes.push(Write::Update {
        key: keys::account(&principal.account_id),
        update: Update::default().add(KEY_COUNT, 1),
        cond: Some(Cond::Exists.and(below_cap)),
    });
    match store.transact(writes).await {
        Ok(()) => Ok(issued),
        // The new key's items are fresh random ids: only the cap can refuse.
        Err(e) if e.is_conflict() => Err(Error::Conflict(format!(
            "The account already has {MAX_KEYS_PER_ACCOUNT} active API keys, the most it may have; revoke one first"
        ))),
        Err(e) => Err(e),
    }
}

/// The account's keys (revoked ones included, with `revoked_at`), oldest first:
/// `{"data": [...], "next_cursor"}`. Never the secret or its hash.
pub async fn list_keys(store: &dyn Store, acct: &str, limit: usize, cursor: Option<String>) -> Result<Value> {
    let probe = keys::api_key_meta(acct, "");
    let mut q = Query::prefix(probe.pk, probe.sk);
    q.limit = limit;
    q.cursor = cursor;
    let page = store.query(q).await?;
    let data: Vec<Value> = page.items.iter().map(|i| public_key(&i.attrs)).collect();
    Ok(json!({"data": data, "next_cursor": page.next_cursor}))
}

async fn load_key(store: &dyn Store, acct: &str, key_id: &str) -> Result<Item> {
    store.get(&keys::api_key_meta(acct, key_id)).await?.ok_or_else(|| Error::not_found("API key"))
}

fn scopes_of(item: &Item) -> Vec<String> {
    item.get("scopes")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).map(str::to_string).collect())
        .unwrap_or_default()
}

/// `Forbidden` unless the caller holds every scope of the key it acts on: otherwise a
/// `keys:manage` key could rotate a `*` key and read its new secret.
fn check_covers(principal: &Principal, item: &Item, action: &str) -> Result<()> {
    if covers(&principal.scopes, &scopes_of(item)) {
        return Ok(());
    }
    Err(Error::Forbidden(format!("This API key cannot {action} a key that holds scopes it does not hold itself")))
}

/// Whether another active key of the account than `key_id` can manage keys.
async fn another_manager(store: &dyn Store, acct: &str, key_id: &str) -> Result<bool> {
    let probe = keys::api_key_meta(acct, "");
    let mut cursor = None;
    loop {
        let mut q = Query::prefix(probe.pk.clone(), probe.sk.clone());
        q.limit = crate::store::MAX_QUERY_LIMIT;
        q.cursor = cursor;
        let page = store.query(q).await?;
        let found = page.items.iter().any(|i| {
            i.str("key_id") != Some(key_id)
                && i.str("hash").is_some()
                && covers(&scopes_of(i), &[KEYS_MANAGE.to_string()])
        });
        if found {
            return Ok(true);
        }
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => return Ok(false),
        }
    }
}

/// Revokes a key of the caller's account (another account's key is `NotFound`; one with
/// scopes the caller lacks is `Forbidden`). Revoking a revoked key changes nothing. The
/// caller's own key, when no other key can manage keys, is revoked only with `force`
/// (`Conflict` otherwise): nobody could issue a key for the account afterwards. Returns
/// the key's metadata.
pub async fn revoke_key(store: &dyn Store, principal: &Principal, key_id: &str, force: bool) -> Result<Value> {
    let acct = principal.account_id.as_str();
    for _ in 0..WRITE_RETRIES {
        let item = load_key(store, acct, key_id).await?;
        let Some(hash) = item.str("hash").map(str::to_string) else {
            return Ok(public_key(&item.attrs)); // already revoked
        };
        check_covers(principal, &item, "revoke")?;
        if !force && key_id == principal.key_id && !another_manager(store, acct, key_id).await? {
            return Err(Error::Conflict(
                "This is the account's last key that can manage keys; revoking it would leave no way to issue keys. Create another keys:manage key first, or pass ?force=true".into(),
            ));
        }
        let update = Update::default().set("revoked_at", ids::now_rfc3339()).remove("hash");
        let writes = vec![
            Write::Delete { key: keys::api_key_lookup(&hash), cond: None },
            Write::Update { key: item.key.clone(), update, cond: Some(Cond::eq("hash", hash.as_str())) },
            Write::Update { key: keys::account(acct), update: Update::default().add(KEY_COUNT, -1), cond: None },
        ];
        match store.transact(writes).await {
            Ok(()) => return Ok(public_key(&load_key(store, acct, key_id).await?.attrs)),
            Err(e) if e.is_conflict() => continue,
            Err(e) => return Err(e),
        }
    }
    Err(Error::Conflict("The API key changed concurrently; try again".into()))
}

/// Issues a new secret for an existing key of the caller's account (same id, name and
/// scopes); the old secret stops working at once. A revoked key cannot be rotated
/// (`InvalidStatus`); one with scopes the caller lacks is `Forbidden`.
pub async fn rotate_key(store: &dyn Store, principal: &Principal, key_id: &str) -> Result<IssuedKey> {
    let acct = principal.account_id.as_str();
    for _ in 0..WRITE_RETRIES {
        let item = load_key(store, acct, key_id).await?;
        let Some(old_hash) = item.str("hash").map(str::to_string) else {
            return Err(Error::InvalidStatus("The API key is revoked and cannot be rotated".into()));
        };
        check_covers(principal, &item, "rotate")?;
        let secret = ids::new_secret(KEY_PREFIX);
        let hash = ids::hash_secret(&secret);
        let scopes = item.get("scopes").cloned().unwrap_or_else(|| json!([]));
        let lookup = json!({"account_id": acct, "key_id": key_id, "scopes": scopes});
        let update = Update::default()
            .set("hash", hash.as_str())
            .set("prefix", &secret[..PREFIX_CHARS])
            .set("rotated_at", ids::now_rfc3339());
        let writes = vec![
            Write::Delete { key: keys::api_key_lookup(&old_hash), cond: None },
            Write::Put { item: Item::new(keys::api_key_lookup(&hash), obj(lookup)), cond: Some(Cond::NotExists) },
            Write::Update { key: item.key.clone(), update, cond: Some(Cond::eq("hash", old_hash.as_str())) },
        ];
        match store.transact(writes).await {
            Ok(()) => {
                let key = public_key(&load_key(store, acct, key_id).await?.attrs);
                return Ok(IssuedKey { secret, key });
            }
            Err(e) if e.is_conflict() => continue,
            Err(e) => return Err(e),
        }
    }
    Err(Error::Conflict("The API key changed concurrently; try again".into()))
}

/// Counts one hit in `bucket`'s current fixed window of `window_secs`. Over `limit` it is
/// `RateLimited` with the seconds until the window resets; `what` says what is counted.
pub async fn check_window(
    store: &dyn Store,
    bucket: &str,
    limit: u64,
    window_secs: u64,
    what: &str,
) -> Result<RateInfo> {
    let window_secs = window_secs.max(1) as i64;
    let now = ids::now_ms() / 1000;
    let window = now / window_secs;
    let reset_at = (window + 1) * window_secs;
    let reset_secs = (reset_at - now).max(1) as u64;
    let mut update = Update::default().add("count", 1);
    // Keep the window a minute past its end so a clock skew between callers cannot reset it.
    update.expires_at = Some(Some(reset_at + 60));
    let item = store.update(&keys::rate_window(bucket, window), update, None).await?;
    let count = item.i64("count").unwrap_or(1).max(0) as u64;
    if count > limit {
        let per = if window_secs == 60 { "minute".to_string() } else { format!("{window_secs} s") };
        return Err(Error::RateLimited(
            format!("Rate limit of {limit} {what} per {per} exceeded; retry in {reset_secs} s"),
            reset_secs,
        ));
    }
    Ok(RateInfo { limit, remaining: limit - count, reset_secs })
}

/// Counts one run start against the account's one-minute window: every key of the account
/// draws on the same budget, so minting keys buys no extra starts.
pub async fn check_run_starts(store: &dyn Store, acct: &str, limit_per_minute: u64) -> Result<RateInfo> {
    check_window(store, &format!("acct:{acct}"), limit_per_minute, 60, "run starts").await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::MemStore;

    #[tokio::test]
    async fn register_issues_a_key_that_authenticates_with_all_scopes() {
        let store = MemStore::new();
        let (account, issued) = register(&store, "Acme", Some("ops@acme.test")).await.unwrap();
        assert!(account["id"].as_str().unwrap().starts_with("acct_"));
        let whsec = account["callback_signing_secret"].as_str().unwrap();
        // Standard Webhooks: `whsec_` + base64 of the key bytes (32 bytes → 44 characters).
        assert!(whsec.starts_with("whsec_") && whsec.len() == 6 + 44, "{whsec}");
        assert_eq!(crate::callbacks::signing_key(whsec).unwrap().len(), 32);
        assert!(issued.secret.starts_with("bk_") && issued.secret.len() == 3 + 64);
        assert_eq!(issued.key["prefix"], json!(&issued.secret[..10]));
        let p = authenticate(&store, &issued.secret).await.unwrap();
        assert_eq!(p.account_id, account["id"].as_str().unwrap());
        assert!(p.require("keys:manage").is_ok());
    }

    #[tokio::test]
    async fn only_the_hash_of_a_secret_is_stored() {
        let store = MemStore::new();
        let (_, issued) = register(&store, "Acme", None).await.unwrap();
        let dump = format!("{:?}", store.dump());
        assert!(!dump.contains(&issued.secret));
        assert!(dump.contains(&ids::hash_secret(&issued.secret)));
    }

    #[tokio::test]
    async fn unknown_and_revoked_keys_are_unauthorized() {
        let store = MemStore::new();
        let (account, issued) = register(&store, "Acme", None).await.unwrap();
        let e = authenticate(&store, "bk_nope").await.unwrap_err();
        assert!(matches!(e, Error::Unauthorized(ref m) if m == "Invalid API key"));
        let p = authenticate(&store, &issued.secret).await.unwrap();
        assert_eq!(p.account_id, account["id"].as_str().unwrap());
        let key_id = issued.key["key_id"].as_str().unwrap();
        let revoked = revoke_key(&store, &p, key_id, true).await.unwrap();
        assert!(revoked["revoked_at"].is_string());
        assert!(authenticate(&store, &issued.secret).await.is_err());
        // Revoking twice is harmless; rotating a revoked key is not allowed.
        revoke_key(&store, &p, key_id, false).await.unwrap();
        assert!(matches!(rotate_key(&store, &p, key_id).await, Err(Error::InvalidStatus(_))));
    }

    #[tokio::test]
    async fn rotation_replaces_the_secret_and_keeps_the_key() {
        let store = MemStore::new();
        let (_, issued) = register(&store, "Acme", None).await.unwrap();
        let p = authenticate(&store, &issued.secret).await.unwrap();
        let key_id = issued.key["key_id"].as_str().unwrap();
        let rotated = rotate_key(&store, &p, key_id).await.unwrap();
        assert_ne!(rotated.secret, issued.secret);
        assert_eq!(rotated.key["key_id"], issued.key["key_id"]);
        assert!(authenticate(&store, &issued.secret).await.is_err());
        assert_eq!(authenticate(&store, &rotated.secret).await.unwrap().key_id, key_id);
    }

    #[tokio::test]
    async fn keys_cannot_grant_scopes_they_lack() {
        let store = MemStore::new();
        let (account, _) = register(&store, "Acme", None).await.unwrap();
        let p = Principal {
            account_id: account["id"].as_str().unwrap().into(),
            key_id: "key_x".into(),
            scopes: vec!["keys:manage".into(), "runs:read".into()],
        };
        let e = create_key(&store, &p, None, Some(vec!["*".into()])).await.unwrap_err();
        assert!(matches!(e, Error::Forbidden(_)));
        let e = create_key(&store, &p, None, Some(vec!["runs:fly".into()])).await.unwrap_err();
        assert!(matches!(e, Error::Validation { .. }));
        let k = create_key(&store, &p, Some("reader"), Some(vec!["runs:read".into()])).await.unwrap();
        assert_eq!(k.key["scopes"], json!(["runs:read"]));
    }

    fn scopes(s: &[&str]) -> Vec<String> {
        s.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn a_scope_set_covers_only_what_it_holds() {
        assert!(covers(&scopes(&["*"]), &scopes(&["*"])));
        assert!(covers(&scopes(&["*"]), &scopes(&["keys:manage", "runs:read"])));
        assert!(!covers(&scopes(&["keys:manage"]), &scopes(&["*"])));
        assert!(!covers(&scopes(&["keys:manage"]), &scopes(&["keys:manage", "runs:read"])));
        assert!(covers(&scopes(&["keys:manage", "runs:read"]), &scopes(&["runs:read"])));
        // runs:write already starts runs.
        assert!(covers(&scopes(&["runs:write"]), &scopes(&["workflows:execute"])));
        assert!(!covers(&scopes(&["workflows:execute"]), &scopes(&["runs:write"])));
    }

    #[tokio::test]
    async fn a_narrower_key_cannot_rotate_or_revoke_a_broader_one() {
        let store = MemStore::new();
        let (_, root) = register(&store, "Acme", None).await.unwrap();
        let root_p = authenticate(&store, &root.secret).await.unwrap();
        let manager = create_key(&store, &root_p, Some("m"), Some(scopes(&["keys:manage"]))).await.unwrap();
        let m = authenticate(&store, &manager.secret).await.unwrap();
        let root_id = root.key["key_id"].as_str().unwrap();
        assert!(matches!(rotate_key(&store, &m, root_id).await, Err(Error::Forbidden(_))));
        assert!(matches!(revoke_key(&store, &m, root_id, true).await, Err(Error::Forbidden(_))));
        // The `*` key still works: nothing was changed.
        assert!(authenticate(&store, &root.secret).await.is_ok());
        // Within its own scopes it may act.
        let reader = create_key(&store, &root_p, Some("r"), Some(scopes(&["keys:manage"]))).await.unwrap();
        let reader_id = reader.key["key_id"].as_str().unwrap();
        assert!(rotate_key(&store, &m, reader_id).await.is_ok());
        assert!(revoke_key(&store, &m, reader_id, false).await.is_ok());
    }

    #[tokio::test]
    async fn the_last_key_that_manages_keys_revokes_itself_only_with_force() {
        let store = MemStore::new();
        let (_, root) = register(&store, "Acme", None).await.unwrap();
        let p = authenticate(&store, &root.secret).await.unwrap();
        let root_id = root.key["key_id"].as_str().unwrap();
        // A key that cannot manage keys does not count as a way back in.
        create_key(&store, &p, Some("r"), Some(scopes(&["runs:read"]))).await.unwrap();
        assert!(matches!(revoke_key(&store, &p, root_id, false).await, Err(Error::Conflict(_))));
        assert!(authenticate(&store, &root.secret).await.is_ok());
        let other = create_key(&store, &p, Some("m"), Some(scopes(&["keys:manage"]))).await.unwrap();
        assert!(revoke_key(&store, &p, root_id, false).await.is_ok());
        let o = authenticate(&store, &other.secret).await.unwrap();
        let other_id = other.key["key_id"].as_str().unwrap();
        assert!(matches!(revoke_key(&store, &o, other_id, false).await, Err(Error::Conflict(_))));
        assert!(revoke_key(&store, &o, other_id, true).await.is_ok());
        assert!(authenticate(&store, &other.secret).await.is_err());
    }

    #[tokio::test]
    async fn run_starts_count_per_account_and_minute() {
        let store = MemStore::new();
        let first = check_run_starts(&store, "acct_a", 2).await.unwrap();
        assert_eq!((first.limit, first.remaining), (2, 1));
        assert_eq!(check_run_starts(&store, "acct_a", 2).await.unwrap().remaining, 0);
        match check_run_starts(&store, "acct_a", 2).await {
            Err(Error::RateLimited(m, s)) => {
                assert!((1..=60).contains(&s));
                assert!(m.contains("2 run starts per minute"), "{m}");
            }
            other => panic!("{other:?}"),
        }
        assert!(check_run_starts(&store, "acct_b", 2).await.is_ok());
    }

    #[tokio::test]
    async fn an_account_holds_at_most_fifty_active_keys() {
        let store = MemStore::new();
        let (_, root) = register(&store, "Acme", None).await.unwrap();
        let p = authenticate(&store, &root.secret).await.unwrap();
        let mut last = None;
        for _ in 1..MAX_KEYS_PER_ACCOUNT {
            last = Some(create_key(&store, &p, None, Some(scopes(&["runs:read"]))).await.unwrap());
        }
        let e = create_key(&store, &p, None, Some(scopes(&["runs:read"]))).await.unwrap_err();
        assert!(matches!(e, Error::Conflict(ref m) if m.contains("50 active")), "{e:?}");
        // A revoked key frees its place.
        let last_id = last.unwrap().key["key_id"].as_str().unwrap().to_string();
        revoke_key(&store, &p, &last_id, false).await.unwrap();
        create_key(&store, &p, None, Some(scopes(&["runs:read"]))).await.unwrap();
        assert!(create_key(&store, &p, None, None).await.is_err());
    }
}

//! Webhook blocks (DESIGN.md §4, §5): a graph's `webhook` block declares a door
//! `POST /api/webhooks/{webhook_id}` that starts the workflow with the request body as input.
//!
//! - `config.webhook_id` must be a UUID (400 on save); `config.webhook_secret` is optional,
//!   but a block without one can never be triggered.
//! - The secret is only ever compared, so it is stored as `sha256:<hex>` in the saved graph
//!   (a graph read back and saved again keeps it) and as a hash in the index item.
//! - The index item `WEBHOOK#{uuid}` (`{account_id, workflow_id, block_id, secret_hash}`) is
//!   written in the same transaction as the graph version, so a lookup at the door is one
//!   read, never a scan. A `webhook_id` belongs to one workflow: claiming one that another
//!   workflow (of any account) holds is a 409. Re-saves drop the ids the new graph no longer
//!   has; deleting the workflow drops them all. The head keeps the list (`webhook_ids`).
//! - Whether a call is let in depends on the head: `deploy_state = "deployed"` → every call
//!   until undeploy; `armed_until` in the future → exactly one call, taken with a conditional
//!   write that removes `armed_until` (two racing calls: one wins, the other is refused);
//!   otherwise refused with 409.

use crate::error::{Error, Result};
use crate::graph::Graph;
use crate::store::{Cond, Item, Store, Update, Write};
use crate::{ids, keys};
use serde_json::{Map, Value, json};
use subtle::ConstantTimeEq;

/// Most webhook blocks in one workflow.
pub const MAX_WEBHOOK_BLOCKS: usize = 20;
pub const MAX_SECRET_LEN: usize = 256;
/// How long an armed workflow waits for its one call.
pub const ARM_WINDOW_SECS: i64 = 600;
const HASH_PREFIX: &str = "sha256:";

/// The canonical (lower-case, hyphenated) form of a UUID, or `None`.
pub fn canonical_uuid(s: &str) -> Option<String> {
    if s.len() != 36 {
        return None;
    }
    uuid::Uuid::try_parse(s).ok().map(|u| u.hyphenated().to_string())
}

fn stored_hash(s: &str) -> Option<&str> {
    s.strip_prefix(HASH_PREFIX).filter(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// Save-time check of a webhook block's config (`model::build_graph` calls it).
pub fn check_block_config(c: &Value) -> std::result::Result<(), String> {
    match c.get("webhook_id") {
        Some(Value::String(s)) if canonical_uuid(s).is_some() => {}
        Some(v) => return Err(format!("`webhook_id` must be a UUID (e.g. {}), not {v}", uuid::Uuid::new_v4())),
        None => return Err("a webhook block needs `webhook_id` (a UUID)".into()),
    }
    match c.get("webhook_secret") {
        None | Some(Value::Null) => Ok(()),
        Some(Value::String(s)) if (1..=MAX_SECRET_LEN).contains(&s.len()) && !s.chars().any(char::is_control) => Ok(()),
        Some(_) => Err(format!("`webhook_secret` must be a string of 1..={MAX_SECRET_LEN} characters, or null")),
    }
}

/// Replaces every webhook block's plain `webhook_secret` by `sha256:<hex>` (a value already
/// in that form is kept: it is the secret read back from an earlier save).
pub fn hash_secrets(graph: &mut Graph) {
    for b in graph.blocks.iter_mut().filter(|b| b.kind == "webhook") {
        if let Some(Value::String(s)) = b.config.get("webhook_secret")
            && stored_hash(s).is_none()
        {
            let hashed = format!("{HASH_PREFIX}{}", ids::hash_secret(s));
            b.config["webhook_secret"] = json!(hashed);
        }
    }
}

/// One webhook block's claim on its id.
#[derive(Clone, Debug, PartialEq)]
pub struct Claim {
    pub webhook_id: String,
    pub block_id: String,
    pub secret_hash: Option<String>,
}

/// The claims of a (validated, hashed) graph. Two blocks with the same id are a 400.
pub fn claims(graph: &Graph) -> Result<Vec<Claim>> {
    let mut out: Vec<Claim> = Vec::new();
    for (i, b) in graph.blocks.iter().enumerate().filter(|(_, b)| b.kind == "webhook") {
        let at = |m: String| Error::validation_at(vec![json!("blocks"), json!(i), json!("config")], m);
        let webhook_id = b.config.get("webhook_id").and_then(Value::as_str).and_then(canonical_uuid);
        let webhook_id = webhook_id.ok_or_else(|| at("`webhook_id` must be a UUID".into()))?;
        if out.iter().any(|c| c.webhook_id == webhook_id) {
            return Err(at(format!("`webhook_id` {webhook_id} is used by two blocks of this workflow")));
        }
        let secret_hash = match b.config.get("webhook_secret") {
            Some(Value::String(s)) => Some(stored_hash(s).map(str::to_string).unwrap_or_else(|| ids::hash_secret(s))),
            _ => None,
        };
        out.push(Claim { webhook_id, block_id: b.id.clone(), secret_hash });
        if out.len() > MAX_WEBHOOK_BLOCKS {
            return Err(at(format!("a workflow may have at most {MAX_WEBHOOK_BLOCKS} webhook blocks")));
        }
    }
    Ok(out)
}

fn owned_by(acct: &str, wf: &str) -> Cond {
    Cond::eq("account_id", acct).and(Cond::eq("workflow_id", wf))
}

/// The ids a workflow head lists as claimed.
pub fn claimed_ids(head: &Map<String, Value>) -> Vec<String> {
    head.get("webhook_ids")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).map(str::to_string).collect())
        .unwrap_or_default()
}

/// Writes that make the index say exactly `claims` for this workflow: claim (or refresh)
/// each id, unless another workflow holds it, and release the ids it held before but no
/// longer has.
pub fn index_writes(acct: &str, wf: &str, previous: &[String], claims: &[Claim]) -> Vec<Write> {
    let mut writes = Vec::new();
    for c in claims {
        let attrs = json!({"account_id": acct, "workflow_id": wf, "block_id": c.block_id,
                           "secret_hash": c.secret_hash, "updated_at": ids::now_rfc3339()});
        let Value::Object(attrs) = attrs else { unreachable!("json! object") };
        writes.push(Write::Put {
            item: Item::new(keys::webhook(&c.webhook_id), attrs),
            cond: Some(Cond::Or(vec![Cond::NotExists, owned_by(acct, wf)])),
        });
    }
    for old in previous.iter().filter(|o| !claims.iter().any(|c| &c.webhook_id == *o)) {
        writes.push(Write::Delete {
            key: keys::webhook(old),
            cond: Some(Cond::Or(vec![Cond::NotExists, owned_by(acct, wf)])),
        });
    }
    writes
}

/// After a failed claim transaction: the 409 naming the id another workflow holds, if any
/// (`None`: the failure was something else, e.g. a concurrent save; retry).
pub async fn taken_conflict(store: &dyn Store, acct: &str, wf: &str, claims: &[Claim]) -> Result<Option<Error>> {
    for c in claims {
        if let Some(item) = store.get(&keys::webhook(&c.webhook_id)).await?
            && (item.str("account_id") != Some(acct) || item.str("workflow_id") != Some(wf))
        {
            // Never say which workflow (it may be another account's).
            return Ok(Some(Error::Conflict(format!(
                "webhook_id {} is already used by another workflow; give this block a new UUID",
                c.webhook_id
            ))));
        }
    }
    Ok(None)
}

/// Where a webhook id leads.
#[derive(Clone, Debug, PartialEq)]
pub struct Target {
    pub account_id: String,
    pub workflow_id: String,
    pub block_id: String,
    secret_hash: Option<String>,
}

/// Looks a webhook id up; an unknown (or malformed) id is `NotFound`.
pub async fn lookup(store: &dyn Store, webhook_id: &str) -> Result<Target> {
    let not_found = || Error::NotFound(format!("No webhook with id '{webhook_id}'"));
    let id = canonical_uuid(webhook_id).ok_or_else(not_found)?;
    let item = store.get(&keys::webhook(&id)).await?.ok_or_else(not_found)?;
    let field =
        |n: &str| item.str(n).map(str::to_string).ok_or_else(|| Error::internal(format!("webhook {id}: no {n}")));
    Ok(Target {
        account_id: field("account_id")?,
        workflow_id: field("workflow_id")?,
        block_id: field("block_id")?,
        secret_hash: item.str("secret_hash").map(str::to_string),
    })
}

/// The secret a caller presented, as found in the request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Presented {
    /// `Authorization: Bearer <token>` (possibly empty: still decisive).
    Bearer(String),
    /// `?token=<secret>`, when no Bearer header was sent.
    Query(String),
    None,
}

/// Picks the credential: an `Authorization` header whose scheme is `Bearer` decides, even
/// with an empty token (the query is then not looked at); otherwise `?token=`.
pub fn presented(authorization: Option<&str>, query_token: Option<&str>) -> Presented {
    if let Some(h) = authorization {
        let h = h.trim();
        let (scheme, rest) = h.split_once(' ').unwrap_or((h, ""));
        if scheme.eq_ignore_ascii_case("bearer") {
            return Presented::Bearer(rest.trim().to_string());
        }
    }
    match query_token {
        Some(t) => Presented::Query(t.to_string()),
        None => Presented::None,
    }
}

impl Target {
    /// Checks the presented secret against the block's (constant time over the hashes).
    pub fn authenticate(&self, p: &Presented) -> Result<()> {
        let Some(expected) = &self.secret_hash else {
            return Err(Error::Unauthorized(
                "This webhook block has no webhook_secret, so it cannot be triggered; set one and save the workflow"
                    .into(),
            ));
        };
        let token = match p {
            Presented::Bearer(t) | Presented::Query(t) if !t.is_empty() => t,
            Presented::Bearer(_) => {
                return Err(Error::Unauthorized("Empty Bearer token: send Authorization: Bearer <secret>".into()));
            }
            Presented::Query(_) | Presented::None => {
                return Err(Error::Unauthorized(
                    "Missing secret: send Authorization: Bearer <secret> or ?token=<secret>".into(),
                ));
            }
        };
        let given = ids::hash_secret(token);
        if bool::from(given.as_bytes().ct_eq(expected.as_bytes())) {
            Ok(())
        } else {
            Err(Error::Unauthorized("Invalid webhook secret".into()))
        }
    }
}

/// How a call was let in.
#[derive(Clone, Debug, PartialEq)]
pub enum Admission {
    Deployed,
    /// The arm was consumed; `until` is what it said (to re-arm if the run cannot start).
    Armed {
        until: String,
    },
}

fn not_admitted(wf: &str) -> Error {
    Error::Conflict(format!(
        "Workflow '{wf}' is not deployed and not armed: deploy it (POST /api/v1/workflows/{wf}/deploy) \
         or arm it for one call within 10 minutes (POST /api/v1/workflows/{wf}/arm)"
    ))
}

/// Lets a call in if the workflow is deployed, or consumes its arm. `Conflict` otherwise.
pub async fn admit(store: &dyn Store, acct: &str, wf: &str) -> Result<Admission> {
    let head = store.get(&keys::workflow(acct, wf)).await?.ok_or_else(|| not_admitted(wf))?;
    if head.str("deploy_state") == Some("deployed") {
        return Ok(Admission::Deployed);
    }
    let now = ids::now_rfc3339();
    let Some(until) = head.str("armed_until").filter(|u| *u > now.as_str()).map(str::to_string) else {
        return Err(not_admitted(wf));
    };
    let cond = Cond::eq("armed_until", until.clone()).and(Cond::Gt("armed_until".into(), json!(now)));
    match store.update(&keys::workflow(acct, wf), Update::default().remove("armed_until"), Some(cond)).await {
        Ok(_) => Ok(Admission::Armed { until }),
        // Another call took the arm first (or it was changed): exactly one call gets in.
        Err(e) if e.is_conflict() => Err(not_admitted(wf)),
        Err(e) => Err(e),
    }
}

/// Gives back an arm consumed by a call whose run could not start (only if nobody re-armed,
/// deployed or took it meanwhile).
pub async fn give_back(store: &dyn Store, acct: &str, wf: &str, until: &str) -> Result<()> {
    // "Not armed now": absent or null (no string is greater than "" without being one).
    let cond = Cond::Exists.and(Cond::Not(Box::new(Cond::Gt("armed_until".into(), json!("")))));
    match store.update(&keys::workflow(acct, wf), Update::default().set("armed_until", until), Some(cond)).await {
        Ok(_) => Ok(()),
        Err(e) if e.is_conflict() => Ok(()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::build_graph;

    fn graph(blocks: Value) -> Result<Graph> {
        build_graph(Some(&blocks), None, None)
    }

    #[test]
    fn webhook_id_must_be_a_uuid() {
        let e = graph(json!([{"id": "w", "type": "webhook", "config": {"webhook_id": "nope"}}])).unwrap_err();
        let Error::Validation { details, .. } = e else { panic!("{e:?}") };
        assert_eq!(details[0].path, vec![json!("blocks"), json!(0), json!("config")]);
        assert!(graph(json!([{"id": "w", "type": "webhook"}])).is_err());
        let id = uuid::Uuid::new_v4().to_string();
        assert!(graph(json!([{"id": "w", "type": "webhook", "config": {"webhook_id": id}}])).is_ok());
        let e = graph(json!([{"id": "w", "type": "webhook", "config": {"webhook_id": id, "webhook_secret": 5}}]));
        assert!(e.is_err());
    }

    #[test]
    fn secrets_are_hashed_once_and_kept_on_resave() {
        let id = uuid::Uuid::new_v4().to_string();
        let mut g =
            graph(json!([{"id": "w", "type": "webhook", "config": {"webhook_id": id, "webhook_secret": "s3cret"}}]))
                .unwrap();
        hash_secrets(&mut g);
        let stored = g.blocks[0].config["webhook_secret"].as_str().unwrap().to_string();
        assert_eq!(stored, format!("sha256:{}", ids::hash_secret("s3cret")));
        hash_secrets(&mut g);
        assert_eq!(g.blocks[0].config["webhook_secret"], json!(stored));
        let c = claims(&g).unwrap();
        assert_eq!(c[0].secret_hash.as_deref(), Some(ids::hash_secret("s3cret").as_str()));
    }

    #[test]
    fn two_blocks_cannot_share_a_webhook_id() {
        let id = uuid::Uuid::new_v4().to_string();
        let g = build_graph(
            Some(&json!([{"id": "a", "type": "webhook", "config": {"webhook_id": id}},
                          {"id": "b", "type": "webhook", "config": {"webhook_id": id.to_uppercase()}}])),
            None,
            None,
        )
        .unwrap();
        assert!(matches!(claims(&g), Err(Error::Validation { .. })));
    }

    #[test]
    fn a_bearer_header_decides_even_when_empty() {
        assert_eq!(presented(Some("Bearer "), Some("q")), Presented::Bearer(String::new()));
        assert_eq!(presented(Some("Bearer"), Some("q")), Presented::Bearer(String::new()));
        assert_eq!(presented(Some("bearer abc"), None), Presented::Bearer("abc".into()));
        assert_eq!(presented(Some("Basic eA=="), Some("q")), Presented::Query("q".into()));
        assert_eq!(presented(None, None), Presented::None);
        let t = Target {
            account_id: "a".into(),
            workflow_id: "w".into(),
            block_id: "b".into(),
            secret_hash: Some(ids::hash_secret("right")),
        };
        assert!(t.authenticate(&Presented::Bearer("right".into())).is_ok());
        assert!(t.authenticate(&Presented::Query("right".into())).is_ok());
        assert!(t.authenticate(&Presented::Bearer(String::new())).is_err());
        assert!(t.authenticate(&Presented::Bearer("wrong".into())).is_err());
        assert!(t.authenticate(&Presented::None).is_err());
        let open = Target { secret_hash: None, ..t };
        assert!(open.authenticate(&Presented::Bearer("anything".into())).is_err());
    }
}

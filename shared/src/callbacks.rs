//! Outbound callbacks (DESIGN.md §5): when a run completes, fails, is cancelled or starts
//! waiting for a person, Baton POSTs the run summary to the run's `callback_url` (from the
//! run start, else the trigger's, else the workflow's), signed per Standard Webhooks with
//! the account's `callback_signing_secret`, and retries with exponential backoff for a day.
//!
//! Delivery is an outbox: the transition's own transaction writes a delivery item
//! (`keys::callback`, status `pending`), so a transition and its callback commit together
//! or not at all. The queue then carries `Msg::Callback { run, delivery, attempt }`:
//! - before the commit, a safety message is sent with a delay (it finds no item, and does
//!   nothing, if the commit did not happen); after the commit, the same message is sent at
//!   once. A crash between commit and send therefore delays a callback but never loses it.
//! - a message acts only if the item is `pending` and its attempt count equals the message's;
//!   an attempt is claimed with a conditional write (lease), so duplicate and stale
//!   messages are harmless and two workers never run the same attempt.
//! - the message for the next attempt is sent (delayed) before the attempt's result is
//!   committed, so a crash after that commit cannot end the retry chain either.
//!
//! The delivery id is fixed when the transition commits and is the `webhook-id` of every
//! attempt (receivers deduplicate by it): at-least-once delivery, one delivery per
//! transition.

use crate::error::{Error, Result};
use crate::ids;
use crate::store::Item;
use async_trait::async_trait;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;
use std::time::Duration;

pub const RUN_COMPLETED: &str = "run.completed";
pub const RUN_FAILED: &str = "run.failed";
pub const RUN_CANCELLED: &str = "run.cancelled";
pub const RUN_WAITING_HUMAN: &str = "run.waiting_human";
pub const EVENTS: &[&str] = &[RUN_COMPLETED, RUN_FAILED, RUN_CANCELLED, RUN_WAITING_HUMAN];

pub const USER_AGENT: &str = concat!("Baton-Callbacks/", env!("CARGO_PKG_VERSION"));
/// Standard Webhooks secrets: this prefix, then the key bytes in base64.
pub const SECRET_PREFIX: &str = "whsec_";
/// After a rotation the previous secret still signs (a second signature) for this long, so
/// receivers can switch without losing deliveries.
pub const PREVIOUS_SECRET_GRACE: Duration = Duration::from_secs(24 * 3600);
/// How long after a transition its safety message comes (see the module docs).
pub(crate) const SAFETY_DELAY: Duration = Duration::from_secs(30);
/// Largest payload stored and sent; a bigger run output is left out (`output_omitted`).
pub const MAX_PAYLOAD_BYTES: usize = 64 * 1024;
/// Attempts kept in a delivery's log (the count is kept in full).
pub(crate) const MAX_LOG: usize = 50;
/// Response body characters kept per attempt, for the delivery log.
pub const MAX_RESPONSE_EXCERPT: usize = 512;
/// Growth factor and cap (as multiples of the base) of the retry delays.
pub(crate) const BACKOFF_FACTOR: u32 = 3;
pub(crate) const BACKOFF_CAP_MULTIPLE: u32 = 1440;

/// A fresh signing secret: `whsec_` + base64 of 32 random bytes.
pub fn new_signing_secret() -> String {
    let key: [u8; 32] = rand::random();
    format!("{SECRET_PREFIX}{}", B64.encode(key))
}

/// The HMAC key of a `whsec_…` secret: the base64 after the prefix, decoded.
pub fn signing_key(secret: &str) -> Result<Vec<u8>> {
    let b64 = secret.strip_prefix(SECRET_PREFIX).unwrap_or(secret);
    B64.decode(b64).map_err(|e| Error::internal(format!("callback signing secret is not base64: {e}")))
}

/// `v1,<base64 HMAC-SHA256(key, "{id}.{timestamp}.{body}")>` (Standard Webhooks).
pub fn sign(secret: &str, msg_id: &str, timestamp: i64, body: &[u8]) -> Result<String> {
    let key = signing_key(secret)?;
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).map_err(Error::internal)?;
    mac.update(msg_id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    Ok(format!("v1,{}", B64.encode(mac.finalize().into_bytes())))
}

/// The `webhook-signature` header: one signature per secret, space-separated.
pub fn signature_header(secrets: &[&str], msg_id: &str, timestamp: i64, body: &[u8]) -> Result<String> {
    let sigs: Result<Vec<String>> = secrets.iter().map(|s| sign(s, msg_id, timestamp, body)).collect();
    Ok(sigs?.join(" "))
}

/// The delay after the `attempt`-th failed attempt (1-based): `base × 3^(attempt-1)`, capped
/// at `base × 1440`, with ±20 % jitter so retries of many deliveries spread out.
pub fn backoff(base: Duration, attempt: u32) -> Duration {
    let base_ms = base.as_millis().max(1) as u64;
    let exp = BACKOFF_FACTOR.saturating_pow(attempt.saturating_sub(1).min(20)) as u64;
    let ms = base_ms.saturating_mul(exp).min(base_ms.saturating_mul(BACKOFF_CAP_MULTIPLE as u64));
    let jitter = rand::random_range(0.8..=1.2);
    Duration::from_millis((ms as f64 * jitter) as u64)
}

/// One outbound request.
#[derive(Clone, Debug)]
pub struct Outgoing {
    pub url: String,
    pub headers: Vec<(&'static str, String)>,
    pub body: Vec<u8>,
    pub timeout: Duration,
}

/// What became of one request.
#[derive(Clone, Debug, PartialEq)]
pub enum Sent {
    /// The target answered (any status); `body` is the start of its answer.
    Answered { status: u16, body: String },
    /// The target is on an address that is not allowed: retrying cannot help.
    Refused(String),
    /// No answer (DNS, connect, TLS, timeout...): worth retrying.
    Failed(String),
}

/// The port outbound callbacks are sent through. Adapters must not follow redirects, must
/// connect only to addresses [`crate::net_guard`] permits, and must give up after
/// `timeout`.
#[async_trait]
pub trait Transport: Send + Sync + 'static {
    async fn post(&self, req: Outgoing) -> Sent;
}

pub(crate) fn ts(ms: Option<i64>) -> Value {
    ms.map(ids::ms_to_rfc3339).map(Value::from).unwrap_or(Value::Null)
}

/// The run as a callback shows it, after the transition: `status`, `output`, `error` and
/// `finished_at` are given since the run item read before the commit does not hold them.
pub(crate) fn run_summary(run: &Item, status: &str, output: Option<&Value>, error: Option<&Value>, now: i64) -> Value {
    let terminal = matches!(status, "completed" | "failed" | "cancelled");
    json!({
        "run_id": run.str("run_id"),
        "workflow_id": run.str("workflow_id"),
        "workflow_version": run.i64("version"),
        "status": status,
        "output": output.or(run.get("output")).cloned().unwrap_or(Value::Null),
        "error": error.or(run.get("error")).cloned().unwrap_or(Value::Null),
        "metadata": run.get("metadata").cloned().unwrap_or(json!({})),
        "created_at": ts(run.i64("created_at")),
        "updated_at": ts(Some(now)),
        "finished_at": if terminal { ts(Some(now)) } else { Value::Null },
    })
}

/// The body of a callback: `{"type", "timestamp", "data"}`, with an over-large output left
/// out so the delivery item stays small.
pub(crate) fn payload(event: &str, data: Value, now: i64) -> Result<Value> {
    let mut p = json!({"type": event, "timestamp": ids::ms_to_rfc3339(now), "data": data});
    if serde_json::to_vec(&p)?.len() > MAX_PAYLOAD_BYTES {
        p["data"]["output"] = Value::Null;
        p["data"]["output_omitted"] = json!(true);
        if serde_json::to_vec(&p)?.len() > MAX_PAYLOAD_BYTES {
            p["data"]["error"] = Value::Null;
            p["data"]["metadata"] = json!({});
        }
    }
    Ok(p)
}

/// A delivery as the API shows it.
pub fn delivery_view(i: &Item, with_payload: bool) -> Value {
    let attempts: Vec<Value> = i
        .get("log")
        .and_then(Value::as_array)
        .map(|log| {
            log.iter()
                .map(|e| {
                    json!({
                        "attempt": e.get("attempt"),
                        "at": ts(e.get("at").and_then(Value::as_i64)),
                        "response_status": e.get("response_status").cloned().unwrap_or(Value::Null),
                        "response_body": e.get("response_body").cloned().unwrap_or(Value::Null),
                        "error": e.get("error").cloned().unwrap_or(Value::Null),
                        "duration_ms": e.get("duration_ms"),
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    let status = i.str("status").unwrap_or("pending");
    let mut v = json!({
        "delivery_id": i.str("delivery_id"),
        "run_id": i.str("run_id"),
        "event": i.str("event"),
        "url": i.str("url"),
        "status": status,
        "attempt_count": i.i64("attempts").unwrap_or(0),
        "attempts": attempts,
        "next_attempt_at": if status == "pending" { ts(i.i64("next_attempt_at")) } else { Value::Null },
        "retry_until": ts(i.i64("window_until")),
        "redeliveries": i.i64("redeliveries").unwrap_or(0),
        "created_at": ts(i.i64("created_at")),
        "delivered_at": ts(i.i64("delivered_at")),
        "failed_at": ts(i.i64("failed_at")),
    });
    if with_payload {
        v["payload"] = i.get("payload").cloned().unwrap_or(Value::Null);
    }
    v
}

#[cfg(test)]
#[path = "callbacks_tests.rs"]
mod tests;

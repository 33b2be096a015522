//! The engine's side of outbound callbacks (`crate::callbacks` has the what: payloads,
//! signatures, the transport): writing a delivery with the transition that causes it, and
//! running its attempts from the queue.

use super::{Engine, Handled, Msg};
use crate::callbacks::*;
use crate::error::{Error, Result};
use crate::keys;
use crate::queue::MAX_DELAY;
use crate::store::{Attrs, Cond, Item, Query, SkRange, Update, Write};
use crate::{accounts, ids};
use serde_json::{Value, json};
use std::time::Duration;
use tracing::{debug, info, warn};

/// A delivery to write with a transition, and the message that starts it.
pub(crate) struct Outbox {
    pub write: Write,
    pub msg: Msg,
}

impl Engine {
    /// The delivery of `event` for `run` (none when the run has no callback URL), to be
    /// written in the transition's transaction. Sends the safety message first.
    pub(crate) async fn callback_outbox(
        &self,
        run: &Item,
        event: &str,
        data: Value,
        now: i64,
    ) -> Result<Option<Outbox>> {
        let Some(url) = run.str("callback_url") else { return Ok(None) };
        let run_id = run.str("run_id").unwrap_or_default();
        let delivery_id = ids::new_id("dlv");
        let mut a = Attrs::new();
        a.insert("delivery_id".into(), json!(delivery_id));
        a.insert("run_id".into(), json!(run_id));
        a.insert("account_id".into(), json!(run.str("account_id")));
        a.insert("event".into(), json!(event));
        a.insert("url".into(), json!(url));
        a.insert("payload".into(), payload(event, data, now)?);
        a.insert("status".into(), json!("pending"));
        a.insert("attempts".into(), json!(0));
        a.insert("log".into(), json!([]));
        a.insert("created_at".into(), json!(now));
        a.insert("next_attempt_at".into(), json!(now));
        a.insert("window_until".into(), json!(now + self.cfg.callback_window.as_millis() as i64));
        let msg = Msg::Callback { r: run_id.to_string(), d: delivery_id.clone(), n: 0 };
        self.send(vec![(msg.clone(), SAFETY_DELAY)]).await?;
        let write =
            Write::Put { item: Item::new(keys::callback(run_id, &delivery_id), a), cond: Some(Cond::NotExists) };
        Ok(Some(Outbox { write, msg }))
    }

    /// After the transition committed: start its deliveries now. A failed send is only
    /// logged; the safety message sent before the commit starts them a little later.
    pub(crate) async fn flush_outbox(&self, outbox: Vec<Outbox>) {
        let msgs: Vec<(Msg, Duration)> = outbox.into_iter().map(|o| (o.msg, Duration::ZERO)).collect();
        if let Err(e) = self.send(msgs).await {
            warn!(error = %e, "could not enqueue callbacks; their safety messages will start them");
        }
    }

    /// One attempt of one delivery (see the module docs for the protocol).
    pub(crate) async fn handle_callback(&self, run_id: &str, delivery_id: &str, n: u32) -> Result<Handled> {
        let key = keys::callback(run_id, delivery_id);
        let Some(item) = self.store.get(&key).await? else {
            debug!("no such delivery (its transition did not commit)");
            return Ok(Handled::done());
        };
        if item.str("status") != Some("pending") || item.i64("attempts").unwrap_or(0) != n as i64 {
            return Ok(Handled::done());
        }
        let now = ids::now_ms();
        if let Some(lease) = item.i64("lease_until").filter(|l| *l > now) {
            return Ok(Handled::retry(Duration::from_millis((lease - now) as u64 + 500)));
        }
        if let Some(at) = item.i64("next_attempt_at").filter(|at| *at > now) {
            let msg = Msg::Callback { r: run_id.into(), d: delivery_id.into(), n };
            self.send(vec![(msg, Duration::from_millis((at - now) as u64).min(MAX_DELAY))]).await?;
            return Ok(Handled::done());
        }
        let timeout = self.cfg.callback_timeout;
        let token = ids::new_id("clm");
        let claim = Cond::And(vec![
            Cond::eq("status", "pending"),
            Cond::eq("attempts", n),
            Cond::Or(vec![Cond::AttrAbsent("lease_until".into()), Cond::Lt("lease_until".into(), json!(now))]),
        ]);
        let lease_until = now + (timeout + Duration::from_secs(5)).as_millis() as i64;
        let upd = Update::default().set("lease_until", lease_until).set("claim", token.as_str());
        match self.store.update(&key, upd, Some(claim)).await {
            Ok(_) => {}
            Err(Error::Conflict(_)) => return Ok(Handled::done()),
            Err(e) => return Err(e),
        }

        let body = serde_json::to_vec(item.get("payload").unwrap_or(&Value::Null))?;
        let url = item.str("url").unwrap_or_default().to_string();
        let started = ids::now_ms();
        let sent = match self.signing_secrets(item.str("account_id").unwrap_or_default(), started).await? {
            None => Sent::Refused("the account no longer exists".into()),
            Some(secrets) => {
                let refs: Vec<&str> = secrets.iter().map(String::as_str).collect();
                let stamp = started / 1000;
                let headers = vec![
                    ("content-type", "application/json".to_string()),
                    ("user-agent", USER_AGENT.to_string()),
                    ("webhook-id", delivery_id.to_string()),
                    ("webhook-timestamp", stamp.to_string()),
                    ("webhook-signature", signature_header(&refs, delivery_id, stamp, &body)?),
                ];
                self.transport.post(Outgoing { url: url.clone(), headers, body, timeout }).await
            }
        };
        let done = ids::now_ms();
        let attempt = n + 1;
        let mut entry = json!({"attempt": attempt, "at": started, "duration_ms": done - started});
        let mut upd = Update::default().set("attempts", attempt).remove("lease_until").remove("claim");
        let mut next: Option<(Msg, Duration)> = None;
        let outcome = match &sent {
            Sent::Answered { status, .. } if (200..300).contains(status) => "delivered",
            Sent::Refused(_) => "failed",
            _ => {
                let delay = backoff(self.cfg.callback_backoff, attempt);
                let at = done + delay.as_millis() as i64;
                if at > item.i64("window_until").unwrap_or(0) {
                    "failed"
                } else {
                    upd = upd.set("next_attempt_at", at);
                    next = Some((
                        Msg::Callback { r: run_id.into(), d: delivery_id.into(), n: attempt },
                        delay.min(MAX_DELAY),
                    ));
                    "pending"
                }
            }
        };
        match &sent {
            Sent::Answered { status, body } => {
                entry["response_status"] = json!(status);
                entry["response_body"] = json!(body);
            }
            Sent::Refused(e) | Sent::Failed(e) => entry["error"] = json!(e),
        }
        upd = upd.set("status", outcome);
        match outcome {
            "delivered" => upd = upd.set("delivered_at", done).remove("next_attempt_at"),
            "failed" => upd = upd.set("failed_at", done).remove("next_attempt_at"),
            _ => {}
        }
        let mut log = item.get("log").and_then(Value::as_array).cloned().unwrap_or_default();
        log.push(entry);
        if log.len() > MAX_LOG {
            log.drain(..log.len() - MAX_LOG);
        }
        upd = upd.set("log", log);
        // The next attempt's message goes out before this attempt's result is committed:
        // if we crash after the commit, the chain still goes on.
        if let Some(m) = next {
            self.send(vec![m]).await?;
        }
        match self.store.update(&key, upd, Some(Cond::eq("claim", token.as_str()))).await {
            Ok(_) => {}
            // The lease ran out and another worker took the attempt over: its result counts.
            Err(Error::Conflict(_)) => return Ok(Handled::done()),
            Err(e) => return Err(e),
        }
        let status = match &sent {
            Sent::Answered { status, .. } => Some(*status),
            _ => None,
        };
        info!(delivery_id, attempt, ?status, outcome, "callback attempt");
        Ok(Handled::done())
    }

    /// The secrets a delivery is signed with now: the account's current one, and the
    /// previous one within its grace period. `None` when the account is gone.
    async fn signing_secrets(&self, acct: &str, now: i64) -> Result<Option<Vec<String>>> {
        let Some(a) = self.store.get(&keys::account(acct)).await? else { return Ok(None) };
        let mut out = Vec::new();
        if let Some(s) = a.str("callback_signing_secret") {
            out.push(s.to_string());
        }
        if let (Some(p), Some(until)) = (a.str(accounts::PREVIOUS_SECRET), a.i64(accounts::PREVIOUS_SECRET_UNTIL))
            && until > now
        {
            out.push(p.to_string());
        }
        if out.is_empty() {
            return Err(Error::internal(format!("account {acct} has no callback signing secret")));
        }
        Ok(Some(out))
    }

    /// `GET /runs/{id}/callbacks`: the run's deliveries, oldest first, without payloads.
    pub async fn list_callbacks(
        &self,
        acct: &str,
        run_id: &str,
        limit: usize,
        cursor: Option<String>,
    ) -> Result<Value> {
        self.owned_run(acct, run_id).await?;
        let page = self
            .store
            .query(Query {
                pk: keys::run_pk(run_id),
                range: SkRange::Prefix(keys::CALLBACK_PREFIX.into()),
                limit: limit.clamp(1, 100),
                cursor,
                descending: false,
            })
            .await?;
        let data: Vec<Value> = page.items.iter().map(|i| delivery_view(i, false)).collect();
        Ok(json!({"data": data, "next_cursor": page.next_cursor}))
    }

    /// `GET /runs/{id}/callbacks/{delivery_id}`: one delivery with its payload.
    pub async fn get_callback(&self, acct: &str, run_id: &str, delivery_id: &str) -> Result<Value> {
        Ok(delivery_view(&self.load_delivery(acct, run_id, delivery_id).await?, true))
    }

    async fn load_delivery(&self, acct: &str, run_id: &str, delivery_id: &str) -> Result<Item> {
        self.owned_run(acct, run_id).await?;
        self.store
            .get(&keys::callback(run_id, delivery_id))
            .await?
            .ok_or_else(|| Error::not_found(format!("delivery {delivery_id}")))
    }

    /// Sends a delivery again now, whatever its state (delivered, failed, or waiting for a
    /// retry), with a fresh retry window. Refused while an attempt is in flight.
    pub async fn redeliver_callback(&self, acct: &str, run_id: &str, delivery_id: &str) -> Result<Value> {
        let item = self.load_delivery(acct, run_id, delivery_id).await?;
        let now = ids::now_ms();
        if item.i64("lease_until").is_some_and(|l| l > now) {
            return Err(Error::Conflict(format!("delivery {delivery_id} is being attempted right now; retry shortly")));
        }
        let attempts = item.i64("attempts").unwrap_or(0);
        let status = item.str("status").unwrap_or("pending").to_string();
        let upd = Update::default()
            .set("status", "pending")
            .set("next_attempt_at", now)
            .set("window_until", now + self.cfg.callback_window.as_millis() as i64)
            .remove("delivered_at")
            .remove("failed_at")
            // A claim whose lease ran out belongs to a worker that died mid-attempt; its
            // late commit (conditional on the claim) then does nothing.
            .remove("claim")
            .remove("lease_until")
            .add("redeliveries", 1);
        let cond = Cond::And(vec![
            Cond::eq("attempts", attempts),
            Cond::eq("status", status.as_str()),
            Cond::Or(vec![Cond::AttrAbsent("lease_until".into()), Cond::Lt("lease_until".into(), json!(now))]),
        ]);
        let key = keys::callback(run_id, delivery_id);
        let updated = match self.store.update(&key, upd, Some(cond)).await {
            Ok(i) => i,
            Err(Error::Conflict(_)) => {
                return Err(Error::Conflict(format!("delivery {delivery_id} changed meanwhile; retry")));
            }
            Err(e) => return Err(e),
        };
        let msg = Msg::Callback { r: run_id.into(), d: delivery_id.into(), n: attempts as u32 };
        self.send(vec![(msg, Duration::ZERO)]).await?;
        Ok(delivery_view(&updated, false))
    }
}

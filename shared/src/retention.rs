//! Run retention: a run and all its items expire `BATON_RUN_RETENTION_DAYS` (R, default 30)
//! days after the run ended.
//!
//! [`Retained`] wraps the store of every deployment ([`crate::app::App::new`]) and stamps a
//! TTL ([`Item::expires_at`]) on every write of run data ([`keys::run_part`]: the run item, its
//! steps, split items, tasks, events and callback deliveries, and its entry in the run list).
//! Nothing else gets one: accounts, keys, workflows, triggers and apps stay; idempotency
//! records and rate-limit windows keep their own short TTLs.
//!
//! ## The clock
//!
//! Step Functions keeps an execution's history 90 days after the execution *closed*, Temporal
//! keeps a workflow's for its namespace's retention after it *closed*: a run's retention counts
//! from its end, and a run still going is not cut off because it has been waiting for a person
//! for a while. Baton does the same, within one bound, with S the run's start (read from its
//! id, a ULID) and R the retention:
//!
//! - An open run (running, waiting for a person, sleeping) is kept until S + 2R, however long
//!   it has been idle.
//! - A finished run (completed, failed, cancelled) is kept R days after it finished, and at
//!   most until S + 2R. A redriven run is open again.
//! - When the run item (the header) expires, the run is gone: every read of it, its steps,
//!   tasks and events goes through the header, so the API answers 404 and messages for it
//!   are dropped. Its list entry expires at the same moment.
//! - Every other item of the run expires at S + 2R, whenever it was written, so no item of a
//!   run ever expires before the run's header: a run is never seen with some of its steps
//!   missing, which the engine would take for steps not yet run. On SQLite the sweeper deletes
//!   them together with their header; on DynamoDB they stay (invisible) until S + 2R.
//!
//! With the default of 30 days: a run that took minutes disappears 30 days after it ended; a
//! run still waiting for an approval 60 days after it started is deleted, open or not. Set R
//! to at least half the longest a run of yours may stay open, or `0` to keep runs for ever.
//!
//! Why not "R days after the item's last write" (what a plain TTL gives): a run waiting for a
//! person longer than R would lose its early steps and its task while still open, and the
//! first steps of any long run would vanish before the run itself. Why not rewrite every item
//! of a run with a new TTL when it ends: that is one more write per item, which would double
//! the store writes of a short run. Here the TTL costs nothing: it rides on writes the engine
//! makes anyway, and the header and list entry are written when the run ends.
//!
//! Expired items are invisible at once on both backends (the adapters filter reads and
//! conditions on the TTL); DynamoDB deletes them itself, lazily (usually within a few days of
//! expiry), the local server runs [`sweep_sqlite`] periodically. A change of R applies to
//! items as they are next written; runs written without retention (R = 0, or before it existed)
//! keep no TTL.

use crate::adapters::Sqlite;
use crate::engine::is_terminal_run;
use crate::error::Result;
use crate::keys::{self, RunPart};
use crate::store::{Cond, Item, Key, Page, Query, Store, Update, Write};
use async_trait::async_trait;
use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// Days a finished run is kept when `BATON_RUN_RETENTION_DAYS` is unset or empty.
pub const DEFAULT_DAYS: u64 = 30;
/// Largest accepted `BATON_RUN_RETENTION_DAYS` (a hundred years).
pub const MAX_DAYS: u64 = 36_500;
const DAY_SECS: u64 = 24 * 3600;

/// Reads a `BATON_RUN_RETENTION_DAYS` value: unset or empty → [`DEFAULT_DAYS`], `0` → `None`
/// (keep runs for ever), `1..=`[`MAX_DAYS`] → that many days. Anything else (negative, not a
/// whole number, too large) is an error naming the variable, for a startup message.
pub fn parse_days(value: Option<&str>) -> std::result::Result<Option<Duration>, String> {
    let v = value.map(str::trim).unwrap_or("");
    let days = if v.is_empty() {
        DEFAULT_DAYS
    } else {
        match v.parse::<u64>() {
            Ok(n) if n <= MAX_DAYS => n,
            _ => {
                return Err(format!(
                    "BATON_RUN_RETENTION_DAYS must be a whole number of days from 0 (keep runs for ever) to {MAX_DAYS}, not `{v}`"
                ));
            }
        }
    };
    Ok((days > 0).then(|| Duration::from_secs(days * DAY_SECS)))
}

/// A store that stamps the retention TTL on every write of run data (see the module doc).
/// Reads, deletes and writes of anything else pass through untouched.
pub struct Retained {
    inner: Arc<dyn Store>,
    /// R, in seconds.
    retention: i64,
    /// Milliseconds since the epoch.
    clock: fn() -> i64,
}

/// What a write of run data does to its item's TTL.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stamp {
    Set(i64),
    /// A header or list-entry update that does not change the run's status keeps the TTL the
    /// last status change gave it.
    Leave,
}

impl Retained {
    pub fn new(inner: Arc<dyn Store>, retention: Duration) -> Self {
        Self::with_clock(inner, retention, crate::ids::now_ms)
    }

    /// Like [`new`](Self::new), with the time read from `clock` (epoch milliseconds; tests).
    pub fn with_clock(inner: Arc<dyn Store>, retention: Duration, clock: fn() -> i64) -> Self {
        let retention = i64::try_from(retention.as_secs()).unwrap_or(i64::MAX / 4).min(i64::MAX / 4);
        Retained { inner, retention, clock }
    }

    /// S + 2R for run `run_id`, at `now` (epoch seconds). A run id that carries no plausible
    /// start time (not one Baton made) counts from now.
    fn horizon(&self, run_id: &str, now: i64) -> i64 {
        let start = run_start(run_id).filter(|s| *s <= now + DAY_SECS as i64).unwrap_or(now);
        start.saturating_add(2 * self.retention)
    }

    /// The TTL of a write on `part` that sets the run's status to `status` (if it does), at
    /// `now` (epoch seconds).
    fn stamp(&self, part: RunPart<'_>, status: Option<&Value>, now: i64) -> Stamp {
        let horizon = self.horizon(part.run_id(), now);
        match part {
            RunPart::Other(_) => Stamp::Set(horizon),
            RunPart::Header(_) | RunPart::Index(_) => match status {
                None => Stamp::Leave,
                Some(s) if s.as_str().is_some_and(is_terminal_run) => {
                    Stamp::Set(now.saturating_add(self.retention).min(horizon))
                }
                Some(_) => Stamp::Set(horizon),
            },
        }
    }

    fn now(&self) -> i64 {
        (self.clock)().div_euclid(1000)
    }

    fn stamp_item(&self, item: &mut Item, now: i64) {
        let Some(part) = keys::run_part(&item.key) else { return };
        // A put replaces the whole item: "leave" has nothing to leave, so it gets the horizon.
        let t = match self.stamp(part, item.attrs.get("status"), now) {
            Stamp::Set(t) => t,
            Stamp::Leave => self.horizon(part.run_id(), now),
        };
        item.expires_at = Some(item.expires_at.map_or(t, |own| own.min(t)));
    }

    fn stamp_update(&self, key: &Key, update: &mut Update, now: i64) {
        let Some(part) = keys::run_part(key) else { return };
        if let Stamp::Set(t) = self.stamp(part, update.set.get("status"), now) {
            // An explicit shorter TTL is kept; clearing the TTL of run data is not possible.
            let own = update.expires_at.flatten();
            update.expires_at = Some(Some(own.map_or(t, |own| own.min(t))));
        } else if update.expires_at == Some(None) {
            update.expires_at = None;
        }
    }

    fn stamp_write(&self, write: &mut Write, now: i64) {
        match write {
            Write::Put { item, .. } => self.stamp_item(item, now),
            Write::Update { key, update, .. } => self.stamp_update(key, update, now),
            Write::Delete { .. } | Write::Check { .. } => {}
        }
    }
}

/// When run `run_id` started, in epoch seconds, read from the ULID in its id (`run_<ulid>`).
pub fn run_start(run_id: &str) -> Option<i64> {
    let (_, ulid) = run_id.split_once('_')?;
    let ulid = ulid::Ulid::from_string(ulid).ok()?;
    i64::try_from(ulid.timestamp_ms() / 1000).ok()
}

#[async_trait]
impl Store for Retained {
    async fn get(&self, key: &Key) -> Result<Option<Item>> {
        self.inner.get(key).await
    }
    async fn get_many(&self, keys: &[Key]) -> Result<Vec<Option<Item>>> {
        self.inner.get_many(keys).await
    }

    async fn put(&self, mut item: Item, cond: Option<Cond>) -> Result<()> {
        self.stamp_item(&mut item, self.now());
        self.inner.put(item, cond).await
    }

    async fn update(&self, key: &Key, mut update: Update, cond: Option<Cond>) -> Result<Item> {
        self.stamp_update(key, &mut update, self.now());
        self.inner.update(key, update, cond).await
    }

    async fn delete(&self, key: &Key, cond: Option<Cond>) -> Result<()> {
        self.inner.delete(key, cond).await
    }

    async fn transact(&self, mut writes: Vec<Write>) -> Result<()> {
        let now = self.now();
        for w in &mut writes {
            self.stamp_write(w, now);
        }
        self.inner.transact(writes).await
    }

    async fn query(&self, query: Query) -> Result<Page> {
        self.inner.query(query).await
    }
}

/// What one [`sweep_sqlite`] deleted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Swept {
    /// Items of runs whose header had expired (their own TTL may lie later).
    pub run_items: usize,
    /// Items whose own TTL had passed (headers included).
    pub expired: usize,
}

/// Deletes from a SQLite database what has expired: first every item of each run whose
/// header has expired, then every item whose TTL has passed. Works in batches of at most
/// 1,000 deletions per write transaction, so other writes are never held up for long; blocks
/// the calling thread (call it from `spawn_blocking`).
pub fn sweep_sqlite(db: &Sqlite) -> Result<Swept> {
    let run_items = db.purge_expired_partitions(keys::RUN_PK_PREFIX, keys::RUN_SK)?;
    let expired = db.purge_expired()?;
    Ok(Swept { run_items, expired })
}

/// Runs [`sweep_sqlite`] once at once and then every `every`, until `stop` turns true.
pub async fn sweep_sqlite_every(db: Arc<Sqlite>, every: Duration, mut stop: watch::Receiver<bool>) {
    loop {
        let d = db.clone();
        match tokio::task::spawn_blocking(move || sweep_sqlite(&d)).await {
            Ok(Ok(s)) if s != Swept::default() => {
                tracing::info!(run_items = s.run_items, expired = s.expired, "swept expired items");
            }
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "sweeping expired items failed"),
            Err(e) => tracing::warn!(error = %e, "the sweep of expired items panicked"),
        }
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}

#[cfg(test)]
#[path = "retention_tests.rs"]
mod tests;

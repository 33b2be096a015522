//! In-memory test doubles: a [`MemStore`] that follows the store contract (conditions,
//! all-or-nothing transactions, TTL, cursors) and a [`MemQueue`] that accepts and drops.
//! For unit tests only; the real adapters live in `adapters`.

use crate::error::{Error, Result};
use crate::queue::{Message, Queue, Received};
use crate::store::{
    self, Cond, Item, Key, MAX_ITEM_BYTES, MAX_QUERY_LIMIT, MAX_TRANSACT_ITEMS, Page, Query, SkRange, Store, Update,
    Write,
};
use async_trait::async_trait;
use std::collections::{BTreeMap, HashSet};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

#[derive(Default)]
pub struct MemStore {
    items: Mutex<BTreeMap<Key, Item>>,
}

fn now_secs() -> i64 {
    crate::ids::now_ms() / 1000
}

fn live(item: Option<&Item>) -> Option<&Item> {
    item.filter(|i| i.expires_at.is_none_or(|t| t > now_secs()))
}

fn check(cond: Option<&Cond>, item: Option<&Item>) -> Result<()> {
    cond.map_or(Ok(()), store::check_cond)?;
    match cond {
        Some(c) if !store::eval_cond(c, live(item)) => Err(Error::Conflict("condition failed".into())),
        _ => Ok(()),
    }
}

fn check_size(item: &Item) -> Result<()> {
    let n = serde_json::to_vec(&item.attrs)?.len();
    if n > MAX_ITEM_BYTES {
        return Err(Error::PayloadTooLarge(format!("item of {n} bytes; the limit is {MAX_ITEM_BYTES}")));
    }
    Ok(())
}

impl MemStore {
    pub fn new() -> Self {
        Self::default()
    }

    /// Every live item, for assertions.
    pub fn dump(&self) -> Vec<Item> {
        let items = self.items.lock().unwrap();
        items.values().filter(|i| live(Some(i)).is_some()).cloned().collect()
    }

    fn apply(map: &mut BTreeMap<Key, Item>, w: Write) -> Result<()> {
        if w.key().pk.is_empty() || w.key().sk.is_empty() {
            return Err(Error::validation("partition and sort keys must not be empty"));
        }
        match w {
            Write::Put { item, .. } => {
                check_size(&item)?;
                map.insert(item.key.clone(), item);
            }
            Write::Update { key, update, .. } => {
                let cur = live(map.get(&key)).cloned();
                let item = store::apply_update(&key, cur, &update);
                check_size(&item)?;
                map.insert(key, item);
            }
            Write::Delete { key, .. } => {
                map.remove(&key);
            }
            Write::Check { .. } => {}
        }
        Ok(())
    }
}

fn cond_of(w: &Write) -> Option<&Cond> {
    match w {
        Write::Put { cond, .. } | Write::Update { cond, .. } | Write::Delete { cond, .. } => cond.as_ref(),
        Write::Check { cond, .. } => Some(cond),
    }
}

#[async_trait]
impl Store for MemStore {
    async fn get(&self, key: &Key) -> Result<Option<Item>> {
        Ok(live(self.items.lock().unwrap().get(key)).cloned())
    }

    async fn put(&self, item: Item, cond: Option<Cond>) -> Result<()> {
        let mut map = self.items.lock().unwrap();
        check(cond.as_ref(), map.get(&item.key))?;
        Self::apply(&mut map, Write::Put { item, cond: None })
    }

    async fn update(&self, key: &Key, update: Update, cond: Option<Cond>) -> Result<Item> {
        let mut map = self.items.lock().unwrap();
        check(cond.as_ref(), map.get(key))?;
        Self::apply(&mut map, Write::Update { key: key.clone(), update, cond: None })?;
        Ok(map.get(key).cloned().expect("just written"))
    }

    async fn delete(&self, key: &Key, cond: Option<Cond>) -> Result<()> {
        let mut map = self.items.lock().unwrap();
        check(cond.as_ref(), map.get(key))?;
        map.remove(key);
        Ok(())
    }

    async fn transact(&self, writes: Vec<Write>) -> Result<()> {
        if writes.len() > MAX_TRANSACT_ITEMS {
            return Err(Error::validation("too many writes in one transaction"));
        }
        let mut seen = HashSet::new();
        if !writes.iter().all(|w| seen.insert(w.key().clone())) {
            return Err(Error::validation("two writes on the same key in one transaction"));
        }
        let mut map = self.items.lock().unwrap();
        for w in &writes {
            check(cond_of(w), map.get(w.key()))?;
        }
        let mut next = map.clone();
        for w in writes {
            Self::apply(&mut next, w)?;
        }
        *map = next;
        Ok(())
    }

    async fn query(&self, q: Query) -> Result<Page> {
        if q.limit == 0 || q.limit > MAX_QUERY_LIMIT {
            return Err(Error::validation("query limit out of range"));
        }
        if let SkRange::Between(a, b) = &q.range
            && a > b
        {
            return Err(Error::validation("query range: lower bound is above upper bound"));
        }
        let after = match &q.cursor {
            Some(c) => Some(
                hex::decode(c)
                    .ok()
                    .and_then(|b| String::from_utf8(b).ok())
                    .ok_or_else(|| Error::validation("Invalid cursor"))?,
            ),
            None => None,
        };
        let map = self.items.lock().unwrap();
        let in_range = |sk: &str| match &q.range {
            SkRange::All => true,
            SkRange::Prefix(p) => sk.starts_with(p.as_str()),
            SkRange::Between(a, b) => sk >= a.as_str() && sk <= b.as_str(),
        };
        let mut items: Vec<&Item> =
            map.values().filter(|i| i.key.pk == q.pk && in_range(&i.key.sk) && live(Some(i)).is_some()).collect();
        if q.descending {
            items.reverse();
        }
        let items: Vec<Item> = items
            .into_iter()
            .filter(|i| match &after {
                Some(a) if q.descending => i.key.sk < *a,
                Some(a) => i.key.sk > *a,
                None => true,
            })
            .take(q.limit + 1)
            .cloned()
            .collect();
        let more = items.len() > q.limit;
        let items: Vec<Item> = items.into_iter().take(q.limit).collect();
        let next_cursor = if more { items.last().map(|i| hex::encode(i.key.sk.as_bytes())) } else { None };
        Ok(Page { items, next_cursor })
    }
}

/// A queue that accepts every message and never delivers one; counts what was sent.
#[derive(Default)]
pub struct MemQueue {
    pub sent: AtomicUsize,
}

impl MemQueue {
    pub fn new() -> Self {
        Self::default()
    }
}

#[async_trait]
impl Queue for MemQueue {
    async fn send(&self, _msg: Message) -> Result<()> {
        self.sent.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
    async fn send_batch(&self, msgs: Vec<Message>) -> Result<()> {
        self.sent.fetch_add(msgs.len(), Ordering::Relaxed);
        Ok(())
    }
    async fn receive(&self, _max: usize, _visibility: Duration, _wait: Duration) -> Result<Vec<Received>> {
        Ok(Vec::new())
    }
    async fn delete(&self, _receipt: &str) -> Result<()> {
        Ok(())
    }
    async fn change_visibility(&self, _receipt: &str, _visibility: Duration) -> Result<()> {
        Ok(())
    }
    async fn dead_letters(&self, _max: usize) -> Result<Vec<Received>> {
        Ok(Vec::new())
    }
}

/// A store that passes everything to another and counts, per item, the writes that landed
/// and set a terminal step status: a double commit of a step shows as a count of 2, whatever
/// the events say. It also counts read calls and the items they returned.
pub struct CountingStore {
    inner: std::sync::Arc<dyn Store>,
    commits: Mutex<std::collections::HashMap<Key, usize>>,
    reads: Mutex<Reads>,
}

/// Read calls a [`CountingStore`] passed on, and the items they returned.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Reads {
    pub gets: usize,
    pub get_manys: usize,
    pub queries: usize,
    pub items: usize,
}

impl CountingStore {
    pub fn new(inner: std::sync::Arc<dyn Store>) -> Self {
        Self { inner, commits: Mutex::new(Default::default()), reads: Mutex::new(Reads::default()) }
    }

    /// The reads so far.
    pub fn reads(&self) -> Reads {
        *self.reads.lock().unwrap()
    }

    fn read(&self, f: impl FnOnce(&mut Reads)) {
        f(&mut self.reads.lock().unwrap());
    }

    /// How many landed writes ended the step `step_key` of `run_id`.
    pub fn commits_of(&self, run_id: &str, step_key: &str) -> usize {
        let k = crate::keys::step(run_id, step_key);
        self.commits.lock().unwrap().get(&k).copied().unwrap_or(0)
    }

    fn count(&self, key: &Key, status: Option<&serde_json::Value>) {
        let terminal = status.and_then(|s| s.as_str()).is_some_and(crate::engine::is_terminal_step);
        if terminal && (key.sk.starts_with("STEP#") || key.sk.starts_with(crate::keys::ITEM_PREFIX)) {
            *self.commits.lock().unwrap().entry(key.clone()).or_default() += 1;
        }
    }
}

#[async_trait]
impl Store for CountingStore {
    async fn get(&self, key: &Key) -> Result<Option<Item>> {
        let out = self.inner.get(key).await?;
        self.read(|r| {
            r.gets += 1;
            r.items += usize::from(out.is_some());
        });
        Ok(out)
    }
    async fn get_many(&self, keys: &[Key]) -> Result<Vec<Option<Item>>> {
        let out = self.inner.get_many(keys).await?;
        self.read(|r| {
            r.get_manys += 1;
            r.items += out.iter().flatten().count();
        });
        Ok(out)
    }
    async fn put(&self, item: Item, cond: Option<Cond>) -> Result<()> {
        let (key, status) = (item.key.clone(), item.get("status").cloned());
        self.inner.put(item, cond).await?;
        self.count(&key, status.as_ref());
        Ok(())
    }
    async fn update(&self, key: &Key, update: Update, cond: Option<Cond>) -> Result<Item> {
        let status = update.set.get("status").cloned();
        let out = self.inner.update(key, update, cond).await?;
        self.count(key, status.as_ref());
        Ok(out)
    }
    async fn delete(&self, key: &Key, cond: Option<Cond>) -> Result<()> {
        self.inner.delete(key, cond).await
    }
    async fn transact(&self, writes: Vec<Write>) -> Result<()> {
        let counted: Vec<(Key, Option<serde_json::Value>)> = writes
            .iter()
            .filter_map(|w| match w {
                Write::Put { item, .. } => Some((item.key.clone(), item.get("status").cloned())),
                Write::Update { key, update, .. } => Some((key.clone(), update.set.get("status").cloned())),
                _ => None,
            })
            .collect();
        self.inner.transact(writes).await?;
        for (k, s) in counted {
            self.count(&k, s.as_ref());
        }
        Ok(())
    }
    async fn query(&self, query: Query) -> Result<Page> {
        let out = self.inner.query(query).await?;
        self.read(|r| {
            r.queries += 1;
            r.items += out.items.len();
        });
        Ok(out)
    }
}

/// Plays `app`'s queue until nothing is left to do right now (at most 200 batches): each
/// message is processed as a worker would, acknowledged, or made visible again at once when
/// the engine asks for a retry.
pub async fn drain(app: &crate::app::AppState) {
    for _ in 0..200 {
        let msgs = app.queue.receive(10, Duration::from_secs(5), Duration::from_millis(20)).await.unwrap();
        if msgs.is_empty() {
            return;
        }
        for m in msgs {
            match app.engine.process(&m.body).await {
                crate::queue::Outcome::Ack => app.queue.delete(&m.receipt).await.unwrap(),
                crate::queue::Outcome::RetryAfter(_) => {
                    app.queue.change_visibility(&m.receipt, Duration::ZERO).await.unwrap()
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    mod store_conformance {
        crate::store_conformance_tests!(async { std::sync::Arc::new(crate::testing::MemStore::new()) });
    }
}

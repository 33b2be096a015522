//! The store port: a key-value table shaped after what DynamoDB offers, so that no adapter
//! offers what DynamoDB cannot.
//!
//! Items are addressed by partition key + sort key and hold a JSON object of attributes.
//! Every claim, lease and counter in the engine is a conditional write on one item or a small
//! transaction of them; reads are single-item gets and queries within one partition.

use crate::error::Result;
use async_trait::async_trait;
use serde_json::{Map, Value};

pub type Attrs = Map<String, Value>;

/// Most writes in one [`Store::transact`] call (DynamoDB's TransactWriteItems limit).
pub const MAX_TRANSACT_ITEMS: usize = 100;
/// Largest page a [`Store::query`] may be asked for.
pub const MAX_QUERY_LIMIT: usize = 1000;
/// Largest payload Baton accepts as one value: a run's input, a step's output, a task's
/// answer (1 MiB of JSON, the HTTP body limit's size). Every adapter stores values this large:
/// SQLite in its row, DynamoDB out of line in S3 (`adapters::dynamo`, the claim check).
pub const MAX_PAYLOAD_BYTES: usize = 1024 * 1024;
/// Largest item an adapter must accept, measured as its attributes' compact JSON plus the
/// lengths of its partition and sort keys. The contract: an item holds at most **two**
/// payloads of [`MAX_PAYLOAD_BYTES`] plus 64 KiB of everything else, since the run item
/// carries both the run's input and its output. Larger items are `Error::PayloadTooLarge`.
/// (DynamoDB's own limit is 400 KB; its adapter keeps large values in S3 to reach this.)
pub const MAX_ITEM_BYTES: usize = 2 * MAX_PAYLOAD_BYTES + 64 * 1024;
/// Largest value a [`Cond`] may compare with (compact JSON); larger is `Error::Validation`.
/// Conditions test small attributes (status, lease tokens, counters, timestamps); a value
/// this size or smaller is never moved out of line by an adapter, so an equality test against
/// an attribute whose value lives elsewhere (DynamoDB's S3 claim check) is false on every
/// backend, which is also the truth.
pub const MAX_COND_VALUE_BYTES: usize = 4 * 1024;

#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Key {
    pub pk: String,
    pub sk: String,
}

impl Key {
    pub fn new(pk: impl Into<String>, sk: impl Into<String>) -> Self {
        Self { pk: pk.into(), sk: sk.into() }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Item {
    pub key: Key,
    pub attrs: Attrs,
    /// Epoch seconds after which the item no longer exists (TTL).
    pub expires_at: Option<i64>,
}

impl Item {
    pub fn new(key: Key, attrs: Attrs) -> Self {
        Self { key, attrs, expires_at: None }
    }
    pub fn get(&self, name: &str) -> Option<&Value> {
        self.attrs.get(name)
    }
    pub fn str(&self, name: &str) -> Option<&str> {
        self.attrs.get(name).and_then(Value::as_str)
    }
    pub fn i64(&self, name: &str) -> Option<i64> {
        self.attrs.get(name).and_then(Value::as_i64)
    }
}

/// A condition on the current state of one item, evaluated atomically with the write.
///
/// Comparisons against a missing attribute are false (as in DynamoDB); `Not` inverts.
/// Numbers compare as numbers, strings lexicographically; other types only by `Eq`.
#[derive(Clone, Debug, PartialEq)]
pub enum Cond {
    /// The item exists (and has not expired).
    Exists,
    /// The item does not exist, or has expired.
    NotExists,
    /// The attribute is absent from an existing item, or the item does not exist.
    AttrAbsent(String),
    Eq(String, Value),
    Lt(String, Value),
    Le(String, Value),
    Gt(String, Value),
    Ge(String, Value),
    And(Vec<Cond>),
    Or(Vec<Cond>),
    Not(Box<Cond>),
}

impl Cond {
    pub fn eq(name: &str, v: impl Into<Value>) -> Self {
        Cond::Eq(name.to_string(), v.into())
    }
    pub fn and(self, other: Cond) -> Self {
        match self {
            Cond::And(mut v) => {
                v.push(other);
                Cond::And(v)
            }
            c => Cond::And(vec![c, other]),
        }
    }
}

/// Changes to one item. An update of a missing item creates it (like DynamoDB's UpdateItem)
/// unless its condition requires [`Cond::Exists`].
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Update {
    pub set: Attrs,
    pub remove: Vec<String>,
    /// Atomic increments; a missing attribute counts as 0.
    pub add: Vec<(String, i64)>,
    /// `Some(Some(t))` sets the TTL, `Some(None)` clears it, `None` leaves it.
    pub expires_at: Option<Option<i64>>,
}

impl Update {
    pub fn set(mut self, name: &str, v: impl Into<Value>) -> Self {
        self.set.insert(name.to_string(), v.into());
        self
    }
    pub fn add(mut self, name: &str, delta: i64) -> Self {
        self.add.push((name.to_string(), delta));
        self
    }
    pub fn remove(mut self, name: &str) -> Self {
        self.remove.push(name.to_string());
        self
    }
}

/// One write of a transaction.
#[derive(Clone, Debug, PartialEq)]
pub enum Write {
    Put {
        item: Item,
        cond: Option<Cond>,
    },
    Update {
        key: Key,
        update: Update,
        cond: Option<Cond>,
    },
    Delete {
        key: Key,
        cond: Option<Cond>,
    },
    /// Writes nothing; the transaction fails unless `cond` holds.
    Check {
        key: Key,
        cond: Cond,
    },
}

impl Write {
    pub fn cond(&self) -> Option<&Cond> {
        match self {
            Write::Put { cond, .. } | Write::Update { cond, .. } | Write::Delete { cond, .. } => cond.as_ref(),
            Write::Check { cond, .. } => Some(cond),
        }
    }
    pub fn key(&self) -> &Key {
        match self {
            Write::Put { item, .. } => &item.key,
            Write::Update { key, .. } | Write::Delete { key, .. } | Write::Check { key, .. } => key,
        }
    }
}

/// Which sort keys of a partition a query returns.
#[derive(Clone, Debug, PartialEq)]
pub enum SkRange {
    All,
    Prefix(String),
    /// Inclusive on both ends.
    Between(String, String),
}

#[derive(Clone, Debug, PartialEq)]
pub struct Query {
    pub pk: String,
    pub range: SkRange,
    /// 1..=[`MAX_QUERY_LIMIT`].
    pub limit: usize,
    /// A `next_cursor` from an earlier page of the same query.
    pub cursor: Option<String>,
    pub descending: bool,
}

impl Query {
    pub fn partition(pk: impl Into<String>) -> Self {
        Self { pk: pk.into(), range: SkRange::All, limit: MAX_QUERY_LIMIT, cursor: None, descending: false }
    }
    pub fn prefix(pk: impl Into<String>, prefix: impl Into<String>) -> Self {
        Self { range: SkRange::Prefix(prefix.into()), ..Self::partition(pk) }
    }
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct Page {
    /// In sort-key order (descending if asked).
    pub items: Vec<Item>,
    /// Present when more items may follow; pass it back as `Query::cursor`.
    pub next_cursor: Option<String>,
}

/// The store port. All reads are strongly consistent.
///
/// Contract shared by every adapter (checked by `conformance::store`):
/// - A failed condition is `Error::Conflict` and changes nothing.
/// - Expired items (`expires_at <= now`) are invisible to `get` and `query` and count as
///   absent for conditions, whether or not the backend has deleted them yet.
/// - `transact` is all-or-nothing, takes at most [`MAX_TRANSACT_ITEMS`] writes, and rejects
///   two writes on the same key with `Error::Validation`.
/// - Items larger than [`MAX_ITEM_BYTES`] are rejected with `Error::PayloadTooLarge`, and
///   so is an update that would make one that large.
/// - A condition comparing with a value over [`MAX_COND_VALUE_BYTES`] is `Error::Validation`
///   ([`check_cond`]).
/// - A page may hold fewer items than `limit` and still carry a cursor.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    async fn get(&self, key: &Key) -> Result<Option<Item>>;
    /// The items at `keys`, in the order of `keys` (`None` where there is none), as one read
    /// where the backend can (DynamoDB: `BatchGetItem`, 100 keys per request, unprocessed keys
    /// asked again; SQLite: one connection and prepared statement), each item as strongly consistent as [`get`]'s.
    /// Any number of keys; a key may repeat. The default asks [`get`] for each key at once.
    ///
    /// [`get`]: Store::get
    async fn get_many(&self, keys: &[Key]) -> Result<Vec<Option<Item>>> {
        futures::future::try_join_all(keys.iter().map(|k| self.get(k))).await
    }
    /// Replaces the whole item.
    async fn put(&self, item: Item, cond: Option<Cond>) -> Result<()>;
    /// Applies `update` and returns the item as it is afterwards.
    async fn update(&self, key: &Key, update: Update, cond: Option<Cond>) -> Result<Item>;
    /// Deleting a missing item is not an error (unless `cond` says so).
    async fn delete(&self, key: &Key, cond: Option<Cond>) -> Result<()>;
    async fn transact(&self, writes: Vec<Write>) -> Result<()>;
    async fn query(&self, query: Query) -> Result<Page>;
}

/// Reads every page of a query. Only for partitions known to be small (a run's steps).
pub async fn query_all(store: &dyn Store, mut q: Query) -> Result<Vec<Item>> {
    let mut out = Vec::new();
    loop {
        let page = store.query(q.clone()).await?;
        out.extend(page.items);
        match page.next_cursor {
            Some(c) => q.cursor = Some(c),
            None => return Ok(out),
        }
    }
}

/// Refuses a condition that compares with a value over [`MAX_COND_VALUE_BYTES`]. Every
/// adapter calls it before a conditional write.
pub fn check_cond(cond: &Cond) -> Result<()> {
    match cond {
        Cond::Exists | Cond::NotExists | Cond::AttrAbsent(_) => Ok(()),
        Cond::Eq(n, v) | Cond::Lt(n, v) | Cond::Le(n, v) | Cond::Gt(n, v) | Cond::Ge(n, v) => {
            let size = serde_json::to_vec(v)?.len();
            if size > MAX_COND_VALUE_BYTES {
                return Err(crate::error::Error::validation(format!(
                    "a condition on `{n}` compares with a value of {size} bytes; conditions compare values of at most {MAX_COND_VALUE_BYTES} bytes"
                )));
            }
            Ok(())
        }
        Cond::And(cs) | Cond::Or(cs) => cs.iter().try_for_each(check_cond),
        Cond::Not(c) => check_cond(c),
    }
}

/// [`check_cond`] on every condition of a transaction.
pub fn check_write_conds(writes: &[Write]) -> Result<()> {
    writes.iter().filter_map(Write::cond).try_for_each(check_cond)
}

/// Evaluates a condition against the current item, as every adapter without native
/// conditions must. `item` is `None` when absent or expired.
pub fn eval_cond(cond: &Cond, item: Option<&Item>) -> bool {
    use std::cmp::Ordering;
    fn cmp(a: &Value, b: &Value) -> Option<Ordering> {
        match (a, b) {
            (Value::Number(x), Value::Number(y)) => x.as_f64()?.partial_cmp(&y.as_f64()?),
            (Value::String(x), Value::String(y)) => Some(x.cmp(y)),
            _ => None,
        }
    }
    let attr = |n: &str| item.and_then(|i| i.attrs.get(n));
    match cond {
        Cond::Exists => item.is_some(),
        Cond::NotExists => item.is_none(),
        Cond::AttrAbsent(n) => attr(n).is_none(),
        Cond::Eq(n, v) => attr(n).is_some_and(|a| match (a, v) {
            (Value::Number(_), Value::Number(_)) => cmp(a, v) == Some(Ordering::Equal),
            _ => a == v,
        }),
        Cond::Lt(n, v) => attr(n).and_then(|a| cmp(a, v)) == Some(Ordering::Less),
        Cond::Le(n, v) => attr(n).and_then(|a| cmp(a, v)).is_some_and(|o| o != Ordering::Greater),
        Cond::Gt(n, v) => attr(n).and_then(|a| cmp(a, v)) == Some(Ordering::Greater),
        Cond::Ge(n, v) => attr(n).and_then(|a| cmp(a, v)).is_some_and(|o| o != Ordering::Less),
        Cond::And(cs) => cs.iter().all(|c| eval_cond(c, item)),
        Cond::Or(cs) => cs.iter().any(|c| eval_cond(c, item)),
        Cond::Not(c) => !eval_cond(c, item),
    }
}

/// Applies an update to the current item (or a new empty one), as adapters without native
/// update expressions must.
pub fn apply_update(key: &Key, current: Option<Item>, update: &Update) -> Item {
    let mut item = current.unwrap_or_else(|| Item::new(key.clone(), Attrs::new()));
    for (k, v) in &update.set {
        item.attrs.insert(k.clone(), v.clone());
    }
    for k in &update.remove {
        item.attrs.remove(k);
    }
    for (k, d) in &update.add {
        let cur = item.attrs.get(k).and_then(Value::as_i64).unwrap_or(0);
        item.attrs.insert(k.clone(), Value::from(cur + d));
    }
    if let Some(e) = update.expires_at {
        item.expires_at = e;
    }
    item
}

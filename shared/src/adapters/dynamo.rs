//! DynamoDB adapter of the store port: one table, on-demand, key attributes `pk` / `sk`
//! (strings), TTL attribute `ttl` (epoch seconds). Layout and the mapping of conditions:
//! `infra/README.md`.
//!
//! - Attributes are native DynamoDB attributes (JSON string → `S`, number → `N`, bool →
//!   `BOOL`, null → `NULL`, array → `L`, object → `M`), so conditions and counters run inside
//!   DynamoDB. A caller's attribute named `pk`, `sk`, `ttl` or starting with `_` is stored
//!   with one more leading `_`, so it can never shadow a key or the TTL.
//! - Every expression uses `#name` / `:value` placeholders; no caller data is ever spliced
//!   into expression text.
//! - DynamoDB deletes expired items lazily (within days), so expiry is also enforced here:
//!   reads filter on `ttl`, and every condition treats an expired item as absent. An update
//!   must not resurrect an expired item's attributes: it is conditioned on the item being
//!   live or absent, and when it finds an expired item, that item is deleted (conditionally
//!   on its `ttl`) and the update retried.
//! - Request and capacity-unit counters for the cost model go to [`crate::metrics`].
//!
//! ## Large values: the S3 claim check
//!
//! The port holds items up to [`MAX_ITEM_BYTES`] (two 1 MiB payloads and 64 KiB more: a run
//! item carries its input and its output); DynamoDB stops at 400 KB. With a payload bucket
//! ([`DynamoStore::with_payloads`], `BATON_BUCKET`) the adapter keeps large attribute values in
//! S3 ([`super::s3`]), invisibly to the port's callers:
//!
//! - **What goes out**: every value that DynamoDB would count as more than
//!   [`OFFLOAD_VALUE_BYTES`] (64 KiB; `value_size` follows DynamoDB's sizing rules, which
//!   can count a third more than the JSON); then, while the item's part in DynamoDB is still
//!   over [`INLINE_ITEM_BYTES`] (300 KiB, a margin under 400 KB), the largest of the values
//!   over [`MAX_COND_VALUE_BYTES`] of JSON (many medium values). Decided per write from the
//!   values it writes: a put's attributes, an update's `set`, each write of a transaction.
//!   Values are top-level attributes, whole; small attributes (status, leases, counters,
//!   timestamps) always stay in DynamoDB, so conditions and counters keep running there.
//! - **Order**: the objects are written (in parallel) before the DynamoDB request, so no item
//!   ever refers to an object that is not there. A refused condition or transaction leaves
//!   objects nobody refers to; they are harmless and their lifecycle rule deletes them.
//! - **The claim**: the attribute keeps its name and holds a binary value (`B`), JSON
//!   `{"s3": <object key>, "len": <bytes>}`. The adapter writes every caller value as a
//!   string, number, boolean, null, list or map, never as a binary, so a claim cannot be
//!   mistaken for a value nor a value for a claim, and no attribute name is taken from callers.
//! - **Reads**: `get`, `query` and the item an `update` returns resolve their claims, every
//!   object of one call fetched at once (at most [`s3::MAX_PARALLEL_GETS`] in flight); values
//!   this process wrote or read recently come from a small cache (objects are immutable:
//!   content-addressed, the digest checked on every read). An expired item is dropped before
//!   its values are fetched.
//! - **Size of updates**: an update that writes a large value first reads the item
//!   (`GetItem`) to check that the item with the update applied stays within
//!   [`MAX_ITEM_BYTES`] (values in S3 count by their length) and to learn its TTL for the
//!   objects' lifetime class. Updates of small values are not read first: DynamoDB's own
//!   400 KB bounds what they can add. Two concurrent updates that each write a large value to
//!   one item are checked against the item as each read it; Baton never does that (a step's
//!   output is written by the holder of its lease).
//! - **Conditions** compare with values of at most [`MAX_COND_VALUE_BYTES`] (the port refuses
//!   larger ones on every backend: `Error::Validation`). A value kept in S3 is larger than
//!   that, so an `Eq` on its attribute is false (as it is on SQLite), `Not(Eq)` true and
//!   `AttrAbsent` false; ordering conditions (`Lt`…`Ge`) on such an attribute are false here,
//!   where SQLite would compare the long string: conditions on large attributes are not
//!   supported (Baton orders only counters and timestamps).
//! - **Lifetime**: each object lives in the shortest lifetime class that outlives its item's
//!   TTL (`keep/` without one); the bucket's lifecycle rules expire each class (see
//!   [`super::s3`]). A TTL extended later past its values' class would outlive them; Baton's
//!   TTLs only shrink (retention: a finished run's TTL is shorter than the open run's).
//! - Without a bucket ([`DynamoStore::new`] alone), an item over 400 KB is `PayloadTooLarge`.
//!
//! **Cost of one 1 MiB step** (us-east-1 list prices; a step output of 1,048,576 bytes,
//! written once in the commit's transaction, read once by a later step):
//!
//! | | write | read | storage | one step (+ storage) |
//! |---|---|---|---|---|
//! | S3 claim check | 1 PUT: $0.005/1,000 = $0.000005; the claim (~0.2 KB) rides on the step's item write | 1 GET: $0.0004/1,000 = $0.0000004, none when cached; + 1 RRU for the size check ($0.00000025) | $0.023/GB-month: $0.0000225/month | **≈ $0.0000057** (+ $0.0000225/month, kept up to its class's days) |
//! | DynamoDB, chunked items | 1,024 WRU, doubled in a transaction: 2,048 × $1.25/M = $0.00256 (1,024 WRU = $0.00128 outside one) | 256 RRU (strongly consistent, 4 KB each) × $0.25/M = $0.000064 | $0.25/GB-month: $0.000244/month | **≈ $0.0026** (+ $0.000244/month) |
//!
//! S3 is about 460× cheaper per large step (≈ $5.65 vs ≈ $2,620 per million 1 MiB steps;
//! at DynamoDB's current on-demand prices, $0.625/M WRU and $0.125/M RRU as in
//! `tests/cost.rs`, the chunks cost half that, still ≈ 230× more) and ≈ 11× cheaper to keep;
//! chunks would also need up to three more items in every commit's 100-item, 4 MB
//! transaction. Above 64 KiB a value costs at least 64 WRU (128 in a transaction, $0.00016)
//! in DynamoDB against $0.0000054 for an S3 round trip, so even the threshold is far past the
//! break-even (a few KB); it stays at 64 KiB for latency: an S3 request takes tens of
//! milliseconds against DynamoDB's few, which only values this large (whose transfer takes
//! that long anyway) should pay. Measured on moto (`aws_conformance`,
//! `a_one_mib_step_costs_an_s3_put_per_value_and_reads_them_once`): a sync run with a 1 MiB
//! input and a 1 MiB output writes 3 objects (the input, the output, the finished run's
//! output in its shorter lifetime class) and reads none back (the cache).

use super::s3::{self, Payloads};
use crate::error::{Error, Result};
use crate::metrics::{self, Op};
use crate::store::{
    self, Attrs, Cond, Item, Key, MAX_COND_VALUE_BYTES, MAX_ITEM_BYTES, MAX_QUERY_LIMIT, MAX_TRANSACT_ITEMS, Page,
    Query, SkRange, Store, Update, Write,
};
use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::primitives::Blob;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, ConditionCheck, Delete, KeySchemaElement, KeyType,
    KeysAndAttributes, Put, ReturnValue, ReturnValuesOnConditionCheckFailure, ScalarAttributeType,
    TimeToLiveSpecification, TransactWriteItem, Update as DdbUpdate,
};
use futures::stream::{self, StreamExt, TryStreamExt};
use serde_json::{Number, Value};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

/// Partition key attribute.
pub const PK: &str = "pk";
/// Sort key attribute.
pub const SK: &str = "sk";
/// TTL attribute (DynamoDB's TTL must be enabled on it): epoch seconds.
pub const TTL: &str = "ttl";
/// Longest partition key DynamoDB accepts, in bytes.
pub const MAX_PK_BYTES: usize = 2048;
/// Longest sort key DynamoDB accepts, in bytes.
pub const MAX_SK_BYTES: usize = 1024;
/// An attribute name [`escape`] never produces.
const NEVER_STORED: &str = "_";
/// Retries of a write that met an expired item or a transaction conflict before giving up.
const MAX_ATTEMPTS: usize = 4;
/// An attribute value that DynamoDB would count as more than this goes to S3.
pub const OFFLOAD_VALUE_BYTES: usize = 64 * 1024;
/// After that, values go to S3 largest first while the item's part in DynamoDB is larger than
/// this (DynamoDB's limit is 400 KB; `value_size` estimates its count from above).
pub const INLINE_ITEM_BYTES: usize = 300 * 1024;

type AttrMap = HashMap<String, AttributeValue>;

/// The store port on one DynamoDB table, with large values in an S3 bucket.
#[derive(Clone, Debug)]
pub struct DynamoStore {
    client: Client,
    table: String,
    payloads: Option<Arc<Payloads>>,
}

impl DynamoStore {
    /// A store on `table` alone: an item must fit DynamoDB's 400 KB, larger ones are
    /// `PayloadTooLarge` (the port's contract needs [`with_payloads`](Self::with_payloads)).
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self { client, table: table.into(), payloads: None }
    }

    /// Keeps values too large for DynamoDB in `payloads`' bucket (see the module doc).
    pub fn with_payloads(mut self, payloads: Payloads) -> Self {
        self.payloads = Some(Arc::new(payloads));
        self
    }

    pub fn table(&self) -> &str {
        &self.table
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    pub fn payloads(&self) -> Option<&Payloads> {
        self.payloads.as_deref()
    }
}

/// Creates the table (on-demand, `pk`/`sk` strings, TTL on `ttl`) unless it exists, and
/// waits until it is active. For development and tests; on AWS the template creates it.
pub async fn create_table(client: &Client, table: &str) -> Result<()> {
    let key = |name: &str, kind: KeyType| KeySchemaElement::builder().attribute_name(name).key_type(kind).build();
    let def =
        |name: &str| AttributeDefinition::builder().attribute_name(name).attribute_type(ScalarAttributeType::S).build();
    metrics::count(Op::DdbOther);
    let created = client
        .create_table()
        .table_name(table)
        .billing_mode(BillingMode::PayPerRequest)
        .key_schema(key(PK, KeyType::Hash).map_err(build_err)?)
        .key_schema(key(SK, KeyType::Range).map_err(build_err)?)
        .attribute_definitions(def(PK).map_err(build_err)?)
        .attribute_definitions(def(SK).map_err(build_err)?)
        .send()
        .await;
    match created {
        Ok(_) => {}
        Err(e) if e.as_service_error().is_some_and(|s| s.is_resource_in_use_exception()) => return Ok(()),
        Err(e) => return Err(Error::Internal(format!("dynamodb CreateTable: {}", DisplayErrorContext(e)))),
    }
    for _ in 0..120 {
        metrics::count(Op::DdbOther);
        let out = client
            .describe_table()
            .table_name(table)
            .send()
            .await
            .map_err(|e| Error::Internal(format!("dynamodb DescribeTable: {}", DisplayErrorContext(e))))?;
        let status = out.table().and_then(|t| t.table_status()).map(|s| s.as_str().to_string());
        if status.as_deref() == Some("ACTIVE") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let spec = TimeToLiveSpecification::builder().enabled(true).attribute_name(TTL).build().map_err(build_err)?;
    metrics::count(Op::DdbOther);
    client
        .update_time_to_live()
        .table_name(table)
        .time_to_live_specification(spec)
        .send()
        .await
        .map_err(|e| Error::Internal(format!("dynamodb UpdateTimeToLive: {}", DisplayErrorContext(e))))?;
    Ok(())
}

fn build_err(e: aws_sdk_dynamodb::error::BuildError) -> Error {
    Error::Internal(format!("dynamodb request: {e}"))
}

fn now_secs() -> i64 {
    chrono::Utc::now().timestamp()
}

// ---------------------------------------------------------------------------------------------
// Values and names
// ---------------------------------------------------------------------------------------------

/// The stored name of a caller's attribute.
fn escape(name: &str) -> String {
    if name == PK || name == SK || name == TTL || name.starts_with('_') { format!("_{name}") } else { name.to_string() }
}

/// The caller's name of a stored attribute, `None` for the key and TTL attributes.
fn unescape(name: &str) -> Option<&str> {
    match name {
        PK | SK | TTL => None,
        n => Some(n.strip_prefix('_').unwrap_or(n)),
    }
}

fn to_av(v: &Value) -> AttributeValue {
    match v {
        Value::Null => AttributeValue::Null(true),
        Value::Bool(b) => AttributeValue::Bool(*b),
        Value::Number(n) => AttributeValue::N(n.to_string()),
        Value::String(s) => AttributeValue::S(s.clone()),
        Value::Array(a) => AttributeValue::L(a.iter().map(to_av).collect()),
        Value::Object(m) => AttributeValue::M(m.iter().map(|(k, v)| (k.clone(), to_av(v))).collect()),
    }
}

/// DynamoDB returns numbers normalised (`5.0` comes back as `5`): integers that fit become
/// JSON integers, anything else a float.
fn parse_number(n: &str) -> Result<Value> {
    if let Ok(i) = n.parse::<i64>() {
        return Ok(Value::from(i));
    }
    if let Ok(u) = n.parse::<u64>() {
        return Ok(Value::from(u));
    }
    n.parse::<f64>()
        .ok()
        .and_then(Number::from_f64)
        .map(Value::Number)
        .ok_or_else(|| Error::Internal(format!("dynamodb: unreadable number {n}")))
}

fn from_av(av: &AttributeValue) -> Result<Value> {
    Ok(match av {
        AttributeValue::Null(_) => Value::Null,
        AttributeValue::Bool(b) => Value::Bool(*b),
        AttributeValue::N(n) => parse_number(n)?,
        AttributeValue::S(s) => Value::String(s.clone()),
        AttributeValue::L(l) => Value::Array(l.iter().map(from_av).collect::<Result<_>>()?),
        AttributeValue::M(m) => {
            // HashMap order is arbitrary; sort for a stable JSON object.
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            let mut out = serde_json::Map::new();
            for k in keys {
                out.insert(k.clone(), from_av(&m[k])?);
            }
            Value::Object(out)
        }
        other => return Err(Error::Internal(format!("dynamodb: attribute type this store never writes: {other:?}"))),
    })
}

fn key_map(key: &Key) -> AttrMap {
    HashMap::from([
        (PK.to_string(), AttributeValue::S(key.pk.clone())),
        (SK.to_string(), AttributeValue::S(key.sk.clone())),
    ])
}

fn item_map(item: &Item) -> AttrMap {
    let mut m = key_map(&item.key);
    for (k, v) in &item.attrs {
        m.insert(escape(k), to_av(v));
    }
    if let Some(t) = item.expires_at {
        m.insert(TTL.to_string(), AttributeValue::N(t.to_string()));
    }
    m
}

fn ttl_of(m: &AttrMap) -> Option<i64> {
    match m.get(TTL) {
        Some(AttributeValue::N(n)) => n.parse::<f64>().ok().map(|f| f as i64),
        _ => None,
    }
}

/// An item as DynamoDB returned it: values kept in S3 are still claims, their attributes
/// hold `null` (in their place, so the attributes keep their order once resolved).
struct Raw {
    item: Item,
    /// (caller's attribute name, claim).
    claims: Vec<(String, Claim)>,
    /// The item's size in DynamoDB (as [`size_of`] measures it), for the read-unit counter.
    bytes: usize,
}

/// Most keys of one `BatchGetItem` request (DynamoDB's limit).
const BATCH_GET_KEYS: usize = 100;
/// Requests for one chunk of keys before its unprocessed keys are an error.
const BATCH_GET_ROUNDS: u32 = 8;

fn parse_item(m: &AttrMap) -> Result<Raw> {
    let s = |name: &str| match m.get(name) {
        Some(AttributeValue::S(s)) => Ok(s.clone()),
        _ => Err(Error::Internal(format!("dynamodb: item without string attribute {name}"))),
    };
    let key = Key { pk: s(PK)?, sk: s(SK)? };
    let mut names: Vec<&String> = m.keys().collect();
    names.sort();
    let mut attrs = Attrs::new();
    let mut claims = Vec::new();
    let mut claimed = 0;
    for n in names {
        if let Some(name) = unescape(n) {
            let v = match &m[n] {
                AttributeValue::B(b) => {
                    let c = Claim::from_blob(b)?;
                    claimed += c.s3.len() + 16;
                    claims.push((name.to_string(), c));
                    Value::Null
                }
                av => from_av(av)?,
            };
            attrs.insert(name.to_string(), v);
        }
    }
    let bytes = size_of(&key, &attrs)? + claimed;
    Ok(Raw { item: Item { key, attrs, expires_at: ttl_of(m) }, claims, bytes })
}

fn expired(m: &AttrMap, now: i64) -> bool {
    ttl_of(m).is_some_and(|t| t <= now)
}

fn check_key(key: &Key) -> Result<()> {
    if key.pk.is_empty() || key.sk.is_empty() {
        return Err(Error::validation("partition and sort keys must not be empty"));
    }
    if key.pk.len() > MAX_PK_BYTES {
        return Err(Error::validation(format!("partition key longer than {MAX_PK_BYTES} bytes")));
    }
    if key.sk.len() > MAX_SK_BYTES {
        return Err(Error::validation(format!("sort key longer than {MAX_SK_BYTES} bytes")));
    }
    Ok(())
}

/// An item's size as the store port measures it (attributes as JSON, keys included), which
/// is also a fair estimate of DynamoDB's own (names + values) for billing.
fn size_of(key: &Key, attrs: &Attrs) -> Result<usize> {
    Ok(serde_json::to_string(attrs)?.len() + key.pk.len() + key.sk.len())
}

fn check_size(key: &Key, attrs: &Attrs) -> Result<usize> {
    let size = size_of(key, attrs)?;
    if size > MAX_ITEM_BYTES {
        return Err(Error::PayloadTooLarge(format!("item is {size} bytes; the limit is {MAX_ITEM_BYTES}")));
    }
    Ok(size)
}

/// Write request units of one item write of `bytes` (1 per started KB, at least 1).
fn write_units(bytes: usize) -> u64 {
    bytes.div_ceil(1024).max(1) as u64
}

/// Read request units of a strongly consistent read of `bytes` (1 per started 4 KB, at least 1).
fn read_units(bytes: usize) -> u64 {
    bytes.div_ceil(4096).max(1) as u64
}

// ---------------------------------------------------------------------------------------------
// Large values: the S3 claim check
// ---------------------------------------------------------------------------------------------

/// The size DynamoDB counts for a value, by its documented rules, rounded up: strings by their
/// UTF-8 length, numbers a byte per two digits plus one, booleans and nulls one byte, lists
/// and maps three bytes plus one per element (and a map's keys). The JSON length can be a
/// third less than this (`[0,0,…]`: two bytes an element in JSON, three in DynamoDB).
fn value_size(v: &Value) -> usize {
    match v {
        Value::Null | Value::Bool(_) => 1,
        Value::Number(n) => n.to_string().len() / 2 + 2,
        Value::String(s) => s.len(),
        Value::Array(a) => 3 + a.iter().map(|x| 1 + value_size(x)).sum::<usize>(),
        Value::Object(m) => 3 + m.iter().map(|(k, x)| 1 + k.len() + value_size(x)).sum::<usize>(),
    }
}

/// DynamoDB's count of an item's key and TTL attributes.
fn key_size(key: &Key) -> usize {
    PK.len() + key.pk.len() + SK.len() + key.sk.len() + TTL.len() + 21
}

/// A value kept in S3: its object and its length in bytes of JSON.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
struct Claim {
    s3: String,
    len: usize,
}

impl Claim {
    /// What stands for the value in DynamoDB: a binary attribute, a type this adapter never
    /// writes for a caller's value ([`to_av`]), so no value can pass for a claim.
    fn to_av(&self) -> Result<AttributeValue> {
        Ok(AttributeValue::B(Blob::new(serde_json::to_vec(self)?)))
    }

    fn from_blob(b: &Blob) -> Result<Self> {
        serde_json::from_slice(b.as_ref()).map_err(|e| Error::Internal(format!("dynamodb: unreadable S3 claim: {e}")))
    }
}

/// A value chosen for S3, serialized.
struct Pending<'a> {
    name: &'a str,
    bytes: Vec<u8>,
    value: &'a Value,
}

/// What one write put in S3 before going to DynamoDB.
#[derive(Default)]
struct Offload {
    /// The claims to store instead of the values, by the caller's attribute name.
    claims: HashMap<String, AttributeValue>,
    /// The values written, by object key (a returned item resolves them without a read).
    known: HashMap<String, Arc<Value>>,
    /// Bytes of JSON the item no longer holds, for the write-unit counter.
    moved: usize,
}

/// Which of a write's values go to S3: every one DynamoDB would count as more than
/// [`OFFLOAD_VALUE_BYTES`]; then, while the item's DynamoDB part is still over
/// [`INLINE_ITEM_BYTES`], the largest of those over [`MAX_COND_VALUE_BYTES`] of JSON (a value
/// a condition may compare with stays in DynamoDB). `base` is the size of the item's other
/// attributes in DynamoDB.
fn choose<'a>(attrs: impl Iterator<Item = (&'a String, &'a Value)>, base: usize) -> Result<Vec<Pending<'a>>> {
    const CLAIM_SIZE: usize = 256;
    let mut sized: Vec<(&String, &Value, usize)> = attrs.map(|(k, v)| (k, v, value_size(v))).collect();
    let mut inline = base + sized.iter().map(|(k, _, n)| k.len() + 1 + n).sum::<usize>();
    sized.sort_by_key(|s| std::cmp::Reverse(s.2));
    let mut out = Vec::new();
    for (name, value, n) in sized {
        if n <= OFFLOAD_VALUE_BYTES && inline <= INLINE_ITEM_BYTES {
            break;
        }
        let bytes = serde_json::to_vec(value)?;
        if n > OFFLOAD_VALUE_BYTES || bytes.len() > MAX_COND_VALUE_BYTES {
            inline = (inline + CLAIM_SIZE).saturating_sub(n);
            out.push(Pending { name, bytes, value });
        }
    }
    Ok(out)
}

/// The write's values that may go to S3: those it sets and neither removes nor adds to.
fn settable(update: &Update) -> impl Iterator<Item = (&String, &Value)> {
    update.set.iter().filter(|(k, _)| !update.remove.contains(k) && !update.add.iter().any(|(n, _)| n == *k))
}

/// The item's size as the port measures it ([`size_of`]: compact JSON of the attributes, plus
/// the keys) once `update` is applied to `current`, whose claims count as the values they
/// stand for; `pending` are the update's values bound for S3, already serialized.
fn size_after(key: &Key, current: Option<&Raw>, update: &Update, pending: &[Pending<'_>]) -> Result<usize> {
    let json_len = |v: &Value| serde_json::to_vec(v).map(|b| b.len());
    let mut sizes: HashMap<&str, usize> = HashMap::new();
    if let Some(raw) = current {
        for (k, v) in &raw.item.attrs {
            sizes.insert(k, json_len(v)?);
        }
        for (k, c) in &raw.claims {
            sizes.insert(k, c.len);
        }
    }
    for (k, v) in &update.set {
        let n = match pending.iter().find(|p| p.name == k) {
            Some(p) => p.bytes.len(),
            None => json_len(v)?,
        };
        sizes.insert(k, n);
    }
    for k in &update.remove {
        sizes.remove(k.as_str());
    }
    for (k, _) in &update.add {
        // A counter: at most the digits of an i64.
        sizes.insert(k, 20);
    }
    let mut total = 2 + key.pk.len() + key.sk.len() + sizes.len().saturating_sub(1);
    for (k, n) in sizes {
        total += serde_json::to_string(k)?.len() + 1 + n;
    }
    Ok(total)
}

impl DynamoStore {
    /// Writes `pending` to S3 under `class`, returning the claims that replace them.
    async fn upload(&self, key: &Key, pending: Vec<Pending<'_>>, class: &str) -> Result<Offload> {
        let mut o = Offload::default();
        let Some(payloads) = &self.payloads else { return Ok(o) };
        let mut puts = Vec::with_capacity(pending.len());
        for p in pending {
            let claim = Claim { s3: s3::object_key(class, key, &s3::digest(&p.bytes)), len: p.bytes.len() };
            let value = Arc::new(p.value.clone());
            o.claims.insert(p.name.to_string(), claim.to_av()?);
            o.known.insert(claim.s3.clone(), value.clone());
            o.moved += claim.len;
            puts.push((claim.s3, p.bytes, value));
        }
        stream::iter(puts)
            .map(|(k, bytes, value): (String, Vec<u8>, Arc<Value>)| async move { payloads.put(&k, bytes, value).await })
            .buffer_unordered(s3::MAX_PARALLEL_GETS)
            .try_collect::<Vec<()>>()
            .await?;
        Ok(o)
    }

    /// Sends a put's large values to S3 (none without a bucket).
    async fn offload_put(&self, item: &Item) -> Result<Offload> {
        if self.payloads.is_none() {
            return Ok(Offload::default());
        }
        let pending = choose(item.attrs.iter(), key_size(&item.key))?;
        if pending.is_empty() {
            return Ok(Offload::default());
        }
        self.upload(&item.key, pending, &s3::class(item.expires_at, now_secs())).await
    }

    /// Sends an update's large values to S3. Only then is the item read first: for its size
    /// after the update (the port's limit, [`MAX_ITEM_BYTES`], counts the values in S3 too) and
    /// for its TTL (the values' class) when the update leaves the TTL as it is.
    async fn offload_update(&self, key: &Key, update: &Update) -> Result<Offload> {
        if self.payloads.is_none() {
            return Ok(Offload::default());
        }
        let pending = choose(settable(update), key_size(key))?;
        if pending.is_empty() {
            return Ok(Offload::default());
        }
        let current = self.read_raw(key).await?;
        let size = size_after(key, current.as_ref(), update, &pending)?;
        if size > MAX_ITEM_BYTES {
            return Err(Error::PayloadTooLarge(format!(
                "the update makes item {}/{} {size} bytes; the limit is {MAX_ITEM_BYTES}",
                key.pk, key.sk
            )));
        }
        let ttl = match update.expires_at {
            Some(t) => t,
            None => current.and_then(|c| c.item.expires_at),
        };
        self.upload(key, pending, &s3::class(ttl, now_secs())).await
    }

    async fn offload(&self, w: &Write) -> Result<Offload> {
        match w {
            Write::Put { item, .. } => self.offload_put(item).await,
            Write::Update { key, update, .. } => self.offload_update(key, update).await,
            Write::Delete { .. } | Write::Check { .. } => Ok(Offload::default()),
        }
    }

    /// The live item at `key`, claims unresolved (one strongly consistent GetItem).
    async fn read_raw(&self, key: &Key) -> Result<Option<Raw>> {
        metrics::count(Op::DdbGetItem);
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(key_map(key)))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| sdk_error("GetItem", e))?;
        let Some(m) = out.item() else {
            metrics::count(Op::DdbReadUnits);
            return Ok(None);
        };
        let raw = parse_item(m)?;
        metrics::add(Op::DdbReadUnits, read_units(raw.bytes));
        metrics::add(Op::DdbReadBytes, raw.bytes as u64);
        Ok(if expired(m, now_secs()) { None } else { Some(raw) })
    }

    /// The live items at `keys` (distinct keys), claims unresolved: `BatchGetItem`, strongly
    /// consistent, [`BATCH_GET_KEYS`] keys per request, the keys DynamoDB leaves unprocessed
    /// (throttling, the 16 MB answer limit) asked again after a short backoff.
    async fn read_raw_many(&self, keys: &[Key]) -> Result<HashMap<Key, Raw>> {
        let now = now_secs();
        let mut found = HashMap::new();
        for chunk in keys.chunks(BATCH_GET_KEYS) {
            let mut pending: Vec<AttrMap> = chunk.iter().map(key_map).collect();
            let mut round = 0u32;
            while !pending.is_empty() {
                if round > 0 {
                    tokio::time::sleep(Duration::from_millis(20u64 << round.min(6))).await;
                }
                round += 1;
                if round > BATCH_GET_ROUNDS {
                    return Err(Error::Internal(format!(
                        "dynamodb BatchGetItem: {} keys still unprocessed after {BATCH_GET_ROUNDS} rounds",
                        pending.len()
                    )));
                }
                let asked = pending.len();
                let ka = KeysAndAttributes::builder()
                    .set_keys(Some(std::mem::take(&mut pending)))
                    .consistent_read(true)
                    .build()
                    .map_err(|e| Error::Internal(format!("dynamodb BatchGetItem request: {e}")))?;
                metrics::count(Op::DdbBatchGetItem);
                let out = self
                    .client
                    .batch_get_item()
                    .request_items(&self.table, ka)
                    .send()
                    .await
                    .map_err(|e| sdk_error("BatchGetItem", e))?;
                let items = out.responses().and_then(|r| r.get(&self.table)).map(Vec::as_slice).unwrap_or_default();
                // A key with no item is billed like a small read.
                let misses = asked.saturating_sub(items.len());
                let unprocessed: Vec<AttrMap> = out
                    .unprocessed_keys()
                    .and_then(|u| u.get(&self.table))
                    .map(|k| k.keys().to_vec())
                    .unwrap_or_default();
                metrics::add(Op::DdbReadUnits, misses.saturating_sub(unprocessed.len()) as u64);
                for m in items {
                    let raw = parse_item(m)?;
                    metrics::add(Op::DdbReadUnits, read_units(raw.bytes));
                    metrics::add(Op::DdbReadBytes, raw.bytes as u64);
                    if !expired(m, now) {
                        found.insert(raw.item.key.clone(), raw);
                    }
                }
                pending = unprocessed;
            }
        }
        Ok(found)
    }

    /// Replaces the claims of `raws` by their values: from `known` (values this call wrote),
    /// else from S3, every object of the call at once (up to [`s3::MAX_PARALLEL_GETS`]).
    async fn resolve(&self, mut raws: Vec<Raw>, known: &HashMap<String, Arc<Value>>) -> Result<Vec<Item>> {
        let mut wanted: Vec<String> = Vec::new();
        for raw in &raws {
            for (_, c) in &raw.claims {
                if !known.contains_key(&c.s3) && !wanted.contains(&c.s3) {
                    wanted.push(c.s3.clone());
                }
            }
        }
        let fetched: HashMap<String, Arc<Value>> = if wanted.is_empty() {
            HashMap::new()
        } else {
            let Some(payloads) = &self.payloads else {
                return Err(Error::Internal(format!(
                    "dynamodb: table {} holds values kept in S3, but this store has no bucket (BATON_BUCKET)",
                    self.table
                )));
            };
            stream::iter(wanted)
                .map(|k: String| async move { payloads.get(&k).await.map(|v| (k, v)) })
                .buffer_unordered(s3::MAX_PARALLEL_GETS)
                .try_collect()
                .await?
        };
        for raw in &mut raws {
            for (name, c) in std::mem::take(&mut raw.claims) {
                let v = known
                    .get(&c.s3)
                    .or_else(|| fetched.get(&c.s3))
                    .ok_or_else(|| Error::internal(format!("s3: value {} was not read", c.s3)))?;
                raw.item.attrs.insert(name, Value::clone(v));
            }
        }
        Ok(raws.into_iter().map(|r| r.item).collect())
    }

    async fn resolve_one(&self, raw: Raw, known: &HashMap<String, Arc<Value>>) -> Result<Item> {
        if raw.claims.is_empty() {
            return Ok(raw.item);
        }
        let mut items = self.resolve(vec![raw], known).await?;
        items.pop().ok_or_else(|| Error::internal("dynamodb: an item vanished while resolving its values"))
    }
}

/// The item to put, its large values replaced by their claims.
fn stored_item(item: &Item, o: &Offload) -> AttrMap {
    let mut m = item_map(item);
    for (name, av) in &o.claims {
        m.insert(escape(name), av.clone());
    }
    m
}

// ---------------------------------------------------------------------------------------------
// Expressions
// ---------------------------------------------------------------------------------------------

/// Builds one request's expressions, with every name and value as a placeholder.
#[derive(Default)]
struct Expr {
    names: HashMap<String, String>,
    values: AttrMap,
    now: Option<i64>,
}

impl Expr {
    fn new() -> Self {
        Self::default()
    }

    /// `#n…` for a stored attribute name.
    fn name(&mut self, stored: &str) -> String {
        if let Some((p, _)) = self.names.iter().find(|(_, v)| v.as_str() == stored) {
            return p.clone();
        }
        let p = format!("#n{}", self.names.len());
        self.names.insert(p.clone(), stored.to_string());
        p
    }

    fn attr(&mut self, caller_name: &str) -> String {
        self.name(&escape(caller_name))
    }

    fn value(&mut self, v: AttributeValue) -> String {
        let p = format!(":v{}", self.values.len());
        self.values.insert(p.clone(), v);
        p
    }

    fn now(&mut self) -> String {
        let now = *self.now.get_or_insert_with(now_secs);
        let p = ":now".to_string();
        self.values.insert(p.clone(), AttributeValue::N(now.to_string()));
        p
    }

    /// True while the item (if any) has not expired.
    fn live(&mut self) -> String {
        let (ttl, now) = (self.name(TTL), self.now());
        format!("(attribute_not_exists({ttl}) OR {ttl} > {now})")
    }

    /// True when the item exists and has not expired.
    fn exists(&mut self) -> String {
        let pk = self.name(PK);
        let live = self.live();
        format!("(attribute_exists({pk}) AND {live})")
    }

    fn always(&mut self, holds: bool) -> String {
        let pk = self.name(PK);
        if holds {
            format!("(attribute_exists({pk}) OR attribute_not_exists({pk}))")
        } else {
            format!("(attribute_exists({pk}) AND attribute_not_exists({pk}))")
        }
    }

    /// The condition as DynamoDB evaluates it against the stored item, with expiry folded in
    /// so that the result equals [`store::eval_cond`] on the live item.
    fn cond(&mut self, c: &Cond) -> String {
        match c {
            Cond::Exists => self.exists(),
            Cond::NotExists => {
                let e = self.exists();
                format!("(NOT {e})")
            }
            Cond::AttrAbsent(n) => {
                let (n, e) = (self.attr(n), self.exists());
                format!("(attribute_not_exists({n}) OR NOT {e})")
            }
            Cond::Eq(n, v) => self.compare(n, "=", v),
            Cond::Lt(n, v) | Cond::Le(n, v) | Cond::Gt(n, v) | Cond::Ge(n, v)
                if !matches!(v, Value::Number(_) | Value::String(_)) =>
            {
                // The port orders only numbers and strings; DynamoDB would reject the operand.
                self.always(false)
            }
            Cond::Lt(n, v) => self.order(n, "<", v),
            Cond::Le(n, v) => self.order(n, "<=", v),
            Cond::Gt(n, v) => self.order(n, ">", v),
            Cond::Ge(n, v) => self.order(n, ">=", v),
            Cond::And(cs) if cs.is_empty() => self.always(true),
            Cond::Or(cs) if cs.is_empty() => self.always(false),
            // DynamoDB rejects redundant parentheses, so a group of one is just its member.
            Cond::And(cs) | Cond::Or(cs) if cs.len() == 1 => self.cond(&cs[0]),
            Cond::And(cs) => {
                let parts: Vec<String> = cs.iter().map(|c| self.cond(c)).collect();
                format!("({})", parts.join(" AND "))
            }
            Cond::Or(cs) => {
                let parts: Vec<String> = cs.iter().map(|c| self.cond(c)).collect();
                format!("({})", parts.join(" OR "))
            }
            Cond::Not(c) => {
                let inner = self.cond(c);
                format!("(NOT {inner})")
            }
        }
    }

    fn compare(&mut self, name: &str, op: &str, v: &Value) -> String {
        let (n, v) = (self.attr(name), self.value(to_av(v)));
        let live = self.live();
        format!("({n} {op} {v} AND {live})")
    }

    /// An ordering comparison, only between values of the same type (a number is never less
    /// than a string). DynamoDB already evaluates mixed types as false; the explicit type
    /// test keeps emulators that fail on them (moto) on the same semantics.
    fn order(&mut self, name: &str, op: &str, v: &Value) -> String {
        let kind = if v.is_number() { "N" } else { "S" };
        let (n, t, v) = (self.attr(name), self.value(AttributeValue::S(kind.into())), self.value(to_av(v)));
        let live = self.live();
        format!("(attribute_type({n}, {t}) AND {n} {op} {v} AND {live})")
    }

    /// `cond`, and the item is live or absent (so an update never merges into an expired item).
    fn update_cond(&mut self, cond: Option<&Cond>) -> String {
        let pk = self.name(PK);
        let live = self.live();
        let fresh = format!("(attribute_not_exists({pk}) OR {live})");
        match cond {
            Some(c) => {
                let c = self.cond(c);
                format!("({fresh} AND {c})")
            }
            None => fresh,
        }
    }

    /// The update as one expression, with [`store::apply_update`]'s order (set, then remove,
    /// then add) folded in, since DynamoDB refuses two actions on one attribute.
    fn update(&mut self, u: &Update, claims: &HashMap<String, AttributeValue>) -> String {
        let mut set = Vec::new();
        let mut remove = Vec::new();
        let mut add = Vec::new();
        let mut deltas: Vec<(&str, i64)> = Vec::new();
        for (k, d) in &u.add {
            match deltas.iter_mut().find(|(n, _)| n == k) {
                Some((_, total)) => *total += d,
                None => deltas.push((k, *d)),
            }
        }
        let removed = |k: &str| u.remove.iter().any(|r| r == k);
        for (k, v) in &u.set {
            if removed(k) {
                continue;
            }
            let delta = deltas.iter().find(|(n, _)| n == k).map(|(_, d)| *d);
            let av = match (delta, v.as_i64()) {
                (Some(d), Some(i)) => to_av(&Value::from(i + d)),
                (Some(d), None) => to_av(&Value::from(d)),
                (None, _) => claims.get(k).cloned().unwrap_or_else(|| to_av(v)),
            };
            let (n, v) = (self.attr(k), self.value(av));
            set.push(format!("{n} = {v}"));
        }
        for k in &u.remove {
            if deltas.iter().any(|(n, _)| n == k) {
                // Removed, then added to: counts from zero.
                continue;
            }
            let n = self.attr(k);
            if !remove.contains(&n) {
                remove.push(n);
            }
        }
        for (k, d) in &deltas {
            if u.set.contains_key(*k) && !removed(k) {
                continue;
            }
            let n = self.attr(k);
            if removed(k) {
                let v = self.value(AttributeValue::N(d.to_string()));
                set.push(format!("{n} = {v}"));
            } else {
                let v = self.value(AttributeValue::N(d.to_string()));
                add.push(format!("{n} {v}"));
            }
        }
        match u.expires_at {
            Some(Some(t)) => {
                let (n, v) = (self.name(TTL), self.value(AttributeValue::N(t.to_string())));
                set.push(format!("{n} = {v}"));
            }
            Some(None) => remove.push(self.name(TTL)),
            None => {}
        }
        let mut parts = Vec::new();
        if !set.is_empty() {
            parts.push(format!("SET {}", set.join(", ")));
        }
        if !remove.is_empty() {
            parts.push(format!("REMOVE {}", remove.join(", ")));
        }
        if !add.is_empty() {
            parts.push(format!("ADD {}", add.join(", ")));
        }
        parts.join(" ")
    }

    fn names(&self) -> Option<HashMap<String, String>> {
        (!self.names.is_empty()).then(|| self.names.clone())
    }

    fn values(&self) -> Option<AttrMap> {
        (!self.values.is_empty()).then(|| self.values.clone())
    }
}

// ---------------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------------

fn conflict(key: &Key) -> Error {
    Error::Conflict(format!("condition failed on {}/{}", key.pk, key.sk))
}

/// Translates an SDK failure that is not a failed condition: an item over DynamoDB's size
/// limit is the caller's `PayloadTooLarge`, throttling and server trouble are internal (and
/// already retried by the SDK's standard retry policy), anything else is our bug.
fn sdk_error<E, R>(op: &str, e: SdkError<E, R>) -> Error
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
{
    let code = e.code().unwrap_or("").to_string();
    let message = e.message().unwrap_or("").to_string();
    if code == "ValidationException" && message.to_ascii_lowercase().contains("size") {
        return Error::PayloadTooLarge(format!("item too large for DynamoDB: {message}"));
    }
    let retryable = matches!(
        code.as_str(),
        "ProvisionedThroughputExceededException"
            | "ThrottlingException"
            | "RequestLimitExceeded"
            | "InternalServerError"
            | "ServiceUnavailable"
            | "TransactionInProgressException"
    );
    let what = if retryable { " (throttled or unavailable; retryable)" } else { "" };
    Error::Internal(format!("dynamodb {op}{what}: {}", DisplayErrorContext(e)))
}

// ---------------------------------------------------------------------------------------------
// The port
// ---------------------------------------------------------------------------------------------

impl DynamoStore {
    /// Deletes `key` if it still holds the expired item with TTL `ttl`.
    async fn drop_expired(&self, key: &Key, ttl: i64) -> Result<()> {
        let mut e = Expr::new();
        let (n, v) = (e.name(TTL), e.value(AttributeValue::N(ttl.to_string())));
        metrics::count(Op::DdbDeleteItem);
        metrics::count(Op::DdbWriteUnits);
        let r = self
            .client
            .delete_item()
            .table_name(&self.table)
            .set_key(Some(key_map(key)))
            .condition_expression(format!("{n} = {v}"))
            .set_expression_attribute_names(e.names())
            .set_expression_attribute_values(e.values())
            .send()
            .await;
        match r {
            Ok(_) => Ok(()),
            // Someone else already replaced or removed it: the retry will see the new state.
            Err(err) if err.as_service_error().is_some_and(|s| s.is_conditional_check_failed_exception()) => Ok(()),
            Err(err) => Err(sdk_error("DeleteItem", err)),
        }
    }

    /// After a failed update condition: `Some(ttl)` when the reason was an expired item that
    /// the caller's condition accepts as absent (so the update should start fresh).
    fn expired_retry(old: Option<&AttrMap>, cond: Option<&Cond>, now: i64) -> Option<i64> {
        let old = old?;
        if !expired(old, now) {
            return None;
        }
        let holds_on_absent = cond.is_none_or(|c| store::eval_cond(c, None));
        if holds_on_absent { ttl_of(old) } else { None }
    }

    async fn transact_once(
        &self,
        writes: &[Write],
        offloads: &[Offload],
    ) -> Result<std::result::Result<(), TxFailure>> {
        let mut items = Vec::with_capacity(writes.len());
        let mut units = 0;
        for (w, o) in writes.iter().zip(offloads) {
            let mut e = Expr::new();
            let claimed = 256 * o.claims.len();
            let item = match w {
                Write::Put { item, cond } => {
                    units += 2 * write_units(size_of(&item.key, &item.attrs)? - o.moved + claimed);
                    let c = cond.as_ref().map(|c| e.cond(c));
                    let put = Put::builder()
                        .table_name(&self.table)
                        .set_item(Some(stored_item(item, o)))
                        .set_condition_expression(c)
                        .set_expression_attribute_names(e.names())
                        .set_expression_attribute_values(e.values())
                        .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
                        .build()
                        .map_err(build_err)?;
                    TransactWriteItem::builder().put(put).build()
                }
                Write::Update { key, update, cond } => {
                    // DynamoDB bills the larger of the item before and after; without reading it,
                    // the written attributes are the estimate (exact for items under 1 KB).
                    units += 2 * write_units(size_of(key, &update.set)? - o.moved + claimed);
                    let c = e.update_cond(cond.as_ref());
                    let u = e.update(update, &o.claims);
                    let upd = DdbUpdate::builder()
                        .table_name(&self.table)
                        .set_key(Some(key_map(key)))
                        .update_expression(if u.is_empty() { self.noop_update(&mut e) } else { u })
                        .condition_expression(c)
                        .set_expression_attribute_names(e.names())
                        .set_expression_attribute_values(e.values())
                        .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
                        .build()
                        .map_err(build_err)?;
                    TransactWriteItem::builder().update(upd).build()
                }
                Write::Delete { key, cond } => {
                    units += 2;
                    let c = cond.as_ref().map(|c| e.cond(c));
                    let del = Delete::builder()
                        .table_name(&self.table)
                        .set_key(Some(key_map(key)))
                        .set_condition_expression(c)
                        .set_expression_attribute_names(e.names())
                        .set_expression_attribute_values(e.values())
                        .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
                        .build()
                        .map_err(build_err)?;
                    TransactWriteItem::builder().delete(del).build()
                }
                Write::Check { key, cond } => {
                    units += 2;
                    let c = e.cond(cond);
                    let check = ConditionCheck::builder()
                        .table_name(&self.table)
                        .set_key(Some(key_map(key)))
                        .condition_expression(c)
                        .set_expression_attribute_names(e.names())
                        .set_expression_attribute_values(e.values())
                        .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
                        .build()
                        .map_err(build_err)?;
                    TransactWriteItem::builder().condition_check(check).build()
                }
            };
            items.push(item);
        }
        metrics::count(Op::DdbTransactWriteItems);
        metrics::add(Op::DdbTransactItems, writes.len() as u64);
        metrics::add(Op::DdbWriteUnits, units);
        let r = self.client.transact_write_items().set_transact_items(Some(items)).send().await;
        let err = match r {
            Ok(_) => return Ok(Ok(())),
            Err(err) => err,
        };
        let Some(reasons) = err.as_service_error().and_then(|s| {
            match s {
            aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError::TransactionCanceledException(
                c,
            ) => Some(c.cancellation_reasons().to_vec()),
            _ => None,
        }
        }) else {
            if err.code() == Some("TransactionInProgressException") {
                return Ok(Err(TxFailure::Busy));
            }
            return Err(sdk_error("TransactWriteItems", err));
        };
        let now = now_secs();
        let mut stale = Vec::new();
        let mut failed = None;
        for (i, reason) in reasons.iter().enumerate() {
            match reason.code() {
                Some("ConditionalCheckFailed") => {
                    let cond = match &writes[i] {
                        Write::Update { cond, .. } => cond.as_ref(),
                        _ => None,
                    };
                    match (&writes[i], Self::expired_retry(reason.item(), cond, now)) {
                        (Write::Update { key, .. }, Some(ttl)) => stale.push((key.clone(), ttl)),
                        _ => failed = failed.or(Some(i)),
                    }
                }
                Some("TransactionConflict") | Some("ThrottlingError") | Some("ProvisionedThroughputExceeded") => {
                    return Ok(Err(TxFailure::Busy));
                }
                Some("ValidationError")
                    if reason.message().is_some_and(|m| m.to_ascii_lowercase().contains("size")) =>
                {
                    return Err(Error::PayloadTooLarge(format!(
                        "transaction write {i} makes an item too large: {}",
                        reason.message().unwrap_or("")
                    )));
                }
                Some("None") | None => {}
                Some(other) => {
                    return Err(Error::Internal(format!(
                        "dynamodb TransactWriteItems cancelled: write {i}: {other}: {}",
                        reason.message().unwrap_or("")
                    )));
                }
            }
        }
        if let Some(i) = failed {
            let k = writes[i].key();
            return Err(Error::Conflict(format!(
                "transaction cancelled: condition failed on write {i} ({}/{})",
                k.pk, k.sk
            )));
        }
        if stale.is_empty() {
            return Err(sdk_error("TransactWriteItems", err));
        }
        Ok(Err(TxFailure::Expired(stale)))
    }

    /// An update expression that changes nothing, for an [`Update`] with no changes (DynamoDB
    /// requires a non-empty expression and refuses to touch key attributes): it removes `_`,
    /// a name no stored attribute has ([`escape`] never produces it).
    fn noop_update(&self, e: &mut Expr) -> String {
        let n = e.name(NEVER_STORED);
        format!("REMOVE {n}")
    }
}

enum TxFailure {
    /// Writes met expired items; delete them and retry.
    Expired(Vec<(Key, i64)>),
    /// Contention or throttling; retry after a pause.
    Busy,
}

#[async_trait]
impl Store for DynamoStore {
    async fn get(&self, key: &Key) -> Result<Option<Item>> {
        metrics::count(Op::StoreGet);
        check_key(key)?;
        match self.read_raw(key).await? {
            Some(raw) => Ok(Some(self.resolve_one(raw, &HashMap::new()).await?)),
            None => Ok(None),
        }
    }

    async fn get_many(&self, keys: &[Key]) -> Result<Vec<Option<Item>>> {
        metrics::count(Op::StoreGetMany);
        keys.iter().try_for_each(check_key)?;
        let mut distinct: Vec<Key> = Vec::with_capacity(keys.len());
        let mut seen = HashSet::new();
        for k in keys {
            if seen.insert(k) {
                distinct.push(k.clone());
            }
        }
        let (order, raws): (Vec<Key>, Vec<Raw>) = self.read_raw_many(&distinct).await?.into_iter().unzip();
        let items = self.resolve(raws, &HashMap::new()).await?;
        let by_key: HashMap<&Key, Item> = order.iter().zip(items).collect();
        Ok(keys.iter().map(|k| by_key.get(k).cloned()).collect())
    }

    async fn put(&self, item: Item, cond: Option<Cond>) -> Result<()> {
        metrics::count(Op::StorePut);
        check_key(&item.key)?;
        let size = check_size(&item.key, &item.attrs)?;
        cond.as_ref().map_or(Ok(()), store::check_cond)?;
        let offload = self.offload_put(&item).await?;
        let mut e = Expr::new();
        let c = cond.as_ref().map(|c| e.cond(c));
        metrics::count(Op::DdbPutItem);
        metrics::add(Op::DdbWriteUnits, write_units(size - offload.moved + 256 * offload.claims.len()));
        let r = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(stored_item(&item, &offload)))
            .set_condition_expression(c)
            .set_expression_attribute_names(e.names())
            .set_expression_attribute_values(e.values())
            .send()
            .await;
        match r {
            Ok(_) => Ok(()),
            Err(err) if err.as_service_error().is_some_and(|s| s.is_conditional_check_failed_exception()) => {
                Err(conflict(&item.key))
            }
            Err(err) => Err(sdk_error("PutItem", err)),
        }
    }

    async fn update(&self, key: &Key, update: Update, cond: Option<Cond>) -> Result<Item> {
        metrics::count(Op::StoreUpdate);
        check_key(key)?;
        check_size(key, &update.set)?;
        cond.as_ref().map_or(Ok(()), store::check_cond)?;
        let offload = self.offload_update(key, &update).await?;
        for _ in 0..MAX_ATTEMPTS {
            let mut e = Expr::new();
            let c = e.update_cond(cond.as_ref());
            let mut u = e.update(&update, &offload.claims);
            if u.is_empty() {
                u = self.noop_update(&mut e);
            }
            metrics::count(Op::DdbUpdateItem);
            let r = self
                .client
                .update_item()
                .table_name(&self.table)
                .set_key(Some(key_map(key)))
                .update_expression(u)
                .condition_expression(c)
                .set_expression_attribute_names(e.names())
                .set_expression_attribute_values(e.values())
                .return_values(ReturnValue::AllNew)
                .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
                .send()
                .await;
            match r {
                Ok(out) => {
                    let m = out.attributes().ok_or_else(|| Error::internal("dynamodb UpdateItem: no attributes"))?;
                    let raw = parse_item(m)?;
                    metrics::add(Op::DdbWriteUnits, write_units(raw.bytes));
                    return self.resolve_one(raw, &offload.known).await;
                }
                Err(err) => {
                    metrics::count(Op::DdbWriteUnits);
                    let old = match err.as_service_error() {
                        Some(
                            aws_sdk_dynamodb::operation::update_item::UpdateItemError::ConditionalCheckFailedException(
                                c,
                            ),
                        ) => c.item().cloned(),
                        _ => return Err(sdk_error("UpdateItem", err)),
                    };
                    match Self::expired_retry(old.as_ref(), cond.as_ref(), now_secs()) {
                        Some(ttl) => self.drop_expired(key, ttl).await?,
                        None => return Err(conflict(key)),
                    }
                }
            }
        }
        Err(Error::Internal(format!(
            "dynamodb UpdateItem on {}/{}: gave up after {MAX_ATTEMPTS} attempts",
            key.pk, key.sk
        )))
    }

    async fn delete(&self, key: &Key, cond: Option<Cond>) -> Result<()> {
        metrics::count(Op::StoreDelete);
        check_key(key)?;
        cond.as_ref().map_or(Ok(()), store::check_cond)?;
        let mut e = Expr::new();
        let c = cond.as_ref().map(|c| e.cond(c));
        metrics::count(Op::DdbDeleteItem);
        metrics::count(Op::DdbWriteUnits);
        let r = self
            .client
            .delete_item()
            .table_name(&self.table)
            .set_key(Some(key_map(key)))
            .set_condition_expression(c)
            .set_expression_attribute_names(e.names())
            .set_expression_attribute_values(e.values())
            .send()
            .await;
        match r {
            Ok(_) => Ok(()),
            Err(err) if err.as_service_error().is_some_and(|s| s.is_conditional_check_failed_exception()) => {
                Err(conflict(key))
            }
            Err(err) => Err(sdk_error("DeleteItem", err)),
        }
    }

    async fn transact(&self, writes: Vec<Write>) -> Result<()> {
        metrics::count(Op::StoreTransact);
        if writes.len() > MAX_TRANSACT_ITEMS {
            return Err(Error::validation(format!(
                "a transaction takes at most {MAX_TRANSACT_ITEMS} writes, got {}",
                writes.len()
            )));
        }
        if writes.is_empty() {
            return Ok(());
        }
        let mut seen = HashSet::with_capacity(writes.len());
        for w in &writes {
            check_key(w.key())?;
            if !seen.insert(w.key()) {
                let k = w.key();
                return Err(Error::validation(format!("two writes on {}/{} in one transaction", k.pk, k.sk)));
            }
            match w {
                Write::Put { item, .. } => {
                    check_size(&item.key, &item.attrs)?;
                }
                Write::Update { key, update, .. } => {
                    check_size(key, &update.set)?;
                }
                _ => {}
            }
        }
        store::check_write_conds(&writes)?;
        // Large values go to S3 first; if the transaction is then refused, they are orphans
        // that their lifecycle rule deletes (see `adapters::s3`).
        let offloads: Vec<Offload> = futures::future::try_join_all(writes.iter().map(|w| self.offload(w))).await?;
        for attempt in 0..MAX_ATTEMPTS {
            match self.transact_once(&writes, &offloads).await? {
                Ok(()) => return Ok(()),
                Err(TxFailure::Expired(stale)) => {
                    for (key, ttl) in stale {
                        self.drop_expired(&key, ttl).await?;
                    }
                }
                Err(TxFailure::Busy) => {
                    let jitter = rand::random::<u64>() % 50;
                    tokio::time::sleep(Duration::from_millis(50 * (1 << attempt) + jitter)).await;
                }
            }
        }
        Err(Error::Internal(format!("dynamodb TransactWriteItems: gave up after {MAX_ATTEMPTS} attempts")))
    }

    async fn query(&self, query: Query) -> Result<Page> {
        metrics::count(Op::StoreQuery);
        if query.limit == 0 || query.limit > MAX_QUERY_LIMIT {
            return Err(Error::validation(format!("query limit must be 1..={MAX_QUERY_LIMIT}")));
        }
        if query.pk.is_empty() {
            return Err(Error::validation("partition key must not be empty"));
        }
        let mut e = Expr::new();
        let (pk, pkv) = (e.name(PK), e.value(AttributeValue::S(query.pk.clone())));
        let mut key_cond = format!("{pk} = {pkv}");
        match &query.range {
            SkRange::All => {}
            SkRange::Prefix(p) if p.is_empty() => {}
            SkRange::Prefix(p) => {
                let (sk, v) = (e.name(SK), e.value(AttributeValue::S(p.clone())));
                key_cond.push_str(&format!(" AND begins_with({sk}, {v})"));
            }
            SkRange::Between(lo, hi) => {
                if lo > hi {
                    return Err(Error::validation("query range: lower bound is above upper bound"));
                }
                let sk = e.name(SK);
                let (a, b) = (e.value(AttributeValue::S(lo.clone())), e.value(AttributeValue::S(hi.clone())));
                key_cond.push_str(&format!(" AND {sk} BETWEEN {a} AND {b}"));
            }
        }
        let filter = e.live();
        let start = match &query.cursor {
            Some(c) => {
                let sk = decode_cursor(c)?;
                Some(key_map(&Key { pk: query.pk.clone(), sk }))
            }
            None => None,
        };
        metrics::count(Op::DdbQuery);
        let out = self
            .client
            .query()
            .table_name(&self.table)
            .key_condition_expression(key_cond)
            .filter_expression(filter)
            .set_expression_attribute_names(e.names())
            .set_expression_attribute_values(e.values())
            .consistent_read(true)
            .scan_index_forward(!query.descending)
            .limit(i32::try_from(query.limit).unwrap_or(i32::MAX))
            .set_exclusive_start_key(start)
            .send()
            .await
            .map_err(|e| sdk_error("Query", e))?;
        let mut raws = Vec::with_capacity(out.items().len());
        let mut bytes = 0;
        for m in out.items() {
            let raw = parse_item(m)?;
            bytes += raw.bytes;
            raws.push(raw);
        }
        metrics::add(Op::DdbReadUnits, read_units(bytes));
        metrics::add(Op::DdbReadBytes, bytes as u64);
        let items = self.resolve(raws, &HashMap::new()).await?;
        let next_cursor = match out.last_evaluated_key() {
            Some(k) => match k.get(SK) {
                Some(AttributeValue::S(sk)) => Some(encode_cursor(sk)),
                _ => return Err(Error::internal("dynamodb Query: LastEvaluatedKey without a sort key")),
            },
            None => None,
        };
        Ok(Page { items, next_cursor })
    }
}

/// A cursor is the last evaluated sort key (the partition is the query's own), hex-encoded
/// so it is opaque and URL-safe.
fn encode_cursor(sk: &str) -> String {
    hex::encode(sk.as_bytes())
}

fn decode_cursor(cursor: &str) -> Result<String> {
    hex::decode(cursor)
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .filter(|s| !s.is_empty())
        .ok_or_else(|| Error::validation("invalid query cursor"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reserved_and_underscore_names_are_escaped_reversibly() {
        for name in ["pk", "sk", "ttl", "_x", "__y", "plain", "pk2", ""] {
            let stored = escape(name);
            assert!(![PK, SK, TTL].contains(&stored.as_str()), "{name} must not be stored as a key attribute");
            assert_eq!(unescape(&stored), Some(name));
        }
        assert_eq!(unescape("pk"), None);
        for name in ["", "_", "x", "__"] {
            assert_ne!(escape(name), NEVER_STORED);
        }
    }

    #[test]
    fn values_roundtrip_through_attribute_values() {
        let v = json!({"s": "x", "n": 42, "neg": -7, "f": 1.5, "big": 9_007_199_254_740_993_i64,
            "u": u64::MAX, "b": false, "nul": null, "list": [1, "two", {"three": 3}], "map": {"a": {}}});
        assert_eq!(from_av(&to_av(&v)).unwrap(), v);
    }

    #[test]
    fn single_member_groups_add_no_parentheses() {
        let mut e = Expr::new();
        let c = e.cond(&Cond::Not(Box::new(Cond::Or(vec![Cond::And(vec![Cond::eq("s", "x")])]))));
        assert!(!c.contains("(("), "{c}");
    }

    #[test]
    fn expressions_use_placeholders_only() {
        let mut e = Expr::new();
        let hostile = "x) OR attribute_exists(pk";
        let c = e.cond(&Cond::eq(hostile, "v) OR (1 = 1").and(Cond::AttrAbsent("pk".into())));
        assert!(!c.contains(hostile) && !c.contains("1 = 1"), "{c}");
        assert!(e.names.values().any(|n| n == hostile));
        assert!(e.names.values().any(|n| n == "_pk"), "a caller's `pk` is the escaped attribute");
    }

    #[test]
    fn update_expression_covers_set_remove_add_and_ttl() {
        let mut e = Expr::new();
        let u = Update { expires_at: Some(None), ..Update::default().set("a", 1).remove("b").add("n", 2) };
        let s = e.update(&u, &HashMap::new());
        assert!(s.starts_with("SET ") && s.contains(" REMOVE ") && s.contains(" ADD "), "{s}");
        assert_eq!(e.names.values().filter(|n| *n == TTL).count(), 1);
    }

    #[test]
    fn capacity_units_round_up() {
        assert_eq!((write_units(0), write_units(1024), write_units(1025)), (1, 1, 2));
        assert_eq!((read_units(1), read_units(4096), read_units(4097)), (1, 1, 2));
    }
}

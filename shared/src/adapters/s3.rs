//! The DynamoDB adapter's claim check: attribute values too large for a DynamoDB item, kept
//! in one S3 bucket, each object named by the partition of the item it belongs to and the
//! SHA-256 of its bytes. When and why values go here, and what it costs:
//! [`crate::adapters::dynamo`]'s module doc.
//!
//! Object keys: `<class>/<pk>/<sha256 hex>` (`<class>/h/<sha256 of pk>/<sha256>` when the
//! partition key is too long for S3's 1,024 bytes). Content addressing makes every object
//! immutable: writing the same value twice writes the same bytes, a reader checks the digest,
//! and a cache of objects needs no invalidation. One value in several items of a partition is
//! one object: a run's input and its starter step's output, a step's output and the run's.
//!
//! The class is the object's lifetime, which the bucket's lifecycle rules enforce: `t<d>`
//! objects expire `d` days after they were written (`d` in [`LIFETIME_DAYS`]), `keep/` ones
//! never. A value goes to the shortest class that outlives its item's TTL (so an item never
//! outlives its values), and to `keep/` when the item has no TTL or one beyond the longest
//! class. Every write of a value writes its object again (S3 counts an object's age from its
//! last write), except when this process wrote it less than [`REWRITE_AFTER`] ago, which the
//! class's margin covers. Objects are never deleted one by one: a value replaced or removed, an item deleted
//! or a transaction refused after its values were written leaves an object nobody refers to,
//! which its lifecycle rule removes with the rest of its class (a `keep/` one stays; Baton's
//! large values all belong to run items, which carry a TTL while retention is on).

use crate::error::{Error, Result};
use crate::metrics::{self, Op};
use crate::store::Key;
use aws_sdk_s3::Client;
use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{
    BucketLifecycleConfiguration, BucketLocationConstraint, CreateBucketConfiguration, ExpirationStatus,
    LifecycleExpiration, LifecycleRule, LifecycleRuleFilter,
};
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// Lifetimes of the expiring object classes, in days: one lifecycle rule each
/// (`template.yaml`'s `PayloadBucket` has the same list; `tests/tests/template.rs` checks).
/// Doubling steps: an object outlives its item by less than the item's own remaining life.
pub const LIFETIME_DAYS: [u32; 13] = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096];
/// Prefix of the objects of items without a TTL (or one beyond the longest class).
pub const KEEP_PREFIX: &str = "keep";
const DAY_SECS: i64 = 24 * 3600;
/// Clocks of S3 and of this process may disagree a little: a class must outlive the item's
/// TTL by this much.
const CLOCK_MARGIN_SECS: i64 = 3600;
/// How long after writing an object this process takes it as fresh: well inside the classes'
/// margin (an hour), so an object not written again still outlives its new item.
pub const REWRITE_AFTER: std::time::Duration = std::time::Duration::from_secs(20 * 60);
/// S3's longest object key.
const MAX_OBJECT_KEY_BYTES: usize = 1024;
/// Objects read (or written) recently, kept parsed, up to this many bytes of JSON (a few times
/// that in memory): the values of a run (its input, the outputs later steps name) are read
/// again by every step of it that this process runs.
const CACHE_BYTES: usize = 8 * 1024 * 1024;
/// Most objects fetched at once by one read.
pub const MAX_PARALLEL_GETS: usize = 16;

/// The key prefix of the class of lifetime `days`.
pub fn lifetime_prefix(days: u32) -> String {
    format!("t{days}")
}

/// The class of a value of an item expiring at `expires_at` (epoch seconds), written `now`.
pub fn class(expires_at: Option<i64>, now: i64) -> String {
    let Some(t) = expires_at else { return KEEP_PREFIX.to_string() };
    let needed = t.saturating_sub(now).saturating_add(CLOCK_MARGIN_SECS);
    LIFETIME_DAYS
        .iter()
        .find(|d| i64::from(**d) * DAY_SECS >= needed)
        .map(|d| lifetime_prefix(*d))
        .unwrap_or_else(|| KEEP_PREFIX.to_string())
}

/// The object key of a value whose bytes have the digest `sha256` (hex), of an item of the
/// partition `key.pk`.
pub fn object_key(class: &str, key: &Key, sha256: &str) -> String {
    let plain = format!("{class}/{}/{sha256}", key.pk);
    if plain.len() <= MAX_OBJECT_KEY_BYTES {
        return plain;
    }
    format!("{class}/h/{}/{sha256}", digest(key.pk.as_bytes()))
}

/// Hex SHA-256 of `bytes`.
pub fn digest(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// The bucket name derived from a table name, when `BATON_BUCKET` is not set: `<table>-payloads`,
/// lowercased, with what S3 does not allow in a name replaced by `-`, shortened (with a digest
/// of the table name, so two long names stay apart) to S3's 63 characters.
pub fn bucket_for_table(table: &str) -> String {
    const SUFFIX: &str = "-payloads";
    let mut base: String = table
        .chars()
        .map(|c| match c.to_ascii_lowercase() {
            c @ ('a'..='z' | '0'..='9') => c,
            _ => '-',
        })
        .collect();
    let max = 63 - SUFFIX.len();
    if base.len() > max {
        let tag = &digest(table.as_bytes())[..8];
        base.truncate(max - tag.len() - 1);
        base = format!("{}-{tag}", base.trim_end_matches('-'));
    }
    let base = base.trim_matches('-');
    let base = if base.is_empty() { "baton" } else { base };
    format!("{base}{SUFFIX}")
}

/// Whether `name` is a valid S3 general purpose bucket name (the rules of S3's documentation).
pub fn check_bucket_name(name: &str) -> std::result::Result<(), String> {
    let ok_chars = name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.');
    let ends_ok = |b: Option<u8>| b.is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    let ip_like =
        name.split('.').count() == 4 && name.split('.').all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
    if !(3..=63).contains(&name.len())
        || !ok_chars
        || !ends_ok(name.bytes().next())
        || !ends_ok(name.bytes().last())
        || name.contains("..")
        || ip_like
        || name.starts_with("xn--")
        || name.starts_with("sthree-")
        || name.ends_with("-s3alias")
        || name.ends_with("--ol-s3")
    {
        return Err(format!(
            "`{name}` is not a valid S3 bucket name (3-63 lowercase letters, digits, `-` and `.`, starting and ending with a letter or digit)"
        ));
    }
    Ok(())
}

/// The S3 side of the claim check: one bucket, and a cache of the objects read.
#[derive(Debug)]
pub struct Payloads {
    client: Client,
    bucket: String,
    cache: Mutex<Cache>,
}

#[derive(Debug, Default)]
struct Cache {
    /// Value, its size in bytes of JSON, and when this process last wrote it (if it did).
    values: HashMap<String, (Arc<Value>, usize, Option<Instant>)>,
    order: VecDeque<String>,
    bytes: usize,
}

impl Cache {
    fn get(&self, key: &str) -> Option<Arc<Value>> {
        self.values.get(key).map(|(v, _, _)| v.clone())
    }

    fn fresh(&self, key: &str) -> bool {
        self.values.get(key).and_then(|(_, _, w)| *w).is_some_and(|w| w.elapsed() < REWRITE_AFTER)
    }

    fn insert(&mut self, key: &str, value: Arc<Value>, size: usize, written: Option<Instant>) {
        if size > CACHE_BYTES / 4 {
            return;
        }
        if let Some(e) = self.values.get_mut(key) {
            e.2 = written.or(e.2);
            return;
        }
        while self.bytes + size > CACHE_BYTES {
            let Some(old) = self.order.pop_front() else { break };
            if let Some((_, n, _)) = self.values.remove(&old) {
                self.bytes -= n;
            }
        }
        self.values.insert(key.to_string(), (value, size, written));
        self.order.push_back(key.to_string());
        self.bytes += size;
    }
}

fn s3_error<E, R>(op: &str, e: aws_sdk_s3::error::SdkError<E, R>) -> Error
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
{
    Error::Internal(format!("s3 {op}: {}", DisplayErrorContext(e)))
}

impl Payloads {
    pub fn new(client: Client, bucket: impl Into<String>) -> Self {
        Self { client, bucket: bucket.into(), cache: Mutex::new(Cache::default()) }
    }

    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Writes one object (`bytes` is `value` as JSON) and remembers the value; a no-op when
    /// this process wrote it less than [`REWRITE_AFTER`] ago.
    pub(crate) async fn put(&self, key: &str, bytes: Vec<u8>, value: Arc<Value>) -> Result<()> {
        if self.cache.lock().unwrap_or_else(std::sync::PoisonError::into_inner).fresh(key) {
            return Ok(());
        }
        let size = bytes.len();
        let started = Instant::now();
        metrics::count(Op::S3PutObject);
        metrics::add(Op::S3PutBytes, size as u64);
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .content_type("application/json")
            .body(ByteStream::from(bytes))
            .send()
            .await
            .map_err(|e| s3_error("PutObject", e))?;
        self.cache.lock().unwrap_or_else(std::sync::PoisonError::into_inner).insert(key, value, size, Some(started));
        Ok(())
    }

    /// Reads one object back: from the cache, or from S3 with its digest checked.
    pub(crate) async fn get(&self, key: &str) -> Result<Arc<Value>> {
        if let Some(v) = self.cache.lock().unwrap_or_else(std::sync::PoisonError::into_inner).get(key) {
            return Ok(v);
        }
        metrics::count(Op::S3GetObject);
        let out = match self.client.get_object().bucket(&self.bucket).key(key).send().await {
            Ok(out) => out,
            Err(e) if e.as_service_error().is_some_and(|s| s.is_no_such_key()) => {
                return Err(Error::Internal(format!(
                    "s3: the value {key} of a live item is missing from bucket {} (deleted by hand, or its lifecycle rule is shorter than the template's)",
                    self.bucket
                )));
            }
            Err(e) => return Err(s3_error("GetObject", e)),
        };
        let bytes = out
            .body
            .collect()
            .await
            .map_err(|e| Error::Internal(format!("s3 GetObject {key}: reading the body: {e}")))?
            .into_bytes();
        if key.rsplit('/').next() != Some(digest(&bytes).as_str()) {
            return Err(Error::Internal(format!("s3: object {key} does not hold the value it was written with")));
        }
        let value: Value = serde_json::from_slice(&bytes)
            .map_err(|e| Error::Internal(format!("s3: object {key} is not the JSON it was written as: {e}")))?;
        let value = Arc::new(value);
        self.cache.lock().unwrap_or_else(std::sync::PoisonError::into_inner).insert(
            key,
            value.clone(),
            bytes.len(),
            None,
        );
        Ok(value)
    }
}

/// The lifecycle rules of the payload bucket: one per class of [`LIFETIME_DAYS`].
fn lifecycle() -> Result<BucketLifecycleConfiguration> {
    let build = |e: aws_sdk_s3::error::BuildError| Error::Internal(format!("s3 request: {e}"));
    let mut rules = Vec::new();
    for days in LIFETIME_DAYS {
        let prefix = lifetime_prefix(days);
        rules.push(
            LifecycleRule::builder()
                .id(format!("expire-{prefix}"))
                .status(ExpirationStatus::Enabled)
                .filter(LifecycleRuleFilter::builder().prefix(format!("{prefix}/")).build())
                .expiration(LifecycleExpiration::builder().days(days as i32).build())
                .build()
                .map_err(build)?,
        );
    }
    BucketLifecycleConfiguration::builder().set_rules(Some(rules)).build().map_err(build)
}

/// Creates the bucket (with its lifecycle rules) unless it exists. For development and tests;
/// on AWS the template creates it.
pub async fn create_bucket(client: &Client, bucket: &str) -> Result<()> {
    let region = client.config().region().map(|r| r.as_ref().to_string());
    let mut req = client.create_bucket().bucket(bucket);
    if let Some(r) = region.filter(|r| r != "us-east-1") {
        let c = CreateBucketConfiguration::builder().location_constraint(BucketLocationConstraint::from(r.as_str()));
        req = req.create_bucket_configuration(c.build());
    }
    metrics::count(Op::S3Other);
    match req.send().await {
        Ok(_) => {}
        Err(e)
            if e.as_service_error()
                .is_some_and(|s| s.is_bucket_already_owned_by_you() || s.is_bucket_already_exists()) => {}
        Err(e) => return Err(s3_error("CreateBucket", e)),
    }
    metrics::count(Op::S3Other);
    client
        .put_bucket_lifecycle_configuration()
        .bucket(bucket)
        .lifecycle_configuration(lifecycle()?)
        .send()
        .await
        .map_err(|e| s3_error("PutBucketLifecycleConfiguration", e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_class_outlives_the_item() {
        let now = 1_000_000;
        assert_eq!(class(None, now), KEEP_PREFIX);
        assert_eq!(class(Some(now - 10), now), "t1", "already expired");
        assert_eq!(class(Some(now + 3600), now), "t1");
        assert_eq!(class(Some(now + DAY_SECS), now), "t2", "one day plus the clock margin");
        assert_eq!(class(Some(now + 30 * DAY_SECS), now), "t32");
        assert_eq!(class(Some(now + 60 * DAY_SECS), now), "t64");
        assert_eq!(class(Some(now + 4096 * DAY_SECS), now), KEEP_PREFIX, "beyond the longest class");
        for days in 0..5000 {
            let t = now + days * DAY_SECS;
            let c = class(Some(t), now);
            if let Some(d) = c.strip_prefix('t') {
                let d: i64 = d.parse().unwrap();
                assert!(now + d * DAY_SECS >= t + CLOCK_MARGIN_SECS, "{days} days → {c}");
                assert!(d == 1 || now + d / 2 * DAY_SECS < t + CLOCK_MARGIN_SECS, "{days} days → {c}: the shortest");
            }
        }
    }

    #[test]
    fn object_keys_fit_s3() {
        let k = object_key("t64", &Key::new("RUN#run_1", "STEP#a"), &digest(b"x"));
        assert_eq!(k, format!("t64/RUN#run_1/{}", digest(b"x")));
        assert_eq!(k, object_key("t64", &Key::new("RUN#run_1", "RUN"), &digest(b"x")), "one object per partition");
        let long = object_key("keep", &Key::new("p".repeat(2048), "s"), &digest(b"x"));
        assert!(long.len() <= MAX_OBJECT_KEY_BYTES && long.starts_with("keep/h/"), "{long}");
        assert_ne!(long, object_key("keep", &Key::new("P".repeat(2048), "s"), &digest(b"x")));
    }

    #[test]
    fn bucket_names_derived_from_tables_are_valid() {
        assert_eq!(bucket_for_table("baton"), "baton-payloads");
        assert_eq!(bucket_for_table("Baton_Prod.v2"), "baton-prod-v2-payloads");
        assert_eq!(bucket_for_table("__"), "baton-payloads");
        let long = "T".repeat(255);
        for table in ["baton", "Baton_Prod.v2", "__", "-x-", long.as_str(), "conformance-01jabcdefghjkmnpqrstvwxyz0"] {
            let b = bucket_for_table(table);
            check_bucket_name(&b).unwrap_or_else(|e| panic!("{table}: {e}"));
        }
        assert_ne!(bucket_for_table(&"a".repeat(100)), bucket_for_table(&"a".repeat(101)));
        for bad in ["ab", "Upper", "a..b", "-a", "a-", "192.168.1.1", "xn--a", "a_b", &"a".repeat(64)] {
            assert!(check_bucket_name(bad).is_err(), "{bad}");
        }
        check_bucket_name("my.bucket-1").unwrap();
    }

    #[test]
    fn lifecycle_has_one_rule_per_class() {
        let l = lifecycle().unwrap();
        assert_eq!(l.rules().len(), LIFETIME_DAYS.len());
        assert!(l.rules().iter().all(|r| r.expiration().and_then(|e| e.days()).is_some()));
    }
}

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
use aws_credential_types::Credentials;
use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider};
use aws_sigv4::http_request::{
    PayloadChecksumKind, PercentEncodingMode, SignableBody, SignableRequest, SigningSettings, UriPathNormalizationMode,
    sign,
};
use aws_sigv4::sign::v4;
use base64::Engine as _;
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
    client: S3Client,
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

impl Payloads {
    pub fn new(client: S3Client, bucket: impl Into<String>) -> Self {
        Self { client, bucket: bucket.into(), cache: Mutex::new(Cache::default()) }
    }

    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    pub fn client(&self) -> &S3Client {
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
            .send("PutObject", "PUT", &self.bucket, key, "", &[("content-type", "application/json")], bytes)
            .await?
            .ok("PutObject")?;
        self.cache.lock().unwrap_or_else(std::sync::PoisonError::into_inner).insert(key, value, size, Some(started));
        Ok(())
    }

    /// Reads one object back: from the cache, or from S3 with its digest checked.
    pub(crate) async fn get(&self, key: &str) -> Result<Arc<Value>> {
        if let Some(v) = self.cache.lock().unwrap_or_else(std::sync::PoisonError::into_inner).get(key) {
            return Ok(v);
        }
        metrics::count(Op::S3GetObject);
        let out = self.client.send("GetObject", "GET", &self.bucket, key, "", &[], Vec::new()).await?;
        if out.code() == Some("NoSuchKey") {
            return Err(Error::Internal(format!(
                "s3: the value {key} of a live item is missing from bucket {} (deleted by hand, or its lifecycle rule is shorter than the template's)",
                self.bucket
            )));
        }
        let bytes = out.ok("GetObject")?;
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

/// The lifecycle rules of the payload bucket, as S3's XML: one per class of [`LIFETIME_DAYS`].
fn lifecycle_xml() -> String {
    let rules: String = LIFETIME_DAYS
        .iter()
        .map(|days| {
            let prefix = lifetime_prefix(*days);
            format!(
                "<Rule><ID>expire-{prefix}</ID><Filter><Prefix>{prefix}/</Prefix></Filter><Status>Enabled</Status><Expiration><Days>{days}</Days></Expiration></Rule>"
            )
        })
        .collect();
    format!(
        r#"<LifecycleConfiguration xmlns="http://s3.amazonaws.com/doc/2006-03-01/">{rules}</LifecycleConfiguration>"#
    )
}

/// Creates the bucket (with its lifecycle rules) unless it exists. For development and tests;
/// on AWS the template creates it.
pub async fn create_bucket(client: &S3Client, bucket: &str) -> Result<()> {
    check_bucket_name(bucket).map_err(Error::Internal)?;
    let body = if client.region == "us-east-1" {
        Vec::new()
    } else {
        format!(
            r#"<CreateBucketConfiguration xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><LocationConstraint>{}</LocationConstraint></CreateBucketConfiguration>"#,
            client.region
        )
        .into_bytes()
    };
    metrics::count(Op::S3Other);
    let out = client.send("CreateBucket", "PUT", bucket, "", "", &[], body).await?;
    if !matches!(out.code(), Some("BucketAlreadyOwnedByYou" | "BucketAlreadyExists")) {
        out.ok("CreateBucket")?;
    }
    // S3 wants an integrity checksum on this request; SHA-256 is one it takes.
    let body = lifecycle_xml().into_bytes();
    let checksum = base64::engine::general_purpose::STANDARD.encode(Sha256::digest(&body));
    metrics::count(Op::S3Other);
    client
        .send(
            "PutBucketLifecycleConfiguration",
            "PUT",
            bucket,
            "",
            "lifecycle",
            &[("content-type", "application/xml"), ("x-amz-checksum-sha256", &checksum)],
            body,
        )
        .await?
        .ok("PutBucketLifecycleConfiguration")?;
    Ok(())
}

/// The few S3 requests the claim check makes, signed with SigV4 over the process's reqwest
/// client. Not the S3 SDK: its generated code for S3's hundred operations would add about
/// 1.1 MB to every Lambda zip, for four requests whose shapes are fixed.
///
/// Retries what S3 asks to be retried (500, 503 `SlowDown`) and failed connections, a few
/// times with a short backoff: every request is idempotent (content-addressed puts).
#[derive(Clone)]
pub struct S3Client {
    http: reqwest::Client,
    region: String,
    /// An endpoint of the caller's (moto), addressed path-style: `<endpoint>/<bucket>/<key>`.
    endpoint: Option<String>,
    credentials: Option<SharedCredentialsProvider>,
    cached: Arc<tokio::sync::Mutex<Option<Credentials>>>,
}

impl std::fmt::Debug for S3Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Client").field("region", &self.region).field("endpoint", &self.endpoint).finish()
    }
}

/// Attempts of one request (the first included).
const ATTEMPTS: u32 = 4;
/// Credentials are fetched again this long before they expire.
const CREDENTIALS_MARGIN: std::time::Duration = std::time::Duration::from_secs(300);
/// Bound on one request: a 1 MiB object on a cold connection takes well under a second.
const REQUEST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(20);

/// S3's answer to one request.
#[derive(Debug)]
pub struct S3Response {
    pub status: u16,
    pub body: bytes::Bytes,
}

impl S3Response {
    /// The `<Code>` of S3's XML error body, if this is an error.
    pub fn code(&self) -> Option<&str> {
        if self.status < 300 {
            return None;
        }
        let text = std::str::from_utf8(&self.body).ok()?;
        let start = text.find("<Code>")? + "<Code>".len();
        let len = text[start..].find("</Code>")?;
        Some(&text[start..start + len])
    }

    /// The body of a successful answer; else an error naming the operation and S3's code.
    pub fn ok(self, op: &str) -> Result<bytes::Bytes> {
        if (200..300).contains(&self.status) {
            return Ok(self.body);
        }
        Err(Error::Internal(format!("s3 {op}: HTTP {} {}", self.status, self.code().unwrap_or("(no error code)"))))
    }
}

impl S3Client {
    /// A client for the region, endpoint and credentials of `config`, on `http`.
    pub fn new(config: &aws_config::SdkConfig, http: reqwest::Client) -> Self {
        Self {
            http,
            region: config.region().map(|r| r.as_ref().to_string()).unwrap_or_else(|| "us-east-1".to_string()),
            endpoint: config.endpoint_url().map(|e| e.trim_end_matches('/').to_string()),
            credentials: config.credentials_provider(),
            cached: Arc::default(),
        }
    }

    /// The URL of `key` in `bucket` (`key` empty: the bucket), with `query` (already encoded).
    fn url(&self, bucket: &str, key: &str, query: &str) -> String {
        let path = encode_key(key);
        let base = match &self.endpoint {
            Some(e) => format!("{e}/{bucket}/{path}"),
            // A dotted name does not match S3's wildcard certificate as a host name.
            None if bucket.contains('.') => format!("https://s3.{}.amazonaws.com/{bucket}/{path}", self.region),
            None => format!("https://{bucket}.s3.{}.amazonaws.com/{path}", self.region),
        };
        if query.is_empty() { base } else { format!("{base}?{query}") }
    }

    async fn credentials(&self) -> Result<Credentials> {
        let mut cached = self.cached.lock().await;
        if let Some(c) = cached.as_ref() {
            let fresh = c
                .expiry()
                .is_none_or(|t| t.duration_since(std::time::SystemTime::now()).is_ok_and(|d| d > CREDENTIALS_MARGIN));
            if fresh {
                return Ok(c.clone());
            }
        }
        let provider = self
            .credentials
            .as_ref()
            .ok_or_else(|| Error::Internal("s3: no AWS credentials are configured".to_string()))?;
        let c = provider.provide_credentials().await.map_err(|e| Error::Internal(format!("s3 credentials: {e}")))?;
        *cached = Some(c.clone());
        Ok(c)
    }

    /// Sends one signed request. An answer of S3's (an error status included) is `Ok`; a
    /// request that could not be made or signed, or still failing after the retries, is `Err`.
    #[allow(clippy::too_many_arguments)]
    pub async fn send(
        &self,
        op: &str,
        method: &str,
        bucket: &str,
        key: &str,
        query: &str,
        headers: &[(&str, &str)],
        body: Vec<u8>,
    ) -> Result<S3Response> {
        let url = self.url(bucket, key, query);
        let mut attempt = 0;
        loop {
            attempt += 1;
            let last = attempt >= ATTEMPTS;
            let req = self.signed(method, &url, headers, &body).await?;
            match req.body(body.clone()).send().await {
                Ok(res) => {
                    let status = res.status().as_u16();
                    let retry = matches!(status, 500 | 503) && !last;
                    match res.bytes().await {
                        Ok(body) if !retry => return Ok(S3Response { status, body }),
                        Ok(_) => {}
                        Err(e) if last => return Err(Error::Internal(format!("s3 {op}: reading the answer: {e}"))),
                        Err(_) => {}
                    }
                }
                Err(e) if last => return Err(Error::Internal(format!("s3 {op}: {e}"))),
                Err(_) => {}
            }
            tokio::time::sleep(std::time::Duration::from_millis(25 << attempt)).await;
        }
    }

    async fn signed(
        &self,
        method: &str,
        url: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Result<reqwest::RequestBuilder> {
        let identity = self.credentials().await?.into();
        let mut settings = SigningSettings::default();
        // S3's rules: the payload's digest is a signed header, the path is encoded once and
        // not normalised (object keys may hold `//` or `.`).
        settings.payload_checksum_kind = PayloadChecksumKind::XAmzSha256;
        settings.percent_encoding_mode = PercentEncodingMode::Single;
        settings.uri_path_normalization_mode = UriPathNormalizationMode::Disabled;
        let params = v4::SigningParams::builder()
            .identity(&identity)
            .region(&self.region)
            .name("s3")
            .time(std::time::SystemTime::now())
            .settings(settings)
            .build()
            .map_err(|e| Error::Internal(format!("s3 signing: {e}")))?
            .into();
        let signable = SignableRequest::new(method, url, headers.iter().copied(), SignableBody::Bytes(body))
            .map_err(|e| Error::Internal(format!("s3 signing {url}: {e}")))?;
        let (instructions, _) =
            sign(signable, &params).map_err(|e| Error::Internal(format!("s3 signing: {e}")))?.into_parts();
        let method = reqwest::Method::from_bytes(method.as_bytes()).map_err(|e| Error::Internal(e.to_string()))?;
        let mut req = self.http.request(method, url).timeout(REQUEST_TIMEOUT);
        for (name, value) in headers.iter().copied().chain(instructions.headers()) {
            req = req.header(name, value);
        }
        Ok(req)
    }
}

/// An object key as a URL path: every byte but the unreserved ones and `/` percent-encoded
/// (S3's rule, which its signature repeats).
fn encode_key(key: &str) -> String {
    let mut out = String::with_capacity(key.len());
    for b in key.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'/') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
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
        let xml = lifecycle_xml();
        assert_eq!(xml.matches("<Rule>").count(), LIFETIME_DAYS.len());
        assert!(xml.contains("<ID>expire-t64</ID><Filter><Prefix>t64/</Prefix></Filter>"), "{xml}");
        assert!(xml.contains("<Expiration><Days>4096</Days></Expiration>"), "{xml}");
        assert!(!xml.contains("keep"), "objects without a TTL never expire");
    }

    #[test]
    fn object_keys_are_encoded_once_as_paths() {
        assert_eq!(encode_key("t1/RUN#run_1/ab"), "t1/RUN%23run_1/ab");
        assert_eq!(encode_key("a b+c%/é"), "a%20b%2Bc%25/%C3%A9");
    }

    #[test]
    fn error_codes_come_from_s3s_xml() {
        let r = S3Response { status: 404, body: "<Error><Code>NoSuchKey</Code><Message>x</Message></Error>".into() };
        assert_eq!(r.code(), Some("NoSuchKey"));
        let e = r.ok("GetObject").unwrap_err().to_string();
        assert!(e.contains("GetObject") && e.contains("404") && e.contains("NoSuchKey"), "{e}");
        assert_eq!(S3Response { status: 200, body: "<Code>x</Code>".into() }.code(), None);
    }
}

//! Wiring of the AWS deployment: settings from the environment, SDK clients, the DynamoDB
//! store, the SQS queue and the secret box (DESIGN.md §2). Shared by every Lambda function and
//! by `baton-local` with `BATON_BACKEND=aws`.
//!
//! Environment (names every function reads):
//!
//! | variable | meaning |
//! |---|---|
//! | `BATON_TABLE` | DynamoDB table name (required) |
//! | `BATON_BUCKET` | S3 bucket of the values too large for a DynamoDB item (default: `<table>-payloads`, lowercased, see [`s3::bucket_for_table`]) |
//! | `BATON_QUEUE_URL` | SQS step queue URL (required); with `BATON_CREATE_RESOURCES=1` it may be a bare queue *name* |
//! | `BATON_DLQ_URL` | its dead-letter queue URL (optional; only used to list dead letters) |
//! | `BATON_LONG_QUEUE_URL` | the long-step queue (optional): steps whose block needs more time than a worker invocation has go there, to the long-step worker; with `BATON_CREATE_RESOURCES=1` it may be a bare name |
//! | `BATON_KMS_KEY_ID` | KMS key (id, ARN or `alias/…`) that wraps the data key sealing stored secrets |
//! | `BATON_SECRET_KEY` | instead of KMS: the sealing key itself, 64 hex digits (development only) |
//! | `BATON_CREATE_RESOURCES` | `1`: create the table, queues, bucket and (without a key setting) a KMS key when missing; development against moto only |
//! | `BATON_MAX_RECEIVES` | receives before a message is dead-lettered (default 10; the redrive policy of queues we create) |
//!
//! Plus the standard `AWS_REGION`, `AWS_ENDPOINT_URL` (moto) and credentials, read by aws-config.
//!
//! Secrets on AWS use envelope encryption: one 256-bit data key is generated under the KMS key
//! (`GenerateDataKey`), and its encrypted blob is stored once in the table (conditional put, so
//! two cold starts racing agree on the first one). Every cold start decrypts the blob with
//! `kms:Decrypt` and seals and opens secrets locally with AES-256-GCM: one KMS call per cold
//! start instead of one per secret.

use crate::adapters::dynamo::{self, DynamoStore};
use crate::adapters::s3::{self, Payloads};
use crate::adapters::sqs::{self, SqsQueue};
use crate::error::{Detail, Error, Result};
use crate::keys;
use crate::metrics::{self, Op};
use crate::secrets::SecretBox;
use crate::store::{Attrs, Cond, Item, Store};
use aws_config::{BehaviorVersion, SdkConfig};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde_json::Value;
use std::sync::Arc;

/// Receives before a message is dead-lettered, when `BATON_MAX_RECEIVES` is not set.
pub const DEFAULT_MAX_RECEIVES: u32 = 10;

/// Settings of the AWS backend, from the environment ([`AwsSettings::from_env`]).
#[derive(Clone, PartialEq, Eq)]
pub struct AwsSettings {
    pub table: String,
    /// The payload bucket: `BATON_BUCKET`, or the name derived from the table's.
    pub bucket: String,
    /// Queue URL; with `create_resources`, may also be a bare queue name.
    pub queue_url: String,
    pub dlq_url: Option<String>,
    pub long_queue_url: Option<String>,
    pub kms_key_id: Option<String>,
    /// `BATON_SECRET_KEY` (64 hex digits), used when there is no KMS key.
    pub secret_key: Option<String>,
    pub create_resources: bool,
    pub max_receives: u32,
}

impl std::fmt::Debug for AwsSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AwsSettings")
            .field("table", &self.table)
            .field("bucket", &self.bucket)
            .field("queue_url", &self.queue_url)
            .field("dlq_url", &self.dlq_url)
            .field("long_queue_url", &self.long_queue_url)
            .field("kms_key_id", &self.kms_key_id)
            .field("secret_key", &self.secret_key.as_ref().map(|_| "<set>"))
            .field("create_resources", &self.create_resources)
            .field("max_receives", &self.max_receives)
            .finish()
    }
}

/// The ports of the AWS deployment.
pub struct AwsBackend {
    pub store: Arc<DynamoStore>,
    pub queue: Arc<SqsQueue>,
    /// The long-step queue, when `BATON_LONG_QUEUE_URL` names one.
    pub long_queue: Option<Arc<SqsQueue>>,
    pub secrets: Arc<SecretBox>,
}

impl AwsSettings {
    /// Reads the process environment; the error names every variable that is missing or bad.
    pub fn from_env() -> Result<Self> {
        Self::from_vars(|name| std::env::var(name).ok())
    }

    /// Like [`from_env`](Self::from_env), reading variables through `var` (for tests).
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Result<Self> {
        let get = |name: &str| var(name).map(|v| v.trim().to_string()).filter(|v| !v.is_empty());
        let mut problems = Vec::new();
        let mut bad = |name: &str, message: &str| {
            problems.push(Detail::new(vec![Value::from(name)], format!("{name} {message}")));
        };
        let create_resources = match get("BATON_CREATE_RESOURCES").as_deref() {
            None | Some("0" | "false" | "no") => false,
            Some("1" | "true" | "yes") => true,
            Some(_) => {
                bad("BATON_CREATE_RESOURCES", "must be 1 or 0");
                false
            }
        };
        let max_receives = match get("BATON_MAX_RECEIVES") {
            None => DEFAULT_MAX_RECEIVES,
            Some(v) => match v.parse::<u32>() {
                Ok(n) if (1..=1000).contains(&n) => n,
                _ => {
                    bad("BATON_MAX_RECEIVES", "must be a number from 1 to 1000 (SQS's maxReceiveCount range)");
                    DEFAULT_MAX_RECEIVES
                }
            },
        };
        let table = get("BATON_TABLE");
        if table.is_none() {
            bad("BATON_TABLE", "is not set (the DynamoDB table name)");
        }
        let bucket = match get("BATON_BUCKET") {
            Some(b) => {
                if let Err(e) = s3::check_bucket_name(&b) {
                    bad("BATON_BUCKET", &format!("must be an S3 bucket name: {e}"));
                }
                b
            }
            None => s3::bucket_for_table(table.as_deref().unwrap_or_default()),
        };
        let queue_url = get("BATON_QUEUE_URL");
        if queue_url.is_none() {
            bad("BATON_QUEUE_URL", "is not set (the SQS step queue URL)");
        } else if !create_resources && !queue_url.as_deref().is_some_and(is_url) {
            bad("BATON_QUEUE_URL", "must be a queue URL (a bare name only with BATON_CREATE_RESOURCES=1)");
        }
        let long_queue_url = get("BATON_LONG_QUEUE_URL");
        if let Some(u) = &long_queue_url
            && !create_resources
            && !is_url(u)
        {
            bad("BATON_LONG_QUEUE_URL", "must be a queue URL (a bare name only with BATON_CREATE_RESOURCES=1)");
        }
        let kms_key_id = get("BATON_KMS_KEY_ID");
        let secret_key = get("BATON_SECRET_KEY");
        if let Some(k) = &secret_key
            && SecretBox::from_hex(k).is_err()
        {
            bad("BATON_SECRET_KEY", "must be 64 hex digits");
        }
        if kms_key_id.is_none() && secret_key.is_none() && !create_resources {
            bad("BATON_KMS_KEY_ID", "is not set (or set BATON_SECRET_KEY, 64 hex digits, for development)");
        }
        if !problems.is_empty() {
            let names: Vec<String> =
                problems.iter().filter_map(|d| d.path.first().and_then(Value::as_str).map(str::to_string)).collect();
            return Err(Error::Validation {
                message: format!("AWS backend settings: check {}", names.join(", ")),
                details: problems,
            });
        }
        Ok(Self {
            table: table.unwrap_or_default(),
            bucket,
            queue_url: queue_url.unwrap_or_default(),
            dlq_url: get("BATON_DLQ_URL"),
            long_queue_url,
            kms_key_id,
            secret_key,
            create_resources,
            max_receives,
        })
    }
}

fn is_url(s: &str) -> bool {
    s.starts_with("https://") || s.starts_with("http://")
}

mod http;
pub use http::{aws_http, sdk_http_client};

/// SDK configuration from the standard AWS environment (region, `AWS_ENDPOINT_URL`,
/// credentials), with [`sdk_http_client`].
pub async fn sdk_config() -> SdkConfig {
    aws_config::defaults(BehaviorVersion::latest()).http_client(sdk_http_client()).load().await
}

/// SDK configuration for a local emulator (moto) at `endpoint`, with dummy credentials.
pub async fn local_sdk_config(endpoint: &str, region: &str) -> SdkConfig {
    let creds = aws_sdk_dynamodb::config::Credentials::new("testing", "testing", None, None, "baton-local");
    aws_config::defaults(BehaviorVersion::latest())
        .http_client(sdk_http_client())
        .region(aws_config::Region::new(region.to_string()))
        .endpoint_url(endpoint)
        .credentials_provider(creds)
        .load()
        .await
}

/// The S3 client of the payload bucket, for the region, endpoint (moto: path-style) and
/// credentials of `config`.
pub fn s3_client(config: &SdkConfig) -> s3::S3Client {
    s3::S3Client::new(config, http::aws_http())
}

/// Connects to the table, the queue and the secret key that `settings` name, creating them
/// first with `create_resources`.
pub async fn connect(settings: &AwsSettings) -> Result<AwsBackend> {
    let config = sdk_config().await;
    connect_with(&config, settings).await
}

/// [`connect`] with an SDK configuration of the caller's (tests point it at moto).
pub async fn connect_with(config: &SdkConfig, settings: &AwsSettings) -> Result<AwsBackend> {
    let ddb = aws_sdk_dynamodb::Client::new(config);
    let sqs_client = aws_sdk_sqs::Client::new(config);
    let s3_client = s3_client(config);
    let (queue_url, dlq_url) = if settings.create_resources {
        dynamo::create_table(&ddb, &settings.table).await?;
        s3::create_bucket(&s3_client, &settings.bucket).await?;
        let name = queue_name(&settings.queue_url);
        let (q, d) = sqs::create_queues(&sqs_client, name, settings.max_receives).await?;
        (q, settings.dlq_url.clone().or(Some(d)))
    } else {
        (settings.queue_url.clone(), settings.dlq_url.clone())
    };
    let long_queue = match &settings.long_queue_url {
        Some(name) if settings.create_resources => {
            let (q, d) = sqs::create_queues(&sqs_client, queue_name(name), settings.max_receives).await?;
            Some(Arc::new(SqsQueue::new(sqs_client.clone(), q, Some(d))))
        }
        Some(url) => Some(Arc::new(SqsQueue::new(sqs_client.clone(), url.clone(), None))),
        None => None,
    };
    let store = Arc::new(
        DynamoStore::new(ddb, settings.table.clone()).with_payloads(Payloads::new(s3_client, settings.bucket.clone())),
    );
    let queue = Arc::new(SqsQueue::new(sqs_client, queue_url, dlq_url));
    let secrets = match (&settings.kms_key_id, &settings.secret_key) {
        (None, Some(hex)) => SecretBox::from_hex(hex)?,
        (Some(key_id), _) => data_key(config, store.as_ref(), key_id).await?,
        (None, None) if settings.create_resources => {
            let key_id = dev_kms_key(config, &settings.table).await?;
            data_key(config, store.as_ref(), &key_id).await?
        }
        (None, None) => return Err(Error::validation("BATON_KMS_KEY_ID or BATON_SECRET_KEY must be set")),
    };
    Ok(AwsBackend { store, queue, long_queue, secrets: Arc::new(secrets) })
}

/// The queue name in a queue URL (its last path segment), or the setting itself.
fn queue_name(setting: &str) -> &str {
    if is_url(setting) { setting.trim_end_matches('/').rsplit('/').next().unwrap_or(setting) } else { setting }
}

fn kms_error(what: &str, e: impl std::fmt::Display) -> Error {
    Error::Internal(format!("kms {what}: {e}"))
}

/// The data key sealing stored secrets: decrypted from the blob in the table, or generated
/// under `key_id` and stored there by the first cold start.
async fn data_key(config: &SdkConfig, store: &DynamoStore, key_id: &str) -> Result<SecretBox> {
    let kms = aws_sdk_kms::Client::new(config);
    let key = keys::secrets_data_key();
    if let Some(item) = store.get(&key).await? {
        return decrypt_data_key(&kms, &item).await;
    }
    metrics::count(Op::KmsGenerateDataKey);
    let out = kms
        .generate_data_key()
        .key_id(key_id)
        .key_spec(aws_sdk_kms::types::DataKeySpec::Aes256)
        .send()
        .await
        .map_err(|e| kms_error("GenerateDataKey", aws_sdk_kms::error::DisplayErrorContext(e)))?;
    let blob = out.ciphertext_blob().ok_or_else(|| kms_error("GenerateDataKey", "no ciphertext blob"))?;
    let plain = out.plaintext().ok_or_else(|| kms_error("GenerateDataKey", "no plaintext key"))?;
    let mut attrs = Attrs::new();
    attrs.insert("blob".into(), Value::from(B64.encode(blob.as_ref())));
    attrs.insert("kms_key_id".into(), Value::from(key_id));
    match store.put(Item::new(key.clone(), attrs), Some(Cond::NotExists)).await {
        Ok(()) => secret_box(plain.as_ref()),
        // Another cold start stored its key first: everyone uses the winner's.
        Err(Error::Conflict(_)) => {
            let item = store.get(&key).await?.ok_or_else(|| Error::internal("the stored data key vanished"))?;
            decrypt_data_key(&kms, &item).await
        }
        Err(e) => Err(e),
    }
}

async fn decrypt_data_key(kms: &aws_sdk_kms::Client, item: &Item) -> Result<SecretBox> {
    let blob = item
        .str("blob")
        .and_then(|b| B64.decode(b).ok())
        .ok_or_else(|| Error::internal("the stored data key is malformed"))?;
    metrics::count(Op::KmsDecrypt);
    let out = kms
        .decrypt()
        .ciphertext_blob(aws_sdk_kms::primitives::Blob::new(blob))
        .send()
        .await
        .map_err(|e| kms_error("Decrypt", aws_sdk_kms::error::DisplayErrorContext(e)))?;
    let plain = out.plaintext().ok_or_else(|| kms_error("Decrypt", "no plaintext key"))?;
    secret_box(plain.as_ref())
}

fn secret_box(plain: &[u8]) -> Result<SecretBox> {
    let key: [u8; 32] = plain.try_into().map_err(|_| Error::internal("the data key is not 32 bytes"))?;
    Ok(SecretBox::new(key))
}

/// Development only: the KMS key behind `alias/baton-<table>`, created when missing.
async fn dev_kms_key(config: &SdkConfig, table: &str) -> Result<String> {
    let kms = aws_sdk_kms::Client::new(config);
    let alias = format!("alias/baton-{table}");
    metrics::count(Op::KmsOther);
    match kms.describe_key().key_id(&alias).send().await {
        Ok(out) => {
            if let Some(id) = out.key_metadata().map(|m| m.key_id().to_string()) {
                return Ok(id);
            }
        }
        Err(e) if e.as_service_error().is_some_and(|s| s.is_not_found_exception()) => {}
        Err(e) => return Err(kms_error("DescribeKey", aws_sdk_kms::error::DisplayErrorContext(e))),
    }
    metrics::count(Op::KmsOther);
    let created = kms
        .create_key()
        .description(format!("Baton development key for table {table}"))
        .send()
        .await
        .map_err(|e| kms_error("CreateKey", aws_sdk_kms::error::DisplayErrorContext(e)))?;
    let id =
        created.key_metadata().map(|m| m.key_id().to_string()).ok_or_else(|| kms_error("CreateKey", "no key id"))?;
    metrics::count(Op::KmsOther);
    match kms.create_alias().alias_name(&alias).target_key_id(&id).send().await {
        Ok(_) => Ok(id),
        // A concurrent start made the alias first: use its key.
        Err(e) if e.as_service_error().is_some_and(|s| s.is_already_exists_exception()) => Ok(alias),
        Err(e) => Err(kms_error("CreateAlias", aws_sdk_kms::error::DisplayErrorContext(e))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn settings(vars: &[(&str, &str)]) -> Result<AwsSettings> {
        let map: HashMap<String, String> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        AwsSettings::from_vars(|k| map.get(k).cloned())
    }

    #[test]
    fn missing_settings_are_all_named() {
        let err = settings(&[]).unwrap_err();
        let msg = err.to_string();
        for name in ["BATON_TABLE", "BATON_QUEUE_URL", "BATON_KMS_KEY_ID"] {
            assert!(msg.contains(name), "{msg} names {name}");
        }
        let err = settings(&[("BATON_MAX_RECEIVES", "0"), ("BATON_SECRET_KEY", "xyz")]).unwrap_err();
        let Error::Validation { details, .. } = err else { panic!("validation error expected") };
        let named: Vec<&str> = details.iter().filter_map(|d| d.path[0].as_str()).collect();
        assert_eq!(named, ["BATON_MAX_RECEIVES", "BATON_TABLE", "BATON_QUEUE_URL", "BATON_SECRET_KEY"]);
    }

    #[test]
    fn full_settings_parse_with_defaults() {
        let s = settings(&[
            ("BATON_TABLE", "baton"),
            ("BATON_QUEUE_URL", "https://sqs.us-east-1.amazonaws.com/1/steps"),
            ("BATON_KMS_KEY_ID", "alias/baton"),
        ])
        .unwrap();
        assert_eq!(s.table, "baton");
        assert_eq!(s.max_receives, DEFAULT_MAX_RECEIVES);
        assert!(!s.create_resources);
        assert_eq!(s.dlq_url, None);
        assert_eq!(queue_name(&s.queue_url), "steps");
        assert_eq!(s.bucket, "baton-payloads", "derived from the table name");
    }

    #[test]
    fn the_bucket_is_named_or_derived_from_the_table() {
        let base = [("BATON_TABLE", "Baton_Dev"), ("BATON_QUEUE_URL", "q"), ("BATON_CREATE_RESOURCES", "1")];
        assert_eq!(settings(&base).unwrap().bucket, "baton-dev-payloads");
        let mut named = base.to_vec();
        named.push(("BATON_BUCKET", "my-payloads.example"));
        assert_eq!(settings(&named).unwrap().bucket, "my-payloads.example");
        let mut bad = base.to_vec();
        bad.push(("BATON_BUCKET", "Not_A_Bucket"));
        let err = settings(&bad).unwrap_err().to_string();
        assert!(err.contains("BATON_BUCKET"), "{err}");
    }

    #[test]
    fn a_queue_name_needs_create_resources() {
        let base = [("BATON_TABLE", "t"), ("BATON_QUEUE_URL", "steps"), ("BATON_SECRET_KEY", &"ab".repeat(32))];
        assert!(settings(&base).unwrap_err().to_string().contains("BATON_QUEUE_URL"));
        let mut with = base.to_vec();
        with.push(("BATON_CREATE_RESOURCES", "1"));
        let s = settings(&with).unwrap();
        assert!(s.create_resources);
        assert_eq!(queue_name(&s.queue_url), "steps");
        assert!(!format!("{s:?}").contains("abab"), "the secret key is not in Debug output");
    }
}

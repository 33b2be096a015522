//! The AWS adapters against a real moto server: the same conformance suite as SQLite
//! (`baton::conformance`), plus the AWS wiring (resource creation, the KMS-wrapped data key)
//! and where the DynamoDB adapter keeps large values (S3, the claim check).
//!
//! moto is started by the test process itself (`baton_tests::moto`); every test gets its
//! own table or queue, so the tests run in parallel safely.

use baton::adapters::dynamo::{self, DynamoStore};
use baton::adapters::s3::{self, Payloads};
use baton::adapters::sqs::{self, SqsQueue};
use baton::aws::{AwsSettings, connect_with};
use baton::conformance::QUEUE_MAX_RECEIVES;
use baton::metrics::{self, Op};
use baton::store::{Item, Key, Store, Write};
use baton_tests::moto::{moto, unique_name};
use std::sync::Arc;

async fn dynamo_store() -> Arc<DynamoStore> {
    let cfg = moto().sdk_config().await;
    let client = aws_sdk_dynamodb::Client::new(&cfg);
    let table = unique_name("conformance");
    dynamo::create_table(&client, &table).await.expect("create the table on moto");
    let s3_client = baton::aws::s3_client(&cfg);
    let bucket = s3::bucket_for_table(&table);
    s3::create_bucket(&s3_client, &bucket).await.expect("create the bucket on moto");
    Arc::new(DynamoStore::new(client, table).with_payloads(Payloads::new(s3_client, bucket)))
}

async fn sqs_queue() -> Arc<SqsQueue> {
    let cfg = moto().sdk_config().await;
    let client = aws_sdk_sqs::Client::new(&cfg);
    let (url, dlq) = sqs::create_queues(&client, &unique_name("conformance"), QUEUE_MAX_RECEIVES)
        .await
        .expect("create the queues on moto");
    Arc::new(SqsQueue::new(client, url, Some(dlq)))
}

mod dynamo_conformance {
    baton::store_conformance_tests!(super::dynamo_store());
}

mod sqs_conformance {
    baton::queue_conformance_tests!(super::sqs_queue());
}

fn settings(table: &str, queue: &str) -> AwsSettings {
    AwsSettings {
        table: table.into(),
        bucket: s3::bucket_for_table(table),
        queue_url: queue.into(),
        dlq_url: None,
        long_queue_url: None,
        kms_key_id: None,
        secret_key: None,
        create_resources: true,
        max_receives: 5,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_resources_makes_table_queues_and_one_shared_kms_data_key() {
    let cfg = moto().sdk_config().await;
    let (table, queue) = (unique_name("wiring"), unique_name("steps"));
    let s = settings(&table, &queue);
    let (a, b) = tokio::join!(connect_with(&cfg, &s), connect_with(&cfg, &s));
    let (a, b) = (a.expect("first cold start"), b.expect("racing cold start"));
    let sealed = a.secrets.seal_str("provider credential");
    assert_eq!(b.secrets.open_str(&sealed).unwrap(), "provider credential", "racing starts share one data key");
    // A later start (queue given by URL now) decrypts the stored key instead of making one.
    let url = a.queue.url().to_string();
    assert!(url.starts_with("http") && url.ends_with(&queue), "{url}");
    let before = metrics::get(Op::KmsGenerateDataKey);
    let c = connect_with(&cfg, &AwsSettings { queue_url: url, ..s.clone() }).await.unwrap();
    assert_eq!(metrics::get(Op::KmsGenerateDataKey), before);
    assert_eq!(c.secrets.open_str(&sealed).unwrap(), "provider credential");
    // The queue has its dead-letter queue wired: found through the redrive policy.
    use baton::queue::Queue;
    assert!(c.queue.dead_letters(10).await.unwrap().is_empty());
    // The stored blob is the KMS ciphertext, never the key.
    let item = c.store.get(&baton::keys::secrets_data_key()).await.unwrap().expect("data key item");
    assert!(item.str("blob").is_some_and(|b| b.len() > 100));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explicit_kms_key_and_secret_key_settings_are_used() {
    let cfg = moto().sdk_config().await;
    let kms = aws_sdk_kms::Client::new(&cfg);
    let key_id = kms.create_key().send().await.unwrap().key_metadata().unwrap().key_id().to_string();
    let table = unique_name("kms");
    let s = AwsSettings { kms_key_id: Some(key_id), ..settings(&table, &unique_name("steps")) };
    let a = connect_with(&cfg, &s).await.unwrap();
    let b = connect_with(&cfg, &s).await.unwrap();
    assert_eq!(b.secrets.open_str(&a.secrets.seal_str("x")).unwrap(), "x");
    let hex = "11".repeat(32);
    let s = AwsSettings { secret_key: Some(hex.clone()), ..settings(&unique_name("hex"), &unique_name("steps")) };
    let d = connect_with(&cfg, &s).await.unwrap();
    let direct = baton::secrets::SecretBox::from_hex(&hex).unwrap();
    assert_eq!(direct.open_str(&d.secrets.seal_str("y")).unwrap(), "y");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cost_counters_count_requests_and_transaction_units() {
    let store = dynamo_store().await;
    let pk = unique_name("units");
    let writes: Vec<Write> = (0..5)
        .map(|i| Write::Put { item: Item::new(Key::new(&pk, format!("{i}")), Default::default()), cond: None })
        .collect();
    let before = metrics::snapshot();
    store.transact(writes).await.unwrap();
    store.get(&Key::new(&pk, "0")).await.unwrap();
    let d: std::collections::HashMap<Op, u64> = metrics::since(&before).into_iter().collect();
    // Other tests of this process may run concurrently under `cargo test`: at least ours.
    assert!(d[&Op::DdbTransactWriteItems] >= 1);
    assert!(d[&Op::DdbWriteUnits] >= 10, "a transaction of 5 small items costs 10 write units");
    assert!(d[&Op::DdbGetItem] >= 1 && d[&Op::DdbReadUnits] >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_update_without_changes_creates_or_keeps_the_item() {
    use baton::store::Update;
    let store = dynamo_store().await;
    let key = Key::new(unique_name("empty-update"), "item");
    let created = store.update(&key, Update::default(), None).await.unwrap();
    assert!(created.attrs.is_empty());
    store.put(Item::new(key.clone(), serde_json::json!({"a": 1}).as_object().unwrap().clone()), None).await.unwrap();
    let kept = store.update(&key, Update::default(), None).await.unwrap();
    assert_eq!(kept.i64("a"), Some(1));
}

/// Retention on DynamoDB: every item of a finished run, read back raw from the table, carries
/// the `ttl` attribute the table's TimeToLiveSpecification names (baton::retention).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_finished_runs_items_carry_the_ttl_attribute() {
    use aws_sdk_dynamodb::types::AttributeValue;
    use baton::app::{App, AppConfig};
    use std::time::Duration;
    let store = dynamo_store().await;
    let app = App::new(
        store.clone(),
        sqs_queue().await,
        Arc::new(baton::secrets::SecretBox::ephemeral()),
        AppConfig { run_retention: Some(Duration::from_secs(7 * 86_400)), ..AppConfig::default() },
    );
    baton::workflows::create(store.as_ref(), "acct_ttl", baton_tests::transform_chain("chain", 3)).await.unwrap();
    let req = baton::engine::StartRequest { input: serde_json::json!({"n": 1}), ..Default::default() };
    let run = app.engine.execute_sync("acct_ttl", "chain", req, Duration::from_secs(20)).await.unwrap();
    assert!(run.finished, "{:#}", run.run);
    let run_id = run.run["run_id"].as_str().unwrap();
    let now = baton::ids::now_ms() / 1000;
    let horizon = baton::retention::run_start(run_id).unwrap() + 14 * 86_400;

    let raw = |pk: String| {
        let (client, table) = (store.client().clone(), store.table().to_string());
        async move {
            let out = client
                .query()
                .table_name(table)
                .key_condition_expression("pk = :pk")
                .expression_attribute_values(":pk", AttributeValue::S(pk))
                .send()
                .await
                .unwrap();
            out.items().to_vec()
        }
    };
    let ttl = |item: &std::collections::HashMap<String, AttributeValue>| -> i64 {
        item.get("ttl").and_then(|v| v.as_n().ok()).and_then(|n| n.parse().ok()).unwrap_or_else(|| panic!("{item:?}"))
    };
    let items = raw(baton::keys::run_pk(run_id)).await;
    assert!(items.len() >= 4, "header and three steps: {items:?}");
    for item in &items {
        let sk = item["sk"].as_s().unwrap();
        let want = if sk == baton::keys::RUN_SK { now + 7 * 86_400 } else { horizon };
        assert!((ttl(item) - want).abs() <= 5, "{sk}: ttl {} not ≈ {want}", ttl(item));
    }
    let index = raw(baton::keys::runs_index_pk("acct_ttl")).await;
    assert_eq!(index.len(), 1);
    assert!((ttl(&index[0]) - (now + 7 * 86_400)).abs() <= 5, "{index:?}");
    // The workflow it ran is no run data.
    let wf = raw(baton::keys::workflows_pk("acct_ttl")).await;
    assert!(wf.len() == 1 && !wf[0].contains_key("ttl"), "{wf:?}");
}

/// The claim check, seen from outside the port: a large value is an S3 object under its
/// item's keys and lifetime class, the DynamoDB item holds a small claim, and a refused
/// transaction leaves only an orphan object behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_values_live_in_s3_under_their_items_class() {
    use aws_sdk_dynamodb::types::AttributeValue;
    use baton::store::{Cond, MAX_PAYLOAD_BYTES, Update};
    use serde_json::json;
    let store = dynamo_store().await;
    let payloads = store.payloads().expect("the store has a bucket");
    let (cfg, bucket) = (moto().sdk_config().await, payloads.bucket().to_string());
    let objects = || baton_tests::moto::list_objects(&cfg, &bucket);
    let raw = |key: &Key| {
        let (client, table, key) = (store.client().clone(), store.table().to_string(), key.clone());
        async move {
            let out = client
                .get_item()
                .table_name(table)
                .key("pk", AttributeValue::S(key.pk))
                .key("sk", AttributeValue::S(key.sk))
                .send()
                .await
                .unwrap();
            out.item().cloned().unwrap()
        }
    };
    let now = baton::ids::now_ms() / 1000;
    let pk = unique_name("RUN#claims");
    let big = json!("b".repeat(MAX_PAYLOAD_BYTES - 2));
    let attrs = |v: serde_json::Value| v.as_object().unwrap().clone();

    // A put with a TTL an hour away: the one-day class.
    let a = Key::new(&pk, "STEP#a");
    let item = Item { expires_at: Some(now + 3600), ..Item::new(a.clone(), attrs(json!({"output": big, "n": 1}))) };
    store.put(item.clone(), None).await.unwrap();
    let stored = raw(&a).await;
    assert!(matches!(stored["output"], AttributeValue::B(_)), "a claim, not the value: {:?}", stored.keys());
    let claim_bytes = stored["output"].as_b().unwrap().as_ref().len();
    assert!(claim_bytes < 1024, "the claim is small: {claim_bytes} bytes");
    assert_eq!(stored["n"], AttributeValue::N("1".into()), "small values stay in DynamoDB");
    let listed = objects().await;
    assert_eq!(listed.len(), 1, "{listed:?}");
    let digest = s3::digest(&serde_json::to_vec(&big).unwrap());
    assert_eq!(listed[0], (format!("t1/{pk}/{digest}"), MAX_PAYLOAD_BYTES as i64));
    assert_eq!(store.get(&a).await.unwrap(), Some(item.clone()));
    // Read again: from this process's cache, no second GetObject.
    let gets = metrics::get(Op::S3GetObject);
    assert_eq!(store.get(&a).await.unwrap(), Some(item));
    assert_eq!(metrics::get(Op::S3GetObject), gets);

    // An update without TTL on an item with a 40-day TTL: the 64-day class, read from the item.
    let b = Key::new(&pk, "STEP#b");
    let other = json!({"rows": (0..30_000).map(|i| json!([i, "x"])).collect::<Vec<_>>()});
    store
        .put(Item { expires_at: Some(now + 40 * 86_400), ..Item::new(b.clone(), attrs(json!({"s": 1}))) }, None)
        .await
        .unwrap();
    let got = store.update(&b, Update::default().set("output", other.clone()), Some(Cond::eq("s", 1))).await.unwrap();
    assert_eq!(got.get("output"), Some(&other));
    // Without a TTL at all: kept for good.
    let c = Key::new(&pk, "WF");
    store.put(Item::new(c.clone(), attrs(json!({"graph": other}))), None).await.unwrap();
    let listed: Vec<String> = objects().await.into_iter().map(|(k, _)| k).collect();
    let other_digest = s3::digest(&serde_json::to_vec(&other).unwrap());
    assert!(listed.contains(&format!("t64/{pk}/{other_digest}")), "{listed:?}");
    assert!(listed.contains(&format!("keep/{pk}/{other_digest}")), "{listed:?}");

    // A refused transaction wrote its value to S3 first: an orphan, and nothing else changed.
    let d = Key::new(&pk, "STEP#d");
    let third = json!("d".repeat(100_000));
    let writes = vec![
        Write::Put { item: Item::new(d.clone(), attrs(json!({"output": third}))), cond: None },
        Write::Check { key: a.clone(), cond: Cond::eq("n", 2) },
    ];
    assert!(matches!(store.transact(writes).await, Err(baton::Error::Conflict(_))));
    assert_eq!(store.get(&d).await.unwrap(), None);
    assert_eq!(objects().await.len(), 4, "the orphan is there, for its lifecycle rule");
}

/// What one 1 MiB step costs on AWS, counted: a sync run of a starter and a transform copying a
/// 1 MiB input to a 1 MiB output. Prints the counts (the cost figures of the DynamoDB adapter's
/// module doc come from them) and bounds the S3 requests.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_one_mib_step_costs_an_s3_put_per_value_and_reads_them_once() {
    use baton::app::{App, AppConfig};
    use baton::store::MAX_PAYLOAD_BYTES;
    use serde_json::json;
    use std::time::Duration;
    let store = dynamo_store().await;
    let app = App::new(
        store.clone(),
        sqs_queue().await,
        Arc::new(baton::secrets::SecretBox::ephemeral()),
        AppConfig::default(),
    );
    let wf = json!({"id": "echo", "name": "echo", "status": "active", "steps": [
        {"id": "start", "type": "starter"},
        {"id": "copy", "type": "transform", "config": {"mapping": {"copy": "{{input.blob}}"}}}]});
    baton::workflows::create(store.as_ref(), "acct_cost", wf).await.unwrap();
    let blob = "x".repeat(MAX_PAYLOAD_BYTES - 12);
    let req = || baton::engine::StartRequest { input: json!({"blob": blob}), ..Default::default() };
    // Warm: the workflow version cached, as on a warm Lambda.
    app.engine.execute_sync("acct_cost", "echo", req(), Duration::from_secs(30)).await.unwrap();
    let before = metrics::snapshot();
    let run = app.engine.execute_sync("acct_cost", "echo", req(), Duration::from_secs(30)).await.unwrap();
    assert!(run.finished, "{:#}", run.run);
    assert_eq!(run.run["output"]["copy"].as_str().map(str::len), Some(blob.len()));
    let d: std::collections::HashMap<Op, u64> = metrics::since(&before).into_iter().collect();
    let mut shown: Vec<String> =
        d.iter().filter(|(_, n)| **n > 0).map(|(op, n)| format!("{}={n}", op.name())).collect();
    shown.sort();
    println!("a run with a 1 MiB input and a 1 MiB step output: {}", shown.join(" "));
    // Three objects of 1 MiB, each written once: the run's input (in the run item and as the
    // starter's output: one object, kept for the open run's horizon), the transform's output
    // (same horizon), and the run's output (the finished run item's shorter lifetime class).
    assert_eq!(d[&Op::S3PutObject], 3, "{shown:?}");
    assert!(d[&Op::S3PutBytes] as usize >= 3 * MAX_PAYLOAD_BYTES - 64);
    // Reads come from this process's cache of what it wrote.
    assert_eq!(d[&Op::S3GetObject], 0, "{shown:?}");
    // DynamoDB holds claims: its write units stay those of small items.
    assert!(d[&Op::DdbWriteUnits] < 64, "{shown:?}");
}

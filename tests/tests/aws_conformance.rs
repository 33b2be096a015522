//! The AWS adapters against a real moto server: the same conformance suite as SQLite
//! (`baton::conformance`), plus the AWS wiring (resource creation, the KMS-wrapped data key).
//!
//! moto is started by the test process itself (`baton_tests::moto`); every test gets its
//! own table or queue, so the tests run in parallel safely.

use baton::adapters::dynamo::{self, DynamoStore};
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
    Arc::new(DynamoStore::new(client, table))
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

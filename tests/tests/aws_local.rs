//! `baton-local` with `BATON_BACKEND=aws`: the real binary on DynamoDB + SQS (moto, started
//! by this test), creating its table and queues itself, completes runs over HTTP, and says
//! which settings are missing when they are.

use baton_tests::moto::{REGION, moto, unique_name};
use baton_tests::{Api, Server, ServerOptions, server_binary, transform_chain};
use serde_json::json;
use std::process::Command;
use std::time::{Duration, Instant};

fn aws_options(table: &str, queue: &str) -> ServerOptions {
    ServerOptions::default()
        .workers(4)
        .lease_secs(30)
        .env("BATON_BACKEND", "aws")
        .env("AWS_ENDPOINT_URL", moto().endpoint())
        .env("AWS_REGION", REGION)
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("BATON_TABLE", table)
        .env("BATON_QUEUE_URL", queue)
        .env("BATON_CREATE_RESOURCES", "1")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_binary_on_dynamodb_and_sqs_completes_runs_over_http() {
    let (table, queue) = (unique_name("local"), unique_name("steps"));
    let server = Server::start(aws_options(&table, &queue));
    let mut api = Api::for_server(&server);
    api.register("aws-local").await.unwrap();
    api.create_workflow(&transform_chain("chain", 5)).await.unwrap();

    let mut runs = Vec::new();
    for n in 0..3 {
        let (code, body) = api.start_run("chain", &json!({"n": n})).await.unwrap();
        assert_eq!(code, 201, "{body}");
        runs.push((n, body["run_id"].as_str().unwrap().to_string()));
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    for (n, run_id) in &runs {
        let run = loop {
            let run = api.run(run_id).await.unwrap();
            if run["status"] != "pending" && run["status"] != "running" || Instant::now() > deadline {
                break run;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        assert_eq!(run["status"], "completed", "{run}\n{}", server.log_tail(40));
        assert_eq!(run["output"], json!({"n": n + 4}));
    }
    // Sync execute and listing (a query with a cursor) work on DynamoDB too.
    let (code, body) = api.execute("chain", &json!({"n": 10})).await.unwrap();
    assert_eq!((code, &body["output"]), (200, &json!({"n": 14})), "{body}");
    let listed = api.list_runs(Some("completed")).await.unwrap();
    assert_eq!(listed.len(), 4);

    // The run lives in the table the settings named, not in some SQLite file.
    let cfg = moto().sdk_config().await;
    let ddb = aws_sdk_dynamodb::Client::new(&cfg);
    let out = ddb.describe_table().table_name(&table).send().await.unwrap();
    assert!(out.table().and_then(|t| t.item_count()).is_some());
    let store = baton::adapters::DynamoStore::new(ddb, &table);
    use baton::store::Store;
    let stored = store.get(&baton::keys::run(&runs[0].1)).await.unwrap().expect("the run item is in DynamoDB");
    assert_eq!(stored.str("status"), Some("completed"));
    assert!(!server.data().db().exists(), "no SQLite database was created");
}

#[test]
fn missing_aws_settings_are_named_at_startup() {
    let out = Command::new(server_binary())
        .args(["--addr", "127.0.0.1:0"])
        .env("BATON_BACKEND", "aws")
        .env_remove("BATON_TABLE")
        .env_remove("BATON_QUEUE_URL")
        .env_remove("BATON_KMS_KEY_ID")
        .env_remove("BATON_SECRET_KEY")
        .env_remove("BATON_CREATE_RESOURCES")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    for name in ["BATON_TABLE", "BATON_QUEUE_URL", "BATON_KMS_KEY_ID"] {
        assert!(err.contains(name), "stderr names {name}: {err}");
    }
}

//! Payloads up to 1 MiB (DESIGN.md §9) through the real `baton-local`, on SQLite and on the
//! AWS adapters against moto: a run's input and a step's output of exactly 1 MiB of JSON
//! complete, durable and sync; a step producing more fails `OUTPUT_TOO_LARGE` and its run
//! ends; an input over the limit is a 413 envelope. On AWS, the large values are S3 objects
//! and the DynamoDB items stay small.

use baton::store::MAX_PAYLOAD_BYTES;
use baton_tests::moto::{REGION, moto, unique_name};
use baton_tests::{Api, Server, ServerOptions};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

/// `{"blob": "xx…", "n": 1}` of exactly `bytes` bytes of JSON.
fn input_of(bytes: usize) -> Value {
    let frame = serde_json::to_vec(&json!({"blob": "", "n": 1})).unwrap().len();
    let v = json!({"blob": "x".repeat(bytes - frame), "n": 1});
    assert_eq!(serde_json::to_vec(&v).unwrap().len(), bytes);
    v
}

fn workflows() -> [Value; 5] {
    [
        // Output `{"copy": blob, "n": 1}`: as large as the input.
        json!({"id": "echo", "name": "echo", "status": "active", "steps": [
            {"id": "start", "type": "starter"},
            {"id": "copy", "type": "transform", "config": {"mapping": {"copy": "{{input.blob}}", "n": "{{input.n}}"}}}]}),
        // Output twice the blob: over the limit for a blob over half of it.
        json!({"id": "double", "name": "double", "status": "active", "steps": [
            {"id": "start", "type": "starter"},
            {"id": "twice", "type": "transform", "config": {"mapping": {"a": "{{input.blob}}", "b": "{{input.blob}}"}}},
            {"id": "after", "type": "transform", "config": {"mapping": {"never": true}}}]}),
        // The same, with an error edge that takes the failure.
        json!({"id": "handled", "name": "handled", "status": "active",
            "blocks": [
                {"id": "start", "type": "starter"},
                {"id": "twice", "type": "transform", "config": {"mapping": {"a": "{{input.blob}}", "b": "{{input.blob}}"}}},
                {"id": "recover", "type": "transform", "config": {"mapping": {"code": "{{steps.twice.error.code}}"}}}],
            "edges": [{"from": "start", "to": "twice"}, {"from": "twice", "to": "recover", "on": "error"}]}),
        // A split whose items each make three copies of theirs: the collection is too large.
        json!({"id": "fan", "name": "fan", "status": "active", "steps": [
            {"id": "start", "type": "starter"},
            {"id": "each", "type": "split", "config": {"items": "{{input.items}}"}},
            {"id": "body", "type": "transform", "config": {"mapping": {"a": "{{item}}", "b": "{{item}}", "c": "{{item}}"}}},
            {"id": "count", "type": "transform", "config": {"mapping": {"n": "{{steps.body.output | size}}"}}}]}),
        // A question answered with 1 MiB.
        json!({"id": "ask", "name": "ask", "status": "active", "steps": [
            {"id": "start", "type": "starter"},
            {"id": "question", "type": "human", "config": {"kind": "question", "prompt": "Paste it"}}]}),
    ]
}

async fn finished(api: &Api, server: &Server, run_id: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let run = api.run(run_id).await.unwrap();
        if !matches!(run["status"].as_str(), Some("pending" | "running")) {
            return run;
        }
        assert!(Instant::now() < deadline, "run {run_id} did not end: {run:#}\n{}", server.log_tail(40));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn step<'a>(run: &'a Value, key: &str) -> &'a Value {
    run["steps"].as_array().unwrap().iter().find(|s| s["step_key"] == key).unwrap_or_else(|| panic!("no {key}"))
}

/// The scenario both backends run; returns the ids of the runs it started.
async fn one_mib_payloads_on(server: &Server) -> Vec<String> {
    let mut api = Api::for_server(server);
    api.register("payloads").await.unwrap();
    for wf in workflows() {
        api.create_workflow(&wf).await.unwrap();
    }
    let full = input_of(MAX_PAYLOAD_BYTES);
    let mut runs = Vec::new();

    // A 1 MiB input and a 1 MiB output, durable.
    let (code, body) = api.start_run("echo", &full).await.unwrap();
    assert_eq!(code, 201, "{body}");
    let id = body["run_id"].as_str().unwrap().to_string();
    let run = finished(&api, server, &id).await;
    assert_eq!(run["status"], "completed", "{}", server.log_tail(40));
    assert_eq!(run["input"], full);
    let want = json!({"copy": full["blob"], "n": 1});
    assert_eq!(serde_json::to_vec(&want).unwrap().len(), MAX_PAYLOAD_BYTES, "the output is 1 MiB too");
    assert_eq!(run["output"], want);
    assert_eq!(step(&run, "copy")["output"], want);
    let (code, events) = api.get(&format!("/runs/{id}/events")).await.unwrap();
    assert_eq!(code, 200, "{events}");
    runs.push(id);

    // The same, sync.
    let (code, body) = api.execute("echo", &full).await.unwrap();
    assert_eq!(code, 200, "{}", server.log_tail(40));
    assert_eq!(body["output"], want);
    runs.push(body["run_id"].as_str().unwrap().to_string());

    // One byte more input: a 413 envelope that says the limit.
    let (code, body) = api.start_run("echo", &input_of(MAX_PAYLOAD_BYTES + 1)).await.unwrap();
    assert_eq!(code, 413, "{body}");
    assert_eq!(body["error"]["code"], "PAYLOAD_TOO_LARGE");
    assert!(body["error"]["message"].as_str().unwrap().contains("1048576"), "{body}");

    // A step producing more than 1 MiB fails OUTPUT_TOO_LARGE, and its run ends failed.
    let half = input_of(MAX_PAYLOAD_BYTES / 2 + 1024);
    let (code, body) = api.start_run("double", &half).await.unwrap();
    assert_eq!(code, 201, "{body}");
    let id = body["run_id"].as_str().unwrap().to_string();
    let run = finished(&api, server, &id).await;
    assert_eq!(run["status"], "failed", "{run:#}");
    assert_eq!(run["error"]["code"], "OUTPUT_TOO_LARGE", "{:#}", run["error"]);
    assert!(run["error"]["message"].as_str().unwrap().contains("limit is 1048576"), "{:#}", run["error"]);
    assert_eq!(step(&run, "twice")["status"], "failed");
    assert!(run["steps"].as_array().unwrap().iter().all(|s| s["step_key"] != "after" || s["status"] != "completed"));
    runs.push(id);
    // With an error edge, the run goes on.
    let (_, body) = api.start_run("handled", &half).await.unwrap();
    let id = body["run_id"].as_str().unwrap().to_string();
    let run = finished(&api, server, &id).await;
    assert_eq!(
        (&run["status"], &run["output"]),
        (&json!("completed"), &json!({"code": "OUTPUT_TOO_LARGE"})),
        "{run:#}"
    );
    // A split's collection over the limit fails the split's body step; the run ends.
    let items: Vec<Value> = (0..7).map(|i| json!(format!("{i}").repeat(140_000))).collect();
    let (code, body) = api.start_run("fan", &json!({"items": items})).await.unwrap();
    assert_eq!(code, 201, "{body}");
    let run = finished(&api, server, body["run_id"].as_str().unwrap()).await;
    assert_eq!(run["status"], "failed", "{run:#}");
    assert_eq!((&run["error"]["step_key"], &run["error"]["code"]), (&json!("body"), &json!("OUTPUT_TOO_LARGE")));
    // A task answered with 1 MiB completes its step.
    let (_, body) = api.start_run("ask", &json!({})).await.unwrap();
    let id = body["run_id"].as_str().unwrap().to_string();
    let deadline = Instant::now() + Duration::from_secs(30);
    let task_id = loop {
        let (_, tasks) = api.get(&format!("/runs/{id}/tasks")).await.unwrap();
        if let Some(t) = tasks["data"][0]["task_id"].as_str() {
            break t.to_string();
        }
        assert!(Instant::now() < deadline, "no task: {tasks}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let answer = json!("a".repeat(MAX_PAYLOAD_BYTES - 2));
    let (code, body) =
        api.post(&format!("/runs/{id}/tasks/{task_id}/complete"), &json!({"output": answer})).await.unwrap();
    assert_eq!(code, 200, "{body}");
    let run = finished(&api, server, &id).await;
    assert_eq!((&run["status"], &run["output"]), (&json!("completed"), &answer));
    // Sync: the same failure, answered at once.
    let (code, body) = api.execute("double", &half).await.unwrap();
    assert_eq!(code, 200, "{body}");
    assert_eq!((&body["status"], &body["error"]["code"]), (&json!("failed"), &json!("OUTPUT_TOO_LARGE")), "{body:#}");
    runs
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_mib_payloads_on_sqlite() {
    let server = Server::start(ServerOptions::default().workers(2));
    one_mib_payloads_on(&server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_mib_payloads_on_dynamodb_with_s3() {
    use aws_sdk_dynamodb::types::AttributeValue;
    let (table, queue) = (unique_name("payloads"), unique_name("steps"));
    let options = ServerOptions::default()
        .workers(2)
        .lease_secs(30)
        .env("BATON_BACKEND", "aws")
        .env("AWS_ENDPOINT_URL", moto().endpoint())
        .env("AWS_REGION", REGION)
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("BATON_TABLE", &table)
        .env("BATON_QUEUE_URL", &queue)
        .env("BATON_CREATE_RESOURCES", "1");
    let server = Server::start(options);
    let runs = one_mib_payloads_on(&server).await;

    // The large values are S3 objects in the bucket named after the table, under their items...
    let cfg = moto().sdk_config().await;
    let bucket = baton::adapters::s3::bucket_for_table(&table);
    let objects = baton_tests::moto::list_objects(&cfg, &bucket).await;
    let run_pk = baton::keys::run_pk(&runs[0]);
    let of_run: Vec<&(String, i64)> = objects.iter().filter(|(k, _)| k.contains(&format!("/{run_pk}/"))).collect();
    // The input (in the run item and the starter's output: one object) and the transform's
    // output, in the open run's lifetime class; the run's output (the same bytes as the
    // transform's) in the finished run item's shorter class.
    assert_eq!(of_run.len(), 3, "{objects:#?}");
    assert!(of_run.iter().all(|(_, size)| *size as usize == MAX_PAYLOAD_BYTES), "{of_run:#?}");
    // ... in an expiring class: run data carries the retention TTL.
    assert!(of_run.iter().all(|(k, _)| k.starts_with('t')), "{of_run:#?}");

    // ... and the DynamoDB items hold small claims instead.
    let ddb = aws_sdk_dynamodb::Client::new(&cfg);
    let out = ddb
        .query()
        .table_name(&table)
        .key_condition_expression("pk = :pk")
        .expression_attribute_values(":pk", AttributeValue::S(run_pk.clone()))
        .send()
        .await
        .unwrap();
    assert!(!out.items().is_empty());
    for item in out.items() {
        let size: usize = item
            .iter()
            .map(|(k, v)| {
                k.len()
                    + match v {
                        AttributeValue::S(s) => s.len(),
                        AttributeValue::B(b) => b.as_ref().len(),
                        other => format!("{other:?}").len(),
                    }
            })
            .sum();
        assert!(size < 16 * 1024, "{} is {size} bytes in DynamoDB", item["sk"].as_s().unwrap());
    }
}

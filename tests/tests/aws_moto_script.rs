//! `infra/moto.sh` as a developer runs it: it starts moto, creates the table (TTL on), the step
//! queue with its dead-letter redrive and a KMS key, and prints export lines that
//! `baton::aws` accepts as they are.

use baton::aws::{AwsSettings, connect_with};
use baton_tests::workspace_root;
use std::collections::HashMap;
use std::process::{Command, Stdio};

/// Stops the moto the script started (by its PID), also when the test fails.
struct Stop(Option<String>);

impl Drop for Stop {
    fn drop(&mut self) {
        if let Some(pid) = self.0.take() {
            let _ = Command::new("kill").arg(&pid).stdout(Stdio::null()).stderr(Stdio::null()).status();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moto_script_prints_working_exports() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new("bash")
        .arg(workspace_root().join("infra/moto.sh"))
        .env("MOTO_LOG", dir.path().join("moto.log"))
        .env("BATON_TABLE", "script-table")
        .env("BATON_QUEUE_NAME", "script-steps")
        .env("BATON_MAX_RECEIVES", "4")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let vars: HashMap<String, String> = stdout
        .lines()
        .filter_map(|l| l.strip_prefix("export "))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let _stop = Stop(vars.get("BATON_MOTO_PID").cloned());
    assert!(out.status.success(), "moto.sh failed: {stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    for name in
        ["AWS_ENDPOINT_URL", "BATON_TABLE", "BATON_BUCKET", "BATON_QUEUE_URL", "BATON_DLQ_URL", "BATON_KMS_KEY_ID"]
    {
        assert!(vars.contains_key(name), "moto.sh exports {name}: {stdout}");
    }
    assert_eq!(vars["BATON_BACKEND"], "aws");

    let settings = AwsSettings::from_vars(|k| vars.get(k).cloned()).expect("the exports are complete settings");
    assert!(!settings.create_resources && settings.max_receives == 4);
    let cfg = baton::aws::local_sdk_config(&vars["AWS_ENDPOINT_URL"], &vars["AWS_REGION"]).await;
    let ttl = aws_sdk_dynamodb::Client::new(&cfg).describe_time_to_live().table_name("script-table").send().await;
    let ttl = ttl.unwrap().time_to_live_description().and_then(|d| d.attribute_name().map(str::to_string));
    assert_eq!(ttl.as_deref(), Some("ttl"));
    let backend = connect_with(&cfg, &settings).await.expect("connect with the printed settings");
    use baton::queue::{Message, Queue};
    use baton::store::{Item, Key, Store};
    backend.store.put(Item::new(Key::new("p", "s"), Default::default()), None).await.unwrap();
    // The bucket it made holds the large values.
    assert_eq!(settings.bucket, "script-table-payloads");
    let big: baton::store::Attrs = [("v".to_string(), serde_json::json!("x".repeat(200_000)))].into_iter().collect();
    backend.store.put(Item::new(Key::new("p", "big"), big.clone()), None).await.unwrap();
    assert_eq!(backend.store.get(&Key::new("p", "big")).await.unwrap().unwrap().attrs, big);
    backend.queue.send(Message::now("hello")).await.unwrap();
    let got = backend.queue.receive(1, std::time::Duration::from_secs(5), std::time::Duration::from_secs(5)).await;
    assert_eq!(got.unwrap()[0].body, "hello");
    assert_eq!(backend.secrets.open_str(&backend.secrets.seal_str("k")).unwrap(), "k");
}

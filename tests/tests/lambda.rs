//! The AWS deployment end to end, without AWS: the real `bootstrap` binaries that
//! `cargo lambda build` packages, each polling cargo-lambda's Runtime API emulator
//! (`cargo lambda watch --only-lambda-apis`), against DynamoDB, SQS and KMS in moto. The test
//! plays API Gateway (HTTP API v2 events, as in `events/`) and the SQS event source mapping
//! (receive a batch, invoke `worker`, delete what it did not report in `batchItemFailures`).
//!
//! The binaries are taken from `BATON_LAMBDA_DIR` or `<target>/lambda/<function>/bootstrap`
//! (CI builds them first); when missing they are built once with the same command as CI
//! (`cargo lambda build --release --x86-64`, the `cargo-lambda` of `.venv/bin` or `PATH`).
//!
//! Every process started here is stopped by PID when the test ends, passes or fails.

use baton_tests::moto::{REGION, moto, unique_name};
use baton_tests::{free_port, workspace_root};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

const FUNCTIONS: [&str; 7] = ["register", "trigger", "hook", "execute", "task-complete", "api", "worker"];
/// Whole-test budget for any one wait (emulator start, a function's boot, a queue drain).
const WAIT: Duration = Duration::from_secs(60);
const HOST: &str = "abcd123456.execute-api.us-east-1.amazonaws.com";

/// Children stopped by PID (SIGKILL, then reaped) on drop.
#[derive(Default)]
struct Processes(Vec<(String, Child)>);

impl Drop for Processes {
    fn drop(&mut self) {
        for (_, child) in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn cargo_lambda() -> PathBuf {
    let venv = workspace_root().join(".venv/bin/cargo-lambda");
    if venv.is_file() {
        return venv;
    }
    std::env::var_os("PATH")
        .and_then(|p| std::env::split_paths(&p).map(|d| d.join("cargo-lambda")).find(|p| p.is_file()))
        .unwrap_or_else(|| panic!("cargo-lambda is not installed: run `bash infra/venv.sh`"))
}

fn lambda_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("BATON_LAMBDA_DIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(d);
    }
    let target = match std::env::var_os("CARGO_TARGET_DIR").filter(|d| !d.is_empty()) {
        Some(d) if Path::new(&d).is_absolute() => PathBuf::from(d),
        Some(d) => workspace_root().join(d),
        None => workspace_root().join("target"),
    };
    target.join("lambda")
}

fn bootstraps() -> HashMap<&'static str, PathBuf> {
    let dir = lambda_dir();
    let find = || FUNCTIONS.iter().map(|f| (*f, dir.join(f).join("bootstrap"))).collect::<HashMap<_, _>>();
    if find().values().all(|p| p.is_file()) {
        return find();
    }
    let mut cmd = Command::new(cargo_lambda());
    cmd.args(["lambda", "build", "--release", "--x86-64", "--skip-target-check", "--locked"])
        .current_dir(workspace_root());
    for f in FUNCTIONS {
        cmd.args(["-p", &format!("baton-{f}")]);
    }
    let status = cmd.status().expect("run cargo lambda build");
    assert!(status.success(), "cargo lambda build failed");
    let found = find();
    for (f, p) in &found {
        assert!(p.is_file(), "{f}: no {}", p.display());
    }
    found
}

fn wait_for_port(port: u16, what: &str, procs: &mut Processes) {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let t0 = Instant::now();
    while TcpStream::connect_timeout(&addr, Duration::from_millis(100)).is_err() {
        for (name, child) in &mut procs.0 {
            if let Ok(Some(status)) = child.try_wait() {
                panic!("{name} exited ({status}) before {what} was up");
            }
        }
        assert!(t0.elapsed() < WAIT, "{what} did not listen on {addr} within {WAIT:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The deployment's resources in moto, named uniquely for this test.
struct Stack {
    table: String,
    bucket: String,
    queue_url: String,
    dlq_url: String,
    kms_key_id: String,
    sqs: aws_sdk_sqs::Client,
}

async fn stack() -> Stack {
    let config = moto().sdk_config().await;
    let table = unique_name("lambda-e2e");
    baton::adapters::dynamo::create_table(&aws_sdk_dynamodb::Client::new(&config), &table).await.unwrap();
    let bucket = baton::adapters::s3::bucket_for_table(&table);
    baton::adapters::s3::create_bucket(&baton::aws::s3_client(&config), &bucket).await.unwrap();
    let sqs = aws_sdk_sqs::Client::new(&config);
    let (queue_url, dlq_url) = baton::adapters::sqs::create_queues(&sqs, &unique_name("steps"), 3).await.unwrap();
    let key = aws_sdk_kms::Client::new(&config).create_key().description("baton lambda e2e").send().await.unwrap();
    let kms_key_id = key.key_metadata().unwrap().key_id().to_string();
    Stack { table, bucket, queue_url, dlq_url, kms_key_id, sqs }
}

impl Stack {
    /// What `template.yaml` gives every function, plus what Lambda itself sets.
    fn env(&self, function: &str, runtime_api: &str) -> Vec<(String, String)> {
        [
            ("AWS_LAMBDA_RUNTIME_API", runtime_api.to_string()),
            ("AWS_LAMBDA_FUNCTION_NAME", function.to_string()),
            ("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "256".into()),
            ("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST".into()),
            ("AWS_REGION", REGION.into()),
            ("AWS_ENDPOINT_URL", moto().endpoint()),
            ("AWS_ACCESS_KEY_ID", "testing".into()),
            ("AWS_SECRET_ACCESS_KEY", "testing".into()),
            ("RUST_LOG", "info".into()),
            ("BATON_TABLE", self.table.clone()),
            ("BATON_BUCKET", self.bucket.clone()),
            ("BATON_QUEUE_URL", self.queue_url.clone()),
            ("BATON_DLQ_URL", self.dlq_url.clone()),
            ("BATON_KMS_KEY_ID", self.kms_key_id.clone()),
            ("BATON_MAX_RECEIVES", "3".into()),
            ("BATON_RATE_LIMIT", "500".into()),
            ("BATON_LEASE_SECS", "60".into()),
            ("BATON_PUBLIC_URL", String::new()),
            ("BATON_ALLOW_PRIVATE_TARGETS", "0".into()),
            ("BATON_MANAGED_PROVIDER", String::new()),
            ("BATON_TRIAL_RUNS", "3".into()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }
}

/// A started function: its log file and when it was spawned.
struct Function {
    log: PathBuf,
    spawned: SystemTime,
}

impl Function {
    /// Milliseconds from spawn to the function's `ready` log line (config read, clients
    /// built, data key decrypted): what Lambda reports as Init Duration, less the
    /// runtime's first poll.
    fn init_ms(&self) -> Option<f64> {
        let text = std::fs::read_to_string(&self.log).ok()?;
        let line =
            text.lines().filter_map(|l| serde_json::from_str::<Value>(l).ok()).find(|v| v["message"] == "ready")?;
        let ts = line["timestamp"].as_str()?;
        let ready = parse_rfc3339(ts)?;
        Some(ready.duration_since(self.spawned).ok()?.as_secs_f64() * 1000.0)
    }
}

/// `2026-11-23T14:21:39.123456Z` → SystemTime (tracing-subscriber's JSON timestamps).
fn parse_rfc3339(ts: &str) -> Option<SystemTime> {
    let (date, time) = ts.trim_end_matches('Z').split_once('T')?;
    let mut d = date.split('-').map(|x| x.parse::<i64>().ok());
    let (y, m, day) = (d.next()??, d.next()??, d.next()??);
    let (hms, frac) = time.split_once('.').unwrap_or((time, "0"));
    let mut t = hms.split(':').map(|x| x.parse::<i64>().ok());
    let (h, min, s) = (t.next()??, t.next()??, t.next()??);
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + h * 3600 + min * 60 + s;
    let nanos: u64 = format!("{frac:0<9}")[..9].parse().ok()?;
    Some(SystemTime::UNIX_EPOCH + Duration::from_secs(secs as u64) + Duration::from_nanos(nanos))
}

struct Emulator {
    port: u16,
    http: reqwest::Client,
}

impl Emulator {
    /// Invokes `function` with `event` through the emulator's Invoke API.
    async fn invoke(&self, function: &str, event: &Value) -> Value {
        let url = format!("http://127.0.0.1:{}/2015-03-31/functions/{function}/invocations", self.port);
        let res = self.http.post(&url).json(event).send().await.unwrap_or_else(|e| panic!("invoke {function}: {e}"));
        let status = res.status();
        let text = res.text().await.unwrap();
        assert!(status.is_success(), "invoke {function}: {status} {text}");
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("invoke {function}: {e}: {text}"))
    }

    /// An API Gateway HTTP API (payload 2.0) request to `function`; returns (status, body).
    async fn http(
        &self,
        function: &str,
        method: &str,
        path: &str,
        key: Option<&str>,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut headers = json!({"host": HOST, "x-forwarded-proto": "https", "content-type": "application/json"});
        if let Some(k) = key {
            headers["x-api-key"] = json!(k);
        }
        let event = json!({
            "version": "2.0", "routeKey": "$default", "rawPath": path, "rawQueryString": "", "headers": headers,
            "requestContext": {"accountId": "123456789012", "apiId": "abcd123456", "domainName": HOST,
                "domainPrefix": "abcd123456", "requestId": unique_name("req"), "routeKey": "$default", "stage": "$default",
                "time": "23/Nov/2026:14:00:00 +0000", "timeEpoch": 1_795_442_400_000_i64,
                "http": {"method": method, "path": path, "protocol": "HTTP/1.1", "sourceIp": "203.0.113.7", "userAgent": "e2e"}},
            "body": body.map(|b| b.to_string()), "isBase64Encoded": false});
        let res = self.invoke(function, &event).await;
        let status =
            res["statusCode"].as_u64().unwrap_or_else(|| panic!("{function}: not an HTTP response: {res}")) as u16;
        let body = res["body"].as_str().map(|b| serde_json::from_str(b).unwrap_or(json!(b))).unwrap_or(Value::Null);
        (status, body)
    }
}

/// Plays the SQS event source mapping until `done` says so; returns the number of batches.
async fn play_queue(emu: &Emulator, stack: &Stack, key: &str, run_id: &str, until: &str) -> usize {
    let t0 = Instant::now();
    let mut batches = 0;
    loop {
        let (_, run) = emu.http("api", "GET", &format!("/api/v1/runs/{run_id}"), Some(key), None).await;
        if run["status"] == until {
            return batches;
        }
        assert!(!["failed", "cancelled", "completed"].contains(&run["status"].as_str().unwrap_or("")), "{run}");
        assert!(t0.elapsed() < WAIT, "the run did not reach {until} within {WAIT:?}: {run}");
        let received = stack
            .sqs
            .receive_message()
            .queue_url(&stack.queue_url)
            .max_number_of_messages(10)
            .visibility_timeout(30)
            .wait_time_seconds(1)
            .message_system_attribute_names(aws_sdk_sqs::types::MessageSystemAttributeName::ApproximateReceiveCount)
            .send()
            .await
            .unwrap();
        let messages = received.messages();
        if messages.is_empty() {
            continue;
        }
        let records: Vec<Value> = messages
            .iter()
            .map(|m| {
                json!({"messageId": m.message_id(), "receiptHandle": m.receipt_handle(), "body": m.body(),
                       "attributes": {"ApproximateReceiveCount": "1"}, "messageAttributes": {},
                       "eventSource": "aws:sqs", "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:steps",
                       "awsRegion": REGION})
            })
            .collect();
        let response = emu.invoke("worker", &json!({ "Records": records })).await;
        let failed: Vec<&str> = response["batchItemFailures"]
            .as_array()
            .unwrap_or_else(|| panic!("worker answered {response}"))
            .iter()
            .filter_map(|f| f["itemIdentifier"].as_str())
            .collect();
        for m in messages {
            if !failed.contains(&m.message_id().unwrap_or_default()) {
                stack
                    .sqs
                    .delete_message()
                    .queue_url(&stack.queue_url)
                    .receipt_handle(m.receipt_handle().unwrap())
                    .send()
                    .await
                    .unwrap();
            }
        }
        batches += 1;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_real_lambda_binaries_run_a_workflow_with_a_human_step_against_moto() {
    let bins = bootstraps();
    let stack = stack().await;
    let logs = tempfile::tempdir().unwrap();
    let mut procs = Processes::default();

    // A function without its settings does not start, and says what is missing.
    let out = Command::new(&bins["api"])
        .env_clear()
        .envs(
            stack
                .env("api", "http://127.0.0.1:9/.rt/api")
                .into_iter()
                .filter(|(k, _)| k != "BATON_TABLE" && k != "BATON_KMS_KEY_ID"),
        )
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "started without BATON_TABLE");
    assert!(stderr.contains("BATON_TABLE") && stderr.contains("BATON_KMS_KEY_ID"), "{stderr}");

    // The Runtime API emulator.
    let port = free_port();
    let watch_log = std::fs::File::create(logs.path().join("watch.log")).unwrap();
    let watch = Command::new(cargo_lambda())
        .args(["lambda", "watch", "--only-lambda-apis", "-A", "127.0.0.1", "-P", &port.to_string()])
        .current_dir(workspace_root())
        .stdin(Stdio::null())
        .stdout(watch_log.try_clone().unwrap())
        .stderr(watch_log)
        .spawn()
        .expect("start cargo lambda watch");
    procs.0.push(("cargo lambda watch".into(), watch));
    wait_for_port(port, "cargo lambda watch", &mut procs);
    let emu = Emulator { port, http: reqwest::Client::builder().timeout(Duration::from_secs(30)).build().unwrap() };

    // Every function, cold-started once.
    let mut functions = HashMap::new();
    for f in FUNCTIONS {
        let log = logs.path().join(format!("{f}.log"));
        let file = std::fs::File::create(&log).unwrap();
        let spawned = SystemTime::now();
        let child = Command::new(&bins[f])
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .envs(stack.env(f, &format!("http://127.0.0.1:{port}/.rt/{f}")))
            .stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .unwrap_or_else(|e| panic!("start {f}: {e}"));
        procs.0.push((f.to_string(), child));
        let function = Function { log, spawned };
        // One at a time, so each cold start is measured alone: the first generates the data
        // key (KMS GenerateDataKey + a conditional put), the others read and decrypt it.
        let t0 = Instant::now();
        while function.init_ms().is_none() {
            if let Some((_, child)) = procs.0.last_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                let log = std::fs::read_to_string(&function.log).unwrap_or_default();
                panic!("{f} exited ({status}) during init:\n{log}");
            }
            assert!(t0.elapsed() < WAIT, "{f} was not ready within {WAIT:?}");
            std::thread::sleep(Duration::from_millis(5));
        }
        functions.insert(f, Function { log: function.log, spawned: function.spawned });
    }
    let dump = |logs: &Path| {
        for f in FUNCTIONS.iter().copied().chain(["watch"]) {
            let text = std::fs::read_to_string(logs.join(format!("{f}.log"))).unwrap_or_default();
            eprintln!(
                "---- {f} ----\n{}",
                text.lines().rev().take(20).collect::<Vec<_>>().into_iter().rev().collect::<Vec<_>>().join("\n")
            );
        }
    };
    let guard = DumpOnPanic(Some(Box::new({
        let path = logs.path().to_path_buf();
        move || dump(&path)
    })));

    // Account, workflow, start — each through the function API Gateway routes it to.
    let (status, account) =
        emu.http("register", "POST", "/api/v1/auth/register", None, Some(json!({"name": "e2e"}))).await;
    assert_eq!(status, 201, "{account}");
    let key = account["api_key"].as_str().unwrap().to_string();
    let workflow = json!({"id": "orders", "name": "Orders", "status": "active",
        "inputSchema": {"type": "object", "required": ["amount"], "properties": {"amount": {"type": "number"}}},
        "blocks": [
            {"id": "start", "type": "starter"},
            {"id": "price", "type": "transform", "config": {"mapping": {"total": "{{input.amount | times: 1.08 | round: 2}}"}}},
            {"id": "check", "type": "condition"},
            {"id": "review", "type": "human", "config": {"kind": "approval", "prompt": "Approve {{input.amount}}?"}},
            {"id": "done", "type": "response", "config": {"body": {"ok": true, "total": "{{steps.price.output.total}}"}}}],
        "edges": [
            {"from": "start", "to": "price"}, {"from": "price", "to": "check"},
            {"from": "check", "to": "review", "when": "input.amount > 1000"}, {"from": "check", "to": "done"},
            {"from": "review", "to": "done"}]});
    let (status, wf) = emu.http("api", "POST", "/api/v1/workflows", Some(&key), Some(workflow)).await;
    assert_eq!(status, 201, "{wf}");
    // A function serves only its own routes.
    let (status, body) = emu.http("register", "POST", "/api/v1/workflows", Some(&key), Some(json!({}))).await;
    assert_eq!((status, body["error"]["code"].as_str()), (404, Some("NOT_FOUND")));
    let (status, run) = emu
        .http("trigger", "POST", "/api/v1/workflows/orders/run", Some(&key), Some(json!({"input": {"amount": 5000}})))
        .await;
    assert_eq!(status, 201, "{run}");
    let run_id = run["run_id"].as_str().unwrap().to_string();

    // The worker, fed by the test's event source mapping, runs it up to the person.
    let batches = play_queue(&emu, &stack, &key, &run_id, "waiting_human").await;
    assert!(batches >= 4, "start, price, check, review: one block per message ({batches} batches)");
    let (status, tasks) = emu.http("api", "GET", &format!("/api/v1/runs/{run_id}/tasks"), Some(&key), None).await;
    assert_eq!(status, 200, "{tasks}");
    assert_eq!(tasks["data"][0]["prompt"], "Approve 5000?");
    let task_id = tasks["data"][0]["task_id"].as_str().unwrap().to_string();
    let (status, done) = emu
        .http(
            "task-complete",
            "POST",
            &format!("/api/v1/runs/{run_id}/tasks/{task_id}/complete"),
            Some(&key),
            Some(json!({"approved": true, "feedback": "fine"})),
        )
        .await;
    assert_eq!(status, 200, "{done}");
    play_queue(&emu, &stack, &key, &run_id, "completed").await;
    let (status, run) = emu.http("api", "GET", &format!("/api/v1/runs/{run_id}"), Some(&key), None).await;
    assert_eq!(status, 200);
    assert_eq!(run["status"], "completed", "{run}");
    // 1.08 × 5000: a float, however the store spells it.
    assert_eq!((run["output"]["ok"].as_bool(), run["output"]["total"].as_f64()), (Some(true), Some(5400.0)), "{run}");

    // Sync execute through its own function: no queue involved below the threshold.
    let (status, run) = emu
        .http("execute", "POST", "/api/v1/workflows/orders/execute", Some(&key), Some(json!({"input": {"amount": 10}})))
        .await;
    assert_eq!(status, 200, "{run}");
    assert_eq!((run["output"]["ok"].as_bool(), run["output"]["total"].as_f64()), (Some(true), Some(10.8)), "{run}");
    // The hook function answers the envelope for an unknown trigger token.
    let (status, body) = emu.http("hook", "POST", "/api/v1/hooks/no-such-token", None, Some(json!({}))).await;
    assert_eq!((status, body["error"]["code"].as_str()), (404, Some("NOT_FOUND")));
    // It serves inbound callbacks too: an unknown token is its answer, not the router's 404.
    let (status, body) =
        emu.http("hook", "POST", "/api/v1/callback?token=wt_nope", None, Some(json!({"output": 1}))).await;
    assert_eq!((status, body["error"]["message"].as_str()), (404, Some("Unknown callback token")), "{body}");
    // A `code` step in the execute function (QuickJS is linked into the functions that run blocks).
    let js = json!({"id": "js", "name": "js", "status": "active", "steps": [{"id": "start", "type": "starter"},
        {"id": "double", "type": "function", "config": {"code": "return {n: input.n * 2}"}}]});
    let (status, wf) = emu.http("api", "POST", "/api/v1/workflows", Some(&key), Some(js)).await;
    assert_eq!(status, 201, "{wf}");
    let (status, run) = emu
        .http("execute", "POST", "/api/v1/workflows/js/execute", Some(&key), Some(json!({"input": {"n": 21}})))
        .await;
    assert_eq!((status, run["output"].clone()), (200, json!({"n": 42})), "{run}");

    // Cold starts: spawn → `ready` (config, SDK clients, KMS data key), against moto on
    // loopback. A figure for the notes, not a test: DESIGN.md §8 asks ≤ 30 ms on Lambda.
    let mut report = Vec::new();
    for f in FUNCTIONS {
        let ms = functions[f].init_ms().unwrap_or_else(|| panic!("{f} logged no `ready` line"));
        report.push(format!("{f} {ms:.1} ms"));
    }
    eprintln!("init (spawn to ready, moto on loopback): {}", report.join(", "));
    drop(guard.disarm());
    drop(procs);
}

/// Prints the processes' logs when the test panics.
struct DumpOnPanic(Option<Box<dyn FnOnce()>>);

impl DumpOnPanic {
    fn disarm(mut self) -> Self {
        self.0 = None;
        self
    }
}

impl Drop for DumpOnPanic {
    fn drop(&mut self) {
        if std::thread::panicking()
            && let Some(f) = self.0.take()
        {
            f();
        }
    }
}

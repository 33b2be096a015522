//! The AWS cost of a step (DESIGN.md §8), measured: runs of the §8 transform chain (a starter
//! and four transforms) go through the real engine on the DynamoDB and SQS adapters against
//! moto, and the adapters' request counters (`baton::metrics`) say what each step cost.
//!
//! This process plays both AWS-side drivers: the API function (authenticate the key, count
//! the rate limit, `start_run`) and the SQS event source mapping of the worker function
//! (long-poll batches of up to 10, the worker's per-message function on each message, one
//! `DeleteMessageBatch` for the batch), exactly as `functions/lambda/src/worker.rs` settles
//! messages. Run it with `bash infra/aws-cost.sh`; `tests/tests/aws_cost.rs` keeps the
//! counts from growing.

use crate::moto::{Moto, unique_name};
use baton::adapters::dynamo::{self, DynamoStore};
use baton::adapters::sqs::{self, SqsQueue};
use baton::app::{App, AppConfig};
use baton::engine::StartRequest;
use baton::metrics::{self, Op};
use baton::queue::{MAX_RECEIVE, Outcome, Queue};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

// us-east-1 list prices, in dollars, as published on the pricing pages named beside them
// (checked for this report; the first tier of each, no free tier).

/// DynamoDB on-demand, per million write request units
/// (<https://aws.amazon.com/dynamodb/pricing/on-demand/>).
pub const DDB_WRITE_PER_MILLION: f64 = 0.625;
/// DynamoDB on-demand, per million read request units (same page).
pub const DDB_READ_PER_MILLION: f64 = 0.125;
/// SQS standard queue, per million requests, each 64 KB chunk of payload one request
/// (<https://aws.amazon.com/sqs/pricing/>).
pub const SQS_PER_MILLION: f64 = 0.40;
/// S3 Standard, per million PUT requests ($0.005 per 1,000; <https://aws.amazon.com/s3/pricing/>):
/// the DynamoDB adapter's large values.
pub const S3_PUT_PER_MILLION: f64 = 5.0;
/// S3 Standard, per million GET requests ($0.0004 per 1,000; same page).
pub const S3_GET_PER_MILLION: f64 = 0.4;
/// S3 Standard storage, per GB-month (first 50 TB; same page).
pub const S3_GB_MONTH: f64 = 0.023;
/// DynamoDB Standard storage, per GB-month (<https://aws.amazon.com/dynamodb/pricing/on-demand/>).
pub const DDB_GB_MONTH: f64 = 0.25;
/// Lambda, per million requests (<https://aws.amazon.com/lambda/pricing/>).
pub const LAMBDA_REQUEST_PER_MILLION: f64 = 0.20;
/// Lambda arm64, per GB-second (same page, first 6 billion GB-s per month).
pub const LAMBDA_ARM_GB_SECOND: f64 = 0.000_013_333_4;
/// API Gateway HTTP API, per million requests (<https://aws.amazon.com/api-gateway/pricing/>).
pub const HTTP_API_PER_MILLION: f64 = 1.00;
/// Step Functions Standard, per million state transitions ($0.025 per 1,000;
/// <https://aws.amazon.com/step-functions/pricing/>): the reference of DESIGN.md §8.
pub const STEP_FUNCTIONS_PER_MILLION: f64 = 25.0;

/// Memory of the worker function (template.yaml's `Globals`; no function overrides it).
pub const LAMBDA_MEMORY_MB: f64 = 256.0;
/// Billed duration assumed per worker invocation. Not measured here (moto is not DynamoDB):
/// a transform step is about four requests of single-digit milliseconds in-region.
pub const LAMBDA_MS_PER_INVOCATION: f64 = 50.0;

/// What N runs cost, by operation kind.
#[derive(Debug, Clone)]
pub struct Measured {
    pub runs: usize,
    pub blocks: usize,
    /// Requests of starting the runs (API side).
    pub start: HashMap<Op, u64>,
    /// Requests of executing their steps (worker side, event source mapping included).
    pub steps: HashMap<Op, u64>,
    /// Non-empty batches handed to the worker: Lambda invocations of the worker function.
    pub invocations: u64,
    pub elapsed: Duration,
}

/// The kinds a report shows, in order.
pub const REPORTED: &[Op] = &[
    Op::DdbGetItem,
    Op::DdbPutItem,
    Op::DdbUpdateItem,
    Op::DdbDeleteItem,
    Op::DdbTransactWriteItems,
    Op::DdbTransactItems,
    Op::DdbQuery,
    Op::DdbBatchGetItem,
    Op::DdbWriteUnits,
    Op::DdbReadUnits,
    Op::DdbReadBytes,
    Op::SqsSendMessage,
    Op::SqsSendMessageBatch,
    Op::SqsReceiveMessage,
    Op::SqsDeleteMessage,
    Op::SqsDeleteMessageBatch,
    Op::SqsChangeMessageVisibility,
    Op::SqsBilledRequests,
    Op::S3PutObject,
    Op::S3GetObject,
];

/// Dollars per million, by item.
#[derive(Debug, Clone, Copy)]
pub struct Cost {
    pub dynamodb: f64,
    /// Requests only (storage is per month: [`S3_GB_MONTH`]).
    pub s3: f64,
    pub sqs: f64,
    pub lambda: f64,
    pub api_gateway: f64,
}

impl Cost {
    pub fn total(&self) -> f64 {
        self.dynamodb + self.s3 + self.sqs + self.lambda + self.api_gateway
    }
}

impl Measured {
    pub fn steps_total(&self) -> usize {
        self.runs * self.blocks
    }

    /// Requests of `op` per step (worker side).
    pub fn per_step(&self, op: Op) -> f64 {
        self.steps.get(&op).copied().unwrap_or(0) as f64 / self.steps_total() as f64
    }

    /// Requests of `op` per run start (API side).
    pub fn per_start(&self, op: Op) -> f64 {
        self.start.get(&op).copied().unwrap_or(0) as f64 / self.runs as f64
    }

    fn dollars(write_units: f64, read_units: f64, sqs_requests: f64) -> (f64, f64) {
        (write_units * DDB_WRITE_PER_MILLION + read_units * DDB_READ_PER_MILLION, sqs_requests * SQS_PER_MILLION)
    }

    /// Dollars per million steps of the worker side alone.
    pub fn step_cost(&self) -> Cost {
        let (dynamodb, sqs) = Self::dollars(
            self.per_step(Op::DdbWriteUnits),
            self.per_step(Op::DdbReadUnits),
            self.per_step(Op::SqsBilledRequests),
        );
        let s3 =
            self.per_step(Op::S3PutObject) * S3_PUT_PER_MILLION + self.per_step(Op::S3GetObject) * S3_GET_PER_MILLION;
        let invokes = self.invocations as f64 / self.steps_total() as f64;
        let gb_seconds = invokes * LAMBDA_MEMORY_MB / 1024.0 * LAMBDA_MS_PER_INVOCATION / 1000.0;
        let lambda = invokes * LAMBDA_REQUEST_PER_MILLION + gb_seconds * 1e6 * LAMBDA_ARM_GB_SECOND;
        Cost { dynamodb, s3, sqs, lambda, api_gateway: 0.0 }
    }

    /// Dollars per million run starts over HTTP (API Gateway + one API function invocation).
    pub fn start_cost(&self) -> Cost {
        let (dynamodb, sqs) = Self::dollars(
            self.per_start(Op::DdbWriteUnits),
            self.per_start(Op::DdbReadUnits),
            self.per_start(Op::SqsBilledRequests),
        );
        let s3 =
            self.per_start(Op::S3PutObject) * S3_PUT_PER_MILLION + self.per_start(Op::S3GetObject) * S3_GET_PER_MILLION;
        let gb_seconds = LAMBDA_MEMORY_MB / 1024.0 * LAMBDA_MS_PER_INVOCATION / 1000.0;
        let lambda = LAMBDA_REQUEST_PER_MILLION + gb_seconds * 1e6 * LAMBDA_ARM_GB_SECOND;
        Cost { dynamodb, s3, sqs, lambda, api_gateway: HTTP_API_PER_MILLION }
    }

    /// Dollars per million steps with the run starts spread over the run's steps.
    pub fn all_in_cost(&self) -> Cost {
        let (s, r, n) = (self.step_cost(), self.start_cost(), self.blocks as f64);
        Cost {
            dynamodb: s.dynamodb + r.dynamodb / n,
            s3: s.s3 + r.s3 / n,
            sqs: s.sqs + r.sqs / n,
            lambda: s.lambda + r.lambda / n,
            api_gateway: r.api_gateway / n,
        }
    }

    pub fn report(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "{} runs x {} blocks = {} steps on DynamoDB + SQS (moto), {:.1} s; worker invocations (non-empty batches): {} ({:.2} per step)\n",
            self.runs,
            self.blocks,
            self.steps_total(),
            self.elapsed.as_secs_f64(),
            self.invocations,
            self.invocations as f64 / self.steps_total() as f64
        );
        let _ = writeln!(out, "{:<28} {:>10} {:>14}", "requests", "per step", "per run start");
        for &op in REPORTED {
            let _ = writeln!(out, "{:<28} {:>10.3} {:>14.3}", op.name(), self.per_step(op), self.per_start(op));
        }
        let line = |out: &mut String, what: &str, c: Cost| {
            let _ = writeln!(
                out,
                "{what:<34} ${:>6.3}  (DynamoDB {:.3}, S3 {:.3}, SQS {:.3}, Lambda {:.3}, API Gateway {:.3})",
                c.total(),
                c.dynamodb,
                c.s3,
                c.sqs,
                c.lambda,
                c.api_gateway
            );
        };
        let _ = writeln!(
            out,
            "\n$ per million (us-east-1 list prices; Lambda arm64 {LAMBDA_MEMORY_MB} MB x {LAMBDA_MS_PER_INVOCATION} ms per invocation):"
        );
        line(&mut out, "steps, worker side", self.step_cost());
        line(&mut out, "run starts over HTTP", self.start_cost());
        line(&mut out, &format!("steps, run start spread over {}", self.blocks), self.all_in_cost());
        let _ = writeln!(out, "{:<34} ${STEP_FUNCTIONS_PER_MILLION:>6.3}", "Step Functions Standard");
        out
    }
}

fn delta(before: &[(Op, u64)]) -> HashMap<Op, u64> {
    metrics::since(before).into_iter().filter(|&(_, n)| n > 0).collect()
}

/// An engine on the AWS adapters against moto, as deployed (a table, a queue with its
/// dead-letter queue, a payload bucket), and a registered account.
pub struct MotoApp {
    pub app: Arc<App>,
    pub store: Arc<DynamoStore>,
    pub queue: Arc<SqsQueue>,
    pub acct: String,
    /// The account's API key.
    pub secret: String,
}

/// A fresh [`MotoApp`] whose resources are named after `tag`, with step leases of `lease`.
pub async fn moto_app(moto: &Moto, tag: &str, lease: Duration) -> Result<MotoApp, String> {
    moto_app_with(moto, tag, lease, AppConfig::default()).await
}

/// [`moto_app`] with `config` otherwise.
pub async fn moto_app_with(moto: &Moto, tag: &str, lease: Duration, config: AppConfig) -> Result<MotoApp, String> {
    let cfg = moto.sdk_config().await;
    let ddb = aws_sdk_dynamodb::Client::new(&cfg);
    let sqs_client = aws_sdk_sqs::Client::new(&cfg);
    let table = unique_name(tag);
    dynamo::create_table(&ddb, &table).await.map_err(|e| e.to_string())?;
    let (url, dlq) = sqs::create_queues(&sqs_client, &unique_name(tag), 10).await.map_err(|e| e.to_string())?;
    let s3_client = baton::aws::s3_client(&cfg);
    let bucket = baton::adapters::s3::bucket_for_table(&table);
    baton::adapters::s3::create_bucket(&s3_client, &bucket).await.map_err(|e| e.to_string())?;
    let payloads = baton::adapters::s3::Payloads::new(s3_client, bucket);
    let store = Arc::new(DynamoStore::new(ddb, table).with_payloads(payloads));
    let queue = Arc::new(SqsQueue::new(sqs_client, url, Some(dlq)));
    let config = AppConfig { lease, ..config };
    let app = App::new(store.clone(), queue.clone(), Arc::new(baton::secrets::SecretBox::ephemeral()), config);
    let (account, issued) = baton::accounts::register(store.as_ref(), tag, None).await.map_err(|e| e.to_string())?;
    let acct = account["id"].as_str().ok_or("account without id")?.to_string();
    Ok(MotoApp { app, store, queue, acct, secret: issued.secret })
}

/// Runs `runs` runs of a `blocks`-block transform chain against `moto` and counts what they
/// cost. One warm-up run first, so the figures are those of warm functions (workflow
/// version cached), as in steady state on Lambda. Counters are process-wide: nothing else in
/// the process may use the AWS adapters meanwhile.
pub async fn measure(moto: &Moto, runs: usize, blocks: usize) -> Result<Measured, String> {
    let m = moto_app(moto, "cost", Duration::from_secs(30)).await?;
    baton::workflows::create(m.store.as_ref(), &m.acct, crate::transform_chain("chain", blocks))
        .await
        .map_err(|e| e.to_string())?;
    measure_runs(&m, "chain", runs, blocks).await
}

/// Billed Lambda dollars per million steps for each second a step waits on a model: the
/// worker's invocation lasts as long as the provider takes to answer.
pub fn lambda_per_model_second() -> f64 {
    LAMBDA_MEMORY_MB / 1024.0 * LAMBDA_ARM_GB_SECOND * 1e6
}

/// Agent steps per run in [`measure_agent`].
pub const AGENT_BLOCKS: usize = 5;

/// Like [`measure`] for runs of [`AGENT_BLOCKS`] `agent` steps whose provider is a scripted
/// OpenAI-compatible server on loopback (answering at once): the store and queue requests of
/// an agent step (provider record, run item, journal) besides the model's own price and
/// latency, which [`lambda_per_model_second`] prices.
pub async fn measure_agent(moto: &Moto, runs: usize) -> Result<Measured, String> {
    let fake = baton::ai::fake::Fake::start(Arc::new(|_, _| {
        (200, Vec::new(), baton::ai::fake::openai_answer("a short summary", 120, 30))
    }))
    .await;
    let config = AppConfig { allow_private_targets: true, ..AppConfig::default() };
    let m = moto_app_with(moto, "agentcost", Duration::from_secs(30), config).await?;
    let targets = baton::net_guard::Targets::from_allow_private(true);
    let body = json!({"provider": "openai", "api_key": "sk-test", "base_url": format!("{}/v1", fake.url), "label": "fake", "model": "gpt-4o-mini"});
    let provider = baton::ai::providers::create(m.store.as_ref(), &m.app.secrets, targets, &m.acct, &body)
        .await
        .map_err(|e| e.to_string())?;
    // As long as the transform chain, each step reading the one before, so the two compare.
    let steps: Vec<Value> = (0..AGENT_BLOCKS)
        .map(|i| {
            let prompt = match i {
                0 => "Summarize order {{input.n}}".to_string(),
                _ => format!("Shorten: {{{{steps.a{}.output}}}}", i - 1),
            };
            json!({"id": format!("a{i}"), "type": "agent", "config": {"provider_id": provider["provider_id"], "prompt": prompt}})
        })
        .collect();
    let wf = json!({"id": "agents", "name": "agents", "status": "active", "steps": steps});
    baton::workflows::create(m.store.as_ref(), &m.acct, wf).await.map_err(|e| e.to_string())?;
    let measured = measure_runs(&m, "agents", runs, AGENT_BLOCKS).await?;
    let calls = fake.requests().len();
    if calls != (runs + 1) * AGENT_BLOCKS {
        return Err(format!("{calls} model calls for {} agent steps", (runs + 1) * AGENT_BLOCKS));
    }
    Ok(measured)
}

/// Starts one warm-up run of `wf` and drives it to its end, then `runs` counted ones.
async fn measure_runs(m: &MotoApp, wf: &str, runs: usize, blocks: usize) -> Result<Measured, String> {
    let MotoApp { app, queue, acct, secret, .. } = m;
    let start_runs = |n: usize| {
        let (app, acct, secret) = (app.clone(), acct.clone(), secret.clone());
        async move {
            let mut ids = Vec::with_capacity(n);
            for i in 0..n {
                // What the API function does for `POST /workflows/{id}/run`.
                let principal = baton::accounts::authenticate(app.store.as_ref(), &secret).await?;
                baton::accounts::check_run_starts(app.store.as_ref(), &principal.account_id, u64::MAX).await?;
                let req = StartRequest { input: json!({"n": i}), source: "api".into(), ..Default::default() };
                let started = app.engine.start_run(&acct, wf, req).await?;
                ids.push(started.run["run_id"].as_str().unwrap_or_default().to_string());
            }
            Ok::<_, baton::Error>(ids)
        }
    };

    // Warm-up: one run start to finish.
    start_runs(1).await.map_err(|e| e.to_string())?;
    drive(app, queue.as_ref(), blocks, Duration::from_secs(60)).await?;

    let t0 = Instant::now();
    let before = metrics::snapshot();
    let ids = start_runs(runs).await.map_err(|e| e.to_string())?;
    let start = delta(&before);
    let before = metrics::snapshot();
    // moto answers a few hundred requests per second at best: a second per step is ample.
    let bound = Duration::from_secs(120 + (runs * blocks) as u64);
    let invocations = drive(app, queue.as_ref(), runs * blocks, bound).await?;
    let steps = delta(&before);
    let elapsed = t0.elapsed();

    for id in &ids {
        let run = app.engine.get_run(acct, id).await.map_err(|e| e.to_string())?;
        if run["status"] != "completed" {
            return Err(format!("run {id} did not complete: {run}"));
        }
    }
    Ok(Measured { runs, blocks, start, steps, invocations, elapsed })
}

/// DynamoDB reads of one step message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StepReads {
    /// Read requests (GetItem, BatchGetItem, Query).
    pub requests: u64,
    pub units: u64,
    /// Bytes of the items read.
    pub bytes: u64,
}

/// One run of a chain of a starter and `blocks - 1` transforms, each step's output about
/// `output_bytes` of JSON (the run input carries them), handled one message at a time
/// against `moto`: what each step read, by step key, in order. `names_predecessor`: each
/// transform's template reads its predecessor's output (else the run input).
pub async fn reads_per_step(
    moto: &Moto,
    blocks: usize,
    output_bytes: usize,
    names_predecessor: bool,
) -> Result<Vec<(String, StepReads)>, String> {
    let MotoApp { app, store, queue, acct, .. } = moto_app(moto, "reads", Duration::from_secs(30)).await?;
    let mut steps = vec![json!({"id": "start", "type": "starter"})];
    for i in 1..blocks {
        let source = match (names_predecessor, i) {
            (true, 1) => "steps.start.output.blob".to_string(),
            (true, _) => format!("steps.t{}.output.blob", i - 1),
            (false, _) => "input.blob".to_string(),
        };
        steps.push(json!({
            "id": format!("t{i}"),
            "type": "transform",
            "config": {"mapping": {"blob": format!("{{{{{source}}}}}"), "i": i}},
        }));
    }
    let wf = json!({"id": "long", "name": "long chain", "status": "active", "steps": steps});
    baton::workflows::create(store.as_ref(), &acct, wf).await.map_err(|e| e.to_string())?;
    let input = json!({"blob": "b".repeat(output_bytes)});
    let req = StartRequest { input, source: "api".into(), ..Default::default() };
    let started = app.engine.start_run(&acct, "long", req).await.map_err(|e| e.to_string())?;
    let run_id = started.run["run_id"].as_str().unwrap_or_default().to_string();

    let mut out = Vec::new();
    let t0 = Instant::now();
    while out.len() < blocks {
        if t0.elapsed() > Duration::from_secs(60 + blocks as u64) {
            return Err(format!("only {} of {blocks} steps ran", out.len()));
        }
        let msgs =
            queue.receive(1, Duration::from_secs(30), Duration::from_secs(1)).await.map_err(|e| e.to_string())?;
        for m in msgs {
            let before = metrics::snapshot();
            let (outcome, successors) = app.engine.process_deferred(&m.body, false).await;
            let d = delta(&before);
            if !successors.is_empty() {
                queue.send_batch(successors).await.map_err(|e| e.to_string())?;
            }
            if outcome != Outcome::Ack {
                return Err(format!("a step was not acknowledged: {outcome:?}"));
            }
            queue.delete_batch(std::slice::from_ref(&m.receipt)).await.map_err(|e| e.to_string())?;
            let body: serde_json::Value = serde_json::from_str(&m.body).map_err(|e| e.to_string())?;
            let n = |op: Op| d.get(&op).copied().unwrap_or(0);
            let reads = StepReads {
                requests: n(Op::DdbGetItem) + n(Op::DdbBatchGetItem) + n(Op::DdbQuery),
                units: n(Op::DdbReadUnits),
                bytes: n(Op::DdbReadBytes),
            };
            out.push((body["s"].as_str().unwrap_or_default().to_string(), reads));
        }
    }
    let run = app.engine.get_run(&acct, &run_id).await.map_err(|e| e.to_string())?;
    if run["status"] != "completed" {
        return Err(format!("the run did not complete: {}", run["status"]));
    }
    Ok(out)
}

/// Plays the event source mapping until `steps` messages were acknowledged and the queue is
/// empty; returns the number of non-empty batches (worker invocations).
async fn drive(app: &Arc<App>, queue: &SqsQueue, steps: usize, bound: Duration) -> Result<u64, String> {
    let t0 = Instant::now();
    let (mut acked, mut batches) = (0, 0);
    loop {
        if t0.elapsed() > bound {
            return Err(format!("only {acked} of {steps} steps were acknowledged within {bound:?}"));
        }
        let msgs = queue
            .receive(MAX_RECEIVE, Duration::from_secs(30), Duration::from_secs(1))
            .await
            .map_err(|e| e.to_string())?;
        if msgs.is_empty() {
            if acked >= steps {
                return Ok(batches);
            }
            continue;
        }
        batches += 1;
        // The worker function settles the batch's messages concurrently.
        let settled = futures_settle(app, &msgs).await?;
        let done: Vec<String> =
            msgs.iter().zip(&settled).filter(|(_, ack)| **ack).map(|(m, _)| m.receipt.clone()).collect();
        acked += done.len();
        queue.delete_batch(&done).await.map_err(|e| e.to_string())?;
    }
}

async fn futures_settle(app: &Arc<App>, msgs: &[baton::queue::Received]) -> Result<Vec<bool>, String> {
    let mut set = tokio::task::JoinSet::new();
    for (i, m) in msgs.iter().enumerate() {
        let (app, body, receipt) = (app.clone(), m.body.clone(), m.receipt.clone());
        set.spawn(async move {
            let r = match app.engine.process_deferred(&body, false).await {
                (Outcome::Ack, successors) => {
                    if !successors.is_empty() {
                        app.queue.send_batch(successors).await?;
                    }
                    true
                }
                (Outcome::RetryAfter(after), successors) => {
                    if !successors.is_empty() {
                        app.queue.send_batch(successors).await?;
                    }
                    app.queue.change_visibility(&receipt, after.min(baton::queue::MAX_DELAY)).await?;
                    false
                }
            };
            Ok::<_, baton::Error>((i, r))
        });
    }
    let mut out = vec![false; msgs.len()];
    while let Some(r) = set.join_next().await {
        let (i, ack) = r.map_err(|e| e.to_string())?.map_err(|e| e.to_string())?;
        out[i] = ack;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_priced_lambda_memory_is_the_templates() {
        let template = std::fs::read_to_string(crate::workspace_root().join("template.yaml")).unwrap();
        let sizes: Vec<f64> = template
            .lines()
            .filter_map(|l| l.trim().strip_prefix("MemorySize:"))
            .map(|v| v.trim().parse().unwrap())
            .collect();
        assert!(!sizes.is_empty(), "template.yaml sets no MemorySize");
        assert!(
            sizes.iter().all(|&m| m == LAMBDA_MEMORY_MB),
            "template MemorySize {sizes:?}, priced {LAMBDA_MEMORY_MB}"
        );
    }
}

//! Benchmark of the local server against DESIGN.md §8's local rows. A benchmark, not a test:
//! it prints figures and never judges them.
//!
//! ```text
//! cargo build --release -p baton-local -p baton-tests --bins && target/release/bench [flags]
//!   --bin PATH            baton-local to measure (default: BATON_LOCAL_BIN, else target/release)
//!   --starts N            fresh starts for the start-up time (default 5)
//!   --sync-calls N        sync executes at concurrency 1 (default 2000)
//!   --runs N              durable runs to start (default 20000)
//!   --concurrency N       concurrent start requests (default 64)
//!   --workers N           server worker count (default: the server's)
//!   --blocks N            blocks in the workflow: a starter + N-1 transforms (default 5)
//!   --client-threads N    load generator threads (default 1)
//!   --timeout-secs N      give up waiting for the durable runs after this (default 600)
//!   --only LIST           comma list of startup,sync,throughput (default all)
//! ```
//!
//! Every section runs against a freshly started server on a fresh database in a temporary
//! directory, with the start rate limit raised out of the way (`--rate-limit 100000000`).

use baton_tests::{Api, Server, ServerOptions, parse_rfc3339_ms, proc_memory, server_binary, transform_chain};
use serde_json::json;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const WORKFLOW: &str = "bench";
const RATE_LIMIT: u64 = 100_000_000;

#[derive(Debug, Clone)]
struct Args {
    bin: Option<PathBuf>,
    starts: usize,
    sync_calls: usize,
    runs: usize,
    concurrency: usize,
    workers: Option<usize>,
    blocks: usize,
    client_threads: usize,
    timeout: Duration,
    only: Vec<String>,
}

const USAGE: &str = "usage: bench [--bin PATH] [--starts N] [--sync-calls N] [--runs N] [--concurrency N] [--workers N] [--blocks N] [--client-threads N] [--timeout-secs N] [--only startup,sync,throughput]";

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        bin: None,
        starts: 5,
        sync_calls: 2000,
        runs: 20_000,
        concurrency: 64,
        workers: None,
        blocks: 5,
        client_threads: 1,
        timeout: Duration::from_secs(600),
        only: vec!["startup".into(), "sync".into(), "throughput".into()],
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        if flag == "-h" || flag == "--help" {
            println!("{USAGE}");
            std::process::exit(0);
        }
        let (name, value) = match flag.split_once('=') {
            Some((n, v)) => (n.to_string(), v.to_string()),
            None => (flag.clone(), it.next().ok_or_else(|| format!("{flag} needs a value\n{USAGE}"))?),
        };
        let num = |v: &str| -> Result<usize, String> {
            v.parse::<usize>().map_err(|_| format!("{name}: `{v}` is not a whole number"))
        };
        match name.as_str() {
            "--bin" => a.bin = Some(PathBuf::from(value)),
            "--starts" => a.starts = num(&value)?.max(1),
            "--sync-calls" => a.sync_calls = num(&value)?.max(1),
            "--runs" => a.runs = num(&value)?.max(1),
            "--concurrency" => a.concurrency = num(&value)?.max(1),
            "--workers" => a.workers = Some(num(&value)?.max(1)),
            "--blocks" => a.blocks = num(&value)?.max(2),
            "--client-threads" => a.client_threads = num(&value)?.max(1),
            "--timeout-secs" => a.timeout = Duration::from_secs(num(&value)? as u64),
            "--only" => {
                a.only = value.split(',').map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect();
                if let Some(bad) = a.only.iter().find(|s| !["startup", "sync", "throughput"].contains(&s.as_str())) {
                    return Err(format!("--only: unknown section `{bad}` (startup, sync, throughput)"));
                }
            }
            _ => return Err(format!("unknown flag {name}\n{USAGE}")),
        }
    }
    Ok(a)
}

fn server_options(a: &Args, bin: &std::path::Path) -> ServerOptions {
    let mut o = ServerOptions::default().rate_limit(RATE_LIMIT).binary(bin);
    o.workers = a.workers;
    o
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Nearest-rank percentile of sorted samples.
fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    percentile(&v, 50.0)
}

/// Start-up: spawn → first successful `GET /api/v1/health`, fresh database each time.
fn bench_startup(a: &Args, bin: &std::path::Path) -> Vec<Duration> {
    (0..a.starts)
        .map(|_| {
            let s = Server::start(server_options(a, bin));
            s.startup
        })
        .collect()
}

struct SyncResult {
    samples: Vec<Duration>,
    errors: usize,
    wrong: usize,
}

/// Sync execute latency at concurrency 1 over one keep-alive connection.
async fn bench_sync(a: &Args, server: &Server) -> Result<SyncResult, String> {
    let mut api = Api::for_server(server);
    api.register("bench-sync").await?;
    api.create_workflow(&transform_chain(WORKFLOW, a.blocks)).await?;
    let warmup = (a.sync_calls / 10).clamp(1, 200);
    for i in 0..warmup {
        let _ = api.execute(WORKFLOW, &json!({"n": i})).await;
    }
    let mut r = SyncResult { samples: Vec::with_capacity(a.sync_calls), errors: 0, wrong: 0 };
    for i in 0..a.sync_calls {
        let t = Instant::now();
        let reply = api.execute(WORKFLOW, &json!({"n": i})).await;
        r.samples.push(t.elapsed());
        match reply {
            Ok((200, body)) => {
                if body["status"] != "completed" || body["output"] != json!({"n": i + a.blocks - 1}) {
                    r.wrong += 1;
                }
            }
            _ => r.errors += 1,
        }
    }
    r.samples.sort();
    Ok(r)
}

struct ThroughputResult {
    accepted: usize,
    start_errors: usize,
    first_error: Option<String>,
    /// First start request sent → last start answered.
    start_phase: Duration,
    /// First start request sent → latest `updated_at` of a completed run (server clock,
    /// same machine).
    to_last_finish: Duration,
    /// First start request sent → this client saw every run completed.
    observed: Duration,
    completed: usize,
    failed: usize,
    unfinished: usize,
    peak_rss: Option<(u64, u64)>,
    server_cpu: Option<Duration>,
    client_cpu: Option<Duration>,
}

fn cpu_time(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the parenthesised command name; utime and stime are the 14th and 15th.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    // USER_HZ is 100 on every Linux this runs on.
    Some(Duration::from_millis(ticks * 10))
}

/// Durable throughput: start `runs` runs with `concurrency` keep-alive connections, then
/// wait until all are completed. Completion is watched cheaply (one `GET /runs/{newest}`
/// every 20 ms), then confirmed by one walk over `GET /runs` pages.
async fn bench_throughput(a: &Args, server: &Server) -> Result<ThroughputResult, String> {
    let mut api = Api::for_server(server);
    api.register("bench-throughput").await?;
    api.create_workflow(&transform_chain(WORKFLOW, a.blocks)).await?;
    let cpu0 = cpu_time(server.pid());
    let client_cpu0 = cpu_time(std::process::id());

    let next = Arc::new(AtomicUsize::new(0));
    let ids = Arc::new(Mutex::new(Vec::with_capacity(a.runs)));
    let errors = Arc::new(Mutex::new((0usize, None::<String>)));
    let wall0 = baton_tests::now_ms();
    let t0 = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..a.concurrency {
        let (api, next, ids, errors, runs) = (api.clone(), next.clone(), ids.clone(), errors.clone(), a.runs);
        set.spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= runs {
                    return;
                }
                match api.start_run(WORKFLOW, &json!({"n": i})).await {
                    Ok((201, body)) if body["run_id"].is_string() => {
                        ids.lock().unwrap().push(body["run_id"].as_str().unwrap_or_default().to_string());
                    }
                    other => {
                        let mut e = errors.lock().unwrap();
                        e.0 += 1;
                        if e.1.is_none() {
                            e.1 = Some(format!("{other:?}"));
                        }
                    }
                }
            }
        });
    }
    while set.join_next().await.is_some() {}
    let start_phase = t0.elapsed();
    let ids = std::mem::take(&mut *ids.lock().unwrap());
    let (start_errors, first_error) = std::mem::take(&mut *errors.lock().unwrap());
    let deadline = t0 + a.timeout;

    // Run ids sort by creation time: the newest is (about) the last to finish.
    if let Some(newest) = ids.iter().max() {
        loop {
            let run = api.run(newest).await?;
            if !matches!(run["status"].as_str(), Some("pending" | "running")) || Instant::now() > deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    // Confirm every run, waiting individually for any still open.
    let listed = api.list_runs(None).await?;
    let mut status: HashMap<String, (String, i64)> = listed
        .iter()
        .filter_map(|r| {
            let at = r["updated_at"].as_str().and_then(parse_rfc3339_ms).unwrap_or(0);
            Some((r["run_id"].as_str()?.to_string(), (r["status"].as_str()?.to_string(), at)))
        })
        .collect();
    let open: Vec<String> = ids
        .iter()
        .filter(|id| !matches!(status.get(*id).map(|s| s.0.as_str()), Some("completed" | "failed" | "cancelled")))
        .cloned()
        .collect();
    for id in open {
        loop {
            let run = api.run(&id).await?;
            let s = run["status"].as_str().unwrap_or("?").to_string();
            let terminal = matches!(s.as_str(), "completed" | "failed" | "cancelled");
            if terminal || Instant::now() > deadline {
                let at =
                    run["finished_at"].as_str().or(run["updated_at"].as_str()).and_then(parse_rfc3339_ms).unwrap_or(0);
                status.insert(id.clone(), (s, at));
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let observed = t0.elapsed();
    let peak_rss = proc_memory(server.pid());
    let server_cpu = match (cpu0, cpu_time(server.pid())) {
        (Some(a), Some(b)) => Some(b.saturating_sub(a)),
        _ => None,
    };
    let client_cpu = match (client_cpu0, cpu_time(std::process::id())) {
        (Some(a), Some(b)) => Some(b.saturating_sub(a)),
        _ => None,
    };

    let (mut completed, mut failed, mut unfinished, mut last) = (0, 0, 0, wall0);
    for id in &ids {
        match status.get(id) {
            Some((s, at)) if s == "completed" => {
                completed += 1;
                last = last.max(*at);
            }
            Some((s, _)) if s == "failed" || s == "cancelled" => failed += 1,
            _ => unfinished += 1,
        }
    }
    Ok(ThroughputResult {
        accepted: ids.len(),
        start_errors,
        first_error,
        start_phase,
        to_last_finish: Duration::from_millis((last - wall0).max(0) as u64),
        observed,
        completed,
        failed,
        unfinished,
        peak_rss,
        server_cpu,
        client_cpu,
    })
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

fn main() {
    let a = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    };
    let bin = a.bin.clone().unwrap_or_else(server_binary);
    let rt = if a.client_threads == 1 {
        tokio::runtime::Builder::new_current_thread().enable_all().build()
    } else {
        tokio::runtime::Builder::new_multi_thread().worker_threads(a.client_threads).enable_all().build()
    }
    .expect("tokio runtime");
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let want = |s: &str| a.only.iter().any(|o| o == s);
    println!("Baton local benchmark");
    println!("  server: {}", bin.display());
    println!(
        "  machine: {cores} cores; load generator in this process ({} thread{}); workflow: starter + {} transforms",
        a.client_threads,
        if a.client_threads == 1 { "" } else { "s" },
        a.blocks - 1
    );
    println!(
        "  server flags: --rate-limit {RATE_LIMIT}{}",
        a.workers.map(|w| format!(" --workers {w}")).unwrap_or_else(|| " (default workers)".into())
    );

    let mut rows: Vec<[String; 4]> = Vec::new();

    if want("throughput") {
        println!("\n[throughput] {} runs, concurrency {} ...", a.runs, a.concurrency);
        let server = Server::start(server_options(&a, &bin));
        match rt.block_on(bench_throughput(&a, &server)) {
            Ok(t) => {
                let rate = t.completed as f64 / t.to_last_finish.as_secs_f64().max(1e-9);
                let observed_rate = t.completed as f64 / t.observed.as_secs_f64().max(1e-9);
                println!(
                    "  accepted {} (start errors {}), start phase {:.2} s ({:.0} starts/s)",
                    t.accepted,
                    t.start_errors,
                    t.start_phase.as_secs_f64(),
                    t.accepted as f64 / t.start_phase.as_secs_f64().max(1e-9)
                );
                if let Some(e) = &t.first_error {
                    println!("  first start error: {e}");
                }
                println!(
                    "  completed {}, failed {}, unfinished {}; first start → last finished_at {:.2} s ({rate:.0} runs/s); \
                     → seen by this client {:.2} s ({observed_rate:.0} runs/s)",
                    t.completed,
                    t.failed,
                    t.unfinished,
                    t.to_last_finish.as_secs_f64(),
                    t.observed.as_secs_f64()
                );
                if let Some(cpu) = t.server_cpu {
                    println!(
                        "  server CPU {:.2} s ({:.0} µs per run); load generator CPU {}",
                        cpu.as_secs_f64(),
                        cpu.as_secs_f64() * 1e6 / t.completed.max(1) as f64,
                        t.client_cpu.map(|c| format!("{:.2} s", c.as_secs_f64())).unwrap_or_else(|| "n/a".into())
                    );
                }
                let db = server.data().db();
                let size: u64 = ["", "-wal"]
                    .iter()
                    .filter_map(|s| std::fs::metadata(format!("{}{s}", db.display())).ok())
                    .map(|m| m.len())
                    .sum();
                println!("  database + WAL after the run: {:.1} MiB", mib(size));
                rows.push([
                    format!("durable runs/s ({}-block transform, started over HTTP, c={})", a.blocks, a.concurrency),
                    format!("{rate:.0}"),
                    "≥ 2,000".into(),
                    "~145".into(),
                ]);
                let rss = match t.peak_rss {
                    Some((hwm, rss)) => {
                        println!("  server VmHWM {:.1} MiB, VmRSS at the end {:.1} MiB", mib(hwm), mib(rss));
                        format!("{:.1} MiB", mib(hwm))
                    }
                    None => "n/a".into(),
                };
                rows.push([
                    "local server peak RSS (VmHWM) during the above".into(),
                    rss,
                    "≤ 64 MB".into(),
                    "~840 MB".into(),
                ]);
            }
            Err(e) => println!("  failed: {e}"),
        }
        drop(server);
    }

    if want("sync") {
        println!("\n[sync] {} executes at concurrency 1 ...", a.sync_calls);
        let server = Server::start(server_options(&a, &bin));
        match rt.block_on(bench_sync(&a, &server)) {
            Ok(r) => {
                let (p50, p90, p99) =
                    (percentile(&r.samples, 50.0), percentile(&r.samples, 90.0), percentile(&r.samples, 99.0));
                let mean = r.samples.iter().sum::<Duration>() / r.samples.len().max(1) as u32;
                println!(
                    "  p50 {:.3} ms, p90 {:.3} ms, p99 {:.3} ms, mean {:.3} ms, max {:.3} ms; errors {}, wrong output {}",
                    ms(p50),
                    ms(p90),
                    ms(p99),
                    ms(mean),
                    ms(r.samples.last().copied().unwrap_or_default()),
                    r.errors,
                    r.wrong
                );
                rows.push([
                    "sync execute p50 (p90 / p99), concurrency 1".into(),
                    format!("{:.2} ms ({:.2} / {:.2})", ms(p50), ms(p90), ms(p99)),
                    "≤ 2 ms".into(),
                    "8.4 ms".into(),
                ]);
            }
            Err(e) => println!("  failed: {e}"),
        }
        drop(server);
    }

    if want("startup") {
        println!("\n[startup] {} fresh starts on fresh databases ...", a.starts);
        let samples = bench_startup(&a, &bin);
        let list: Vec<String> = samples.iter().map(|d| format!("{:.1}", ms(*d))).collect();
        let med = median(samples);
        println!("  spawn → first 200 from /api/v1/health: {} ms; median {:.1} ms", list.join(", "), ms(med));
        rows.push([
            format!("start to first answer (median of {})", a.starts),
            format!("{:.1} ms", ms(med)),
            "≤ 200 ms".into(),
            "~2 s".into(),
        ]);
    }

    println!();
    let header = ["what", "measured", "target (DESIGN.md §8)", "n8n reference"];
    let mut width = header.map(|h| h.chars().count());
    for r in &rows {
        for (w, c) in width.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: &[String; 4]| {
        let padded: Vec<String> =
            cells.iter().zip(width).map(|(c, w)| format!("{c}{}", " ".repeat(w - c.chars().count()))).collect();
        println!("| {} |", padded.join(" | "));
    };
    line(&header.map(String::from));
    println!("|{}|", width.map(|w| "-".repeat(w + 2)).join("|"));
    for r in &rows {
        line(r);
    }
}

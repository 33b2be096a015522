//! Durability end to end: runs accepted over HTTP survive a `kill -9` of the local server
//! mid-flight and a graceful shutdown (SIGTERM), and each step commits exactly once.
//!
//! Both tests drive the real `baton-local` binary (see `baton_tests::server_binary`) on a
//! loopback port with a throw-away database; they are bounded in requests and time.

use baton_tests::{
    Api, Server, ServerOptions, now_ms, parse_rfc3339_ms, start_many, transform_chain, transform_chain_steps,
};
use serde_json::{Value, json};
use std::collections::{HashMap, HashSet};
use std::os::unix::process::ExitStatusExt;
use std::sync::Arc;
use std::time::{Duration, Instant};

const BLOCKS: usize = 5;
const WORKFLOW: &str = "crash-chain";
/// How long accepted runs get to finish after the restart.
const COMPLETION_BOUND: Duration = Duration::from_secs(60);

/// A run the server accepted (201): its id and the `n` it was started with.
#[derive(Debug, Clone)]
struct Accepted {
    n: usize,
    run_id: String,
}

async fn setup(server: &Server) -> Api {
    let mut api = Api::for_server(server);
    api.register("crash-test").await.unwrap();
    api.create_workflow(&transform_chain(WORKFLOW, BLOCKS)).await.unwrap();
    api
}

/// Starts `count` runs and insists on a 201 for every one.
async fn start_all(api: &Api, count: usize) -> Vec<Accepted> {
    let replies = start_many(api, WORKFLOW, count, 16).await;
    replies
        .into_iter()
        .map(|(n, r)| match r {
            Ok((201, body)) => {
                let run_id =
                    body["run_id"].as_str().unwrap_or_else(|| panic!("run {n}: no run_id in {body}")).to_string();
                Accepted { n, run_id }
            }
            Ok((code, body)) => panic!("starting run {n}: expected 201, got {code} {body}"),
            Err(e) => panic!("starting run {n}: {e}"),
        })
        .collect()
}

/// Waits (bounded) until every accepted run is `completed`; any other terminal status fails.
async fn wait_completed(api: &Api, runs: &[Accepted], bound: Duration) {
    let wanted: HashSet<&str> = runs.iter().map(|r| r.run_id.as_str()).collect();
    let t0 = Instant::now();
    loop {
        let listed = api.list_runs(None).await.unwrap();
        let status: HashMap<&str, &str> =
            listed.iter().filter_map(|r| Some((r["run_id"].as_str()?, r["status"].as_str()?))).collect();
        let mut open = Vec::new();
        for id in &wanted {
            match status.get(id).copied() {
                Some("completed") => {}
                Some(s @ ("failed" | "cancelled")) => {
                    let run = api.run(id).await.unwrap_or_else(|e| json!(e));
                    panic!("run {id} ended {s}: {run}");
                }
                Some(s) => open.push(format!("{id}: {s}")),
                None => open.push(format!("{id}: not listed")),
            }
        }
        if open.is_empty() {
            return;
        }
        if t0.elapsed() > bound {
            open.sort();
            panic!(
                "{} of {} accepted runs not completed after {bound:?}, e.g. {:?}",
                open.len(),
                wanted.len(),
                &open[..open.len().min(5)]
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// What the per-run check saw, across all runs.
#[derive(Debug, Default)]
struct Seen {
    /// Runs with a step committed at or after the crash / shutdown.
    finished_after: usize,
    /// Steps whose committed attempt was not the first (taken over after a lease ran out).
    retried_steps: usize,
    /// Problems by kind: (kind, run_id, detail).
    problems: Vec<(&'static str, String, String)>,
}

/// For every run: completed, expected output, exactly one `step.completed` per step and one
/// `run.completed`. Fails once at the end, with every problem counted by kind.
async fn check_exactly_once(api: &Api, runs: &[Accepted], cut_ms: i64) -> Seen {
    let expected_steps = transform_chain_steps(BLOCKS);
    let queue = Arc::new(std::sync::Mutex::new(runs.to_vec()));
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..8 {
        let api = api.clone();
        let queue = queue.clone();
        let expected_steps = expected_steps.clone();
        set.spawn(async move {
            let mut seen = Seen::default();
            loop {
                let Some(r) = queue.lock().unwrap().pop() else { return seen };
                let mut problem =
                    |kind: &'static str, detail: String| seen.problems.push((kind, r.run_id.clone(), detail));
                let run = api.run(&r.run_id).await.unwrap();
                if run["status"] != "completed" {
                    problem("run not completed", run.to_string());
                }
                let want = json!({"n": r.n + BLOCKS - 1});
                if run["output"] != want {
                    let steps: Vec<String> = run["steps"]
                        .as_array()
                        .map(|a| a.iter().map(|s| format!("{}={}", s["step_key"], s["output"])).collect())
                        .unwrap_or_default();
                    problem(
                        "wrong run output",
                        format!(
                            "input n={}: output {} instead of {want}; steps {}",
                            r.n,
                            run["output"],
                            steps.join(" ")
                        ),
                    );
                }
                let events = api.run_events(&r.run_id).await.unwrap();
                let mut completed: HashMap<String, usize> = HashMap::new();
                let mut last_at = i64::MIN;
                let mut retried = 0;
                for e in &events {
                    if e["type"] == "step.completed" {
                        let key = e["step_key"].as_str().unwrap_or("<no step_key>");
                        *completed.entry(key.to_string()).or_default() += 1;
                        if e["data"]["attempt"].as_u64().is_some_and(|a| a > 1) {
                            retried += 1;
                        }
                        if let Some(at) = e["at"].as_str().and_then(parse_rfc3339_ms) {
                            last_at = last_at.max(at);
                        }
                    }
                }
                let timeline = || Value::Array(events.clone()).to_string();
                for key in &expected_steps {
                    let n = completed.get(key).copied().unwrap_or(0);
                    if n != 1 {
                        problem("step.completed count != 1", format!("step {key}: {n} events; {}", timeline()));
                    }
                }
                if completed.len() != expected_steps.len() {
                    problem("unexpected steps completed", format!("{completed:?}"));
                }
                let run_completed = events.iter().filter(|e| e["type"] == "run.completed").count();
                if run_completed != 1 {
                    problem("run.completed count != 1", format!("{run_completed} events; {}", timeline()));
                }
                seen.retried_steps += retried;
                if last_at >= cut_ms {
                    seen.finished_after += 1;
                }
            }
        });
    }
    let mut total = Seen::default();
    while let Some(s) = set.join_next().await {
        let s = s.unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()));
        total.finished_after += s.finished_after;
        total.retried_steps += s.retried_steps;
        total.problems.extend(s.problems);
    }
    if !total.problems.is_empty() {
        let mut kinds: Vec<&str> = total.problems.iter().map(|p| p.0).collect();
        kinds.sort();
        kinds.dedup();
        let mut msg = format!("{} problems over {} runs:\n", total.problems.len(), runs.len());
        for kind in kinds {
            let of_kind: Vec<_> = total.problems.iter().filter(|p| p.0 == kind).collect();
            let runs_hit: HashSet<&str> = of_kind.iter().map(|p| p.1.as_str()).collect();
            msg += &format!("- {kind}: {} runs, e.g.\n", runs_hit.len());
            for p in of_kind.iter().take(3) {
                let detail: String = p.2.chars().take(1500).collect();
                msg += &format!("    {}: {detail}\n", p.1);
            }
        }
        panic!("{msg}");
    }
    total
}

fn options() -> ServerOptions {
    ServerOptions::default().workers(2).lease_secs(2).rate_limit(1_000_000)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_survive_kill_9_mid_flight() {
    let mut server = tokio::task::block_in_place(|| Server::start(options()));
    let api = setup(&server).await;
    let runs = start_all(&api, 300).await;

    // Crash while the backlog is being worked: no chance to release leases or messages.
    let cut_ms = now_ms();
    let status = tokio::task::block_in_place(|| server.kill()).expect("the server was running");
    assert_eq!(status.signal(), Some(9), "the server should have died of SIGKILL, got {status}");

    let restarted = tokio::task::block_in_place(|| server.restart());
    let api = api.with_base(restarted.base_url());
    wait_completed(&api, &runs, COMPLETION_BOUND).await;
    let seen = check_exactly_once(&api, &runs, cut_ms).await;
    eprintln!(
        "kill -9: {} runs, {} finished after the crash, {} steps committed on a retry",
        runs.len(),
        seen.finished_after,
        seen.retried_steps
    );
    assert!(
        seen.finished_after > 0,
        "every run had finished before the kill, so the crash tested nothing; start more runs or fewer workers"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_and_restart_completes() {
    // A lease far longer than the wait after the restart: a graceful stop must hand back
    // what it holds, not leave it to expire.
    let opts = ServerOptions::default().workers(2).lease_secs(120).rate_limit(1_000_000);
    let mut server = tokio::task::block_in_place(|| Server::start(opts));
    let api = setup(&server).await;
    let mut runs = start_all(&api, 300).await;

    // More starts in flight while the signal arrives: each either gets a 201 (and must then
    // complete) or fails to connect.
    let late = tokio::spawn({
        let api = api.clone();
        async move { start_many(&api, WORKFLOW, 200, 4).await }
    });
    tokio::time::sleep(Duration::from_millis(30)).await;
    let cut_ms = now_ms();
    let t0 = Instant::now();
    let status = tokio::task::block_in_place(|| server.terminate(Duration::from_secs(30)))
        .unwrap_or_else(|| panic!("baton-local did not exit within 30 s of SIGTERM"));
    assert_eq!(status.code(), Some(0), "exit status after SIGTERM: {status}");
    eprintln!("SIGTERM: exited after {:?}", t0.elapsed());

    let mut late_ok = 0;
    for (n, reply) in late.await.unwrap() {
        match reply {
            Ok((201, body)) => {
                late_ok += 1;
                runs.push(Accepted { n, run_id: body["run_id"].as_str().unwrap().to_string() });
            }
            Ok((code, body)) => panic!("a start during shutdown answered {code} {body}; expected 201 or no answer"),
            Err(_) => {}
        }
    }

    let restarted = tokio::task::block_in_place(|| server.restart());
    let api = api.with_base(restarted.base_url());
    wait_completed(&api, &runs, Duration::from_secs(30)).await;
    let seen = check_exactly_once(&api, &runs, cut_ms).await;
    eprintln!(
        "SIGTERM: {} runs ({late_ok} accepted during shutdown), {} finished after the signal, {} steps committed on a retry",
        runs.len(),
        seen.finished_after,
        seen.retried_steps
    );
    assert!(seen.finished_after > 0, "every run had finished before SIGTERM, so the shutdown tested nothing");
}

//! The `baton` binary against a real `baton-local` server (BATON_LOCAL_BIN, else the
//! `baton-local` built next to `baton`): every command a person would type, checked by what
//! it prints and how it exits.

use serde_json::{Value, json};
use std::net::{Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};
use tempfile::TempDir;

const BATON: &str = env!("CARGO_BIN_EXE_baton");

fn server_binary() -> PathBuf {
    match std::env::var_os("BATON_LOCAL_BIN").filter(|p| !p.is_empty()) {
        Some(p) => PathBuf::from(p),
        None => Path::new(BATON).with_file_name("baton-local"),
    }
}

/// A `baton-local` of our own on a free loopback port, its database and logs in a temp dir;
/// killed (by its handle) when dropped.
struct Server {
    child: Child,
    url: String,
    dir: TempDir,
}

impl Server {
    fn start() -> Server {
        let bin = server_binary();
        assert!(bin.is_file(), "{} is not built: `cargo build -p baton-local`, or set BATON_LOCAL_BIN", bin.display());
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let log = std::fs::File::create(dir.path().join("server.log")).unwrap();
        let child = Command::new(&bin)
            .arg("--addr")
            .arg(format!("127.0.0.1:{port}"))
            .arg("--db")
            .arg(dir.path().join("baton.db"))
            .env_remove("BATON_ADDR")
            .env_remove("BATON_DB")
            .env_remove("BATON_BACKEND")
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
        let mut s = Server { child, url: format!("http://127.0.0.1:{port}"), dir };
        let t0 = Instant::now();
        while block_on(reqwest::get(format!("{}/api/v1/health", s.url))).is_err() {
            if let Ok(Some(status)) = s.child.try_wait() {
                panic!("baton-local exited ({status}):\n{}", s.log());
            }
            assert!(t0.elapsed() < Duration::from_secs(15), "baton-local never answered:\n{}", s.log());
            std::thread::sleep(Duration::from_millis(20));
        }
        s
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    /// A new account, over HTTP as any client would; its API key.
    fn register(&self, name: &str) -> String {
        let (status, body) = self.post(&format!("{}/api/v1/auth/register", self.url), &json!({"name": name}));
        assert_eq!(status, 201, "{body}");
        body["api_key"].as_str().unwrap().to_string()
    }

    fn post(&self, url: &str, body: &Value) -> (u16, Value) {
        block_on(async {
            let r = reqwest::Client::new().post(url).json(body).send().await.unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap_or(Value::Null))
        })
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(f)
}

fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap().local_addr().unwrap().port()
}

/// One person's shell: their own config directory, no BATON_* variables unless given.
struct Shell {
    home: TempDir,
    env: Vec<(String, String)>,
}

struct Ran {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Ran {
    fn ok(self) -> Ran {
        assert_eq!(self.code, 0, "stdout:\n{}\nstderr:\n{}", self.stdout, self.stderr);
        self
    }
    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| panic!("not JSON ({e}):\n{}", self.stdout))
    }
}

impl Shell {
    fn new() -> Shell {
        Shell { home: tempfile::tempdir().unwrap(), env: vec![] }
    }

    fn with_env(mut self, k: &str, v: &str) -> Shell {
        self.env.push((k.into(), v.into()));
        self
    }

    fn config_file(&self) -> PathBuf {
        self.home.path().join("xdg").join("baton").join("config.json")
    }

    fn baton(&self, args: &[&str]) -> Ran {
        let out: Output = Command::new(BATON)
            .args(args)
            .env_remove("BATON_URL")
            .env_remove("BATON_API_KEY")
            .env("HOME", self.home.path())
            .env("XDG_CONFIG_HOME", self.home.path().join("xdg"))
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .current_dir(self.home.path())
            .stdin(Stdio::null())
            .output()
            .unwrap();
        Ran {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    fn write(&self, name: &str, body: &str) -> String {
        let p = self.home.path().join(name);
        std::fs::write(&p, body).unwrap();
        p.display().to_string()
    }

    /// `runs show --json` until the run reaches `status` (the worker finishes asynchronously).
    fn await_status(&self, run: &str, status: &str) -> Value {
        let t0 = Instant::now();
        loop {
            let v = self.baton(&["runs", "show", run, "--json"]).ok().json();
            if v["status"] == status {
                return v;
            }
            assert!(t0.elapsed() < Duration::from_secs(15), "run {run} never became {status}: {v}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

fn orders_workflow() -> String {
    json!({
        "id": "orders", "name": "Orders", "status": "active",
        "inputSchema": {"type": "object", "required": ["amount"], "properties": {"amount": {"type": "number"}}},
        "blocks": [
            {"id": "start", "type": "starter"},
            {"id": "price", "type": "transform", "config": {"mapping": {"total": "{{input.amount | times: 2}}"}}},
            {"id": "check", "type": "condition"},
            {"id": "review", "type": "human", "config": {"kind": "approval", "prompt": "Approve {{input.amount}}?"}},
            {"id": "done", "type": "response", "config": {"body": {"ok": true, "total": "{{steps.price.output.total}}"}}}
        ],
        "edges": [
            {"from": "start", "to": "price"}, {"from": "price", "to": "check"},
            {"from": "check", "to": "review", "when": "input.amount > 1000"},
            {"from": "check", "to": "done"}, {"from": "review", "to": "done"}
        ]
    })
    .to_string()
}

#[test]
fn a_session_logs_in_applies_runs_waits_for_a_person_and_approves() {
    let server = Server::start();
    let key = server.register("cli");
    let sh = Shell::new();

    let login = sh.baton(&["login", "--url", &server.url, "--api-key", &key]).ok();
    assert!(login.stdout.starts_with(&format!("logged in to {} as cli (acct_", server.url)), "{}", login.stdout);
    {
        use std::os::unix::fs::PermissionsExt;
        let meta = std::fs::metadata(sh.config_file()).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600, "the config file holds a key");
    }

    // From here on, the URL and key come from the config file.
    let wf = sh.write("orders.json", &orders_workflow());
    let applied = sh.baton(&["workflows", "apply", "-f", &wf]).ok();
    assert_eq!(applied.stdout.trim(), "created orders version 1 (active)");
    let again = sh.baton(&["workflows", "apply", "-f", &wf, "--json"]).ok().json();
    assert_eq!((again["id"].as_str(), again["version"].as_u64()), (Some("orders"), Some(2)), "{again}");
    let shown = sh.baton(&["workflows", "show", "orders"]).ok().stdout;
    assert!(
        shown.contains("version   2") && shown.lines().any(|l| l.starts_with("review") && l.ends_with("human")),
        "{shown}"
    );
    assert!(
        shown
            .lines()
            .any(|l| l.starts_with("check") && l.contains("review") && l.ends_with("when input.amount > 1000"))
    );
    let list = sh.baton(&["workflows", "list"]).ok();
    assert!(list.stdout.lines().any(|l| l.starts_with("orders") && l.contains("active")), "{}", list.stdout);

    // A large order stops at the reviewer: --wait returns with the task and its prompt.
    let waited = sh.baton(&["run", "orders", "--input", r#"{"amount": 5000}"#, "--wait"]).ok();
    assert!(waited.stdout.contains("Approve 5000?"), "{}", waited.stdout);
    assert!(waited.stderr.contains("waiting_human: 3/5 steps done, at review"), "{}", waited.stderr);
    let run = waited.stderr.lines().find_map(|l| l.strip_prefix("started ")).unwrap().to_string();
    assert!(waited.stdout.contains(&format!("baton tasks approve {run} task_")), "{}", waited.stdout);

    let tasks = sh.baton(&["tasks", "list", "--run", &run]).ok();
    assert!(tasks.stdout.lines().any(|l| l.contains("review") && l.contains("open") && l.contains("Approve 5000?")));
    let task_json = sh.baton(&["tasks", "list", "--run", &run, "--json"]).ok().json();
    let task = task_json["data"][0]["task_id"].as_str().unwrap().to_string();
    assert!(tasks.stdout.contains(&task));

    let approved = sh.baton(&["tasks", "approve", &run, &task, "--feedback", "fine"]).ok();
    assert!(approved.stdout.starts_with(&format!("task {task} answered; run {run} is ")), "{}", approved.stdout);
    let done = sh.await_status(&run, "completed");
    assert_eq!(done["output"], json!({"ok": true, "total": 10000}));

    // `runs show`: status, timing, each step with its duration, the last error.
    let show = sh.baton(&["runs", "show", &run]).ok().stdout;
    assert!(show.contains("status    completed"), "{show}");
    assert!(show.contains("workflow  orders (version 2)"), "{show}");
    assert!(show.lines().any(|l| l.starts_with("duration  ") && !l.contains("so far")), "{show}");
    for step in ["start", "price", "check", "review", "done"] {
        assert!(
            show.lines().any(|l| {
                // STEP BLOCK STATUS ATTEMPT DURATION: a measured duration such as `3ms` or `1.20s`.
                let cols: Vec<&str> = l.split_whitespace().collect();
                cols.len() == 5 && cols[0] == step && cols[2] == "completed" && cols[4].ends_with('s')
            }),
            "no line for step {step}:\n{show}"
        );
    }
    assert!(show.trim_end().ends_with("last error: none"), "{show}");

    let events = sh.baton(&["runs", "events", &run, "--json"]).ok().json();
    let types: Vec<&str> = events["data"].as_array().unwrap().iter().filter_map(|e| e["type"].as_str()).collect();
    assert_eq!(types.first(), Some(&"run.started"));
    assert_eq!(types.last(), Some(&"run.completed"));
    assert!(types.contains(&"step.waiting"), "{types:?}");
    let table = sh.baton(&["runs", "events", &run]).ok().stdout;
    assert!(table.starts_with("AT ") && table.contains("run.completed"), "{table}");

    let runs = sh.baton(&["runs", "list", "--status", "completed", "--json"]).ok().json();
    assert!(runs["data"].as_array().unwrap().iter().any(|r| r["run_id"] == run.as_str()), "{runs}");

    // A small order never waits: --wait prints its output and exits 0.
    let small = sh.baton(&["run", "orders", "--input", r#"{"amount": 10}"#, "--wait"]).ok();
    assert_eq!(serde_json::from_str::<Value>(&small.stdout).unwrap(), json!({"ok": true, "total": 20}));
    assert!(small.stderr.contains("completed in "), "{}", small.stderr);

    // Without --wait: only the run id; the input from a file.
    let input = sh.write("input.json", r#"{"amount": 3}"#);
    let started = sh.baton(&["run", "orders", "--input", &format!("@{input}")]).ok();
    assert!(started.stdout.trim().starts_with("run_") && started.stdout.trim().lines().count() == 1);
    sh.await_status(started.stdout.trim(), "completed");
}

#[test]
fn a_rejected_approval_fails_the_run_and_cancel_of_an_ended_run_is_an_api_error() {
    let server = Server::start();
    let sh = Shell::new().with_env("BATON_URL", &server.url).with_env("BATON_API_KEY", &server.register("rej"));
    sh.baton(&["workflows", "apply", "-f", &sh.write("orders.json", &orders_workflow())]).ok();
    let started = sh.baton(&["run", "orders", "--input", r#"{"amount": 5000}"#, "--wait", "--json"]).ok().json();
    assert_eq!(started["status"], "waiting_human");
    let run = started["run_id"].as_str().unwrap();
    let task = started["tasks"][0]["task_id"].as_str().unwrap();
    sh.baton(&["tasks", "reject", run, task, "--feedback", "too much"]).ok();
    sh.await_status(run, "failed");
    let show = sh.baton(&["runs", "show", run]).ok().stdout;
    assert!(
        show.trim_end().ends_with("last error: step review: REJECTED: rejected by the reviewer: too much"),
        "{show}"
    );
    let cancel = sh.baton(&["runs", "cancel", run]);
    assert_eq!(cancel.code, 1);
    assert!(cancel.stderr.starts_with("error: ") && cancel.stderr.contains("already failed"), "{}", cancel.stderr);
}

#[test]
fn a_question_is_answered_and_its_answer_becomes_the_output() {
    let server = Server::start();
    let sh = Shell::new().with_env("BATON_URL", &server.url).with_env("BATON_API_KEY", &server.register("q"));
    let wf = json!({"id": "ask", "status": "active",
        "blocks": [{"id": "start", "type": "starter"},
                   {"id": "q", "type": "human", "config": {"kind": "question", "prompt": "Name for {{input.who}}?"}},
                   {"id": "out", "type": "response", "config": {"body": {"name": "{{steps.q.output}}"}}}],
        "edges": [{"from": "start", "to": "q"}, {"from": "q", "to": "out"}]});
    sh.baton(&["workflows", "apply", "-f", &sh.write("ask.json", &wf.to_string())]).ok();
    let waited = sh.baton(&["run", "ask", "--input", r#"{"who": "the cat"}"#, "--wait"]).ok();
    assert!(waited.stdout.contains("Name for the cat?") && waited.stdout.contains("--text"), "{}", waited.stdout);
    let run = waited.stderr.lines().find_map(|l| l.strip_prefix("started ")).unwrap().to_string();
    let task = sh.baton(&["tasks", "list", "--run", &run, "--json"]).ok().json()["data"][0]["task_id"]
        .as_str()
        .unwrap()
        .to_string();
    sh.baton(&["tasks", "answer", &run, &task, "--text", "Tom"]).ok();
    assert_eq!(sh.await_status(&run, "completed")["output"], json!({"name": "Tom"}));
}

#[test]
fn a_failed_run_under_wait_prints_its_error_and_exits_1() {
    let server = Server::start();
    let sh = Shell::new().with_env("BATON_URL", &server.url).with_env("BATON_API_KEY", &server.register("f"));
    let wf = json!({"id": "bad", "status": "active",
        "blocks": [{"id": "s", "type": "starter"}, {"id": "c", "type": "code", "config": {"code": "throw new Error('nope')"}}],
        "edges": [{"from": "s", "to": "c"}]});
    sh.baton(&["workflows", "apply", "-f", &sh.write("bad.json", &wf.to_string())]).ok();
    let r = sh.baton(&["run", "bad", "--wait"]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(r.stderr.contains("failed: step c: CODE_ERROR: Error: nope"), "{}", r.stderr);
    assert!(r.stdout.is_empty(), "{}", r.stdout);

    // A redrive runs the failed step again (and here it fails again).
    let run = r.stderr.lines().find_map(|l| l.strip_prefix("started ")).unwrap().to_string();
    let redriven = sh.baton(&["runs", "redrive", &run]).ok();
    assert!(redriven.stdout.starts_with(&format!("run {run} redriven: ")), "{}", redriven.stdout);
    let t0 = Instant::now();
    loop {
        let events = sh.baton(&["runs", "events", &run, "--json"]).ok().json();
        let types: Vec<&str> = events["data"].as_array().unwrap().iter().filter_map(|e| e["type"].as_str()).collect();
        let failures = types.iter().filter(|t| **t == "run.failed").count();
        if types.contains(&"run.redriven") && failures == 2 {
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(15), "the redriven run never failed again: {types:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn errors_exit_1_with_the_server_message_and_usage_mistakes_exit_2() {
    let server = Server::start();
    let key = server.register("errs");
    let sh = Shell::new().with_env("BATON_URL", &server.url).with_env("BATON_API_KEY", &key);

    let missing = sh.baton(&["runs", "show", "run_nope"]);
    assert_eq!(missing.code, 1);
    assert_eq!(missing.stderr.trim(), "error: run run_nope not found");
    let json = sh.baton(&["runs", "show", "run_nope", "--json"]);
    assert_eq!((json.code, json.stdout.as_str()), (1, ""), "an error prints no JSON on stdout");

    let bad_flag = sh.baton(&["runs", "list", "--bogus"]);
    assert_eq!(bad_flag.code, 2, "{}", bad_flag.stderr);
    assert!(bad_flag.stderr.contains("--bogus"));
    assert_eq!(sh.baton(&["run", "orders", "--input", "{not json"]).code, 2);
    assert_eq!(sh.baton(&["frobnicate"]).code, 2);

    let invalid = sh.baton(&[
        "workflows",
        "apply",
        "-f",
        &sh.write("w.json", r#"{"id": "w", "blocks": [{"id": "a", "type": "nope"}]}"#),
    ]);
    assert_eq!(invalid.code, 1);
    assert!(invalid.stderr.starts_with("error: ") && invalid.stderr.contains("\n  at "), "{}", invalid.stderr);

    let nobody =
        Shell::new().with_env("BATON_URL", &format!("http://127.0.0.1:{}", free_port())).with_env("BATON_API_KEY", "k");
    let refused = nobody.baton(&["workflows", "list"]);
    assert_eq!(refused.code, 1);
    assert!(refused.stderr.contains("connection refused"), "{}", refused.stderr);

    let no_key = Shell::new().with_env("BATON_URL", &server.url).baton(&["runs", "list"]);
    assert_eq!(no_key.code, 2);
    assert!(no_key.stderr.contains("no API key"), "{}", no_key.stderr);
}

#[test]
fn the_flag_wins_over_the_environment_which_wins_over_the_config_file() {
    let server = Server::start();
    let key = server.register("prec");
    let sh = Shell::new();
    sh.baton(&["login", "--url", &server.url, "--api-key", &key]).ok();
    sh.baton(&["workflows", "list"]).ok();

    let env_wrong = Shell { home: sh.home, env: vec![("BATON_API_KEY".into(), "bk_wrong".into())] };
    let r = env_wrong.baton(&["workflows", "list"]);
    assert_eq!(r.code, 1, "the environment's wrong key must be used over the file's: {}", r.stderr);
    assert!(r.stderr.starts_with("error: "), "{}", r.stderr);
    env_wrong.baton(&["workflows", "list", "--api-key", &key]).ok();
}

#[test]
fn triggers_create_gives_a_url_that_starts_runs_and_hooks_sign_matches_openssl() {
    let server = Server::start();
    let sh = Shell::new().with_env("BATON_URL", &server.url).with_env("BATON_API_KEY", &server.register("trg"));
    sh.baton(&["workflows", "apply", "-f", &sh.write("orders.json", &orders_workflow())]).ok();
    let created = sh.baton(&["triggers", "create", "orders", "--name", "ci"]).ok().stdout;
    let url = created.lines().find_map(|l| l.strip_prefix("url")).unwrap().trim().to_string();
    let (status, run) = server.post(&url, &json!({"amount": 7}));
    assert_eq!(status, 201, "{run}");
    sh.await_status(run["run_id"].as_str().unwrap(), "completed");
    let listed = sh.baton(&["triggers", "list", "orders", "--json"]).ok().json();
    assert_eq!(listed["data"][0]["name"], "ci");

    let body = r#"{"name": "Linus", "n": 1}"#;
    let file = sh.write("body.json", body);
    let signed = sh.baton(&["hooks", "sign", "--secret", "shop-signing-secret", "--body", &format!("@{file}")]).ok();
    let openssl = Command::new("openssl")
        .args(["dgst", "-sha256", "-hmac", "shop-signing-secret", &file])
        .output()
        .expect("openssl is installed (infra/test-all.sh)");
    let openssl = String::from_utf8(openssl.stdout).unwrap();
    let hex = openssl.trim().rsplit(' ').next().unwrap();
    assert_eq!(signed.stdout.trim(), format!("X-Signature-256: sha256={hex}"));
    let literal = sh.baton(&["hooks", "sign", "--secret", "shop-signing-secret", "--body", body]).ok();
    assert_eq!(literal.stdout, signed.stdout, "a literal body signs the same bytes as the file");
}

//! End-to-end test helpers: start the real `baton-local` binary on a loopback port with a
//! throw-away database, talk to it over HTTP, and stop it again.
//!
//! The binary is found through, in order: `BATON_LOCAL_BIN`, `<target>/release/baton-local`,
//! `<target>/debug/baton-local` (`<target>` is `CARGO_TARGET_DIR` or the workspace's
//! `target/`). When none exists it is built once with `cargo build -p baton-local`.

pub mod cost;
pub mod moto;

use serde_json::{Value, json};
use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};
use tempfile::TempDir;

/// How long a fresh server gets to answer `GET /api/v1/health`.
pub const HEALTH_TIMEOUT: Duration = Duration::from_secs(10);

/// The workspace root (the parent of this crate).
pub fn workspace_root() -> PathBuf {
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    here.parent().unwrap_or(here).to_path_buf()
}

/// `CARGO_TARGET_DIR`, or the workspace's `target/`.
pub fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(d) if !d.is_empty() => {
            let d = PathBuf::from(d);
            if d.is_absolute() { d } else { workspace_root().join(d) }
        }
        _ => workspace_root().join("target"),
    }
}

/// Path of the `baton-local` binary to test (see the module docs). Panics with a clear
/// message when it can be neither found nor built.
pub fn server_binary() -> PathBuf {
    static BIN: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    match BIN.get_or_init(find_or_build_binary) {
        Ok(p) => p.clone(),
        Err(e) => panic!("{e}"),
    }
}

fn find_or_build_binary() -> Result<PathBuf, String> {
    if let Some(p) = std::env::var_os("BATON_LOCAL_BIN").filter(|p| !p.is_empty()) {
        let p = PathBuf::from(p);
        let p = if p.is_absolute() { p } else { std::env::current_dir().map(|d| d.join(&p)).unwrap_or(p) };
        return if p.is_file() {
            Ok(p)
        } else {
            Err(format!(
                "BATON_LOCAL_BIN={} does not name a file; build it with `cargo build --release -p baton-local` or unset the variable",
                p.display()
            ))
        };
    }
    let target = target_dir();
    for profile in ["release", "debug"] {
        let p = target.join(profile).join("baton-local");
        if p.is_file() {
            return Ok(p);
        }
    }
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    eprintln!("baton-local not found under {}; building it with `cargo build -p baton-local`", target.display());
    let status = Command::new(&cargo)
        .args(["build", "-p", "baton-local"])
        .current_dir(workspace_root())
        .status()
        .map_err(|e| format!("baton-local is not built and `cargo build -p baton-local` could not run ({e}); build it first or set BATON_LOCAL_BIN"))?;
    let p = target.join("debug").join("baton-local");
    if status.success() && p.is_file() {
        Ok(p)
    } else {
        Err(format!(
            "baton-local is not built and `cargo build -p baton-local` failed ({status}); build it first or set BATON_LOCAL_BIN"
        ))
    }
}

/// A loopback port nothing listens on right now.
pub fn free_port() -> u16 {
    let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind an ephemeral loopback port");
    l.local_addr().expect("local address").port()
}

/// How to start a server; `None` leaves the binary's default.
#[derive(Debug, Clone, Default)]
pub struct ServerOptions {
    pub workers: Option<usize>,
    pub lease_secs: Option<u64>,
    pub rate_limit: Option<u64>,
    /// Any further command-line arguments.
    pub args: Vec<String>,
    /// Binary to run instead of [`server_binary`].
    pub binary: Option<PathBuf>,
    /// Environment variables set for the server (after the `BATON_*` ones are cleared).
    pub env: Vec<(String, String)>,
}

impl ServerOptions {
    pub fn workers(mut self, n: usize) -> Self {
        self.workers = Some(n);
        self
    }
    pub fn lease_secs(mut self, s: u64) -> Self {
        self.lease_secs = Some(s);
        self
    }
    pub fn rate_limit(mut self, per_minute: u64) -> Self {
        self.rate_limit = Some(per_minute);
        self
    }
    pub fn arg(mut self, a: &str) -> Self {
        self.args.push(a.to_string());
        self
    }
    pub fn binary(mut self, path: impl Into<PathBuf>) -> Self {
        self.binary = Some(path.into());
        self
    }
    pub fn env(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.push((name.into(), value.into()));
        self
    }
}

/// A directory holding a server's database and logs; shared by the restarts of one server.
#[derive(Debug)]
pub struct DataDir {
    dir: TempDir,
    starts: AtomicUsize,
}

impl DataDir {
    pub fn new() -> Arc<Self> {
        let dir = tempfile::Builder::new().prefix("baton-e2e-").tempdir().expect("create a temporary directory");
        Arc::new(Self { dir, starts: AtomicUsize::new(0) })
    }
    pub fn path(&self) -> &Path {
        self.dir.path()
    }
    pub fn db(&self) -> PathBuf {
        self.dir.path().join("baton.db")
    }
}

/// A running `baton-local` child process. Dropping it kills the process (by its PID).
#[derive(Debug)]
pub struct Server {
    child: Option<Child>,
    pid: u32,
    addr: SocketAddr,
    data: Arc<DataDir>,
    log: PathBuf,
    options: ServerOptions,
    /// From spawn to the first successful `GET /api/v1/health`.
    pub startup: Duration,
}

impl Server {
    /// Starts a server on a fresh temporary database and waits until it is healthy.
    pub fn start(options: ServerOptions) -> Server {
        Self::start_in(DataDir::new(), options)
    }

    /// Starts a server on `data`'s database (e.g. the one a killed server left behind).
    pub fn start_in(data: Arc<DataDir>, options: ServerOptions) -> Server {
        // A port picked here can be taken by someone else before the server binds it;
        // try a few.
        let mut last_err = String::new();
        for _ in 0..5 {
            match Self::try_start(data.clone(), options.clone()) {
                Ok(s) => return s,
                Err(e) => last_err = e,
            }
        }
        panic!("{last_err}");
    }

    fn try_start(data: Arc<DataDir>, options: ServerOptions) -> Result<Server, String> {
        let bin = options.binary.clone().unwrap_or_else(server_binary);
        // The child runs in the data directory: a relative path is relative to us.
        let bin = if bin.is_relative() { std::env::current_dir().map(|d| d.join(&bin)).unwrap_or(bin) } else { bin };
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, free_port()));
        let n = data.starts.fetch_add(1, Ordering::SeqCst) + 1;
        let log = data.path().join(format!("server-{n}.log"));
        let out = std::fs::File::create(&log).map_err(|e| format!("create {}: {e}", log.display()))?;
        let err = out.try_clone().map_err(|e| format!("clone log file handle: {e}"))?;
        let mut cmd = Command::new(&bin);
        cmd.arg("--addr").arg(addr.to_string()).arg("--db").arg(data.db());
        if let Some(w) = options.workers {
            cmd.arg("--workers").arg(w.to_string());
        }
        if let Some(l) = options.lease_secs {
            cmd.arg("--lease-secs").arg(l.to_string());
        }
        if let Some(r) = options.rate_limit {
            cmd.arg("--rate-limit").arg(r.to_string());
        }
        cmd.args(&options.args);
        for var in [
            "BATON_ADDR",
            "BATON_DB",
            "BATON_WORKERS",
            "BATON_LEASE_SECS",
            "BATON_RATE_LIMIT",
            "BATON_REGISTER_LIMIT",
            "BATON_TRUSTED_PROXY_HOPS",
            "BATON_HEADER_TIMEOUT_SECS",
            "BATON_BODY_TIMEOUT_SECS",
            "BATON_MAX_CONNECTIONS_PER_ADDR",
            "BATON_BACKEND",
            "BATON_ALLOW_PRIVATE_TARGETS",
            "BATON_CALLBACK_BACKOFF_MS",
            "BATON_CALLBACK_WINDOW_SECS",
            "BATON_CALLBACK_TIMEOUT_MS",
        ] {
            cmd.env_remove(var);
        }
        cmd.envs(options.env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        cmd.env("NO_COLOR", "1")
            .current_dir(data.path())
            .stdin(Stdio::null())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err));
        let t0 = Instant::now();
        let child = cmd.spawn().map_err(|e| format!("cannot start {}: {e}", bin.display()))?;
        let pid = child.id();
        let mut server = Server { child: Some(child), pid, addr, data, log, options, startup: Duration::ZERO };
        match server.wait_healthy(t0) {
            Ok(()) => {
                server.startup = t0.elapsed();
                Ok(server)
            }
            Err(e) => Err(format!("{e}\n--- {} ---\n{}", server.log.display(), server.log_tail(60))),
        }
    }

    fn wait_healthy(&mut self, t0: Instant) -> Result<(), String> {
        loop {
            if health_ok(self.addr) {
                return Ok(());
            }
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                self.child = None;
                return Err(format!("baton-local exited before answering /api/v1/health: {status}"));
            }
            if t0.elapsed() > HEALTH_TIMEOUT {
                return Err(format!(
                    "baton-local did not answer GET http://{}/api/v1/health within {HEALTH_TIMEOUT:?}",
                    self.addr
                ));
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
    /// `http://127.0.0.1:<port>`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }
    pub fn data(&self) -> Arc<DataDir> {
        self.data.clone()
    }
    pub fn options(&self) -> &ServerOptions {
        &self.options
    }
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// The last `lines` lines of this server's log.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// SIGKILL (by PID) and reap.
    pub fn kill(&mut self) -> Option<ExitStatus> {
        let mut child = self.child.take()?;
        let _ = child.kill();
        child.wait().ok()
    }

    /// SIGTERM (by PID) and wait up to `timeout` for the process to exit. `None` if it
    /// is still running then (it is killed when dropped).
    pub fn terminate(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let child = self.child.as_mut()?;
        let sent = Command::new("kill")
            .arg("-TERM")
            .arg(self.pid.to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        assert!(sent, "could not send SIGTERM to {}", self.pid);
        let t0 = Instant::now();
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                self.child = None;
                return Some(status);
            }
            if t0.elapsed() > timeout {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Starts a new server process on the same database (a new port), with the same options.
    pub fn restart(&self) -> Server {
        Server::start_in(self.data.clone(), self.options.clone())
    }

    /// `VmHWM` (peak resident set) and `VmRSS` of the process in bytes, from /proc.
    pub fn memory(&self) -> Option<(u64, u64)> {
        proc_memory(self.pid)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let running = self.child.is_some();
        self.kill();
        if running && std::thread::panicking() {
            eprintln!("--- last lines of {} ---\n{}", self.log.display(), self.log_tail(40));
        }
    }
}

/// One blocking `GET /api/v1/health`; true on a 200.
pub fn health_ok(addr: SocketAddr) -> bool {
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
    let _ = s.set_nodelay(true);
    let req = format!("GET /api/v1/health HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    if s.write_all(req.as_bytes()).is_err() {
        return false;
    }
    let mut buf = [0u8; 12];
    let mut got = 0;
    while got < buf.len() {
        match s.read(&mut buf[got..]) {
            Ok(0) | Err(_) => return false,
            Ok(n) => got += n,
        }
    }
    buf.starts_with(b"HTTP/1.1 200")
}

/// `VmHWM` and `VmRSS` of a process in bytes.
pub fn proc_memory(pid: u32) -> Option<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| -> Option<u64> {
        let line = status.lines().find(|l| l.starts_with(name))?;
        let kb: u64 = line[name.len()..].trim().trim_end_matches("kB").trim().parse().ok()?;
        Some(kb * 1024)
    };
    Some((field("VmHWM:")?, field("VmRSS:")?))
}

/// A keep-alive HTTP client for one server and (after [`Api::register`]) one account.
#[derive(Debug, Clone)]
pub struct Api {
    http: reqwest::Client,
    base: String,
    key: Option<String>,
}

/// Status and JSON body of a response (`Value::Null` when the body is not JSON).
pub type Reply = (u16, Value);

impl Api {
    pub fn new(base: impl Into<String>) -> Self {
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(256)
            .tcp_nodelay(true)
            .timeout(Duration::from_secs(60))
            .build()
            .expect("build the HTTP client");
        Api { http, base: base.into(), key: None }
    }

    pub fn for_server(server: &Server) -> Self {
        Self::new(server.base_url())
    }

    /// The same account against another server (e.g. after a restart on the same DB).
    pub fn with_base(&self, base: impl Into<String>) -> Self {
        let mut a = Api::new(base);
        a.key = self.key.clone();
        a
    }

    pub fn with_key(mut self, key: impl Into<String>) -> Self {
        self.key = Some(key.into());
        self
    }

    pub fn key(&self) -> Option<&str> {
        self.key.as_deref()
    }

    /// `POST /auth/register`, remembering the API key.
    pub async fn register(&mut self, name: &str) -> Result<Value, String> {
        let (code, body) = self.post("/auth/register", &json!({"name": name})).await?;
        if code != 201 {
            return Err(format!("register: {code} {body}"));
        }
        let key = match &body["api_key"] {
            Value::String(s) => s.clone(),
            Value::Object(o) => o
                .get("key")
                .or_else(|| o.get("secret"))
                .and_then(Value::as_str)
                .ok_or_else(|| format!("register: no key in {body}"))?
                .to_string(),
            _ => return Err(format!("register: no api_key in {body}")),
        };
        self.key = Some(key);
        Ok(body)
    }

    fn url(&self, path: &str) -> String {
        format!("{}/api/v1{path}", self.base)
    }

    async fn send(&self, rb: reqwest::RequestBuilder) -> Result<Reply, String> {
        let rb = match &self.key {
            Some(k) => rb.header("X-API-Key", k),
            None => rb,
        };
        let resp = rb.send().await.map_err(|e| format!("request failed: {e}"))?;
        let code = resp.status().as_u16();
        let bytes = resp.bytes().await.map_err(|e| format!("reading the body failed: {e}"))?;
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Ok((code, body))
    }

    pub async fn get(&self, path: &str) -> Result<Reply, String> {
        self.send(self.http.get(self.url(path))).await
    }

    pub async fn post(&self, path: &str, body: &Value) -> Result<Reply, String> {
        self.send(self.http.post(self.url(path)).json(body)).await
    }

    pub async fn patch(&self, path: &str, body: &Value) -> Result<Reply, String> {
        self.send(self.http.patch(self.url(path)).json(body)).await
    }

    pub async fn delete(&self, path: &str) -> Result<Reply, String> {
        self.send(self.http.delete(self.url(path))).await
    }

    /// `POST /workflows`, expecting 201.
    pub async fn create_workflow(&self, wf: &Value) -> Result<Value, String> {
        match self.post("/workflows", wf).await? {
            (201, body) => Ok(body),
            (code, body) => Err(format!("create workflow: {code} {body}")),
        }
    }

    /// `POST /workflows/{id}/run`; the reply as is.
    pub async fn start_run(&self, workflow: &str, input: &Value) -> Result<Reply, String> {
        self.post(&format!("/workflows/{workflow}/run"), &json!({"input": input})).await
    }

    /// `POST /workflows/{id}/execute`; the reply as is.
    pub async fn execute(&self, workflow: &str, input: &Value) -> Result<Reply, String> {
        self.post(&format!("/workflows/{workflow}/execute"), &json!({"input": input})).await
    }

    /// `GET /runs/{id}`, expecting 200.
    pub async fn run(&self, run_id: &str) -> Result<Value, String> {
        match self.get(&format!("/runs/{run_id}")).await? {
            (200, body) => Ok(body),
            (code, body) => Err(format!("GET /runs/{run_id}: {code} {body}")),
        }
    }

    /// Every event of a run, following `next_cursor`.
    pub async fn run_events(&self, run_id: &str) -> Result<Vec<Value>, String> {
        let mut all = Vec::new();
        let mut cursor: Option<String> = None;
        for _ in 0..1000 {
            let mut path = format!("/runs/{run_id}/events?limit=100");
            if let Some(c) = &cursor {
                let _ = write!(path, "&cursor={}", encode_query(c));
            }
            let (code, body) = self.get(&path).await?;
            if code != 200 {
                return Err(format!("GET {path}: {code} {body}"));
            }
            all.extend(body["data"].as_array().cloned().unwrap_or_default());
            match body["next_cursor"].as_str() {
                Some(c) if !c.is_empty() => cursor = Some(c.to_string()),
                _ => return Ok(all),
            }
        }
        Err(format!("events of {run_id}: more than 1000 pages"))
    }

    /// Every run of this account (`GET /runs`, newest first, following `next_cursor`),
    /// optionally filtered by status.
    pub async fn list_runs(&self, status: Option<&str>) -> Result<Vec<Value>, String> {
        let mut all = Vec::new();
        let mut cursor: Option<String> = None;
        for _ in 0..100_000 {
            let mut path = "/runs?limit=100".to_string();
            if let Some(s) = status {
                let _ = write!(path, "&status={s}");
            }
            if let Some(c) = &cursor {
                let _ = write!(path, "&cursor={}", encode_query(c));
            }
            let (code, body) = self.get(&path).await?;
            if code != 200 {
                return Err(format!("GET {path}: {code} {body}"));
            }
            all.extend(body["data"].as_array().cloned().unwrap_or_default());
            match body["next_cursor"].as_str() {
                Some(c) if !c.is_empty() => cursor = Some(c.to_string()),
                _ => return Ok(all),
            }
        }
        Err("listing runs: too many pages".into())
    }
}

/// Percent-encodes everything but unreserved characters (for cursors in query strings).
pub fn encode_query(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// A linear workflow of `blocks` blocks: a starter, then `blocks - 1` transforms that each
/// add 1 to `n`. Input `{"n": k}` → output `{"n": k + blocks - 1}`.
pub fn transform_chain(id: &str, blocks: usize) -> Value {
    assert!(blocks >= 2, "a transform chain needs a starter and at least one transform");
    let mut steps = vec![json!({"id": "start", "type": "starter"})];
    let mut prev: Option<String> = None;
    for i in 1..blocks {
        let id = format!("t{i}");
        let source = match &prev {
            None => "input.n".to_string(),
            Some(p) => format!("steps.{p}.output.n"),
        };
        steps.push(json!({
            "id": id,
            "type": "transform",
            "config": {"mapping": {"n": format!("{{{{{source} | plus: 1}}}}")}},
        }));
        prev = Some(id);
    }
    json!({"id": id, "name": format!("{blocks}-block transform chain"), "status": "active", "steps": steps})
}

/// Step keys of [`transform_chain`]: `start`, `t1`, ... .
pub fn transform_chain_steps(blocks: usize) -> Vec<String> {
    std::iter::once("start".to_string()).chain((1..blocks).map(|i| format!("t{i}"))).collect()
}

/// Starts runs `input = {"n": i}` for `i in 0..count` over `concurrency` keep-alive
/// connections. Returns `(i, reply)` in order of `i`.
pub async fn start_many(
    api: &Api,
    workflow: &str,
    count: usize,
    concurrency: usize,
) -> Vec<(usize, Result<Reply, String>)> {
    let next = Arc::new(AtomicUsize::new(0));
    let results = Arc::new(Mutex::new(Vec::with_capacity(count)));
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..concurrency.max(1) {
        let api = api.clone();
        let next = next.clone();
        let results = results.clone();
        let workflow = workflow.to_string();
        set.spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= count {
                    return;
                }
                let r = api.start_run(&workflow, &json!({"n": i})).await;
                results.lock().unwrap().push((i, r));
            }
        });
    }
    while set.join_next().await.is_some() {}
    let mut out = std::mem::take(&mut *results.lock().unwrap());
    out.sort_by_key(|(i, _)| *i);
    out
}

/// Milliseconds since the Unix epoch of an RFC 3339 UTC timestamp as the API writes them
/// (`2026-01-02T03:04:05.678Z`; offsets other than `Z` and fractions other than 0–9 digits
/// are accepted).
pub fn parse_rfc3339_ms(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() < 20
        || b[4] != b'-'
        || b[7] != b'-'
        || !matches!(b[10], b'T' | b't' | b' ')
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> { s.get(r)?.parse().ok() };
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, se) = (num(11..13)?, num(14..16)?, num(17..19)?);
    let mut rest = &s[19..];
    let mut ms = 0i64;
    if let Some(frac) = rest.strip_prefix('.') {
        let digits = frac.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        let f = &frac[..digits];
        let padded = format!("{:0<3}", &f[..f.len().min(3)]);
        ms = padded.parse().ok()?;
        rest = &frac[digits..];
    }
    let offset_min = match rest {
        "Z" | "z" => 0,
        o if o.len() == 6 && (o.starts_with('+') || o.starts_with('-')) => {
            let oh: i64 = o[1..3].parse().ok()?;
            let om: i64 = o[4..6].parse().ok()?;
            let v = oh * 60 + om;
            if o.starts_with('-') { -v } else { v }
        }
        _ => return None,
    };
    // Days from the civil date (proleptic Gregorian), after Howard Hinnant's algorithm.
    let y = if mo <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (mo + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(((days * 24 + h) * 60 + mi - offset_min) * 60_000 + se * 1000 + ms)
}

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_api_timestamps() {
        assert_eq!(parse_rfc3339_ms("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(parse_rfc3339_ms("1970-01-01T00:00:01.5Z"), Some(1500));
        assert_eq!(parse_rfc3339_ms("2000-03-01T00:00:00.000Z"), Some(951_868_800_000));
        assert_eq!(parse_rfc3339_ms("2026-11-23T12:14:19.786Z"), Some(1_795_436_059_786));
        assert_eq!(parse_rfc3339_ms("2026-11-23T13:14:19.786+01:00"), Some(1_795_436_059_786));
        assert_eq!(parse_rfc3339_ms("yesterday"), None);
    }

    #[test]
    fn chain_shape() {
        let wf = transform_chain("w", 5);
        let steps = wf["steps"].as_array().unwrap();
        assert_eq!(steps.len(), 5);
        assert_eq!(steps[1]["config"]["mapping"]["n"], "{{input.n | plus: 1}}");
        assert_eq!(steps[4]["config"]["mapping"]["n"], "{{steps.t3.output.n | plus: 1}}");
        assert_eq!(transform_chain_steps(5), ["start", "t1", "t2", "t3", "t4"]);
    }

    #[test]
    fn query_encoding() {
        assert_eq!(encode_query("a+b/c=="), "a%2Bb%2Fc%3D%3D");
    }
}

//! What each command sends and prints. Reads print a table, or with `--json` the API's JSON
//! as it came; writes print one line saying what changed.

use crate::cli::{Cli, Command, HooksCmd, Page, RunArgs, RunsCmd, TasksCmd, TriggersCmd, WorkflowsCmd};
use crate::client::Client;
use crate::config::{self, Config, Settings};
use crate::error::{CliError, Result};
use crate::output::{self, cut, elapsed, error_line, table, text};
use serde_json::{Value, json};
use std::io::{IsTerminal, Read, Write};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// `run --wait` polls `GET /runs/{id}` this often at first, backing off to [`POLL_MAX`]:
/// short runs report at once, long ones do not hammer the server.
const POLL_MIN: Duration = Duration::from_millis(100);
const POLL_MAX: Duration = Duration::from_secs(2);

struct Ctx {
    settings: Settings,
    json: bool,
    config_path: Option<PathBuf>,
}

impl Ctx {
    /// A client for a command that needs an account.
    fn client(&self) -> Result<Client> {
        if self.settings.api_key.is_none() {
            return Err(CliError::usage("no API key: pass --api-key, set BATON_API_KEY or run `baton login`"));
        }
        Client::new(&self.settings.url, self.settings.api_key.clone())
    }

    /// `--json`: the API's answer as it came; else the human form.
    fn show(&self, v: &Value, human: impl FnOnce(&Value) -> String) {
        let s = if self.json { pretty(v) } else { human(v) };
        println!("{s}");
    }
}

pub async fn run(cli: Cli) -> Result<()> {
    let Cli { url, api_key, json, command } = cli;
    let is_login = matches!(command, Command::Login);
    // Only commands that talk to a server read the config file.
    let ctx = || -> Result<Ctx> {
        let env = |k: &str| std::env::var(k).ok();
        let config_path = config::path(&env);
        let file = match &config_path {
            // `login` rewrites the file, so a broken one must not stop it.
            Some(p) if is_login => config::load(p).unwrap_or(None),
            Some(p) => config::load(p)?,
            None => None,
        };
        let settings = config::resolve(url.as_deref(), api_key.as_deref(), &env, file.as_ref());
        Ok(Ctx { settings, json, config_path })
    };
    match command {
        Command::Hooks(HooksCmd::Sign { secret, body }) => {
            println!("{}", crate::sign::header_line(secret.as_bytes(), &read_source("--body", &body)?));
            Ok(())
        }
        Command::Login => login(&ctx()?).await,
        Command::Workflows(c) => workflows(&ctx()?, c).await,
        Command::Run(r) => start(&ctx()?, r).await,
        Command::Runs(c) => runs(&ctx()?, c).await,
        Command::Tasks(c) => tasks(&ctx()?, c).await,
        Command::Triggers(c) => triggers(&ctx()?, c).await,
    }
}

async fn login(ctx: &Ctx) -> Result<()> {
    let client = ctx.client()?;
    let path =
        ctx.config_path.clone().ok_or_else(|| CliError::usage("no config directory: set XDG_CONFIG_HOME or HOME"))?;
    // Checked before saving: a typo in the URL or key shows now, not at the next command.
    let who = match client.get(&["account"], &[]).await {
        Ok(a) => format!(" as {} ({})", text(&a["name"]), text(&a["id"])),
        // A valid key without the scope to read the account is still a valid key.
        Err(CliError::Api { status: 403, .. }) => String::new(),
        Err(e) => return Err(e),
    };
    let config = Config { url: Some(ctx.settings.url.clone()), api_key: ctx.settings.api_key.clone() };
    config::save(&path, &config)?;
    println!("logged in to {}{who}; saved {}", ctx.settings.url, path.display());
    Ok(())
}

async fn workflows(ctx: &Ctx, cmd: WorkflowsCmd) -> Result<()> {
    let client = ctx.client()?;
    match cmd {
        WorkflowsCmd::Apply { file } => {
            let wf = json_arg("-f", &format!("@{}", file.display()))?;
            if !wf.is_object() {
                return Err(CliError::usage(format!("{}: a workflow is a JSON object", file.display())));
            }
            let (created, v) = match wf["id"].as_str() {
                Some(id) => {
                    let (status, v) = client.put(&["workflows", id, "graph"], &wf).await?;
                    (status == 201, v)
                }
                None => (true, client.post(&["workflows"], Some(&wf)).await?),
            };
            let verb = if created { "created" } else { "updated" };
            ctx.show(&v, |v| {
                format!("{verb} {} version {} ({})", text(&v["id"]), text(&v["version"]), text(&v["status"]))
            });
        }
        WorkflowsCmd::List(page) => {
            let v = client.get(&["workflows"], &page_query(&page)).await?;
            ctx.show(&v, |v| {
                let rows = items(v)
                    .map(|w| {
                        vec![
                            text(&w["id"]),
                            text(&w["name"]),
                            text(&w["status"]),
                            text(&w["version"]),
                            text(&w["updated_at"]),
                        ]
                    })
                    .collect::<Vec<_>>();
                with_more(table(&["ID", "NAME", "STATUS", "VERSION", "UPDATED"], &rows), v)
            });
        }
        WorkflowsCmd::Show { id } => {
            let v = client.get(&["workflows", &id], &[]).await?;
            ctx.show(&v, |w| {
                let head = fields(&[
                    ("workflow", text(&w["id"])),
                    ("name", text(&w["name"])),
                    ("status", text(&w["status"])),
                    ("version", text(&w["version"])),
                    ("updated", text(&w["updated_at"])),
                ]);
                let blocks: Vec<Vec<String>> =
                    items_of(&w["blocks"]).map(|b| vec![text(&b["id"]), text(&b["type"])]).collect();
                let edges: Vec<Vec<String>> = items_of(&w["edges"])
                    .map(|e| {
                        let cond = match (&e["when"], &e["on"]) {
                            (Value::String(w), _) => format!("when {w}"),
                            (_, Value::String(on)) => format!("on {on}"),
                            _ => String::new(),
                        };
                        vec![text(&e["from"]), text(&e["to"]), cond]
                    })
                    .collect();
                format!("{head}\n\n{}\n\n{}", table(&["BLOCK", "TYPE"], &blocks), table(&["FROM", "TO", ""], &edges))
            });
        }
    }
    Ok(())
}

async fn start(ctx: &Ctx, r: RunArgs) -> Result<()> {
    let client = ctx.client()?;
    let mut body = json!({});
    if let Some(i) = &r.input {
        body["input"] = json_arg("--input", i)?;
    }
    if let Some(k) = &r.idempotency_key {
        body["idempotencyKey"] = json!(k);
    }
    let started = client.post(&["workflows", &r.workflow, "run"], Some(&body)).await?;
    let run_id = started["run_id"]
        .as_str()
        .ok_or_else(|| CliError::Protocol(format!("the start answer has no run_id: {started}")))?
        .to_string();
    if !r.wait {
        ctx.show(&started, |_| run_id.clone());
        return Ok(());
    }
    // The block count of the version just started, for "n of total"; the run itself
    // only lists the steps it has reached so far.
    let total = client.get(&["workflows", &r.workflow], &[]).await.ok().map(|w| block_count(&w));
    let deadline = r.timeout.map(|s| Instant::now() + Duration::from_secs(s));
    let mut meter = Meter::new(&run_id);
    let mut pause = POLL_MIN;
    let run = loop {
        let run = client.get(&["runs", &run_id], &[]).await?;
        let status = run["status"].as_str().unwrap_or_default();
        meter.show(&progress(&run, total));
        if matches!(status, "completed" | "failed" | "cancelled" | "waiting_human") {
            break run;
        }
        if deadline.is_some_and(|d| Instant::now() + pause > d) {
            meter.finish();
            return Err(CliError::RunEnded(format!(
                "run {run_id} is still {status} after {}s (it goes on; `baton runs show {run_id}`)",
                r.timeout.unwrap_or_default()
            )));
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 3 / 2).min(POLL_MAX);
    };
    meter.finish();
    let took = elapsed(&run["created_at"], &run["finished_at"], chrono::Utc::now());
    match run["status"].as_str().unwrap_or_default() {
        "completed" => {
            eprintln!("run {run_id} completed in {took}");
            ctx.show(&run, |r| pretty(&r["output"]));
            Ok(())
        }
        "waiting_human" => {
            ctx.show(&run, waiting_text);
            Ok(())
        }
        status => {
            if ctx.json {
                println!("{}", pretty(&run));
            }
            let why = error_line(&run["error"]).map(|e| format!(": {e}")).unwrap_or_default();
            Err(CliError::RunEnded(format!("run {run_id} {status}{why}")))
        }
    }
}

/// What `run --wait` prints when the run stops for a person: each open task, its prompt,
/// and the command that answers it.
fn waiting_text(run: &Value) -> String {
    let run_id = text(&run["run_id"]);
    let open: Vec<&Value> = items_of(&run["tasks"]).filter(|t| t["status"] == "open").collect();
    let mut out = Vec::new();
    for t in open {
        let task = text(&t["task_id"]);
        out.push(format!(
            "run {run_id} waits for a person: task {task} ({}) at step {}",
            text(&t["kind"]),
            text(&t["step_key"])
        ));
        out.push(text(&t["prompt"]));
        let how = if t["kind"] == "approval" {
            format!("baton tasks approve {run_id} {task}   (or reject)")
        } else {
            format!("baton tasks answer {run_id} {task} --text …")
        };
        out.push(format!("answer: {how}"));
    }
    if out.is_empty() {
        out.push(format!("run {run_id} waits for a person"));
    }
    out.join("\n")
}

/// How far a run is: steps finished of the workflow's blocks, and what runs now.
#[derive(Debug, PartialEq, Eq)]
pub struct Progress {
    pub status: String,
    pub done: usize,
    pub total: Option<usize>,
    pub current: Vec<String>,
}

impl std::fmt::Display for Progress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.total {
            Some(t) => write!(f, "{}: {}/{t} steps done", self.status, self.done)?,
            None => write!(f, "{}: {} steps done", self.status, self.done)?,
        }
        if !self.current.is_empty() {
            write!(f, ", at {}", self.current.join(", "))?;
        }
        Ok(())
    }
}

pub fn progress(run: &Value, blocks: Option<usize>) -> Progress {
    let steps: Vec<&Value> = items_of(&run["steps"]).collect();
    let finished = |s: &Value| matches!(s["status"].as_str(), Some("completed" | "failed" | "skipped" | "cancelled"));
    let done = steps.iter().filter(|s| finished(s)).count();
    let mut current: Vec<String> = Vec::new();
    for s in steps.iter().filter(|s| !finished(s)) {
        let b = text(&s["block_id"]);
        if !current.contains(&b) {
            current.push(b);
        }
    }
    // A split's items are steps too, so a run can have more steps than its graph has blocks.
    let total = blocks.map(|b| b.max(steps.len()));
    Progress { status: text(&run["status"]), done, total, current }
}

fn block_count(wf: &Value) -> usize {
    let n = |k: &str| wf[k].as_array().map_or(0, Vec::len);
    n("blocks").max(n("steps"))
}

/// The progress line on stderr: rewritten in place on a terminal, one line per change otherwise.
struct Meter {
    tty: bool,
    last: String,
}

impl Meter {
    fn new(run_id: &str) -> Meter {
        eprintln!("started {run_id}");
        Meter { tty: std::io::stderr().is_terminal(), last: String::new() }
    }

    fn show(&mut self, p: &Progress) {
        let line = p.to_string();
        if line == self.last {
            return;
        }
        let mut err = std::io::stderr().lock();
        // Progress is a courtesy: a closed stderr must not fail the command.
        let _ = if self.tty { write!(err, "\r\x1b[K{line}") } else { writeln!(err, "{line}") };
        let _ = err.flush();
        self.last = line;
    }

    fn finish(&mut self) {
        if self.tty && !self.last.is_empty() {
            eprintln!();
        }
    }
}

async fn runs(ctx: &Ctx, cmd: RunsCmd) -> Result<()> {
    let client = ctx.client()?;
    let now = chrono::Utc::now();
    match cmd {
        RunsCmd::List { status, workflow, page } => {
            let mut q = page_query(&page);
            q.push(("status", status));
            q.push(("workflow_id", workflow));
            let v = client.get(&["runs"], &q).await?;
            ctx.show(&v, |v| {
                let rows: Vec<Vec<String>> = items(v)
                    .map(|r| {
                        vec![
                            text(&r["run_id"]),
                            text(&r["workflow_id"]),
                            text(&r["status"]),
                            text(&r["created_at"]),
                            list_duration(r, now),
                        ]
                    })
                    .collect();
                with_more(table(&["RUN", "WORKFLOW", "STATUS", "CREATED", "DURATION"], &rows), v)
            });
        }
        RunsCmd::Show { run } => {
            let v = client.get(&["runs", &run], &[]).await?;
            ctx.show(&v, |r| run_text(r, now));
        }
        RunsCmd::Events { run, page } => {
            let v = client.get(&["runs", &run, "events"], &page_query(&page)).await?;
            ctx.show(&v, |v| {
                let rows: Vec<Vec<String>> = items(v)
                    .map(|e| vec![text(&e["at"]), text(&e["type"]), text(&e["step_key"]), text(&e["data"])])
                    .collect();
                with_more(table(&["AT", "TYPE", "STEP", "DATA"], &rows), v)
            });
        }
        RunsCmd::Cancel { run } => {
            let v = client.delete(&["runs", &run]).await?;
            ctx.show(&v, |r| format!("run {} {}", text(&r["run_id"]), text(&r["status"])));
        }
        RunsCmd::Redrive { run } => {
            let v = client.post(&["runs", &run, "redrive"], None).await?;
            ctx.show(&v, |r| format!("run {} redriven: {}", text(&r["run_id"]), text(&r["status"])));
        }
    }
    Ok(())
}

/// A listed run has no `finished_at`: a finished one was last updated when it finished.
fn list_duration(r: &Value, now: chrono::DateTime<chrono::Utc>) -> String {
    let end = match r["status"].as_str() {
        Some("completed" | "failed" | "cancelled") => {
            r.get("finished_at").filter(|f| !f.is_null()).unwrap_or(&r["updated_at"])
        }
        _ => &Value::Null,
    };
    elapsed(&r["created_at"], end, now)
}

/// `runs show`: seed 000's `debug:run` (status, timing), each step with its duration, the
/// tasks, and the last error.
pub fn run_text(r: &Value, now: chrono::DateTime<chrono::Utc>) -> String {
    let mut head = vec![
        ("run", text(&r["run_id"])),
        ("workflow", format!("{} (version {})", text(&r["workflow_id"]), text(&r["workflow_version"]))),
        ("status", text(&r["status"])),
        ("created", text(&r["created_at"])),
        ("finished", text(&r["finished_at"])),
        ("duration", elapsed(&r["created_at"], &r["finished_at"], now)),
        ("input", cut(&text(&r["input"]), 100)),
        ("output", cut(&text(&r["output"]), 100)),
    ];
    if let Some(p) = r["parent_run_id"].as_str() {
        head.push(("parent", format!("{p} (step {})", text(&r["parent_step_key"]))));
    }
    let steps: Vec<&Value> = items_of(&r["steps"]).collect();
    let rows: Vec<Vec<String>> = steps
        .iter()
        .map(|s| {
            let mut status = text(&s["status"]);
            if let Some(n) = s["items"]["expected"].as_u64() {
                status = format!("{status} ({}/{n} items)", s["items"]["completed"].as_u64().unwrap_or(0));
            }
            vec![
                text(&s["step_key"]),
                text(&s["block_id"]),
                status,
                text(&s["attempt"]),
                elapsed(&s["started_at"], &s["finished_at"], now),
                error_line(&s["error"]).unwrap_or_default(),
            ]
        })
        .collect();
    let mut out = fields(&head);
    out.push_str("\n\n");
    out.push_str(&table(&["STEP", "BLOCK", "STATUS", "ATTEMPT", "DURATION", "ERROR"], &rows));
    let tasks: Vec<Vec<String>> = items_of(&r["tasks"])
        .map(|t| {
            vec![text(&t["task_id"]), text(&t["step_key"]), text(&t["kind"]), text(&t["status"]), text(&t["prompt"])]
        })
        .collect();
    if !tasks.is_empty() {
        out.push_str("\n\n");
        out.push_str(&table(&["TASK", "STEP", "KIND", "STATUS", "PROMPT"], &tasks));
    }
    // The run's own error, else the latest step error (a step whose error edge was taken
    // fails without failing the run).
    let last = error_line(&r["error"]).or_else(|| {
        steps
            .iter()
            .filter(|s| !s["error"].is_null())
            .max_by_key(|s| s["finished_at"].as_str().unwrap_or_default().to_string())
            .and_then(|s| error_line(&s["error"]).map(|e| format!("step {}: {e}", text(&s["step_key"]))))
    });
    out.push_str(&format!("\n\nlast error: {}", last.unwrap_or_else(|| "none".into())));
    out
}

async fn tasks(ctx: &Ctx, cmd: TasksCmd) -> Result<()> {
    let client = ctx.client()?;
    let (run, task, answer) = match cmd {
        TasksCmd::List { run } => {
            let v = client.get(&["runs", &run, "tasks"], &[]).await?;
            ctx.show(&v, |v| {
                let rows: Vec<Vec<String>> = items(v)
                    .map(|t| {
                        vec![
                            text(&t["task_id"]),
                            text(&t["step_key"]),
                            text(&t["kind"]),
                            text(&t["status"]),
                            text(&t["prompt"]),
                        ]
                    })
                    .collect();
                with_more(table(&["TASK", "STEP", "KIND", "STATUS", "PROMPT"], &rows), v)
            });
            return Ok(());
        }
        TasksCmd::Answer { run, task, answer } => {
            let output = match (answer.output, answer.text) {
                (Some(o), _) => json_arg("--output", &o)?,
                (None, Some(t)) => json!(t),
                (None, None) => return Err(CliError::usage("give the answer with --output or --text")),
            };
            (run, task, json!({"output": output}))
        }
        TasksCmd::Approve { run, task, feedback } => (run, task, approval(true, feedback)),
        TasksCmd::Reject { run, task, feedback } => (run, task, approval(false, feedback)),
    };
    let v = client.post(&["runs", &run, "tasks", &task, "complete"], Some(&answer)).await?;
    ctx.show(&v, |r| format!("task {task} answered; run {} is {}", text(&r["run_id"]), text(&r["status"])));
    Ok(())
}

fn approval(approved: bool, feedback: Option<String>) -> Value {
    let mut a = json!({"approved": approved});
    if let Some(f) = feedback {
        a["feedback"] = json!(f);
    }
    a
}

async fn triggers(ctx: &Ctx, cmd: TriggersCmd) -> Result<()> {
    let client = ctx.client()?;
    match cmd {
        TriggersCmd::Create { workflow, name, callback_url } => {
            let mut body = json!({});
            if let Some(n) = name {
                body["name"] = json!(n);
            }
            if let Some(c) = callback_url {
                body["callback_url"] = json!(c);
            }
            let v = client.post(&["workflows", &workflow, "triggers"], Some(&body)).await?;
            ctx.show(&v, |t| {
                let f = fields(&[
                    ("trigger", text(&t["trigger_id"])),
                    ("url", text(&t["url"])),
                    ("token", text(&t["token"])),
                    ("enabled", text(&t["enabled"])),
                ]);
                format!("{f}\n(the token is shown once; POST the run input to the url)")
            });
        }
        TriggersCmd::List { workflow } => {
            let v = client.get(&["workflows", &workflow, "triggers"], &[]).await?;
            ctx.show(&v, |v| {
                let rows: Vec<Vec<String>> = items(v)
                    .map(|t| {
                        vec![text(&t["trigger_id"]), text(&t["name"]), text(&t["enabled"]), text(&t["created_at"])]
                    })
                    .collect();
                with_more(table(&["TRIGGER", "NAME", "ENABLED", "CREATED"], &rows), v)
            });
        }
    }
    Ok(())
}

fn page_query(p: &Page) -> Vec<(&'static str, Option<String>)> {
    vec![("limit", p.limit.map(|l| l.to_string())), ("cursor", p.cursor.clone())]
}

/// A page's `data`.
fn items(page: &Value) -> impl Iterator<Item = &Value> {
    items_of(&page["data"])
}

fn items_of(v: &Value) -> impl Iterator<Item = &Value> {
    v.as_array().into_iter().flatten()
}

fn with_more(table: String, page: &Value) -> String {
    match output::more_hint(page) {
        Some(h) => format!("{table}\n{h}"),
        None => table,
    }
}

/// `name  value` lines, the names aligned.
fn fields(rows: &[(&str, String)]) -> String {
    let w = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    rows.iter().map(|(k, v)| format!("{k:<w$}  {v}")).collect::<Vec<_>>().join("\n")
}

fn pretty(v: &Value) -> String {
    serde_json::to_string_pretty(v).unwrap_or_else(|_| v.to_string())
}

/// A value given on the command line: `@FILE` (`@-`: stdin) or the text itself.
pub fn read_source(flag: &str, arg: &str) -> Result<Vec<u8>> {
    match arg.strip_prefix('@') {
        Some("-") => {
            let mut buf = Vec::new();
            std::io::stdin().read_to_end(&mut buf).map_err(|e| CliError::io("stdin", e))?;
            Ok(buf)
        }
        Some(path) => std::fs::read(path).map_err(|e| CliError::usage(format!("{flag}: cannot read {path}: {e}"))),
        None => Ok(arg.as_bytes().to_vec()),
    }
}

/// A JSON value given on the command line (see [`read_source`]); not JSON is a usage error.
pub fn json_arg(flag: &str, arg: &str) -> Result<Value> {
    let bytes = read_source(flag, arg)?;
    serde_json::from_slice(&bytes).map_err(|e| {
        let from = arg.strip_prefix('@').map(|p| format!(" in {p}")).unwrap_or_default();
        CliError::usage(format!("{flag}: not valid JSON{from} ({e})"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(key: &str, block: &str, status: &str) -> Value {
        json!({"step_key": key, "block_id": block, "status": status, "attempt": 1, "error": null,
               "started_at": "2026-01-01T00:00:00Z", "finished_at": "2026-01-01T00:00:00.250Z"})
    }

    #[test]
    fn progress_counts_finished_steps_against_the_blocks_and_names_the_current_one() {
        let run = json!({"status": "running", "steps": [
            step("start", "start", "completed"), step("price", "price", "running"), step("x", "x", "skipped")]});
        let p = progress(&run, Some(5));
        assert_eq!(p, Progress { status: "running".into(), done: 2, total: Some(5), current: vec!["price".into()] });
        assert_eq!(p.to_string(), "running: 2/5 steps done, at price");
    }

    #[test]
    fn progress_never_shows_more_done_than_total_when_split_items_add_steps() {
        let run = json!({"status": "running", "steps": [
            step("s", "s", "completed"), step("each[0]", "each", "completed"), step("each[1]", "each", "pending"),
            step("each[2]", "each", "running")]});
        let p = progress(&run, Some(2));
        assert_eq!((p.done, p.total), (2, Some(4)));
        assert_eq!(p.current, vec!["each".to_string()], "one block named once");
        assert_eq!(progress(&run, None).to_string(), "running: 2 steps done, at each");
    }

    #[test]
    fn a_listed_run_lasts_until_its_last_update_once_finished() {
        let now = output::parse_time(&json!("2026-01-01T00:01:00Z")).unwrap();
        let done =
            json!({"status": "completed", "created_at": "2026-01-01T00:00:00Z", "updated_at": "2026-01-01T00:00:02Z"});
        assert_eq!(list_duration(&done, now), "2.00s");
        let open = json!({"status": "waiting_human", "created_at": "2026-01-01T00:00:00Z", "updated_at": "2026-01-01T00:00:02Z"});
        assert_eq!(list_duration(&open, now), "1m00s so far");
    }

    #[test]
    fn block_count_reads_a_graph_or_a_step_list() {
        assert_eq!(block_count(&json!({"blocks": [{}, {}, {}], "edges": []})), 3);
        assert_eq!(block_count(&json!({"steps": [{}, {}]})), 2);
        assert_eq!(block_count(&json!({})), 0);
    }

    #[test]
    fn run_text_shows_timing_each_step_and_the_last_error() {
        let now = chrono::Utc::now();
        let mut failed = step("charge", "charge", "failed");
        failed["error"] = json!({"code": "HTTP_500", "message": "upstream"});
        let run = json!({
            "run_id": "run_1", "workflow_id": "orders", "workflow_version": 2, "status": "failed",
            "input": {"a": 1}, "output": null,
            "error": {"step_key": "charge", "code": "HTTP_500", "message": "upstream"},
            "created_at": "2026-01-01T00:00:00Z", "finished_at": "2026-01-01T00:00:01.500Z",
            "steps": [step("start", "start", "completed"), failed], "tasks": []});
        let t = run_text(&run, now);
        assert!(t.contains("workflow  orders (version 2)"), "{t}");
        assert!(t.contains("duration  1.50s"), "{t}");
        assert!(t.lines().any(|l| l.starts_with("start") && l.contains("completed") && l.contains("250ms")), "{t}");
        assert!(t.lines().any(|l| l.starts_with("charge") && l.contains("HTTP_500: upstream")), "{t}");
        assert!(t.ends_with("last error: step charge: HTTP_500: upstream"), "{t}");
        assert!(!t.contains("TASK"), "no task table without tasks: {t}");
    }

    #[test]
    fn run_text_falls_back_to_a_handled_step_error() {
        let mut handled = step("call", "call", "failed");
        handled["error"] = json!({"code": "TIMEOUT", "message": "slow"});
        let run = json!({"run_id": "r", "status": "completed", "error": null, "steps": [handled, step("alt", "alt", "completed")]});
        assert!(run_text(&run, chrono::Utc::now()).ends_with("last error: step call: TIMEOUT: slow"));
        let ok = json!({"run_id": "r", "status": "completed", "error": null, "steps": []});
        assert!(run_text(&ok, chrono::Utc::now()).ends_with("last error: none"));
    }

    #[test]
    fn waiting_text_prints_each_open_task_with_its_prompt_and_how_to_answer() {
        let run = json!({"run_id": "run_1", "tasks": [
            {"task_id": "t1", "kind": "approval", "status": "open", "step_key": "review", "prompt": "Approve 5000?"},
            {"task_id": "t0", "kind": "question", "status": "completed", "step_key": "ask", "prompt": "old"}]});
        let t = waiting_text(&run);
        assert_eq!(
            t,
            "run run_1 waits for a person: task t1 (approval) at step review\nApprove 5000?\n\
             answer: baton tasks approve run_1 t1   (or reject)"
        );
    }

    #[test]
    fn json_args_are_literal_or_read_from_a_file() {
        assert_eq!(json_arg("--input", r#"{"a":1}"#).unwrap(), json!({"a": 1}));
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("in.json");
        std::fs::write(&p, "[1, 2]").unwrap();
        assert_eq!(json_arg("--input", &format!("@{}", p.display())).unwrap(), json!([1, 2]));
    }

    #[test]
    fn bad_json_or_a_missing_file_is_a_usage_error() {
        let e = json_arg("--input", "{a:1}").unwrap_err();
        assert!(matches!(&e, CliError::Usage(m) if m.starts_with("--input: not valid JSON")), "{e}");
        let e = json_arg("--input", "@/nonexistent/in.json").unwrap_err();
        assert!(matches!(&e, CliError::Usage(m) if m.contains("cannot read /nonexistent/in.json")), "{e}");
    }

    #[test]
    fn a_literal_body_is_signed_as_its_bytes() {
        assert_eq!(read_source("--body", "{\"a\": 1}").unwrap(), b"{\"a\": 1}");
    }
}

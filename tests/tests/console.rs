//! The console at `/console` in a real headless Chromium (Debian's `chromium` and
//! `chromium-driver`), driven over WebDriver by `thirtyfour`, against the real `baton-local`:
//! sign in with an API key, see the waiting run in the list, open it (its graph shows the
//! approval block waiting), approve the task from the inbox, and see the run completed.
//! Screenshots go to `target/console-screenshots/*.png`.
//!
//! Without chromium or chromedriver the test fails under CI (`CI=true`) and skips loudly
//! elsewhere, so a developer without a browser can still run the rest of the suite.

use baton_tests::{Api, Server, ServerOptions, free_port, target_dir};
use serde_json::{Value, json};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use thirtyfour::prelude::*;

const WAIT: Duration = Duration::from_secs(20);
const POLL: Duration = Duration::from_millis(100);

fn find_tool(env: &str, names: &[&str]) -> Option<PathBuf> {
    if let Some(p) = std::env::var_os(env).filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(p));
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path).flat_map(|d| names.iter().map(move |n| d.join(n))).find(|p| p.is_file())
}

/// A chromedriver child on a loopback port; killed (by its PID) when dropped.
struct Driver {
    child: Child,
    url: String,
}

impl Driver {
    async fn start(bin: &Path, log: &Path) -> Driver {
        let port = free_port();
        let out = std::fs::File::create(log).expect("create the chromedriver log");
        let child = Command::new(bin)
            .arg(format!("--port={port}"))
            .arg(format!("--log-path={}", log.display()))
            .stdout(Stdio::null())
            .stderr(out)
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", bin.display()));
        let d = Driver { child, url: format!("http://127.0.0.1:{port}") };
        let http = reqwest::Client::new();
        let start = Instant::now();
        loop {
            let ready = http.get(format!("{}/status", d.url)).send().await.ok();
            if let Some(r) = ready
                && let Ok(v) = r.json::<Value>().await
                && v["value"]["ready"] == true
            {
                return d;
            }
            assert!(start.elapsed() < WAIT, "chromedriver did not become ready on {}", d.url);
            tokio::time::sleep(POLL).await;
        }
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn approval_workflow() -> Value {
    json!({"id": "orders", "name": "Orders", "status": "active",
      "inputSchema": {"type": "object", "required": ["amount"], "properties": {"amount": {"type": "number"}}},
      "blocks": [
        {"id": "start", "type": "starter"},
        {"id": "check", "type": "condition"},
        {"id": "review", "type": "human", "config": {"kind": "approval", "prompt": "Approve {{input.amount}}?"}},
        {"id": "done", "type": "response", "config": {"body": {"ok": true, "amount": "{{input.amount}}"}}}],
      "edges": [
        {"from": "start", "to": "check"},
        {"from": "check", "to": "review", "when": "input.amount > 1000"},
        {"from": "check", "to": "done"},
        {"from": "review", "to": "done"}]})
}

async fn wait_for_status(api: &Api, run_id: &str, want: &str) -> Value {
    let start = Instant::now();
    loop {
        let run = api.run(run_id).await.expect("read the run");
        if run["status"] == want {
            return run;
        }
        assert!(start.elapsed() < WAIT, "run {run_id} never became {want}: {run:#}");
        tokio::time::sleep(POLL).await;
    }
}

async fn find(driver: &WebDriver, css: &str) -> WebElement {
    driver
        .query(By::Css(css))
        .wait(WAIT, POLL)
        .first()
        .await
        .unwrap_or_else(|e| panic!("no element `{css}` on the page: {e}"))
}

async fn shot(driver: &WebDriver, dir: &Path, name: &str) {
    let path = dir.join(format!("{name}.png"));
    driver.screenshot(&path).await.unwrap_or_else(|e| panic!("screenshot {}: {e}", path.display()));
}

#[tokio::test(flavor = "multi_thread")]
async fn console_signs_in_shows_the_waiting_run_and_approves_it_to_completion() {
    let (Some(chromium), Some(chromedriver)) =
        (find_tool("CHROMIUM", &["chromium", "chromium-browser"]), find_tool("CHROMEDRIVER", &["chromedriver"]))
    else {
        let msg = "chromium and chromedriver are needed for the console test: apt-get install chromium chromium-driver";
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("{msg}");
        }
        eprintln!("\n!!!!!!!! SKIPPED console browser test: {msg} !!!!!!!!\n");
        return;
    };

    let server = Server::start(ServerOptions::default());
    let mut api = Api::for_server(&server);
    api.register("console").await.expect("register");
    let key = api.key().expect("an API key").to_string();
    api.create_workflow(&approval_workflow()).await.expect("create the workflow");
    let (code, run) = api.start_run("orders", &json!({"amount": 5000})).await.expect("start a run");
    assert_eq!(code, 201, "{run}");
    let run_id = run["run_id"].as_str().expect("run_id").to_string();
    wait_for_status(&api, &run_id, "waiting_human").await;

    let shots = target_dir().join("console-screenshots");
    std::fs::create_dir_all(&shots).expect("create the screenshot directory");
    let driver_proc = Driver::start(&chromedriver, &shots.join("chromedriver.log")).await;
    let mut caps = DesiredCapabilities::chrome();
    caps.set_binary(&chromium.to_string_lossy()).expect("binary");
    for arg in ["--headless=new", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1280,1100"] {
        caps.add_arg(arg).expect("arg");
    }
    // Chromium refuses to start as root without it (CI runs as root).
    if std::fs::metadata("/proc/self").map(|m| m.uid() == 0).unwrap_or(false) {
        caps.add_arg("--no-sandbox").expect("arg");
    }
    let driver = WebDriver::new(&driver_proc.url, caps).await.expect("a Chromium session");
    let outcome = drive(&driver, &server.base_url(), &key, &run_id, &shots).await;
    if outcome.is_err() {
        shot(&driver, &shots, "failure").await;
    }
    driver.quit().await.expect("quit Chromium");
    outcome.unwrap_or_else(|e| panic!("{e}\nserver log:\n{}", server.log_tail(40)));

    // The answer the browser sent is the task's output, and the run went on to the end.
    let run = wait_for_status(&api, &run_id, "completed").await;
    assert_eq!(run["output"], json!({"ok": true, "amount": 5000}), "{run:#}");
    assert_eq!(run["tasks"][0]["output"]["approved"], true, "{run:#}");
    assert_eq!(run["tasks"][0]["output"]["feedback"], "Looks right", "{run:#}");
    for name in ["01-signin", "02-runs", "03-run-waiting", "04-inbox", "05-run-completed"] {
        let png = std::fs::read(shots.join(format!("{name}.png"))).expect("screenshot written");
        assert!(png.starts_with(b"\x89PNG") && png.len() > 5_000, "{name}.png looks empty");
    }
}

async fn drive(driver: &WebDriver, base: &str, key: &str, run_id: &str, shots: &Path) -> Result<(), String> {
    // Not signed in: the page sends us to the sign-in form. A wrong key is refused there.
    driver.goto(format!("{base}/console")).await.map_err(|e| e.to_string())?;
    let input = find(driver, "#api-key").await;
    input.send_keys("bk_wrong").await.map_err(|e| e.to_string())?;
    find(driver, "#signin-form button[type=submit]").await.click().await.map_err(|e| e.to_string())?;
    let err = find(driver, "#signin-form .err").await;
    wait_text(&err, "not accepted").await?;
    input.clear().await.map_err(|e| e.to_string())?;
    input.send_keys(key).await.map_err(|e| e.to_string())?;
    shot(driver, shots, "01-signin").await;
    find(driver, "#signin-form button[type=submit]").await.click().await.map_err(|e| e.to_string())?;

    // The runs list shows the run waiting for a person.
    let row = format!("tr[data-run='{run_id}'][data-status='waiting_human']");
    find(driver, &row).await;
    shot(driver, shots, "02-runs").await;
    click(driver, &format!("{row} a")).await?;

    // The run's page: status, the graph with the approval block waiting, the open task.
    find(driver, "#run-status[data-status='waiting_human']").await;
    find(driver, "svg.graph g[data-block='review'][data-status='waiting_human']").await;
    find(driver, "svg.graph g[data-block='start'][data-status='completed']").await;
    find(driver, ".task button.approve").await;
    shot(driver, shots, "03-run-waiting").await;

    // The inbox lists the task across runs; approve it there with feedback.
    find(driver, "#nav a[data-nav='inbox']").await.click().await.map_err(|e| e.to_string())?;
    let task = find(driver, ".task[data-task]").await;
    let prompt = task.text().await.map_err(|e| e.to_string())?;
    if !prompt.contains("Approve 5000?") {
        return Err(format!("the inbox task does not show its prompt: {prompt}"));
    }
    task.find(By::Css("textarea.feedback"))
        .await
        .map_err(|e| e.to_string())?
        .send_keys("Looks right")
        .await
        .map_err(|e| e.to_string())?;
    shot(driver, shots, "04-inbox").await;
    task.find(By::Css("button.approve")).await.map_err(|e| e.to_string())?.click().await.map_err(|e| e.to_string())?;
    find(driver, "#inbox-empty").await;

    // Back on the run's page, live refresh shows it completed.
    driver.goto(format!("{base}/console#/runs/{run_id}")).await.map_err(|e| e.to_string())?;
    find(driver, "#run-status[data-status='completed']").await;
    find(driver, "svg.graph g[data-block='done'][data-status='completed']").await;
    find(driver, "svg.graph g[data-block='review'][data-status='completed']").await;
    // Each step shows what reached it: the run's input at the entry, the person's answer
    // (among its predecessors' outputs) at `done`.
    wait_text(&find(driver, "tr[data-step='start'] td.input").await, "5000").await?;
    wait_text(&find(driver, "tr[data-step='done'] td.input").await, "Looks right").await?;
    shot(driver, shots, "05-run-completed").await;

    // Signing out forgets the key: the next page is the sign-in form again.
    find(driver, "#signout").await.click().await.map_err(|e| e.to_string())?;
    find(driver, "#signin-form").await;
    driver.goto(format!("{base}/console#/runs")).await.map_err(|e| e.to_string())?;
    find(driver, "#signin-form").await;
    Ok(())
}

/// Clicks the element `css` names, looking it up again when the page redrew it in between
/// (the runs list refreshes itself every few seconds).
async fn click(driver: &WebDriver, css: &str) -> Result<(), String> {
    let start = Instant::now();
    loop {
        match find(driver, css).await.click().await {
            Ok(()) => return Ok(()),
            Err(e) if start.elapsed() > WAIT => return Err(format!("click `{css}`: {e}")),
            Err(_) => tokio::time::sleep(POLL).await,
        }
    }
}

async fn wait_text(el: &WebElement, want: &str) -> Result<(), String> {
    let start = Instant::now();
    loop {
        let text = el.text().await.map_err(|e| e.to_string())?;
        if text.contains(want) {
            return Ok(());
        }
        if start.elapsed() > WAIT {
            return Err(format!("expected `{want}`, the page says `{text}`"));
        }
        tokio::time::sleep(POLL).await;
    }
}

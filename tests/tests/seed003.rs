//! Seed 003's complete example ("Process Customer Order"), read from the seed itself and
//! created as written, run end to end on the real `baton-local` binary: the transform, the
//! `stripe.createInvoice` action against a loopback Stripe double, and the `email` step
//! through an SMTP connection to aiosmtpd (from `.venv`, infra/requirements.txt), whose
//! Maildir the test reads.
//!
//! The Stripe double follows Stripe's documented shapes (form bodies, Bearer keys, the error
//! object); localstripe (PyPI) was tried first, but it cannot make an invoice from pending
//! invoice items without a subscription ("No upcoming invoices for customer"), which is
//! exactly what `stripe.createInvoice` does.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use baton_tests::{Api, Server, ServerOptions, free_port, workspace_root};
use serde_json::{Map, Value, json};
use std::collections::HashMap;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(30);
const LIVE_KEY: &str = "sk_live_production";
const DEV_KEY: &str = "sk_test_development";

/// The seed's "Complete Example", exactly as the seed file has it.
fn seed_example() -> Value {
    // The product's seed documents beside the repository, else the copy in `tests/seeds/`.
    let beside = workspace_root().join("../shared/seeds/003_167b1ba1a5fa38fd.txt");
    let path = if beside.exists() { beside } else { workspace_root().join("tests/seeds/003_167b1ba1a5fa38fd.txt") };
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let start = text.find("Complete Example\n").expect("the seed has a complete example") + "Complete Example\n".len();
    let end = start + text[start..].find("Troubleshooting").expect("the example ends before Troubleshooting");
    serde_json::from_str(text[start..end].trim()).expect("the seed's example is JSON")
}

/// One request the Stripe double took: its path, headers and form fields.
#[derive(Clone, Debug)]
struct Seen {
    path: String,
    headers: HeaderMap,
    form: Vec<(String, String)>,
}

#[derive(Default)]
struct Stripe {
    seen: Vec<Seen>,
    /// Pending invoice items per customer: amounts.
    pending: HashMap<String, Vec<i64>>,
    invoices: HashMap<String, Value>,
}

type Shared = Arc<Mutex<Stripe>>;

fn stripe_error(status: StatusCode, kind: &str, code: Option<&str>, param: Option<&str>, message: &str) -> Response {
    (status, axum::Json(json!({"error": {"type": kind, "code": code, "param": param, "message": message}})))
        .into_response()
}

/// Stripe's documented behaviour for the three calls of `stripe.createInvoice`: only
/// `cus_known…` customers exist; the key must be a Bearer `sk_…`; bodies are forms.
async fn stripe(State(s): State<Shared>, Path(path): Path<String>, headers: HeaderMap, body: String) -> Response {
    let form: Vec<(String, String)> = reqwest::Url::parse(&format!("http://x/?{body}"))
        .unwrap()
        .query_pairs()
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    let mut st = s.lock().unwrap();
    st.seen.push(Seen { path: path.clone(), headers: headers.clone(), form: form.clone() });
    let auth = headers.get("authorization").and_then(|v| v.to_str().ok()).unwrap_or("");
    if !auth.starts_with("Bearer sk_") {
        return stripe_error(StatusCode::UNAUTHORIZED, "invalid_request_error", None, None, "Invalid API Key provided");
    }
    if headers.get("content-type").and_then(|v| v.to_str().ok()) != Some("application/x-www-form-urlencoded") {
        return stripe_error(StatusCode::BAD_REQUEST, "invalid_request_error", None, None, "bodies are forms");
    }
    let field = |k: &str| form.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    let customer = field("customer").unwrap_or_default();
    let segments: Vec<&str> = path.split('/').collect();
    match segments.as_slice() {
        ["invoiceitems"] | ["invoices"] if !customer.starts_with("cus_known") => stripe_error(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            Some("resource_missing"),
            Some("customer"),
            &format!("No such customer: '{customer}'"),
        ),
        ["invoiceitems"] => {
            let amount: i64 = field("amount").and_then(|a| a.parse().ok()).unwrap_or(-1);
            st.pending.entry(customer.clone()).or_default().push(amount);
            axum::Json(json!({"id": "ii_1", "object": "invoiceitem", "amount": amount, "currency": field("currency"), "customer": customer}))
                .into_response()
        }
        ["invoices"] => {
            let include = field("pending_invoice_items_behavior").as_deref() == Some("include");
            let items = if include { st.pending.remove(&customer).unwrap_or_default() } else { Vec::new() };
            let metadata: Map<String, Value> = form
                .iter()
                .filter_map(|(k, v)| Some((k.strip_prefix("metadata[")?.strip_suffix(']')?.to_string(), json!(v))))
                .collect();
            let id = format!("in_{}", st.invoices.len() + 1);
            let inv = json!({"id": id, "object": "invoice", "status": "draft", "number": null, "customer": customer,
                "currency": "usd", "amount_due": items.iter().sum::<i64>(), "metadata": metadata,
                "hosted_invoice_url": null, "invoice_pdf": null});
            st.invoices.insert(id, inv.clone());
            axum::Json(inv).into_response()
        }
        ["invoices", id, "finalize"] => match st.invoices.get_mut(*id) {
            Some(inv) => {
                inv["status"] = json!("open");
                inv["number"] = json!("B4T0N-0001");
                inv["hosted_invoice_url"] = json!(format!("https://invoice.stripe.com/i/{id}"));
                axum::Json(inv.clone()).into_response()
            }
            None => stripe_error(
                StatusCode::NOT_FOUND,
                "invalid_request_error",
                Some("resource_missing"),
                Some("id"),
                "No such invoice",
            ),
        },
        _ => stripe_error(StatusCode::NOT_FOUND, "invalid_request_error", None, None, "Unrecognized request URL"),
    }
}

async fn stripe_double() -> (String, Shared) {
    let state: Shared = Arc::default();
    let app = axum::Router::new().route("/v1/{*path}", axum::routing::post(stripe)).with_state(state.clone());
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://127.0.0.1:{}", l.local_addr().unwrap().port());
    tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
    (base, state)
}

/// aiosmtpd on a loopback port, delivering into a Maildir; stopped (by its pid) on drop.
struct SmtpSink {
    child: Child,
    port: u16,
    maildir: tempfile::TempDir,
}

impl SmtpSink {
    fn start() -> SmtpSink {
        let venv = workspace_root().join(".venv/bin/python");
        let python = if venv.is_file() { venv } else { "python3".into() };
        let maildir = tempfile::tempdir().unwrap();
        let port = free_port();
        let child = Command::new(&python)
            .args(["-m", "aiosmtpd", "-n", "-l", &format!("127.0.0.1:{port}"), "-c", "aiosmtpd.handlers.Mailbox"])
            // A path that does not exist yet: the Maildir handler creates it with new/, cur/, tmp/.
            .arg(maildir.path().join("mail"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("{} -m aiosmtpd: {e} (run `bash infra/venv.sh`)", python.display()));
        let t0 = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(t0.elapsed() < WAIT, "aiosmtpd did not listen on {port} (is it installed? bash infra/venv.sh)");
            std::thread::sleep(Duration::from_millis(50));
        }
        SmtpSink { child, port, maildir }
    }

    /// The messages delivered so far, as text.
    fn messages(&self) -> Vec<String> {
        let dir = self.maildir.path().join("mail/new");
        let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
        entries.filter_map(|e| std::fs::read_to_string(e.ok()?.path()).ok()).collect()
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn wait_for_end(api: &Api, run_id: &str) -> Value {
    let t0 = Instant::now();
    loop {
        let r = api.run(run_id).await.unwrap();
        if matches!(r["status"].as_str(), Some("completed" | "failed" | "cancelled")) {
            return r;
        }
        assert!(t0.elapsed() < WAIT, "run {run_id} did not end within {WAIT:?}: {r:#}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn step<'a>(run: &'a Value, key: &str) -> &'a Value {
    run["steps"].as_array().and_then(|s| s.iter().find(|s| s["step_key"] == key)).unwrap_or(&Value::Null)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_003s_complete_example_creates_the_invoice_and_mails_the_confirmation() {
    let smtp = SmtpSink::start();
    let (stripe_base, stripe) = stripe_double().await;
    let server = Server::start(ServerOptions::default().workers(2).env("BATON_ALLOW_PRIVATE_TARGETS", "1"));
    let mut api = Api::for_server(&server);
    api.register("seed-003").await.unwrap();

    // Two Stripe connections (the run names one, as the seed's "Specifying a Connection"
    // says) and the account's only SMTP connection.
    for (id, key) in [("conn_production_stripe", LIVE_KEY), ("conn_dev_stripe", DEV_KEY)] {
        let (code, c) = api
            .post(
                "/connections",
                &json!({"id": id, "name": id, "provider": "stripe", "base_url": stripe_base, "credentials": {"api_key": key}}),
            )
            .await
            .unwrap();
        assert_eq!(code, 201, "{c}");
        assert!(!c.to_string().contains(key), "secrets are never returned: {c}");
    }
    let smtp_conn = json!({"id": "conn_mail", "name": "Mail", "provider": "smtp",
        "credentials": {"host": "127.0.0.1", "port": smtp.port, "tls": "none", "from": "Shop <orders@shop.example>"}});
    let (code, c) = api.post("/connections", &smtp_conn).await.unwrap();
    assert_eq!(code, 201, "{c}");

    // The example, as the seed writes it; then activated ("Workflow must be active to run").
    let wf = api.create_workflow(&seed_example()).await.unwrap();
    let wf_id = wf["id"].as_str().unwrap().to_string();
    let (code, body) = api.post(&format!("/workflows/{wf_id}/activate"), &json!({})).await.unwrap();
    assert_eq!(code, 200, "{body}");

    let order = json!({"customerId": "cus_known42", "customerEmail": "ada@customer.example",
        "items": [{"productId": "widget", "quantity": 2, "price": 1999}], "notes": "gift wrap"});
    let (code, run) = api
        .post(&format!("/workflows/{wf_id}/run"), &json!({"input": order, "connectionId": "conn_production_stripe"}))
        .await
        .unwrap();
    assert_eq!(code, 201, "{run}");
    let run = wait_for_end(&api, run["run_id"].as_str().unwrap()).await;
    assert_eq!(run["status"], "completed", "{run:#}");

    // 2 × 1999 = 3998; × 1.08 = 4317.84, rounded to 4318 minor units for the invoice item.
    let invoice = &step(&run, "create-invoice")["output"];
    assert_eq!(invoice["number"], "B4T0N-0001", "{run:#}");
    assert_eq!(invoice["amount_due"], 4318);
    assert_eq!(invoice["status"], "open");
    assert_eq!(invoice["metadata"], json!({"source": "api-order"}));
    assert_eq!(invoice["hosted_invoice_url"], "https://invoice.stripe.com/i/in_1");
    let seen = stripe.lock().unwrap().seen.clone();
    let paths: Vec<&str> = seen.iter().map(|s| s.path.as_str()).collect();
    assert_eq!(paths, ["invoiceitems", "invoices", "invoices/in_1/finalize"]);
    for s in &seen {
        assert_eq!(s.headers["authorization"], format!("Bearer {LIVE_KEY}").as_str(), "the run's connectionId");
        assert!(s.headers.contains_key("idempotency-key"), "{s:?}");
    }
    let pair = |s: &Seen, k: &str| s.form.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    assert_eq!(pair(&seen[0], "amount").as_deref(), Some("4318"));
    assert_eq!(pair(&seen[0], "currency").as_deref(), Some("usd"));
    assert_eq!(pair(&seen[1], "metadata[source]").as_deref(), Some("api-order"));
    assert_eq!(pair(&seen[1], "pending_invoice_items_behavior").as_deref(), Some("include"));

    // The confirmation went out through the account's only SMTP connection.
    let mail = &step(&run, "send-confirmation")["output"];
    assert_eq!((mail["provider"].as_str(), mail["connection_id"].as_str()), (Some("smtp"), Some("conn_mail")));
    let msgs = smtp.messages();
    assert_eq!(msgs.len(), 1, "{msgs:#?}");
    let m = &msgs[0];
    assert!(m.contains("Subject: Order Confirmed - Invoice #B4T0N-0001"), "{m}");
    assert!(m.contains("To: ada@customer.example"), "{m}");
    assert!(m.contains("From: Shop <orders@shop.example>"), "{m}");
    assert!(m.contains("<p>Thank you for your order!</p><p>Total: $4317.84"), "{m}");
    assert!(m.contains(mail["message_id"].as_str().unwrap()), "{m}");

    // Without the run's connectionId the two Stripe connections are ambiguous.
    let (_, run) = api.post(&format!("/workflows/{wf_id}/run"), &json!({"input": order})).await.unwrap();
    let run = wait_for_end(&api, run["run_id"].as_str().unwrap()).await;
    assert_eq!(run["status"], "failed");
    assert_eq!(run["error"]["code"], "CONNECTION_AMBIGUOUS", "{run:#}");
    assert!(run["error"]["message"].as_str().unwrap().contains("conn_dev_stripe, conn_production_stripe"), "{run:#}");

    // Stripe's own errors become the step's.
    let stranger = json!({"customerId": "cus_unknown", "customerEmail": "x@customer.example", "items": []});
    let (_, run) = api
        .post(&format!("/workflows/{wf_id}/run"), &json!({"input": stranger, "connectionId": "conn_dev_stripe"}))
        .await
        .unwrap();
    let run = wait_for_end(&api, run["run_id"].as_str().unwrap()).await;
    assert_eq!(run["status"], "failed");
    assert_eq!(run["error"]["code"], "STRIPE_NOT_FOUND", "{run:#}");
    assert!(run["error"]["message"].as_str().unwrap().contains("No such customer: 'cus_unknown'"), "{run:#}");
    assert_eq!(smtp.messages().len(), 1, "no mail for a failed invoice");

    // A workflow naming a connection that does not exist is refused at save, with the path.
    let mut bad = seed_example();
    bad["steps"][1]["config"]["connection_id"] = json!("conn_nope");
    let (code, body) = api.post("/workflows", &bad).await.unwrap();
    assert_eq!(code, 400, "{body}");
    assert_eq!(body["error"]["details"][0]["path"], json!(["steps", 1, "config", "connection_id"]));
}

//! The doors without an API key, end to end against the real `baton-local` binary, with
//! every signature made by an implementation that is not ours:
//! - `openssl dgst -sha256 -hmac` for the hex HMAC forms (X-Signature-256, GitHub) and for
//!   Stripe's scheme worked by hand (HMAC over `"{t}.{body}"`, header `t=…,v1=…`);
//! - the `standardwebhooks` package from PyPI (in `.venv/`, see infra/requirements.txt)
//!   for Standard Webhooks, including key rotation and a replayed (stale) message.
//!
//! A missing tool fails the test (it never skips).

use baton_tests::{Api, Server, ServerOptions, workspace_root};
use serde_json::{Value, json};
use std::io::Write;
use std::process::{Command, Stdio};

/// HMAC-SHA256 of `data` under `secret`, hex, as `openssl dgst -sha256 -hmac <secret>` prints it.
fn openssl_hmac_hex(secret: &str, data: &[u8]) -> String {
    let mut child = Command::new("openssl")
        .args(["dgst", "-sha256", "-hmac", secret])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("openssl is required for this test (apt-get install openssl): {e}"));
    child.stdin.take().expect("stdin").write_all(data).expect("write to openssl");
    let out = child.wait_with_output().expect("openssl output");
    assert!(out.status.success(), "openssl failed: {}", String::from_utf8_lossy(&out.stderr));
    // "SHA2-256(stdin)= <hex>" (or "HMAC-SHA256(stdin)= <hex>", by version).
    let text = String::from_utf8(out.stdout).expect("utf-8");
    let hex = text.trim().rsplit(' ').next().unwrap_or_default().to_string();
    assert!(hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()), "unexpected openssl output: {text}");
    hex
}

/// `webhook-signature` for one message, made by `standardwebhooks.Webhook(secret).sign` for
/// each secret (several secrets: the space-separated list a sender rotating keys sends).
fn standardwebhooks_sign(secrets: &[&str], msg_id: &str, timestamp: i64, body: &str) -> String {
    let python = workspace_root().join(".venv/bin/python");
    assert!(
        python.is_file(),
        "{} is missing: run `bash infra/venv.sh` (installs the standardwebhooks package)",
        python.display()
    );
    let script = r#"
import datetime, sys
from standardwebhooks import Webhook
msg_id, ts, secrets = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
body = sys.stdin.read()
when = datetime.datetime.fromtimestamp(ts, tz=datetime.timezone.utc)
print(" ".join(Webhook(s).sign(msg_id, when, body) for s in secrets))
"#;
    let mut child = Command::new(&python)
        .arg("-c")
        .arg(script)
        .arg(msg_id)
        .arg(timestamp.to_string())
        .args(secrets)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", python.display()));
    child.stdin.take().expect("stdin").write_all(body.as_bytes()).expect("write to python");
    let out = child.wait_with_output().expect("python output");
    assert!(out.status.success(), "standardwebhooks signing failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).expect("utf-8").trim().to_string()
}

fn now_secs() -> i64 {
    baton_tests::now_ms() / 1000
}

/// One POST without an API key: status and JSON body.
async fn door(base: &str, path: &str, headers: &[(&str, String)], body: &str) -> (u16, Value) {
    let mut rb = reqwest::Client::new().post(format!("{base}{path}")).body(body.to_string());
    for (k, v) in headers {
        rb = rb.header(*k, v);
    }
    let resp = rb.send().await.expect("request");
    let code = resp.status().as_u16();
    let bytes = resp.bytes().await.expect("body");
    (code, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

fn ct() -> (&'static str, String) {
    ("content-type", "application/json".to_string())
}

async fn setup() -> (Server, Api) {
    let server = Server::start(ServerOptions::default().workers(2));
    let mut api = Api::for_server(&server);
    api.register("hooks-e2e").await.unwrap();
    api.create_workflow(&json!({"id": "inbox", "name": "Inbox", "status": "active",
                                "steps": [{"id": "s", "type": "starter"}]}))
        .await
        .unwrap();
    (server, api)
}

async fn create_app(api: &Api, body: Value) -> String {
    let (code, app) = api.post("/apps", &body).await.unwrap();
    assert_eq!(code, 201, "{app}");
    app["app_id"].as_str().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn x_signature_256_and_github_signed_by_openssl() {
    let (server, api) = setup().await;
    let base = server.base_url();

    let app = create_app(&api, json!({"name": "acme", "signing_secret": "acme-e2e-secret"})).await;
    let path = format!("/api/v1/webhooks/{app}");
    let body = r#"{"workflow_id": "inbox", "input": {"n": 1}}"#;
    let sig = format!("sha256={}", openssl_hmac_hex("acme-e2e-secret", body.as_bytes()));
    let (code, run) = door(&base, &path, &[ct(), ("x-signature-256", sig.clone())], body).await;
    assert_eq!(code, 201, "{run}");
    assert_eq!(run["input"], json!({"n": 1}));
    let wrong = format!("sha256={}", openssl_hmac_hex("another-secret", body.as_bytes()));
    let (code, err) = door(&base, &path, &[ct(), ("x-signature-256", wrong)], body).await;
    assert_eq!((code, err["error"]["code"].as_str()), (401, Some("UNAUTHORIZED")), "{err}");
    let (code, _) = door(&base, &path, &[ct()], body).await;
    assert_eq!(code, 401);

    let gh = create_app(
        &api,
        json!({"name": "github", "signing_secret": "gh-e2e-secret", "signature": {"scheme": "github"},
               "workflow_id": "inbox"}),
    )
    .await;
    let path = format!("/api/webhooks/{gh}");
    let payload = r#"{"action":"opened","pull_request":{"number":12}}"#;
    let sig = format!("sha256={}", openssl_hmac_hex("gh-e2e-secret", payload.as_bytes()));
    let headers =
        [ct(), ("x-hub-signature-256", sig), ("x-github-delivery", "72d3162e-cc78-11e3-81ab-4c9367dc0958".into())];
    let (code, first) = door(&base, &path, &headers, payload).await;
    assert_eq!(code, 201, "{first}");
    assert_eq!(first["input"]["pull_request"]["number"], json!(12));
    // GitHub redelivers with the same delivery id: the same run, not a second one.
    let (code, again) = door(&base, &path, &headers, payload).await;
    assert_eq!((code, &again["run_id"]), (200, &first["run_id"]), "{again}");
    let runs = api.list_runs(None).await.unwrap();
    assert_eq!(runs.len(), 2, "one run from acme, one from github: {runs:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stripe_scheme_worked_by_hand_with_openssl() {
    let (server, api) = setup().await;
    let base = server.base_url();
    let secret = "whsec_e2e_stripe_secret";
    let app = create_app(
        &api,
        json!({"name": "stripe", "signing_secret": secret, "signature": {"scheme": "stripe"}, "workflow_id": "inbox"}),
    )
    .await;
    let path = format!("/api/v1/webhooks/{app}");
    let body = r#"{"id":"evt_1NG8Du2eZvKYlo2CUI79vXWy","type":"payment_intent.succeeded"}"#;
    // Stripe's documented scheme: signed_payload = "{t}.{body}"; header "t=<t>,v1=<hex>".
    let stripe_header = |t: i64| {
        let signed_payload = format!("{t}.{body}");
        format!("t={t},v1={}", openssl_hmac_hex(secret, signed_payload.as_bytes()))
    };
    let t = now_secs();
    let (code, run) = door(&base, &path, &[ct(), ("stripe-signature", stripe_header(t))], body).await;
    assert_eq!(code, 201, "{run}");
    // A retry of the same event (new timestamp and signature) returns the same run.
    let (code, again) = door(&base, &path, &[ct(), ("stripe-signature", stripe_header(t + 2))], body).await;
    assert_eq!((code, &again["run_id"]), (200, &run["run_id"]), "{again}");
    // Several v1 entries (Stripe's secret rolling): one good is enough.
    let t2 = now_secs();
    let bad = openssl_hmac_hex("whsec_rolled_out", format!("{t2}.{body}").as_bytes());
    let two = format!("{},v1={bad}", stripe_header(t2));
    let (code, _) = door(&base, &path, &[ct(), ("stripe-signature", two)], body).await;
    assert_eq!(code, 200);
    // Replayed outside the 300 s tolerance.
    let (code, err) = door(&base, &path, &[ct(), ("stripe-signature", stripe_header(t - 301))], body).await;
    assert_eq!(code, 401, "{err}");
    assert!(err["error"]["message"].as_str().unwrap_or("").contains("tolerance"), "{err}");
    let (code, _) = door(&base, &path, &[ct(), ("stripe-signature", format!("t={t},v1={bad}"))], body).await;
    assert_eq!(code, 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standard_webhooks_signed_by_the_standardwebhooks_package() {
    let (server, api) = setup().await;
    let base = server.base_url();
    let secret = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";
    let old_secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    let app = create_app(
        &api,
        json!({"name": "sw", "signing_secret": secret, "signature": {"scheme": "standard-webhooks"},
               "workflow_id": "inbox"}),
    )
    .await;
    let path = format!("/api/v1/webhooks/{app}");
    let body = r#"{"type":"invoice.paid","data":{"amount":1200}}"#;
    let headers = |id: &str, ts: i64, sig: String| {
        vec![ct(), ("webhook-id", id.to_string()), ("webhook-timestamp", ts.to_string()), ("webhook-signature", sig)]
    };

    let ts = now_secs();
    let sig = standardwebhooks_sign(&[secret], "msg_e2e_1", ts, body);
    let (code, run) = door(&base, &path, &headers("msg_e2e_1", ts, sig), body).await;
    assert_eq!(code, 201, "{run}");
    assert_eq!(run["input"]["data"]["amount"], json!(1200));

    // A redelivery: same webhook-id, a new timestamp and signature → the original run.
    let ts2 = now_secs() + 1;
    let sig2 = standardwebhooks_sign(&[secret], "msg_e2e_1", ts2, body);
    let (code, again) = door(&base, &path, &headers("msg_e2e_1", ts2, sig2), body).await;
    assert_eq!((code, &again["run_id"]), (200, &run["run_id"]), "{again}");

    // Key rotation: signed with the old and the new key, space-separated.
    let ts3 = now_secs();
    let rotated = standardwebhooks_sign(&[old_secret, secret], "msg_e2e_2", ts3, body);
    assert_eq!(rotated.split(' ').count(), 2, "{rotated}");
    let (code, r2) = door(&base, &path, &headers("msg_e2e_2", ts3, rotated), body).await;
    assert_eq!(code, 201, "{r2}");
    // Only the old key: refused.
    let only_old = standardwebhooks_sign(&[old_secret], "msg_e2e_3", ts3, body);
    let (code, _) = door(&base, &path, &headers("msg_e2e_3", ts3, only_old), body).await;
    assert_eq!(code, 401);

    // Replay: a genuine signature from more than 5 minutes ago (and one from the future).
    let stale = now_secs() - 6 * 60;
    let sig = standardwebhooks_sign(&[secret], "msg_e2e_4", stale, body);
    let (code, err) = door(&base, &path, &headers("msg_e2e_4", stale, sig), body).await;
    assert_eq!((code, err["error"]["code"].as_str()), (401, Some("UNAUTHORIZED")), "{err}");
    let ahead = now_secs() + 6 * 60;
    let sig = standardwebhooks_sign(&[secret], "msg_e2e_5", ahead, body);
    let (code, _) = door(&base, &path, &headers("msg_e2e_5", ahead, sig), body).await;
    assert_eq!(code, 401);
    // A tampered body under a genuine signature.
    let ts4 = now_secs();
    let sig = standardwebhooks_sign(&[secret], "msg_e2e_6", ts4, body);
    let (code, _) = door(&base, &path, &headers("msg_e2e_6", ts4, sig), &body.replace("1200", "1")).await;
    assert_eq!(code, 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trigger_urls_and_webhook_blocks_over_http() {
    let (server, api) = setup().await;
    let base = server.base_url();

    let (code, trig) = api.post("/workflows/inbox/triggers", &json!({})).await.unwrap();
    assert_eq!(code, 201, "{trig}");
    let url = trig["url"].as_str().unwrap();
    assert!(url.starts_with(&base), "{url} should be on {base}");
    let path = &url[base.len()..];
    let (code, run) = door(&base, path, &[ct()], r#"{"from": "trigger"}"#).await;
    assert_eq!((code, &run["input"]), (201, &json!({"from": "trigger"})), "{run}");
    let (code, _) = door(&base, "/api/v1/hooks/tk_unknown", &[ct()], "{}").await;
    assert_eq!(code, 404);

    let id = "3f2c1b9e-8d4a-4c6b-9e7f-0a1b2c3d4e5f";
    let wf = json!({"id": "blocky", "name": "B", "status": "active",
                    "blocks": [{"id": "in", "type": "webhook", "config": {"webhook_id": id, "webhook_secret": "e2e-block-secret"}}]});
    api.create_workflow(&wf).await.unwrap();
    let path = format!("/api/webhooks/{id}");
    let bearer = ("authorization", "Bearer e2e-block-secret".to_string());
    let (code, _) = door(&base, &path, &[ct(), bearer.clone()], "{}").await;
    assert_eq!(code, 409, "internal: neither deployed nor armed");
    let (code, _) = api.post("/workflows/blocky/arm", &json!({})).await.unwrap();
    assert_eq!(code, 200);
    // Two calls race for the one arm.
    let (ha, hb) = ([ct(), bearer.clone()], [ct()]);
    let query_path = format!("{path}?token=e2e-block-secret");
    let (a, b) = tokio::join!(door(&base, &path, &ha, r#"{"n": 1}"#), door(&base, &query_path, &hb, r#"{"n": 2}"#));
    let mut codes = [a.0, b.0];
    codes.sort();
    assert_eq!(codes, [201, 409], "{a:?} {b:?}");
    let (code, _) = api.post("/workflows/blocky/deploy", &json!({})).await.unwrap();
    assert_eq!(code, 200);
    for _ in 0..2 {
        let (code, run) = door(&base, &path, &[ct(), bearer.clone()], r#"{"n": 3}"#).await;
        assert_eq!(code, 201, "{run}");
    }
    let (code, _) =
        door(&base, &format!("{path}?token=e2e-block-secret"), &[ct(), ("authorization", "Bearer ".into())], "{}")
            .await;
    assert_eq!(code, 401, "an empty Bearer header decides");
}

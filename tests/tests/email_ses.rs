//! The `email` step through an `ses` connection, on the real `baton-local` binary, against
//! moto's SES v2 (`SendEmail` over HTTPS, SigV4-signed by Baton without the AWS SDK): an
//! unverified sender is SES's rejection, a verified one gets SES's message id.

use baton_tests::moto::moto;
use baton_tests::{Api, Server, ServerOptions};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

async fn wait_for_end(api: &Api, run_id: &str) -> Value {
    let t0 = Instant::now();
    loop {
        let r = api.run(run_id).await.unwrap();
        if matches!(r["status"].as_str(), Some("completed" | "failed")) {
            return r;
        }
        assert!(t0.elapsed() < Duration::from_secs(30), "{r:#}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_email_goes_out_through_ses_and_ses_rejections_fail_the_step() {
    let endpoint = moto().endpoint();
    let server = Server::start(ServerOptions::default().workers(2).env("BATON_ALLOW_PRIVATE_TARGETS", "1"));
    let mut api = Api::for_server(&server);
    api.register("ses-e2e").await.unwrap();
    let sender = format!("orders-{}@shop.example", std::process::id());
    let conn = json!({"id": "conn_ses", "name": "SES", "provider": "ses", "base_url": endpoint,
        "credentials": {"region": "us-east-1", "access_key_id": "AKIDTEST", "secret_access_key": "secret", "from": sender}});
    let (code, c) = api.post("/connections", &conn).await.unwrap();
    assert_eq!(code, 201, "{c}");
    assert!(!c.to_string().contains("\"secret\""), "{c}");
    let wf = json!({"id": "mail", "name": "mail", "status": "active", "steps": [
        {"id": "send", "type": "email", "config": {"action": "send", "to": "{{input.to}}",
            "subject": "Hello {{input.name}}", "body": {"html": "<p>Hi {{input.name}}</p>", "text": "Hi {{input.name}}"}}}]});
    api.create_workflow(&wf).await.unwrap();
    let input = json!({"to": "ada@customer.example", "name": "Ada"});

    let (_, run) = api.start_run("mail", &input).await.unwrap();
    let run = wait_for_end(&api, run["run_id"].as_str().unwrap()).await;
    assert_eq!(run["status"], "failed");
    assert_eq!(run["error"]["code"], "SES_REJECTED", "{run:#}");
    assert!(run["error"]["message"].as_str().unwrap().contains("not verified"), "{run:#}");

    // Verify the sender (moto keeps no check of the signature; SES would).
    let res = reqwest::Client::new()
        .post(format!("{endpoint}/v2/email/identities"))
        .header(
            "authorization",
            "AWS4-HMAC-SHA256 Credential=AKIDTEST/20260101/us-east-1/ses/aws4_request, SignedHeaders=host, Signature=0",
        )
        .json(&json!({"EmailIdentity": sender}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let (_, run) = api.start_run("mail", &input).await.unwrap();
    let run = wait_for_end(&api, run["run_id"].as_str().unwrap()).await;
    assert_eq!(run["status"], "completed", "{run:#}");
    let out = &run["output"];
    assert_eq!((out["provider"].as_str(), out["connection_id"].as_str()), (Some("ses"), Some("conn_ses")));
    assert!(out["message_id"].as_str().is_some_and(|m| !m.is_empty()), "{out}");
    assert_eq!(out["to"], json!(["ada@customer.example"]));
    assert_eq!(out["subject"], "Hello Ada");
}

//! `platform_api`: an HTTP call to `base_url + path` of a stored connection, with the
//! connection's auth. Config `{connection_id | provider, method, path, query, headers, body,
//! body_type, timeout_ms, fail_on_status}`, all templated; output `{status, headers, body}`
//! as `general_api`'s, and the same `HTTP_<status>` errors. A `stripe` connection's body is
//! form-encoded the way Stripe reads it (`metadata[key]=…`) unless `body_type` says otherwise.
//!
//! Also the connection half of `general_api`'s `connection_id` ([`authorize`]) and of the
//! action catalog ([`call`]).

use super::http_call::{self, Answer, Body, Request};
use super::{BlockContext, Outcome, StepError, invalid, render};
use crate::connections::{self, Connection};
use crate::model::Block;
use serde_json::{Value, json};
use std::time::Duration;

/// The providers whose connections are spoken to over HTTP.
pub const HTTP_PROVIDERS: &[&str] = &["http", "stripe", "slack", "github"];

fn is_template(v: &Value) -> bool {
    v.as_str().is_some_and(|s| s.contains("{{"))
}

/// The check at save.
pub fn check(c: &Value) -> Result<(), String> {
    match (c.get("connection_id"), c.get("provider")) {
        (None | Some(Value::Null), None | Some(Value::Null)) => {
            return Err("platform_api needs `connection_id` or `provider`".into());
        }
        (Some(v), _) if !v.is_string() && !v.is_null() => return Err("`connection_id` must be a string".into()),
        (_, Some(Value::String(p))) if !p.contains("{{") && !HTTP_PROVIDERS.contains(&p.as_str()) => {
            return Err(format!("`provider` must be one of {}", HTTP_PROVIDERS.join(", ")));
        }
        (_, Some(p)) if !p.is_string() && !p.is_null() => return Err("`provider` must be a string".into()),
        _ => {}
    }
    match c.get("path") {
        None | Some(Value::Null) => return Err("platform_api needs `path` (e.g. \"/v1/customers\")".into()),
        Some(Value::String(p)) if !p.contains("{{") && !p.starts_with('/') => {
            return Err("`path` must start with '/'".into());
        }
        Some(Value::String(_)) => {}
        Some(_) => return Err("`path` must be a string".into()),
    }
    // The rest is general_api's request, with a placeholder URL.
    let mut rest = c.clone();
    if let Value::Object(o) = &mut rest {
        o.insert("url".into(), json!("https://placeholder.test/"));
        o.remove("connection_id");
        o.remove("async");
    }
    if c.get("async").is_some() {
        return Err("platform_api has no `async` mode; use general_api for callbacks".into());
    }
    if let Some(t) = c.get("body_type").filter(|t| !is_template(t))
        && t.as_str().is_none()
    {
        return Err("`body_type` must be \"json\", \"form\" or \"text\"".into());
    }
    http_call::check(&rest)
}

/// The run's `connectionId` (seed 003), kept in its metadata.
pub fn run_connection<'a>(cx: &'a BlockContext<'_>) -> Option<&'a str> {
    cx.data.pointer("/run/metadata/connection_id").and_then(Value::as_str)
}

/// A `connection_id` of a rendered config: absent, or a string.
pub fn connection_id(cfg: &Value) -> Result<Option<&str>, StepError> {
    match cfg.get("connection_id") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if !s.is_empty() => Ok(Some(s)),
        Some(_) => Err(invalid("`connection_id` must be a non-empty string")),
    }
}

/// Adds the connection's auth to `req`, after checking that `req` goes where the
/// connection's secret may go. Auth headers replace the caller's of the same name.
pub fn authorize(conn: &Connection, req: &mut Request) -> Result<(), StepError> {
    if !conn.covers(&req.url) {
        return Err(StepError::fatal(
            "CONNECTION_URL_MISMATCH",
            format!(
                "{} is not under connection '{}''s base_url {}; its credentials are sent only there",
                req.url,
                conn.id,
                conn.base_url.as_deref().unwrap_or_default()
            ),
        ));
    }
    let (headers, query) = conn.http_auth()?;
    req.headers.retain(|(k, _)| !headers.iter().any(|(a, _)| a.eq_ignore_ascii_case(k)));
    req.headers.extend(headers);
    req.query.retain(|(k, _)| !query.iter().any(|(a, _)| a == k));
    req.query.extend(query);
    Ok(())
}

/// `base_url + path` of an HTTP connection.
pub fn url_of(conn: &Connection, path: &str) -> Result<String, StepError> {
    let Some(base) = &conn.base_url else {
        return Err(StepError::fatal(
            "CONNECTION_INVALID",
            format!("connection '{}' has no base_url; give it one, or call full URLs with general_api", conn.id),
        ));
    };
    if !path.starts_with('/') {
        return Err(invalid(format!("`path` must start with '/', not \"{path}\"")));
    }
    Ok(format!("{base}{path}"))
}

/// One authenticated request to `path` of `conn` (for the action catalog): `body` as given,
/// a 30-second timeout within the step's deadline, and the step's idempotency key as
/// `Idempotency-Key` when `idempotency` is given (suffixed, one per request of a step).
pub async fn call(
    cx: &BlockContext<'_>,
    conn: &Connection,
    method: reqwest::Method,
    path: &str,
    body: Body,
    idempotency: Option<&str>,
) -> Result<Answer, StepError> {
    let mut req = Request {
        method,
        url: url_of(conn, path)?,
        headers: Vec::new(),
        query: Vec::new(),
        body,
        timeout: Duration::from_secs(30).min(cx.remaining()),
        fail_on_status: false,
    };
    if let Some(suffix) = idempotency {
        req.headers.push(("Idempotency-Key".into(), format!("{}:{suffix}", cx.idempotency_key)));
    }
    authorize(conn, &mut req)?;
    http_call::send(&cx.services.http, &req).await
}

/// Which connection a step of an HTTP provider uses.
pub async fn connection_for(
    cx: &BlockContext<'_>,
    providers: &[&str],
    step_conn: Option<&str>,
    what: &str,
) -> Result<Connection, StepError> {
    let s = cx.services;
    connections::resolve(&*s.store, &s.secrets, cx.account_id, providers, step_conn, run_connection(cx), what).await
}

pub(super) async fn run(block: &Block, cx: &BlockContext<'_>) -> Outcome {
    match execute(block, cx).await {
        Ok(a) => Outcome::Output(a.to_json()),
        Err(e) => Outcome::Fail(e),
    }
}

/// The request of a rendered config against `conn`, sent; shared with `http.request`.
pub async fn request_through(cx: &BlockContext<'_>, conn: &Connection, cfg: &Value) -> Result<Answer, StepError> {
    let path = match cfg.get("path") {
        Some(Value::String(p)) => p.as_str(),
        _ => return Err(invalid("`path` must be a string starting with '/'")),
    };
    let mut c = cfg.clone();
    let stripe_form = conn.provider == "stripe" && cfg.get("body_type").is_none_or(|t| t == "form");
    if let Value::Object(o) = &mut c {
        o.insert("url".into(), json!(url_of(conn, path)?));
        if stripe_form {
            o.remove("body_type");
        }
    }
    let mut req = http_call::request(&c).map_err(invalid)?;
    if stripe_form && let Some(b) = cfg.get("body").filter(|b| !b.is_null()) {
        req.body = Body::Form(super::actions::stripe::form(b));
    }
    req.timeout = req.timeout.min(cx.remaining());
    authorize(conn, &mut req)?;
    let answer = http_call::send(&cx.services.http, &req).await?;
    if !(200..300).contains(&answer.status) && req.fail_on_status {
        return Err(http_call::status_error(&format!("{} {}", req.method, req.url), &answer));
    }
    Ok(answer)
}

async fn execute(block: &Block, cx: &BlockContext<'_>) -> Result<Answer, StepError> {
    let cfg = render(&block.config, cx.data)?;
    let step_conn = connection_id(&cfg)?;
    let providers: Vec<&str> = match (step_conn, cfg.get("provider")) {
        (Some(_), _) => HTTP_PROVIDERS.to_vec(),
        (None, Some(Value::String(p))) if HTTP_PROVIDERS.contains(&p.as_str()) => vec![p.as_str()],
        (None, _) => {
            return Err(invalid(format!(
                "`provider` must be one of {} (or give `connection_id`)",
                HTTP_PROVIDERS.join(", ")
            )));
        }
    };
    let conn = connection_for(cx, &providers, step_conn, "platform_api").await?;
    request_through(cx, &conn, &cfg).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::adapters::http::GuardedHttp;
    use crate::blocks::{Services, block, run_item};
    use crate::net_guard::Targets;
    use crate::secrets::SecretBox;
    use crate::testing::MemStore;
    use axum::http::{HeaderMap, Uri};
    use std::sync::{Arc, Mutex};
    use tokio::time::Instant;

    type Log = Arc<Mutex<Vec<(String, HeaderMap, String)>>>;

    /// A loopback API that records each request (path and query, headers, body).
    async fn receiver() -> (String, Log) {
        let log: Log = Arc::default();
        let l2 = log.clone();
        let app = axum::Router::new().fallback(move |uri: Uri, h: HeaderMap, body: String| {
            let log = l2.clone();
            async move {
                log.lock().unwrap().push((uri.to_string(), h, body));
                axum::Json(json!({"ok": true}))
            }
        });
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://127.0.0.1:{}", l.local_addr().unwrap().port());
        tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
        (base, log)
    }

    async fn services(conns: &[Value]) -> Services {
        let store = Arc::new(MemStore::new());
        let secrets = Arc::new(SecretBox::ephemeral());
        for c in conns {
            crate::connections::create(&*store, &secrets, "acct_a", c).await.unwrap();
        }
        Services { store, secrets, http: GuardedHttp::new(Targets::AllowPrivate), public_url: "https://b.test".into() }
    }

    async fn step(s: &Services, kind: &str, config: Value, run_conn: Option<&str>) -> Outcome {
        let data = json!({"input": {"id": "cus_1"}, "run": {"metadata": {"connection_id": run_conn}}});
        let cx = BlockContext {
            account_id: "acct_a",
            run_id: "run_1",
            run: &run_item(),
            step_key: "s",
            attempt: 1,
            deadline: Instant::now() + Duration::from_secs(20),
            idempotency_key: "run_1:s".into(),
            data: &data,
            services: s,
        };
        crate::blocks::execute(&block(kind, config), &cx).await
    }

    #[tokio::test]
    async fn platform_api_calls_base_url_plus_path_with_the_connections_auth() {
        let (base, log) = receiver().await;
        let s = services(&[
            json!({"id": "conn_api", "name": "A", "provider": "http", "base_url": format!("{base}/v2"),
                "credentials": {"type": "query", "name": "key", "value": "k1"}}),
            json!({"id": "conn_stripe", "name": "S", "provider": "stripe", "base_url": base,
                "credentials": {"api_key": "sk_test_9"}}),
        ])
        .await;
        let out = step(
            &s,
            "platform_api",
            json!({"connection_id": "conn_api", "path": "/things/{{input.id}}",
            "query": {"q": "x"}}),
            None,
        )
        .await;
        let Outcome::Output(out) = out else { panic!("{out:?}") };
        assert_eq!((out["status"].clone(), out["body"].clone()), (json!(200), json!({"ok": true})));
        let out = step(
            &s,
            "platform_api",
            json!({"provider": "stripe", "method": "POST", "path": "/v1/customers",
            "body": {"email": "a@b.test", "metadata": {"k": "v"}}}),
            None,
        )
        .await;
        assert!(matches!(out, Outcome::Output(_)), "{out:?}");
        let seen = log.lock().unwrap().clone();
        assert_eq!(seen[0].0, "/v2/things/cus_1?q=x&key=k1");
        assert_eq!(seen[1].0, "/v1/customers");
        assert_eq!(seen[1].1["authorization"], "Bearer sk_test_9");
        assert_eq!(seen[1].2, "email=a%40b.test&metadata%5Bk%5D=v", "Stripe's form encoding");
    }

    #[tokio::test]
    async fn general_api_applies_a_connection_only_under_its_base_url() {
        let (base, log) = receiver().await;
        let s = services(&[json!({"id": "conn_h", "name": "H", "provider": "http", "base_url": format!("{base}/api"),
            "credentials": {"type": "header", "name": "X-Api-Key", "value": "secret-1"}})])
        .await;
        let cfg = json!({"url": format!("{base}/api/x"), "connection_id": "conn_h", "headers": {"x-api-key": "mine"}});
        let out = step(&s, "general_api", cfg, None).await;
        assert!(matches!(out, Outcome::Output(_)), "{out:?}");
        assert_eq!(log.lock().unwrap()[0].1.get_all("x-api-key").iter().collect::<Vec<_>>(), ["secret-1"]);
        let cfg = json!({"url": format!("{base}/elsewhere"), "connection_id": "conn_h"});
        let Outcome::Fail(e) = step(&s, "general_api", cfg, None).await else { panic!() };
        assert_eq!(e.code, "CONNECTION_URL_MISMATCH");
        assert_eq!(log.lock().unwrap().len(), 1, "nothing sent");
        let Outcome::Fail(e) = step(&s, "general_api", json!({"url": base, "connection_id": "conn_none"}), None).await
        else {
            panic!()
        };
        assert_eq!(e.code, "CONNECTION_NOT_FOUND");
    }

    #[tokio::test]
    async fn an_action_without_a_connection_of_its_provider_says_so() {
        let s = services(&[]).await;
        let b = Block {
            action: Some("slack.postMessage".into()),
            ..block("action", json!({"channel": "#x", "text": "t"}))
        };
        let data = json!({"run": {"metadata": {}}});
        let cx = BlockContext {
            account_id: "acct_a",
            run_id: "run_1",
            run: &run_item(),
            step_key: "s",
            attempt: 1,
            deadline: Instant::now() + Duration::from_secs(5),
            idempotency_key: "run_1:s".into(),
            data: &data,
            services: &s,
        };
        let Outcome::Fail(e) = crate::blocks::execute(&b, &cx).await else { panic!() };
        assert_eq!(e.code, "CONNECTION_MISSING");
        assert!(e.message.contains("slack"), "{}", e.message);
    }

    #[test]
    fn the_config_is_checked_at_save() {
        assert!(check(&json!({"path": "/x"})).unwrap_err().contains("connection_id"));
        assert!(check(&json!({"provider": "ftp", "path": "/x"})).unwrap_err().contains("provider"));
        assert!(check(&json!({"provider": "stripe"})).unwrap_err().contains("path"));
        assert!(check(&json!({"provider": "stripe", "path": "v1/x"})).unwrap_err().contains("'/'"));
        assert!(
            check(&json!({"provider": "stripe", "path": "/v1/x", "method": "FETCH"})).unwrap_err().contains("method")
        );
        assert!(check(&json!({"provider": "stripe", "path": "/v1/x", "async": true})).unwrap_err().contains("async"));
        assert!(check(&json!({"connection_id": "conn_a", "path": "{{input.p}}"})).is_ok());
        assert!(
            check(&json!({"provider": "github", "path": "/repos/a/b", "method": "GET", "query": {"x": 1}})).is_ok()
        );
    }
}

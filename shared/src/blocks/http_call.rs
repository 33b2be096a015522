//! `general_api` (alias `api_call`): one HTTP request built from templates, through the
//! guarded client (private targets refused unless the operator allows them, no redirects).
//!
//! Config `{method, url, headers, query, body, body_type: json|form|text, timeout_ms,
//! fail_on_status, async, callback_timeout, default, connection_id}` (a connection's auth,
//! `crate::connections`, for a URL under its `base_url`); output `{status, headers, body}`,
//! the body parsed when the answer says it is JSON. A non-2xx answer fails the step with
//! `HTTP_<status>` (unless `fail_on_status: false`); 408, 429 and 5xx are retryable, after
//! at least the answer's `Retry-After`. With `"async": true` the step mints a callback token,
//! offers `{{callback.url}}` / `{{callback.token}}` to the templates, sends them as
//! `Baton-Callback-Url` / `Baton-Callback-Token`, and after a 2xx answer waits for
//! `POST /api/v1/callback` (the engine's wait primitive).

use super::{BlockContext, Outcome, StepError, WaitSpec, invalid, render};
use crate::graph::Block;
use serde_json::{Map, Value, json};
use std::time::Duration;

pub const DEFAULT_TIMEOUT_MS: u64 = 30_000;
pub const MAX_TIMEOUT_MS: u64 = 900_000;
/// The most of an answer's body that is read; a longer one fails the step.
pub const MAX_RESPONSE_BYTES: usize = 1024 * 1024;
/// How much of a failing answer's body the error message quotes.
const EXCERPT: usize = 300;
/// The longest `Retry-After` honoured; the queue's delayed messages carry longer waits,
/// but an API asking for more than this is better failed and redriven.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);
const METHODS: &[&str] = &["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"];

/// A request, rendered and checked.
#[derive(Clone, Debug, PartialEq)]
pub struct Request {
    pub method: reqwest::Method,
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub query: Vec<(String, String)>,
    pub body: Body,
    pub timeout: Duration,
    pub fail_on_status: bool,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Body {
    None,
    Json(Value),
    Form(Vec<(String, String)>),
    Text(String),
}

fn is_template(v: &Value) -> bool {
    v.as_str().is_some_and(|s| s.contains("{{"))
}

/// The check at save: what can be told before templates are filled in.
pub fn check(c: &Value) -> Result<(), String> {
    match c.get("url") {
        None | Some(Value::Null) => return Err("general_api needs `url`".into()),
        Some(Value::String(u)) if !u.contains("{{") => {
            crate::net_guard::parse_url("url", u).map_err(|e| e.to_string())?;
        }
        Some(Value::String(_)) => {}
        Some(_) => return Err("`url` must be a string".into()),
    }
    if let Some(m) = c.get("method").filter(|m| !is_template(m)) {
        method(m)?;
    }
    for k in ["headers", "query"] {
        if let Some(v) = c.get(k).filter(|v| !is_template(v) && !v.is_null())
            && !v.is_object()
        {
            return Err(format!("`{k}` must be an object"));
        }
    }
    if let Some(t) = c.get("body_type").filter(|t| !is_template(t)) {
        match t.as_str() {
            Some("json" | "form" | "text") => {}
            _ => return Err("`body_type` must be \"json\", \"form\" or \"text\"".into()),
        }
    }
    if let Some(t) = c.get("timeout_ms").filter(|t| !is_template(t)) {
        timeout(t)?;
    }
    for k in ["fail_on_status", "async"] {
        if let Some(v) = c.get(k).filter(|v| !is_template(v) && !v.is_null())
            && !v.is_boolean()
        {
            return Err(format!("`{k}` must be true or false"));
        }
    }
    if let Some(v) = c.get("connection_id").filter(|v| !v.is_null())
        && !v.is_string()
    {
        return Err("`connection_id` must be a string".into());
    }
    if let Some(t) = c.get("callback_timeout").filter(|t| !is_template(t)) {
        crate::duration::parse_duration(t).map_err(|e| format!("`callback_timeout`: {e}"))?;
    }
    Ok(())
}

fn method(v: &Value) -> Result<reqwest::Method, String> {
    let m = v.as_str().map(str::to_ascii_uppercase).unwrap_or_default();
    if !METHODS.contains(&m.as_str()) {
        return Err(format!("`method` must be one of {}", METHODS.join(", ")));
    }
    reqwest::Method::from_bytes(m.as_bytes()).map_err(|e| e.to_string())
}

fn timeout(v: &Value) -> Result<Duration, String> {
    match v.as_u64() {
        Some(n) if (1..=MAX_TIMEOUT_MS).contains(&n) => Ok(Duration::from_millis(n)),
        _ => Err(format!("`timeout_ms` must be an integer from 1 to {MAX_TIMEOUT_MS}")),
    }
}

/// A JSON value as a header, query or form value: strings as they are, the rest as JSON.
pub fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// Name/value pairs of an object; an array value repeats its name.
fn pairs(v: Option<&Value>, field: &str) -> Result<Vec<(String, String)>, String> {
    match v {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Object(o)) => {
            let mut out = Vec::new();
            for (k, v) in o {
                match v {
                    Value::Array(xs) => out.extend(xs.iter().map(|x| (k.clone(), text(x)))),
                    Value::Null => {}
                    v => out.push((k.clone(), text(v))),
                }
            }
            Ok(out)
        }
        Some(_) => Err(format!("`{field}` must be an object")),
    }
}

/// Reads a rendered config into a request.
pub fn request(c: &Value) -> Result<Request, String> {
    let url = match c.get("url") {
        Some(Value::String(u)) if !u.is_empty() => u.clone(),
        _ => return Err("`url` must be a non-empty string".into()),
    };
    let method = match c.get("method") {
        None | Some(Value::Null) => reqwest::Method::GET,
        Some(m) => method(m)?,
    };
    let body = match (c.get("body"), c.get("body_type").and_then(Value::as_str)) {
        (None | Some(Value::Null), _) => Body::None,
        (Some(b), None | Some("json")) => Body::Json(b.clone()),
        (Some(b), Some("form")) => Body::Form(pairs(Some(b), "body")?),
        (Some(b), Some("text")) => Body::Text(text(b)),
        (Some(_), Some(_)) => return Err("`body_type` must be \"json\", \"form\" or \"text\"".into()),
    };
    let timeout = match c.get("timeout_ms") {
        None | Some(Value::Null) => Duration::from_millis(DEFAULT_TIMEOUT_MS),
        Some(t) => timeout(t)?,
    };
    let fail_on_status = c.get("fail_on_status").and_then(Value::as_bool).unwrap_or(true);
    Ok(Request {
        method,
        url,
        headers: pairs(c.get("headers"), "headers")?,
        query: pairs(c.get("query"), "query")?,
        body,
        timeout,
        fail_on_status,
    })
}

/// What an answer came to.
#[derive(Clone, Debug, PartialEq)]
pub struct Answer {
    pub status: u16,
    pub headers: Map<String, Value>,
    pub body: Value,
}

impl Answer {
    pub fn to_json(&self) -> Value {
        json!({"status": self.status, "headers": self.headers, "body": self.body})
    }
}

/// Sends `req` through the guarded client; `Err` for anything but an answer read in full.
pub async fn send(http: &crate::adapters::http::GuardedHttp, req: &Request) -> Result<Answer, StepError> {
    let client = http.client().map_err(|e| StepError::fatal("HTTP_CLIENT", e))?;
    let mut url = http.vet("url", &req.url).map_err(|e| StepError::fatal("TARGET_REFUSED", e))?;
    if !req.query.is_empty() {
        url.query_pairs_mut().extend_pairs(req.query.iter());
    }
    let mut rb = client.request(req.method.clone(), url).timeout(req.timeout);
    match &req.body {
        Body::None => {}
        Body::Json(v) => rb = rb.json(v),
        Body::Form(p) => rb = rb.form(p),
        Body::Text(t) => rb = rb.header(reqwest::header::CONTENT_TYPE, "text/plain; charset=utf-8").body(t.clone()),
    }
    // The caller's headers last: they may set their own Content-Type.
    for (k, v) in &req.headers {
        let name = reqwest::header::HeaderName::from_bytes(k.as_bytes())
            .map_err(|_| invalid(format!("`headers`: \"{k}\" is not a valid header name")))?;
        let value = reqwest::header::HeaderValue::from_str(v)
            .map_err(|_| invalid(format!("`headers`: the value of \"{k}\" is not a valid header value")))?;
        rb = rb.header(name, value);
    }
    let what = format!("{} {}", req.method, req.url);
    let mut resp = rb.send().await.map_err(|e| transport_error(&what, &e, req.timeout))?;
    let status = resp.status().as_u16();
    let mut headers = Map::new();
    for (k, v) in resp.headers() {
        let v = String::from_utf8_lossy(v.as_bytes()).into_owned();
        match headers.get_mut(k.as_str()) {
            Some(Value::String(prev)) => {
                prev.push_str(", ");
                prev.push_str(&v);
            }
            _ => {
                headers.insert(k.as_str().to_string(), Value::String(v));
            }
        }
    }
    let mut bytes = Vec::new();
    loop {
        match resp.chunk().await {
            Ok(Some(c)) => {
                if bytes.len() + c.len() > MAX_RESPONSE_BYTES {
                    return Err(StepError::fatal(
                        "RESPONSE_TOO_LARGE",
                        format!("{what} answered with more than {MAX_RESPONSE_BYTES} bytes"),
                    ));
                }
                bytes.extend_from_slice(&c);
            }
            Ok(None) => break,
            Err(e) => return Err(transport_error(&what, &e, req.timeout)),
        }
    }
    let is_json = headers.get("content-type").and_then(Value::as_str).is_some_and(|ct| {
        let essence = ct.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
        essence == "application/json" || essence.ends_with("+json")
    });
    let body = match is_json.then(|| serde_json::from_slice::<Value>(&bytes).ok()).flatten() {
        Some(v) => v,
        None => Value::String(String::from_utf8_lossy(&bytes).into_owned()),
    };
    Ok(Answer { status, headers, body })
}

fn transport_error(what: &str, e: &reqwest::Error, timeout: Duration) -> StepError {
    if let Some(why) = crate::adapters::http::refused_in(e) {
        return StepError::fatal("TARGET_REFUSED", why);
    }
    if e.is_timeout() {
        return StepError::retryable("TIMEOUT", format!("{what}: no answer within {} ms", timeout.as_millis()));
    }
    StepError::retryable("HTTP_UNREACHABLE", format!("{what}: {}", crate::adapters::http::chain(e)))
}

/// The step error of a non-2xx answer: `HTTP_<status>`, retryable for 408, 429 and 5xx
/// (after `Retry-After` when the answer gives one).
pub fn status_error(what: &str, a: &Answer) -> StepError {
    let body = match &a.body {
        Value::String(s) => s.clone(),
        v => v.to_string(),
    };
    let mut excerpt: String = body.chars().take(EXCERPT).collect();
    if excerpt.len() < body.len() {
        excerpt.push('…');
    }
    let message = if excerpt.is_empty() {
        format!("{what} answered {}", a.status)
    } else {
        format!("{what} answered {}: {excerpt}", a.status)
    };
    let code = format!("HTTP_{}", a.status);
    if matches!(a.status, 408 | 429) || a.status >= 500 {
        let mut e = StepError::retryable(&code, message);
        e.retry_after = a.headers.get("retry-after").and_then(Value::as_str).and_then(retry_after);
        e
    } else {
        StepError::fatal(&code, message)
    }
}

/// `Retry-After`: seconds, or an HTTP date.
fn retry_after(v: &str) -> Option<Duration> {
    let v = v.trim();
    let d = match v.parse::<u64>() {
        Ok(secs) => Duration::from_secs(secs),
        Err(_) => {
            let at = chrono::DateTime::parse_from_rfc2822(v).ok()?;
            let ms = at.timestamp_millis() - crate::ids::now_ms();
            Duration::from_millis(ms.max(0) as u64)
        }
    };
    Some(d.min(MAX_RETRY_AFTER))
}

/// The step.
pub(super) async fn run(block: &Block, cx: &BlockContext<'_>) -> Outcome {
    match execute(block, cx).await {
        Ok(o) => o,
        Err(e) => Outcome::Fail(e),
    }
}

async fn execute(block: &Block, cx: &BlockContext<'_>) -> Result<Outcome, StepError> {
    let c = &block.config;
    let wants_callback = c.get("async").and_then(Value::as_bool).unwrap_or(false);
    let mut callback = None;
    let cfg = if wants_callback {
        let (token, hash) = crate::ids::new_wait_token();
        let url = format!("{}/api/v1/callback?token={token}", cx.services.public_url.trim_end_matches('/'));
        let mut data = cx.data.clone();
        data["callback"] = json!({"url": url, "token": token});
        let cfg = render(c, &data)?;
        callback = Some((url, token, hash));
        cfg
    } else {
        render(c, cx.data)?
    };
    let mut req = request(&cfg).map_err(invalid)?;
    req.timeout = req.timeout.min(cx.remaining());
    if let Some(id) = super::platform_api::connection_id(&cfg)? {
        let conn =
            super::platform_api::connection_for(cx, super::platform_api::HTTP_PROVIDERS, Some(id), "general_api")
                .await?;
        super::platform_api::authorize(&conn, &mut req)?;
    }
    if let Some((url, token, _)) = &callback {
        req.headers.push(("Baton-Callback-Url".into(), url.clone()));
        req.headers.push(("Baton-Callback-Token".into(), token.clone()));
    }
    let answer = send(&cx.services.http, &req).await?;
    let ok = (200..300).contains(&answer.status);
    if !ok && req.fail_on_status {
        return Err(status_error(&format!("{} {}", req.method, req.url), &answer));
    }
    let Some((_, _, hash)) = callback.filter(|_| ok) else {
        return Ok(Outcome::Output(answer.to_json()));
    };
    let timeout = cfg
        .get("callback_timeout")
        .filter(|t| !t.is_null())
        .map(crate::duration::parse_duration)
        .transpose()
        .map_err(|e| invalid(format!("`callback_timeout`: {e}")))?;
    // A callback answer is read as `{"output": …}`; the default is given the same shape.
    let default = cfg.get("default").filter(|d| !d.is_null()).map(|d| json!({"output": d}));
    Ok(Outcome::Wait(WaitSpec {
        kind: "callback".into(),
        prompt: json!({"request": {"method": req.method.as_str(), "url": req.url}, "response": answer.to_json()}),
        timeout,
        default,
        extra: json!({}),
        token_hash: Some(hash),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::adapters::http::GuardedHttp;
    use crate::blocks::{Services, block, run_item};
    use crate::net_guard::Targets;
    use axum::body::Bytes;
    use axum::extract::State;
    use axum::http::{HeaderMap, Method, StatusCode, Uri};
    use axum::response::{IntoResponse, Response};
    use std::sync::{Arc, Mutex};
    use tokio::time::Instant;

    /// One request as the receiver saw it.
    #[derive(Clone, Debug)]
    struct Seen {
        method: String,
        uri: String,
        headers: HeaderMap,
        body: String,
    }

    type Log = Arc<Mutex<Vec<Seen>>>;

    /// A loopback HTTP server: `/json` answers JSON, `/status/{n}` that status (with
    /// `Retry-After` from `?after=`), `/big` more than the response limit, `/text` plain text.
    async fn receiver() -> (String, Log) {
        async fn handle(State(log): State<Log>, method: Method, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
            log.lock().unwrap().push(Seen {
                method: method.to_string(),
                uri: uri.to_string(),
                headers,
                body: String::from_utf8_lossy(&body).into_owned(),
            });
            let path = uri.path();
            if let Some(n) = path.strip_prefix("/status/") {
                let status = StatusCode::from_u16(n.parse().unwrap()).unwrap();
                let after = uri.query().and_then(|q| q.strip_prefix("after=")).unwrap_or("").to_string();
                let mut resp = (status, [("content-type", "application/json")], r#"{"error":"nope"}"#).into_response();
                if !after.is_empty() {
                    let v = after.replace("%20", " ").replace("%2C", ",");
                    resp.headers_mut().insert("retry-after", v.parse().unwrap());
                }
                return resp;
            }
            match path {
                "/big" => "x".repeat(MAX_RESPONSE_BYTES + 1).into_response(),
                "/text" => "plain words".into_response(),
                _ => (
                    StatusCode::CREATED,
                    [("content-type", "application/json; charset=utf-8")],
                    r#"{"id":"obj_1","ok":true}"#,
                )
                    .into_response(),
            }
        }
        let log: Log = Arc::default();
        let app = axum::Router::new().fallback(handle).with_state(log.clone());
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://127.0.0.1:{}", l.local_addr().unwrap().port());
        tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
        (base, log)
    }

    fn services(targets: Targets) -> Services {
        Services {
            store: Arc::new(crate::testing::MemStore::new()),
            secrets: Arc::new(crate::secrets::SecretBox::ephemeral()),
            http: GuardedHttp::new(targets),
            public_url: "https://baton.example/".into(),
        }
    }

    async fn call(config: Value, targets: Targets) -> Outcome {
        let s = services(targets);
        let data =
            json!({"input": {"name": "Ada", "n": 3, "tags": ["a", "b"]}, "steps": {}, "vars": {"token": "sekrit"}});
        let cx = BlockContext {
            account_id: "acct_a",
            run_id: "run_1",
            run: &run_item(),
            step_key: "call",
            attempt: 1,
            deadline: Instant::now() + Duration::from_secs(20),
            idempotency_key: "run_1:call".into(),
            data: &data,
            services: &s,
        };
        run(&block("general_api", config), &cx).await
    }

    fn failed(o: Outcome) -> StepError {
        match o {
            Outcome::Fail(e) => e,
            other => panic!("expected a failure, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_templated_json_request_is_sent_and_the_json_answer_parsed() {
        let (base, log) = receiver().await;
        let cfg = json!({"method": "post", "url": format!("{base}/things"),
            "headers": {"Authorization": "Bearer {{vars.token}}", "X-N": "{{input.n}}"},
            "query": {"q": "{{input.name}}", "tag": "{{input.tags}}"},
            "body": {"name": "{{input.name}}", "n": "{{input.n}}"}});
        let Outcome::Output(out) = call(cfg, Targets::AllowPrivate).await else { panic!() };
        assert_eq!(out["status"], 201);
        assert_eq!(out["body"], json!({"id": "obj_1", "ok": true}));
        assert_eq!(out["headers"]["content-type"], "application/json; charset=utf-8");
        let seen = log.lock().unwrap()[0].clone();
        assert_eq!(seen.method, "POST");
        assert_eq!(seen.uri, "/things?q=Ada&tag=a&tag=b");
        assert_eq!(seen.headers["authorization"], "Bearer sekrit");
        assert_eq!(seen.headers["x-n"], "3");
        assert_eq!(seen.headers["content-type"], "application/json");
        assert_eq!(serde_json::from_str::<Value>(&seen.body).unwrap(), json!({"name": "Ada", "n": 3}));
    }

    #[tokio::test]
    async fn form_and_text_bodies_are_encoded_as_asked_and_text_answers_kept_as_text() {
        let (base, log) = receiver().await;
        let cfg = json!({"method": "PUT", "url": format!("{base}/text"), "body_type": "form",
            "body": {"name": "{{input.name}} L", "n": "{{input.n}}"}});
        let Outcome::Output(out) = call(cfg, Targets::AllowPrivate).await else { panic!() };
        assert_eq!(out["body"], "plain words");
        let cfg =
            json!({"method": "POST", "url": format!("{base}/x"), "body_type": "text", "body": "hi {{input.name}}"});
        call(cfg, Targets::AllowPrivate).await;
        let seen = log.lock().unwrap().clone();
        assert_eq!(seen[0].headers["content-type"], "application/x-www-form-urlencoded");
        assert_eq!(seen[0].body, "name=Ada+L&n=3");
        assert_eq!(seen[1].headers["content-type"], "text/plain; charset=utf-8");
        assert_eq!(seen[1].body, "hi Ada");
    }

    #[tokio::test]
    async fn a_client_error_fails_at_once_and_a_server_error_is_retryable_after_retry_after() {
        let (base, _log) = receiver().await;
        let e = failed(call(json!({"url": format!("{base}/status/404")}), Targets::AllowPrivate).await);
        assert_eq!((e.code.as_str(), e.retryable), ("HTTP_404", false));
        assert!(e.message.contains("answered 404") && e.message.contains("nope"), "{}", e.message);
        let e = failed(call(json!({"url": format!("{base}/status/503?after=7")}), Targets::AllowPrivate).await);
        assert_eq!((e.code.as_str(), e.retryable, e.retry_after), ("HTTP_503", true, Some(Duration::from_secs(7))));
        let e = failed(call(json!({"url": format!("{base}/status/429")}), Targets::AllowPrivate).await);
        assert_eq!((e.code.as_str(), e.retryable, e.retry_after), ("HTTP_429", true, None));
    }

    #[test]
    fn retry_after_reads_seconds_and_http_dates() {
        assert_eq!(retry_after(" 12 "), Some(Duration::from_secs(12)));
        assert_eq!(retry_after("999999"), Some(MAX_RETRY_AFTER));
        assert_eq!(retry_after("Wed, 21 Oct 2015 07:28:00 GMT"), Some(Duration::ZERO), "a past date: now");
        let later = (chrono::Utc::now() + chrono::Duration::seconds(120)).to_rfc2822();
        let d = retry_after(&later).unwrap();
        assert!(d > Duration::from_secs(100) && d <= Duration::from_secs(120), "{d:?}");
        assert_eq!(retry_after("soon"), None);
    }

    #[tokio::test]
    async fn fail_on_status_false_makes_any_answer_the_output() {
        let (base, _log) = receiver().await;
        let cfg = json!({"url": format!("{base}/status/500"), "fail_on_status": false});
        let Outcome::Output(out) = call(cfg, Targets::AllowPrivate).await else { panic!() };
        assert_eq!((out["status"].clone(), out["body"].clone()), (json!(500), json!({"error": "nope"})));
    }

    #[tokio::test]
    async fn an_answer_over_the_size_limit_fails_the_step() {
        let (base, _log) = receiver().await;
        let e = failed(call(json!({"url": format!("{base}/big")}), Targets::AllowPrivate).await);
        assert_eq!((e.code.as_str(), e.retryable), ("RESPONSE_TOO_LARGE", false));
    }

    #[tokio::test]
    async fn private_targets_are_refused_unless_allowed_and_nothing_is_sent() {
        let (base, log) = receiver().await;
        let e = failed(call(json!({"url": format!("{base}/json")}), Targets::PublicOnly).await);
        assert_eq!((e.code.as_str(), e.retryable), ("TARGET_REFUSED", false));
        let port = base.rsplit(':').next().unwrap();
        let e = failed(call(json!({"url": format!("http://localhost:{port}/json")}), Targets::PublicOnly).await);
        assert_eq!(e.code, "TARGET_REFUSED", "{}", e.message);
        assert!(log.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn an_unreachable_target_is_retryable() {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let e = failed(call(json!({"url": format!("http://127.0.0.1:{port}/")}), Targets::AllowPrivate).await);
        assert_eq!((e.code.as_str(), e.retryable), ("HTTP_UNREACHABLE", true));
    }

    #[tokio::test]
    async fn an_async_call_offers_and_sends_its_callback_then_waits_on_the_token() {
        let (base, log) = receiver().await;
        let cfg = json!({"method": "POST", "url": format!("{base}/jobs"), "async": true,
            "body": {"notify": "{{callback.url}}", "token": "{{callback.token}}"},
            "callback_timeout": "10m", "default": {"status": "unknown"}});
        let Outcome::Wait(w) = call(cfg, Targets::AllowPrivate).await else { panic!() };
        let seen = log.lock().unwrap()[0].clone();
        let token = seen.headers["baton-callback-token"].to_str().unwrap().to_string();
        let url = seen.headers["baton-callback-url"].to_str().unwrap().to_string();
        assert_eq!(url, format!("https://baton.example/api/v1/callback?token={token}"));
        assert_eq!(serde_json::from_str::<Value>(&seen.body).unwrap(), json!({"notify": url, "token": token}));
        assert_eq!(w.kind, "callback");
        assert_eq!(w.token_hash, Some(crate::ids::hash_secret(&token)));
        assert_eq!(w.timeout, Some(Duration::from_secs(600)));
        assert_eq!(w.default, Some(json!({"output": {"status": "unknown"}})));
        assert_eq!(w.prompt["response"]["status"], 201);
    }

    #[tokio::test]
    async fn an_async_call_whose_request_fails_does_not_wait() {
        let (base, _log) = receiver().await;
        let e = failed(call(json!({"url": format!("{base}/status/400"), "async": true}), Targets::AllowPrivate).await);
        assert_eq!(e.code, "HTTP_400");
    }

    #[test]
    fn the_config_is_checked_at_save_where_no_template_decides() {
        assert!(check(&json!({})).unwrap_err().contains("needs `url`"));
        assert!(check(&json!({"url": "ftp://x"})).unwrap_err().contains("http"));
        assert!(check(&json!({"url": "{{input.url}}"})).is_ok());
        assert!(check(&json!({"url": "https://x.test", "method": "FETCH"})).unwrap_err().contains("method"));
        assert!(check(&json!({"url": "https://x.test", "body_type": "xml"})).unwrap_err().contains("body_type"));
        assert!(check(&json!({"url": "https://x.test", "headers": []})).unwrap_err().contains("headers"));
        assert!(check(&json!({"url": "https://x.test", "timeout_ms": 0})).unwrap_err().contains("timeout_ms"));
        assert!(check(&json!({"url": "https://x.test", "async": "yes"})).unwrap_err().contains("async"));
        assert!(
            check(&json!({"url": "https://x.test", "callback_timeout": "soon"}))
                .unwrap_err()
                .contains("callback_timeout")
        );
    }
}

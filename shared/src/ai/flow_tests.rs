//! AI runs end to end on the SQLite adapters, against fake providers on 127.0.0.1 that
//! speak each wire format: providers, agent steps (text, structured, repair, usage), the
//! journal across a redelivery, the retry classifier on real answers, planned runs.

use super::fake::{Fake, Script, Seen, openai_answer};
use super::providers::{Kind, Resolved};
use super::wire::{ChatRequest, Message};
use super::{AiSettings, call};
use crate::adapters::http::GuardedHttp;
use crate::adapters::{Sqlite, SqliteQueue, SqliteStore};
use crate::api::router;
use crate::app::{App, AppConfig, AppState};
use crate::net_guard::Targets;
use crate::store::{Cond, Item, Key, Page, Query, Store, Update, Write};
use axum::Router;
use axum::body::Body;
use http::{Method, Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tower::ServiceExt;

struct T {
    app: Router,
    state: AppState,
    key: String,
    _dir: tempfile::TempDir,
}

async fn setup_with(ai: AiSettings, wrap: impl FnOnce(Arc<dyn Store>) -> Arc<dyn Store>) -> T {
    let dir = tempfile::tempdir().unwrap();
    let db = Sqlite::open(&dir.path().join("t.db")).unwrap();
    let cfg = AppConfig { allow_private_targets: true, ai, ..AppConfig::default() };
    let store = wrap(Arc::new(SqliteStore::new(db.clone())));
    let state = App::new(
        store,
        Arc::new(SqliteQueue::new(db, "steps", 5)),
        Arc::new(crate::secrets::SecretBox::ephemeral()),
        cfg,
    );
    let app = router(state.clone());
    let mut t = T { app, state, key: String::new(), _dir: dir };
    let (s, b) = t.call(Method::POST, "/api/v1/auth/register", Some(json!({"name": "t"}))).await;
    assert_eq!(s, StatusCode::CREATED);
    t.key = b["api_key"].as_str().unwrap().to_string();
    t
}

async fn setup() -> T {
    setup_with(AiSettings::default(), |s| s).await
}

impl T {
    async fn call(&self, m: Method, uri: &str, body: Option<Value>) -> (StatusCode, Value) {
        let mut req = Request::builder().method(m).uri(uri);
        if !self.key.is_empty() {
            req = req.header("x-api-key", &self.key);
        }
        let req = match body {
            Some(b) => req.header("content-type", "application/json").body(Body::from(b.to_string())).unwrap(),
            None => req.body(Body::empty()).unwrap(),
        };
        let res = self.app.clone().oneshot(req).await.unwrap();
        let status = res.status();
        let bytes = res.into_body().collect().await.unwrap().to_bytes();
        (status, if bytes.is_empty() { Value::Null } else { serde_json::from_slice(&bytes).unwrap() })
    }

    /// Plays the queue until nothing is left to do right now.
    async fn drain(&self) {
        crate::testing::drain(&self.state).await
    }

    async fn provider(&self, body: Value) -> String {
        let (s, b) = self.call(Method::POST, "/api/v1/providers", Some(body)).await;
        assert_eq!(s, StatusCode::CREATED, "{b}");
        b["provider_id"].as_str().unwrap().to_string()
    }

    /// Runs a one-agent workflow to its end; the run afterwards.
    async fn agent_run(&self, id: &str, config: Value, input: Value) -> Value {
        let wf = json!({"id": id, "name": id, "status": "active", "steps": [{"id": "ask", "type": "agent", "config": config}]});
        let (s, b) = self.call(Method::POST, "/api/v1/workflows", Some(wf)).await;
        assert_eq!(s, StatusCode::CREATED, "{b}");
        let (s, r) =
            self.call(Method::POST, &format!("/api/v1/workflows/{id}/run"), Some(json!({"input": input}))).await;
        assert_eq!(s, StatusCode::CREATED, "{r}");
        self.drain().await;
        self.call(Method::GET, &format!("/api/v1/runs/{}", r["run_id"].as_str().unwrap()), None).await.1
    }
}

fn script(f: impl Fn(&Seen, usize) -> (u16, Vec<(&'static str, String)>, Value) + Send + Sync + 'static) -> Script {
    Arc::new(f)
}

fn ok(body: Value) -> (u16, Vec<(&'static str, String)>, Value) {
    (200, Vec::new(), body)
}

fn last_user(seen: &Seen) -> String {
    let ms = seen.body["messages"].as_array().cloned().unwrap_or_default();
    ms.iter().rev().find(|m| m["role"] == "user").and_then(|m| m["content"].as_str()).unwrap_or_default().to_string()
}

#[tokio::test]
async fn an_agent_step_renders_its_templates_calls_the_provider_and_records_usage() {
    let fake = Fake::start(script(|_, _| ok(openai_answer("Rust is a systems language.", 12, 6)))).await;
    let t = setup().await;
    let prov = t.provider(json!({"provider": "openai", "api_key": "sk-test-123", "base_url": format!("{}/v1", fake.url), "model": "gpt-4o-mini"})).await;
    let run = t
        .agent_run(
            "one",
            json!({"provider_id": prov, "system": "Answer in one sentence about {{input.topic}}.", "prompt": "What is {{input.topic}}?", "temperature": 0}),
            json!({"topic": "Rust"}),
        )
        .await;
    assert_eq!(run["status"], "completed", "{run}");
    assert_eq!(run["output"], "Rust is a systems language.");
    let seen = fake.requests();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].path, "/v1/chat/completions");
    assert_eq!(seen[0].header("authorization"), Some("Bearer sk-test-123"));
    assert_eq!(seen[0].body["messages"][0], json!({"role": "system", "content": "Answer in one sentence about Rust."}));
    assert_eq!(seen[0].body["messages"][1]["content"], "What is Rust?");
    assert_eq!(seen[0].body["model"], "gpt-4o-mini");
    let step = &run["steps"][0];
    assert_eq!(step["usage"]["input_tokens"], 12);
    assert_eq!(step["usage"]["output_tokens"], 6);
    assert_eq!(step["usage"]["provider"], "openai");
    assert!(step["usage"]["cost_usd"].as_f64().unwrap() > 0.0);
    assert_eq!(run["usage"]["input_tokens"], 12);
    assert!(!run.to_string().contains("sk-test-123"));
}

#[tokio::test]
async fn a_structured_answer_off_the_schema_is_repaired_once_and_otherwise_fails_schema_mismatch() {
    let fake = Fake::start(script(|seen, _| {
        let repairing = last_user(seen).contains("does not match");
        let wants_good = seen.body["messages"][0]["content"].as_str().unwrap_or_default().contains("good");
        ok(openai_answer(if repairing && wants_good { r#"{"score": 7}"# } else { r#"{"score": "high"}"# }, 5, 5))
    }))
    .await;
    let t = setup().await;
    let prov = t.provider(json!({"provider": "openai", "api_key": "k", "base_url": format!("{}/v1", fake.url)})).await;
    let schema = json!({"type": "object", "required": ["score"], "properties": {"score": {"type": "integer"}}});
    let run = t
        .agent_run("fixed", json!({"provider_id": prov, "prompt": "rate: good", "output_schema": schema}), json!({}))
        .await;
    assert_eq!(run["status"], "completed", "{run}");
    assert_eq!(run["output"], json!({"score": 7}));
    let seen = fake.requests();
    assert_eq!(seen.len(), 2, "one call and one repair");
    assert_eq!(seen[0].body["response_format"]["json_schema"]["schema"], schema);
    assert_eq!(run["steps"][0]["usage"]["calls"], 2);

    let run = t
        .agent_run("broken", json!({"provider_id": prov, "prompt": "rate: bad", "output_schema": schema}), json!({}))
        .await;
    assert_eq!(run["status"], "failed");
    assert_eq!(run["error"]["code"], "SCHEMA_MISMATCH");
    assert!(run["error"]["message"].as_str().unwrap().contains(r#"{"score": "high"}"#), "{}", run["error"]);
    assert_eq!(fake.requests().len(), 4, "no retries after a mismatch");
}

/// A store whose first commit of a completed step (of `only`, when set) fails: the worker
/// "dies" after the provider answered and before the step committed.
struct CommitFailsOnce {
    inner: Arc<dyn Store>,
    armed: AtomicBool,
    only: Option<&'static str>,
}

impl CommitFailsOnce {
    fn completes_step(&self, key: &Key, u: &Update) -> bool {
        let step = self.only.map_or(key.sk.starts_with("STEP#"), |s| key.sk == format!("STEP#{s}"));
        step && u.set.get("status") == Some(&json!("completed"))
    }
}

#[async_trait::async_trait]
impl Store for CommitFailsOnce {
    async fn get(&self, key: &Key) -> crate::Result<Option<Item>> {
        self.inner.get(key).await
    }
    async fn get_many(&self, keys: &[Key]) -> crate::Result<Vec<Option<Item>>> {
        self.inner.get_many(keys).await
    }
    async fn put(&self, item: Item, cond: Option<Cond>) -> crate::Result<()> {
        self.inner.put(item, cond).await
    }
    async fn update(&self, key: &Key, update: Update, cond: Option<Cond>) -> crate::Result<Item> {
        if self.completes_step(key, &update) && self.armed.swap(false, Ordering::SeqCst) {
            return Err(crate::Error::Internal("the worker died before the commit".into()));
        }
        self.inner.update(key, update, cond).await
    }
    async fn delete(&self, key: &Key, cond: Option<Cond>) -> crate::Result<()> {
        self.inner.delete(key, cond).await
    }
    async fn transact(&self, writes: Vec<Write>) -> crate::Result<()> {
        let hit =
            writes.iter().any(|w| matches!(w, Write::Update { key, update, .. } if self.completes_step(key, update)));
        if hit && self.armed.swap(false, Ordering::SeqCst) {
            return Err(crate::Error::Internal("the worker died before the commit".into()));
        }
        self.inner.transact(writes).await
    }
    async fn query(&self, q: Query) -> crate::Result<Page> {
        self.inner.query(q).await
    }
}

/// An app whose store's [`CommitFailsOnce`] is armed by the test.
async fn setup_failing(only: Option<&'static str>) -> (T, Arc<std::sync::Mutex<Option<Arc<CommitFailsOnce>>>>) {
    let failing = Arc::new(std::sync::Mutex::new(None::<Arc<CommitFailsOnce>>));
    let slot = failing.clone();
    let t = setup_with(AiSettings::default(), move |inner| {
        let s = Arc::new(CommitFailsOnce { inner, armed: AtomicBool::new(false), only });
        *slot.lock().unwrap() = Some(s.clone());
        s
    })
    .await;
    (t, failing)
}

#[tokio::test]
async fn a_redelivery_after_the_answer_never_calls_the_provider_again() {
    let fake = Fake::start(script(|_, n| ok(openai_answer(&format!("answer #{n}"), 3, 2)))).await;
    let (t, failing) = setup_failing(None).await;
    let prov = t.provider(json!({"provider": "openai", "api_key": "k", "base_url": format!("{}/v1", fake.url)})).await;
    failing.lock().unwrap().as_ref().unwrap().armed.store(true, Ordering::SeqCst);
    let run = t.agent_run("dur", json!({"provider_id": prov, "prompt": "hi"}), json!({})).await;
    assert!(!failing.lock().unwrap().as_ref().unwrap().armed.load(Ordering::SeqCst), "the first commit failed");
    assert_eq!(run["status"], "completed", "{run}");
    assert_eq!(run["output"], "answer #0", "the journaled answer");
    assert_eq!(fake.requests().len(), 1, "the redelivered step read the journal instead of calling again");
    assert_eq!(run["steps"][0]["attempt"], 2);
}

#[tokio::test]
async fn provider_auth_failures_fail_the_step_at_once_without_the_key() {
    let fake = Fake::start(script(|_, _| {
        (401, Vec::new(), json!({"error": {"message": "Incorrect API key provided", "type": "invalid_request_error", "code": "invalid_api_key"}}))
    }))
    .await;
    let t = setup().await;
    let prov = t
        .provider(json!({"provider": "openai", "api_key": "sk-wrong-999", "base_url": format!("{}/v1", fake.url)}))
        .await;
    let run = t.agent_run("auth", json!({"provider_id": prov, "prompt": "hi"}), json!({})).await;
    assert_eq!(run["status"], "failed");
    assert_eq!(run["error"]["code"], "PROVIDER_AUTH");
    assert!(run["error"]["message"].as_str().unwrap().contains("Incorrect API key"));
    assert!(!run.to_string().contains("sk-wrong-999"));
    assert_eq!(fake.requests().len(), 1, "not retried");
}

#[tokio::test]
async fn a_deactivated_provider_is_404_over_http_and_fails_steps_that_name_it() {
    let t = setup().await;
    let prov = t.provider(json!({"provider": "anthropic", "api_key": "sk-ant-secret", "label": "mine"})).await;
    let (s, list) = t.call(Method::GET, "/api/v1/providers", None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(list["data"][0]["label"], "mine");
    assert!(!list.to_string().contains("sk-ant-secret"));
    let (s, _) = t.call(Method::DELETE, &format!("/api/v1/providers/{prov}"), None).await;
    assert_eq!(s, StatusCode::OK);
    let (s, b) = t.call(Method::GET, &format!("/api/v1/providers/{prov}"), None).await;
    assert_eq!((s, b["error"]["code"].as_str()), (StatusCode::NOT_FOUND, Some("NOT_FOUND")));
    let (s, b) = t.call(Method::POST, "/api/v1/providers", Some(json!({"provider": "cohere"}))).await;
    assert_eq!((s, b["error"]["details"][0]["path"].clone()), (StatusCode::BAD_REQUEST, json!(["provider"])));
    let run = t.agent_run("gone", json!({"provider_id": prov, "prompt": "hi"}), json!({})).await;
    assert_eq!(run["error"]["code"], "PROVIDER_NOT_FOUND");
    let (s, b) = t.call(Method::GET, "/api/v1/agents/templates", None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(b["data"].as_array().unwrap().len(), 6);
}

fn req(text: &str, schema: Option<Value>) -> ChatRequest {
    ChatRequest {
        model: "the-model".into(),
        system: Some("sys".into()),
        messages: vec![Message { role: "user".into(), content: text.into() }],
        schema,
        temperature: None,
        max_tokens: Some(50),
    }
}

fn resolved(kind: Kind, base_url: &str, key: Option<&str>) -> Resolved {
    Resolved {
        provider_id: None,
        kind,
        model: "the-model".into(),
        base_url: Some(base_url.into()),
        api_key: key.map(str::to_string),
        region: Some("us-east-1".into()),
        responses: Value::Null,
    }
}

fn http() -> GuardedHttp {
    GuardedHttp::new(Targets::AllowPrivate)
}

#[tokio::test]
async fn rate_limits_from_the_wire_are_retryable_no_sooner_than_retry_after() {
    let fake = Fake::start(script(|seen, _| match seen.path.as_str() {
        "/a/chat/completions" => (
            429,
            vec![("retry-after", "7".into())],
            json!({"error": {"message": "Rate limit reached", "type": "requests"}}),
        ),
        "/b/chat/completions" => (429, vec![("retry-after-ms", "1500".into())], json!({"error": {"message": "slow"}})),
        "/b/v1/messages" => {
            (529, Vec::new(), json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}))
        }
        _ => (
            429,
            Vec::new(),
            json!({"error": {"code": 429, "status": "RESOURCE_EXHAUSTED", "message": "quota per minute",
            "details": [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "3s"}]}}),
        ),
    }))
    .await;
    let t = Duration::from_secs(5);
    let f = call::chat(&http(), &resolved(Kind::OpenAi, &format!("{}/a", fake.url), Some("k")), &req("x", None), t)
        .await
        .err()
        .unwrap();
    assert_eq!((f.code, f.retryable, f.retry_after), ("PROVIDER_RATE_LIMITED", true, Some(Duration::from_secs(7))));
    let f = call::chat(&http(), &resolved(Kind::OpenAi, &format!("{}/b", fake.url), Some("k")), &req("x", None), t)
        .await
        .err()
        .unwrap();
    assert_eq!(f.retry_after, Some(Duration::from_millis(1500)));
    let f = call::chat(&http(), &resolved(Kind::Anthropic, &format!("{}/b", fake.url), Some("k")), &req("x", None), t)
        .await
        .err()
        .unwrap();
    assert_eq!((f.code, f.retryable), ("PROVIDER_UNAVAILABLE", true));
    let f = call::chat(&http(), &resolved(Kind::Gemini, &fake.url, Some("k")), &req("x", None), t).await.err().unwrap();
    assert_eq!((f.retryable, f.retry_after), (true, Some(Duration::from_secs(3))));
}

#[tokio::test]
async fn anthropic_and_gemini_are_spoken_with_their_own_headers_shapes_and_usage() {
    let fake = Fake::start(script(|seen, _| {
        if seen.path == "/v1/messages" {
            ok(json!({"id": "msg_1", "type": "message", "model": "claude-3-5-haiku-20241022", "role": "assistant",
                "content": [{"type": "tool_use", "id": "tu_1", "name": "output", "input": {"ok": true}}],
                "usage": {"input_tokens": 20, "output_tokens": 4, "cache_read_input_tokens": 8}}))
        } else {
            ok(json!({"modelVersion": "gemini-2.0-flash", "candidates": [{"content": {"role": "model", "parts": [{"text": "bonjour"}]}, "finishReason": "STOP"}],
                "usageMetadata": {"promptTokenCount": 9, "candidatesTokenCount": 1, "totalTokenCount": 10}}))
        }
    }))
    .await;
    let t = Duration::from_secs(5);
    let schema = json!({"type": "object", "required": ["ok"], "properties": {"ok": {"type": "boolean"}}});
    let c = call::chat(&http(), &resolved(Kind::Anthropic, &fake.url, Some("ak-1")), &req("x", Some(schema)), t)
        .await
        .unwrap();
    assert_eq!(c.answer.structured, Some(json!({"ok": true})));
    assert_eq!((c.answer.usage.input_tokens, c.answer.usage.cached_tokens), (20, 8));
    let c =
        call::chat(&http(), &resolved(Kind::Gemini, &fake.url, Some("gk-1")), &req("hello", None), t).await.unwrap();
    assert_eq!((c.answer.text.as_str(), c.answer.usage.input_tokens), ("bonjour", 9));
    let seen = fake.requests();
    assert_eq!(seen[0].header("x-api-key"), Some("ak-1"));
    assert_eq!(seen[0].header("anthropic-version"), Some(super::wire::ANTHROPIC_VERSION));
    assert_eq!(seen[0].body["tool_choice"]["name"], "output");
    assert_eq!(seen[1].path, "/v1beta/models/the-model:generateContent");
    assert_eq!(seen[1].header("x-goog-api-key"), Some("gk-1"));
    assert_eq!(seen[1].body["contents"][0]["parts"][0]["text"], "hello");
}

#[tokio::test]
async fn bedrock_converse_is_signed_with_sigv4_without_a_key_and_read_back() {
    let fake = Fake::start(script(|_, _| {
        ok(json!({"output": {"message": {"role": "assistant", "content": [{"text": "hi from bedrock"}]}}, "stopReason": "end_turn",
            "usage": {"inputTokens": 11, "outputTokens": 3, "totalTokens": 14}}))
    }))
    .await;
    let mut p = resolved(Kind::Bedrock, &fake.url, None);
    p.model = "anthropic.claude-3-haiku-20240307-v1:0".into();
    let mut r = req("x", None);
    r.model = p.model.clone();
    let creds = || Some(aws_credential_types::Credentials::new("AKIDTEST", "secret", Some("tok".into()), None, "test"));
    let c = call::chat_signed_by(&http(), &p, &r, Duration::from_secs(5), creds).await.unwrap();
    assert_eq!((c.answer.text.as_str(), c.answer.usage.input_tokens), ("hi from bedrock", 11));
    let seen = fake.requests();
    assert_eq!(seen[0].path, "/model/anthropic.claude-3-haiku-20240307-v1%3A0/converse");
    let auth = seen[0].header("authorization").unwrap();
    assert!(
        auth.starts_with("AWS4-HMAC-SHA256 Credential=AKIDTEST/") && auth.contains("/us-east-1/bedrock/aws4_request"),
        "{auth}"
    );
    assert_eq!(seen[0].header("x-amz-security-token"), Some("tok"));
    assert_eq!(seen[0].body["system"][0]["text"], "sys");
    let none = call::chat_signed_by(&http(), &p, &r, Duration::from_secs(5), || None).await.err().unwrap();
    assert_eq!(none.code, "PROVIDER_AUTH");
}

/// A fake OpenAI-compatible planner and agents: the planner's request (it has a
/// `response_format`) gets a three-task plan; each agent answers with its subtask's id.
fn planning_server() -> Script {
    script(|seen, _| {
        if seen.body.get("response_format").is_some() {
            let plan = json!({"tasks": [
                {"id": "a", "title": "Research channels", "agent": "research", "prompt": "Find 5 channels", "depends_on": []},
                {"id": "b", "title": "Decide pricing and positioning", "agent": "analyst", "prompt": "Compare them", "depends_on": ["a"]},
                {"id": "c", "title": "Write the plan", "agent": "writer", "prompt": "Write a 30-day plan", "depends_on": ["b"]}]});
            return ok(openai_answer(&plan.to_string(), 100, 50));
        }
        let user = last_user(seen);
        let id = user.split("Your subtask (").nth(1).and_then(|s| s.split(':').next()).unwrap_or("?").to_string();
        ok(openai_answer(&format!("output of {id}"), 40, 10))
    })
}

#[tokio::test]
async fn a_planned_run_asks_t1_first_then_runs_the_plan_and_ends_with_the_last_output() {
    let fake = Fake::start(planning_server()).await;
    let t = setup().await;
    let prov = t.provider(json!({"provider": "openai", "api_key": "k", "base_url": format!("{}/v1", fake.url)})).await;
    let (s, run) = t
        .call(
            Method::POST,
            "/api/v1/runs",
            Some(json!({"task": "Plan and launch a faceless YouTube channel about AI tools for freelancers.",
                "agents": [{"name": "research"}, {"name": "analyst"}, {"name": "writer"}],
                "ask_me_about": ["brand voice", "target audience"], "require_approval": false, "provider_id": prov})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{run}");
    let id = run["run_id"].as_str().unwrap().to_string();
    t.drain().await;
    let (_, run) = t.call(Method::GET, &format!("/api/v1/runs/{id}"), None).await;
    assert_eq!(run["status"], "waiting_human", "{run}");
    let ids: Vec<&str> = run["tasks"].as_array().unwrap().iter().map(|t| t["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["T1", "T2", "T3", "T4"]);
    assert_eq!(run["tasks"][0]["status"], "waiting_human");
    assert!(run["tasks"][0]["prompt"].as_str().unwrap().contains("brand voice; target audience"));
    assert_eq!(run["tasks"][1]["status"], "pending");
    assert_eq!(run["tasks"][3]["depends_on"], json!(["T1", "T3"]));
    let (_, listed) = t.call(Method::GET, &format!("/api/v1/runs/{id}/tasks"), None).await;
    assert_eq!(listed["data"].as_array().unwrap().len(), 4, "every subtask, mid-run");

    let answer =
        json!({"output": "Target audience is solo freelancers. Brand voice should be practical and founder-friendly."});
    let (s, b) = t.call(Method::POST, &format!("/api/v1/runs/{id}/tasks/T1/complete"), Some(answer)).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    t.drain().await;
    let (_, run) = t.call(Method::GET, &format!("/api/v1/runs/{id}"), None).await;
    assert_eq!(run["status"], "completed", "{run}");
    assert_eq!(run["output"], "output of T4");
    assert_eq!(run["tasks"][2]["output"], "output of T3");
    assert_eq!(run["tasks"][2]["usage"]["input_tokens"], 40);
    assert_eq!(run["usage"]["input_tokens"], 100 + 3 * 40, "the planner's call counts too");
    let agents: Vec<Seen> = fake.requests().into_iter().filter(|s| s.body.get("response_format").is_none()).collect();
    assert_eq!(agents.len(), 3);
    let last = last_user(&agents[2]);
    assert!(last.contains("solo freelancers") && last.contains("output of T3"), "{last}");
    assert!(agents[2].body["messages"][0]["content"].as_str().unwrap().contains("writer"));
    let wf = run["metadata"]["plan"]["workflow_id"].as_str().unwrap();
    let (s, w) = t.call(Method::GET, &format!("/api/v1/workflows/{wf}"), None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(w["status"], "active");
    let (s, b) =
        t.call(Method::POST, &format!("/api/v1/runs/{id}/tasks/T9/complete"), Some(json!({"output": "x"}))).await;
    assert_eq!((s, b["error"]["code"].as_str()), (StatusCode::NOT_FOUND, Some("NOT_FOUND")));
}

#[tokio::test]
async fn gates_and_required_approvals_wait_and_a_rejection_reruns_the_task_once_with_feedback() {
    let fake = Fake::start(script(|seen, _| {
        if seen.body.get("response_format").is_some() {
            let plan = json!({"tasks": [{"id": "w", "title": "Pricing draft", "agent": "writer", "prompt": "Draft pricing", "depends_on": []}]});
            return ok(openai_answer(&plan.to_string(), 1, 1));
        }
        let u = last_user(seen);
        ok(openai_answer(if u.contains("too expensive") { "revised draft" } else { "first draft" }, 1, 1))
    }))
    .await;
    let t = setup().await;
    let prov = t.provider(json!({"provider": "openai", "api_key": "k", "base_url": format!("{}/v1", fake.url)})).await;
    let body =
        json!({"task": "Price it", "agents": [{"name": "writer"}], "require_approval": true, "provider_id": prov});
    let (s, run) = t.call(Method::POST, "/api/v1/runs", Some(body)).await;
    assert_eq!(s, StatusCode::CREATED, "{run}");
    let id = run["run_id"].as_str().unwrap().to_string();
    t.drain().await;
    let (_, run) = t.call(Method::GET, &format!("/api/v1/runs/{id}"), None).await;
    assert_eq!(run["tasks"][1]["id"], "T1-review");
    assert_eq!(run["tasks"][1]["status"], "waiting_human", "{run}");
    let reject = json!({"approved": false, "feedback": "too expensive"});
    let (s, b) = t.call(Method::POST, &format!("/api/v1/runs/{id}/tasks/T1-review/complete"), Some(reject)).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    t.drain().await;
    let (s, _) = t
        .call(Method::POST, &format!("/api/v1/runs/{id}/tasks/T1-review-2/complete"), Some(json!({"approved": true})))
        .await;
    assert_eq!(s, StatusCode::OK);
    t.drain().await;
    let (_, run) = t.call(Method::GET, &format!("/api/v1/runs/{id}"), None).await;
    assert_eq!(run["status"], "completed", "{run}");
    assert_eq!(run["output"], "revised draft");

    // A gate: an approval after the task that mentions it; a rejection fails the run.
    let body =
        json!({"task": "Price it", "agents": [{"name": "writer"}], "human_gates": ["PRICING"], "provider_id": prov});
    let (_, run) = t.call(Method::POST, "/api/v1/runs", Some(body)).await;
    let id = run["run_id"].as_str().unwrap().to_string();
    t.drain().await;
    let (_, run) = t.call(Method::GET, &format!("/api/v1/runs/{id}"), None).await;
    assert_eq!(run["tasks"][1]["id"], "T1-gate");
    assert_eq!(run["status"], "waiting_human");
    t.call(Method::POST, &format!("/api/v1/runs/{id}/tasks/T1-gate/complete"), Some(json!({"approved": false}))).await;
    t.drain().await;
    let (_, run) = t.call(Method::GET, &format!("/api/v1/runs/{id}"), None).await;
    assert_eq!((run["status"].as_str(), run["error"]["code"].as_str()), (Some("failed"), Some("REJECTED")));
}

#[tokio::test]
async fn without_provider_id_the_managed_trial_serves_then_402_and_without_one_402_at_once() {
    let fake = Fake::start(planning_server()).await;
    let managed =
        Resolved { provider_id: None, ..resolved(Kind::OpenAi, &format!("{}/v1", fake.url), Some("managed-key")) };
    let t = setup_with(AiSettings { managed: Some(managed), trial_runs: 1 }, |s| s).await;
    let body = json!({"task": "Research competitors, compare pricing, then draft our launch strategy."});
    let (s, run) = t.call(Method::POST, "/api/v1/runs", Some(body.clone())).await;
    assert_eq!(s, StatusCode::CREATED, "{run}");
    t.drain().await;
    let (_, run) = t.call(Method::GET, &format!("/api/v1/runs/{}", run["run_id"].as_str().unwrap()), None).await;
    assert_eq!(run["status"], "completed", "{run}");
    assert_eq!(fake.requests()[1].header("authorization"), Some("Bearer managed-key"));
    let (s, b) = t.call(Method::POST, "/api/v1/runs", Some(body.clone())).await;
    assert_eq!((s, b["error"]["code"].as_str()), (StatusCode::PAYMENT_REQUIRED, Some("PAYMENT_REQUIRED")));
    assert_eq!(b["error"]["message"], "Managed trial runs used up: register a provider and pass provider_id");

    let t = setup().await;
    let (s, b) = t.call(Method::POST, "/api/v1/runs", Some(body)).await;
    assert_eq!(s, StatusCode::PAYMENT_REQUIRED);
    assert!(b["error"]["message"].as_str().unwrap().contains("bring your own key"));
}

#[tokio::test]
async fn planned_run_mistakes_are_400_with_details_and_unknown_providers_404() {
    let t = setup().await;
    let (s, b) = t.call(Method::POST, "/api/v1/runs", Some(json!({"task": "", "agents": [{"name": "poet"}]}))).await;
    assert_eq!((s, b["error"]["code"].as_str()), (StatusCode::BAD_REQUEST, Some("VALIDATION_ERROR")));
    assert_eq!(b["error"]["details"].as_array().unwrap().len(), 2);
    let (s, b) = t.call(Method::POST, "/api/v1/runs", Some(json!({"task": "x", "provider_id": "prov_nope"}))).await;
    assert_eq!((s, b["error"]["code"].as_str()), (StatusCode::NOT_FOUND, Some("NOT_FOUND")));
    let (s, _) = t.call(Method::POST, "/api/v1/runs", Some(json!(["x"]))).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn an_unanswerable_planner_falls_back_to_one_task_per_agent_and_a_budget_stops_calls() {
    // The planner's answers are never a plan; agents answer text.
    let fake = Fake::start(script(|seen, _| {
        if seen.body.get("response_format").is_some() {
            return ok(openai_answer("I would rather not plan.", 1, 1));
        }
        ok(openai_answer("done", 30, 30))
    }))
    .await;
    let t = setup().await;
    let prov = t.provider(json!({"provider": "openai", "api_key": "k", "base_url": format!("{}/v1", fake.url)})).await;
    let body = json!({"task": "Do it", "agents": [{"name": "research"}, {"name": "writer"}], "provider_id": prov, "max_tokens": 100});
    let (s, run) = t.call(Method::POST, "/api/v1/runs", Some(body)).await;
    assert_eq!(s, StatusCode::CREATED, "{run}");
    t.drain().await;
    let (_, run) = t.call(Method::GET, &format!("/api/v1/runs/{}", run["run_id"].as_str().unwrap()), None).await;
    assert!(run["metadata"]["plan"]["planned_by"].as_str().unwrap().starts_with("fallback"), "{run}");
    let titles: Vec<&str> = run["tasks"].as_array().unwrap().iter().map(|t| t["agent"].as_str().unwrap()).collect();
    assert_eq!(titles, ["research", "writer"]);
    // 2 planner calls (4 tokens) + research (60) leave 36: the writer's prompt needs more.
    assert_eq!(run["status"], "failed", "{run}");
    assert_eq!(run["error"]["code"], "BUDGET_EXCEEDED");
    assert_eq!(run["tasks"][0]["status"], "completed");
}

#[tokio::test]
async fn post_runs_answers_before_planning_which_is_the_runs_first_durable_step() {
    let fake = Fake::start(planning_server()).await;
    let t = setup().await;
    let prov = t.provider(json!({"provider": "openai", "api_key": "k", "base_url": format!("{}/v1", fake.url)})).await;
    let body = json!({"task": "Launch it", "ask_me_about": ["brand voice"], "provider_id": prov});
    let (s, run) = t.call(Method::POST, "/api/v1/runs", Some(body)).await;
    assert_eq!(s, StatusCode::CREATED, "{run}");
    assert!(fake.requests().is_empty(), "the request did not wait for the model");
    assert_eq!(
        (run["status"].as_str(), run["metadata"]["plan"]["status"].as_str()),
        (Some("pending"), Some("planning"))
    );
    assert_eq!(run["tasks"], json!([]));
    let id = run["run_id"].as_str().unwrap().to_string();
    let (s, b) =
        t.call(Method::POST, &format!("/api/v1/runs/{id}/tasks/T1/complete"), Some(json!({"output": "x"}))).await;
    assert_eq!(s, StatusCode::CONFLICT, "{b}");
    assert!(b["error"]["message"].as_str().unwrap().contains("still planning"), "{b}");
    let (_, listed) = t.call(Method::GET, &format!("/api/v1/runs/{id}/tasks"), None).await;
    assert_eq!(listed["data"], json!([]));

    t.drain().await;
    let (_, run) = t.call(Method::GET, &format!("/api/v1/runs/{id}"), None).await;
    assert_eq!(run["status"], "waiting_human", "{run}");
    assert_eq!(
        (run["metadata"]["plan"]["status"].as_str(), run["metadata"]["plan"]["planned_by"].as_str()),
        (Some("planned"), Some("model"))
    );
    assert_eq!(run["workflow_version"], 2, "the run moved onto the compiled version");
    assert_eq!(run["tasks"][0]["id"], "T1");
    let wf = run["metadata"]["plan"]["workflow_id"].as_str().unwrap();
    let (_, versions) = t.call(Method::GET, &format!("/api/v1/workflows/{wf}/versions"), None).await;
    assert_eq!(versions["data"].as_array().unwrap().len(), 2, "{versions}");
}

#[tokio::test]
async fn a_plan_step_redelivered_after_it_moved_the_run_neither_plans_nor_calls_again() {
    let fake = Fake::start(planning_server()).await;
    let (t, failing) = setup_failing(Some("plan")).await;
    let prov = t.provider(json!({"provider": "openai", "api_key": "k", "base_url": format!("{}/v1", fake.url)})).await;
    failing.lock().unwrap().as_ref().unwrap().armed.store(true, Ordering::SeqCst);
    let body = json!({"task": "Launch it", "agents": [{"name": "research"}, {"name": "analyst"}, {"name": "writer"}], "provider_id": prov});
    let (s, run) = t.call(Method::POST, "/api/v1/runs", Some(body)).await;
    assert_eq!(s, StatusCode::CREATED, "{run}");
    let id = run["run_id"].as_str().unwrap().to_string();
    t.drain().await;
    assert!(!failing.lock().unwrap().as_ref().unwrap().armed.load(Ordering::SeqCst), "the plan's first commit failed");
    let (_, run) = t.call(Method::GET, &format!("/api/v1/runs/{id}"), None).await;
    assert_eq!(run["status"], "completed", "{run}");
    assert_eq!(run["output"], "output of T3");
    let planner_calls = fake.requests().iter().filter(|s| s.body.get("response_format").is_some()).count();
    assert_eq!(planner_calls, 1, "the redelivered plan step did not ask the planner again");
    let wf = run["metadata"]["plan"]["workflow_id"].as_str().unwrap().to_string();
    let (_, versions) = t.call(Method::GET, &format!("/api/v1/workflows/{wf}/versions"), None).await;
    assert_eq!(versions["data"].as_array().unwrap().len(), 2, "no second compiled version: {versions}");

    // The compiled workflow runs again with another task, on the same plan, without planning.
    let input = json!({"task": "Launch the other one", "agents": run["input"]["agents"]});
    let (s, again) = t.call(Method::POST, &format!("/api/v1/workflows/{wf}/run"), Some(json!({"input": input}))).await;
    assert_eq!(s, StatusCode::CREATED, "{again}");
    t.drain().await;
    let (_, again) = t.call(Method::GET, &format!("/api/v1/runs/{}", again["run_id"].as_str().unwrap()), None).await;
    assert_eq!(again["status"], "completed", "{again}");
    assert_eq!(fake.requests().iter().filter(|s| s.body.get("response_format").is_some()).count(), 1);
    assert!(last_user(fake.requests().last().unwrap()).contains("Launch the other one"));
}

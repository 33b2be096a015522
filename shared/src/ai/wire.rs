//! Each provider's HTTP format: the request a chat call becomes, the answer read back, and
//! one classifier of failures for every kind, so an agent step retries, fails or reports
//! the same way whichever provider answered.
//!
//! Structured output uses the provider's native mechanism: OpenAI `response_format`
//! (`json_schema`), Anthropic and Bedrock a forced tool whose input schema is the schema,
//! Gemini `responseMimeType` + `responseSchema`.

use super::providers::{Kind, Resolved};
use serde_json::{Value, json};
use std::time::Duration;

/// Anthropic's API version header value.
pub const ANTHROPIC_VERSION: &str = "2023-06-01";
/// The tool name a forced structured answer comes back through (Anthropic, Bedrock).
const TOOL: &str = "output";
/// Default answer budget where the provider requires one (Anthropic, Bedrock).
const DEFAULT_MAX_TOKENS: u64 = 4096;
/// Longest provider message kept in a step error.
const MAX_MESSAGE: usize = 1000;

#[derive(Clone, Debug, PartialEq)]
pub struct Message {
    /// `user` or `assistant`.
    pub role: String,
    pub content: String,
}

#[derive(Clone, Debug, PartialEq)]
pub struct ChatRequest {
    pub model: String,
    pub system: Option<String>,
    pub messages: Vec<Message>,
    /// JSON Schema of a structured answer.
    pub schema: Option<Value>,
    pub temperature: Option<f64>,
    pub max_tokens: Option<u64>,
}

/// An HTTP request to send (Bedrock without a key is signed by `call` before sending).
#[derive(Clone, Debug, PartialEq)]
pub struct HttpRequest {
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// `Some(region)`: sign with SigV4 for service `bedrock`.
    pub sigv4_region: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Usage {
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cached_tokens: u64,
}

/// What the provider answered.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Answer {
    /// The text (for a structured answer, its JSON text).
    pub text: String,
    /// A structured answer the provider returned as JSON already (tool input).
    pub structured: Option<Value>,
    pub usage: Usage,
    /// The model the provider says answered.
    pub model: String,
}

/// Why a call failed, classified once for every provider.
#[derive(Clone, Debug, PartialEq)]
pub struct Failure {
    pub code: &'static str,
    pub message: String,
    pub retryable: bool,
    pub retry_after: Option<Duration>,
}

impl Failure {
    fn fatal(code: &'static str, message: String) -> Self {
        Failure { code, message, retryable: false, retry_after: None }
    }
}

fn join(base: &str, path: &str) -> String {
    format!("{}{path}", base.trim_end_matches('/'))
}

/// The region of a Bedrock call: the provider's, the one in its base URL's host, or the
/// process's `AWS_REGION`.
pub fn bedrock_region(p: &Resolved) -> String {
    if let Some(r) = &p.region {
        return r.clone();
    }
    if let Some(host) =
        p.base_url.as_deref().and_then(|u| url::Url::parse(u).ok()).and_then(|u| u.host_str().map(str::to_string))
        && let Some(rest) = host.strip_prefix("bedrock-runtime.")
        && let Some(region) = rest.split('.').next()
    {
        return region.to_string();
    }
    std::env::var("AWS_REGION").ok().filter(|r| !r.is_empty()).unwrap_or_else(|| "us-east-1".into())
}

/// Gemini's `responseSchema` is an OpenAPI subset: the JSON Schema keywords it refuses go.
fn gemini_schema(s: &Value) -> Value {
    match s {
        Value::Object(o) => Value::Object(
            o.iter()
                .filter(|(k, _)| !matches!(k.as_str(), "$schema" | "additionalProperties" | "$id" | "title"))
                .map(|(k, v)| (k.clone(), gemini_schema(v)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(gemini_schema).collect()),
        v => v.clone(),
    }
}

/// The HTTP request `req` becomes for provider `p`.
pub fn build(p: &Resolved, req: &ChatRequest) -> HttpRequest {
    let mut headers = vec![("content-type".to_string(), "application/json".to_string())];
    let key = p.api_key.clone();
    let (url, body, sigv4_region) = match p.kind {
        Kind::OpenAi | Kind::Mock => {
            let mut messages = Vec::new();
            if let Some(s) = &req.system {
                messages.push(json!({"role": "system", "content": s}));
            }
            messages.extend(req.messages.iter().map(|m| json!({"role": m.role, "content": m.content})));
            let mut body = json!({"model": req.model, "messages": messages});
            if let Some(t) = req.temperature {
                body["temperature"] = json!(t);
            }
            if let Some(m) = req.max_tokens {
                body["max_tokens"] = json!(m);
            }
            if let Some(schema) = &req.schema {
                body["response_format"] =
                    json!({"type": "json_schema", "json_schema": {"name": TOOL, "schema": schema, "strict": false}});
            }
            if let Some(k) = key {
                headers.push(("authorization".into(), format!("Bearer {k}")));
            }
            (join(p.base_url.as_deref().unwrap_or("https://api.openai.com/v1"), "/chat/completions"), body, None)
        }
        Kind::Anthropic => {
            let messages: Vec<Value> =
                req.messages.iter().map(|m| json!({"role": m.role, "content": m.content})).collect();
            let mut body = json!({
                "model": req.model, "messages": messages, "max_tokens": req.max_tokens.unwrap_or(DEFAULT_MAX_TOKENS),
            });
            if let Some(s) = &req.system {
                body["system"] = json!(s);
            }
            if let Some(t) = req.temperature {
                body["temperature"] = json!(t);
            }
            if let Some(schema) = &req.schema {
                body["tools"] =
                    json!([{"name": TOOL, "description": "Give the answer in this shape.", "input_schema": schema}]);
                body["tool_choice"] = json!({"type": "tool", "name": TOOL});
            }
            if let Some(k) = key {
                headers.push(("x-api-key".into(), k));
            }
            headers.push(("anthropic-version".into(), ANTHROPIC_VERSION.into()));
            (join(p.base_url.as_deref().unwrap_or("https://api.anthropic.com"), "/v1/messages"), body, None)
        }
        Kind::Gemini => {
            let contents: Vec<Value> = req
                .messages
                .iter()
                .map(|m| {
                    let role = if m.role == "assistant" { "model" } else { "user" };
                    json!({"role": role, "parts": [{"text": m.content}]})
                })
                .collect();
            let mut body = json!({"contents": contents});
            if let Some(s) = &req.system {
                body["systemInstruction"] = json!({"parts": [{"text": s}]});
            }
            let mut config = serde_json::Map::new();
            if let Some(t) = req.temperature {
                config.insert("temperature".into(), json!(t));
            }
            if let Some(m) = req.max_tokens {
                config.insert("maxOutputTokens".into(), json!(m));
            }
            if let Some(schema) = &req.schema {
                config.insert("responseMimeType".into(), json!("application/json"));
                config.insert("responseSchema".into(), gemini_schema(schema));
            }
            if !config.is_empty() {
                body["generationConfig"] = Value::Object(config);
            }
            if let Some(k) = key {
                headers.push(("x-goog-api-key".into(), k));
            }
            let base = p.base_url.as_deref().unwrap_or("https://generativelanguage.googleapis.com");
            (join(base, &format!("/v1beta/models/{}:generateContent", req.model)), body, None)
        }
        Kind::Bedrock => {
            let messages: Vec<Value> =
                req.messages.iter().map(|m| json!({"role": m.role, "content": [{"text": m.content}]})).collect();
            let mut body = json!({"messages": messages});
            if let Some(s) = &req.system {
                body["system"] = json!([{"text": s}]);
            }
            let mut inf = json!({"maxTokens": req.max_tokens.unwrap_or(DEFAULT_MAX_TOKENS)});
            if let Some(t) = req.temperature {
                inf["temperature"] = json!(t);
            }
            body["inferenceConfig"] = inf;
            if let Some(schema) = &req.schema {
                body["toolConfig"] = json!({
                    "tools": [{"toolSpec": {"name": TOOL, "description": "Give the answer in this shape.", "inputSchema": {"json": schema}}}],
                    "toolChoice": {"tool": {"name": TOOL}},
                });
            }
            let region = bedrock_region(p);
            let base = p.base_url.clone().unwrap_or_else(|| format!("https://bedrock-runtime.{region}.amazonaws.com"));
            // The model id goes in the path (`:` of a version suffix percent-encoded).
            let model: String = url::form_urlencoded::byte_serialize(req.model.as_bytes()).collect();
            let url = join(&base, &format!("/model/{model}/converse"));
            match key {
                Some(k) => {
                    headers.push(("authorization".into(), format!("Bearer {k}")));
                    (url, body, None)
                }
                None => (url, body, Some(region)),
            }
        }
    };
    HttpRequest { url, headers, body: serde_json::to_vec(&body).unwrap_or_default(), sigv4_region }
}

fn n(v: &Value, k: &str) -> u64 {
    v.get(k).and_then(Value::as_u64).unwrap_or(0)
}

/// Reads a 2xx answer. A body that is not the provider's answer shape is a retryable
/// `PROVIDER_BAD_ANSWER` (gateways sometimes answer 200 with an HTML page).
pub fn parse(kind: Kind, body: &[u8]) -> Result<Answer, Failure> {
    let bad = |why: &str| Failure {
        code: "PROVIDER_BAD_ANSWER",
        message: format!("the provider's answer could not be read: {why}"),
        retryable: true,
        retry_after: None,
    };
    let v: Value = serde_json::from_slice(body).map_err(|_| bad("not JSON"))?;
    let model =
        v.get("model").or_else(|| v.get("modelVersion")).and_then(Value::as_str).unwrap_or_default().to_string();
    match kind {
        Kind::OpenAi | Kind::Mock => {
            let msg = v.pointer("/choices/0/message").ok_or_else(|| bad("no choices[0].message"))?;
            let text = msg.get("content").and_then(Value::as_str).unwrap_or_default().to_string();
            if let Some(refusal) = msg.get("refusal").and_then(Value::as_str).filter(|r| !r.is_empty()) {
                return Err(Failure::fatal("PROVIDER_REJECTED", format!("the model refused: {}", clip(refusal))));
            }
            let u = v.get("usage").cloned().unwrap_or(Value::Null);
            let cached = u.pointer("/prompt_tokens_details/cached_tokens").and_then(Value::as_u64).unwrap_or(0);
            let usage = Usage {
                input_tokens: n(&u, "prompt_tokens"),
                output_tokens: n(&u, "completion_tokens"),
                cached_tokens: cached,
            };
            Ok(Answer { text, structured: None, usage, model })
        }
        Kind::Anthropic => {
            let content = v.get("content").and_then(Value::as_array).ok_or_else(|| bad("no content"))?;
            let mut text = String::new();
            let mut structured = None;
            for c in content {
                match c.get("type").and_then(Value::as_str) {
                    Some("text") => text.push_str(c.get("text").and_then(Value::as_str).unwrap_or_default()),
                    Some("tool_use") => structured = c.get("input").cloned(),
                    _ => {}
                }
            }
            if let Some(s) = &structured {
                text = s.to_string();
            }
            let u = v.get("usage").cloned().unwrap_or(Value::Null);
            let usage = Usage {
                input_tokens: n(&u, "input_tokens"),
                output_tokens: n(&u, "output_tokens"),
                cached_tokens: n(&u, "cache_read_input_tokens"),
            };
            Ok(Answer { text, structured, usage, model })
        }
        Kind::Gemini => {
            let cand = v.pointer("/candidates/0").ok_or_else(|| bad("no candidates"))?;
            if cand.get("finishReason").and_then(Value::as_str) == Some("SAFETY") {
                return Err(Failure::fatal("PROVIDER_REJECTED", "the model's answer was blocked for safety".into()));
            }
            let text: String = cand
                .pointer("/content/parts")
                .and_then(Value::as_array)
                .map(|ps| ps.iter().filter_map(|p| p.get("text").and_then(Value::as_str)).collect())
                .unwrap_or_default();
            let u = v.get("usageMetadata").cloned().unwrap_or(Value::Null);
            let usage = Usage {
                input_tokens: n(&u, "promptTokenCount"),
                output_tokens: n(&u, "candidatesTokenCount"),
                cached_tokens: n(&u, "cachedContentTokenCount"),
            };
            Ok(Answer { text, structured: None, usage, model })
        }
        Kind::Bedrock => {
            let content = v
                .pointer("/output/message/content")
                .and_then(Value::as_array)
                .ok_or_else(|| bad("no output.message.content"))?;
            let mut text = String::new();
            let mut structured = None;
            for c in content {
                if let Some(t) = c.get("text").and_then(Value::as_str) {
                    text.push_str(t);
                }
                if let Some(i) = c.pointer("/toolUse/input") {
                    structured = Some(i.clone());
                }
            }
            if let Some(s) = &structured {
                text = s.to_string();
            }
            let u = v.get("usage").cloned().unwrap_or(Value::Null);
            let usage = Usage {
                input_tokens: n(&u, "inputTokens"),
                output_tokens: n(&u, "outputTokens"),
                cached_tokens: n(&u, "cacheReadInputTokens"),
            };
            Ok(Answer { text, structured, usage, model })
        }
    }
}

fn clip(s: &str) -> String {
    if s.len() <= MAX_MESSAGE {
        return s.to_string();
    }
    let mut end = MAX_MESSAGE;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

/// `3.5s` (protobuf Duration JSON) as a duration.
fn proto_duration(s: &str) -> Option<Duration> {
    let secs: f64 = s.strip_suffix('s')?.parse().ok()?;
    (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs.min(86_400.0)))
}

/// The least wait before a retry the answer asks for: `retry-after-ms`, `Retry-After`
/// (seconds or an HTTP date), or Gemini's `RetryInfo.retryDelay` in the body.
pub fn retry_after(header: impl Fn(&str) -> Option<String>, body: &Value) -> Option<Duration> {
    if let Some(ms) =
        header("retry-after-ms").and_then(|v| v.trim().parse::<f64>().ok()).filter(|m| m.is_finite() && *m >= 0.0)
    {
        return Some(Duration::from_secs_f64(ms.min(86_400_000.0) / 1000.0));
    }
    if let Some(v) = header("retry-after") {
        let v = v.trim();
        if let Ok(s) = v.parse::<f64>()
            && s.is_finite()
            && s >= 0.0
        {
            return Some(Duration::from_secs_f64(s.min(86_400.0)));
        }
        if let Ok(t) = chrono::DateTime::parse_from_rfc2822(v) {
            let ms = (t.timestamp_millis() - crate::ids::now_ms()).max(0) as u64;
            return Some(Duration::from_millis(ms.min(86_400_000)));
        }
    }
    body.pointer("/error/details")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|d| d.get("@type").and_then(Value::as_str).is_some_and(|t| t.ends_with("google.rpc.RetryInfo")))
        .find_map(|d| d.get("retryDelay").and_then(Value::as_str).and_then(proto_duration))
}

/// The provider's own message and error type out of an error body (every kind's shape).
fn error_parts(body: &Value, raw: &[u8]) -> (String, String) {
    let e = body.get("error").unwrap_or(body);
    let message = e
        .get("message")
        .or_else(|| body.get("message"))
        .or_else(|| body.get("Message"))
        .and_then(Value::as_str)
        .map(str::to_string)
        .or_else(|| e.as_str().map(str::to_string))
        .unwrap_or_else(|| String::from_utf8_lossy(&raw[..raw.len().min(MAX_MESSAGE)]).trim().to_string());
    let kind = [e.get("code"), e.get("type"), e.get("status"), body.get("__type")]
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect::<Vec<_>>()
        .join(" ");
    (message, kind)
}

/// The one classifier: what a non-2xx answer of any provider means for the step.
/// 429, 5xx and Anthropic's 529 are retried (never sooner than the answer asks); quota or
/// spend exhausted is `QUOTA_EXHAUSTED` and not retried; 401/403 `PROVIDER_AUTH`; any other
/// 4xx `PROVIDER_REJECTED` with the provider's message.
pub fn classify(kind: Kind, status: u16, header: impl Fn(&str) -> Option<String>, raw: &[u8]) -> Failure {
    let body: Value = serde_json::from_slice(raw).unwrap_or(Value::Null);
    let (message, etype) = error_parts(&body, raw);
    let aws_type = header("x-amzn-errortype").unwrap_or_default();
    let lower = format!("{etype} {aws_type} {message}").to_lowercase();
    let said = |what: &str| format!("{} {what} ({status}): {}", kind.name(), clip(&message));
    let quota = lower.contains("insufficient_quota")
        || lower.contains("credit balance")
        || lower.contains("billing")
        || lower.contains("spend limit")
        || lower.contains("exceeded your current quota")
        || lower.contains("servicequotaexceeded");
    if quota && (status == 429 || status == 402 || status == 400 || status == 403) {
        return Failure::fatal("QUOTA_EXHAUSTED", said("quota or spend exhausted"));
    }
    match status {
        401 | 403 => Failure::fatal("PROVIDER_AUTH", said("refused the credentials")),
        408 | 409 | 425 | 429 => Failure {
            code: "PROVIDER_RATE_LIMITED",
            message: said("rate limited"),
            retryable: true,
            retry_after: retry_after(&header, &body),
        },
        500..=599 => Failure {
            code: "PROVIDER_UNAVAILABLE",
            message: said(if status == 529 { "overloaded" } else { "unavailable" }),
            retryable: true,
            retry_after: retry_after(&header, &body),
        },
        _ if lower.contains("throttlingexception") => Failure {
            code: "PROVIDER_RATE_LIMITED",
            message: said("rate limited"),
            retryable: true,
            retry_after: retry_after(&header, &body),
        },
        _ => Failure::fatal("PROVIDER_REJECTED", said("rejected the request")),
    }
}

/// A mock provider's answer: the first scripted response whose `match` occurs in the last
/// user message (or has no `match`), else an echo; with a schema, a minimal value of it.
pub fn mock_answer(p: &Resolved, req: &ChatRequest) -> Answer {
    let last = req.messages.iter().rev().find(|m| m.role == "user").map(|m| m.content.as_str()).unwrap_or("");
    let scripted =
        p.responses.as_array().into_iter().flatten().find(|r| match r.get("match").and_then(Value::as_str) {
            Some(m) => last.contains(m),
            None => true,
        });
    let (text, structured) = match (scripted.and_then(|r| r.get("output")), &req.schema) {
        (Some(Value::String(s)), _) => (s.clone(), None),
        (Some(v), _) => (v.to_string(), Some(v.clone())),
        (None, Some(schema)) => {
            let v = minimal(schema, 0);
            (v.to_string(), Some(v))
        }
        (None, None) => (format!("mock answer to: {}", clip(last)), None),
    };
    let words = |s: &str| s.split_whitespace().count() as u64;
    let input =
        req.system.as_deref().map(words).unwrap_or(0) + req.messages.iter().map(|m| words(&m.content)).sum::<u64>();
    Answer {
        usage: Usage { input_tokens: input, output_tokens: words(&text), cached_tokens: 0 },
        text,
        structured,
        model: req.model.clone(),
    }
}

/// The smallest value of a schema's shape (required properties only).
fn minimal(schema: &Value, depth: usize) -> Value {
    if depth > 16 {
        return Value::Null;
    }
    if let Some(c) = schema.get("const") {
        return c.clone();
    }
    if let Some(e) = schema.get("enum").and_then(Value::as_array).and_then(|e| e.first()) {
        return e.clone();
    }
    let ty = match schema.get("type") {
        Some(Value::Array(a)) => a.first().and_then(Value::as_str).unwrap_or("null"),
        Some(Value::String(s)) => s.as_str(),
        _ if schema.get("properties").is_some() => "object",
        _ => "string",
    };
    match ty {
        "object" => {
            let mut o = serde_json::Map::new();
            for r in schema.get("required").and_then(Value::as_array).into_iter().flatten().filter_map(Value::as_str) {
                let sub = schema.pointer(&format!("/properties/{r}")).cloned().unwrap_or(json!({}));
                o.insert(r.to_string(), minimal(&sub, depth + 1));
            }
            Value::Object(o)
        }
        "array" => {
            let min = schema.get("minItems").and_then(Value::as_u64).unwrap_or(0).min(10);
            let item = schema.get("items").cloned().unwrap_or(json!({}));
            Value::Array((0..min).map(|_| minimal(&item, depth + 1)).collect())
        }
        "integer" | "number" => json!(schema.get("minimum").cloned().unwrap_or(json!(0))),
        "boolean" => json!(false),
        "null" => Value::Null,
        _ => json!("mock"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn provider(kind: Kind, key: Option<&str>) -> Resolved {
        Resolved {
            provider_id: Some("prov_1".into()),
            kind,
            model: "m".into(),
            base_url: None,
            api_key: key.map(str::to_string),
            region: None,
            responses: Value::Null,
        }
    }

    fn request(schema: Option<Value>) -> ChatRequest {
        ChatRequest {
            model: "the-model".into(),
            system: Some("be brief".into()),
            messages: vec![Message { role: "user".into(), content: "hello".into() }],
            schema,
            temperature: Some(0.2),
            max_tokens: Some(100),
        }
    }

    fn body(r: &HttpRequest) -> Value {
        serde_json::from_slice(&r.body).unwrap()
    }

    fn header<'a>(r: &'a HttpRequest, name: &str) -> Option<&'a str> {
        r.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    #[test]
    fn openai_requests_carry_the_bearer_key_system_message_and_json_schema_format() {
        let schema = json!({"type": "object"});
        let r = build(&provider(Kind::OpenAi, Some("sk-1")), &request(Some(schema.clone())));
        assert_eq!(r.url, "https://api.openai.com/v1/chat/completions");
        assert_eq!(header(&r, "authorization"), Some("Bearer sk-1"));
        let b = body(&r);
        assert_eq!(b["messages"][0], json!({"role": "system", "content": "be brief"}));
        assert_eq!(b["messages"][1]["content"], "hello");
        assert_eq!(b["response_format"]["type"], "json_schema");
        assert_eq!(b["response_format"]["json_schema"]["schema"], schema);
        assert_eq!(b["max_tokens"], 100);
    }

    #[test]
    fn anthropic_requests_use_x_api_key_version_and_a_forced_tool_for_schemas() {
        let r = build(&provider(Kind::Anthropic, Some("ak")), &request(Some(json!({"type": "object"}))));
        assert_eq!(r.url, "https://api.anthropic.com/v1/messages");
        assert_eq!(header(&r, "x-api-key"), Some("ak"));
        assert_eq!(header(&r, "anthropic-version"), Some(ANTHROPIC_VERSION));
        let b = body(&r);
        assert_eq!(b["system"], "be brief");
        assert_eq!(b["tool_choice"], json!({"type": "tool", "name": "output"}));
        assert_eq!(b["tools"][0]["input_schema"], json!({"type": "object"}));
    }

    #[test]
    fn gemini_requests_use_x_goog_api_key_and_response_schema_without_unsupported_keywords() {
        let schema = json!({"type": "object", "additionalProperties": false, "properties": {"a": {"type": "string"}}});
        let r = build(&provider(Kind::Gemini, Some("gk")), &request(Some(schema)));
        assert_eq!(r.url, "https://generativelanguage.googleapis.com/v1beta/models/the-model:generateContent");
        assert_eq!(header(&r, "x-goog-api-key"), Some("gk"));
        let b = body(&r);
        assert_eq!(b["systemInstruction"]["parts"][0]["text"], "be brief");
        assert_eq!(b["generationConfig"]["responseMimeType"], "application/json");
        assert_eq!(
            b["generationConfig"]["responseSchema"],
            json!({"type": "object", "properties": {"a": {"type": "string"}}})
        );
    }

    #[test]
    fn bedrock_requests_go_to_converse_signed_without_a_key_and_bearer_with_one() {
        let mut p = provider(Kind::Bedrock, None);
        p.region = Some("eu-west-1".into());
        let mut req = request(Some(json!({"type": "object"})));
        req.model = "anthropic.claude-3-haiku-20240307-v1:0".into();
        let r = build(&p, &req);
        assert_eq!(
            r.url,
            "https://bedrock-runtime.eu-west-1.amazonaws.com/model/anthropic.claude-3-haiku-20240307-v1%3A0/converse"
        );
        assert_eq!(r.sigv4_region.as_deref(), Some("eu-west-1"));
        let b = body(&r);
        assert_eq!(b["toolConfig"]["toolChoice"], json!({"tool": {"name": "output"}}));
        assert_eq!(b["system"][0]["text"], "be brief");
        let r = build(&provider(Kind::Bedrock, Some("bk")), &req);
        assert_eq!(r.sigv4_region, None);
        assert_eq!(header(&r, "authorization"), Some("Bearer bk"));
    }

    #[test]
    fn answers_are_read_with_usage_from_every_format() {
        let oa = json!({"model": "gpt", "choices": [{"message": {"content": "hi"}}],
            "usage": {"prompt_tokens": 10, "completion_tokens": 2, "prompt_tokens_details": {"cached_tokens": 4}}});
        let a = parse(Kind::OpenAi, oa.to_string().as_bytes()).unwrap();
        assert_eq!(
            (a.text.as_str(), a.usage.input_tokens, a.usage.output_tokens, a.usage.cached_tokens),
            ("hi", 10, 2, 4)
        );
        let an = json!({"model": "claude", "content": [{"type": "tool_use", "name": "output", "input": {"x": 1}}],
            "usage": {"input_tokens": 5, "output_tokens": 3, "cache_read_input_tokens": 1}});
        let a = parse(Kind::Anthropic, an.to_string().as_bytes()).unwrap();
        assert_eq!(a.structured, Some(json!({"x": 1})));
        assert_eq!(a.usage, Usage { input_tokens: 5, output_tokens: 3, cached_tokens: 1 });
        let ge = json!({"modelVersion": "gemini", "candidates": [{"content": {"parts": [{"text": "a"}, {"text": "b"}]}}],
            "usageMetadata": {"promptTokenCount": 7, "candidatesTokenCount": 1}});
        let a = parse(Kind::Gemini, ge.to_string().as_bytes()).unwrap();
        assert_eq!((a.text.as_str(), a.model.as_str(), a.usage.input_tokens), ("ab", "gemini", 7));
        let br = json!({"output": {"message": {"content": [{"toolUse": {"toolUseId": "t", "name": "output", "input": {"y": 2}}}]}},
            "usage": {"inputTokens": 9, "outputTokens": 4}});
        let a = parse(Kind::Bedrock, br.to_string().as_bytes()).unwrap();
        assert_eq!(a.structured, Some(json!({"y": 2})));
        assert_eq!(a.usage.output_tokens, 4);
        assert_eq!(parse(Kind::OpenAi, b"<html>").unwrap_err().code, "PROVIDER_BAD_ANSWER");
    }

    fn none(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn rate_limits_and_outages_are_retried_no_sooner_than_the_answer_asks() {
        let f = classify(Kind::OpenAi, 429, |h| (h == "retry-after").then(|| "7".into()), b"{}");
        assert_eq!((f.code, f.retryable, f.retry_after), ("PROVIDER_RATE_LIMITED", true, Some(Duration::from_secs(7))));
        let f = classify(Kind::OpenAi, 429, |h| (h == "retry-after-ms").then(|| "1500".into()), b"{}");
        assert_eq!(f.retry_after, Some(Duration::from_millis(1500)));
        let f = classify(
            Kind::Anthropic,
            529,
            none,
            br#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#,
        );
        assert!(f.retryable && f.message.contains("Overloaded"), "{f:?}");
        let gem = json!({"error": {"code": 429, "status": "RESOURCE_EXHAUSTED", "message": "slow down",
            "details": [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "2.5s"}]}});
        let f = classify(Kind::Gemini, 429, none, gem.to_string().as_bytes());
        assert_eq!(f.retry_after, Some(Duration::from_millis(2500)));
        let f = classify(
            Kind::Bedrock,
            400,
            |h| (h == "x-amzn-errortype").then(|| "ThrottlingException:http://x".into()),
            br#"{"message":"Too many"}"#,
        );
        assert!(f.retryable);
        assert!(classify(Kind::OpenAi, 503, none, b"busy").retryable);
    }

    #[test]
    fn quota_auth_and_other_rejections_are_not_retried_and_keep_the_providers_message() {
        let q = json!({"error": {"message": "You exceeded your current quota", "type": "insufficient_quota", "code": "insufficient_quota"}});
        let f = classify(Kind::OpenAi, 429, none, q.to_string().as_bytes());
        assert_eq!((f.code, f.retryable), ("QUOTA_EXHAUSTED", false));
        let f = classify(
            Kind::Anthropic,
            400,
            none,
            br#"{"error":{"type":"invalid_request_error","message":"Your credit balance is too low"}}"#,
        );
        assert_eq!(f.code, "QUOTA_EXHAUSTED");
        let f = classify(
            Kind::Anthropic,
            401,
            none,
            br#"{"error":{"type":"authentication_error","message":"invalid x-api-key"}}"#,
        );
        assert_eq!((f.code, f.retryable), ("PROVIDER_AUTH", false));
        assert_eq!(classify(Kind::Bedrock, 403, none, br#"{"message":"denied"}"#).code, "PROVIDER_AUTH");
        let f = classify(Kind::OpenAi, 400, none, br#"{"error":{"message":"model `x` does not exist"}}"#);
        assert_eq!(f.code, "PROVIDER_REJECTED");
        assert!(f.message.contains("model `x` does not exist"), "{}", f.message);
    }

    #[test]
    fn a_mock_answers_from_its_script_or_with_a_minimal_value_of_the_schema() {
        let mut p = provider(Kind::Mock, None);
        p.responses = json!([{"match": "hello", "output": "scripted"}]);
        assert_eq!(mock_answer(&p, &request(None)).text, "scripted");
        p.responses = Value::Null;
        let schema = json!({"type": "object", "required": ["n", "tags"], "properties": {"n": {"type": "integer"}, "tags": {"type": "array", "minItems": 1, "items": {"type": "string"}}}});
        assert_eq!(mock_answer(&p, &request(Some(schema))).structured, Some(json!({"n": 0, "tags": ["mock"]})));
    }
}

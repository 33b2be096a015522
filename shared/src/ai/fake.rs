//! A fake model provider on 127.0.0.1 for tests: records every request and answers with
//! what the test's script says, in whichever provider's wire format the test speaks.

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::Value;
use std::sync::{Arc, Mutex};

#[derive(Clone, Debug)]
pub struct Seen {
    pub path: String,
    pub headers: HeaderMap,
    pub body: Value,
}

impl Seen {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// `(status, headers, body)` for the `n`th request (0-based).
pub type Script = Arc<dyn Fn(&Seen, usize) -> (u16, Vec<(&'static str, String)>, Value) + Send + Sync>;

#[derive(Clone)]
struct S {
    seen: Arc<Mutex<Vec<Seen>>>,
    script: Script,
}

pub struct Fake {
    pub url: String,
    seen: Arc<Mutex<Vec<Seen>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Fake {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Fake {
    pub async fn start(script: Script) -> Fake {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let state = S { seen: seen.clone(), script };
        let app = Router::new().fallback(handle).with_state(state);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.ok();
        });
        Fake { url, seen, task }
    }

    pub fn requests(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

async fn handle(State(s): State<S>, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    let seen =
        Seen { path: uri.path().to_string(), headers, body: serde_json::from_slice(&body).unwrap_or(Value::Null) };
    let n = {
        let mut all = s.seen.lock().unwrap();
        all.push(seen.clone());
        all.len() - 1
    };
    let (status, hs, body) = (s.script)(&seen, n);
    let mut resp = (StatusCode::from_u16(status).unwrap(), axum::Json(body)).into_response();
    for (k, v) in hs {
        resp.headers_mut().insert(k, v.parse().unwrap());
    }
    resp
}

/// An OpenAI Chat Completions answer.
pub fn openai_answer(content: &str, prompt_tokens: u64, completion_tokens: u64) -> Value {
    serde_json::json!({
        "id": "chatcmpl-1", "object": "chat.completion", "model": "gpt-4o-mini-2024-07-18",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens, "total_tokens": prompt_tokens + completion_tokens,
            "prompt_tokens_details": {"cached_tokens": 0}}
    })
}

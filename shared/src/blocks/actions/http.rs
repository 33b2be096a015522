//! `http.request`: `platform_api`'s request through an `http` connection, as an action.

use super::super::platform_api::request_through;
use super::super::{BlockContext, StepError};
use super::Spec;
use crate::connections::Connection;
use serde_json::{Map, Value};

pub const ACTIONS: &[Spec] = &[Spec {
    name: "http.request",
    provider: "http",
    required: &["path"],
    fields: &["method", "path", "query", "headers", "body", "body_type", "timeout_ms", "fail_on_status"],
    summary: "a request to base_url + path with the connection's auth; output: status, headers, body",
}];

pub fn check(c: &Map<String, Value>) -> Result<(), String> {
    let mut c = c.clone();
    c.insert("provider".into(), Value::String("http".into()));
    super::super::platform_api::check(&Value::Object(c))
}

pub async fn run(cx: &BlockContext<'_>, conn: &Connection, cfg: &Value) -> Result<Value, StepError> {
    Ok(request_through(cx, conn, cfg).await?.to_json())
}

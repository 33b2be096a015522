//! Slack actions, over Slack's Web API with the connection's bot token. Slack answers 200
//! with `{"ok": false, "error": "channel_not_found"}` for most failures: those fail the step
//! (`SLACK_ERROR`); `ratelimited` (HTTP 429) is retryable after its `Retry-After`.

use super::super::http_call::{Answer, Body, status_error};
use super::super::platform_api::call;
use super::super::{BlockContext, StepError, invalid};
use super::{Spec, pick, text};
use crate::connections::Connection;
use reqwest::Method;
use serde_json::{Value, json};

pub const ACTIONS: &[Spec] = &[Spec {
    name: "slack.postMessage",
    provider: "slack",
    required: &["channel"],
    fields: &["channel", "text", "blocks", "thread_ts", "unfurl_links", "mrkdwn"],
    summary: "POST chat.postMessage; output: ok, channel, ts, message",
}];

/// The step error of a Slack answer, or `None` for a success.
pub fn error(a: &Answer) -> Option<StepError> {
    if a.status == 429 || a.status >= 500 {
        let mut e = status_error("Slack chat.postMessage", a);
        e.code = "SLACK_RATE_LIMITED".into();
        if a.status >= 500 {
            e.code = "SLACK_UNAVAILABLE".into();
        }
        return Some(e);
    }
    if a.body.get("ok") == Some(&json!(true)) {
        return None;
    }
    let why = a.body.get("error").and_then(Value::as_str).unwrap_or("unexpected answer");
    Some(StepError::fatal("SLACK_ERROR", format!("Slack chat.postMessage answered {}: {why}", a.status)))
}

pub async fn run(name: &str, cx: &BlockContext<'_>, conn: &Connection, cfg: &Value) -> Result<Value, StepError> {
    if name != "slack.postMessage" {
        return Err(invalid(format!("unknown Slack action '{name}'")));
    }
    text(cfg, "channel", name)?;
    if cfg.get("text").is_none_or(Value::is_null) && cfg.get("blocks").is_none_or(Value::is_null) {
        return Err(invalid("slack.postMessage needs `text` or `blocks`"));
    }
    let body = Value::Object(pick(cfg, &["channel", "text", "blocks", "thread_ts", "unfurl_links", "mrkdwn"]));
    let a = call(cx, conn, Method::POST, "/chat.postMessage", Body::Json(body), None).await?;
    if let Some(e) = error(&a) {
        return Err(e);
    }
    Ok(json!({"ok": true, "channel": a.body.get("channel"), "ts": a.body.get("ts"), "message": a.body.get("message")}))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Map;

    #[test]
    fn slack_errors_in_a_200_answer_fail_the_step() {
        let a = |status: u16, body: Value| Answer { status, headers: Map::new(), body };
        assert!(error(&a(200, json!({"ok": true, "ts": "1.2"}))).is_none());
        let e = error(&a(200, json!({"ok": false, "error": "channel_not_found"}))).unwrap();
        assert_eq!((e.code.as_str(), e.retryable), ("SLACK_ERROR", false));
        assert!(e.message.contains("channel_not_found"));
        let mut h = Map::new();
        h.insert("retry-after".into(), json!("30"));
        let e = error(&Answer { status: 429, headers: h, body: json!({"ok": false, "error": "ratelimited"}) }).unwrap();
        assert_eq!(
            (e.code.as_str(), e.retryable, e.retry_after),
            ("SLACK_RATE_LIMITED", true, Some(std::time::Duration::from_secs(30)))
        );
    }
}

//! GitHub actions, over GitHub's REST API with the connection's token (and the `User-Agent`,
//! media type and API version GitHub asks for, `Connection::http_auth`).

use super::super::http_call::{Answer, Body, status_error};
use super::super::platform_api::call;
use super::super::{BlockContext, StepError, invalid};
use super::{Spec, pick, text};
use crate::connections::Connection;
use reqwest::Method;
use serde_json::{Map, Value, json};

pub const ACTIONS: &[Spec] = &[Spec {
    name: "github.createIssue",
    provider: "github",
    required: &["owner", "repo", "title"],
    fields: &["owner", "repo", "title", "body", "labels", "assignees", "milestone"],
    summary: "POST /repos/{owner}/{repo}/issues; output: id, number, html_url, url, state, title",
}];

/// GitHub's owner and repository names: letters, digits, `-`, `_`, `.`.
fn is_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 100
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        && s != "."
        && s != ".."
}

pub fn check(c: &Map<String, Value>) -> Result<(), String> {
    for f in ["owner", "repo"] {
        if let Some(Value::String(s)) = c.get(f)
            && !s.contains("{{")
            && !is_name(s)
        {
            return Err(format!("github.createIssue: `{f}` must be a GitHub name (letters, digits, '-', '_', '.')"));
        }
    }
    Ok(())
}

pub fn error(a: &Answer) -> StepError {
    let mut e = status_error("GitHub POST /repos/…/issues", a);
    let limited = a.headers.get("x-ratelimit-remaining").and_then(Value::as_str) == Some("0");
    e.code = match a.status {
        401 => "GITHUB_UNAUTHORIZED",
        403 | 429 if limited || a.status == 429 => "GITHUB_RATE_LIMITED",
        403 => "GITHUB_FORBIDDEN",
        404 => "GITHUB_NOT_FOUND",
        410 => "GITHUB_GONE",
        422 => "GITHUB_VALIDATION",
        _ => return e,
    }
    .into();
    e.retryable = e.code == "GITHUB_RATE_LIMITED";
    e
}

pub async fn run(name: &str, cx: &BlockContext<'_>, conn: &Connection, cfg: &Value) -> Result<Value, StepError> {
    if name != "github.createIssue" {
        return Err(invalid(format!("unknown GitHub action '{name}'")));
    }
    let (owner, repo) = (text(cfg, "owner", name)?, text(cfg, "repo", name)?);
    for (f, v) in [("owner", owner), ("repo", repo)] {
        if !is_name(v) {
            return Err(invalid(format!("{name}: `{f}` \"{v}\" is not a GitHub name")));
        }
    }
    text(cfg, "title", name)?;
    let body = Value::Object(pick(cfg, &["title", "body", "labels", "assignees", "milestone"]));
    let a = call(cx, conn, Method::POST, &format!("/repos/{owner}/{repo}/issues"), Body::Json(body), None).await?;
    if !(200..300).contains(&a.status) {
        return Err(error(&a));
    }
    let mut out = Map::new();
    for f in ["id", "number", "html_url", "url", "state", "title"] {
        out.insert(f.into(), a.body.get(f).cloned().unwrap_or(Value::Null));
    }
    Ok(json!(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_errors() {
        assert!(is_name("baton-dev") && is_name("a.b_c") && !is_name("a/b") && !is_name("..") && !is_name(""));
        let a = |status: u16, remaining: &str| {
            let mut h = Map::new();
            h.insert("x-ratelimit-remaining".into(), json!(remaining));
            Answer { status, headers: h, body: json!({"message": "m"}) }
        };
        assert_eq!(error(&a(403, "0")).code, "GITHUB_RATE_LIMITED");
        assert!(error(&a(403, "0")).retryable);
        assert_eq!(error(&a(403, "10")).code, "GITHUB_FORBIDDEN");
        assert_eq!(error(&a(422, "10")).code, "GITHUB_VALIDATION");
        assert_eq!(error(&a(502, "10")).code, "HTTP_502");
    }
}

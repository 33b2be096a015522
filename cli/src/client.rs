//! The HTTP side: one request, its JSON answer, or the error envelope turned into
//! [`CliError::Api`].

use crate::error::{CliError, Result};
use reqwest::{Method, Url};
use serde_json::Value;
use std::time::Duration;

/// Long enough for a slow server, short enough that a hung one does not hang a script.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

pub struct Client {
    http: reqwest::Client,
    /// `<server>/api/v1`.
    api: Url,
    key: Option<String>,
}

/// A query string's pairs; `None` values are left out.
pub type Query<'a> = &'a [(&'a str, Option<String>)];

impl Client {
    pub fn new(url: &str, key: Option<String>) -> Result<Client> {
        let api = Url::parse(&format!("{url}/api/v1"))
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some())
            .ok_or_else(|| CliError::usage(format!("not an http(s) URL: {url}")))?;
        let http = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .user_agent(concat!("baton-cli/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| CliError::Protocol(format!("HTTP client: {e}")))?;
        Ok(Client { http, api, key })
    }

    /// The URL of `segments` under `/api/v1`, each one percent-encoded (ids come from users).
    pub fn url(&self, segments: &[&str], query: Query) -> Url {
        let mut u = self.api.clone();
        u.path_segments_mut().expect("an http URL has a path").pop_if_empty().extend(segments);
        let pairs: Vec<_> = query.iter().filter_map(|(k, v)| v.as_ref().map(|v| (*k, v.as_str()))).collect();
        if !pairs.is_empty() {
            u.query_pairs_mut().extend_pairs(pairs);
        }
        u
    }

    pub async fn get(&self, segments: &[&str], query: Query<'_>) -> Result<Value> {
        self.send(Method::GET, self.url(segments, query), None).await.map(|(_, v)| v)
    }

    pub async fn post(&self, segments: &[&str], body: Option<&Value>) -> Result<Value> {
        self.send(Method::POST, self.url(segments, &[]), body).await.map(|(_, v)| v)
    }

    pub async fn delete(&self, segments: &[&str]) -> Result<Value> {
        self.send(Method::DELETE, self.url(segments, &[]), None).await.map(|(_, v)| v)
    }

    /// The status too: `PUT /workflows/{id}/graph` says by 201 or 200 whether it created.
    pub async fn put(&self, segments: &[&str], body: &Value) -> Result<(u16, Value)> {
        self.send(Method::PUT, self.url(segments, &[]), Some(body)).await
    }

    pub async fn send(&self, method: Method, url: Url, body: Option<&Value>) -> Result<(u16, Value)> {
        let mut rb = self.http.request(method, url.clone());
        if let Some(k) = &self.key {
            rb = rb.header("X-API-Key", k);
        }
        if let Some(b) = body {
            rb = rb.json(b);
        }
        let origin = url.origin().ascii_serialization();
        let unreachable = |e: reqwest::Error| CliError::Unreachable { url: origin.clone(), reason: describe(&e) };
        let resp = rb.send().await.map_err(unreachable)?;
        let status = resp.status().as_u16();
        let bytes = resp.bytes().await.map_err(unreachable)?;
        let json = if bytes.is_empty() { Ok(Value::Null) } else { serde_json::from_slice::<Value>(&bytes) };
        if (200..300).contains(&status) {
            let v = json.map_err(|_| {
                CliError::Protocol(format!("{origin} answered {status} with something other than JSON; is it Baton?"))
            })?;
            return Ok((status, v));
        }
        Err(match json {
            Ok(v) => api_error(status, &v),
            Err(_) => CliError::Api {
                status,
                code: format!("HTTP_{status}"),
                message: format!("HTTP {status} from {origin} (not a Baton error envelope)"),
                details: vec![],
            },
        })
    }
}

/// The error envelope `{"error": {"code", "message", "details": [{"path", "message"}]}}`.
fn api_error(status: u16, body: &Value) -> CliError {
    let e = &body["error"];
    let message = e["message"].as_str().map(str::to_string).unwrap_or_else(|| format!("HTTP {status}: {body}"));
    let code = e["code"].as_str().unwrap_or_default().to_string();
    let details = e["details"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|d| {
            let path = d["path"].as_array().map(|p| {
                p.iter().map(|s| s.as_str().map(str::to_string).unwrap_or_else(|| s.to_string())).collect::<Vec<_>>()
            });
            let msg = d["message"].as_str().map(str::to_string).unwrap_or_else(|| d.to_string());
            match path {
                Some(p) if !p.is_empty() => format!("at {}: {msg}", p.join(".")),
                _ => msg,
            }
        })
        .collect();
    CliError::Api { status, code, message, details }
}

/// reqwest's own text is "error sending request for url (...)"; the cause says what happened.
fn describe(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        return "timed out".into();
    }
    let mut cause: &dyn std::error::Error = e;
    while let Some(next) = cause.source() {
        cause = next;
    }
    let root = cause.to_string();
    if e.is_connect() && root.to_lowercase().contains("refused") {
        "connection refused (is the server running?)".into()
    } else {
        root
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn ids_are_percent_encoded_as_one_path_segment() {
        let c = Client::new("http://h:1", None).unwrap();
        assert_eq!(c.url(&["runs", "a/b c"], &[]).as_str(), "http://h:1/api/v1/runs/a%2Fb%20c");
        let q = c.url(&["runs"], &[("status", Some("failed".into())), ("limit", None)]);
        assert_eq!(q.as_str(), "http://h:1/api/v1/runs?status=failed");
    }

    #[test]
    fn a_url_under_a_prefix_keeps_it() {
        let c = Client::new("https://h/prefix", None).unwrap();
        assert_eq!(c.url(&["workflows"], &[]).as_str(), "https://h/prefix/api/v1/workflows");
    }

    #[test]
    fn a_url_that_is_not_http_is_a_usage_error() {
        for u in ["ftp://h", "localhost:3000", ""] {
            assert!(matches!(Client::new(u, None), Err(CliError::Usage(_))), "{u}");
        }
    }

    #[test]
    fn the_envelope_gives_message_code_and_details() {
        let body = json!({"error": {"code": "VALIDATION_ERROR", "message": "bad input",
            "details": [{"path": ["input", "amount"], "message": "Required"}, {"path": [], "message": "x"},
                        {"path": ["blocks", 0], "message": "y"}]}});
        let CliError::Api { status, code, message, details } = api_error(400, &body) else { panic!() };
        assert_eq!((status, code.as_str(), message.as_str()), (400, "VALIDATION_ERROR", "bad input"));
        assert_eq!(details, ["at input.amount: Required", "x", "at blocks.0: y"]);
    }

    #[test]
    fn a_json_answer_without_an_envelope_still_says_the_status() {
        let e = api_error(502, &json!({"message": "bad gateway"}));
        assert!(e.to_string().starts_with("HTTP 502"), "{e}");
    }
}

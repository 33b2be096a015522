//! Extractors whose rejections speak our error envelope, plus the 404 / 405 fallbacks.
//!
//! Use these instead of axum's `Json`, `Query` and `Path` in every handler, so a bad request
//! is always `{"error": {"code": "VALIDATION_ERROR", ...}}` and never axum's plain text.

use crate::api::error::envelope;
use crate::error::{Detail, Error};
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, FailedToBufferBody};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::response::{IntoResponse, Response};
use http::request::Parts;
use http::{HeaderMap, Method, StatusCode, Uri, header};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

/// A JSON object request body (Content-Type `application/json` or `*/*+json` required), or a
/// JSON response. Rejections: 400 `VALIDATION_ERROR` (content type, syntax with line/column,
/// not an object, data with the field path in `details`), 413 `PAYLOAD_TOO_LARGE` over the
/// body limit.
#[derive(Debug, Clone, Copy, Default)]
pub struct Json<T>(pub T);

/// Like [`Json`], for endpoints whose body is optional: an empty (or all-whitespace) body is
/// read as `{}`, whatever its Content-Type.
#[derive(Debug, Clone, Copy, Default)]
pub struct OptionalJson<T>(pub T);

impl<T, S> FromRequest<S> for Json<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = Error;

    async fn from_request(req: Request, state: &S) -> Result<Self, Error> {
        if !is_json_content_type(req.headers()) {
            return Err(content_type_error());
        }
        let bytes = read_body(req, state).await?;
        parse_object(&bytes).map(Json)
    }
}

impl<T, S> FromRequest<S> for OptionalJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = Error;

    async fn from_request(req: Request, state: &S) -> Result<Self, Error> {
        let json_type = is_json_content_type(req.headers());
        let bytes = read_body(req, state).await?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return parse_json(b"{}").map(OptionalJson);
        }
        if !json_type {
            return Err(content_type_error());
        }
        parse_object(&bytes).map(OptionalJson)
    }
}

/// The raw request body, for doors that must check a signature over the exact bytes before
/// parsing anything. Over the body limit: 413 `PAYLOAD_TOO_LARGE` in the envelope.
#[derive(Debug, Clone)]
pub struct RawBody(pub Bytes);

impl<S: Send + Sync> FromRequest<S> for RawBody {
    type Rejection = Error;

    async fn from_request(req: Request, state: &S) -> Result<Self, Error> {
        read_body(req, state).await.map(RawBody)
    }
}

/// A raw body as JSON, with [`OptionalJson`]'s rules: empty (or all-whitespace) is `{}`
/// whatever the Content-Type; otherwise the Content-Type must be JSON and the bytes valid
/// UTF-8 JSON (400 `VALIDATION_ERROR` each, with a message saying which).
pub fn optional_json_body<T: DeserializeOwned>(headers: &HeaderMap, bytes: &[u8]) -> Result<T, Error> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return parse_json(b"{}");
    }
    if !is_json_content_type(headers) {
        return Err(content_type_error());
    }
    parse_json(bytes)
}

impl<T: Serialize> IntoResponse for Json<T> {
    fn into_response(self) -> Response {
        axum::Json(self.0).into_response()
    }
}

fn content_type_error() -> Error {
    Error::validation_at(vec![Value::from("Content-Type")], "Content-Type must be application/json")
}

/// `application/json`, or any `application/*+json`, parameters (charset) allowed.
pub fn is_json_content_type(headers: &HeaderMap) -> bool {
    let Some(ct) = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let essence = ct.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    let Some((ty, sub)) = essence.split_once('/') else {
        return false;
    };
    ty == "application" && (sub == "json" || sub.ends_with("+json"))
}

async fn read_body<S: Send + Sync>(req: Request, state: &S) -> Result<Bytes, Error> {
    Bytes::from_request(req, state).await.map_err(|e| match e {
        BytesRejection::FailedToBufferBody(FailedToBufferBody::LengthLimitError(_)) => {
            Error::PayloadTooLarge("Request body is larger than the limit".into())
        }
        other if let Some(t) = super::deadline::timed_out(&other) => {
            Error::RequestTimeout(format!("The request body did not arrive within {} s", t.as_secs_f64()))
        }
        other => Error::validation(format!("Could not read the request body: {}", other.body_text())),
    })
}

/// Parses a body that must be a JSON object. serde reads a struct from an array too
/// (`[null, null]` fills its fields in order), so the shape is checked first.
pub fn parse_object<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Error> {
    let first = bytes.iter().find(|b| !b.is_ascii_whitespace());
    if first.is_some_and(|b| *b != b'{') {
        // Only a valid JSON value is worth naming; anything else gets the syntax error.
        let value: Value = parse_json(bytes)?;
        let kind = match value {
            Value::Array(_) => "an array",
            Value::String(_) => "a string",
            Value::Number(_) => "a number",
            Value::Bool(_) => "a boolean",
            Value::Null => "null",
            Value::Object(_) => "an object",
        };
        return Err(Error::validation(format!("The request body must be a JSON object, not {kind}")));
    }
    parse_json(bytes)
}

/// Parses a JSON body into `T`, mapping serde's errors to `VALIDATION_ERROR`s.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Error> {
    use serde_json::error::Category;
    if let Err(e) = std::str::from_utf8(bytes) {
        let message = format!("Request body is not valid UTF-8 (invalid byte at offset {})", e.valid_up_to());
        return Err(Error::Validation { details: vec![Detail::new(Vec::new(), message.clone())], message });
    }
    let e = match serde_json::from_slice::<T>(bytes) {
        Ok(v) => return Ok(v),
        Err(e) => e,
    };
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(Error::validation("Request body is empty; send a JSON object"));
    }
    let plain = strip_location(&e);
    match e.classify() {
        Category::Data => {
            let path = data_error_path::<T>(bytes, &e);
            let message = if path.is_empty() {
                format!("Invalid request body: {plain}")
            } else {
                format!("Invalid request body at {}: {plain}", render_path(&path))
            };
            Err(Error::Validation { message, details: vec![Detail::new(path, plain)] })
        }
        Category::Syntax | Category::Eof | Category::Io => {
            let message = format!("Invalid JSON at line {} column {}: {plain}", e.line(), e.column());
            Err(Error::Validation { details: vec![Detail::new(Vec::new(), message.clone())], message })
        }
    }
}

/// serde_json's message without its " at line L column C" suffix.
fn strip_location(e: &serde_json::Error) -> String {
    let s = e.to_string();
    let suffix = format!(" at line {} column {}", e.line(), e.column());
    s.strip_suffix(&suffix).map(str::to_string).unwrap_or(s)
}

/// The field path of a data error. axum's `Json` tracks it (serde_path_to_error) and prints
/// it as `a.b[0].c: <serde message>`; we recover it from that text.
fn data_error_path<T: DeserializeOwned>(bytes: &[u8], e: &serde_json::Error) -> Vec<Value> {
    let Err(rejection) = axum::Json::<T>::from_bytes(bytes) else {
        return Vec::new();
    };
    let mut deepest: &dyn std::error::Error = &rejection;
    while let Some(s) = deepest.source() {
        deepest = s;
    }
    let text = deepest.to_string();
    let Some(prefix) = text.strip_suffix(&e.to_string()).and_then(|p| p.strip_suffix(": ")) else {
        return Vec::new();
    };
    parse_path(prefix)
}

/// `blocks[0].id` → `["blocks", 0, "id"]`.
fn parse_path(s: &str) -> Vec<Value> {
    let mut out = Vec::new();
    if s == "." {
        return out;
    }
    let mut key = String::new();
    let mut chars = s.chars().peekable();
    let flush = |key: &mut String, out: &mut Vec<Value>| {
        if !key.is_empty() && key != "?" {
            out.push(Value::from(std::mem::take(key)));
        }
        key.clear();
    };
    while let Some(c) = chars.next() {
        match c {
            '.' => flush(&mut key, &mut out),
            '[' => {
                let mut digits = String::new();
                while let Some(d) = chars.peek().copied().filter(char::is_ascii_digit) {
                    digits.push(d);
                    chars.next();
                }
                if chars.peek() == Some(&']') && !digits.is_empty() {
                    chars.next();
                    flush(&mut key, &mut out);
                    out.push(Value::from(digits.parse::<u64>().unwrap_or(0)));
                } else {
                    key.push('[');
                    key.push_str(&digits);
                }
            }
            c => key.push(c),
        }
    }
    flush(&mut key, &mut out);
    out
}

fn render_path(path: &[Value]) -> String {
    path.iter().map(|v| v.as_str().map(str::to_string).unwrap_or_else(|| v.to_string())).collect::<Vec<_>>().join(".")
}

/// Query string parameters; a malformed query is a 400 `VALIDATION_ERROR`.
#[derive(Debug, Clone, Default)]
pub struct Query<T>(pub T);

impl<T, S> FromRequestParts<S> for Query<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Error> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|q| Query(q.0))
            .map_err(|e| Error::validation(format!("Invalid query string: {}", e.body_text())))
    }
}

/// Path parameters; a malformed one is a 400 `VALIDATION_ERROR`.
#[derive(Debug, Clone)]
pub struct Path<T>(pub T);

impl<T, S> FromRequestParts<S> for Path<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Error> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|p| Path(p.0))
            .map_err(|e| Error::validation(format!("Invalid path: {}", e.body_text())))
    }
}

/// Most request headers we read (hyper itself refuses more than 100 with a bare 431).
pub const MAX_HEADERS: usize = 64;
/// Largest sum of header name and value lengths.
pub const MAX_HEADER_BYTES: usize = 16 * 1024;
/// Largest single header value.
pub const MAX_HEADER_VALUE_BYTES: usize = 8 * 1024;

/// Refuses requests with too many or too large headers: 431 `HEADERS_TOO_LARGE` in the
/// envelope, before any handler (or body read) runs.
pub async fn limit_headers(req: Request, next: axum::middleware::Next) -> Response {
    let h = req.headers();
    if h.len() > MAX_HEADERS {
        return Error::HeadersTooLarge(format!("Too many request headers ({}; at most {MAX_HEADERS})", h.len()))
            .into_response();
    }
    let mut total = 0;
    for (name, value) in h {
        if value.len() > MAX_HEADER_VALUE_BYTES {
            return Error::HeadersTooLarge(format!(
                "Request header {name} is {} bytes; at most {MAX_HEADER_VALUE_BYTES}",
                value.len()
            ))
            .into_response();
        }
        total += name.as_str().len() + value.len();
    }
    if total > MAX_HEADER_BYTES {
        return Error::HeadersTooLarge(format!("Request headers total {total} bytes; at most {MAX_HEADER_BYTES}"))
            .into_response();
    }
    next.run(req).await
}

/// Router fallback: 404 `NOT_FOUND` for unknown routes.
pub async fn not_found(method: Method, uri: Uri) -> Error {
    Error::NotFound(format!("No route for {method} {}", uri.path()))
}

/// 405 for a known route called with the wrong method (axum keeps the `Allow` header).
pub async fn method_not_allowed(method: Method, uri: Uri) -> Response {
    envelope(
        StatusCode::METHOD_NOT_ALLOWED,
        "METHOD_NOT_ALLOWED",
        &format!("Method {method} is not allowed on {}", uri.path()),
        &[],
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn paths_parse_into_segments() {
        assert_eq!(parse_path("blocks[0].id"), vec![json!("blocks"), json!(0), json!("id")]);
        assert_eq!(parse_path("name"), vec![json!("name")]);
        assert_eq!(parse_path("."), Vec::<Value>::new());
        assert_eq!(parse_path("a[1][2]"), vec![json!("a"), json!(1), json!(2)]);
    }

    #[derive(serde::Deserialize, Debug)]
    #[allow(dead_code)]
    struct Body {
        name: String,
        items: Vec<Inner>,
    }
    #[derive(serde::Deserialize, Debug)]
    #[allow(dead_code)]
    struct Inner {
        n: u32,
    }

    #[test]
    fn data_errors_carry_the_field_path() {
        let e = parse_json::<Body>(br#"{"name": "x", "items": [{"n": 1}, {"n": "two"}]}"#).unwrap_err();
        let Error::Validation { details, message } = e else { panic!() };
        assert_eq!(details[0].path, vec![json!("items"), json!(1), json!("n")]);
        assert!(message.contains("items.1.n"), "{message}");
    }

    #[test]
    fn object_bodies_refuse_arrays_and_scalars() {
        #[derive(serde::Deserialize, Debug)]
        #[allow(dead_code)]
        struct Opt {
            name: Option<String>,
            scopes: Option<Vec<String>>,
        }
        // What serde alone accepts: a struct read from an array.
        assert!(serde_json::from_slice::<Opt>(b"[null, null]").is_ok());
        for (body, kind) in [
            (&b"[null,null]"[..], "an array"),
            (b" [\"name\"]", "an array"),
            (b"\"x\"", "a string"),
            (b"7", "a number"),
            (b"null", "null"),
            (b"true", "a boolean"),
        ] {
            let e = parse_object::<Opt>(body).unwrap_err();
            assert!(matches!(&e, Error::Validation { message, .. } if message.ends_with(kind)), "{e:?}");
            assert!(parse_object::<Value>(body).is_err());
        }
        assert!(parse_object::<Opt>(b" {\"name\": \"a\"}").is_ok());
        // Broken JSON keeps its syntax error.
        assert!(parse_object::<Opt>(b"[1,").unwrap_err().to_string().contains("line 1"));
    }

    #[test]
    fn syntax_errors_carry_line_and_column() {
        let e = parse_json::<Value>(b"{\n  \"a\": }").unwrap_err();
        assert!(e.to_string().contains("line 2 column"), "{e}");
    }
}

//! Sends one provider call through the guarded client: the target checked by the
//! private-target guard, no redirects, the step's remaining time as the timeout; Bedrock
//! without a key signed with SigV4 by hand (no Bedrock SDK in the zips).

use super::providers::{Kind, Resolved};
use super::wire::{self, Answer, ChatRequest, Failure};
use crate::adapters::http::{GuardedHttp, chain, refused_in};
use aws_credential_types::Credentials;
use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
use aws_sigv4::sign::v4;
use std::time::{Duration, Instant};

/// Largest answer read from a provider.
const MAX_ANSWER_BYTES: usize = 4 * 1024 * 1024;

/// An answer and how long the call took.
pub struct Called {
    pub answer: Answer,
    pub latency_ms: u64,
}

fn failure(code: &'static str, message: String, retryable: bool) -> Failure {
    Failure { code, message, retryable, retry_after: None }
}

/// The process's AWS credentials (on Lambda, the function role's, from its environment).
fn env_credentials() -> Option<Credentials> {
    let id = std::env::var("AWS_ACCESS_KEY_ID").ok().filter(|v| !v.is_empty())?;
    let secret = std::env::var("AWS_SECRET_ACCESS_KEY").ok().filter(|v| !v.is_empty())?;
    let token = std::env::var("AWS_SESSION_TOKEN").ok().filter(|v| !v.is_empty());
    Some(Credentials::new(id, secret, token, None, "environment"))
}

/// SigV4 headers for a Bedrock request.
fn sigv4_headers(
    creds: Credentials,
    region: &str,
    url: &str,
    headers: &[(String, String)],
    body: &[u8],
) -> Result<Vec<(String, String)>, Failure> {
    let identity = creds.into();
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(region)
        .name("bedrock")
        .time(std::time::SystemTime::now())
        .settings(SigningSettings::default())
        .build()
        .map_err(|e| failure("INTERNAL", format!("bedrock signing: {e}"), false))?
        .into();
    let hs = headers.iter().map(|(k, v)| (k.as_str(), v.as_str()));
    let signable = SignableRequest::new("POST", url, hs, SignableBody::Bytes(body))
        .map_err(|e| failure("INTERNAL", format!("bedrock signing: {e}"), false))?;
    let (instructions, _) =
        sign(signable, &params).map_err(|e| failure("INTERNAL", format!("bedrock signing: {e}"), false))?.into_parts();
    Ok(instructions.headers().map(|(k, v)| (k.to_string(), v.to_string())).collect())
}

/// One call of `req` to `p`, within `timeout`.
pub async fn chat(http: &GuardedHttp, p: &Resolved, req: &ChatRequest, timeout: Duration) -> Result<Called, Failure> {
    chat_signed_by(http, p, req, timeout, env_credentials).await
}

/// [`chat`], with Bedrock's AWS credentials from `creds` (tests give their own).
pub async fn chat_signed_by(
    http: &GuardedHttp,
    p: &Resolved,
    req: &ChatRequest,
    timeout: Duration,
    creds: impl FnOnce() -> Option<Credentials>,
) -> Result<Called, Failure> {
    let started = Instant::now();
    if p.kind == Kind::Mock {
        return Ok(Called { answer: wire::mock_answer(p, req), latency_ms: 0 });
    }
    let mut r = wire::build(p, req);
    let url = http.vet("base_url", &r.url).map_err(|m| failure("PROVIDER_REFUSED_TARGET", m, false))?;
    if let Some(region) = &r.sigv4_region {
        let creds = creds().ok_or_else(|| {
            failure(
                "PROVIDER_AUTH",
                "bedrock: no AWS credentials in this process and no api_key on the provider".into(),
                false,
            )
        })?;
        let extra = sigv4_headers(creds, region, url.as_str(), &r.headers, &r.body)?;
        r.headers.extend(extra);
    }
    let client = http.client().map_err(|m| failure("INTERNAL", m, false))?;
    let mut rb = client.post(url).timeout(timeout).body(r.body);
    for (k, v) in &r.headers {
        rb = rb.header(k, v);
    }
    let mut resp = rb.send().await.map_err(|e| match refused_in(&e) {
        Some(m) => failure("PROVIDER_REFUSED_TARGET", m, false),
        None if e.is_timeout() => {
            failure("TIMEOUT", format!("{} gave no answer within {} ms", p.kind.name(), timeout.as_millis()), true)
        }
        None => failure("PROVIDER_UNREACHABLE", format!("{}: {}", p.kind.name(), chain(&e)), true),
    })?;
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let mut body = Vec::new();
    loop {
        match resp.chunk().await {
            Ok(Some(c)) => {
                if body.len() + c.len() > MAX_ANSWER_BYTES {
                    return Err(failure(
                        "PROVIDER_BAD_ANSWER",
                        format!("the answer is over {MAX_ANSWER_BYTES} bytes"),
                        false,
                    ));
                }
                body.extend_from_slice(&c);
            }
            Ok(None) => break,
            Err(e) if e.is_timeout() => {
                return Err(failure("TIMEOUT", format!("{}'s answer did not arrive in time", p.kind.name()), true));
            }
            Err(e) => return Err(failure("PROVIDER_UNREACHABLE", chain(&e), true)),
        }
    }
    let latency_ms = started.elapsed().as_millis() as u64;
    if !(200..300).contains(&status) {
        let header = |n: &str| headers.get(n).and_then(|v| v.to_str().ok()).map(str::to_string);
        return Err(wire::classify(p.kind, status, header, &body));
    }
    Ok(Called { answer: wire::parse(p.kind, &body)?, latency_ms })
}

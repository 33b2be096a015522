//! API key authentication (`X-API-Key: <key>` or `Authorization: Bearer <key>`) and the
//! `RateLimit-*` headers.

use crate::accounts::{self, Principal, RateInfo};
use crate::app::AppState;
use crate::error::Error;
use axum::extract::FromRequestParts;
use http::request::Parts;
use http::{HeaderMap, HeaderName, HeaderValue, header};

pub const X_API_KEY: &str = "x-api-key";

/// The API key a request carries, if any. `X-API-Key` wins when both are sent.
pub fn api_key_of(headers: &HeaderMap) -> Result<&str, Error> {
    if let Some(v) = headers.get(X_API_KEY) {
        let key = v.to_str().map(str::trim).unwrap_or("");
        if key.is_empty() {
            return Err(Error::Unauthorized("Malformed X-API-Key header".into()));
        }
        return Ok(key);
    }
    if let Some(v) = headers.get(header::AUTHORIZATION) {
        let raw = v.to_str().unwrap_or("").trim();
        let token = raw
            .split_once(' ')
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, t)| t.trim())
            .filter(|t| !t.is_empty() && !t.contains(' '));
        return token.ok_or_else(|| {
            Error::Unauthorized("Malformed Authorization header: expected `Authorization: Bearer <key>`".into())
        });
    }
    Err(Error::Unauthorized("Missing API key: send X-API-Key or Authorization: Bearer".into()))
}

impl FromRequestParts<AppState> for Principal {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Error> {
        if let Some(p) = parts.extensions.get::<Principal>() {
            return Ok(p.clone());
        }
        let key = api_key_of(&parts.headers)?;
        let principal = accounts::authenticate(state.store.as_ref(), key).await?;
        parts.extensions.insert(principal.clone());
        Ok(principal)
    }
}

/// A principal that has also passed its account's run-start limit
/// (`AppConfig::rate_limit_per_minute`).
/// For the endpoints that start runs; answer with [`rate_limit_headers`] of `rate`.
#[derive(Clone, Debug)]
pub struct RateLimited {
    pub principal: Principal,
    pub rate: RateInfo,
}

impl FromRequestParts<AppState> for RateLimited {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Error> {
        let principal = Principal::from_request_parts(parts, state).await?;
        let rate =
            accounts::check_run_starts(state.store.as_ref(), &principal.account_id, state.config.rate_limit_per_minute)
                .await?;
        Ok(RateLimited { principal, rate })
    }
}

/// `RateLimit-Limit`, `RateLimit-Remaining`, `RateLimit-Reset` (seconds).
pub fn rate_limit_headers(info: &RateInfo) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(HeaderName::from_static("ratelimit-limit"), HeaderValue::from(info.limit));
    h.insert(HeaderName::from_static("ratelimit-remaining"), HeaderValue::from(info.remaining));
    h.insert(HeaderName::from_static("ratelimit-reset"), HeaderValue::from(info.reset_secs));
    h
}

//! `POST /api/v1/callback` (no API key): resumes the step waiting on a callback token (an
//! async `general_api` step). The token comes as `Authorization: Bearer`, `?token=` or the
//! body's `token`; the body is the answer: `{"output": …}` (or any other JSON, taken as the
//! output) completes the step, `{"error": {"message"}}` fails it. 200 `{run_id, step_key}`;
//! 404 for a token nobody minted, 409 for one already used (or whose wait has ended).

use super::extract::{Query, RawBody, optional_json_body};
use crate::app::AppState;
use crate::error::{Error, Result};
use crate::webhooks::{self, Presented};
use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, header};
use axum::routing::post;
use serde::Deserialize;
use serde_json::{Value, json};

pub fn routes() -> Router<AppState> {
    Router::new().route("/api/v1/callback", post(callback))
}

#[derive(Debug, Default, Deserialize)]
struct TokenQuery {
    token: Option<String>,
}

async fn callback(
    State(state): State<AppState>,
    Query(q): Query<TokenQuery>,
    headers: HeaderMap,
    RawBody(body): RawBody,
) -> Result<axum::Json<Value>> {
    let authorization = match headers.get(header::AUTHORIZATION) {
        Some(v) => Some(v.to_str().map_err(|_| Error::Unauthorized("Malformed Authorization header".into()))?),
        None => None,
    };
    let body: Value = optional_json_body(&headers, &body)?;
    let (token, answer) = token_and_answer(webhooks::presented(authorization, q.token.as_deref()), body)?;
    // The resume (commit, then send) finishes even if the caller goes away.
    let st = state.clone();
    let (run_id, step_key) = tokio::spawn(async move { st.engine.resume_by_token(&token, answer).await })
        .await
        .map_err(|e| Error::internal(format!("callback task failed: {e}")))?
        .map_err(|e| match e {
            Error::NotFound(_) => Error::NotFound("Unknown callback token".into()),
            // The run ended (cancelled, failed) while the step waited: the wait is closed.
            Error::InvalidStatus(m) => Error::Conflict(format!("the wait is closed: {m}")),
            e => e,
        })?;
    Ok(axum::Json(json!({"run_id": run_id, "step_key": step_key})))
}

/// The token (header or query first, then the body's `token`, which is not part of the
/// answer) and the answer, an object: a body that is not one is the output itself.
fn token_and_answer(presented: Presented, body: Value) -> Result<(String, Value)> {
    let mut answer = match body {
        Value::Object(o) => o,
        other => {
            let mut o = serde_json::Map::new();
            o.insert("output".into(), other);
            o
        }
    };
    let in_body = match answer.remove("token") {
        Some(Value::String(t)) => Some(t),
        Some(_) => return Err(Error::validation_at(vec![json!("token")], "`token` must be a string")),
        None => None,
    };
    let token = match presented {
        Presented::Bearer(t) | Presented::Query(t) => Some(t),
        Presented::None => in_body,
    };
    match token.filter(|t| !t.is_empty()) {
        Some(t) => Ok((t, Value::Object(answer))),
        None => Err(Error::Unauthorized(
            "A callback token is required: `Authorization: Bearer <token>`, `?token=` or the body's `token`".into(),
        )),
    }
}

#[cfg(test)]
#[path = "inbound_tests.rs"]
mod tests;

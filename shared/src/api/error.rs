//! The one place where [`Error`] becomes an HTTP response (DESIGN.md §5 error envelope).
//!
//! Every response body is `{"error": {"code", "message", "details": [...]}}`; `details` is
//! always present. Internal errors show a generic message; the detail goes to the log only.

use crate::error::{Detail, Error};
use axum::Json;
use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};
use serde_json::json;

/// Builds the error envelope. Used by [`Error`]'s mapping and by the few responses that have
/// no variant of their own (405).
pub fn envelope(status: StatusCode, code: &str, message: &str, details: &[Detail]) -> Response {
    let body = json!({"error": {"code": code, "message": message, "details": details}});
    (status, Json(body)).into_response()
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        match self {
            Error::Unauthorized(m) => envelope(StatusCode::UNAUTHORIZED, "UNAUTHORIZED", &m, &[]),
            Error::Forbidden(m) => envelope(StatusCode::FORBIDDEN, "FORBIDDEN", &m, &[]),
            Error::NotFound(m) => envelope(StatusCode::NOT_FOUND, "NOT_FOUND", &m, &[]),
            Error::Conflict(m) => envelope(StatusCode::CONFLICT, "CONFLICT", &m, &[]),
            Error::Validation { message, details } => {
                envelope(StatusCode::BAD_REQUEST, "VALIDATION_ERROR", &message, &details)
            }
            Error::InvalidStatus(m) => envelope(StatusCode::BAD_REQUEST, "INVALID_STATUS", &m, &[]),
            Error::PayloadTooLarge(m) => envelope(StatusCode::PAYLOAD_TOO_LARGE, "PAYLOAD_TOO_LARGE", &m, &[]),
            Error::HeadersTooLarge(m) => {
                envelope(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE, "HEADERS_TOO_LARGE", &m, &[])
            }
            Error::RequestTimeout(m) => envelope(StatusCode::REQUEST_TIMEOUT, "REQUEST_TIMEOUT", &m, &[]),
            Error::Unprocessable { message, details } => {
                envelope(StatusCode::UNPROCESSABLE_ENTITY, "UNPROCESSABLE", &message, &details)
            }
            Error::RateLimited(m, retry_after) => {
                let mut resp = envelope(StatusCode::TOO_MANY_REQUESTS, "RATE_LIMITED", &m, &[]);
                resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(retry_after.max(1)));
                resp
            }
            Error::PaymentRequired(m) => envelope(StatusCode::PAYMENT_REQUIRED, "PAYMENT_REQUIRED", &m, &[]),
            Error::NotImplemented(m) => envelope(StatusCode::NOT_IMPLEMENTED, "NOT_IMPLEMENTED", &m, &[]),
            Error::Internal(m) => {
                tracing::error!(error = %m, "internal error");
                envelope(StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL", "Internal server error", &[])
            }
        }
    }
}

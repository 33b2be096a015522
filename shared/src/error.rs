//! The one error type of Baton. Every layer returns it; the HTTP mapping lives in
//! `api::error` and nowhere else.

use serde_json::Value;

/// One problem with one field of the caller's input.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Detail {
    pub path: Vec<Value>,
    pub message: String,
}

impl Detail {
    pub fn new(path: Vec<Value>, message: impl Into<String>) -> Self {
        Self { path, message: message.into() }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    /// A conditional write lost, or the caller's request clashes with the current state.
    #[error("{0}")]
    Conflict(String),
    #[error("{message}")]
    Validation { message: String, details: Vec<Detail> },
    /// The resource exists but is in a state that does not allow the operation.
    #[error("{0}")]
    InvalidStatus(String),
    #[error("{0}")]
    PayloadTooLarge(String),
    /// Too many request headers, or too large ones.
    #[error("{0}")]
    HeadersTooLarge(String),
    /// The client did not send its request body in time.
    #[error("{0}")]
    RequestTimeout(String),
    #[error("{message}")]
    Unprocessable { message: String, details: Vec<Detail> },
    #[error("{0}")]
    RateLimited(String, u64),
    /// The managed trial is used up, or there is none: the caller must bring a provider.
    #[error("{0}")]
    PaymentRequired(String),
    /// A feature that exists in the contract but is not built yet.
    #[error("{0}")]
    NotImplemented(String),
    /// Anything that is our fault or the backend's: the caller sees a generic message.
    #[error("internal error: {0}")]
    Internal(String),
}

impl Error {
    pub fn validation(message: impl Into<String>) -> Self {
        Error::Validation { message: message.into(), details: Vec::new() }
    }
    pub fn validation_at(path: Vec<Value>, message: impl Into<String>) -> Self {
        let message = message.into();
        Error::Validation { details: vec![Detail::new(path, message.clone())], message }
    }
    pub fn internal(e: impl std::fmt::Display) -> Self {
        Error::Internal(e.to_string())
    }
    pub fn not_found(what: impl std::fmt::Display) -> Self {
        Error::NotFound(format!("{what} not found"))
    }
    pub fn is_conflict(&self) -> bool {
        matches!(self, Error::Conflict(_))
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl From<serde_json::Error> for Error {
    fn from(e: serde_json::Error) -> Self {
        Error::Internal(format!("json: {e}"))
    }
}

/// `body` as a JSON object with no field outside `allowed`: the check every create/update
/// endpoint makes before reading fields, so a misspelt field is a 400, not silently ignored.
pub(crate) fn object_body<'a>(body: &'a Value, allowed: &[&str]) -> Result<&'a serde_json::Map<String, Value>> {
    let Value::Object(o) = body else {
        return Err(Error::validation("The request body must be a JSON object"));
    };
    match o.keys().find(|k| !allowed.contains(&k.as_str())) {
        Some(k) => Err(Error::validation_at(
            vec![Value::from(k.as_str())],
            format!("unknown field `{k}`; expected one of: {}", allowed.join(", ")),
        )),
        None => Ok(o),
    }
}

/// `v` as a whole number, also when written with a fraction (`500.0`): JSON Schema (and so
/// the OpenAPI document) counts that as an integer, and so does every JSON client that has
/// only doubles.
pub fn whole_number(v: &Value) -> Option<u64> {
    v.as_u64()
        .or_else(|| v.as_f64().filter(|f| f.fract() == 0.0 && (0.0..u64::MAX as f64).contains(f)).map(|f| f as u64))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_whole_number_may_be_written_with_a_fraction_but_not_have_one() {
        assert_eq!(whole_number(&json!(7)), Some(7));
        assert_eq!(whole_number(&json!(560.0)), Some(560));
        assert_eq!(whole_number(&json!(0)), Some(0));
        for bad in [json!(1.5), json!(-1), json!(-2.0), json!("5"), json!(null), json!(1e30)] {
            assert_eq!(whole_number(&bad), None, "{bad}");
        }
    }
}

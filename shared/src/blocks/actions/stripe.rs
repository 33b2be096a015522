//! Stripe actions, over Stripe's REST API: form-encoded bodies (`metadata[key]=…`),
//! `Authorization: Bearer sk_…`, an `Idempotency-Key` per request derived from the step's
//! (a retried step replays Stripe's first answer instead of billing twice), and Stripe's
//! error object (`{"error": {"type", "code", "message", "param"}}`) mapped to step errors.

use super::super::http_call::{Answer, Body, text as value_text};
use super::super::platform_api::call;
use super::super::{BlockContext, StepError, invalid};
use super::{Spec, pick, text};
use crate::connections::Connection;
use reqwest::Method;
use serde_json::{Map, Value, json};

pub const ACTIONS: &[Spec] = &[
    Spec {
        name: "stripe.createCustomer",
        provider: "stripe",
        required: &[],
        fields: &["email", "name", "description", "phone", "metadata"],
        summary: "POST /v1/customers; output: the Stripe customer",
    },
    Spec {
        name: "stripe.createInvoice",
        provider: "stripe",
        required: &["customerId", "amount"],
        fields: &["customerId", "amount", "currency", "description", "metadata"],
        summary: "an invoice item of `amount` (minor units, rounded) in `currency` (default usd), then the invoice \
                  with `metadata` and pending_invoice_items_behavior=include, finalized; output: id, number, \
                  amount_due, hosted_invoice_url (and status, customer, currency, invoice_pdf, metadata)",
    },
];

fn is_template(v: &Value) -> bool {
    v.as_str().is_some_and(|s| s.contains("{{"))
}

/// The check at save, where no template decides.
pub fn check(name: &str, c: &Map<String, Value>) -> Result<(), String> {
    if let Some(m) = c.get("metadata").filter(|m| !m.is_null() && !is_template(m))
        && !m.is_object()
    {
        return Err(format!("{name}: `metadata` must be an object"));
    }
    if name == "stripe.createInvoice" {
        if let Some(a) = c.get("amount").filter(|a| !is_template(a)) {
            amount(a).map_err(|e| e.message)?;
        }
        if let Some(cur) = c.get("currency").filter(|v| !is_template(v) && !v.is_null()) {
            currency(Some(cur)).map_err(|e| e.message)?;
        }
    }
    Ok(())
}

/// An amount in minor units: a number (or numeric text), rounded to an integer.
fn amount(v: &Value) -> Result<i64, StepError> {
    let n = match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse::<f64>().ok(),
        _ => None,
    };
    match n {
        Some(n) if n.is_finite() && n.abs() < 1e15 => Ok(n.round() as i64),
        _ => Err(invalid(format!(
            "stripe.createInvoice: `amount` must be a number of minor units (cents), not {}",
            super::super::type_name(v)
        ))),
    }
}

fn currency(v: Option<&Value>) -> Result<String, StepError> {
    match v {
        None | Some(Value::Null) => Ok("usd".into()),
        Some(Value::String(c)) if c.len() == 3 && c.bytes().all(|b| b.is_ascii_alphabetic()) => {
            Ok(c.to_ascii_lowercase())
        }
        Some(_) => Err(invalid("stripe.createInvoice: `currency` must be a three-letter ISO code such as \"usd\"")),
    }
}

/// Stripe's form encoding: nested objects as `a[b][c]=v`, arrays as `a[0]=v`, `null` left out.
pub fn form(v: &Value) -> Vec<(String, String)> {
    fn walk(prefix: &str, v: &Value, out: &mut Vec<(String, String)>) {
        match v {
            Value::Null => {}
            Value::Object(o) => {
                for (k, v) in o {
                    let key = if prefix.is_empty() { k.clone() } else { format!("{prefix}[{k}]") };
                    walk(&key, v, out);
                }
            }
            Value::Array(a) => {
                for (i, v) in a.iter().enumerate() {
                    walk(&format!("{prefix}[{i}]"), v, out);
                }
            }
            v => out.push((prefix.to_string(), value_text(v))),
        }
    }
    let mut out = Vec::new();
    walk("", v, &mut out);
    out
}

/// The step error of a Stripe answer that is not a success.
pub fn error(what: &str, a: &Answer) -> StepError {
    let e = a.body.get("error");
    let field = |k: &str| e.and_then(|e| e.get(k)).and_then(Value::as_str);
    let kind = field("type").unwrap_or("api_error");
    let mut message = format!("Stripe {what}: {}", field("message").unwrap_or("no message"));
    if let Some(c) = field("code") {
        message.push_str(&format!(" (code {c})"));
    }
    if let Some(p) = field("param") {
        message.push_str(&format!(" (param {p})"));
    }
    let code = match (a.status, kind) {
        (429, _) => "STRIPE_RATE_LIMITED",
        (401, _) => "STRIPE_AUTHENTICATION",
        (403, _) => "STRIPE_PERMISSION",
        (404, _) => "STRIPE_NOT_FOUND",
        (409, _) | (_, "idempotency_error") => "STRIPE_IDEMPOTENCY",
        (_, "card_error") => "STRIPE_CARD_ERROR",
        (s, _) if s >= 500 => "STRIPE_API_ERROR",
        _ => "STRIPE_INVALID_REQUEST",
    };
    if a.status == 429 || a.status >= 500 {
        let mut err = StepError::retryable(code, message);
        err.retry_after = super::super::http_call::status_error(what, a).retry_after;
        err
    } else {
        StepError::fatal(code, message)
    }
}

async fn post(
    cx: &BlockContext<'_>,
    conn: &Connection,
    path: &str,
    fields: Value,
    key: &str,
) -> Result<Value, StepError> {
    let a = call(cx, conn, Method::POST, path, Body::Form(form(&fields)), Some(key)).await?;
    if !(200..300).contains(&a.status) {
        return Err(error(&format!("POST {path}"), &a));
    }
    if !a.body.is_object() {
        return Err(StepError::retryable("STRIPE_API_ERROR", format!("Stripe POST {path}: the answer is not JSON")));
    }
    Ok(a.body)
}

pub async fn run(name: &str, cx: &BlockContext<'_>, conn: &Connection, cfg: &Value) -> Result<Value, StepError> {
    match name {
        "stripe.createCustomer" => {
            let fields = pick(cfg, &["email", "name", "description", "phone", "metadata"]);
            post(cx, conn, "/v1/customers", Value::Object(fields), "customer").await
        }
        "stripe.createInvoice" => create_invoice(cx, conn, cfg).await,
        other => Err(invalid(format!("unknown Stripe action '{other}'"))),
    }
}

async fn create_invoice(cx: &BlockContext<'_>, conn: &Connection, cfg: &Value) -> Result<Value, StepError> {
    let customer = text(cfg, "customerId", "stripe.createInvoice")?;
    let amount = amount(cfg.get("amount").unwrap_or(&Value::Null))?;
    let currency = currency(cfg.get("currency"))?;
    let metadata = match cfg.get("metadata") {
        None | Some(Value::Null) => json!({}),
        Some(m @ Value::Object(_)) => m.clone(),
        Some(_) => return Err(invalid("stripe.createInvoice: `metadata` must be an object")),
    };
    let description = cfg.get("description").filter(|d| !d.is_null()).cloned();
    let item = json!({"customer": customer, "amount": amount, "currency": currency, "description": description});
    post(cx, conn, "/v1/invoiceitems", item, "invoiceitem").await?;
    let invoice = json!({"customer": customer, "metadata": metadata, "description": description,
        "pending_invoice_items_behavior": "include"});
    let draft = post(cx, conn, "/v1/invoices", invoice, "invoice").await?;
    let id = draft.get("id").and_then(Value::as_str).unwrap_or_default();
    if id.is_empty() || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
        return Err(StepError::fatal("STRIPE_API_ERROR", "Stripe POST /v1/invoices: the answer has no invoice id"));
    }
    let done = post(cx, conn, &format!("/v1/invoices/{id}/finalize"), json!({}), "finalize").await?;
    let mut out = Map::new();
    for f in [
        "id",
        "number",
        "status",
        "customer",
        "currency",
        "amount_due",
        "hosted_invoice_url",
        "invoice_pdf",
        "metadata",
    ] {
        out.insert(f.into(), done.get(f).cloned().unwrap_or(Value::Null));
    }
    Ok(Value::Object(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms_are_encoded_the_way_stripe_reads_them() {
        let f = form(&json!({"customer": "cus_1", "amount": 4318, "metadata": {"source": "api-order", "n": 2},
            "items": [{"price": "p_1"}, "x"], "gone": null}));
        let want: Vec<(String, String)> = [
            ("customer", "cus_1"),
            ("amount", "4318"),
            ("metadata[source]", "api-order"),
            ("metadata[n]", "2"),
            ("items[0][price]", "p_1"),
            ("items[1]", "x"),
        ]
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
        assert_eq!(f, want);
    }

    #[test]
    fn amounts_round_to_minor_units_and_currency_defaults_to_usd() {
        assert_eq!(amount(&json!(4317.84)).unwrap(), 4318);
        assert_eq!(amount(&json!("99.5")).unwrap(), 100);
        assert_eq!(amount(&json!(9900)).unwrap(), 9900);
        assert_eq!(amount(&json!(null)).unwrap_err().code, "INVALID_CONFIG");
        assert_eq!(amount(&json!("a lot")).unwrap_err().code, "INVALID_CONFIG");
        assert_eq!(currency(None).unwrap(), "usd");
        assert_eq!(currency(Some(&json!("EUR"))).unwrap(), "eur");
        assert!(currency(Some(&json!("euro"))).is_err());
    }

    #[test]
    fn stripe_errors_map_to_step_errors_retryable_only_when_stripe_says_so() {
        let answer = |status: u16, body: Value| Answer { status, headers: Map::new(), body };
        let e = error(
            "POST /v1/invoices",
            &answer(
                404,
                json!({"error": {"type": "invalid_request_error", "code": "resource_missing", "param": "customer", "message": "No such customer: 'cus_x'"}}),
            ),
        );
        assert_eq!((e.code.as_str(), e.retryable), ("STRIPE_NOT_FOUND", false));
        assert!(e.message.contains("No such customer") && e.message.contains("param customer"), "{}", e.message);
        let e = error("x", &answer(402, json!({"error": {"type": "card_error", "message": "declined"}})));
        assert_eq!((e.code.as_str(), e.retryable), ("STRIPE_CARD_ERROR", false));
        let e =
            error("x", &answer(401, json!({"error": {"type": "invalid_request_error", "message": "Invalid API Key"}})));
        assert_eq!(e.code, "STRIPE_AUTHENTICATION");
        let e = error("x", &answer(429, json!({"error": {"type": "invalid_request_error", "message": "slow down"}})));
        assert_eq!((e.code.as_str(), e.retryable), ("STRIPE_RATE_LIMITED", true));
        let e = error("x", &answer(500, json!({"error": {"type": "api_error", "message": "oops"}})));
        assert_eq!((e.code.as_str(), e.retryable), ("STRIPE_API_ERROR", true));
        let e = error("x", &answer(400, json!({"error": {"type": "idempotency_error", "message": "reused"}})));
        assert_eq!(e.code, "STRIPE_IDEMPOTENCY");
    }
}

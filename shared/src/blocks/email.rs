//! `email` (seed 003): `{action: "send", to, cc?, bcc?, subject, body: {html?, text?}, from?,
//! reply_to?, connection_id?}`, all templated, sent through the account's `smtp` connection
//! (lettre, rustls) or `ses` connection (SES v2 `SendEmail` over HTTPS, signed with SigV4
//! as the payload bucket's S3 requests are, so no AWS SDK crate is linked for it).
//!
//! Both reach their server only past the private-target guard: SMTP resolves the host with
//! `net_guard::resolve` and connects to the address it returned (TLS still checks the host
//! name); SES goes through the guarded HTTP client. The message id is derived from the
//! step's idempotency key, so a redelivered step sends a message its receiver can tell is
//! the same one.
//!
//! Output `{provider, connection_id, message_id, from, to, cc, bcc, subject}`.

use super::{BlockContext, Outcome, StepError, invalid, render};
use crate::connections::Connection;
use crate::model::Block;
use serde_json::{Value, json};

pub const PROVIDERS: &[&str] = &["smtp", "ses"];
const MAX_RECIPIENTS: usize = 50;

fn is_template(v: &Value) -> bool {
    v.as_str().is_some_and(|s| s.contains("{{"))
}

/// `addr@domain`, or `Name <addr@domain>`: the address part.
pub fn address_of(s: &str) -> Option<&str> {
    let s = s.trim();
    let addr = match (s.rfind('<'), s.ends_with('>')) {
        (Some(i), true) => &s[i + 1..s.len() - 1],
        (None, false) => s,
        _ => return None,
    };
    let (local, domain) = addr.rsplit_once('@')?;
    let ok = !local.is_empty()
        && local.len() <= 64
        && !domain.is_empty()
        && domain.len() <= 253
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && addr.chars().all(|c| !c.is_whitespace() && !c.is_control() && !"<>,;\"".contains(c));
    ok.then_some(addr)
}

pub fn is_address(s: &str) -> bool {
    address_of(s).is_some()
}

/// A recipient field: one address, a comma-separated list, or an array of them.
fn recipients(v: Option<&Value>, field: &str) -> Result<Vec<String>, String> {
    let raw: Vec<String> = match v {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::String(s)) => s.split(',').map(|x| x.trim().to_string()).filter(|x| !x.is_empty()).collect(),
        Some(Value::Array(a)) => a
            .iter()
            .map(|x| {
                x.as_str()
                    .map(|s| s.trim().to_string())
                    .ok_or_else(|| format!("`{field}` must list addresses as strings"))
            })
            .collect::<Result<_, _>>()?,
        Some(_) => return Err(format!("`{field}` must be an address or a list of addresses")),
    };
    if let Some(bad) = raw.iter().find(|a| !is_address(a)) {
        return Err(format!("`{field}`: \"{bad}\" is not an email address"));
    }
    Ok(raw)
}

/// The check at save, where no template decides.
pub fn check(c: &Value) -> Result<(), String> {
    match c.get("action") {
        None | Some(Value::Null) => {}
        Some(Value::String(a)) if a == "send" || a.contains("{{") => {}
        Some(_) => return Err("`action` must be \"send\" (the only email action)".into()),
    }
    match c.get("to") {
        None | Some(Value::Null) => return Err("email needs `to`".into()),
        Some(v) if is_template(v) => {}
        Some(v) => {
            if recipients(Some(v), "to")?.is_empty() {
                return Err("email needs at least one `to` address".into());
            }
        }
    }
    for f in ["cc", "bcc", "reply_to"] {
        if let Some(v) = c.get(f).filter(|v| !is_template(v)) {
            recipients(Some(v), f)?;
        }
    }
    if let Some(Value::String(f)) = c.get("from")
        && !f.contains("{{")
        && !is_address(f)
    {
        return Err("`from` must be an email address".into());
    }
    if c.get("subject").is_none_or(Value::is_null) {
        return Err("email needs `subject`".into());
    }
    match c.get("body") {
        Some(Value::Object(b)) => {
            if let Some(k) = b.keys().find(|k| *k != "html" && *k != "text") {
                return Err(format!("`body` takes `html` and `text`, not `{k}`"));
            }
            if b.get("html").is_none_or(Value::is_null) && b.get("text").is_none_or(Value::is_null) {
                return Err("`body` needs `html` or `text`".into());
            }
        }
        Some(v) if is_template(v) => {}
        _ => return Err("email needs `body`: {\"html\"?, \"text\"?}".into()),
    }
    if let Some(v) = c.get("connection_id").filter(|v| !v.is_null())
        && !v.is_string()
    {
        return Err("`connection_id` must be a string".into());
    }
    Ok(())
}

/// A rendered, checked message.
#[derive(Clone, Debug, PartialEq)]
pub struct Mail {
    pub from: String,
    pub to: Vec<String>,
    pub cc: Vec<String>,
    pub bcc: Vec<String>,
    pub reply_to: Vec<String>,
    pub subject: String,
    pub html: Option<String>,
    pub text: Option<String>,
    pub message_id: String,
}

fn text_of(v: Option<&Value>) -> Option<String> {
    match v {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(v) => Some(v.to_string()),
    }
}

fn mail(cfg: &Value, conn: &Connection, idempotency_key: &str) -> Result<Mail, StepError> {
    if let Some(a) = cfg.get("action").filter(|a| !a.is_null())
        && a != "send"
    {
        return Err(invalid(format!("email `action` must be \"send\", not {a}")));
    }
    let to = recipients(cfg.get("to"), "to").map_err(invalid)?;
    if to.is_empty() {
        return Err(invalid("email: `to` rendered no address"));
    }
    let cc = recipients(cfg.get("cc"), "cc").map_err(invalid)?;
    let bcc = recipients(cfg.get("bcc"), "bcc").map_err(invalid)?;
    if to.len() + cc.len() + bcc.len() > MAX_RECIPIENTS {
        return Err(invalid(format!("email: at most {MAX_RECIPIENTS} recipients")));
    }
    let reply_to = recipients(cfg.get("reply_to"), "reply_to").map_err(invalid)?;
    let from = match cfg.get("from").and_then(Value::as_str).filter(|f| !f.trim().is_empty()) {
        Some(f) if is_address(f) => f.trim().to_string(),
        Some(f) => return Err(invalid(format!("email: `from` \"{f}\" is not an email address"))),
        None => conn.field("from").unwrap_or_default().to_string(),
    };
    let subject = text_of(cfg.get("subject")).unwrap_or_default();
    if subject.contains(['\r', '\n']) {
        return Err(invalid("email: `subject` must be one line"));
    }
    let (html, text) = match cfg.get("body") {
        Some(Value::Object(b)) => (text_of(b.get("html")), text_of(b.get("text"))),
        Some(Value::String(s)) => (None, Some(s.clone())),
        _ => (None, None),
    };
    if html.is_none() && text.is_none() {
        return Err(invalid("email: `body` needs `html` or `text`"));
    }
    let domain = address_of(&from).and_then(|a| a.rsplit_once('@')).map_or("baton.invalid", |(_, d)| d);
    let message_id = format!("<{}@{domain}>", &crate::ids::hash_secret(idempotency_key)[..32]);
    Ok(Mail { from, to, cc, bcc, reply_to, subject, html, text, message_id })
}

pub(super) async fn run(block: &Block, cx: &BlockContext<'_>) -> Outcome {
    match execute(block, cx).await {
        Ok(v) => Outcome::Output(v),
        Err(e) => Outcome::Fail(e),
    }
}

async fn execute(block: &Block, cx: &BlockContext<'_>) -> Result<Value, StepError> {
    let cfg = render(&block.config, cx.data)?;
    let step_conn = super::platform_api::connection_id(&cfg)?;
    let conn = super::platform_api::connection_for(cx, PROVIDERS, step_conn, "email").await?;
    let m = mail(&cfg, &conn, &cx.idempotency_key)?;
    let message_id = match conn.provider.as_str() {
        "smtp" => smtp::send(cx, &conn, &m).await?,
        _ => ses::send(cx, &conn, &m).await?,
    };
    Ok(json!({"provider": conn.provider, "connection_id": conn.id, "message_id": message_id, "from": m.from,
        "to": m.to, "cc": m.cc, "bcc": m.bcc, "subject": m.subject}))
}

#[cfg(feature = "smtp")]
mod smtp {
    use super::{BlockContext, Connection, Mail, StepError, invalid};
    use lettre::message::header::ContentType;
    use lettre::message::{Mailbox, MultiPart, SinglePart};
    use lettre::transport::smtp::authentication::Credentials;
    use lettre::transport::smtp::client::{Tls, TlsParameters};
    use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
    use std::time::Duration;

    fn mailbox(s: &str, field: &str) -> Result<Mailbox, StepError> {
        s.parse().map_err(|e| invalid(format!("email: `{field}` \"{s}\": {e}")))
    }

    fn message(m: &Mail) -> Result<Message, StepError> {
        let mut b = Message::builder()
            .from(mailbox(&m.from, "from")?)
            .subject(&m.subject)
            .message_id(Some(m.message_id.clone()));
        for a in &m.to {
            b = b.to(mailbox(a, "to")?);
        }
        for a in &m.cc {
            b = b.cc(mailbox(a, "cc")?);
        }
        for a in &m.bcc {
            b = b.bcc(mailbox(a, "bcc")?);
        }
        for a in &m.reply_to {
            b = b.reply_to(mailbox(a, "reply_to")?);
        }
        let built = match (&m.html, &m.text) {
            (Some(h), Some(t)) => b.multipart(MultiPart::alternative_plain_html(t.clone(), h.clone())),
            (Some(h), None) => b.singlepart(SinglePart::builder().header(ContentType::TEXT_HTML).body(h.clone())),
            (None, t) => {
                b.singlepart(SinglePart::builder().header(ContentType::TEXT_PLAIN).body(t.clone().unwrap_or_default()))
            }
        };
        built.map_err(|e| invalid(format!("email: {e}")))
    }

    pub async fn send(cx: &BlockContext<'_>, conn: &Connection, m: &Mail) -> Result<String, StepError> {
        let host = conn.field("host").unwrap_or_default().to_string();
        let tls = conn.field("tls").unwrap_or("starttls");
        let default_port = match tls {
            "tls" => 465,
            "none" => 25,
            _ => 587,
        };
        let port = conn.credentials.get("port").and_then(|p| p.as_u64()).map_or(default_port, |p| p as u16);
        let targets = cx.services.http.targets();
        let addrs = crate::net_guard::resolve(&host, port, targets).await.map_err(|e| match e {
            crate::net_guard::ResolveError::Refused(r) => StepError::fatal("TARGET_REFUSED", r.0),
            e => StepError::retryable("SMTP_UNREACHABLE", format!("SMTP {host}:{port}: {e}")),
        })?;
        let ip = addrs[0].ip().to_string();
        let params =
            || TlsParameters::new(host.clone()).map_err(|e| StepError::fatal("SMTP_TLS", format!("SMTP {host}: {e}")));
        let tls = match tls {
            "none" => Tls::None,
            "tls" => Tls::Wrapper(params()?),
            _ => Tls::Required(params()?),
        };
        let timeout = cx.remaining().min(Duration::from_secs(60));
        let mut b =
            AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(ip).port(port).tls(tls).timeout(Some(timeout));
        if let Some(u) = conn.field("username") {
            b = b.credentials(Credentials::new(u.to_string(), conn.field("password").unwrap_or_default().to_string()));
        }
        let transport = b.build();
        let msg = message(m)?;
        let what = format!("SMTP {host}:{port}");
        match transport.send(msg).await {
            Ok(_) => Ok(m.message_id.clone()),
            Err(e) if e.is_permanent() => Err(StepError::fatal("SMTP_REJECTED", format!("{what}: {e}"))),
            Err(e) if e.is_transient() => Err(StepError::retryable("SMTP_TRANSIENT", format!("{what}: {e}"))),
            Err(e) if e.is_timeout() => Err(StepError::retryable("TIMEOUT", format!("{what}: {e}"))),
            Err(e) if e.is_tls() => Err(StepError::fatal("SMTP_TLS", format!("{what}: {e}"))),
            Err(e) => Err(StepError::retryable("SMTP_UNREACHABLE", format!("{what}: {e}"))),
        }
    }
}

#[cfg(not(feature = "smtp"))]
mod smtp {
    use super::{BlockContext, Connection, Mail, StepError};

    pub async fn send(_: &BlockContext<'_>, _: &Connection, _: &Mail) -> Result<String, StepError> {
        Err(StepError::fatal(
            "NOT_IMPLEMENTED",
            "this Baton binary was built without SMTP (the `smtp` feature of the baton crate); use an ses connection",
        ))
    }
}

mod ses {
    use super::{BlockContext, Connection, Mail, StepError};
    use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
    use aws_sigv4::sign::v4;
    use serde_json::{Value, json};
    use std::time::Duration;

    /// The SES v2 `SendEmail` body of a message.
    pub fn body(m: &Mail) -> Value {
        let mut content = json!({"Subject": {"Data": m.subject, "Charset": "UTF-8"}, "Body": {}});
        if let Some(h) = &m.html {
            content["Body"]["Html"] = json!({"Data": h, "Charset": "UTF-8"});
        }
        if let Some(t) = &m.text {
            content["Body"]["Text"] = json!({"Data": t, "Charset": "UTF-8"});
        }
        let mut b = json!({
            "FromEmailAddress": m.from,
            "Destination": {"ToAddresses": m.to, "CcAddresses": m.cc, "BccAddresses": m.bcc},
            "Content": {"Simple": content},
        });
        if !m.reply_to.is_empty() {
            b["ReplyToAddresses"] = json!(m.reply_to);
        }
        b
    }

    pub async fn send(cx: &BlockContext<'_>, conn: &Connection, m: &Mail) -> Result<String, StepError> {
        let base = conn.base_url.clone().unwrap_or_default();
        let url = format!("{base}/v2/email/outbound-emails");
        let region = conn.field("region").unwrap_or("us-east-1");
        let payload = serde_json::to_vec(&body(m)).map_err(|e| StepError::fatal("INVALID_CONFIG", e.to_string()))?;
        let http = &cx.services.http;
        let vetted = http.vet("base_url", &url).map_err(|e| StepError::fatal("TARGET_REFUSED", e))?;
        let creds = aws_credential_types::Credentials::new(
            conn.field("access_key_id").unwrap_or_default(),
            conn.field("secret_access_key").unwrap_or_default(),
            conn.field("session_token").map(str::to_string),
            None,
            "baton-connection",
        );
        let identity = creds.into();
        let bad = |e: String| StepError::fatal("SES_SIGNING", format!("signing the SES request: {e}"));
        let params = v4::SigningParams::builder()
            .identity(&identity)
            .region(region)
            .name("ses")
            .time(std::time::SystemTime::now())
            .settings(SigningSettings::default())
            .build()
            .map_err(|e| bad(e.to_string()))?
            .into();
        let headers = [("content-type", "application/json")];
        let signable =
            SignableRequest::new("POST", vetted.as_str(), headers.iter().copied(), SignableBody::Bytes(&payload))
                .map_err(|e| bad(e.to_string()))?;
        let (instructions, _) = sign(signable, &params).map_err(|e| bad(e.to_string()))?.into_parts();
        let client = http.client().map_err(|e| StepError::fatal("HTTP_CLIENT", e))?;
        let timeout = cx.remaining().min(Duration::from_secs(30));
        let mut rb = client.post(vetted).timeout(timeout).body(payload);
        for (k, v) in headers.iter().copied().chain(instructions.headers()) {
            rb = rb.header(k, v);
        }
        let what = "SES SendEmail";
        let resp = rb.send().await.map_err(|e| {
            if let Some(why) = crate::adapters::http::refused_in(&e) {
                return StepError::fatal("TARGET_REFUSED", why);
            }
            StepError::retryable("SES_UNREACHABLE", format!("{what}: {}", crate::adapters::http::chain(&e)))
        })?;
        let status = resp.status().as_u16();
        let kind = resp.headers().get("x-amzn-errortype").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
        let text = resp.text().await.unwrap_or_default();
        let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        if (200..300).contains(&status) {
            return Ok(v.get("MessageId").and_then(Value::as_str).unwrap_or_default().to_string());
        }
        let message = v.get("message").or_else(|| v.get("Message")).and_then(Value::as_str).unwrap_or(&text);
        // The error type is in a header (`x-amzn-ErrorType`) or the body's `__type`.
        let kind = if kind.is_empty() { v.get("__type").and_then(Value::as_str).unwrap_or_default() } else { &kind };
        let kind = kind.split(':').next().unwrap_or_default();
        let message = format!("{what} answered {status} {kind}: {message}");
        if status == 429 || status >= 500 || kind.contains("Throttl") || kind == "TooManyRequestsException" {
            Err(StepError::retryable("SES_THROTTLED", message))
        } else {
            Err(StepError::fatal("SES_REJECTED", message))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conn() -> Connection {
        Connection {
            id: "conn_mail".into(),
            provider: "smtp".into(),
            base_url: None,
            credentials: json!({"host": "127.0.0.1", "from": "Shop <shop@example.com>"}).as_object().unwrap().clone(),
        }
    }

    #[test]
    fn addresses_are_told_apart() {
        assert_eq!(address_of("Shop <shop@example.com>"), Some("shop@example.com"));
        assert!(is_address("a.b+c@sub.example.org"));
        for bad in ["", "nobody", "a@b", "a b@c.d", "<a@b.c", "a@b.c>", "a@.c", "@b.c", "a@b.c, d@e.f"] {
            assert!(!is_address(bad), "{bad}");
        }
    }

    #[test]
    fn the_config_is_checked_at_save_where_no_template_decides() {
        let ok = json!({"action": "send", "to": "{{input.customerEmail}}", "subject": "Order", "body": {"html": "<p>hi</p>"}});
        assert!(check(&ok).is_ok());
        let bad = |patch: Value| {
            let mut c = ok.clone();
            for (k, v) in patch.as_object().unwrap() {
                if v.is_null() {
                    c.as_object_mut().unwrap().remove(k);
                } else {
                    c[k] = v.clone();
                }
            }
            check(&c).unwrap_err()
        };
        assert!(bad(json!({"action": "delete"})).contains("send"));
        assert!(bad(json!({"to": null})).contains("`to`"));
        assert!(bad(json!({"to": "not-an-address"})).contains("not an email address"));
        assert!(bad(json!({"cc": ["ok@x.test", 3]})).contains("cc"));
        assert!(bad(json!({"subject": null})).contains("subject"));
        assert!(bad(json!({"body": {}})).contains("html"));
        assert!(bad(json!({"body": {"markdown": "x"}})).contains("markdown"));
        assert!(bad(json!({"from": "me"})).contains("from"));
    }

    #[test]
    fn a_rendered_config_becomes_one_message_with_a_stable_id() {
        let cfg = json!({"to": "a@x.test, b@x.test", "cc": ["c@x.test"], "subject": "Order Confirmed - Invoice #42",
            "body": {"html": "<p>Total: $43.18</p>"}});
        let m = mail(&cfg, &conn(), "run_1:send").unwrap();
        assert_eq!(m.to, vec!["a@x.test", "b@x.test"]);
        assert_eq!(m.from, "Shop <shop@example.com>", "the connection's from");
        assert_eq!(m.message_id, mail(&cfg, &conn(), "run_1:send").unwrap().message_id);
        assert!(m.message_id.ends_with("@example.com>"));
        assert_ne!(m.message_id, mail(&cfg, &conn(), "run_2:send").unwrap().message_id);
        let e = mail(&json!({"to": "", "subject": "s", "body": {"text": "t"}}), &conn(), "k").unwrap_err();
        assert_eq!(e.code, "INVALID_CONFIG");
        let e = mail(&json!({"to": "a@x.test", "subject": "a\r\nBcc: x@y.z", "body": {"text": "t"}}), &conn(), "k")
            .unwrap_err();
        assert!(e.message.contains("one line"));
        let b = ses::body(&m);
        assert_eq!(b["Destination"]["ToAddresses"], json!(["a@x.test", "b@x.test"]));
        assert_eq!(b["Content"]["Simple"]["Body"]["Html"]["Data"], "<p>Total: $43.18</p>");
        assert!(b["Content"]["Simple"]["Body"].get("Text").is_none());
    }
}

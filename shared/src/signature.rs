//! Signature checks for inbound webhooks (DESIGN.md §6): HMAC-SHA256 over the raw body bytes,
//! compared in constant time, in the four formats senders use.
//!
//! | scheme | header(s) | signed bytes | secret |
//! |---|---|---|---|
//! | `hmac-sha256` | `X-Signature-256: sha256=<hex>` (header, prefix, encoding configurable) | body | as given |
//! | `github` | `X-Hub-Signature-256: sha256=<hex>`; delivery id `X-GitHub-Delivery` | body | as given |
//! | `stripe` | `Stripe-Signature: t=<unix>,v1=<hex>[,v1=<hex>…]` | `{t}.{body}` | as given (`whsec_…` string) |
//! | `standard-webhooks` | `webhook-id`, `webhook-timestamp`, `webhook-signature: v1,<base64> […]` | `{id}.{timestamp}.{body}` | `whsec_<base64>`: the decoded bytes |
//!
//! Stripe and Standard Webhooks carry a timestamp: a message more than [`TOLERANCE_SECS`]
//! away from now (either way) is refused as a replay. Within that window (and for 24 hours
//! where there is no timestamp: `hmac-sha256`, `github`), a replay starts nothing new: a
//! delivery is deduplicated by its signed id (Standard Webhooks' `webhook-id`, a Stripe
//! event's `id`), else by the SHA-256 of its signed bytes ([`Verified::replay_digest`]); the
//! repeat answers with the original run. GitHub's `X-GitHub-Delivery` is not signed, so a
//! GitHub delivery is deduplicated by its body. Several signatures in one header are
//! the sender rotating keys: any one valid signature is enough.
//!
//! Headers come in through a lookup function, so this module never sees HTTP types.

use crate::error::{Error, Result};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use serde_json::json;
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// How far a signed timestamp may be from now (Stripe's default; Standard Webhooks' window).
pub const TOLERANCE_SECS: i64 = 300;
/// Longest signature header we look at; anything longer is not a signature.
const MAX_SIGNATURE_HEADER: usize = 4096;
/// Most signatures one header may carry (key rotation needs two or three).
const MAX_SIGNATURES: usize = 8;
pub const MAX_SECRET_LEN: usize = 512;
pub const MIN_SECRET_LEN: usize = 8;

pub const SCHEMES: &[&str] = &["hmac-sha256", "github", "stripe", "standard-webhooks"];

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Encoding {
    Hex,
    Base64,
}

/// An app's signature configuration, as stored and shown.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "scheme", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Scheme {
    /// `<header>: <prefix><hex or base64 of HMAC-SHA256(secret, body)>`.
    HmacSha256 {
        #[serde(default = "default_header")]
        header: String,
        #[serde(default = "default_prefix")]
        prefix: String,
        #[serde(default = "default_encoding")]
        encoding: Encoding,
    },
    Github,
    Stripe,
    StandardWebhooks,
}

fn default_header() -> String {
    "x-signature-256".into()
}
fn default_prefix() -> String {
    "sha256=".into()
}
fn default_encoding() -> Encoding {
    Encoding::Hex
}

impl Default for Scheme {
    fn default() -> Self {
        Scheme::HmacSha256 { header: default_header(), prefix: default_prefix(), encoding: Encoding::Hex }
    }
}

impl Scheme {
    /// Parses and checks a caller's `signature` object (`{"scheme", "header"?, "prefix"?,
    /// "encoding"?}`); header names are kept lower-case.
    pub fn parse(v: &serde_json::Value) -> Result<Scheme> {
        let field = |m: String| Error::validation_at(vec![json!("signature")], m);
        let scheme = v.get("scheme").and_then(|s| s.as_str());
        if !scheme.is_some_and(|s| SCHEMES.contains(&s)) {
            return Err(field(format!("`signature.scheme` must be one of: {}", SCHEMES.join(", "))));
        }
        let extra = v.as_object().into_iter().flat_map(|o| o.keys()).find(|k| {
            let allowed: &[&str] =
                if scheme == Some("hmac-sha256") { &["scheme", "header", "prefix", "encoding"] } else { &["scheme"] };
            !allowed.contains(&k.as_str())
        });
        if let Some(k) = extra {
            return Err(field(format!("`signature.{k}` is not an option of {}", scheme.unwrap_or_default())));
        }
        let mut s: Scheme = serde_json::from_value(v.clone()).map_err(|e| {
            field(format!("invalid `signature`: {e} (header, prefix and encoding go with hmac-sha256)"))
        })?;
        if let Scheme::HmacSha256 { header, prefix, .. } = &mut s {
            let ok = !header.is_empty()
                && header.len() <= 100
                && header.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
            if !ok {
                return Err(field("`signature.header` must be a header name (letters, digits, '-', '_')".into()));
            }
            *header = header.to_ascii_lowercase();
            if prefix.len() > 64 || prefix.chars().any(|c| c.is_control() || c.is_whitespace()) {
                return Err(field("`signature.prefix` must be at most 64 visible characters".into()));
            }
        }
        Ok(s)
    }

    /// Checks a signing secret for this scheme (Standard Webhooks needs `whsec_<base64>`).
    pub fn check_secret(&self, secret: &str) -> Result<()> {
        let bad = |m: &str| Error::validation_at(vec![json!("signing_secret")], m);
        // Counted in characters, as the message says (and as the OpenAPI `maxLength` counts).
        let chars = secret.chars().count();
        if !(MIN_SECRET_LEN..=MAX_SECRET_LEN).contains(&chars) || secret.chars().any(char::is_control) {
            return Err(bad(&format!("`signing_secret` must be {MIN_SECRET_LEN}..={MAX_SECRET_LEN} characters")));
        }
        if matches!(self, Scheme::StandardWebhooks) {
            standard_key(secret).map_err(|_| {
                bad("a standard-webhooks `signing_secret` must be `whsec_` followed by base64 (at least 16 bytes)")
            })?;
        }
        Ok(())
    }

    /// The header that carries the sender's delivery id, if the scheme has one.
    pub fn delivery_header(&self) -> Option<&'static str> {
        match self {
            Scheme::Github => Some("x-github-delivery"),
            Scheme::StandardWebhooks => Some("webhook-id"),
            _ => None,
        }
    }
}

/// What a valid signature vouches for.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Verified {
    /// The sender's id of this delivery (same on every retry), when the scheme has one.
    pub delivery_id: Option<String>,
    /// SHA-256 (hex) of the signed bytes, for schemes whose id does not travel inside the
    /// signature (`hmac-sha256`, `github`, `stripe`): a replay of a captured request
    /// carries the same bytes, whatever unsigned header it changes, so it is deduplicated
    /// by this digest. `None` for Standard Webhooks, whose signed id already does that.
    pub replay_digest: Option<String>,
}

fn unauthorized(m: impl Into<String>) -> Error {
    Error::Unauthorized(m.into())
}

fn mac(key: &[u8]) -> HmacSha256 {
    <HmacSha256 as Mac>::new_from_slice(key).expect("HMAC takes keys of any length")
}

/// True when `expected` is HMAC-SHA256(key, parts…); constant time in the signature.
fn hmac_matches(key: &[u8], parts: &[&[u8]], expected: &[u8]) -> bool {
    let mut m = mac(key);
    for p in parts {
        m.update(p);
    }
    m.verify_slice(expected).is_ok()
}

/// HMAC-SHA256 of `parts` under `key` (for tests and for signing our own messages).
pub fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    let mut m = mac(key);
    for p in parts {
        m.update(p);
    }
    m.finalize().into_bytes().into()
}

/// The key bytes of a `whsec_<base64>` secret (padding optional, as senders differ).
pub fn standard_key(secret: &str) -> Result<Vec<u8>> {
    use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
    const LENIENT: GeneralPurpose = GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
    );
    let b64 = secret.strip_prefix("whsec_").ok_or_else(|| Error::validation("secret must start with whsec_"))?;
    let key = LENIENT.decode(b64).map_err(|_| Error::validation("secret is not base64 after whsec_"))?;
    if key.len() < 16 {
        return Err(Error::validation("secret is shorter than 16 bytes"));
    }
    Ok(key)
}

fn header_of<'a>(get: &impl Fn(&str) -> Option<&'a str>, name: &str) -> Result<&'a str> {
    match get(name) {
        Some(v) if v.len() <= MAX_SIGNATURE_HEADER => Ok(v.trim()),
        Some(_) => Err(unauthorized(format!("The {name} header is too long"))),
        None => Err(unauthorized(format!("Missing signature: the {name} header is required"))),
    }
}

fn timestamp_in_window(ts: &str, now: i64, name: &str) -> Result<()> {
    let t: i64 = ts.parse().map_err(|_| unauthorized(format!("Invalid {name}: expected Unix seconds")))?;
    if (now - t).abs() > TOLERANCE_SECS {
        return Err(unauthorized(format!(
            "Signature timestamp is outside the {TOLERANCE_SECS}-second tolerance (replayed or clock skew)"
        )));
    }
    Ok(())
}

fn digest(parts: &[&[u8]]) -> String {
    use sha2::Digest as _;
    let mut h = Sha256::new();
    for p in parts {
        h.update(p);
    }
    hex::encode(h.finalize())
}

fn decode_hex(s: &str) -> Option<Vec<u8>> {
    if s.len() != 64 {
        return None;
    }
    hex::decode(s).ok()
}

/// Checks the request's signature. `get` looks a header up by its lower-case name; `body`
/// is the raw request body; `now` is Unix seconds. Every failure is `Unauthorized`.
pub fn verify<'a>(
    scheme: &Scheme,
    secret: &str,
    get: impl Fn(&str) -> Option<&'a str>,
    body: &[u8],
    now: i64,
) -> Result<Verified> {
    let bad = || unauthorized("Invalid signature");
    match scheme {
        Scheme::HmacSha256 { header, prefix, encoding } => {
            let v = header_of(&get, header)?;
            let sig = v.strip_prefix(prefix.as_str()).ok_or_else(bad)?;
            let sig = match encoding {
                Encoding::Hex => decode_hex(sig),
                Encoding::Base64 => B64.decode(sig).ok(),
            }
            .ok_or_else(bad)?;
            if !hmac_matches(secret.as_bytes(), &[body], &sig) {
                return Err(bad());
            }
            Ok(Verified { replay_digest: Some(digest(&[body])), ..Verified::default() })
        }
        Scheme::Github => {
            let v = header_of(&get, "x-hub-signature-256")?;
            let sig = v.strip_prefix("sha256=").and_then(decode_hex).ok_or_else(bad)?;
            if !hmac_matches(secret.as_bytes(), &[body], &sig) {
                return Err(bad());
            }
            let delivery = get("x-github-delivery").map(str::trim).filter(|d| !d.is_empty() && d.len() <= 200);
            // `X-GitHub-Delivery` is not signed: a replay may bring a fresh one.
            Ok(Verified { delivery_id: delivery.map(str::to_string), replay_digest: Some(digest(&[body])) })
        }
        Scheme::Stripe => {
            let v = header_of(&get, "stripe-signature")?;
            let mut t = None;
            let mut sigs = Vec::new();
            for part in v.split(',') {
                match part.trim().split_once('=') {
                    Some(("t", ts)) if t.is_none() => t = Some(ts),
                    Some(("v1", s)) if sigs.len() < MAX_SIGNATURES => sigs.push(s),
                    _ => {}
                }
            }
            let t = t.ok_or_else(|| unauthorized("Invalid Stripe-Signature: no timestamp (t=)"))?;
            if sigs.is_empty() {
                return Err(unauthorized("Invalid Stripe-Signature: no v1 signature"));
            }
            timestamp_in_window(t, now, "Stripe-Signature timestamp")?;
            let ok = sigs
                .iter()
                .filter_map(|s| decode_hex(s))
                .fold(false, |acc, sig| hmac_matches(secret.as_bytes(), &[t.as_bytes(), b".", body], &sig) | acc);
            if !ok {
                return Err(bad());
            }
            Ok(Verified { replay_digest: Some(digest(&[t.as_bytes(), b".", body])), ..Verified::default() })
        }
        Scheme::StandardWebhooks => {
            let id = header_of(&get, "webhook-id")?;
            let ts = header_of(&get, "webhook-timestamp")?;
            let sig_header = header_of(&get, "webhook-signature")?;
            if id.is_empty() || id.len() > 200 {
                return Err(unauthorized("Invalid webhook-id"));
            }
            timestamp_in_window(ts, now, "webhook-timestamp")?;
            let key =
                standard_key(secret).map_err(|_| Error::internal("stored standard-webhooks secret is invalid"))?;
            let ok = sig_header
                .split(' ')
                .filter_map(|s| s.split_once(','))
                .filter(|(v, _)| *v == "v1")
                .take(MAX_SIGNATURES)
                .filter_map(|(_, s)| B64.decode(s).ok())
                .fold(false, |acc, sig| {
                    hmac_matches(&key, &[id.as_bytes(), b".", ts.as_bytes(), b".", body], &sig) | acc
                });
            if !ok {
                return Err(bad());
            }
            Ok(Verified { delivery_id: Some(id.to_string()), replay_digest: None })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    const NOW: i64 = 1_700_000_000;

    fn check(scheme: &Scheme, secret: &str, headers: &[(&str, String)], body: &[u8]) -> Result<Verified> {
        let h: HashMap<String, String> = headers.iter().map(|(k, v)| (k.to_ascii_lowercase(), v.clone())).collect();
        verify(scheme, secret, |n| h.get(n).map(String::as_str), body, NOW)
    }

    fn hex_sig(secret: &[u8], parts: &[&[u8]]) -> String {
        hex::encode(hmac_sha256(secret, parts))
    }

    #[test]
    fn hmac_matches_rfc_4231_test_case_2() {
        let out = hmac_sha256(b"Jefe", &[b"what do ya want ", b"for nothing?"]);
        assert_eq!(hex::encode(out), "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
    }

    #[test]
    fn hmac_sha256_header_accepts_the_right_signature_only() {
        let s = Scheme::default();
        let body = br#"{"a":1}"#;
        let good = format!("sha256={}", hex_sig(b"topsecret", &[body]));
        assert!(check(&s, "topsecret", &[("X-Signature-256", good.clone())], body).is_ok());
        assert!(check(&s, "othersecret", &[("X-Signature-256", good.clone())], body).is_err());
        assert!(check(&s, "topsecret", &[("X-Signature-256", good.clone())], br#"{"a":2}"#).is_err());
        assert!(check(&s, "topsecret", &[], body).is_err());
        assert!(check(&s, "topsecret", &[("X-Signature-256", good[7..].to_string())], body).is_err());
        assert!(check(&s, "topsecret", &[("X-Signature-256", "sha256=zz".into())], body).is_err());
    }

    #[test]
    fn hmac_sha256_honours_a_configured_header_prefix_and_encoding() {
        let s = Scheme::parse(
            &json!({"scheme": "hmac-sha256", "header": "X-Acme-Sig", "prefix": "", "encoding": "base64"}),
        )
        .unwrap();
        let body = b"payload";
        let sig = B64.encode(hmac_sha256(b"k3y-k3y-k3y", &[body]));
        assert!(check(&s, "k3y-k3y-k3y", &[("x-acme-sig", sig)], body).is_ok());
    }

    #[test]
    fn github_returns_the_delivery_id() {
        let body = b"{}";
        let sig = format!("sha256={}", hex_sig(b"ghsecret", &[body]));
        let v = check(
            &Scheme::Github,
            "ghsecret",
            &[("X-Hub-Signature-256", sig), ("X-GitHub-Delivery", "d-1".into())],
            body,
        )
        .unwrap();
        assert_eq!(v.delivery_id.as_deref(), Some("d-1"));
    }

    #[test]
    fn stripe_checks_timestamp_and_any_v1_signature() {
        let secret = "whsec_stripe_test";
        let body = br#"{"id":"evt_1"}"#;
        let t = NOW.to_string();
        let good = hex_sig(secret.as_bytes(), &[t.as_bytes(), b".", body]);
        let wrong = hex_sig(b"old-secret", &[t.as_bytes(), b".", body]);
        let header = format!("t={t},v1={wrong},v1={good},v0=ignored");
        assert!(check(&Scheme::Stripe, secret, &[("Stripe-Signature", header)], body).is_ok());
        let only_wrong = format!("t={t},v1={wrong}");
        assert!(check(&Scheme::Stripe, secret, &[("Stripe-Signature", only_wrong)], body).is_err());
        let old = (NOW - TOLERANCE_SECS - 1).to_string();
        let stale = format!("t={old},v1={}", hex_sig(secret.as_bytes(), &[old.as_bytes(), b".", body]));
        let e = check(&Scheme::Stripe, secret, &[("Stripe-Signature", stale)], body).unwrap_err();
        assert!(e.to_string().contains("tolerance"), "{e}");
        assert!(check(&Scheme::Stripe, secret, &[("Stripe-Signature", format!("v1={good}"))], body).is_err());
    }

    #[test]
    fn standard_webhooks_accepts_rotated_keys_and_refuses_replays() {
        let key = b"0123456789abcdef0123456789abcdef";
        let secret = format!("whsec_{}", B64.encode(key));
        let body = br#"{"x":1}"#;
        let ts = NOW.to_string();
        let sig = |k: &[u8], ts: &str| B64.encode(hmac_sha256(k, &[b"msg_1.", ts.as_bytes(), b".", body]));
        let headers = |ts: &str, sigs: String| {
            vec![
                ("webhook-id", "msg_1".to_string()),
                ("webhook-timestamp", ts.to_string()),
                ("webhook-signature", sigs),
            ]
        };
        let both = format!("v1,{} v1,{}", sig(b"another key, rotated out....", &ts), sig(key, &ts));
        let v = check(&Scheme::StandardWebhooks, &secret, &headers(&ts, both), body).unwrap();
        assert_eq!(v.delivery_id.as_deref(), Some("msg_1"));
        let wrong = format!("v1,{}", sig(b"another key, rotated out....", &ts));
        assert!(check(&Scheme::StandardWebhooks, &secret, &headers(&ts, wrong), body).is_err());
        let future = (NOW + TOLERANCE_SECS + 1).to_string();
        let e = check(&Scheme::StandardWebhooks, &secret, &headers(&future, format!("v1,{}", sig(key, &future))), body)
            .unwrap_err();
        assert!(matches!(e, Error::Unauthorized(_)));
        let v2_only = format!("v2,{}", sig(key, &ts));
        assert!(check(&Scheme::StandardWebhooks, &secret, &headers(&ts, v2_only), body).is_err());
    }

    #[test]
    fn configs_and_secrets_are_validated() {
        assert!(Scheme::parse(&json!({"scheme": "md5"})).is_err());
        assert!(Scheme::parse(&json!({"scheme": "github", "header": "x"})).is_err());
        assert!(Scheme::parse(&json!({"scheme": "hmac-sha256", "header": "bad header"})).is_err());
        assert_eq!(Scheme::parse(&json!({"scheme": "hmac-sha256"})).unwrap(), Scheme::default());
        assert!(Scheme::StandardWebhooks.check_secret("not-whsec-secret").is_err());
        assert!(Scheme::StandardWebhooks.check_secret(&format!("whsec_{}", B64.encode([7u8; 24]))).is_ok());
        let unpadded = B64.encode([7u8; 32]);
        assert!(Scheme::StandardWebhooks.check_secret(&format!("whsec_{}", unpadded.trim_end_matches('='))).is_ok());
        assert!(Scheme::Github.check_secret("short").is_err());
        // Lengths are characters, as the message says: 512 three-byte characters fit.
        assert!(Scheme::Github.check_secret(&"é".repeat(8)).is_ok(), "8 characters, 16 bytes");
        assert!(Scheme::Github.check_secret(&"€".repeat(512)).is_ok());
        assert!(Scheme::Github.check_secret(&"€".repeat(513)).is_err());
        assert!(Scheme::Github.check_secret("abc\u{85}defgh").is_err(), "a control character");
    }
}

//! Where Baton may send requests on a caller's behalf (outbound callbacks, HTTP blocks).
//!
//! A URL a caller gives us must be an absolute `http(s)` URL without credentials, and must
//! not point into the operator's own network: loopback, private, link-local, unique-local,
//! unspecified, multicast, reserved and similar addresses are refused (server-side request
//! forgery), unless the operator allows them (`BATON_ALLOW_PRIVATE_TARGETS=1`). IPv6 is
//! an allow-list: global unicast `2000::/3` minus its special blocks, with every form that
//! embeds IPv4 (mapped, translated, NAT64, 6to4, Teredo) judged by the IPv4 inside.
//!
//! The check runs twice: when the URL is set ([`check_url`]: IP literals, and the names
//! that resolve there), and when a request is made ([`resolve`]), which resolves the name
//! once and returns only vetted addresses, so the connection goes to an address that
//! passed the check (a name that changes its answer in between — DNS rebinding — gains
//! nothing).

use crate::error::{Error, Result};
use serde_json::json;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;
use url::{Host, Url};

/// Longest URL accepted.
pub const MAX_URL_LEN: usize = 2048;
/// How long a set-time DNS lookup may take; a name that does not resolve in time is
/// accepted (the request-time check still applies).
const SET_TIME_DNS_TIMEOUT: Duration = Duration::from_secs(2);

/// Which addresses outbound requests may reach.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Targets {
    /// Public unicast addresses only (the default).
    PublicOnly,
    /// Anything, private and loopback included (tests, trusted networks).
    AllowPrivate,
}

impl Targets {
    pub fn from_allow_private(allow: bool) -> Self {
        if allow { Targets::AllowPrivate } else { Targets::PublicOnly }
    }
    fn permits(self, ip: IpAddr) -> bool {
        self == Targets::AllowPrivate || blocked_reason(ip).is_none()
    }
}

/// Why a request to an address is refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Refused(pub String);

fn at(field: &str, message: impl Into<String>) -> Error {
    Error::validation_at(vec![json!(field)], message)
}

/// Checks the shape of a target URL: absolute, `http` or `https`, a host, no user name or
/// password, at most [`MAX_URL_LEN`] characters, no whitespace or control characters.
/// `field` names the field in the validation error.
pub fn parse_url(field: &str, raw: &str) -> Result<Url> {
    if raw.len() > MAX_URL_LEN {
        return Err(at(field, format!("`{field}` must be at most {MAX_URL_LEN} characters")));
    }
    // The URL parser silently drops tabs and newlines; refuse them instead.
    if raw.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(at(field, format!("`{field}` must not contain whitespace or control characters")));
    }
    let url = Url::parse(raw).map_err(|e| at(field, format!("`{field}` must be an absolute http(s) URL ({e})")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(at(field, format!("`{field}` must be an http or https URL, not {}:", url.scheme())));
    }
    if url.host().is_none_or(|h| matches!(h, Host::Domain(d) if d.is_empty())) {
        return Err(at(field, format!("`{field}` must name a host")));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(at(
            field,
            format!("`{field}` must not contain credentials (user:password@); the request is signed instead"),
        ));
    }
    Ok(url)
}

/// The host's IP address when the URL names one directly.
pub fn ip_literal(url: &Url) -> Option<IpAddr> {
    match url.host()? {
        Host::Ipv4(a) => Some(IpAddr::V4(a)),
        Host::Ipv6(a) => Some(IpAddr::V6(a)),
        Host::Domain(_) => None,
    }
}

/// Set-time check of a target URL: [`parse_url`], then, unless private targets are allowed,
/// refuses an IP literal in a refused range and a name that resolves into one. A name that
/// does not resolve (yet) is accepted: [`resolve`] checks again at request time.
pub async fn check_url(field: &str, raw: &str, targets: Targets) -> Result<Url> {
    let url = parse_url(field, raw)?;
    if targets == Targets::AllowPrivate {
        return Ok(url);
    }
    let refuse = |ip: IpAddr, why: &str| {
        at(
            field,
            format!(
                "`{field}` points to {ip}, a {why} address; such targets are refused unless the operator sets BATON_ALLOW_PRIVATE_TARGETS=1"
            ),
        )
    };
    if let Some(ip) = ip_literal(&url) {
        return match blocked_reason(ip) {
            Some(why) => Err(refuse(ip, why)),
            None => Ok(url),
        };
    }
    let host = url.host_str().unwrap_or_default().to_string();
    let port = url.port_or_known_default().unwrap_or(443);
    if let Ok(Ok(addrs)) = tokio::time::timeout(SET_TIME_DNS_TIMEOUT, tokio::net::lookup_host((host, port))).await {
        for a in addrs {
            if let Some(why) = blocked_reason(a.ip()) {
                return Err(refuse(a.ip(), why));
            }
        }
    }
    Ok(url)
}

/// Request-time resolution: the addresses of `host` that `targets` permits, or why none is.
/// Connect only to what this returns.
pub async fn resolve(host: &str, port: u16, targets: Targets) -> std::result::Result<Vec<SocketAddr>, ResolveError> {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let all: Vec<SocketAddr> = match host.parse::<IpAddr>() {
        Ok(ip) => vec![SocketAddr::new(ip, port)],
        Err(_) => tokio::net::lookup_host((host, port)).await.map_err(ResolveError::Lookup)?.collect(),
    };
    vet(host, all, targets)
}

/// Keeps the permitted addresses of `all`; refuses when none is left.
pub fn vet(host: &str, all: Vec<SocketAddr>, targets: Targets) -> std::result::Result<Vec<SocketAddr>, ResolveError> {
    if all.is_empty() {
        return Err(ResolveError::Lookup(std::io::Error::other(format!("{host} has no addresses"))));
    }
    let first = all[0].ip();
    let ok: Vec<SocketAddr> = all.into_iter().filter(|a| targets.permits(a.ip())).collect();
    if ok.is_empty() {
        let why = blocked_reason(first).unwrap_or("refused");
        return Err(ResolveError::Refused(Refused(format!(
            "{host} resolves to {first}, a {why} address; refused (BATON_ALLOW_PRIVATE_TARGETS is not set)"
        ))));
    }
    Ok(ok)
}

#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    #[error(transparent)]
    Refused(Refused),
    #[error("DNS lookup failed: {0}")]
    Lookup(std::io::Error),
}

/// Why `ip` is not a public unicast address, or `None` when it is.
pub fn blocked_reason(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(a) => v4_reason(a),
        IpAddr::V6(a) => v6_reason(a),
    }
}

fn v4_reason(a: Ipv4Addr) -> Option<&'static str> {
    let [o0, o1, o2, _] = a.octets();
    Some(match (o0, o1, o2) {
        (0, ..) => "unspecified",
        (127, ..) => "loopback",
        (10, ..) | (172, 16..=31, _) | (192, 168, _) => "private",
        (169, 254, _) => "link-local",
        (100, 64..=127, _) => "shared (carrier-grade NAT)",
        (192, 0, 0) => "protocol-assignment",
        (192, 0, 2) | (198, 51, 100) | (203, 0, 113) => "documentation",
        (198, 18..=19, _) => "benchmarking",
        (224..=239, ..) => "multicast",
        (240..=255, ..) => "reserved",
        _ => return None,
    })
}

/// An IPv4 address from two 16-bit segments.
fn v4_of(hi: u16, lo: u16) -> Ipv4Addr {
    Ipv4Addr::from((u32::from(hi) << 16) | u32::from(lo))
}

/// The IPv4 hosts an IPv6 address reaches through a translation or tunnel, when it is one of
/// those forms: IPv4-mapped `::ffff:a.b.c.d`, IPv4-translated `::ffff:0:a.b.c.d`, NAT64
/// `64:ff9b::a.b.c.d`, 6to4 `2002:AABB:CCDD::/48`, and Teredo `2001:0:SSSS:SSSS::/32`
/// (its server, and its client stored bit-inverted in the last 32 bits). Such an address
/// is only as public as every IPv4 address it carries.
fn embedded_v4(s: [u16; 8]) -> Option<Vec<Ipv4Addr>> {
    Some(match s {
        [0, 0, 0, 0, 0, 0xffff, hi, lo] | [0, 0, 0, 0, 0xffff, 0, hi, lo] => vec![v4_of(hi, lo)],
        [0x64, 0xff9b, 0, 0, 0, 0, hi, lo] => vec![v4_of(hi, lo)],
        [0x2002, hi, lo, ..] => vec![v4_of(hi, lo)],
        [0x2001, 0, s_hi, s_lo, _, _, c_hi, c_lo] => vec![v4_of(s_hi, s_lo), v4_of(!c_hi, !c_lo)],
        _ => return None,
    })
}

/// IPv6: only global unicast (`2000::/3`) passes, minus its special-purpose blocks
/// (IANA registry), and an address embedding IPv4 is judged by the IPv4 it embeds.
fn v6_reason(a: Ipv6Addr) -> Option<&'static str> {
    let s = a.segments();
    if a.is_unspecified() {
        return Some("unspecified");
    }
    if a.is_loopback() {
        return Some("loopback");
    }
    if let Some(v4s) = embedded_v4(s) {
        return v4s.into_iter().find_map(v4_reason);
    }
    if s[..6] == [0; 6] {
        // IPv4-compatible addresses are deprecated; no public host uses one.
        return Some(v4_reason(v4_of(s[6], s[7])).unwrap_or("IPv4-compatible"));
    }
    Some(match s[0] {
        0x2001 if s[1] == 0x0db8 => "documentation",
        // IETF protocol assignments (benchmarking, ORCHID, anycast services); Teredo, the
        // one with hosts behind it, was unwrapped above.
        0x2001 if s[1] < 0x0200 => "IETF protocol-assignment",
        0x3fff if s[1] < 0x1000 => "documentation",
        0x2000..=0x3fff => return None,
        0xfe80..=0xfebf => "link-local",
        0xfec0..=0xfeff => "site-local",
        0xfc00..=0xfdff => "unique-local",
        0xff00..=0xffff => "multicast",
        0x0100 if s[1..4] == [0, 0, 0] => "discard-only",
        0x0064 if s[1] == 0xff9b => "local-use NAT64",
        _ => "non-global (outside 2000::/3)",
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reason(s: &str) -> Option<&'static str> {
        blocked_reason(s.parse().unwrap())
    }

    #[test]
    fn public_addresses_pass() {
        for ip in
            ["93.184.215.14", "8.8.8.8", "1.1.1.1", "172.32.0.1", "100.128.0.1", "2606:4700::1111", "2a00:1450::1"]
        {
            assert_eq!(reason(ip), None, "{ip}");
        }
        assert_eq!(reason("::ffff:8.8.8.8"), None);
        assert_eq!(reason("::ffff:0:8.8.8.8"), None);
        assert_eq!(reason("64:ff9b::808:808"), None);
        assert_eq!(reason("2002:0808:0808::1"), None);
        // Teredo: server 65.54.227.120, client 8.8.8.8 (stored inverted: f7f7:f7f7).
        assert_eq!(reason("2001:0:4136:e378:8000:63bf:f7f7:f7f7"), None);
        // AS112 direct delegation: a special-purpose block that is globally reachable.
        assert_eq!(reason("2620:4f:8000::1"), None);
    }

    #[test]
    fn ipv4_private_loopback_link_local_and_friends_are_refused() {
        let cases = [
            ("127.0.0.1", "loopback"),
            ("127.255.1.2", "loopback"),
            ("10.1.2.3", "private"),
            ("172.16.0.1", "private"),
            ("172.31.255.255", "private"),
            ("192.168.1.1", "private"),
            ("169.254.169.254", "link-local"),
            ("0.0.0.0", "unspecified"),
            ("100.64.0.1", "shared (carrier-grade NAT)"),
            ("224.0.0.1", "multicast"),
            ("255.255.255.255", "reserved"),
            ("198.18.0.1", "benchmarking"),
            ("192.0.2.1", "documentation"),
        ];
        for (ip, why) in cases {
            assert_eq!(reason(ip), Some(why), "{ip}");
        }
    }

    #[test]
    fn ipv6_loopback_unique_local_link_local_multicast_are_refused() {
        let cases = [
            ("::1", "loopback"),
            ("::", "unspecified"),
            ("fe80::1", "link-local"),
            ("fc00::1", "unique-local"),
            ("fd12:3456::1", "unique-local"),
            ("ff02::1", "multicast"),
            ("2001:db8::1", "documentation"),
            ("fec0::1", "site-local"),
        ];
        for (ip, why) in cases {
            assert_eq!(reason(ip), Some(why), "{ip}");
        }
    }

    #[test]
    fn ipv6_addresses_embedding_a_private_ipv4_are_refused() {
        assert_eq!(reason("::ffff:127.0.0.1"), Some("loopback"));
        assert_eq!(reason("::ffff:10.0.0.1"), Some("private"));
        assert_eq!(reason("::ffff:169.254.169.254"), Some("link-local"));
        assert_eq!(reason("::127.0.0.1"), Some("loopback"));
        assert_eq!(reason("64:ff9b::a00:1"), Some("private"));
        assert_eq!(reason("2002:c0a8:0101::1"), Some("private"));
        assert_eq!(reason("2002:7f00:1::"), Some("loopback"));
        // IPv4-translated (SIIT): ::ffff:0:a.b.c.d.
        assert_eq!(reason("::ffff:0:127.0.0.1"), Some("loopback"));
        assert_eq!(reason("::ffff:0:10.0.0.1"), Some("private"));
        assert_eq!(reason("64:ff9b::7f00:1"), Some("loopback"));
        assert_eq!(reason("64:ff9b::169.254.169.254"), Some("link-local"));
        // Teredo: a loopback client (127.0.0.1 inverted), or a private server.
        assert_eq!(reason("2001:0:4136:e378::80ff:fffe"), Some("loopback"));
        assert_eq!(reason("2001:0:a00:1::f7f7:f7f7"), Some("private"));
        assert_eq!(reason("2001:0:4136:e378::9bbf:fffe"), Some("shared (carrier-grade NAT)"));
    }

    #[test]
    fn ipv6_outside_global_unicast_or_in_its_special_blocks_is_refused() {
        let cases = [
            ("64:ff9b:1::a00:1", "local-use NAT64"),
            ("64:ff9b:1:ffff::808:808", "local-use NAT64"),
            ("100::1", "discard-only"),
            ("2001:2::1", "IETF protocol-assignment"),
            ("2001:10::1", "IETF protocol-assignment"),
            ("2001:1::1", "IETF protocol-assignment"),
            ("3fff::1", "documentation"),
            ("4000::1", "non-global (outside 2000::/3)"),
            ("5f00::1", "non-global (outside 2000::/3)"),
            ("1::1", "non-global (outside 2000::/3)"),
            ("::ffff:1:7f00:1", "non-global (outside 2000::/3)"),
            ("::1:7f00:1", "non-global (outside 2000::/3)"),
        ];
        for (ip, why) in cases {
            assert_eq!(reason(ip), Some(why), "{ip}");
        }
    }

    #[test]
    fn url_shape_is_checked() {
        assert!(parse_url("u", "https://example.com/hook?x=1").is_ok());
        assert!(parse_url("u", "http://example.com:8080/").is_ok());
        for bad in [
            "example.com/hook",
            "/relative",
            "ftp://example.com/",
            "https://user:pw@example.com/",
            "https://user@example.com/",
            "https://exa mple.com/",
            "https://example.com/\n",
            "file:///etc/passwd",
            "https://",
        ] {
            match parse_url("callback_url", bad) {
                Err(Error::Validation { details, .. }) => assert_eq!(details[0].path, vec![json!("callback_url")]),
                other => panic!("{bad}: {other:?}"),
            }
        }
        let long = format!("https://example.com/{}", "a".repeat(MAX_URL_LEN));
        assert!(parse_url("u", &long).is_err());
    }

    #[tokio::test]
    async fn set_time_check_refuses_private_literals_and_names_unless_allowed() {
        for u in [
            "http://127.0.0.1:9/x",
            "http://[::1]/",
            "http://10.0.0.8/",
            "http://[::ffff:192.168.0.1]/",
            "http://[::ffff:0:127.0.0.1]/",
            "http://[2001:0:4136:e378::80ff:fffe]/",
            "http://[2002:7f00:1::]/",
            "http://[64:ff9b::a9fe:a9fe]/",
            "http://[64:ff9b:1::a00:1]/",
            "http://169.254.169.254/latest",
            "http://0x7f.1/",
            "http://localhost:8080/",
        ] {
            let e = check_url("callback_url", u, Targets::PublicOnly).await.unwrap_err();
            assert!(e.to_string().contains("BATON_ALLOW_PRIVATE_TARGETS"), "{u}: {e}");
            assert!(check_url("callback_url", u, Targets::AllowPrivate).await.is_ok(), "{u}");
        }
        assert!(check_url("callback_url", "https://93.184.215.14/cb", Targets::PublicOnly).await.is_ok());
    }

    #[tokio::test]
    async fn request_time_resolution_keeps_only_permitted_addresses() {
        match resolve("127.0.0.1", 80, Targets::PublicOnly).await {
            Err(ResolveError::Refused(r)) => assert!(r.0.contains("loopback"), "{r}"),
            other => panic!("{other:?}"),
        }
        match resolve("[::ffff:0:127.0.0.1]", 80, Targets::PublicOnly).await {
            Err(ResolveError::Refused(r)) => assert!(r.0.contains("loopback"), "{r}"),
            other => panic!("{other:?}"),
        }
        match resolve("localhost", 80, Targets::PublicOnly).await {
            Err(ResolveError::Refused(_)) => {}
            other => panic!("{other:?}"),
        }
        assert_eq!(
            resolve("127.0.0.1", 81, Targets::AllowPrivate).await.unwrap(),
            vec![SocketAddr::from(([127, 0, 0, 1], 81))]
        );
        let mixed = vec![SocketAddr::from(([10, 0, 0, 1], 443)), SocketAddr::from(([8, 8, 8, 8], 443))];
        assert_eq!(vet("h", mixed, Targets::PublicOnly).unwrap(), vec![SocketAddr::from(([8, 8, 8, 8], 443))]);
    }
}

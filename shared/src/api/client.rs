//! Who is at the other end of a request, for the limits that apply before any API key
//! (registrations, the doors without a key).
//!
//! The address comes from, in order: a [`ClientAddr`] the deployment put in the request's
//! extensions (the Lambda functions: API Gateway's `sourceIp`, which the caller cannot
//! forge); `X-Forwarded-For`, only when `AppConfig::trusted_proxy_hops` says that many
//! proxies of the operator's stand in front; the socket's peer address (`ConnectInfo`,
//! the local server).

use crate::accounts::{self, RateInfo};
use crate::app::AppState;
use crate::error::Result;
use axum::extract::{ConnectInfo, FromRequestParts};
use http::request::Parts;
use std::convert::Infallible;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};

/// The caller's address as the deployment saw it (set by the Lambda adapter).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientAddr(pub IpAddr);

/// The caller's address, when known.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Client(pub Option<IpAddr>);

impl Client {
    /// The rate-limit bucket of this client for `what`. An IPv6 client is counted by its
    /// /64, the block one subscriber gets: counting single addresses would let one host
    /// rotate through 2^64 of them.
    pub fn bucket(&self, what: &str) -> String {
        let addr = match self.0.map(canonical) {
            Some(IpAddr::V4(a)) => a.to_string(),
            Some(IpAddr::V6(a)) => {
                let s = a.segments();
                format!("{}/64", Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
            None => "unknown".into(),
        };
        format!("ip:{addr}:{what}")
    }

    /// Counts one `what` against this client's window (`limit` per `window_secs`).
    pub async fn check(&self, state: &AppState, what: &str, limit: u64, window_secs: u64) -> Result<RateInfo> {
        accounts::check_window(&*state.store, &self.bucket(what), limit, window_secs, what).await
    }
}

/// An IPv4-mapped IPv6 address is the IPv4 host.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(a) => a.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// The client behind `hops` trusted proxies: the `X-Forwarded-For` chain plus the peer is
/// `client, proxy1, …, proxyN`; anything further left was written by the client itself.
fn forwarded(parts: &Parts, peer: Option<IpAddr>, hops: usize) -> Option<IpAddr> {
    let mut chain: Vec<&str> = parts
        .headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect();
    let peer_text = peer.map(|p| p.to_string());
    if let Some(p) = &peer_text {
        chain.push(p);
    }
    let at = chain.len().saturating_sub(1 + hops);
    chain.get(at).and_then(|s| s.parse().ok())
}

impl FromRequestParts<AppState> for Client {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Infallible> {
        if let Some(ClientAddr(ip)) = parts.extensions.get::<ClientAddr>() {
            return Ok(Client(Some(*ip)));
        }
        let peer = parts.extensions.get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip());
        let hops = state.config.trusted_proxy_hops;
        if hops > 0 && parts.headers.contains_key("x-forwarded-for") {
            return Ok(Client(forwarded(parts, peer, hops).or(peer)));
        }
        Ok(Client(peer))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(xff: &[&str]) -> Parts {
        let mut b = http::Request::builder();
        for v in xff {
            b = b.header("x-forwarded-for", *v);
        }
        b.body(()).unwrap().into_parts().0
    }

    fn ip(s: &str) -> Option<IpAddr> {
        Some(s.parse().unwrap())
    }

    #[test]
    fn forwarded_for_is_read_only_as_far_as_the_trusted_hops_reach() {
        let peer = ip("10.0.0.2");
        // One proxy: its peer is the proxy, the entry it appended is the client; the forged
        // entry the client wrote before it is ignored.
        assert_eq!(forwarded(&parts(&["6.6.6.6, 203.0.113.7"]), peer, 1), ip("203.0.113.7"));
        assert_eq!(forwarded(&parts(&["6.6.6.6", "203.0.113.7, 10.0.0.3"]), peer, 2), ip("203.0.113.7"));
        // Fewer entries than hops: the leftmost is the best there is.
        assert_eq!(forwarded(&parts(&["203.0.113.7"]), peer, 3), ip("203.0.113.7"));
        assert_eq!(forwarded(&parts(&["not an address"]), peer, 1), None);
    }

    #[test]
    fn ipv6_clients_are_counted_by_their_64_and_mapped_ones_as_ipv4() {
        let a = Client(ip("2001:db8:1:2:aaaa::1")).bucket("register");
        let b = Client(ip("2001:db8:1:2:bbbb::9")).bucket("register");
        assert_eq!(a, b);
        assert_eq!(a, "ip:2001:db8:1:2::/64:register");
        assert_ne!(a, Client(ip("2001:db8:1:3::1")).bucket("register"));
        assert_eq!(Client(ip("::ffff:198.51.100.4")).bucket("door"), "ip:198.51.100.4:door");
        assert_eq!(Client(None).bucket("door"), "ip:unknown:door");
    }
}

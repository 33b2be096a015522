//! The outbound HTTP adapter of the callback [`Transport`] port: reqwest with rustls, no
//! redirects, no proxies from the environment, a per-request timeout, and a DNS resolver
//! that hands the connector only the addresses [`net_guard`] permits — so the connection
//! goes to the address that was checked, whatever the name resolves to a moment later.

use crate::callbacks::{MAX_RESPONSE_EXCERPT, Outgoing, Sent, Transport};
use crate::net_guard::{self, Refused, ResolveError, Targets};
use async_trait::async_trait;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use std::sync::Arc;

/// Resolves names for the HTTP client, keeping only permitted addresses.
struct GuardedResolver {
    targets: Targets,
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let targets = self.targets;
        let host = name.as_str().to_string();
        Box::pin(async move {
            // Port 0: the connector puts in the URL's port.
            match net_guard::resolve(&host, 0, targets).await {
                Ok(addrs) => Ok(Box::new(addrs.into_iter()) as Addrs),
                Err(ResolveError::Refused(r)) => Err(Box::new(r) as Box<dyn std::error::Error + Send + Sync>),
                Err(ResolveError::Lookup(e)) => Err(Box::new(e) as Box<dyn std::error::Error + Send + Sync>),
            }
        })
    }
}

/// The HTTP client requests on a caller's behalf go through (callbacks, HTTP blocks): the
/// [`guarded_client`] plus the check of IP-literal URLs that the resolver never sees.
#[derive(Clone)]
pub struct GuardedHttp {
    client: Result<reqwest::Client, String>,
    targets: Targets,
}

impl GuardedHttp {
    pub fn new(targets: Targets) -> Self {
        let client = guarded_client(targets).map_err(|e| format!("cannot build the HTTP client: {e}"));
        GuardedHttp { client, targets }
    }

    /// The URL a request may go to, or why not: `field` names the setting in the message.
    pub fn vet(&self, field: &str, raw: &str) -> Result<reqwest::Url, String> {
        let url = net_guard::parse_url(field, raw).map_err(|e| e.to_string())?;
        // An IP literal never reaches the resolver.
        if let Some(ip) = net_guard::ip_literal(&url)
            && self.targets == Targets::PublicOnly
            && let Some(why) = net_guard::blocked_reason(ip)
        {
            return Err(format!("{ip} is a {why} address; refused (BATON_ALLOW_PRIVATE_TARGETS is not set)"));
        }
        Ok(url)
    }

    /// Which addresses this client may reach: for blocks that connect without HTTP (SMTP)
    /// and must apply the same rule (`net_guard::resolve`).
    pub fn targets(&self) -> Targets {
        self.targets
    }

    /// The client, for a URL [`vet`](Self::vet) let through.
    pub fn client(&self) -> Result<&reqwest::Client, String> {
        self.client.as_ref().map_err(Clone::clone)
    }
}

pub struct HttpTransport {
    http: GuardedHttp,
}

/// An HTTP client for requests on a caller's behalf (callbacks, and the HTTP blocks to
/// come): no redirects, no proxy from the environment, and names resolved only to
/// addresses `targets` permits. IP-literal URLs bypass the resolver: check them with
/// [`net_guard::ip_literal`] + [`net_guard::blocked_reason`] before sending.
pub fn guarded_client(targets: Targets) -> reqwest::Result<reqwest::Client> {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .dns_resolver(Arc::new(GuardedResolver { targets }))
        .pool_max_idle_per_host(4)
        .build()
}

impl HttpTransport {
    pub fn new(targets: Targets) -> Self {
        Self::over(GuardedHttp::new(targets))
    }

    /// Callbacks over a client the process already has (its connection pool shared).
    pub fn over(http: GuardedHttp) -> Self {
        HttpTransport { http }
    }
}

/// A [`Refused`] somewhere in an error's chain (the resolver's verdict, wrapped by the
/// connector and the client).
pub(crate) fn refused_in(e: &(dyn std::error::Error + 'static)) -> Option<String> {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if let Some(r) = err.downcast_ref::<Refused>() {
            return Some(r.0.clone());
        }
        cur = err.source();
    }
    None
}

/// The error and its causes on one line.
pub(crate) fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(err) = cur {
        let s = err.to_string();
        if !out.contains(&s) {
            out.push_str(": ");
            out.push_str(&s);
        }
        cur = err.source();
    }
    out
}

#[async_trait]
impl Transport for HttpTransport {
    async fn post(&self, req: Outgoing) -> Sent {
        let client = match self.http.client() {
            Ok(c) => c,
            Err(e) => return Sent::Failed(e),
        };
        let url = match self.http.vet("callback_url", &req.url) {
            Ok(u) => u,
            Err(e) => return Sent::Refused(e),
        };
        let mut rb = client.post(url).timeout(req.timeout).body(req.body);
        for (k, v) in req.headers {
            rb = rb.header(k, v);
        }
        let mut resp = match rb.send().await {
            Ok(r) => r,
            Err(e) => {
                return match refused_in(&e) {
                    Some(r) => Sent::Refused(r),
                    None if e.is_timeout() => Sent::Failed(format!("no answer within {} ms", req.timeout.as_millis())),
                    None => Sent::Failed(chain(&e)),
                };
            }
        };
        let status = resp.status().as_u16();
        let mut excerpt = Vec::new();
        // Only the start of the answer is kept; the rest is not read.
        while excerpt.len() < MAX_RESPONSE_EXCERPT {
            match resp.chunk().await {
                Ok(Some(c)) => excerpt.extend_from_slice(&c[..c.len().min(MAX_RESPONSE_EXCERPT - excerpt.len())]),
                _ => break,
            }
        }
        Sent::Answered { status, body: String::from_utf8_lossy(&excerpt).into_owned() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn req(url: String) -> Outgoing {
        Outgoing { url, headers: vec![], body: b"{}".to_vec(), timeout: Duration::from_secs(2) }
    }

    /// A loopback server that answers every connection with a redirect.
    async fn redirecting() -> (u16, tokio::task::JoinHandle<()>) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        let task = tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf).await;
                let _ = s
                    .write_all(b"HTTP/1.1 307 Temporary Redirect\r\nlocation: http://127.0.0.1:9/\r\ncontent-length: 5\r\nconnection: close\r\n\r\nmoved")
                    .await;
            }
        });
        (port, task)
    }

    #[tokio::test]
    async fn names_resolving_to_loopback_are_refused_not_retried() {
        let (port, task) = redirecting().await;
        let t = HttpTransport::new(Targets::PublicOnly);
        match t.post(req(format!("http://localhost:{port}/hook"))).await {
            Sent::Refused(why) => assert!(why.contains("loopback"), "{why}"),
            other => panic!("{other:?}"),
        }
        // Every spelling of loopback is refused at connect time too, IPv4-translated included.
        for url in [
            format!("http://127.0.0.1:{port}/hook"),
            format!("http://[::ffff:0:127.0.0.1]:{port}/hook"),
            format!("http://[64:ff9b::7f00:1]:{port}/hook"),
        ] {
            match t.post(req(url.clone())).await {
                Sent::Refused(why) => assert!(why.contains("loopback"), "{url}: {why}"),
                other => panic!("{url}: {other:?}"),
            }
        }
        task.abort();
    }

    #[tokio::test]
    async fn redirects_are_not_followed_and_the_answer_is_kept() {
        let (port, task) = redirecting().await;
        let t = HttpTransport::new(Targets::AllowPrivate);
        assert_eq!(
            t.post(req(format!("http://localhost:{port}/hook"))).await,
            Sent::Answered { status: 307, body: "moved".into() }
        );
        task.abort();
    }

    #[tokio::test]
    async fn no_answer_is_a_retryable_failure() {
        let t = HttpTransport::new(Targets::AllowPrivate);
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        assert!(matches!(t.post(req(format!("http://127.0.0.1:{port}/"))).await, Sent::Failed(_)));
    }
}

//! The local HTTP server: hyper's HTTP/1 connections with what API Gateway does for the
//! functions on AWS — a deadline on the request head (which also ends idle keep-alive
//! connections), a deadline on the body, and a cap on one address's open connections — so
//! slow or hoarding clients cannot pin the server's sockets and tasks.

use axum::Router;
use axum::extract::ConnectInfo;
use baton::api::deadline::DeadlineBody;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpListener;
use tower::ServiceExt;
use tracing::{debug, warn};

#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// From when a connection starts waiting for a request (its first, or the next one on
    /// a kept-alive connection) until the whole head has arrived.
    pub header_read: Duration,
    /// From the end of the head until the whole body has arrived.
    pub body_read: Duration,
    /// Open connections one client address may hold; more are closed at once.
    pub max_connections_per_addr: usize,
    /// How long in-flight requests may finish after the stop signal.
    pub shutdown_grace: Duration,
}

/// Open connections per address; a [`Slot`] gives its place back when dropped.
#[derive(Default)]
struct Open(Mutex<HashMap<IpAddr, usize>>);

struct Slot {
    open: Arc<Open>,
    ip: IpAddr,
}

impl Open {
    fn take(self: &Arc<Self>, ip: IpAddr, max: usize) -> Option<Slot> {
        let mut m = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let n = m.entry(ip).or_default();
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(Slot { open: self.clone(), ip })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut m = self.open.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = m.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                m.remove(&self.ip);
            }
        }
    }
}

/// Serves `router` on `listener` until `stop` completes, then lets in-flight requests
/// finish (up to `limits.shutdown_grace`). Every request carries `ConnectInfo` of its peer.
pub async fn serve(listener: TcpListener, router: Router, limits: Limits, stop: impl Future<Output = ()>) {
    let open = Arc::new(Open::default());
    let graceful = GracefulShutdown::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new()).header_read_timeout(limits.header_read);
    tokio::pin!(stop);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: pause instead of spinning.
                    warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut stop => break,
        };
        let Some(slot) = open.take(peer.ip(), limits.max_connections_per_addr) else {
            debug!(%peer, "connection refused: too many open connections from this address");
            continue;
        };
        let body_read = limits.body_read;
        let service = router.clone().map_request(move |req: http::Request<Incoming>| {
            let mut req = req.map(|b| axum::body::Body::new(DeadlineBody::new(b, body_read)));
            req.extensions_mut().insert(ConnectInfo::<SocketAddr>(peer));
            req
        });
        let conn = graceful.watch(http.serve_connection(TokioIo::new(stream), TowerToHyperService::new(service)));
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                debug!(%peer, error = %e, "connection ended with an error");
            }
            drop(slot);
        });
    }
    drop(listener);
    if tokio::time::timeout(limits.shutdown_grace, graceful.shutdown()).await.is_err() {
        warn!("some connections were still open after {:?}; closing them", limits.shutdown_grace);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::routing::{get, post};
    use baton::api::extract::RawBody;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    /// Generous: a test fails by waiting this long for what the server must do by itself.
    const PATIENCE: Duration = Duration::from_secs(20);

    async fn start(limits: Limits) -> (SocketAddr, tokio::sync::oneshot::Sender<()>) {
        let router = Router::new()
            .route("/ok", get(|| async { "ok" }))
            .route("/echo", post(|RawBody(b): RawBody| async move { b }));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(serve(listener, router, limits, async move {
            let _ = rx.await;
        }));
        (addr, tx)
    }

    fn limits() -> Limits {
        Limits {
            header_read: Duration::from_millis(300),
            body_read: Duration::from_millis(300),
            max_connections_per_addr: 2,
            shutdown_grace: Duration::from_secs(1),
        }
    }

    /// Everything the server sends until it closes the connection.
    async fn read_to_close(s: &mut TcpStream) -> String {
        let mut out = Vec::new();
        tokio::time::timeout(PATIENCE, s.read_to_end(&mut out))
            .await
            .expect("the server should have closed the connection")
            .unwrap();
        String::from_utf8_lossy(&out).into_owned()
    }

    #[tokio::test]
    async fn a_half_sent_head_is_dropped_after_the_header_timeout() {
        let (addr, _stop) = start(limits()).await;
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET /ok HTTP/1.1\r\nHost: x\r\nX-Slow: ").await.unwrap();
        read_to_close(&mut s).await;
    }

    #[tokio::test]
    async fn an_idle_keep_alive_connection_is_closed() {
        let (addr, _stop) = start(limits()).await;
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET /ok HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
        let answer = read_to_close(&mut s).await;
        assert!(answer.starts_with("HTTP/1.1 200") && answer.ends_with("ok"), "{answer}");
    }

    #[tokio::test]
    async fn a_trickled_body_is_answered_408_in_the_envelope() {
        let (addr, _stop) = start(limits()).await;
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"a\"").await.unwrap();
        let answer = read_to_close(&mut s).await;
        assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
        assert!(answer.contains("\"REQUEST_TIMEOUT\""), "{answer}");
    }

    #[tokio::test]
    async fn one_address_holds_only_so_many_connections() {
        let limits = Limits { header_read: Duration::from_secs(60), ..limits() };
        let (addr, _stop) = start(limits).await;
        let first = TcpStream::connect(addr).await.unwrap();
        let mut second = TcpStream::connect(addr).await.unwrap();
        // A request on the second proves both were accepted before the third arrives.
        second.write_all(b"GET /ok HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
        let mut buf = [0u8; 12];
        second.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"HTTP/1.1 200");
        let mut third = TcpStream::connect(addr).await.unwrap();
        let _ = third.write_all(b"GET /ok HTTP/1.1\r\nHost: x\r\n\r\n").await;
        let mut out = Vec::new();
        // Closed unanswered: an end of stream, or a reset when the request was still unread.
        match tokio::time::timeout(PATIENCE, third.read_to_end(&mut out)).await.expect("closed") {
            Ok(_) => assert!(out.is_empty(), "{}", String::from_utf8_lossy(&out)),
            Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "{e}"),
        }
        // A closed connection frees its place.
        drop(first);
        let answer = tokio::time::timeout(PATIENCE, async {
            loop {
                let mut s = TcpStream::connect(addr).await.unwrap();
                s.write_all(b"GET /ok HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await.unwrap();
                let mut out = Vec::new();
                let _ = s.read_to_end(&mut out).await;
                if !out.is_empty() {
                    return String::from_utf8_lossy(&out).into_owned();
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
        .unwrap();
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    }
}

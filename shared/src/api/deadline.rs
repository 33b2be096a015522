//! A deadline on reading a request body: a client that trickles its body (one byte now and
//! then) would otherwise hold a connection and a task for as long as it likes. The local
//! server wraps every body in [`DeadlineBody`]; on AWS, API Gateway receives the body
//! before any function runs. A body past its deadline fails to read, which the extractors
//! answer with 408 `REQUEST_TIMEOUT`.

use axum::body::Bytes;
use http_body::{Body, Frame, SizeHint};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::time::Sleep;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The error a body past its deadline fails with.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("request body not received within {0:?}")]
pub struct BodyTimedOut(pub Duration);

/// `inner`, failing with [`BodyTimedOut`] once `limit` has passed since it was wrapped
/// (when the request head was read).
pub struct DeadlineBody<B> {
    inner: B,
    sleep: Pin<Box<Sleep>>,
    limit: Duration,
}

impl<B> DeadlineBody<B> {
    pub fn new(inner: B, limit: Duration) -> Self {
        DeadlineBody { inner, sleep: Box::pin(tokio::time::sleep(limit)), limit }
    }
}

impl<B> Body for DeadlineBody<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        if let Poll::Ready(frame) = Pin::new(&mut this.inner).poll_frame(cx) {
            return Poll::Ready(frame.map(|f| f.map_err(Into::into)));
        }
        if this.sleep.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Some(Err(Box::new(BodyTimedOut(this.limit)))));
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The deadline, when a [`BodyTimedOut`] is somewhere in `e`'s chain of causes.
pub fn timed_out(e: &(dyn std::error::Error + 'static)) -> Option<Duration> {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if let Some(t) = err.downcast_ref::<BodyTimedOut>() {
            return Some(t.0);
        }
        cur = err.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::extract::RawBody;
    use axum::extract::FromRequest;
    use futures::StreamExt;
    use http_body_util::StreamBody;

    #[tokio::test]
    async fn a_body_that_does_not_finish_in_time_is_a_408() {
        // A body that sends one chunk and then nothing.
        let chunks = futures::stream::iter([Ok::<_, std::io::Error>(Frame::data(Bytes::from_static(b"{\"a\"")))])
            .chain(futures::stream::pending());
        let body = DeadlineBody::new(StreamBody::new(chunks), Duration::from_millis(50));
        let req = http::Request::new(axum::body::Body::new(body));
        let e = RawBody::from_request(req, &()).await.unwrap_err();
        assert!(matches!(e, crate::Error::RequestTimeout(ref m) if m.contains("0.05 s")), "{e:?}");
    }

    #[tokio::test]
    async fn a_body_in_time_reads_whole() {
        let body = DeadlineBody::new(axum::body::Body::from("{}"), Duration::from_secs(30));
        let req = http::Request::new(axum::body::Body::new(body));
        assert_eq!(RawBody::from_request(req, &()).await.unwrap().0, Bytes::from_static(b"{}"));
    }
}

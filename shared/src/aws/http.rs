//! The AWS SDK's HTTP client, on the reqwest (rustls, HTTP/1.1) Baton already links for
//! callbacks and HTTP blocks. The SDK's own client would bring a second hyper client stack
//! and HTTP/2 (DynamoDB, SQS and KMS answer over HTTP/1.1): about a tenth of every Lambda zip.
//!
//! Request bodies of these services are in memory (the SDK's retries clone them); responses
//! are read whole, as the SDK's deserializers do anyway.

use aws_smithy_runtime_api::client::http::{
    HttpClient, HttpConnector, HttpConnectorFuture, HttpConnectorSettings, SharedHttpClient, SharedHttpConnector,
};
use aws_smithy_runtime_api::client::orchestrator::{HttpRequest, HttpResponse};
use aws_smithy_runtime_api::client::result::ConnectorError;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::body::SdkBody;
use std::time::Duration;

/// Connect timeout when the SDK asks for none (the SDK's own default).
const CONNECT_TIMEOUT: Duration = Duration::from_millis(3100);

/// The reqwest client of every AWS request of this process, the SDK's and the payload
/// bucket's (one connection pool).
pub fn aws_http() -> reqwest::Client {
    static CLIENT: std::sync::OnceLock<reqwest::Client> = std::sync::OnceLock::new();
    CLIENT
        .get_or_init(|| {
            // Building fails only if the TLS backend cannot start (no input is involved);
            // reqwest's default client is the same minus the timeout.
            reqwest::Client::builder().connect_timeout(CONNECT_TIMEOUT).http1_only().build().unwrap_or_default()
        })
        .clone()
}

/// The HTTP client of the SDK's clients: [`aws_http`].
pub fn sdk_http_client() -> SharedHttpClient {
    SharedHttpClient::new(ReqwestClient { client: aws_http() })
}

#[derive(Clone, Debug)]
struct ReqwestClient {
    client: reqwest::Client,
}

impl HttpClient for ReqwestClient {
    fn http_connector(&self, settings: &HttpConnectorSettings, _: &RuntimeComponents) -> SharedHttpConnector {
        SharedHttpConnector::new(Connector { client: self.client.clone(), read_timeout: settings.read_timeout() })
    }
}

#[derive(Debug)]
struct Connector {
    client: reqwest::Client,
    read_timeout: Option<Duration>,
}

impl HttpConnector for Connector {
    fn call(&self, request: HttpRequest) -> HttpConnectorFuture {
        let client = self.client.clone();
        let read_timeout = self.read_timeout;
        HttpConnectorFuture::new(async move {
            let method = reqwest::Method::from_bytes(request.method().as_bytes())
                .map_err(|e| ConnectorError::other(e.into(), None))?;
            let body = request
                .body()
                .bytes()
                .ok_or_else(|| {
                    ConnectorError::other("a streaming request body (not used by Baton's AWS calls)".into(), None)
                })?
                .to_vec();
            let mut req = client.request(method, request.uri());
            for (name, value) in request.headers().iter() {
                req = req.header(name, value);
            }
            // reqwest bounds the whole exchange; the SDK's read timeout is the closest it has.
            if let Some(t) = read_timeout {
                req = req.timeout(t);
            }
            let res = req.body(body).send().await.map_err(connector_error)?;
            let (status, headers) = (res.status(), res.headers().clone());
            let bytes = res.bytes().await.map_err(connector_error)?;
            let mut out = http::Response::new(SdkBody::from(bytes));
            *out.status_mut() = status;
            *out.headers_mut() = headers;
            HttpResponse::try_from(out).map_err(|e| ConnectorError::other(e.into(), None))
        })
    }
}

/// Timeouts and I/O failures are what the SDK's retry policy retries.
fn connector_error(e: reqwest::Error) -> ConnectorError {
    if e.is_timeout() {
        ConnectorError::timeout(e.into())
    } else if e.is_connect() || e.is_request() || e.is_body() {
        ConnectorError::io(e.into())
    } else {
        ConnectorError::other(e.into(), None)
    }
}

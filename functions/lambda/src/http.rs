//! The HTTP functions: API Gateway HTTP API (payload 2.0) events → one part of the axum
//! router (the function's own [`baton::api::parts`] router).

use crate::{Ports, boot, init_logs};
use baton::api::Part;
use baton::app::AppState;
use baton::config::Config;
use lambda_http::Request;
use std::process::ExitCode;
use std::sync::{Arc, OnceLock};
use tower::ServiceExt;
use tracing::error;

/// The router of one function, e.g. [`baton::api::parts::hook`].
pub type PartRouter = fn(AppState) -> axum::Router;

/// `main` of an HTTP function: boots, then serves `part` through its `router` until the
/// runtime stops.
pub async fn serve(part: Part, router: PartRouter) -> ExitCode {
    init_logs();
    let (config, ports) = match boot(part.name()).await {
        Ok(b) => b,
        Err(code) => return code,
    };
    let function = Arc::new(HttpFunction::new(router, config, ports));
    let service = tower::service_fn(move |mut req: Request| {
        let router = function.router(&req);
        if let Some(ip) = source_ip(&req) {
            req.extensions_mut().insert(baton::api::client::ClientAddr(ip));
        }
        async move { router.oneshot(req).await }
    });
    match lambda_http::run(service).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            error!(error = %e, "lambda runtime stopped");
            ExitCode::FAILURE
        }
    }
}

/// One function's router, built once. Without `BATON_PUBLIC_URL` it is built at the first
/// request, with that request's origin as the public URL: API Gateway forwards the `Host`
/// the caller used (the API's domain, or its custom domain) and `lambda_http` puts it and
/// `X-Forwarded-Proto` into the URI.
pub struct HttpFunction {
    part_router: PartRouter,
    config: Config,
    ports: Ports,
    built: OnceLock<Built>,
}

struct Built {
    public_url: String,
    router: axum::Router,
}

impl HttpFunction {
    pub fn new(part_router: PartRouter, config: Config, ports: Ports) -> Self {
        let f = HttpFunction { part_router, config, ports, built: OnceLock::new() };
        if let Some(url) = f.config.public_url.clone() {
            let _ = f.built.set(f.build(url));
        }
        f
    }

    /// The router, built now if this is the first request.
    pub fn router<B>(&self, req: &http::Request<B>) -> axum::Router {
        self.built.get_or_init(|| self.build(origin(req).unwrap_or_default())).router.clone()
    }

    /// The public URL in use, once known.
    pub fn public_url(&self) -> Option<&str> {
        self.built.get().map(|b| b.public_url.as_str())
    }

    fn build(&self, public_url: String) -> Built {
        let app =
            self.ports.http_app(baton::app::AppConfig { public_url: public_url.clone(), ..self.config.app.clone() });
        Built { public_url, router: (self.part_router)(app) }
    }
}

/// The caller's address as API Gateway saw it (`requestContext.http.sourceIp`): what the
/// per-client limits count, since the caller cannot forge it as it can `X-Forwarded-For`.
pub fn source_ip(req: &Request) -> Option<std::net::IpAddr> {
    use lambda_http::RequestExt;
    use lambda_http::request::RequestContext;
    match req.request_context_ref()? {
        RequestContext::ApiGatewayV2(ctx) => ctx.http.source_ip.as_deref()?.parse().ok(),
        #[allow(unreachable_patterns)]
        _ => None,
    }
}

/// `scheme://host` of a request as `lambda_http` built its URI.
pub fn origin<B>(req: &http::Request<B>) -> Option<String> {
    let uri = req.uri();
    Some(format!("{}://{}", uri.scheme_str()?, uri.authority()?))
}

#[cfg(test)]
mod tests;

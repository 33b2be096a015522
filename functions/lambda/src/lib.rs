//! What every Baton Lambda function shares, so each `functions/<name>` is a few lines: JSON
//! logs, the configuration read once, SDK clients built once per cold start, and the two
//! drivers — API Gateway requests into the axum router ([`http`]), SQS batches into the
//! engine's per-message function ([`worker`]).

pub mod http;
pub mod worker;

use baton::app::{App, AppConfig, AppState};
use baton::config::Config;
use std::process::ExitCode;
use std::sync::Arc;
use tracing::{error, info};

/// JSON lines on stdout (CloudWatch), level from `RUST_LOG` (default `info`). Each line
/// carries the fields of the spans it is in: the runtime's `requestId`, and the engine's
/// `run_id` / `step_key` while a step runs.
pub fn init_logs() {
    tracing_subscriber::fmt()
        .json()
        .flatten_event(true)
        .with_current_span(false)
        .with_span_list(true)
        .with_ansi(false)
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .init();
}

/// The ports of one cold start.
pub struct Ports {
    pub store: Arc<dyn baton::store::Store>,
    pub queue: Arc<dyn baton::queue::Queue>,
    /// The long-step queue (`BATON_LONG_QUEUE_URL`), where the worker hands blocks that need
    /// more time than its invocation has.
    pub long_queue: Option<Arc<dyn baton::queue::Queue>>,
    pub secrets: Arc<baton::secrets::SecretBox>,
}

impl Ports {
    /// The application of a function that runs steps (the workers).
    pub fn app(&self, config: AppConfig) -> AppState {
        App::with_long_queue(
            self.store.clone(),
            self.queue.clone(),
            self.long_queue.clone(),
            self.secrets.clone(),
            config,
        )
    }

    /// The application of an HTTP function: the block executors are plugged in by the
    /// router of the one that runs blocks (`baton::api::parts::execute`).
    pub fn http_app(&self, config: AppConfig) -> AppState {
        App::without_block_executors(
            self.store.clone(),
            self.queue.clone(),
            self.long_queue.clone(),
            self.secrets.clone(),
            config,
        )
    }
}

/// Reads the configuration and connects to DynamoDB, SQS and KMS: once per cold start. The
/// error is already logged and printed; `main` exits with it (Lambda reports an init error).
pub async fn boot(function: &str) -> Result<(Config, Ports), ExitCode> {
    let config = match Config::from_env() {
        Ok(c) => c,
        Err(e) => {
            error!(function, missing_or_bad = ?Config::named(&e.problems), "{e}");
            eprintln!("{function}: {e}");
            return Err(ExitCode::FAILURE);
        }
    };
    let backend = match baton::aws::connect(&config.aws).await {
        Ok(b) => b,
        Err(e) => {
            error!(function, error = %e, "cannot connect to the AWS backend");
            eprintln!("{function}: cannot connect to the AWS backend: {e}");
            return Err(ExitCode::FAILURE);
        }
    };
    info!(function, table = %config.aws.table, "ready");
    let long_queue = backend.long_queue.map(|q| q as Arc<dyn baton::queue::Queue>);
    Ok((config, Ports { store: backend.store, queue: backend.queue, long_queue, secrets: backend.secrets }))
}

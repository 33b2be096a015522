//! The worker function: an SQS event source mapping delivers a batch of step messages; each
//! goes through the engine's per-message function exactly as the local poller
//! (`baton::poller`) drives it, and the answer tells the mapping which ones to keep
//! (`ReportBatchItemFailures`): one message's trouble never fails the batch.
//!
//! The same binary is the long-step worker (`BATON_WORKER_QUEUE=long`, a 15-minute timeout):
//! the step worker hands it the blocks whose timeout is longer than its own invocation has
//! left, and the long-step worker runs them within its own deadline.

use crate::{boot, init_logs};
use aws_lambda_events::event::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent, SqsMessage};
use baton::app::App;
use baton::config::WorkerQueue;
use baton::error::{Error, Result};
use baton::queue::{MAX_DELAY, Outcome, Queue};
use lambda_runtime::{LambdaEvent, service_fn};
use std::convert::Infallible;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;
use tracing::{error, info, warn};

/// `main` of the worker function.
pub async fn serve() -> ExitCode {
    init_logs();
    let (config, ports) = match boot("worker").await {
        Ok(b) => b,
        Err(code) => return code,
    };
    let (app, source) = match (config.worker_queue, &ports.long_queue) {
        (WorkerQueue::Steps, _) => (ports.app(config.app), ports.queue.clone()),
        // The long-step worker hands nothing on: there is no longer worker.
        (WorkerQueue::Long, Some(long)) => {
            let app =
                App::with_long_queue(ports.store.clone(), ports.queue.clone(), None, ports.secrets.clone(), config.app);
            (app, long.clone())
        }
        (WorkerQueue::Long, None) => {
            error!("BATON_WORKER_QUEUE=long needs BATON_LONG_QUEUE_URL");
            eprintln!("worker: BATON_WORKER_QUEUE=long needs BATON_LONG_QUEUE_URL");
            return ExitCode::FAILURE;
        }
    };
    let handler = service_fn(move |event: LambdaEvent<SqsEvent>| {
        let (app, source) = (app.clone(), source.clone());
        async move {
            let deadline = invocation_deadline(event.context.deadline);
            Ok::<_, Infallible>(drain(&app, &source, event.payload, Some(deadline)).await)
        }
    });
    match lambda_runtime::run(handler).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            error!(error = %e, "lambda runtime stopped");
            ExitCode::FAILURE
        }
    }
}

/// What became of one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settled {
    /// Done: the event source mapping deletes it.
    Done,
    /// To come back: its visibility was set to when it should, and it is reported as a failure
    /// so the mapping leaves it in the queue.
    Later,
}

/// The invocation's deadline (epoch milliseconds, from the Runtime API) as an instant.
pub fn invocation_deadline(deadline_ms: u64) -> Instant {
    let now_ms = baton::ids::now_ms().max(0) as u64;
    Instant::now() + Duration::from_millis(deadline_ms.saturating_sub(now_ms))
}

/// Handles a batch from the step queue with no deadline (see [`drain`]).
pub async fn handle_batch(app: &App, event: SqsEvent) -> SqsBatchResponse {
    drain(app, &app.queue, event, None).await
}

/// Handles a batch from `source`, the messages concurrently, none past `deadline`; the
/// response names every message that must stay in the queue.
pub async fn drain(app: &App, source: &Arc<dyn Queue>, event: SqsEvent, deadline: Option<Instant>) -> SqsBatchResponse {
    let total = event.records.len();
    let results =
        futures::future::join_all(event.records.iter().map(|m| settle_from(app, &**source, m, deadline))).await;
    let mut response = SqsBatchResponse::default();
    for (msg, result) in event.records.iter().zip(results) {
        let keep = match result {
            Ok(Settled::Done) => false,
            Ok(Settled::Later) => true,
            Err(e) => {
                warn!(message_id = ?msg.message_id, error = %e, "message not settled; it will come back");
                true
            }
        };
        if keep {
            match &msg.message_id {
                Some(id) => {
                    let mut failure = BatchItemFailure::default();
                    failure.item_identifier = id.clone();
                    response.batch_item_failures.push(failure);
                }
                // Unreachable from SQS; the mapping would then retry the whole batch, which is
                // safe (redelivery is harmless) but noisy.
                None => warn!("a message to keep has no messageId"),
            }
        }
    }
    info!(messages = total, kept = response.batch_item_failures.len(), "batch done");
    response
}

/// One message of the step queue, without a deadline (see [`settle_from`]).
pub async fn settle(app: &App, msg: &SqsMessage) -> Result<Settled> {
    settle_from(app, &*app.queue, msg, None).await
}

/// One message of `source`: run it, send its successors, and either let it be deleted or
/// schedule it.
pub async fn settle_from(
    app: &App,
    source: &dyn Queue,
    msg: &SqsMessage,
    deadline: Option<Instant>,
) -> Result<Settled> {
    let body = msg.body.as_deref().ok_or_else(|| Error::validation("SQS message without a body"))?;
    // The mapping's redrive policy dead-letters the message after this delivery.
    let receives = msg.attributes.get("ApproximateReceiveCount").and_then(|n| n.parse::<u32>().ok()).unwrap_or(1);
    match app.engine.process_until(body, receives >= app.config.max_receives, deadline).await {
        (Outcome::Ack, successors) => {
            // Successors must be durable before the mapping deletes this message.
            if !successors.is_empty() {
                app.queue.send_batch(successors).await?;
            }
            Ok(Settled::Done)
        }
        (Outcome::RetryAfter(after), successors) => {
            if !successors.is_empty() {
                app.queue.send_batch(successors).await?;
            }
            let receipt =
                msg.receipt_handle.as_deref().ok_or_else(|| Error::validation("SQS message without a receipt"))?;
            source.change_visibility(receipt, after.min(MAX_DELAY)).await?;
            Ok(Settled::Later)
        }
    }
}

#[cfg(test)]
mod tests;

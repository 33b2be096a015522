//! The worker function: an SQS event source mapping delivers a batch of step messages; each
//! goes through the engine's per-message function exactly as the local poller
//! (`baton::poller`) drives it, and the answer tells the mapping which ones to keep
//! (`ReportBatchItemFailures`): one message's trouble never fails the batch.

use crate::{boot, init_logs};
use aws_lambda_events::event::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent, SqsMessage};
use baton::app::App;
use baton::error::{Error, Result};
use baton::queue::{MAX_DELAY, Outcome};
use lambda_runtime::{LambdaEvent, service_fn};
use std::convert::Infallible;
use std::process::ExitCode;
use tracing::{error, info, warn};

/// `main` of the worker function.
pub async fn serve() -> ExitCode {
    init_logs();
    let (config, ports) = match boot("worker").await {
        Ok(b) => b,
        Err(code) => return code,
    };
    let app = ports.app(config.app);
    let handler = service_fn(move |event: LambdaEvent<SqsEvent>| {
        let app = app.clone();
        async move { Ok::<_, Infallible>(handle_batch(&app, event.payload).await) }
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

/// Handles a batch, the messages concurrently; the response names every message that must
/// stay in the queue.
pub async fn handle_batch(app: &App, event: SqsEvent) -> SqsBatchResponse {
    let total = event.records.len();
    let results = futures::future::join_all(event.records.iter().map(|m| settle(app, m))).await;
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

/// One message: run it, send its successors, and either let it be deleted or schedule it.
pub async fn settle(app: &App, msg: &SqsMessage) -> Result<Settled> {
    let body = msg.body.as_deref().ok_or_else(|| Error::validation("SQS message without a body"))?;
    // The mapping's redrive policy dead-letters the message after this delivery.
    let receives = msg.attributes.get("ApproximateReceiveCount").and_then(|n| n.parse::<u32>().ok()).unwrap_or(1);
    match app.engine.process_deferred(body, receives >= app.config.max_receives).await {
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
            app.queue.change_visibility(receipt, after.min(MAX_DELAY)).await?;
            Ok(Settled::Later)
        }
    }
}

#[cfg(test)]
mod tests;

//! The queue port, shaped after SQS standard queues: at-least-once delivery, no ordering,
//! per-message delay up to [`MAX_DELAY`], visibility timeout, and dead-lettering after a
//! number of receives.

use crate::error::Result;
use async_trait::async_trait;
use std::time::Duration;

/// SQS's longest per-message delay. Longer waits are chained by the engine.
pub const MAX_DELAY: Duration = Duration::from_secs(900);
/// Most messages one `receive` returns (SQS's limit).
pub const MAX_RECEIVE: usize = 10;
/// Largest message body (SQS allows 256 KiB; step messages are tiny).
pub const MAX_BODY_BYTES: usize = 256 * 1024;

#[derive(Clone, Debug, PartialEq)]
pub struct Message {
    pub body: String,
    pub delay: Duration,
}

impl Message {
    pub fn now(body: impl Into<String>) -> Self {
        Self { body: body.into(), delay: Duration::ZERO }
    }
    pub fn delayed(body: impl Into<String>, delay: Duration) -> Self {
        Self { body: body.into(), delay }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Received {
    pub id: String,
    /// Handle for `delete` / `change_visibility`; only valid for this receipt.
    pub receipt: String,
    pub body: String,
    /// How many times the message has been received, this time included (1 on first).
    pub receive_count: u32,
}

/// What the per-message function tells the driver (SQS event source or local poller).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Done: delete the message.
    Ack,
    /// Leave it and let it come back after this long (visibility change).
    RetryAfter(Duration),
}

/// The queue port.
///
/// Contract shared by every adapter (checked by `conformance::queue`):
/// - `send` with a delay above [`MAX_DELAY`] or a body above [`MAX_BODY_BYTES`] is
///   `Error::Validation`; a delayed message is invisible until its delay has passed.
/// - `receive` returns at most `max` (≤ [`MAX_RECEIVE`]) visible messages and hides them for
///   `visibility`; it waits up to `wait` for one to become visible.
/// - A message received more than the adapter's max-receives setting goes to the dead-letter
///   queue instead of being returned.
/// - `delete` and `change_visibility` with a stale receipt (the message was received again
///   since) do nothing and are not errors; delete is idempotent.
#[async_trait]
pub trait Queue: Send + Sync + 'static {
    async fn send(&self, msg: Message) -> Result<()>;
    /// Any number of messages; adapters chunk as their backend requires.
    async fn send_batch(&self, msgs: Vec<Message>) -> Result<()>;
    async fn receive(&self, max: usize, visibility: Duration, wait: Duration) -> Result<Vec<Received>>;
    async fn delete(&self, receipt: &str) -> Result<()>;
    async fn change_visibility(&self, receipt: &str, visibility: Duration) -> Result<()>;
    /// Messages currently in the dead-letter queue (for inspection; does not remove them).
    async fn dead_letters(&self, max: usize) -> Result<Vec<Received>>;

    /// Sends `msgs`, then deletes the message behind `receipt`: how a driver acknowledges a
    /// message whose handling produced successors. The sends must be durable before the
    /// delete; adapters that can do both in one request (SQLite) override this.
    async fn send_and_delete(&self, msgs: Vec<Message>, receipt: &str) -> Result<()> {
        if !msgs.is_empty() {
            self.send_batch(msgs).await?;
        }
        self.delete(receipt).await
    }
}

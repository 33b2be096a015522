//! SQS adapter of the queue port: a standard queue whose redrive policy moves a message to
//! its dead-letter queue after `maxReceiveCount` receives.
//!
//! SQS counts time in whole seconds, so durations are rounded *up* to the next second: a
//! delay or visibility timeout of 1.2 s becomes 2 s (a message never shows up or comes back
//! early), and a long-poll wait of 300 ms becomes 1 s (zero stays a short poll). Waits above
//! SQS's 20 s maximum are served by several long polls.
//!
//! Request counters (per API call and per billed 64 KB chunk) go to [`crate::metrics`].

use crate::error::{Error, Result};
use crate::metrics::{self, Op};
use crate::queue::{MAX_BODY_BYTES, MAX_DELAY, MAX_RECEIVE, Message, Queue, Received};
use async_trait::async_trait;
use aws_sdk_sqs::Client;
use aws_sdk_sqs::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_sqs::types::{MessageSystemAttributeName, QueueAttributeName, SendMessageBatchRequestEntry};
use std::collections::HashSet;
use std::time::{Duration, Instant};
use tokio::sync::OnceCell;

/// Longest a message may be hidden by one receive or visibility change (SQS's limit).
pub const MAX_VISIBILITY: Duration = Duration::from_secs(12 * 60 * 60);
/// SQS's longest single long poll.
pub const MAX_WAIT: Duration = Duration::from_secs(20);
/// Most entries in one batch request.
pub const MAX_BATCH: usize = 10;
/// Most payload bytes of one batch request (SQS: 256 KiB in total).
const MAX_BATCH_BYTES: usize = 256 * 1024;
/// SQS bills one request per started 64 KB chunk of payload.
const BILLING_CHUNK: usize = 64 * 1024;
/// How long dead-lettered messages are kept (SQS's maximum, 14 days).
const DLQ_RETENTION_SECS: u32 = 14 * 24 * 60 * 60;

/// The queue port on one SQS standard queue (and its dead-letter queue).
#[derive(Debug)]
pub struct SqsQueue {
    client: Client,
    url: String,
    /// The DLQ's URL: given, or found once through the queue's redrive policy.
    dlq_url: OnceCell<Option<String>>,
}

impl SqsQueue {
    /// `dlq_url` is only used by [`Queue::dead_letters`]; when `None`, the dead-letter queue
    /// is looked up in the queue's redrive policy on first use.
    pub fn new(client: Client, queue_url: impl Into<String>, dlq_url: Option<String>) -> Self {
        let cell = match dlq_url {
            Some(u) => OnceCell::new_with(Some(Some(u))),
            None => OnceCell::new(),
        };
        Self { client, url: queue_url.into(), dlq_url: cell }
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    async fn dlq_url(&self) -> Result<Option<String>> {
        self.dlq_url
            .get_or_try_init(|| async {
                metrics::count(Op::SqsOther);
                metrics::count(Op::SqsBilledRequests);
                let out = self
                    .client
                    .get_queue_attributes()
                    .queue_url(&self.url)
                    .attribute_names(QueueAttributeName::RedrivePolicy)
                    .send()
                    .await
                    .map_err(|e| sdk_error("GetQueueAttributes", e))?;
                let policy = out.attributes().and_then(|a| a.get(&QueueAttributeName::RedrivePolicy));
                let Some(arn) = policy
                    .and_then(|p| serde_json::from_str::<serde_json::Value>(p).ok())
                    .and_then(|p| p.get("deadLetterTargetArn").and_then(|a| a.as_str()).map(str::to_string))
                else {
                    return Ok(None);
                };
                let name = arn.rsplit(':').next().unwrap_or(&arn).to_string();
                metrics::count(Op::SqsOther);
                metrics::count(Op::SqsBilledRequests);
                let out = self
                    .client
                    .get_queue_url()
                    .queue_name(name)
                    .send()
                    .await
                    .map_err(|e| sdk_error("GetQueueUrl", e))?;
                Ok(out.queue_url().map(str::to_string))
            })
            .await
            .cloned()
    }

    /// Deletes up to [`MAX_BATCH`] messages per request, as the Lambda event source mapping
    /// does after a batch; stale receipts are skipped like in [`Queue::delete`].
    pub async fn delete_batch(&self, receipts: &[String]) -> Result<()> {
        for chunk in receipts.chunks(MAX_BATCH) {
            let entries = chunk
                .iter()
                .enumerate()
                .map(|(i, r)| {
                    aws_sdk_sqs::types::DeleteMessageBatchRequestEntry::builder()
                        .id(i.to_string())
                        .receipt_handle(r)
                        .build()
                        .map_err(|e| Error::Internal(format!("sqs DeleteMessageBatch entry: {e}")))
                })
                .collect::<Result<Vec<_>>>()?;
            metrics::count(Op::SqsDeleteMessageBatch);
            metrics::count(Op::SqsBilledRequests);
            let out = self
                .client
                .delete_message_batch()
                .queue_url(&self.url)
                .set_entries(Some(entries))
                .send()
                .await
                .map_err(|e| sdk_error("DeleteMessageBatch", e))?;
            if let Some(f) = out.failed().iter().find(|f| !f.code().contains("ReceiptHandleIsInvalid")) {
                return Err(Error::Internal(format!(
                    "sqs DeleteMessageBatch: {}: {}",
                    f.code(),
                    f.message().unwrap_or("")
                )));
            }
        }
        Ok(())
    }

    /// One `ReceiveMessage` call; `wait` is at most [`MAX_WAIT`].
    async fn receive_once(&self, url: &str, max: usize, visibility: i32, wait: i32) -> Result<Vec<Received>> {
        metrics::count(Op::SqsReceiveMessage);
        let out = self
            .client
            .receive_message()
            .queue_url(url)
            .max_number_of_messages(max as i32)
            .visibility_timeout(visibility)
            .wait_time_seconds(wait)
            .message_system_attribute_names(MessageSystemAttributeName::ApproximateReceiveCount)
            .send()
            .await
            .map_err(|e| sdk_error("ReceiveMessage", e))?;
        let mut got = Vec::with_capacity(out.messages().len());
        let mut bytes = 0;
        for m in out.messages() {
            let (Some(id), Some(receipt)) = (m.message_id(), m.receipt_handle()) else {
                return Err(Error::internal("sqs ReceiveMessage: a message without id or receipt handle"));
            };
            let body = m.body().unwrap_or_default().to_string();
            bytes += body.len();
            let receive_count = m
                .attributes()
                .and_then(|a| a.get(&MessageSystemAttributeName::ApproximateReceiveCount))
                .and_then(|n| n.parse().ok())
                .unwrap_or(1);
            got.push(Received { id: id.to_string(), receipt: receipt.to_string(), body, receive_count });
        }
        metrics::add(Op::SqsBilledRequests, billed(bytes));
        Ok(got)
    }
}

/// Creates the queue `name` and its dead-letter queue `name-dlq` (redrive after
/// `max_receives` receives) unless they exist, and returns their URLs. For development and
/// tests; on AWS the template creates them.
pub async fn create_queues(client: &Client, name: &str, max_receives: u32) -> Result<(String, String)> {
    let dlq_name = format!("{name}-dlq");
    metrics::count(Op::SqsOther);
    let dlq = client
        .create_queue()
        .queue_name(&dlq_name)
        .attributes(QueueAttributeName::MessageRetentionPeriod, DLQ_RETENTION_SECS.to_string())
        .send()
        .await
        .map_err(|e| sdk_error("CreateQueue", e))?;
    let dlq_url = dlq.queue_url().ok_or_else(|| Error::internal("sqs CreateQueue: no queue URL"))?.to_string();
    metrics::count(Op::SqsOther);
    let attrs = client
        .get_queue_attributes()
        .queue_url(&dlq_url)
        .attribute_names(QueueAttributeName::QueueArn)
        .send()
        .await
        .map_err(|e| sdk_error("GetQueueAttributes", e))?;
    let arn = attrs
        .attributes()
        .and_then(|a| a.get(&QueueAttributeName::QueueArn))
        .ok_or_else(|| Error::internal("sqs GetQueueAttributes: no QueueArn"))?;
    let policy = serde_json::json!({"deadLetterTargetArn": arn, "maxReceiveCount": max_receives.max(1)}).to_string();
    metrics::count(Op::SqsOther);
    let created = client
        .create_queue()
        .queue_name(name)
        .attributes(QueueAttributeName::RedrivePolicy, policy.clone())
        .send()
        .await;
    let url = match created {
        Ok(out) => out.queue_url().ok_or_else(|| Error::internal("sqs CreateQueue: no queue URL"))?.to_string(),
        // It exists with other attributes: keep it and bring its redrive policy up to date.
        Err(e) if e.code().is_some_and(|c| c.contains("QueueAlreadyExists") || c.contains("QueueNameExists")) => {
            metrics::count(Op::SqsOther);
            let url = client
                .get_queue_url()
                .queue_name(name)
                .send()
                .await
                .map_err(|e| sdk_error("GetQueueUrl", e))?
                .queue_url()
                .ok_or_else(|| Error::internal("sqs GetQueueUrl: no queue URL"))?
                .to_string();
            metrics::count(Op::SqsOther);
            client
                .set_queue_attributes()
                .queue_url(&url)
                .attributes(QueueAttributeName::RedrivePolicy, policy)
                .send()
                .await
                .map_err(|e| sdk_error("SetQueueAttributes", e))?;
            url
        }
        Err(e) => return Err(sdk_error("CreateQueue", e)),
    };
    Ok((url, dlq_url))
}

fn sdk_error<E, R>(op: &str, e: SdkError<E, R>) -> Error
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
{
    let throttled = e.code().is_some_and(|c| c.contains("Throttl") || c.contains("RequestThrottled"));
    let what = if throttled { " (throttled; retryable)" } else { "" };
    Error::Internal(format!("sqs {op}{what}: {}", DisplayErrorContext(e)))
}

/// A receipt that no longer controls its message (received again since, deleted, or
/// expired): the port makes that a no-op.
fn stale_receipt<E: ProvideErrorMetadata>(e: &E) -> bool {
    let code = e.code().unwrap_or("");
    let msg = e.message().unwrap_or("").to_ascii_lowercase();
    code.contains("ReceiptHandleIsInvalid")
        || code.contains("MessageNotInflight")
        || (code.contains("InvalidParameterValue") && msg.contains("receipt"))
}

fn billed(bytes: usize) -> u64 {
    bytes.div_ceil(BILLING_CHUNK).max(1) as u64
}

/// Whole seconds, rounded up.
fn secs_up(d: Duration) -> i32 {
    let s = d.as_secs() + u64::from(d.subsec_nanos() > 0);
    i32::try_from(s).unwrap_or(i32::MAX)
}

fn validate_message(msg: &Message) -> Result<()> {
    if msg.delay > MAX_DELAY {
        return Err(Error::validation(format!("message delay above {} s", MAX_DELAY.as_secs())));
    }
    if msg.body.is_empty() {
        return Err(Error::validation("message body must not be empty"));
    }
    if msg.body.len() > MAX_BODY_BYTES {
        return Err(Error::validation(format!("message body above {MAX_BODY_BYTES} bytes")));
    }
    let allowed = |c: char| matches!(c, '\t' | '\n' | '\r' | '\u{20}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'..='\u{10FFFF}');
    if !msg.body.chars().all(allowed) {
        return Err(Error::validation("message body holds characters SQS does not accept"));
    }
    Ok(())
}

fn validate_visibility(visibility: Duration) -> Result<()> {
    if visibility > MAX_VISIBILITY {
        return Err(Error::validation(format!("visibility timeout above {} s", MAX_VISIBILITY.as_secs())));
    }
    Ok(())
}

/// Splits messages into batch requests of at most [`MAX_BATCH`] entries and
/// [`MAX_BATCH_BYTES`] of bodies.
fn chunks(msgs: Vec<Message>) -> Vec<Vec<Message>> {
    let mut out: Vec<Vec<Message>> = Vec::new();
    let mut bytes = 0;
    for m in msgs {
        let fits = out.last().is_some_and(|c| c.len() < MAX_BATCH && bytes + m.body.len() <= MAX_BATCH_BYTES);
        if !fits {
            out.push(Vec::new());
            bytes = 0;
        }
        bytes += m.body.len();
        out.last_mut().expect("a chunk was just pushed").push(m);
    }
    out
}

#[async_trait]
impl Queue for SqsQueue {
    async fn send(&self, msg: Message) -> Result<()> {
        metrics::count(Op::QueueSend);
        validate_message(&msg)?;
        metrics::count(Op::SqsSendMessage);
        metrics::add(Op::SqsBilledRequests, billed(msg.body.len()));
        self.client
            .send_message()
            .queue_url(&self.url)
            .message_body(msg.body)
            .delay_seconds(secs_up(msg.delay))
            .send()
            .await
            .map_err(|e| sdk_error("SendMessage", e))?;
        Ok(())
    }

    async fn send_batch(&self, msgs: Vec<Message>) -> Result<()> {
        metrics::count(Op::QueueSendBatch);
        for m in &msgs {
            validate_message(m)?;
        }
        for chunk in chunks(msgs) {
            let mut pending: Vec<(usize, Message)> = chunk.into_iter().enumerate().collect();
            // Entries SQS refuses for a transient reason are sent again, once.
            for attempt in 0..2 {
                let entries = pending
                    .iter()
                    .map(|(i, m)| {
                        SendMessageBatchRequestEntry::builder()
                            .id(i.to_string())
                            .message_body(m.body.clone())
                            .delay_seconds(secs_up(m.delay))
                            .build()
                            .map_err(|e| Error::Internal(format!("sqs SendMessageBatch entry: {e}")))
                    })
                    .collect::<Result<Vec<_>>>()?;
                metrics::count(Op::SqsSendMessageBatch);
                metrics::add(Op::SqsBilledRequests, billed(pending.iter().map(|(_, m)| m.body.len()).sum()));
                let out = self
                    .client
                    .send_message_batch()
                    .queue_url(&self.url)
                    .set_entries(Some(entries))
                    .send()
                    .await
                    .map_err(|e| sdk_error("SendMessageBatch", e))?;
                let failed: HashSet<&str> = out.failed().iter().map(|f| f.id()).collect();
                if failed.is_empty() {
                    break;
                }
                if attempt == 1 || out.failed().iter().any(|f| f.sender_fault()) {
                    let f = &out.failed()[0];
                    return Err(Error::Internal(format!(
                        "sqs SendMessageBatch: {} of {} entries failed ({}: {})",
                        failed.len(),
                        pending.len(),
                        f.code(),
                        f.message().unwrap_or("")
                    )));
                }
                pending.retain(|(i, _)| failed.contains(i.to_string().as_str()));
            }
        }
        Ok(())
    }

    async fn receive(&self, max: usize, visibility: Duration, wait: Duration) -> Result<Vec<Received>> {
        metrics::count(Op::QueueReceive);
        if max == 0 || max > MAX_RECEIVE {
            return Err(Error::validation(format!("receive takes 1..={MAX_RECEIVE} messages")));
        }
        validate_visibility(visibility)?;
        let deadline = Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let poll = secs_up(left.min(MAX_WAIT));
            let got = self.receive_once(&self.url, max, secs_up(visibility), poll).await?;
            if !got.is_empty() || Instant::now() >= deadline || poll == 0 {
                return Ok(got);
            }
        }
    }

    async fn delete(&self, receipt: &str) -> Result<()> {
        metrics::count(Op::QueueDelete);
        metrics::count(Op::SqsDeleteMessage);
        metrics::count(Op::SqsBilledRequests);
        match self.client.delete_message().queue_url(&self.url).receipt_handle(receipt).send().await {
            Ok(_) => Ok(()),
            Err(e) if stale_receipt(&e) => Ok(()),
            Err(e) => Err(sdk_error("DeleteMessage", e)),
        }
    }

    async fn change_visibility(&self, receipt: &str, visibility: Duration) -> Result<()> {
        metrics::count(Op::QueueChangeVisibility);
        validate_visibility(visibility)?;
        metrics::count(Op::SqsChangeMessageVisibility);
        metrics::count(Op::SqsBilledRequests);
        let r = self
            .client
            .change_message_visibility()
            .queue_url(&self.url)
            .receipt_handle(receipt)
            .visibility_timeout(secs_up(visibility))
            .send()
            .await;
        match r {
            Ok(_) => Ok(()),
            Err(e) if stale_receipt(&e) => Ok(()),
            Err(e) => Err(sdk_error("ChangeMessageVisibility", e)),
        }
    }

    /// SQS cannot peek: this receives from the dead-letter queue with a zero visibility
    /// timeout, so the messages stay where they are (each look counts as a receive there).
    async fn dead_letters(&self, max: usize) -> Result<Vec<Received>> {
        let Some(dlq) = self.dlq_url().await? else {
            return Ok(Vec::new());
        };
        let mut seen = HashSet::new();
        let mut out = Vec::new();
        let rounds = max.div_ceil(MAX_RECEIVE) + 2;
        for _ in 0..rounds {
            if out.len() >= max {
                break;
            }
            let got = self.receive_once(&dlq, MAX_RECEIVE.min(max - out.len()).max(1), 0, 0).await?;
            let before = out.len();
            for m in got {
                if seen.insert(m.id.clone()) {
                    out.push(m);
                }
            }
            if out.len() == before {
                break;
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_round_up_to_whole_seconds() {
        assert_eq!(secs_up(Duration::ZERO), 0);
        assert_eq!(secs_up(Duration::from_millis(1)), 1);
        assert_eq!(secs_up(Duration::from_millis(1000)), 1);
        assert_eq!(secs_up(Duration::from_millis(1200)), 2);
        assert_eq!(secs_up(MAX_DELAY), 900);
    }

    #[test]
    fn batches_hold_ten_entries_and_256_kib_at_most() {
        let small: Vec<Message> = (0..25).map(|i| Message::now(format!("m{i}"))).collect();
        let sizes: Vec<usize> = chunks(small).iter().map(Vec::len).collect();
        assert_eq!(sizes, [10, 10, 5]);
        let big: Vec<Message> = (0..3).map(|_| Message::now("x".repeat(100 * 1024))).collect();
        let sizes: Vec<usize> = chunks(big).iter().map(Vec::len).collect();
        assert_eq!(sizes, [2, 1]);
        assert!(chunks(Vec::new()).is_empty());
    }

    #[test]
    fn billing_counts_64_kb_chunks() {
        assert_eq!((billed(0), billed(65536), billed(65537), billed(256 * 1024)), (1, 1, 2, 4));
    }
}

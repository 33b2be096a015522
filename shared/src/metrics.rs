//! Request counters per backend operation kind (DESIGN.md §7), so the cost of a step can be
//! computed from a test run. Adapters bump them; anyone can snapshot them.
//!
//! Two families: the port operations every adapter counts (`store.*`, `queue.*`), and the
//! billable AWS requests and capacity units the DynamoDB/SQS/KMS adapters count (`ddb.*`,
//! `sqs.*`, `kms.*`, `s3.*`), which is what the AWS bill is made of.

use std::sync::atomic::{AtomicU64, Ordering};

macro_rules! ops {
    ($($(#[$doc:meta])* $variant:ident => $name:literal),* $(,)?) => {
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum Op {
            $($(#[$doc])* $variant),*
        }

        impl Op {
            pub const ALL: &'static [Op] = &[$(Op::$variant),*];
            pub fn name(self) -> &'static str {
                match self {
                    $(Op::$variant => $name),*
                }
            }
        }
    };
}

ops! {
    StoreGet => "store.get",
    /// One `get_many` call, however many keys.
    StoreGetMany => "store.get_many",
    StorePut => "store.put",
    StoreUpdate => "store.update",
    StoreDelete => "store.delete",
    StoreTransact => "store.transact",
    StoreQuery => "store.query",
    QueueSend => "queue.send",
    QueueSendBatch => "queue.send_batch",
    QueueReceive => "queue.receive",
    QueueDelete => "queue.delete",
    QueueChangeVisibility => "queue.change_visibility",
    // DynamoDB requests, one per API call (failed conditional writes included: they are billed).
    DdbGetItem => "ddb.GetItem",
    DdbPutItem => "ddb.PutItem",
    DdbUpdateItem => "ddb.UpdateItem",
    DdbDeleteItem => "ddb.DeleteItem",
    DdbTransactWriteItems => "ddb.TransactWriteItems",
    DdbQuery => "ddb.Query",
    DdbBatchGetItem => "ddb.BatchGetItem",
    /// Items written or checked by TransactWriteItems calls.
    DdbTransactItems => "ddb.transact_items",
    DdbOther => "ddb.other",
    /// Write request units (on-demand billing unit): 1 per started KB per item written,
    /// doubled inside a transaction.
    DdbWriteUnits => "ddb.write_units",
    /// Read request units: 1 per started 4 KB of a strongly consistent read (a query sums
    /// its items' sizes first).
    DdbReadUnits => "ddb.read_units",
    /// Bytes of the items DynamoDB read (what read units are billed on).
    DdbReadBytes => "ddb.read_bytes",
    // SQS requests (a batch call is one request).
    SqsSendMessage => "sqs.SendMessage",
    SqsSendMessageBatch => "sqs.SendMessageBatch",
    SqsReceiveMessage => "sqs.ReceiveMessage",
    SqsDeleteMessage => "sqs.DeleteMessage",
    SqsDeleteMessageBatch => "sqs.DeleteMessageBatch",
    SqsChangeMessageVisibility => "sqs.ChangeMessageVisibility",
    SqsOther => "sqs.other",
    /// Billed SQS requests: every request counts once per started 64 KB of payload.
    SqsBilledRequests => "sqs.billed_requests",
    KmsGenerateDataKey => "kms.GenerateDataKey",
    KmsDecrypt => "kms.Decrypt",
    KmsOther => "kms.other",
    // S3: the DynamoDB adapter's claim check for large values (`adapters::s3`).
    S3PutObject => "s3.PutObject",
    S3GetObject => "s3.GetObject",
    S3Other => "s3.other",
    /// Bytes written to S3 (what storage is billed on, per month).
    S3PutBytes => "s3.put_bytes",
}

const N: usize = Op::ALL.len();
static COUNTS: [AtomicU64; N] = [const { AtomicU64::new(0) }; N];

pub fn count(op: Op) {
    add(op, 1);
}

pub fn add(op: Op, n: u64) {
    COUNTS[op as usize].fetch_add(n, Ordering::Relaxed);
}

pub fn get(op: Op) -> u64 {
    COUNTS[op as usize].load(Ordering::Relaxed)
}

/// Current totals, by operation kind.
pub fn snapshot() -> Vec<(Op, u64)> {
    Op::ALL.iter().map(|&op| (op, get(op))).collect()
}

/// Counts since `before` (a [`snapshot`]), by operation kind.
pub fn since(before: &[(Op, u64)]) -> Vec<(Op, u64)> {
    before.iter().map(|&(op, n)| (op, get(op).saturating_sub(n))).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ops_index_their_own_counter() {
        for (i, op) in Op::ALL.iter().enumerate() {
            assert_eq!(*op as usize, i);
        }
        let before = snapshot();
        add(Op::DdbWriteUnits, 3);
        count(Op::SqsOther);
        let d = since(&before);
        assert!(d.iter().any(|&(op, n)| op == Op::DdbWriteUnits && n >= 3));
        assert!(d.iter().any(|&(op, n)| op == Op::SqsOther && n >= 1));
    }
}

//! Adapters of the store and queue ports.
//!
//! - [`sqlite`]: one SQLite file (WAL) holding both the item table and the durable queue
//!   table, for the local deployment.
//! - [`http`]: outbound HTTP for callbacks (the `callbacks::Transport` port).
//! - [`dynamo`] and [`sqs`]: one DynamoDB table and an SQS standard queue with its
//!   dead-letter queue, for the AWS deployment (wired up in [`crate::aws`]); [`s3`] holds
//!   the DynamoDB adapter's large values.

pub mod dynamo;
pub mod http;
pub mod s3;
pub mod sqlite;
pub mod sqs;

pub use dynamo::DynamoStore;
pub use sqlite::{Sqlite, SqliteQueue, SqliteStore};
pub use sqs::SqsQueue;

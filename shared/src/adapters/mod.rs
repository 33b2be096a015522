//! Adapters of the store and queue ports.
//!
//! - [`sqlite`]: one SQLite file (WAL) holding both the item table and the durable queue
//!   table, for the local deployment.
//! - [`http`]: outbound HTTP for callbacks (the `callbacks::Transport` port).

pub mod http;
pub mod sqlite;

pub use sqlite::{Sqlite, SqliteQueue, SqliteStore};

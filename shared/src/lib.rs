//! Baton: a durable workflow engine for AI + human work.
//!
//! `store` and `queue` are the ports; `adapters` implement them; `engine` runs workflows
//! against the ports only; `api` is the HTTP surface (axum routers) every deployment mounts.

pub mod accounts;
pub mod adapters;
pub mod ai;
pub mod api;
pub mod app;
pub mod apps;
pub mod aws;
pub mod blocks;
pub mod callbacks;
pub mod config;
pub mod connections;
pub mod duration;
pub mod engine;
pub mod error;
pub mod graph;
pub mod ids;
pub mod keys;
pub mod metrics;
pub mod model;
pub mod net_guard;
pub mod poller;
pub mod queue;
pub mod retention;
pub mod secrets;
pub mod signature;
pub mod store;
pub mod template;
pub mod triggers;
pub mod webhooks;
pub mod workflows;

// Test doubles and the adapters' conformance suite: for this crate's own tests and, with the
// `test-support` feature, for the workspace's `tests/` crate; not part of what the functions
// link or of the library's surface.
#[cfg(any(test, feature = "test-support"))]
pub mod conformance;
#[cfg(any(test, feature = "test-support"))]
pub mod testing;

pub use error::{Error, Result};

//! Baton: a durable workflow engine for AI + human work.
//!
//! `store` and `queue` are the ports; `adapters` implement them; `engine` runs workflows
//! against the ports only; `api` is the HTTP surface (axum routers) every deployment mounts.

pub mod adapters;
pub mod error;
pub mod ids;
pub mod metrics;
pub mod queue;
pub mod store;
pub mod template;

#[doc(hidden)]
pub mod conformance;

pub use error::{Error, Result};

//! Adapters of the store and queue ports.

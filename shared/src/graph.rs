//! A workflow version's graph: blocks, edges and their retry policies, as validated by
//! `crate::model` and run by the engine. Types and lookups only, so every module can use
//! them without depending on the validation (which calls into the blocks and webhooks).

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RetryPolicy {
    #[serde(default = "one")]
    pub max_attempts: u32,
    #[serde(default = "default_backoff")]
    pub backoff_ms: u64,
    #[serde(default = "default_max_backoff")]
    pub max_backoff_ms: u64,
}
fn one() -> u32 {
    1
}
pub(crate) fn default_backoff() -> u64 {
    1000
}
pub(crate) fn default_max_backoff() -> u64 {
    300_000
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Block {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default = "empty_obj")]
    pub config: Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<RetryPolicy>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    /// An `action` step's catalog entry (`"stripe.createInvoice"`), beside `type` as seed
    /// 003 writes it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<String>,
}
fn empty_obj() -> Value {
    json!({})
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Edge {
    pub from: String,
    pub to: String,
    /// A safe expression; the edge is taken when it is truthy. Out of a condition block the
    /// first true edge wins and an edge without `when` is the default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub when: Option<String>,
    /// `"error"`: taken only when `from` fails, instead of failing the run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on: Option<String>,
}

impl Edge {
    pub fn is_error(&self) -> bool {
        self.on.as_deref() == Some("error")
    }
}

/// A validated graph, ready to run: block types canonical, edges checked, acyclic.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Graph {
    pub blocks: Vec<Block>,
    pub edges: Vec<Edge>,
}

impl Graph {
    pub fn block(&self, id: &str) -> Option<&Block> {
        self.blocks.iter().find(|b| b.id == id)
    }
    pub fn outgoing<'a>(&'a self, id: &'a str) -> impl Iterator<Item = &'a Edge> + 'a {
        self.edges.iter().filter(move |e| e.from == id)
    }
    pub fn incoming<'a>(&'a self, id: &'a str) -> impl Iterator<Item = &'a Edge> + 'a {
        self.edges.iter().filter(move |e| e.to == id)
    }
    /// Blocks with no incoming edge: where a run starts.
    pub fn entries(&self) -> Vec<&Block> {
        self.blocks.iter().filter(|b| self.incoming(&b.id).next().is_none()).collect()
    }
    /// The block that runs once per item of `split`, if `id` is one.
    pub fn split_of(&self, id: &str) -> Option<&Block> {
        self.incoming(id).filter_map(|e| self.block(&e.from)).find(|b| b.kind == "split")
    }
}

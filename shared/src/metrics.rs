//! Request counters per backend operation kind (DESIGN.md §7), so the cost of a step can be
//! computed from a test run. Adapters bump them; anyone can snapshot them.

use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    StoreGet,
    StorePut,
    StoreUpdate,
    StoreDelete,
    StoreTransact,
    StoreQuery,
    QueueSend,
    QueueSendBatch,
    QueueReceive,
    QueueDelete,
    QueueChangeVisibility,
}

impl Op {
    pub const ALL: [Op; 11] = [
        Op::StoreGet,
        Op::StorePut,
        Op::StoreUpdate,
        Op::StoreDelete,
        Op::StoreTransact,
        Op::StoreQuery,
        Op::QueueSend,
        Op::QueueSendBatch,
        Op::QueueReceive,
        Op::QueueDelete,
        Op::QueueChangeVisibility,
    ];
    pub fn name(self) -> &'static str {
        match self {
            Op::StoreGet => "store.get",
            Op::StorePut => "store.put",
            Op::StoreUpdate => "store.update",
            Op::StoreDelete => "store.delete",
            Op::StoreTransact => "store.transact",
            Op::StoreQuery => "store.query",
            Op::QueueSend => "queue.send",
            Op::QueueSendBatch => "queue.send_batch",
            Op::QueueReceive => "queue.receive",
            Op::QueueDelete => "queue.delete",
            Op::QueueChangeVisibility => "queue.change_visibility",
        }
    }
}

static COUNTS: [AtomicU64; 11] = [const { AtomicU64::new(0) }; 11];

pub fn count(op: Op) {
    COUNTS[op as usize].fetch_add(1, Ordering::Relaxed);
}

/// Current totals, by operation kind.
pub fn snapshot() -> Vec<(Op, u64)> {
    Op::ALL.iter().map(|&op| (op, COUNTS[op as usize].load(Ordering::Relaxed))).collect()
}

//! The local queue driver: a pool of workers that receive step messages and hand each to
//! the same per-message function the SQS event source mapping drives in AWS.

use crate::app::AppState;
use crate::queue::{MAX_RECEIVE, Outcome};
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tracing::{info, warn};

/// Runs `workers` pollers until `shutdown` turns true. A worker finishes the message it is
/// on; messages it received but had not started are released back to the queue at once.
pub async fn run(app: AppState, workers: usize, mut shutdown: watch::Receiver<bool>) {
    let mut set = JoinSet::new();
    for n in 0..workers.max(1) {
        let app = app.clone();
        let shutdown = shutdown.clone();
        set.spawn(async move { worker(app, n, shutdown).await });
    }
    let _ = shutdown.wait_for(|s| *s).await;
    while set.join_next().await.is_some() {}
    info!("worker pool stopped");
}

async fn worker(app: AppState, n: usize, shutdown: watch::Receiver<bool>) {
    let lease = app.config.lease;
    loop {
        if *shutdown.borrow() {
            return;
        }
        let msgs = match app.queue.receive(MAX_RECEIVE, lease, Duration::from_millis(500)).await {
            Ok(m) => m,
            Err(e) => {
                warn!(worker = n, error = %e, "receive failed");
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        let mut msgs = msgs.into_iter();
        while let Some(m) = msgs.next() {
            if *shutdown.borrow() {
                for rest in std::iter::once(m).chain(msgs.by_ref()) {
                    let _ = app.queue.change_visibility(&rest.receipt, Duration::ZERO).await;
                }
                return;
            }
            let last = m.receive_count >= app.config.max_receives;
            let res = match app.engine.process_deferred(&m.body, last).await {
                (Outcome::Ack, successors) => app.queue.send_and_delete(successors, &m.receipt).await,
                (Outcome::RetryAfter(d), successors) => {
                    let sent = if successors.is_empty() { Ok(()) } else { app.queue.send_batch(successors).await };
                    match sent {
                        Ok(()) => app.queue.change_visibility(&m.receipt, d.min(crate::queue::MAX_DELAY)).await,
                        Err(e) => Err(e),
                    }
                }
            };
            if let Err(e) = res {
                warn!(worker = n, error = %e, "could not settle message; it will come back");
            }
        }
    }
}

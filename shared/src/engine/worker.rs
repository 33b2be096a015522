//! The per-message function: the same code behind the SQS event source mapping, the local
//! poller and sync execute.

use super::plan::{Plan, event_write};
use super::snapshot::{Snapshot, is_lazy};
use super::split::ItemCommit;
use super::state::{RunStatus, StepStatus};
use super::{Engine, Msg, StepHint, now_ms};
use crate::blocks::{self, BlockContext, Outcome as BlockOutcome, StepError};
use crate::callbacks;
use crate::error::{Error, Result};
use crate::keys;
use crate::model::Block;
use crate::queue::{MAX_DELAY, Outcome};
use crate::store::{Cond, Item, MAX_PAYLOAD_BYTES, Update, Write};
use serde_json::{Value, json};
use std::time::Duration;
use tokio::time::Instant;
use tracing::{Instrument, debug, error, info_span, warn};

/// How often a commit is re-planned after losing a race on a join counter or the run item.
const MAX_COMMIT_TRIES: usize = 64;

/// Time kept back from an invocation's deadline for the commit after the block.
const DEADLINE_MARGIN: Duration = Duration::from_secs(2);

/// How a message reached the engine.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Delivery {
    /// The caller drives this run itself (sync execute) and no queue message names its new
    /// steps.
    pub inline: bool,
    /// The message's last delivery before the dead-letter queue.
    pub last: bool,
    /// When the invocation handling it ends (a Lambda function's deadline).
    pub deadline: Option<Instant>,
}

/// What handling one message produced: what the driver does with the message, and the
/// step messages to send before it acknowledges it.
#[derive(Debug, Default)]
pub struct Handled {
    pub outcome: Option<Outcome>,
    pub publish: Vec<Msg>,
}

impl Handled {
    pub(crate) fn ack(publish: Vec<Msg>) -> Self {
        Handled { outcome: Some(Outcome::Ack), publish }
    }
    /// Acknowledge, nothing to publish.
    pub(crate) fn done() -> Self {
        Self::ack(Vec::new())
    }
    pub(crate) fn retry(after: Duration) -> Self {
        Handled { outcome: Some(Outcome::RetryAfter(after)), publish: Vec::new() }
    }
}

/// What the step's own item must still look like for a commit to be ours to make.
#[derive(Clone, Debug)]
pub(crate) enum Guard {
    Claimed(String),
    /// A step of a run driven inline (sync execute) that no message names yet: nobody else
    /// can be running it, so the claim write is folded into the commit's condition.
    Unclaimed {
        attempt: i64,
        started_at: i64,
        /// The step has no item yet (a chain commit named it): the commit creates it.
        lazy: bool,
    },
    Waiting(String),
    Sleeping,
    /// A split's collection step, still counting its items; `complete`: the count it must
    /// have reached (making the collection), `None` for failing it.
    Collecting {
        complete: Option<i64>,
    },
}

impl Guard {
    pub(crate) fn cond(&self) -> Cond {
        match self {
            Guard::Claimed(token) => {
                Cond::And(vec![Cond::eq("status", StepStatus::Running), Cond::eq("claim", token.as_str())])
            }
            Guard::Waiting(task) => {
                Cond::And(vec![Cond::eq("status", StepStatus::WaitingHuman), Cond::eq("task_id", task.as_str())])
            }
            Guard::Sleeping => Cond::eq("status", StepStatus::Sleeping),
            Guard::Collecting { complete: None } => Cond::eq("status", StepStatus::Collecting),
            Guard::Collecting { complete: Some(n) } => {
                Cond::And(vec![Cond::eq("status", StepStatus::Collecting), Cond::eq("done", *n)])
            }
            Guard::Unclaimed { lazy: true, .. } => Cond::NotExists,
            Guard::Unclaimed { attempt, .. } => {
                Cond::And(vec![Cond::eq("status", StepStatus::Pending), Cond::eq("attempt", *attempt)])
            }
        }
    }
    /// Adds what the skipped claim would have written.
    pub(crate) fn stamp(&self, u: Update, key: &str) -> Update {
        match self {
            Guard::Unclaimed { attempt, started_at, lazy } => {
                let u = u.set("attempt", attempt + 1).set("started_at", *started_at);
                if *lazy { materialize(u, key, *started_at) } else { u }
            }
            _ => u,
        }
    }
    pub(crate) fn holds(&self, snap: &Snapshot, key: &str) -> bool {
        let Some(step) = snap.steps.get(key) else { return false };
        let store_item = (!is_lazy(step)).then_some(step);
        crate::store::eval_cond(&self.cond(), store_item)
            && match self {
                Guard::Waiting(task) => snap.tasks.get(task).and_then(|t| t.str("status")) == Some("open"),
                _ => true,
            }
    }
}

#[derive(Clone, Debug)]
pub(crate) enum Finish {
    Completed { output: Value, status: Option<u16>, headers: Option<Value> },
    Failed(StepError),
}

impl Engine {
    /// Handles one queue message body and sends the successor messages it produced.
    /// Returns what the driver must do with the message.
    pub async fn process(&self, body: &str) -> Outcome {
        let handled = self.handle_message_with(body, Delivery::default()).await;
        if !handled.publish.is_empty() {
            let msgs = handled.publish.into_iter().map(|m| (m, Duration::ZERO)).collect();
            if let Err(e) = self.send(msgs).await {
                warn!(error = %e, "could not publish successors; the message will come back");
                return Outcome::RetryAfter(Duration::from_secs(1));
            }
        }
        handled.outcome.unwrap_or(Outcome::Ack)
    }

    /// Handles one message and returns its successors encoded for the queue, for drivers
    /// that send them together with the acknowledgement. `last`: the queue dead-letters the
    /// message if it is not acknowledged now (its receive count reached the maximum).
    pub async fn process_deferred(&self, body: &str, last: bool) -> (Outcome, Vec<crate::queue::Message>) {
        self.process_until(body, last, None).await
    }

    /// [`process_deferred`](Self::process_deferred) within an invocation that ends at
    /// `deadline` (a Lambda function's): no block runs past it, and a block that asks for more
    /// time than is left goes to the long-step queue when there is one.
    pub async fn process_until(
        &self,
        body: &str,
        last: bool,
        deadline: Option<Instant>,
    ) -> (Outcome, Vec<crate::queue::Message>) {
        let handled = self.handle_message_with(body, Delivery { last, deadline, ..Delivery::default() }).await;
        let msgs = handled.publish.iter().map(|m| crate::queue::Message::now(m.encode())).collect();
        (handled.outcome.unwrap_or(Outcome::Ack), msgs)
    }

    /// Handles one message without sending its successors (sync execute runs them inline).
    pub async fn handle_message(&self, body: &str) -> Handled {
        self.handle_message_with(body, Delivery::default()).await
    }

    pub(crate) async fn handle_message_with(&self, body: &str, d: Delivery) -> Handled {
        let last = d.last;
        let msg: Msg = match serde_json::from_str(body) {
            Ok(m) => m,
            Err(e) => {
                warn!(error = %e, body = %body.chars().take(200).collect::<String>(), "dropping unreadable message");
                return Handled::ack(Vec::new());
            }
        };
        let span = match &msg {
            Msg::Step { r, s, .. } => info_span!("step", run_id = %r, step_key = %s),
            Msg::TaskTimeout { r, k } => info_span!("task_timeout", run_id = %r, task_id = %k),
            Msg::Sweep { r } => info_span!("sweep", run_id = %r),
            Msg::Callback { r, d, n } => info_span!("callback", run_id = %r, delivery_id = %d, attempt = n + 1),
            Msg::Fan { r, s, f } => info_span!("fan_out", run_id = %r, step_key = %s, from = f),
            Msg::Child { r } => info_span!("child_ended", run_id = %r),
        };
        let res = async {
            match &msg {
                Msg::Step { r, s, p } => self.handle_step(r, s, p.as_ref(), d).await,
                Msg::TaskTimeout { r, k } => self.handle_task_timeout(r, k).await,
                Msg::Sweep { r } => self.handle_sweep(r).await,
                Msg::Callback { r, d, n } => self.handle_callback(r, d, *n).await,
                Msg::Fan { r, s, f } => self.handle_fan(r, s, *f).await,
                Msg::Child { r } => self.handle_child_end(r).await,
            }
        }
        .instrument(span)
        .await;
        match res {
            Ok(h) => h,
            Err(e) if last => {
                error!(error = %e, run_id = %msg.run_id(), "message failed on its last delivery; it goes to the dead-letter queue");
                Handled::retry(Duration::from_secs(2))
            }
            Err(e) => {
                warn!(error = %e, run_id = %msg.run_id(), "message failed; it will be retried");
                Handled::retry(Duration::from_secs(2))
            }
        }
    }

    /// What a step message for `key` reads: with the run's workflow version known (`hint`),
    /// only what the step needs ([`Snapshot::load_step`]), in one request; else the whole run.
    pub(crate) async fn step_snapshot(
        &self,
        run_id: &str,
        key: &str,
        hint: Option<&StepHint>,
    ) -> Result<Option<Snapshot>> {
        if let Some(h) = hint {
            match self.pinned(&h.a, &h.w, h.v).await {
                Ok(pinned) => {
                    let block = keys::split_item(key).map_or(key, |(body, _)| body);
                    let needs = pinned.reads.of(block);
                    let graph = &pinned.graph;
                    let mut snap = Snapshot::load_step(&*self.store, run_id, key, graph, &needs, h.q).await?;
                    if h.q.is_some()
                        && let Some(s) = &snap
                        && s.run.i64("epoch").unwrap_or(0) as u64 != h.e
                    {
                        // Redriven since the message was sent: a name may have been taken
                        // back, so the predecessors decide.
                        snap = Snapshot::load_step(&*self.store, run_id, key, graph, &needs, None).await?;
                    }
                    match snap {
                        Some(s) if !h.same_version(&s.run) => {
                            warn!("a step message names another workflow version than its run; reading the whole run");
                        }
                        other => return Ok(other),
                    }
                }
                // The workflow is gone: whatever the run says decides.
                Err(Error::NotFound(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Snapshot::load_for(&*self.store, run_id, key).await
    }

    /// The whole run, when `snap` holds only part of it.
    async fn whole(&self, run_id: &str, snap: Snapshot) -> Result<Snapshot> {
        if snap.partial { Snapshot::require(&*self.store, run_id).await } else { Ok(snap) }
    }

    async fn handle_step(&self, run_id: &str, key: &str, pin: Option<&StepHint>, d: Delivery) -> Result<Handled> {
        let Delivery { inline, last, deadline } = d;
        let Some(snap) = self.step_snapshot(run_id, key, pin).await? else {
            warn!("message for a run that does not exist");
            return Ok(Handled::ack(Vec::new()));
        };
        let Some(step) = snap.steps.get(key).cloned() else {
            // Also an item step whose collection ended before it was claimed: nothing to do.
            debug!("message for a step that does not exist");
            return Ok(Handled::ack(Vec::new()));
        };
        let status = StepStatus::of(&step);
        let now = now_ms();
        let run_running = snap.run_status() == RunStatus::Running;
        if status.is_terminal() {
            // Redelivery after a commit: the successors may not have been sent, the split's
            // collection may not have been made, and the run may not have been finalized. All
            // are idempotent.
            if let Some((body, _)) = keys::split_item(key) {
                let mut publish = self.collect_if_done(run_id, body).await?;
                if publish.is_empty() {
                    let snap = Snapshot::require(&*self.store, run_id).await?;
                    publish = self.pending_successors(&snap, body).await?;
                }
                return Ok(Handled::ack(publish));
            }
            let snap = self.whole(run_id, snap).await?;
            let publish = self.pending_successors(&snap, key).await?;
            if run_running && snap.run.i64("active").unwrap_or(0) <= 0 {
                self.finalize(run_id).await?;
            }
            return Ok(Handled::ack(publish));
        }
        match status {
            StepStatus::Joining | StepStatus::Collecting | StepStatus::WaitingHuman => {
                return Ok(Handled::ack(Vec::new()));
            }
            StepStatus::Sleeping => {
                if !run_running {
                    self.cancel_step(run_id, key, snap.status_cond(key)).await?;
                    return Ok(Handled::ack(Vec::new()));
                }
                let wake = step.i64("wake_at").unwrap_or(0);
                if now < wake {
                    self.send(vec![(Msg::step_of(&snap.run, key), Duration::from_millis((wake - now) as u64))]).await?;
                    return Ok(Handled::ack(Vec::new()));
                }
                let output = json!({"waited_ms": step.i64("slept_ms").unwrap_or(0)});
                let publish = self
                    .finish_step(
                        run_id,
                        key,
                        Guard::Sleeping,
                        Finish::Completed { output, status: None, headers: None },
                        Vec::new(),
                        Some(snap),
                    )
                    .await?
                    .unwrap_or_default();
                return Ok(Handled::ack(publish));
            }
            _ => {}
        }
        if !run_running {
            self.cancel_step(run_id, key, snap.status_cond(key)).await?;
            return Ok(Handled::ack(Vec::new()));
        }
        if status == StepStatus::Running {
            let lease = step.i64("lease_until").unwrap_or(0);
            if lease > now {
                return Ok(Handled::retry(Duration::from_millis((lease - now) as u64 + 500)));
            }
        }
        if let Some(nb) = step.i64("not_before").filter(|nb| *nb > now) {
            self.send(vec![(Msg::step_of(&snap.run, key), Duration::from_millis((nb - now) as u64))]).await?;
            return Ok(Handled::ack(Vec::new()));
        }

        let attempt = step.i64("attempt").unwrap_or(0);
        let lazy = is_lazy(&step);
        if last {
            // Every earlier delivery of this message ended without finishing the step (its
            // worker crashed or timed out, or the step could not be loaded); running it again
            // now would leave the run waiting on a dead letter if it fails the same way.
            let lease_until = now + self.cfg.lease.as_millis() as i64;
            let mut snap = snap;
            let Some(token) = self.claim(run_id, key, &mut snap, lazy, attempt, lease_until, now).await? else {
                return Ok(Handled::retry(self.cfg.lease));
            };
            let n = self.cfg.max_receives;
            let err = StepError::fatal(
                "DELIVERY_EXHAUSTED",
                format!(
                    "the step's message was delivered {n} times without the step finishing (a crashed or timed-out worker, or a store error; see the worker logs)"
                ),
            );
            warn!(attempt = attempt + 1, "last delivery of an unfinished step: failing it");
            let publish = self
                .finish_step(run_id, key, Guard::Claimed(token), Finish::Failed(err), Vec::new(), Some(snap))
                .await?;
            return Ok(Handled::ack(publish.unwrap_or_default()));
        }
        let pinned = self.pinned_of(&snap.run).await?;
        let block_id = step.str("block").unwrap_or(key).to_string();
        let Some(block) = pinned.graph.block(&block_id).cloned() else {
            return Err(Error::Internal(format!("step {key} names unknown block {block_id}")));
        };
        let mut timeout = self.block_timeout(&block);
        if let Some(deadline) = deadline {
            let left = deadline.saturating_duration_since(Instant::now()).saturating_sub(DEADLINE_MARGIN);
            // Only a timeout the workflow asks for moves a step; the default one just shrinks.
            if timeout > left && block.timeout_ms.is_some() {
                if inline {
                    // A sync caller cannot wait that long: the step goes to the queue's workers.
                    return Ok(Handled::retry(Duration::ZERO));
                }
                if let Some(long) = &self.long_queue {
                    // More than this invocation can give: the long-step worker runs it.
                    long.send(crate::queue::Message::now(Msg::step_of(&snap.run, key).encode())).await?;
                    debug!(timeout_ms = timeout.as_millis() as u64, "step handed to the long-step queue");
                    return Ok(Handled::done());
                }
            }
            timeout = timeout.min(left);
        }

        let mut snap = snap;
        let guard = if inline && status == StepStatus::Pending && attempt == 0 {
            Guard::Unclaimed { attempt, started_at: now, lazy }
        } else {
            let lease_until = now + (timeout + Duration::from_secs(5)).max(self.cfg.lease).as_millis() as i64;
            match self.claim(run_id, key, &mut snap, lazy, attempt, lease_until, now).await? {
                Some(token) => Guard::Claimed(token),
                None => {
                    debug!("another worker claimed the step");
                    return Ok(Handled::retry(self.cfg.lease));
                }
            }
        };

        let mut ctx = snap.context(&pinned.variables);
        if let Some((_, i)) = keys::split_item(key) {
            ctx["item"] = snap.item_value(key);
            ctx["index"] = json!(i);
        }
        let account = snap.run.str("account_id").unwrap_or_default().to_string();
        let cx = BlockContext {
            account_id: &account,
            run_id,
            run: &snap.run,
            step_key: key,
            attempt: (attempt + 1) as u32,
            deadline: Instant::now() + timeout,
            idempotency_key: format!("{run_id}:{key}"),
            data: &ctx,
            services: &self.services,
        };
        let outcome = if block.kind == "orchestration" && self.executor(&block.kind).is_none() {
            // Needs the engine itself: it starts a run.
            self.start_child(&block, &cx, &snap.run).await
        } else {
            self.execute(&block, &cx).await
        };
        let res = self.conclude(run_id, key, guard.clone(), &block, attempt, outcome, snap).await;
        match res {
            Ok(publish) => Ok(Handled::ack(publish.unwrap_or_default())),
            Err(e) => match commit_failure(&e) {
                // The step's own result cannot be committed (too large, too many writes,
                // conflicts without end): it fails like any failing block, so error edges,
                // retries of the run and redrive apply, and the run ends.
                Some(err) => {
                    warn!(error = %e, code = %err.code, "the step's result could not be committed: failing the step");
                    match self.finish_step(run_id, key, guard.clone(), Finish::Failed(err), Vec::new(), None).await {
                        Ok(publish) => Ok(Handled::ack(publish.unwrap_or_default())),
                        Err(e) => {
                            self.release(run_id, key, &guard).await;
                            Err(e)
                        }
                    }
                }
                None => {
                    self.release(run_id, key, &guard).await;
                    Err(e)
                }
            },
        }
    }

    /// Gives a claimed step back after a store error, so the message's next delivery runs it
    /// again at once instead of waiting out the lease.
    async fn release(&self, run_id: &str, key: &str, guard: &Guard) {
        if let Guard::Claimed(_) = guard {
            let upd = Update::default().set("lease_until", 0);
            if let Err(e) = self.store.update(&keys::step(run_id, key), upd, Some(guard.cond())).await {
                debug!(error = %e, "could not release the step's lease; it runs out by itself");
            }
        }
    }

    /// Commits what a block's execution came to.
    #[allow(clippy::too_many_arguments)]
    async fn conclude(
        &self,
        run_id: &str,
        key: &str,
        guard: Guard,
        block: &Block,
        attempt: i64,
        outcome: BlockOutcome,
        snap: Snapshot,
    ) -> Result<Option<Vec<Msg>>> {
        Ok(match outcome {
            BlockOutcome::Output(output) => {
                let f = Finish::Completed { output, status: None, headers: None };
                self.finish_step(run_id, key, guard, f, Vec::new(), Some(snap)).await?
            }
            BlockOutcome::Response { body, status, headers } => {
                let f = Finish::Completed { output: body, status, headers };
                self.finish_step(run_id, key, guard, f, Vec::new(), Some(snap)).await?
            }
            BlockOutcome::Replanned(output) => {
                // The snapshot still shows the version the step started on: the commit reads
                // the run afresh and plans the successors on the new one.
                let f = Finish::Completed { output, status: None, headers: None };
                self.finish_step(run_id, key, guard, f, Vec::new(), None).await?
            }
            BlockOutcome::Wait(spec) => {
                self.wait_step(run_id, key, guard, spec).await?;
                None
            }
            BlockOutcome::Sleep(d) => {
                self.sleep_step(run_id, key, &snap.run, guard, d).await?;
                None
            }
            BlockOutcome::Logged { outcome, logs } => {
                self.keep_logs(run_id, key, attempt + 1, logs).await?;
                return Box::pin(self.conclude(run_id, key, guard, block, attempt, *outcome, snap)).await;
            }
            BlockOutcome::Fail(err) => {
                let max = block.retry.as_ref().map(|r| r.max_attempts).unwrap_or(1) as i64;
                if err.retryable && attempt + 1 < max {
                    self.retry_step(run_id, key, &snap.run, guard, block, attempt + 1, err).await?;
                    None
                } else {
                    self.finish_step(run_id, key, guard, Finish::Failed(err), Vec::new(), Some(snap)).await?
                }
            }
        })
    }

    /// Claims a step for one attempt: only one worker runs an attempt, and a worker that died
    /// hands the step over when its lease runs out. On success the snapshot holds the step as
    /// claimed (the commit starts from it without reading the run again) and the claim token
    /// is returned; `None` when another worker got there first.
    #[allow(clippy::too_many_arguments)]
    async fn claim(
        &self,
        run_id: &str,
        key: &str,
        snap: &mut Snapshot,
        lazy: bool,
        attempt: i64,
        lease_until: i64,
        now: i64,
    ) -> Result<Option<String>> {
        let token = crate::ids::new_id("clm");
        let cond = if lazy {
            Cond::NotExists
        } else {
            Cond::And(vec![
                Cond::Or(vec![
                    Cond::eq("status", StepStatus::Pending),
                    Cond::And(vec![
                        Cond::eq("status", StepStatus::Running),
                        Cond::Lt("lease_until".into(), json!(now)),
                    ]),
                ]),
                Cond::eq("attempt", attempt),
            ])
        };
        let mut upd = Update::default()
            .set("status", StepStatus::Running)
            .set("claim", token.as_str())
            .set("lease_until", lease_until)
            .set("attempt", attempt + 1)
            .set("started_at", now);
        if lazy {
            let created = snap.steps.get(key).and_then(|s| s.i64("created_at")).unwrap_or(now);
            upd = materialize(upd, key, created);
        }
        match self.store.update(&keys::step(run_id, key), upd, Some(cond)).await {
            Ok(claimed) => {
                snap.steps.insert(key.to_string(), claimed);
                Ok(Some(token))
            }
            Err(Error::Conflict(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn block_timeout(&self, block: &Block) -> Duration {
        match block.timeout_ms {
            Some(ms) => Duration::from_millis(ms),
            None => Duration::from_secs(30).min(self.cfg.lease),
        }
    }

    async fn execute(&self, block: &Block, cx: &BlockContext<'_>) -> BlockOutcome {
        use futures::FutureExt;
        let timeout = cx.remaining();
        let fut = async {
            match self.executor(&block.kind) {
                Some(exec) => exec.execute(block, cx).await,
                None => blocks::execute(block, cx).await,
            }
        };
        // A panicking block fails its step; it never takes the worker (and the run) with it.
        let fut = std::panic::AssertUnwindSafe(fut).catch_unwind();
        match tokio::time::timeout_at(cx.deadline, fut).await {
            Ok(Ok(o)) => o,
            Ok(Err(panic)) => {
                let why = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "unknown panic".into());
                error!(block = %block.id, panic = %why, "block panicked");
                BlockOutcome::Fail(StepError::fatal("BLOCK_PANICKED", format!("block '{}' panicked: {why}", block.id)))
            }
            Err(_) => BlockOutcome::Fail(StepError::retryable(
                "TIMEOUT",
                format!("block '{}' did not finish within {} ms", block.id, timeout.as_millis()),
            )),
        }
    }

    /// Commits the end of a step with everything that follows from it, in one write (a
    /// linear hand-over) or one transaction. `Ok(None)` means the guard no longer holds:
    /// someone else finished or took the step.
    pub(crate) async fn finish_step(
        &self,
        run_id: &str,
        key: &str,
        guard: Guard,
        finish: Finish,
        extra: Vec<Write>,
        first: Option<Snapshot>,
    ) -> Result<Option<Vec<Msg>>> {
        let finish = within_limit(finish)?;
        // Again after a lost race: as the first snapshot was read (a wait's commit reads the
        // run's tasks, so the whole run).
        let mut pin = first.as_ref().filter(|s| s.partial).and_then(|s| StepHint::of_run(&s.run));
        if let (Some(p), Some(s)) = (pin.as_mut(), first.as_ref()) {
            // The step keeps the order it was named with; it has its item now (the claim).
            p.q = (s.seq_floor > 0).then_some(s.seq_floor);
        }
        if matches!(guard, Guard::Waiting(_)) {
            pin = None;
        }
        let mut first = first;
        for _ in 0..MAX_COMMIT_TRIES {
            let snap = match first.take() {
                Some(s) => s,
                None => self
                    .step_snapshot(run_id, key, pin.as_ref())
                    .await?
                    .ok_or_else(|| Error::not_found(format!("run {run_id}")))?,
            };
            if !guard.holds(&snap, key) {
                return Ok(None);
            }
            if snap.run_status() != RunStatus::Running {
                self.cancel_step(run_id, key, snap.status_cond(key)).await?;
                return Ok(None);
            }
            if let Some((body, _)) = keys::split_item(key) {
                let body = body.to_string();
                match self.finish_item(run_id, key, &body, &guard, &finish, &snap).await? {
                    ItemCommit::Retry => continue,
                    ItemCommit::Done(publish) => return Ok(Some(publish)),
                }
            }
            match self.commit(run_id, key, &guard, &finish, &extra, &snap).await? {
                Commit::Landed(publish) => return Ok(Some(publish)),
                Commit::Lost => continue,
                // A `when` that cannot be evaluated fails the step, not the worker.
                Commit::Unresolvable(m) => {
                    let err = StepError::fatal("EXPRESSION_ERROR", m);
                    return Box::pin(self.finish_step(run_id, key, guard, Finish::Failed(err), extra, None)).await;
                }
            }
        }
        Err(Error::Conflict(format!("the commit of {run_id}/{key} kept conflicting with other commits")))
    }

    /// One try at committing the end of a (non-item) step, planned on `snap`: what the end
    /// implies for the graph ([`Self::plan_end`]), then either a hand-over (one write) or a
    /// transaction that also moves the run ([`Self::run_change`]).
    async fn commit(
        &self,
        run_id: &str,
        key: &str,
        guard: &Guard,
        finish: &Finish,
        extra: &[Write],
        snap: &Snapshot,
    ) -> Result<Commit> {
        let now = now_ms();
        let end = match self.plan_end(run_id, key, finish, snap, now).await? {
            Ok(end) => end,
            Err(m) => return Ok(Commit::Unresolvable(m)),
        };
        let StepEnd { own, mut writes, active_delta, publish, run_fails } = end;
        let waiting_delta = match guard {
            Guard::Waiting(t)
                if snap.tasks.get(t).is_some_and(|t| super::wait::is_human(t.str("kind").unwrap_or(""))) =>
            {
                -1
            }
            _ => 0,
        };
        if extra.is_empty() && writes.is_empty() && waiting_delta == 0 && active_delta == 0 && run_fails.is_none() {
            return self.hand_over(run_id, key, guard, own, publish).await;
        }
        writes.splice(0..0, extra.iter().cloned());
        writes.push(Write::Update {
            key: keys::step(run_id, key),
            update: guard.stamp(own, key),
            cond: Some(guard.cond()),
        });
        let change = RunChange { active_delta, waiting_delta, fails: run_fails };
        let (run_write, outbox, completes) =
            self.run_change(run_id, key, guard, snap, &change, &mut writes, now).await?;
        writes.push(run_write);
        let ends = completes || change.fails.is_some();
        if ends {
            self.child_end_safety(&snap.run).await?;
        }
        match self.store.transact(writes).await {
            Ok(()) => {
                self.flush_outbox(outbox).await;
                if ends {
                    self.child_ended(&snap.run).await;
                }
                if change.fails.is_none() && !completes && active_delta < 0 {
                    // Parallel commits may each have seen another still active.
                    self.finalize(run_id).await?;
                }
                Ok(Commit::Landed(publish))
            }
            Err(Error::Conflict(_)) => Ok(Commit::Lost),
            Err(e) => Err(e),
        }
    }

    /// What the end of step `key` implies, planned on `snap`: its own item's update, the
    /// successors (pending, skipped, join counters; a split's collection), the change of the
    /// run's active count, the messages to send, and whether the run fails with it.
    /// `Err(message)`: an edge's `when` cannot be evaluated.
    async fn plan_end(
        &self,
        run_id: &str,
        key: &str,
        finish: &Finish,
        snap: &Snapshot,
        now: i64,
    ) -> Result<std::result::Result<StepEnd, String>> {
        let pinned = self.pinned_of(&snap.run).await?;
        let block_id = snap.steps[key].str("block").unwrap_or(key).to_string();
        let block = pinned.graph.block(&block_id);
        let mut writes: Vec<Write> = Vec::new();
        // `step.completed` events are read from the step items (`runs::run_events`); this
        // orders them among the events of the same millisecond.
        let ev_seq = snap.event_seq() as i64;
        let mut own =
            Update::default().set("finished_at", now).set("ev_seq", ev_seq).remove("claim").remove("lease_until");
        let mut ctx = snap.context(&pinned.variables);
        ctx["steps"][&block_id] = match finish {
            Finish::Completed { output, .. } => json!({"status": "completed", "output": output}),
            Finish::Failed(err) => json!({"status": "failed", "error": err.to_json()}),
        };
        let mut plan = Plan::new(run_id, &pinned.graph, snap, &ctx, now);
        plan.active_delta -= 1;
        let mut run_fails: Option<Value> = None;
        let mut fan_out = Vec::new();
        match finish {
            Finish::Completed { output, status, headers } => {
                own = own.set("status", StepStatus::Completed).set("output", output.clone());
                if let Some(s) = status {
                    own = own.set("response_status", *s);
                }
                if let Some(h) = headers {
                    own = own.set("response_headers", h.clone());
                }
                if block.is_some_and(|b| b.kind == "split") {
                    let (w, msgs) = self.split_writes(run_id, &block_id, output, &mut plan, ev_seq, now)?;
                    writes.push(w);
                    fan_out = msgs;
                } else if let Err(m) = plan.resolve_outgoing(&block_id, false) {
                    return Ok(Err(m));
                }
            }
            Finish::Failed(err) => {
                own = own.set("status", StepStatus::Failed).set("error", err.to_json());
                plan.event("step.failed", Some(key), err.to_json());
                if pinned.graph.outgoing(&block_id).any(|e| e.is_error()) {
                    own = own.set("handled", true);
                    if let Err(m) = plan.resolve_outgoing(&block_id, true) {
                        // An error edge's own `when` failed: nothing handles the failure.
                        warn!(error = %m, "an error edge's condition could not be evaluated");
                        let e =
                            json!({"step_key": key, "code": err.code, "message": format!("{} (and {m})", err.message)});
                        plan.event("run.failed", None, e.clone());
                        run_fails = Some(e);
                    }
                } else {
                    let e = json!({"step_key": key, "code": err.code, "message": err.message});
                    plan.event("run.failed", None, e.clone());
                    run_fails = Some(e);
                }
            }
        }
        let planned = plan.finish();
        let own = planned.lazy.onto(own);
        writes.extend(planned.writes);
        let mut publish: Vec<Msg> = planned.publish.iter().map(|s| Msg::named_by(&snap.run, s, ev_seq)).collect();
        publish.extend(fan_out);
        Ok(Ok(StepEnd { own, writes, active_delta: planned.active_delta, publish, run_fails }))
    }

    /// A linear hand-over: this step's own item is the whole commit. The successor is named
    /// in `next` and gets its item on its first claim (the snapshot shows it pending
    /// meanwhile); the run's counters do not change, so the run item is not written. One
    /// write instead of a four-item transaction.
    async fn hand_over(
        &self,
        run_id: &str,
        key: &str,
        guard: &Guard,
        own: Update,
        publish: Vec<Msg>,
    ) -> Result<Commit> {
        match self.store.update(&keys::step(run_id, key), guard.stamp(own, key), Some(guard.cond())).await {
            Ok(_) => Ok(Commit::Landed(publish)),
            Err(Error::Conflict(_)) => Ok(Commit::Lost),
            Err(e) => Err(e),
        }
    }

    /// The run item's part of a step's commit: its counters move, and the run completes
    /// (when no step is left active, conditional on the counter read), fails, or leaves
    /// `waiting_human` (the last open task of a person answered). Adds the run's other
    /// writes (index, events, callback delivery) to `writes`; returns the run item's write,
    /// the callback deliveries to start after the commit, and whether the run completes.
    #[allow(clippy::too_many_arguments)]
    async fn run_change(
        &self,
        run_id: &str,
        key: &str,
        guard: &Guard,
        snap: &Snapshot,
        change: &RunChange,
        writes: &mut Vec<Write>,
        now: i64,
    ) -> Result<(Write, Vec<super::deliveries::Outbox>, bool)> {
        let acct = snap.run.str("account_id").unwrap_or_default();
        let mut run_update = Update::default().set("updated_at", now).add("active", change.active_delta);
        if change.waiting_delta != 0 {
            run_update = run_update.add("waiting", change.waiting_delta);
        }
        let mut run_cond = Cond::eq("status", RunStatus::Running);
        let mut outbox = Vec::new();
        let snap_active = snap.run.i64("active").unwrap_or(0);
        let mut completes = false;
        if change.fails.is_none() && change.active_delta < 0 && snap_active + change.active_delta <= 0 {
            let after = snap.after(writes);
            if after.steps.values().all(|s| StepStatus::of(s).is_terminal()) {
                let graph = &self.pinned_of(&snap.run).await?.graph;
                let (done, mut w, o) = self.completion(run_id, &after, graph, now, Some(key)).await?;
                for (k, v) in done.set {
                    run_update.set.insert(k, v);
                }
                run_cond = Cond::And(vec![run_cond, Cond::eq("active", snap_active)]);
                writes.append(&mut w);
                outbox.extend(o);
                completes = true;
            }
        }
        if let Some(e) = &change.fails {
            run_update = run_update.set("status", RunStatus::Failed).set("error", e.clone()).set("finished_at", now);
            writes.push(index_status(acct, run_id, "failed", now));
            let summary = callbacks::run_summary(&snap.run, "failed", None, Some(e), now);
            if let Some(o) = self.callback_outbox(&snap.run, callbacks::RUN_FAILED, summary, now).await? {
                writes.push(o.write.clone());
                outbox.push(o);
            }
        } else if change.waiting_delta != 0 && !completes {
            let other_open = snap.tasks.iter().any(|(k, t)| {
                t.str("status") == Some("open")
                    && super::wait::is_human(t.str("kind").unwrap_or(""))
                    && !matches!(guard, Guard::Waiting(g) if g == k)
            });
            if !other_open {
                writes.push(index_status(acct, run_id, "running", now));
            }
        }
        let write = Write::Update { key: keys::run(run_id), update: run_update, cond: Some(run_cond) };
        Ok((write, outbox, completes))
    }

    /// The workflow version a run is pinned to.
    pub(super) async fn pinned_of(&self, run: &Item) -> Result<std::sync::Arc<super::Pinned>> {
        let acct = run.str("account_id").unwrap_or_default();
        let wf = run.str("workflow_id").unwrap_or_default();
        self.pinned(acct, wf, run.i64("version").unwrap_or(1) as u64).await
    }

    async fn sleep_step(&self, run_id: &str, key: &str, run: &Item, guard: Guard, d: Duration) -> Result<()> {
        let now = now_ms();
        let wake = now + d.as_millis() as i64;
        let writes = vec![
            Write::Update {
                key: keys::step(run_id, key),
                update: guard
                    .stamp(Update::default(), key)
                    .set("status", StepStatus::Sleeping)
                    .set("wake_at", wake)
                    .set("slept_ms", d.as_millis() as i64)
                    .remove("claim")
                    .remove("lease_until"),
                cond: Some(guard.cond()),
            },
            event_write(run_id, now, 50, "step.sleeping", Some(key), json!({"until": crate::ids::ms_to_rfc3339(wake)})),
        ];
        match self.store.transact(writes).await {
            Ok(()) => self.send(vec![(Msg::step_of(run, key), d.min(MAX_DELAY))]).await,
            Err(Error::Conflict(_)) => Ok(()),
            Err(e) => Err(e),
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn retry_step(
        &self,
        run_id: &str,
        key: &str,
        run: &Item,
        guard: Guard,
        block: &Block,
        attempt: i64,
        err: StepError,
    ) -> Result<()> {
        let policy = block.retry.clone().unwrap_or_default();
        let exp = policy.backoff_ms.saturating_mul(1u64 << (attempt - 1).clamp(0, 30) as u32);
        let cap = exp.min(policy.max_backoff_ms.max(1));
        // "Equal jitter": at least half the backoff, so retries still spread out.
        let delay_ms = cap / 2 + rand::random_range(0..=cap / 2);
        // An upstream that said how long to stay away (`Retry-After`) is not asked sooner.
        let delay_ms = delay_ms.max(err.retry_after.map_or(0, |d| d.as_millis() as u64));
        let now = now_ms();
        let writes = vec![
            Write::Update {
                key: keys::step(run_id, key),
                update: guard
                    .stamp(Update::default(), key)
                    .set("status", StepStatus::Pending)
                    .set("error", err.to_json())
                    .set("not_before", now + delay_ms as i64)
                    .remove("claim")
                    .remove("lease_until"),
                cond: Some(guard.cond()),
            },
            event_write(
                run_id,
                now,
                0,
                "step.retrying",
                Some(key),
                json!({"attempt": attempt, "error": err.to_json(), "delay_ms": delay_ms}),
            ),
        ];
        match self.store.transact(writes).await {
            Ok(()) => self.send(vec![(Msg::step_of(run, key), Duration::from_millis(delay_ms))]).await,
            Err(Error::Conflict(_)) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Marks a step cancelled if it still is as `cond` (from the snapshot) says; a step that
    /// had no item yet gets one.
    pub(crate) async fn cancel_step(&self, run_id: &str, key: &str, cond: Cond) -> Result<()> {
        let now = now_ms();
        let mut upd = Update::default()
            .set("status", StepStatus::Cancelled)
            .set("finished_at", now)
            .remove("claim")
            .remove("lease_until");
        if cond == Cond::NotExists {
            upd = materialize(upd, key, now);
        }
        match self.store.update(&keys::step(run_id, key), upd, Some(cond)).await {
            Ok(_) | Err(Error::Conflict(_)) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Pending steps that follow `key` in the graph (their messages may never have been sent).
    async fn pending_successors(&self, snap: &Snapshot, key: &str) -> Result<Vec<Msg>> {
        if snap.run_status() != RunStatus::Running {
            return Ok(Vec::new());
        }
        let pinned = self.pinned_of(&snap.run).await?;
        let block_id = snap.steps.get(key).and_then(|s| s.str("block")).unwrap_or(key).to_string();
        let mut out = Vec::new();
        let mut frontier = vec![block_id];
        let mut seen = std::collections::HashSet::new();
        // Skipped successors were committed with this step; their own successors too.
        while let Some(b) = frontier.pop() {
            if !seen.insert(b.clone()) {
                continue;
            }
            for e in pinned.graph.outgoing(&b) {
                for (k, s) in &snap.steps {
                    let base = s.str("block").unwrap_or(k);
                    if base != e.to {
                        continue;
                    }
                    match StepStatus::of(s) {
                        StepStatus::Pending => out.push(Msg::step_of(&snap.run, k)),
                        StepStatus::Skipped => frontier.push(e.to.clone()),
                        StepStatus::Completed if !k.contains('[') && k == &e.to => frontier.push(e.to.clone()),
                        _ => {}
                    }
                }
            }
        }
        Ok(out)
    }

    async fn handle_sweep(&self, run_id: &str) -> Result<Handled> {
        let Some(snap) = Snapshot::load(&*self.store, run_id).await? else { return Ok(Handled::ack(Vec::new())) };
        if snap.run_status() != RunStatus::Running {
            return Ok(Handled::ack(Vec::new()));
        }
        let now = now_ms();
        let publish =
            snap.steps
                .iter()
                .filter(|(_, s)| match StepStatus::of(s) {
                    StepStatus::Pending => true,
                    StepStatus::Running => s.i64("lease_until").unwrap_or(0) < now,
                    _ => false,
                })
                .map(|(k, _)| Msg::step_of(&snap.run, k))
                // A split still collecting: its items go out again (finished ones only ack).
                .chain(
                    snap.steps
                        .iter()
                        .filter(|(_, s)| StepStatus::of(s) == StepStatus::Collecting)
                        .map(|(k, _)| Msg::Fan { r: run_id.to_string(), s: k.clone(), f: 0 }),
                )
                .collect();
        Ok(Handled::ack(publish))
    }
}

/// An output over the payload limit fails its step `OUTPUT_TOO_LARGE` before any commit (the
/// store could hold a little more), as one the store refuses does: a block's output, a split's
/// collection of its items' outputs, a task's answer.
fn within_limit(finish: Finish) -> Result<Finish> {
    if let Finish::Completed { output, .. } = &finish {
        let size = serde_json::to_vec(output)?.len();
        if size > MAX_PAYLOAD_BYTES {
            let m = format!("the output is {size} bytes of JSON; the limit is {MAX_PAYLOAD_BYTES} bytes (1 MiB)");
            return Ok(Finish::Failed(StepError::fatal(
                "OUTPUT_TOO_LARGE",
                format!("the step's result is too large to store: {m}"),
            )));
        }
    }
    Ok(finish)
}

/// The failure a commit error stands for when the step's own result is what cannot be
/// committed; `None` for errors that a later delivery may not meet (the store unreachable).
fn commit_failure(e: &Error) -> Option<StepError> {
    match e {
        Error::PayloadTooLarge(m) => {
            Some(StepError::fatal("OUTPUT_TOO_LARGE", format!("the step's result is too large to store: {m}")))
        }
        Error::Validation { message, .. } => {
            Some(StepError::fatal("COMMIT_FAILED", format!("the step's result could not be committed: {message}")))
        }
        Error::Conflict(m) => Some(StepError::fatal("COMMIT_FAILED", m.clone())),
        _ => None,
    }
}

/// What the end of a step implies ([`Engine::plan_end`]).
struct StepEnd {
    /// The update of the step's own item.
    own: Update,
    /// Successors, join counters, a split's collection, events.
    writes: Vec<Write>,
    active_delta: i64,
    publish: Vec<Msg>,
    /// The run fails with this error.
    run_fails: Option<Value>,
}

/// How a commit moves the run item.
struct RunChange {
    active_delta: i64,
    waiting_delta: i64,
    fails: Option<Value>,
}

enum Commit {
    Landed(Vec<Msg>),
    /// A condition failed: re-read and plan again.
    Lost,
    /// An edge's `when` could not be evaluated.
    Unresolvable(String),
}

/// What a step's first write adds when the step had no item yet (see `snapshot::LAZY`).
fn materialize(u: Update, key: &str, created_at: i64) -> Update {
    u.set("block", key.split('[').next().unwrap_or(key)).set("created_at", created_at)
}

pub(crate) fn index_status(acct: &str, run_id: &str, status: &str, now: i64) -> Write {
    Write::Update {
        key: keys::run_index(acct, run_id),
        update: Update::default().set("status", status).set("updated_at", now),
        cond: Some(Cond::Exists),
    }
}

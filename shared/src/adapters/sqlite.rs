//! SQLite adapters of the store and queue ports: one database file in WAL mode holding the
//! item table and the durable queue table.
//!
//! One writer connection serves every write of the process, and every write runs in a
//! `BEGIN IMMEDIATE` transaction, so several processes may share the file. Writes are group
//! committed: an uncontended write runs inline on the caller's thread, alone in its
//! transaction; writes that arrive while the writer is busy are queued and run together by a
//! writer thread, one transaction per batch and one savepoint per write (see [`Group`]). Reads (`get`, `query`, queue peeks) use a small pool of reader connections,
//! which WAL lets run alongside the writer. Statements are prepared once per connection
//! (`prepare_cached`).
//!
//! Conditions and updates are evaluated in Rust inside the write transaction with
//! [`store::eval_cond`] and [`store::apply_update`]; expired items count as absent everywhere
//! and are deleted lazily by [`Sqlite::purge_expired`] (and a run's items with their run, by
//! [`Sqlite::purge_expired_partitions`]; the local server sweeps with both).

use crate::error::{Error, Result};
use crate::ids::now_ms;
use crate::metrics::{self, Op};
use crate::queue::{MAX_BODY_BYTES, MAX_DELAY, MAX_RECEIVE, Message, Queue, Received};
use crate::store::{
    self, Attrs, Cond, Item, Key, MAX_ITEM_BYTES, MAX_QUERY_LIMIT, MAX_TRANSACT_ITEMS, Page, Query, SkRange, Store,
    Update, Write,
};
use async_trait::async_trait;
use rusqlite::types::Value as SqlValue;
use rusqlite::{Connection, OpenFlags, OptionalExtension, TransactionBehavior, params, params_from_iter};
use std::collections::{HashMap, HashSet, VecDeque};
use std::ops::Deref;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};
use tokio::sync::{Notify, oneshot};

/// The schema version this build writes (`PRAGMA user_version`).
pub const SCHEMA_VERSION: i32 = 1;
/// Longest a queue message may be hidden by one receive or visibility change (SQS's limit).
pub const MAX_VISIBILITY: Duration = Duration::from_secs(12 * 60 * 60);
/// Longest partition key DynamoDB accepts, in bytes.
pub const MAX_PK_BYTES: usize = 2048;
/// Longest sort key DynamoDB accepts, in bytes.
pub const MAX_SK_BYTES: usize = 1024;

const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
const MAX_IDLE_READERS: usize = 4;
const STATEMENT_CACHE: usize = 64;
/// How often a long poll looks at the table for messages sent by other processes.
const POLL_INTERVAL: Duration = Duration::from_millis(100);
/// How many expired items one purge transaction deletes before yielding the writer.
const PURGE_BATCH: i64 = 1000;
/// Commits between two background checkpoints (each commit appends at least one 4 KiB page).
const CHECKPOINT_EVERY: u64 = 1000;
/// How often the checkpointer looks for commits it was not told about.
const CHECKPOINT_IDLE: Duration = Duration::from_secs(1);
/// WAL length (pages) from which the writer restarts the log from its beginning.
const WAL_RESTART_FRAMES: i64 = 4096;
/// The WAL file is truncated back to this size when the log restarts.
const WAL_SIZE_LIMIT: i64 = 32 * 1024 * 1024;
/// Most queued writes that share one transaction.
const MAX_BATCH: usize = 64;
const WRITER_STACK: usize = 1024 * 1024;

const SCHEMA_V1: &str = "
CREATE TABLE items (
    pk TEXT NOT NULL,
    sk TEXT NOT NULL,
    attrs TEXT NOT NULL,
    expires_at INTEGER,
    PRIMARY KEY (pk, sk)
) WITHOUT ROWID;
CREATE INDEX items_expires_at ON items (expires_at) WHERE expires_at IS NOT NULL;
CREATE TABLE queue_messages (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    queue TEXT NOT NULL,
    body TEXT NOT NULL,
    visible_at INTEGER NOT NULL,
    receive_count INTEGER NOT NULL DEFAULT 0,
    receipt TEXT,
    dead INTEGER NOT NULL DEFAULT 0,
    created_at INTEGER NOT NULL
);
CREATE INDEX queue_messages_ready ON queue_messages (queue, dead, visible_at);
";

/// Maps SQLite errors to [`Error::Internal`] (nothing SQLite reports is the caller's fault).
trait Db<T> {
    fn db(self) -> Result<T>;
}

impl<T> Db<T> for rusqlite::Result<T> {
    fn db(self) -> Result<T> {
        self.map_err(|e| Error::Internal(format!("sqlite: {e}")))
    }
}

fn now_secs() -> i64 {
    now_ms().div_euclid(1000)
}

fn duration_ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// One database file. Cheap to share (`Arc`); build [`SqliteStore`] and [`SqliteQueue`]s on it.
///
/// Writes go through a group commit (see [`Group`]): concurrent writers share one
/// transaction, each in its own savepoint, so that a burst of small writes pays for one
/// `BEGIN IMMEDIATE … COMMIT` (WAL append and locks) instead of one each.
///
/// WAL checkpoints (copying pages into the database file, with fsyncs) mostly run on a small
/// dedicated thread rather than inside writes: the writer's autocheckpoint is off and, every
/// 1000 commits or after a quiet second, the thread runs a passive checkpoint, which does not
/// block writers. A passive checkpoint never lets the log start over while writes keep coming,
/// so once the WAL is longer than 4096 pages the writer itself runs a `RESTART` checkpoint
/// (little left to copy by then) between two writes. The thread ends with the `Sqlite`.
pub struct Sqlite {
    path: PathBuf,
    group: Arc<Group>,
    readers: Mutex<Vec<Connection>>,
    /// One per queue name, so long polls in this process wake on sends in this process.
    notifiers: Mutex<HashMap<String, Arc<Notify>>>,
}

/// Shared by the writer and the checkpoint thread.
#[derive(Default)]
struct WalState {
    commits: AtomicU64,
    /// Set by the checkpoint thread when the log has grown long enough to restart.
    restart: AtomicBool,
}

impl std::fmt::Debug for Sqlite {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sqlite").field("path", &self.path).finish_non_exhaustive()
    }
}

impl Drop for Sqlite {
    fn drop(&mut self) {
        self.group.state().closed = true;
        self.group.wake.notify_one();
    }
}

impl Sqlite {
    /// Opens the database file, creating it (and its parent directory) and the schema on first
    /// open, and migrating an older schema.
    pub fn open(path: &Path) -> Result<Arc<Sqlite>> {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent)
                .map_err(|e| Error::Internal(format!("cannot create {}: {e}", parent.display())))?;
        }
        let mut writer = Connection::open(path).db()?;
        writer.busy_timeout(BUSY_TIMEOUT).db()?;
        let mode: String = writer.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0)).db()?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(Error::Internal(format!("sqlite: cannot switch {} to WAL (mode {mode})", path.display())));
        }
        writer
            .execute_batch(&format!(
                "PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = OFF; PRAGMA temp_store = MEMORY; \
                 PRAGMA wal_autocheckpoint = 0; PRAGMA journal_size_limit = {WAL_SIZE_LIMIT};"
            ))
            .db()?;
        writer.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
        migrate(&mut writer)?;

        let checkpointer = Connection::open_with_flags(path, reader_flags()).db()?;
        checkpointer.busy_timeout(BUSY_TIMEOUT).db()?;
        let wal = Arc::new(WalState::default());
        let (checkpoint, wake) = std::sync::mpsc::sync_channel(1);
        let state = wal.clone();
        std::thread::Builder::new()
            .name("baton-sqlite-checkpoint".into())
            .stack_size(256 * 1024)
            .spawn(move || run_checkpoints(&checkpointer, &state, &wake))
            .map_err(|e| Error::Internal(format!("cannot start the sqlite checkpoint thread: {e}")))?;

        let group = Arc::new(Group {
            conn: Mutex::new(writer),
            state: Mutex::new(GroupState::default()),
            wake: Condvar::new(),
            wal,
            checkpoint,
        });
        let worker = group.clone();
        std::thread::Builder::new()
            .name("baton-sqlite-writer".into())
            .stack_size(WRITER_STACK)
            .spawn(move || worker.run_handed())
            .map_err(|e| Error::Internal(format!("cannot start the sqlite writer thread: {e}")))?;

        Ok(Arc::new(Sqlite {
            path: path.to_path_buf(),
            group,
            readers: Mutex::new(Vec::new()),
            notifiers: Mutex::new(HashMap::new()),
        }))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Deletes items whose TTL has passed (they are already invisible). Returns how many.
    /// Works in batches so other writers are not held up; meant to be called periodically.
    /// Blocks the calling thread while it waits for the writer.
    pub fn purge_expired(&self) -> Result<usize> {
        let mut total = 0;
        loop {
            let n = self.write_blocking(|conn| {
                let mut st = conn
                    .prepare_cached(
                        "DELETE FROM items WHERE (pk, sk) IN \
                         (SELECT pk, sk FROM items WHERE expires_at <= ?1 LIMIT ?2)",
                    )
                    .db()?;
                st.execute(params![now_secs(), PURGE_BATCH]).db()
            })?;
            total += n;
            if (n as i64) < PURGE_BATCH {
                return Ok(total);
            }
        }
    }

    /// Deletes every item of each partition whose key starts with `pk_prefix` and whose head
    /// item (sort key `head_sk`) has expired, the head itself excepted (the next
    /// [`purge_expired`](Self::purge_expired) takes it): a run's items go with its run item,
    /// whatever their own TTL. Returns how many. Batched and blocking like `purge_expired`.
    pub fn purge_expired_partitions(&self, pk_prefix: &str, head_sk: &str) -> Result<usize> {
        let mut total = 0;
        loop {
            let (prefix, head) = (pk_prefix.to_string(), head_sk.to_string());
            let n = self.write_blocking(move |conn| {
                let mut st = conn
                    .prepare_cached(
                        "DELETE FROM items WHERE (pk, sk) IN \
                         (SELECT i.pk, i.sk FROM items h JOIN items i ON i.pk = h.pk \
                          WHERE h.sk = ?1 AND h.expires_at <= ?2 AND substr(h.pk, 1, length(?3)) = ?3 \
                          AND i.sk <> ?1 LIMIT ?4)",
                    )
                    .db()?;
                st.execute(params![head, now_secs(), prefix, PURGE_BATCH]).db()
            })?;
            total += n;
            if (n as i64) < PURGE_BATCH {
                return Ok(total);
            }
        }
    }

    #[cfg(test)]
    fn writer(&self) -> MutexGuard<'_, Connection> {
        self.group.conn()
    }

    /// Runs `f` on the writer inside a `BEGIN IMMEDIATE` transaction, possibly shared with
    /// other writes (group commit); returns once the transaction holding it has committed.
    /// If `f` fails, its own changes are rolled back and the others' are kept.
    ///
    /// When no other write is under way, `f` runs right here, alone in its transaction;
    /// otherwise it is queued for the writer thread and the caller awaits the outcome.
    async fn write<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T> + Send + 'static,
    {
        let rx = {
            let mut st = self.group.state();
            if st.busy {
                let (tx, rx) = oneshot::channel();
                st.queue.push_back(Box::new(Pending { f: Some(f), out: None, reply: Reply::Async(tx) }));
                rx
            } else {
                st.busy = true;
                drop(st);
                let out = self.group.run_alone(f);
                self.group.release();
                return out;
            }
        };
        rx.await.unwrap_or_else(|_| Err(Error::internal("sqlite: the writer thread is gone")))
    }

    /// [`Self::write`] for synchronous callers: blocks the thread while waiting.
    fn write_blocking<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T> + Send + 'static,
    {
        let rx = {
            let mut st = self.group.state();
            if st.busy {
                let (tx, rx) = std::sync::mpsc::sync_channel(1);
                st.queue.push_back(Box::new(Pending { f: Some(f), out: None, reply: Reply::Blocking(tx) }));
                rx
            } else {
                st.busy = true;
                drop(st);
                let out = self.group.run_alone(f);
                self.group.release();
                return out;
            }
        };
        rx.recv().unwrap_or_else(|_| Err(Error::internal("sqlite: the writer thread is gone")))
    }

    fn reader(&self) -> Result<Reader<'_>> {
        let pooled = self.readers.lock().unwrap_or_else(PoisonError::into_inner).pop();
        let conn = match pooled {
            Some(c) => c,
            None => {
                let c = Connection::open_with_flags(&self.path, reader_flags()).db()?;
                c.busy_timeout(BUSY_TIMEOUT).db()?;
                c.execute_batch("PRAGMA query_only = 1; PRAGMA temp_store = MEMORY;").db()?;
                c.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
                c
            }
        };
        Ok(Reader { db: self, conn: Some(conn) })
    }

    fn notifier(&self, queue: &str) -> Arc<Notify> {
        let mut map = self.notifiers.lock().unwrap_or_else(PoisonError::into_inner);
        map.entry(queue.to_string()).or_default().clone()
    }
}

// ---------------------------------------------------------------------------------------------
// Group commit
// ---------------------------------------------------------------------------------------------

/// The writer connection and the writes waiting for it.
///
/// Whoever sets `busy` owns the connection until it clears it (or hands it over). A write
/// that finds the writer idle takes it and runs inline, alone in its transaction: no thread
/// hop, so an uncontended write costs what it did before group commit. A write that finds
/// it busy queues a [`Job`]. When the owner is done and jobs are waiting, it hands the
/// writer to the writer thread, which takes up to [`MAX_BATCH`] queued jobs at a time and
/// runs them in one transaction, each in its own savepoint (a job that fails rolls back to
/// its savepoint and the others go on), commits once, and only then replies to each job —
/// with the commit's error, if the commit fails. It keeps going while jobs are waiting, then
/// marks the writer idle again.
///
/// A job is never cancelled once queued: if its caller stops waiting, the write may still
/// happen (as with any remote store).
struct Group {
    conn: Mutex<Connection>,
    state: Mutex<GroupState>,
    /// Wakes the writer thread (hand-over or close).
    wake: Condvar,
    wal: Arc<WalState>,
    checkpoint: SyncSender<()>,
}

#[derive(Default)]
struct GroupState {
    /// Someone (an inline writer or the writer thread) owns the connection.
    busy: bool,
    /// The owner is the writer thread.
    handed: bool,
    /// The `Sqlite` is gone: the writer thread ends once nothing is handed to it.
    closed: bool,
    queue: VecDeque<Box<dyn Job>>,
}

/// A queued write.
trait Job: Send {
    /// Runs the write inside the current transaction and keeps its outcome; `true` if it
    /// succeeded (its changes should be kept).
    fn run(&mut self, conn: &Connection) -> bool;
    /// Replaces the outcome with an error (the transaction did not commit).
    fn fail(&mut self, message: &str);
    /// Hands the outcome to the caller.
    fn reply(self: Box<Self>);
}

enum Reply<T> {
    Async(oneshot::Sender<Result<T>>),
    Blocking(SyncSender<Result<T>>),
}

struct Pending<T, F> {
    f: Option<F>,
    out: Option<Result<T>>,
    reply: Reply<T>,
}

impl<T, F> Job for Pending<T, F>
where
    T: Send + 'static,
    F: FnOnce(&Connection) -> Result<T> + Send + 'static,
{
    fn run(&mut self, conn: &Connection) -> bool {
        let out = match self.f.take() {
            Some(f) => guarded(conn, f),
            None => Err(Error::internal("sqlite: a write ran twice")),
        };
        let ok = out.is_ok();
        self.out = Some(out);
        ok
    }

    fn fail(&mut self, message: &str) {
        self.out = Some(Err(Error::Internal(message.to_string())));
    }

    fn reply(self: Box<Self>) {
        let out = self.out.unwrap_or_else(|| Err(Error::internal("sqlite: a write was never run")));
        // The caller may have stopped waiting; nothing to do then.
        match self.reply {
            Reply::Async(tx) => {
                let _ = tx.send(out);
            }
            Reply::Blocking(tx) => {
                let _ = tx.send(out);
            }
        }
    }
}

/// Runs one write, turning a panic into an error so the writer is never left owned.
fn guarded<T>(conn: &Connection, f: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
    std::panic::catch_unwind(AssertUnwindSafe(|| f(conn)))
        .unwrap_or_else(|_| Err(Error::internal("sqlite: a write panicked")))
}

/// Runs a statement without results (transaction control) on the writer.
fn exec(conn: &Connection, sql: &str) -> rusqlite::Result<()> {
    conn.prepare_cached(sql)?.execute([]).map(drop)
}

/// Ends a failed transaction, if SQLite has not already.
fn rollback(conn: &Connection) {
    if !conn.is_autocommit()
        && let Err(e) = exec(conn, "ROLLBACK")
    {
        tracing::warn!(error = %e, "sqlite rollback failed");
    }
}

impl Group {
    fn state(&self) -> MutexGuard<'_, GroupState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn conn(&self) -> MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// One write in its own transaction (the caller owns the writer).
    fn run_alone<T>(&self, f: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
        let conn = self.conn();
        exec(&conn, "BEGIN IMMEDIATE").db()?;
        let out = guarded(&conn, f);
        if out.is_err() {
            rollback(&conn);
            return out;
        }
        if let Err(e) = exec(&conn, "COMMIT") {
            rollback(&conn);
            return Err(e).db();
        }
        self.committed(&conn);
        out
    }

    /// Jobs in one transaction, each in a savepoint (the caller owns the writer). Leaves
    /// every job's outcome in the job; replying is the caller's.
    fn run_batch(&self, jobs: &mut [Box<dyn Job>]) {
        let conn = self.conn();
        let abort = |jobs: &mut [Box<dyn Job>], e: rusqlite::Error| {
            rollback(&conn);
            let message = format!("sqlite: {e}");
            jobs.iter_mut().for_each(|j| j.fail(&message));
        };
        if let Err(e) = exec(&conn, "BEGIN IMMEDIATE") {
            return abort(jobs, e);
        }
        if let [job] = jobs {
            if !job.run(&conn) {
                rollback(&conn);
                return;
            }
        } else {
            for i in 0..jobs.len() {
                if let Err(e) = exec(&conn, "SAVEPOINT job") {
                    return abort(jobs, e);
                }
                let ok = jobs[i].run(&conn);
                let end = if ok {
                    exec(&conn, "RELEASE job")
                } else {
                    exec(&conn, "ROLLBACK TO job").and_then(|()| exec(&conn, "RELEASE job"))
                };
                if let Err(e) = end {
                    // The job's failure ended the whole transaction (I/O error, full disk…).
                    return abort(jobs, e);
                }
            }
        }
        match exec(&conn, "COMMIT") {
            Ok(()) => self.committed(&conn),
            Err(e) => abort(jobs, e),
        }
    }

    /// Gives up the writer after an inline write: idle if nothing is queued, else handed to
    /// the writer thread.
    fn release(&self) {
        let mut st = self.state();
        if st.queue.is_empty() {
            st.busy = false;
        } else {
            st.handed = true;
            drop(st);
            self.wake.notify_one();
        }
    }

    /// The writer thread: runs queued jobs in batches whenever the writer is handed to it;
    /// ends once the `Sqlite` is gone and nothing is left to do.
    fn run_handed(&self) {
        let mut st = self.state();
        loop {
            if st.handed {
                if st.queue.is_empty() {
                    st.handed = false;
                    st.busy = false;
                    continue;
                }
                let n = st.queue.len().min(MAX_BATCH);
                let mut batch: Vec<Box<dyn Job>> = st.queue.drain(..n).collect();
                drop(st);
                self.run_batch(&mut batch);
                for job in batch {
                    job.reply();
                }
                st = self.state();
            } else if st.closed {
                return;
            } else {
                st = self.wake.wait(st).unwrap_or_else(PoisonError::into_inner);
            }
        }
    }

    /// Counts a commit, wakes the checkpointer every [`CHECKPOINT_EVERY`] of them, and
    /// restarts the log when the checkpointer says it is long.
    fn committed(&self, conn: &Connection) {
        if (self.wal.commits.fetch_add(1, Ordering::Relaxed) + 1).is_multiple_of(CHECKPOINT_EVERY) {
            match self.checkpoint.try_send(()) {
                Ok(()) | Err(TrySendError::Full(())) => {}
                Err(TrySendError::Disconnected(())) => tracing::warn!("the sqlite checkpoint thread is gone"),
            }
        }
        if self.wal.restart.swap(false, Ordering::Relaxed)
            && let Err(e) = conn.query_row("PRAGMA wal_checkpoint(RESTART)", [], |_| Ok(()))
        {
            tracing::warn!(error = %e, "sqlite wal restart failed");
        }
    }
}

fn reader_flags() -> OpenFlags {
    OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX | OpenFlags::SQLITE_OPEN_URI
}

/// The checkpoint thread: a passive checkpoint when woken, or after a quiet interval if there
/// were commits since the last one; asks the writer to restart a long log; returns once the
/// `Sqlite` (the sender) is gone.
fn run_checkpoints(conn: &Connection, wal: &WalState, wake: &Receiver<()>) {
    let mut done = 0;
    loop {
        match wake.recv_timeout(CHECKPOINT_IDLE) {
            Ok(()) | Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return,
        }
        let now = wal.commits.load(Ordering::Relaxed);
        if now == done {
            continue;
        }
        done = now;
        // (busy, pages in the log, pages checkpointed)
        match conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| r.get::<_, i64>(1)) {
            Ok(frames) if frames >= WAL_RESTART_FRAMES => wal.restart.store(true, Ordering::Relaxed),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "sqlite checkpoint failed"),
        }
    }
}

fn migrate(conn: &mut Connection) -> Result<()> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).db()?;
    let version: i32 = tx.query_row("PRAGMA user_version", [], |r| r.get(0)).db()?;
    if version > SCHEMA_VERSION {
        return Err(Error::Internal(format!(
            "database schema version {version} is newer than this build supports ({SCHEMA_VERSION})"
        )));
    }
    if version < 1 {
        tx.execute_batch(SCHEMA_V1).db()?;
    }
    if version != SCHEMA_VERSION {
        tx.pragma_update(None, "user_version", SCHEMA_VERSION).db()?;
    }
    tx.commit().db()
}

/// A pooled reader connection; goes back to the pool when dropped.
struct Reader<'a> {
    db: &'a Sqlite,
    conn: Option<Connection>,
}

impl Deref for Reader<'_> {
    type Target = Connection;
    fn deref(&self) -> &Connection {
        self.conn.as_ref().expect("reader connection present until drop")
    }
}

impl Drop for Reader<'_> {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            let mut pool = self.db.readers.lock().unwrap_or_else(PoisonError::into_inner);
            if pool.len() < MAX_IDLE_READERS {
                pool.push(conn);
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Store
// ---------------------------------------------------------------------------------------------

/// The [`Store`] port on the `items` table.
#[derive(Clone, Debug)]
pub struct SqliteStore {
    db: Arc<Sqlite>,
}

impl SqliteStore {
    pub fn new(db: Arc<Sqlite>) -> Self {
        Self { db }
    }

    pub fn db(&self) -> &Arc<Sqlite> {
        &self.db
    }
}

fn check_key(key: &Key) -> Result<()> {
    if key.pk.is_empty() || key.sk.is_empty() {
        return Err(Error::validation("partition and sort keys must not be empty"));
    }
    if key.pk.len() > MAX_PK_BYTES {
        return Err(Error::validation(format!("partition key longer than {MAX_PK_BYTES} bytes")));
    }
    if key.sk.len() > MAX_SK_BYTES {
        return Err(Error::validation(format!("sort key longer than {MAX_SK_BYTES} bytes")));
    }
    Ok(())
}

/// Serializes an item's attributes, enforcing [`MAX_ITEM_BYTES`] (keys included).
fn encode(key: &Key, attrs: &Attrs) -> Result<String> {
    let json = serde_json::to_string(attrs)?;
    let size = json.len() + key.pk.len() + key.sk.len();
    if size > MAX_ITEM_BYTES {
        return Err(Error::PayloadTooLarge(format!("item is {size} bytes; the limit is {MAX_ITEM_BYTES}")));
    }
    Ok(json)
}

/// The live item at `key`, or `None` when absent or expired at `now` (epoch seconds).
fn load(conn: &Connection, key: &Key, now: i64) -> Result<Option<Item>> {
    let mut st = conn.prepare_cached("SELECT attrs, expires_at FROM items WHERE pk = ?1 AND sk = ?2").db()?;
    let row = st
        .query_row(params![key.pk, key.sk], |r| Ok((r.get::<_, String>(0)?, r.get::<_, Option<i64>>(1)?)))
        .optional()
        .db()?;
    match row {
        Some((_, Some(exp))) if exp <= now => Ok(None),
        Some((attrs, expires_at)) => {
            Ok(Some(Item { key: key.clone(), attrs: serde_json::from_str(&attrs)?, expires_at }))
        }
        None => Ok(None),
    }
}

fn upsert(conn: &Connection, key: &Key, json: &str, expires_at: Option<i64>) -> Result<()> {
    let mut st = conn
        .prepare_cached(
            "INSERT INTO items (pk, sk, attrs, expires_at) VALUES (?1, ?2, ?3, ?4) \
             ON CONFLICT (pk, sk) DO UPDATE SET attrs = excluded.attrs, expires_at = excluded.expires_at",
        )
        .db()?;
    st.execute(params![key.pk, key.sk, json, expires_at]).db()?;
    Ok(())
}

fn delete_row(conn: &Connection, key: &Key) -> Result<()> {
    let mut st = conn.prepare_cached("DELETE FROM items WHERE pk = ?1 AND sk = ?2").db()?;
    st.execute(params![key.pk, key.sk]).db()?;
    Ok(())
}

fn conflict(key: &Key) -> Error {
    Error::Conflict(format!("condition failed on {}/{}", key.pk, key.sk))
}

/// Fails with `Conflict` unless `cond` holds for the live item at `key`.
fn check_cond(conn: &Connection, key: &Key, cond: &Cond, now: i64) -> Result<Option<Item>> {
    let current = load(conn, key, now)?;
    if store::eval_cond(cond, current.as_ref()) { Ok(current) } else { Err(conflict(key)) }
}

fn encode_cursor(sk: &str) -> String {
    hex::encode(sk.as_bytes())
}

fn decode_cursor(cursor: &str) -> Result<String> {
    hex::decode(cursor)
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .ok_or_else(|| Error::validation("invalid query cursor"))
}

/// The smallest string greater than every string starting with `prefix`, if there is one.
fn prefix_upper_bound(prefix: &str) -> Option<String> {
    let mut chars: Vec<char> = prefix.chars().collect();
    while let Some(last) = chars.pop() {
        let mut next = last as u32 + 1;
        if next == 0xD800 {
            next = 0xE000;
        }
        if let Some(c) = char::from_u32(next) {
            chars.push(c);
            return Some(chars.into_iter().collect());
        }
    }
    None
}

/// The writes of one [`Store::transact`], all or nothing (the caller rolls back on error).
fn transact(tx: &Connection, writes: &[Write], encoded: &[Option<String>]) -> Result<()> {
    let now = now_secs();
    for (i, (w, json)) in writes.iter().zip(encoded).enumerate() {
        let failed = |e: Error| match e {
            Error::Conflict(_) => {
                let k = w.key();
                Error::Conflict(format!("transaction cancelled: condition failed on write {i} ({}/{})", k.pk, k.sk))
            }
            e => e,
        };
        match w {
            Write::Put { item, cond } => {
                if let Some(c) = cond {
                    check_cond(tx, &item.key, c, now).map_err(failed)?;
                }
                let json = json.as_deref().expect("puts are encoded");
                upsert(tx, &item.key, json, item.expires_at)?;
            }
            Write::Update { key, update, cond } => {
                let current = match cond {
                    Some(c) => check_cond(tx, key, c, now).map_err(failed)?,
                    None => load(tx, key, now)?,
                };
                let item = store::apply_update(key, current, update);
                let json = encode(key, &item.attrs)?;
                upsert(tx, key, &json, item.expires_at)?;
            }
            Write::Delete { key, cond } => {
                if let Some(c) = cond {
                    check_cond(tx, key, c, now).map_err(failed)?;
                }
                delete_row(tx, key)?;
            }
            Write::Check { key, cond } => {
                check_cond(tx, key, cond, now).map_err(failed)?;
            }
        }
    }
    Ok(())
}

#[async_trait]
impl Store for SqliteStore {
    async fn get(&self, key: &Key) -> Result<Option<Item>> {
        metrics::count(Op::StoreGet);
        check_key(key)?;
        let conn = self.db.reader()?;
        load(&conn, key, now_secs())
    }

    async fn get_many(&self, keys: &[Key]) -> Result<Vec<Option<Item>>> {
        metrics::count(Op::StoreGetMany);
        keys.iter().try_for_each(check_key)?;
        let conn = self.db.reader()?;
        let now = now_secs();
        keys.iter().map(|k| load(&conn, k, now)).collect()
    }

    async fn put(&self, item: Item, cond: Option<Cond>) -> Result<()> {
        metrics::count(Op::StorePut);
        check_key(&item.key)?;
        cond.as_ref().map_or(Ok(()), store::check_cond)?;
        let json = encode(&item.key, &item.attrs)?;
        self.db
            .write(move |tx| {
                if let Some(cond) = &cond {
                    check_cond(tx, &item.key, cond, now_secs())?;
                }
                upsert(tx, &item.key, &json, item.expires_at)
            })
            .await
    }

    async fn update(&self, key: &Key, update: Update, cond: Option<Cond>) -> Result<Item> {
        metrics::count(Op::StoreUpdate);
        check_key(key)?;
        cond.as_ref().map_or(Ok(()), store::check_cond)?;
        let key = key.clone();
        self.db
            .write(move |tx| {
                let now = now_secs();
                let current = match &cond {
                    Some(c) => check_cond(tx, &key, c, now)?,
                    None => load(tx, &key, now)?,
                };
                let item = store::apply_update(&key, current, &update);
                let json = encode(&key, &item.attrs)?;
                upsert(tx, &key, &json, item.expires_at)?;
                Ok(item)
            })
            .await
    }

    async fn delete(&self, key: &Key, cond: Option<Cond>) -> Result<()> {
        metrics::count(Op::StoreDelete);
        check_key(key)?;
        cond.as_ref().map_or(Ok(()), store::check_cond)?;
        let key = key.clone();
        self.db
            .write(move |tx| {
                if let Some(cond) = &cond {
                    check_cond(tx, &key, cond, now_secs())?;
                }
                delete_row(tx, &key)
            })
            .await
    }

    async fn transact(&self, writes: Vec<Write>) -> Result<()> {
        metrics::count(Op::StoreTransact);
        if writes.len() > MAX_TRANSACT_ITEMS {
            return Err(Error::validation(format!(
                "a transaction takes at most {MAX_TRANSACT_ITEMS} writes, got {}",
                writes.len()
            )));
        }
        let mut seen = HashSet::with_capacity(writes.len());
        for w in &writes {
            check_key(w.key())?;
            if !seen.insert(w.key()) {
                let k = w.key();
                return Err(Error::validation(format!("two writes on {}/{} in one transaction", k.pk, k.sk)));
            }
        }
        store::check_write_conds(&writes)?;
        // Encode puts up front: an oversized item fails the call before any condition.
        let encoded: Vec<Option<String>> = writes
            .iter()
            .map(|w| match w {
                Write::Put { item, .. } => encode(&item.key, &item.attrs).map(Some),
                _ => Ok(None),
            })
            .collect::<Result<_>>()?;
        self.db.write(move |tx| transact(tx, &writes, &encoded)).await
    }

    async fn query(&self, query: Query) -> Result<Page> {
        metrics::count(Op::StoreQuery);
        if query.limit == 0 || query.limit > MAX_QUERY_LIMIT {
            return Err(Error::validation(format!("query limit must be 1..={MAX_QUERY_LIMIT}")));
        }
        if query.pk.is_empty() {
            return Err(Error::validation("partition key must not be empty"));
        }
        let mut sql = String::from(
            "SELECT sk, attrs, expires_at FROM items WHERE pk = ?1 AND (expires_at IS NULL OR expires_at > ?2)",
        );
        let mut args: Vec<SqlValue> = vec![SqlValue::Text(query.pk.clone()), SqlValue::Integer(now_secs())];
        let mut bound = |sql: &mut String, op: &str, v: String| {
            args.push(SqlValue::Text(v));
            sql.push_str(&format!(" AND sk {op} ?{}", args.len()));
        };
        match &query.range {
            SkRange::All => {}
            SkRange::Prefix(p) if p.is_empty() => {}
            SkRange::Prefix(p) => {
                bound(&mut sql, ">=", p.clone());
                if let Some(upper) = prefix_upper_bound(p) {
                    bound(&mut sql, "<", upper);
                }
            }
            SkRange::Between(lo, hi) => {
                if lo > hi {
                    return Err(Error::validation("query range: lower bound is above upper bound"));
                }
                bound(&mut sql, ">=", lo.clone());
                bound(&mut sql, "<=", hi.clone());
            }
        }
        if let Some(c) = &query.cursor {
            let after = decode_cursor(c)?;
            bound(&mut sql, if query.descending { "<" } else { ">" }, after);
        }
        args.push(SqlValue::Integer(query.limit as i64 + 1));
        sql.push_str(&format!(" ORDER BY sk {} LIMIT ?{}", if query.descending { "DESC" } else { "ASC" }, args.len()));

        let conn = self.db.reader()?;
        let mut st = conn.prepare_cached(&sql).db()?;
        let rows = st
            .query_map(params_from_iter(args), |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, Option<i64>>(2)?))
            })
            .db()?;
        let mut items = Vec::new();
        let mut more = false;
        for row in rows {
            let (sk, attrs, expires_at) = row.db()?;
            if items.len() == query.limit {
                more = true;
                break;
            }
            let key = Key { pk: query.pk.clone(), sk };
            items.push(Item { key, attrs: serde_json::from_str(&attrs)?, expires_at });
        }
        let next_cursor = if more { items.last().map(|i| encode_cursor(&i.key.sk)) } else { None };
        Ok(Page { items, next_cursor })
    }
}

// ---------------------------------------------------------------------------------------------
// Queue
// ---------------------------------------------------------------------------------------------

/// One named queue in the `queue_messages` table. Dead letters stay in the table with
/// `dead = 1` (the queue's dead-letter queue).
#[derive(Clone)]
pub struct SqliteQueue {
    db: Arc<Sqlite>,
    name: Arc<str>,
    max_receives: u32,
    notify: Arc<Notify>,
}

impl std::fmt::Debug for SqliteQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteQueue")
            .field("name", &self.name)
            .field("max_receives", &self.max_receives)
            .finish_non_exhaustive()
    }
}

/// How many messages a queue holds, by state.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct QueueDepth {
    /// Receivable now.
    pub visible: u64,
    /// Delayed or in flight (received, not yet deleted or timed out).
    pub hidden: u64,
    /// In the dead-letter queue.
    pub dead: u64,
}

fn validate_message(msg: &Message) -> Result<()> {
    if msg.delay > MAX_DELAY {
        return Err(Error::validation(format!("message delay above {} s", MAX_DELAY.as_secs())));
    }
    if msg.body.is_empty() {
        return Err(Error::validation("message body must not be empty"));
    }
    if msg.body.len() > MAX_BODY_BYTES {
        return Err(Error::validation(format!("message body above {MAX_BODY_BYTES} bytes")));
    }
    // The characters SQS accepts in a message body.
    let allowed = |c: char| matches!(c, '\t' | '\n' | '\r' | '\u{20}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'..='\u{10FFFF}');
    if !msg.body.chars().all(allowed) {
        return Err(Error::validation("message body holds characters SQS does not accept"));
    }
    Ok(())
}

fn validate_visibility(visibility: Duration) -> Result<()> {
    if visibility > MAX_VISIBILITY {
        return Err(Error::validation(format!("visibility timeout above {} s", MAX_VISIBILITY.as_secs())));
    }
    Ok(())
}

/// Deletes the message behind a receipt; a stale receipt deletes nothing.
fn delete_message(conn: &Connection, queue: &str, id: i64, receipt: &str) -> Result<()> {
    let mut st =
        conn.prepare_cached("DELETE FROM queue_messages WHERE id = ?1 AND queue = ?2 AND receipt = ?3").db()?;
    st.execute(params![id, queue, receipt]).db()?;
    Ok(())
}

fn new_receipt(id: i64) -> String {
    format!("{id}.{:032x}", rand::random::<u128>())
}

fn receipt_id(receipt: &str) -> Result<i64> {
    receipt
        .split_once('.')
        .and_then(|(id, _)| id.parse().ok())
        .ok_or_else(|| Error::validation("malformed receipt handle"))
}

impl SqliteQueue {
    /// The queue `name` in `db`; a message received more than `max_receives` times goes to
    /// the dead letters instead of being delivered again.
    pub fn new(db: Arc<Sqlite>, name: &str, max_receives: u32) -> Self {
        let notify = db.notifier(name);
        Self { db, name: name.into(), max_receives: max_receives.max(1), notify }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn max_receives(&self) -> u32 {
        self.max_receives
    }

    /// Counts messages by state (scans the queue's rows; for inspection, not hot paths).
    pub fn depth(&self) -> Result<QueueDepth> {
        let conn = self.db.reader()?;
        let mut st = conn
            .prepare_cached(
                "SELECT COALESCE(SUM(dead = 0 AND visible_at <= ?2), 0), \
                        COALESCE(SUM(dead = 0 AND visible_at > ?2), 0), \
                        COALESCE(SUM(dead <> 0), 0) \
                 FROM queue_messages WHERE queue = ?1",
            )
            .db()?;
        st.query_row(params![self.name, now_ms()], |r| {
            Ok(QueueDepth { visible: r.get(0)?, hidden: r.get(1)?, dead: r.get(2)? })
        })
        .db()
    }

    fn insert(conn: &Connection, queue: &str, msgs: &[Message]) -> Result<()> {
        let mut st = conn
            .prepare_cached(
                "INSERT INTO queue_messages (queue, body, visible_at, receive_count, receipt, dead, created_at) \
                 VALUES (?1, ?2, ?3, 0, NULL, 0, ?4)",
            )
            .db()?;
        let now = now_ms();
        for m in msgs {
            st.execute(params![queue, m.body, now + duration_ms(m.delay), now]).db()?;
        }
        Ok(())
    }

    /// One receive attempt: claims up to `max` visible messages, dead-lettering the ones that
    /// have been received `max_receives` times already.
    async fn try_receive(&self, max: usize, visibility: Duration) -> Result<Vec<Received>> {
        let (name, max_receives) = (self.name.clone(), self.max_receives);
        self.db
            .write(move |tx| {
                let now = now_ms();
                let mut select = tx
                    .prepare_cached(
                        "SELECT id, body, receive_count FROM queue_messages \
                     WHERE queue = ?1 AND dead = 0 AND visible_at <= ?2 ORDER BY visible_at, id LIMIT ?3",
                    )
                    .db()?;
                let mut deliver = tx
                    .prepare_cached(
                        "UPDATE queue_messages SET receive_count = ?2, receipt = ?3, visible_at = ?4 WHERE id = ?1",
                    )
                    .db()?;
                let mut bury = tx
                    .prepare_cached("UPDATE queue_messages SET dead = 1, receipt = ?2, visible_at = ?3 WHERE id = ?1")
                    .db()?;
                let mut out: Vec<Received> = Vec::new();
                let mut taken: Vec<i64> = Vec::new();
                loop {
                    // With a zero visibility timeout, messages delivered above are selected again.
                    let limit = max + taken.len();
                    let rows: Vec<(i64, String, u32)> = select
                        .query_map(params![name, now, limit as i64], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                        .db()?
                        .collect::<rusqlite::Result<_>>()
                        .db()?;
                    let full = rows.len() == limit;
                    let mut buried = 0;
                    for (id, body, count) in rows {
                        if out.len() == max {
                            break;
                        }
                        if taken.contains(&id) {
                            continue;
                        }
                        if count >= max_receives {
                            bury.execute(params![id, new_receipt(id), now]).db()?;
                            tracing::warn!(queue = %name, id, receives = count, "message moved to dead letters");
                            buried += 1;
                            continue;
                        }
                        let receipt = new_receipt(id);
                        deliver.execute(params![id, count + 1, receipt, now + duration_ms(visibility)]).db()?;
                        taken.push(id);
                        out.push(Received { id: id.to_string(), receipt, body, receive_count: count + 1 });
                    }
                    // Only burying frees places in the next select.
                    if out.len() == max || !full || buried == 0 {
                        return Ok(out);
                    }
                }
            })
            .await
    }

    /// When the next message of the queue becomes visible (epoch ms), if there is one.
    fn next_visible_at(&self) -> Result<Option<i64>> {
        let conn = self.db.reader()?;
        let mut st = conn
            .prepare_cached(
                "SELECT visible_at FROM queue_messages WHERE queue = ?1 AND dead = 0 ORDER BY visible_at LIMIT 1",
            )
            .db()?;
        st.query_row(params![self.name], |r| r.get(0)).optional().db()
    }
}

#[async_trait]
impl Queue for SqliteQueue {
    async fn send(&self, msg: Message) -> Result<()> {
        metrics::count(Op::QueueSend);
        validate_message(&msg)?;
        let name = self.name.clone();
        self.db.write(move |c| Self::insert(c, &name, std::slice::from_ref(&msg))).await?;
        self.notify.notify_waiters();
        Ok(())
    }

    async fn send_batch(&self, msgs: Vec<Message>) -> Result<()> {
        if msgs.is_empty() {
            return Ok(());
        }
        // Counted like SQS requests: one per 10 messages.
        for _ in 0..msgs.len().div_ceil(MAX_RECEIVE) {
            metrics::count(Op::QueueSendBatch);
        }
        msgs.iter().try_for_each(validate_message)?;
        let name = self.name.clone();
        self.db.write(move |tx| Self::insert(tx, &name, &msgs)).await?;
        self.notify.notify_waiters();
        Ok(())
    }

    async fn receive(&self, max: usize, visibility: Duration, wait: Duration) -> Result<Vec<Received>> {
        metrics::count(Op::QueueReceive);
        if max == 0 || max > MAX_RECEIVE {
            return Err(Error::validation(format!("receive takes 1..={MAX_RECEIVE} messages")));
        }
        validate_visibility(visibility)?;
        let deadline = Instant::now() + wait;
        loop {
            // Register for wake-ups before looking, so a send in between is not missed.
            let notified = self.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();

            let got = self.try_receive(max, visibility).await?;
            let now = Instant::now();
            if !got.is_empty() || now >= deadline {
                return Ok(got);
            }
            let mut nap = (deadline - now).min(POLL_INTERVAL);
            if let Some(at) = self.next_visible_at()? {
                let until = Duration::from_millis(u64::try_from(at - now_ms()).unwrap_or(0));
                nap = nap.min(until);
            }
            if nap.is_zero() {
                tokio::task::yield_now().await;
                continue;
            }
            tokio::select! {
                _ = &mut notified => {}
                _ = tokio::time::sleep(nap) => {}
            }
        }
    }

    async fn delete(&self, receipt: &str) -> Result<()> {
        metrics::count(Op::QueueDelete);
        let id = receipt_id(receipt)?;
        let (name, receipt) = (self.name.clone(), receipt.to_string());
        self.db.write(move |conn| delete_message(conn, &name, id, &receipt)).await
    }

    /// Both in one transaction: the successors are never lost and never sent without the
    /// delete (a stale receipt deletes nothing, as with `delete`, but the sends stay).
    async fn send_and_delete(&self, msgs: Vec<Message>, receipt: &str) -> Result<()> {
        // Counted like the requests of the default: one per 10 messages, plus the delete.
        for _ in 0..msgs.len().div_ceil(MAX_RECEIVE) {
            metrics::count(Op::QueueSendBatch);
        }
        metrics::count(Op::QueueDelete);
        msgs.iter().try_for_each(validate_message)?;
        let id = receipt_id(receipt)?;
        let sent = !msgs.is_empty();
        let (name, receipt) = (self.name.clone(), receipt.to_string());
        self.db
            .write(move |tx| {
                Self::insert(tx, &name, &msgs)?;
                delete_message(tx, &name, id, &receipt)
            })
            .await?;
        if sent {
            self.notify.notify_waiters();
        }
        Ok(())
    }

    async fn change_visibility(&self, receipt: &str, visibility: Duration) -> Result<()> {
        metrics::count(Op::QueueChangeVisibility);
        validate_visibility(visibility)?;
        let id = receipt_id(receipt)?;
        let (name, receipt) = (self.name.clone(), receipt.to_string());
        let changed = self
            .db
            .write(move |conn| {
                let mut st = conn
                    .prepare_cached(
                        "UPDATE queue_messages SET visible_at = ?4 \
                         WHERE id = ?1 AND queue = ?2 AND receipt = ?3 AND dead = 0",
                    )
                    .db()?;
                st.execute(params![id, name, receipt, now_ms() + duration_ms(visibility)]).db()
            })
            .await?;
        if changed > 0 && visibility.is_zero() {
            self.notify.notify_waiters();
        }
        Ok(())
    }

    async fn dead_letters(&self, max: usize) -> Result<Vec<Received>> {
        let conn = self.db.reader()?;
        let mut st = conn
            .prepare_cached(
                "SELECT id, receipt, body, receive_count FROM queue_messages \
                 WHERE queue = ?1 AND dead = 1 ORDER BY id LIMIT ?2",
            )
            .db()?;
        let rows = st
            .query_map(params![self.name, max as i64], |r| {
                Ok(Received {
                    id: r.get::<_, i64>(0)?.to_string(),
                    receipt: r.get::<_, Option<String>>(1)?.unwrap_or_default(),
                    body: r.get(2)?,
                    receive_count: r.get(3)?,
                })
            })
            .db()?;
        rows.collect::<rusqlite::Result<_>>().db()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conformance::QUEUE_MAX_RECEIVES;
    use crate::store::Page;
    use serde_json::json;
    use tempfile::TempDir;

    /// A port plus the temporary directory its database lives in (removed on drop).
    struct Held<T> {
        inner: T,
        _dir: TempDir,
    }

    fn temp_db() -> (TempDir, Arc<Sqlite>) {
        let dir = tempfile::tempdir().unwrap();
        let db = Sqlite::open(&dir.path().join("baton.db")).unwrap();
        (dir, db)
    }

    async fn test_store() -> Arc<Held<SqliteStore>> {
        let (dir, db) = temp_db();
        Arc::new(Held { inner: SqliteStore::new(db), _dir: dir })
    }

    async fn test_queue() -> Arc<Held<SqliteQueue>> {
        let (dir, db) = temp_db();
        Arc::new(Held { inner: SqliteQueue::new(db, "work", QUEUE_MAX_RECEIVES), _dir: dir })
    }

    #[async_trait]
    impl<T: Store> Store for Held<T> {
        async fn get(&self, key: &Key) -> Result<Option<Item>> {
            self.inner.get(key).await
        }
        async fn get_many(&self, keys: &[Key]) -> Result<Vec<Option<Item>>> {
            self.inner.get_many(keys).await
        }
        async fn put(&self, item: Item, cond: Option<Cond>) -> Result<()> {
            self.inner.put(item, cond).await
        }
        async fn update(&self, key: &Key, update: Update, cond: Option<Cond>) -> Result<Item> {
            self.inner.update(key, update, cond).await
        }
        async fn delete(&self, key: &Key, cond: Option<Cond>) -> Result<()> {
            self.inner.delete(key, cond).await
        }
        async fn transact(&self, writes: Vec<Write>) -> Result<()> {
            self.inner.transact(writes).await
        }
        async fn query(&self, query: Query) -> Result<Page> {
            self.inner.query(query).await
        }
    }

    #[async_trait]
    impl<T: Queue> Queue for Held<T> {
        async fn send(&self, msg: Message) -> Result<()> {
            self.inner.send(msg).await
        }
        async fn send_batch(&self, msgs: Vec<Message>) -> Result<()> {
            self.inner.send_batch(msgs).await
        }
        async fn receive(&self, max: usize, visibility: Duration, wait: Duration) -> Result<Vec<Received>> {
            self.inner.receive(max, visibility, wait).await
        }
        async fn delete(&self, receipt: &str) -> Result<()> {
            self.inner.delete(receipt).await
        }
        async fn change_visibility(&self, receipt: &str, visibility: Duration) -> Result<()> {
            self.inner.change_visibility(receipt, visibility).await
        }
        async fn dead_letters(&self, max: usize) -> Result<Vec<Received>> {
            self.inner.dead_letters(max).await
        }
        async fn send_and_delete(&self, msgs: Vec<Message>, receipt: &str) -> Result<()> {
            self.inner.send_and_delete(msgs, receipt).await
        }
    }

    mod store_conformance {
        crate::store_conformance_tests!(super::test_store());
    }

    mod queue_conformance {
        crate::queue_conformance_tests!(super::test_queue());
    }

    fn attrs(v: serde_json::Value) -> Attrs {
        v.as_object().unwrap().clone()
    }

    #[tokio::test]
    async fn schema_is_versioned() {
        let (_dir, db) = temp_db();
        let v: i32 = db.writer().query_row("PRAGMA user_version", [], |r| r.get(0)).unwrap();
        assert_eq!(v, SCHEMA_VERSION);
        let mode: String = db.reader().unwrap().query_row("PRAGMA journal_mode", [], |r| r.get(0)).unwrap();
        assert_eq!(mode, "wal");
    }

    #[tokio::test]
    async fn newer_schema_is_refused() {
        let (dir, db) = temp_db();
        db.writer().pragma_update(None, "user_version", SCHEMA_VERSION + 1).unwrap();
        drop(db);
        let err = Sqlite::open(&dir.path().join("baton.db")).unwrap_err();
        assert!(err.to_string().contains("newer"), "{err}");
    }

    #[tokio::test]
    async fn open_creates_missing_parent_directories() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a/b/baton.db");
        Sqlite::open(&path).unwrap();
        assert!(path.exists());
    }

    #[tokio::test]
    async fn data_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("baton.db");
        let key = Key::new("run#1", "meta");
        {
            let db = Sqlite::open(&path).unwrap();
            let store = SqliteStore::new(db.clone());
            store.put(Item::new(key.clone(), attrs(json!({"status": "running"}))), None).await.unwrap();
            let queue = SqliteQueue::new(db, "steps", 3);
            queue.send(Message::now("step-1")).await.unwrap();
            let m = queue.receive(1, Duration::from_secs(60), Duration::ZERO).await.unwrap();
            assert_eq!(m.len(), 1);
            queue.send(Message::now("step-2")).await.unwrap();
        }
        let db = Sqlite::open(&path).unwrap();
        let store = SqliteStore::new(db.clone());
        assert_eq!(store.get(&key).await.unwrap().unwrap().str("status"), Some("running"));
        let queue = SqliteQueue::new(db, "steps", 3);
        let got = queue.receive(10, Duration::from_secs(60), Duration::ZERO).await.unwrap();
        let bodies: Vec<&str> = got.iter().map(|m| m.body.as_str()).collect();
        assert_eq!(bodies, ["step-2"], "the in-flight message stays hidden across a restart");
        assert_eq!(queue.depth().unwrap(), QueueDepth { visible: 0, hidden: 2, dead: 0 });
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn two_handles_on_one_file_see_each_others_writes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("baton.db");
        let (a, b) = (Sqlite::open(&path).unwrap(), Sqlite::open(&path).unwrap());
        let (sa, sb) = (SqliteStore::new(a.clone()), SqliteStore::new(b.clone()));
        let key = Key::new("p", "s");
        sa.put(Item::new(key.clone(), attrs(json!({"v": 1}))), None).await.unwrap();
        assert_eq!(sb.get(&key).await.unwrap().unwrap().i64("v"), Some(1));
        sb.update(&key, Update::default().add("v", 1), Some(Cond::eq("v", 1))).await.unwrap();
        let err = sa.update(&key, Update::default().add("v", 1), Some(Cond::eq("v", 1))).await.unwrap_err();
        assert!(err.is_conflict());
        assert_eq!(sa.get(&key).await.unwrap().unwrap().i64("v"), Some(2));

        // Both handles write concurrently; no update is lost.
        let tasks: Vec<_> = [sa.clone(), sb.clone()]
            .into_iter()
            .map(|s| {
                let key = key.clone();
                tokio::spawn(async move {
                    for _ in 0..200 {
                        s.update(&key, Update::default().add("v", 1), None).await.unwrap();
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(sb.get(&key).await.unwrap().unwrap().i64("v"), Some(402));

        // A long poll on one handle sees a send on the other (no shared notifier).
        let (qa, qb) = (SqliteQueue::new(a, "q", 3), SqliteQueue::new(b, "q", 3));
        let started = Instant::now();
        let poller = tokio::spawn(async move { qb.receive(1, Duration::from_secs(30), Duration::from_secs(5)).await });
        tokio::time::sleep(Duration::from_millis(100)).await;
        qa.send(Message::now("cross")).await.unwrap();
        let got = poller.await.unwrap().unwrap();
        assert_eq!(got[0].body, "cross");
        assert!(started.elapsed() < Duration::from_secs(2));
        qa.delete(&got[0].receipt).await.unwrap();
        assert_eq!(qa.depth().unwrap(), QueueDepth::default());
    }

    #[tokio::test]
    async fn queues_sharing_a_file_are_isolated() {
        let (_dir, db) = temp_db();
        let (q1, q2) = (SqliteQueue::new(db.clone(), "one", 3), SqliteQueue::new(db, "two", 3));
        q1.send(Message::now("for one")).await.unwrap();
        assert!(q2.receive(10, Duration::from_secs(30), Duration::ZERO).await.unwrap().is_empty());
        let m = q1.receive(10, Duration::from_secs(30), Duration::ZERO).await.unwrap().remove(0);
        // A receipt of another queue does nothing.
        q2.delete(&m.receipt).await.unwrap();
        q2.change_visibility(&m.receipt, Duration::ZERO).await.unwrap();
        assert_eq!(q1.depth().unwrap(), QueueDepth { visible: 0, hidden: 1, dead: 0 });
        assert_validation(q1.delete("not-a-receipt").await);
    }

    fn assert_validation<T: std::fmt::Debug>(r: Result<T>) {
        assert!(matches!(r, Err(Error::Validation { .. })), "expected Validation, got {r:?}");
    }

    #[tokio::test]
    async fn receive_skips_buried_messages_and_never_returns_one_twice() {
        let (_dir, db) = temp_db();
        let q = SqliteQueue::new(db, "q", 1);
        q.send_batch(vec![Message::now("m0"), Message::now("m1")]).await.unwrap();
        assert_eq!(q.receive(2, Duration::ZERO, Duration::ZERO).await.unwrap().len(), 2);
        tokio::time::sleep(Duration::from_millis(5)).await;
        q.send_batch(["m2", "m3", "m4"].map(Message::now).to_vec()).await.unwrap();
        // m0 and m1 come first and are buried; with a zero visibility timeout the messages
        // delivered in this call are visible again but must not be returned twice.
        let got = q.receive(3, Duration::ZERO, Duration::ZERO).await.unwrap();
        let mut bodies: Vec<&str> = got.iter().map(|m| m.body.as_str()).collect();
        bodies.sort_unstable();
        assert_eq!(bodies, ["m2", "m3", "m4"]);
        let dead: Vec<String> = q.dead_letters(10).await.unwrap().into_iter().map(|m| m.body).collect();
        assert_eq!(dead, ["m0", "m1"]);
        assert_eq!(q.depth().unwrap(), QueueDepth { visible: 3, hidden: 0, dead: 2 });
    }

    #[tokio::test]
    async fn dead_letter_receipt_deletes_it() {
        let (_dir, db) = temp_db();
        let q = SqliteQueue::new(db, "q", 1);
        q.send(Message::now("poison")).await.unwrap();
        let first = q.receive(1, Duration::ZERO, Duration::ZERO).await.unwrap().remove(0);
        assert!(q.receive(1, Duration::ZERO, Duration::ZERO).await.unwrap().is_empty());
        q.delete(&first.receipt).await.unwrap(); // stale: the move to dead letters re-issued it
        let dead = q.dead_letters(10).await.unwrap();
        assert_eq!(dead.len(), 1);
        q.delete(&dead[0].receipt).await.unwrap();
        assert!(q.dead_letters(10).await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn purge_expired_deletes_only_expired_items() {
        let (_dir, db) = temp_db();
        let store = SqliteStore::new(db.clone());
        let now = now_secs();
        for (sk, exp) in [("old", Some(now - 1)), ("new", Some(now + 3600)), ("none", None)] {
            let item = Item { expires_at: exp, ..Item::new(Key::new("p", sk), Attrs::new()) };
            store.put(item, None).await.unwrap();
        }
        assert_eq!(db.purge_expired().unwrap(), 1);
        assert_eq!(db.purge_expired().unwrap(), 0);
        let n: i64 = db.writer().query_row("SELECT COUNT(*) FROM items", [], |r| r.get(0)).unwrap();
        assert_eq!(n, 2);
    }

    #[tokio::test]
    async fn bad_inputs_are_rejected() {
        let (_dir, db) = temp_db();
        let store = SqliteStore::new(db.clone());
        let long = Key::new("p", "s".repeat(MAX_SK_BYTES + 1));
        assert_validation(store.put(Item::new(long, Attrs::new()), None).await);
        let bad_cursor = Query { cursor: Some("zz".into()), ..Query::partition("p") };
        assert_validation(store.query(bad_cursor).await);
        let q = SqliteQueue::new(db, "q", 3);
        assert_validation(q.send(Message::now("")).await);
        assert_validation(q.send(Message::now("nul \u{0} byte")).await);
        assert_validation(q.receive(1, MAX_VISIBILITY + Duration::from_secs(1), Duration::ZERO).await);
    }

    #[tokio::test]
    async fn wal_stays_bounded_under_sustained_writes() {
        let (dir, db) = temp_db();
        let store = SqliteStore::new(db);
        // Each commit appends at least one 4 KiB page: 16k commits would make a 64 MB log if
        // it never restarted.
        for i in 0..16_000 {
            let key = Key::new(format!("p{}", i % 2000), "s");
            store.update(&key, Update::default().add("n", 1), None).await.unwrap();
        }
        let wal = std::fs::metadata(dir.path().join("baton.db-wal")).unwrap().len();
        assert!(wal < 48 * 1024 * 1024, "WAL is {wal} bytes");
    }

    /// Makes the writer look busy, so that writes queue up until [`release_held`] hands
    /// them, as one batch, to the writer thread.
    fn hold_writer(db: &Sqlite) {
        let mut st = db.group.state();
        assert!(!st.busy);
        st.busy = true;
    }

    async fn release_held(db: &Sqlite, queued: usize) {
        while db.group.state().queue.len() < queued {
            tokio::task::yield_now().await;
        }
        db.group.release();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failing_write_in_a_batch_does_not_affect_the_others() {
        let (_dir, db) = temp_db();
        let store = Arc::new(SqliteStore::new(db.clone()));
        for k in 0..25 {
            store
                .put(Item::new(Key::new("p", format!("taken{k:02}")), attrs(json!({"v": "old"}))), None)
                .await
                .unwrap();
        }
        hold_writer(&db);
        // 50 conditional puts: the 25 on new keys succeed, the 25 on taken keys conflict.
        let mut tasks = Vec::new();
        for i in 0..50 {
            let store = store.clone();
            let sk = if i % 2 == 0 { format!("new{:02}", i / 2) } else { format!("taken{:02}", i / 2) };
            tasks.push(tokio::spawn(async move {
                let item = Item::new(Key::new("p", sk), attrs(json!({"v": i})));
                store.put(item, Some(Cond::NotExists)).await
            }));
        }
        // A transaction whose first write applies and whose second fails: all of it must go.
        let tx = {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .transact(vec![
                        Write::Put { item: Item::new(Key::new("p", "tx-a"), Attrs::new()), cond: None },
                        Write::Check { key: Key::new("p", "tx-missing"), cond: Cond::Exists },
                    ])
                    .await
            })
        };
        // A write that panics fails alone.
        let panicking = {
            let db = db.clone();
            tokio::spawn(async move { db.write(|_: &Connection| -> Result<()> { panic!("boom") }).await })
        };
        release_held(&db, 52).await;
        let mut ok = 0;
        for (i, t) in tasks.into_iter().enumerate() {
            match t.await.unwrap() {
                Ok(()) => {
                    assert_eq!(i % 2, 0, "put {i} should have conflicted");
                    ok += 1;
                }
                Err(e) => assert!(e.is_conflict() && i % 2 == 1, "put {i}: {e}"),
            }
        }
        assert_eq!(ok, 25);
        assert!(tx.await.unwrap().unwrap_err().is_conflict());
        assert!(matches!(panicking.await.unwrap(), Err(Error::Internal(_))));
        let page = store.query(Query::partition("p")).await.unwrap();
        assert_eq!(page.items.len(), 50, "25 taken + 25 new, and nothing of the failed transaction");
        for item in page.items {
            let v = &item.attrs["v"];
            if item.key.sk.starts_with("taken") { assert_eq!(v, "old") } else { assert!(v.is_i64()) }
        }
        // The writer is idle again (it answers the batch before it lets go of the writer, so
        // give it a moment) and later writes run as usual.
        let t0 = Instant::now();
        while db.group.state().busy && t0.elapsed() < Duration::from_secs(5) {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        assert!(!db.group.state().busy);
        store.put(Item::new(Key::new("p", "after"), Attrs::new()), Some(Cond::NotExists)).await.unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn racing_conditional_writers_have_one_winner_per_round() {
        let (_dir, db) = temp_db();
        let store = Arc::new(SqliteStore::new(db));
        let key = Key::new("race", "item");
        store.put(Item::new(key.clone(), attrs(json!({"round": 0}))), None).await.unwrap();
        const ROUNDS: i64 = 40;
        const RACERS: usize = 16;
        for round in 0..ROUNDS {
            let tasks: Vec<_> = (0..RACERS)
                .map(|w| {
                    let (store, key) = (store.clone(), key.clone());
                    tokio::spawn(async move {
                        let upd = Update::default().set("round", round + 1).set("winner", w as i64);
                        store.update(&key, upd, Some(Cond::eq("round", round))).await
                    })
                })
                .collect();
            let mut winners = Vec::new();
            for (w, t) in tasks.into_iter().enumerate() {
                match t.await.unwrap() {
                    Ok(item) => {
                        assert_eq!(item.i64("round"), Some(round + 1));
                        winners.push(w as i64);
                    }
                    Err(e) => assert!(e.is_conflict(), "{e}"),
                }
            }
            assert_eq!(winners.len(), 1, "round {round}: winners {winners:?}");
            assert_eq!(store.get(&key).await.unwrap().unwrap().i64("winner"), Some(winners[0]));
        }
        assert_eq!(store.get(&key).await.unwrap().unwrap().i64("round"), Some(ROUNDS));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_writes_are_batched_and_none_is_lost() {
        let (_dir, db) = temp_db();
        let store = Arc::new(SqliteStore::new(db.clone()));
        let queue = Arc::new(SqliteQueue::new(db.clone(), "q", 3));
        let commits = db.group.wal.commits.load(Ordering::Relaxed);
        let tasks: Vec<_> = (0..8)
            .map(|w| {
                let (store, queue) = (store.clone(), queue.clone());
                tokio::spawn(async move {
                    for i in 0..250 {
                        store.update(&Key::new("count", "all"), Update::default().add("n", 1), None).await.unwrap();
                        store
                            .put(Item::new(Key::new(format!("w{w}"), format!("{i:03}")), Attrs::new()), None)
                            .await
                            .unwrap();
                        queue.send(Message::now(format!("{w}/{i}"))).await.unwrap();
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(store.get(&Key::new("count", "all")).await.unwrap().unwrap().i64("n"), Some(2000));
        for w in 0..8 {
            assert_eq!(store.query(Query::partition(format!("w{w}"))).await.unwrap().items.len(), 250);
        }
        assert_eq!(queue.depth().unwrap().visible, 2000);
        let commits = db.group.wal.commits.load(Ordering::Relaxed) - commits;
        assert!(commits < 6000, "{commits} commits for 6000 writes: nothing was grouped");
    }

    #[tokio::test]
    async fn purge_waits_for_queued_writes() {
        let (_dir, db) = temp_db();
        let store = Arc::new(SqliteStore::new(db.clone()));
        let old = Item { expires_at: Some(now_secs() - 1), ..Item::new(Key::new("p", "old"), Attrs::new()) };
        store.put(old, None).await.unwrap();
        hold_writer(&db);
        let put = {
            let store = store.clone();
            tokio::spawn(async move { store.put(Item::new(Key::new("p", "new"), Attrs::new()), None).await })
        };
        release_held(&db, 1).await;
        // The purge queues behind the handed-over batch (or runs inline once it is done).
        assert_eq!(db.purge_expired().unwrap(), 1);
        put.await.unwrap().unwrap();
        assert_eq!(store.query(Query::partition("p")).await.unwrap().items.len(), 1);
    }

    #[tokio::test]
    async fn send_and_delete_is_one_transaction() {
        let (_dir, db) = temp_db();
        let q = SqliteQueue::new(db.clone(), "q", 3);
        q.send(Message::now("parent")).await.unwrap();
        let parent = q.receive(1, Duration::from_secs(30), Duration::ZERO).await.unwrap().remove(0);
        let commits = db.group.wal.commits.load(Ordering::Relaxed);
        q.send_and_delete(vec![Message::now("child-1"), Message::now("child-2")], &parent.receipt).await.unwrap();
        assert_eq!(db.group.wal.commits.load(Ordering::Relaxed) - commits, 1);
        assert_eq!(q.depth().unwrap(), QueueDepth { visible: 2, hidden: 0, dead: 0 });

        // Stale receipt: the sends still happen, the delete does nothing.
        let child = q.receive(1, Duration::ZERO, Duration::ZERO).await.unwrap().remove(0);
        let again = q.receive(10, Duration::from_secs(30), Duration::ZERO).await.unwrap();
        assert_eq!(again.len(), 2, "the zero-visibility child is received again");
        q.send_and_delete(vec![Message::now("grandchild")], &child.receipt).await.unwrap();
        assert_eq!(q.depth().unwrap(), QueueDepth { visible: 1, hidden: 2, dead: 0 });

        // No successors: a plain delete.
        for m in &again {
            q.send_and_delete(Vec::new(), &m.receipt).await.unwrap();
        }
        assert_eq!(q.depth().unwrap(), QueueDepth { visible: 1, hidden: 0, dead: 0 });

        // Validation comes first: nothing is sent and nothing deleted.
        let last = q.receive(1, Duration::from_secs(30), Duration::ZERO).await.unwrap().remove(0);
        assert_validation(q.send_and_delete(vec![Message::now("ok"), Message::now("")], &last.receipt).await);
        assert_validation(q.send_and_delete(vec![Message::now("ok")], "not-a-receipt").await);
        assert_eq!(q.depth().unwrap(), QueueDepth { visible: 0, hidden: 1, dead: 0 });
    }

    #[test]
    fn prefix_upper_bound_is_the_next_string() {
        assert_eq!(prefix_upper_bound("a#").as_deref(), Some("a$"));
        assert_eq!(prefix_upper_bound("a\u{10FFFF}").as_deref(), Some("b"));
        assert_eq!(prefix_upper_bound("\u{D7FF}").as_deref(), Some("\u{E000}"));
        assert_eq!(prefix_upper_bound("\u{10FFFF}"), None);
    }

    /// `cargo test --release -p baton --lib adapters::sqlite::tests::bench -- --ignored --nocapture`
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[ignore = "benchmark; run in release with --nocapture"]
    async fn bench_throughput() {
        let (_dir, db) = temp_db();
        let store = Arc::new(SqliteStore::new(db.clone()));
        let rate = |n: usize, t: Instant| n as f64 / t.elapsed().as_secs_f64();

        const N: usize = 50_000;
        let key = Key::new("bench", "counter");
        store.put(Item::new(key.clone(), attrs(json!({"v": 0, "pad": "x".repeat(200)}))), None).await.unwrap();
        let t = Instant::now();
        for i in 0..N {
            let upd = Update::default().set("v", i as i64 + 1).set("state", "running");
            store.update(&key, upd, Some(Cond::eq("v", i as i64))).await.unwrap();
        }
        println!("conditional update, 1 task:            {:>8.0}/s", rate(N, t));

        let t = Instant::now();
        let tasks: Vec<_> = (0..4)
            .map(|w| {
                let store = store.clone();
                tokio::spawn(async move {
                    for i in 0..N / 4 {
                        let key = Key::new(format!("bench#{w}"), format!("step#{:06}", i % 100));
                        store
                            .update(
                                &key,
                                Update::default().add("n", 1),
                                Some(Cond::Not(Box::new(Cond::eq("done", true)))),
                            )
                            .await
                            .unwrap();
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        println!("conditional update, 4 tasks:           {:>8.0}/s", rate(N, t));

        let t = Instant::now();
        for i in 0..N / 2 {
            let run = Key::new(format!("run#{}", i % 1000), "meta");
            let step = Key::new(format!("run#{}", i % 1000), format!("step#{i:06}"));
            store
                .transact(vec![
                    Write::Update { key: run, update: Update::default().add("steps", 1), cond: None },
                    Write::Put {
                        item: Item::new(step, attrs(json!({"status": "done", "out": {"x": i}}))),
                        cond: Some(Cond::NotExists),
                    },
                ])
                .await
                .unwrap();
        }
        println!("2-item transaction, 1 task:            {:>8.0}/s", rate(N / 2, t));

        let t = Instant::now();
        for i in 0..N {
            store.get(&Key::new(format!("run#{}", i % 1000), "meta")).await.unwrap().unwrap();
        }
        println!("get, 1 task:                           {:>8.0}/s", rate(N, t));

        let q = SqliteQueue::new(db.clone(), "bench", 3);
        let t = Instant::now();
        for i in 0..N / 5 {
            q.send(Message::now(format!("{{\"run\":\"run_{i}\",\"step\":\"s\"}}"))).await.unwrap();
        }
        println!("queue send, 1 task:                    {:>8.0}/s", rate(N / 5, t));
        let t = Instant::now();
        let mut n = 0;
        loop {
            let got = q.receive(10, Duration::from_secs(30), Duration::ZERO).await.unwrap();
            if got.is_empty() {
                break;
            }
            for m in got {
                q.delete(&m.receipt).await.unwrap();
                n += 1;
            }
        }
        assert_eq!(n, N / 5);
        println!("queue receive(10)+delete, per message: {:>8.0}/s", rate(n, t));
    }
}

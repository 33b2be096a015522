//! Baton on one machine: the HTTP API, a worker pool and the embedded SQLite store and queue
//! in one process; or, with `BATON_BACKEND=aws`, the same process on DynamoDB + SQS (the
//! variables of `baton::aws`, e.g. against moto started by `infra/moto.sh`).

use baton::adapters::{Sqlite, SqliteQueue, SqliteStore};
use baton::app::{App, AppConfig, AppState};
use baton::aws::AwsSettings;
use baton::secrets::SecretBox;
use clap::Parser;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tracing::{error, info};

mod server;

/// How often the SQLite store is swept of expired items (runs past their retention,
/// idempotency records, rate-limit windows).
const SWEEP_EVERY: Duration = Duration::from_secs(600);

#[derive(Parser, Debug)]
#[command(name = "baton-local", version, about = "Baton, locally: API + workers + SQLite in one process")]
struct Args {
    /// Address to listen on.
    #[arg(long, env = "BATON_ADDR", default_value = "127.0.0.1:3000")]
    addr: SocketAddr,
    /// SQLite database file (created on first start).
    #[arg(long, env = "BATON_DB", default_value = "./baton.db")]
    db: PathBuf,
    /// Store and queue backend: `sqlite`, or `aws` (DynamoDB + SQS, configured by
    /// BATON_TABLE, BATON_QUEUE_URL, BATON_CREATE_RESOURCES, … and the standard AWS variables).
    #[arg(long, env = "BATON_BACKEND", default_value = "sqlite", value_parser = ["sqlite", "aws"])]
    backend: String,
    /// Concurrent queue workers.
    #[arg(long, env = "BATON_WORKERS", default_value_t = 8)]
    workers: usize,
    /// Step lease and queue visibility timeout, in seconds: how soon a step held by a
    /// crashed process is taken over.
    #[arg(long, env = "BATON_LEASE_SECS", default_value_t = 60)]
    lease_secs: u64,
    /// Run starts per account per minute (all its keys together); also calls per minute of
    /// each door without an API key, and of each client address across those doors.
    #[arg(long, env = "BATON_RATE_LIMIT", default_value_t = 500)]
    rate_limit: u64,
    /// Registrations per client address per hour.
    #[arg(long, env = "BATON_REGISTER_LIMIT", default_value_t = 10)]
    register_limit: u64,
    /// Proxies of yours in front of this server: the client address is then read from that
    /// far into X-Forwarded-For. 0 (default): the header is ignored, as any client can send it.
    #[arg(long, env = "BATON_TRUSTED_PROXY_HOPS", default_value_t = 0)]
    trusted_proxy_hops: usize,
    /// Receives after which a message goes to the dead-letter queue.
    #[arg(long, env = "BATON_MAX_RECEIVES", default_value_t = baton::aws::DEFAULT_MAX_RECEIVES)]
    max_receives: u32,
    /// Public URL of this server, for URLs shown to callers.
    #[arg(long, env = "BATON_PUBLIC_URL")]
    public_url: Option<String>,
    /// Allow callbacks and HTTP blocks to reach loopback and private addresses.
    #[arg(long, env = "BATON_ALLOW_PRIVATE_TARGETS", value_parser = clap::builder::BoolishValueParser::new(), default_value = "false", num_args = 0..=1, default_missing_value = "true")]
    allow_private_targets: bool,
    /// First retry delay of an outbound callback, in ms; later ones grow ×3 (capped at
    /// 1440× this) until the retry window ends.
    #[arg(long, env = "BATON_CALLBACK_BACKOFF_MS", default_value_t = 10_000)]
    callback_backoff_ms: u64,
    /// How long a callback is retried before it is marked failed, in seconds.
    #[arg(long, env = "BATON_CALLBACK_WINDOW_SECS", default_value_t = 24 * 3600)]
    callback_window_secs: u64,
    /// Time limit of one callback request, in ms.
    #[arg(long, env = "BATON_CALLBACK_TIMEOUT_MS", default_value_t = 10_000)]
    callback_timeout_ms: u64,
    /// Days a finished run (all its steps, tasks, events and deliveries) is kept; an open run
    /// is kept until twice this after its start. 0: keep runs for ever. Default 30.
    #[arg(long, env = "BATON_RUN_RETENTION_DAYS")]
    run_retention_days: Option<String>,
    /// File holding the AES-256 key that seals stored secrets (created on first start);
    /// default: the database path with the extension `.key`.
    #[arg(long, env = "BATON_KEY_FILE")]
    key_file: Option<PathBuf>,
    /// Seconds a client has to send a request's head, counted from when the connection
    /// starts waiting for it (so also how long an idle keep-alive connection stays open).
    #[arg(long, env = "BATON_HEADER_TIMEOUT_SECS", default_value_t = 10)]
    header_timeout_secs: u64,
    /// Seconds a client has to send a request's body after its head.
    #[arg(long, env = "BATON_BODY_TIMEOUT_SECS", default_value_t = 30)]
    body_timeout_secs: u64,
    /// Open connections one client address may hold; more are closed at once.
    #[arg(long, env = "BATON_MAX_CONNECTIONS_PER_ADDR", default_value_t = 128)]
    max_connections_per_addr: usize,
    /// The sealing key itself, 64 hex digits (instead of a key file).
    #[arg(long, env = "BATON_SECRET_KEY", hide_env_values = true)]
    secret_key: Option<String>,
}

#[tokio::main]
async fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info,baton=info".into()),
        )
        .compact()
        .init();
    if let Err(e) = run(Args::parse()).await {
        error!("{e}");
        eprintln!("baton-local: {e}");
        std::process::exit(1);
    }
}

async fn run(args: Args) -> Result<(), String> {
    if args.lease_secs == 0 {
        return Err("--lease-secs must be at least 1".into());
    }
    let run_retention = baton::retention::parse_days(args.run_retention_days.as_deref())?;
    let config = AppConfig {
        rate_limit_per_minute: args.rate_limit,
        register_limit_per_hour: args.register_limit.max(1),
        trusted_proxy_hops: args.trusted_proxy_hops,
        lease: Duration::from_secs(args.lease_secs),
        public_url: args.public_url.clone().unwrap_or_else(|| format!("http://{}", args.addr)),
        allow_private_targets: args.allow_private_targets,
        callback_backoff: Duration::from_millis(args.callback_backoff_ms.max(1)),
        callback_window: Duration::from_secs(args.callback_window_secs),
        callback_timeout: Duration::from_millis(args.callback_timeout_ms.max(1)),
        max_receives: args.max_receives.max(1),
        run_retention,
        // `BATON_MANAGED_PROVIDER` holds a key: read from the environment only, never a flag.
        ai: baton::ai::AiSettings::from_env()?,
        ..AppConfig::default()
    };
    let (app, db) = match args.backend.as_str() {
        "aws" => (aws_app(&args, config).await?, None),
        _ => {
            let (app, db) = sqlite_app(&args, config)?;
            (app, Some(db))
        }
    };
    let listener =
        tokio::net::TcpListener::bind(args.addr).await.map_err(|e| format!("cannot listen on {}: {e}", args.addr))?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let pool = tokio::spawn(baton::poller::run(app.clone(), args.workers, stop_rx.clone()));
    // DynamoDB deletes expired items itself; SQLite needs a sweep (at start, then periodically).
    let sweeper = db.map(|db| tokio::spawn(baton::retention::sweep_sqlite_every(db, SWEEP_EVERY, stop_rx.clone())));
    let retention = run_retention.map_or("for ever".to_string(), |r| format!("{} days", r.as_secs() / 86_400));
    info!(addr = %args.addr, backend = %args.backend, workers = args.workers, %retention, "baton listening");
    let mut http_stop = stop_rx.clone();
    let limits = server::Limits {
        header_read: Duration::from_secs(args.header_timeout_secs.max(1)),
        body_read: Duration::from_secs(args.body_timeout_secs.max(1)),
        max_connections_per_addr: args.max_connections_per_addr.max(1),
        shutdown_grace: Duration::from_secs(30),
    };
    let server = server::serve(listener, baton::api::router(app.clone()), limits, async move {
        let _ = http_stop.wait_for(|s| *s).await;
    });
    let signals = tokio::spawn(async move {
        shutdown_signal().await;
        info!("shutting down: finishing in-flight steps");
        let _ = stop_tx.send(true);
    });
    server.await;
    // In-flight steps get a bounded time to finish; anything left is released by its lease.
    if tokio::time::timeout(Duration::from_secs(30), pool).await.is_err() {
        error!("workers did not stop within 30 s; their steps will be retried after the lease");
    }
    if let Some(s) = sweeper {
        s.abort();
    }
    signals.abort();
    info!("stopped");
    Ok(())
}

fn sqlite_app(args: &Args, config: AppConfig) -> Result<(AppState, Arc<Sqlite>), String> {
    let secrets = match &args.secret_key {
        Some(hex) => SecretBox::from_hex(hex).map_err(|_| "BATON_SECRET_KEY must be 64 hex digits".to_string())?,
        None => {
            let path = args.key_file.clone().unwrap_or_else(|| args.db.with_extension("key"));
            SecretBox::load_or_create(&path).map_err(|e| format!("cannot use key file {}: {e}", path.display()))?
        }
    };
    let db = Sqlite::open(&args.db).map_err(|e| format!("cannot open database {}: {e}", args.db.display()))?;
    let store = Arc::new(SqliteStore::new(db.clone()));
    let queue = Arc::new(SqliteQueue::new(db.clone(), "steps", args.max_receives));
    info!(db = %args.db.display(), "store: sqlite");
    Ok((App::new(store, queue, Arc::new(secrets), config), db))
}

/// The AWS adapters, configured like the Lambda functions (`baton::aws`); the command-line
/// flags that have an AWS meaning (`--max-receives`, `--secret-key`) override the variables.
async fn aws_app(args: &Args, config: AppConfig) -> Result<AppState, String> {
    let mut settings = AwsSettings::from_env().map_err(|e| match e {
        baton::Error::Validation { message, details } => {
            let lines: Vec<String> = details.iter().map(|d| format!("  - {}", d.message)).collect();
            format!("{message}\n{}", lines.join("\n"))
        }
        other => other.to_string(),
    })?;
    settings.max_receives = args.max_receives;
    if let Some(hex) = &args.secret_key {
        settings.secret_key = Some(hex.clone());
    }
    let backend = baton::aws::connect(&settings).await.map_err(|e| format!("cannot connect to AWS: {e}"))?;
    info!(table = %settings.table, queue = %backend.queue.url(), "store: dynamodb, queue: sqs");
    Ok(App::new(backend.store, backend.queue, backend.secrets, config))
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(s) => s,
            Err(_) => {
                let _ = ctrl_c.await;
                return;
            }
        };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}

//! The application: ports plus configuration, shared by every router and the worker.

use crate::engine::Engine;
use crate::queue::Queue;
use crate::secrets::SecretBox;
use crate::store::Store;
use std::sync::Arc;
use std::time::Duration;

#[derive(Clone, Debug)]
pub struct AppConfig {
    /// Run starts per account per minute (DESIGN.md §5 says per key; every key of an account
    /// shares one budget so that minting keys buys nothing). Also the per-minute budget of
    /// each door without a key, and of each client address across those doors.
    pub rate_limit_per_minute: u64,
    /// Registrations per client address per hour (`BATON_REGISTER_LIMIT`).
    pub register_limit_per_hour: u64,
    /// How many proxies of the operator's stand in front of the local server; `0` (the
    /// default) ignores `X-Forwarded-For`, which any client can write.
    pub trusted_proxy_hops: usize,
    /// How long a claimed step is leased to its worker (and the queue's visibility timeout).
    pub lease: Duration,
    /// Default deadline of a sync execute.
    pub sync_deadline: Duration,
    /// Largest accepted request body.
    pub max_body_bytes: usize,
    /// Public base URL, for URLs shown to callers (trigger URLs).
    pub public_url: String,
    /// Let callbacks and HTTP blocks reach loopback and private addresses
    /// (`BATON_ALLOW_PRIVATE_TARGETS=1`; tests and trusted networks only).
    pub allow_private_targets: bool,
    /// First retry delay of an outbound callback; later ones grow ×3 up to 1440× this
    /// (`BATON_CALLBACK_BACKOFF_MS`; default 10 s, so 10 s, 30 s, 90 s, … capped at 4 h).
    pub callback_backoff: Duration,
    /// How long a callback keeps being retried before it is marked `failed` (24 h).
    pub callback_window: Duration,
    /// Time limit of one callback request.
    pub callback_timeout: Duration,
    /// Receives after which the queue dead-letters a message (`BATON_MAX_RECEIVES`, the
    /// queue's redrive policy): a step still unfinished at that delivery is failed instead,
    /// so its run ends rather than waiting forever on a dead letter.
    pub max_receives: u32,
    /// How long a finished run is kept (`BATON_RUN_RETENTION_DAYS`, default 30 days; `None`:
    /// for ever). See [`crate::retention`] for what expires when.
    pub run_retention: Option<Duration>,
    /// The managed provider and trial allowance of planned runs (`BATON_MANAGED_PROVIDER`,
    /// `BATON_TRIAL_RUNS`).
    pub ai: crate::ai::AiSettings,
}

impl Default for AppConfig {
    fn default() -> Self {
        Self {
            rate_limit_per_minute: 500,
            register_limit_per_hour: 10,
            trusted_proxy_hops: 0,
            lease: Duration::from_secs(60),
            sync_deadline: Duration::from_secs(25),
            // A run input of the full payload limit, with the request's other fields around it.
            max_body_bytes: crate::store::MAX_PAYLOAD_BYTES + 64 * 1024,
            public_url: "http://127.0.0.1:3000".into(),
            allow_private_targets: false,
            callback_backoff: Duration::from_secs(10),
            callback_window: Duration::from_secs(24 * 3600),
            callback_timeout: Duration::from_secs(10),
            max_receives: crate::aws::DEFAULT_MAX_RECEIVES,
            run_retention: Some(Duration::from_secs(crate::retention::DEFAULT_DAYS * 24 * 3600)),
            ai: crate::ai::AiSettings::default(),
        }
    }
}

pub struct App {
    pub store: Arc<dyn Store>,
    pub queue: Arc<dyn Queue>,
    pub engine: Engine,
    /// Seals secrets that must be read back (app signing secrets, credentials).
    pub secrets: Arc<SecretBox>,
    pub config: AppConfig,
}

pub type AppState = Arc<App>;

impl App {
    /// Every deployment builds its application here: `store` is wrapped so that run data
    /// carries the retention TTL ([`crate::retention::Retained`]) unless retention is off.
    pub fn new(store: Arc<dyn Store>, queue: Arc<dyn Queue>, secrets: Arc<SecretBox>, config: AppConfig) -> AppState {
        Self::with_long_queue(store, queue, None, secrets, config)
    }

    /// An application whose workers hand blocks longer than their invocation allows to
    /// `long_queue` (see `Engine::process_until`), with every block executor plugged in.
    pub fn with_long_queue(
        store: Arc<dyn Store>,
        queue: Arc<dyn Queue>,
        long_queue: Option<Arc<dyn Queue>>,
        secrets: Arc<SecretBox>,
        config: AppConfig,
    ) -> AppState {
        let app = Self::without_block_executors(store, queue, long_queue, secrets, config);
        app.plug_block_executors();
        app
    }

    /// An application for what never runs a step (the HTTP functions but `execute`: they
    /// start, read, steer and resume runs). Leaving the executors that call out unplugged
    /// keeps their code (model providers, above all) out of those functions' binaries.
    pub fn without_block_executors(
        store: Arc<dyn Store>,
        queue: Arc<dyn Queue>,
        long_queue: Option<Arc<dyn Queue>>,
        secrets: Arc<SecretBox>,
        config: AppConfig,
    ) -> AppState {
        let store: Arc<dyn Store> = match config.run_retention {
            Some(r) => Arc::new(crate::retention::Retained::new(store, r)),
            None => store,
        };
        let engine = Engine::new(store.clone(), queue.clone(), long_queue, secrets.clone(), config.clone());
        Arc::new(App { store, queue, engine, secrets, config })
    }

    /// Plugs in the executors that need more than the template data (the `agent` and
    /// `plan` blocks). Idempotent.
    pub fn plug_block_executors(&self) {
        let agent = || crate::blocks::agent::AgentExecutor {
            store: self.store.clone(),
            secrets: self.secrets.clone(),
            http: self.engine.services.http.clone(),
            ai: self.config.ai.clone(),
        };
        self.engine.register_executor("agent", Arc::new(agent()));
        self.engine.register_executor("plan", Arc::new(crate::blocks::plan::PlanExecutor(agent())));
    }
}

//! Tessera's multi-tenant core.
//!
//! Everything the product does to data goes through this crate: configuration, the Postgres
//! pool with its tenant-scoped transactions (row-level security), Redis, accounts, provider and
//! API keys, agents and chat, the gateway every model call takes, metering and billing. It knows
//! nothing of Leptos or HTTP, so it compiles and tests quickly; `app` and `server` call into it
//! and map its errors to responses.
//!
//! Modules depend on each other one way (no cycles): `tenancy`, `db`, `redis_client`,
//! `changes` and `crypto` at the bottom; `auth`, `provider_keys`, `api_keys`, `llm` and
//! `metering` on them; `agents` on `llm`; `chat` on `agents`; `gateway` on all of those; and
//! `billing` on `metering` and `agents`.

pub mod agents;
pub mod api_keys;
pub mod audit;
pub mod auth;
pub mod billing;
pub mod changes;
pub mod chat;
pub mod config;
pub mod crypto;
pub mod db;
pub mod demo;
pub mod egress;
pub mod error;
pub mod flags;
pub mod gateway;
pub mod knowledge;
pub mod llm;
pub mod metering;
pub mod observe;
pub mod onboarding;
pub mod operator;
pub mod provider_keys;
pub mod redis_client;
pub mod replies;
pub mod shutdown;
pub mod tenancy;

pub use changes::{Change, Changes};
pub use config::Config;
pub use db::Db;
pub use error::{Error, Result};
pub use redis_client::Redis;
pub use tenancy::{TenantId, UserId};
pub use tessera_types::{
    format, MessageRole, MessageStatus, Month, PlanId, Provider, ReplyEnd, Role,
};

/// A map of the in-process state a model call reads (the gateway's caches, the flags, the
/// budget's slices, the metrics' handles), hashed with foldhash instead of SipHash, which costs
/// several times as much per lookup (a call makes a dozen). Its seed differs from process to
/// process (it is drawn from the addresses the system's layout randomisation gave the process);
/// the keys are ids, hashes and names, the maps bounded.
pub type FastMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;

/// The shared services a request handler needs, cloned cheaply into every handler.
#[derive(Clone)]
pub struct Services {
    pub config: std::sync::Arc<Config>,
    pub db: Db,
    pub redis: Redis,
    /// Announces changes to in-process caches here and on every replica.
    pub changes: Changes,
    pub throttle: auth::throttle::LoginThrottle,
    /// The one path for model calls.
    pub gateway: gateway::Gateway,
    /// Stripe, when billing is configured.
    pub stripe: Option<billing::StripeApi>,
    /// Set on SIGTERM: the workers finish what they hold and stop.
    pub shutdown: shutdown::Shutdown,
}

impl Services {
    /// Assembles the services from connected pools.
    pub fn new(config: Config, db: Db, redis: Redis) -> Self {
        let throttle = auth::throttle::LoginThrottle::new(
            redis.clone(),
            auth::throttle::ThrottleLimits {
                signups_per_address: config.signups_per_hour,
                ..Default::default()
            },
        );
        let config = std::sync::Arc::new(config);
        let changes = Changes::new(redis.clone());
        let metering = metering::Metering::new(db.clone(), redis.clone());
        let flags = flags::Flags::new(db.clone(), &changes);
        let gateway = gateway::Gateway::new(config.clone(), db.clone(), metering, &changes, flags);
        let stripe = config
            .stripe
            .as_ref()
            .and_then(|c| match billing::StripeApi::new(c) {
                Ok(api) => Some(api),
                Err(e) => {
                    tracing::error!(error = %e, "Stripe client could not be built; billing is off");
                    None
                }
            });
        Self {
            stripe,
            config,
            db,
            redis,
            changes,
            throttle,
            gateway,
            shutdown: shutdown::Shutdown::new(),
        }
    }

    /// Starts the work a serving process does in the background: the [workers](Self::start_workers),
    /// the listener that keeps in-process caches fresh, and loading the tokenizer.
    pub fn start_background(&self) -> Vec<tokio::task::JoinHandle<()>> {
        let workers = self.start_workers();
        self.changes.listen();
        tokio::spawn(self.gateway.flags.clone().run());
        tokio::spawn(llm::tokens::warm_up());
        workers
    }

    /// Starts the background workers: the ledger writer (draining settled usage into Postgres),
    /// the ingestion workers (`TESSERA_INGEST_WORKERS`) and, with Stripe configured, the meter worker reporting overage.
    /// They run until [`Services::shutdown`] is triggered, then finish what they hold (the job
    /// in hand, the ledger hand-off); await the handles to know they have.
    pub fn start_workers(&self) -> Vec<tokio::task::JoinHandle<()>> {
        let stop = &self.shutdown;
        let mut handles = vec![tokio::spawn(
            metering::LedgerWriter::new(self.db.clone(), self.redis.clone())
                .run(stop.clone(), std::time::Duration::from_secs(10)),
        )];
        for _ in 0..self.config.ingest_workers {
            handles.push(tokio::spawn(
                self.ingest_worker(Default::default()).run(stop.clone()),
            ));
        }
        if let Some(api) = self.stripe.clone() {
            handles.push(tokio::spawn(billing::meter::run(
                self.db.clone(),
                api,
                std::time::Duration::from_secs(self.config.meter_interval_secs),
                std::time::Duration::from_secs(self.config.meter_delay_secs),
                stop.clone(),
            )));
        }
        handles
    }

    /// An ingestion worker over these services: documents are embedded through the gateway
    /// and their vectors stored where the gateway searches them.
    pub fn ingest_worker(
        &self,
        options: knowledge::ingest::WorkerOptions,
    ) -> knowledge::ingest::Worker<gateway::Gateway, knowledge::vectors::Vectors> {
        knowledge::ingest::Worker::new(
            self.db.clone(),
            self.gateway.clone(),
            self.gateway.vectors.clone(),
            options,
        )
        .announcing(self.changes.clone())
    }

    /// The master keys that protect the clinics' provider keys.
    pub fn master_keys(&self) -> &crypto::MasterKeys {
        &self.config.master_keys
    }
}

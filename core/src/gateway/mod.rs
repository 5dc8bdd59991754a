//! The gateway: the one path every model call takes, from the chat UI or the API.
//!
//! [`Gateway::chat`] does, in order: **who** (the [`Caller`] and the clinic's limits; an
//! inactive clinic is refused), **budget** (one Redis reservation of the worst case), **key**
//! (the clinic's own key, else the platform's if the plan allows, else a message naming what to
//! configure), **call** (the provider follows from the model; retries with backoff only while
//! nothing has reached the client), and **settle** (the real usage, or nothing for a failed
//! call, counted live and handed to the ledger; see [`crate::metering`]).
//!
//! In steady state a call costs one Redis round trip before the provider is called and none to
//! Postgres: API keys, limits, agents and decrypted provider keys are cached in-process for a
//! short time ([`lookups`]) and dropped on every replica when the core announces a change
//! ([`crate::changes`]). Sending and retrying is [`send`]; reading replies, streaming and
//! settling is [`call`].

mod cache;
mod call;
mod embed;
mod lookups;
mod send;

pub use embed::{Embedded, DEFAULT_EMBEDDING_MODEL, MAX_EMBEDDING_INPUTS};
pub use lookups::{provider_for_model, ModelInfo};

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use tokio::sync::{mpsc, OnceCell};
use uuid::Uuid;

use crate::changes::Changes;
use crate::db::Db;
use crate::knowledge::qdrant::QdrantVectors;
use crate::knowledge::search::Passage;
use crate::knowledge::vectors::{PgVectors, Vectors};
use crate::llm::{prompt_upper_bound, wire, ChatRequest, LlmError, LlmErrorKind, Usage};
use crate::metering::{Metering, Prices};
use crate::tenancy::{TenantId, UserId};
use crate::{agents, Config, Error, Provider};
use call::Call;
use lookups::Caches;
use secrecy::ExposeSecret;

/// Who is calling: a clinic, and the person or API key acting for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Caller {
    pub tenant: TenantId,
    pub user: Option<UserId>,
    pub api_key: Option<Uuid>,
}

/// A finished reply.
#[derive(Clone, Debug, PartialEq)]
pub struct Completion {
    /// Tessera's id for the call (also the ledger's idempotency key).
    pub id: Uuid,
    pub model: String,
    pub provider: Provider,
    pub content: String,
    pub finish_reason: String,
    pub usage: Usage,
    /// The passages an agent's reply was grounded in, in citation order (`[1]` first).
    pub sources: Vec<Passage>,
}

/// What a streamed reply yields.
#[derive(Clone, Debug, PartialEq)]
pub enum StreamEvent {
    Text(String),
    Finish(String),
    /// The last event of a successful stream: the usage as recorded.
    Usage(Usage),
}

/// A streamed reply. Dropping it (the client went away, or pressed Stop) ends the provider call
/// and charges what was generated.
pub struct ChatStream {
    pub id: Uuid,
    pub model: String,
    pub provider: Provider,
    /// The passages an agent's reply is grounded in, in citation order (`[1]` first).
    pub sources: Vec<Passage>,
    rx: mpsc::Receiver<Result<StreamEvent, LlmError>>,
}

impl futures_util::Stream for ChatStream {
    type Item = Result<StreamEvent, LlmError>;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.rx.poll_recv(cx)
    }
}

/// The outcome of [`Gateway::chat`].
pub enum ChatOutcome {
    Complete(Completion),
    Stream(ChatStream),
}

/// The one path for model calls. Cheap to clone.
#[derive(Clone)]
pub struct Gateway {
    config: Arc<Config>,
    db: Db,
    /// For the providers the installation configures.
    http: reqwest::Client,
    /// For addresses clinics supply (see [`crate::egress`]).
    egress: reqwest::Client,
    pub metering: Metering,
    /// Where the clinics' document vectors live.
    pub vectors: Vectors,
    prices: Arc<OnceCell<Prices>>,
    caches: Arc<Caches>,
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway").finish_non_exhaustive()
    }
}

impl Gateway {
    /// A gateway whose caches follow the changes `changes` announces.
    pub fn new(
        config: Arc<Config>,
        db: Db,
        metering: Metering,
        http: reqwest::Client,
        changes: &Changes,
    ) -> Self {
        let caches = Arc::new(Caches::default());
        let subscribed = Arc::clone(&caches);
        changes.subscribe(move |change| subscribed.apply(change));
        let vectors = match &config.qdrant_url {
            Some(url) => {
                let key = config.qdrant_api_key.as_ref().map(|k| k.expose_secret());
                match QdrantVectors::new(url, key, &config.qdrant_prefix) {
                    Ok(q) => {
                        let q = q.with_dedicated(db.clone());
                        // A clinic's plan may have changed: its points follow (Enterprise
                        // clinics have collections of their own).
                        let placed = q.clone();
                        changes.subscribe(move |change| {
                            if let crate::Change::Tenant(tenant) = change {
                                let q = placed.clone();
                                tokio::spawn(async move {
                                    match q.relocate(tenant).await {
                                        Ok(0) => {}
                                        Ok(n) => tracing::info!(%tenant, moved = n, "vectors moved to follow the clinic's plan"),
                                        Err(e) => tracing::warn!(%tenant, error = %e, "vectors could not follow the clinic's plan"),
                                    }
                                });
                            }
                        });
                        Vectors::Qdrant(q)
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "Qdrant could not be set up; vectors stay in Postgres");
                        Vectors::Postgres(PgVectors::new(db.clone()))
                    }
                }
            }
            None => Vectors::Postgres(PgVectors::new(db.clone())),
        };
        Self {
            egress: crate::egress::client(config.allow_private_endpoints),
            vectors,
            config,
            db,
            http,
            metering,
            prices: Arc::new(OnceCell::new()),
            caches,
        }
    }

    /// Makes one chat call through every step: who, budget, key, call, settle.
    #[tracing::instrument(level = "debug", skip_all, fields(tenant = %caller.tenant, model = %req.model, stream = req.stream))]
    pub async fn chat(&self, caller: &Caller, req: ChatRequest) -> Result<ChatOutcome, LlmError> {
        if req.messages.is_empty() {
            return Err(LlmError::bad_request(
                "messages: at least one message is required.",
            ));
        }
        if req.model.trim().is_empty() {
            return Err(LlmError::bad_request("model: name the model to use."));
        }
        // Who.
        let limits = self.limits(caller.tenant).await?;
        if !limits.active {
            return Err(Error::forbidden("This clinic has been deactivated.").into());
        }
        // An agent named as the model brings its own model, instructions and limits, and the
        // clinic's passages for the question.
        let (req, sources) = match req.model.strip_prefix(agents::MODEL_PREFIX) {
            Some(slug) => match self.agent(caller.tenant, slug).await? {
                Some(agent) => {
                    let question = req
                        .messages
                        .iter()
                        .rev()
                        .find(|m| m.role == crate::llm::MessageRole::User)
                        .map(|m| m.content.clone())
                        .unwrap_or_default();
                    let passages = self.retrieve(caller, &agent, &question).await?;
                    let (req, used) = agents::apply(&agent, req, &passages);
                    let mut sources = passages;
                    sources.truncate(used);
                    (req, sources)
                }
                None => return Err(LlmError::unknown_model(&req.model)),
            },
            None => (req, Vec::new()),
        };
        let now = time::OffsetDateTime::now_utc();
        if let Some(message) = limits.payment_block(self.config.billing_grace_days, now) {
            return Err(LlmError::new(LlmErrorKind::PaymentOverdue, message));
        }
        // Key (before the budget, so a missing key costs no reservation).
        let chosen = self.choose(caller.tenant, &limits, &req.model).await?;
        // Budget: the worst case.
        let max_tokens = req
            .max_tokens
            .unwrap_or(self.config.default_max_tokens)
            .max(1);
        let worst = prompt_upper_bound(&req.messages) + i64::from(max_tokens);
        let reservation = self
            .metering
            .hold(self.metering.reserve(caller.tenant, &limits, worst).await?);
        // Call.
        let body = wire::request_body(chosen.provider, &req, max_tokens);
        let started = Instant::now();
        let response = match self.send(&chosen, send::Op::Chat, &body).await {
            Ok(r) => r,
            Err(e) => {
                send::release(reservation).await;
                return Err(e);
            }
        };
        let call = Call {
            gateway: self.clone(),
            caller: *caller,
            agent: req.agent,
            chosen,
            model: req.model,
            messages: req.messages,
            max_tokens: i64::from(max_tokens),
            reservation,
            started,
            sources,
        };
        if req.stream {
            Ok(ChatOutcome::Stream(call.stream(response)))
        } else {
            call.complete(response).await.map(ChatOutcome::Complete)
        }
    }
}

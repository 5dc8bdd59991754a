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
//! Postgres: API keys, limits and decrypted provider keys are cached in-process for a short
//! time and dropped on every replica when they change (Redis pub/sub, [`Gateway::listen`]).

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};
use tokio::sync::{mpsc, OnceCell};
use uuid::Uuid;

use super::cache::TtlCache;
use super::wire::{self, Piece};
use super::{estimate_tokens, prompt_upper_bound, ChatMessage, LlmError, Usage};
use crate::api_keys::{self, ApiCaller};
use crate::db::Db;
use crate::keys::{self, Provider, ResolvedKey};
use crate::metering::{self, Limits, Metering, Prices, Reservation, UsageEvent};
use crate::tenancy::{TenantId, UserId};
use crate::{Config, Error, Redis};

const ANTHROPIC_VERSION: &str = "2023-06-01";
const CACHE_TTL: Duration = Duration::from_secs(60);
const LIMITS_TTL: Duration = Duration::from_secs(30);

/// Who is calling: a clinic, and the person or API key acting for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Caller {
    pub tenant: TenantId,
    pub user: Option<UserId>,
    pub api_key: Option<Uuid>,
}

/// A chat call, already validated by its route.
#[derive(Clone, Debug, Default)]
pub struct ChatRequest {
    pub model: String,
    pub messages: Vec<ChatMessage>,
    pub max_tokens: Option<u32>,
    pub temperature: Option<f32>,
    pub top_p: Option<f32>,
    pub stop: Vec<String>,
    pub stream: bool,
    /// The agent making the call, recorded with its usage (set by [`crate::agents::apply`]).
    pub agent: Option<Uuid>,
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

/// What changed, for cache invalidation across replicas.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Change {
    /// A clinic's provider keys, agents, plan, cap or status.
    Tenant(TenantId),
    /// An API key was revoked.
    ApiKey(Uuid),
}

impl Change {
    fn encode(self) -> String {
        match self {
            Change::Tenant(t) => format!("tenant:{t}"),
            Change::ApiKey(k) => format!("api_key:{k}"),
        }
    }

    fn decode(s: &str) -> Option<Self> {
        let (kind, id) = s.split_once(':')?;
        let id = Uuid::parse_str(id).ok()?;
        match kind {
            "tenant" => Some(Change::Tenant(TenantId(id))),
            "api_key" => Some(Change::ApiKey(id)),
            _ => None,
        }
    }
}

/// The key a call will use.
#[derive(Clone)]
struct Chosen {
    provider: Provider,
    key: Arc<ResolvedKey>,
    /// The platform's own key, not the clinic's.
    platform: bool,
}

/// The one path for model calls. Cheap to clone.
#[derive(Clone)]
pub struct Gateway {
    config: Arc<Config>,
    db: Db,
    redis: Redis,
    http: reqwest::Client,
    pub metering: Metering,
    prices: Arc<OnceCell<Prices>>,
    api_keys: Arc<TtlCache<[u8; 32], ApiCaller>>,
    limits: Arc<TtlCache<TenantId, Limits>>,
    provider_keys: Arc<TtlCache<(TenantId, Provider), Option<Arc<ResolvedKey>>>>,
    agents: Arc<TtlCache<(TenantId, String), Option<Arc<crate::agents::Agent>>>>,
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway").finish_non_exhaustive()
    }
}

impl Gateway {
    pub fn new(config: Arc<Config>, db: Db, redis: Redis, http: reqwest::Client) -> Self {
        Self {
            metering: Metering::new(db.clone(), redis.clone()),
            config,
            db,
            redis,
            http,
            prices: Arc::new(OnceCell::new()),
            api_keys: Arc::new(TtlCache::new(CACHE_TTL, 100_000)),
            limits: Arc::new(TtlCache::new(LIMITS_TTL, 100_000)),
            provider_keys: Arc::new(TtlCache::new(CACHE_TTL, 100_000)),
            agents: Arc::new(TtlCache::new(LIMITS_TTL, 100_000)),
        }
    }

    fn channel(&self) -> String {
        self.redis.key("invalidate")
    }

    /// The caller behind an API key (`tsk_...`), from the cache when possible. `None` for an
    /// unknown or revoked key.
    pub async fn authenticate(&self, token: &str) -> crate::Result<Option<Caller>> {
        let hash: [u8; 32] = Sha256::digest(token.trim().as_bytes()).into();
        let found = match self.api_keys.get(&hash) {
            Some(c) => Some(c),
            None => {
                let found = api_keys::authenticate(&self.db, token).await?;
                if let Some(c) = &found {
                    self.api_keys.insert(hash, c.clone());
                }
                found
            }
        };
        Ok(found.map(|c| Caller {
            tenant: c.tenant,
            user: None,
            api_key: Some(c.key_id),
        }))
    }

    /// A clinic's limits, from the cache when possible.
    pub async fn limits(&self, tenant: TenantId) -> crate::Result<Limits> {
        if let Some(l) = self.limits.get(&tenant) {
            return Ok(l);
        }
        let l = metering::limits(&self.db, tenant).await?;
        self.limits.insert(tenant, l.clone());
        Ok(l)
    }

    /// An agent by its slug, from the cache when possible.
    async fn agent(
        &self,
        tenant: TenantId,
        slug: &str,
    ) -> crate::Result<Option<Arc<crate::agents::Agent>>> {
        let key = (tenant, slug.to_string());
        if let Some(a) = self.agents.get(&key) {
            return Ok(a);
        }
        let a = crate::agents::by_slug(&self.db, tenant, slug)
            .await?
            .map(Arc::new);
        self.agents.insert(key, a.clone());
        Ok(a)
    }

    async fn clinic_key(
        &self,
        tenant: TenantId,
        provider: Provider,
    ) -> crate::Result<Option<Arc<ResolvedKey>>> {
        if let Some(k) = self.provider_keys.get(&(tenant, provider)) {
            return Ok(k);
        }
        let k = keys::resolve(&self.db, self.config.master_keys.as_ref(), tenant, provider)
            .await?
            .map(Arc::new);
        self.provider_keys.insert((tenant, provider), k.clone());
        Ok(k)
    }

    fn platform_key(&self, provider: Provider) -> Option<Arc<ResolvedKey>> {
        let secret = match provider {
            Provider::OpenAi => self.config.platform_openai_key.as_ref(),
            Provider::Anthropic => self.config.platform_anthropic_key.as_ref(),
            Provider::OpenAiCompatible => None,
        }?;
        Some(Arc::new(ResolvedKey {
            provider,
            secret: Some(SecretString::from(secret.expose_secret().to_string())),
            base_url: None,
        }))
    }

    /// The key a call to `provider` would use: the clinic's own, else the platform's when the
    /// plan allows it.
    pub async fn usable_key(
        &self,
        tenant: TenantId,
        provider: Provider,
    ) -> crate::Result<Option<Arc<ResolvedKey>>> {
        if let Some(key) = self.clinic_key(tenant, provider).await? {
            return Ok(Some(key));
        }
        if self.limits(tenant).await?.platform_keys {
            return Ok(self.platform_key(provider));
        }
        Ok(None)
    }

    /// The provider and key for `model`: the clinic's key, else the platform's when the plan
    /// allows, else the clinic's OpenAI-compatible endpoint for models no provider claims.
    async fn choose(
        &self,
        tenant: TenantId,
        limits: &Limits,
        model: &str,
    ) -> Result<Chosen, LlmError> {
        let compat = || async {
            self.clinic_key(tenant, Provider::OpenAiCompatible)
                .await
                .map(|k| {
                    k.map(|key| Chosen {
                        provider: Provider::OpenAiCompatible,
                        key,
                        platform: false,
                    })
                })
        };
        let Some(provider) = provider_for_model(model) else {
            return match compat().await? {
                Some(c) => Ok(c),
                None => Err(LlmError::unknown_model(model)),
            };
        };
        if let Some(key) = self.clinic_key(tenant, provider).await? {
            return Ok(Chosen {
                provider,
                key,
                platform: false,
            });
        }
        if limits.platform_keys {
            if let Some(key) = self.platform_key(provider) {
                return Ok(Chosen {
                    provider,
                    key,
                    platform: true,
                });
            }
        }
        if provider == Provider::OpenAi {
            if let Some(c) = compat().await? {
                return Ok(c);
            }
        }
        Err(LlmError::no_key(provider))
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
        // An agent named as the model brings its own model, instructions and limits.
        let req = match req.model.strip_prefix(crate::agents::MODEL_PREFIX) {
            Some(slug) => match self.agent(caller.tenant, slug).await? {
                Some(agent) => crate::agents::apply(&agent, req),
                None => return Err(LlmError::unknown_model(&req.model)),
            },
            None => req,
        };
        if !limits.active {
            return Err(Error::forbidden("This clinic has been deactivated.").into());
        }
        if let Some(message) = crate::billing::payment_block(
            limits.payment_failed_at,
            self.config.billing_grace_days,
            time::OffsetDateTime::now_utc(),
        ) {
            return Err(LlmError::new(super::LlmErrorKind::PaymentOverdue, message));
        }
        // Key (before the budget, so a missing key costs no reservation).
        let chosen = self.choose(caller.tenant, &limits, &req.model).await?;
        // Budget: the worst case.
        let max_tokens = req
            .max_tokens
            .unwrap_or(self.config.default_max_tokens)
            .max(1);
        let worst = prompt_upper_bound(&req.messages) + i64::from(max_tokens);
        let reservation = self.metering.reserve(caller.tenant, &limits, worst).await?;
        // Call.
        let body = wire::request_body(
            chosen.provider,
            &req.model,
            &req.messages,
            max_tokens,
            req.temperature,
            req.top_p,
            &req.stop,
            req.stream,
        );
        let started = Instant::now();
        let response = match self.send(&chosen, &body).await {
            Ok(r) => r,
            Err(e) => {
                self.release(reservation).await;
                return Err(e);
            }
        };
        let call = Call {
            gateway: self.clone(),
            caller: *caller,
            agent: req.agent,
            chosen,
            model: req.model.clone(),
            messages: req.messages,
            reservation,
            started,
        };
        if req.stream {
            Ok(ChatOutcome::Stream(call.stream(response)))
        } else {
            call.complete(response).await.map(ChatOutcome::Complete)
        }
    }

    async fn release(&self, reservation: Reservation) {
        if let Err(e) = self.metering.release(reservation).await {
            // The reservation expires by itself; nothing is charged either way.
            tracing::warn!(error = ?e, "could not release a reservation");
        }
    }

    fn endpoint(&self, chosen: &Chosen) -> Result<String, LlmError> {
        Ok(match chosen.provider {
            Provider::OpenAi => format!("{}/chat/completions", self.config.openai_base_url),
            Provider::Anthropic => format!("{}/v1/messages", self.config.anthropic_base_url),
            Provider::OpenAiCompatible => {
                let base = chosen.key.base_url.as_deref().ok_or_else(|| {
                    LlmError::new(
                        super::LlmErrorKind::NoKey,
                        "The OpenAI-compatible endpoint has no base URL. An admin can set it under Settings → Provider keys.",
                    )
                })?;
                format!("{}/chat/completions", base.trim_end_matches('/'))
            }
        })
    }

    /// Sends a call, retrying with backoff on timeouts, unreachable hosts, 429 and 5xx. Nothing
    /// has reached the client yet, so a retry is invisible to it.
    async fn send(
        &self,
        chosen: &Chosen,
        body: &serde_json::Value,
    ) -> Result<reqwest::Response, LlmError> {
        let url = self.endpoint(chosen)?;
        if chosen.provider == Provider::OpenAiCompatible && !self.config.allow_private_endpoints {
            super::guard_endpoint(&url).await?;
        }
        let bytes = serde_json::to_vec(body).map_err(|e| LlmError::internal(e.to_string()))?;
        let timeout = Duration::from_secs(self.config.provider_timeout_secs);
        let mut attempt = 0;
        loop {
            let mut request = self
                .http
                .post(&url)
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(bytes.clone());
            if let Some(secret) = &chosen.key.secret {
                request = match chosen.provider {
                    Provider::Anthropic => request
                        .header("x-api-key", secret.expose_secret())
                        .header("anthropic-version", ANTHROPIC_VERSION),
                    _ => request.bearer_auth(secret.expose_secret()),
                };
            }
            let err = match tokio::time::timeout(timeout, request.send()).await {
                Err(_) => LlmError::timeout(chosen.provider, timeout),
                Ok(Err(e)) => {
                    tracing::warn!(error = %e.without_url(), provider = chosen.provider.as_str(), "provider unreachable");
                    LlmError::unreachable(chosen.provider)
                }
                Ok(Ok(res)) if res.status().is_success() => return Ok(res),
                Ok(Ok(res)) => {
                    let status = res.status().as_u16();
                    let text = tokio::time::timeout(timeout, res.text())
                        .await
                        .ok()
                        .and_then(Result::ok)
                        .unwrap_or_default();
                    let err = LlmError::from_provider(
                        chosen.provider,
                        chosen.platform,
                        status,
                        &text,
                        chosen.key.secret.as_ref(),
                    );
                    if !(status == 429 || status >= 500) {
                        return Err(err);
                    }
                    err
                }
            };
            if attempt >= self.config.provider_retries {
                return Err(err);
            }
            let backoff =
                Duration::from_millis(200 * 2u64.pow(attempt) + rand::random::<u64>() % 100);
            tracing::info!(attempt, ?backoff, error = %err.message, "retrying provider call");
            tokio::time::sleep(backoff).await;
            attempt += 1;
        }
    }

    async fn prices(&self) -> &Prices {
        self.prices
            .get_or_init(|| async {
                Prices::load(&self.db).await.unwrap_or_else(|e| {
                    tracing::error!(error = ?e, "model prices could not be read; costs will show as 0");
                    Prices::default()
                })
            })
            .await
    }

    /// Drops cached state about `change` here, and tells every other replica to do the same.
    pub async fn invalidate(&self, change: Change) {
        self.apply(change);
        let published: redis::RedisResult<i64> = redis::cmd("PUBLISH")
            .arg(self.channel())
            .arg(change.encode())
            .query_async(&mut self.redis.conn())
            .await;
        if let Err(e) = published {
            tracing::warn!(error = ?e, "could not announce a change to other replicas; their caches expire within a minute");
        }
    }

    fn apply(&self, change: Change) {
        match change {
            Change::Tenant(t) => {
                self.limits.remove_where(|k, _| *k == t);
                self.provider_keys.remove_where(|(k, _), _| *k == t);
                self.agents.remove_where(|(k, _), _| *k == t);
            }
            Change::ApiKey(id) => self.api_keys.remove_where(|_, c| c.key_id == id),
        }
    }

    fn clear_caches(&self) {
        self.api_keys.clear();
        self.limits.clear();
        self.provider_keys.clear();
        self.agents.clear();
    }

    /// Listens for changes announced by any replica, for as long as the process runs. While
    /// the subscription is down, caching is off (every lookup misses) so nothing stale is used.
    pub fn listen(&self) -> tokio::task::JoinHandle<()> {
        let gw = self.clone();
        tokio::spawn(async move {
            loop {
                match gw.redis.pubsub().await {
                    Ok(mut pubsub) => {
                        if let Err(e) = pubsub.subscribe(gw.channel()).await {
                            tracing::warn!(error = ?e, "cache invalidation: subscribe failed");
                        } else {
                            // Anything announced while unsubscribed was missed.
                            gw.clear_caches();
                            let mut messages = pubsub.on_message();
                            while let Some(msg) = messages.next().await {
                                if let Some(change) = msg
                                    .get_payload::<String>()
                                    .ok()
                                    .and_then(|p| Change::decode(&p))
                                {
                                    gw.apply(change);
                                }
                            }
                            tracing::warn!("cache invalidation: subscription ended");
                        }
                    }
                    Err(e) => tracing::warn!(error = ?e, "cache invalidation: cannot connect"),
                }
                gw.clear_caches();
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        })
    }
}

/// Which provider serves a model, by its name; `None` for names no provider claims (left to the
/// clinic's OpenAI-compatible endpoint).
pub fn provider_for_model(model: &str) -> Option<Provider> {
    let m = model.trim();
    if m.starts_with("claude-") {
        Some(Provider::Anthropic)
    } else if m.starts_with("gpt-")
        || m.starts_with("chatgpt-")
        || m.starts_with("text-embedding-")
        || ["o1", "o3", "o4"]
            .iter()
            .any(|p| m == *p || m.starts_with(&format!("{p}-")))
    {
        Some(Provider::OpenAi)
    } else {
        None
    }
}

/// One call in progress, after the provider answered.
struct Call {
    gateway: Gateway,
    caller: Caller,
    agent: Option<Uuid>,
    chosen: Chosen,
    model: String,
    messages: Vec<ChatMessage>,
    reservation: Reservation,
    started: Instant,
}

impl Call {
    fn event(&self, usage: Usage, streamed: bool, cancelled: bool, cost: i64) -> UsageEvent {
        UsageEvent {
            id: self.reservation.id,
            tenant: self.caller.tenant,
            user: self.caller.user,
            api_key: self.caller.api_key,
            agent: self.agent,
            provider: self.chosen.provider.as_str().to_string(),
            model: self.model.clone(),
            prompt_tokens: usage.prompt_tokens,
            completion_tokens: usage.completion_tokens,
            cached_tokens: usage.cached_tokens,
            cost_micro_usd: cost,
            latency_ms: self.started.elapsed().as_millis().min(i32::MAX as u128) as i32,
            estimated: usage.estimated,
            streamed,
            cancelled,
            idempotency_key: self.reservation.id.to_string(),
            occurred_at_ms: (self.reservation.started_at.unix_timestamp_nanos() / 1_000_000) as i64,
        }
    }

    /// Settles the reservation with `usage`. A settle that fails is logged: the reply was
    /// delivered, and the reservation expires on its own.
    async fn settle(self, usage: Usage, streamed: bool, cancelled: bool) -> Usage {
        let cost = self.gateway.prices().await.cost(
            &self.model,
            usage.prompt_tokens,
            usage.completion_tokens,
        );
        let event = self.event(usage, streamed, cancelled, cost);
        if let Err(e) = self.gateway.metering.settle(self.reservation, &event).await {
            tracing::error!(error = ?e, event = ?event, "usage could not be settled");
        }
        usage
    }

    fn estimate(&self, completion: &str, known: Option<Usage>) -> Usage {
        let prompt = known
            .map(|u| u.prompt_tokens)
            .filter(|p| *p > 0)
            .unwrap_or_else(|| {
                self.messages
                    .iter()
                    .map(|m| estimate_tokens(&m.content) + 3)
                    .sum::<i64>()
                    + 3
            });
        Usage {
            prompt_tokens: prompt,
            completion_tokens: estimate_tokens(completion),
            cached_tokens: known.map(|u| u.cached_tokens.max(0)).unwrap_or(0),
            estimated: true,
        }
    }

    async fn complete(self, response: reqwest::Response) -> Result<Completion, LlmError> {
        let timeout = Duration::from_secs(self.gateway.config.provider_timeout_secs);
        let provider = self.chosen.provider;
        let body = match tokio::time::timeout(timeout, response.json::<serde_json::Value>()).await {
            Ok(Ok(b)) => b,
            Ok(Err(_)) => {
                self.gateway.release(self.reservation).await;
                return Err(LlmError::malformed(provider));
            }
            Err(_) => {
                self.gateway.release(self.reservation).await;
                return Err(LlmError::timeout(provider, timeout));
            }
        };
        let Some(reply) = wire::parse_reply(provider, &body) else {
            self.gateway.release(self.reservation).await;
            return Err(LlmError::malformed(provider));
        };
        let usage = match reply.usage {
            Some(u) => u,
            None => self.estimate(&reply.text, None),
        };
        let id = self.reservation.id;
        let model = self.model.clone();
        let usage = self.settle(usage, false, false).await;
        Ok(Completion {
            id,
            model,
            provider,
            content: reply.text,
            finish_reason: reply.finish_reason,
            usage,
        })
    }

    fn stream(self, response: reqwest::Response) -> ChatStream {
        let (tx, rx) = mpsc::channel(64);
        let stream = ChatStream {
            id: self.reservation.id,
            model: self.model.clone(),
            provider: self.chosen.provider,
            rx,
        };
        tokio::spawn(self.pump(response, tx));
        stream
    }

    /// Reads the provider's stream, forwards text, and settles when it ends: the provider's
    /// usage on success (counted and marked estimated if it sent none), what was generated if
    /// the client went away, nothing if the provider failed.
    async fn pump(
        self,
        response: reqwest::Response,
        tx: mpsc::Sender<Result<StreamEvent, LlmError>>,
    ) {
        let provider = self.chosen.provider;
        let idle = Duration::from_secs(self.gateway.config.provider_timeout_secs);
        let mut body = response.bytes_stream();
        let mut parser = wire::SseParser::default();
        let mut pieces = Vec::new();
        let mut text = String::new();
        let mut usage: Option<Usage> = None;
        let mut finished = false;
        let mut done = false;
        let mut failure: Option<LlmError> = None;
        let mut cancelled = false;
        'read: loop {
            let next = tokio::select! {
                _ = tx.closed() => { cancelled = true; break 'read; }
                next = tokio::time::timeout(idle, body.next()) => next,
            };
            let bytes = match next {
                Err(_) => {
                    failure = Some(LlmError::timeout(provider, idle));
                    break;
                }
                Ok(None) => break,
                Ok(Some(Err(e))) => {
                    tracing::warn!(error = %e.without_url(), "provider stream broke");
                    failure = Some(LlmError::interrupted(provider));
                    break;
                }
                Ok(Some(Ok(bytes))) => bytes,
            };
            for ev in parser.feed(&bytes) {
                wire::parse_event(provider, &ev, &mut pieces);
            }
            for piece in pieces.drain(..) {
                let out = match piece {
                    Piece::Text(t) => {
                        text.push_str(&t);
                        StreamEvent::Text(t)
                    }
                    Piece::Finish(r) => {
                        finished = true;
                        StreamEvent::Finish(r)
                    }
                    Piece::Usage(u) => {
                        usage = Some(wire::merge_usage(usage, u));
                        continue;
                    }
                    Piece::Done => {
                        done = true;
                        continue;
                    }
                    Piece::Error(message) => {
                        let secret = self.chosen.key.secret.as_ref();
                        failure = Some(LlmError::from_provider(
                            provider,
                            self.chosen.platform,
                            502,
                            &serde_json::json!({"error": {"message": message}}).to_string(),
                            secret,
                        ));
                        break 'read;
                    }
                };
                if tx.send(Ok(out)).await.is_err() {
                    cancelled = true;
                    break 'read;
                }
            }
            if done {
                break;
            }
        }
        drop(body);
        if cancelled {
            // Stopped by the caller: charge what was generated.
            let complete_usage = usage.filter(|u| finished && u.completion_tokens > 0);
            let charged = complete_usage.unwrap_or_else(|| self.estimate(&text, usage));
            self.settle(charged, true, true).await;
            return;
        }
        if failure.is_none() && !(done || finished) {
            failure = Some(LlmError::interrupted(provider));
        }
        if let Some(err) = failure {
            // A failed call is not charged.
            self.gateway.release(self.reservation).await;
            let _ = tx.send(Err(err)).await;
            return;
        }
        let usage = match usage {
            Some(u) if u.prompt_tokens > 0 || u.completion_tokens > 0 => u,
            // The provider reported nothing: count, and say so.
            known => self.estimate(&text, known),
        };
        let usage = self.settle(usage, true, false).await;
        let _ = tx.send(Ok(StreamEvent::Usage(usage))).await;
    }
}

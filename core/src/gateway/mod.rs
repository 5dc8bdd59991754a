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
mod stream;

pub use embed::{Embedded, DEFAULT_EMBEDDING_MODEL, MAX_EMBEDDING_INPUTS};
pub use lookups::{provider_for_model, ModelInfo};
pub use stream::{ChatStream, StreamEvent};

use std::sync::Arc;
use std::time::Instant;

use tokio::sync::OnceCell;
use uuid::Uuid;

use crate::changes::Changes;
use crate::db::Db;
use crate::flags::{ClinicFlags, Flags};
use crate::knowledge::qdrant::QdrantVectors;
use crate::knowledge::search::Passage;
use crate::knowledge::vectors::{PgVectors, Vectors};
use crate::llm::body::{self as request_body, Body, Dialect, Facts};
use crate::llm::{anthropic, prompt_upper_bound, wire, ChatRequest, LlmError, LlmErrorKind, Usage};
use crate::metering::{Metering, Prices};
use crate::tenancy::{TenantId, UserId};
use crate::{agents, Config, Error, Provider};
use call::{Call, Mode, Prompt};
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
    /// The reply's text and why it stopped; left empty for a request made with
    /// [`Gateway::forward`] whose provider reported its usage (its client reads `body`).
    pub content: String,
    pub finish_reason: String,
    pub usage: Usage,
    /// The passages an agent's reply was grounded in, in citation order (`[1]` first).
    pub sources: Vec<Passage>,
    /// The reply as its client reads it (the provider's bytes, or their translation), for a
    /// request made with [`Gateway::forward`].
    pub body: Option<bytes::Bytes>,
}

/// A request as its client sent it, for [`Gateway::forward`].
#[derive(Clone, Debug)]
pub struct Forward {
    pub dialect: Dialect,
    pub body: Body,
    /// Anthropic's beta features the client asked for (its `anthropic-beta` header, checked
    /// with [`beta_header`]), passed on when the call goes to Anthropic in its own format.
    pub anthropic_beta: Option<String>,
}

/// The longest `anthropic-beta` header passed on.
const BETA_HEADER_MAX: usize = 512;

/// A client's `anthropic-beta` header, checked: comma-separated feature names (letters,
/// digits, `-`, `_`, `.`), as Anthropic's SDKs send them. Anything else is refused by name
/// rather than passed on to the provider.
pub fn beta_header(value: &str) -> Result<String, String> {
    let value = value.trim();
    let names: Vec<&str> = value.split(',').map(str::trim).collect();
    let valid = value.len() <= BETA_HEADER_MAX
        && names.iter().all(|n| {
            !n.is_empty()
                && n.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        });
    if valid {
        Ok(names.join(","))
    } else {
        Err(format!(
            "anthropic-beta: expected comma-separated beta names (letters, digits, '-', '_', '.'; at most {BETA_HEADER_MAX} characters)."
        ))
    }
}

/// An agent as a clinic's flags shape it: its model, else the clinic's default model; its
/// context budget within the clinic's cap; its documents only while retrieval is on.
fn shaped(agent: &agents::Agent, flags: &ClinicFlags) -> Arc<agents::Agent> {
    let mut a = agent.clone();
    if a.model.trim().is_empty() {
        a.model = flags.default_model.clone();
    }
    a.context_tokens = i64::from(a.context_tokens).min(flags.max_context_tokens) as i32;
    a.knowledge_enabled &= flags.rag;
    Arc::new(a)
}

/// The outcome of [`Gateway::chat`].
pub enum ChatOutcome {
    Complete(Completion),
    Stream(ChatStream),
}

/// The one path for model calls. Cheap to clone: one reference count (every call in flight
/// holds a clone).
#[derive(Clone)]
pub struct Gateway(Arc<Parts>);

/// What a [`Gateway`] is made of, shared by its clones.
pub struct Parts {
    config: Arc<Config>,
    db: Db,
    /// For the providers the installation configures.
    http: crate::egress::Http,
    /// For addresses clinics supply (see [`crate::egress`]).
    egress: crate::egress::Http,
    pub metering: Metering,
    /// Where the clinics' document vectors live.
    pub vectors: Vectors,
    prices: Arc<OnceCell<Prices>>,
    endpoints: send::Endpoints,
    caches: Arc<Caches>,
    /// The feature flags that shape each clinic's calls.
    pub flags: Flags,
}

impl std::ops::Deref for Gateway {
    type Target = Parts;

    fn deref(&self) -> &Parts {
        &self.0
    }
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
        changes: &Changes,
        flags: Flags,
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
        let endpoints = send::Endpoints::new(&config);
        Self(Arc::new(Parts {
            http: crate::egress::Http::installation(),
            egress: crate::egress::Http::guarded(config.allow_private_endpoints),
            vectors,
            config,
            db,
            metering,
            prices: Arc::new(OnceCell::new()),
            endpoints,
            caches,
            flags,
        }))
    }

    /// Makes one chat call through every step: who, budget, key, call, settle.
    #[tracing::instrument(level = "debug", skip_all, fields(tenant = %caller.tenant, model = %req.model, stream = req.stream))]
    pub async fn chat(&self, caller: &Caller, req: ChatRequest) -> Result<ChatOutcome, LlmError> {
        let entered = Instant::now();
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
        let flags = self.flags.for_clinic(caller.tenant, limits.plan);
        // An agent named as the model brings its own model, instructions and limits, and the
        // clinic's passages for the question.
        let (req, sources) = match req.model.strip_prefix(agents::MODEL_PREFIX) {
            Some(slug) => match self.agent(caller.tenant, slug).await? {
                Some(agent) => {
                    let agent = shaped(&agent, &flags);
                    let question = req
                        .messages
                        .iter()
                        .rev()
                        .find(|m| m.role == crate::llm::MessageRole::User)
                        .map(|m| m.content.clone())
                        .unwrap_or_default();
                    let passages = Box::pin(self.retrieve(caller, &agent, &question)).await?;
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
        let max_tokens = req
            .max_tokens
            .unwrap_or(self.config.default_max_tokens)
            .max(1);
        let worst = prompt_upper_bound(&req.messages) + i64::from(max_tokens);
        let body = serde_json::to_vec(&wire::request_body(chosen.provider, &req, max_tokens))
            .map_err(LlmError::internal)?;
        let call = Outgoing {
            chosen,
            bytes: body,
            worst,
            max_tokens,
            stream: req.stream,
            model: req.model,
            agent: req.agent,
            whole: req.stream && !flags.streaming,
            prompt: Prompt::Messages(req.messages),
            mode: Mode::Typed,
            sources,
            counted: false,
            entered,
            anthropic_beta: None,
        };
        self.dispatch(caller, &limits, call).await
    }

    /// Forwards a request in a provider's own format (OpenAI chat completions, OpenAI's
    /// Responses API or Anthropic messages) with every step of [`Gateway::chat`]: the body goes
    /// to the provider as the client sent it, the model name and an agent's settings aside
    /// (and, for OpenAI's streams, the request for usage), so tools, response formats, images
    /// and fields Tessera does not know pass through; the reply comes back as the provider's
    /// bytes. An OpenAI body
    /// for a Claude model is translated to Anthropic's format and the reply back. A call made
    /// with an API key is counted against the plan's requests per minute together with its
    /// reservation (one Redis round trip), so its route need not [`Gateway::admit`] it.
    #[tracing::instrument(level = "debug", skip_all, fields(tenant = %caller.tenant))]
    pub async fn forward(&self, caller: &Caller, req: Forward) -> Result<ChatOutcome, LlmError> {
        let entered = Instant::now();
        let Forward {
            dialect,
            mut body,
            anthropic_beta,
        } = req;
        let mut facts = request_body::facts(&body, dialect).map_err(LlmError::bad_request)?;
        let limits = self.limits(caller.tenant).await?;
        if !limits.active {
            return Err(Error::forbidden("This clinic has been deactivated.").into());
        }
        let flags = self.flags.for_clinic(caller.tenant, limits.plan);
        let mut sources = Vec::new();
        let mut agent_id = None;
        let mut default_limit = self.config.default_max_tokens;
        if let Some(slug) = facts.model.strip_prefix(agents::MODEL_PREFIX) {
            match dialect {
                Dialect::OpenAi => {}
                Dialect::Anthropic => {
                    return Err(LlmError::bad_request(
                        "model: agents answer on /v1/chat/completions; name a Claude model here.",
                    ))
                }
                Dialect::Responses => {
                    return Err(LlmError::bad_request(
                        "model: agents answer on /v1/chat/completions; name an OpenAI model here.",
                    ))
                }
            }
            let Some(agent) = self.agent(caller.tenant, slug).await? else {
                return Err(LlmError::unknown_model(&facts.model));
            };
            let agent = shaped(&agent, &flags);
            let question = agents::last_question(&body);
            // Boxed: a search's future is large, and inline it would be carried (and copied)
            // by every call through here, most of which name a model, not an agent.
            let passages = Box::pin(self.retrieve(caller, &agent, &question)).await?;
            let (used, limit) =
                agents::apply_body(&agent, &mut body, &passages).map_err(LlmError::bad_request)?;
            default_limit = limit;
            sources = passages;
            sources.truncate(used);
            agent_id = Some(agent.id);
            facts = request_body::facts(&body, dialect).map_err(LlmError::bad_request)?;
        } else if body.get_str("model").ok().flatten().as_deref() != Some(&facts.model) {
            body.set("model", &facts.model);
        }
        let now = time::OffsetDateTime::now_utc();
        if let Some(message) = limits.payment_block(self.config.billing_grace_days, now) {
            return Err(LlmError::new(LlmErrorKind::PaymentOverdue, message));
        }
        let chosen = self.choose(caller.tenant, &limits, &facts.model).await?;
        let Facts {
            model,
            stream,
            include_usage,
            choices,
            max_tokens,
            prompt_bound,
            documents,
        } = facts;
        // A document's pages cost what its bytes do not show; the model's window bounds them.
        let prompt_bound = if documents {
            let beta = match dialect {
                Dialect::Anthropic => anthropic_beta.as_deref(),
                _ => None,
            };
            prompt_bound.max(request_body::context_window(&model, beta))
        } else {
            prompt_bound
        };
        let limit = max_tokens.unwrap_or(default_limit).max(1);
        // Passed on only to Anthropic, with a body in its own format.
        let mut beta = None;
        // The worst case: the prompt's bound and every choice's reply at its limit.
        let worst = prompt_bound + i64::from(choices) * i64::from(limit);
        let (bytes, mode) = match (dialect, chosen.provider) {
            (Dialect::OpenAi, Provider::OpenAi | Provider::OpenAiCompatible) => {
                if max_tokens.is_none() {
                    // Without a limit a reply could outgrow its reservation.
                    let field = if chosen.provider == Provider::OpenAi {
                        "max_completion_tokens"
                    } else {
                        "max_tokens"
                    };
                    body.set(field, &limit);
                } else if chosen.provider == Provider::OpenAiCompatible && !body.has("max_tokens") {
                    // Compatible servers (Ollama, vLLM) read max_tokens.
                    body.set("max_tokens", &limit);
                }
                if stream {
                    // The usage comes in the last chunk only when asked for.
                    let mut options: serde_json::Map<String, serde_json::Value> = body
                        .get("stream_options")
                        .ok()
                        .flatten()
                        .unwrap_or_default();
                    if options.get("include_usage") != Some(&serde_json::Value::Bool(true)) {
                        options.insert("include_usage".into(), serde_json::Value::Bool(true));
                        body.set("stream_options", &options);
                    }
                }
                (
                    body.to_bytes(),
                    Mode::Raw {
                        hide_usage: !include_usage,
                    },
                )
            }
            (Dialect::OpenAi, Provider::Anthropic) => {
                let (bytes, translation) = anthropic::request(&body, &model, limit, stream)
                    .map_err(LlmError::bad_request)?;
                (
                    bytes,
                    Mode::Translated {
                        translation,
                        include_usage,
                    },
                )
            }
            (Dialect::Anthropic, Provider::Anthropic) => {
                beta = anthropic_beta;
                (body.to_bytes(), Mode::Raw { hide_usage: false })
            }
            (Dialect::Anthropic, _) => {
                return Err(LlmError::bad_request(format!(
                    "model: /v1/messages answers with Claude models; send {model:?} to /v1/chat/completions."
                )))
            }
            (Dialect::Responses, Provider::OpenAi | Provider::OpenAiCompatible) => {
                if max_tokens.is_none() {
                    // Without a limit a reply could outgrow its reservation.
                    body.set("max_output_tokens", &limit);
                }
                (body.to_bytes(), Mode::Responses)
            }
            (Dialect::Responses, Provider::Anthropic) => {
                return Err(LlmError::bad_request(format!(
                    "model: /v1/responses answers with OpenAI's and OpenAI-compatible models; send {model:?} to /v1/chat/completions or /v1/messages."
                )))
            }
        };
        let prompt = Prompt::Json {
            body,
            bound: prompt_bound,
        };
        let call = Outgoing {
            chosen,
            bytes,
            worst,
            max_tokens: limit,
            stream,
            whole: stream && !flags.streaming,
            model,
            agent: agent_id,
            prompt,
            mode,
            sources,
            counted: caller.api_key.is_some(),
            entered,
            anthropic_beta: beta,
        };
        self.dispatch(caller, &limits, call).await
    }

    /// Reserves the worst case, sends the call and hands the answer to a [`Call`].
    async fn dispatch(
        &self,
        caller: &Caller,
        limits: &crate::metering::Limits,
        out: Outgoing,
    ) -> Result<ChatOutcome, LlmError> {
        // An API request is counted against the plan's requests per minute in the same round
        // trip as its reservation.
        let rate = out.counted.then_some(caller.api_key);
        let reserved = self
            .metering
            .reserve_admitted(caller.tenant, rate, limits, out.worst)
            .await
            .inspect_err(crate::observe::refused)?;
        let reservation = self.metering.hold(reserved);
        let started = Instant::now();
        let before_provider = out.entered.elapsed();
        // The Responses API has an address of its own; every other call is a chat.
        let op = match out.mode {
            Mode::Responses => send::Op::Responses,
            _ => send::Op::Chat,
        };
        let response = match self
            .send(
                &out.chosen,
                op,
                bytes::Bytes::from(out.bytes),
                out.anthropic_beta.as_deref(),
            )
            .await
        {
            Ok(r) => r,
            Err(e) => {
                send::release(reservation).await;
                return Err(e);
            }
        };
        let call = Call {
            gateway: self.clone(),
            caller: *caller,
            agent: out.agent,
            chosen: out.chosen,
            model: out.model,
            prompt: out.prompt,
            mode: out.mode,
            created: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            max_tokens: i64::from(out.max_tokens),
            reservation,
            started,
            sources: out.sources,
            plan: limits.plan,
            before_provider,
        };
        if out.stream {
            let stream = call.stream(response);
            Ok(ChatOutcome::Stream(if out.whole {
                stream.whole()
            } else {
                stream
            }))
        } else {
            call.complete(response).await.map(ChatOutcome::Complete)
        }
    }

    /// Anthropic's count of a Messages body's input tokens (`/v1/messages/count_tokens`, as
    /// Anthropic's SDK's `messages.count_tokens` calls it): the body forwarded with the
    /// clinic's key (or the platform's, where the plan allows) and Anthropic's answer
    /// returned as it came. Nothing is reserved or charged: Anthropic does not charge for it,
    /// and its route counts it against the plan's requests per minute.
    #[tracing::instrument(level = "debug", skip_all, fields(tenant = %caller.tenant))]
    pub async fn count_tokens(
        &self,
        caller: &Caller,
        body: Body,
        anthropic_beta: Option<&str>,
    ) -> Result<bytes::Bytes, LlmError> {
        let model = match body.get::<std::borrow::Cow<str>>("model") {
            Ok(Some(model)) if !model.trim().is_empty() => model.into_owned(),
            Ok(_) => return Err(LlmError::bad_request("model: name a Claude model.")),
            Err(_) => return Err(LlmError::bad_request("model: expected a string.")),
        };
        if provider_for_model(&model) != Some(Provider::Anthropic) {
            return Err(LlmError::bad_request(format!(
                "model: only Claude's models count tokens here (got `{model}`)."
            )));
        }
        self.free_call(
            caller,
            &model,
            send::Op::CountTokens,
            body,
            anthropic_beta,
            counted,
        )
        .await
    }

    /// OpenAI's count of a Responses body's input tokens (`/v1/responses/input_tokens`, as
    /// OpenAI's SDK's `responses.input_tokens.count` calls it): the body forwarded to the
    /// model's provider (OpenAI, or the clinic's OpenAI-compatible endpoint) with the clinic's
    /// key and the answer returned as it came. Nothing is reserved or charged: OpenAI does not
    /// charge for it, and its route counts it against the plan's requests per minute. The
    /// model is required here (OpenAI would pick one): it names the provider to ask.
    #[tracing::instrument(level = "debug", skip_all, fields(tenant = %caller.tenant))]
    pub async fn input_tokens(
        &self,
        caller: &Caller,
        body: Body,
    ) -> Result<bytes::Bytes, LlmError> {
        let model = match body.get::<std::borrow::Cow<str>>("model") {
            Ok(Some(model)) if !model.trim().is_empty() => model.into_owned(),
            Ok(_) => {
                return Err(LlmError::bad_request(
                    "model: name the model whose tokens to count (one of OpenAI's, or one your clinic's OpenAI-compatible endpoint serves).",
                ))
            }
            Err(_) => return Err(LlmError::bad_request("model: expected a string.")),
        };
        if provider_for_model(&model) == Some(Provider::Anthropic) {
            return Err(LlmError::bad_request(format!(
                "model: /v1/responses/input_tokens counts for OpenAI's and OpenAI-compatible models (got `{model}`); count a Claude model's tokens with /v1/messages/count_tokens."
            )));
        }
        self.free_call(caller, &model, send::Op::InputTokens, body, None, counted)
            .await
    }

    /// OpenAI's moderation of text and images (`/v1/moderations`, as OpenAI's SDK's
    /// `moderations.create` calls it): the body forwarded with the clinic's OpenAI key (or the
    /// platform's, where the plan allows) and OpenAI's answer returned as it came. Nothing is
    /// reserved or charged: OpenAI does not charge for it, and its route counts it against the
    /// plan's requests per minute. Without a model, OpenAI's default (`omni-moderation-latest`)
    /// answers.
    #[tracing::instrument(level = "debug", skip_all, fields(tenant = %caller.tenant))]
    pub async fn moderate(&self, caller: &Caller, body: Body) -> Result<bytes::Bytes, LlmError> {
        let model = match body.get::<std::borrow::Cow<str>>("model") {
            Ok(None) => MODERATION_MODEL.into(),
            Ok(Some(model)) if lookups::is_moderation_model(&model) => model,
            _ => {
                return Err(LlmError::bad_request(format!(
                    "model: name one of OpenAI's moderation models ({MODERATION_MODEL}, text-moderation-latest), or leave it out."
                )))
            }
        };
        if body.raw("input").is_none_or(|v| v == "null") {
            return Err(LlmError::bad_request(
                "input: this field is required (a string, an array of strings, or an array of text and image parts).",
            ));
        }
        let model = model.into_owned();
        self.free_call(caller, &model, send::Op::Moderations, body, None, moderated)
            .await
    }

    /// A call the provider does not charge for: `body` sent as it came to `model`'s provider
    /// with the clinic's key (or the platform's), and the answer returned as it came when
    /// `answered` finds it one.
    async fn free_call(
        &self,
        caller: &Caller,
        model: &str,
        op: send::Op,
        body: Body,
        anthropic_beta: Option<&str>,
        answered: fn(&[u8]) -> bool,
    ) -> Result<bytes::Bytes, LlmError> {
        let limits = self.limits(caller.tenant).await?;
        if !limits.active {
            return Err(Error::forbidden("This clinic has been deactivated.").into());
        }
        let chosen = self.choose(caller.tenant, &limits, model).await?;
        let response = self
            .send(&chosen, op, body.to_bytes().into(), anthropic_beta)
            .await?;
        let timeout = std::time::Duration::from_secs(self.config.provider_timeout_secs);
        match tokio::time::timeout(timeout, wire::read_limited(response, wire::REPLY_LIMIT)).await {
            Ok(Ok(bytes)) if answered(&bytes) => Ok(bytes.into()),
            Ok(_) => Err(LlmError::malformed(chosen.provider)),
            Err(_) => Err(LlmError::timeout(chosen.provider, timeout)),
        }
    }
}

/// OpenAI's default moderation model.
pub const MODERATION_MODEL: &str = "omni-moderation-latest";

/// Whether OpenAI's answer to a moderation is one: an object with a list of `results`.
fn moderated(bytes: &[u8]) -> bool {
    serde_json::from_slice::<serde_json::Value>(bytes)
        .ok()
        .is_some_and(|v| v.get("results").is_some_and(serde_json::Value::is_array))
}

/// Whether an answer to a token count (Anthropic's, or OpenAI's of a Responses body) is one:
/// an object with a whole `input_tokens` of at least zero.
fn counted(bytes: &[u8]) -> bool {
    serde_json::from_slice::<serde_json::Value>(bytes)
        .ok()
        .and_then(|v| v.get("input_tokens")?.as_u64())
        .is_some()
}

/// A call ready to send: its provider and key, its body, its worst case.
struct Outgoing {
    chosen: lookups::Chosen,
    bytes: Vec<u8>,
    worst: i64,
    max_tokens: u32,
    stream: bool,
    /// Streamed from the provider, but given to the client whole (streaming is off for the
    /// clinic).
    whole: bool,
    model: String,
    agent: Option<Uuid>,
    prompt: Prompt,
    mode: Mode,
    sources: Vec<Passage>,
    /// Counted against the plan's requests per minute with the reservation.
    counted: bool,
    /// When the call reached the gateway (for its overhead).
    entered: Instant,
    /// The client's `anthropic-beta` header, for a call to Anthropic in its own format.
    anthropic_beta: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::beta_header;

    #[test]
    fn beta_headers_are_names_separated_by_commas() {
        assert_eq!(
            beta_header(" a-2024-01-01 ,b_2.x ").as_deref(),
            Ok("a-2024-01-01,b_2.x")
        );
        for bad in ["", "a,,b", "a;b", "a b", "é", &"a".repeat(513)] {
            assert!(beta_header(bad).is_err(), "{bad:?} was accepted");
        }
    }
}

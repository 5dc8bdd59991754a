//! Embeddings through the gateway, like chat: the clinic's key (or the platform's where the
//! plan allows, or its OpenAI-compatible endpoint), a budget reservation of the worst case, the
//! provider's usage checked and settled into the ledger as an `embedding` call. Used to index
//! documents and to search them with a question; the call's wire types are `async-openai`'s.

use std::sync::Arc;
use std::time::Instant;

use async_openai::types::embeddings::{
    CreateEmbeddingRequest, CreateEmbeddingResponse, EmbeddingInput, EncodingFormat,
};
use uuid::Uuid;

use super::send::{release, Op};
use super::{Caller, Gateway};
use crate::knowledge::ingest::Embedder;
use crate::knowledge::search::{self, Passage, Settings};
use crate::llm::{wire, LlmError, LlmErrorKind};
use crate::metering::{CallKind, UsageEvent};
use crate::tenancy::TenantId;
use crate::{agents, Error};

/// What an embeddings call returned: one vector per input, and the tokens charged.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Embedded {
    pub vectors: Vec<Vec<f32>>,
    pub tokens: i64,
}

/// The embedding model of clinics that can call OpenAI and chose none.
pub const DEFAULT_EMBEDDING_MODEL: &str = "text-embedding-3-small";
/// Inputs per embeddings call at most (OpenAI's limit is 2,048).
pub const MAX_EMBEDDING_INPUTS: usize = 256;
/// The longest vector accepted from a provider.
const MAX_DIMENSIONS: usize = 16_384;

impl Gateway {
    /// The model the clinic's documents are embedded with: the one it chose, else OpenAI's
    /// default when it can call OpenAI (its own key, or the platform's where the plan allows);
    /// `None` (lexical search only) when it has no embedding provider.
    pub async fn embedding_model(&self, tenant: TenantId) -> crate::Result<Option<String>> {
        let limits = self.limits(tenant).await?;
        if let Some(model) = limits.embedding_model.clone() {
            return Ok(Some(model));
        }
        let openai = self
            .usable_key(tenant, crate::Provider::OpenAi)
            .await?
            .is_some();
        Ok(openai.then(|| DEFAULT_EMBEDDING_MODEL.to_string()))
    }

    /// Embeds `inputs` with `model` for the caller, one vector per input, in order (of
    /// `dimensions` numbers when given, for models that can shorten them).
    #[tracing::instrument(level = "debug", skip_all, fields(tenant = %caller.tenant, model, inputs = inputs.len()))]
    pub async fn embed(
        &self,
        caller: &Caller,
        agent: Option<Uuid>,
        model: &str,
        inputs: Vec<String>,
        dimensions: Option<u32>,
    ) -> Result<Embedded, LlmError> {
        if inputs.is_empty() {
            return Ok(Embedded::default());
        }
        if inputs.len() > MAX_EMBEDDING_INPUTS {
            return Err(LlmError::bad_request(format!(
                "input: at most {MAX_EMBEDDING_INPUTS} texts per call."
            )));
        }
        if inputs.iter().any(|i| i.trim().is_empty()) {
            return Err(LlmError::bad_request("input: a text to embed is empty."));
        }
        let limits = self.limits(caller.tenant).await?;
        if !limits.active {
            return Err(Error::forbidden("This clinic has been deactivated.").into());
        }
        if let Some(message) = limits.payment_block(
            self.config.billing_grace_days,
            time::OffsetDateTime::now_utc(),
        ) {
            return Err(LlmError::new(LlmErrorKind::PaymentOverdue, message));
        }
        let chosen = self.choose(caller.tenant, &limits, model).await?;
        // A token is at least one byte: the inputs' bytes bound what the call can use.
        let worst = inputs.iter().map(|i| i.len() as i64 + 1).sum::<i64>();
        let reservation = self.metering.hold(
            self.metering
                .reserve(caller.tenant, &limits, worst)
                .await
                .inspect_err(crate::observe::refused)?,
        );
        let request = CreateEmbeddingRequest {
            model: model.to_string(),
            input: EmbeddingInput::StringArray(inputs.clone()),
            encoding_format: Some(EncodingFormat::Float),
            dimensions,
            ..Default::default()
        };
        let body = serde_json::to_vec(&request).map_err(|e| LlmError::internal(e.to_string()))?;
        let started = Instant::now();
        let response = match self.send(&chosen, Op::Embeddings, body.into(), None).await {
            Ok(r) => r,
            Err(e) => {
                release(reservation).await;
                return Err(e);
            }
        };
        let timeout = std::time::Duration::from_secs(self.config.provider_timeout_secs);
        let read =
            tokio::time::timeout(timeout, wire::read_limited(response, wire::REPLY_LIMIT * 4));
        let parsed = match read.await {
            Ok(Ok(bytes)) => serde_json::from_slice::<CreateEmbeddingResponse>(&bytes).ok(),
            Ok(Err(_)) => None,
            Err(_) => {
                release(reservation).await;
                return Err(LlmError::timeout(chosen.provider, timeout));
            }
        };
        let Some(mut parsed) = parsed.filter(|p| plausible(p, inputs.len())) else {
            release(reservation).await;
            return Err(LlmError::malformed(chosen.provider));
        };
        parsed.data.sort_by_key(|d| d.index);
        let reported = i64::from(parsed.usage.prompt_tokens);
        let (tokens, estimated) = if reported > 0 && reported <= worst {
            (reported, false)
        } else {
            // No usage, or more than the inputs could hold: counted here.
            let counted = inputs
                .iter()
                .map(|i| crate::llm::count_tokens(i))
                .sum::<i64>();
            (counted.min(worst), true)
        };
        let cost = self.prices().await.cost(model, tokens, 0);
        let r = reservation.reservation();
        let event = UsageEvent {
            id: r.id,
            tenant: caller.tenant,
            user: caller.user,
            api_key: caller.api_key,
            agent,
            provider: chosen.provider,
            model: model.to_string(),
            prompt_tokens: tokens,
            completion_tokens: 0,
            cached_tokens: 0,
            cost_micro_usd: cost,
            latency_ms: started.elapsed().as_millis().min(i32::MAX as u128) as i32,
            estimated,
            streamed: false,
            cancelled: false,
            idempotency_key: r.id.to_string(),
            occurred_at_ms: (r.started_at.unix_timestamp_nanos() / 1_000_000) as i64,
            kind: CallKind::Embedding,
        };
        reservation.settle_durably(&event).await;
        crate::observe::settled(limits.plan, tokens, 0, cost);
        Ok(Embedded {
            vectors: parsed.data.into_iter().map(|d| d.embedding).collect(),
            tokens,
        })
    }

    /// The embedding models of the clinic's searchable documents, from the cache when
    /// possible (dropped when ingestion finishes, like every cached clinic setting).
    async fn searchable(
        &self,
        tenant: TenantId,
    ) -> crate::Result<Option<Arc<Vec<Option<String>>>>> {
        self.caches
            .knowledge
            .get_or_load(&tenant, || async {
                let models = crate::knowledge::searchable(&self.db, tenant).await?;
                Ok((!models.is_empty()).then(|| Arc::new(models)))
            })
            .await
    }

    /// The passages of the clinic's documents for the newest question, as `agent` retrieves
    /// them: lexical always, dense too when the clinic's documents have vectors of its
    /// embedding model. Nothing is asked of anyone for a clinic with no searchable document.
    /// Retrieval that fails (the database or the vector store out of reach, the embedding
    /// provider down) leaves the reply ungrounded rather than failing it, and is logged; only
    /// a spent allowance stops the call, as it would stop the reply.
    pub(super) async fn retrieve(
        &self,
        caller: &Caller,
        agent: &agents::Agent,
        question: &str,
    ) -> Result<Vec<Passage>, LlmError> {
        if !agent.knowledge_enabled || question.trim().is_empty() {
            return Ok(Vec::new());
        }
        match self.retrieve_for(caller, agent, question).await {
            Ok(found) => Ok(found),
            Err(e) if e.kind == LlmErrorKind::OverBudget => Err(e),
            Err(e) => {
                tracing::warn!(tenant = %caller.tenant, error = %e.message, "retrieval failed; the reply is not grounded");
                Ok(Vec::new())
            }
        }
    }

    async fn retrieve_for(
        &self,
        caller: &Caller,
        agent: &agents::Agent,
        question: &str,
    ) -> Result<Vec<Passage>, LlmError> {
        let Some(searchable) = self.searchable(caller.tenant).await? else {
            return Ok(Vec::new());
        };
        let settings = Settings {
            top_k: agent.knowledge_top_k.clamp(1, 20) as usize,
            min_score: agent.knowledge_min_score,
            tags: agent.knowledge_tags.clone(),
        };
        // Only the question's start is embedded and searched: a pasted page is not a query.
        let query: String = question.chars().take(2_000).collect();
        let mut dense = None;
        let model = self
            .embedding_model(caller.tenant)
            .await?
            .filter(|m| searchable.iter().any(|s| s.as_deref() == Some(m.as_str())));
        if let Some(model) = model {
            match self
                .embed(caller, Some(agent.id), &model, vec![query.clone()], None)
                .await
            {
                Ok(mut e) if e.vectors.len() == 1 => dense = Some((model, e.vectors.remove(0))),
                Ok(_) => {}
                Err(e) if e.kind == LlmErrorKind::OverBudget => return Err(e),
                Err(e) => {
                    tracing::warn!(tenant = %caller.tenant, error = %e.message, "question not embedded; lexical search only")
                }
            }
        }
        let dense_ref = dense.as_ref().map(|(m, v)| (m.as_str(), v.as_slice()));
        Ok(search::retrieve(
            &self.db,
            &self.vectors,
            caller.tenant,
            &query,
            dense_ref,
            &settings,
        )
        .await?)
    }
}

/// One vector per input, each index once, all of one plausible length.
fn plausible(r: &CreateEmbeddingResponse, inputs: usize) -> bool {
    let Some(first) = r.data.first() else {
        return false;
    };
    let dims = first.embedding.len();
    let mut seen = vec![false; inputs];
    r.data.len() == inputs
        && (1..=MAX_DIMENSIONS).contains(&dims)
        && r.data.iter().all(|d| {
            d.embedding.len() == dims
                && d.embedding.iter().all(|x| x.is_finite())
                && (d.index as usize) < inputs
                && !std::mem::replace(&mut seen[d.index as usize], true)
        })
}

/// The ingestion worker embeds passages through the gateway, as the clinic (no person).
impl Embedder for Gateway {
    async fn embedding_model(&self, tenant: TenantId) -> crate::Result<Option<String>> {
        Gateway::embedding_model(self, tenant).await
    }

    async fn embed(
        &self,
        tenant: TenantId,
        model: &str,
        inputs: Vec<String>,
    ) -> Result<Vec<Vec<f32>>, LlmError> {
        let caller = Caller {
            tenant,
            user: None,
            api_key: None,
        };
        Gateway::embed(self, &caller, None, model, inputs, None)
            .await
            .map(|e| e.vectors)
    }
}

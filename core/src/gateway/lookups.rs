//! What a call needs to know before it is made (who an API key is, the clinic's limits, an
//! agent named as the model, the key to use), cached in-process for a short time. The caches
//! drop what a change makes stale as soon as the core announces it, on every replica.

use std::sync::Arc;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};

use super::cache::TtlCache;
use super::{Caller, Gateway};
use crate::agents::{self, Agent};
use crate::api_keys::{self, ApiCaller};
use crate::auth::members::Actor;
use crate::changes::Change;
use crate::llm::{self, LlmError};
use crate::metering::{self, Limits};
use crate::provider_keys::{self, ResolvedKey};
use crate::tenancy::TenantId;
use crate::Provider;

const CACHE_TTL: Duration = Duration::from_secs(60);
const LIMITS_TTL: Duration = Duration::from_secs(30);
const CACHE_MAX: usize = 100_000;
/// Endpoint addresses kept (a clinic has one endpoint; one that is moved again and again leaves
/// its old addresses to expire or be evicted).
const ADDRESSES_MAX: usize = 10_000;

/// The key a call will use.
#[derive(Clone)]
pub(super) struct Chosen {
    pub provider: Provider,
    pub key: Arc<ResolvedKey>,
    /// The platform's own key, not the clinic's.
    pub platform: bool,
}

/// The gateway's in-process caches.
pub(super) struct Caches {
    api_keys: TtlCache<[u8; 32], ApiCaller>,
    limits: TtlCache<TenantId, Limits>,
    provider_keys: TtlCache<(TenantId, Provider), Option<Arc<ResolvedKey>>>,
    agents: TtlCache<(TenantId, String), Option<Arc<Agent>>>,
    /// The embedding models of each clinic's searchable documents (`None`: none are
    /// searchable yet), so a clinic without documents costs its agents no query.
    pub(super) knowledge: TtlCache<TenantId, Option<Arc<Vec<Option<String>>>>>,
    /// The addresses of clinics' OpenAI-compatible endpoints, by base URL and operation,
    /// parsed and checked (see `Gateway::clinic_address`).
    pub(super) addresses: TtlCache<(Box<str>, super::send::Op), crate::egress::Address>,
}

impl Default for Caches {
    fn default() -> Self {
        Self {
            api_keys: TtlCache::new(CACHE_TTL, CACHE_MAX),
            limits: TtlCache::new(LIMITS_TTL, CACHE_MAX),
            provider_keys: TtlCache::new(CACHE_TTL, CACHE_MAX),
            agents: TtlCache::new(LIMITS_TTL, CACHE_MAX),
            knowledge: TtlCache::new(LIMITS_TTL, CACHE_MAX),
            addresses: TtlCache::new(CACHE_TTL, ADDRESSES_MAX),
        }
    }
}

impl Caches {
    /// Drops what `change` makes stale.
    pub fn apply(&self, change: Change) {
        match change {
            Change::Tenant(t) => {
                self.limits.remove_where(|k, _| *k == t);
                self.provider_keys.remove_where(|(k, _), _| *k == t);
                self.agents.remove_where(|(k, _), _| *k == t);
                self.knowledge.remove_where(|k, _| *k == t);
            }
            Change::ApiKey(id) => self.api_keys.remove_where(|_, c| c.key_id == id),
            Change::Flags => {}
            Change::Everything => {
                self.api_keys.clear();
                self.limits.clear();
                self.provider_keys.clear();
                self.agents.clear();
                self.knowledge.clear();
                self.addresses.clear();
            }
        }
    }
}

/// A model a clinic can use, and the provider that offers it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModelInfo {
    pub id: String,
    pub provider: Provider,
}

impl Gateway {
    /// The caller behind an API key (`tsk_...`), from the cache when possible. `None` for an
    /// unknown or revoked key.
    pub async fn authenticate(&self, token: &str) -> crate::Result<Option<Caller>> {
        let hash: [u8; 32] = Sha256::digest(token.trim().as_bytes()).into();
        // An unknown key is not kept: `Err(None)` carries it past the cache.
        let found = self
            .caches
            .api_keys
            .get_or_load(&hash, || async {
                api_keys::authenticate(&self.db, token)
                    .await
                    .map_err(Some)?
                    .ok_or(None)
            })
            .await;
        let found = match found {
            Ok(c) => Some(c),
            Err(None) => None,
            Err(Some(e)) => return Err(e),
        };
        Ok(found.map(|c| Caller {
            tenant: c.tenant,
            user: None,
            api_key: Some(c.key_id),
        }))
    }

    /// Counts one API request of the caller against its plan's requests per minute (the
    /// clinic's and the key's), or refuses it with [`crate::Error::RateLimited`]; a
    /// deactivated clinic's requests are refused (403).
    pub async fn admit(&self, caller: &Caller) -> crate::Result<()> {
        let limits = self.limits(caller.tenant).await?;
        if !limits.active {
            return Err(crate::Error::forbidden(
                "This clinic has been deactivated. Contact support.",
            ));
        }
        self.metering
            .admit(caller.tenant, caller.api_key, &limits)
            .await
    }

    /// A clinic's limits, from the cache when possible.
    pub async fn limits(&self, tenant: TenantId) -> crate::Result<Limits> {
        self.caches
            .limits
            .get_or_load(&tenant, || metering::limits(&self.db, tenant))
            .await
    }

    /// An agent by its slug, from the cache when possible.
    pub(super) async fn agent(
        &self,
        tenant: TenantId,
        slug: &str,
    ) -> crate::Result<Option<Arc<Agent>>> {
        let key = (tenant, slug.to_string());
        self.caches
            .agents
            .get_or_load(&key, || async {
                Ok(agents::by_slug(&self.db, tenant, slug).await?.map(Arc::new))
            })
            .await
    }

    async fn clinic_key(
        &self,
        tenant: TenantId,
        provider: Provider,
    ) -> crate::Result<Option<Arc<ResolvedKey>>> {
        self.caches
            .provider_keys
            .get_or_load(&(tenant, provider), || async {
                let master = self.config.master_keys.as_ref();
                let k = provider_keys::resolve(&self.db, master, tenant, provider).await?;
                Ok(k.map(Arc::new))
            })
            .await
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
        if self.limits(tenant).await?.may_use_platform_keys() {
            return Ok(self.platform_key(provider));
        }
        Ok(None)
    }

    /// The provider and key for `model`: the clinic's key, else the platform's when the plan
    /// allows, else the clinic's OpenAI-compatible endpoint for models no provider claims.
    pub(super) async fn choose(
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
        if limits.may_use_platform_keys() {
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

    /// Checks the clinic's saved key for `provider` with one small real call (admins only).
    pub async fn check_key(
        &self,
        tenant: TenantId,
        actor: Actor,
        provider: Provider,
    ) -> crate::Result<llm::Probe> {
        actor.require_admin("manage provider keys")?;
        let key = provider_keys::resolve(&self.db, &self.config.master_keys, tenant, provider)
            .await?
            .ok_or_else(|| {
                crate::Error::invalid(format!("No {} key is saved yet.", provider.label()))
            })?;
        let probe = llm::Probe::from_listing(provider, self.list_models(&key).await);
        let event = crate::audit::Event::new("provider_key.tested", provider.as_str())
            .after(serde_json::json!({ "ok": probe.ok, "message": probe.message }));
        crate::audit::record_alone(
            &self.db,
            Some(tenant),
            crate::audit::By::Person(actor.user),
            event,
        )
        .await?;
        Ok(probe)
    }

    /// The models `key` can use, as its provider lists them, through the right client; `Err`
    /// is a message for people.
    async fn list_models(&self, key: &ResolvedKey) -> Result<Vec<String>, String> {
        if let Some(url) = llm::models::models_url(&self.config, key) {
            self.address(key.provider, &url).map_err(|e| e.message)?;
        }
        llm::list_models(self.client_for(key.provider), &self.config, key).await
    }

    /// The models the clinic can use: what each provider it has a usable key for lists, in
    /// provider order. A provider that does not answer is left out (and logged).
    pub async fn available_models(&self, tenant: TenantId) -> crate::Result<Vec<ModelInfo>> {
        let mut models = Vec::new();
        for &provider in Provider::ALL {
            let Some(key) = self.usable_key(tenant, provider).await? else {
                continue;
            };
            match self.list_models(&key).await {
                Ok(ids) => models.extend(ids.into_iter().map(|id| ModelInfo { id, provider })),
                Err(message) => {
                    tracing::warn!(provider = provider.as_str(), %message, "provider did not list models")
                }
            }
        }
        Ok(models)
    }
}

/// OpenAI's moderation models (`omni-moderation-latest`, `text-moderation-latest`, ...).
pub(super) fn is_moderation_model(model: &str) -> bool {
    model.starts_with("omni-moderation-") || model.starts_with("text-moderation-")
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
        || is_moderation_model(m)
        || ["o1", "o3", "o4"].iter().any(|p| {
            m.strip_prefix(p)
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('-'))
        })
    {
        Some(Provider::OpenAi)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn models_go_to_the_provider_their_name_names() {
        for (model, provider) in [
            ("claude-sonnet-4-5", Some(Provider::Anthropic)),
            ("gpt-4o-mini", Some(Provider::OpenAi)),
            ("text-embedding-3-small", Some(Provider::OpenAi)),
            ("omni-moderation-latest", Some(Provider::OpenAi)),
            ("o1", Some(Provider::OpenAi)),
            ("o3-mini", Some(Provider::OpenAi)),
            (" o4-mini ", Some(Provider::OpenAi)),
            ("o10", None),
            ("o3mini", None),
            ("llama3.1:8b", None),
        ] {
            assert_eq!(provider_for_model(model), provider, "{model}");
        }
    }
}

//! Model calls as the providers see them: the messages and usage of a call, why one failed
//! (worded for people), the providers' wire formats ([`wire`]), token counts ([`tokens`]), the
//! history sent with a conversation ([`context`]), model listing and the key check
//! ([`models`]). The path every call takes, with budgets and keys, is the gateway.

pub mod anthropic;
pub mod body;
pub mod context;
pub mod models;
pub mod tokens;
pub mod wire;

pub use context::context;
pub use models::{list_models, probe, Probe};
pub use tessera_types::MessageRole;
pub use tokens::{count_tokens, prompt_upper_bound};

use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use uuid::Uuid;

use crate::Provider;

/// The prefix that names an agent as a model (`agent:front-desk`).
pub const AGENT_MODEL_PREFIX: &str = "agent:";

/// One message of a conversation (text only).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ChatMessage {
    pub role: MessageRole,
    pub content: String,
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
    /// The agent making the call, recorded with its usage (set when an agent makes the call).
    pub agent: Option<Uuid>,
}

/// Tokens of one call.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Usage {
    pub prompt_tokens: i64,
    pub completion_tokens: i64,
    /// Prompt tokens the provider served from its cache (part of `prompt_tokens`).
    pub cached_tokens: i64,
    /// Counted by Tessera because the provider reported none.
    pub estimated: bool,
}

impl Usage {
    pub fn total(&self) -> i64 {
        self.prompt_tokens + self.completion_tokens
    }
}

/// Why a call failed, worded for the person who made it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct LlmError {
    pub kind: LlmErrorKind,
    pub message: String,
    /// When to try again, for [`LlmErrorKind::RateLimited`].
    pub retry_after_secs: Option<u64>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LlmErrorKind {
    BadRequest,
    UnknownModel,
    /// No key for the provider the model needs.
    NoKey,
    /// The provider refused the key.
    KeyRejected,
    Forbidden,
    /// The clinic or its API key is over its plan's requests per minute.
    RateLimited,
    OverBudget,
    /// A failed payment's grace period has ended.
    PaymentOverdue,
    ProviderRateLimited,
    ProviderUnavailable,
    Timeout,
    /// Tessera's own database or cache cannot be reached: try again shortly.
    Unavailable,
    Internal,
}

impl LlmError {
    pub fn new(kind: LlmErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
            retry_after_secs: None,
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(LlmErrorKind::BadRequest, message)
    }

    pub fn internal(detail: impl std::fmt::Display) -> Self {
        tracing::error!(%detail, "gateway failure");
        Self::new(LlmErrorKind::Internal, tessera_types::SOMETHING_WENT_WRONG)
    }

    pub fn unknown_model(model: &str) -> Self {
        Self::new(
            LlmErrorKind::UnknownModel,
            format!(
                "The model {model:?} does not exist or is not available to this clinic: use a gpt-… or claude-… model, or an admin can set an OpenAI-compatible endpoint under Settings → Provider keys."
            ),
        )
    }

    pub fn no_key(provider: Provider) -> Self {
        Self::new(
            LlmErrorKind::NoKey,
            format!(
                "No {} key is set for this clinic. An admin can add one under Settings → Provider keys.",
                provider.label()
            ),
        )
    }

    pub fn timeout(provider: Provider, after: Duration) -> Self {
        Self::new(
            LlmErrorKind::Timeout,
            format!(
                "{} did not answer within {} seconds. Try again.",
                provider.label(),
                after.as_secs()
            ),
        )
    }

    pub fn unreachable(provider: Provider) -> Self {
        Self::new(
            LlmErrorKind::ProviderUnavailable,
            format!(
                "Could not reach {}. Try again in a moment.",
                provider.label()
            ),
        )
    }

    pub fn interrupted(provider: Provider) -> Self {
        Self::new(
            LlmErrorKind::ProviderUnavailable,
            format!(
                "{} stopped answering part-way through. Only what arrived is charged; try again.",
                provider.label()
            ),
        )
    }

    pub fn malformed(provider: Provider) -> Self {
        Self::new(
            LlmErrorKind::ProviderUnavailable,
            format!(
                "{} sent an answer Tessera could not read. Try again.",
                provider.label()
            ),
        )
    }

    /// Words a provider's error status and body for people, with any echo of the key removed.
    pub fn from_provider(
        provider: Provider,
        platform: bool,
        status: u16,
        body: &str,
        secret: Option<&SecretString>,
    ) -> Self {
        let name = provider.label();
        let parsed: serde_json::Value = serde_json::from_str(body).unwrap_or_default();
        let mut detail = parsed["error"]["message"]
            .as_str()
            .unwrap_or("no details given")
            .to_string();
        if let Some(secret) = secret {
            if !secret.expose_secret().is_empty() {
                detail = detail.replace(secret.expose_secret(), "[redacted]");
            }
        }
        let whose = if platform {
            format!("The platform's {name} key")
        } else {
            format!("Your {name} key")
        };
        let (kind, message) = match status {
            300..=399 => (
                LlmErrorKind::ProviderUnavailable,
                format!("{name} answered with a redirect ({status}), which Tessera does not follow. An admin can check the endpoint's address under Settings → Provider keys."),
            ),
            401 | 403 => (
                LlmErrorKind::KeyRejected,
                format!("{whose} was rejected: {detail} An admin can replace it under Settings → Provider keys."),
            ),
            404 => (
                LlmErrorKind::UnknownModel,
                format!("{name} does not offer this model: {detail}"),
            ),
            429 => (
                LlmErrorKind::ProviderRateLimited,
                format!("{name} is limiting requests made with {}: {detail} Try again shortly.", whose.to_lowercase()),
            ),
            500..=599 => (
                LlmErrorKind::ProviderUnavailable,
                format!("{name} is unavailable right now ({status}): {detail} Try again later."),
            ),
            _ => (
                LlmErrorKind::BadRequest,
                format!("{name} refused the request ({status}): {detail}"),
            ),
        };
        Self::new(kind, message)
    }
}

impl From<crate::egress::Refused> for LlmError {
    fn from(e: crate::egress::Refused) -> Self {
        let kind = match e {
            crate::egress::Refused::Private | crate::egress::Refused::Malformed => {
                LlmErrorKind::BadRequest
            }
            crate::egress::Refused::Unresolvable(_) => LlmErrorKind::ProviderUnavailable,
        };
        Self::new(kind, e.to_string())
    }
}

impl From<crate::Error> for LlmError {
    fn from(e: crate::Error) -> Self {
        if e.is_outage() {
            tracing::warn!(error = ?e, "a backing service is unreachable");
            return Self::new(LlmErrorKind::Unavailable, tessera_types::TRY_AGAIN_SHORTLY);
        }
        match e {
            crate::Error::OverBudget { .. } => Self::new(LlmErrorKind::OverBudget, e.to_string()),
            crate::Error::RateLimited { retry_after_secs } => Self {
                retry_after_secs: Some(retry_after_secs),
                ..Self::new(
                    LlmErrorKind::RateLimited,
                    format!("Too many requests this minute for this clinic or API key (its plan's limit). Try again in {retry_after_secs} seconds."),
                )
            },
            crate::Error::Forbidden(m) => Self::new(LlmErrorKind::Forbidden, m),
            crate::Error::Invalid(m) => Self::bad_request(m),
            other => Self::internal(format!("{other:?}")),
        }
    }
}

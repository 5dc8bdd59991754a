//! Calls to the model providers: the gateway every chat call goes through ([`gateway`]), the
//! providers' wire formats ([`wire`]), and the key check behind the Test button, which makes one
//! small real call (listing models, which costs nothing) and turns the provider's answer into a
//! message an admin can act on.

pub mod cache;
pub mod gateway;
pub mod wire;

pub use gateway::{
    Caller, Change, ChatOutcome, ChatRequest, ChatStream, Completion, Gateway, StreamEvent,
};

use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};

use crate::keys::{Provider, ResolvedKey};
use crate::Config;

const PROBE_TIMEOUT: Duration = Duration::from_secs(10);
const ANTHROPIC_VERSION: &str = "2023-06-01";

/// The outcome of a key check, worded for the admin.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Probe {
    pub ok: bool,
    pub message: String,
}

fn models_url(config: &Config, key: &ResolvedKey) -> Option<String> {
    match key.provider {
        Provider::OpenAi => Some(format!("{}/models", config.openai_base_url)),
        Provider::Anthropic => Some(format!("{}/v1/models", config.anthropic_base_url)),
        Provider::OpenAiCompatible => key
            .base_url
            .as_ref()
            .map(|b| format!("{}/models", b.trim_end_matches('/'))),
    }
}

/// Checks a key with one small real call to its provider.
pub async fn probe(http: &reqwest::Client, config: &Config, key: &ResolvedKey) -> Probe {
    match list_models(http, config, key).await {
        Ok(models) => Probe {
            ok: true,
            message: format!(
                "It works: {} answered and offers {} models.",
                key.provider.label(),
                models.len()
            ),
        },
        Err(message) => Probe { ok: false, message },
    }
}

/// The models a key can use, as the provider lists them; `Err` is a message for people.
#[tracing::instrument(skip_all, fields(provider = key.provider.as_str()))]
pub async fn list_models(
    http: &reqwest::Client,
    config: &Config,
    key: &ResolvedKey,
) -> Result<Vec<String>, String> {
    let name = key.provider.label();
    let Some(url) = models_url(config, key) else {
        return Err(format!("No base URL is set for the {name}."));
    };
    let mut req = http.get(&url).timeout(PROBE_TIMEOUT);
    if let Some(secret) = &key.secret {
        req = match key.provider {
            Provider::Anthropic => req
                .header("x-api-key", secret.expose_secret())
                .header("anthropic-version", ANTHROPIC_VERSION),
            _ => req.bearer_auth(secret.expose_secret()),
        };
    }
    let res = match req.send().await {
        Ok(res) => res,
        Err(e) if e.is_timeout() => {
            return Err(format!(
                "{name} did not answer within {} seconds. Try again.",
                PROBE_TIMEOUT.as_secs()
            ))
        }
        Err(e) => {
            tracing::warn!(error = %e.without_url(), "provider unreachable");
            return Err(format!(
                "Could not reach {name} at {url}. Check the address and that it is running."
            ));
        }
    };
    let status = res.status();
    let body: serde_json::Value = res.json().await.unwrap_or(serde_json::Value::Null);
    let provider_message = body["error"]["message"]
        .as_str()
        .unwrap_or("no details given")
        .to_string();
    // A provider may echo part of the key back; make sure none of it reaches the admin or a log.
    let provider_message = match &key.secret {
        Some(secret) if !secret.expose_secret().is_empty() => {
            provider_message.replace(secret.expose_secret(), "[redacted]")
        }
        _ => provider_message,
    };
    let message = match status.as_u16() {
        200..=299 => {
            let models = body["data"]
                .as_array()
                .map(Vec::as_slice)
                .unwrap_or_default();
            return Ok(models
                .iter()
                .filter_map(|m| m["id"].as_str().map(str::to_string))
                .collect());
        }
        401 | 403 => format!("Your {name} key was rejected: {provider_message}"),
        429 => format!("{name} is limiting requests with this key: {provider_message}"),
        500..=599 => format!(
            "{name} is unavailable right now ({status}): {provider_message} Try again later."
        ),
        _ => format!("{name} answered {status}: {provider_message}"),
    };
    Err(message)
}

/// Who wrote a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MessageRole {
    System,
    User,
    Assistant,
}

impl MessageRole {
    pub fn as_str(self) -> &'static str {
        match self {
            MessageRole::System => "system",
            MessageRole::User => "user",
            MessageRole::Assistant => "assistant",
        }
    }

    /// Reads a role as the OpenAI API names it (`developer` is the newer name for `system`).
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "system" | "developer" => Some(MessageRole::System),
            "user" => Some(MessageRole::User),
            "assistant" => Some(MessageRole::Assistant),
            _ => None,
        }
    }
}

/// One message of a conversation (text only).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ChatMessage {
    pub role: MessageRole,
    pub content: String,
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

/// Counts tokens when a provider reports none. BPE tokenizers (OpenAI's `o200k_base`,
/// Anthropic's) average about four characters of English per token and never merge across
/// whitespace-separated words beyond that, so the larger of the word count and a quarter of
/// the characters is a close, slightly high count. Events counted this way are marked
/// `estimated` in the ledger.
pub fn estimate_tokens(text: &str) -> i64 {
    let words = text.split_whitespace().count() as i64;
    let chars = text.chars().count() as i64;
    words.max((chars + 3) / 4)
}

/// An upper bound of a prompt's tokens, for reservations: a token is at least one byte, plus
/// each message's framing.
pub fn prompt_upper_bound(messages: &[ChatMessage]) -> i64 {
    8 + messages
        .iter()
        .map(|m| m.content.len() as i64 + 8)
        .sum::<i64>()
}

/// Why a call failed, worded for the person who made it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct LlmError {
    pub kind: LlmErrorKind,
    pub message: String,
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
    OverBudget,
    /// A failed payment's grace period has ended.
    PaymentOverdue,
    ProviderRateLimited,
    ProviderUnavailable,
    Timeout,
    Internal,
}

impl LlmError {
    pub fn new(kind: LlmErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(LlmErrorKind::BadRequest, message)
    }

    pub fn internal(detail: impl std::fmt::Display) -> Self {
        tracing::error!(%detail, "gateway failure");
        Self::new(
            LlmErrorKind::Internal,
            "Something went wrong on our side. Please retry.",
        )
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
                "{} stopped answering part-way through. Nothing was charged; try again.",
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

    /// The HTTP status for the API.
    pub fn status(&self) -> u16 {
        match self.kind {
            LlmErrorKind::BadRequest => 400,
            LlmErrorKind::UnknownModel => 404,
            LlmErrorKind::NoKey | LlmErrorKind::KeyRejected => 400,
            LlmErrorKind::Forbidden => 403,
            LlmErrorKind::OverBudget | LlmErrorKind::ProviderRateLimited => 429,
            LlmErrorKind::PaymentOverdue => 402,
            LlmErrorKind::ProviderUnavailable => 502,
            LlmErrorKind::Timeout => 504,
            LlmErrorKind::Internal => 500,
        }
    }

    /// OpenAI's error `type` and a `code` for this error.
    pub fn openai_type_and_code(&self) -> (&'static str, &'static str) {
        match self.kind {
            LlmErrorKind::BadRequest => ("invalid_request_error", "invalid_request"),
            LlmErrorKind::UnknownModel => ("invalid_request_error", "model_not_found"),
            LlmErrorKind::NoKey => ("invalid_request_error", "provider_key_missing"),
            LlmErrorKind::KeyRejected => ("invalid_request_error", "provider_key_rejected"),
            LlmErrorKind::Forbidden => ("permission_error", "tenant_inactive"),
            LlmErrorKind::OverBudget => ("insufficient_quota", "insufficient_quota"),
            LlmErrorKind::PaymentOverdue => ("insufficient_quota", "payment_overdue"),
            LlmErrorKind::ProviderRateLimited => ("rate_limit_error", "provider_rate_limited"),
            LlmErrorKind::ProviderUnavailable => ("server_error", "provider_unavailable"),
            LlmErrorKind::Timeout => ("server_error", "provider_timeout"),
            LlmErrorKind::Internal => ("server_error", "internal_error"),
        }
    }
}

impl From<crate::Error> for LlmError {
    fn from(e: crate::Error) -> Self {
        match e {
            crate::Error::OverBudget { .. } => Self::new(LlmErrorKind::OverBudget, e.to_string()),
            crate::Error::Forbidden(m) => Self::new(LlmErrorKind::Forbidden, m),
            crate::Error::Invalid(m) => Self::bad_request(m),
            other => Self::internal(format!("{other:?}")),
        }
    }
}

/// Refuses endpoints on loopback, private, link-local or otherwise internal addresses, so a
/// clinic cannot make the server reach into its own network. Names are resolved and every
/// address is checked. Self-hosted installs that run a model server next to Tessera set
/// `TESSERA_ALLOW_PRIVATE_ENDPOINTS=true`.
pub async fn guard_endpoint(url: &str) -> Result<(), LlmError> {
    let refuse = || {
        LlmError::new(
            LlmErrorKind::BadRequest,
            "The OpenAI-compatible endpoint points at a private or local address, which this installation does not allow.",
        )
    };
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
        .ok_or_else(refuse)?;
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let host_port = authority.rsplit('@').next().unwrap_or_default();
    let default_port = if url.starts_with("https://") { 443 } else { 80 };
    let target = if host_port.starts_with('[') || host_port.matches(':').count() == 1 {
        host_port.to_string()
    } else {
        format!("{host_port}:{default_port}")
    };
    let addrs = tokio::net::lookup_host(target.as_str())
        .await
        .map_err(|_| {
            LlmError::new(
                LlmErrorKind::ProviderUnavailable,
                format!("The OpenAI-compatible endpoint's host {host_port:?} could not be found."),
            )
        })?;
    for addr in addrs {
        if is_internal(addr.ip()) {
            return Err(refuse());
        }
    }
    Ok(())
}

fn is_internal(ip: std::net::IpAddr) -> bool {
    match ip {
        std::net::IpAddr::V4(v4) => {
            v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.octets()[0] == 100 && (v4.octets()[1] & 0xc0) == 64 // 100.64/10, carrier-grade NAT
        }
        std::net::IpAddr::V6(v6) => {
            v6.is_loopback()
                || v6.is_unspecified()
                || (v6.segments()[0] & 0xfe00) == 0xfc00 // unique local
                || (v6.segments()[0] & 0xffc0) == 0xfe80 // link local
                || v6.to_ipv4_mapped().is_some_and(|v4| is_internal(std::net::IpAddr::V4(v4)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn estimates_are_never_zero_for_text() {
        assert_eq!(estimate_tokens(""), 0);
        assert_eq!(estimate_tokens("Hello"), 2);
        assert_eq!(estimate_tokens("a b c d e"), 5);
        assert!(estimate_tokens(&"x".repeat(400)) >= 100);
    }

    #[test]
    fn internal_addresses_are_recognised() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "192.168.0.1",
            "169.254.169.254",
            "::1",
            "fd00::1",
            "100.64.0.1",
            "::ffff:10.0.0.1",
        ] {
            assert!(is_internal(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["8.8.8.8", "2606:4700::1111"] {
            assert!(!is_internal(ip.parse().unwrap()), "{ip}");
        }
    }

    #[tokio::test]
    async fn endpoints_on_loopback_are_refused() {
        assert!(guard_endpoint("http://127.0.0.1:11434/v1/chat/completions")
            .await
            .is_err());
        assert!(guard_endpoint("http://localhost/v1").await.is_err());
        assert!(guard_endpoint("http://[::1]:8000/v1").await.is_err());
    }
}

//! The models a key can use, as its provider lists them, and the key check behind the Test
//! button: one small real call (listing models costs nothing), its answer worded for an admin.

use std::time::Duration;

use secrecy::ExposeSecret;

use crate::provider_keys::ResolvedKey;
use crate::{Config, Provider};

const PROBE_TIMEOUT: Duration = Duration::from_secs(10);

/// The outcome of a key check, worded for the admin.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Probe {
    pub ok: bool,
    pub message: String,
}

/// Where a key's provider lists its models.
pub fn models_url(config: &Config, key: &ResolvedKey) -> Option<String> {
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
    Probe::from_listing(key.provider, list_models(http, config, key).await)
}

impl Probe {
    /// The outcome of a key check from the provider's answer to listing its models.
    pub fn from_listing(provider: Provider, listed: Result<Vec<String>, String>) -> Self {
        match listed {
            Ok(models) => Probe {
                ok: true,
                message: format!(
                    "It works: {} answered and offers {} models.",
                    provider.label(),
                    models.len()
                ),
            },
            Err(message) => Probe { ok: false, message },
        }
    }
}

/// The most of a model list read (a provider's list is a few kilobytes).
const MODEL_LIST_LIMIT: usize = 1 << 20;

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
                .header("anthropic-version", super::wire::ANTHROPIC_VERSION),
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
            if let Some(refused) = crate::egress::refusal(&e) {
                return Err(refused.to_string());
            }
            tracing::warn!(error = %e.without_url(), "provider unreachable");
            return Err(format!(
                "Could not reach {name} at {url}. Check the address and that it is running."
            ));
        }
    };
    let status = res.status();
    let body: serde_json::Value = match super::wire::read_limited(res, MODEL_LIST_LIMIT).await {
        Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null),
        Err(_) => serde_json::Value::Null,
    };
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
        300..=399 => format!(
            "{name} answered with a redirect ({status}), which Tessera does not follow. Check the address."
        ),
        401 | 403 => format!("Your {name} key was rejected: {provider_message}"),
        429 => format!("{name} is limiting requests with this key: {provider_message}"),
        500..=599 => format!(
            "{name} is unavailable right now ({status}): {provider_message} Try again later."
        ),
        _ => format!("{name} answered {status}: {provider_message}"),
    };
    Err(message)
}

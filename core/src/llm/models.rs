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

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
pub async fn probe(http: &crate::egress::Http, config: &Config, key: &ResolvedKey) -> Probe {
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
    http: &crate::egress::Http,
    config: &Config,
    key: &ResolvedKey,
) -> Result<Vec<String>, String> {
    use crate::egress;
    let name = key.provider.label();
    let Some(url) = models_url(config, key) else {
        return Err(format!("No base URL is set for the {name}."));
    };
    let address = egress::parse(&url)
        .and_then(|parsed| egress::uri(&parsed))
        .map_err(|e| e.to_string())?;
    let mut req = http::Request::get(address)
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .map_err(|_| egress::Refused::Malformed.to_string())?;
    if let Some(secret) = &key.secret {
        super::wire::put_key(req.headers_mut(), key.provider, secret.expose_secret()).map_err(
            |_| format!("Your {name} key cannot be sent: it holds characters no key has."),
        )?;
    }
    let timed_out = || {
        format!(
            "{name} did not answer within {} seconds. Try again.",
            PROBE_TIMEOUT.as_secs()
        )
    };
    let deadline = tokio::time::Instant::now() + PROBE_TIMEOUT;
    let res = match tokio::time::timeout_at(deadline, http.send(req)).await {
        Err(_) => return Err(timed_out()),
        Ok(Ok(res)) => res,
        Ok(Err(e)) => {
            let guarded = key.provider == Provider::OpenAiCompatible;
            if let Some(refused) = egress::refusal(&e).filter(|_| guarded) {
                return Err(refused.to_string());
            }
            tracing::warn!(error = %egress::Chain(&e), "provider unreachable");
            return Err(format!(
                "Could not reach {name} at {url}. Check the address and that it is running."
            ));
        }
    };
    let status = res.status();
    let read = tokio::time::timeout_at(deadline, super::wire::read_limited(res, MODEL_LIST_LIMIT));
    let body: serde_json::Value = match read.await {
        Err(_) => return Err(timed_out()),
        Ok(Ok(bytes)) => serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null),
        Ok(Err(_)) => serde_json::Value::Null,
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

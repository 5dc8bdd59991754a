//! Sending a call to its provider: the address, the key in the provider's header, and
//! retries with backoff on timeouts, unreachable hosts, 429 and 5xx. Nothing has reached the
//! client while this runs, so a retry is invisible to it.

use std::time::Duration;

use secrecy::ExposeSecret;

use super::lookups::Chosen;
use super::Gateway;
use crate::llm::{wire, LlmError, LlmErrorKind};
use crate::metering::Held;
use crate::{egress, observe, Provider};

/// Gives a failed call's tokens back (nothing is charged). A release that fails is logged:
/// the reservation expires by itself.
pub(super) async fn release(reservation: Held) {
    // Boxed: failures are rare, and the futures of the calls that wait on this stay small.
    if let Err(e) = Box::pin(reservation.release()).await {
        tracing::warn!(error = ?e, "could not release a reservation");
    }
}

/// Puts a call's headers to `chosen` in `headers`: its content type, and the key in the
/// provider's header (marked sensitive, so no log shows it).
fn put_headers(
    headers: &mut http::HeaderMap,
    chosen: &Chosen,
    anthropic_beta: Option<&str>,
) -> Result<(), LlmError> {
    use http::header::{HeaderValue, CONTENT_TYPE};
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    let Some(secret) = &chosen.key.secret else {
        return Ok(());
    };
    // A key that is no header value is one the provider would refuse.
    let rejected = |_| {
        LlmError::new(
            LlmErrorKind::KeyRejected,
            format!(
                "The {} key cannot be sent (it holds characters no key has). An admin can replace it under Settings → Provider keys.",
                chosen.provider.label()
            ),
        )
    };
    wire::put_key(headers, chosen.provider, secret.expose_secret()).map_err(rejected)?;
    if let (Provider::Anthropic, Some(beta)) = (chosen.provider, anthropic_beta) {
        // Checked by `beta_header`: names, commas.
        let beta = http::HeaderValue::from_str(beta)
            .map_err(|_| LlmError::bad_request("anthropic-beta: expected beta names."))?;
        headers.insert("anthropic-beta", beta);
    }
    Ok(())
}

/// What a call asks of its provider.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(super) enum Op {
    Chat,
    /// OpenAI's Responses API (OpenAI and compatible providers only).
    Responses,
    Embeddings,
    /// OpenAI's moderation of text and images (free; OpenAI only).
    Moderations,
    /// Anthropic's count of a Messages body's input tokens (nothing else offers it).
    CountTokens,
    /// OpenAI's count of a Responses body's input tokens (free; OpenAI and compatible
    /// providers).
    InputTokens,
}

impl Op {
    pub(super) fn as_str(self) -> &'static str {
        match self {
            Op::Chat => "chat",
            Op::Responses => "responses",
            Op::Embeddings => "embeddings",
            Op::Moderations => "moderations",
            Op::CountTokens => "count_tokens",
            Op::InputTokens => "input_tokens",
        }
    }

    /// Its path under an OpenAI-format base URL (`None`: no OpenAI-format API has it).
    fn path(self) -> Option<&'static str> {
        match self {
            Op::Chat => Some("chat/completions"),
            Op::Responses => Some("responses"),
            Op::Embeddings => Some("embeddings"),
            Op::Moderations => Some("moderations"),
            Op::CountTokens => None,
            Op::InputTokens => Some("responses/input_tokens"),
        }
    }
}

/// The address of `op` at `provider` when the installation configures it (OpenAI, and
/// Anthropic's Messages API), not a clinic.
fn installation_url(config: &crate::config::Config, provider: Provider, op: Op) -> Option<String> {
    match (provider, op) {
        (Provider::OpenAi, _) => Some(format!("{}/{}", config.openai_base_url, op.path()?)),
        (Provider::Anthropic, Op::Chat) => {
            Some(format!("{}/v1/messages", config.anthropic_base_url))
        }
        (Provider::Anthropic, Op::CountTokens) => Some(format!(
            "{}/v1/messages/count_tokens",
            config.anthropic_base_url
        )),
        _ => None,
    }
}

/// The addresses of the providers the installation configures ([`installation_url`]), parsed
/// once rather than for every call; `None` where the configured base URL does not parse (such
/// calls are refused as unreachable).
#[derive(Debug)]
pub(super) struct Endpoints {
    openai_chat: Option<egress::Address>,
    openai_responses: Option<egress::Address>,
    openai_embeddings: Option<egress::Address>,
    openai_moderations: Option<egress::Address>,
    openai_input_tokens: Option<egress::Address>,
    anthropic_messages: Option<egress::Address>,
    anthropic_count_tokens: Option<egress::Address>,
}

impl Endpoints {
    pub(super) fn new(config: &crate::config::Config) -> Self {
        let parse = |provider, op| {
            installation_url(config, provider, op)
                .and_then(|text| egress::address(&egress::parse(&text).ok()?).ok())
        };
        Self {
            openai_chat: parse(Provider::OpenAi, Op::Chat),
            openai_responses: parse(Provider::OpenAi, Op::Responses),
            openai_embeddings: parse(Provider::OpenAi, Op::Embeddings),
            openai_moderations: parse(Provider::OpenAi, Op::Moderations),
            openai_input_tokens: parse(Provider::OpenAi, Op::InputTokens),
            anthropic_messages: parse(Provider::Anthropic, Op::Chat),
            anthropic_count_tokens: parse(Provider::Anthropic, Op::CountTokens),
        }
    }

    /// The address of `op` at `provider`, if it is the installation's (not a clinic's).
    fn get(&self, provider: Provider, op: Op) -> Option<&egress::Address> {
        match (provider, op) {
            (Provider::OpenAi, Op::Chat) => self.openai_chat.as_ref(),
            (Provider::OpenAi, Op::Responses) => self.openai_responses.as_ref(),
            (Provider::OpenAi, Op::Embeddings) => self.openai_embeddings.as_ref(),
            (Provider::OpenAi, Op::Moderations) => self.openai_moderations.as_ref(),
            (Provider::OpenAi, Op::InputTokens) => self.openai_input_tokens.as_ref(),
            (Provider::Anthropic, Op::Chat) => self.anthropic_messages.as_ref(),
            (Provider::Anthropic, Op::CountTokens) => self.anthropic_count_tokens.as_ref(),
            _ => None,
        }
    }
}

impl Gateway {
    /// The client for calls to `provider`: the guarded one for addresses a clinic supplied.
    pub(super) fn client_for(&self, provider: Provider) -> &egress::Http {
        match provider {
            Provider::OpenAiCompatible => &self.egress,
            Provider::OpenAi | Provider::Anthropic => &self.http,
        }
    }

    /// The address to call for `url`, refused if a clinic supplied it and its host is an
    /// internal IP address (host names are checked by the guarded client's resolver as it
    /// connects).
    pub(super) fn address(
        &self,
        provider: Provider,
        url: &str,
    ) -> Result<egress::Address, LlmError> {
        let parsed = egress::parse(url)?;
        if provider == Provider::OpenAiCompatible && !self.config.allow_private_endpoints {
            egress::check_host(&parsed)?;
        }
        Ok(egress::address(&parsed)?)
    }

    fn endpoint(&self, chosen: &Chosen, op: Op) -> Result<String, LlmError> {
        if chosen.provider == Provider::OpenAiCompatible {
            let base = chosen.key.base_url.as_deref().ok_or_else(|| {
                LlmError::new(
                    LlmErrorKind::NoKey,
                    "The OpenAI-compatible endpoint has no base URL. An admin can set it under Settings → Provider keys.",
                )
            })?;
            let path = op.path().ok_or_else(|| {
                LlmError::bad_request(
                    "Only Anthropic counts a message's tokens; name a Claude model.",
                )
            })?;
            return Ok(format!("{}/{}", base.trim_end_matches('/'), path));
        }
        // The installation has every address but Anthropic's for embeddings and OpenAI's
        // Responses API, and OpenAI's for counting a Messages body's tokens.
        installation_url(&self.config, chosen.provider, op).ok_or_else(|| {
            LlmError::bad_request(match op {
                Op::CountTokens => "Only Anthropic counts a message's tokens; name a Claude model.",
                Op::Responses => "model: /v1/responses answers with OpenAI's and OpenAI-compatible models; send Claude models to /v1/chat/completions or /v1/messages.",
                Op::InputTokens => "model: /v1/responses/input_tokens counts for OpenAI's and OpenAI-compatible models; count a Claude model's tokens with /v1/messages/count_tokens.",
                _ => "Anthropic does not offer embeddings; choose an OpenAI or OpenAI-compatible embedding model.",
            })
        })
    }

    /// The address of `op` at the clinic's endpoint (or an error for an operation the
    /// installation's provider does not offer). An OpenAI-compatible endpoint's is parsed and
    /// checked once per base URL and kept (the check is of the text: a host name is checked by
    /// the guarded client's resolver at each connection), rather than for every call.
    fn clinic_address(&self, chosen: &Chosen, op: Op) -> Result<egress::Address, LlmError> {
        let key = match (chosen.provider, chosen.key.base_url.as_deref()) {
            (Provider::OpenAiCompatible, Some(base)) => Some((Box::<str>::from(base), op)),
            _ => None,
        };
        if let Some(address) = key.as_ref().and_then(|k| self.caches.addresses.get(k)) {
            return Ok(address);
        }
        let text = self.endpoint(chosen, op)?;
        let address = self
            .address(chosen.provider, &text)
            .map_err(|e| match e.kind {
                // The address was saved, so it parsed then: it no longer reads as one.
                LlmErrorKind::BadRequest => LlmError::unreachable(chosen.provider),
                _ => e,
            })?;
        if let Some(key) = key {
            self.caches.addresses.insert(key, address.clone());
        }
        Ok(address)
    }

    /// Sends a call, retrying with backoff on timeouts, unreachable hosts, 429 and 5xx. Nothing
    /// has reached the client yet, so a retry is invisible to it. `anthropic_beta` (checked by
    /// [`super::beta_header`]) goes to Anthropic as its `anthropic-beta` header.
    pub(super) async fn send(
        &self,
        chosen: &Chosen,
        op: Op,
        bytes: bytes::Bytes,
        anthropic_beta: Option<&str>,
    ) -> Result<egress::Response, LlmError> {
        let address = match self.endpoints.get(chosen.provider, op) {
            Some(address) => address.clone(),
            None => self.clinic_address(chosen, op)?,
        };
        let timeout = Duration::from_secs(self.config.provider_timeout_secs);
        let mut attempt = 0;
        loop {
            let mut request = http::Request::post(address.uri.clone())
                .body(http_body_util::Full::new(bytes.clone()))
                .map_err(LlmError::internal)?;
            request
                .headers_mut()
                .insert(http::header::HOST, address.host.clone());
            // Built for each attempt (a retry is rare) rather than copied from a map kept aside.
            put_headers(request.headers_mut(), chosen, anthropic_beta)?;
            let sent = std::time::Instant::now();
            let answer =
                tokio::time::timeout(timeout, self.client_for(chosen.provider).send(request)).await;
            observe::provider_response(chosen.provider, op.as_str(), sent.elapsed());
            let err = match answer {
                Err(_) => {
                    observe::provider_error(chosen.provider, "timeout");
                    LlmError::timeout(chosen.provider, timeout)
                }
                Ok(Err(e)) => {
                    // The guard's refusals (and its words) are about a clinic's endpoint; the
                    // installation's hosts are retried like any unreachable one.
                    let guarded = chosen.provider == Provider::OpenAiCompatible;
                    if let Some(refused) = egress::refusal(&e).filter(|_| guarded) {
                        return Err(refused.into());
                    }
                    observe::provider_error(chosen.provider, "unreachable");
                    tracing::warn!(error = %egress::Chain(&e), provider = chosen.provider.as_str(), "provider unreachable");
                    LlmError::unreachable(chosen.provider)
                }
                Ok(Ok(res)) if res.status().is_success() => return Ok(res),
                Ok(Ok(res)) => {
                    let status = res.status().as_u16();
                    observe::provider_error(chosen.provider, observe::status_kind(status));
                    let text =
                        tokio::time::timeout(timeout, wire::read_limited(res, wire::ERROR_LIMIT))
                            .await
                            .ok()
                            .and_then(Result::ok)
                            .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
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
}

//! The provider-compatible API under `/v1`, authenticated by an API key (`tsk_...`) sent as
//! `Authorization: Bearer` or, as Anthropic's SDK sends it, `x-api-key`. Chat completions, the
//! Responses API and embeddings answer in OpenAI's shapes, `/v1/messages` in Anthropic's
//! (errors included), so the official SDKs work by setting their base URL and key. Chat and
//! Responses bodies are forwarded as the client sent them (see
//! [`tessera_core::gateway::Gateway::forward`]); the replies come back as the provider's
//! bytes. This module is the one place that knows both error shapes and
//! which status each failure gets.

use std::convert::Infallible;
use std::time::{SystemTime, UNIX_EPOCH};

use app::server::AppState;
use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures_util::StreamExt;
use serde_json::{json, Value};
use tessera_core::gateway::{Caller, ChatOutcome, ChatStream, Forward, ModelInfo, StreamEvent};
use tessera_core::knowledge::search::Passage;
use tessera_core::llm::body::{Body as RequestBody, Dialect};
use tessera_core::llm::{LlmError, LlmErrorKind};
use tessera_core::Provider;

/// A refusal, rendered in either provider's error shape.
struct ApiError {
    status: StatusCode,
    /// OpenAI's error `type`.
    kind: &'static str,
    code: &'static str,
    message: String,
    retry_after: Option<u64>,
}

impl ApiError {
    fn new(
        status: StatusCode,
        kind: &'static str,
        code: &'static str,
        message: impl Into<String>,
    ) -> Self {
        Self {
            status,
            kind,
            code,
            message: message.into(),
            retry_after: None,
        }
    }

    fn invalid(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            "invalid_request",
            message,
        )
    }

    /// `{"error": {"message", "type", "param", "code"}}`.
    fn openai_body(&self) -> Value {
        json!({ "error": { "message": self.message, "type": self.kind, "param": null, "code": self.code } })
    }

    /// `{"type": "error", "error": {"type", "message"}}`, with Anthropic's type for the status.
    fn anthropic_body(&self) -> Value {
        let kind = match self.status.as_u16() {
            400 | 402 | 422 => "invalid_request_error",
            401 => "authentication_error",
            403 => "permission_error",
            404 => "not_found_error",
            413 => "request_too_large",
            429 => "rate_limit_error",
            503 | 529 => "overloaded_error",
            _ => "api_error",
        };
        json!({ "type": "error", "error": { "type": kind, "message": self.message } })
    }

    fn respond(&self, body: Value) -> Response {
        let mut res = (self.status, Json(body)).into_response();
        if let Some(secs) = self.retry_after {
            res.headers_mut()
                .insert(header::RETRY_AFTER, header::HeaderValue::from(secs));
        }
        res
    }

    fn openai(self) -> Response {
        self.respond(self.openai_body())
    }

    fn anthropic(self) -> Response {
        self.respond(self.anthropic_body())
    }

    /// In Anthropic's shape when `anthropic`, else in OpenAI's.
    fn in_shape(self, anthropic: bool) -> Response {
        if anthropic {
            self.anthropic()
        } else {
            self.openai()
        }
    }
}

impl From<&LlmError> for ApiError {
    fn from(e: &LlmError) -> Self {
        let (status, kind, code) = shape(e.kind);
        let mut out = Self::new(status, kind, code, e.message.clone());
        if e.kind == LlmErrorKind::Unavailable {
            out.retry_after = Some(tessera_types::OUTAGE_RETRY_SECS);
        }
        if let Some(secs) = e.retry_after_secs {
            out.retry_after = Some(secs);
        }
        out
    }
}

/// The HTTP status, OpenAI's error `type` and a `code` for a failed call.
fn shape(kind: LlmErrorKind) -> (StatusCode, &'static str, &'static str) {
    use LlmErrorKind as K;
    match kind {
        K::BadRequest => (
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            "invalid_request",
        ),
        K::UnknownModel => (
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            "model_not_found",
        ),
        K::NoKey => (
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            "provider_key_missing",
        ),
        K::KeyRejected => (
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            "provider_key_rejected",
        ),
        K::Forbidden => (StatusCode::FORBIDDEN, "permission_error", "tenant_inactive"),
        K::RateLimited => (
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limit_error",
            "rate_limit_exceeded",
        ),
        K::OverBudget => (
            StatusCode::TOO_MANY_REQUESTS,
            "insufficient_quota",
            "insufficient_quota",
        ),
        K::PaymentOverdue => (
            StatusCode::PAYMENT_REQUIRED,
            "insufficient_quota",
            "payment_overdue",
        ),
        K::ProviderRateLimited => (
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limit_error",
            "provider_rate_limited",
        ),
        K::ProviderUnavailable => (
            StatusCode::BAD_GATEWAY,
            "server_error",
            "provider_unavailable",
        ),
        K::Timeout => (
            StatusCode::GATEWAY_TIMEOUT,
            "server_error",
            "provider_timeout",
        ),
        K::Unavailable => (
            StatusCode::SERVICE_UNAVAILABLE,
            "server_error",
            "service_unavailable",
        ),
        K::Internal => (
            StatusCode::INTERNAL_SERVER_ERROR,
            "server_error",
            "internal_error",
        ),
    }
}

fn llm_error(e: &LlmError) -> Response {
    ApiError::from(e).openai()
}

fn invalid(message: impl Into<String>) -> Response {
    ApiError::invalid(message).openai()
}

/// The API key: `Authorization: Bearer tsk_...`, or `x-api-key: tsk_...` as Anthropic's SDK
/// sends it.
fn api_key(headers: &HeaderMap) -> Option<&str> {
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        });
    bearer
        .or_else(|| headers.get("x-api-key").and_then(|v| v.to_str().ok()))
        .map(str::trim)
}

/// The caller of an API request, counted against its plan's requests per minute.
async fn caller(state: &AppState, headers: &HeaderMap) -> Result<Caller, ApiError> {
    let caller = authenticated(state, headers).await?;
    match state.services.gateway.admit(&caller).await {
        Ok(()) => Ok(caller),
        Err(e) => Err(ApiError::from(&LlmError::from(e))),
    }
}

/// The caller of an API request, not yet counted: for chat calls, whose reservation counts
/// them in the same round trip (see `Gateway::forward`).
async fn authenticated(state: &AppState, headers: &HeaderMap) -> Result<Caller, ApiError> {
    let Some(token) = api_key(headers) else {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "invalid_request_error",
            "missing_api_key",
            "You didn't provide an API key. Send it as Authorization: Bearer tsk_... or x-api-key: tsk_... (create one under API keys).",
        ));
    };
    match state.services.gateway.authenticate(token).await {
        Ok(Some(caller)) => {
            app::server::record_clinic(caller.tenant);
            Ok(caller)
        }
        Ok(None) => Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "invalid_request_error",
            "invalid_api_key",
            "Incorrect API key provided. It may have been revoked; create a new one under API keys.",
        )),
        Err(e) => Err(ApiError::from(&LlmError::from(e))),
    }
}

/// `GET /v1/models`: the models this clinic can use, from each provider it has a key for. In
/// OpenAI's shape, or, for Anthropic's SDK (which sends `anthropic-version` on every call),
/// in Anthropic's with Claude's models (the ones `/v1/messages` serves).
pub async fn models(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let anthropic = headers.contains_key(ANTHROPIC_VERSION);
    let models = match listed(&state, &headers, anthropic).await {
        Ok(models) => models,
        Err(res) => return res,
    };
    if anthropic {
        let data: Vec<Value> = models.iter().map(anthropic_model_json).collect();
        let first = models.first().map(|m| &m.id);
        let last = models.last().map(|m| &m.id);
        return Json(
            json!({ "data": data, "has_more": false, "first_id": first, "last_id": last }),
        )
        .into_response();
    }
    let data: Vec<Value> = models.iter().map(model_json).collect();
    Json(json!({ "object": "list", "data": data })).into_response()
}

/// `GET /v1/models/{model}`: one of the models `GET /v1/models` lists, in the same shape (an
/// id may hold `/`, as some compatible providers' do), or a 404.
pub async fn model(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let anthropic = headers.contains_key(ANTHROPIC_VERSION);
    let models = match listed(&state, &headers, anthropic).await {
        Ok(models) => models,
        Err(res) => return res,
    };
    match models.iter().find(|m| m.id == id) {
        Some(m) if anthropic => Json(anthropic_model_json(m)).into_response(),
        Some(m) => Json(model_json(m)).into_response(),
        None => ApiError::new(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            "model_not_found",
            format!(
                "The model `{id}` does not exist or this clinic cannot use it; GET /v1/models lists the ones it can."
            ),
        )
        .in_shape(anthropic),
    }
}

/// The header Anthropic's SDK sends with every request.
const ANTHROPIC_VERSION: &str = "anthropic-version";

/// The caller's models (Claude's alone for Anthropic's SDK), or the refusal in its shape.
async fn listed(
    state: &AppState,
    headers: &HeaderMap,
    anthropic: bool,
) -> Result<Vec<ModelInfo>, Response> {
    let render = |e: ApiError| e.in_shape(anthropic);
    let caller = caller(state, headers).await.map_err(render)?;
    let mut models = state
        .services
        .gateway
        .available_models(caller.tenant)
        .await
        .map_err(|e| render(ApiError::from(&LlmError::from(e))))?;
    if anthropic {
        models.retain(|m| m.provider == Provider::Anthropic);
    }
    Ok(models)
}

fn model_json(m: &ModelInfo) -> Value {
    json!({ "id": m.id, "object": "model", "created": 0, "owned_by": m.provider.as_str() })
}

/// A model in Anthropic's shape (`created_at` is not known here: the epoch, as OpenAI's shape
/// has `created` 0).
fn anthropic_model_json(m: &ModelInfo) -> Value {
    json!({ "type": "model", "id": m.id, "display_name": m.id, "created_at": "1970-01-01T00:00:00Z" })
}

/// The most of a body sent to an address not served that is read (and dropped) before the
/// answer.
const UNSERVED_BODY_LIMIT: usize = 1 << 20;

/// Any other path under `/v1`: a 404 in the shape the caller's SDK reads (Anthropic's under
/// `/v1/messages` and `/v1/complete`, OpenAI's elsewhere), naming what is served, instead of
/// the site's page for a missing address.
///
/// The body is read to its end first (up to [`UNSERVED_BODY_LIMIT`]): answered with a body
/// still on its way, the connection would be closed after the answer, and a client that sends
/// its next call on it (as SDKs do, with kept-alive connections) would find it gone.
pub async fn unknown(
    method: axum::http::Method,
    uri: axum::http::Uri,
    body: axum::body::Body,
) -> Response {
    // A longer body, or one that breaks off, ends the connection after the answer, as before.
    let _ = axum::body::to_bytes(body, UNSERVED_BODY_LIMIT).await;
    let path = uri.path();
    let error = ApiError::new(
        StatusCode::NOT_FOUND,
        "invalid_request_error",
        "unknown_url",
        format!(
            "Unknown request URL: {method} {path}.{} Tessera serves POST /v1/chat/completions, POST /v1/responses, POST /v1/responses/input_tokens, POST /v1/embeddings, POST /v1/moderations, POST /v1/messages, POST /v1/messages/count_tokens, GET /v1/models and GET /v1/models/{{model}}.",
            unserved_why(path)
        ),
    );
    error.in_shape(path.starts_with("/v1/messages") || path == "/v1/complete")
}

/// Why an address the providers serve is not served here, for the ones an SDK user is likely
/// to try; empty for the others.
fn unserved_why(path: &str) -> &'static str {
    if path.starts_with("/v1/responses/") {
        " Responses are not kept by Tessera nor referred to by id (previous_response_id is refused, since an earlier response's size cannot be bounded for the clinic's budget): each reply is whole as it came, so there is none to retrieve, list or delete."
    } else if path.starts_with("/v1/messages/batches") || path.starts_with("/v1/batches") {
        " Batches are not served: their usage comes after the call, so their cost cannot be reserved against the clinic's budget."
    } else {
        ""
    }
}

/// The passages an agent's reply was grounded in (Tessera's extra field `sources`): the number
/// the reply cites (`[1]`), the document, its section and the passage's text.
fn sources_json(sources: &[Passage]) -> Value {
    Value::Array(
        sources
            .iter()
            .enumerate()
            .map(|(i, p)| {
                json!({
                    "index": i + 1,
                    "document_id": p.document,
                    "document": p.name,
                    "heading": p.heading,
                    "text": p.text,
                })
            })
            .collect(),
    )
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The id Tessera keeps the call under (in the ledger), for support.
const CALL_ID: header::HeaderName = header::HeaderName::from_static("x-tessera-call-id");

fn with_call_id(mut res: Response, id: uuid::Uuid) -> Response {
    let mut text = [0u8; uuid::fmt::Hyphenated::LENGTH];
    if let Ok(v) = header::HeaderValue::from_str(id.hyphenated().encode_lower(&mut text)) {
        res.headers_mut().insert(CALL_ID, v);
    }
    res
}

/// Headers a JSON answer leaves with: its type and length, the call's and the request's ids,
/// and the four the guard adds (`crate::guard`).
const JSON_HEADERS: usize = 8;

/// A JSON answer, with room for all its headers made at once: a map grown on the way is copied
/// and its headers hashed again.
fn json_bytes(bytes: Bytes) -> Response {
    let mut res = Response::new(Body::from(bytes));
    let headers = res.headers_mut();
    headers.reserve(JSON_HEADERS);
    headers.insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    res
}

/// `POST /v1/chat/completions`: the body forwarded through the gateway as sent; the reply as
/// the provider gave it (translated for Claude models), JSON or server-sent events.
pub async fn chat_completions(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    match forward_openai(&state, &headers, &body, Dialect::OpenAi).await {
        Err(e) => e.openai(),
        Ok(ChatOutcome::Complete(c)) => {
            let bytes = c.body.clone().unwrap_or_default();
            let res = if c.sources.is_empty() {
                json_bytes(bytes)
            } else {
                // An agent's passages, as an extra field clients may read or ignore.
                match serde_json::from_slice::<Value>(&bytes) {
                    Ok(mut v) => {
                        v["sources"] = sources_json(&c.sources);
                        Json(v).into_response()
                    }
                    Err(_) => json_bytes(bytes),
                }
            };
            with_call_id(res, c.id)
        }
        Ok(ChatOutcome::Stream(stream)) => {
            let id = stream.id;
            with_call_id(streamed(stream, Dialect::OpenAi), id)
        }
    }
}

/// An OpenAI-format body (chat completions or the Responses API) forwarded through the
/// gateway for the API key's clinic, or why it is refused.
async fn forward_openai(
    state: &AppState,
    headers: &HeaderMap,
    body: &[u8],
    dialect: Dialect,
) -> Result<ChatOutcome, ApiError> {
    let caller = authenticated(state, headers).await?;
    let body = RequestBody::parse(body).map_err(ApiError::invalid)?;
    let forward = Forward {
        dialect,
        body,
        anthropic_beta: None,
    };
    state
        .services
        .gateway
        .forward(&caller, forward)
        .await
        .map_err(|e| ApiError::from(&e))
}

/// `POST /v1/responses`: OpenAI's Responses API for OpenAI's and OpenAI-compatible models,
/// forwarded through the gateway as sent (budget, key and ledger as for chat completions); the
/// reply as the provider gave it, JSON or server-sent events. What would make a call's cost
/// unknown before it is made (responses and conversations kept by the provider, background
/// calls, hosted tools) is refused by name.
pub async fn responses(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    match forward_openai(&state, &headers, &body, Dialect::Responses).await {
        Err(e) => e.openai(),
        Ok(ChatOutcome::Complete(c)) => {
            with_call_id(json_bytes(c.body.clone().unwrap_or_default()), c.id)
        }
        Ok(ChatOutcome::Stream(stream)) => {
            let id = stream.id;
            with_call_id(streamed(stream, Dialect::Responses), id)
        }
    }
}

/// `POST /v1/messages`: Anthropic's Messages API for its SDK, forwarded to Anthropic through
/// the gateway (budget, key and ledger as for chat completions).
pub async fn messages(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    let caller = match authenticated(&state, &headers).await {
        Ok(c) => c,
        Err(e) => return e.anthropic(),
    };
    let (body, anthropic_beta) = match anthropic_parts(&headers, &body) {
        Ok(parts) => parts,
        Err(e) => return e.anthropic(),
    };
    let forward = Forward {
        dialect: Dialect::Anthropic,
        body,
        anthropic_beta,
    };
    match state.services.gateway.forward(&caller, forward).await {
        Err(e) => ApiError::from(&e).anthropic(),
        Ok(ChatOutcome::Complete(c)) => {
            with_call_id(json_bytes(c.body.clone().unwrap_or_default()), c.id)
        }
        Ok(ChatOutcome::Stream(stream)) => {
            let id = stream.id;
            with_call_id(streamed(stream, Dialect::Anthropic), id)
        }
    }
}

/// An Anthropic-format request's body and beta features, or why it is refused.
fn anthropic_parts(
    headers: &HeaderMap,
    body: &[u8],
) -> Result<(RequestBody, Option<String>), ApiError> {
    let body = RequestBody::parse(body).map_err(ApiError::invalid)?;
    Ok((body, anthropic_beta(headers)?))
}

/// Beta features (`anthropic-beta`, as the Anthropic SDK's `betas` sends them), checked, to go
/// to Anthropic as asked.
fn anthropic_beta(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    match headers.get("anthropic-beta").map(|v| v.to_str()) {
        None => Ok(None),
        Some(Ok(value)) => tessera_core::gateway::beta_header(value)
            .map(Some)
            .map_err(ApiError::invalid),
        Some(Err(_)) => Err(ApiError::invalid(
            "anthropic-beta: expected plain ASCII beta names.",
        )),
    }
}

/// `POST /v1/messages/count_tokens`: Anthropic's count of a Messages body's input tokens, as
/// its SDK's `messages.count_tokens` asks for it. Counted against the plan's requests per
/// minute, not metered (Anthropic does not charge for it).
pub async fn count_tokens(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let caller = match caller(&state, &headers).await {
        Ok(c) => c,
        Err(e) => return e.anthropic(),
    };
    let (body, beta) = match anthropic_parts(&headers, &body) {
        Ok(parts) => parts,
        Err(e) => return e.anthropic(),
    };
    match state
        .services
        .gateway
        .count_tokens(&caller, body, beta.as_deref())
        .await
    {
        Ok(bytes) => json_bytes(bytes),
        Err(e) => ApiError::from(&e).anthropic(),
    }
}

/// `POST /v1/moderations`: OpenAI's moderation of text and images, as its SDK's
/// `moderations.create` asks for it. Counted against the plan's requests per minute, not
/// metered (OpenAI does not charge for it).
pub async fn moderations(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (caller, body) = match free_call_parts(&state, &headers, &body).await {
        Ok(parts) => parts,
        Err(res) => return res,
    };
    free_call_answer(state.services.gateway.moderate(&caller, body).await)
}

/// `POST /v1/responses/input_tokens`: the count of a Responses body's input tokens, as
/// OpenAI's SDK's `responses.input_tokens.count` asks for it, from the model's provider.
/// Counted against the plan's requests per minute, not metered (OpenAI does not charge for
/// it).
pub async fn input_tokens(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (caller, body) = match free_call_parts(&state, &headers, &body).await {
        Ok(parts) => parts,
        Err(res) => return res,
    };
    free_call_answer(state.services.gateway.input_tokens(&caller, body).await)
}

/// The caller (counted against the plan's requests per minute) and the body of an OpenAI-format
/// call the provider does not charge for, or the answer to a request that is neither.
async fn free_call_parts(
    state: &AppState,
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<(Caller, RequestBody), Response> {
    let caller = caller(state, headers).await.map_err(|e| e.openai())?;
    let body = RequestBody::parse(body).map_err(invalid)?;
    Ok((caller, body))
}

/// The provider's answer to such a call as it came, or its failure in OpenAI's shape.
fn free_call_answer(answer: Result<Bytes, LlmError>) -> Response {
    match answer {
        Ok(bytes) => json_bytes(bytes),
        Err(e) => ApiError::from(&e).openai(),
    }
}

/// A streamed reply: the provider's events as they came (for an agent, a first chunk with its
/// passages), and an error as the client's dialect words one.
fn streamed(stream: ChatStream, dialect: Dialect) -> Response {
    let first = (!stream.sources.is_empty()).then(|| {
        sse(&json!({
            "id": format!("chatcmpl-{}", stream.id.simple()),
            "object": "chat.completion.chunk",
            "created": unix_now(),
            "model": stream.model,
            "system_fingerprint": null,
            "choices": [{ "index": 0, "delta": { "role": "assistant", "content": "" }, "logprobs": null, "finish_reason": null }],
            "sources": sources_json(&stream.sources),
        }))
    });
    let events = stream.filter_map(move |event| {
        let out = match event {
            Ok(StreamEvent::Raw(bytes)) => Some(bytes),
            Ok(_) => None,
            // Headers are sent; the error travels as an event, as the providers' do.
            Err(e) => Some(match dialect {
                Dialect::OpenAi => sse(&ApiError::from(&e).openai_body()),
                Dialect::Anthropic => {
                    let mut out = b"event: error\n".to_vec();
                    out.extend_from_slice(&sse(&ApiError::from(&e).anthropic_body()));
                    Bytes::from(out)
                }
                Dialect::Responses => {
                    let error = ApiError::from(&e);
                    let mut out = b"event: error\n".to_vec();
                    out.extend_from_slice(&sse(&json!({
                        "type": "error",
                        "code": error.code,
                        "message": error.message,
                        "param": null,
                    })));
                    Bytes::from(out)
                }
            }),
        };
        std::future::ready(out.map(Ok::<_, Infallible>))
    });
    let body = futures_util::stream::iter(first.map(Ok::<_, Infallible>)).chain(events);
    crate::event_stream(Body::from_stream(body))
}

fn sse(v: &Value) -> Bytes {
    Bytes::from(tessera_core::llm::wire::sse_json(v))
}

/// `POST /v1/embeddings`: OpenAI's embeddings through the gateway, for OpenAI's models and the
/// clinic's OpenAI-compatible endpoint; reserved, metered and on the ledger like chat (kind
/// `embedding`). `input` is a string or an array of strings (token arrays are refused),
/// `encoding_format` `float` (the default) or `base64`, `dimensions` passed on.
pub async fn embeddings(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    use tessera_core::gateway::MAX_EMBEDDING_INPUTS;
    let caller = match caller(&state, &headers).await {
        Ok(c) => c,
        Err(e) => return e.openai(),
    };
    let Ok(req) = serde_json::from_slice::<Value>(&body) else {
        return invalid("The body must be a JSON object.");
    };
    let model = match req["model"].as_str().map(str::trim) {
        Some(m) if !m.is_empty() => m.to_string(),
        _ => return invalid("model: name the embedding model to use."),
    };
    if model.starts_with(tessera_core::agents::MODEL_PREFIX) {
        return invalid("model: agents answer chat completions; name an embedding model here.");
    }
    let inputs: Vec<String> = match &req["input"] {
        Value::String(s) => vec![s.clone()],
        Value::Array(items) if items.iter().all(Value::is_string) => items
            .iter()
            .filter_map(|i| i.as_str().map(str::to_string))
            .collect(),
        Value::Array(_) => return invalid(
            "input: send text (a string or an array of strings); token arrays are not supported.",
        ),
        Value::Null => return invalid("input: give the text to embed."),
        _ => return invalid("input: a string or an array of strings."),
    };
    if inputs.is_empty() || inputs.len() > MAX_EMBEDDING_INPUTS {
        return invalid(format!(
            "input: from 1 to {MAX_EMBEDDING_INPUTS} texts per request."
        ));
    }
    let base64 = match req["encoding_format"].as_str() {
        None | Some("float") => false,
        Some("base64") => true,
        Some(other) => {
            return invalid(format!(
                "encoding_format: {other:?} is not one of \"float\", \"base64\"."
            ))
        }
    };
    let dimensions = match &req["dimensions"] {
        Value::Null => None,
        v => match v.as_u64().and_then(|d| u32::try_from(d).ok()) {
            Some(d @ 1..=16_384) => Some(d),
            _ => return invalid("dimensions: a whole number from 1 to 16384."),
        },
    };
    let embedded = match state
        .services
        .gateway
        .embed(&caller, None, &model, inputs, dimensions)
        .await
    {
        Ok(e) => e,
        Err(e) => return llm_error(&e),
    };
    let data: Vec<Value> = embedded
        .vectors
        .iter()
        .enumerate()
        .map(|(index, v)| {
            let embedding = if base64 {
                use base64::Engine;
                let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
                json!(base64::engine::general_purpose::STANDARD.encode(bytes))
            } else {
                json!(v)
            };
            json!({ "object": "embedding", "index": index, "embedding": embedding })
        })
        .collect();
    Json(json!({
        "object": "list",
        "data": data,
        "model": model,
        "usage": { "prompt_tokens": embedded.tokens, "total_tokens": embedded.tokens },
    }))
    .into_response()
}

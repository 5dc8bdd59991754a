//! The OpenAI-compatible API under `/v1`, authenticated by `Authorization: Bearer tsk_...`,
//! answering in OpenAI's shapes (errors included) so the official SDKs work by setting their
//! base URL and key. This module is the one place that knows OpenAI's error shape
//! (`{"error": {"message", "type", "param", "code"}}`) and which status each failure gets.

use std::convert::Infallible;
use std::time::{SystemTime, UNIX_EPOCH};

use app::server::AppState;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures_util::StreamExt;
use serde_json::{json, Value};
use tessera_core::gateway::{Caller, ChatOutcome, ChatStream, StreamEvent};
use tessera_core::knowledge::search::Passage;
use tessera_core::llm::{ChatMessage, ChatRequest, LlmError, LlmErrorKind, MessageRole, Usage};

/// `{"error": {"message", "type", "code"}}` with a status.
pub fn openai_error(status: StatusCode, kind: &str, code: &str, message: &str) -> Response {
    (
        status,
        Json(json!({ "error": { "message": message, "type": kind, "param": null, "code": code } })),
    )
        .into_response()
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

/// The error body OpenAI sends, for a failed call.
fn error_body(e: &LlmError) -> Value {
    let (_, kind, code) = shape(e.kind);
    json!({ "error": { "message": e.message, "type": kind, "param": null, "code": code } })
}

fn llm_error(e: &LlmError) -> Response {
    let mut res = (shape(e.kind).0, Json(error_body(e))).into_response();
    if e.kind == LlmErrorKind::Unavailable {
        res.headers_mut().insert(
            header::RETRY_AFTER,
            header::HeaderValue::from(tessera_types::OUTAGE_RETRY_SECS),
        );
    }
    res
}

fn invalid(message: impl AsRef<str>) -> Response {
    openai_error(
        StatusCode::BAD_REQUEST,
        "invalid_request_error",
        "invalid_request",
        message.as_ref(),
    )
}

async fn caller(state: &AppState, headers: &HeaderMap) -> Result<Caller, Response> {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim);
    let Some(token) = token else {
        return Err(openai_error(
            StatusCode::UNAUTHORIZED,
            "invalid_request_error",
            "missing_api_key",
            "You didn't provide an API key. Send it as Authorization: Bearer tsk_... (create one under API keys).",
        ));
    };
    match state.services.gateway.authenticate(token).await {
        Ok(Some(caller)) => match state.services.gateway.admit(&caller).await {
            Ok(()) => Ok(caller),
            Err(tessera_core::Error::RateLimited { retry_after_secs }) => {
                let mut res = openai_error(
                    StatusCode::TOO_MANY_REQUESTS,
                    "rate_limit_error",
                    "rate_limit_exceeded",
                    &format!(
                        "Too many requests this minute for this clinic or API key (its plan's limit). Try again in {retry_after_secs} seconds."
                    ),
                );
                if let Ok(value) = header::HeaderValue::from_str(&retry_after_secs.to_string()) {
                    res.headers_mut().insert(header::RETRY_AFTER, value);
                }
                Err(res)
            }
            Err(e) => Err(llm_error(&LlmError::from(e))),
        },
        Ok(None) => Err(openai_error(
            StatusCode::UNAUTHORIZED,
            "invalid_request_error",
            "invalid_api_key",
            "Incorrect API key provided. It may have been revoked; create a new one under API keys.",
        )),
        Err(e) => Err(llm_error(&LlmError::from(e))),
    }
}

/// `GET /v1/models`: the models this clinic can use, from each provider it has a key for.
pub async fn models(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let caller = match caller(&state, &headers).await {
        Ok(c) => c,
        Err(res) => return res,
    };
    let models = match state.services.gateway.available_models(caller.tenant).await {
        Ok(models) => models,
        Err(e) => return llm_error(&LlmError::from(e)),
    };
    let data: Vec<Value> = models
        .into_iter()
        .map(|m| json!({ "id": m.id, "object": "model", "created": 0, "owned_by": m.provider.as_str() }))
        .collect();
    Json(json!({ "object": "list", "data": data })).into_response()
}

/// A request body read into the gateway's terms, plus what only the API's answer needs.
struct Parsed {
    request: ChatRequest,
    include_usage: bool,
}

/// A request body OpenAI would refuse: the message says which field and why.
fn bad(message: impl Into<String>) -> String {
    message.into()
}

fn text_of(content: &Value, i: usize) -> Result<String, String> {
    match content {
        Value::String(s) => Ok(s.clone()),
        Value::Null => Ok(String::new()),
        Value::Array(parts) => {
            let mut text = String::new();
            for part in parts {
                match (part["type"].as_str(), part["text"].as_str()) {
                    (Some("text"), Some(t)) => {
                        if !text.is_empty() {
                            text.push('\n');
                        }
                        text.push_str(t);
                    }
                    (kind, _) => {
                        return Err(bad(format!(
                            "messages[{i}].content: only text parts are supported, not {:?}.",
                            kind.unwrap_or("untyped")
                        )))
                    }
                }
            }
            Ok(text)
        }
        _ => Err(bad(format!(
            "messages[{i}].content must be a string or an array of text parts."
        ))),
    }
}

fn parse(body: &[u8]) -> Result<Parsed, String> {
    let v: Value = serde_json::from_slice(body).map_err(|e| {
        bad(format!(
            "We could not parse the JSON body of your request ({e})."
        ))
    })?;
    if !v.is_object() {
        return Err(bad("The request body must be a JSON object."));
    }
    let model = match &v["model"] {
        Value::String(m) if !m.trim().is_empty() && m.len() <= 200 => m.trim().to_string(),
        Value::Null => return Err(bad("model: this field is required.")),
        _ => return Err(bad("model must be a non-empty string.")),
    };
    if v["n"].as_u64().is_some_and(|n| n != 1) {
        return Err(bad("n: only one choice per request is supported."));
    }
    if !v["tools"].is_null() || !v["functions"].is_null() {
        return Err(bad(
            "tools and functions are not supported by this API yet.",
        ));
    }
    let stream = match &v["stream"] {
        Value::Null => false,
        Value::Bool(b) => *b,
        _ => return Err(bad("stream must be true or false.")),
    };
    Ok(Parsed {
        request: ChatRequest {
            model,
            messages: messages(&v["messages"])?,
            max_tokens: max_tokens(&v)?,
            temperature: number(&v, "temperature", 0.0..=2.0)?,
            top_p: number(&v, "top_p", 0.0..=1.0)?,
            stop: stop(&v["stop"])?,
            stream,
            agent: None,
        },
        include_usage: v["stream_options"]["include_usage"]
            .as_bool()
            .unwrap_or(false),
    })
}

fn messages(raw: &Value) -> Result<Vec<ChatMessage>, String> {
    let Some(raw) = raw.as_array() else {
        return Err(bad(
            "messages: this field is required (an array of messages).",
        ));
    };
    if raw.is_empty() {
        return Err(bad("messages must contain at least one message."));
    }
    raw.iter()
        .enumerate()
        .map(|(i, m)| {
            let role = match m["role"].as_str().unwrap_or_default() {
                // OpenAI's newer name for `system`.
                "developer" => MessageRole::System,
                other => other.parse().map_err(|_| {
                    bad(format!(
                        "messages[{i}].role {other:?} is not supported: use system, developer, user or assistant."
                    ))
                })?,
            };
            Ok(ChatMessage {
                role,
                content: text_of(&m["content"], i)?,
            })
        })
        .collect()
}

/// `max_completion_tokens`, or the older `max_tokens`.
fn max_tokens(v: &Value) -> Result<Option<u32>, String> {
    match (&v["max_completion_tokens"], &v["max_tokens"]) {
        (Value::Null, Value::Null) => Ok(None),
        (n, Value::Null) | (Value::Null, n) | (n, _) => match n.as_u64() {
            Some(n) if (1..=200_000).contains(&n) => Ok(Some(n as u32)),
            _ => Err(bad(
                "max_tokens must be a whole number between 1 and 200000.",
            )),
        },
    }
}

fn number(
    v: &Value,
    name: &str,
    range: std::ops::RangeInclusive<f64>,
) -> Result<Option<f32>, String> {
    match &v[name] {
        Value::Null => Ok(None),
        n => match n.as_f64() {
            Some(x) if range.contains(&x) => Ok(Some(x as f32)),
            _ => Err(bad(format!(
                "{name} must be a number from {} to {}.",
                range.start(),
                range.end()
            ))),
        },
    }
}

fn stop(raw: &Value) -> Result<Vec<String>, String> {
    match raw {
        Value::Null => Ok(Vec::new()),
        Value::String(s) => Ok(vec![s.clone()]),
        Value::Array(a) if a.len() <= 4 && a.iter().all(Value::is_string) => Ok(a
            .iter()
            .filter_map(|s| s.as_str().map(str::to_string))
            .collect()),
        _ => Err(bad("stop must be a string or up to 4 strings.")),
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

fn usage_json(u: &Usage) -> Value {
    json!({
        "prompt_tokens": u.prompt_tokens,
        "completion_tokens": u.completion_tokens,
        "total_tokens": u.total(),
        "prompt_tokens_details": { "cached_tokens": u.cached_tokens },
    })
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// `POST /v1/chat/completions`: JSON or server-sent events, through the gateway.
pub async fn chat_completions(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let caller = match caller(&state, &headers).await {
        Ok(c) => c,
        Err(res) => return res,
    };
    let Parsed {
        request,
        include_usage,
    } = match parse(&body) {
        Ok(p) => p,
        Err(message) => return invalid(message),
    };
    let created = unix_now();
    match state.services.gateway.chat(&caller, request).await {
        Err(e) => llm_error(&e),
        Ok(ChatOutcome::Complete(c)) => {
            let mut body = json!({
                "id": format!("chatcmpl-{}", c.id.simple()),
                "object": "chat.completion",
                "created": created,
                "model": c.model,
                "choices": [{
                    "index": 0,
                    "message": { "role": "assistant", "content": c.content, "refusal": null },
                    "logprobs": null,
                    "finish_reason": c.finish_reason,
                }],
                "usage": usage_json(&c.usage),
                "system_fingerprint": null,
            });
            if !c.sources.is_empty() {
                body["sources"] = sources_json(&c.sources);
            }
            Json(body).into_response()
        }
        Ok(ChatOutcome::Stream(stream)) => streamed(stream, created, include_usage),
    }
}

/// A streamed reply as OpenAI's chunks: the role first, then text deltas, the finish reason,
/// the usage when the client asked for it, and `[DONE]`.
fn streamed(stream: ChatStream, created: u64, include_usage: bool) -> Response {
    let id = format!("chatcmpl-{}", stream.id.simple());
    let chunk = {
        let (id, model) = (id.clone(), stream.model.clone());
        move |delta: Value, finish: Option<&str>| -> Bytes {
            let mut c = json!({
                "id": id,
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "system_fingerprint": null,
                "choices": [{ "index": 0, "delta": delta, "logprobs": null, "finish_reason": finish }],
            });
            if include_usage {
                c["usage"] = Value::Null;
            }
            sse(&c)
        }
    };
    let first = if stream.sources.is_empty() {
        chunk(json!({ "role": "assistant", "content": "" }), None)
    } else {
        // The passages go with the first chunk, as an extra field clients may read or ignore.
        let mut c = json!({
            "id": id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": stream.model,
            "system_fingerprint": null,
            "choices": [{ "index": 0, "delta": { "role": "assistant", "content": "" }, "logprobs": null, "finish_reason": null }],
            "sources": sources_json(&stream.sources),
        });
        if include_usage {
            c["usage"] = Value::Null;
        }
        sse(&c)
    };
    let model = stream.model.clone();
    let events = stream.flat_map(move |event| {
        let out: Vec<Bytes> = match event {
            Ok(StreamEvent::Text(t)) => vec![chunk(json!({ "content": t }), None)],
            Ok(StreamEvent::Finish(reason)) => vec![chunk(json!({}), Some(&reason))],
            Ok(StreamEvent::Usage(u)) => {
                let mut tail = Vec::new();
                if include_usage {
                    tail.push(sse(&json!({
                        "id": id,
                        "object": "chat.completion.chunk",
                        "created": created,
                        "model": model,
                        "system_fingerprint": null,
                        "choices": [],
                        "usage": usage_json(&u),
                    })));
                }
                tail.push(Bytes::from_static(b"data: [DONE]\n\n"));
                tail
            }
            // Headers are sent; the error travels as an event, as OpenAI's does.
            Err(e) => vec![sse(&error_body(&e))],
        };
        futures_util::stream::iter(out.into_iter().map(Ok::<_, Infallible>))
    });
    let body = futures_util::stream::once(async move { Ok::<_, Infallible>(first) }).chain(events);
    crate::event_stream(Body::from_stream(body))
}

fn sse(v: &Value) -> Bytes {
    let mut out = Vec::with_capacity(256);
    out.extend_from_slice(b"data: ");
    // Serialising a Value cannot fail.
    let _ = serde_json::to_writer(&mut out, v);
    out.extend_from_slice(b"\n\n");
    Bytes::from(out)
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
        Err(res) => return res,
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

//! The OpenAI-compatible API under `/v1`, authenticated by `Authorization: Bearer tsk_...`,
//! answering in OpenAI's shapes (errors included) so the official SDKs work by setting their
//! base URL and key.

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
use tessera_core::keys::Provider;
use tessera_core::llm::{
    Caller, ChatMessage, ChatOutcome, ChatRequest, LlmError, MessageRole, StreamEvent, Usage,
};

/// `{"error": {"message", "type", "code"}}` with a status.
pub fn openai_error(status: StatusCode, kind: &str, code: &str, message: &str) -> Response {
    (
        status,
        Json(json!({ "error": { "message": message, "type": kind, "param": null, "code": code } })),
    )
        .into_response()
}

fn llm_error(e: &LlmError) -> Response {
    let (kind, code) = e.openai_type_and_code();
    let status = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::BAD_GATEWAY);
    openai_error(status, kind, code, &e.message)
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
        Ok(Some(caller)) => Ok(caller),
        Ok(None) => Err(openai_error(
            StatusCode::UNAUTHORIZED,
            "invalid_request_error",
            "invalid_api_key",
            "Incorrect API key provided. It may have been revoked; create a new one under API keys.",
        )),
        Err(e) if e.status_code() == 403 => Err(openai_error(StatusCode::FORBIDDEN, "permission_error", "tenant_inactive", &e.to_string())),
        Err(e) => {
            tracing::error!(error = ?e, "API key check failed");
            Err(openai_error(StatusCode::INTERNAL_SERVER_ERROR, "server_error", "internal_error", "Something went wrong on our side. Please retry."))
        }
    }
}

/// `GET /v1/models`: the models this clinic can use, from each provider it has a key for.
pub async fn models(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let caller = match caller(&state, &headers).await {
        Ok(c) => c,
        Err(res) => return res,
    };
    let services = &state.services;
    let mut data = Vec::new();
    for provider in Provider::ALL {
        let key = match services.gateway.usable_key(caller.tenant, provider).await {
            Ok(Some(key)) => key,
            Ok(None) => continue,
            Err(e) => {
                tracing::error!(error = ?e, provider = provider.as_str(), "could not read the clinic's provider key");
                continue;
            }
        };
        match tessera_core::llm::list_models(&services.http, &services.config, &key).await {
            Ok(models) => data.extend(models.into_iter().map(|id| {
                json!({ "id": id, "object": "model", "created": 0, "owned_by": provider.as_str() })
            })),
            Err(message) => tracing::warn!(provider = provider.as_str(), %message, "provider did not list models"),
        }
    }
    Json(json!({ "object": "list", "data": data })).into_response()
}

/// A request body read into the gateway's terms, plus what only the API's answer needs.
struct Parsed {
    request: ChatRequest,
    include_usage: bool,
}

fn text_of(content: &Value, i: usize) -> Result<String, Response> {
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
                        return Err(invalid(format!(
                            "messages[{i}].content: only text parts are supported, not {:?}.",
                            kind.unwrap_or("untyped")
                        )))
                    }
                }
            }
            Ok(text)
        }
        _ => Err(invalid(format!(
            "messages[{i}].content must be a string or an array of text parts."
        ))),
    }
}

fn parse(body: &[u8]) -> Result<Parsed, Response> {
    let v: Value = serde_json::from_slice(body).map_err(|e| {
        invalid(format!(
            "We could not parse the JSON body of your request ({e})."
        ))
    })?;
    if !v.is_object() {
        return Err(invalid("The request body must be a JSON object."));
    }
    let model = match &v["model"] {
        Value::String(m) if !m.trim().is_empty() && m.len() <= 200 => m.trim().to_string(),
        Value::Null => return Err(invalid("model: this field is required.")),
        _ => return Err(invalid("model must be a non-empty string.")),
    };
    let Some(raw_messages) = v["messages"].as_array() else {
        return Err(invalid(
            "messages: this field is required (an array of messages).",
        ));
    };
    if raw_messages.is_empty() {
        return Err(invalid("messages must contain at least one message."));
    }
    let mut messages = Vec::with_capacity(raw_messages.len());
    for (i, m) in raw_messages.iter().enumerate() {
        let role = m["role"].as_str().unwrap_or_default();
        let Some(role) = MessageRole::parse(role) else {
            return Err(invalid(format!(
                "messages[{i}].role {role:?} is not supported: use system, developer, user or assistant."
            )));
        };
        messages.push(ChatMessage {
            role,
            content: text_of(&m["content"], i)?,
        });
    }
    let max_tokens = match (&v["max_completion_tokens"], &v["max_tokens"]) {
        (Value::Null, Value::Null) => None,
        (n, Value::Null) | (Value::Null, n) | (n, _) => match n.as_u64() {
            Some(n) if (1..=200_000).contains(&n) => Some(n as u32),
            _ => {
                return Err(invalid(
                    "max_tokens must be a whole number between 1 and 200000.",
                ))
            }
        },
    };
    let number =
        |name: &str, range: std::ops::RangeInclusive<f64>| -> Result<Option<f32>, Response> {
            match &v[name] {
                Value::Null => Ok(None),
                n => match n.as_f64() {
                    Some(x) if range.contains(&x) => Ok(Some(x as f32)),
                    _ => Err(invalid(format!(
                        "{name} must be a number from {} to {}.",
                        range.start(),
                        range.end()
                    ))),
                },
            }
        };
    let temperature = number("temperature", 0.0..=2.0)?;
    let top_p = number("top_p", 0.0..=1.0)?;
    let stop = match &v["stop"] {
        Value::Null => Vec::new(),
        Value::String(s) => vec![s.clone()],
        Value::Array(a) if a.len() <= 4 && a.iter().all(Value::is_string) => a
            .iter()
            .filter_map(|s| s.as_str().map(str::to_string))
            .collect(),
        _ => return Err(invalid("stop must be a string or up to 4 strings.")),
    };
    if v["n"].as_u64().is_some_and(|n| n != 1) {
        return Err(invalid("n: only one choice per request is supported."));
    }
    if !v["tools"].is_null() || !v["functions"].is_null() {
        return Err(invalid(
            "tools and functions are not supported by this API yet.",
        ));
    }
    let stream = match &v["stream"] {
        Value::Null => false,
        Value::Bool(b) => *b,
        _ => return Err(invalid("stream must be true or false.")),
    };
    let include_usage = v["stream_options"]["include_usage"]
        .as_bool()
        .unwrap_or(false);
    Ok(Parsed {
        request: ChatRequest {
            model,
            messages,
            max_tokens,
            temperature,
            top_p,
            stop,
            stream,
            agent: None,
        },
        include_usage,
    })
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
        Err(res) => return res,
    };
    let created = unix_now();
    match state.services.gateway.chat(&caller, request).await {
        Err(e) => llm_error(&e),
        Ok(ChatOutcome::Complete(c)) => Json(json!({
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
        }))
        .into_response(),
        Ok(ChatOutcome::Stream(stream)) => {
            let id = format!("chatcmpl-{}", stream.id.simple());
            let model = stream.model.clone();
            let chunk = move |delta: Value, finish: Option<&str>| -> Bytes {
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
            };
            let first = chunk(json!({ "role": "assistant", "content": "" }), None);
            let id = format!("chatcmpl-{}", stream.id.simple());
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
                    Err(e) => {
                        let (kind, code) = e.openai_type_and_code();
                        vec![sse(&json!({ "error": { "message": e.message, "type": kind, "param": null, "code": code } }))]
                    }
                };
                futures_util::stream::iter(out.into_iter().map(Ok::<_, Infallible>))
            });
            let body =
                futures_util::stream::once(async move { Ok::<_, Infallible>(first) }).chain(events);
            Response::builder()
                .status(StatusCode::OK)
                .header(header::CONTENT_TYPE, "text/event-stream")
                .header(header::CACHE_CONTROL, "no-cache")
                .header("x-accel-buffering", "no")
                .body(Body::from_stream(body))
                .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
        }
    }
}

fn sse(v: &Value) -> Bytes {
    let mut out = Vec::with_capacity(256);
    out.extend_from_slice(b"data: ");
    // Serialising a Value cannot fail.
    let _ = serde_json::to_writer(&mut out, v);
    out.extend_from_slice(b"\n\n");
    Bytes::from(out)
}

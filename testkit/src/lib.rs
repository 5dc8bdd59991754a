//! Test helpers: clinics made through the core ([`fixtures`]), and a simulator of the provider
//! APIs Tessera calls, speaking their real wire formats, for tests and benchmarks. It is never
//! a production path.
//!
//! Keys decide the answer, so tests can provoke each case: an OpenAI key must start with
//! `sk-` and an Anthropic key with `sk-ant-`; a key containing `invalid` is rejected (401),
//! `ratelimited` gets 429 and `outage` gets 503, each in the provider's own error shape.
//!
//! Routes:
//! - `GET /v1/models`, `POST /v1/chat/completions`, `POST /v1/responses` (the Responses API:
//!   `input` text or items, function tools, `text.format`; its events streamed),
//!   `POST /v1/responses/input_tokens`, `POST /v1/embeddings`, `POST /v1/moderations` (OpenAI,
//!   `Authorization: Bearer`);
//! - `GET /anthropic/v1/models`, `POST /anthropic/v1/messages` (Anthropic, `x-api-key` and
//!   `anthropic-version`);
//! - `GET /sim/stats`: `{"requests": n}`, the number of chat, messages, embeddings,
//!   moderation and input token count requests received so far (whatever their outcome);
//! - `GET /sim/last`: the body of the last chat, messages, moderation or count request, as
//!   received;
//! - `GET /sim/last-headers`: the `anthropic-version` and `anthropic-beta` headers of that
//!   request, as `{"anthropic-version": ..., "anthropic-beta": ...}` (null when absent);
//! - `/stripe/...`: Stripe (see [`stripe`]).
//!
//! Everything is deterministic. Tokens are counted by a toy tokenizer, [`count_tokens`] (one
//! token per whitespace-separated word); prompts cost [`prompt_tokens`]; the reply is
//! [`reply_text`], cut to `max_tokens` words by [`limit_reply`].
//!
//! Directives in the text of the last user message (for embeddings: the inputs joined by
//! newlines) steer the answer, `[sim:NAME]` or `[sim:NAME=VALUE]`:
//! - `[sim:status=CODE]`: answer HTTP CODE (400..=599) in the provider's error shape;
//! - `[sim:flaky=N]`: the first N requests carrying this exact text get 503, later ones succeed;
//! - `[sim:fail_midstream]`: a stream sends its first events (the opening ones and two words),
//!   then the connection is cut with no terminating chunk; unstreamed, the answer is 500;
//! - `[sim:no_usage]`: an OpenAI stream never sends its usage chunk, a response has no usage
//!   (Anthropic: ignored);
//! - `[sim:latency=MS]`: wait MS milliseconds before answering (overrides
//!   [`SimOptions::latency_ms`]);
//! - `[sim:chunk_ms=MS]`: wait MS milliseconds between streamed events (overrides
//!   [`SimOptions::chunk_ms`]);
//! - `[sim:words=N]`: the reply is exactly N words, `word1 word2 ... wordN`;
//! - `[sim:markdown]`: the reply is [`MARKDOWN_REPLY`] (a heading, a list, a table, code);
//! - `[sim:prompt_tokens=N]`: the usage reports N prompt tokens (N may be negative or absurd:
//!   a provider that lies).
//!
//! Order of checks: the key, then the request body (400), then latency, `status`, `flaky`.
//!
//! Tools, structured output, images, `n` and `logprobs` are answered as [`features`] says.

// The simulator's handlers answer early with a ready response (an error in the provider's
// shape), as axum handlers do; the size of that response does not matter in a test tool.
#![allow(clippy::result_large_err)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures_util::StreamExt;
use serde_json::{json, Value};

pub mod features;
pub mod fixtures;
pub mod proxy;
pub mod stripe;

/// Connection options for the database behind `owner_pool` (a `#[sqlx::test]` pool, connected
/// as the schema owner) as `tessera_app`, the role the server uses: it owns no table, so
/// row-level security applies to everything it does. The password is `TESSERA_APP_DB_PASSWORD`
/// or the local default (ignored where authentication is `trust`).
pub fn app_role_options(owner_pool: &sqlx::PgPool) -> sqlx::postgres::PgConnectOptions {
    let password = std::env::var("TESSERA_APP_DB_PASSWORD").unwrap_or_else(|_| "tessera".into());
    (*owner_pool.connect_options())
        .clone()
        .username("tessera_app")
        .password(&password)
}

/// The models the simulator lists.
pub const OPENAI_MODELS: [&str; 2] = ["gpt-4o-mini", "gpt-4o"];
pub const ANTHROPIC_MODELS: [&str; 2] = ["claude-3-5-haiku-latest", "claude-sonnet-4-0"];

#[derive(Clone, Copy)]
enum Flavor {
    OpenAi,
    Anthropic,
}

/// Global behaviour of a simulator; directives in a request override it for that request.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SimOptions {
    /// Milliseconds to wait before answering a chat, messages or embeddings request.
    pub latency_ms: u64,
    /// Milliseconds to wait between two streamed events.
    pub chunk_ms: u64,
    /// The Stripe simulator's webhook endpoint.
    pub stripe: stripe::StripeSimOptions,
}

/// Shared state of one simulator.
#[derive(Clone, Default)]
struct Sim {
    options: SimOptions,
    /// Requests seen so far per `[sim:flaky=N]` text.
    flaky: Arc<Mutex<HashMap<String, u32>>>,
    /// Chat, messages and embeddings requests received.
    requests: Arc<AtomicU64>,
    /// Source of response ids.
    ids: Arc<AtomicU64>,
    /// The body of the last chat or messages request received.
    last: Arc<Mutex<Bytes>>,
    /// Its `anthropic-version` and `anthropic-beta` headers.
    last_headers: Arc<Mutex<[Option<String>; 2]>>,
}

/// The simulator's routes (see the crate documentation), with default [`SimOptions`].
pub fn router() -> Router {
    router_with(SimOptions::default())
}

/// The simulator's routes with the given global options.
pub fn router_with(options: SimOptions) -> Router {
    let stripe = stripe::router(options.stripe.clone());
    let sim = Sim {
        options,
        ..Sim::default()
    };
    Router::new()
        .route("/v1/models", get(models).with_state(Flavor::OpenAi))
        .route(
            "/anthropic/v1/models",
            get(models).with_state(Flavor::Anthropic),
        )
        .route("/v1/chat/completions", post(chat_completions))
        .route("/v1/responses", post(responses))
        .route("/v1/responses/input_tokens", post(response_input_tokens))
        .route("/v1/embeddings", post(embeddings))
        .route("/v1/moderations", post(moderations))
        .route("/anthropic/v1/messages", post(messages))
        .route(
            "/anthropic/v1/messages/count_tokens",
            post(count_message_tokens),
        )
        .route("/sim/stats", get(stats))
        .route("/sim/last", get(last))
        .route("/sim/last-headers", get(last_headers))
        .with_state(sim)
        .nest("/stripe", stripe)
}

/// Serves the simulator on `addr` (port 0 for any free port); returns the bound address.
pub async fn spawn(addr: SocketAddr) -> std::io::Result<SocketAddr> {
    spawn_with(addr, SimOptions::default()).await
}

/// Serves the simulator with the given options on `addr` (port 0 for any free port); returns
/// the bound address.
pub async fn spawn_with(addr: SocketAddr, options: SimOptions) -> std::io::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    tokio::spawn(async move {
        // Streams are many small writes: no Nagle delay between them, as with the real APIs.
        let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
            let _ = tcp.set_nodelay(true);
        });
        let _ = axum::serve(listener, router_with(options)).await;
    });
    Ok(bound)
}

fn key(headers: &HeaderMap, flavor: Flavor) -> Option<String> {
    let value = match flavor {
        Flavor::OpenAi => headers
            .get("authorization")?
            .to_str()
            .ok()?
            .strip_prefix("Bearer ")?
            .to_string(),
        Flavor::Anthropic => headers.get("x-api-key")?.to_str().ok()?.to_string(),
    };
    Some(value)
}

fn error(flavor: Flavor, status: StatusCode, kind: &str, code: &str, message: &str) -> Response {
    let body = match flavor {
        Flavor::OpenAi => {
            json!({ "error": { "message": message, "type": kind, "param": null, "code": code } })
        }
        Flavor::Anthropic => {
            json!({ "type": "error", "error": { "type": kind, "message": message } })
        }
    };
    (status, Json(body)).into_response()
}

/// Checks a key the way the provider would; `Err` is the provider's own error response.
fn check(headers: &HeaderMap, flavor: Flavor) -> Result<(), Response> {
    let (prefix, auth_kind) = match flavor {
        Flavor::OpenAi => ("sk-", "invalid_request_error"),
        Flavor::Anthropic => ("sk-ant-", "authentication_error"),
    };
    if matches!(flavor, Flavor::Anthropic) && headers.get("anthropic-version").is_none() {
        return Err(error(
            flavor,
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            "",
            "anthropic-version: header is required",
        ));
    }
    let Some(key) = key(headers, flavor) else {
        return Err(error(
            flavor,
            StatusCode::UNAUTHORIZED,
            auth_kind,
            "missing_api_key",
            "You didn't provide an API key.",
        ));
    };
    if !key.starts_with(prefix) || key.contains("invalid") {
        let shown: String = key
            .chars()
            .rev()
            .take(4)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        return Err(error(
            flavor,
            StatusCode::UNAUTHORIZED,
            auth_kind,
            "invalid_api_key",
            &format!("Incorrect API key provided: ...{shown}."),
        ));
    }
    if key.contains("ratelimited") {
        return Err(error(
            flavor,
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limit_error",
            "rate_limit_exceeded",
            "Rate limit reached for requests.",
        ));
    }
    if key.contains("outage") {
        return Err(error(
            flavor,
            StatusCode::SERVICE_UNAVAILABLE,
            "overloaded_error",
            "service_unavailable",
            "The server is overloaded. Please retry.",
        ));
    }
    Ok(())
}

async fn models(State(flavor): State<Flavor>, headers: HeaderMap) -> Response {
    if let Err(res) = check(&headers, flavor) {
        return res;
    }
    match flavor {
        Flavor::OpenAi => Json(json!({
            "object": "list",
            "data": OPENAI_MODELS.iter().map(|id| json!({ "id": id, "object": "model", "created": 1_700_000_000, "owned_by": "system" })).collect::<Vec<_>>(),
        }))
        .into_response(),
        Flavor::Anthropic => Json(json!({
            "data": ANTHROPIC_MODELS.iter().map(|id| json!({ "type": "model", "id": id, "display_name": id, "created_at": "2025-01-01T00:00:00Z" })).collect::<Vec<_>>(),
            "has_more": false,
            "first_id": ANTHROPIC_MODELS[0],
            "last_id": ANTHROPIC_MODELS[ANTHROPIC_MODELS.len() - 1],
        }))
        .into_response(),
    }
}

// ---------------------------------------------------------------------------------------------
// Deterministic behaviour
// ---------------------------------------------------------------------------------------------

/// The reply to a message with `[sim:markdown]`: a heading, a list, a table and a code block.
pub const MARKDOWN_REPLY: &str = "## Saturday hours\n\n- Front desk: **9:00 to 12:00**\n- Phones: 9:00 to 11:00\n\n| Day | Hours |\n|---|---|\n| Saturday | 9-12 |\n| Sunday | closed |\n\n```python\nprint(\"open\")\n```";

/// The most words `[sim:words=N]` produces.
pub const MAX_WORDS: usize = 100_000;

/// The simulator's toy tokenizer: one token per whitespace-separated word.
pub fn count_tokens(text: &str) -> i64 {
    text.split_whitespace().count() as i64
}

/// Prompt tokens of a request, for both flavors: `3 + count_tokens(text)` per text, plus 3.
/// The texts are every message's content in order and, for Anthropic, the `system` prompt
/// first when the request has one. A message's content made of parts is its text parts
/// joined by newlines; parts of other types count nothing.
pub fn prompt_tokens(texts: &[&str]) -> i64 {
    texts.iter().map(|t| 3 + count_tokens(t)).sum::<i64>() + 3
}

/// The simulated reply to `last_user_message` (the text of the last `user` message):
/// `"Simulated reply from <model>: <its words, at most 12>"`, leaving out `[sim:...]`
/// directives, with words separated by single spaces. With `[sim:words=N]` in the message, the
/// reply is exactly N words instead, `"word1 word2 ... wordN"` (N at most [`MAX_WORDS`]).
/// Before `max_tokens` (see [`limit_reply`]).
pub fn reply_text(model: &str, last_user_message: &str) -> String {
    if directive(last_user_message, "markdown").is_some() {
        return MARKDOWN_REPLY.to_string();
    }
    if let Some(n) = directive_num(last_user_message, "words") {
        let n = usize::try_from(n).unwrap_or(MAX_WORDS).min(MAX_WORDS);
        return (1..=n)
            .map(|i| format!("word{i}"))
            .collect::<Vec<_>>()
            .join(" ");
    }
    let echoed: Vec<&str> = last_user_message
        .split_whitespace()
        .filter(|w| !(w.starts_with("[sim:") && w.ends_with(']')))
        .take(12)
        .collect();
    let reply = format!("Simulated reply from {model}: {}", echoed.join(" "));
    reply.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The reply as sent: cut to its first `max_tokens` words when it has more, in which case the
/// flag is true (finish reason `length` / stop reason `max_tokens`). completion tokens /
/// output tokens are `count_tokens` of the returned text.
pub fn limit_reply(reply: &str, max_tokens: Option<i64>) -> (String, bool) {
    match max_tokens {
        Some(max) if count_tokens(reply) > max => {
            let kept: Vec<&str> = reply
                .split_whitespace()
                .take(usize::try_from(max).unwrap_or(0))
                .collect();
            (kept.join(" "), true)
        }
        _ => (reply.to_string(), false),
    }
}

/// The simulator's embedding of `text`: a bag of words. Each word (lower-cased letters and
/// digits) has a fixed random direction, drawn from a generator seeded with the word's FNV-1a
/// hash; the text's vector is their sum, L2-normalised. The same text always gives the same
/// vector, and texts that share words point the same way (cosine similarity grows with the
/// words they share), so dense retrieval behaves like a real (if crude) embedding model.
pub fn embedding(text: &str, dimensions: usize) -> Vec<f32> {
    let mut sum = vec![0f64; dimensions];
    let lower = text.to_lowercase();
    let words: Vec<&str> = lower
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .collect();
    let seeds: Vec<&str> = if words.is_empty() { vec![text] } else { words };
    for word in seeds {
        for (acc, x) in sum.iter_mut().zip(direction(word, dimensions)) {
            *acc += x;
        }
    }
    let norm = sum.iter().map(|x| x * x).sum::<f64>().sqrt();
    if norm > 0.0 {
        sum.iter_mut().for_each(|x| *x /= norm);
    }
    sum.into_iter().map(|x| x as f32).collect()
}

/// A fixed random direction for `word` (splitmix64 seeded with its FNV-1a hash).
fn direction(word: &str, dimensions: usize) -> Vec<f64> {
    let mut state = word.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    (0..dimensions)
        .map(|_| {
            state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^= z >> 31;
            (z >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0
        })
        .collect()
}

/// The value of directive `[sim:NAME=VALUE]` (`""` for `[sim:NAME]`) in `text`, if present.
fn directive<'a>(text: &'a str, name: &str) -> Option<&'a str> {
    let mut rest = text;
    while let Some(start) = rest.find("[sim:") {
        let after = &rest[start + 5..];
        let end = after.find(']')?;
        let inner = &after[..end];
        let (n, v) = inner.split_once('=').unwrap_or((inner, ""));
        if n.trim() == name {
            return Some(v.trim());
        }
        rest = &after[end + 1..];
    }
    None
}

fn directive_num(text: &str, name: &str) -> Option<u64> {
    directive(text, name)?.parse().ok()
}

/// The prompt tokens the answer reports: counted, or what `[sim:prompt_tokens=N]` says (a
/// provider that lies, for tests of what Tessera accepts).
fn reported_prompt(directives: &str, counted: i64) -> i64 {
    directive(directives, "prompt_tokens")
        .and_then(|v| v.parse().ok())
        .unwrap_or(counted)
}

// ---------------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------------

/// A 400 `invalid_request_error` naming the faulty parameter.
fn bad_request(flavor: Flavor, param: &str, message: &str) -> Response {
    let body = match flavor {
        Flavor::OpenAi => json!({ "error": {
            "message": message, "type": "invalid_request_error", "param": param, "code": null,
        } }),
        Flavor::Anthropic => {
            json!({ "type": "error", "error": { "type": "invalid_request_error", "message": message } })
        }
    };
    (StatusCode::BAD_REQUEST, Json(body)).into_response()
}

/// An error answer with `status`, in the provider's shape.
fn status_error(flavor: Flavor, status: StatusCode) -> Response {
    let anthropic = matches!(flavor, Flavor::Anthropic);
    let (kind, code, message) = match status.as_u16() {
        400 => ("invalid_request_error", "", "Simulated invalid request."),
        401 if anthropic => ("authentication_error", "", "invalid x-api-key"),
        401 => (
            "invalid_request_error",
            "invalid_api_key",
            "Incorrect API key provided.",
        ),
        403 if anthropic => ("permission_error", "", "Simulated permission error."),
        404 if anthropic => ("not_found_error", "", "Simulated not found."),
        404 => (
            "invalid_request_error",
            "model_not_found",
            "The model does not exist or you do not have access to it.",
        ),
        413 if anthropic => ("request_too_large", "", "Request exceeds the maximum size."),
        429 => (
            "rate_limit_error",
            "rate_limit_exceeded",
            "Rate limit reached for requests.",
        ),
        503 => (
            "overloaded_error",
            "service_unavailable",
            "The server is overloaded. Please retry.",
        ),
        529 => ("overloaded_error", "overloaded", "Overloaded"),
        500..=599 if anthropic => ("api_error", "", "Internal server error"),
        500..=599 => (
            "server_error",
            "",
            "The server had an error while processing your request.",
        ),
        _ => ("invalid_request_error", "", "Simulated request error."),
    };
    let body = match flavor {
        Flavor::OpenAi => json!({ "error": {
            "message": message, "type": kind, "param": null,
            "code": if code.is_empty() { Value::Null } else { json!(code) },
        } }),
        Flavor::Anthropic => {
            json!({ "type": "error", "error": { "type": kind, "message": message } })
        }
    };
    (status, Json(body)).into_response()
}

/// Applies latency, `[sim:status]` and `[sim:flaky]` for a request whose directive text is
/// `text`; `Err` is the answer to send instead.
async fn prelude(sim: &Sim, flavor: Flavor, text: &str) -> Result<(), Response> {
    let latency = directive_num(text, "latency").unwrap_or(sim.options.latency_ms);
    if latency > 0 {
        tokio::time::sleep(Duration::from_millis(latency)).await;
    }
    if let Some(code) = directive_num(text, "status") {
        if let Some(status) = u16::try_from(code)
            .ok()
            .and_then(|c| StatusCode::from_u16(c).ok())
            .filter(|s| s.is_client_error() || s.is_server_error())
        {
            return Err(status_error(flavor, status));
        }
    }
    if let Some(n) = directive_num(text, "flaky") {
        let mut seen = sim.flaky.lock().unwrap_or_else(|e| e.into_inner());
        let count = seen.entry(text.to_string()).or_insert(0);
        if u64::from(*count) < n {
            *count += 1;
            return Err(status_error(flavor, StatusCode::SERVICE_UNAVAILABLE));
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Requests
// ---------------------------------------------------------------------------------------------

/// What the simulator needs from a chat (OpenAI) or messages (Anthropic) request.
struct Conversation {
    model: String,
    /// System prompt (Anthropic) and every message content, for `prompt_tokens`.
    texts: Vec<String>,
    last_user: String,
    max_tokens: Option<i64>,
    stream: bool,
    include_usage: bool,
    extras: features::Extras,
}

/// A message content: a string, or text parts joined by newlines (`None` if neither).
fn content_text(v: &Value, null_ok: bool) -> Option<String> {
    match v {
        Value::Null if null_ok => Some(String::new()),
        Value::String(s) => Some(s.clone()),
        Value::Array(parts) => Some(
            parts
                .iter()
                .filter(|p| p["type"] == "text")
                .filter_map(|p| p["text"].as_str())
                .collect::<Vec<_>>()
                .join("\n"),
        ),
        _ => None,
    }
}

fn parse_json(flavor: Flavor, body: &Bytes) -> Result<Value, Response> {
    match serde_json::from_slice::<Value>(body) {
        Ok(v) if v.is_object() => Ok(v),
        _ => Err(match flavor {
            Flavor::OpenAi => bad_request(
                flavor,
                "",
                "We could not parse the JSON body of your request. (HINT: This likely means you aren't using your HTTP library correctly. The OpenAI API expects a JSON payload.)",
            ),
            Flavor::Anthropic => bad_request(flavor, "", "There was an error parsing the body of your request."),
        }),
    }
}

fn parse_messages(flavor: Flavor, req: &Value) -> Result<(Vec<String>, String), Response> {
    let anthropic = matches!(flavor, Flavor::Anthropic);
    let missing = |what: &str| match flavor {
        Flavor::OpenAi => bad_request(
            flavor,
            what,
            &format!("Missing required parameter: '{what}'."),
        ),
        Flavor::Anthropic => bad_request(flavor, what, &format!("{what}: Field required")),
    };
    let list = match &req["messages"] {
        Value::Null => return Err(missing("messages")),
        Value::Array(list) if !list.is_empty() => list,
        Value::Array(_) if anthropic => {
            return Err(bad_request(
                flavor,
                "messages",
                "messages: at least one message is required",
            ))
        }
        Value::Array(_) => {
            return Err(bad_request(
                flavor,
                "messages",
                "[] is too short - 'messages'",
            ))
        }
        _ => {
            return Err(bad_request(
                flavor,
                "messages",
                &match flavor {
                    Flavor::OpenAi => "Invalid type for 'messages': expected an array.".to_string(),
                    Flavor::Anthropic => "messages: Input should be a valid list".to_string(),
                },
            ))
        }
    };
    let mut texts = Vec::new();
    let mut last_user = String::new();
    for (i, m) in list.iter().enumerate() {
        let invalid = || {
            bad_request(
                flavor,
                &format!("messages.[{i}]"),
                &format!("Invalid value for 'messages[{i}]'."),
            )
        };
        let Some(role) = m["role"].as_str() else {
            return Err(invalid());
        };
        let Some(text) = content_text(&m["content"], !anthropic) else {
            return Err(invalid());
        };
        if role == "user" {
            last_user = text.clone();
        }
        texts.push(text);
    }
    Ok((texts, last_user))
}

fn parse_model(flavor: Flavor, req: &Value) -> Result<String, Response> {
    match &req["model"] {
        Value::String(m) if !m.is_empty() => Ok(m.clone()),
        Value::Null => Err(match flavor {
            Flavor::OpenAi => bad_request(flavor, "model", "you must provide a model parameter"),
            Flavor::Anthropic => bad_request(flavor, "model", "model: Field required"),
        }),
        _ => Err(bad_request(flavor, "model", "Invalid value for 'model'.")),
    }
}

/// What OpenAI checks beyond the shape of the messages, with its own messages: the sampling
/// ranges, `n`, the roles, and that a tool's message answers a call made before it.
fn check_openai_fields(req: &Value) -> Result<(), Response> {
    let flavor = Flavor::OpenAi;
    for (param, max) in [
        ("temperature", 2.0),
        ("top_p", 1.0),
        ("presence_penalty", 2.0),
        ("frequency_penalty", 2.0),
    ] {
        if let Some(x) = req[param].as_f64() {
            let min = if param.ends_with("penalty") {
                -2.0
            } else {
                0.0
            };
            if x > max || x < min {
                return Err(bad_request(
                    flavor,
                    param,
                    &format!("Invalid '{param}': decimal out of range. Expected a value from {min} to {max}, but got {x} instead."),
                ));
            }
        }
    }
    if req["n"].as_i64().is_some_and(|n| !(1..=128).contains(&n)) {
        return Err(bad_request(
            flavor,
            "n",
            "Invalid 'n': expected an integer from 1 to 128.",
        ));
    }
    let mut calls: Vec<String> = Vec::new();
    for (i, m) in req["messages"].as_array().into_iter().flatten().enumerate() {
        match m["role"].as_str().unwrap_or_default() {
            "system" | "developer" | "user" | "function" => {}
            "assistant" => calls.extend(
                m["tool_calls"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|c| c["id"].as_str().map(str::to_string)),
            ),
            "tool" => {
                let answered = m["tool_call_id"].as_str().is_some_and(|id| calls.iter().any(|c| c == id));
                if !answered {
                    return Err(bad_request(
                        flavor,
                        &format!("messages.[{i}].role"),
                        "Invalid parameter: messages with role 'tool' must be a response to a preceeding message with 'tool_calls'.",
                    ));
                }
            }
            other => {
                return Err(bad_request(
                    flavor,
                    &format!("messages.[{i}].role"),
                    &format!("Invalid value: '{other}'. Supported values are: 'system', 'assistant', 'user', 'function', 'tool', and 'developer'."),
                ))
            }
        }
    }
    Ok(())
}

fn parse_openai_chat(body: &Bytes) -> Result<Conversation, Response> {
    let flavor = Flavor::OpenAi;
    let req = parse_json(flavor, body)?;
    let model = parse_model(flavor, &req)?;
    let (texts, last_user) = parse_messages(flavor, &req)?;
    check_openai_fields(&req)?;
    let mut max_tokens = None;
    for param in ["max_tokens", "max_completion_tokens"] {
        match &req[param] {
            Value::Null => {}
            v => match v.as_i64() {
                Some(n) if n >= 1 => max_tokens = Some(n),
                _ => {
                    return Err(bad_request(
                        flavor,
                        param,
                        &format!("Invalid '{param}': expected an integer of at least 1."),
                    ))
                }
            },
        }
    }
    Ok(Conversation {
        model,
        texts,
        last_user,
        max_tokens,
        stream: req["stream"].as_bool().unwrap_or(false),
        include_usage: req["stream_options"]["include_usage"]
            .as_bool()
            .unwrap_or(false),
        extras: features::openai(&req),
    })
}

fn parse_anthropic_messages(body: &Bytes) -> Result<Conversation, Response> {
    let flavor = Flavor::Anthropic;
    let req = parse_json(flavor, body)?;
    let model = parse_model(flavor, &req)?;
    let max_tokens = match &req["max_tokens"] {
        Value::Null => {
            return Err(bad_request(
                flavor,
                "max_tokens",
                "max_tokens: Field required",
            ))
        }
        v => match v.as_i64() {
            Some(n) if n >= 1 => n,
            _ => {
                return Err(bad_request(
                    flavor,
                    "max_tokens",
                    "max_tokens: Input should be a valid integer greater than or equal to 1",
                ))
            }
        },
    };
    let (messages, last_user) = parse_messages(flavor, &req)?;
    let mut texts = Vec::new();
    match &req["system"] {
        Value::Null => {}
        v => match content_text(v, false) {
            Some(system) => texts.push(system),
            None => {
                return Err(bad_request(
                    flavor,
                    "system",
                    "system: Input should be a valid string or list of text blocks",
                ))
            }
        },
    }
    texts.extend(messages);
    Ok(Conversation {
        model,
        texts,
        last_user,
        max_tokens: Some(max_tokens),
        stream: req["stream"].as_bool().unwrap_or(false),
        include_usage: false,
        extras: features::anthropic(&req),
    })
}

/// A chat-like request past its opening (see [`open`]).
struct Opened {
    conv: Conversation,
    /// `[sim:fail_midstream]`: a stream is cut part-way.
    fail: bool,
    /// The prompt tokens the answer reports.
    prompt: i64,
    answer: features::Answer,
}

/// The opening every chat-like answer shares (chat completions, responses, messages): the
/// request counted and remembered, its key checked, its body read by `parse`, the directives'
/// latency, status and flakiness applied, and then its prompt tokens and what to answer. `Err`
/// is the answer to send instead.
async fn open(
    sim: &Sim,
    flavor: Flavor,
    headers: &HeaderMap,
    body: &Bytes,
    parse: fn(&Bytes) -> Result<Conversation, Response>,
) -> Result<Opened, Response> {
    sim.requests.fetch_add(1, Ordering::SeqCst);
    remember(sim, headers, body);
    check(headers, flavor)?;
    let conv = parse(body)?;
    let directives = conv.last_user.as_str();
    prelude(sim, flavor, directives).await?;
    let fail = directive(directives, "fail_midstream").is_some();
    if fail && !conv.stream {
        return Err(status_error(flavor, StatusCode::INTERNAL_SERVER_ERROR));
    }
    let texts: Vec<&str> = conv.texts.iter().map(String::as_str).collect();
    let prompt = reported_prompt(
        directives,
        prompt_tokens(&texts) + conv.extras.media_tokens(),
    );
    let usual = reply_text(&conv.model, &conv.last_user);
    let answer = conv.extras.answer(&conv.model, &conv.last_user, usual);
    Ok(Opened {
        conv,
        fail,
        prompt,
        answer,
    })
}

// ---------------------------------------------------------------------------------------------
// Responses
// ---------------------------------------------------------------------------------------------

type Event = Result<Bytes, std::io::Error>;

/// Pause before a `[sim:fail_midstream]` cut, so the events before it are flushed first.
const CUT_DELAY_MS: u64 = 50;

/// The most bytes of an event written at once: a long event goes out in pieces, as a TLS
/// connection delivers it (in records of at most 16 KiB), so its reader must join them.
const RECORD: usize = 16 << 10;

/// An event stream of `events`, `chunk_ms` apart.
fn sse(events: Vec<Event>, chunk_ms: u64) -> Response {
    let body = futures_util::stream::unfold(
        (events.into_iter(), true),
        move |(mut events, first)| async move {
            let event = events.next()?;
            if !first && chunk_ms > 0 {
                tokio::time::sleep(Duration::from_millis(chunk_ms)).await;
            }
            if event.is_err() {
                // Let what was sent reach the client (headers included) before the cut.
                tokio::time::sleep(Duration::from_millis(CUT_DELAY_MS)).await;
            }
            Some((event, (events, false)))
        },
    )
    .flat_map(|event| futures_util::stream::iter(records(event)));
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "text/event-stream")
        .header(header::CACHE_CONTROL, "no-cache")
        .body(Body::from_stream(body))
        .expect("valid response")
}

/// An event's bytes in pieces of at most [`RECORD`] bytes (a cut as it is).
fn records(event: Event) -> impl Iterator<Item = Event> {
    let (bytes, cut) = match event {
        Ok(bytes) => (bytes, None),
        Err(e) => (Bytes::new(), Some(e)),
    };
    let len = bytes.len();
    (0..len)
        .step_by(RECORD)
        .map(move |at| Ok(bytes.slice(at..len.min(at + RECORD))))
        .chain(cut.map(Err))
}

fn cut() -> Event {
    Err(std::io::Error::new(
        std::io::ErrorKind::ConnectionAborted,
        "simulated failure mid-stream",
    ))
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The pieces of a reply as streamed: each word with the whitespace after it (so line breaks
/// in a Markdown reply survive), the last without.
fn pieces(reply: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut piece = String::new();
    let mut in_space = false;
    for c in reply.trim().chars() {
        if !c.is_whitespace() && in_space {
            out.push(std::mem::take(&mut piece));
        }
        in_space = c.is_whitespace();
        piece.push(c);
    }
    if !piece.is_empty() {
        out.push(piece);
    }
    out
}

async fn last(State(sim): State<Sim>) -> Response {
    let body = sim.last.lock().unwrap_or_else(|e| e.into_inner()).clone();
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}

async fn last_headers(State(sim): State<Sim>) -> Response {
    let [version, beta] = sim
        .last_headers
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    Json(json!({ "anthropic-version": version, "anthropic-beta": beta })).into_response()
}

fn remember(sim: &Sim, headers: &HeaderMap, body: &Bytes) {
    *sim.last.lock().unwrap_or_else(|e| e.into_inner()) = body.clone();
    let text = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    *sim.last_headers.lock().unwrap_or_else(|e| e.into_inner()) =
        [text("anthropic-version"), text("anthropic-beta")];
}

async fn stats(State(sim): State<Sim>) -> Response {
    Json(json!({ "requests": sim.requests.load(Ordering::SeqCst) })).into_response()
}

async fn chat_completions(State(sim): State<Sim>, headers: HeaderMap, body: Bytes) -> Response {
    let flavor = Flavor::OpenAi;
    let Opened {
        conv,
        fail,
        prompt,
        answer,
    } = match open(&sim, flavor, &headers, &body, parse_openai_chat).await {
        Ok(opened) => opened,
        Err(res) => return res,
    };
    let directives = conv.last_user.as_str();
    let choices = conv.extras.choices;
    let call_id = format!("call_sim_{}", sim.ids.fetch_add(1, Ordering::SeqCst) + 1);
    let (reply, finish, each) = match &answer {
        features::Answer::Text(text) => {
            let (reply, truncated) = limit_reply(text, conv.max_tokens);
            let n = count_tokens(&reply);
            (reply, if truncated { "length" } else { "stop" }, n)
        }
        features::Answer::Tool(name, args) => (
            String::new(),
            "tool_calls",
            count_tokens(&format!("{name} {args}")).max(1),
        ),
    };
    let completion = each.saturating_mul(choices as i64);
    let usage = json!({
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt.saturating_add(completion),
        "prompt_tokens_details": { "cached_tokens": 0, "audio_tokens": 0 },
        "completion_tokens_details": {
            "reasoning_tokens": 0, "audio_tokens": 0,
            "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0,
        },
    });
    let id = format!(
        "chatcmpl-sim-{}",
        sim.ids.fetch_add(1, Ordering::SeqCst) + 1
    );
    let created = now();
    let logprobs = |text: &str| -> Value {
        if !conv.extras.logprobs {
            return Value::Null;
        }
        let content: Vec<Value> = pieces(text)
            .iter()
            .map(|w| json!({ "token": w, "logprob": -0.1, "bytes": w.as_bytes(), "top_logprobs": [] }))
            .collect();
        json!({ "content": content, "refusal": null })
    };
    if !conv.stream {
        let message = match &answer {
            features::Answer::Text(_) => {
                json!({ "role": "assistant", "content": reply, "refusal": null, "annotations": [] })
            }
            features::Answer::Tool(name, args) => json!({
                "role": "assistant", "content": null, "refusal": null, "annotations": [],
                "tool_calls": [{ "id": call_id, "type": "function",
                    "function": { "name": name, "arguments": args.to_string() } }],
            }),
        };
        let list: Vec<Value> = (0..choices)
            .map(|index| {
                json!({
                    "index": index,
                    "message": message,
                    "logprobs": logprobs(&reply),
                    "finish_reason": finish,
                })
            })
            .collect();
        return Json(json!({
            "id": id,
            "object": "chat.completion",
            "created": created,
            "model": conv.model,
            "choices": list,
            "usage": usage,
            "service_tier": "default",
            "system_fingerprint": "fp_sim",
        }))
        .into_response();
    }
    let send_usage = conv.include_usage && directive(directives, "no_usage").is_none();
    let chunk = |choices: Value, usage: Option<Value>| -> Event {
        let mut c = json!({
            "id": id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": conv.model,
            "service_tier": "default",
            "system_fingerprint": "fp_sim",
            "choices": choices,
        });
        if send_usage {
            c["usage"] = usage.unwrap_or(Value::Null);
        }
        Ok(Bytes::from(format!("data: {c}\n\n")))
    };
    let choice = |index: usize, delta: Value, finish: Option<&str>, lp: Value| json!([{ "index": index, "delta": delta, "logprobs": lp, "finish_reason": finish }]);
    let mut events = Vec::new();
    for index in 0..choices {
        events.push(chunk(
            choice(
                index,
                json!({ "role": "assistant", "content": "", "refusal": null }),
                None,
                Value::Null,
            ),
            None,
        ));
    }
    match &answer {
        features::Answer::Text(_) => {
            for (i, piece) in pieces(&reply).into_iter().enumerate() {
                if fail && i == 2 {
                    break;
                }
                for index in 0..choices {
                    events.push(chunk(
                        choice(index, json!({ "content": piece }), None, logprobs(&piece)),
                        None,
                    ));
                }
            }
        }
        features::Answer::Tool(name, args) => {
            let args = args.to_string();
            let (first, second) = args.split_at(features::middle(&args));
            for index in 0..choices {
                events.push(chunk(
                    choice(
                        index,
                        json!({ "tool_calls": [{ "index": 0, "id": call_id, "type": "function",
                        "function": { "name": name, "arguments": "" } }] }),
                        None,
                        Value::Null,
                    ),
                    None,
                ));
                for part in [first, second] {
                    events.push(chunk(
                        choice(index, json!({ "tool_calls": [{ "index": 0, "function": { "arguments": part } }] }), None, Value::Null),
                        None,
                    ));
                }
            }
        }
    }
    if fail {
        events.push(cut());
    } else {
        for index in 0..choices {
            events.push(chunk(
                choice(index, json!({}), Some(finish), Value::Null),
                None,
            ));
        }
        if send_usage {
            events.push(chunk(json!([]), Some(usage)));
        }
        events.push(Ok(Bytes::from_static(b"data: [DONE]\n\n")));
    }
    sse(
        events,
        directive_num(directives, "chunk_ms").unwrap_or(sim.options.chunk_ms),
    )
}

/// OpenAI's smallest `max_output_tokens`.
const MIN_OUTPUT_TOKENS: i64 = 16;

/// A Responses API request: its conversation (instructions and every input item's text), as
/// OpenAI checks it.
fn parse_responses(body: &Bytes) -> Result<Conversation, Response> {
    let flavor = Flavor::OpenAi;
    let req = parse_json(flavor, body)?;
    let model = parse_model(flavor, &req)?;
    let mut texts = Vec::new();
    if let Some(instructions) = req["instructions"].as_str() {
        texts.push(instructions.to_string());
    }
    let mut last_user = String::new();
    match &req["input"] {
        Value::String(s) => {
            last_user = s.clone();
            texts.push(s.clone());
        }
        Value::Array(items) => {
            let mut calls: Vec<&str> = Vec::new();
            for (i, item) in items.iter().enumerate() {
                match item["type"].as_str().unwrap_or("message") {
                    "message" => {
                        let text = match &item["content"] {
                            Value::String(s) => s.clone(),
                            Value::Array(parts) => parts
                                .iter()
                                .filter_map(|p| p["text"].as_str())
                                .collect::<Vec<_>>()
                                .join("\n"),
                            _ => {
                                return Err(bad_request(
                                    flavor,
                                    &format!("input[{i}].content"),
                                    &format!("Invalid value for 'input[{i}].content'."),
                                ))
                            }
                        };
                        match item["role"].as_str() {
                            Some("user") => last_user = text.clone(),
                            Some("system" | "developer" | "assistant") => {}
                            _ => {
                                return Err(bad_request(
                                    flavor,
                                    &format!("input[{i}].role"),
                                    &format!("Invalid value for 'input[{i}].role'. Supported values are: 'user', 'assistant', 'system', and 'developer'."),
                                ))
                            }
                        }
                        texts.push(text);
                    }
                    "function_call" => {
                        calls.push(item["call_id"].as_str().unwrap_or_default());
                        texts.push(item["arguments"].as_str().unwrap_or_default().to_string());
                    }
                    "function_call_output" => {
                        let id = item["call_id"].as_str().unwrap_or_default();
                        if !calls.contains(&id) {
                            return Err(bad_request(
                                flavor,
                                "input",
                                &format!("No tool call found for function call output with call_id {id}."),
                            ));
                        }
                        texts.push(features::text_of(&item["output"]));
                    }
                    other => {
                        return Err(bad_request(
                            flavor,
                            &format!("input[{i}].type"),
                            &format!("Invalid value: '{other}'."),
                        ))
                    }
                }
            }
        }
        Value::Null => {
            return Err(bad_request(
                flavor,
                "input",
                "Missing required parameter: 'input'.",
            ))
        }
        _ => {
            return Err(bad_request(
                flavor,
                "input",
                "Invalid type for 'input': expected one of a string or array of input items.",
            ))
        }
    }
    let max_tokens = match &req["max_output_tokens"] {
        Value::Null => None,
        v => match v.as_i64() {
            Some(n) if n >= MIN_OUTPUT_TOKENS => Some(n),
            _ => {
                return Err(bad_request(
                    flavor,
                    "max_output_tokens",
                    &format!("Invalid 'max_output_tokens': integer below minimum value. Expected a value >= {MIN_OUTPUT_TOKENS}, but got {v} instead."),
                ))
            }
        },
    };
    Ok(Conversation {
        model,
        texts,
        last_user,
        max_tokens,
        stream: req["stream"].as_bool().unwrap_or(false),
        include_usage: false,
        extras: features::responses(&req),
    })
}

/// OpenAI's `POST /v1/responses`: a response object, or its events (`response.created`, the
/// output item's, text or function-call argument deltas, and `response.completed` or
/// `response.incomplete` with the usage), each with its `sequence_number`.
async fn responses(State(sim): State<Sim>, headers: HeaderMap, body: Bytes) -> Response {
    let flavor = Flavor::OpenAi;
    let Opened {
        conv,
        fail,
        prompt: input,
        answer,
    } = match open(&sim, flavor, &headers, &body, parse_responses).await {
        Ok(opened) => opened,
        Err(res) => return res,
    };
    let directives = conv.last_user.as_str();
    // Read whole by `parse_responses` already.
    let req: Value = serde_json::from_slice(&body).unwrap_or_default();
    let next = || sim.ids.fetch_add(1, Ordering::SeqCst) + 1;
    let id = format!("resp_sim_{}", next());
    let item_id = format!("msg_sim_{}", next());
    let (item, text, truncated, output) = match &answer {
        features::Answer::Text(t) => {
            let (reply, truncated) = limit_reply(t, conv.max_tokens);
            let n = count_tokens(&reply);
            let item = json!({
                "type": "message", "id": item_id, "status": "completed", "role": "assistant",
                "content": [{ "type": "output_text", "text": reply, "annotations": [], "logprobs": [] }],
            });
            (item, reply, truncated, n)
        }
        features::Answer::Tool(name, args) => {
            let item = json!({
                "type": "function_call", "id": format!("fc_sim_{}", next()),
                "call_id": format!("call_sim_{}", next()), "name": name,
                "arguments": args.to_string(), "status": "completed",
            });
            (
                item,
                String::new(),
                false,
                count_tokens(&format!("{name} {args}")).max(1),
            )
        }
    };
    let usage = (directive(directives, "no_usage").is_none()).then(|| {
        json!({
            "input_tokens": input,
            "input_tokens_details": { "cached_tokens": 0 },
            "output_tokens": output,
            "output_tokens_details": { "reasoning_tokens": 0 },
            "total_tokens": input.saturating_add(output),
        })
    });
    let response = |status: &str, output: Vec<Value>, usage: Option<&Value>| {
        json!({
            "id": id, "object": "response", "created_at": now(), "status": status,
            "background": false, "error": null,
            "incomplete_details": if status == "incomplete" { json!({ "reason": "max_output_tokens" }) } else { Value::Null },
            "instructions": req["instructions"], "max_output_tokens": req["max_output_tokens"],
            "model": conv.model, "output": output, "parallel_tool_calls": true,
            "previous_response_id": null, "reasoning": { "effort": null, "summary": null },
            "store": req["store"].as_bool().unwrap_or(true), "temperature": 1.0,
            "text": { "format": req["text"]["format"].as_object().map_or(json!({ "type": "text" }), |f| Value::Object(f.clone())) },
            "tool_choice": req["tool_choice"].as_str().unwrap_or("auto"),
            "tools": req["tools"].as_array().cloned().unwrap_or_default(),
            "top_p": 1.0, "truncation": "disabled",
            "usage": usage.cloned().unwrap_or(Value::Null),
            "user": null, "metadata": {},
        })
    };
    let status = if truncated { "incomplete" } else { "completed" };
    if !conv.stream {
        return Json(response(status, vec![item], usage.as_ref())).into_response();
    }
    let mut seq = 0u64;
    let mut events = Vec::new();
    let mut event = |kind: &str, mut data: Value| {
        data["type"] = json!(kind);
        data["sequence_number"] = json!(seq);
        seq += 1;
        events.push(Ok(Bytes::from(format!("event: {kind}\ndata: {data}\n\n"))));
    };
    event(
        "response.created",
        json!({ "response": response("in_progress", vec![], None) }),
    );
    event(
        "response.in_progress",
        json!({ "response": response("in_progress", vec![], None) }),
    );
    let mut started = item.clone();
    started["status"] = json!("in_progress");
    let item_key = started["id"].clone();
    match &answer {
        features::Answer::Text(_) => {
            started["content"] = json!([]);
            event(
                "response.output_item.added",
                json!({ "output_index": 0, "item": started }),
            );
            let part =
                json!({ "type": "output_text", "text": "", "annotations": [], "logprobs": [] });
            event(
                "response.content_part.added",
                json!({ "item_id": item_key, "output_index": 0, "content_index": 0, "part": part }),
            );
            for (i, piece) in pieces(&text).into_iter().enumerate() {
                if fail && i == 2 {
                    break;
                }
                event(
                    "response.output_text.delta",
                    json!({ "item_id": item_key, "output_index": 0, "content_index": 0, "delta": piece, "logprobs": [] }),
                );
            }
            if !fail {
                event(
                    "response.output_text.done",
                    json!({ "item_id": item_key, "output_index": 0, "content_index": 0, "text": text, "logprobs": [] }),
                );
                let part = &item["content"][0];
                event(
                    "response.content_part.done",
                    json!({ "item_id": item_key, "output_index": 0, "content_index": 0, "part": part }),
                );
            }
        }
        features::Answer::Tool(..) => {
            let arguments = item["arguments"].as_str().unwrap_or_default().to_string();
            started["arguments"] = json!("");
            event(
                "response.output_item.added",
                json!({ "output_index": 0, "item": started }),
            );
            let (first, second) = arguments.split_at(features::middle(&arguments));
            for part in [first, second] {
                event(
                    "response.function_call_arguments.delta",
                    json!({ "item_id": item_key, "output_index": 0, "delta": part }),
                );
            }
            event(
                "response.function_call_arguments.done",
                json!({ "item_id": item_key, "output_index": 0, "arguments": arguments }),
            );
        }
    }
    if fail {
        events.push(cut());
    } else {
        event(
            "response.output_item.done",
            json!({ "output_index": 0, "item": item }),
        );
        let ending = if truncated {
            "response.incomplete"
        } else {
            "response.completed"
        };
        event(
            ending,
            json!({ "response": response(status, vec![item.clone()], usage.as_ref()) }),
        );
    }
    sse(
        events,
        directive_num(directives, "chunk_ms").unwrap_or(sim.options.chunk_ms),
    )
}

/// Anthropic's `POST /v1/messages/count_tokens`: the input tokens a message with this body
/// would report (its body is a message's without `max_tokens`).
async fn count_message_tokens(State(sim): State<Sim>, headers: HeaderMap, body: Bytes) -> Response {
    remember(&sim, &headers, &body);
    if let Err(res) = check(&headers, Flavor::Anthropic) {
        return res;
    }
    let mut req: Value = match serde_json::from_slice(&body) {
        Ok(v @ Value::Object(_)) => v,
        _ => return bad_request(Flavor::Anthropic, "body", "body: expected a JSON object"),
    };
    req["max_tokens"] = json!(1);
    let conv = match parse_anthropic_messages(&Bytes::from(req.to_string())) {
        Ok(c) => c,
        Err(res) => return res,
    };
    let texts: Vec<&str> = conv.texts.iter().map(String::as_str).collect();
    let input = prompt_tokens(&texts) + conv.extras.media_tokens();
    Json(json!({ "input_tokens": input })).into_response()
}

/// OpenAI's `POST /v1/responses/input_tokens`: what a Responses body's input would cost
/// ([`prompt_tokens`] of its instructions and input, and its images and files), as
/// `{"object": "response.input_tokens", "input_tokens": n}`. The model and the input may be
/// left out, as at OpenAI. Free: no usage.
async fn response_input_tokens(
    State(sim): State<Sim>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    remember(&sim, &headers, &body);
    let mut req = match open_json(&sim, &headers, &body) {
        Ok(r) => r,
        Err(res) => return res,
    };
    if req["model"].is_null() {
        req["model"] = json!("gpt-4o");
    }
    if req["input"].is_null() {
        req["input"] = json!("");
    }
    let conv = match parse_responses(&Bytes::from(req.to_string())) {
        Ok(c) => c,
        Err(res) => return res,
    };
    if let Err(res) = prelude(&sim, Flavor::OpenAi, &conv.last_user).await {
        return res;
    }
    let texts: Vec<&str> = conv.texts.iter().map(String::as_str).collect();
    let input = prompt_tokens(&texts) + conv.extras.media_tokens();
    Json(json!({ "object": "response.input_tokens", "input_tokens": input })).into_response()
}

async fn messages(State(sim): State<Sim>, headers: HeaderMap, body: Bytes) -> Response {
    let flavor = Flavor::Anthropic;
    let Opened {
        conv,
        fail,
        prompt: input,
        answer,
    } = match open(&sim, flavor, &headers, &body, parse_anthropic_messages).await {
        Ok(opened) => opened,
        Err(res) => return res,
    };
    let directives = conv.last_user.as_str();
    let tool_id = format!("toolu_sim_{}", sim.ids.fetch_add(1, Ordering::SeqCst) + 1);
    let (reply, stop, output) = match &answer {
        features::Answer::Text(text) => {
            let (reply, truncated) = limit_reply(text, conv.max_tokens);
            let n = count_tokens(&reply);
            (reply, if truncated { "max_tokens" } else { "end_turn" }, n)
        }
        features::Answer::Tool(name, args) => (
            String::new(),
            "tool_use",
            count_tokens(&format!("{name} {args}")).max(1),
        ),
    };
    let id = format!("msg_sim_{}", sim.ids.fetch_add(1, Ordering::SeqCst) + 1);
    if !conv.stream {
        let content = match &answer {
            features::Answer::Text(_) => json!([{ "type": "text", "text": reply }]),
            features::Answer::Tool(name, args) => {
                json!([{ "type": "tool_use", "id": tool_id, "name": name, "input": args }])
            }
        };
        return Json(json!({
            "id": id,
            "type": "message",
            "role": "assistant",
            "model": conv.model,
            "content": content,
            "stop_reason": stop,
            "stop_sequence": null,
            "usage": {
                "input_tokens": input,
                "output_tokens": output,
                "cache_creation_input_tokens": 0,
                "cache_read_input_tokens": 0,
                "service_tier": "standard",
            },
        }))
        .into_response();
    }
    let event = |data: Value| -> Event {
        let kind = data["type"].as_str().unwrap_or("").to_string();
        Ok(Bytes::from(format!("event: {kind}\ndata: {data}\n\n")))
    };
    let mut events = vec![event(json!({ "type": "message_start", "message": {
        "id": id,
        "type": "message",
        "role": "assistant",
        "model": conv.model,
        "content": [],
        "stop_reason": null,
        "stop_sequence": null,
        "usage": {
            "input_tokens": input,
            "output_tokens": 1,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
            "service_tier": "standard",
        },
    } }))];
    match &answer {
        features::Answer::Text(_) => {
            events.push(event(json!({ "type": "content_block_start", "index": 0,
                "content_block": { "type": "text", "text": "" } })));
            events.push(event(json!({ "type": "ping" })));
            for (i, piece) in pieces(&reply).into_iter().enumerate() {
                if fail && i == 2 {
                    break;
                }
                events.push(event(json!({ "type": "content_block_delta", "index": 0,
                    "delta": { "type": "text_delta", "text": piece } })));
            }
        }
        features::Answer::Tool(name, args) => {
            events.push(event(json!({ "type": "content_block_start", "index": 0,
                "content_block": { "type": "tool_use", "id": tool_id, "name": name, "input": {} } })));
            let args = args.to_string();
            let (first, second) = args.split_at(features::middle(&args));
            for part in [first, second] {
                events.push(event(json!({ "type": "content_block_delta", "index": 0,
                    "delta": { "type": "input_json_delta", "partial_json": part } })));
            }
        }
    }
    if fail {
        events.push(cut());
    } else {
        events.push(event(json!({ "type": "content_block_stop", "index": 0 })));
        events.push(event(json!({ "type": "message_delta",
            "delta": { "stop_reason": stop, "stop_sequence": null },
            "usage": { "output_tokens": output } })));
        events.push(event(json!({ "type": "message_stop" })));
    }
    sse(
        events,
        directive_num(directives, "chunk_ms").unwrap_or(sim.options.chunk_ms),
    )
}

/// The opening of an OpenAI request other than a chat: counted, its key checked and its body
/// read as a JSON object. `Err` is the answer to send instead.
fn open_json(sim: &Sim, headers: &HeaderMap, body: &Bytes) -> Result<Value, Response> {
    sim.requests.fetch_add(1, Ordering::SeqCst);
    check(headers, Flavor::OpenAi)?;
    parse_json(Flavor::OpenAi, body)
}

async fn embeddings(State(sim): State<Sim>, headers: HeaderMap, body: Bytes) -> Response {
    let flavor = Flavor::OpenAi;
    let req = match open_json(&sim, &headers, &body) {
        Ok(r) => r,
        Err(res) => return res,
    };
    let model = match parse_model(flavor, &req) {
        Ok(m) => m,
        Err(res) => return res,
    };
    let inputs: Vec<String> = match &req["input"] {
        Value::String(s) => vec![s.clone()],
        Value::Array(items) if !items.is_empty() && items.iter().all(Value::is_string) => items
            .iter()
            .filter_map(|i| i.as_str().map(str::to_string))
            .collect(),
        Value::Null => return bad_request(flavor, "input", "Missing required parameter: 'input'."),
        _ => {
            return bad_request(
                flavor,
                "input",
                "'input' must be a string or a non-empty array of strings.",
            )
        }
    };
    let dimensions = match &req["dimensions"] {
        Value::Null => 16,
        v => match v.as_u64() {
            Some(d @ 1..=4096) => d as usize,
            _ => {
                return bad_request(
                    flavor,
                    "dimensions",
                    "Invalid 'dimensions': expected an integer between 1 and 4096.",
                )
            }
        },
    };
    let base64_format = req["encoding_format"] == "base64";
    let directives = inputs.join("\n");
    if let Err(res) = prelude(&sim, flavor, &directives).await {
        return res;
    }
    let tokens: i64 = inputs.iter().map(|i| count_tokens(i)).sum();
    let data: Vec<Value> = inputs
        .iter()
        .enumerate()
        .map(|(index, text)| {
            let vector = embedding(text, dimensions);
            let value = if base64_format {
                let bytes: Vec<u8> = vector.iter().flat_map(|x| x.to_le_bytes()).collect();
                use base64::Engine as _;
                json!(base64::engine::general_purpose::STANDARD.encode(bytes))
            } else {
                json!(vector)
            };
            json!({ "object": "embedding", "index": index, "embedding": value })
        })
        .collect();
    Json(json!({
        "object": "list",
        "data": data,
        "model": model,
        "usage": { "prompt_tokens": tokens, "total_tokens": tokens },
    }))
    .into_response()
}

/// The categories of OpenAI's omni moderation model.
const MODERATION_CATEGORIES: [&str; 13] = [
    "harassment",
    "harassment/threatening",
    "hate",
    "hate/threatening",
    "illicit",
    "illicit/violent",
    "self-harm",
    "self-harm/intent",
    "self-harm/instructions",
    "sexual",
    "sexual/minors",
    "violence",
    "violence/graphic",
];

/// `/v1/moderations` in OpenAI's shape: one result per input (a string, each string of a
/// list, or one list of text and image parts). An input is flagged in the category its text
/// names with `[sim:flagged=CATEGORY]`, scored 0.9 there and 0.001 elsewhere. Free, as
/// OpenAI's: no usage.
async fn moderations(State(sim): State<Sim>, headers: HeaderMap, body: Bytes) -> Response {
    let flavor = Flavor::OpenAi;
    remember(&sim, &headers, &body);
    let req = match open_json(&sim, &headers, &body) {
        Ok(r) => r,
        Err(res) => return res,
    };
    let model = match &req["model"] {
        Value::Null => "omni-moderation-latest".to_string(),
        Value::String(m) if m.contains("moderation") => m.clone(),
        _ => {
            return bad_request(
                flavor,
                "model",
                "'model' must be a moderation model (omni-moderation-latest).",
            )
        }
    };
    // Each input: its text, and whether it has an image.
    let inputs: Vec<(String, bool)> = match &req["input"] {
        Value::String(s) => vec![(s.clone(), false)],
        Value::Array(items) if !items.is_empty() && items.iter().all(Value::is_string) => items
            .iter()
            .map(|i| (i.as_str().unwrap_or_default().to_string(), false))
            .collect(),
        Value::Array(parts) if !parts.is_empty() && parts.iter().all(|p| p["type"].is_string()) => {
            let image = parts.iter().any(|p| p["type"] == "image_url");
            vec![(features::text_of(&req["input"]), image)]
        }
        Value::Null => return bad_request(flavor, "input", "Missing required parameter: 'input'."),
        _ => return bad_request(
            flavor,
            "input",
            "'input' must be a string, an array of strings, or an array of text and image parts.",
        ),
    };
    let directives: Vec<&str> = inputs.iter().map(|(t, _)| t.as_str()).collect();
    if let Err(res) = prelude(&sim, flavor, &directives.join("\n")).await {
        return res;
    }
    let results: Vec<Value> = inputs
        .iter()
        .map(|(text, image)| {
            let flagged = directive(text, "flagged").filter(|c| MODERATION_CATEGORIES.contains(c));
            let mut categories = serde_json::Map::new();
            let mut scores = serde_json::Map::new();
            let mut types = serde_json::Map::new();
            for c in MODERATION_CATEGORIES {
                categories.insert(c.into(), json!(flagged == Some(c)));
                scores.insert(
                    c.into(),
                    json!(if flagged == Some(c) { 0.9 } else { 0.001 }),
                );
                let kinds = if *image {
                    json!(["text", "image"])
                } else {
                    json!(["text"])
                };
                types.insert(c.into(), kinds);
            }
            json!({
                "flagged": flagged.is_some(),
                "categories": categories,
                "category_scores": scores,
                "category_applied_input_types": types,
            })
        })
        .collect();
    Json(json!({
        "id": format!("modr-{}", sim.requests.load(Ordering::SeqCst)),
        "model": model,
        "results": results,
    }))
    .into_response()
}

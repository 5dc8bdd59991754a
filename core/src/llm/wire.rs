//! The providers' wire formats: OpenAI chat completions (also spoken by OpenAI-compatible
//! servers) and Anthropic Messages, as request bodies, JSON replies and server-sent events.
//!
//! The gateway forwards text, not provider objects, so each reply is reduced to
//! [`Piece`]s: text deltas, the finish reason, the usage, and the end.

use std::borrow::Cow;

use serde_json::{json, Value};

use super::{ChatRequest, MessageRole, Usage};
use crate::Provider;

mod skim;
pub(crate) use skim::{body_fields, plain_messages, string_end};

/// Writes `text` as a JSON string, as serde writes one: as it is, quoted, when nothing in it is
/// to escape (found eight bytes at a time), else by serde.
pub(crate) fn write_json_string(out: &mut Vec<u8>, text: &str) {
    if string_end(text.as_bytes(), 0) == text.len() {
        out.push(b'"');
        out.extend_from_slice(text.as_bytes());
        out.push(b'"');
    } else {
        // Writing to a `Vec` cannot fail.
        let _ = serde_json::to_writer(&mut *out, text);
    }
}

/// The version of Anthropic's API the requests are written for.
pub const ANTHROPIC_VERSION: &str = "2023-06-01";

/// Puts `secret` in `provider`'s header for it (`x-api-key` and the API version for Anthropic,
/// `Authorization: Bearer` for the others), marked sensitive so no log shows it. `Err`: the
/// key holds characters no header may carry (no provider would accept it).
pub fn put_key(
    headers: &mut http::HeaderMap,
    provider: crate::Provider,
    secret: &str,
) -> Result<(), http::header::InvalidHeaderValue> {
    use http::header::{HeaderValue, AUTHORIZATION};
    match provider {
        crate::Provider::Anthropic => {
            let mut key = HeaderValue::from_str(secret)?;
            key.set_sensitive(true);
            headers.insert("x-api-key", key);
            headers.insert(
                "anthropic-version",
                HeaderValue::from_static(ANTHROPIC_VERSION),
            );
        }
        _ => {
            let mut bearer = HeaderValue::from_str(&format!("Bearer {secret}"))?;
            bearer.set_sensitive(true);
            headers.insert(AUTHORIZATION, bearer);
        }
    }
    Ok(())
}

/// One thing a provider said, in any format.
#[derive(Clone, Debug, PartialEq)]
pub enum Piece {
    Text(String),
    /// Why generation stopped, in OpenAI's words (`stop`, `length`, ...).
    Finish(String),
    /// Usage so far; later pieces may complete it (Anthropic sends prompt and completion
    /// tokens in different events).
    Usage(Usage),
    /// The provider's end-of-stream marker.
    Done,
    /// An error event inside a stream.
    Error(String),
    /// Generated text that is not reply text (a tool call's arguments): counted when the
    /// provider reports no usage, never shown as the reply.
    Unseen(String),
}

/// OpenAI's usage object.
#[derive(serde::Deserialize)]
struct UsageWire {
    prompt_tokens: Option<i64>,
    #[serde(default)]
    completion_tokens: Option<i64>,
    #[serde(default)]
    prompt_tokens_details: Option<PromptDetails>,
}

#[derive(serde::Deserialize)]
struct PromptDetails {
    #[serde(default)]
    cached_tokens: Option<i64>,
}

impl UsageWire {
    fn usage(&self) -> Option<Usage> {
        Some(Usage {
            prompt_tokens: self.prompt_tokens?,
            completion_tokens: self.completion_tokens.unwrap_or(0),
            cached_tokens: self
                .prompt_tokens_details
                .as_ref()
                .and_then(|d| d.cached_tokens)
                .unwrap_or(0),
            estimated: false,
        })
    }
}

/// One streamed OpenAI chunk, read without building a tree: only the parts the gateway needs.
#[derive(serde::Deserialize)]
struct ChunkWire<'a> {
    #[serde(borrow, default)]
    choices: Vec<ChoiceWire<'a>>,
    #[serde(default)]
    usage: Option<UsageWire>,
    #[serde(borrow, default)]
    error: Option<ErrorWire<'a>>,
}

#[derive(serde::Deserialize)]
struct ChoiceWire<'a> {
    #[serde(borrow, default, alias = "message")]
    delta: Option<DeltaWire<'a>>,
    #[serde(borrow, default)]
    finish_reason: Option<Cow<'a, str>>,
}

#[derive(serde::Deserialize)]
struct DeltaWire<'a> {
    #[serde(borrow, default)]
    content: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    refusal: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    tool_calls: Option<&'a serde_json::value::RawValue>,
    #[serde(borrow, default)]
    audio: Option<&'a serde_json::value::RawValue>,
}

#[derive(serde::Deserialize)]
struct ErrorWire<'a> {
    #[serde(borrow, default)]
    message: Option<Cow<'a, str>>,
}

/// Reads an OpenAI chunk (or whole reply) into pieces; returns how many choices it had. Only
/// the first choice's text is reply text; other choices and tool calls count as
/// [`Piece::Unseen`].
fn openai_chunk(data: &str, out: &mut Vec<Piece>) -> usize {
    if data.trim() == "[DONE]" {
        out.push(Piece::Done);
        return 0;
    }
    let Ok(chunk) = serde_json::from_str::<ChunkWire>(data) else {
        return 0;
    };
    if let Some(error) = chunk.error {
        out.push(Piece::Error(
            error
                .message
                .unwrap_or(Cow::Borrowed("stream error"))
                .into_owned(),
        ));
        return 0;
    }
    let choices = chunk.choices.len();
    for (i, choice) in chunk.choices.into_iter().enumerate() {
        if let Some(delta) = choice.delta {
            if let Some(text) = delta.content.filter(|t| !t.is_empty()) {
                out.push(if i == 0 {
                    Piece::Text(text.into_owned())
                } else {
                    Piece::Unseen(text.into_owned())
                });
            }
            if let Some(text) = delta.refusal.filter(|t| !t.is_empty()) {
                out.push(Piece::Unseen(text.into_owned()));
            }
            for raw in [delta.tool_calls, delta.audio].into_iter().flatten() {
                if raw.get() != "null" {
                    out.push(Piece::Unseen(raw.get().to_string()));
                }
            }
        }
        if let Some(reason) = choice.finish_reason {
            out.push(Piece::Finish(reason.into_owned()));
        }
    }
    if let Some(usage) = chunk.usage.as_ref().and_then(UsageWire::usage) {
        out.push(Piece::Usage(usage));
    }
    choices
}

/// Whether an OpenAI stream chunk can carry nothing but generated text (deltas of content,
/// tool calls and the like): it has no usage object, no error, no finish reason, and is not the
/// end marker. The gateway forwards such chunks without reading them, and reads them only if
/// it must count their text (see `gateway::call`). Conservative: a chunk that might be more
/// (a spelling these checks do not know) is read.
///
/// Every chunk of every stream is checked, so its three keys are searched for at once (with
/// SIMD, by aho-corasick's packed searcher; by memchr's, one key after the other, on a CPU
/// without): a quoted `usage` must hold `null`, `finish_reason` must be a quoted key holding
/// `null`, and a quoted `error` makes the chunk read.
pub fn plain_openai_delta(data: &str) -> bool {
    plain_keys(data.as_bytes(), keys_at_once())
}

/// The searcher for [`PLAIN_KEYS`] at once, built on first use (`None` on a CPU without SIMD).
fn keys_at_once() -> Option<&'static aho_corasick::packed::Searcher> {
    static AT_ONCE: std::sync::LazyLock<Option<aho_corasick::packed::Searcher>> =
        std::sync::LazyLock::new(|| aho_corasick::packed::Searcher::new(PLAIN_KEYS));
    AT_ONCE.as_ref()
}

/// Whether `bytes`, read from an event stream where an event begins, is whole events, each one
/// `data: ` line (ended by `\n` alone) that [`plain_openai_delta`] finds plain: such a piece
/// can be forwarded as the bytes that came, and read only if its text must be counted. Anything
/// else (another field, a comment, a `\r`, an event cut off at the end) is for [`SseParser`].
pub fn plain_openai_frame(bytes: &[u8]) -> bool {
    plain_frame(bytes, keys_at_once())
}

fn plain_frame(bytes: &[u8], at_once: Option<&aho_corasick::packed::Searcher>) -> bool {
    if bytes.is_empty() || memchr::memchr(b'\r', bytes).is_some() {
        return false;
    }
    let mut rest = bytes;
    while !rest.is_empty() {
        let Some(data) = rest.strip_prefix(b"data: ") else {
            return false;
        };
        let Some(end) = memchr::memchr(b'\n', data) else {
            return false;
        };
        if data.get(end + 1) != Some(&b'\n') || !plain_keys(&data[..end], at_once) {
            return false;
        }
        rest = &data[end + 2..];
    }
    true
}

/// [`plain_openai_delta`] with `at_once`, or without.
fn plain_keys(data: &[u8], at_once: Option<&aho_corasick::packed::Searcher>) -> bool {
    static EACH: std::sync::LazyLock<[memchr::memmem::Finder<'static>; 3]> =
        std::sync::LazyLock::new(|| PLAIN_KEYS.map(memchr::memmem::Finder::new));
    data.starts_with(b"{") && every_mark(data, at_once, &*EACH, |at, key| plain_at(data, at, key))
}

/// Whether `ok` holds at every place in `data` where one of a set of marks is found (with
/// `at_once`, a searcher for them all, or else `each`, one searcher per mark), given where and
/// which. The marks must not overlap (none ends with what another begins with), so a search
/// without overlaps finds every one.
fn every_mark(
    data: &[u8],
    at_once: Option<&aho_corasick::packed::Searcher>,
    each: &[memchr::memmem::Finder<'static>],
    ok: impl Fn(usize, usize) -> bool,
) -> bool {
    match at_once {
        Some(marks) => marks
            .find_iter(data)
            .all(|m| ok(m.start(), m.pattern().as_usize())),
        None => each
            .iter()
            .enumerate()
            .all(|(mark, f)| f.find_iter(data).all(|at| ok(at, mark))),
    }
}

/// Whether a Responses API event is sure not to be one the gateway reads as it passes: an
/// ending event (`response.completed`, `response.incomplete`, `response.failed`) or an
/// `error`. Its type is its data's `type`, or else its event name, and neither can be one of
/// those when the name is none of them and the data holds none of their names as a string's
/// end ([`ENDING_MARKS`]), `"error"` only as a key, and no `\u` escape (which could spell
/// one). Such an event (most of a stream: the text's deltas, the parts and items as they begin
/// and end) is forwarded unread, and read only if its text must be counted (see
/// `gateway::call`). Conservative: an event these marks cannot clear is read.
pub fn passing_responses_event(ev: &SseEvent) -> bool {
    static AT_ONCE: std::sync::LazyLock<Option<aho_corasick::packed::Searcher>> =
        std::sync::LazyLock::new(|| aho_corasick::packed::Searcher::new(ENDING_MARKS));
    static EACH: std::sync::LazyLock<[memchr::memmem::Finder<'static>; 5]> =
        std::sync::LazyLock::new(|| ENDING_MARKS.map(memchr::memmem::Finder::new));
    if ev
        .event
        .as_deref()
        .is_some_and(|name| ENDINGS.contains(&name))
    {
        return false;
    }
    let data = ev.data.as_bytes();
    every_mark(data, AT_ONCE.as_ref(), &*EACH, |at, mark| {
        // `"error"` followed by a colon is a key, not the type's value.
        mark == 3 && data[at + 7..].trim_ascii_start().starts_with(b":")
    })
}

/// The types of the Responses API's events that the gateway reads as they pass.
const ENDINGS: [&str; 4] = [
    "response.completed",
    "response.incomplete",
    "response.failed",
    "error",
];

/// What [`passing_responses_event`] looks for: the ends of the endings' names (each type's
/// JSON string holds its mark), `"error"`, and `\u`. Each begins with two bytes rare in an
/// event's text, so that few places are candidates to check (`response.` begins every type).
/// Marks overlap only where a quote would close one string and open another, in text that is
/// no JSON.
const ENDING_MARKS: [&str; 5] = [
    ".completed\"",
    ".incomplete\"",
    ".failed\"",
    "\"error\"",
    "\\u",
];

/// The keys [`plain_openai_delta`] looks for. None overlaps another (none ends with what
/// another begins with), so searching them without overlaps finds every one.
const PLAIN_KEYS: [&str; 3] = ["usage\"", "error\"", "finish_reason"];

/// Whether the key `PLAIN_KEYS[key]`, found at `at`, leaves a chunk plain.
fn plain_at(data: &[u8], at: usize, key: usize) -> bool {
    let quoted = at > 0 && data[at - 1] == b'"';
    let rest = &data[at..];
    match key {
        0 => !quoted || key_value(rest, b"usage").is_none_or(|v| v.starts_with(b"null")),
        1 => !quoted,
        _ => quoted && key_value(rest, b"finish_reason").is_some_and(|v| v.starts_with(b"null")),
    }
}

/// When `text` (just after a quote) is the key `key`, the text of its value.
fn key_value<'a>(text: &'a [u8], key: &[u8]) -> Option<&'a [u8]> {
    let after = text.strip_prefix(key)?.strip_prefix(b"\"")?;
    let value = after.trim_ascii_start().strip_prefix(b":")?;
    Some(value.trim_ascii_start())
}

/// One server-sent event carrying `v` (`data: <json>` and a blank line).
pub fn sse_json(v: &Value) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    out.extend_from_slice(b"data: ");
    // Serialising a Value into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut out, v);
    out.extend_from_slice(b"\n\n");
    out
}

/// Whether a streamed OpenAI chunk is the usage chunk (no choices, a usage object), which a
/// client that did not ask for it must not see.
pub fn is_usage_chunk(data: &str) -> bool {
    #[derive(serde::Deserialize)]
    struct Shape<'a> {
        #[serde(borrow, default)]
        choices: Option<&'a serde_json::value::RawValue>,
        #[serde(borrow, default)]
        usage: Option<&'a serde_json::value::RawValue>,
    }
    // Cheap first: only a chunk with a non-null usage can be one.
    if !data.contains("\"usage\":{") && !data.contains("\"usage\": {") {
        return false;
    }
    serde_json::from_str::<Shape>(data).is_ok_and(|s| {
        s.usage.is_some_and(|u| u.get() != "null")
            && s.choices.is_none_or(|c| c.get().trim() == "[]")
    })
}

/// The request body for a chat call to `provider`, with `max_tokens` (the request's own, or
/// the default) as its reply limit.
pub fn request_body(provider: Provider, req: &ChatRequest, max_tokens: u32) -> Value {
    let (model, messages, stream) = (&req.model, &req.messages, req.stream);
    let (temperature, top_p, stop) = (req.temperature, req.top_p, &req.stop);
    match provider {
        Provider::Anthropic => {
            let system: Vec<&str> = messages
                .iter()
                .filter(|m| m.role == MessageRole::System)
                .map(|m| m.content.as_str())
                .collect();
            let turns: Vec<Value> = messages
                .iter()
                .filter(|m| m.role != MessageRole::System)
                .map(|m| json!({ "role": m.role.as_str(), "content": m.content }))
                .collect();
            let mut body = json!({
                "model": model,
                "max_tokens": max_tokens,
                "messages": turns,
                "stream": stream,
            });
            if !system.is_empty() {
                body["system"] = Value::String(system.join("\n\n"));
            }
            if let Some(t) = temperature {
                // Anthropic's range is 0..=1; OpenAI's 0..=2.
                body["temperature"] = json!(t.clamp(0.0, 1.0));
            }
            if let Some(p) = top_p {
                body["top_p"] = json!(p);
            }
            if !stop.is_empty() {
                body["stop_sequences"] = json!(stop);
            }
            body
        }
        Provider::OpenAi | Provider::OpenAiCompatible => {
            let msgs: Vec<Value> = messages
                .iter()
                .map(|m| json!({ "role": m.role.as_str(), "content": m.content }))
                .collect();
            let mut body = json!({ "model": model, "messages": msgs, "stream": stream });
            // OpenAI replaced max_tokens with max_completion_tokens; compatible servers
            // (Ollama, vLLM) still read max_tokens.
            let limit_field = if provider == Provider::OpenAi {
                "max_completion_tokens"
            } else {
                "max_tokens"
            };
            body[limit_field] = json!(max_tokens);
            if stream {
                body["stream_options"] = json!({ "include_usage": true });
            }
            if let Some(t) = temperature {
                body["temperature"] = json!(t);
            }
            if let Some(p) = top_p {
                body["top_p"] = json!(p);
            }
            if !stop.is_empty() {
                body["stop"] = json!(stop);
            }
            body
        }
    }
}

/// A complete (non-streamed) reply.
#[derive(Clone, Debug, PartialEq)]
pub struct Reply {
    pub text: String,
    pub finish_reason: String,
    pub usage: Option<Usage>,
}

fn openai_usage(v: &Value) -> Option<Usage> {
    let prompt = v["prompt_tokens"].as_i64()?;
    Some(Usage {
        prompt_tokens: prompt,
        completion_tokens: v["completion_tokens"].as_i64().unwrap_or(0),
        cached_tokens: v["prompt_tokens_details"]["cached_tokens"]
            .as_i64()
            .unwrap_or(0),
        estimated: false,
    })
}

fn anthropic_stop(reason: &str) -> String {
    match reason {
        "max_tokens" => "length",
        "end_turn" | "stop_sequence" => "stop",
        "tool_use" => "tool_calls",
        "refusal" => "content_filter",
        other => other,
    }
    .to_string()
}

/// Reads a JSON reply; `None` when it is not the shape the provider documents.
pub fn parse_reply(provider: Provider, body: &Value) -> Option<Reply> {
    match provider {
        Provider::Anthropic => {
            let text: String = body["content"]
                .as_array()?
                .iter()
                .filter(|b| b["type"] == "text")
                .filter_map(|b| b["text"].as_str())
                .collect();
            let u = &body["usage"];
            let usage = u["input_tokens"].as_i64().map(|input| {
                let cache_read = u["cache_read_input_tokens"].as_i64().unwrap_or(0);
                let cache_write = u["cache_creation_input_tokens"].as_i64().unwrap_or(0);
                Usage {
                    // Anthropic counts cached input apart; Tessera's prompt tokens include it,
                    // as OpenAI's do.
                    prompt_tokens: input + cache_read + cache_write,
                    completion_tokens: u["output_tokens"].as_i64().unwrap_or(0),
                    cached_tokens: cache_read,
                    estimated: false,
                }
            });
            Some(Reply {
                text,
                finish_reason: anthropic_stop(body["stop_reason"].as_str().unwrap_or("end_turn")),
                usage,
            })
        }
        Provider::OpenAi | Provider::OpenAiCompatible => {
            let choice = body["choices"].get(0)?;
            Some(Reply {
                text: choice["message"]["content"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                finish_reason: choice["finish_reason"]
                    .as_str()
                    .unwrap_or("stop")
                    .to_string(),
                usage: openai_usage(&body["usage"]),
            })
        }
    }
}

/// Reads a forwarded OpenAI reply as bytes, without building a tree. When the provider
/// reported usage, that is all it reads (its client reads the bytes: text and finish reason
/// are left empty); otherwise the first choice's text and every other generated text (other
/// choices, tool calls, refusals), to be counted, and the finish reason. `None` when it is not
/// a chat completion.
pub fn read_openai_reply(bytes: &[u8]) -> Option<(Reply, String)> {
    match openai_reply_usage(bytes)? {
        Some(usage) => Some((
            Reply {
                text: String::new(),
                finish_reason: String::new(),
                usage: Some(usage),
            },
            String::new(),
        )),
        None => read_openai_text(bytes),
    }
}

/// An OpenAI reply's first choice's text, every other generated text, the finish reason and
/// the usage.
fn read_openai_text(bytes: &[u8]) -> Option<(Reply, String)> {
    let mut pieces = Vec::new();
    if openai_chunk(std::str::from_utf8(bytes).ok()?, &mut pieces) == 0 {
        return None;
    }
    let (mut reply, mut unseen) = (
        Reply {
            text: String::new(),
            finish_reason: String::new(),
            usage: None,
        },
        String::new(),
    );
    for p in pieces {
        match p {
            Piece::Text(t) => reply.text.push_str(&t),
            Piece::Unseen(t) => unseen.push_str(&t),
            Piece::Finish(r) if reply.finish_reason.is_empty() => reply.finish_reason = r,
            Piece::Usage(u) => reply.usage = Some(u),
            _ => {}
        }
    }
    if reply.finish_reason.is_empty() {
        reply.finish_reason = "stop".into();
    }
    Some((reply, unseen))
}

/// A whole OpenAI-format reply's usage, read without its text: `None` when it is not a reply
/// (no choices, or an error), `Some(None)` for a reply without usage, whose text must then be
/// counted. Read in one pass over its bytes ([`skim`]) where that reads it as serde does, by
/// serde otherwise.
fn openai_reply_usage(bytes: &[u8]) -> Option<Option<Usage>> {
    skim::reply_usage(bytes, &skim::CHAT).or_else(|| serde_reply_usage(bytes))
}

/// A Responses API reply's usage, read without building a tree, when the reply reported it
/// and reads plainly (see [`skim`]); `None` leaves the reply to [`parse_responses_reply`]
/// (which reads a tree, and so refuses text that is not UTF-8, as this does: its strings are
/// checked as they are passed over, and nothing else in JSON is outside ASCII).
pub fn responses_reply_usage(bytes: &[u8]) -> Option<Usage> {
    skim::reply_usage(bytes, &skim::RESPONSES).flatten()
}

/// [`openai_reply_usage`] read by serde.
fn serde_reply_usage(bytes: &[u8]) -> Option<Option<Usage>> {
    use serde::de::IgnoredAny;
    #[derive(serde::Deserialize)]
    struct Head {
        #[serde(default)]
        choices: Vec<IgnoredAny>,
        #[serde(default)]
        usage: Option<UsageWire>,
        #[serde(default)]
        error: Option<IgnoredAny>,
    }
    let head: Head = serde_json::from_slice(bytes).ok()?;
    if head.error.is_some() || head.choices.is_empty() {
        return None;
    }
    Some(head.usage.as_ref().and_then(UsageWire::usage))
}

/// The most of a whole (non-streamed) reply read from a provider.
pub const REPLY_LIMIT: usize = 16 << 20;
/// The most of an error answer read from a provider.
pub const ERROR_LIMIT: usize = 64 << 10;
/// The longest line of an event stream kept while waiting for its end.
pub const LINE_LIMIT: usize = 1 << 20;

/// A body longer than the limit it was read with.
#[derive(Debug, thiserror::Error)]
#[error("the answer was longer than {0} bytes")]
pub struct TooLong(pub usize);

/// Reads a response's body, refusing one longer than `limit` bytes (a provider, or an endpoint
/// a clinic runs, must not be able to fill the server's memory).
pub async fn read_limited(
    res: crate::egress::Response,
    limit: usize,
) -> Result<Vec<u8>, Box<dyn std::error::Error + Send + Sync>> {
    use http_body_util::BodyExt;
    use hyper::body::Body as _;
    let mut body = res.into_body();
    let expected = body.size_hint().exact();
    if expected.is_some_and(|n| n > limit as u64) {
        return Err(Box::new(TooLong(limit)));
    }
    // A body of known length is read into one allocation of its size.
    let mut out = Vec::with_capacity(expected.map_or(0, |n| n as usize));
    while let Some(frame) = body.frame().await {
        let Ok(chunk) = frame?.into_data() else {
            continue;
        };
        if out.len() + chunk.len() > limit {
            return Err(Box::new(TooLong(limit)));
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

/// Splits a byte stream into server-sent events (`event:` and `data:` fields).
pub struct SseParser {
    buf: Vec<u8>,
    event: Option<String>,
    data: String,
    /// The longest line or event kept ([`LINE_LIMIT`] unless made [`SseParser::with_limit`]).
    limit: usize,
}

impl Default for SseParser {
    fn default() -> Self {
        Self::with_limit(LINE_LIMIT)
    }
}

/// One server-sent event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SseEvent {
    pub event: Option<String>,
    pub data: String,
}

impl SseParser {
    /// A parser that keeps lines and events of up to `limit` bytes: for streams whose events
    /// carry a whole reply (the Responses API's closing events echo the response, its
    /// instructions included).
    pub fn with_limit(limit: usize) -> Self {
        Self {
            buf: Vec::new(),
            event: None,
            data: String::new(),
            limit,
        }
    }

    /// Whether nothing is held: the next bytes begin an event.
    pub fn is_idle(&self) -> bool {
        self.buf.is_empty() && self.data.is_empty() && self.event.is_none()
    }

    /// Feeds bytes; returns the events they complete.
    pub fn feed(&mut self, bytes: &[u8]) -> Vec<SseEvent> {
        self.buf.extend_from_slice(bytes);
        let mut out = Vec::new();
        let mut start = 0;
        while let Some(pos) = memchr::memchr(b'\n', &self.buf[start..]) {
            let mut line = &self.buf[start..start + pos];
            start += pos + 1;
            if line.last() == Some(&b'\r') {
                line = &line[..line.len() - 1];
            }
            if line.is_empty() {
                if !self.data.is_empty() || self.event.is_some() {
                    out.push(SseEvent {
                        event: self.event.take(),
                        data: std::mem::take(&mut self.data),
                    });
                }
                continue;
            }
            // The field's name is short: found before the value is read as text.
            let (field, value) = match line.iter().position(|&b| b == b':') {
                Some(colon) => {
                    let value = &line[colon + 1..];
                    (&line[..colon], value.strip_prefix(b" ").unwrap_or(value))
                }
                None => (line, &b""[..]),
            };
            // Checked as a whole first: most values are valid UTF-8 (mostly ASCII), which this
            // checks words at a time, where the lossy reading goes byte by byte.
            let text = || match std::str::from_utf8(value) {
                Ok(text) => std::borrow::Cow::Borrowed(text),
                Err(_) => String::from_utf8_lossy(value),
            };
            match field {
                b"data" => {
                    if !self.data.is_empty() {
                        self.data.push('\n');
                    }
                    self.data.push_str(&text());
                }
                b"event" => self.event = Some(text().into_owned()),
                _ => {}
            }
        }
        self.buf.drain(..start);
        if self.buf.len() > self.limit || self.data.len() > self.limit {
            // A line or an event without end: drop it rather than grow without bound.
            tracing::warn!("an event-stream line over the limit was dropped");
            self.buf.clear();
            self.data.clear();
            self.event = None;
        }
        out
    }
}

/// Every event of a whole event-stream body (a last event without its blank line included).
pub fn sse_events(body: &str) -> Vec<SseEvent> {
    let mut parser = SseParser::default();
    let mut events = parser.feed(body.as_bytes());
    events.extend(parser.feed(b"\n\n"));
    events
}

/// Turns one streamed event into pieces.
pub fn parse_event(provider: Provider, ev: &SseEvent, out: &mut Vec<Piece>) {
    match provider {
        Provider::OpenAi | Provider::OpenAiCompatible => {
            openai_chunk(&ev.data, out);
        }
        Provider::Anthropic => {
            let Ok(v) = serde_json::from_str::<Value>(&ev.data) else {
                return;
            };
            match v["type"].as_str().unwrap_or_default() {
                "message_start" => {
                    let u = &v["message"]["usage"];
                    if let Some(input) = u["input_tokens"].as_i64() {
                        let cache_read = u["cache_read_input_tokens"].as_i64().unwrap_or(0);
                        let cache_write = u["cache_creation_input_tokens"].as_i64().unwrap_or(0);
                        out.push(Piece::Usage(Usage {
                            prompt_tokens: input + cache_read + cache_write,
                            completion_tokens: u["output_tokens"].as_i64().unwrap_or(0),
                            cached_tokens: cache_read,
                            estimated: false,
                        }));
                    }
                }
                "content_block_delta" => {
                    if let Some(text) = v["delta"]["text"].as_str() {
                        if !text.is_empty() {
                            out.push(Piece::Text(text.to_string()));
                        }
                    }
                    if let Some(json) = v["delta"]["partial_json"].as_str() {
                        out.push(Piece::Unseen(json.to_string()));
                    }
                }
                "message_delta" => {
                    if let Some(reason) = v["delta"]["stop_reason"].as_str() {
                        out.push(Piece::Finish(anthropic_stop(reason)));
                    }
                    if let Some(output) = v["usage"]["output_tokens"].as_i64() {
                        // Completion tokens only: merged with message_start's prompt tokens.
                        out.push(Piece::Usage(Usage {
                            prompt_tokens: -1,
                            completion_tokens: output,
                            cached_tokens: -1,
                            estimated: false,
                        }));
                    }
                }
                "message_stop" => out.push(Piece::Done),
                "error" => out.push(Piece::Error(
                    v["error"]["message"]
                        .as_str()
                        .unwrap_or("stream error")
                        .to_string(),
                )),
                _ => {}
            }
        }
    }
}

/// The usage of a Responses API reply (`input_tokens`, `output_tokens`, cached input in
/// `input_tokens_details`).
fn responses_usage(v: &Value) -> Option<Usage> {
    Some(Usage {
        prompt_tokens: v["input_tokens"].as_i64()?,
        completion_tokens: v["output_tokens"].as_i64().unwrap_or(0),
        cached_tokens: v["input_tokens_details"]["cached_tokens"]
            .as_i64()
            .unwrap_or(0),
        estimated: false,
    })
}

/// Why a Responses API reply stopped, in OpenAI's chat words.
fn responses_finish(response: &Value) -> String {
    match response["status"].as_str() {
        Some("incomplete") => match response["incomplete_details"]["reason"].as_str() {
            Some("content_filter") => "content_filter",
            _ => "length",
        },
        _ if response["output"]
            .as_array()
            .is_some_and(|o| o.iter().any(|i| i["type"] == "function_call")) =>
        {
            "tool_calls"
        }
        _ => "stop",
    }
    .to_string()
}

/// Reads a Responses API reply (`object: "response"`): its message text, why it stopped and
/// its usage; `None` when it is not one. Text the client does not see as the reply (a
/// function call's arguments, a refusal, a reasoning summary) is counted with it when the
/// provider reports no usage.
pub fn parse_responses_reply(body: &Value) -> Option<Reply> {
    let output = body["output"].as_array()?;
    let mut text = String::new();
    for item in output {
        for part in item["content"].as_array().into_iter().flatten() {
            for key in ["text", "refusal"] {
                if let Some(t) = part[key].as_str() {
                    text.push_str(t);
                }
            }
        }
        for summary in item["summary"].as_array().into_iter().flatten() {
            text.push_str(summary["text"].as_str().unwrap_or_default());
        }
        if let Some(arguments) = item["arguments"].as_str().or(item["input"].as_str()) {
            text.push_str(arguments);
        }
    }
    Some(Reply {
        text,
        finish_reason: responses_finish(body),
        usage: responses_usage(&body["usage"]),
    })
}

/// Turns one event of a Responses API stream into pieces: text deltas, other generated text
/// (function call arguments, refusals, reasoning summaries) as [`Piece::Unseen`], and the
/// ending event (`response.completed`, `response.incomplete`, `response.failed`) as the usage
/// it carries, the finish, and the end. An `error` event or a failed response is an error.
///
/// Most events are read in one pass over their text ([`skim::responses_event`]), the ending
/// event's response too ([`ending_in_one_pass`]); an event that does not read that way (a
/// field given twice, a `\u` escape, ...), a failed response and one whose output may hold a
/// function call are read as a tree.
pub fn parse_responses_event(ev: &SseEvent, out: &mut Vec<Piece>) {
    let Some(f) = skim::responses_event(&ev.data) else {
        return responses_event_by_tree(ev, out);
    };
    let kind = json_str(f.kind);
    let kind = kind.as_deref().or(ev.event.as_deref()).unwrap_or_default();
    responses_pieces(
        kind,
        || json_str(f.delta),
        |failed| {
            f.response
                .filter(|_| !failed)
                .and_then(|text| ending_in_one_pass(text, f.ending))
                .unwrap_or_else(|| ending_of(&json_tree(f.response), failed))
        },
        || {
            json_str(f.message)
                .map(Cow::into_owned)
                .or_else(|| json_tree(f.error)["message"].as_str().map(str::to_string))
        },
        out,
    );
}

/// [`parse_responses_event`] reading the event as a tree.
fn responses_event_by_tree(ev: &SseEvent, out: &mut Vec<Piece>) {
    let Ok(v) = serde_json::from_str::<Value>(&ev.data) else {
        return;
    };
    let kind = v["type"]
        .as_str()
        .or(ev.event.as_deref())
        .unwrap_or_default();
    responses_pieces(
        kind,
        || v["delta"].as_str().map(Cow::Borrowed),
        |failed| ending_of(&v["response"], failed),
        || {
            v["message"]
                .as_str()
                .or(v["error"]["message"].as_str())
                .map(str::to_string)
        },
        out,
    );
}

/// A JSON text's string (unescaped); `None` when absent or not a string.
fn json_str(text: Option<&str>) -> Option<Cow<'_, str>> {
    let text = text?;
    let inner = text.strip_prefix('"')?.strip_suffix('"')?;
    if inner.contains('\\') {
        serde_json::from_str::<String>(text).ok().map(Cow::Owned)
    } else {
        Some(Cow::Borrowed(inner))
    }
}

/// A JSON text as a tree; `Null` when absent.
fn json_tree(text: Option<&str>) -> Value {
    text.and_then(|t| serde_json::from_str(t).ok())
        .unwrap_or(Value::Null)
}

/// What an ending event's response says: its usage, and why it stopped (in OpenAI's chat
/// words) or, when it failed, its error's message.
fn ending_of(response: &Value, failed: bool) -> (Option<Usage>, String) {
    let said = if failed {
        response["error"]["message"]
            .as_str()
            .unwrap_or("the response failed")
            .to_string()
    } else {
        responses_finish(response)
    };
    (responses_usage(&response["usage"]), said)
}

/// [`ending_of`] a completed or incomplete response `text` read in one pass over it (`ending`,
/// made as the event was read: [`skim::EventFields::ending`]), where that reads it as the
/// tree reads it; `None` leaves it to the tree. Its output is not read: a response whose text
/// has no `"function_call"` string (with `\u` escapes refused, nothing else spells it) has no
/// function call in its output.
fn ending_in_one_pass<'a>(
    text: &'a str,
    ending: Option<skim::Ending<'a>>,
) -> Option<(Option<Usage>, String)> {
    static CALL: std::sync::LazyLock<memchr::memmem::Finder<'static>> =
        std::sync::LazyLock::new(|| memchr::memmem::Finder::new(b"\"function_call\""));
    let ending = ending?;
    if CALL.find(text.as_bytes()).is_some() {
        return None;
    }
    let finish = match json_str(ending.status).as_deref() {
        Some("incomplete") => match json_tree(ending.incomplete)["reason"].as_str() {
            Some("content_filter") => "content_filter",
            _ => "length",
        },
        _ => "stop",
    };
    Some((ending.usage, finish.to_string()))
}

/// The pieces of a Responses API event of type `kind`, whose fields are read only as the type
/// needs them: `delta` (a string), the ending event's response (its usage and what it says,
/// given whether it failed: [`ending_of`]), and the message of an `error` event.
fn responses_pieces<'a>(
    kind: &str,
    delta: impl FnOnce() -> Option<Cow<'a, str>>,
    ending: impl FnOnce(bool) -> (Option<Usage>, String),
    message: impl FnOnce() -> Option<String>,
    out: &mut Vec<Piece>,
) {
    match kind {
        "response.output_text.delta" => {
            if let Some(text) = delta().filter(|t| !t.is_empty()) {
                out.push(Piece::Text(text.into_owned()));
            }
        }
        "response.function_call_arguments.delta"
        | "response.custom_tool_call_input.delta"
        | "response.refusal.delta"
        | "response.reasoning_summary_text.delta"
        | "response.reasoning_text.delta" => {
            if let Some(text) = delta() {
                out.push(Piece::Unseen(text.into_owned()));
            }
        }
        "response.completed" | "response.incomplete" | "response.failed" => {
            let failed = kind == "response.failed";
            let (usage, said) = ending(failed);
            if let Some(usage) = usage {
                out.push(Piece::Usage(usage));
            }
            if failed {
                out.push(Piece::Error(said));
            } else {
                out.push(Piece::Finish(said));
                out.push(Piece::Done);
            }
        }
        "error" => out.push(Piece::Error(
            message().unwrap_or_else(|| "stream error".to_string()),
        )),
        _ => {}
    }
}

/// Merges a usage piece into what is known so far (`-1` fields leave a value unchanged).
pub fn merge_usage(known: Option<Usage>, new: Usage) -> Usage {
    let base = known.unwrap_or_default();
    Usage {
        prompt_tokens: if new.prompt_tokens >= 0 {
            new.prompt_tokens
        } else {
            base.prompt_tokens
        },
        completion_tokens: if new.completion_tokens >= 0 {
            new.completion_tokens
        } else {
            base.completion_tokens
        },
        cached_tokens: if new.cached_tokens >= 0 {
            new.cached_tokens
        } else {
            base.cached_tokens
        },
        estimated: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_goes_in_its_providers_header_marked_sensitive() {
        let mut headers = http::HeaderMap::new();
        put_key(&mut headers, crate::Provider::OpenAi, "sk-1").unwrap();
        assert_eq!(headers["authorization"], "Bearer sk-1");
        assert!(headers["authorization"].is_sensitive());
        let mut headers = http::HeaderMap::new();
        put_key(&mut headers, crate::Provider::Anthropic, "sk-ant-1").unwrap();
        assert_eq!(headers["x-api-key"], "sk-ant-1");
        assert!(headers["x-api-key"].is_sensitive());
        assert_eq!(headers["anthropic-version"], ANTHROPIC_VERSION);
        assert!(headers.get("authorization").is_none());
        // A key no header can carry is refused, not sent cut short.
        let mut headers = http::HeaderMap::new();
        assert!(put_key(&mut headers, crate::Provider::OpenAiCompatible, "sk\n1").is_err());
        assert!(headers.is_empty());
    }

    /// A forwarded reply is read for its usage alone when it has one; one without usage, or
    /// anything that is not a reply, is told apart from it.
    #[test]
    fn a_replys_usage_is_read_without_its_text() {
        let reply = br#"{"id":"c1","object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":"Hi \"there\"","tool_calls":[{"id":"t","type":"function","function":{"name":"f","arguments":"{}"}}]},"finish_reason":"stop"}],"usage":{"prompt_tokens":12,"completion_tokens":5,"total_tokens":17,"prompt_tokens_details":{"cached_tokens":4}},"error":null}"#;
        let usage = openai_reply_usage(reply).unwrap().unwrap();
        assert_eq!(
            (
                usage.prompt_tokens,
                usage.completion_tokens,
                usage.cached_tokens
            ),
            (12, 5, 4)
        );
        assert!(!usage.estimated);
        // The same as reading the whole reply.
        assert_eq!(read_openai_reply(reply).unwrap().0.usage, Some(usage));
        // No usage: the text must be counted.
        let bare = br#"{"choices":[{"message":{"content":"Hi"},"finish_reason":"stop"}]}"#;
        assert_eq!(openai_reply_usage(bare), Some(None));
        assert_eq!(read_openai_reply(bare).unwrap().0.text, "Hi");
        // Not a reply.
        for body in [
            &br#"{"error":{"message":"no"},"choices":[{}]}"#[..],
            br#"{"choices":[],"usage":{"prompt_tokens":1}}"#,
            br#"{"usage":{"prompt_tokens":1}}"#,
            b"[1]",
            b"{\"choices\":[{}]",
        ] {
            assert_eq!(
                openai_reply_usage(body),
                None,
                "{}",
                String::from_utf8_lossy(body)
            );
            assert!(read_openai_reply(body).is_none());
        }
    }

    #[test]
    fn sse_events_split_across_chunks() {
        let mut p = SseParser::default();
        assert!(p.feed(b"event: message_start\r\ndata: {\"a\"").is_empty());
        let evs = p.feed(b":1}\r\n\r\ndata: [DONE]\n\n");
        assert_eq!(
            evs,
            vec![
                SseEvent {
                    event: Some("message_start".into()),
                    data: "{\"a\":1}".into()
                },
                SseEvent {
                    event: None,
                    data: "[DONE]".into()
                }
            ]
        );
    }

    /// The keys searched for at once are found wherever they are: the same answer as a look
    /// at every byte, whatever the offsets and neighbours.
    #[test]
    fn a_chunks_keys_are_all_found() {
        let by_bytes = |data: &str| {
            let d = data.as_bytes();
            d.starts_with(b"{")
                && (0..d.len()).all(|at| {
                    PLAIN_KEYS
                        .iter()
                        .enumerate()
                        .all(|(key, k)| !d[at..].starts_with(k.as_bytes()) || plain_at(d, at, key))
                })
        };
        let pieces = [
            "\"usage\":{}",
            "\"usage\":null",
            "\"error\"",
            "\"finish_reason\":null",
            "\"finish_reason\":\"stop\"",
            "#usage\":{}",
            "¢error\"",
            "\"\"",
            "ab",
            "x",
            "finish_reason",
            "{\"id\":\"chatcmpl-0123456789\",\"object\":\"chunk\"}",
        ];
        let mut checked = 0;
        for a in pieces {
            for b in pieces {
                for pad in 0..9 {
                    let data = format!("{{{}{a}{}{b}", " ".repeat(pad), "#".repeat(pad % 3));
                    assert_eq!(plain_openai_delta(&data), by_bytes(&data), "{data}");
                    assert_eq!(plain_keys(data.as_bytes(), None), by_bytes(&data), "{data}");
                    checked += usize::from(!by_bytes(&data));
                }
            }
        }
        assert!(checked > 100);
    }

    /// Only chunks that can carry nothing but generated text are forwarded unread: every
    /// chunk with a usage object, an error, a finish reason, or the end marker is read, and a
    /// plain chunk read later gives what reading it at once would have.
    #[test]
    fn only_plain_text_chunks_are_left_unread() {
        let plain = [
            r#"{"id":"c","choices":[{"index":0,"delta":{"content":"Hi"},"finish_reason":null}]}"#,
            r#"{"id":"c","choices":[{"index":0,"delta":{"content":"an \"error\" here"},"finish_reason":null}],"usage":null}"#,
            r#"{"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{\"a\""}}]},"finish_reason":null}]}"#,
            r#"{"choices":[{"index":0,"delta":{"role":"usage","content":"usage: \"usage\":{"},"finish_reason" : null}],"usage" :null}"#,
        ];
        for data in plain {
            assert!(plain_openai_delta(data), "{data}");
        }
        let read = [
            "[DONE]",
            r#"{"id":"c","choices":[],"usage":{"prompt_tokens":3,"completion_tokens":2}}"#,
            r#"{"id":"c","choices":[], "usage": {"prompt_tokens":3,"completion_tokens":2}}"#,
            r#"{"error":{"message":"overloaded"}}"#,
            r#"{"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}"#,
            r#"{"choices":[{"index":0,"delta":{},"finish_reason": "stop"}]}"#,
            r#"{"choices":[{"index":0,"delta":{},"finish_reason":null},{"index":1,"delta":{},"finish_reason":"length"}]}"#,
            r#"{"choices":[{"index":0,"delta":{"content":"finish_reason"},"finish_reason":null}]}"#,
            r#"{"choices":[],"usage" : {"prompt_tokens":3}}"#,
            r#"{"choices":[],"usage":[]}"#,
            r#"{"choices":[{"index":0,"delta":{},"finish_reason"
                : "stop"}]}"#,
            r#"{"type":"error","choices":[]}"#,
            r#"{"error" : null}"#,
        ];
        for data in read {
            assert!(!plain_openai_delta(data), "{data}");
        }
        let mut out = Vec::new();
        openai_chunk(plain[1], &mut out);
        assert!(matches!(&out[..], [Piece::Text(t)] if t == "an \"error\" here"));

        // Whole events of plain chunks are forwarded as they came; any other event among them,
        // or anything the parser would read otherwise, sends the piece to the parser.
        let searcher = aho_corasick::packed::Searcher::new(PLAIN_KEYS);
        let frame_ok = |bytes: &[u8]| {
            let ok = plain_openai_frame(bytes);
            assert_eq!(
                ok,
                plain_frame(bytes, None),
                "{:?}",
                String::from_utf8_lossy(bytes)
            );
            assert_eq!(ok, plain_frame(bytes, searcher.as_ref()));
            ok
        };
        let events =
            |datas: &[&str]| -> String { datas.iter().map(|d| format!("data: {d}\n\n")).collect() };
        let whole = events(&plain);
        assert!(frame_ok(whole.as_bytes()));
        for other in read {
            for at in 0..=plain.len() {
                let mut datas = plain.to_vec();
                datas.insert(at, other);
                assert!(!frame_ok(events(&datas).as_bytes()), "{other}");
            }
        }
        for other in [
            format!("data:{}\n\n", plain[0]),
            format!("data: {}\r\n\r\n", plain[0]),
            format!("event: x\ndata: {}\n\n", plain[0]),
            format!(": keep-alive\n\ndata: {}\n\n", plain[0]),
            format!("data: {}\ndata: {}\n\n", plain[0], plain[1]),
            format!("id: 1\ndata: {}\n\n", plain[0]),
            String::new(),
        ] {
            assert!(!frame_ok(other.as_bytes()), "{other:?}");
        }
        // Cut anywhere, the piece is whole events only where an event ends.
        let two = events(&plain[..2]);
        let first_end = events(&plain[..1]).len();
        for cut in 0..=two.len() {
            let whole_events = cut == first_end || cut == two.len();
            assert_eq!(
                frame_ok(&two.as_bytes()[..cut]),
                whole_events,
                "cut at {cut}"
            );
        }
        // The events read later are the events that came.
        assert_eq!(
            sse_events(&whole)
                .into_iter()
                .map(|e| e.data)
                .collect::<Vec<_>>(),
            plain
        );
    }

    #[test]
    fn anthropic_usage_merges_across_events() {
        let mut out = Vec::new();
        let ev = |data: &str| SseEvent {
            event: None,
            data: data.into(),
        };
        parse_event(
            Provider::Anthropic,
            &ev(
                r#"{"type":"message_start","message":{"usage":{"input_tokens":12,"output_tokens":1}}}"#,
            ),
            &mut out,
        );
        parse_event(
            Provider::Anthropic,
            &ev(
                r#"{"type":"message_delta","delta":{"stop_reason":"max_tokens"},"usage":{"output_tokens":7}}"#,
            ),
            &mut out,
        );
        let mut usage = None;
        for p in &out {
            if let Piece::Usage(u) = p {
                usage = Some(merge_usage(usage, *u));
            }
        }
        let u = usage.unwrap();
        assert_eq!((u.prompt_tokens, u.completion_tokens), (12, 7));
        assert!(out.contains(&Piece::Finish("length".into())));
    }

    proptest::proptest! {
        /// Whatever a provider streams, in whatever pieces: no panic, and nothing kept without
        /// bound.
        #[test]
        fn any_stream_is_read_without_panic(
            chunks in proptest::collection::vec(proptest::collection::vec(proptest::num::u8::ANY, 0..200), 0..20),
            anthropic in proptest::bool::ANY,
        ) {
            let provider = if anthropic { Provider::Anthropic } else { Provider::OpenAi };
            let mut parser = SseParser::default();
            let mut pieces = Vec::new();
            for chunk in &chunks {
                for ev in parser.feed(chunk) {
                    parse_event(provider, &ev, &mut pieces);
                }
            }
            proptest::prop_assert!(parser.buf.len() <= LINE_LIMIT);
        }

        #[test]
        fn any_event_data_is_read_without_panic(data in ".{0,300}", anthropic in proptest::bool::ANY) {
            let provider = if anthropic { Provider::Anthropic } else { Provider::OpenAi };
            let mut pieces = Vec::new();
            parse_event(provider, &SseEvent { event: None, data: data.clone() }, &mut pieces);
            let json: serde_json::Value = serde_json::from_str(&data).unwrap_or_default();
            let _ = parse_reply(provider, &json);
        }
    }

    #[test]
    fn a_line_without_end_is_dropped_at_the_limit() {
        let mut parser = SseParser::default();
        let long = vec![b'x'; LINE_LIMIT + 10];
        assert!(parser.feed(b"data: ").is_empty());
        assert!(parser.feed(&long).is_empty());
        assert!(parser.buf.is_empty());
        // The stream goes on after it.
        let events = parser.feed(b"\n\ndata: next\n\n");
        assert_eq!(events.last().map(|e| e.data.as_str()), Some("next"));
    }

    /// Events of a Responses stream, each changed in one byte (replaced by each of a set of
    /// bytes that matter to JSON, or removed) and cut at every length: read without a tree,
    /// each gives the pieces the tree gives.
    #[test]
    fn responses_events_read_without_a_tree_give_what_the_tree_gives() {
        let events = [
            r#"{"type":"response.created","sequence_number":0,"response":{"id":"resp_1","status":"in_progress","error":null,"output":[],"usage":null}}"#,
            r#"{"type":"response.output_text.delta","item_id":"msg_1","delta":"Hi \"there\"","sequence_number":4}"#,
            r#"{"type":"response.function_call_arguments.delta","delta":"{\"a\":1}"}"#,
            r#"{"type":"response.completed","response":{"status":"completed","output":[{"type":"function_call"}],"usage":{"input_tokens":3,"input_tokens_details":{"cached_tokens":1},"output_tokens":2}}}"#,
            ENDING,
            r#"{"type":"response.incomplete","response":{"status":"incomplete","error":null,"incomplete_details":{"reason":"max_output_tokens"},"output":[],"usage":null}}"#,
            r#"{"type":"response.incomplete","response":{"status":"incomplete","incomplete_details":{"reason":"content_filter"},"usage":{"input_tokens":3}}}"#,
            r#"{"type":"response.failed","response":{"error":{"message":"bad"}}}"#,
            r#"{"type":"error","message":7,"error":{"message":"overloaded"}}"#,
            r#"{"delta":"no type","type":"response.refusal.delta"}"#,
        ];
        for data in events {
            // Each read in one pass, as it is.
            assert!(skim::responses_event(data).is_some(), "{data}");
        }
        // An ending's response too, in the same pass, unless it may hold a function call.
        let one_pass = |data: &str| {
            let f = skim::responses_event(data).unwrap();
            ending_in_one_pass(f.response.unwrap(), f.ending).is_some()
        };
        assert!(one_pass(ENDING));
        assert!(one_pass(events[5]));
        assert!(!one_pass(events[3]));
        let swaps = b"\"\\{}[],: \n0123456789-+.eEntfrul\x01x";
        let (mut checked, mut passed) = (0, 0);
        let mut check = |data: &str, event: Option<&str>| {
            let ev = SseEvent {
                event: event.map(str::to_string),
                data: data.to_string(),
            };
            let (mut fast, mut tree) = (Vec::new(), Vec::new());
            parse_responses_event(&ev, &mut fast);
            responses_event_by_tree(&ev, &mut tree);
            assert_eq!(fast, tree, "{data}");
            // One that may pass unread has nothing but text to give, named or not.
            let unnamed = SseEvent {
                event: None,
                data: data.to_string(),
            };
            for ev in [&ev, &unnamed] {
                if passing_responses_event(ev) {
                    passed += 1;
                    let mut tree = Vec::new();
                    responses_event_by_tree(ev, &mut tree);
                    assert!(
                        tree.iter()
                            .all(|p| matches!(p, Piece::Text(_) | Piece::Unseen(_))),
                        "{data}: {tree:?}"
                    );
                }
            }
            checked += usize::from(skim::responses_event(data).is_some());
        };
        for data in events {
            check(data, None);
            check(data, Some("response.output_text.delta"));
            let bytes = data.as_bytes();
            for at in 0..bytes.len() {
                let mut changed = bytes.to_vec();
                for &swap in swaps {
                    changed[at] = swap;
                    if let Ok(text) = std::str::from_utf8(&changed) {
                        check(text, Some("error"));
                    }
                }
                changed.remove(at);
                if let Ok(text) = std::str::from_utf8(&changed) {
                    check(text, None);
                }
                check(&data[..at], None);
            }
        }
        // The fields given twice, an array, \u escapes, exponents: read as a tree.
        for data in [
            r#"{"type":"response.output_text.delta","delta":"a","delta":"b"}"#,
            r#"["response.output_text.delta","a"]"#,
            r#" {"type":"response.output_text.delta","type":"error","message":"m"}"#,
            r#"{"type":"response.output_text.delta","delta":"\ud83d\ude00"}"#,
            r#"{"type":"response.output_text.delta","delta":"\ud83d"}"#,
            r#"{"type":"response.output_text.delta","delta":"a","n":1e999}"#,
            r#"{"typ\u0065":"error","message":"m"}"#,
        ] {
            assert!(skim::responses_event(data).is_none(), "{data}");
            check(data, None);
        }
        // Most changes keep an event readable in one pass (a changed letter, a digit), and
        // many leave it passing unread.
        assert!(
            checked > 10_000,
            "only {checked} changed events read in one pass"
        );
        assert!(passed > 5_000, "only {passed} changed events pass unread");
    }

    /// A `response.completed` event as OpenAI sends it (the response whole, its text with
    /// escapes).
    const ENDING: &str = r#"{"type":"response.completed","sequence_number":23,"response":{"id":"resp_1","object":"response","created_at":1765000000,"status":"completed","background":false,"error":null,"incomplete_details":null,"instructions":"Be \"brief\".\n","max_output_tokens":64,"output":[{"type":"message","id":"msg_1","status":"completed","role":"assistant","content":[{"type":"output_text","text":"Hi","annotations":[],"logprobs":[]}]}],"temperature":1.0,"top_p":1.0,"usage":{"input_tokens":3,"input_tokens_details":{"cached_tokens":0},"output_tokens":2,"output_tokens_details":{"reasoning_tokens":0},"total_tokens":5},"metadata":{}}}"#;

    /// Which events pass unread: the many that carry text or nothing the gateway reads, not
    /// the endings and errors, by their data or their name, however spelled.
    #[test]
    fn responses_events_that_pass_unread_are_none_the_gateway_reads() {
        let passes = |event: Option<&str>, data: &str| {
            passing_responses_event(&SseEvent {
                event: event.map(str::to_string),
                data: data.to_string(),
            })
        };
        for (event, data) in [
            (
                "response.output_text.delta",
                r#"{"type":"response.output_text.delta","item_id":"msg_1","output_index":0,"content_index":0,"delta":" word","logprobs":[]}"#,
            ),
            (
                "response.created",
                r#"{"type":"response.created","response":{"status":"in_progress","error":null,"output":[],"usage":null}}"#,
            ),
            (
                "response.output_text.done",
                r#"{"type":"response.output_text.done","text":"An error: \"error\" and response.done"}"#,
            ),
            (
                "response.output_item.added",
                r#"{"type":"response.output_item.added","item":{"type":"message", "error" : null}}"#,
            ),
        ] {
            assert!(passes(Some(event), data), "{data}");
            assert!(passes(None, data), "{data}");
        }
        for (event, data) in [
            (None, ENDING),
            (None, r#"{"type":"response.incomplete"}"#),
            (None, r#"{"type":"response.failed"}"#),
            (None, r#"{"type":"error","message":"overloaded"}"#),
            (None, r#"{"type" : "error" }"#),
            (None, r#"{"message":"m","type":"error"}"#),
            (None, r#"{"type":"error"}"#),
            (
                None,
                r#"{"type":"response.output_text.delta","delta":"C:\users"}"#,
            ),
            (Some("error"), r#"{"message":"overloaded"}"#),
            (Some("response.completed"), r#"{"response":{}}"#),
        ] {
            assert!(!passes(event, data), "{data}");
        }
    }

    #[test]
    fn responses_replies_and_events_give_their_usage_text_and_end() {
        let reply = serde_json::json!({
            "object": "response", "status": "incomplete",
            "incomplete_details": { "reason": "max_output_tokens" },
            "output": [
                { "type": "reasoning", "summary": [{ "type": "summary_text", "text": "thinking " }] },
                { "type": "message", "content": [{ "type": "output_text", "text": "Hello" }] },
                { "type": "function_call", "name": "f", "arguments": "{}" },
            ],
            "usage": { "input_tokens": 12, "input_tokens_details": { "cached_tokens": 4 }, "output_tokens": 7 },
        });
        let read = parse_responses_reply(&reply).unwrap();
        assert_eq!(read.text, "thinking Hello{}");
        assert_eq!(read.finish_reason, "length");
        assert_eq!(
            read.usage,
            Some(Usage {
                prompt_tokens: 12,
                completion_tokens: 7,
                cached_tokens: 4,
                estimated: false
            })
        );
        assert!(parse_responses_reply(&serde_json::json!({ "choices": [] })).is_none());

        let mut pieces = Vec::new();
        for body in [
            "event: response.created\ndata: {\"type\":\"response.created\",\"response\":{\"usage\":null}}\n\n",
            "event: response.output_text.delta\ndata: {\"type\":\"response.output_text.delta\",\"delta\":\"Hi\"}\n\n",
            "event: response.function_call_arguments.delta\ndata: {\"type\":\"response.function_call_arguments.delta\",\"delta\":\"{}\"}\n\n",
            "event: response.completed\ndata: {\"type\":\"response.completed\",\"response\":{\"status\":\"completed\",\"output\":[],\"usage\":{\"input_tokens\":3,\"output_tokens\":2}}}\n\n",
        ] {
            for ev in sse_events(body) {
                parse_responses_event(&ev, &mut pieces);
            }
        }
        assert_eq!(
            pieces,
            vec![
                Piece::Text("Hi".into()),
                Piece::Unseen("{}".into()),
                Piece::Usage(Usage {
                    prompt_tokens: 3,
                    completion_tokens: 2,
                    cached_tokens: 0,
                    estimated: false
                }),
                Piece::Finish("stop".into()),
                Piece::Done,
            ]
        );
        let mut pieces = Vec::new();
        for ev in sse_events("event: error\ndata: {\"type\":\"error\",\"message\":\"overloaded\"}\n\nevent: response.failed\ndata: {\"type\":\"response.failed\",\"response\":{\"error\":{\"message\":\"bad\"}}}\n\n") {
            parse_responses_event(&ev, &mut pieces);
        }
        assert_eq!(
            pieces,
            vec![
                Piece::Error("overloaded".into()),
                Piece::Error("bad".into())
            ]
        );
    }
}

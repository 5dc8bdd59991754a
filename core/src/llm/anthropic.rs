//! OpenAI chat completions spoken to Claude: a chat-completions body translated into Anthropic
//! Messages, and Anthropic's answer (whole or streamed) translated back, so the same OpenAI
//! client code works against `claude-*` models. Translated: system and developer messages,
//! text and image parts (base64 data URLs and web addresses), PDF files, tools and tool choice
//! (`tool_calls` <-> `tool_use`, `tool` messages <-> `tool_result`), parallel tool calls, stop
//! sequences, `temperature` (clamped to Anthropic's 0..1), `top_p`, `user`, stop reasons, usage,
//! and streamed text and tool-call deltas. JSON mode asks for JSON in the instructions; a JSON
//! schema becomes a tool Claude must call, whose input comes back as the reply's text (what
//! Anthropic documents for structured output through tools). What Claude cannot do (audio,
//! several choices, log probabilities) is refused with a message naming the field.

use std::collections::HashMap;

use serde_json::{json, Map, Value};

use super::body::Body;
use super::wire::sse_json as sse;
use super::Usage;

/// The tool a JSON schema becomes when none is named.
const JSON_TOOL: &str = "json_output";

/// How the translated request expects its reply: which tool (if any) stands for a JSON schema.
#[derive(Clone, Debug, Default)]
pub struct Translation {
    /// The tool whose input is the reply's text (from `response_format: json_schema`).
    pub schema_tool: Option<String>,
}

fn text_of(content: &Value, what: &str) -> Result<String, String> {
    match content {
        Value::Null => Ok(String::new()),
        Value::String(s) => Ok(s.clone()),
        Value::Array(parts) => {
            let mut out = Vec::new();
            for p in parts {
                match (p["type"].as_str(), p["text"].as_str()) {
                    (Some("text"), Some(t)) => out.push(t),
                    _ => return Err(format!("{what}: only text parts are allowed here.")),
                }
            }
            Ok(out.join("\n"))
        }
        _ => Err(format!("{what} must be a string or an array of parts.")),
    }
}

/// An image or file part's `data:` URL split into its media type and base64 data.
fn data_url(url: &str) -> Option<(&str, &str)> {
    let rest = url.strip_prefix("data:")?;
    let (meta, data) = rest.split_once(',')?;
    let media = meta.strip_suffix(";base64")?;
    Some((media, data))
}

fn user_content(content: &Value, i: usize) -> Result<Value, String> {
    let Value::Array(parts) = content else {
        return Ok(Value::String(text_of(
            content,
            &format!("messages[{i}].content"),
        )?));
    };
    let mut blocks = Vec::new();
    for (j, p) in parts.iter().enumerate() {
        let at = format!("messages[{i}].content[{j}]");
        match p["type"].as_str() {
            Some("text") => blocks
                .push(json!({ "type": "text", "text": p["text"].as_str().unwrap_or_default() })),
            Some("image_url") => {
                let url = p["image_url"]["url"]
                    .as_str()
                    .or_else(|| p["image_url"].as_str())
                    .ok_or_else(|| {
                        format!("{at}.image_url.url: give the image's address or data URL.")
                    })?;
                let source = match data_url(url) {
                    Some((media, data)) => {
                        json!({ "type": "base64", "media_type": media, "data": data })
                    }
                    None if url.starts_with("https://") || url.starts_with("http://") => {
                        json!({ "type": "url", "url": url })
                    }
                    None => {
                        return Err(format!(
                            "{at}.image_url.url must be a web address or a base64 data URL."
                        ))
                    }
                };
                blocks.push(json!({ "type": "image", "source": source }));
            }
            Some("file") => {
                let data = p["file"]["file_data"].as_str().and_then(data_url);
                match data {
                    Some((media @ "application/pdf", data)) => blocks.push(json!({
                        "type": "document",
                        "source": { "type": "base64", "media_type": media, "data": data },
                    })),
                    _ => return Err(format!("{at}: Claude models read files given as PDF data (file.file_data as a data:application/pdf;base64 URL).")),
                }
            }
            Some("input_audio") => {
                return Err(format!("{at}: Claude models do not take audio input."))
            }
            other => {
                return Err(format!(
                    "{at}: the part type {:?} is not supported for Claude models.",
                    other.unwrap_or("untyped")
                ))
            }
        }
    }
    Ok(Value::Array(blocks))
}

/// Appends a message, merging it into the previous one when both are the same role (Anthropic
/// alternates user and assistant turns).
fn push(messages: &mut Vec<Value>, role: &str, content: Value) {
    let blocks = |c: Value| match c {
        Value::String(s) if s.is_empty() => Vec::new(),
        Value::String(s) => vec![json!({ "type": "text", "text": s })],
        Value::Array(a) => a,
        other => vec![other],
    };
    if let Some(last) = messages.last_mut() {
        if last["role"] == role {
            let mut merged = blocks(last["content"].take());
            merged.extend(blocks(content));
            last["content"] = Value::Array(merged);
            return;
        }
    }
    messages.push(json!({ "role": role, "content": content }));
}

/// Translates an OpenAI chat-completions body into an Anthropic Messages body for `model`,
/// with `max_tokens` as the reply limit and `stream` as given.
pub fn request(
    body: &Body,
    model: &str,
    max_tokens: u32,
    stream: bool,
) -> Result<(Vec<u8>, Translation), String> {
    let get = |key: &str| -> Value {
        body.raw(key)
            .and_then(|r| serde_json::from_str(r).ok())
            .unwrap_or(Value::Null)
    };
    if get("n").as_u64().is_some_and(|n| n > 1) {
        return Err("n: Claude models give one choice per request.".into());
    }
    if get("logprobs").as_bool() == Some(true) {
        return Err("logprobs: Claude models do not report log probabilities.".into());
    }
    if !get("functions").is_null() {
        return Err("functions: use tools, which Claude models support.".into());
    }
    let Value::Array(list) = get("messages") else {
        return Err("messages must be an array of messages.".into());
    };
    let mut system = Vec::new();
    let mut messages: Vec<Value> = Vec::new();
    for (i, m) in list.iter().enumerate() {
        match m["role"].as_str().unwrap_or_default() {
            "system" | "developer" => {
                system.push(text_of(&m["content"], &format!("messages[{i}].content"))?)
            }
            "user" => push(&mut messages, "user", user_content(&m["content"], i)?),
            "assistant" => {
                let mut blocks = Vec::new();
                let text = text_of(&m["content"], &format!("messages[{i}].content"))?;
                if !text.is_empty() {
                    blocks.push(json!({ "type": "text", "text": text }));
                }
                for (j, call) in m["tool_calls"].as_array().into_iter().flatten().enumerate() {
                    let arguments = call["function"]["arguments"].as_str().unwrap_or("{}");
                    let input: Value = serde_json::from_str(if arguments.trim().is_empty() { "{}" } else { arguments })
                        .map_err(|_| format!("messages[{i}].tool_calls[{j}].function.arguments must be JSON."))?;
                    blocks.push(json!({
                        "type": "tool_use",
                        "id": call["id"].as_str().unwrap_or_default(),
                        "name": call["function"]["name"].as_str().unwrap_or_default(),
                        "input": input,
                    }));
                }
                push(&mut messages, "assistant", Value::Array(blocks));
            }
            "tool" => {
                let id = m["tool_call_id"]
                    .as_str()
                    .ok_or_else(|| format!("messages[{i}].tool_call_id: name the tool call this answers."))?;
                let content = text_of(&m["content"], &format!("messages[{i}].content"))?;
                push(
                    &mut messages,
                    "user",
                    json!([{ "type": "tool_result", "tool_use_id": id, "content": content }]),
                );
            }
            other => {
                return Err(format!(
                    "messages[{i}].role {other:?} is not supported: use system, developer, user, assistant or tool."
                ))
            }
        }
    }
    let mut out = Map::new();
    out.insert("model".into(), json!(model));
    out.insert("max_tokens".into(), json!(max_tokens));
    let mut translation = Translation::default();
    let mut tools: Vec<Value> = Vec::new();
    for (j, t) in get("tools").as_array().into_iter().flatten().enumerate() {
        if t["type"] != "function" {
            return Err(format!(
                "tools[{j}]: only function tools are supported for Claude models."
            ));
        }
        let f = &t["function"];
        let name = f["name"]
            .as_str()
            .ok_or_else(|| format!("tools[{j}].function.name is required."))?;
        let mut tool = json!({
            "name": name,
            "input_schema": if f["parameters"].is_object() { f["parameters"].clone() } else { json!({ "type": "object", "properties": {} }) },
        });
        if let Some(d) = f["description"].as_str() {
            tool["description"] = json!(d);
        }
        tools.push(tool);
    }
    let mut tool_choice = match get("tool_choice") {
        Value::Null => None,
        Value::String(s) if s == "auto" => Some(json!({ "type": "auto" })),
        Value::String(s) if s == "none" => Some(json!({ "type": "none" })),
        Value::String(s) if s == "required" => Some(json!({ "type": "any" })),
        v if v["function"]["name"].is_string() => {
            Some(json!({ "type": "tool", "name": v["function"]["name"] }))
        }
        _ => return Err("tool_choice must be auto, none, required or a named function.".into()),
    };
    let format = get("response_format");
    match format["type"].as_str() {
        None | Some("text") => {}
        Some("json_object") => system.push("Reply with one JSON object and nothing else.".into()),
        Some("json_schema") => {
            let spec = &format["json_schema"];
            let name = spec["name"].as_str().unwrap_or(JSON_TOOL).to_string();
            let schema = if spec["schema"].is_object() {
                spec["schema"].clone()
            } else {
                json!({ "type": "object" })
            };
            let mut tool = json!({ "name": name, "input_schema": schema });
            tool["description"] = json!(spec["description"].as_str().unwrap_or(
                "Give the reply as this tool's input, which follows the required JSON schema."
            ));
            tools.push(tool);
            tool_choice = Some(json!({ "type": "tool", "name": name }));
            translation.schema_tool = Some(name);
        }
        Some(other) => return Err(format!("response_format: {other:?} is not supported.")),
    }
    if get("parallel_tool_calls").as_bool() == Some(false) && !tools.is_empty() {
        let choice = tool_choice.get_or_insert_with(|| json!({ "type": "auto" }));
        if choice["type"] != "none" {
            choice["disable_parallel_tool_use"] = json!(true);
        }
    }
    if !system.is_empty() {
        out.insert("system".into(), json!(system.join("\n\n")));
    }
    out.insert("messages".into(), Value::Array(messages));
    if !tools.is_empty() {
        out.insert("tools".into(), Value::Array(tools));
    }
    if let Some(choice) = tool_choice {
        out.insert("tool_choice".into(), choice);
    }
    match get("stop") {
        Value::Null => {}
        Value::String(s) => {
            out.insert("stop_sequences".into(), json!([s]));
        }
        Value::Array(a) if a.iter().all(Value::is_string) => {
            out.insert("stop_sequences".into(), Value::Array(a));
        }
        _ => return Err("stop must be a string or an array of strings.".into()),
    }
    if let Some(t) = get("temperature").as_f64() {
        out.insert("temperature".into(), json!(t.clamp(0.0, 1.0)));
    }
    if let Some(p) = get("top_p").as_f64() {
        out.insert("top_p".into(), json!(p));
    }
    if let Some(user) = get("user").as_str() {
        out.insert("metadata".into(), json!({ "user_id": user }));
    }
    if stream {
        out.insert("stream".into(), json!(true));
    }
    let bytes = serde_json::to_vec(&Value::Object(out)).map_err(|e| e.to_string())?;
    Ok((bytes, translation))
}

/// Anthropic's stop reason in OpenAI's words.
pub fn finish_reason(reason: &str) -> &'static str {
    match reason {
        "max_tokens" | "model_context_window_exceeded" => "length",
        "tool_use" => "tool_calls",
        "refusal" => "content_filter",
        _ => "stop",
    }
}

fn usage_json(u: &Usage) -> Value {
    json!({
        "prompt_tokens": u.prompt_tokens,
        "completion_tokens": u.completion_tokens,
        "total_tokens": u.total(),
        "prompt_tokens_details": { "cached_tokens": u.cached_tokens },
    })
}

fn openai_id(anthropic_id: &str) -> String {
    format!("chatcmpl-{}", anthropic_id.trim_start_matches("msg_"))
}

/// An Anthropic reply as an OpenAI chat completion (`usage` as settled).
pub fn reply(body: &Value, translation: &Translation, usage: &Usage, created: u64) -> Value {
    let mut text = String::new();
    let mut calls = Vec::new();
    let mut schema_reply = false;
    for block in body["content"].as_array().into_iter().flatten() {
        match block["type"].as_str() {
            Some("text") => text.push_str(block["text"].as_str().unwrap_or_default()),
            Some("tool_use") if translation.schema_tool.as_deref() == block["name"].as_str() => {
                text.push_str(&block["input"].to_string());
                schema_reply = true;
            }
            Some("tool_use") => calls.push(json!({
                "id": block["id"],
                "type": "function",
                "function": { "name": block["name"], "arguments": block["input"].to_string() },
            })),
            _ => {}
        }
    }
    let stop = body["stop_reason"].as_str().unwrap_or("end_turn");
    let finish = if schema_reply {
        "stop"
    } else {
        finish_reason(stop)
    };
    let mut message = json!({ "role": "assistant", "content": text, "refusal": null });
    if !calls.is_empty() {
        message["tool_calls"] = Value::Array(calls);
        if text.is_empty() {
            message["content"] = Value::Null;
        }
    }
    json!({
        "id": openai_id(body["id"].as_str().unwrap_or_default()),
        "object": "chat.completion",
        "created": created,
        "model": body["model"],
        "choices": [{ "index": 0, "message": message, "logprobs": null, "finish_reason": finish }],
        "usage": usage_json(usage),
        "system_fingerprint": null,
    })
}

/// What one content block of a stream is, for its deltas.
enum Block {
    Text,
    /// A tool call, by its index among the reply's tool calls.
    Tool(usize),
    /// The tool standing for a JSON schema: its input is the reply's text.
    Schema,
    Other,
}

/// Translates Anthropic's streamed events into OpenAI chunks, event by event.
pub struct StreamTranslator {
    id: String,
    model: String,
    created: u64,
    include_usage: bool,
    translation: Translation,
    blocks: HashMap<u64, Block>,
    tools: usize,
    schema_reply: bool,
}

impl StreamTranslator {
    pub fn new(model: &str, created: u64, include_usage: bool, translation: Translation) -> Self {
        Self {
            id: "chatcmpl-".into(),
            model: model.to_string(),
            created,
            include_usage,
            translation,
            blocks: HashMap::new(),
            tools: 0,
            schema_reply: false,
        }
    }

    fn chunk(&self, delta: Value, finish: Option<&str>) -> Vec<u8> {
        let mut c = json!({
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "system_fingerprint": null,
            "choices": [{ "index": 0, "delta": delta, "logprobs": null, "finish_reason": finish }],
        });
        if self.include_usage {
            c["usage"] = Value::Null;
        }
        sse(&c)
    }

    /// The OpenAI chunks for one Anthropic event (`usage` is what is known so far, used for the
    /// usage chunk when the stream ends).
    pub fn event(&mut self, data: &str, usage: Option<Usage>) -> Vec<Vec<u8>> {
        let Ok(v) = serde_json::from_str::<Value>(data) else {
            return Vec::new();
        };
        match v["type"].as_str().unwrap_or_default() {
            "message_start" => {
                if let Some(id) = v["message"]["id"].as_str() {
                    self.id = openai_id(id);
                }
                if let Some(model) = v["message"]["model"].as_str() {
                    self.model = model.to_string();
                }
                vec![self.chunk(json!({ "role": "assistant", "content": "" }), None)]
            }
            "content_block_start" => {
                let index = v["index"].as_u64().unwrap_or(0);
                let block = &v["content_block"];
                let (kind, out) = match block["type"].as_str() {
                    Some("text") => (Block::Text, Vec::new()),
                    Some("tool_use")
                        if self.translation.schema_tool.as_deref() == block["name"].as_str() =>
                    {
                        self.schema_reply = true;
                        (Block::Schema, Vec::new())
                    }
                    Some("tool_use") => {
                        let n = self.tools;
                        self.tools += 1;
                        let chunk = self.chunk(
                            json!({ "tool_calls": [{
                                "index": n,
                                "id": block["id"],
                                "type": "function",
                                "function": { "name": block["name"], "arguments": "" },
                            }] }),
                            None,
                        );
                        (Block::Tool(n), vec![chunk])
                    }
                    _ => (Block::Other, Vec::new()),
                };
                self.blocks.insert(index, kind);
                out
            }
            "content_block_delta" => {
                let index = v["index"].as_u64().unwrap_or(0);
                let delta = &v["delta"];
                match (self.blocks.get(&index), delta["type"].as_str()) {
                    (Some(Block::Text) | None, Some("text_delta")) => {
                        vec![self.chunk(json!({ "content": delta["text"] }), None)]
                    }
                    (Some(Block::Schema), Some("input_json_delta")) => {
                        vec![self.chunk(json!({ "content": delta["partial_json"] }), None)]
                    }
                    (Some(Block::Tool(n)), Some("input_json_delta")) => vec![self.chunk(
                        json!({ "tool_calls": [{ "index": n, "function": { "arguments": delta["partial_json"] } }] }),
                        None,
                    )],
                    _ => Vec::new(),
                }
            }
            "message_delta" => match v["delta"]["stop_reason"].as_str() {
                Some(reason) => {
                    let finish = if self.schema_reply {
                        "stop"
                    } else {
                        finish_reason(reason)
                    };
                    vec![self.chunk(json!({}), Some(finish))]
                }
                None => Vec::new(),
            },
            "message_stop" => {
                let mut out = Vec::new();
                if self.include_usage {
                    let u = usage.unwrap_or_default();
                    out.push(sse(&json!({
                        "id": self.id,
                        "object": "chat.completion.chunk",
                        "created": self.created,
                        "model": self.model,
                        "system_fingerprint": null,
                        "choices": [],
                        "usage": usage_json(&u),
                    })));
                }
                out.push(b"data: [DONE]\n\n".to_vec());
                out
            }
            _ => Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(v: Value) -> Body {
        Body::parse(v.to_string().as_bytes()).unwrap()
    }

    #[test]
    fn tools_images_and_tool_results_translate() {
        let b = body(json!({
            "model": "claude-3-5-haiku-latest",
            "messages": [
                { "role": "system", "content": "Be brief." },
                { "role": "user", "content": [
                    { "type": "text", "text": "What is in it, and the weather?" },
                    { "type": "image_url", "image_url": { "url": "data:image/png;base64,iVBORw0KGgo=" } },
                ] },
                { "role": "assistant", "content": null, "tool_calls": [
                    { "id": "call_1", "type": "function", "function": { "name": "weather", "arguments": "{\"city\":\"Oslo\"}" } },
                ] },
                { "role": "tool", "tool_call_id": "call_1", "content": "Rain" },
            ],
            "tools": [{ "type": "function", "function": { "name": "weather", "description": "Weather now", "parameters": { "type": "object", "properties": { "city": { "type": "string" } } } } }],
            "tool_choice": "required",
            "parallel_tool_calls": false,
            "stop": "END",
            "temperature": 1.6,
        }));
        let (bytes, t) = request(&b, "claude-3-5-haiku-latest", 100, true).unwrap();
        assert!(t.schema_tool.is_none());
        let v: Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(v["system"], "Be brief.");
        assert_eq!(
            v["messages"][0]["content"][1]["source"]["media_type"],
            "image/png"
        );
        assert_eq!(v["messages"][1]["content"][0]["type"], "tool_use");
        assert_eq!(v["messages"][1]["content"][0]["input"]["city"], "Oslo");
        assert_eq!(v["messages"][2]["content"][0]["tool_use_id"], "call_1");
        assert_eq!(
            v["tools"][0]["input_schema"]["properties"]["city"]["type"],
            "string"
        );
        assert_eq!(
            v["tool_choice"],
            json!({ "type": "any", "disable_parallel_tool_use": true })
        );
        assert_eq!(v["stop_sequences"], json!(["END"]));
        assert_eq!(v["temperature"], 1.0);
        assert_eq!(v["stream"], true);
    }

    #[test]
    fn what_claude_cannot_do_is_refused_by_name() {
        for (extra, field) in [
            (json!({ "n": 2 }), "n"),
            (json!({ "logprobs": true }), "logprobs"),
            (
                json!({ "messages": [{ "role": "user", "content": [{ "type": "input_audio", "input_audio": { "data": "AA", "format": "wav" } }] }] }),
                "audio",
            ),
            (
                json!({ "messages": [{ "role": "function", "content": "x" }] }),
                "role",
            ),
        ] {
            let mut v =
                json!({ "model": "claude-x", "messages": [{ "role": "user", "content": "hi" }] });
            for (k, val) in extra.as_object().unwrap() {
                v[k] = val.clone();
            }
            let err = request(&body(v), "claude-x", 10, false).unwrap_err();
            assert!(err.contains(field), "{err}");
        }
    }

    #[test]
    fn a_json_schema_comes_back_as_text() {
        let b = body(json!({
            "model": "claude-x",
            "messages": [{ "role": "user", "content": "A patient" }],
            "response_format": { "type": "json_schema", "json_schema": { "name": "patient", "schema": { "type": "object", "properties": { "name": { "type": "string" } } } } },
        }));
        let (bytes, t) = request(&b, "claude-x", 10, false).unwrap();
        let v: Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(
            v["tool_choice"],
            json!({ "type": "tool", "name": "patient" })
        );
        let answer = json!({
            "id": "msg_1", "model": "claude-x", "stop_reason": "tool_use",
            "content": [{ "type": "tool_use", "id": "t1", "name": "patient", "input": { "name": "Ada" } }],
        });
        let out = reply(&answer, &t, &Usage::default(), 0);
        assert_eq!(out["choices"][0]["finish_reason"], "stop");
        let text: Value =
            serde_json::from_str(out["choices"][0]["message"]["content"].as_str().unwrap())
                .unwrap();
        assert_eq!(text["name"], "Ada");
    }

    #[test]
    fn streamed_tool_calls_become_openai_deltas() {
        let mut s = StreamTranslator::new("claude-x", 1, true, Translation::default());
        let mut out = Vec::new();
        for ev in [
            json!({ "type": "message_start", "message": { "id": "msg_9", "model": "claude-x", "usage": { "input_tokens": 5 } } }),
            json!({ "type": "content_block_start", "index": 0, "content_block": { "type": "tool_use", "id": "toolu_1", "name": "weather", "input": {} } }),
            json!({ "type": "content_block_delta", "index": 0, "delta": { "type": "input_json_delta", "partial_json": "{\"city\":" } }),
            json!({ "type": "content_block_delta", "index": 0, "delta": { "type": "input_json_delta", "partial_json": "\"Oslo\"}" } }),
            json!({ "type": "message_delta", "delta": { "stop_reason": "tool_use" }, "usage": { "output_tokens": 7 } }),
            json!({ "type": "message_stop" }),
        ] {
            out.extend(s.event(
                &ev.to_string(),
                Some(Usage {
                    prompt_tokens: 5,
                    completion_tokens: 7,
                    ..Usage::default()
                }),
            ));
        }
        let chunks: Vec<Value> = out
            .iter()
            .map(|b| {
                std::str::from_utf8(b)
                    .unwrap()
                    .trim()
                    .trim_start_matches("data: ")
                    .to_string()
            })
            .filter(|d| d != "[DONE]")
            .map(|d| serde_json::from_str(&d).unwrap())
            .collect();
        assert_eq!(chunks[0]["id"], "chatcmpl-9");
        assert_eq!(
            chunks[1]["choices"][0]["delta"]["tool_calls"][0]["function"]["name"],
            "weather"
        );
        let args: String = chunks[2..4]
            .iter()
            .map(|c| {
                c["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"]
                    .as_str()
                    .unwrap()
            })
            .collect();
        assert_eq!(args, "{\"city\":\"Oslo\"}");
        assert_eq!(chunks[4]["choices"][0]["finish_reason"], "tool_calls");
        assert_eq!(chunks[5]["usage"]["completion_tokens"], 7);
        assert!(std::str::from_utf8(out.last().unwrap())
            .unwrap()
            .contains("[DONE]"));
    }
}

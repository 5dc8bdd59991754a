//! Request bodies as clients send them (OpenAI chat completions, Anthropic messages), forwarded
//! with the fewest changes. The gateway reads only what it needs: the model, whether to stream,
//! the reply limit, the number of choices and an upper bound of the prompt's tokens. Every other
//! field stays the JSON text that came, so tools, response formats, images, audio, `seed`,
//! `logprobs` and whatever a provider adds next year reach it unchanged.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::Deserialize;
use serde_json::value::RawValue;

/// The most tokens one image may cost a prompt: above OpenAI's largest (o4-mini's 1,536 patches
/// at 1.72 tokens each, 2,642) and Anthropic's (about 1,600 for the 1.15 megapixels it resizes
/// to). A provider that counts more is charged no more than the reservation (see the gateway's
/// usage check).
pub const IMAGE_TOKENS: i64 = 3_000;

/// What a prompt holding a document (a PDF or another file sent whole, or a PDF the provider
/// fetches) can cost: each page's text and an image of it, which the file's compressed bytes do
/// not bound. Only the model's context window does, so such a prompt's bound is the window of
/// its model: the longest prefix of `model` listed here, or [`UNKNOWN_WINDOW`]. Claude's models
/// from Opus 4.6 on read a million tokens; the older ones 200,000, or a million when the call
/// asks for the long context (`anthropic-beta: context-1m-...`). A model released later with a
/// larger window than its prefix lists is charged no more than the reservation, as for images.
const CONTEXT_WINDOWS: [(&str, i64); 22] = [
    ("gpt-3.5", 16_385),
    ("gpt-4", 32_768),
    ("gpt-4-turbo", 128_000),
    ("gpt-4.1", 1_047_576),
    ("gpt-4.5", 128_000),
    ("gpt-4o", 128_000),
    ("chatgpt-4o", 128_000),
    ("gpt-5", 1_050_000),
    ("o1", 200_000),
    ("o3", 200_000),
    ("o4", 200_000),
    ("claude-", 1_000_000),
    ("claude-3", 200_000),
    ("claude-haiku-4", 200_000),
    ("claude-opus-4-0", 200_000),
    ("claude-opus-4-1", 200_000),
    ("claude-opus-4-2025", 200_000),
    ("claude-sonnet-4-0", 200_000),
    ("claude-sonnet-4-2025", 200_000),
    ("claude-sonnet-4-5", 200_000),
    ("gemini-", 2_097_152),
    ("llama", 131_072),
];

/// The window taken for a model [`CONTEXT_WINDOWS`] does not list.
pub const UNKNOWN_WINDOW: i64 = 2_097_152;

/// Claude's long context, asked for by a beta header.
const CLAUDE_LONG_WINDOW: i64 = 1_000_000;

/// The most tokens a prompt to `model` can hold (see [`CONTEXT_WINDOWS`]); `beta` is the
/// call's `anthropic-beta` header.
pub fn context_window(model: &str, beta: Option<&str>) -> i64 {
    if model.starts_with("claude-") && beta.is_some_and(|b| b.contains("context-1m")) {
        return CLAUDE_LONG_WINDOW;
    }
    CONTEXT_WINDOWS
        .iter()
        .filter(|(prefix, _)| model.starts_with(prefix))
        .max_by_key(|(prefix, _)| prefix.len())
        .map_or(UNKNOWN_WINDOW, |(_, window)| *window)
}

/// The largest reply limit a request may ask for.
pub const MAX_REPLY_TOKENS: u64 = 200_000;

/// The most choices (`n`) one request may ask for (OpenAI's own limit).
pub const MAX_CHOICES: u64 = 128;

/// A request body's top-level fields in the order they came, each value as its JSON text: the
/// text that came, kept once, with each field a range of it until it is set.
#[derive(Clone, Debug, Default)]
pub struct Body {
    text: Box<str>,
    fields: Vec<(Text, Text)>,
    /// The range of the text that was a plain list of messages (`wire::plain_messages`) when
    /// it was read, found in the same pass.
    plain_messages: Option<(usize, usize)>,
}

/// A field's name or value.
#[derive(Clone, Debug)]
enum Text {
    /// A range of the body's text.
    At(usize, usize),
    /// Set, or a name with escapes (its text as read).
    Own(Box<str>),
}

/// A field's name as read: borrowed from the body's text unless it had escapes.
struct Name<'de>(Cow<'de, str>);

impl<'de> Deserialize<'de> for Name<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct NameVisitor;
        impl<'de> Visitor<'de> for NameVisitor {
            type Value = Name<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a field's name")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Name<'de>, E> {
                Ok(Name(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Name<'de>, E> {
                Ok(Name(Cow::Owned(v.to_string())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Name<'de>, E> {
                Ok(Name(Cow::Owned(v)))
            }
        }
        d.deserialize_str(NameVisitor)
    }
}

struct FieldsVisitor;

impl<'de> Visitor<'de> for FieldsVisitor {
    type Value = Vec<(Name<'de>, &'de RawValue)>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut fields: Self::Value = Vec::with_capacity(8);
        while let Some((key, value)) = map.next_entry::<Name<'de>, &'de RawValue>()? {
            // A field given twice could be read one way here and another by the provider
            // (a small limit for the budget, a large one for the reply): refused.
            if fields.iter().any(|(k, _)| k.0 == key.0) {
                return Err(de::Error::custom(format!(
                    "the field {:?} is given twice",
                    key.0
                )));
            }
            fields.push((key, value));
        }
        Ok(fields)
    }
}

impl Body {
    /// Reads a JSON object; the error says what is wrong, for the client.
    pub fn parse(bytes: &[u8]) -> Result<Self, String> {
        let trimmed = bytes.trim_ascii_start();
        if !trimmed.starts_with(b"{") {
            return Err("The request body must be a JSON object.".into());
        }
        let text = std::str::from_utf8(bytes)
            .map_err(|_| "The request body must be JSON text in UTF-8.".to_string())?;
        // Most bodies are read in one pass over their bytes, without serde's visitors; serde
        // reads the others the same way (or says what is wrong with them).
        match crate::llm::wire::body_fields(text.as_bytes()) {
            Some(read) => Ok(Body {
                text: text.into(),
                fields: read
                    .fields
                    .into_iter()
                    .map(|((a, b), (c, d))| (Text::At(a, b), Text::At(c, d)))
                    .collect(),
                plain_messages: read.plain_messages,
            }),
            None => Self::parse_by_serde(text),
        }
    }

    /// [`Body::parse`] by serde.
    fn parse_by_serde(text: &str) -> Result<Self, String> {
        let parse = |e: serde_json::Error| {
            format!("We could not parse the JSON body of your request ({e}).")
        };
        let mut de = serde_json::Deserializer::from_str(text);
        let read = de.deserialize_map(FieldsVisitor).map_err(parse)?;
        de.end().map_err(parse)?;
        // Where a borrowed piece of `text` starts and ends in it.
        let at = |piece: &str| {
            let start = (piece.as_ptr() as usize).wrapping_sub(text.as_ptr() as usize);
            let end = start.saturating_add(piece.len());
            match text.get(start..end) {
                Some(same) if same.as_ptr() == piece.as_ptr() => Text::At(start, end),
                _ => Text::Own(piece.into()),
            }
        };
        let fields = read
            .iter()
            .map(|(name, value)| {
                let name = match &name.0 {
                    Cow::Borrowed(name) => at(name),
                    Cow::Owned(name) => Text::Own(name.as_str().into()),
                };
                (name, at(value.get()))
            })
            .collect();
        Ok(Body {
            text: text.into(),
            fields,
            plain_messages: None,
        })
    }

    /// Whether `value`, a field's text, is the list of messages found plain when the body was
    /// read (unchanged since: a field set since is text of its own).
    fn known_plain(&self, value: &str) -> bool {
        self.plain_messages
            .and_then(|(start, end)| self.text.get(start..end))
            .is_some_and(|plain| std::ptr::eq(plain, value))
    }

    fn text<'a>(&'a self, t: &'a Text) -> &'a str {
        match t {
            Text::At(start, end) => self.text.get(*start..*end).unwrap_or_default(),
            Text::Own(text) => text,
        }
    }

    /// The fields, names and values as their JSON text, in order.
    fn fields(&self) -> impl Iterator<Item = (&str, &str)> + '_ {
        self.fields
            .iter()
            .map(|(k, v)| (self.text(k), self.text(v)))
    }

    fn position(&self, key: &str) -> Option<usize> {
        // Compared as bytes, lengths first: a lookup is made for every field the gateway reads.
        let text = self.text.as_bytes();
        self.fields.iter().position(|(k, _)| match k {
            Text::At(start, end) => {
                end.checked_sub(*start) == Some(key.len())
                    && text.get(*start..*end) == Some(key.as_bytes())
            }
            Text::Own(k) => **k == *key,
        })
    }

    /// The JSON text of a field (`None` when absent).
    pub fn raw(&self, key: &str) -> Option<&str> {
        let i = self.position(key)?;
        Some(self.text(&self.fields[i].1))
    }

    /// A field read as `T` (`None` when absent or `null`); `Err` when it has another shape.
    pub fn get<'a, T: Deserialize<'a>>(&'a self, key: &str) -> serde_json::Result<Option<T>> {
        match self.raw(key) {
            None | Some("null") => Ok(None),
            Some(raw) => serde_json::from_str(raw).map(Some),
        }
    }

    /// A string field, as [`Body::get`] reads it, without serde where its text has no escapes
    /// (most names of models): the text between its quotes.
    pub fn get_str(&self, key: &str) -> serde_json::Result<Option<Cow<'_, str>>> {
        match self.raw(key) {
            // A field's text is one JSON value: from a quote on, one string, whose text has no
            // control characters and, without a backslash, no escapes.
            Some(raw) if raw.len() >= 2 && raw.starts_with('"') && !raw.contains('\\') => {
                Ok(raw.get(1..raw.len() - 1).map(Cow::Borrowed))
            }
            _ => self.get(key),
        }
    }

    /// A whole-number field, as [`Body::get`] reads it, without serde where its text is
    /// digits alone that fit (most limits).
    pub fn get_u64(&self, key: &str) -> serde_json::Result<Option<u64>> {
        match self.raw(key) {
            // A field's text is one JSON value, so its digits have no leading zero; 19 of them
            // always fit.
            Some(raw)
                if (1..=19).contains(&raw.len()) && raw.bytes().all(|b| b.is_ascii_digit()) =>
            {
                Ok(Some(
                    raw.bytes().fold(0, |n, d| n * 10 + u64::from(d - b'0')),
                ))
            }
            _ => self.get(key),
        }
    }

    /// A field that is `true` or `false`, as [`Body::get`] reads it, without serde.
    pub fn get_bool(&self, key: &str) -> serde_json::Result<Option<bool>> {
        match self.raw(key) {
            Some("true") => Ok(Some(true)),
            Some("false") => Ok(Some(false)),
            _ => self.get(key),
        }
    }

    pub fn has(&self, key: &str) -> bool {
        self.raw(key).is_some_and(|v| v != "null")
    }

    /// Sets a field to `value` serialised (in its place when present, else at the end).
    pub fn set<T: serde::Serialize + ?Sized>(&mut self, key: &str, value: &T) {
        // Serialising plain data (strings, numbers, `Value`s) cannot fail.
        let Ok(text) = serde_json::to_string(value) else {
            return;
        };
        let value = Text::Own(text.into());
        match self.position(key) {
            Some(i) => self.fields[i].1 = value,
            None => self.fields.push((Text::Own(key.into()), value)),
        }
    }

    /// The body as JSON text: each field as it came, changed ones as set (the text that came,
    /// when nothing was set).
    pub fn to_bytes(&self) -> Vec<u8> {
        let read = |t: &Text| matches!(t, Text::At(..));
        if self.fields.iter().all(|(k, v)| read(k) && read(v)) {
            return self.text.as_bytes().to_vec();
        }
        let size: usize = self.fields().map(|(k, v)| k.len() + v.len() + 4).sum();
        let mut out = Vec::with_capacity(size + 2);
        out.push(b'{');
        for (i, (key, value)) in self.fields.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            match key {
                // A name read from the text has neither escapes nor control characters (or it
                // would be a name of its own, as read): written as it came.
                Text::At(..) => {
                    out.push(b'"');
                    out.extend_from_slice(self.text(key).as_bytes());
                    out.push(b'"');
                }
                Text::Own(name) => crate::llm::wire::write_json_string(&mut out, name),
            }
            out.push(b':');
            out.extend_from_slice(self.text(value).as_bytes());
        }
        out.push(b'}');
        out
    }
}

/// What the gateway reads from a chat body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Facts {
    pub model: String,
    pub stream: bool,
    /// The client asked for the usage chunk of a stream (OpenAI's `stream_options`).
    pub include_usage: bool,
    /// Choices asked for (`n`, 1 unless given).
    pub choices: u32,
    /// The reply limit asked for (the larger of `max_tokens` and `max_completion_tokens`).
    pub max_tokens: Option<u32>,
    /// An upper bound of the prompt's tokens (see [`prompt_bound`]).
    pub prompt_bound: i64,
    /// The prompt holds a document, whose bound is the model's context window (see
    /// [`context_window`]), not its text's.
    pub documents: bool,
}

/// An upper bound of a prompt's tokens, as far as the body shows them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Bound {
    /// The body's text, images and audio counted (see [`prompt_bound`]).
    pub tokens: i64,
    /// A document is among the parts: the text does not bound what it costs.
    pub documents: bool,
}

/// The request's dialect.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dialect {
    /// OpenAI chat completions (`/v1/chat/completions`).
    OpenAi,
    /// Anthropic messages (`/v1/messages`).
    Anthropic,
    /// OpenAI's Responses API (`/v1/responses`).
    Responses,
}

fn reply_limit(body: &Body, key: &str) -> Result<Option<u32>, String> {
    match body.get_u64(key) {
        Ok(None) => Ok(None),
        Ok(Some(n)) if (1..=MAX_REPLY_TOKENS).contains(&n) => Ok(Some(n as u32)),
        _ => Err(format!(
            "{key} must be a whole number between 1 and {MAX_REPLY_TOKENS}."
        )),
    }
}

/// Reads and checks what the gateway needs from a chat body in `dialect`.
pub fn facts(body: &Body, dialect: Dialect) -> Result<Facts, String> {
    let model = match body.get_str("model") {
        Ok(Some(m)) if !m.trim().is_empty() && m.len() <= 200 => m.trim().to_string(),
        Ok(None) => return Err("model: this field is required.".into()),
        _ => return Err("model must be a non-empty string.".into()),
    };
    let stream = body
        .get_bool("stream")
        .map_err(|_| "stream must be true or false.".to_string())?
        .unwrap_or(false);
    let (include_usage, choices, max_tokens) = match dialect {
        Dialect::OpenAi => {
            #[derive(Deserialize)]
            struct StreamOptions {
                include_usage: Option<bool>,
            }
            let include_usage = body
                .get::<StreamOptions>("stream_options")
                .map_err(|_| "stream_options must be an object.".to_string())?
                .and_then(|o| o.include_usage)
                .unwrap_or(false);
            let choices = match body.get_u64("n") {
                Ok(None) => 1,
                Ok(Some(n)) if (1..=MAX_CHOICES).contains(&n) => n as u32,
                _ => return Err(format!("n must be a whole number from 1 to {MAX_CHOICES}.")),
            };
            let limit =
                reply_limit(body, "max_completion_tokens")?.max(reply_limit(body, "max_tokens")?);
            (include_usage, choices, limit)
        }
        Dialect::Anthropic => {
            let limit = reply_limit(body, "max_tokens")?;
            if limit.is_none() {
                return Err("max_tokens: this field is required.".into());
            }
            (false, 1, limit)
        }
        Dialect::Responses => {
            unbounded_responses_fields(body)?;
            (false, 1, reply_limit(body, "max_output_tokens")?)
        }
    };
    let bound = match dialect {
        Dialect::Responses => responses_prompt_bound(body)?,
        _ => prompt_bound(body)?,
    };
    Ok(Facts {
        model,
        stream,
        include_usage,
        choices,
        max_tokens,
        prompt_bound: bound.tokens,
        documents: bound.documents,
    })
}

/// Refuses what would make a Responses call's cost unknown before it is made: what the
/// provider keeps (an earlier response, a conversation, a prompt template), whose size the
/// body does not show; a call in the background, whose usage comes after its reply; and
/// OpenAI's hosted tools (web and file search, code, computer use, images, remote MCP servers),
/// whose results cost input tokens (and fees) the body does not bound. Function and custom
/// tools, run by the client, pass.
fn unbounded_responses_fields(body: &Body) -> Result<(), String> {
    for (field, what) in [
        (
            "previous_response_id",
            "earlier responses kept by the provider",
        ),
        ("conversation", "conversations kept by the provider"),
        ("prompt", "prompt templates kept by the provider"),
    ] {
        if body.has(field) {
            return Err(format!(
                "{field}: {what} are not served, since their size cannot be bounded for the clinic's budget; send the whole conversation in input."
            ));
        }
    }
    if body.get_bool("background").ok().flatten() == Some(true) {
        return Err("background: background responses are not served, since their usage comes after the reply; leave it out (stream: true sends the reply as it is made).".into());
    }
    #[derive(Deserialize)]
    struct Tool<'a> {
        #[serde(rename = "type", borrow, default)]
        kind: Option<Cow<'a, str>>,
    }
    let tools = body
        .get::<Vec<Tool>>("tools")
        .map_err(|_| "tools must be an array of tools.".to_string())?
        .unwrap_or_default();
    for (i, tool) in tools.iter().enumerate() {
        match tool.kind.as_deref() {
            Some("function" | "custom") => {}
            other => {
                let kind = other.unwrap_or("(none)");
                return Err(format!(
                    "tools[{i}]: OpenAI's hosted tools ({kind}) are not served, since what they add to the prompt cannot be bounded for the clinic's budget; offer function tools, which the client runs."
                ));
            }
        }
    }
    Ok(())
}

/// [`prompt_bound`] for a Responses body, whose prompt is `input` (text, or items whose image
/// parts count [`IMAGE_TOKENS`] each and whose files are documents) beside the other fields'
/// text. Items the provider keeps (`item_reference`) and files by id or address are refused:
/// the body does not show them.
fn responses_prompt_bound(body: &Body) -> Result<Bound, String> {
    let Some(input) = body.raw("input").filter(|v| *v != "null") else {
        return Err("input: this field is required (a string, or an array of input items).".into());
    };
    let mut bound = prompt_bound(body)?;
    if input.starts_with('[') {
        if plain_input(input) {
            return Ok(bound);
        }
        let items: serde_json::Value = serde_json::from_str(input)
            .map_err(|_| "input must be a string or an array of input items.".to_string())?;
        bound.tokens += input_change(&items, "input", &mut bound.documents)?;
    } else if !input.starts_with('"') {
        return Err("input must be a string or an array of input items.".into());
    }
    Ok(bound)
}

/// Whether a Responses `input` (the text of an array, read as JSON with the body) holds
/// nothing [`input_change`] reads: none of the types it looks for, quoted, and no backslash
/// (with which a type could be written otherwise). Its bound is then its text, without a tree.
fn plain_input(input: &str) -> bool {
    use memchr::memmem::Finder;
    // Built once: a searcher's set-up costs more than a short input's search.
    static TYPES: std::sync::LazyLock<[Finder<'static>; 3]> = std::sync::LazyLock::new(|| {
        ["\"input_image\"", "\"item_reference\"", "\"input_file\""].map(Finder::new)
    });
    let b = input.as_bytes();
    memchr::memchr(b'\\', b).is_none() && TYPES.iter().all(|t| t.find(b).is_none())
}

/// What `value`'s parts change in its text's bound: an image counts [`IMAGE_TOKENS`] instead of
/// its text (as written again compactly, which is no longer than the text that came); a file
/// sets `documents`.
fn input_change(value: &serde_json::Value, at: &str, documents: &mut bool) -> Result<i64, String> {
    use serde_json::Value;
    match value {
        Value::Array(items) => {
            let mut change = 0;
            for (i, item) in items.iter().enumerate() {
                change += input_change(item, &format!("{at}[{i}]"), documents)?;
            }
            Ok(change)
        }
        Value::Object(map) => match map.get("type").and_then(Value::as_str) {
            Some("input_image") => {
                let len = serde_json::to_string(value).map_or(0, |t| t.len() as i64);
                Ok(IMAGE_TOKENS - len)
            }
            Some("item_reference") => Err(format!(
                "{at}: items kept by the provider (item_reference) are not served, since their size cannot be bounded for the clinic's budget; send the item itself."
            )),
            Some("input_file") if map.contains_key("file_id") || map.contains_key("file_url") => {
                Err(format!(
                    "{at}: files kept by the provider or fetched from an address are not served, since their size cannot be bounded for the clinic's budget; send the file's contents as file_data."
                ))
            }
            Some("input_file") => {
                *documents = true;
                Ok(0)
            }
            _ => {
                let mut change = 0;
                for (key, inner) in map {
                    change += input_change(inner, &format!("{at}.{key}"), documents)?;
                }
                Ok(change)
            }
        },
        _ => Ok(0),
    }
}

/// An upper bound of the tokens a body's prompt can cost: a token is at least one byte of text,
/// so every field counts its JSON text (instructions, tools and schemas cost prompt tokens too),
/// except that an image counts [`IMAGE_TOKENS`] whatever its size, and audio a token per three
/// bytes of its base64 text (a second of audio is at least a few thousand bytes and costs the
/// providers tens of tokens). A document is flagged, since its text does not bound it (see
/// [`CONTEXT_WINDOWS`]).
pub fn prompt_bound(body: &Body) -> Result<Bound, String> {
    let mut bound = Bound {
        tokens: 8,
        documents: false,
    };
    for (key, value) in body.fields() {
        bound.tokens += key.len() as i64 + 1;
        bound.tokens += if key == "messages" && body.known_plain(value) {
            value.len() as i64
        } else if key == "messages" {
            messages_bound(value, &mut bound.documents)?
        } else {
            value.len() as i64
        };
    }
    Ok(bound)
}

/// The list's whole text with each content's text replaced by its bound (the brackets and
/// commas between messages count too: still an upper bound).
fn messages_bound(raw: &str, documents: &mut bool) -> Result<i64, String> {
    // Most lists have only text contents, which count as they are: found so in one pass over
    // the bytes, without serde's visitors.
    if crate::llm::wire::plain_messages(raw.as_bytes()) {
        return Ok(raw.len() as i64);
    }
    serde_messages_bound(raw, documents)
}

fn serde_messages_bound(raw: &str, documents: &mut bool) -> Result<i64, String> {
    // One pass over the list: each message is read as it comes (its other fields skipped).
    let mut refused = None;
    let change = serde_json::Deserializer::from_str(raw)
        .deserialize_seq(Contents {
            refused: &mut refused,
            documents,
        })
        .map_err(|_| {
            refused
                .take()
                .unwrap_or_else(|| "messages must be an array of messages.".to_string())
        })?;
    Ok(raw.len() as i64 + change)
}

/// Reads a list of messages for what their contents change in the prompt's bound (each
/// content's bound less its text's length); `refused` says what is wrong with a message, and
/// `documents` whether one holds a document.
struct Contents<'r> {
    refused: &'r mut Option<String>,
    documents: &'r mut bool,
}

impl<'de> Visitor<'de> for Contents<'_> {
    type Value = i64;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an array of messages")
    }

    fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<i64, A::Error> {
        #[derive(Deserialize)]
        struct Message<'a> {
            #[serde(borrow, default)]
            content: Option<&'a RawValue>,
        }
        let mut change = 0;
        let mut i = 0;
        loop {
            let message = match seq.next_element::<Message<'de>>() {
                Ok(Some(message)) => message,
                Ok(None) => break,
                Err(_) => {
                    *self.refused = Some(format!(
                        "messages[{i}] must be an object with a role and content."
                    ));
                    return Err(de::Error::custom("a message"));
                }
            };
            if let Some(c) = message.content {
                match content_bound(c, self.documents) {
                    Ok(bound) => change += bound - c.get().len() as i64,
                    Err(e) => {
                        // A part's fault names its place: `[2].file.file_id: ...`.
                        let sep = if e.starts_with('[') { "" } else { ": " };
                        *self.refused = Some(format!("messages[{i}].content{sep}{e}"));
                        return Err(de::Error::custom("a content"));
                    }
                }
            }
            i += 1;
        }
        if i == 0 {
            *self.refused = Some("messages must contain at least one message.".into());
            return Err(de::Error::custom("no message"));
        }
        Ok(change)
    }
}

/// The bound of one message's content: a string, or an array of parts (OpenAI) or blocks
/// (Anthropic). A document (OpenAI's `file` part, Anthropic's `document` block with a PDF's data
/// or address) sets `documents`; a file the provider keeps is refused, as the body does not
/// show it.
fn content_bound(raw: &RawValue, documents: &mut bool) -> Result<i64, String> {
    #[derive(Deserialize)]
    struct Audio<'a> {
        #[serde(borrow, default)]
        data: Option<&'a RawValue>,
    }
    #[derive(Deserialize)]
    struct File<'a> {
        #[serde(borrow, default)]
        file_id: Option<&'a RawValue>,
    }
    #[derive(Deserialize)]
    struct Source<'a> {
        #[serde(rename = "type", borrow, default)]
        kind: Option<Cow<'a, str>>,
        /// A document's own blocks (`"type": "content"`).
        #[serde(borrow, default)]
        content: Option<&'a RawValue>,
    }
    #[derive(Deserialize)]
    struct Part<'a> {
        #[serde(rename = "type", borrow, default)]
        kind: Option<Cow<'a, str>>,
        #[serde(borrow, default)]
        input_audio: Option<Audio<'a>>,
        /// An Anthropic tool result's own content (text and images).
        #[serde(borrow, default)]
        content: Option<&'a RawValue>,
        #[serde(borrow, default)]
        file: Option<File<'a>>,
        #[serde(borrow, default)]
        source: Option<Source<'a>>,
    }
    // A fault inside part `i`'s `field` names its place from the part on.
    fn within(i: usize, field: &str, e: String) -> String {
        if e.starts_with('[') {
            format!("[{i}].{field}{e}")
        } else {
            format!("[{i}].{field}: {e}")
        }
    }
    const KEPT: &str = "files kept by the provider are not served, since the body does not show their size for the clinic's budget; send the file's contents as data";
    if !raw.get().starts_with('[') {
        return Ok(raw.get().len() as i64);
    }
    let parts: Vec<&RawValue> =
        serde_json::from_str(raw.get()).map_err(|_| "must be a string or an array of parts.")?;
    let mut bound = 0;
    for (i, part) in parts.into_iter().enumerate() {
        let len = part.get().len() as i64;
        // A part read otherwise here than by the provider could hide an image or a document
        // (a `type` given twice: serde refuses it, the provider may take the last).
        let Ok(p) = serde_json::from_str::<Part>(part.get()) else {
            return Err(format!(
                "[{i}] must be an object with a type, each of its fields given once."
            ));
        };
        bound += match p.kind.as_deref() {
            Some("image_url" | "image") => IMAGE_TOKENS,
            Some("input_audio") => {
                let data = p
                    .input_audio
                    .and_then(|a| a.data)
                    .map_or(0, |d| d.get().len() as i64);
                len - data + data / 3
            }
            Some("tool_result") => match p.content {
                Some(inner) => {
                    len - inner.get().len() as i64
                        + content_bound(inner, documents).map_err(|e| within(i, "content", e))?
                }
                None => len,
            },
            Some("file") => {
                if p.file
                    .and_then(|f| f.file_id)
                    .is_some_and(|id| id.get() != "null")
                {
                    return Err(format!("[{i}].file.file_id: {KEPT} (file.file_data)."));
                }
                *documents = true;
                len
            }
            Some("document") => match p.source {
                Some(Source {
                    kind: Some(kind), ..
                }) if kind == "file" => {
                    return Err(format!("[{i}].source: {KEPT} (a base64 source)."));
                }
                Some(Source {
                    kind: Some(kind),
                    content: Some(inner),
                }) if kind == "content" => {
                    len - inner.get().len() as i64
                        + content_bound(inner, documents)
                            .map_err(|e| within(i, "source.content", e))?
                }
                Some(Source {
                    kind: Some(kind), ..
                }) if kind == "text" => len,
                _ => {
                    *documents = true;
                    len
                }
            },
            _ => len,
        };
    }
    Ok(bound)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_pass_through_as_they_came() {
        let text = br#"{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}],"seed":7,"response_format":{"type":"json_object"},"future_field":[1,2,{"x":null}]}"#;
        let mut body = Body::parse(text).unwrap();
        assert_eq!(body.to_bytes(), text.to_vec());
        body.set("model", "gpt-4o-mini");
        let out: serde_json::Value = serde_json::from_slice(&body.to_bytes()).unwrap();
        assert_eq!(out["model"], "gpt-4o-mini");
        assert_eq!(out["future_field"][2]["x"], serde_json::Value::Null);
        assert!(body.to_bytes().starts_with(br#"{"model""#));
        // A name with something to escape is written escaped, as serde writes it.
        let text = r#"{"a\"b":1,"c\\d\n":2,"\u0001":3,"é":4}"#;
        let body = Body::parse(text.as_bytes()).unwrap();
        assert_eq!(body.raw("a\"b"), Some("1"));
        assert_eq!(
            String::from_utf8(body.to_bytes()).unwrap(),
            r#"{"a\"b":1,"c\\d\n":2,"\u0001":3,"é":4}"#
        );
    }

    #[test]
    fn strings_numbers_and_flags_read_as_serde_reads_them() {
        fn either<T>(r: serde_json::Result<T>) -> Result<T, ()> {
            r.map_err(drop)
        }
        for value in [
            r#""gpt-4o""#,
            r#""""#,
            r#""a\"b""#,
            r#""\u00e9t\u00e9""#,
            r#""é""#,
            "0",
            "7",
            "9999999999999999999",
            "18446744073709551615",
            "18446744073709551616",
            "1.0",
            "1e2",
            "-1",
            "true",
            "false",
            "null",
            "[]",
            r#"{"a":1}"#,
        ] {
            let body = Body::parse(format!(r#"{{"f": {value} }}"#).as_bytes()).unwrap();
            assert_eq!(
                either(body.get_str("f")),
                either(body.get::<Cow<str>>("f")),
                "{value}"
            );
            assert_eq!(
                either(body.get_u64("f")),
                either(body.get::<u64>("f")),
                "{value}"
            );
            assert_eq!(
                either(body.get_bool("f")),
                either(body.get::<bool>("f")),
                "{value}"
            );
            assert_eq!(either(body.get_str("g")), Ok(None));
        }
    }

    #[test]
    fn a_field_given_twice_is_refused() {
        let err = Body::parse(br#"{"max_tokens":1,"max_tokens":100000}"#).unwrap_err();
        assert!(err.contains("twice"), "{err}");
        assert!(Body::parse(b"[1]").is_err());
        assert!(Body::parse(b"{").is_err());
    }

    #[test]
    fn responses_bodies_are_bounded_or_refused_by_name() {
        let read = |text: &str| facts(&Body::parse(text.as_bytes()).unwrap(), Dialect::Responses);
        let f = read(r#"{"model":"gpt-4o","input":"hello","max_output_tokens":50,"stream":true}"#)
            .unwrap();
        assert_eq!((f.choices, f.max_tokens, f.stream), (1, Some(50), true));
        // An image counts IMAGE_TOKENS, however short or long its text.
        let long = "A".repeat(100_000);
        for url in ["https://example.com/x.png", long.as_str()] {
            let text = format!(
                r#"{{"model":"gpt-4o","input":[{{"role":"user","content":[{{"type":"input_text","text":"what is it?"}},{{"type":"input_image","image_url":"{url}"}}]}}]}}"#
            );
            let bound = read(&text).unwrap().prompt_bound;
            assert!(bound >= IMAGE_TOKENS, "{bound}");
            assert!(bound < IMAGE_TOKENS + 300, "{bound}");
        }
        for (bad, names) in [
            (r#"{"model":"m"}"#, "input"),
            (r#"{"model":"m","input":7}"#, "input"),
            (
                r#"{"model":"m","input":"x","previous_response_id":"resp_1"}"#,
                "previous_response_id",
            ),
            (
                r#"{"model":"m","input":"x","conversation":"conv_1"}"#,
                "conversation",
            ),
            (
                r#"{"model":"m","input":"x","prompt":{"id":"pmpt_1"}}"#,
                "prompt",
            ),
            (
                r#"{"model":"m","input":"x","background":true}"#,
                "background",
            ),
            (
                r#"{"model":"m","input":"x","tools":[{"type":"function","name":"f"},{"type":"web_search"}]}"#,
                "tools[1]",
            ),
            (
                r#"{"model":"m","input":[{"type":"item_reference","id":"msg_1"}]}"#,
                "input[0]",
            ),
            (
                r#"{"model":"m","input":[{"role":"user","content":[{"type":"input_file","file_id":"file-1"}]}]}"#,
                "input[0].content[0]",
            ),
            (
                r#"{"model":"m","input":"x","max_output_tokens":0}"#,
                "max_output_tokens",
            ),
        ] {
            let err = read(bad).unwrap_err();
            assert!(err.starts_with(names), "{bad}: {err}");
        }
        assert!(read(r#"{"model":"m","input":"x","previous_response_id":null,"background":false,"tools":[{"type":"custom","name":"c"}]}"#).is_ok());
    }

    #[test]
    fn a_plain_input_is_bounded_as_its_tree_would_bound_it() {
        let inputs = [
            r#"[{"role":"system","content":"Be brief."},{"role":"user","content":"hi"}]"#,
            r#"[{"role":"user","content":[{"type":"input_text","text":"what is input_text?"}]}]"#,
            r#"[{"type":"function_call_output","call_id":"c","output":"{}"},1,null,[]]"#,
            r#"[{"role":"user","content":[{"type":"input_image","image_url":"https://e.x/a.png"}]}]"#,
            r#"[{"role":"user","content":[{"type":"input_\u0069mage","image_url":"x"}]}]"#,
            r#"[{"role":"user","content":[{"type":"input_file","file_data":"data:;base64,"}]}]"#,
            r#"[{"type":"item_reference","id":"msg_1"}]"#,
            r#"[{"role":"user","content":"say \"input_image\" twice"}]"#,
        ];
        let mut plain = 0;
        for (n, input) in inputs.iter().enumerate() {
            let tree: serde_json::Value = serde_json::from_str(input).unwrap();
            let mut documents = false;
            let by_tree = input_change(&tree, "input", &mut documents);
            if plain_input(input) {
                plain += 1;
                assert_eq!(by_tree, Ok(0), "{input}");
                assert!(!documents, "{input}");
            }
            // The first three are plain; the others each hold what the tree reads.
            assert_eq!(plain_input(input), n < 3, "{input}");
            let body = format!(r#"{{"model":"gpt-4o","input":{input}}}"#);
            let read = facts(&Body::parse(body.as_bytes()).unwrap(), Dialect::Responses);
            if n < 3 {
                // 8, and each field's name, a byte, and its text: its text alone for input.
                let expected = 8 + (5 + 1 + 8) + (5 + 1) + input.len() as i64;
                assert_eq!(read.unwrap().prompt_bound, expected, "{input}");
            }
        }
        assert_eq!(plain, 3);
    }

    #[test]
    fn facts_read_limits_choices_and_streams() {
        let body = Body::parse(
            br#"{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}],"n":3,"max_tokens":10,"max_completion_tokens":20,"stream":true,"stream_options":{"include_usage":true}}"#,
        )
        .unwrap();
        let f = facts(&body, Dialect::OpenAi).unwrap();
        assert_eq!(
            (f.choices, f.max_tokens, f.stream, f.include_usage),
            (3, Some(20), true, true)
        );
        for bad in [
            r#"{"model":"m","messages":[{"role":"user","content":"x"}],"n":0}"#,
            r#"{"model":"m","messages":[{"role":"user","content":"x"}],"n":1000}"#,
            r#"{"model":"m","messages":[{"role":"user","content":"x"}],"max_tokens":-1}"#,
            r#"{"model":"m","messages":[{"role":"user","content":"x"}],"stream":"yes"}"#,
            r#"{"model":"m","messages":[]}"#,
            r#"{"model":"m","messages":"hello"}"#,
            r#"{"messages":[{"role":"user","content":"x"}]}"#,
        ] {
            assert!(
                facts(&Body::parse(bad.as_bytes()).unwrap(), Dialect::OpenAi).is_err(),
                "{bad}"
            );
        }
        let anthropic = Body::parse(
            br#"{"model":"claude-3-5-haiku-latest","messages":[{"role":"user","content":"x"}]}"#,
        )
        .unwrap();
        assert!(facts(&anthropic, Dialect::Anthropic)
            .unwrap_err()
            .contains("max_tokens"));
    }

    #[test]
    fn images_count_a_fixed_bound_whatever_their_size() {
        let data = "A".repeat(300_000);
        let body = Body::parse(
            format!(
                r#"{{"model":"gpt-4o","messages":[{{"role":"user","content":[{{"type":"text","text":"What is this?"}},{{"type":"image_url","image_url":{{"url":"data:image/png;base64,{data}"}}}}]}}]}}"#
            )
            .as_bytes(),
        )
        .unwrap();
        let bound = prompt_bound(&body).unwrap().tokens;
        assert!(
            bound > IMAGE_TOKENS && bound < IMAGE_TOKENS + 200,
            "{bound}"
        );
        // Text that looks like an image still counts as text.
        let sneaky = Body::parse(
            format!(r#"{{"model":"gpt-4o","messages":[{{"role":"user","content":"{{\"type\":\"image_url\"}} {data}"}}]}}"#)
                .as_bytes(),
        )
        .unwrap();
        assert!(prompt_bound(&sneaky).unwrap().tokens > 300_000);
    }

    #[test]
    fn documents_are_flagged_and_files_kept_by_the_provider_refused() {
        let chat = |content: &str| {
            let text = format!(
                r#"{{"model":"gpt-4o","messages":[{{"role":"user","content":{content}}}]}}"#
            );
            facts(&Body::parse(text.as_bytes()).unwrap(), Dialect::OpenAi)
        };
        let messages = |content: &str| {
            let text = format!(
                r#"{{"model":"claude-sonnet-4-5","max_tokens":10,"messages":[{{"role":"user","content":{content}}}]}}"#
            );
            facts(&Body::parse(text.as_bytes()).unwrap(), Dialect::Anthropic)
        };
        let pdf = r#"{"type":"file","file":{"filename":"a.pdf","file_data":"data:application/pdf;base64,JVBERi0="}}"#;
        let f = chat(&format!(r#"[{{"type":"text","text":"sum up"}},{pdf}]"#)).unwrap();
        assert!(f.documents);
        assert!(
            !chat(r#"[{"type":"text","text":"sum up"}]"#)
                .unwrap()
                .documents
        );
        assert!(!chat(r#""a PDF, {\"type\":\"file\"}""#).unwrap().documents);
        let err =
            chat(r#"[{"type":"text","text":"x"},{"type":"file","file":{"file_id":"file-1"}}]"#)
                .unwrap_err();
        assert!(
            err.starts_with("messages[0].content[1].file.file_id: "),
            "{err}"
        );
        // Anthropic's documents: a PDF's data or address is a document, plain text is text.
        for source in [
            r#"{"type":"base64","media_type":"application/pdf","data":"JVBERi0="}"#,
            r#"{"type":"url","url":"https://example.com/a.pdf"}"#,
            r#"{"type":"content","content":[{"type":"document","source":{"type":"url","url":"https://example.com/a.pdf"}}]}"#,
        ] {
            let f = messages(&format!(r#"[{{"type":"document","source":{source}}}]"#)).unwrap();
            assert!(f.documents, "{source}");
        }
        let text = r#"[{"type":"document","source":{"type":"text","media_type":"text/plain","data":"notes"}}]"#;
        assert!(!messages(text).unwrap().documents);
        // Inside a tool's result too, and a file kept by the provider is named where it is.
        let kept = r#"[{"type":"tool_result","tool_use_id":"t","content":[{"type":"text","text":"x"},{"type":"document","source":{"type":"file","file_id":"file_1"}}]}]"#;
        let err = messages(kept).unwrap_err();
        assert!(
            err.starts_with("messages[0].content[0].content[1].source: "),
            "{err}"
        );
        // A part the provider could read otherwise (its type given twice) is refused.
        let twice = r#"[{"type":"text","type":"file","file":{"file_data":"data:application/pdf;base64,JVBERi0="}}]"#;
        let err = chat(twice).unwrap_err();
        assert!(err.starts_with("messages[0].content[0] must be"), "{err}");
        assert!(chat(r#"[{"type":"text","text":"x"},5]"#).is_err());
        let inside = r#"[{"type":"tool_result","tool_use_id":"t","content":[{"type":"document","source":{"type":"base64","media_type":"application/pdf","data":"JVBERi0="}}]}]"#;
        assert!(messages(inside).unwrap().documents);
        // Responses: a file's data is a document.
        let text = r#"{"model":"gpt-4o","input":[{"role":"user","content":[{"type":"input_file","filename":"a.pdf","file_data":"data:application/pdf;base64,JVBERi0="}]}]}"#;
        assert!(
            facts(&Body::parse(text.as_bytes()).unwrap(), Dialect::Responses)
                .unwrap()
                .documents
        );
    }

    #[test]
    fn context_windows_follow_the_longest_prefix() {
        assert_eq!(context_window("gpt-4o-mini", None), 128_000);
        assert_eq!(context_window("gpt-4.1-nano", None), 1_047_576);
        assert_eq!(context_window("gpt-4-0613", None), 32_768);
        assert_eq!(context_window("o3-mini", None), 200_000);
        assert_eq!(context_window("claude-sonnet-4-5", None), 200_000);
        assert_eq!(context_window("claude-3-5-haiku-latest", None), 200_000);
        assert_eq!(context_window("claude-opus-4-20250514", None), 200_000);
        assert_eq!(context_window("claude-opus-4-6", None), 1_000_000);
        assert_eq!(
            context_window(
                "claude-sonnet-4-5",
                Some("files-api-2025-04-14,context-1m-2025-08-07")
            ),
            1_000_000
        );
        assert_eq!(
            context_window("gpt-4o", Some("context-1m-2025-08-07")),
            128_000
        );
        assert_eq!(context_window("mistral-large", None), UNKNOWN_WINDOW);
    }

    #[test]
    fn messages_are_read_in_one_pass_and_their_faults_named() {
        // Text contents count their JSON text, so the bound is the body's text and a little.
        let text = r#"{"model":"m","messages":[{"role":"system","content":"Be brief."}, {"role":"user","content":"hi","name":"x"}]}"#;
        let body = Body::parse(text.as_bytes()).unwrap();
        let fields = 8 + ("model".len() + 1 + 3) + ("messages".len() + 1);
        let messages = text.len() - r#"{"model":"m","messages":}"#.len();
        assert_eq!(
            prompt_bound(&body).unwrap().tokens,
            (fields + messages) as i64
        );
        for (bad, says) in [
            (
                r#"[{"role":"user","content":"x"},5]"#,
                "messages[1] must be an object",
            ),
            (
                r#"[{"role":"user","content":"x","content":"y"}]"#,
                "messages[0] must be",
            ),
            (r#"[]"#, "at least one message"),
            (r#"{"role":"user"}"#, "messages must be an array"),
        ] {
            let err = messages_bound(bad, &mut false).unwrap_err();
            assert!(err.contains(says), "{bad}: {err}");
        }
    }

    #[test]
    fn the_bound_is_never_below_the_tokens() {
        let text = "Could you summarise the discharge instructions? ".repeat(40);
        let body = Body::parse(
            format!(r#"{{"model":"gpt-4o","messages":[{{"role":"user","content":"{text}"}}],"tools":[{{"type":"function","function":{{"name":"lookup","parameters":{{"type":"object"}}}}}}]}}"#)
                .as_bytes(),
        )
        .unwrap();
        assert!(prompt_bound(&body).unwrap().tokens >= crate::llm::count_tokens(&text) + 10);
    }

    /// Lists of messages, of the shapes clients send.
    const LISTS: [&str; 5] = [
        r#"[{"role":"system","content":"Be brief."},{"role":"user","content":"Summarise the clinic's opening hours.","name":"x"}]"#,
        "[\n  {\"role\": \"user\", \"content\": \"Line one\\nline \\\"two\\\" \\u00e9 \\ud83d\\ude00\"},\n  {\"role\": \"assistant\", \"content\": null, \"tool_calls\": [{\"id\": \"t\", \"type\": \"function\", \"function\": {\"name\": \"f\", \"arguments\": \"{\\\"a\\\": [1, 2.5e3, true]}\"}}]},\n  {\"role\": \"tool\", \"tool_call_id\": \"t\", \"content\": \"42\"}\n]",
        r#"[{"role":"user","content":[{"type":"text","text":"What is this?"},{"type":"image_url","image_url":{"url":"data:image/png;base64,AAAA"}}]}]"#,
        r#"[{"role":"user","content":"Ça va — très bien 👍","x":{"content":[1]}},{"content":"y","role":"user"}]"#,
        r#"[{"role":"user","content":[{"type":"input_audio","input_audio":{"data":"QUJDREVG","format":"wav"}}]},{"role":"user","content":"z"}]"#,
    ];

    /// Wherever the one pass over the bytes answers, it answers as serde's reading does: for
    /// every valid list made from the ones above by changing one byte (to each of a set of
    /// bytes that matter in JSON) or removing one.
    #[test]
    fn a_changed_list_of_messages_is_bounded_as_serde_bounds_it() {
        let replacements = b" \t\n\"\\{}[],:0123456789-+.eEtrufalsn/xuA\x01\xc3";
        let (mut texts, mut answered) = (0, 0);
        for list in LISTS {
            assert_eq!(
                messages_bound(list, &mut false),
                serde_messages_bound(list, &mut false),
                "{list}"
            );
            for b in one_byte_changes(list.as_bytes(), replacements) {
                // The body's parse has read every list given here as JSON.
                let Ok(text) = std::str::from_utf8(&b) else {
                    continue;
                };
                if serde_json::from_str::<&RawValue>(text).is_err() {
                    continue;
                }
                texts += 1;
                if crate::llm::wire::plain_messages(text.as_bytes()) {
                    answered += 1;
                    assert_eq!(
                        Ok(text.len() as i64),
                        serde_messages_bound(text, &mut false),
                        "{text}"
                    );
                }
            }
        }
        assert!(
            texts > 1_000 && answered > texts / 4,
            "{answered} of {texts}"
        );
    }

    /// `bytes` with each byte replaced by each of `replacements`, and with each byte removed.
    fn one_byte_changes(bytes: &[u8], replacements: &[u8]) -> Vec<Vec<u8>> {
        let mut changed = Vec::new();
        for i in 0..bytes.len() {
            for &r in replacements {
                let mut b = bytes.to_vec();
                b[i] = r;
                changed.push(b);
            }
            let mut b = bytes.to_vec();
            b.remove(i);
            changed.push(b);
        }
        changed
    }

    /// A body's fields as text, in order.
    type Fields = Vec<(String, String)>;

    /// The fields of a body as text, and its prompt's bound.
    fn read_as(body: &Result<Body, String>) -> Option<(Fields, Result<i64, String>)> {
        let body = body.as_ref().ok()?;
        let fields = body
            .fields()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Some((fields, prompt_bound(body).map(|b| b.tokens)))
    }

    #[test]
    fn a_body_read_in_one_pass_is_read_as_serde_reads_it() {
        let bodies = [
            r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Hi \"you\" \u00e9"}],"max_tokens":64,"stream":false}"#,
            "{ \"model\" : \"m\",\n \"messages\" : [ {\"role\":\"system\",\"content\":\"a\\nb\"}, {\"content\":null} ],\"n\":2, \"x\":[1.5e3,-0,true,{\"y\":[]}] } ",
            r#"{"messages":[{"role":"user","content":[{"type":"text","text":"t"}]}],"model":"m","temperature":0.25}"#,
            r#"{"model":"m","input":"plain","tools":[{"type":"function","name":"f","parameters":{}}]}"#,
            r#"{}"#,
        ];
        let replacements = b" \t\n\"\\{}[],:0123456789-+.eEtrufalsn/xuA\x01\xc3";
        let (mut checked, mut one_pass) = (0, 0);
        for body in bodies {
            let changed = one_byte_changes(body.as_bytes(), replacements);
            for b in std::iter::once(body.as_bytes().to_vec()).chain(changed) {
                let Ok(text) = std::str::from_utf8(&b) else {
                    continue;
                };
                if !text.trim_start().starts_with('{') {
                    continue;
                }
                checked += 1;
                let fast = Body::parse(&b);
                let serde = Body::parse_by_serde(text);
                assert_eq!(fast.is_ok(), serde.is_ok(), "{text}");
                assert_eq!(read_as(&fast), read_as(&serde), "{text}");
                if crate::llm::wire::body_fields(&b).is_some() {
                    one_pass += 1;
                    let fast = fast.unwrap();
                    let messages = fast.raw("messages");
                    assert_eq!(
                        messages.is_some_and(|m| fast.known_plain(m)),
                        messages.is_some_and(|m| crate::llm::wire::plain_messages(m.as_bytes())),
                        "{text}"
                    );
                }
            }
        }
        assert!(
            checked > 3_000 && one_pass > checked / 4,
            "{one_pass} of {checked}"
        );
    }

    #[test]
    fn a_body_keeps_its_text_once_and_its_changes_in_place() {
        let text = "{ \"model\" : \"gpt-4o\",\n\"a\\u0062\":[1, 2],\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}] }";
        let mut body = Body::parse(text.as_bytes()).unwrap();
        assert_eq!(body.raw("ab"), Some("[1, 2]"));
        assert_eq!(body.raw("model"), Some("\"gpt-4o\""));
        body.set("model", "gpt-4o-mini");
        body.set("max_tokens", &5);
        assert_eq!(
            String::from_utf8(body.to_bytes()).unwrap(),
            r#"{"model":"gpt-4o-mini","ab":[1, 2],"messages":[{"role":"user","content":"hi"}],"max_tokens":5}"#
        );
        assert!(Body::parse(b"{\"a\":1} x").is_err());
        assert!(Body::parse(b"{\"a\":\"\xff\"}").is_err());
    }
}

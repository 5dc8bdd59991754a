//! What the simulator does with the request features beyond plain text, in both flavors:
//! tools (OpenAI `tools` / `tool_calls` / `tool` messages; Anthropic `tools` / `tool_use` /
//! `tool_result`), structured output (`response_format`), images, several choices (`n`) and
//! log probabilities. All deterministic:
//!
//! - **Tools.** When a request offers tools and its last message is the user's (not a tool's
//!   result), the reply is a call of the tool the request names (`tool_choice`), else of the
//!   first tool; unless the choice is `none`. Its arguments follow the tool's JSON schema
//!   ([`arguments`]): each string property gets the last word of the user's message, numbers
//!   1, booleans true, arrays and objects empty. When the last message is a tool's result the
//!   reply is text: `Simulated reply from <model>: the tool said <result>`.
//! - **Structured output.** `json_schema`: the reply is a JSON object built from the schema
//!   the same way; `json_object`: `{"reply": "<the usual reply>"}`.
//! - **Images.** Each image part (OpenAI `image_url`, Responses `input_image`, Anthropic
//!   `image`) costs
//!   [`IMAGE_TOKENS`] prompt tokens, and the reply starts `I see N image(s).`
//! - **Documents.** A PDF sent as data (OpenAI's `file` part, Responses' `input_file`,
//!   Anthropic's `document`) costs [`PAGE_TOKENS`] prompt tokens per page (its `/Type /Page`
//!   objects, at least one), as the providers count each page's text and an image of it: a few
//!   bytes of PDF can cost thousands of tokens.
//! - **`n`** (OpenAI): that many identical choices, each counted in the completion tokens.
//! - **`logprobs`** (OpenAI): each choice carries a log probability of -0.1 per word.

use serde_json::{json, Map, Value};

/// Prompt tokens of one image.
pub const IMAGE_TOKENS: i64 = 85;

/// Prompt tokens of one page of a document.
pub const PAGE_TOKENS: i64 = 1_500;

/// A tool a request offers: its name and the JSON schema of its arguments.
#[derive(Clone, Debug)]
pub struct Tool {
    pub name: String,
    pub schema: Value,
}

/// The features of a request beyond its text.
#[derive(Clone, Debug, Default)]
pub struct Extras {
    pub tools: Vec<Tool>,
    /// `Some(name)`: this tool must be called; `Some("")`: some tool must be.
    pub forced: Option<String>,
    /// `tool_choice: none`.
    pub no_tools: bool,
    /// The text of the tool results the request ends with.
    pub tool_result: Option<String>,
    pub schema: Option<Value>,
    pub json_object: bool,
    pub images: usize,
    /// The pages of the documents sent as data.
    pub pages: usize,
    pub choices: usize,
    pub logprobs: bool,
}

/// What the simulator answers.
#[derive(Clone, Debug, PartialEq)]
pub enum Answer {
    Text(String),
    /// A call of the named tool with these arguments.
    Tool(String, Value),
}

pub fn text_of(content: &Value) -> String {
    match content {
        Value::String(s) => s.clone(),
        Value::Array(parts) => parts
            .iter()
            .filter_map(|p| p["text"].as_str().or_else(|| p["content"].as_str()))
            .collect::<Vec<_>>()
            .join("\n"),
        _ => String::new(),
    }
}

impl Extras {
    /// The prompt tokens the images and documents cost.
    pub fn media_tokens(&self) -> i64 {
        self.images as i64 * IMAGE_TOKENS + self.pages as i64 * PAGE_TOKENS
    }
}

/// The pages of the documents among `messages`' parts: `data` of a part is its PDF's base64
/// text (a data URL's or bare).
fn count_pages(messages: &[Value], data: impl Fn(&Value) -> Option<&str>) -> usize {
    use base64::Engine as _;
    messages
        .iter()
        .filter_map(|m| m["content"].as_array())
        .flatten()
        .filter_map(data)
        .map(|text| {
            let text = text.split_once(";base64,").map_or(text, |(_, b)| b);
            let pdf = base64::engine::general_purpose::STANDARD
                .decode(text)
                .unwrap_or_default();
            let pages = (0..pdf.len())
                .filter(|&i| {
                    let Some(rest) = pdf[i..].strip_prefix(b"/Type") else {
                        return false;
                    };
                    let rest = rest.trim_ascii_start();
                    rest.starts_with(b"/Page") && rest.get(5) != Some(&b's')
                })
                .count();
            pages.max(1)
        })
        .sum()
}

fn count_images(messages: &[Value], kinds: &[&str]) -> usize {
    messages
        .iter()
        .filter_map(|m| m["content"].as_array())
        .flatten()
        .filter(|p| kinds.contains(&p["type"].as_str().unwrap_or_default()))
        .count()
}

/// The tools in `list` whose definition (`def` of each: its `name` and `parameters`) names one.
fn function_tools(list: &Value, def: impl Fn(&Value) -> &Value) -> Vec<Tool> {
    list.as_array()
        .into_iter()
        .flatten()
        .filter_map(|t| {
            let d = def(t);
            Some(Tool {
                name: d["name"].as_str()?.to_string(),
                schema: d["parameters"].clone(),
            })
        })
        .collect()
}

/// What `tool_choice` asks: the tool that must be called (`Some("")`: any), and whether none
/// may be; a forced tool's `name` is in `named` of the choice.
fn tool_choice(choice: &Value, named: impl Fn(&Value) -> &Value) -> (Option<String>, bool) {
    match choice {
        Value::String(s) if s == "none" => (None, true),
        Value::String(s) if s == "required" => (Some(String::new()), false),
        v => (named(v)["name"].as_str().map(str::to_string), false),
    }
}

/// The features of an OpenAI chat body.
pub fn openai(req: &Value) -> Extras {
    let messages = req["messages"].as_array().cloned().unwrap_or_default();
    let tools = function_tools(&req["tools"], |t| &t["function"]);
    let (forced, no_tools) = tool_choice(&req["tool_choice"], |c| &c["function"]);
    let trailing: Vec<String> = messages
        .iter()
        .rev()
        .take_while(|m| m["role"] == "tool")
        .map(|m| text_of(&m["content"]))
        .collect();
    let format = &req["response_format"];
    Extras {
        tools,
        forced,
        no_tools,
        tool_result: (!trailing.is_empty())
            .then(|| trailing.into_iter().rev().collect::<Vec<_>>().join(" ")),
        schema: (format["type"] == "json_schema").then(|| format["json_schema"]["schema"].clone()),
        json_object: format["type"] == "json_object",
        images: count_images(&messages, &["image_url"]),
        pages: count_pages(&messages, |p| {
            (p["type"] == "file").then(|| p["file"]["file_data"].as_str())?
        }),
        choices: req["n"].as_u64().unwrap_or(1).clamp(1, 128) as usize,
        logprobs: req["logprobs"].as_bool().unwrap_or(false),
    }
}

/// The features of a Responses API body (`input` items, `tools`, `text.format`).
pub fn responses(req: &Value) -> Extras {
    let items = req["input"].as_array().cloned().unwrap_or_default();
    // Function tools only (a custom tool has no schema to answer by).
    let tools = function_tools(&req["tools"], |t| {
        if t["type"] == "function" {
            t
        } else {
            &Value::Null
        }
    });
    let (forced, no_tools) = tool_choice(&req["tool_choice"], |c| c);
    let trailing: Vec<String> = items
        .iter()
        .rev()
        .take_while(|i| i["type"] == "function_call_output")
        .map(|i| text_of(&i["output"]))
        .collect();
    let format = &req["text"]["format"];
    Extras {
        tools,
        forced,
        no_tools,
        tool_result: (!trailing.is_empty())
            .then(|| trailing.into_iter().rev().collect::<Vec<_>>().join(" ")),
        schema: (format["type"] == "json_schema").then(|| format["schema"].clone()),
        json_object: format["type"] == "json_object",
        images: count_images(&items, &["input_image"]),
        pages: count_pages(&items, |p| {
            (p["type"] == "input_file").then(|| p["file_data"].as_str())?
        }),
        choices: 1,
        logprobs: false,
    }
}

/// The features of an Anthropic messages body.
pub fn anthropic(req: &Value) -> Extras {
    let messages = req["messages"].as_array().cloned().unwrap_or_default();
    let tools = req["tools"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|t| {
            Some(Tool {
                name: t["name"].as_str()?.to_string(),
                schema: t["input_schema"].clone(),
            })
        })
        .collect();
    let choice = &req["tool_choice"];
    let (forced, no_tools) = match choice["type"].as_str() {
        Some("none") => (None, true),
        Some("any") => (Some(String::new()), false),
        Some("tool") => (choice["name"].as_str().map(str::to_string), false),
        _ => (None, false),
    };
    let results: Vec<String> = messages
        .last()
        .and_then(|m| m["content"].as_array())
        .into_iter()
        .flatten()
        .filter(|b| b["type"] == "tool_result")
        .map(|b| text_of(&b["content"]))
        .collect();
    Extras {
        tools,
        forced,
        no_tools,
        tool_result: (!results.is_empty()).then(|| results.join(" ")),
        images: count_images(&messages, &["image"]),
        pages: count_pages(&messages, |b| {
            (b["type"] == "document" && b["source"]["type"] == "base64")
                .then(|| b["source"]["data"].as_str())?
        }),
        choices: 1,
        ..Extras::default()
    }
}

/// A value following `schema`, each string being `word`.
pub fn arguments(schema: &Value, word: &str) -> Value {
    match schema["type"].as_str() {
        Some("object") | None if schema["properties"].is_object() => {
            let mut out = Map::new();
            for (name, prop) in schema["properties"].as_object().into_iter().flatten() {
                out.insert(name.clone(), arguments(prop, word));
            }
            Value::Object(out)
        }
        Some("object") | None => json!({}),
        Some("string") => match schema["enum"].as_array().and_then(|e| e.first()) {
            Some(first) => first.clone(),
            None => json!(word),
        },
        Some("integer" | "number") => json!(1),
        Some("boolean") => json!(true),
        Some("array") => json!([]),
        Some(_) => Value::Null,
    }
}

/// The last word of the user's message, without punctuation or directives (`Oslo` from
/// `What is the weather in Oslo?`).
pub fn last_word(text: &str) -> String {
    text.split_whitespace()
        .rfind(|w| !(w.starts_with("[sim:") && w.ends_with(']')))
        .unwrap_or("sim")
        .trim_matches(|c: char| !c.is_alphanumeric())
        .to_string()
}

impl Extras {
    /// What to answer, given the usual reply text for the conversation.
    pub fn answer(&self, model: &str, last_user: &str, usual: String) -> Answer {
        if let Some(result) = &self.tool_result {
            let text = format!("Simulated reply from {model}: the tool said {result}");
            return Answer::Text(text.split_whitespace().collect::<Vec<_>>().join(" "));
        }
        if !self.tools.is_empty() && !self.no_tools {
            let tool = match self.forced.as_deref() {
                Some(name) if !name.is_empty() => self.tools.iter().find(|t| t.name == name),
                _ => self.tools.first(),
            };
            if let Some(tool) = tool {
                return Answer::Tool(
                    tool.name.clone(),
                    arguments(&tool.schema, &last_word(last_user)),
                );
            }
        }
        if let Some(schema) = &self.schema {
            return Answer::Text(arguments(schema, &last_word(last_user)).to_string());
        }
        if self.json_object {
            return Answer::Text(json!({ "reply": usual }).to_string());
        }
        if self.images > 0 {
            let s = if self.images == 1 { "" } else { "s" };
            return Answer::Text(format!("I see {} image{s}. {usual}", self.images));
        }
        Answer::Text(usual)
    }
}

/// A char boundary near the middle of `s` (where a streamed argument text is split in two).
pub fn middle(s: &str) -> usize {
    (0..=s.len() / 2)
        .rev()
        .find(|&i| s.is_char_boundary(i))
        .unwrap_or(0)
}

//! The simulated chat, messages and embeddings endpoints answer in the providers' wire formats,
//! with the documented deterministic numbers and directives.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use testkit::{count_tokens, limit_reply, prompt_tokens, reply_text, SimOptions};

async fn sim() -> SocketAddr {
    testkit::spawn("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap()
}

fn openai(addr: SocketAddr, path: &str, body: Value) -> reqwest::RequestBuilder {
    reqwest::Client::new()
        .post(format!("http://{addr}{path}"))
        .bearer_auth("sk-test-1234")
        .json(&body)
}

fn anthropic(addr: SocketAddr, body: Value) -> reqwest::RequestBuilder {
    reqwest::Client::new()
        .post(format!("http://{addr}/anthropic/v1/messages"))
        .header("x-api-key", "sk-ant-test-1234")
        .header("anthropic-version", "2023-06-01")
        .json(&body)
}

/// The whole body of a streamed response and whether it ended in an error.
async fn read_stream(mut res: reqwest::Response) -> (String, bool) {
    let mut body = Vec::new();
    loop {
        match res.chunk().await {
            Ok(Some(bytes)) => body.extend_from_slice(&bytes),
            Ok(None) => return (String::from_utf8(body).unwrap(), false),
            Err(_) => return (String::from_utf8(body).unwrap(), true),
        }
    }
}

/// The `data:` payloads of an SSE body, with their `event:` names, read by the gateway's own
/// parser.
fn events(body: &str) -> Vec<(Option<String>, String)> {
    tessera_core::llm::wire::sse_events(body)
        .into_iter()
        .map(|e| (e.event, e.data))
        .collect()
}

fn chat(text: &str) -> Value {
    json!({
        "model": "gpt-4o-mini",
        "messages": [
            { "role": "system", "content": "be brief" },
            { "role": "user", "content": text },
        ],
    })
}

#[tokio::test]
async fn openai_completion_shape_and_usage() {
    let addr = sim().await;
    let text = "hello there general kenobi";
    let res = openai(addr, "/v1/chat/completions", chat(text))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();
    let reply = reply_text("gpt-4o-mini", text);
    assert_eq!(
        reply,
        "Simulated reply from gpt-4o-mini: hello there general kenobi"
    );
    assert!(body["id"].as_str().unwrap().starts_with("chatcmpl-sim-"));
    assert_eq!(body["object"], "chat.completion");
    assert!(body["created"].as_u64().unwrap() > 0);
    assert_eq!(body["model"], "gpt-4o-mini");
    let choice = &body["choices"][0];
    assert_eq!(choice["index"], 0);
    assert_eq!(choice["message"]["role"], "assistant");
    assert_eq!(choice["message"]["content"], reply.as_str());
    assert_eq!(choice["finish_reason"], "stop");
    assert!(choice["logprobs"].is_null());
    let prompt = prompt_tokens(&["be brief", text]);
    assert_eq!(prompt, (3 + 2) + (3 + 4) + 3);
    let usage = &body["usage"];
    assert_eq!(usage["prompt_tokens"], prompt);
    assert_eq!(usage["completion_tokens"], count_tokens(&reply));
    assert_eq!(usage["total_tokens"], prompt + count_tokens(&reply));
    assert_eq!(usage["prompt_tokens_details"]["cached_tokens"], 0);

    // Content as parts, and unknown fields, are accepted.
    let res = openai(
        addr,
        "/v1/chat/completions",
        json!({
            "model": "gpt-4o",
            "temperature": 0.2,
            "messages": [{ "role": "user", "content": [
                { "type": "text", "text": "one two" },
                { "type": "text", "text": "three" },
            ] }],
        }),
    )
    .send()
    .await
    .unwrap();
    let body: Value = res.json().await.unwrap();
    assert_eq!(
        body["choices"][0]["message"]["content"],
        "Simulated reply from gpt-4o: one two three"
    );
    assert_eq!(
        body["usage"]["prompt_tokens"],
        prompt_tokens(&["one two\nthree"])
    );
}

#[tokio::test]
async fn openai_bad_requests_and_keys() {
    let addr = sim().await;
    let res = openai(addr, "/v1/chat/completions", json!({ "messages": [] }))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["error"]["type"], "invalid_request_error");
    assert_eq!(body["error"]["param"], "model");

    let res = openai(addr, "/v1/chat/completions", json!({ "model": "gpt-4o" }))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["error"]["param"], "messages");

    for path in ["/v1/chat/completions", "/v1/embeddings"] {
        let res = reqwest::Client::new()
            .post(format!("http://{addr}{path}"))
            .bearer_auth("sk-invalid-0000")
            .json(&chat("hi"))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 401);
        let body: Value = res.json().await.unwrap();
        assert_eq!(body["error"]["code"], "invalid_api_key");
    }
    let res = reqwest::Client::new()
        .post(format!("http://{addr}/anthropic/v1/messages"))
        .header("x-api-key", "sk-ant-invalid")
        .header("anthropic-version", "2023-06-01")
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["error"]["type"], "authentication_error");
}

#[tokio::test]
async fn openai_stream_with_usage() {
    let addr = sim().await;
    let text = "stream me a few words please";
    let mut req = chat(text);
    req["stream"] = json!(true);
    req["stream_options"] = json!({ "include_usage": true });
    let res = openai(addr, "/v1/chat/completions", req)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-type"], "text/event-stream");
    assert_eq!(res.headers()["cache-control"], "no-cache");
    let (body, failed) = read_stream(res).await;
    assert!(!failed);
    let events = events(&body);
    assert_eq!(events.last().unwrap().1, "[DONE]");
    let chunks: Vec<Value> = events[..events.len() - 1]
        .iter()
        .map(|(_, d)| serde_json::from_str(d).unwrap())
        .collect();
    let reply = reply_text("gpt-4o-mini", text);
    // role chunk + one per word + finish chunk + usage chunk
    assert_eq!(chunks.len(), 1 + count_tokens(&reply) as usize + 2);
    for c in &chunks {
        assert_eq!(c["object"], "chat.completion.chunk");
        assert!(c["id"].as_str().unwrap().starts_with("chatcmpl-sim-"));
        assert_eq!(c["id"], chunks[0]["id"]);
        assert_eq!(c["model"], "gpt-4o-mini");
        assert!(c["created"].is_u64());
    }
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    assert_eq!(chunks[0]["choices"][0]["delta"]["content"], "");
    let (usage_chunk, rest) = chunks.split_last().unwrap();
    for c in rest {
        assert!(c.get("usage").unwrap().is_null());
    }
    let streamed: String = rest
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(streamed, reply);
    let last = rest.last().unwrap();
    assert_eq!(last["choices"][0]["finish_reason"], "stop");
    assert_eq!(last["choices"][0]["delta"], json!({}));
    assert_eq!(usage_chunk["choices"], json!([]));
    let prompt = prompt_tokens(&["be brief", text]);
    assert_eq!(usage_chunk["usage"]["prompt_tokens"], prompt);
    assert_eq!(
        usage_chunk["usage"]["completion_tokens"],
        count_tokens(&reply)
    );
    assert_eq!(
        usage_chunk["usage"]["total_tokens"],
        prompt + count_tokens(&reply)
    );

    // The same request unstreamed gives the same text.
    let body: Value = openai(addr, "/v1/chat/completions", chat(text))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(body["choices"][0]["message"]["content"], streamed.as_str());
}

async fn stream_chunks(addr: SocketAddr, req: Value) -> Vec<Value> {
    let res = openai(addr, "/v1/chat/completions", req)
        .send()
        .await
        .unwrap();
    let (body, failed) = read_stream(res).await;
    assert!(!failed);
    let events = events(&body);
    assert_eq!(events.last().unwrap().1, "[DONE]");
    events[..events.len() - 1]
        .iter()
        .map(|(_, d)| serde_json::from_str(d).unwrap())
        .collect()
}

#[tokio::test]
async fn openai_stream_without_usage() {
    let addr = sim().await;
    let mut req = chat("no usage asked");
    req["stream"] = json!(true);
    let chunks = stream_chunks(addr, req).await;
    assert!(chunks.iter().all(|c| c.get("usage").is_none()));
    assert!(chunks
        .iter()
        .all(|c| c["choices"].as_array().unwrap().len() == 1));
    assert_eq!(
        chunks.last().unwrap()["choices"][0]["finish_reason"],
        "stop"
    );

    // [sim:no_usage]: asked for, never sent.
    let mut req = chat("usage asked [sim:no_usage]");
    req["stream"] = json!(true);
    req["stream_options"] = json!({ "include_usage": true });
    let chunks = stream_chunks(addr, req).await;
    assert!(chunks
        .iter()
        .all(|c| c.get("usage").is_none_or(Value::is_null)));
    assert!(chunks
        .iter()
        .all(|c| c["choices"].as_array().unwrap().len() == 1));
}

#[tokio::test]
async fn fail_midstream_cuts_the_connection() {
    let addr = sim().await;
    let mut req = chat("break please [sim:fail_midstream] now");
    req["stream"] = json!(true);
    req["stream_options"] = json!({ "include_usage": true });
    let res = openai(addr, "/v1/chat/completions", req)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let (body, failed) = read_stream(res).await;
    assert!(failed, "the stream should end in an error: {body:?}");
    assert!(!body.contains("[DONE]"));
    assert!(!body.contains("finish_reason\":\"stop"));

    let res = openai(
        addr,
        "/v1/chat/completions",
        chat("break [sim:fail_midstream]"),
    )
    .send()
    .await
    .unwrap();
    assert_eq!(res.status(), 500);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["error"]["type"], "server_error");

    let res = anthropic(
        addr,
        json!({ "model": "claude-sonnet-4-0", "max_tokens": 100, "stream": true,
            "messages": [{ "role": "user", "content": "[sim:fail_midstream] go" }] }),
    )
    .send()
    .await
    .unwrap();
    assert_eq!(res.status(), 200);
    let (body, failed) = read_stream(res).await;
    assert!(failed);
    assert!(!body.contains("message_stop"));
}

#[tokio::test]
async fn flaky_then_succeeds_and_stats_count() {
    let addr = sim().await;
    let http = reqwest::Client::new();
    let stats = || async {
        let v: Value = http
            .get(format!("http://{addr}/sim/stats"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        v["requests"].as_u64().unwrap()
    };
    assert_eq!(stats().await, 0);
    let req = chat("flaky test one [sim:flaky=2]");
    let mut statuses = Vec::new();
    for _ in 0..3 {
        let res = openai(addr, "/v1/chat/completions", req.clone())
            .send()
            .await
            .unwrap();
        statuses.push(res.status().as_u16());
        if res.status() == 503 {
            let body: Value = res.json().await.unwrap();
            assert!(body["error"]["message"].is_string());
        }
    }
    assert_eq!(statuses, [503, 503, 200]);
    assert_eq!(stats().await, 3);

    // Anthropic, its own error shape.
    let req = json!({ "model": "claude-sonnet-4-0", "max_tokens": 10,
        "messages": [{ "role": "user", "content": "anthropic flaky [sim:flaky=1]" }] });
    let res = anthropic(addr, req.clone()).send().await.unwrap();
    assert_eq!(res.status(), 503);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["type"], "error");
    assert_eq!(body["error"]["type"], "overloaded_error");
    assert_eq!(anthropic(addr, req).send().await.unwrap().status(), 200);
    assert_eq!(stats().await, 5);
}

#[tokio::test]
async fn status_directive() {
    let addr = sim().await;
    let res = openai(addr, "/v1/chat/completions", chat("x [sim:status=429]"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 429);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["error"]["type"], "rate_limit_error");

    for (code, kind) in [
        (529, "overloaded_error"),
        (500, "api_error"),
        (400, "invalid_request_error"),
    ] {
        let res = anthropic(
            addr,
            json!({ "model": "claude-sonnet-4-0", "max_tokens": 10,
                "messages": [{ "role": "user", "content": format!("y [sim:status={code}]") }] }),
        )
        .send()
        .await
        .unwrap();
        assert_eq!(res.status().as_u16(), code);
        let body: Value = res.json().await.unwrap();
        assert_eq!(body["error"]["type"], kind);
    }
}

#[tokio::test]
async fn max_tokens_truncates() {
    let addr = sim().await;
    let text = "please say many things [sim:words=40]";
    assert_eq!(count_tokens(&reply_text("gpt-4o-mini", text)), 40);
    let mut req = chat(text);
    req["max_tokens"] = json!(5);
    let body: Value = openai(addr, "/v1/chat/completions", req)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        body["choices"][0]["message"]["content"],
        "word1 word2 word3 word4 word5"
    );
    assert_eq!(body["choices"][0]["finish_reason"], "length");
    assert_eq!(body["usage"]["completion_tokens"], 5);

    let mut req = chat(text);
    req["max_completion_tokens"] = json!(7);
    req["stream"] = json!(true);
    let chunks = stream_chunks(addr, req).await;
    let streamed: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(
        streamed,
        limit_reply(&reply_text("gpt-4o-mini", text), Some(7)).0
    );
    assert_eq!(
        chunks.last().unwrap()["choices"][0]["finish_reason"],
        "length"
    );

    // Enough room: no truncation.
    let mut req = chat(text);
    req["max_tokens"] = json!(40);
    let body: Value = openai(addr, "/v1/chat/completions", req)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(body["choices"][0]["finish_reason"], "stop");
    assert_eq!(body["usage"]["completion_tokens"], 40);
}

#[tokio::test]
async fn anthropic_message() {
    let addr = sim().await;
    let text = "tell me about the sea";
    let res = anthropic(
        addr,
        json!({
            "model": "claude-3-5-haiku-latest",
            "max_tokens": 1024,
            "system": [{ "type": "text", "text": "You are a sailor." }],
            "messages": [
                { "role": "user", "content": "hi" },
                { "role": "assistant", "content": [{ "type": "text", "text": "ahoy there" }] },
                { "role": "user", "content": [{ "type": "text", "text": text }] },
            ],
        }),
    )
    .send()
    .await
    .unwrap();
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();
    let reply = reply_text("claude-3-5-haiku-latest", text);
    assert!(body["id"].as_str().unwrap().starts_with("msg_sim_"));
    assert_eq!(body["type"], "message");
    assert_eq!(body["role"], "assistant");
    assert_eq!(body["model"], "claude-3-5-haiku-latest");
    assert_eq!(body["content"], json!([{ "type": "text", "text": reply }]));
    assert_eq!(body["stop_reason"], "end_turn");
    assert!(body["stop_sequence"].is_null());
    let input = prompt_tokens(&["You are a sailor.", "hi", "ahoy there", text]);
    assert_eq!(input, (3 + 4) + (3 + 1) + (3 + 2) + (3 + 5) + 3);
    assert_eq!(body["usage"]["input_tokens"], input);
    assert_eq!(body["usage"]["output_tokens"], count_tokens(&reply));
    assert_eq!(body["usage"]["cache_creation_input_tokens"], 0);
    assert_eq!(body["usage"]["cache_read_input_tokens"], 0);

    let res = anthropic(
        addr,
        json!({ "model": "claude-sonnet-4-0", "max_tokens": 3,
            "messages": [{ "role": "user", "content": text }] }),
    )
    .send()
    .await
    .unwrap();
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["stop_reason"], "max_tokens");
    assert_eq!(body["usage"]["output_tokens"], 3);
    assert_eq!(body["content"][0]["text"], "Simulated reply from");
}

#[tokio::test]
async fn anthropic_requires_max_tokens() {
    let addr = sim().await;
    let res = anthropic(
        addr,
        json!({ "model": "claude-sonnet-4-0",
            "messages": [{ "role": "user", "content": "hi" }] }),
    )
    .send()
    .await
    .unwrap();
    assert_eq!(res.status(), 400);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["type"], "error");
    assert_eq!(body["error"]["type"], "invalid_request_error");
    assert_eq!(body["error"]["message"], "max_tokens: Field required");
}

#[tokio::test]
async fn anthropic_stream() {
    let addr = sim().await;
    let text = "sing a short song";
    let res = anthropic(
        addr,
        json!({ "model": "claude-sonnet-4-0", "max_tokens": 100, "stream": true,
            "system": "Be musical.",
            "messages": [{ "role": "user", "content": text }] }),
    )
    .send()
    .await
    .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-type"], "text/event-stream");
    let (body, failed) = read_stream(res).await;
    assert!(!failed);
    let events: Vec<(String, Value)> = events(&body)
        .into_iter()
        .map(|(e, d)| (e.unwrap(), serde_json::from_str(&d).unwrap()))
        .collect();
    for (name, data) in &events {
        assert_eq!(data["type"], name.as_str());
    }
    let reply = reply_text("claude-sonnet-4-0", text);
    let words = count_tokens(&reply) as usize;
    let mut expected = vec!["message_start", "content_block_start", "ping"];
    expected.extend(std::iter::repeat_n("content_block_delta", words));
    expected.extend(["content_block_stop", "message_delta", "message_stop"]);
    let names: Vec<&str> = events.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, expected);

    let start = &events[0].1["message"];
    assert!(start["id"].as_str().unwrap().starts_with("msg_sim_"));
    assert_eq!(start["content"], json!([]));
    assert_eq!(
        start["usage"]["input_tokens"],
        prompt_tokens(&["Be musical.", text])
    );
    assert_eq!(start["usage"]["output_tokens"], 1);
    assert_eq!(
        events[1].1["content_block"],
        json!({ "type": "text", "text": "" })
    );
    let streamed: String = events
        .iter()
        .filter(|(n, _)| n == "content_block_delta")
        .map(|(_, d)| {
            assert_eq!(d["delta"]["type"], "text_delta");
            d["delta"]["text"].as_str().unwrap().to_string()
        })
        .collect();
    assert_eq!(streamed, reply);
    let delta = &events[events.len() - 2].1;
    assert_eq!(delta["delta"]["stop_reason"], "end_turn");
    assert!(delta["delta"]["stop_sequence"].is_null());
    assert_eq!(delta["usage"]["output_tokens"], words as i64);
}

#[tokio::test]
async fn embeddings_are_deterministic_and_normalised() {
    let addr = sim().await;
    let get = |body: Value| async move {
        let res = openai(addr, "/v1/embeddings", body).send().await.unwrap();
        assert_eq!(res.status(), 200);
        res.json::<Value>().await.unwrap()
    };
    let a =
        get(json!({ "model": "text-embedding-3-small", "input": ["the cat sat", "a dog"] })).await;
    assert_eq!(a["object"], "list");
    assert_eq!(a["model"], "text-embedding-3-small");
    assert_eq!(a["usage"]["prompt_tokens"], 5);
    assert_eq!(a["usage"]["total_tokens"], 5);
    let data = a["data"].as_array().unwrap();
    assert_eq!(data.len(), 2);
    for (i, d) in data.iter().enumerate() {
        assert_eq!(d["object"], "embedding");
        assert_eq!(d["index"], i);
        let v: Vec<f64> = d["embedding"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap())
            .collect();
        assert_eq!(v.len(), 16);
        let norm: f64 = v.iter().map(|x| x * x).sum::<f64>().sqrt();
        assert!((norm - 1.0).abs() < 1e-4, "norm {norm}");
    }
    assert_ne!(data[0]["embedding"], data[1]["embedding"]);

    let b = get(json!({ "model": "text-embedding-3-small", "input": "the cat sat" })).await;
    assert_eq!(b["data"][0]["embedding"], data[0]["embedding"]);
    let served: Vec<f32> = b["data"][0]["embedding"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect();
    assert_eq!(served, testkit::embedding("the cat sat", 16));

    let c = get(json!({ "model": "m", "input": "the cat sat", "dimensions": 64 })).await;
    assert_eq!(c["data"][0]["embedding"].as_array().unwrap().len(), 64);

    let d = get(json!({ "model": "m", "input": "x", "encoding_format": "base64" })).await;
    assert!(d["data"][0]["embedding"].is_string());

    let res = openai(addr, "/v1/embeddings", json!({ "model": "m" }))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
}

#[tokio::test]
async fn latency_and_chunk_delays() {
    let addr = testkit::spawn_with(
        "127.0.0.1:0".parse().unwrap(),
        SimOptions {
            latency_ms: 0,
            chunk_ms: 10,
            ..SimOptions::default()
        },
    )
    .await
    .unwrap();
    let started = Instant::now();
    let res = openai(addr, "/v1/chat/completions", chat("slow [sim:latency=150]"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert!(started.elapsed() >= Duration::from_millis(150));

    // 10 words: role, 10 words, finish, [DONE] = 13 events, 12 gaps of 10 ms.
    let mut req = chat("[sim:words=10]");
    req["stream"] = json!(true);
    let started = Instant::now();
    let chunks = stream_chunks(addr, req).await;
    assert_eq!(chunks.len(), 12);
    assert!(started.elapsed() >= Duration::from_millis(120));
}

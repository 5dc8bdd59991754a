//! `/v1/chat/completions` through the whole gateway (API key, budget, provider key, call,
//! settle, ledger) against the provider simulator, over real HTTP.

mod common;

use std::time::Duration;

use common::{chat, TestApp};
use serde_json::{json, Value};
use sqlx::PgPool;
use tessera_core::Provider;
use tessera_core::TenantId;

/// The `data:` payloads of an event stream.
fn sse_data(text: &str) -> Vec<String> {
    common::sse(text).into_iter().map(|e| e.data).collect()
}

/// An OpenAI stream's chunks (it must end with `[DONE]`) and the first choice's text.
async fn openai_stream(res: reqwest::Response) -> (Vec<Value>, String) {
    let data = sse_data(&res.text().await.unwrap());
    assert_eq!(data.last().unwrap(), "[DONE]");
    let chunks: Vec<Value> = data[..data.len() - 1]
        .iter()
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    let text = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    (chunks, text)
}

async fn ledger(app: &TestApp, tenant: TenantId) -> tessera_core::metering::MonthUsage {
    app.flush_ledger().await;
    app.ledger_usage(tenant).await
}

async fn live(app: &TestApp, tenant: TenantId) -> (tessera_core::metering::MonthUsage, i64) {
    app.live_usage(tenant).await
}

/// The clinic's allowance of tokens this month (a clinic without a subscription has one).
async fn allowance(app: &TestApp, tenant: TenantId) -> i64 {
    app.services
        .gateway
        .limits(tenant)
        .await
        .unwrap()
        .token_limit()
        .expect("a clinic without a subscription stays within its plan's allowance")
}

async fn estimated_events(app: &TestApp, tenant: TenantId) -> Vec<(bool, bool, bool, i64)> {
    let mut tx = app.services.db.begin_tenant(tenant).await.unwrap();
    let rows = sqlx::query_as(
        "SELECT streamed, estimated, cancelled, completion_tokens FROM usage_events ORDER BY occurred_at",
    )
    .fetch_all(&mut *tx)
    .await
    .unwrap();
    tx.commit().await.unwrap();
    rows
}

async fn sim_requests(app: &TestApp) -> i64 {
    let stats: Value = reqwest::get(format!("http://{}/sim/stats", app.sim))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    stats["requests"].as_i64().unwrap()
}

#[sqlx::test(migrations = "../migrations")]
async fn a_json_completion_answers_in_openais_shape_and_is_recorded(pool: PgPool) {
    let app = TestApp::spawn(&pool).await;
    let c = app.api_clinic("Json Clinic").await;

    let res = chat(
        &app,
        c.token(),
        json!({ "model": "gpt-4o-mini", "messages": [
            { "role": "system", "content": "Be brief." },
            { "role": "user", "content": "What is triage?" }
        ] }),
    )
    .await;

    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["object"], "chat.completion");
    assert_eq!(
        body["choices"][0]["message"]["content"],
        testkit::reply_text("gpt-4o-mini", "What is triage?")
    );
    let prompt = testkit::prompt_tokens(&["Be brief.", "What is triage?"]);
    let completion = testkit::count_tokens(&testkit::reply_text("gpt-4o-mini", "What is triage?"));
    assert_eq!(body["usage"]["prompt_tokens"], prompt);
    assert_eq!(body["usage"]["completion_tokens"], completion);
    assert_eq!(body["usage"]["total_tokens"], prompt + completion);
    let recorded = ledger(&app, c.tenant).await;
    assert_eq!(
        (recorded.tokens, recorded.requests),
        (prompt + completion, 1)
    );
    assert!(recorded.cost_micro_usd > 0, "gpt-4o-mini has a price");
    let (counted, reserved) = live(&app, c.tenant).await;
    assert_eq!((counted.tokens, reserved), (prompt + completion, 0));
}

#[sqlx::test(migrations = "../migrations")]
async fn streamed_usage_is_reported_and_recorded(pool: PgPool) {
    let app = TestApp::spawn(&pool).await;
    let c = app.api_clinic("Stream Clinic").await;

    let res = chat(
        &app,
        c.token(),
        json!({ "model": "gpt-4o", "stream": true, "stream_options": { "include_usage": true },
                "messages": [{ "role": "user", "content": "Summarise the handover notes" }] }),
    )
    .await;

    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-type"], "text/event-stream");
    let (chunks, text) = openai_stream(res).await;
    let expected = testkit::reply_text("gpt-4o", "Summarise the handover notes");
    assert_eq!(text, expected);
    let usage = &chunks.last().unwrap()["usage"];
    assert_eq!(chunks.last().unwrap()["choices"], json!([]));
    let total = testkit::prompt_tokens(&["Summarise the handover notes"])
        + testkit::count_tokens(&expected);
    assert_eq!(usage["total_tokens"], total);

    let recorded = ledger(&app, c.tenant).await;
    assert_eq!((recorded.tokens, recorded.requests), (total, 1));
    assert!(estimated_events(&app, c.tenant).await[0].0);
    assert!(!estimated_events(&app, c.tenant).await[0].1);
}

#[sqlx::test(migrations = "../migrations")]
async fn a_stream_without_usage_is_counted_and_marked_estimated(pool: PgPool) {
    let app = TestApp::spawn(&pool).await;
    let c = app.api_clinic("Estimate Clinic").await;

    let res = chat(
        &app,
        c.token(),
        json!({ "model": "gpt-4o", "stream": true,
                "messages": [{ "role": "user", "content": "hello [sim:no_usage]" }] }),
    )
    .await;
    let data = sse_data(&res.text().await.unwrap());
    assert_eq!(data.last().unwrap(), "[DONE]");
    // Not asked for: no usage chunk reaches the client.
    assert!(data.iter().all(|d| !d.contains("\"usage\":{")));

    let recorded = ledger(&app, c.tenant).await;
    assert_eq!(recorded.requests, 1);
    let events = estimated_events(&app, c.tenant).await;
    assert!(events[0].1, "marked estimated");
    assert!(events[0].3 > 0, "never zero for a reply with text");
}

#[sqlx::test(migrations = "../migrations")]
async fn anthropic_models_go_to_anthropic_in_json_and_stream(pool: PgPool) {
    let app = TestApp::spawn(&pool).await;
    let c = app.api_clinic("Anthropic Clinic").await;
    let messages = json!([
        { "role": "system", "content": "You are a clinic assistant." },
        { "role": "user", "content": "List the opening hours" }
    ]);
    let expected_prompt =
        testkit::prompt_tokens(&["You are a clinic assistant.", "List the opening hours"]);
    let reply = testkit::reply_text("claude-3-5-haiku-latest", "List the opening hours");

    let res = chat(
        &app,
        c.token(),
        json!({ "model": "claude-3-5-haiku-latest", "max_tokens": 100, "messages": messages }),
    )
    .await;
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["choices"][0]["message"]["content"], reply);
    assert_eq!(body["usage"]["prompt_tokens"], expected_prompt);
    assert_eq!(body["choices"][0]["finish_reason"], "stop");

    let res = chat(
        &app,
        c.token(),
        json!({ "model": "claude-3-5-haiku-latest", "stream": true,
        "stream_options": { "include_usage": true }, "messages": messages }),
    )
    .await;
    let data = sse_data(&res.text().await.unwrap());
    let usage: Value = serde_json::from_str(&data[data.len() - 2]).unwrap();
    assert_eq!(usage["usage"]["prompt_tokens"], expected_prompt);
    assert_eq!(
        usage["usage"]["completion_tokens"],
        testkit::count_tokens(&reply)
    );

    let recorded = ledger(&app, c.tenant).await;
    assert_eq!(recorded.requests, 2);
    assert_eq!(
        recorded.tokens,
        2 * (expected_prompt + testkit::count_tokens(&reply))
    );
}

#[sqlx::test(migrations = "../migrations")]
async fn failed_calls_are_not_charged(pool: PgPool) {
    let app = TestApp::spawn(&pool).await;
    let c = app.api_clinic("Failure Clinic").await;

    // A provider outage: retried (3 attempts in all), then a clear 502.
    let before = sim_requests(&app).await;
    let res = chat(
        &app,
        c.token(),
        json!({ "model": "gpt-4o-mini",
        "messages": [{ "role": "user", "content": "hi [sim:status=503]" }] }),
    )
    .await;
    assert_eq!(res.status(), 502);
    let body: Value = res.json().await.unwrap();
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("OpenAI is unavailable"),
        "{body}"
    );
    assert_eq!(sim_requests(&app).await - before, 3);

    // A bad request is not retried.
    let before = sim_requests(&app).await;
    let res = chat(
        &app,
        c.token(),
        json!({ "model": "gpt-4o-mini",
        "messages": [{ "role": "user", "content": "hi [sim:status=400]" }] }),
    )
    .await;
    assert_eq!(res.status(), 400);
    assert_eq!(sim_requests(&app).await - before, 1);

    // A stream that breaks part-way: the client gets an error event, not [DONE].
    let res = chat(
        &app,
        c.token(),
        json!({ "model": "gpt-4o-mini", "stream": true,
        "messages": [{ "role": "user", "content": "hi [sim:fail_midstream]" }] }),
    )
    .await;
    assert_eq!(res.status(), 200);
    let data = sse_data(&res.text().await.unwrap());
    assert!(data.last().unwrap().contains("\"error\""), "{data:?}");

    // What reached the client (two words) is charged, as counted by Tessera; nothing is left
    // reserved.
    let recorded = ledger(&app, c.tenant).await;
    assert_eq!(recorded.requests, 1);
    let (counted, reserved) = live(&app, c.tenant).await;
    assert!(
        counted.tokens > 0 && counted.tokens < 100,
        "{}",
        counted.tokens
    );
    assert_eq!(reserved, 0);
    let events = estimated_events(&app, c.tenant).await;
    assert_eq!(events.len(), 1);
    let (streamed, estimated, cancelled, _) = events[0];
    assert!(streamed && estimated && !cancelled, "{events:?}");
}

#[sqlx::test(migrations = "../migrations")]
async fn a_stream_times_out_when_its_provider_goes_quiet_not_when_it_is_slow(pool: PgPool) {
    let app = TestApp::spawn_with(&pool, &[("TESSERA_PROVIDER_TIMEOUT_SECS", "1")]).await;
    let c = app.api_clinic("Quiet Clinic").await;
    // A streamed question whose events the simulator sends `chunk_ms` apart.
    let stream_every = |chunk_ms: u64| {
        chat(
            &app,
            c.token(),
            json!({ "model": "gpt-4o-mini", "stream": true, "messages": [{ "role": "user",
                "content": format!("Summarise the handover notes [sim:chunk_ms={chunk_ms}]") }] }),
        )
    };

    // Slow but steady: every event within the timeout, the whole stream longer than it.
    let started = std::time::Instant::now();
    let res = stream_every(300).await;
    assert_eq!(res.status(), 200);
    let (_, text) = openai_stream(res).await;
    assert!(!text.is_empty());
    assert!(
        started.elapsed() > Duration::from_millis(1500),
        "the stream took {:?}: too short to show the timeout is per wait",
        started.elapsed()
    );

    // Quiet for longer than the timeout after its first event: the client gets the timeout as
    // an error event after about a second, not the provider's next event.
    let started = std::time::Instant::now();
    let res = stream_every(4000).await;
    assert_eq!(res.status(), 200);
    let data = sse_data(&res.text().await.unwrap());
    let took = started.elapsed();
    let last = data.last().unwrap();
    assert!(last.contains("provider_timeout"), "{data:?}");
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_millis(3500),
        "the timeout came after {took:?}"
    );

    // The two calls are on the ledger (the second for what reached the client, if anything)
    // and nothing is left reserved.
    let (_, reserved) = live(&app, c.tenant).await;
    assert_eq!(reserved, 0);
    let recorded = ledger(&app, c.tenant).await;
    assert!(
        (1..=2).contains(&recorded.requests),
        "{}",
        recorded.requests
    );
}

#[sqlx::test(migrations = "../migrations")]
async fn a_flaky_provider_is_retried_before_the_first_byte_and_charged_once(pool: PgPool) {
    let app = TestApp::spawn(&pool).await;
    let c = app.api_clinic("Flaky Clinic").await;
    for stream in [false, true] {
        let res = chat(
            &app,
            c.token(),
            json!({ "model": "gpt-4o-mini", "stream": stream,
            "messages": [{ "role": "user", "content": format!("hi {stream} [sim:flaky=2]") }] }),
        )
        .await;
        assert_eq!(res.status(), 200);
        res.text().await.unwrap();
    }
    assert_eq!(ledger(&app, c.tenant).await.requests, 2);
}

#[sqlx::test(migrations = "../migrations")]
async fn rejected_and_missing_keys_and_unknown_models_get_clear_errors(pool: PgPool) {
    let app = TestApp::spawn(&pool).await;
    let c = app.api_clinic("Error Clinic").await;
    let db = &app.services.db;
    let actor = c.owner();
    tessera_core::provider_keys::set(
        db,
        &app.services.changes,
        app.services.master_keys(),
        c.tenant,
        actor,
        tessera_core::provider_keys::KeyInput {
            provider: Provider::OpenAi,
            secret: "sk-invalid-key-1234",
            base_url: "",
        },
        true,
    )
    .await
    .unwrap();

    let res = chat(
        &app,
        c.token(),
        json!({ "model": "gpt-4o", "messages": [{ "role": "user", "content": "hi" }] }),
    )
    .await;
    assert_eq!(res.status(), 400);
    let text = res.text().await.unwrap();
    assert!(text.contains("Your OpenAI key was rejected"), "{text}");
    assert!(!text.contains("sk-invalid-key-1234"));

    tessera_core::provider_keys::delete(
        db,
        &app.services.changes,
        c.tenant,
        actor,
        Provider::Anthropic,
    )
    .await
    .unwrap();
    let res = chat(
        &app,
        c.token(),
        json!({ "model": "claude-sonnet-4-0", "messages": [{ "role": "user", "content": "hi" }] }),
    )
    .await;
    assert_eq!(res.status(), 400);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["error"]["code"], "provider_key_missing");
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("No Anthropic key is set"));

    let res = chat(
        &app,
        c.token(),
        json!({ "model": "llama3", "messages": [{ "role": "user", "content": "hi" }] }),
    )
    .await;
    assert_eq!(res.status(), 404);

    // Client mistakes are 400s that say what to fix (found by Tessera, or by the provider, whose
    // words are passed on: a clinic with a working key).
    let c = app.api_clinic("Mistakes Clinic").await;
    for (body, needle) in [
        (json!({ "messages": [] }), "model"),
        (json!({ "model": "gpt-4o" }), "messages"),
        (
            json!({ "model": "gpt-4o", "messages": [{ "role": "tool", "content": "x" }] }),
            "role",
        ),
        (
            json!({ "model": "gpt-4o", "max_tokens": 0, "messages": [{ "role": "user", "content": "x" }] }),
            "max_tokens",
        ),
        (
            json!({ "model": "gpt-4o", "temperature": 7, "messages": [{ "role": "user", "content": "x" }] }),
            "temperature",
        ),
    ] {
        let res = chat(&app, c.token(), body).await;
        assert_eq!(res.status(), 400);
        let text = res.text().await.unwrap();
        assert!(text.contains(needle), "{text}");
    }
    let res = reqwest::Client::new()
        .post(format!("{}/v1/chat/completions", app.url))
        .bearer_auth(c.token())
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    assert_eq!(ledger(&app, c.tenant).await.requests, 0);
}

#[sqlx::test(migrations = "../migrations")]
async fn two_hundred_concurrent_requests_never_spend_past_the_budget(pool: PgPool) {
    // Arrange: a new clinic's Starter allowance (1,000,000 tokens, nothing beyond with the
    // spending cap at its default) admits exactly N worst cases of these calls. Each call
    // waits at the provider long enough for all of them to be in flight at once, so exactly N
    // are admitted. One small call first fills the gateway's caches.
    let app = TestApp::spawn(&pool).await;
    let c = app.api_clinic("Budget Clinic").await;
    let content = "check the budget [sim:latency=5000]";
    let messages = [tessera_core::llm::ChatMessage {
        role: tessera_core::llm::MessageRole::User,
        content: content.into(),
    }];
    const MAX_TOKENS: i64 = 190_000;
    let worst = tessera_core::llm::prompt_upper_bound(&messages) + MAX_TOKENS;
    let limit = allowance(&app, c.tenant).await;
    assert_eq!(limit, 1_000_000);
    let n = limit / worst;
    assert_eq!(n, 5);

    let client = reqwest::Client::new();
    let warm = client
        .post(format!("{}/v1/chat/completions", app.url))
        .bearer_auth(c.token())
        .json(&json!({ "model": "gpt-4o-mini", "max_tokens": 5,
                       "messages": [{ "role": "user", "content": "warm up" }] }))
        .send()
        .await
        .unwrap();
    assert_eq!(warm.status(), 200);

    // Act
    let calls: Vec<_> = (0..200)
        .map(|_| {
            let req = client
                .post(format!("{}/v1/chat/completions", app.url))
                .bearer_auth(c.token())
                .json(&json!({ "model": "gpt-4o-mini", "max_tokens": MAX_TOKENS,
                               "messages": [{ "role": "user", "content": content }] }));
            tokio::spawn(async move {
                let res = req.send().await.unwrap();
                let status = res.status().as_u16();
                (status, res.text().await.unwrap())
            })
        })
        .collect();
    let mut ok = 0;
    let mut refused = 0;
    for call in calls {
        let (status, text) = call.await.unwrap();
        match status {
            200 => ok += 1,
            429 => {
                assert!(text.contains("token allowance"), "{text}");
                assert!(text.contains("insufficient_quota"), "{text}");
                refused += 1;
            }
            other => panic!("unexpected {other}: {text}"),
        }
    }

    // Assert
    assert_eq!(ok, n, "{ok} calls ran with room for {n}");
    assert_eq!(ok + refused, 200);
    let recorded = ledger(&app, c.tenant).await;
    assert_eq!(recorded.requests, ok + 1);
    assert!(
        recorded.tokens <= limit,
        "spent {} of {limit}",
        recorded.tokens
    );
}

#[sqlx::test(migrations = "../migrations")]
async fn a_revoked_api_key_stops_working_at_once(pool: PgPool) {
    let app = TestApp::spawn(&pool).await;
    let c = app.api_clinic("Revoke Clinic").await;
    let body = json!({ "model": "gpt-4o-mini", "messages": [{ "role": "user", "content": "hi" }] });
    assert_eq!(chat(&app, c.token(), body.clone()).await.status(), 200);

    // Revoked through the admin page, which announces it to every replica's cache.
    let client = app.browser();
    app.post(
        &client,
        "sign_in",
        &[
            ("email", "owner@revoke-clinic.example.com"),
            ("password", common::PASSWORD),
        ],
    )
    .await;
    let keys: Value = app.json(&client, "api_keys", &[]).await;
    let id = keys[0]["id"].as_str().unwrap().to_string();
    let res = app.call(&client, "revoke_api_key", &[("id", &id)]).await;
    assert!(res.status().is_success(), "{}", res.status());

    assert_eq!(chat(&app, c.token(), body).await.status(), 401);
}

#[sqlx::test(migrations = "../migrations")]
async fn the_platform_key_serves_paying_clinics_without_one_when_the_plan_allows(pool: PgPool) {
    let app = TestApp::spawn_with_billing(
        &pool,
        &[("TESSERA_PLATFORM_OPENAI_KEY", "sk-platform-key-0001")],
    )
    .await;
    // A clinic with no key of its own.
    let c = testkit::fixtures::clinic("Platform Clinic")
        .api_key("tests")
        .create(&app.env())
        .await;
    let body = json!({ "model": "gpt-4o-mini", "messages": [{ "role": "user", "content": "hi" }] });

    // Until it pays, the platform's key is not its to spend.
    let res = chat(&app, c.token(), body.clone()).await;
    assert_eq!(res.status(), 400);
    assert!(res
        .text()
        .await
        .unwrap()
        .contains("No OpenAI key is set for this clinic"));

    app.subscribe(&c, tessera_core::PlanId::Starter).await;

    assert_eq!(chat(&app, c.token(), body.clone()).await.status(), 200);
    let models: Value = reqwest::Client::new()
        .get(format!("{}/v1/models", app.url))
        .bearer_auth(c.token())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(models.to_string().contains("gpt-4o-mini"), "{models}");

    // A plan without platform keys (plans are rows an operator configures; none of the seeded
    // ones is without them): the clinic must bring its own.
    sqlx::query("UPDATE plans SET platform_keys = false WHERE id = 'starter'")
        .execute(&pool)
        .await
        .unwrap();
    app.services
        .changes
        .announce(tessera_core::Change::Tenant(c.tenant))
        .await;
    let res = chat(&app, c.token(), body).await;
    assert_eq!(res.status(), 400);
    assert!(res
        .text()
        .await
        .unwrap()
        .contains("No OpenAI key is set for this clinic"));
}

#[sqlx::test(migrations = "../migrations")]
async fn a_stream_the_client_stops_is_charged_for_what_was_generated(pool: PgPool) {
    let app = TestApp::spawn(&pool).await;
    let c = app.api_clinic("Stop Clinic").await;
    let mut res = chat(&app, c.token(), json!({ "model": "gpt-4o-mini", "stream": true, "max_tokens": 500,
        "messages": [{ "role": "user", "content": "long please [sim:words=300] [sim:chunk_ms=20]" }] })).await;
    assert_eq!(res.status(), 200);
    let mut seen = String::new();
    while seen.matches("\"content\"").count() < 10 {
        seen.push_str(&String::from_utf8_lossy(
            &res.chunk().await.unwrap().unwrap(),
        ));
    }
    drop(res);

    // The gateway notices, ends the provider call and settles what was generated.
    let mut events = Vec::new();
    for _ in 0..50 {
        ledger(&app, c.tenant).await;
        events = estimated_events(&app, c.tenant).await;
        if !events.is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(events.len(), 1, "one call, recorded");
    let (streamed, estimated, cancelled, completion) = events[0];
    assert!(streamed && estimated && cancelled);
    assert!(
        completion > 0 && completion < 300,
        "charged {completion} of 300 words"
    );
    let (_, reserved) = live(&app, c.tenant).await;
    assert_eq!(reserved, 0);
}

#[sqlx::test(migrations = "../migrations")]
async fn an_agent_is_reachable_as_a_model(pool: PgPool) {
    let app = TestApp::spawn(&pool).await;
    let c = app.api_clinic("Agent Api Clinic").await;
    let db = &app.services.db;
    let actor = c.owner();
    tessera_core::agents::create(
        db,
        &app.services.changes,
        c.tenant,
        actor,
        &tessera_core::agents::AgentInput {
            name: "Front Desk".into(),
            model: "claude-3-5-haiku-latest".into(),
            system_prompt: "Answer as the front desk.".into(),
            max_reply_tokens: "5".into(),
            ..Default::default()
        },
    )
    .await
    .unwrap();

    let res = chat(
        &app,
        c.token(),
        json!({ "model": "agent:front-desk",
        "messages": [{ "role": "user", "content": "When do you open tomorrow morning?" }] }),
    )
    .await;
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();
    // The agent's model answered, its instructions were sent, and its reply limit applied.
    assert!(
        body["model"]
            .as_str()
            .unwrap()
            .starts_with("claude-3-5-haiku"),
        "{body}"
    );
    assert_eq!(
        body["usage"]["prompt_tokens"],
        testkit::prompt_tokens(&[
            "Answer as the front desk.",
            "When do you open tomorrow morning?"
        ])
    );
    assert_eq!(body["usage"]["completion_tokens"], 5);
    assert_eq!(body["choices"][0]["finish_reason"], "length");

    let res = chat(
        &app,
        c.token(),
        json!({ "model": "agent:nobody", "messages": [{ "role": "user", "content": "hi" }] }),
    )
    .await;
    assert_eq!(res.status(), 404);
}

#[sqlx::test(migrations = "../migrations")]
async fn usage_a_provider_misreports_never_lowers_spend(pool: PgPool) {
    // A clinic's endpoint (here: the simulated provider) reports negative or absurd usage: each
    // call is charged at its reservation instead, the month only grows, and the live counters
    // and the ledger agree.
    let app = TestApp::spawn(&pool).await;
    let c = app.api_clinic("Lying Clinic").await;
    let calls = [
        ("[sim:prompt_tokens=-100000000]", false),
        ("[sim:prompt_tokens=-100000000]", true),
        ("[sim:prompt_tokens=1000000000000000]", false),
        ("[sim:prompt_tokens=9223372036854775807]", true),
    ];
    let mut before = 0;
    for (directive, stream) in calls {
        let res = chat(
            &app,
            c.token(),
            json!({ "model": "gpt-4o-mini", "max_tokens": 50, "stream": stream,
                    "stream_options": { "include_usage": true },
                    "messages": [{ "role": "user", "content": format!("hi {directive}") }] }),
        )
        .await;
        assert_eq!(res.status(), 200);
        res.text().await.unwrap();
        let (live, reserved) = live(&app, c.tenant).await;
        assert!(
            live.tokens > before,
            "{directive}: {} after {before}",
            live.tokens
        );
        assert!(
            live.tokens < before + 1_000,
            "{directive}: charged {}",
            live.tokens - before
        );
        assert_eq!(reserved, 0);
        before = live.tokens;
    }
    let ledger = ledger(&app, c.tenant).await;
    assert_eq!(ledger.requests, 4);
    assert_eq!(ledger.tokens, before);
}

#[sqlx::test(migrations = "../migrations")]
async fn a_client_that_goes_away_mid_request_leaves_nothing_reserved(pool: PgPool) {
    // The provider takes two seconds; the client gives up after a quarter of one, and the
    // request is dropped between the reservation and the settlement.
    let app = TestApp::spawn(&pool).await;
    let c = app.api_clinic("Impatient Clinic").await;
    let impatient = reqwest::Client::builder()
        .timeout(Duration::from_millis(250))
        .build()
        .unwrap();
    for stream in [false, true] {
        let sent = impatient
            .post(format!("{}/v1/chat/completions", app.url))
            .bearer_auth(c.token())
            .json(
                &json!({ "model": "gpt-4o-mini", "max_tokens": 100_000, "stream": stream,
                           "messages": [{ "role": "user", "content": "hi [sim:latency=2000]" }] }),
            )
            .send()
            .await;
        assert!(sent.is_err(), "the client was meant to give up");
        tokio::time::sleep(Duration::from_millis(500)).await;
        let (_, reserved) = live(&app, c.tenant).await;
        assert_eq!(reserved, 0, "stream: {stream}");
    }
}

#[sqlx::test(migrations = "../migrations")]
async fn a_clinic_that_does_not_pay_stays_within_its_allowance(pool: PgPool) {
    // A new clinic on Starter without a subscription cannot lift its limit: neither "no cap"
    // nor a cap beyond the allowance is accepted, and a cap set while it paid stops counting
    // when the subscription is cancelled.
    let app = TestApp::spawn_with_billing(&pool, &[]).await;
    let admin = app.browser();
    app.sign_up(&admin, "Free Clinic", "owner@free.example")
        .await;
    for form in [
        vec![("mode", "none")],
        vec![("mode", "cap"), ("amount", "100")],
    ] {
        let res = app.call(&admin, "set_spending_cap", &form).await;
        assert_eq!(res.status(), 403);
        assert!(res.text().await.unwrap().contains("needs a paid plan"));
    }
    let clinic = app.clinic_of(&admin).await;
    let limits = app.services.gateway.limits(clinic.tenant).await.unwrap();
    assert_eq!(limits.token_limit(), Some(1_000_000));

    // Paying, the clinic may spend beyond its allowance...
    app.subscribe(&clinic, tessera_core::PlanId::Starter).await;
    app.json(&admin, "set_spending_cap", &[("mode", "none")])
        .await;
    let limits = app.services.gateway.limits(clinic.tenant).await.unwrap();
    assert_eq!(limits.token_limit(), None);

    // ...until the subscription ends: back to the allowance, and the cap with it.
    let state: Value = reqwest::get(format!("{}/sim/state", app.stripe_sim()))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let subscription = state["subscriptions"][0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let cancelled = reqwest::Client::new()
        .post(format!(
            "{}/sim/subscriptions/{subscription}/cancel",
            app.stripe_sim()
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(cancelled.status(), 204);
    let limits = app.services.gateway.limits(clinic.tenant).await.unwrap();
    assert!(!limits.paying, "{limits:?}");
    assert_eq!(limits.spending_cap_micro_usd, Some(0));
    assert_eq!(limits.token_limit(), Some(1_000_000));
}

#[sqlx::test(migrations = "../migrations")]
async fn any_body_a_client_sends_is_answered_without_a_server_error(pool: PgPool) {
    // Random request bodies, shaped like OpenAI's and not, to chat completions, the Responses
    // API and moderations: each gets a 4xx in OpenAI's error shape, or goes through; never a
    // 5xx for the client's mistake, never a panic.
    use proptest::prelude::*;
    use proptest::strategy::ValueTree;
    let app = TestApp::spawn(&pool).await;
    let c = app.api_clinic("Fuzz Clinic").await;
    let scalar = prop_oneof![
        Just(Value::Null),
        prop::bool::ANY.prop_map(Value::from),
        prop::num::i64::ANY.prop_map(Value::from),
        prop::num::f64::ANY.prop_map(|f| json!(f)),
        ".{0,20}".prop_map(Value::from),
    ];
    let value = scalar.prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
            prop::collection::btree_map("[a-z_]{1,10}", inner, 0..4).prop_map(|m| json!(m)),
        ]
    });
    let field = prop::sample::select(vec![
        "model",
        "messages",
        "max_tokens",
        "max_completion_tokens",
        "temperature",
        "top_p",
        "stop",
        "n",
        "stream",
        "stream_options",
        "tools",
        "role",
        "content",
        "input",
        "max_output_tokens",
        "previous_response_id",
        "background",
        "instructions",
    ]);
    let body = prop::collection::btree_map(field, value.clone(), 0..6).prop_map(|mut m| {
        if m.contains_key("model") {
            m.insert("model", json!("gpt-4o-mini"));
        }
        json!(m)
    });
    let messages = prop::collection::vec(
        (prop::sample::select(vec!["user", "system", "developer", "assistant", "tool", ""]), value),
        0..3,
    )
    .prop_map(|ms| {
        json!({ "model": "gpt-4o-mini", "max_tokens": 5,
                "messages": ms.into_iter().map(|(r, c)| json!({ "role": r, "content": c })).collect::<Vec<_>>() })
    });
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let client = reqwest::Client::new();
    for i in 0..400 {
        let (sent, path) = match i % 4 {
            0 => (
                body.new_tree(&mut runner).unwrap().current(),
                "chat/completions",
            ),
            1 => (
                messages.new_tree(&mut runner).unwrap().current(),
                "chat/completions",
            ),
            2 => (body.new_tree(&mut runner).unwrap().current(), "responses"),
            _ => (body.new_tree(&mut runner).unwrap().current(), "moderations"),
        };
        let res = client
            .post(format!("{}/v1/{path}", app.url))
            .bearer_auth(c.token())
            .body(sent.to_string())
            .send()
            .await
            .unwrap();
        let status = res.status().as_u16();
        let text = res.text().await.unwrap();
        assert!(status < 500, "{status} for {path} {sent}: {text}");
        if status >= 400 {
            let error: Value = serde_json::from_str(&text).unwrap();
            assert!(error["error"]["message"].is_string(), "{text}");
        }
    }
    let (_, reserved) = live(&app, c.tenant).await;
    assert_eq!(reserved, 0);
}

#[sqlx::test(migrations = "../migrations")]
async fn the_api_holds_each_key_and_each_clinic_to_the_plans_rate(pool: PgPool) {
    // Starter: 300 requests a minute per API key, 600 per clinic, counted per calendar minute.
    let app = TestApp::spawn(&pool).await;
    let c = app.api_clinic("Busy Clinic").await;
    let db = &app.services.db;
    let (_, second) = tessera_core::api_keys::create(db, c.tenant, c.owner(), "second")
        .await
        .unwrap();
    let (_, third) = tessera_core::api_keys::create(db, c.tenant, c.owner(), "third")
        .await
        .unwrap();
    let client = reqwest::Client::new();
    // The first `ok` requests with `token` pass and the next is refused.
    let run = |token: String, ok: usize| {
        let client = client.clone();
        let url = format!("{}/v1/models", app.url);
        async move {
            for i in 0..ok {
                let res = client.get(&url).bearer_auth(&token).send().await.unwrap();
                assert_eq!(res.status(), 200, "request {i}");
            }
            let res = client.get(&url).bearer_auth(&token).send().await.unwrap();
            assert_eq!(res.status(), 429, "request {ok}");
            res
        }
    };
    // Start well inside a minute, so the whole run counts in one.
    let second_of_minute = time::OffsetDateTime::now_utc().unix_timestamp() % 60;
    if second_of_minute > 40 {
        tokio::time::sleep(Duration::from_secs((61 - second_of_minute) as u64)).await;
    }

    // The first key: 300, then refused (the refusal counts for the clinic too).
    let res = run(c.token().to_string(), 300).await;
    let retry: u64 = res.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["error"]["code"], "rate_limit_exceeded");
    // The second key has room of its own, until the clinic's 600th request.
    run(second, 299).await;
    // The third key has none left: the clinic is at its limit.
    run(third, 0).await;
}

#[sqlx::test(migrations = "../migrations")]
async fn chat_calls_count_against_the_rate_with_their_reservation(pool: PgPool) {
    // A chat call is counted in the same Redis round trip as its reservation; it shares the
    // per-minute counters with the other /v1 routes, and a refused one reaches no provider and
    // leaves nothing reserved.
    let app = TestApp::spawn(&pool).await;
    let c = app.api_clinic("Rate Chat Clinic").await;
    let client = reqwest::Client::new();
    let second_of_minute = time::OffsetDateTime::now_utc().unix_timestamp() % 60;
    if second_of_minute > 40 {
        tokio::time::sleep(Duration::from_secs((61 - second_of_minute) as u64)).await;
    }
    for i in 0..299 {
        let res = client
            .get(format!("{}/v1/models", app.url))
            .bearer_auth(c.token())
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200, "request {i}");
    }
    let ask = json!({ "model": "gpt-4o-mini", "messages": [{ "role": "user", "content": "hi" }] });
    assert_eq!(chat(&app, c.token(), ask.clone()).await.status(), 200);
    let before = sim_requests(&app).await;
    let res = chat(&app, c.token(), ask.clone()).await;
    assert_eq!(res.status(), 429);
    assert!(res.headers().contains_key("retry-after"));
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["error"]["code"], "rate_limit_exceeded");
    assert_eq!(sim_requests(&app).await, before);
    let (_, reserved) = live(&app, c.tenant).await;
    assert_eq!(reserved, 0);
    // Anthropic's SDK is told in its own shape.
    let res = client
        .post(format!("{}/v1/messages", app.url))
        .header("x-api-key", c.token())
        .json(
            &json!({ "model": "claude-3-5-haiku-latest", "max_tokens": 5,
                       "messages": [{ "role": "user", "content": "hi" }] }),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 429);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["error"]["type"], "rate_limit_error");
    assert_eq!(ledger(&app, c.tenant).await.requests, 1);
}

#[sqlx::test(migrations = "../migrations")]
async fn v1_moderations_forwards_to_openai_and_is_not_charged(pool: PgPool) {
    let app = TestApp::spawn(&pool).await;
    let c = app.api_clinic("Moderation Clinic").await;
    let client = reqwest::Client::new();
    let post = |body: Value| {
        client
            .post(format!("{}/v1/moderations", app.url))
            .bearer_auth(c.token())
            .json(&body)
            .send()
    };
    // Text and an image as one input, sent on as they came.
    let sent = json!({ "model": "omni-moderation-latest", "input": [
        { "type": "text", "text": "[sim:flagged=self-harm] I want to stop my medication" },
        { "type": "image_url", "image_url": { "url": "https://example.com/x.png" } } ] });
    let res = post(sent.clone()).await.unwrap();
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();
    assert_eq!(sim_last(&app).await, sent);
    assert_eq!(body["model"], "omni-moderation-latest");
    let result = &body["results"][0];
    assert_eq!(result["flagged"], true);
    assert_eq!(result["categories"]["self-harm"], true);
    assert_eq!(result["categories"]["violence"], false);
    assert_eq!(
        result["category_applied_input_types"]["violence"],
        json!(["text", "image"])
    );
    // Without a model, OpenAI's default answers: one result per text.
    let res = post(json!({ "input": ["a", "b", "c"] })).await.unwrap();
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["results"].as_array().unwrap().len(), 3);
    assert!(
        sim_last(&app).await.get("model").is_none(),
        "sent as it came"
    );
    // The client's mistakes, named, and nothing sent.
    let before = sim_requests(&app).await;
    for (bad, names) in [
        (json!({ "model": "gpt-4o-mini", "input": "hi" }), "model"),
        (json!({ "model": 7, "input": "hi" }), "model"),
        (json!({ "model": "omni-moderation-latest" }), "input"),
        (json!({ "input": null }), "input"),
    ] {
        let res = post(bad.clone()).await.unwrap();
        assert_eq!(res.status(), 400, "{bad}");
        let error: Value = res.json().await.unwrap();
        let message = error["error"]["message"].as_str().unwrap();
        assert!(message.starts_with(names), "{bad}: {message}");
    }
    assert_eq!(sim_requests(&app).await, before);
    // The provider's failure (retried, then given up) is the provider's, in OpenAI's shape.
    let res = post(json!({ "input": "[sim:status=503]" })).await.unwrap();
    assert_eq!(res.status(), 502);
    let error: Value = res.json().await.unwrap();
    assert!(error["error"]["message"].is_string(), "{error}");
    // Free at OpenAI: nothing in the ledger, nothing reserved.
    let recorded = ledger(&app, c.tenant).await;
    assert_eq!(recorded.requests, 0);
    let (_, reserved) = live(&app, c.tenant).await;
    assert_eq!(reserved, 0);
}

#[sqlx::test(migrations = "../migrations")]
async fn v1_responses_input_tokens_are_counted_by_the_provider_and_not_charged(pool: PgPool) {
    let app = TestApp::spawn(&pool).await;
    let c = app.api_clinic("Token Count Clinic").await;
    let client = reqwest::Client::new();
    let post = |token: String, body: Value| {
        client
            .post(format!("{}/v1/responses/input_tokens", app.url))
            .bearer_auth(token)
            .json(&body)
            .send()
    };
    // Sent on as it came (fields the provider keeps count too: nothing is spent), and
    // answered with the provider's count.
    let sent = json!({ "model": "gpt-4o-mini", "instructions": "Be brief.", "input": [
        { "role": "user", "content": [
            { "type": "input_text", "text": "What is triage?" },
            { "type": "input_image", "image_url": "https://example.org/x.png" } ] }],
        "previous_response_id": "resp_1", "a_field_from_next_year": true });
    let res = post(c.token().to_string(), sent.clone()).await.unwrap();
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();
    assert_eq!(sim_last(&app).await, sent);
    assert_eq!(body["object"], "response.input_tokens");
    let counted = body["input_tokens"].as_i64().unwrap();
    assert!(counted > 0, "{body}");
    // Free at the provider: nothing in the ledger, nothing reserved.
    assert_eq!(ledger(&app, c.tenant).await.requests, 0);
    assert_eq!(live(&app, c.tenant).await.1, 0);

    // The count is what the same body costs as a response.
    let mut asked = sent.clone();
    asked
        .as_object_mut()
        .unwrap()
        .remove("previous_response_id");
    let res = client
        .post(format!("{}/v1/responses", app.url))
        .bearer_auth(c.token())
        .json(&asked)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let response: Value = res.json().await.unwrap();
    assert_eq!(response["usage"]["input_tokens"].as_i64(), Some(counted));

    // A clinic's OpenAI-compatible endpoint counts its own models' tokens.
    let compatible = testkit::fixtures::clinic("Count Compatible Clinic")
        .endpoint(&format!("http://{}/v1", app.sim), "sk-compatible-key")
        .api_key("tests")
        .create(&app.env())
        .await;
    let res = post(
        compatible.token().to_string(),
        json!({ "model": "llama3.1:8b", "input": "Who is on call tonight?" }),
    )
    .await
    .unwrap();
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();
    assert!(body["input_tokens"].as_i64().unwrap() > 0, "{body}");
    assert_eq!(ledger(&app, compatible.tenant).await.requests, 0);

    // The client's mistakes, named, and nothing sent.
    let before = sim_requests(&app).await;
    for (bad, status, names) in [
        (json!({ "input": "hi" }), 400, "model"),
        (json!({ "model": 7, "input": "hi" }), 400, "model"),
        (json!({ "model": "  ", "input": "hi" }), 400, "model"),
        (
            json!({ "model": "claude-3-5-haiku-latest", "input": "hi" }),
            400,
            "model: /v1/responses/input_tokens",
        ),
        (json!({ "model": "no-such-model", "input": "hi" }), 404, ""),
    ] {
        let res = post(c.token().to_string(), bad.clone()).await.unwrap();
        assert_eq!(res.status(), status, "{bad}");
        let error: Value = res.json().await.unwrap();
        let message = error["error"]["message"].as_str().unwrap();
        assert!(message.starts_with(names), "{bad}: {message}");
    }
    let res = client
        .post(format!("{}/v1/responses/input_tokens", app.url))
        .bearer_auth(c.token())
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    assert_eq!(sim_requests(&app).await, before);
    // Without a key: the API's 401, nothing sent.
    let res = client
        .post(format!("{}/v1/responses/input_tokens", app.url))
        .json(&json!({ "model": "gpt-4o-mini", "input": "hi" }))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    assert_eq!(sim_requests(&app).await, before);

    // The provider's failure (retried, then given up) is the provider's, in OpenAI's shape.
    let res = post(
        c.token().to_string(),
        json!({ "model": "gpt-4o-mini", "input": "[sim:status=503]" }),
    )
    .await
    .unwrap();
    assert_eq!(res.status(), 502);
    let error: Value = res.json().await.unwrap();
    assert!(error["error"]["message"].is_string(), "{error}");
    assert_eq!(ledger(&app, c.tenant).await.requests, 1);
}

#[sqlx::test(migrations = "../migrations")]
async fn v1_embeddings_answers_in_openais_shape_and_is_metered(pool: PgPool) {
    let app = TestApp::spawn(&pool).await;
    let c = app.api_clinic("Embedding Clinic").await;
    let client = reqwest::Client::new();
    let post = |body: serde_json::Value| {
        client
            .post(format!("{}/v1/embeddings", app.url))
            .bearer_auth(c.token())
            .json(&body)
            .send()
    };
    let res = post(
        serde_json::json!({ "model": "text-embedding-3-small", "input": ["flu shot", "parking"] }),
    )
    .await
    .unwrap();
    assert_eq!(res.status(), 200);
    let body: serde_json::Value = res.json().await.unwrap();
    assert_eq!(body["object"], "list");
    assert_eq!(body["model"], "text-embedding-3-small");
    assert_eq!(body["data"][1]["index"], 1);
    let first: Vec<f32> = serde_json::from_value(body["data"][0]["embedding"].clone()).unwrap();
    assert_eq!(first, testkit::embedding("flu shot", 16));
    let tokens = body["usage"]["prompt_tokens"].as_i64().unwrap();
    assert_eq!(
        tokens,
        testkit::count_tokens("flu shot") + testkit::count_tokens("parking")
    );
    assert_eq!(body["usage"]["total_tokens"], tokens);

    // base64, and dimensions passed on.
    let res = post(serde_json::json!({ "model": "text-embedding-3-small", "input": "flu shot", "encoding_format": "base64", "dimensions": 8 }))
        .await
        .unwrap();
    let body: serde_json::Value = res.json().await.unwrap();
    let encoded = body["data"][0]["embedding"].as_str().unwrap();
    use base64::Engine;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .unwrap();
    assert_eq!(bytes.len(), 8 * 4);
    assert_eq!(
        f32::from_le_bytes(bytes[..4].try_into().unwrap()),
        testkit::embedding("flu shot", 8)[0]
    );

    // Clear refusals, in OpenAI's shape.
    for (bad, says) in [
        (
            serde_json::json!({ "model": "text-embedding-3-small", "input": [[1, 2, 3]] }),
            "token arrays",
        ),
        (
            serde_json::json!({ "model": "text-embedding-3-small" }),
            "input",
        ),
        (
            serde_json::json!({ "model": "agent:front-desk", "input": "x" }),
            "agents",
        ),
        (
            serde_json::json!({ "model": "text-embedding-3-small", "input": "x", "encoding_format": "hex" }),
            "encoding_format",
        ),
        (
            serde_json::json!({ "model": "text-embedding-3-small", "input": "x", "dimensions": 0 }),
            "dimensions",
        ),
        (
            serde_json::json!({ "model": "text-embedding-3-small", "input": [""] }),
            "empty",
        ),
    ] {
        let res = post(bad.clone()).await.unwrap();
        assert_eq!(res.status(), 400, "{bad}");
        let err: serde_json::Value = res.json().await.unwrap();
        assert!(
            err["error"]["message"].as_str().unwrap().contains(says),
            "{bad}: {err}"
        );
    }

    // On the ledger as two embedding calls, with the tokens the responses reported.
    app.flush_ledger().await;
    let mut tx = app.services.db.begin_tenant(c.tenant).await.unwrap();
    let (calls, recorded): (i64, i64) = sqlx::query_as(
        "SELECT count(*), COALESCE(sum(prompt_tokens), 0)::bigint FROM usage_events WHERE kind = 'embedding'",
    )
    .fetch_one(&mut *tx)
    .await
    .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(calls, 2);
    assert_eq!(recorded, tokens + testkit::count_tokens("flu shot"));
}

/// The body of the last chat or messages request the simulator received.
async fn sim_last(app: &TestApp) -> Value {
    app.sim("/sim/last").await
}

#[sqlx::test(migrations = "../migrations")]
async fn openai_bodies_reach_the_provider_as_sent_with_tools_formats_and_images(pool: PgPool) {
    let app = TestApp::spawn(&pool).await;
    let c = app.api_clinic("Passthrough Clinic").await;
    let sent = json!({
        "model": "gpt-4o-mini",
        "messages": [{ "role": "user", "content": [
            { "type": "text", "text": "What is the weather in Oslo?" },
            { "type": "image_url", "image_url": { "url": "https://example.org/x.png", "detail": "low" } },
        ] }],
        "tools": [{ "type": "function", "function": { "name": "weather",
            "parameters": { "type": "object", "properties": { "city": { "type": "string" } } } } }],
        "parallel_tool_calls": false,
        "seed": 42,
        "presence_penalty": 0.5,
        "logit_bias": { "1234": -100 },
        "user": "nurse-7",
        "metadata": { "ward": "B" },
        "a_field_from_next_year": { "nested": [1, 2, 3] },
        "max_completion_tokens": 40,
    });
    let res = chat(&app, c.token(), sent.clone()).await;
    assert_eq!(res.status(), 200);
    assert!(res.headers().contains_key("x-tessera-call-id"));
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["choices"][0]["finish_reason"], "tool_calls");
    let call = &body["choices"][0]["message"]["tool_calls"][0];
    assert_eq!(call["function"]["name"], "weather");
    assert_eq!(call["function"]["arguments"], r#"{"city":"Oslo"}"#);
    // Everything the client sent reached the provider unchanged.
    assert_eq!(sim_last(&app).await, sent);
    let recorded = ledger(&app, c.tenant).await;
    assert_eq!(
        recorded.tokens,
        body["usage"]["total_tokens"].as_i64().unwrap()
    );

    // A stream always asks for usage; a client that did not ask never sees the usage chunk, and
    // the call is still recorded with the provider's count.
    let res = chat(
        &app,
        c.token(),
        json!({ "model": "gpt-4o-mini", "stream": true, "response_format": { "type": "json_object" },
                "messages": [{ "role": "user", "content": "Summarise" }] }),
    )
    .await;
    let data = sse_data(&res.text().await.unwrap());
    assert_eq!(data.last().unwrap(), "[DONE]");
    for d in &data[..data.len() - 1] {
        let chunk: Value = serde_json::from_str(d).unwrap();
        assert_ne!(chunk["choices"], json!([]), "no usage chunk: {d}");
        assert!(chunk["usage"].is_null(), "{d}");
    }
    let forwarded = sim_last(&app).await;
    assert_eq!(
        forwarded["stream_options"],
        json!({ "include_usage": true })
    );
    assert_eq!(
        forwarded["response_format"],
        json!({ "type": "json_object" })
    );
    // No limit given: the default limit is set, so the reply cannot outgrow its reservation.
    assert!(forwarded["max_completion_tokens"].as_u64().is_some());
    assert_eq!(ledger(&app, c.tenant).await.requests, 2);
    let events = estimated_events(&app, c.tenant).await;
    assert_eq!(events.len(), 2);
    assert!(events.iter().all(|(_, estimated, _, _)| !estimated));
}

#[sqlx::test(migrations = "../migrations")]
async fn the_reservation_counts_every_choice_and_image(pool: PgPool) {
    let app = TestApp::spawn(&pool).await;
    let c = app.api_clinic("Choices Clinic").await;
    let limit = allowance(&app, c.tenant).await;
    let many = |n: u64, max: u64| {
        json!({ "model": "gpt-4o-mini", "n": n, "max_completion_tokens": max,
                "messages": [{ "role": "user", "content": "hi" }] })
    };
    // Each choice could be the whole limit: past the allowance in all, refused before any call.
    let per_choice = (limit / 100 + 1) as u64;
    assert!(per_choice <= 200_000);
    let before = sim_requests(&app).await;
    let res = chat(&app, c.token(), many(100, per_choice)).await;
    assert_eq!(res.status(), 429, "{}", res.text().await.unwrap());
    assert_eq!(
        sim_requests(&app).await,
        before,
        "refused before the provider"
    );
    // One choice of the same size fits.
    let res = chat(&app, c.token(), many(1, per_choice)).await;
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["choices"].as_array().unwrap().len(), 1);
    let res = chat(&app, c.token(), many(3, 20)).await;
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["choices"].as_array().unwrap().len(), 3);
    let (_, reserved) = live(&app, c.tenant).await;
    assert_eq!(reserved, 0);
    // Too many choices, or a field given twice, is the client's mistake.
    let res = chat(&app, c.token(), many(1000, 5)).await;
    assert_eq!(res.status(), 400);
    let res = reqwest::Client::new()
        .post(format!("{}/v1/chat/completions", app.url))
        .bearer_auth(c.token())
        .body(r#"{"model":"gpt-4o-mini","max_tokens":1,"max_tokens":100000,"messages":[{"role":"user","content":"hi"}]}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    let error: Value = res.json().await.unwrap();
    assert!(
        error["error"]["message"]
            .as_str()
            .unwrap()
            .contains("twice"),
        "{error}"
    );
}

/// A PDF of `pages` empty pages, as base64: a few bytes a page, where a provider counts each
/// page's text and an image of it.
fn pdf_base64(pages: usize) -> String {
    use base64::Engine as _;
    let mut pdf = String::from("%PDF-1.4\n1 0 obj <</Type /Catalog /Pages 2 0 R>> endobj\n");
    let kids: Vec<String> = (0..pages).map(|i| format!("{} 0 R", i + 3)).collect();
    pdf += &format!(
        "2 0 obj <</Type /Pages /Count {pages} /Kids [{}]>> endobj\n",
        kids.join(" ")
    );
    for i in 0..pages {
        pdf += &format!("{} 0 obj <</Type /Page /Parent 2 0 R>> endobj\n", i + 3);
    }
    pdf += "%%EOF\n";
    base64::engine::general_purpose::STANDARD.encode(pdf)
}

#[sqlx::test(migrations = "../migrations")]
async fn a_documents_reservation_is_its_models_context_window(pool: PgPool) {
    let app = TestApp::spawn(&pool).await;
    let c = app.api_clinic("Documents Clinic").await;
    assert_eq!(allowance(&app, c.tenant).await, 1_000_000);
    // 60 pages in under 5 KB of base64: 90,000 prompt tokens at the simulator's count, within
    // gpt-4o-mini's window of 128,000.
    let pdf = pdf_base64(60);
    assert!(pdf.len() < 5_000, "{}", pdf.len());
    let with_pdf = |model: &str| {
        json!({ "model": model, "max_completion_tokens": 20, "messages": [{ "role": "user", "content": [
            { "type": "text", "text": "Sum up the referral." },
            { "type": "file", "file": { "filename": "referral.pdf",
                "file_data": format!("data:application/pdf;base64,{pdf}") } } ] }] })
    };
    let res = chat(&app, c.token(), with_pdf("gpt-4o-mini")).await;
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();
    let prompt = body["usage"]["prompt_tokens"].as_i64().unwrap();
    assert!(prompt >= 60 * testkit::features::PAGE_TOKENS, "{body}");
    // Charged what the provider counted: the reservation was the model's window (128,000),
    // not the few thousand bytes of the file, so nothing was cut to fit it.
    let recorded = ledger(&app, c.tenant).await;
    assert_eq!(recorded.prompt_tokens, prompt);
    assert_eq!(recorded.requests, 1);
    // A model whose window is larger than what the clinic has left is refused before the call.
    let before = sim_requests(&app).await;
    let res = chat(&app, c.token(), with_pdf("gpt-4.1-mini")).await;
    assert_eq!(res.status(), 429, "{}", res.text().await.unwrap());
    assert_eq!(
        sim_requests(&app).await,
        before,
        "refused before the provider"
    );
    // The same words without the file fit.
    let res = chat(
        &app,
        c.token(),
        json!({ "model": "gpt-4.1-mini", "messages": [{ "role": "user", "content": [
            { "type": "text", "text": "Sum up the referral." } ] }] }),
    )
    .await;
    assert_eq!(res.status(), 200);
    // A file the provider keeps does not show its size: refused by name.
    let res = chat(
        &app,
        c.token(),
        json!({ "model": "gpt-4o-mini", "messages": [{ "role": "user", "content": [
            { "type": "text", "text": "Sum up the referral." },
            { "type": "file", "file": { "file_id": "file-abc" } } ] }] }),
    )
    .await;
    assert_eq!(res.status(), 400);
    let error: Value = res.json().await.unwrap();
    let message = error["error"]["message"].as_str().unwrap();
    assert!(
        message.starts_with("messages[0].content[1].file.file_id: "),
        "{message}"
    );
    assert_eq!(sim_requests(&app).await, before + 1);

    // Anthropic's documents, on /v1/messages: Claude's window, or its long one when asked for.
    let document = json!({ "model": "claude-3-5-haiku-latest", "max_tokens": 20,
        "messages": [{ "role": "user", "content": [
            { "type": "document", "source": { "type": "base64", "media_type": "application/pdf", "data": pdf } },
            { "type": "text", "text": "Sum up the referral." } ] }] });
    let post = |beta: Option<&str>| {
        let mut req = reqwest::Client::new()
            .post(format!("{}/v1/messages", app.url))
            .header("x-api-key", c.token())
            .header("anthropic-version", "2023-06-01");
        if let Some(beta) = beta {
            req = req.header("anthropic-beta", beta);
        }
        req.json(&document).send()
    };
    let res = post(None).await.unwrap();
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();
    let input = body["usage"]["input_tokens"].as_i64().unwrap();
    assert!(input >= 60 * testkit::features::PAGE_TOKENS, "{body}");
    let res = post(Some("context-1m-2025-08-07")).await.unwrap();
    assert_eq!(res.status(), 429, "{}", res.text().await.unwrap());
    let recorded = ledger(&app, c.tenant).await;
    assert_eq!(recorded.requests, 3);
    // The two documents' prompts whole, and the text-only call's few tokens.
    assert!(recorded.prompt_tokens > prompt + input, "{recorded:?}");
    let (_, reserved) = live(&app, c.tenant).await;
    assert_eq!(reserved, 0);
}

#[sqlx::test(migrations = "../migrations")]
async fn claude_answers_openai_tool_calls_json_and_streamed(pool: PgPool) {
    let app = TestApp::spawn(&pool).await;
    let c = app.api_clinic("Claude Tools Clinic").await;
    let tools = json!([{ "type": "function", "function": { "name": "book",
        "description": "Books an appointment",
        "parameters": { "type": "object", "properties": { "patient": { "type": "string" }, "slot": { "type": "integer" } } } } }]);
    let question = json!({ "role": "user", "content": "Book a slot for Ada" });
    let res = chat(
        &app,
        c.token(),
        json!({ "model": "claude-3-5-haiku-latest", "messages": [question], "tools": tools, "tool_choice": "required" }),
    )
    .await;
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["object"], "chat.completion");
    let call = body["choices"][0]["message"]["tool_calls"][0].clone();
    assert_eq!(body["choices"][0]["finish_reason"], "tool_calls");
    assert_eq!(call["function"]["name"], "book");
    let args: Value =
        serde_json::from_str(call["function"]["arguments"].as_str().unwrap()).unwrap();
    assert_eq!(args, json!({ "patient": "Ada", "slot": 1 }));
    // Anthropic received its own shape.
    let forwarded = sim_last(&app).await;
    assert_eq!(forwarded["tools"][0]["name"], "book");
    assert_eq!(forwarded["tool_choice"], json!({ "type": "any" }));

    // The tool's result goes back as a tool_result; the answer is text.
    let res = chat(
        &app,
        c.token(),
        json!({ "model": "claude-3-5-haiku-latest", "tools": tools, "stream": true,
                "stream_options": { "include_usage": true },
                "messages": [question,
                    { "role": "assistant", "content": null, "tool_calls": [call] },
                    { "role": "tool", "tool_call_id": call["id"], "content": "Booked at 9" }] }),
    )
    .await;
    let (chunks, text) = openai_stream(res).await;
    assert_eq!(
        text,
        "Simulated reply from claude-3-5-haiku-latest: the tool said Booked at 9"
    );
    let usage = &chunks.last().unwrap()["usage"];
    let forwarded = sim_last(&app).await;
    assert_eq!(forwarded["messages"][1]["content"][0]["type"], "tool_use");
    assert_eq!(
        forwarded["messages"][2]["content"][0]["tool_use_id"],
        call["id"]
    );
    let recorded = ledger(&app, c.tenant).await;
    assert_eq!(recorded.requests, 2);
    assert_eq!(
        recorded.tokens,
        body["usage"]["total_tokens"].as_i64().unwrap() + usage["total_tokens"].as_i64().unwrap()
    );

    // What Claude cannot do is refused by name, before anything is reserved or sent.
    let before = sim_requests(&app).await;
    let res = chat(
        &app,
        c.token(),
        json!({ "model": "claude-3-5-haiku-latest", "n": 2, "messages": [question] }),
    )
    .await;
    assert_eq!(res.status(), 400);
    assert!(res.text().await.unwrap().contains("n: Claude"));
    assert_eq!(sim_requests(&app).await, before);
}

#[sqlx::test(migrations = "../migrations")]
async fn v1_messages_forwards_anthropic_bodies_and_answers_in_anthropics_shape(pool: PgPool) {
    let app = TestApp::spawn(&pool).await;
    let c = app.api_clinic("Messages Clinic").await;
    let client = reqwest::Client::new();
    let request = |key: &str| {
        client
            .post(format!("{}/v1/messages", app.url))
            .header("x-api-key", key)
            .header("anthropic-version", "2023-06-01")
    };
    let post = |body: Value, key: &str| request(key).json(&body).send();
    let sent = json!({ "model": "claude-3-5-haiku-latest", "max_tokens": 50,
        "system": [{ "type": "text", "text": "Be brief.", "cache_control": { "type": "ephemeral" } }],
        "messages": [{ "role": "user", "content": "What is triage?" }],
        "metadata": { "user_id": "nurse-7" } });
    let res = post(sent.clone(), c.token()).await.unwrap();
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["type"], "message");
    assert_eq!(
        body["content"][0]["text"],
        testkit::reply_text("claude-3-5-haiku-latest", "What is triage?")
    );
    assert_eq!(sim_last(&app).await, sent);

    let mut streamed = sent.clone();
    streamed["stream"] = json!(true);
    let res = post(streamed, c.token()).await.unwrap();
    let events = common::sse(&res.text().await.unwrap());
    assert_eq!(
        events.first().unwrap().event.as_deref(),
        Some("message_start")
    );
    assert_eq!(
        events.last().unwrap().event.as_deref(),
        Some("message_stop")
    );
    let recorded = ledger(&app, c.tenant).await;
    assert_eq!(recorded.requests, 2);
    let tokens = body["usage"]["input_tokens"].as_i64().unwrap()
        + body["usage"]["output_tokens"].as_i64().unwrap();
    assert_eq!(recorded.tokens, 2 * tokens);

    // Errors in Anthropic's shape.
    let res = post(sent.clone(), "tsk_wrong").await.unwrap();
    assert_eq!(res.status(), 401);
    let error: Value = res.json().await.unwrap();
    assert_eq!(error["type"], "error");
    assert_eq!(error["error"]["type"], "authentication_error");
    let res = post(
        json!({ "model": "claude-3-5-haiku-latest", "messages": [] }),
        c.token(),
    )
    .await
    .unwrap();
    assert_eq!(res.status(), 400);
    let error: Value = res.json().await.unwrap();
    assert_eq!(error["error"]["type"], "invalid_request_error");
    assert!(error["error"]["message"]
        .as_str()
        .unwrap()
        .contains("max_tokens"));
    let res = post(json!({ "model": "gpt-4o-mini", "max_tokens": 5, "messages": [{ "role": "user", "content": "hi" }] }), c.token())
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    // Beta features the SDK asks for (`betas=[...]`) reach Anthropic as its header; without
    // one, none is sent; a malformed one is refused by name before anything is reserved.
    assert_eq!(
        app.sim("/sim/last-headers").await["anthropic-beta"],
        Value::Null
    );
    let res = request(c.token())
        .header(
            "anthropic-beta",
            "prompt-caching-2024-07-31, token-efficient-tools-2025-02-19",
        )
        .json(&sent)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let headers = app.sim("/sim/last-headers").await;
    assert_eq!(
        headers["anthropic-beta"],
        "prompt-caching-2024-07-31,token-efficient-tools-2025-02-19"
    );
    assert_eq!(headers["anthropic-version"], "2023-06-01");
    let before = ledger(&app, c.tenant).await.requests;
    let res = request(c.token())
        .header("anthropic-beta", "files-api;drop table")
        .json(&sent)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    let error: Value = res.json().await.unwrap();
    assert_eq!(error["error"]["type"], "invalid_request_error");
    assert!(error["error"]["message"]
        .as_str()
        .unwrap()
        .starts_with("anthropic-beta:"));
    assert_eq!(ledger(&app, c.tenant).await.requests, before);
}

#[sqlx::test(migrations = "../migrations")]
async fn v1_responses_forwards_openais_responses_api_and_meters_it(pool: PgPool) {
    let app = TestApp::spawn(&pool).await;
    let c = app.api_clinic("Responses Clinic").await;
    let client = reqwest::Client::new();
    let post = |body: Value| {
        client
            .post(format!("{}/v1/responses", app.url))
            .bearer_auth(c.token())
            .json(&body)
            .send()
    };
    // A JSON call: the body reaches OpenAI as sent, with a reply limit added when none was
    // given, and the answer comes back as OpenAI's.
    let sent = json!({ "model": "gpt-4o-mini", "instructions": "Be brief.",
        "input": [{ "role": "user", "content": [
            { "type": "input_text", "text": "What is triage?" },
            { "type": "input_image", "image_url": "https://example.org/x.png" },
        ] }],
        "store": false, "metadata": { "ward": "B" }, "a_field_from_next_year": [1] });
    let res = post(sent.clone()).await.unwrap();
    assert_eq!(res.status(), 200);
    assert!(res.headers().contains_key("x-tessera-call-id"));
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["object"], "response");
    assert_eq!(body["status"], "completed");
    let text = body["output"][0]["content"][0]["text"].as_str().unwrap();
    assert!(text.starts_with("I see 1 image."), "{text}");
    let mut forwarded = sim_last(&app).await;
    assert!(forwarded["max_output_tokens"].as_u64().is_some());
    forwarded
        .as_object_mut()
        .unwrap()
        .remove("max_output_tokens");
    assert_eq!(forwarded, sent);
    let json_tokens = body["usage"]["total_tokens"].as_i64().unwrap();
    assert_eq!(ledger(&app, c.tenant).await.tokens, json_tokens);

    // Streamed: OpenAI's events as they came, the last one `response.completed` with the
    // usage the ledger records.
    let res = post(
        json!({ "model": "gpt-4o-mini", "input": "Summarise the rota", "stream": true,
        "max_output_tokens": 64 }),
    )
    .await
    .unwrap();
    assert_eq!(res.status(), 200);
    let events = common::sse(&res.text().await.unwrap());
    assert_eq!(events[0].event.as_deref(), Some("response.created"));
    let last = events.last().unwrap();
    assert_eq!(last.event.as_deref(), Some("response.completed"));
    let done: Value = serde_json::from_str(&last.data).unwrap();
    assert_eq!(
        text_deltas(&events),
        testkit::reply_text("gpt-4o-mini", "Summarise the rota")
    );
    let stream_tokens = done["response"]["usage"]["total_tokens"].as_i64().unwrap();
    let recorded = ledger(&app, c.tenant).await;
    assert_eq!(recorded.requests, 2);
    assert_eq!(recorded.tokens, json_tokens + stream_tokens);

    // Function tools round trip: the call, then its output answered.
    let tools = json!([{ "type": "function", "name": "weather",
        "parameters": { "type": "object", "properties": { "city": { "type": "string" } } } }]);
    let body: Value = post(json!({ "model": "gpt-4o-mini", "tools": tools,
        "input": "What is the weather in Oslo?" }))
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    let call = &body["output"][0];
    assert_eq!(call["type"], "function_call");
    assert_eq!(call["arguments"], r#"{"city":"Oslo"}"#);
    let answer: Value = post(json!({ "model": "gpt-4o-mini", "tools": tools, "input": [
        { "role": "user", "content": "What is the weather in Oslo?" },
        call,
        { "type": "function_call_output", "call_id": call["call_id"], "output": "Sunny, 21 C" },
    ] }))
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    assert!(answer["output"][0]["content"][0]["text"]
        .as_str()
        .unwrap()
        .ends_with("the tool said Sunny, 21 C"));

    // A long reply to long instructions: the closing events carry both (over a megabyte
    // here), and still arrive whole and are charged as reported.
    let res = post(
        json!({ "model": "gpt-4o-mini", "stream": true, "max_output_tokens": 100_000,
        "instructions": "Be brief. ".repeat(15_000), "input": "[sim:words=100000]" }),
    )
    .await
    .unwrap();
    assert_eq!(res.status(), 200);
    let text = res.text().await.unwrap();
    let closing = text.rsplit("event: ").next().unwrap();
    let data = closing
        .strip_prefix("response.completed\ndata: ")
        .unwrap_or_else(|| panic!("{}", &closing[..closing.len().min(200)]));
    assert!(data.len() > tessera_core::llm::wire::LINE_LIMIT);
    let done: Value = serde_json::from_str(data.trim_end()).unwrap();
    assert_eq!(done["response"]["usage"]["output_tokens"], 100_000);
    assert_eq!(ledger(&app, c.tenant).await.requests, 5);

    // A clinic's OpenAI-compatible endpoint (Ollama, vLLM) is asked at its own base URL.
    let compatible = testkit::fixtures::clinic("Responses Compatible Clinic")
        .endpoint(&format!("http://{}/v1", app.sim), "sk-compatible-key")
        .api_key("tests")
        .create(&app.env())
        .await;
    let res = client
        .post(format!("{}/v1/responses", app.url))
        .bearer_auth(compatible.token())
        .json(&json!({ "model": "llama3.1:8b", "input": "Who is on call?" }))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();
    assert_eq!(
        body["output"][0]["content"][0]["text"],
        testkit::reply_text("llama3.1:8b", "Who is on call?")
    );
    let recorded = ledger(&app, compatible.tenant).await;
    assert_eq!(
        (recorded.requests, recorded.tokens),
        (1, body["usage"]["total_tokens"].as_i64().unwrap())
    );

    // What would make a call's cost unknown beforehand is refused by name, before anything is
    // sent or reserved; so are Claude's models and agents.
    let before = sim_requests(&app).await;
    for (body, names) in [
        (
            json!({ "model": "gpt-4o-mini", "input": "hi", "previous_response_id": "resp_1" }),
            "previous_response_id",
        ),
        (
            json!({ "model": "gpt-4o-mini", "input": "hi", "tools": [{ "type": "web_search" }] }),
            "tools[0]",
        ),
        (
            json!({ "model": "gpt-4o-mini", "input": "hi", "background": true }),
            "background",
        ),
        (json!({ "model": "gpt-4o-mini" }), "input"),
        (
            json!({ "model": "claude-3-5-haiku-latest", "input": "hi" }),
            "model",
        ),
        (
            json!({ "model": "agent:front-desk", "input": "hi" }),
            "model",
        ),
    ] {
        let res = post(body.clone()).await.unwrap();
        assert_eq!(res.status(), 400, "{body}");
        let error: Value = res.json().await.unwrap();
        assert_eq!(error["error"]["type"], "invalid_request_error", "{error}");
        let message = error["error"]["message"].as_str().unwrap();
        assert!(message.starts_with(names), "{body}: {message}");
    }
    assert_eq!(sim_requests(&app).await, before);
    assert_eq!(ledger(&app, c.tenant).await.requests, 5);

    // A provider that fails part-way: the client gets an error event in the Responses API's
    // shape; what reached it is charged.
    let res = post(json!({ "model": "gpt-4o-mini", "stream": true,
        "input": "one two three four five [sim:fail_midstream]" }))
    .await
    .unwrap();
    let events = common::sse(&res.text().await.unwrap());
    let last = events.last().unwrap();
    assert_eq!(last.event.as_deref(), Some("error"), "{events:?}");
    let error: Value = serde_json::from_str(&last.data).unwrap();
    assert_eq!(error["type"], "error");
    assert!(
        error["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{error}"
    );
    assert_eq!(ledger(&app, c.tenant).await.requests, 6);

    // A provider that reports no usage: the text it streamed is counted (every delta, though
    // they pass unread) and the call marked as counted by Tessera.
    let res = post(
        json!({ "model": "gpt-4o-mini", "stream": true, "max_output_tokens": 1000,
        "input": "[sim:words=300] [sim:no_usage]" }),
    )
    .await
    .unwrap();
    let events = common::sse(&res.text().await.unwrap());
    let last = events.last().unwrap();
    assert_eq!(last.event.as_deref(), Some("response.completed"));
    assert!(last.data.contains(r#""usage":null"#), "{}", last.data);
    let streamed = text_deltas(&events);
    assert!(streamed.ends_with("word300"), "{streamed}");
    assert_eq!(ledger(&app, c.tenant).await.requests, 7);
    let recorded = estimated_events(&app, c.tenant).await;
    assert_eq!(
        recorded.last(),
        Some(&(
            true,
            true,
            false,
            tessera_core::llm::count_tokens(&streamed)
        ))
    );
}

/// The text of a Responses API stream's `response.output_text.delta` events, joined.
fn text_deltas(events: &[tessera_core::llm::wire::SseEvent]) -> String {
    events
        .iter()
        .filter(|e| e.event.as_deref() == Some("response.output_text.delta"))
        .map(|e| {
            serde_json::from_str::<Value>(&e.data).unwrap()["delta"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect()
}

//! Chat over HTTP: agents through server functions, replies streamed from /chat/replies/{id},
//! privacy, and the allowance message.

mod common;

use common::{TestApp, PASSWORD};
use serde_json::Value;
use sqlx::PgPool;

async fn owner_with_agent(app: &TestApp, clinic: &str, email: &str) -> reqwest::Client {
    owner_with(
        app,
        clinic,
        email,
        &[
            ("name", "Front Desk"),
            ("model", "gpt-4o-mini"),
            ("system_prompt", "You answer for the front desk."),
        ],
    )
    .await
}

/// The signed-in owner of a new clinic with an OpenAI key and the agent `agent` (the agent
/// form's fields).
async fn owner_with(
    app: &TestApp,
    clinic: &str,
    email: &str,
    agent: &[(&str, &str)],
) -> reqwest::Client {
    let owner = app.browser();
    app.sign_up(&owner, clinic, email).await;
    let res = app
        .call(
            &owner,
            "save_provider_key",
            &[("provider", "openai"), ("key", "sk-test-chat-key")],
        )
        .await;
    assert!(res.status().is_success());
    let res = app.call(&owner, "save_agent", agent).await;
    assert!(res.status().is_success(), "{}", res.text().await.unwrap());
    owner
}

async fn agent_id(app: &TestApp, client: &reqwest::Client) -> String {
    let home: Value = app.json(client, "chat_home", &[]).await;
    home["agents"][0]["id"].as_str().unwrap().to_string()
}

/// `(event name, data)` of each event of a stream.
fn events(text: &str) -> Vec<(String, String)> {
    common::sse(text)
        .into_iter()
        .map(|e| (e.event.unwrap_or_default(), e.data))
        .collect()
}

#[sqlx::test(migrations = "../migrations")]
async fn a_reply_streams_once_and_is_saved(pool: PgPool) {
    let app = TestApp::spawn(&pool).await;
    let owner = owner_with_agent(&app, "Chat Clinic", "o@chat.example").await;
    let agent = agent_id(&app, &owner).await;

    let sent: Value = app
        .json(
            &owner,
            "start_conversation",
            &[("agent_id", &agent), ("text", "When are you open?")],
        )
        .await;
    let reply = sent["reply_id"].as_str().unwrap();
    let conversation = sent["conversation_id"].as_str().unwrap();

    let res = owner
        .get(format!("{}/chat/replies/{reply}", app.url))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let evs = events(&res.text().await.unwrap());
    let text: String = evs
        .iter()
        .filter(|(n, _)| n == "delta")
        .map(|(_, d)| serde_json::from_str::<String>(d).unwrap())
        .collect();
    assert_eq!(
        text,
        testkit::reply_text("gpt-4o-mini", "When are you open?")
    );
    assert_eq!(evs.last().unwrap().0, "done");

    // Generated once: asking again is a conflict.
    let again = owner
        .get(format!("{}/chat/replies/{reply}", app.url))
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 409);

    // Reloading shows the saved conversation, rendered on the server.
    let page = owner
        .get(format!("{}/chat/{conversation}", app.url))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    let html = page.text().await.unwrap();
    assert!(
        html.contains("When are you open?") && html.contains("Simulated reply from gpt-4o-mini")
    );
}

/// Reads a stream until its text contains `needle`, then lets it go (the page is closed).
async fn read_until(mut res: reqwest::Response, needle: &str) -> String {
    let mut seen = String::new();
    while let Some(chunk) = res.chunk().await.unwrap() {
        seen.push_str(&String::from_utf8_lossy(&chunk));
        if seen.contains(needle) {
            return seen;
        }
    }
    panic!("the stream ended without {needle}: {seen}");
}

/// The text a page shows from a reply's events: `text` replaces it, `delta` adds to it.
fn shown_text(evs: &[(String, String)]) -> String {
    let mut text = String::new();
    for (name, data) in evs {
        match name.as_str() {
            "text" => text = serde_json::from_str(data).unwrap(),
            "delta" => text.push_str(&serde_json::from_str::<String>(data).unwrap()),
            _ => {}
        }
    }
    text
}

#[sqlx::test(migrations = "../migrations")]
async fn a_reply_keeps_generating_after_its_page_goes_and_is_followed_then_stopped(pool: PgPool) {
    let app = TestApp::spawn(&pool).await;
    let owner = owner_with_agent(&app, "Follow Clinic", "o@follow.example").await;
    let agent = agent_id(&app, &owner).await;
    let sent: Value = app
        .json(
            &owner,
            "start_conversation",
            &[
                ("agent_id", &agent),
                ("text", "Slowly [sim:words=30] [sim:chunk_ms=40]"),
            ],
        )
        .await;
    let reply = sent["reply_id"].as_str().unwrap().to_string();
    let conversation = sent["conversation_id"].as_str().unwrap().to_string();
    let url = format!("{}/chat/replies/{reply}", app.url);

    // The page that asked for it reads a few words, then is reloaded (its stream closes).
    let res = owner.get(&url).send().await.unwrap();
    assert_eq!(res.status(), 200);
    read_until(res, "word3").await;

    // The reply goes on. The reloaded page follows it: the text so far, then the rest.
    let res = owner.get(&url).send().await.unwrap();
    assert_eq!(res.status(), 200);
    let evs = events(&res.text().await.unwrap());
    assert_eq!(evs[0].0, "text", "{evs:?}");
    assert!(evs[0].1.contains("word3"), "{evs:?}");
    assert_eq!(evs.last().unwrap().0, "done", "{evs:?}");
    let whole = testkit::reply_text("gpt-4o-mini", "[sim:words=30]");
    assert_eq!(shown_text(&evs), whole);
    let conv: Value = app
        .json(&owner, "conversation", &[("id", &conversation)])
        .await;
    assert_eq!(conv["messages"][1]["status"], "complete");
    assert_eq!(conv["messages"][1]["content"], whole.as_str());

    // A long reply is stopped from another request: its stream says so, and what came is kept.
    let sent: Value = app
        .json(
            &owner,
            "send_message",
            &[
                ("conversation_id", &conversation),
                ("text", "Everything [sim:words=400] [sim:chunk_ms=40]"),
            ],
        )
        .await;
    let reply = sent["reply_id"].as_str().unwrap().to_string();
    let mut res = owner
        .get(format!("{}/chat/replies/{reply}", app.url))
        .send()
        .await
        .unwrap();
    let mut seen = String::new();
    while !seen.contains("word3") {
        seen.push_str(&String::from_utf8_lossy(
            &res.chunk().await.unwrap().unwrap(),
        ));
    }
    // Someone else may not stop it.
    let stranger = app.browser();
    app.sign_up(&stranger, "Elsewhere", "s@follow-else.example")
        .await;
    let res_other = app
        .call(&stranger, "stop_reply", &[("reply_id", &reply)])
        .await;
    assert_eq!(res_other.status(), 404);
    let stopped = app
        .call(&owner, "stop_reply", &[("reply_id", &reply)])
        .await;
    assert!(stopped.status().is_success());
    while let Some(chunk) = res.chunk().await.unwrap() {
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
    let evs = events(&seen);
    assert_eq!(evs.last().unwrap().0, "stopped", "{evs:?}");
    let text = shown_text(&evs);
    assert!(!text.contains("word400"), "stopped midway: {text}");
    let conv: Value = app
        .json(&owner, "conversation", &[("id", &conversation)])
        .await;
    assert_eq!(conv["messages"][3]["status"], "stopped");
    assert_eq!(conv["messages"][3]["content"], text.as_str());
    // A stopped reply is not streamed again.
    let again = owner
        .get(format!("{}/chat/replies/{reply}", app.url))
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 409);
}

#[sqlx::test(migrations = "../migrations")]
async fn conversations_are_private_over_http(pool: PgPool) {
    let app = TestApp::spawn(&pool).await;
    let owner = owner_with_agent(&app, "Private Chat", "o@private.example").await;
    let agent = agent_id(&app, &owner).await;
    let sent: Value = app
        .json(
            &owner,
            "start_conversation",
            &[("agent_id", &agent), ("text", "Confidential note")],
        )
        .await;
    let conversation = sent["conversation_id"].as_str().unwrap().to_string();
    let reply = sent["reply_id"].as_str().unwrap().to_string();

    // A colleague in the same clinic.
    let token = app.invite(&owner, "nurse@private.example", "staff").await;
    let colleague = app.browser();
    app.post(
        &colleague,
        "accept_invitation",
        &[("token", &token), ("name", "Nina"), ("password", PASSWORD)],
    )
    .await;
    // Someone in another clinic.
    let stranger = app.browser();
    app.sign_up(&stranger, "Elsewhere", "s@elsewhere.example")
        .await;

    for other in [&colleague, &stranger] {
        let page = other
            .get(format!("{}/chat/{conversation}", app.url))
            .send()
            .await
            .unwrap();
        assert_eq!(page.status(), 404);
        assert!(!page.text().await.unwrap().contains("Confidential note"));
        let call = app
            .call(other, "conversation", &[("id", &conversation)])
            .await;
        assert_eq!(call.status(), 404);
        let stream = other
            .get(format!("{}/chat/replies/{reply}", app.url))
            .send()
            .await
            .unwrap();
        assert_eq!(stream.status(), 404);
        let post = app
            .call(
                other,
                "send_message",
                &[("conversation_id", &conversation), ("text", "hi")],
            )
            .await;
        assert_eq!(post.status(), 404);
    }
    // Staff may chat but not manage agents.
    let res = app
        .call(
            &colleague,
            "save_agent",
            &[("name", "X"), ("model", "gpt-4o")],
        )
        .await;
    assert_eq!(res.status(), 403);
}

#[sqlx::test(migrations = "../migrations")]
async fn a_used_up_allowance_fails_the_reply_with_the_allowance_message(pool: PgPool) {
    let app = TestApp::spawn_with_billing(&pool, &[]).await;
    let owner = owner_with_agent(&app, "Allowance Chat", "o@allowance.example").await;
    let agent = agent_id(&app, &owner).await;
    app.use_up_allowance(&owner).await;
    let sent: Value = app
        .json(
            &owner,
            "start_conversation",
            &[("agent_id", &agent), ("text", "hello")],
        )
        .await;
    let reply = sent["reply_id"].as_str().unwrap();
    let res = owner
        .get(format!("{}/chat/replies/{reply}", app.url))
        .send()
        .await
        .unwrap();
    let evs = events(&res.text().await.unwrap());
    assert_eq!(evs.len(), 1);
    assert_eq!(evs[0].0, "failed");
    assert!(evs[0].1.contains("token allowance"), "{}", evs[0].1);
    let conv: Value = app
        .json(
            &owner,
            "conversation",
            &[("id", sent["conversation_id"].as_str().unwrap())],
        )
        .await;
    assert_eq!(conv["messages"][1]["status"], "failed");
    assert!(conv["messages"][1]["error"]
        .as_str()
        .unwrap()
        .contains("token allowance"));
}

#[sqlx::test(migrations = "../migrations")]
async fn an_edited_agent_applies_to_the_api_at_once(pool: PgPool) {
    let app = TestApp::spawn(&pool).await;
    let owner = owner_with_agent(&app, "Edit Agent", "o@edit.example").await;
    app.call(
        &owner,
        "save_provider_key",
        &[("provider", "anthropic"), ("key", "sk-ant-test-edit")],
    )
    .await;
    let created: Value = app
        .json(&owner, "create_api_key", &[("name", "edit")])
        .await;
    let token = created["token"].as_str().unwrap().to_string();
    let ask = || {
        reqwest::Client::new()
            .post(format!("{}/v1/chat/completions", app.url))
            .bearer_auth(&token)
            .json(&serde_json::json!({ "model": "agent:front-desk", "messages": [{ "role": "user", "content": "hi" }] }))
            .send()
    };
    let first: Value = ask().await.unwrap().json().await.unwrap();
    assert_eq!(first["model"], "gpt-4o-mini");

    let id = agent_id(&app, &owner).await;
    let res = app
        .call(
            &owner,
            "save_agent",
            &[
                ("id", &id),
                ("name", "Front Desk"),
                ("model", "claude-3-5-haiku-latest"),
            ],
        )
        .await;
    assert!(res.status().is_success());
    let second: Value = ask().await.unwrap().json().await.unwrap();
    assert_eq!(second["model"], "claude-3-5-haiku-latest");

    app.call(&owner, "delete_agent", &[("id", &id)]).await;
    assert_eq!(ask().await.unwrap().status(), 404);
}

#[sqlx::test(migrations = "../migrations")]
async fn the_usage_dashboard_and_export_show_a_chat_just_made(pool: PgPool) {
    let app = TestApp::spawn(&pool).await;
    let owner = owner_with_agent(&app, "Dashboard Chat", "o@dashboard.example").await;
    let agent = agent_id(&app, &owner).await;
    let sent: Value = app
        .json(
            &owner,
            "start_conversation",
            &[("agent_id", &agent), ("text", "Count me")],
        )
        .await;
    let reply = sent["reply_id"].as_str().unwrap();
    app.text(&owner, &format!("/chat/replies/{reply}")).await;
    app.flush_ledger().await;

    let dash: Value = app.json(&owner, "usage_dashboard", &[]).await;
    assert_eq!(dash["requests"], 1);
    assert!(dash["tokens"].as_i64().unwrap() > 0);
    let by_agent = &dash["charts"][1];
    assert_eq!(by_agent["series"][0]["name"], "Front Desk");
    assert_eq!(dash["charts"][2]["series"][0]["name"], "Olivia Owner");
    let page = app.text(&owner, "/settings/usage").await;
    assert!(
        page.contains("<svg") && page.contains("Front Desk"),
        "the chart is drawn on the server"
    );

    let csv = owner
        .get(format!("{}/settings/usage/export.csv", app.url))
        .send()
        .await
        .unwrap();
    assert_eq!(csv.status(), 200);
    assert!(csv.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/csv"));
    let text = csv.text().await.unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert!(lines[0].starts_with("occurred_at,provider,model,agent,person"));
    assert!(
        lines[1].contains(",openai,gpt-4o-mini,Front Desk,Olivia Owner,"),
        "{}",
        lines[1]
    );

    let bad = owner
        .get(format!(
            "{}/settings/usage/export.csv?month=2026-13",
            app.url
        ))
        .send()
        .await
        .unwrap();
    // Refused like any form field that is not a month, with the same message.
    assert_eq!(bad.status(), 422);
    assert_eq!(
        bad.text().await.unwrap(),
        "\"2026-13\" is not a month (YYYY-MM)."
    );
    let stranger = app.browser();
    let res = stranger
        .get(format!("{}/settings/usage/export.csv", app.url))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
}

#[sqlx::test(migrations = "../migrations")]
async fn staff_see_the_agents_to_talk_to_but_not_their_instructions(pool: PgPool) {
    let app = TestApp::spawn(&pool).await;
    let owner = owner_with_agent(&app, "Instructions Clinic", "o@instructions.example").await;
    let token = app
        .invite(&owner, "nurse@instructions.example", "staff")
        .await;
    let staff = app.browser();
    app.json(
        &staff,
        "accept_invitation",
        &[("token", &token), ("name", "Nina"), ("password", PASSWORD)],
    )
    .await;
    let home = app.json(&staff, "chat_home", &[]).await;
    assert_eq!(home["agents"][0]["name"], "Front Desk");
    assert!(
        !home.to_string().contains("You answer for the front desk"),
        "{home}"
    );
}

#[sqlx::test(migrations = "../migrations")]
async fn two_hundred_concurrent_chat_replies_admit_exactly_what_the_allowance_holds(pool: PgPool) {
    // Arrange: 200 conversations waiting for their replies, each reply's worst case (its
    // instructions, the question and a 32,000-token reply limit) the same, and the Starter
    // allowance (1,000,000 tokens, nothing beyond) holding exactly N of them. The provider
    // waits long enough for every reply to be in flight at once.
    let app = TestApp::spawn(&pool).await;
    let instructions = "You answer for the front desk.";
    let owner = owner_with(
        &app,
        "Crowded Clinic",
        "o@crowded.example",
        &[
            ("name", "Front Desk"),
            ("model", "gpt-4o-mini"),
            ("system_prompt", instructions),
            ("max_reply_tokens", "32000"),
        ],
    )
    .await;
    let agent = agent_id(&app, &owner).await;
    let question = "Who is on call tonight? [sim:latency=5000]";
    let worst = tessera_core::llm::prompt_upper_bound(&[
        tessera_core::llm::ChatMessage {
            role: tessera_core::llm::MessageRole::System,
            content: instructions.into(),
        },
        tessera_core::llm::ChatMessage {
            role: tessera_core::llm::MessageRole::User,
            content: question.into(),
        },
    ]) + 32_000;
    let n = 1_000_000 / worst;
    assert_eq!(n, 31);
    let mut replies = Vec::new();
    for _ in 0..200 {
        let sent: Value = app
            .json(
                &owner,
                "start_conversation",
                &[("agent_id", &agent), ("text", question)],
            )
            .await;
        replies.push(sent["reply_id"].as_str().unwrap().to_string());
    }

    // Act: every page opens its reply stream at once.
    let streams: Vec<_> = replies
        .iter()
        .map(|reply| {
            let req = owner.get(format!("{}/chat/replies/{reply}", app.url));
            tokio::spawn(async move {
                let res = req.send().await.unwrap();
                assert_eq!(res.status(), 200);
                events(&res.text().await.unwrap())
            })
        })
        .collect();
    let (mut answered, mut refused) = (0, 0);
    for stream in streams {
        let evs = stream.await.unwrap();
        match evs.last().map(|(name, data)| (name.as_str(), data)) {
            Some(("done", _)) => answered += 1,
            Some(("failed", data)) if data.contains("token allowance") => refused += 1,
            other => panic!("unexpected end of a reply: {other:?}"),
        }
    }

    // Assert: exactly N replies ran, the others said why, and nothing is left reserved.
    assert_eq!(answered, n, "{answered} replies ran with room for {n}");
    assert_eq!(refused, 200 - n);
    let tenant = app.clinic_of(&owner).await.tenant;
    app.flush_ledger().await;
    let ledger = app.ledger_usage(tenant).await;
    assert_eq!(ledger.requests, n);
    assert!(ledger.tokens <= 1_000_000, "spent {}", ledger.tokens);
    let (live, reserved) = app.live_usage(tenant).await;
    assert_eq!((live, reserved), (ledger, 0));
}

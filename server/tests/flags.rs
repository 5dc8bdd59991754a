//! Feature flags wired to behaviour, OFREP, the operator console's access, deactivation, and a
//! rollback reaching a second server process within a second.

mod common;

use std::time::{Duration, Instant};

use common::{app_url, Child, TestApp, PASSWORD};
use futures_util::StreamExt;
use serde_json::{json, Value};
use sqlx::PgPool;
use tessera_core::agents::AgentInput;
use tessera_core::flags::{self, FlagInput};
use tessera_core::gateway::{ChatOutcome, Forward, StreamEvent};
use tessera_core::llm::body::{Body, Dialect};
use tessera_core::llm::{ChatMessage, ChatRequest, MessageRole};
use tessera_core::operator::{self, Added};
use tessera_core::UserId;

/// An operator made as `server operator add` makes one: the account and its password.
async fn operator(pool: &PgPool, app: &TestApp, email: &str) -> (UserId, String) {
    let Added::Created { password } = operator::add(pool, email).await.unwrap() else {
        panic!("expected a new account");
    };
    let user = tessera_core::auth::authenticate(&app.services.db, email, &password)
        .await
        .unwrap();
    (user, password)
}

/// Sets a flag's rules the way the console does (the version it shows, then save).
async fn set_rules(app: &TestApp, op: UserId, key: &str, default: &str, rules: &str) -> i32 {
    let (flag, _) = flags::history(&app.services.db, key).await.unwrap();
    let input = FlagInput {
        description: flag.description.clone(),
        default: default.into(),
        rules: rules.into(),
        ..Default::default()
    };
    let version = flags::update(
        &app.services.db,
        &app.services.changes,
        op,
        key,
        flag.version,
        &input,
    )
    .await
    .unwrap()
    .version;
    // This server's cache reloads on the announcement in a task of its own; wait for it.
    app.services.gateway.flags.reload().await.unwrap();
    version
}

/// How many text events and raw pieces a stream gave.
async fn pieces(outcome: ChatOutcome) -> (usize, usize, String) {
    let ChatOutcome::Stream(mut stream) = outcome else {
        panic!("asked for a stream");
    };
    let (mut texts, mut raws, mut all) = (0, 0, String::new());
    while let Some(ev) = stream.next().await {
        match ev.unwrap() {
            StreamEvent::Text(t) => {
                texts += 1;
                all.push_str(&t);
            }
            StreamEvent::Raw(bytes) => {
                raws += 1;
                all.push_str(&String::from_utf8_lossy(&bytes));
            }
            _ => {}
        }
    }
    (texts, raws, all)
}

#[sqlx::test(migrations = "../migrations")]
async fn streaming_off_gives_whole_replies_until_rolled_back(pool: PgPool) {
    let app = TestApp::spawn(&pool).await;
    let north = app.api_clinic("North").await;
    let south = app.api_clinic("South").await;
    let (op, _) = operator(&pool, &app, "ops@tessera.example").await;
    let gateway = &app.services.gateway;
    let ask = |stream| ChatRequest {
        model: "gpt-4o-mini".into(),
        messages: vec![ChatMessage {
            role: MessageRole::User,
            content: "Tell me about the clinic's opening hours, please.".into(),
        }],
        stream,
        ..Default::default()
    };
    let forward = || {
        Forward {
        dialect: Dialect::OpenAi,
        body: Body::parse(
            json!({ "model": "gpt-4o-mini", "stream": true,
                    "messages": [{ "role": "user", "content": "Tell me about the opening hours." }] })
                .to_string()
                .as_bytes(),
        )
        .unwrap(),
        anthropic_beta: None,
    }
    };
    let (texts, _, streamed) = pieces(
        gateway
            .chat(&north.owner_caller(), ask(true))
            .await
            .unwrap(),
    )
    .await;
    assert!(texts > 1, "the simulator streams in pieces: {texts}");

    set_rules(
        &app,
        op,
        "streaming_enabled",
        "true",
        &format!("clinic {} = false", north.slug),
    )
    .await;
    // The chat: one text event with the whole reply.
    let (texts, _, whole) = pieces(
        gateway
            .chat(&north.owner_caller(), ask(true))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(texts, 1);
    assert_eq!(whole, streamed);
    // The API: the provider's events in one piece, then the closing one.
    let (_, raws, body) = pieces(
        gateway
            .forward(&north.owner_caller(), forward())
            .await
            .unwrap(),
    )
    .await;
    assert!(raws <= 2, "{raws} pieces");
    assert!(
        body.contains("[DONE]") && body.matches("chat.completion.chunk").count() > 2,
        "{body}"
    );
    // Another clinic still streams.
    let (_, raws, _) = pieces(
        gateway
            .forward(&south.owner_caller(), forward())
            .await
            .unwrap(),
    )
    .await;
    assert!(raws > 2, "{raws}");

    // Roll back to version 1: streaming again.
    flags::rollback(
        &app.services.db,
        &app.services.changes,
        op,
        "streaming_enabled",
        1,
    )
    .await
    .unwrap();
    app.services.gateway.flags.reload().await.unwrap();
    let (texts, _, _) = pieces(
        gateway
            .chat(&north.owner_caller(), ask(true))
            .await
            .unwrap(),
    )
    .await;
    assert!(texts > 1);
}

#[sqlx::test(migrations = "../migrations")]
async fn default_model_and_context_cap_shape_agents(pool: PgPool) {
    let app = TestApp::spawn(&pool).await;
    let c = testkit::fixtures::clinic("North")
        .key(tessera_core::Provider::OpenAi, "sk-test-good-key")
        .api_key("tests")
        .agent_with(AgentInput {
            name: "Front desk".into(),
            system_prompt: "Be kind.".into(),
            context_tokens: "500".into(),
            ..Default::default()
        })
        .create(&app.env())
        .await;
    let (op, _) = operator(&pool, &app, "ops@tessera.example").await;
    let history: Vec<Value> = (0..40)
        .flat_map(|i| {
            [
                json!({ "role": "user", "content": format!("Question number {i} about the clinic's parking and opening hours?") }),
                json!({ "role": "assistant", "content": format!("Answer number {i}: the car park opens at eight and closes at six.") }),
            ]
        })
        .chain([json!({ "role": "user", "content": "And on Sundays?" })])
        .collect();
    let call = || async {
        let res = reqwest::Client::new()
            .post(format!("{}/v1/chat/completions", app.url))
            .bearer_auth(c.token())
            .json(&json!({ "model": "agent:front-desk", "messages": history }))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200, "{}", res.text().await.unwrap());
        reqwest::get(format!("http://{}/sim/last", app.sim))
            .await
            .unwrap()
            .json::<Value>()
            .await
            .unwrap()
    };
    // An agent with no model uses the default model.
    let sent = call().await;
    assert_eq!(sent["model"], "gpt-4o-mini");
    let kept = sent["messages"].as_array().unwrap().len();
    set_rules(
        &app,
        op,
        "default_model",
        "gpt-4o-mini",
        &format!("clinic {} = gpt-4o", c.slug),
    )
    .await;
    assert_eq!(call().await["model"], "gpt-4o");

    // The context cap trims every agent's history below its own budget.
    let agent = &c.agents[0];
    let wide = AgentInput {
        name: agent.name.clone(),
        system_prompt: agent.system_prompt.clone(),
        context_tokens: "8000".into(),
        ..Default::default()
    };
    tessera_core::agents::update(
        &app.services.db,
        &app.services.changes,
        c.tenant,
        c.owner(),
        agent.id,
        &wide,
    )
    .await
    .unwrap();
    let all = call().await["messages"].as_array().unwrap().len();
    assert!(all > kept, "{all} > {kept}");
    set_rules(
        &app,
        op,
        "max_context_tokens",
        "200000",
        &format!("clinic {} = 500", c.slug),
    )
    .await;
    assert_eq!(call().await["messages"].as_array().unwrap().len(), kept);
}

#[sqlx::test(migrations = "../migrations")]
async fn ofrep_evaluates_the_clinics_flags(pool: PgPool) {
    let app = TestApp::spawn(&pool).await;
    let c = app.api_clinic("North").await;
    let (op, _) = operator(&pool, &app, "ops@tessera.example").await;
    let http = reqwest::Client::new();
    let one = |key: &str| {
        http.post(format!("{}/ofrep/v1/evaluate/flags/{key}", app.url))
            .bearer_auth(c.token())
    };
    let res = one("streaming_enabled")
        .json(&json!({ "context": {} }))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let v: Value = res.json().await.unwrap();
    assert_eq!(v["key"], "streaming_enabled");
    assert_eq!(v["value"], true);
    assert_eq!(v["reason"], "DEFAULT");
    assert_eq!(v["variant"], "default");

    set_rules(
        &app,
        op,
        "streaming_enabled",
        "true",
        &format!("clinic {} = false", c.slug),
    )
    .await;
    let v: Value = one("streaming_enabled")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        (v["value"].clone(), v["reason"].clone()),
        (json!(false), json!("TARGETING_MATCH"))
    );
    let mine = json!({ "context": { "targetingKey": c.tenant.to_string() } });
    assert_eq!(
        one("streaming_enabled")
            .json(&mine)
            .send()
            .await
            .unwrap()
            .status(),
        200
    );

    let res = one("no_such_flag").send().await.unwrap();
    assert_eq!(res.status(), 404);
    let v: Value = res.json().await.unwrap();
    assert_eq!(v["errorCode"], "FLAG_NOT_FOUND");
    let res = one("streaming_enabled")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    assert_eq!(
        res.json::<Value>().await.unwrap()["errorCode"],
        "PARSE_ERROR"
    );
    let other = json!({ "context": { "targetingKey": "someone-else" } });
    let res = one("streaming_enabled").json(&other).send().await.unwrap();
    assert_eq!(
        res.json::<Value>().await.unwrap()["errorCode"],
        "INVALID_CONTEXT"
    );
    let res = http
        .post(format!(
            "{}/ofrep/v1/evaluate/flags/streaming_enabled",
            app.url
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);

    // Bulk, with an ETag that stays until a flag changes.
    let bulk = || {
        http.post(format!("{}/ofrep/v1/evaluate/flags", app.url))
            .bearer_auth(c.token())
    };
    let res = bulk().json(&json!({ "context": {} })).send().await.unwrap();
    assert_eq!(res.status(), 200);
    let etag = res.headers()["etag"].to_str().unwrap().to_string();
    let v: Value = res.json().await.unwrap();
    let keys: Vec<&str> = v["flags"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["key"].as_str().unwrap())
        .collect();
    for key in [
        "default_model",
        "max_context_tokens",
        "rag_enabled",
        "reranking_enabled",
        "streaming_enabled",
    ] {
        assert!(keys.contains(&key), "{keys:?}");
    }
    let res = bulk().header("if-none-match", &etag).send().await.unwrap();
    assert_eq!(res.status(), 304);
    set_rules(
        &app,
        op,
        "rag_enabled",
        "true",
        &format!("clinic {} = false", c.slug),
    )
    .await;
    let res = bulk().header("if-none-match", &etag).send().await.unwrap();
    assert_eq!(res.status(), 200);
}

#[sqlx::test(migrations = "../migrations")]
async fn only_operators_reach_the_console(pool: PgPool) {
    let app = TestApp::spawn(&pool).await;
    let owner = app.browser();
    app.sign_up(&owner, "North Clinic", "olivia@north.example")
        .await;
    let staff = app.browser();
    let token = app.invite(&owner, "sam@north.example", "staff").await;
    let res = app
        .post(
            &staff,
            "accept_invitation",
            &[
                ("token", &token),
                ("name", "Sam Staff"),
                ("password", PASSWORD),
            ],
        )
        .await;
    assert!(res.status().is_redirection(), "{}", res.status());
    for (who, client) in [("owner", &owner), ("staff", &staff)] {
        for name in [
            "operator_flags",
            "operator_clinics",
            "operator_session",
            "operator_audit",
        ] {
            let res = app
                .call(
                    client,
                    name,
                    &[
                        ("search", ""),
                        ("person", ""),
                        ("area", ""),
                        ("from", ""),
                        ("to", ""),
                    ],
                )
                .await;
            assert_eq!(res.status(), 403, "{who} {name}");
        }
        let page = client
            .get(format!("{}/operator", app.url))
            .send()
            .await
            .unwrap();
        assert_eq!(page.status(), 403, "{who}");
        assert!(page.text().await.unwrap().contains("operators only"));
    }
    // Signed out: sent to sign in.
    let res = app.call(&app.browser(), "operator_flags", &[]).await;
    assert_eq!(res.status(), 401);

    // An operator with no clinic signs in to the console.
    let (_, password) = operator(&pool, &app, "ops@tessera.example").await;
    let ops = app.browser();
    let res = app
        .post(
            &ops,
            "sign_in",
            &[("email", "ops@tessera.example"), ("password", &password)],
        )
        .await;
    assert_eq!(res.headers()["location"], "/operator");
    let flags: Value = app
        .call(&ops, "operator_flags", &[])
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(flags.as_array().unwrap().len(), 5);
    let clinics: Value = app
        .call(&ops, "operator_clinics", &[("search", "north")])
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(clinics[0]["name"], "North Clinic");
    assert_eq!(clinics[0]["members"], 2);
    let page = ops
        .get(format!("{}/operator", app.url))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    assert!(page.text().await.unwrap().contains("North Clinic"));

    // The sign-ins are in the audit log with the address they came from.
    let audit: Value = app
        .call(
            &ops,
            "operator_audit",
            &[
                ("person", ""),
                ("area", "sign_in"),
                ("from", ""),
                ("to", ""),
            ],
        )
        .await
        .json()
        .await
        .unwrap();
    let entry = audit
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["target"] == "ops@tessera.example")
        .expect("the operator's sign-in");
    assert_eq!(entry["action"], "sign_in.succeeded");
    assert_eq!(entry["address"], "127.0.0.1");
}

#[sqlx::test(migrations = "../migrations")]
async fn a_deactivated_clinics_sessions_and_keys_are_refused_at_once(pool: PgPool) {
    let app = TestApp::spawn(&pool).await;
    let owner = app.browser();
    app.sign_up(&owner, "North Clinic", "olivia@north.example")
        .await;
    let clinic = app.clinic_of(&owner).await;
    let created: Value = app
        .call(&owner, "create_api_key", &[("name", "tests")])
        .await
        .json()
        .await
        .unwrap();
    let key = created["token"].as_str().unwrap().to_string();
    let models = || {
        reqwest::Client::new()
            .get(format!("{}/v1/models", app.url))
            .bearer_auth(&key)
            .send()
    };
    // Cached by a first use.
    assert_eq!(models().await.unwrap().status(), 200);
    assert_eq!(app.call(&owner, "api_keys", &[]).await.status(), 200);

    let (op, _) = operator(&pool, &app, "ops@tessera.example").await;
    operator::set_active(
        &app.services.db,
        &app.services.changes,
        op,
        clinic.tenant,
        false,
    )
    .await
    .unwrap();
    let res = models().await.unwrap();
    assert_eq!(res.status(), 403);
    assert!(res.text().await.unwrap().contains("deactivated"));
    let res = app.call(&owner, "api_keys", &[]).await;
    assert_eq!(res.status(), 403);
    assert!(res.text().await.unwrap().contains("deactivated"));
    let page = owner
        .get(format!("{}/agents", app.url))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 403);
    assert!(page.text().await.unwrap().contains("deactivated"));
    // Pages without data of their own (home) say why too.
    let home = app.text(&owner, "/").await;
    assert!(home.contains("clinic-deactivated"), "{home}");

    operator::set_active(
        &app.services.db,
        &app.services.changes,
        op,
        clinic.tenant,
        true,
    )
    .await
    .unwrap();
    assert_eq!(models().await.unwrap().status(), 200);
    assert_eq!(app.call(&owner, "api_keys", &[]).await.status(), 200);
}

#[sqlx::test(migrations = "../migrations")]
async fn a_rollback_reaches_a_second_server_process_within_a_second(pool: PgPool) {
    let app = TestApp::spawn(&pool).await;
    let c = app.api_clinic("North").await;
    let (op, _) = operator(&pool, &app, "ops@tessera.example").await;
    // A second server process on the same database and Redis (prefix included).
    let port = common::free_port();
    let second = format!("http://127.0.0.1:{port}");
    let site = std::env::temp_dir().join(format!("tessera-site-{port}"));
    std::fs::create_dir_all(&site).unwrap();
    let _child = Child(
        std::process::Command::new(env!("CARGO_BIN_EXE_server"))
            .arg("serve")
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("DATABASE_URL", app_url(&pool))
            .env("TESSERA_MIGRATE_ON_START", "false")
            .env("REDIS_URL", app.services.config.redis_url.clone())
            .env(
                "TESSERA_REDIS_PREFIX",
                app.services.config.redis_prefix.clone(),
            )
            .env("LEPTOS_SITE_ADDR", format!("127.0.0.1:{port}"))
            .env("LEPTOS_OUTPUT_NAME", "tessera")
            .env("LEPTOS_SITE_ROOT", &site)
            .env("TESSERA_INGEST_WORKERS", "0")
            .env("RUST_LOG", "warn")
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("start a second server"),
    );
    let http = reqwest::Client::new();
    let started = Instant::now();
    loop {
        if let Ok(res) = http.get(format!("{second}/readyz")).send().await {
            if res.status() == 200 {
                break;
            }
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the second server did not start"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let value = || async {
        let v: Value = http
            .post(format!(
                "{second}/ofrep/v1/evaluate/flags/streaming_enabled"
            ))
            .bearer_auth(c.token())
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        v["value"].clone()
    };
    // Wait until the second process has loaded the flags and subscribed.
    let started = Instant::now();
    while value().await != json!(true) {
        assert!(started.elapsed() < Duration::from_secs(30));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;

    // A change made through the first process reaches the second within a second...
    set_rules(
        &app,
        op,
        "streaming_enabled",
        "true",
        &format!("clinic {} = false", c.slug),
    )
    .await;
    let changed = Instant::now();
    while value().await != json!(false) {
        assert!(
            changed.elapsed() < Duration::from_secs(1),
            "the change took over a second"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // ...and so does the rollback.
    flags::rollback(
        &app.services.db,
        &app.services.changes,
        op,
        "streaming_enabled",
        1,
    )
    .await
    .unwrap();
    let rolled = Instant::now();
    while value().await != json!(true) {
        assert!(
            rolled.elapsed() < Duration::from_secs(1),
            "the rollback took over a second"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

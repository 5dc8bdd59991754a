//! Promises kept under faults: a budget under disconnecting clients and failing providers, a
//! Redis restart and a Postgres outage under load. Everything runs on loopback, bounded in
//! time.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::TestApp;
use serde_json::{json, Value};
use sqlx::PgPool;

async fn call(app: &TestApp, client: &reqwest::Client, token: &str, body: &Value) -> u16 {
    match client
        .post(format!("{}/v1/chat/completions", app.url))
        .bearer_auth(token)
        .json(body)
        .send()
        .await
    {
        Ok(res) => {
            let status = res.status().as_u16();
            // Read the whole answer (a stream to its end), unless the client gives up first.
            let _ = res.bytes().await;
            status
        }
        Err(_) => 0,
    }
}

/// What became of one call of the storm.
#[derive(Debug, PartialEq)]
enum Outcome {
    /// Answered (an API call's 200, a chat reply's `done`).
    Answered,
    /// Refused for the allowance (an API call's 429, a chat reply's `failed`).
    Refused,
    /// The client gave up first, or the provider failed the call or broke the stream.
    Cut,
}

/// One `/v1` call of the storm.
async fn storm_api_call(
    client: reqwest::Client,
    url: String,
    token: String,
    body: Value,
) -> Outcome {
    let Ok(res) = client
        .post(format!("{url}/v1/chat/completions"))
        .bearer_auth(&token)
        .json(&body)
        .send()
        .await
    else {
        return Outcome::Cut;
    };
    let status = res.status().as_u16();
    let text = res.text().await.unwrap_or_default();
    match status {
        200 if !text.contains("\"error\"") => Outcome::Answered,
        200 => Outcome::Cut,
        429 => {
            assert!(text.contains("token allowance"), "{text}");
            Outcome::Refused
        }
        // A non-streamed call the provider fails (a stream's failure comes after its 200).
        502 if text.contains("provider_unavailable") => Outcome::Cut,
        other => panic!("unexpected {other}: {text}"),
    }
}

/// One chat reply of the storm, as the chat page asks for it.
async fn storm_chat_reply(
    client: reqwest::Client,
    url: String,
    agent: String,
    text: String,
) -> Outcome {
    let sent = client
        .post(format!("{url}/api/start_conversation"))
        .header("accept", "application/json")
        .form(&[("agent_id", agent.as_str()), ("text", text.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(sent.status(), 200);
    let sent: Value = sent.json().await.unwrap();
    let reply = sent["reply_id"].as_str().unwrap();
    let Ok(res) = client
        .get(format!("{url}/chat/replies/{reply}"))
        .send()
        .await
    else {
        return Outcome::Cut;
    };
    assert_eq!(res.status(), 200);
    let Ok(body) = res.text().await else {
        return Outcome::Cut;
    };
    let events = common::sse(&body);
    match events.last().and_then(|e| e.event.as_deref()) {
        Some("done") => Outcome::Answered,
        Some("failed") if events.last().unwrap().data.contains("token allowance") => {
            Outcome::Refused
        }
        _ => Outcome::Cut,
    }
}

#[sqlx::test(migrations = "../migrations")]
async fn the_budget_holds_with_jitter_disconnects_and_broken_streams(pool: PgPool) {
    // An API call's worst case is about 190,000 tokens of the 1,000,000 allowance, a chat
    // reply's about 32,000. Calls vary in provider latency; a third of the clients give up
    // mid-request or mid-stream; some streams break part-way; every fifth call is a chat
    // reply. Whatever happens, recorded spend stays within the allowance, the live counters
    // agree with the ledger, and nothing stays reserved.
    let app = TestApp::spawn(&pool).await;
    let c = testkit::fixtures::clinic("Storm Clinic")
        .key(tessera_core::Provider::OpenAi, "sk-test-good-key")
        .api_key("tests")
        .agent_with(tessera_core::agents::AgentInput {
            name: "Front Desk".into(),
            model: "gpt-4o-mini".into(),
            max_reply_tokens: "32000".into(),
            ..Default::default()
        })
        .create(&app.env())
        .await;
    let token = c.token().to_string();
    let agent = c.agents[0].id.to_string();
    let staff = app.browser();
    let res = app
        .post(
            &staff,
            "sign_in",
            &[("email", c.email.as_str()), ("password", common::PASSWORD)],
        )
        .await;
    assert!(res.status().is_redirection(), "sign in: {}", res.status());

    let calls: Vec<_> = (0..200)
        .map(|i| {
            let latency = (i * 37) % 300;
            let broken = if i % 7 == 0 { " [sim:fail_midstream]" } else { "" };
            let text = format!("storm {i} [sim:latency={latency}] [sim:chunk_ms=20]{broken}");
            let call = if i % 5 == 4 {
                tokio::spawn(storm_chat_reply(staff.clone(), app.url.clone(), agent.clone(), text))
            } else {
                let body = json!({ "model": "gpt-4o-mini", "max_tokens": 190_000, "stream": i % 2 == 1,
                    "messages": [{ "role": "user", "content": text }] });
                tokio::spawn(storm_api_call(reqwest::Client::new(), app.url.clone(), token.clone(), body))
            };
            // A third of the clients give up after 150 ms, wherever the call is.
            let impatient = i % 3 == 0;
            tokio::spawn(async move {
                if impatient {
                    let abort = call.abort_handle();
                    match tokio::time::timeout(Duration::from_millis(150), call).await {
                        Ok(outcome) => outcome.unwrap(),
                        Err(_) => {
                            abort.abort();
                            Outcome::Cut
                        }
                    }
                } else {
                    call.await.unwrap()
                }
            })
        })
        .collect();
    let mut outcomes = Vec::new();
    for call in calls {
        outcomes.push(call.await.unwrap());
    }
    assert!(outcomes.contains(&Outcome::Answered), "{outcomes:?}");
    assert!(outcomes.contains(&Outcome::Refused), "{outcomes:?}");

    // Reservations of dropped requests are given back in the background.
    let mut reserved = -1;
    for _ in 0..50 {
        reserved = app.live_usage(c.tenant).await.1;
        if reserved == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(reserved, 0);
    app.flush_ledger().await;
    let (live, _) = app.live_usage(c.tenant).await;
    let ledger = app.ledger_usage(c.tenant).await;
    assert!(ledger.tokens <= 1_000_000, "spent {}", ledger.tokens);
    assert_eq!(live, ledger);
}

/// A Redis server of the test's own, with its data on disk (appendonly, every write synced),
/// so it can be killed and started again.
struct OwnRedis {
    port: u16,
    dir: std::path::PathBuf,
    child: Option<Child>,
}

impl OwnRedis {
    async fn start() -> Self {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let dir = std::env::temp_dir().join(format!("tessera-redis-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut redis = Self {
            port,
            dir,
            child: None,
        };
        redis.launch().await;
        redis
    }

    async fn launch(&mut self) {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args([
                "--save",
                "",
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
            ])
            .arg("--dir")
            .arg(&self.dir)
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server (scripts/setup.sh installs it)");
        self.child = Some(child);
        for _ in 0..100 {
            if let Ok(client) = redis::Client::open(self.url()) {
                if let Ok(mut conn) = client.get_multiplexed_async_connection().await {
                    let pong: redis::RedisResult<String> =
                        redis::cmd("PING").query_async(&mut conn).await;
                    if pong.is_ok() {
                        return;
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("redis-server did not start");
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().ok();
            child.wait().ok();
        }
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        self.kill();
        std::fs::remove_dir_all(&self.dir).ok();
    }
}

#[sqlx::test(migrations = "../migrations")]
async fn a_redis_restart_under_load_loses_and_doubles_nothing(pool: PgPool) {
    // Arrange: Tessera on a Redis of the test's own, and a steady stream of calls.
    let mut redis = OwnRedis::start().await;
    let url = redis.url();
    let app = TestApp::spawn_with(&pool, &[("REDIS_URL", &url)]).await;
    let c = app.api_clinic("Restart Clinic").await;
    let token = c.token().to_string();
    let admin = app.browser();
    app.sign_up(&admin, "Restart Admin Clinic", "owner@restart.example")
        .await;
    // No call may hang while Redis is away (the client's default reconnection backoff once
    // held one for two minutes).
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let body = json!({ "model": "gpt-4o-mini", "max_tokens": 20,
                       "messages": [{ "role": "user", "content": "hello [sim:latency=20]" }] });
    for _ in 0..5 {
        assert_eq!(call(&app, &client, &token, &body).await, 200);
    }

    // Act: Redis dies mid-load, and comes back.
    let load = {
        let (url, token, body, client) =
            (app.url.clone(), token.clone(), body.clone(), client.clone());
        tokio::spawn(async move {
            let mut statuses = Vec::new();
            for _ in 0..120 {
                let res = client
                    .post(format!("{url}/v1/chat/completions"))
                    .bearer_auth(&token)
                    .json(&body)
                    .send()
                    .await
                    .expect("a call answers within 10 s, Redis or not");
                let status = res.status().as_u16();
                let retry = res.headers().get("retry-after").is_some();
                let text = res.text().await.unwrap();
                statuses.push((status, retry, text));
                tokio::time::sleep(Duration::from_millis(30)).await;
            }
            statuses
        })
    };
    tokio::time::sleep(Duration::from_millis(400)).await;
    redis.kill();
    // Pages (their sessions live in Redis) say to try again shortly, too.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let page = admin
        .get(format!("{}/settings/usage", app.url))
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 503);
    assert!(page.headers().get("retry-after").is_some());
    assert!(page.text().await.unwrap().contains("try again"));
    // Long enough for the client's reconnection attempts to give up.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    redis.launch().await;
    let statuses = load.await.unwrap();

    // Assert: while it was down, calls failed closed, saying to try again; after, they ran.
    let down: Vec<_> = statuses.iter().filter(|(s, _, _)| *s != 200).collect();
    assert!(!down.is_empty(), "Redis was never seen down");
    for (status, retry, text) in &down {
        assert_eq!(*status, 503, "{text}");
        assert!(*retry, "no Retry-After: {text}");
        assert!(text.contains("try again"), "{text}");
    }
    assert_eq!(statuses.last().unwrap().0, 200, "calls did not resume");
    let ok = 5 + statuses.iter().filter(|(s, _, _)| *s == 200).count() as i64;

    // Every call that answered is in the ledger once, and the live counters agree with it.
    let mut ledger = app.ledger_usage(c.tenant).await;
    for _ in 0..100 {
        app.flush_ledger().await;
        ledger = app.ledger_usage(c.tenant).await;
        let (live, reserved) = app.live_usage(c.tenant).await;
        if ledger.requests == ok && live == ledger && reserved == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(ledger.requests, ok);
    let (live, _) = app.live_usage(c.tenant).await;
    assert_eq!(live, ledger);
}

#[sqlx::test(migrations = "../migrations")]
async fn a_postgres_outage_answers_503_and_the_handoff_keeps_the_calls(pool: PgPool) {
    // Arrange: Tessera reaches Postgres through a proxy the test can cut.
    let options = testkit::app_role_options(&pool);
    let target: std::net::SocketAddr = format!("{}:{}", options.get_host(), options.get_port())
        .parse()
        .unwrap_or_else(|_| ([127, 0, 0, 1], options.get_port()).into());
    let proxy = testkit::proxy::Proxy::start(target).await.unwrap();
    let app = TestApp::spawn_on(options.host("127.0.0.1").port(proxy.addr.port()), &[]).await;
    let c = app.api_clinic("Outage Clinic").await;
    let admin = app.browser();
    app.sign_up(&admin, "Outage Admin Clinic", "owner@outage.example")
        .await;
    let token = c.token().to_string();
    let client = reqwest::Client::new();
    let body = json!({ "model": "gpt-4o-mini", "max_tokens": 20,
                       "messages": [{ "role": "user", "content": "hello" }] });
    // The hot path's lookups are cached by this first call.
    assert_eq!(call(&app, &client, &token, &body).await, 200);

    // Act: Postgres goes away.
    proxy.cut();
    // Pages and server functions say so, and when to try again.
    let res = app.call(&admin, "usage_summary", &[]).await;
    assert_eq!(res.status(), 503);
    assert!(res.headers().get("retry-after").is_some());
    assert!(res.text().await.unwrap().contains("try again"));
    let page = admin
        .get(format!("{}/settings/usage", app.url))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 503);
    assert!(page.headers().get("retry-after").is_some());
    assert!(page.text().await.unwrap().contains("try again"));
    // Model calls go on (no Postgres on their path); their usage waits in the hand-off.
    for _ in 0..5 {
        assert_eq!(call(&app, &client, &token, &body).await, 200);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;

    // Postgres is back: everything reaches the ledger, once.
    proxy.restore().await.unwrap();
    let mut ledger = app.ledger_usage(c.tenant).await;
    for _ in 0..100 {
        app.flush_ledger().await;
        ledger = app.ledger_usage(c.tenant).await;
        if ledger.requests == 6 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(ledger.requests, 6);
    let (live, reserved) = app.live_usage(c.tenant).await;
    assert_eq!((live, reserved), (ledger, 0));
    let res = app.call(&admin, "usage_summary", &[]).await;
    assert_eq!(res.status(), 200);
}

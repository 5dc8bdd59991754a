//! Secrets never reach a log line: every log record of a flow that stores, tests and uses a
//! provider key and an API key is captured at TRACE level and searched for them.

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};

use common::TestApp;
use sqlx::PgPool;

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn capture() -> Captured {
    static LOGS: OnceLock<Captured> = OnceLock::new();
    LOGS.get_or_init(|| {
        let logs = Captured::default();
        let writer = logs.clone();
        tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .init();
        logs
    })
    .clone()
}

#[sqlx::test(migrations = "../migrations")]
async fn no_secret_appears_in_the_logs(pool: PgPool) {
    let logs = capture();
    let app = TestApp::spawn(&pool).await;
    let owner = app.browser();
    app.sign_up(&owner, "Alpha", "a@alpha.example").await;
    let provider_secret = "sk-test-LOGCHECK-secret-value-4242";
    let rejected_secret = "sk-invalid-LOGCHECK-rejected-8181";

    app.call(
        &owner,
        "save_provider_key",
        &[("provider", "openai"), ("key", provider_secret)],
    )
    .await;
    let ok: serde_json::Value = app
        .json(&owner, "test_provider_key", &[("provider", "openai")])
        .await;
    assert_eq!(ok["ok"], true);
    let created: serde_json::Value = app
        .json(&owner, "create_api_key", &[("name", "Logs")])
        .await;
    let token = created["token"].as_str().unwrap().to_string();
    let res = reqwest::Client::new()
        .get(format!("{}/v1/models", app.url))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    // Chat calls through the gateway, JSON and streamed; neither answer carries a secret.
    let mut answers = String::new();
    for stream in [false, true] {
        let res = reqwest::Client::new()
            .post(format!("{}/v1/chat/completions", app.url))
            .bearer_auth(&token)
            .json(
                &serde_json::json!({ "model": "gpt-4o-mini", "stream": stream,
                "messages": [{ "role": "user", "content": "hello" }] }),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        answers.push_str(&res.text().await.unwrap());
    }
    app.call(
        &owner,
        "save_provider_key",
        &[("provider", "openai"), ("key", rejected_secret)],
    )
    .await;
    // The rejected key's error, through the gateway, in JSON and as an API answer.
    let res = reqwest::Client::new()
        .post(format!("{}/v1/chat/completions", app.url))
        .bearer_auth(&token)
        .json(&serde_json::json!({ "model": "gpt-4o-mini",
            "messages": [{ "role": "user", "content": "hello" }] }))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    answers.push_str(&res.text().await.unwrap());
    for secret in [provider_secret, rejected_secret] {
        assert!(
            !answers.contains(secret),
            "a secret reached a response: {secret}"
        );
    }
    let bad: serde_json::Value = app
        .json(&owner, "test_provider_key", &[("provider", "openai")])
        .await;
    assert_eq!(bad["ok"], false);
    assert!(!bad["message"].as_str().unwrap().contains(rejected_secret));
    // A wrong sign-in carries a password too.
    app.call(
        &app.browser(),
        "sign_in",
        &[
            ("email", "a@alpha.example"),
            ("password", "LOGCHECK-password-guess"),
        ],
    )
    .await;

    let text = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    assert!(
        text.contains("provider key stored") && text.contains("tessera_core"),
        "the flow was logged at all"
    );
    for secret in [
        provider_secret,
        rejected_secret,
        token.as_str(),
        "LOGCHECK-password-guess",
        "a long enough password",
    ] {
        assert!(
            !text.contains(secret),
            "a secret reached the logs: {secret}"
        );
    }
}

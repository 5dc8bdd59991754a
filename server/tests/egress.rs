//! A clinic cannot make Tessera call into the network it runs in: the endpoint it saves is read
//! the way the HTTP client reads it, every call connects only to public addresses, and
//! redirects are not followed.

mod common;

use std::time::Duration;

use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use common::TestApp;
use serde_json::{json, Value};
use sqlx::PgPool;
use tessera_core::provider_keys::{self, KeyInput};
use tessera_core::Provider;
use tokio::net::TcpListener;

/// A listener on loopback, and whether anything connected to it within a moment.
async fn trap() -> (TcpListener, u16) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    (listener, port)
}

async fn touched(listener: &TcpListener) -> bool {
    tokio::time::timeout(Duration::from_millis(300), listener.accept())
        .await
        .is_ok()
}

/// A chat call with the clinic's API key to a model its endpoint serves: the status and the
/// JSON answer.
async fn chat(app: &TestApp, token: &str) -> (reqwest::StatusCode, Value) {
    let res = reqwest::Client::new()
        .post(format!("{}/v1/chat/completions", app.url))
        .bearer_auth(token)
        .json(&json!({ "model": "llama3", "messages": [{ "role": "user", "content": "hi" }] }))
        .send()
        .await
        .unwrap();
    let status = res.status();
    (status, res.json().await.unwrap())
}

/// Saves `base_url` as the clinic's OpenAI-compatible endpoint, as its owner would on an
/// installation that allows private endpoints (a saved address is where these tests start).
async fn save_endpoint(
    app: &TestApp,
    c: &testkit::fixtures::TestClinic,
    base_url: &str,
    secret: &str,
) {
    let input = KeyInput {
        provider: Provider::OpenAiCompatible,
        secret,
        base_url,
    };
    provider_keys::set(
        &app.services.db,
        &app.services.changes,
        app.services.master_keys(),
        c.tenant,
        c.owner(),
        input,
        true,
    )
    .await
    .unwrap();
}

#[sqlx::test(migrations = "../migrations")]
async fn an_endpoint_written_to_look_public_is_refused_when_saved(pool: PgPool) {
    let app = TestApp::spawn_with(&pool, &[("TESSERA_ALLOW_PRIVATE_ENDPOINTS", "false")]).await;
    let (listener, port) = trap().await;
    let admin = app.browser();
    app.sign_up(&admin, "Forgery Clinic", "o@forgery.example")
        .await;
    for url in [
        format!("http://127.0.0.1:{port}\\@example.com/v1"),
        format!("http://localhost:{port}/v1"),
        "http://169.254.169.254\\@example.com/v1".to_string(),
        "http://[::ffff:127.0.0.1]/v1".to_string(),
        "http://2130706433/v1".to_string(),
    ] {
        let res = app
            .call(
                &admin,
                "save_provider_key",
                &[("provider", "openai_compatible"), ("base_url", &url)],
            )
            .await;
        assert_eq!(res.status(), 422, "{url}");
        let text = res.text().await.unwrap();
        assert!(text.contains("private or local address"), "{url}: {text}");
    }
    assert!(
        !touched(&listener).await,
        "the check itself called the address"
    );
}

#[sqlx::test(migrations = "../migrations")]
async fn a_saved_name_that_now_points_inside_is_never_called(pool: PgPool) {
    // An endpoint saved while its name pointed elsewhere (it was checked then), whose name now
    // resolves to loopback: model lists, the Test button and chat calls all refuse it.
    let app = TestApp::spawn_with(&pool, &[("TESSERA_ALLOW_PRIVATE_ENDPOINTS", "false")]).await;
    let (listener, port) = trap().await;
    let c = testkit::fixtures::clinic("Rebinding Clinic")
        .api_key("tests")
        .create(&app.env())
        .await;
    save_endpoint(&app, &c, &format!("http://localhost:{port}/v1"), "").await;

    let client = reqwest::Client::new();
    let models: Value = client
        .get(format!("{}/v1/models", app.url))
        .bearer_auth(c.token())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(models["data"], json!([]));
    let probe = app
        .services
        .gateway
        .check_key(c.tenant, c.owner(), Provider::OpenAiCompatible)
        .await
        .unwrap();
    assert!(!probe.ok);
    assert!(
        probe.message.contains("private or local address"),
        "{}",
        probe.message
    );
    let (status, body) = chat(&app, c.token()).await;
    assert_eq!(status, 400);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("private or local address"),
        "{body}"
    );
    assert!(!touched(&listener).await, "Tessera connected to loopback");
    let (_, reserved) = app.live_usage(c.tenant).await;
    assert_eq!(reserved, 0);
}

#[sqlx::test(migrations = "../migrations")]
async fn a_redirect_is_not_followed(pool: PgPool) {
    // Private endpoints allowed (a model server next to Tessera), but the endpoint answers with
    // a redirect to somewhere else: Tessera does not go there.
    let app = TestApp::spawn(&pool).await;
    let (elsewhere, elsewhere_port) = trap().await;
    let redirector = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let redirector_port = redirector.local_addr().unwrap().port();
    let target = format!("http://127.0.0.1:{elsewhere_port}/v1/chat/completions");
    let router = axum::Router::new().fallback(move || {
        let target = target.clone();
        async move { (StatusCode::TEMPORARY_REDIRECT, [(header::LOCATION, target)]).into_response() }
    });
    tokio::spawn(async move { axum::serve(redirector, router).await.unwrap() });
    let c = testkit::fixtures::clinic("Redirect Clinic")
        .endpoint(&format!("http://127.0.0.1:{redirector_port}/v1"), "")
        .api_key("tests")
        .create(&app.env())
        .await;
    let (status, body) = chat(&app, c.token()).await;
    assert_eq!(status, 502);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("redirect"),
        "{body}"
    );
    assert!(!touched(&elsewhere).await, "the redirect was followed");
}

#[sqlx::test(migrations = "../migrations")]
async fn a_moved_endpoint_is_called_where_it_is_now(pool: PgPool) {
    // The address of a clinic's endpoint is parsed once and kept; an admin who moves the
    // endpoint moves the calls with it, and back.
    let app = TestApp::spawn(&pool).await;
    let here = format!("http://{}/v1", app.sim);
    let c = testkit::fixtures::clinic("Moving Clinic")
        .endpoint(&here, "sk-test-compatible")
        .api_key("tests")
        .create(&app.env())
        .await;
    for _ in 0..2 {
        let (status, body) = chat(&app, c.token()).await;
        assert_eq!(status, 200, "{body}");
    }
    // Nothing listens on the discard port.
    save_endpoint(&app, &c, "http://127.0.0.1:9/v1", "sk-test-compatible").await;
    let (status, body) = chat(&app, c.token()).await;
    assert_eq!(status, 502, "{body}");
    assert_eq!(body["error"]["code"], "provider_unavailable", "{body}");
    save_endpoint(&app, &c, &here, "sk-test-compatible").await;
    let (status, body) = chat(&app, c.token()).await;
    assert_eq!(status, 200, "{body}");
}

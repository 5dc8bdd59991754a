//! What operators watch and what browsers are told: `/metrics` with every family after a chat
//! call and a refused one, who may read it, the request id on every answer, the page's
//! security policy, caching and compression.

mod common;

use common::{chat, TestApp};
use serde_json::json;
use sqlx::PgPool;
use tessera_core::observe;

const TOKEN: &str = "metrics-token-for-the-tests";

/// `name` has a sample line in the exposition (not only its HELP and TYPE lines).
fn has_sample(text: &str, name: &str) -> bool {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .any(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ', '_']))
}

#[sqlx::test(migrations = "../migrations")]
async fn metrics_expose_every_family_after_a_call_and_a_refusal(pool: PgPool) {
    let app = TestApp::spawn_with(&pool, &[("TESSERA_METRICS_TOKEN", TOKEN)]).await;
    let c = app.api_clinic("Metrics Clinic").await;
    // A call that is answered, one the provider fails (after its retries), one the budget
    // refuses before any provider is called.
    let ok = chat(
        &app,
        c.token(),
        json!({ "model": "gpt-4o-mini", "messages": [{ "role": "user", "content": "hello" }] }),
    )
    .await;
    assert_eq!(ok.status(), 200);
    let failed = chat(
        &app,
        c.token(),
        json!({ "model": "gpt-4o-mini", "messages": [{ "role": "user", "content": "[sim:status=400] no" }] }),
    )
    .await;
    assert!(!failed.status().is_success());
    let refused = chat(
        &app,
        c.token(),
        json!({ "model": "gpt-4o-mini", "n": 100, "max_completion_tokens": 200000,
                "messages": [{ "role": "user", "content": "too much" }] }),
    )
    .await;
    assert_eq!(refused.status(), 429);
    app.flush_ledger().await;

    let http = reqwest::Client::new();
    let res = http
        .get(format!("{}/metrics", app.url))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert!(res.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain"));
    let text = res.text().await.unwrap();
    for family in observe::FAMILIES {
        assert!(has_sample(&text, family), "{family} missing from:\n{text}");
    }
    // Labels name routes by their pattern, and the refusal by its reason.
    assert!(text.contains(r#"route="/v1/chat/completions""#), "{text}");
    assert!(text.contains(r#"reason="allowance""#), "{text}");
    assert!(text.contains(r#"kind="status_4xx""#), "{text}");
    assert!(text.contains(r#"plan="starter""#), "{text}");
    assert!(
        text.contains("tessera_http_request_duration_seconds_bucket"),
        "latencies are histograms: {text}"
    );

    // Without the token, or with another: refused, and nothing shown.
    let res = http
        .get(format!("{}/metrics", app.url))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    let res = http
        .get(format!("{}/metrics", app.url))
        .bearer_auth("metrics-token-for-the-testZ")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    assert!(!res.text().await.unwrap().contains("tessera_"));
}

#[sqlx::test(migrations = "../migrations")]
async fn metrics_are_not_on_the_main_address_without_a_token(pool: PgPool) {
    let app = TestApp::spawn(&pool).await;
    let res = reqwest::get(format!("{}/metrics", app.url)).await.unwrap();
    assert_eq!(res.status(), 404);
}

#[sqlx::test(migrations = "../migrations")]
async fn every_answer_carries_a_request_id(pool: PgPool) {
    let app = TestApp::spawn(&pool).await;
    let http = reqwest::Client::new();
    let a = http
        .get(format!("{}/healthz", app.url))
        .send()
        .await
        .unwrap();
    let b = http
        .get(format!("{}/healthz", app.url))
        .send()
        .await
        .unwrap();
    let id = |r: &reqwest::Response| r.headers()["x-request-id"].to_str().unwrap().to_string();
    assert_eq!(id(&a).len(), 32);
    assert_ne!(id(&a), id(&b));
    // A load balancer's id is kept; a hostile one is replaced.
    let res = http
        .get(format!("{}/v1/models", app.url))
        .header("x-request-id", "lb-42.abc")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    assert_eq!(id(&res), "lb-42.abc");
    let res = http
        .get(format!("{}/healthz", app.url))
        .header("x-request-id", "a b\"<script>")
        .send()
        .await
        .unwrap();
    assert_eq!(id(&res).len(), 32);
}

#[sqlx::test(migrations = "../migrations")]
async fn pages_carry_a_policy_with_their_scripts_nonce_and_are_compressed(pool: PgPool) {
    let app = TestApp::spawn(&pool).await;
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let res = http
        .get(format!("{}/signin", app.url))
        .header("accept-encoding", "br")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-encoding"], "br");
    let policy = res.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(policy.contains("frame-ancestors 'none'"), "{policy}");
    assert!(policy.contains("'wasm-unsafe-eval'"), "{policy}");
    assert!(
        !policy.contains("'unsafe-inline' 'unsafe-eval'"),
        "{policy}"
    );
    // The hydration script's nonce is the policy's.
    let nonce = policy
        .split("'nonce-")
        .nth(1)
        .and_then(|rest| rest.split('\'').next())
        .expect("a nonce in the policy")
        .to_string();
    assert!(nonce.len() >= 16, "{nonce}");
    assert!(
        res.headers().get("strict-transport-security").is_none(),
        "plain HTTP here"
    );
    // Uncompressed, the page shows the nonce on its script.
    let page = http
        .get(format!("{}/signin", app.url))
        .send()
        .await
        .unwrap();
    assert!(page.headers().get("content-encoding").is_none());
    let policy2 = page.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_string();
    assert_ne!(policy, policy2, "a new nonce for every response");
    let html = page.text().await.unwrap();
    let nonce2 = policy2
        .split("'nonce-")
        .nth(1)
        .and_then(|rest| rest.split('\'').next())
        .unwrap();
    assert!(
        html.contains(&format!("nonce=\"{nonce2}\"")),
        "the script carries the nonce: {html}"
    );

    // A gateway answer is never compressed, however large; a JSON error has no scripts to run.
    let c = app.api_clinic("Compression Clinic").await;
    let res = http
        .post(format!("{}/v1/chat/completions", app.url))
        .bearer_auth(c.token())
        .header("accept-encoding", "br, gzip")
        .json(&json!({ "model": "gpt-4o-mini", "messages": [{ "role": "user", "content": "[sim:words=400] long" }] }))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert!(res.headers().get("content-encoding").is_none());
    assert_eq!(
        res.headers()["content-security-policy"],
        "default-src 'none'; frame-ancestors 'none'"
    );
    // The request's id and the guard's headers reach the gateway's answers too.
    assert!(res.headers().get("x-request-id").is_some());
    assert_eq!(res.headers()["x-content-type-options"], "nosniff");
    // The API's documents are compressed like pages.
    let doc = http
        .get(format!("{}/v1/openapi.json", app.url))
        .header("accept-encoding", "gzip")
        .send()
        .await
        .unwrap();
    assert_eq!(doc.status(), 200);
    assert_eq!(doc.headers()["content-encoding"], "gzip");
    assert!(doc.headers().get("x-request-id").is_some());
}

#[sqlx::test(migrations = "../migrations")]
async fn behind_https_browsers_are_told_to_keep_to_it(pool: PgPool) {
    let app = TestApp::spawn_with(
        &pool,
        &[
            ("TESSERA_PUBLIC_URL", "https://clinic.example.com"),
            (
                "TESSERA_MASTER_KEYS",
                "v1:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=",
            ),
        ],
    )
    .await;
    let res = reqwest::get(format!("{}/healthz", app.url)).await.unwrap();
    assert_eq!(
        res.headers()["strict-transport-security"],
        "max-age=31536000; includeSubDomains"
    );
}

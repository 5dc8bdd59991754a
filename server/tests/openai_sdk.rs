//! The official `openai` and `anthropic` Python packages against `/v1`: JSON and streamed calls,
//! tools, structured output, images, several choices, embeddings, an agent's sources, and
//! Anthropic's SDK against `/v1/messages`; every call recorded in the ledger.
//!
//! The interpreter is `TESSERA_PYTHON` (scripts/test.sh points it at a virtual environment with
//! end2end/sdk/requirements.txt installed), else `python3`. Without the package the test fails
//! under CI and is skipped, saying so, elsewhere.

mod common;

use common::TestApp;
use sqlx::PgPool;

fn python() -> Option<String> {
    common::python(&["openai", "anthropic"])
}

#[sqlx::test(migrations = "../migrations")]
async fn the_openai_python_sdk_works_against_v1(pool: PgPool) {
    let Some(python) = python() else { return };
    let app = TestApp::spawn(&pool).await;
    let c = app.api_clinic("SDK Clinic").await;
    let tenant = c.tenant;
    let seen = run_script(
        python,
        "openai_sdk.py",
        format!("{}/v1", app.url),
        c.token().to_string(),
    )
    .await;

    app.flush_ledger().await;
    let recorded = app.ledger_usage(tenant).await;
    assert_eq!(
        recorded.requests, 8,
        "the JSON and the streamed chat calls and six Responses calls; failures, token counts and moderations are not charged"
    );
    assert_eq!(
        recorded.tokens,
        seen["json_total_tokens"].as_i64().unwrap()
            + seen["stream_total_tokens"].as_i64().unwrap()
            + seen["responses_total_tokens"].as_i64().unwrap()
    );
}

#[sqlx::test(migrations = "../migrations")]
async fn the_openai_python_sdk_reads_the_sources_of_an_agent_that_uses_knowledge(pool: PgPool) {
    let Some(python) = python() else { return };
    let app = TestApp::spawn(&pool).await;
    let c = testkit::fixtures::clinic("SDK Knowledge Clinic")
        .key(tessera_core::Provider::OpenAi, "sk-test-good-key")
        .api_key("tests")
        .agent("Front Desk", "gpt-4o-mini")
        .create(&app.env())
        .await;
    let upload = tessera_core::knowledge::Upload {
        name: "prices.md".into(),
        bytes: b"# Price list\n\nA flu shot costs 25 euros.\n\nA standard consultation costs 60 euros.\n".to_vec(),
        tags: Vec::new(),
    };
    tessera_core::knowledge::upload(&app.services.db, c.tenant, c.owner(), upload, 1_000_000)
        .await
        .unwrap();
    // The server's own worker reads it.
    for _ in 0..200 {
        let docs = tessera_core::knowledge::list(&app.services.db, c.tenant)
            .await
            .unwrap();
        if docs[0].status == tessera_core::knowledge::DocumentStatus::Ready {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }

    let seen = common::run_script(
        python,
        "knowledge_sdk.py",
        format!("{}/v1", app.url),
        c.token().to_string(),
        &[("TESSERA_MODEL", "agent:front-desk")],
    )
    .await;
    assert_eq!(seen["sources"], 1);
    assert_eq!(seen["streamed_sources"], 1);
    // The SDK decoded the same numbers the simulator made.
    let expected = testkit::embedding("flu shot", 16)[0] as f64;
    assert!(
        (seen["first_value"].as_f64().unwrap() - expected).abs() < 1e-6,
        "{seen}"
    );
}

/// Runs one of the SDK scripts against the server; returns what it printed.
async fn run_script(
    python: String,
    script: &str,
    base_url: String,
    token: String,
) -> serde_json::Value {
    common::run_script(python, script, base_url, token, &[]).await
}

#[sqlx::test(migrations = "../migrations")]
async fn tools_structured_output_images_and_choices_pass_through_for_openai_and_claude(
    pool: PgPool,
) {
    let Some(python) = python() else { return };
    let app = TestApp::spawn(&pool).await;
    let c = app.api_clinic("SDK Features Clinic").await;
    let seen = run_script(
        python,
        "features_sdk.py",
        format!("{}/v1", app.url),
        c.token().to_string(),
    )
    .await;
    // Three choices cost three replies.
    let each = seen["choices_completion_tokens"].as_i64().unwrap();
    assert!(each > 0 && each % 3 == 0, "{seen}");
    app.flush_ledger().await;
    let recorded = app.ledger_usage(c.tenant).await;
    // Per model: three tool calls, one structured, one image, one PDF; then the choices and
    // the embeddings.
    assert_eq!(recorded.requests, 14, "{recorded:?}");
    // The PDFs' prompts were charged whole (a document reserves the model's context window).
    let documents = seen["document_prompt_tokens"].as_i64().unwrap();
    assert!(recorded.prompt_tokens > documents, "{recorded:?} {seen}");
}

#[sqlx::test(migrations = "../migrations")]
async fn the_anthropic_python_sdk_works_against_v1_messages(pool: PgPool) {
    let Some(python) = python() else { return };
    let app = TestApp::spawn(&pool).await;
    let c = app.api_clinic("SDK Anthropic Clinic").await;
    let seen = run_script(
        python,
        "anthropic_sdk.py",
        app.url.clone(),
        c.token().to_string(),
    )
    .await;
    assert_eq!(
        seen["models"].as_u64(),
        Some(testkit::ANTHROPIC_MODELS.len() as u64),
        "{seen}"
    );
    app.flush_ledger().await;
    let recorded = app.ledger_usage(c.tenant).await;
    assert_eq!(
        recorded.requests, 5,
        "a message, a stream, a tool round trip and a beta call; refusals are not charged"
    );
    assert_eq!(
        recorded.tokens,
        [
            "message_tokens",
            "stream_tokens",
            "tool_tokens",
            "beta_tokens"
        ]
        .iter()
        .map(|k| seen[k].as_i64().unwrap())
        .sum::<i64>()
    );
    // The SDK's `betas` reached Anthropic as its header.
    let headers = app.sim("/sim/last-headers").await;
    assert_eq!(
        headers["anthropic-beta"],
        "token-efficient-tools-2025-02-19"
    );
}

//! The key check against the provider simulator, over real HTTP.

use std::collections::HashMap;

use secrecy::SecretString;
use tessera_core::llm::probe;
use tessera_core::provider_keys::ResolvedKey;
use tessera_core::Config;
use tessera_core::Provider;

async fn config() -> Config {
    let sim = testkit::spawn("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let vars: HashMap<String, String> = [
        ("OPENAI_BASE_URL".to_string(), format!("http://{sim}/v1")),
        (
            "ANTHROPIC_BASE_URL".to_string(),
            format!("http://{sim}/anthropic"),
        ),
    ]
    .into_iter()
    .collect();
    Config::from_vars(&vars).unwrap()
}

fn key(provider: Provider, secret: &str) -> ResolvedKey {
    ResolvedKey {
        provider,
        secret: Some(SecretString::from(secret.to_string())),
        base_url: None,
    }
}

#[tokio::test]
async fn working_keys_pass_the_check() {
    let config = config().await;
    let http = tessera_core::egress::Http::installation();
    let openai = probe(
        &http,
        &config,
        &key(Provider::OpenAi, "sk-test-good-key-1234"),
    )
    .await;
    assert!(openai.ok, "{openai:?}");
    assert!(openai.message.contains("2 models"));
    let anthropic = probe(
        &http,
        &config,
        &key(Provider::Anthropic, "sk-ant-good-key-1234"),
    )
    .await;
    assert!(anthropic.ok, "{anthropic:?}");
    let compatible = ResolvedKey {
        provider: Provider::OpenAiCompatible,
        secret: None,
        base_url: Some(format!("{}/", config.openai_base_url)),
    };
    // The simulator asks OpenAI-style endpoints for a key; without one it refuses, as vLLM with
    // --api-key would.
    assert!(!probe(&http, &config, &compatible).await.ok);
}

#[tokio::test]
async fn a_rejected_key_says_so_with_the_providers_words_and_without_the_key() {
    let config = config().await;
    let http = tessera_core::egress::Http::installation();
    let secret = "sk-invalid-0123456789abcdef";
    let res = probe(&http, &config, &key(Provider::OpenAi, secret)).await;
    assert!(!res.ok);
    assert!(
        res.message
            .starts_with("Your OpenAI key was rejected: Incorrect API key provided"),
        "{}",
        res.message
    );
    assert!(!res.message.contains(secret));
    let res = probe(
        &http,
        &config,
        &key(Provider::Anthropic, "sk-test-not-anthropic"),
    )
    .await;
    assert!(
        res.message.starts_with("Your Anthropic key was rejected"),
        "{}",
        res.message
    );
}

#[tokio::test]
async fn rate_limits_outages_and_unreachable_hosts_are_told_apart() {
    let config = config().await;
    let http = tessera_core::egress::Http::installation();
    let limited = probe(
        &http,
        &config,
        &key(Provider::OpenAi, "sk-ratelimited-1234"),
    )
    .await;
    assert!(
        limited.message.contains("limiting requests"),
        "{}",
        limited.message
    );
    let down = probe(
        &http,
        &config,
        &key(Provider::Anthropic, "sk-ant-outage-1234"),
    )
    .await;
    assert!(
        down.message.contains("unavailable right now"),
        "{}",
        down.message
    );
    let nowhere = ResolvedKey {
        provider: Provider::OpenAiCompatible,
        secret: None,
        base_url: Some("http://127.0.0.1:9/v1".into()),
    };
    let res = probe(&http, &config, &nowhere).await;
    assert!(
        res.message.starts_with("Could not reach"),
        "{}",
        res.message
    );
    // An installation host that does not resolve is unreachable, not a clinic's endpoint.
    let vars: HashMap<String, String> = [(
        "OPENAI_BASE_URL".to_string(),
        "http://no-such-host.invalid/v1".to_string(),
    )]
    .into_iter()
    .collect();
    let unresolved = Config::from_vars(&vars).unwrap();
    let res = probe(&http, &unresolved, &key(Provider::OpenAi, "sk-test-1234")).await;
    assert!(
        res.message
            .starts_with("Could not reach OpenAI at http://no-such-host.invalid/v1/models"),
        "{}",
        res.message
    );
}

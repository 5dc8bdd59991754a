//! The simulator answers in the providers' own shapes. (Having an integration test also makes
//! `cargo test` build the `provider-sim` binary the end-to-end tests start.)

#[tokio::test]
async fn answers_in_each_providers_shape() {
    let addr = testkit::spawn("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let http = reqwest::Client::new();

    let res = http
        .get(format!("http://{addr}/v1/models"))
        .bearer_auth("sk-good-1234")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let body: serde_json::Value = res.json().await.unwrap();
    assert_eq!(body["object"], "list");
    assert_eq!(body["data"][0]["id"], testkit::OPENAI_MODELS[0]);

    let res = http
        .get(format!("http://{addr}/v1/models"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    let body: serde_json::Value = res.json().await.unwrap();
    assert_eq!(body["error"]["code"], "missing_api_key");

    let res = http
        .get(format!("http://{addr}/anthropic/v1/models"))
        .header("x-api-key", "sk-ant-invalid")
        .header("anthropic-version", "2023-06-01")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    let body: serde_json::Value = res.json().await.unwrap();
    assert_eq!(body["type"], "error");
    assert_eq!(body["error"]["type"], "authentication_error");
}

//! The Stripe simulator speaks Stripe's wire format: keys, form bodies, idempotency keys,
//! errors, and signed webhook deliveries.

use serde_json::Value;

async fn sim() -> String {
    let addr = testkit::spawn("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    format!("http://{addr}/stripe")
}

fn post(url: &str, key: Option<&str>, form: &[(&str, &str)]) -> reqwest::RequestBuilder {
    let mut req = reqwest::Client::new()
        .post(url)
        .bearer_auth("sk_test_sim")
        .form(form);
    if let Some(k) = key {
        req = req.header("idempotency-key", k);
    }
    req
}

#[tokio::test]
async fn idempotency_keys_replay_the_first_answer_and_refuse_other_parameters() {
    let base = sim().await;
    let url = format!("{base}/v1/customers");
    let first = post(
        &url,
        Some("k1"),
        &[("name", "A"), ("email", "a@example.com")],
    )
    .send()
    .await
    .unwrap();
    assert_eq!(first.status(), 200);
    assert!(first.headers().get("idempotent-replayed").is_none());
    let first: Value = first.json().await.unwrap();

    // The same parameters in another order: the same customer, replayed.
    let again = post(
        &url,
        Some("k1"),
        &[("email", "a@example.com"), ("name", "A")],
    )
    .send()
    .await
    .unwrap();
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    let again: Value = again.json().await.unwrap();
    assert_eq!(again["id"], first["id"]);

    // Other parameters under the same key: refused.
    let other = post(&url, Some("k1"), &[("name", "B")])
        .send()
        .await
        .unwrap();
    assert_eq!(other.status(), 400);
    let other: Value = other.json().await.unwrap();
    assert_eq!(other["error"]["type"], "idempotency_error");

    // No key: a new customer each time.
    let third: Value = post(&url, None, &[("name", "A")])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_ne!(third["id"], first["id"]);
    let state = testkit::stripe::sim_state(&base).await;
    assert_eq!(state["customers"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn keys_and_missing_objects_get_stripe_errors() {
    let base = sim().await;
    let res = reqwest::Client::new()
        .post(format!("{base}/v1/customers"))
        .bearer_auth("pk_test_public")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    let res = reqwest::Client::new()
        .get(format!("{base}/v1/products/prod_missing"))
        .bearer_auth("sk_test_sim")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 404);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["error"]["code"], "resource_missing");
    // A meter event needs an active meter and a known customer.
    let res = post(
        &format!("{base}/v1/billing/meter_events"),
        None,
        &[
            ("event_name", "tokens"),
            ("payload[stripe_customer_id]", "cus_x"),
            ("payload[value]", "5"),
        ],
    )
    .send()
    .await
    .unwrap();
    assert_eq!(res.status(), 400);
}

#[tokio::test]
async fn meter_event_identifiers_are_unique() {
    let base = sim().await;
    let meter = post(
        &format!("{base}/v1/billing/meters"),
        None,
        &[
            ("event_name", "tokens"),
            ("display_name", "Tokens"),
            ("default_aggregation[formula]", "sum"),
        ],
    )
    .send()
    .await
    .unwrap();
    assert_eq!(meter.status(), 200);
    let customer: Value = post(&format!("{base}/v1/customers"), None, &[])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let customer = customer["id"].as_str().unwrap();
    let event = [
        ("event_name", "tokens"),
        ("identifier", "hour-1"),
        ("payload[stripe_customer_id]", customer),
        ("payload[value]", "42"),
    ];
    let url = format!("{base}/v1/billing/meter_events");
    assert_eq!(post(&url, None, &event).send().await.unwrap().status(), 200);
    let dup = post(&url, None, &event).send().await.unwrap();
    assert_eq!(dup.status(), 400);
    let dup: Value = dup.json().await.unwrap();
    assert_eq!(dup["error"]["code"], "resource_already_exists");
    let state = testkit::stripe::sim_state(&base).await;
    assert_eq!(state["meter_events"].as_array().unwrap().len(), 1);
    assert_eq!(state["meter_event_requests"], 2);
}

#[test]
fn signatures_are_stripes() {
    // HMAC-SHA256 of "t.payload" under the secret, hex (a known vector, computed with
    // `printf '1700000000.{}' | openssl dgst -sha256 -hmac whsec_test`).
    assert_eq!(
        testkit::stripe::sign("whsec_test", 1_700_000_000, b"{}"),
        "35495024f4ef3f94e5a93e22221544c4b75e9a42300cd965ab81cb85cd994e91"
    );
}

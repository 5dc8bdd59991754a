//! The OpenAPI document at `/v1/openapi.json` stays true: it is OpenAPI 3.1, its operations
//! are exactly the routes `server::api_routes` serves, each answers on the router, and real
//! answers (models, a chat completion, embeddings, an error) validate against its schemas
//! (checked with the `openapi-spec-validator` and `jsonschema` Python packages).

mod common;

use std::collections::BTreeSet;

use common::TestApp;
use serde_json::Value;
use sqlx::PgPool;

fn document_operations(doc: &Value) -> BTreeSet<(String, String)> {
    let mut ops = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for method in item.as_object().unwrap().keys() {
            ops.insert((path.clone(), method.to_uppercase()));
        }
    }
    ops
}

#[sqlx::test(migrations = "../migrations")]
async fn the_document_describes_exactly_the_routes_and_each_answers(pool: PgPool) {
    let app = TestApp::spawn(&pool).await;
    let res = reqwest::get(format!("{}{}", app.url, server::OPENAPI_URL))
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-type"], "application/json");
    let doc: Value = res.json().await.unwrap();
    assert_eq!(doc["openapi"], "3.1.0");

    let routes: BTreeSet<(String, String)> = server::api_routes()
        .into_iter()
        // A route's catch-all parameter (`{*model}`, an id may hold `/`) is a plain one in
        // the document.
        .map(|(path, method, _)| (path.replace("{*", "{"), method.to_string()))
        .collect();
    assert_eq!(document_operations(&doc), routes);

    // Each documented operation is routed with its method (no 404 or 405), and every status
    // it answers is documented.
    let http = reqwest::Client::new();
    for (path, method) in &routes {
        let res = http
            .request(method.parse().unwrap(), format!("{}{path}", app.url))
            .header("content-type", "application/json")
            .body("{}")
            .send()
            .await
            .unwrap();
        let status = res.status().as_u16();
        assert!(
            status != 405 && !(status == 404 && path != "/webhooks/stripe"),
            "{method} {path} answered {status}"
        );
        let documented = &doc["paths"][path][method.to_lowercase()]["responses"];
        assert!(
            documented.get(status.to_string()).is_some(),
            "{method} {path} answered {status}, which the document does not list"
        );
    }
}

#[sqlx::test(migrations = "../migrations")]
async fn real_answers_validate_against_the_document(pool: PgPool) {
    let Some(python) = common::python(&["openapi_spec_validator", "jsonschema"]) else {
        return;
    };
    let app = TestApp::spawn(&pool).await;
    let c = app.api_clinic("OpenAPI Clinic").await;
    let seen = common::run_script(
        python,
        "openapi_check.py",
        app.url.clone(),
        c.token().to_string(),
        &[],
    )
    .await;
    assert_eq!(seen["validated"], 13, "{seen}");
}

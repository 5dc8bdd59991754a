//! Knowledge through the server: the upload form (plain and as the page sends it), ingestion by
//! the server's own worker, the Knowledge page's data, deletion, and cited answers in the chat
//! stream and on `/v1`.

mod common;

use std::time::Duration;

use common::{sse, TestApp};
use reqwest::multipart::{Form, Part};
use sqlx::PgPool;
use tessera_core::knowledge::extract::fixtures as files;

const PRICES: &str = "# Price list\n\n## Vaccinations\n\nA flu shot costs 25 euros. The tetanus booster costs 40 euros.\n\n## Consultations\n\nA standard consultation costs 60 euros.\n";

fn form(files: &[(&str, Vec<u8>)], tags: &str) -> Form {
    let mut form = Form::new().text("tags", tags.to_string());
    for (name, bytes) in files {
        form = form.part(
            "files",
            Part::bytes(bytes.clone()).file_name(name.to_string()),
        );
    }
    form
}

/// An owner signed in, with an OpenAI key the simulator accepts.
async fn admin(app: &TestApp) -> reqwest::Client {
    let browser = app.browser();
    app.sign_up(&browser, "North Clinic", "owner@north.example.com")
        .await;
    app.json(
        &browser,
        "save_provider_key",
        &[("provider", "openai"), ("key", "sk-test-north")],
    )
    .await;
    browser
}

/// The Knowledge page's data once no document is in progress.
async fn settled(app: &TestApp, browser: &reqwest::Client) -> serde_json::Value {
    for _ in 0..200 {
        let page = app.json(browser, "knowledge", &[]).await;
        let busy = page["documents"].as_array().unwrap().iter().any(|d| {
            matches!(
                d["status"].as_str(),
                Some("queued" | "extracting" | "embedding")
            )
        });
        if !busy {
            return page;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("documents did not finish");
}

fn query_param(location: &str, name: &str) -> Option<String> {
    let url = reqwest::Url::parse(&format!("http://tessera.test{location}")).unwrap();
    url.query_pairs()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

#[sqlx::test(migrations = "../migrations")]
async fn the_plain_upload_form_stores_documents_and_says_what_happened(pool: PgPool) {
    let app = TestApp::spawn(&pool).await;
    let browser = admin(&app).await;
    let docx = files::docx(&[
        ("Heading1", "Parking"),
        ("", "Patients park for free behind the clinic."),
    ]);
    let res = browser
        .post(format!("{}/knowledge/upload", app.url))
        .multipart(form(
            &[
                ("prices.md", PRICES.as_bytes().to_vec()),
                ("parking.docx", docx),
                ("photo.jpg", vec![0xFF, 0xD8, 0xFF]),
            ],
            "front desk",
        ))
        .send()
        .await
        .unwrap();
    assert!(res.status().is_redirection(), "{}", res.status());
    let location = res.headers()["location"].to_str().unwrap().to_string();
    assert!(location.starts_with("/knowledge?"), "{location}");
    let notice = query_param(&location, "notice").unwrap();
    assert!(
        notice.contains("prices.md was uploaded") && notice.contains("parking.docx was uploaded"),
        "{notice}"
    );
    let error = query_param(&location, "error").unwrap();
    assert!(
        error.contains("photo.jpg") && error.contains(".jpg file"),
        "{error}"
    );

    // The server's own worker reads them; the page shows each one ready.
    let page = settled(&app, &browser).await;
    let docs = page["documents"].as_array().unwrap();
    assert_eq!(docs.len(), 2, "{page}");
    for d in docs {
        assert_eq!(d["status"], "ready", "{d}");
        assert!(d["chunks"].as_i64().unwrap() >= 1);
        assert_eq!(d["tags"], "front desk");
        assert_eq!(d["uploaded_by"], "Olivia Owner");
        assert_eq!(d["embedding_model"], "text-embedding-3-small");
    }
    assert!(
        page["storage"]
            .as_str()
            .unwrap()
            .contains("of the Starter plan's 500 MB"),
        "{page}"
    );
    assert_eq!(page["embedding_model"], "text-embedding-3-small");
    // Billing shows the same storage against the plan.
    let billing = app.json(&browser, "billing", &[]).await;
    assert_eq!(billing["storage"], page["storage"]);

    // The page renders it (server-side, before any script runs).
    let html = app.text(&browser, "/knowledge").await;
    assert!(
        html.contains("prices.md") && html.contains("multipart/form-data"),
        "{html}"
    );
}

#[sqlx::test(migrations = "../migrations")]
async fn the_page_uploads_one_file_per_request_and_reads_the_answer(pool: PgPool) {
    let app = TestApp::spawn_with(&pool, &[("TESSERA_MAX_UPLOAD_MB", "1")]).await;
    let browser = admin(&app).await;
    let send = |name: &'static str, bytes: Vec<u8>| {
        let browser = browser.clone();
        let url = format!("{}/knowledge/upload", app.url);
        async move {
            let res = browser
                .post(url)
                .header("accept", "application/json")
                .multipart(form(&[(name, bytes)], ""))
                .send()
                .await
                .unwrap();
            let status = res.status().as_u16();
            (status, res.json::<serde_json::Value>().await.unwrap())
        }
    };
    let (status, body) = send("prices.md", PRICES.as_bytes().to_vec()).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["results"][0]["ok"], true);
    // The same content again: nothing new.
    let (status, body) = send("copy.md", PRICES.as_bytes().to_vec()).await;
    assert_eq!(status, 200);
    assert!(
        body["results"][0]["message"]
            .as_str()
            .unwrap()
            .contains("already here, as prices.md"),
        "{body}"
    );
    // Over the per-file limit.
    let (status, body) = send("big.txt", vec![b'a'; 1_200_000]).await;
    assert_eq!(status, 422);
    assert_eq!(body["results"][0]["ok"], false);
    assert!(
        body["results"][0]["message"]
            .as_str()
            .unwrap()
            .contains("larger than 1 MB"),
        "{body}"
    );
    // Empty.
    let (status, body) = send("empty.txt", Vec::new()).await;
    assert_eq!(status, 422);
    assert!(
        body["results"][0]["message"]
            .as_str()
            .unwrap()
            .contains("empty"),
        "{body}"
    );

    // Staff cannot upload.
    let token = app
        .invite(&browser, "nurse@north.example.com", "staff")
        .await;
    let nurse = app.browser();
    app.json(
        &nurse,
        "accept_invitation",
        &[
            ("token", &token),
            ("name", "Nina Nurse"),
            ("password", common::PASSWORD),
        ],
    )
    .await;
    let res = nurse
        .post(format!("{}/knowledge/upload", app.url))
        .header("accept", "application/json")
        .multipart(form(&[("notes.txt", b"Staff notes".to_vec())], ""))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 403);
    let res = app.call(&nurse, "knowledge", &[]).await;
    assert_eq!(res.status(), 403);

    // Deleting removes it from the page.
    let page = settled(&app, &browser).await;
    let id = page["documents"][0]["id"].as_str().unwrap().to_string();
    app.json(&browser, "delete_document", &[("id", &id)]).await;
    let page = app.json(&browser, "knowledge", &[]).await;
    assert!(page["documents"].as_array().unwrap().is_empty(), "{page}");
    assert!(
        page["storage"].as_str().unwrap().starts_with("0 bytes"),
        "{page}"
    );
}

#[sqlx::test(migrations = "../migrations")]
async fn replies_cite_the_passages_they_were_given_in_the_chat_and_on_v1(pool: PgPool) {
    let app = TestApp::spawn(&pool).await;
    let browser = admin(&app).await;
    let res = browser
        .post(format!("{}/knowledge/upload", app.url))
        .multipart(form(&[("prices.md", PRICES.as_bytes().to_vec())], ""))
        .send()
        .await
        .unwrap();
    assert!(res.status().is_redirection());
    settled(&app, &browser).await;
    let agent = app
        .json(
            &browser,
            "save_agent",
            &[("name", "Front Desk"), ("model", "gpt-4o-mini")],
        )
        .await;
    let agent_id = agent["id"].as_str().unwrap().to_string();

    // The chat: the stream names its sources first, and the reply keeps them.
    let sent = app
        .json(
            &browser,
            "start_conversation",
            &[
                ("agent_id", &agent_id),
                ("text", "How much does a flu shot cost?"),
            ],
        )
        .await;
    let reply = sent["reply_id"].as_str().unwrap();
    let body = app.text(&browser, &format!("/chat/replies/{reply}")).await;
    let events = sse(&body);
    assert_eq!(events[0].event.as_deref(), Some("sources"), "{body}");
    let cited: serde_json::Value = serde_json::from_str(&events[0].data).unwrap();
    assert_eq!(cited[0]["name"], "prices.md");
    assert!(cited[0]["text"]
        .as_str()
        .unwrap()
        .contains("flu shot costs 25 euros"));
    assert!(
        events.iter().any(|e| e.event.as_deref() == Some("done")),
        "{body}"
    );
    let conversation = sent["conversation_id"].as_str().unwrap();
    let c = app
        .json(&browser, "conversation", &[("id", conversation)])
        .await;
    let saved = &c["messages"][1];
    assert_eq!(saved["sources"][0]["name"], "prices.md", "{c}");
    assert_eq!(saved["sources"][0]["heading"], "Price list");

    // The API: the same retrieval, the sources in an extra field, JSON and streamed.
    let key = app
        .json(&browser, "create_api_key", &[("name", "Reports")])
        .await;
    let token = key["token"].as_str().unwrap();
    let client = reqwest::Client::new();
    let ask = |stream: bool| {
        client
            .post(format!("{}/v1/chat/completions", app.url))
            .bearer_auth(token)
            .json(&serde_json::json!({ "model": "agent:front-desk", "stream": stream,
                "messages": [{ "role": "user", "content": "What does a standard consultation cost?" }] }))
            .send()
    };
    let whole: serde_json::Value = ask(false).await.unwrap().json().await.unwrap();
    assert_eq!(whole["sources"][0]["index"], 1, "{whole}");
    assert_eq!(whole["sources"][0]["document"], "prices.md");
    assert!(whole["sources"][0]["text"]
        .as_str()
        .unwrap()
        .contains("standard consultation costs 60 euros"));
    let streamed = ask(true).await.unwrap().text().await.unwrap();
    let first: serde_json::Value = serde_json::from_str(&sse(&streamed)[0].data).unwrap();
    assert_eq!(first["sources"][0]["document"], "prices.md", "{streamed}");

    // A plain model call has no sources field.
    let plain: serde_json::Value = client
        .post(format!("{}/v1/chat/completions", app.url))
        .bearer_auth(token)
        .json(&serde_json::json!({ "model": "gpt-4o-mini", "messages": [{ "role": "user", "content": "flu shot" }] }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(plain.get("sources").is_none(), "{plain}");

    // The embeddings were metered: on the ledger as `embedding` calls.
    app.flush_ledger().await;
    let clinic = app.clinic_of(&browser).await;
    let mut tx = app.services.db.begin_tenant(clinic.tenant).await.unwrap();
    let embedding_calls: i64 =
        sqlx::query_scalar("SELECT count(*) FROM usage_events WHERE kind = 'embedding'")
            .fetch_one(&mut *tx)
            .await
            .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(
        embedding_calls, 4,
        "the document, and the chat's and the API's three questions"
    );
}

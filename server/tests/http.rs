//! The real router over HTTP: accounts, sessions, roles, the Origin check and health.

mod common;

use common::{TestApp, PASSWORD};
use sqlx::PgPool;

fn cookie_value(res: &reqwest::Response) -> Option<String> {
    res.headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with(&format!("{}=", server::SESSION_COOKIE)))
        .map(str::to_string)
}

#[sqlx::test(migrations = "../migrations")]
async fn health_and_readiness_answer(pool: PgPool) {
    let app = TestApp::spawn(&pool).await;
    let client = reqwest::Client::new();
    let res = client
        .get(format!("{}/healthz", app.url))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let res = client
        .get(format!("{}/readyz", app.url))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let body: serde_json::Value = res.json().await.unwrap();
    assert_eq!(body, serde_json::json!({ "postgres": "ok", "redis": "ok" }));
}

#[sqlx::test(migrations = "../migrations")]
async fn sign_up_signs_the_owner_in_with_a_safe_cookie(pool: PgPool) {
    let app = TestApp::spawn(&pool).await;
    let browser = app.browser();
    let res = app
        .post(
            &browser,
            "sign_up",
            &[
                ("clinic_name", "Harbour Clinic"),
                ("name", "Olivia"),
                ("email", "olivia@harbour.example"),
                ("password", PASSWORD),
            ],
        )
        .await;
    assert_eq!(
        res.status(),
        302,
        "a form post without JavaScript is redirected"
    );
    assert_eq!(res.headers()["location"], "/");
    let cookie = cookie_value(&res).expect("session cookie");
    assert!(cookie.contains("HttpOnly"), "{cookie}");
    assert!(cookie.contains("SameSite=Lax"), "{cookie}");
    assert!(!cookie.contains("Secure"), "plain http in tests: {cookie}");

    let session = app.session(&browser).await;
    assert_eq!(session["clinic"]["name"], "Harbour Clinic");
    assert_eq!(session["role"], "owner");

    let home = browser.get(&app.url).send().await.unwrap();
    assert_eq!(home.status(), 200);
    let html = home.text().await.unwrap();
    assert!(
        html.contains("Harbour Clinic"),
        "home page names the clinic"
    );
}

#[sqlx::test(migrations = "../migrations")]
async fn sign_in_cycles_the_session_and_sign_out_ends_it(pool: PgPool) {
    let app = TestApp::spawn(&pool).await;
    let owner = app.browser();
    app.sign_up(&owner, "Alpha", "a@alpha.example").await;
    app.post(&owner, "sign_out", &[]).await;
    assert_eq!(app.session(&owner).await, serde_json::Value::Null);

    let first = app
        .post(
            &owner,
            "sign_in",
            &[("email", "A@Alpha.example"), ("password", PASSWORD)],
        )
        .await;
    assert_eq!(first.status(), 302);
    let first_cookie = cookie_value(&first).unwrap();
    assert_eq!(app.session(&owner).await["email"], "a@alpha.example");

    let second = app
        .post(
            &owner,
            "sign_in",
            &[("email", "a@alpha.example"), ("password", PASSWORD)],
        )
        .await;
    let second_cookie = cookie_value(&second).unwrap();
    assert_ne!(
        first_cookie.split(';').next(),
        second_cookie.split(';').next(),
        "a new id at each sign-in"
    );

    // The old session id no longer signs anyone in.
    let stale = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let res = stale
        .post(app.api("session"))
        .header("origin", &app.url)
        .header("cookie", first_cookie.split(';').next().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(
        res.json::<serde_json::Value>().await.unwrap(),
        serde_json::Value::Null
    );
}

#[sqlx::test(migrations = "../migrations")]
async fn wrong_password_and_unknown_email_get_the_same_answer(pool: PgPool) {
    let app = TestApp::spawn(&pool).await;
    let owner = app.browser();
    app.sign_up(&owner, "Alpha", "a@alpha.example").await;
    let client = app.browser();
    let wrong = app
        .call(
            &client,
            "sign_in",
            &[
                ("email", "a@alpha.example"),
                ("password", "wrong password!"),
            ],
        )
        .await;
    let unknown = app
        .call(
            &client,
            "sign_in",
            &[("email", "nobody@alpha.example"), ("password", PASSWORD)],
        )
        .await;
    assert_eq!(wrong.status(), 401);
    assert_eq!(unknown.status(), 401);
    assert_eq!(wrong.text().await.unwrap(), unknown.text().await.unwrap());
}

#[sqlx::test(migrations = "../migrations")]
async fn repeated_failures_are_throttled(pool: PgPool) {
    let app = TestApp::spawn(&pool).await;
    let client = app.browser();
    let mut statuses = Vec::new();
    for _ in 0..11 {
        let res = app
            .call(
                &client,
                "sign_in",
                &[
                    ("email", "target@alpha.example"),
                    ("password", "guess guess guess"),
                ],
            )
            .await;
        statuses.push(res.status().as_u16());
    }
    assert!(statuses[..10].iter().all(|s| *s == 401), "{statuses:?}");
    assert_eq!(statuses[10], 429);
}

#[sqlx::test(migrations = "../migrations")]
async fn an_invitation_link_neither_reveals_nor_guesses_an_existing_account(pool: PgPool) {
    // Beta's admin invites the owner of Alpha, whose account exists: the link says nothing
    // about that account, and guessing its password through the link is throttled like
    // sign-in.
    let app = TestApp::spawn(&pool).await;
    let alpha = app.browser();
    app.sign_up(&alpha, "Alpha", "owner@alpha.example").await;
    let beta = app.browser();
    app.sign_up(&beta, "Beta", "owner@beta.example").await;
    let token = app.invite(&beta, "owner@alpha.example", "staff").await;

    let visitor = app.browser();
    let info = app.json(&visitor, "invitation", &[("token", &token)]).await;
    assert_eq!(info["email"], "owner@alpha.example");
    assert!(info.get("account_exists").is_none(), "{info}");

    let mut statuses = Vec::new();
    for _ in 0..11 {
        let res = app
            .call(
                &visitor,
                "accept_invitation",
                &[
                    ("token", token.as_str()),
                    ("name", "Mallory"),
                    ("password", "guess guess guess"),
                ],
            )
            .await;
        statuses.push(res.status().as_u16());
    }
    assert!(statuses[..10].iter().all(|s| *s == 401), "{statuses:?}");
    assert_eq!(statuses[10], 429);
}

#[sqlx::test(migrations = "../migrations")]
async fn bad_input_gets_a_4xx_with_a_message(pool: PgPool) {
    let app = TestApp::spawn(&pool).await;
    let client = app.browser();
    let weak = app
        .call(
            &client,
            "sign_up",
            &[
                ("clinic_name", "Alpha"),
                ("name", "A"),
                ("email", "a@alpha.example"),
                ("password", "short"),
            ],
        )
        .await;
    assert_eq!(weak.status(), 422);
    assert!(weak
        .text()
        .await
        .unwrap()
        .contains("at least 10 characters"));

    let missing = app
        .call(&client, "sign_up", &[("clinic_name", "Alpha")])
        .await;
    assert_eq!(
        missing.status(),
        422,
        "missing fields are the client's mistake"
    );

    app.sign_up(&client, "Alpha", "a@alpha.example").await;
    let dup = app
        .call(
            &app.browser(),
            "sign_up",
            &[
                ("clinic_name", "Other"),
                ("name", "B"),
                ("email", "A@ALPHA.example"),
                ("password", PASSWORD),
            ],
        )
        .await;
    assert_eq!(dup.status(), 409);
    assert!(dup.text().await.unwrap().contains("already exists"));

    let bad_id = app
        .call(&client, "remove_member", &[("user_id", "not-a-uuid")])
        .await;
    assert_eq!(bad_id.status(), 404);

    let unknown_page = client
        .get(format!("{}/no/such/page", app.url))
        .send()
        .await
        .unwrap();
    assert_eq!(unknown_page.status(), 404);
}

#[sqlx::test(migrations = "../migrations")]
async fn cross_site_posts_are_refused(pool: PgPool) {
    let app = TestApp::spawn(&pool).await;
    let owner = app.browser();
    app.sign_up(&owner, "Alpha", "a@alpha.example").await;

    // The signed-in owner's cookies, sent by a form on another site.
    let evil = owner
        .post(app.api("invite_member"))
        .header("origin", "https://evil.example")
        .form(&[("email", "mallory@evil.example"), ("role", "owner")])
        .send()
        .await
        .unwrap();
    assert_eq!(evil.status(), 403);

    let no_origin = reqwest::Client::new()
        .post(app.api("sign_out"))
        .send()
        .await
        .unwrap();
    assert_eq!(no_origin.status(), 403);

    let page: serde_json::Value = owner
        .post(app.api("members"))
        .header("accept", "application/json")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        page["invitations"].as_array().unwrap().is_empty(),
        "nothing was created"
    );
}

#[sqlx::test(migrations = "../migrations")]
async fn staff_are_refused_admin_pages_and_functions(pool: PgPool) {
    let app = TestApp::spawn(&pool).await;
    let owner = app.browser();
    app.sign_up(&owner, "Alpha", "a@alpha.example").await;
    let invite: serde_json::Value = app
        .json(
            &owner,
            "invite_member",
            &[("email", "nurse@alpha.example"), ("role", "staff")],
        )
        .await;
    let link = invite["link"].as_str().unwrap();
    let token = link.rsplit('/').next().unwrap();
    assert!(link.starts_with(&format!("{}/invite/", app.url)));

    let staff = app.browser();
    let res = app
        .post(
            &staff,
            "accept_invitation",
            &[
                ("token", token),
                ("name", "Nina Nurse"),
                ("password", PASSWORD),
            ],
        )
        .await;
    assert_eq!(res.status(), 302);
    assert_eq!(app.session(&staff).await["role"], "staff");

    let page = staff
        .get(format!("{}/members", app.url))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 403);
    assert!(page
        .text()
        .await
        .unwrap()
        .contains("have access to this page"));
    let list = app.call(&staff, "members", &[]).await;
    assert_eq!(list.status(), 403);
    let promote = app
        .call(
            &staff,
            "invite_member",
            &[("email", "x@alpha.example"), ("role", "admin")],
        )
        .await;
    assert_eq!(promote.status(), 403);
    assert_eq!(app.call(&staff, "usage_summary", &[]).await.status(), 403);
    let cap = app
        .call(&staff, "set_spending_cap", &[("mode", "none")])
        .await;
    assert_eq!(cap.status(), 403);
    let page = staff
        .get(format!("{}/settings/usage", app.url))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 403);

    // The owner sets a cap: a bad amount is a 422 that says why; a good one raises the limit.
    let bad = app
        .call(
            &owner,
            "set_spending_cap",
            &[("mode", "cap"), ("amount", "lots")],
        )
        .await;
    assert_eq!(bad.status(), 422);
    assert!(bad
        .text()
        .await
        .unwrap()
        .contains("not an amount in dollars"));
    // The owner may: stopping at the allowance is every clinic's to choose (going beyond it
    // needs a paid plan).
    let ok = app
        .call(&owner, "set_spending_cap", &[("mode", "stop")])
        .await;
    assert!(ok.status().is_success(), "{}", ok.status());
    let usage: serde_json::Value = app.json(&owner, "usage_summary", &[]).await;
    assert_eq!(usage["token_limit"], 1_000_000);
    assert_eq!(usage["plan_name"], "Starter");
    assert_eq!(usage["paying"], false);

    // The owner sees both people.
    let members = owner
        .get(format!("{}/members", app.url))
        .send()
        .await
        .unwrap();
    assert_eq!(members.status(), 200);
    let html = members.text().await.unwrap();
    assert!(html.contains("Nina Nurse") && html.contains("a@alpha.example"));

    // The used link now shows a clear page.
    let again = app
        .call(&app.browser(), "invitation", &[("token", token)])
        .await;
    assert_eq!(again.status(), 410);
    let page = reqwest::get(format!("{}/invite/{token}", app.url))
        .await
        .unwrap();
    assert!(page.text().await.unwrap().contains("already been used"));
}

#[sqlx::test(migrations = "../migrations")]
async fn signed_out_visitors_are_sent_to_sign_in(pool: PgPool) {
    let app = TestApp::spawn(&pool).await;
    let client = app.browser();
    let res = client
        .get(format!("{}/members", app.url))
        .send()
        .await
        .unwrap();
    assert!(res.status().is_redirection(), "{}", res.status());
    assert_eq!(res.headers()["location"], "/signin");
    let res = app.call(&client, "members", &[]).await;
    assert_eq!(res.status(), 401);
}

#[sqlx::test(migrations = "../migrations")]
async fn a_member_of_two_clinics_switches_between_them(pool: PgPool) {
    let app = TestApp::spawn(&pool).await;
    let alpha = app.browser();
    app.sign_up(&alpha, "Alpha", "a@alpha.example").await;
    let beta = app.browser();
    app.sign_up(&beta, "Beta", "b@beta.example").await;
    let token = app.invite(&beta, "a@alpha.example", "admin").await;
    // The existing account confirms with its own password; it now belongs to both clinics.
    let res = app
        .post(
            &alpha,
            "accept_invitation",
            &[("token", &token), ("password", PASSWORD)],
        )
        .await;
    assert_eq!(res.status(), 302);
    let session = app.session(&alpha).await;
    assert_eq!(session["clinic"]["name"], "Beta");
    let clinics: Vec<_> = session["clinics"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(clinics, ["Alpha", "Beta"]);

    let alpha_id = session["clinics"][0]["id"].as_str().unwrap().to_string();
    let res = app
        .post(&alpha, "switch_clinic", &[("tenant_id", &alpha_id)])
        .await;
    assert_eq!(res.status(), 302);
    let session = app.session(&alpha).await;
    assert_eq!(session["clinic"]["name"], "Alpha");
    assert_eq!(session["role"], "owner");

    // A clinic the person does not belong to is not found.
    let beta_only = app.browser();
    app.sign_up(&beta_only, "Gamma", "g@gamma.example").await;
    let gamma_id = app.session(&beta_only).await["clinic"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let res = app
        .call(&alpha, "switch_clinic", &[("tenant_id", &gamma_id)])
        .await;
    assert_eq!(res.status(), 404);
    assert_eq!(app.session(&alpha).await["clinic"]["name"], "Alpha");
}

#[sqlx::test(migrations = "../migrations")]
async fn provider_keys_are_write_only(pool: PgPool) {
    let app = TestApp::spawn(&pool).await;
    let owner = app.browser();
    app.sign_up(&owner, "Alpha", "a@alpha.example").await;
    let secret = "sk-live-verysecretvalue-7788";

    let res = app
        .call(
            &owner,
            "save_provider_key",
            &[("provider", "openai"), ("key", secret)],
        )
        .await;
    assert_eq!(res.status(), 200);
    assert!(!res.text().await.unwrap().contains("verysecret"));

    let list = app
        .call(&owner, "provider_keys", &[])
        .await
        .text()
        .await
        .unwrap();
    assert!(!list.contains("verysecret"), "{list}");
    let rows: serde_json::Value = serde_json::from_str(&list).unwrap();
    let openai = rows
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["provider"] == "openai")
        .unwrap();
    assert_eq!(openai["last_four"], "7788");
    assert_eq!(openai["added_by"], "Olivia Owner");

    let page = owner
        .get(format!("{}/settings/keys", app.url))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    let html = page.text().await.unwrap();
    assert!(html.contains("…7788") && !html.contains("verysecret"));

    let bad = app
        .call(
            &owner,
            "save_provider_key",
            &[("provider", "openai_compatible"), ("base_url", "not a url")],
        )
        .await;
    assert_eq!(bad.status(), 422);
    let bad = app
        .call(
            &owner,
            "save_provider_key",
            &[("provider", "mistral"), ("key", secret)],
        )
        .await;
    assert_eq!(bad.status(), 422);
    let ok = app
        .call(
            &owner,
            "save_provider_key",
            &[
                ("provider", "openai_compatible"),
                ("base_url", "http://127.0.0.1:11434/v1"),
                ("key", ""),
            ],
        )
        .await;
    assert_eq!(ok.status(), 200);

    // Staff may neither see nor change keys.
    let token = app.invite(&owner, "s@alpha.example", "staff").await;
    let staff = app.browser();
    app.post(
        &staff,
        "accept_invitation",
        &[("token", &token), ("name", "Sam"), ("password", PASSWORD)],
    )
    .await;
    assert_eq!(app.call(&staff, "provider_keys", &[]).await.status(), 403);
    assert_eq!(
        app.call(&staff, "delete_provider_key", &[("provider", "openai")])
            .await
            .status(),
        403
    );
    assert_eq!(
        staff
            .get(format!("{}/settings/keys", app.url))
            .send()
            .await
            .unwrap()
            .status(),
        403
    );

    let res = app
        .call(&owner, "delete_provider_key", &[("provider", "openai")])
        .await;
    assert_eq!(res.status(), 200);
    let list: serde_json::Value = app.json(&owner, "provider_keys", &[]).await;
    assert_eq!(
        list.as_array()
            .unwrap()
            .iter()
            .find(|r| r["provider"] == "openai")
            .unwrap()["configured"],
        false
    );
}

#[sqlx::test(migrations = "../migrations")]
async fn an_api_key_lists_the_clinics_models_until_revoked(pool: PgPool) {
    let app = TestApp::spawn(&pool).await;
    let owner = app.browser();
    app.sign_up(&owner, "Alpha", "a@alpha.example").await;
    app.call(
        &owner,
        "save_provider_key",
        &[("provider", "openai"), ("key", "sk-test-good-openai-1111")],
    )
    .await;
    app.call(
        &owner,
        "save_provider_key",
        &[
            ("provider", "anthropic"),
            ("key", "sk-ant-good-anthropic-2222"),
        ],
    )
    .await;
    let created: serde_json::Value = app
        .json(&owner, "create_api_key", &[("name", "Scripts")])
        .await;
    let token = created["token"].as_str().unwrap().to_string();

    // The key is shown once: the list has only its prefix.
    let list = app
        .call(&owner, "api_keys", &[])
        .await
        .text()
        .await
        .unwrap();
    assert!(!list.contains(&token) && list.contains(&token[..12]));

    let api = reqwest::Client::new();
    let res = api
        .get(format!("{}/v1/models", app.url))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let body: serde_json::Value = res.json().await.unwrap();
    assert_eq!(body["object"], "list");
    let ids: Vec<&str> = body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    for id in testkit::OPENAI_MODELS
        .iter()
        .chain(testkit::ANTHROPIC_MODELS.iter())
    {
        assert!(ids.contains(id), "{id} missing from {ids:?}");
    }

    // One model, as the SDKs' `models.retrieve` asks for it; an id may hold `/`.
    let res = api
        .get(format!("{}/v1/models/{}", app.url, ids[0]))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let one: serde_json::Value = res.json().await.unwrap();
    assert_eq!(one, body["data"][0]);
    for missing in ["no-such-model", "vendor/no-such-model"] {
        let res = api
            .get(format!("{}/v1/models/{missing}", app.url))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 404);
        let err: serde_json::Value = res.json().await.unwrap();
        assert_eq!(err["error"]["code"], "model_not_found", "{err}");
        assert!(err["error"]["message"].as_str().unwrap().contains(missing));
    }

    // Anthropic's SDK (`anthropic-version` on every call) gets Anthropic's shape: Claude's
    // models, the ones /v1/messages serves.
    let res = api
        .get(format!("{}/v1/models", app.url))
        .header("x-api-key", &token)
        .header("anthropic-version", "2023-06-01")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let claude: serde_json::Value = res.json().await.unwrap();
    let claude_ids: Vec<&str> = claude["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(claude_ids, testkit::ANTHROPIC_MODELS, "{claude}");
    assert_eq!(claude["has_more"], false);
    assert_eq!(claude["data"][0]["type"], "model");
    assert_eq!(claude["first_id"], testkit::ANTHROPIC_MODELS[0]);

    // Anthropic's token count, as its SDK's `messages.count_tokens` asks for it; Claude's
    // models only.
    let count = |model: &str| {
        api.post(format!("{}/v1/messages/count_tokens", app.url))
            .header("x-api-key", &token)
            .header("anthropic-version", "2023-06-01")
            .json(&serde_json::json!({
                "model": model,
                "messages": [{ "role": "user", "content": "How long is a flu shot good for?" }],
            }))
            .send()
    };
    let res = count(testkit::ANTHROPIC_MODELS[0]).await.unwrap();
    assert_eq!(res.status(), 200);
    let counted: serde_json::Value = res.json().await.unwrap();
    assert!(counted["input_tokens"].as_u64().unwrap() > 0, "{counted}");
    let res = count("gpt-4o-mini").await.unwrap();
    assert_eq!(res.status(), 400);
    let err: serde_json::Value = res.json().await.unwrap();
    assert_eq!(err["error"]["type"], "invalid_request_error", "{err}");
    assert!(err["error"]["message"]
        .as_str()
        .unwrap()
        .contains("gpt-4o-mini"));

    // Other addresses under /v1 answer in the API's shapes, not with the site's page.
    let res = api
        .post(format!("{}/v1/completions", app.url))
        .bearer_auth(&token)
        .json(&serde_json::json!({ "model": "gpt-4o-mini", "prompt": "hi" }))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 404);
    let err: serde_json::Value = res.json().await.unwrap();
    assert_eq!(err["error"]["code"], "unknown_url", "{err}");
    assert!(err["error"]["message"]
        .as_str()
        .unwrap()
        .contains("POST /v1/completions"));
    let res = api
        .post(format!("{}/v1/messages/batches", app.url))
        .header("x-api-key", &token)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 404);
    let err: serde_json::Value = res.json().await.unwrap();
    assert_eq!(err["type"], "error");
    assert_eq!(err["error"]["type"], "not_found_error", "{err}");
    assert!(err["error"]["message"]
        .as_str()
        .unwrap()
        .contains("Batches are not served"));
    // A stored response, asked for by id: none is kept, and the answer says why.
    let res = api
        .get(format!("{}/v1/responses/resp_123", app.url))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 404);
    let err: serde_json::Value = res.json().await.unwrap();
    assert_eq!(err["error"]["code"], "unknown_url", "{err}");
    let message = err["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("GET /v1/responses/resp_123") && message.contains("not kept"),
        "{message}"
    );

    // Errors in OpenAI's shape.
    let res = api
        .get(format!("{}/v1/models", app.url))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    let body: serde_json::Value = res.json().await.unwrap();
    assert_eq!(body["error"]["code"], "missing_api_key");

    let rows: serde_json::Value = app.json(&owner, "api_keys", &[]).await;
    let id = rows[0]["id"].as_str().unwrap().to_string();
    assert_eq!(
        app.call(&owner, "revoke_api_key", &[("id", &id)])
            .await
            .status(),
        200
    );
    let res = api
        .get(format!("{}/v1/models", app.url))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    let body: serde_json::Value = res.json().await.unwrap();
    assert_eq!(body["error"]["code"], "invalid_api_key");
    assert_eq!(body["error"]["type"], "invalid_request_error");
}

/// A call to an address not served whose body arrives after its headers is answered once the
/// body is in, on a connection that then carries the next call: answered before, the
/// connection was closed under the client's next call (an SDK's "server disconnected").
#[sqlx::test]
async fn an_unserved_calls_connection_carries_the_next_call(pool: PgPool) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let app = TestApp::spawn(&pool).await;
    let addr = app.url.trim_start_matches("http://");
    let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
    let body = r#"{"model":"gpt-4o-mini","prompt":"hi"}"#;
    let head = format!(
        "POST /v1/completions HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    conn.write_all(head.as_bytes()).await.unwrap();
    conn.flush().await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    conn.write_all(body.as_bytes()).await.unwrap();
    // Each answer is read whole (its length is given) before the next call is sent.
    let mut read = Vec::new();
    let answer = |read: &mut Vec<u8>| -> Option<usize> {
        let text = String::from_utf8_lossy(read).to_lowercase();
        let end = text.find("\r\n\r\n")? + 4;
        let length: usize = text[..end]
            .lines()
            .find_map(|l| l.strip_prefix("content-length: "))?
            .trim()
            .parse()
            .ok()?;
        (read.len() >= end + length).then_some(end + length)
    };
    for call in 0..2 {
        let mut buf = [0u8; 4096];
        let whole = loop {
            if let Some(n) = answer(&mut read) {
                break n;
            }
            let n = tokio::time::timeout(std::time::Duration::from_secs(10), conn.read(&mut buf))
                .await
                .expect("an answer in time")
                .unwrap();
            assert!(n > 0, "call {call}: the connection was closed");
            read.extend_from_slice(&buf[..n]);
        };
        let text = String::from_utf8_lossy(&read[..whole]).to_string();
        assert!(text.starts_with("HTTP/1.1 404"), "call {call}: {text}");
        assert!(text.contains("unknown_url"), "call {call}: {text}");
        assert!(!text.to_lowercase().contains("connection: close"), "{text}");
        read.drain(..whole);
        if call == 0 {
            let next = format!(
                "POST /v1/completions HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
                body.len()
            );
            conn.write_all(next.as_bytes())
                .await
                .expect("the connection is still open for the next call");
        }
    }
}

/// Posts a server function's form as a browser behind the trusted proxy at `client`.
async fn from_address(
    app: &TestApp,
    browser: &reqwest::Client,
    client: &str,
    name: &str,
    form: &[(&str, &str)],
) -> u16 {
    browser
        .post(app.api(name))
        .header("x-forwarded-for", format!("6.6.6.6, {client}"))
        .form(form)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[sqlx::test(migrations = "../migrations")]
async fn guessing_locks_out_the_guesser_not_the_owner(pool: PgPool) {
    // Behind a proxy Tessera trusts; the left-most forwarded address is the client's own claim
    // and counts for nothing.
    let app = TestApp::spawn_with(&pool, &[("TESSERA_TRUSTED_PROXIES", "127.0.0.1")]).await;
    let owner = app.browser();
    app.sign_up(&owner, "Lockout Clinic", "owner@lockout.example")
        .await;
    let attacker = app.browser();
    let guess = [
        ("email", "owner@lockout.example"),
        ("password", "guess guess guess"),
    ];
    let mut statuses = Vec::new();
    for _ in 0..11 {
        statuses.push(from_address(&app, &attacker, "198.51.100.66", "sign_in", &guess).await);
    }
    assert!(statuses[..10].iter().all(|s| *s == 401), "{statuses:?}");
    assert_eq!(statuses[10], 429);

    // The owner, from elsewhere, signs in with the right password.
    let right = [("email", "owner@lockout.example"), ("password", PASSWORD)];
    let status = from_address(&app, &app.browser(), "203.0.113.5", "sign_in", &right).await;
    assert!((200..400).contains(&status), "{status}");
    // The guesser's address stays locked out, right password or not.
    let status = from_address(&app, &attacker, "198.51.100.66", "sign_in", &right).await;
    assert_eq!(status, 429);
}

#[sqlx::test(migrations = "../migrations")]
async fn sign_ups_from_one_address_are_limited(pool: PgPool) {
    let app = TestApp::spawn_with(&pool, &[("TESSERA_TRUSTED_PROXIES", "127.0.0.1")]).await;
    let mut statuses = Vec::new();
    for i in 0..21 {
        let email = format!("owner{i}@many.example");
        let form = [
            ("clinic_name", "Many Clinics"),
            ("name", "Mo"),
            ("email", email.as_str()),
            ("password", PASSWORD),
        ];
        statuses.push(from_address(&app, &app.browser(), "198.51.100.77", "sign_up", &form).await);
    }
    assert!(
        statuses[..20].iter().all(|s| (200..400).contains(s)),
        "{statuses:?}"
    );
    assert_eq!(statuses[20], 429);
    // Another address is not held back.
    let form = [
        ("clinic_name", "Other Clinic"),
        ("name", "Ola"),
        ("email", "ola@other.example"),
        ("password", PASSWORD),
    ];
    let status = from_address(&app, &app.browser(), "203.0.113.8", "sign_up", &form).await;
    assert!((200..400).contains(&status), "{status}");
}

//! Billing over HTTP with the Stripe simulator: Checkout, its webhooks and the limits that
//! follow, the portal, the webhook signature check, and a failed payment's grace period.

mod common;

use common::TestApp;
use serde_json::{json, Value};
use sqlx::PgPool;
use tessera_core::billing;
use tessera_core::{PlanId, TenantId};

/// A server with Stripe and the simulator's root.
async fn billing_app(owner: &PgPool) -> (TestApp, String) {
    let app = TestApp::spawn_with_billing(owner, &[]).await;
    let sim = app.stripe_sim();
    (app, sim)
}

/// Posts the Billing page's plan form as `client`.
async fn choose(app: &TestApp, client: &reqwest::Client, plan: &str) -> reqwest::Response {
    client
        .post(format!("{}/settings/billing/plan", app.url))
        .form(&[("plan", plan)])
        .send()
        .await
        .unwrap()
}

fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

fn location(res: &reqwest::Response) -> String {
    res.headers()["location"].to_str().unwrap().to_string()
}

#[sqlx::test(migrations = "../migrations")]
async fn an_admin_upgrades_through_checkout_and_the_new_limits_apply_at_once(owner: PgPool) {
    let (app, sim) = billing_app(&owner).await;
    let admin = app.browser();
    app.sign_up(&admin, "Upgrade Clinic", "owner@upgrade.example.com")
        .await;
    let tenant: TenantId = app.session(&admin).await["clinic"]["id"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    // The gateway has the Starter limits cached.
    let before = app.services.gateway.limits(tenant).await.unwrap();
    assert_eq!(before.plan, PlanId::Starter);

    let res = choose(&app, &admin, "professional").await;
    assert_eq!(res.status(), 303);
    let checkout = location(&res);
    assert!(
        checkout.starts_with(&format!("{sim}/checkout/cs_")),
        "{checkout}"
    );
    // The hosted page names the plan; paying sends the webhooks, then returns to Tessera.
    let page = reqwest::get(&checkout).await.unwrap().text().await.unwrap();
    assert!(
        page.contains("Professional monthly: $199.00 per month"),
        "{page}"
    );
    let paid = no_redirects()
        .post(format!("{checkout}/pay"))
        .send()
        .await
        .unwrap();
    assert_eq!(paid.status(), 303);
    assert_eq!(
        location(&paid),
        format!("{}/settings/billing?checkout=success", app.url)
    );

    let st = testkit::stripe::sim_state(&sim).await;
    let delivered: Vec<(&str, i64)> = st["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["type"].as_str().unwrap(),
                e["delivered_status"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        delivered,
        [
            ("checkout.session.completed", 200),
            ("customer.subscription.created", 200),
            ("invoice.paid", 200)
        ]
    );
    // The subscription has the plan's base and metered overage prices; the customer is the
    // clinic's, made once.
    assert_eq!(st["customers"].as_array().unwrap().len(), 1);
    assert_eq!(
        st["customers"][0]["metadata"]["tenant_id"],
        tenant.to_string()
    );
    let items = st["subscriptions"][0]["items"]["data"].as_array().unwrap();
    assert_eq!(items[0]["price"]["lookup_key"], "tessera_professional_base");
    assert_eq!(items[1]["price"]["recurring"]["usage_type"], "metered");

    // Limits changed at once (the cached ones were dropped), and the page shows the plan.
    let after = app.services.gateway.limits(tenant).await.unwrap();
    assert_eq!(after.plan, PlanId::Professional);
    assert_eq!(after.included_tokens, Some(10_000_000));
    let overview: Value = app.json(&admin, "billing", &[]).await;
    assert_eq!(overview["plan"]["name"], "Professional");
    assert_eq!(overview["subscription_status"], "active");
    assert_eq!(overview["live_subscription"], true);
    let html = app.text(&admin, "/settings/billing").await;
    assert!(
        html.contains("data-testid=\"billing-plan\">Professional<"),
        "{html}"
    );

    // With the subscription running, choosing the same plan is refused and another plan
    // moves the subscription (no second Checkout); Stripe's webhook brings the new limits.
    let same = choose(&app, &admin, "professional").await;
    assert!(
        location(&same).contains("already%20on%20the%20Professional"),
        "{}",
        location(&same)
    );
    let switch = choose(&app, &admin, "starter").await;
    assert_eq!(location(&switch), "/settings/billing?changed=starter");
    let st = testkit::stripe::sim_state(&sim).await;
    assert_eq!(st["customers"].as_array().unwrap().len(), 1);
    assert_eq!(st["subscriptions"].as_array().unwrap().len(), 1);
    let items = st["subscriptions"][0]["items"]["data"].as_array().unwrap();
    assert_eq!(items[0]["price"]["lookup_key"], "tessera_starter_base");
    assert_eq!(items[1]["price"]["lookup_key"], "tessera_starter_overage");
    assert_eq!(
        app.services.gateway.limits(tenant).await.unwrap().plan,
        PlanId::Starter
    );

    // The portal opens.
    let portal = admin
        .post(format!("{}/settings/billing/portal", app.url))
        .send()
        .await
        .unwrap();
    assert_eq!(portal.status(), 303);
    let portal = location(&portal);
    assert!(
        portal.starts_with(&format!("{sim}/portal/bps_")),
        "{portal}"
    );

    // Cancelling in the portal ends the subscription: the clinic is on Starter without one,
    // and may check out again.
    let cancelled = no_redirects()
        .post(format!("{portal}/cancel"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        location(&cancelled),
        format!("{}/settings/billing", app.url)
    );
    let account = billing::account(&app.services.db, tenant).await.unwrap();
    assert_eq!(account.plan.id, PlanId::Starter);
    assert_eq!(account.subscription_status.as_deref(), Some("canceled"));
    let again = choose(&app, &admin, "professional").await;
    assert!(location(&again).starts_with(&format!("{sim}/checkout/cs_")));

    // Both plan changes are in the clinic's audit log, made by Tessera on Stripe's word.
    let filter = tessera_core::audit::Filter::parse("", "billing", "", "", 100).unwrap();
    let entries =
        tessera_core::audit::list(&app.services.db, tenant, tessera_core::Role::Owner, &filter)
            .await
            .unwrap();
    let changes: Vec<(String, Value, Value)> = entries
        .iter()
        .filter(|e| e.action == "billing.plan_changed")
        .map(|e| {
            (
                e.actor_kind.clone(),
                e.before.clone().unwrap()["plan"].clone(),
                e.after.clone().unwrap()["plan"].clone(),
            )
        })
        .collect();
    assert_eq!(
        changes,
        [
            (
                "system".to_string(),
                json!("professional"),
                json!("starter")
            ),
            (
                "system".to_string(),
                json!("starter"),
                json!("professional")
            ),
        ]
    );
}

#[sqlx::test(migrations = "../migrations")]
async fn staff_and_enterprise_cannot_check_out(owner: PgPool) {
    let (app, _sim) = billing_app(&owner).await;
    let admin = app.browser();
    app.sign_up(&admin, "Staff Clinic", "owner@staff-billing.example.com")
        .await;
    let enterprise = choose(&app, &admin, "enterprise").await;
    assert!(
        location(&enterprise).contains("arranged%20with%20us"),
        "{}",
        location(&enterprise)
    );

    let token = app
        .invite(&admin, "staff@staff-billing.example.com", "staff")
        .await;
    let staff = app.browser();
    let res = app
        .post(
            &staff,
            "accept_invitation",
            &[
                ("token", &token),
                ("name", "Sam Staff"),
                ("password", common::PASSWORD),
            ],
        )
        .await;
    assert!(res.status().is_redirection() || res.status().is_success());
    let refused = choose(&app, &staff, "professional").await;
    assert!(
        location(&refused).contains("Only%20owners%20and%20admins"),
        "{}",
        location(&refused)
    );
    assert_eq!(app.call(&staff, "billing", &[]).await.status(), 403);
}

fn signed(secret: &str, t: i64, body: &[u8]) -> String {
    format!("t={t},v1={}", billing::sign(secret, t, body))
}

#[sqlx::test(migrations = "../migrations")]
async fn webhooks_need_a_valid_signature(owner: PgPool) {
    let (app, _sim) = billing_app(&owner).await;
    let url = format!("{}/webhooks/stripe", app.url);
    let body = serde_json::to_vec(&json!({
        "id": "evt_sig", "type": "invoice.paid", "created": 1_700_000_000,
        "data": { "object": { "customer": "cus_nobody" } }
    }))
    .unwrap();
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let client = reqwest::Client::new();
    let send = |sig: Option<String>, body: Vec<u8>| {
        let mut req = client.post(&url).body(body);
        if let Some(sig) = sig {
            req = req.header("stripe-signature", sig);
        }
        req.send()
    };
    assert_eq!(send(None, body.clone()).await.unwrap().status(), 400);
    assert_eq!(
        send(Some(signed("whsec_wrong", now, &body)), body.clone())
            .await
            .unwrap()
            .status(),
        400
    );
    assert_eq!(
        send(Some(signed("whsec_sim", now - 600, &body)), body.clone())
            .await
            .unwrap()
            .status(),
        400
    );
    let mut tampered = body.clone();
    tampered.extend_from_slice(b" ");
    assert_eq!(
        send(Some(signed("whsec_sim", now, &body)), tampered)
            .await
            .unwrap()
            .status(),
        400
    );
    // Either secret of a rotation is accepted.
    assert_eq!(
        send(Some(signed("whsec_old", now, &body)), body.clone())
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        send(Some(signed("whsec_sim", now, &body)), body.clone())
            .await
            .unwrap()
            .status(),
        200
    );

    // Without Stripe configured the endpoint does not exist.
    let plain = TestApp::spawn(&owner).await;
    let res = client
        .post(format!("{}/webhooks/stripe", plain.url))
        .header("stripe-signature", signed("whsec_sim", now, &body))
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 404);
}

#[sqlx::test(migrations = "../migrations")]
async fn a_failed_payment_warns_then_blocks_model_calls(owner: PgPool) {
    let (app, _sim) = billing_app(&owner).await;
    let clinic = app.api_clinic("Overdue Clinic").await;

    // The clinic becomes a Stripe customer the way an admin does, by choosing a plan.
    let db = &app.services.db;
    let api = app.services.stripe.as_ref().unwrap();
    let urls = tessera_core::billing::ReturnUrls {
        success: format!("{}/settings/billing?checkout=success", app.url),
        cancel: format!("{}/settings/billing?checkout=cancelled", app.url),
    };
    tessera_core::billing::choose_plan(
        db,
        api,
        clinic.tenant,
        clinic.owner(),
        &clinic.email,
        PlanId::Professional,
        &urls,
    )
    .await
    .unwrap();
    let customer = tessera_core::billing::account(db, clinic.tenant)
        .await
        .unwrap()
        .stripe_customer_id
        .unwrap();
    let chat = || {
        reqwest::Client::new()
            .post(format!("{}/v1/chat/completions", app.url))
            .bearer_auth(clinic.token())
            .json(&json!({ "model": "gpt-4o-mini", "messages": [{ "role": "user", "content": "hello" }] }))
            .send()
    };
    assert_eq!(chat().await.unwrap().status(), 200);

    // Stripe's events, as it sends them: a payment failed or one went through, at `created`.
    let invoice = |kind: &str, created: i64, id: &str| {
        json!({
            "id": id, "type": kind, "created": created,
            "data": { "object": { "customer": customer } }
        })
    };
    let deliver = |event: Value| {
        let url = format!("{}/webhooks/stripe", app.url);
        async move {
            testkit::stripe::deliver(&url, "whsec_sim", &event)
                .await
                .unwrap()
        }
    };
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let day = 86_400;

    // A failure more than the grace period (7 days) ago, with no payment since: calls stop,
    // with the reason.
    let failed = invoice("invoice.payment_failed", now - 8 * day, "evt_f1");
    assert_eq!(deliver(failed).await, 200);
    let res = chat().await.unwrap();
    assert_eq!(res.status(), 402);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["error"]["code"], "payment_overdue");
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("Manage billing"));

    // A successful payment resumes them at once.
    assert_eq!(
        deliver(invoice("invoice.paid", now - 2 * 3600, "evt_p1")).await,
        200
    );
    assert_eq!(chat().await.unwrap().status(), 200);

    // A new failure within the grace period: calls go on.
    let failed = invoice("invoice.payment_failed", now - 3600, "evt_f2");
    assert_eq!(deliver(failed).await, 200);
    assert_eq!(chat().await.unwrap().status(), 200);
}

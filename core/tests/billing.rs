//! Stripe billing against the real Postgres and the Stripe simulator: webhook events applied
//! once and in order, and overage reported exactly once across a crash.

mod common;

use std::time::Duration;

use common::{app_db, clinic, CHANGES};
use serde_json::{json, Value};
use sqlx::PgPool;
use tessera_core::billing::{self, meter, webhook::Outcome, StripeApi};
use tessera_core::config::StripeConfig;
use tessera_core::metering::{self, UsageEvent};
use tessera_core::{Db, PlanId, TenantId};
use time::OffsetDateTime;

/// Sets columns of one clinic's row as the schema owner: `set` names the columns with
/// placeholders from `$2` on, bound to `values` (the clinic is `$1`).
async fn set_tenant(owner: &PgPool, tenant: TenantId, set: &str, values: &[&str]) {
    let sql = format!("UPDATE tenants SET {set} WHERE id = $1");
    let mut q = sqlx::query(&sql).bind(tenant);
    for v in values {
        q = q.bind(*v);
    }
    assert_eq!(q.execute(owner).await.unwrap().rows_affected(), 1);
}

#[derive(Debug, PartialEq, sqlx::FromRow)]
struct State {
    plan: String,
    subscription_status: Option<String>,
    stripe_subscription_id: Option<String>,
    payment_failed_at: Option<OffsetDateTime>,
}

async fn state(db: &Db, tenant: TenantId) -> State {
    let mut tx = db.begin_tenant(tenant).await.unwrap();
    let s = sqlx::query_as(
        "SELECT plan, subscription_status, stripe_subscription_id, payment_failed_at FROM tenants",
    )
    .fetch_one(&mut *tx)
    .await
    .unwrap();
    tx.commit().await.unwrap();
    s
}

fn event(id: &str, kind: &str, created: i64, object: Value) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "id": id, "object": "event", "type": kind, "created": created,
        "data": { "object": object },
    }))
    .unwrap()
}

fn subscription(status: &str, plan: &str) -> Value {
    json!({
        "id": "sub_1", "object": "subscription", "customer": "cus_1", "status": status,
        "items": { "data": [
            { "price": { "lookup_key": format!("tessera_{plan}_base") },
              "current_period_start": 1_700_000_000, "current_period_end": 1_702_600_000 },
            { "price": { "lookup_key": format!("tessera_{plan}_overage") } }
        ]}
    })
}

async fn customer_clinic(owner: &PgPool, db: &Db, name: &str, customer: &str) -> TenantId {
    let c = clinic(db, name).await;
    set_tenant(owner, c.tenant, "stripe_customer_id = $2", &[customer]).await;
    c.tenant
}

#[sqlx::test(migrations = "../migrations")]
async fn the_same_event_ten_times_has_one_effect(owner: PgPool) {
    let db = app_db(&owner).await;
    let tenant = customer_clinic(&owner, &db, "Once Clinic", "cus_1").await;
    let failed = event(
        "evt_failed",
        "invoice.payment_failed",
        1_700_000_100,
        json!({ "id": "in_1", "customer": "cus_1" }),
    );
    let upgrade = event(
        "evt_up",
        "customer.subscription.updated",
        1_700_000_000,
        subscription("active", "professional"),
    );

    // Ten deliveries of each, all at once.
    let deliveries = (0..10).flat_map(|_| [failed.clone(), upgrade.clone()]);
    let outcomes = futures_util::future::join_all(deliveries.map(|payload| {
        let db = db.clone();
        async move {
            billing::webhook::handle(&db, &CHANGES, &payload)
                .await
                .unwrap()
        }
    }))
    .await;
    let applied = outcomes
        .iter()
        .filter(|o| **o == Outcome::Applied(tenant))
        .count();
    let duplicates = outcomes
        .iter()
        .filter(|o| **o == Outcome::Duplicate)
        .count();
    assert_eq!((applied, duplicates), (2, 18), "{outcomes:?}");

    let s = state(&db, tenant).await;
    assert_eq!(s.plan, "professional");
    assert_eq!(s.subscription_status.as_deref(), Some("active"));
    assert_eq!(
        s.payment_failed_at.map(|t| t.unix_timestamp()),
        Some(1_700_000_100)
    );
    let mut tx = db.begin_tenant(tenant).await.unwrap();
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM stripe_events")
        .fetch_one(&mut *tx)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(stored, 2);
}

#[sqlx::test(migrations = "../migrations")]
async fn events_out_of_order_end_in_the_right_state(owner: PgPool) {
    let db = app_db(&owner).await;
    let tenant = customer_clinic(&owner, &db, "Order Clinic", "cus_1").await;
    let created = event(
        "evt_c",
        "customer.subscription.created",
        1_700_000_000,
        subscription("incomplete", "starter"),
    );
    let updated = event(
        "evt_u",
        "customer.subscription.updated",
        1_700_000_050,
        subscription("active", "professional"),
    );

    // updated arrives before created: created is older and changes nothing.
    assert_eq!(
        billing::webhook::handle(&db, &CHANGES, &updated)
            .await
            .unwrap(),
        Outcome::Applied(tenant)
    );
    assert_eq!(
        billing::webhook::handle(&db, &CHANGES, &created)
            .await
            .unwrap(),
        Outcome::Stale(tenant)
    );
    let s = state(&db, tenant).await;
    assert_eq!(
        (s.plan.as_str(), s.subscription_status.as_deref()),
        ("professional", Some("active"))
    );
    assert_eq!(s.stripe_subscription_id.as_deref(), Some("sub_1"));

    // In the same second, created still ranks before updated.
    let tenant2 = customer_clinic(&owner, &db, "Same Second Clinic", "cus_2").await;
    let mut sub = subscription("active", "professional");
    sub["customer"] = json!("cus_2");
    let mut early = subscription("incomplete", "starter");
    early["customer"] = json!("cus_2");
    let updated = event(
        "evt_u2",
        "customer.subscription.updated",
        1_700_000_000,
        sub,
    );
    let created = event(
        "evt_c2",
        "customer.subscription.created",
        1_700_000_000,
        early,
    );
    billing::webhook::handle(&db, &CHANGES, &updated)
        .await
        .unwrap();
    assert_eq!(
        billing::webhook::handle(&db, &CHANGES, &created)
            .await
            .unwrap(),
        Outcome::Stale(tenant2)
    );
    assert_eq!(state(&db, tenant2).await.plan, "professional");

    // A cancellation puts the clinic back on the fallback plan; an update from before it
    // arriving late does not bring the old plan back.
    let deleted = event(
        "evt_d",
        "customer.subscription.deleted",
        1_700_000_900,
        subscription("canceled", "professional"),
    );
    let late = event(
        "evt_late",
        "customer.subscription.updated",
        1_700_000_500,
        subscription("active", "professional"),
    );
    billing::webhook::handle(&db, &CHANGES, &deleted)
        .await
        .unwrap();
    assert_eq!(
        billing::webhook::handle(&db, &CHANGES, &late)
            .await
            .unwrap(),
        Outcome::Stale(tenant)
    );
    let s = state(&db, tenant).await;
    assert_eq!(
        (s.plan.as_str(), s.subscription_status.as_deref()),
        ("starter", Some("canceled"))
    );

    // Payment: the success that came after the failure wins whatever the arrival order.
    let failed = event(
        "evt_f",
        "invoice.payment_failed",
        1_700_001_000,
        json!({ "customer": "cus_1" }),
    );
    let paid = event(
        "evt_p",
        "invoice.paid",
        1_700_001_060,
        json!({ "customer": "cus_1" }),
    );
    billing::webhook::handle(&db, &CHANGES, &paid)
        .await
        .unwrap();
    assert_eq!(
        billing::webhook::handle(&db, &CHANGES, &failed)
            .await
            .unwrap(),
        Outcome::Stale(tenant)
    );
    assert_eq!(state(&db, tenant).await.payment_failed_at, None);
}

#[sqlx::test(migrations = "../migrations")]
async fn events_for_no_clinic_are_recorded_and_ignored(owner: PgPool) {
    let db = app_db(&owner).await;
    let stranger = event(
        "evt_x",
        "invoice.paid",
        1_700_000_000,
        json!({ "customer": "cus_unknown" }),
    );
    assert!(matches!(
        billing::webhook::handle(&db, &CHANGES, &stranger)
            .await
            .unwrap(),
        Outcome::Ignored(_)
    ));
    assert_eq!(
        billing::webhook::handle(&db, &CHANGES, &stranger)
            .await
            .unwrap(),
        Outcome::Duplicate
    );
    let other = event("evt_y", "charge.refunded", 1_700_000_000, json!({}));
    assert!(matches!(
        billing::webhook::handle(&db, &CHANGES, &other)
            .await
            .unwrap(),
        Outcome::Ignored(_)
    ));
    assert!(billing::webhook::handle(&db, &CHANGES, b"not json")
        .await
        .is_err());
}

/// A Stripe client against a fresh simulator, with the catalogue synced.
async fn stripe_sim(db: &Db) -> (StripeApi, String) {
    let sim = testkit::spawn("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let api = StripeApi::new(&StripeConfig {
        secret_key: "sk_test_sim".to_string().into(),
        webhook_secrets: vec!["whsec_sim".to_string().into()],
        api_base: format!("http://{sim}/stripe/"),
    })
    .unwrap();
    let plans = billing::plans(db.pool()).await.unwrap();
    let first = api.sync_catalog(&plans).await.unwrap();
    assert!(first.iter().all(|i| i.created));
    // Idempotent: the second run finds everything.
    let second = api.sync_catalog(&plans).await.unwrap();
    assert!(second.iter().all(|i| !i.created), "{second:?}");
    assert_eq!(first.len(), second.len());
    (api, format!("http://{sim}/stripe"))
}

#[sqlx::test(migrations = "../migrations")]
async fn a_crash_mid_batch_reports_each_hour_exactly_once(owner: PgPool) {
    let db = app_db(&owner).await;
    let (api, sim) = stripe_sim(&db).await;
    let c = clinic(&db, "Meter Clinic").await;
    let customer = api
        .create_customer(c.tenant, "Meter Clinic", &c.email)
        .await
        .unwrap();
    // Starter: 1,000,000 tokens included, $0.003 per 1,000 beyond.
    let now = OffsetDateTime::now_utc();
    let h0 = now
        .replace_minute(0)
        .unwrap()
        .replace_second(0)
        .unwrap()
        .replace_nanosecond(0)
        .unwrap()
        - time::Duration::hours(5);
    // Hours in the same month as h0 only (the test may run just after midnight on the 1st).
    let h0 = if h0.month() != (h0 + time::Duration::hours(4)).month() {
        h0 - time::Duration::hours(5)
    } else {
        h0
    };
    set_tenant(
        &owner,
        c.tenant,
        "stripe_customer_id = $2, metered_through = $3::timestamptz",
        &[
            &customer,
            &h0.format(&time::format_description::well_known::Rfc3339)
                .unwrap(),
        ],
    )
    .await;
    let tokens = [800_000i64, 500_000, 400_000, 250_000];
    let events: Vec<UsageEvent> = tokens
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let id = uuid::Uuid::new_v4();
            UsageEvent {
                id,
                tenant: c.tenant,
                user: None,
                api_key: None,
                agent: None,
                provider: tessera_core::Provider::OpenAi,
                model: "gpt-4o-mini".into(),
                prompt_tokens: t / 2,
                completion_tokens: t / 2,
                cached_tokens: 0,
                cost_micro_usd: 0,
                latency_ms: 1,
                estimated: false,
                streamed: false,
                cancelled: false,
                idempotency_key: id.to_string(),
                occurred_at_ms: (h0
                    + time::Duration::hours(i as i64)
                    + time::Duration::minutes(10))
                .unix_timestamp()
                    * 1000,
                kind: Default::default(),
            }
        })
        .collect();
    metering::write_events(&db, &events).await.unwrap();
    // 800k (under), +500k crosses 1M by 300k, then 400k and 250k all beyond.
    let expected = [300_000i64, 400_000, 250_000];

    // Stripe records each meter event, then takes 500 ms to answer; the worker is killed
    // once Stripe has recorded the second: it was sent but never marked sent.
    let client = reqwest::Client::new();
    client
        .post(format!("{sim}/sim/config"))
        .json(&json!({ "meter_latency_ms": 500 }))
        .send()
        .await
        .unwrap();
    let worker = tokio::spawn({
        let (db, api) = (db.clone(), api.clone());
        async move { meter::tick(&db, &api, now, Duration::ZERO).await }
    });
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while testkit::stripe::sim_state(&sim).await["meter_events"]
        .as_array()
        .unwrap()
        .len()
        < 2
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the worker never sent two events"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    worker.abort();
    let _ = worker.await;
    let unsent: i64 = {
        let mut tx = db.begin_tenant(c.tenant).await.unwrap();
        let n = sqlx::query_scalar("SELECT count(*) FROM meter_outbox WHERE sent_at IS NULL")
            .fetch_one(&mut *tx)
            .await
            .unwrap();
        tx.commit().await.unwrap();
        n
    };
    assert_eq!(
        unsent, 2,
        "the event in flight and the one after it are still to send"
    );

    // The restarted worker sends what is left; the resent event is not counted twice.
    client
        .post(format!("{sim}/sim/config"))
        .json(&json!({ "meter_latency_ms": 0 }))
        .send()
        .await
        .unwrap();
    let sent = meter::tick(&db, &api, now, Duration::ZERO).await.unwrap();
    let errors: Vec<Option<String>> = {
        let mut tx = db.begin_tenant(c.tenant).await.unwrap();
        let e = sqlx::query_scalar("SELECT last_error FROM meter_outbox ORDER BY hour")
            .fetch_all(&mut *tx)
            .await
            .unwrap();
        tx.commit().await.unwrap();
        e
    };
    assert_eq!((sent.sent, sent.failed), (2, 0), "{errors:?}");
    let again = meter::tick(&db, &api, now, Duration::ZERO).await.unwrap();
    assert_eq!((again.sent, again.failed), (0, 0));

    let st = testkit::stripe::sim_state(&sim).await;
    let recorded: Vec<(String, i64)> = st["meter_events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["identifier"].as_str().unwrap().to_string(),
                e["payload"]["value"].as_str().unwrap().parse().unwrap(),
            )
        })
        .collect();
    let wanted: Vec<(String, i64)> = expected
        .iter()
        .enumerate()
        .map(|(i, v)| {
            (
                meter::identifier(c.tenant, h0 + time::Duration::hours(i as i64 + 1)),
                *v,
            )
        })
        .collect();
    assert_eq!(recorded, wanted);
    assert_eq!(
        st["meter_event_requests"], 4,
        "one event was sent twice and counted once"
    );
    assert!(st["meter_events"]
        .as_array()
        .unwrap()
        .iter()
        .all(|e| e["payload"]["stripe_customer_id"] == customer.as_str()));
}

#[sqlx::test(migrations = "../migrations")]
async fn hours_under_the_allowance_report_nothing(owner: PgPool) {
    let db = app_db(&owner).await;
    let c = clinic(&db, "Quiet Clinic").await;
    let now = OffsetDateTime::now_utc();
    let start = now - time::Duration::hours(3);
    set_tenant(
        &owner,
        c.tenant,
        "stripe_customer_id = 'cus_q', metered_through = $2::timestamptz",
        &[&start
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap()],
    )
    .await;
    assert_eq!(meter::queue_overage(&db, c.tenant, now).await.unwrap(), 0);
    // The mark moved on to the last whole hour.
    let mut tx = db.begin_tenant(c.tenant).await.unwrap();
    let through: OffsetDateTime = sqlx::query_scalar("SELECT metered_through FROM tenants")
        .fetch_one(&mut *tx)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(through.minute(), 0);
    assert!(through <= now && now - through < time::Duration::hours(1));
}

#[sqlx::test(migrations = "../migrations")]
async fn an_operator_sets_enterprise_and_subscriptions_leave_it_alone(owner: PgPool) {
    let db = app_db(&owner).await;
    let tenant = customer_clinic(&owner, &db, "Big Clinic", "cus_1").await;
    let slug: String = {
        let mut tx = db.begin_tenant(tenant).await.unwrap();
        let s = sqlx::query_scalar("SELECT slug FROM tenants")
            .fetch_one(&mut *tx)
            .await
            .unwrap();
        tx.commit().await.unwrap();
        s
    };
    let err = "platinum".parse::<tessera_core::PlanId>().unwrap_err();
    assert!(
        err.to_string()
            .contains("starter, professional, enterprise"),
        "{err}"
    );
    let err = billing::set_plan(&owner, &CHANGES, "no-such-clinic", PlanId::Enterprise)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("no-such-clinic"), "{err}");

    assert_eq!(
        billing::set_plan(&owner, &CHANGES, &slug, PlanId::Enterprise)
            .await
            .unwrap(),
        tenant
    );
    let limits = metering::limits(&db, tenant).await.unwrap();
    assert_eq!(
        (limits.plan.as_str(), limits.token_limit()),
        ("enterprise", None)
    );
    // A subscription event (say, a leftover self-serve subscription) does not take it away.
    let update = event(
        "evt_e",
        "customer.subscription.updated",
        1_700_000_000,
        subscription("active", "starter"),
    );
    assert_eq!(
        billing::webhook::handle(&db, &CHANGES, &update)
            .await
            .unwrap(),
        Outcome::Applied(tenant)
    );
    assert_eq!(state(&db, tenant).await.plan, "enterprise");
}

#[sqlx::test(migrations = "../migrations")]
async fn any_event_stripe_could_send_is_answered_without_a_server_error(pool: PgPool) {
    // Random events, shaped like Stripe's and not: each is applied, ignored or refused as
    // the sender's mistake, never a failure on our side.
    use proptest::prelude::*;
    use proptest::strategy::ValueTree;
    let db = app_db(&pool).await;
    let c = clinic(&db, "Fuzz Clinic").await;
    let kinds = prop::sample::select(vec![
        "checkout.session.completed",
        "customer.subscription.created",
        "customer.subscription.updated",
        "customer.subscription.deleted",
        "invoice.paid",
        "invoice.payment_failed",
        "something.else",
    ]);
    let text = || prop::option::of("[a-z_0-9-]{0,12}");
    let event = (
        kinds,
        prop::num::i64::ANY,
        text(),
        text(),
        prop::option::of(prop::sample::select(vec![
            c.tenant.to_string(),
            "not-a-uuid".to_string(),
        ])),
        prop::option::of(prop::num::i64::ANY),
    )
        .prop_map(|(kind, created, status, plan, reference, period)| {
            json!({
                "id": format!("evt_{created}"), "object": "event", "type": kind,
                "created": created,
                "data": { "object": {
                    "mode": "subscription", "client_reference_id": reference,
                    "customer": "cus_fuzz", "status": status, "subscription": "sub_fuzz",
                    "metadata": { "tenant_id": reference, "plan": plan },
                    "current_period_start": period, "current_period_end": period,
                    "items": { "data": [{ "price": { "lookup_key": plan } }] },
                } },
            })
        });
    let raw = prop::collection::vec(prop::num::u8::ANY, 0..64);
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    for _ in 0..150 {
        let payload = serde_json::to_vec(&event.new_tree(&mut runner).unwrap().current()).unwrap();
        if let Err(e) = billing::webhook::handle(&db, &CHANGES, &payload).await {
            assert!(
                e.is_client_error(),
                "{e:?} for {}",
                String::from_utf8_lossy(&payload)
            );
        }
        let garbage = raw.new_tree(&mut runner).unwrap().current();
        if let Err(e) = billing::webhook::handle(&db, &CHANGES, &garbage).await {
            assert!(e.is_client_error(), "{e:?}");
        }
    }
}

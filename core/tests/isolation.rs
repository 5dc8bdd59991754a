//! Row-level security: tenant work runs in transactions scoped to one tenant, and a query
//! that forgets its tenant condition still returns only that tenant's rows.

mod common;

use common::{app_db, clinic, CHANGES};
use sqlx::PgPool;
use tessera_core::{auth, Role};

/// Tenant-owned tables: `tenants` itself and every table with a `tenant_id` column, found from
/// the catalogue so a table added later is covered without editing this test.
async fn tenant_owned_tables(pool: &PgPool) -> Vec<(String, String)> {
    sqlx::query_as(
        "SELECT c.relname::text, CASE WHEN c.relname = 'tenants' THEN 'id' ELSE 'tenant_id' END
           FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
          WHERE n.nspname = 'public' AND c.relkind = 'r'
            AND (c.relname = 'tenants' OR EXISTS (
                 SELECT 1 FROM pg_attribute a WHERE a.attrelid = c.oid AND a.attname = 'tenant_id' AND NOT a.attisdropped))
          ORDER BY 1",
    )
    .fetch_all(pool)
    .await
    .unwrap()
}

#[sqlx::test(migrations = "../migrations")]
async fn every_tenant_owned_table_forces_row_level_security(pool: PgPool) {
    let tables = tenant_owned_tables(&pool).await;
    assert!(
        tables.len() >= 3,
        "expected tenants, memberships, invitations: {tables:?}"
    );
    for (table, _) in tables {
        let (enabled, forced): (bool, bool) = sqlx::query_as(
            "SELECT relrowsecurity, relforcerowsecurity FROM pg_class WHERE relname = $1",
        )
        .bind(&table)
        .fetch_one(&pool)
        .await
        .unwrap();
        assert!(
            enabled && forced,
            "{table}: row-level security enabled={enabled} forced={forced}"
        );
    }
}

#[sqlx::test(migrations = "../migrations")]
async fn the_app_role_owns_nothing_and_cannot_bypass_policies(pool: PgPool) {
    let (superuser, bypass): (bool, bool) =
        sqlx::query_as("SELECT rolsuper, rolbypassrls FROM pg_roles WHERE rolname = 'tessera_app'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert!(!superuser && !bypass);
    let owned: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
          WHERE n.nspname = 'public' AND pg_get_userbyid(c.relowner) = 'tessera_app'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(owned, 0);
}

#[sqlx::test(migrations = "../migrations")]
async fn unfiltered_queries_see_only_the_current_tenant(pool: PgPool) {
    // Arrange: two clinics, each with a member, a pending invitation, a provider key, an API key, a usage event, an agent, a conversation and documents, so
    // every tenant-owned table has rows of both. A new tenant-owned table fails this test
    // until rows for it are added here.
    let db = app_db(&pool).await;
    // The master keys the services below decrypt with.
    let master = &*common::MASTER;
    let a = clinic(&db, "Alpha Clinic").await;
    let b = clinic(&db, "Beta Clinic").await;
    for c in [&a, &b] {
        common::member(
            &db,
            c,
            &format!("staff-{}@example.com", c.tenant),
            Role::Staff,
        )
        .await;
        auth::invitations::create(
            &db,
            c.tenant,
            c.owner(),
            &format!("pending-{}@example.com", c.tenant),
            Role::Staff,
            time::Duration::days(1),
        )
        .await
        .unwrap();
        tessera_core::provider_keys::set(
            &db,
            &CHANGES,
            master,
            c.tenant,
            c.owner(),
            tessera_core::provider_keys::KeyInput {
                provider: tessera_core::Provider::OpenAi,
                secret: "sk-test-isolation-key",
                base_url: "",
            },
            true,
        )
        .await
        .unwrap();
        tessera_core::api_keys::create(&db, c.tenant, c.owner(), "isolation")
            .await
            .unwrap();
        let agent = tessera_core::agents::create(
            &db,
            &CHANGES,
            c.tenant,
            c.owner(),
            &tessera_core::agents::AgentInput {
                name: "Isolation agent".into(),
                model: "gpt-4o-mini".into(),
                ..Default::default()
            },
        )
        .await
        .unwrap();
        let who = tessera_core::chat::Chatter {
            tenant: c.tenant,
            user: c.owner,
        };
        tessera_core::chat::start(&db, who, agent.id, "hello")
            .await
            .unwrap();
        let id = uuid::Uuid::new_v4();
        tessera_core::metering::write_events(
            &db,
            &[tessera_core::metering::UsageEvent {
                id,
                tenant: c.tenant,
                user: Some(c.owner),
                api_key: None,
                agent: Some(agent.id),
                provider: tessera_core::Provider::OpenAi,
                model: "gpt-4o-mini".into(),
                prompt_tokens: 1,
                completion_tokens: 1,
                cached_tokens: 0,
                cost_micro_usd: 1,
                latency_ms: 1,
                estimated: false,
                streamed: false,
                cancelled: false,
                idempotency_key: id.to_string(),
                occurred_at_ms: tessera_core::metering::now_ms(),
                kind: Default::default(),
            }],
        )
        .await
        .unwrap();
        // Billing: a Stripe customer, a webhook event applied to the clinic, an outbox row.
        let customer = format!("cus_{}", c.tenant.0.simple());
        let mut tx = db.begin_tenant(c.tenant).await.unwrap();
        sqlx::query("UPDATE tenants SET stripe_customer_id = $1")
            .bind(&customer)
            .execute(&mut *tx)
            .await
            .unwrap();
        sqlx::query(
            "INSERT INTO meter_outbox (tenant_id, hour, identifier, stripe_customer_id, tokens)
             VALUES ($1, date_trunc('hour', now()), $2, $3, 1)",
        )
        .bind(c.tenant)
        .bind(format!("isolation-{}", c.tenant))
        .bind(&customer)
        .execute(&mut *tx)
        .await
        .unwrap();
        tx.commit().await.unwrap();
        let event = serde_json::json!({
            "id": format!("evt_{}", c.tenant.0.simple()), "type": "invoice.paid", "created": 1_800_000_000,
            "data": { "object": { "customer": customer } }
        });
        tessera_core::billing::webhook::handle(&db, &CHANGES, event.to_string().as_bytes())
            .await
            .unwrap();
    }

    // Knowledge: a document ingested (passages and vectors, embedded through the simulator)
    // and one still queued (a job).
    let (services, _) = common::services(&pool, &[]).await;
    for c in [&a, &b] {
        let upload = |name: &str, text: &str| tessera_core::knowledge::Upload {
            name: name.into(),
            bytes: text.as_bytes().to_vec(),
            tags: Vec::new(),
        };
        tessera_core::knowledge::upload(
            &db,
            c.tenant,
            c.owner(),
            upload("ingested.md", &format!("Passage of {}", c.tenant)),
            1_000_000,
        )
        .await
        .unwrap();
    }
    let worker = services.ingest_worker(Default::default());
    while worker.run_once().await.unwrap() {}
    for c in [&a, &b] {
        let upload = tessera_core::knowledge::Upload {
            name: "queued.md".into(),
            bytes: format!("Queued for {}", c.tenant).into_bytes(),
            tags: Vec::new(),
        };
        tessera_core::knowledge::upload(&db, c.tenant, c.owner(), upload, 1_000_000)
            .await
            .unwrap();
    }

    for (table, column) in tenant_owned_tables(&pool).await {
        // Act: the same query with no tenant condition, in A's transaction, in B's, and in none.
        let sql = format!("SELECT {column} FROM {table}");
        let mut tx = db.begin_tenant(a.tenant).await.unwrap();
        let in_a: Vec<uuid::Uuid> = sqlx::query_scalar(&sql).fetch_all(&mut *tx).await.unwrap();
        tx.rollback().await.unwrap();
        let mut tx = db.begin_tenant(b.tenant).await.unwrap();
        let in_b: Vec<uuid::Uuid> = sqlx::query_scalar(&sql).fetch_all(&mut *tx).await.unwrap();
        tx.rollback().await.unwrap();
        let outside: Vec<uuid::Uuid> = sqlx::query_scalar(&sql).fetch_all(db.pool()).await.unwrap();

        // Assert
        assert!(!in_a.is_empty(), "{table}: tenant A sees its own rows");
        assert!(
            in_a.iter().all(|t| *t == a.tenant.0),
            "{table}: tenant A saw another tenant's rows: {in_a:?}"
        );
        assert!(
            !in_b.is_empty() && in_b.iter().all(|t| *t == b.tenant.0),
            "{table}: tenant B: {in_b:?}"
        );
        assert!(
            outside.is_empty(),
            "{table}: outside any tenant transaction: {outside:?}"
        );
    }
}

#[sqlx::test(migrations = "../migrations")]
async fn the_tenant_setting_lasts_only_for_its_transaction(pool: PgPool) {
    let db = app_db(&pool).await;
    let a = clinic(&db, "Alpha Clinic").await;
    // One connection, so the next query would reuse a leaked setting if there were one.
    let mut conn = db.pool().acquire().await.unwrap();
    let mut tx = sqlx::Connection::begin(&mut *conn).await.unwrap();
    sqlx::query("SELECT set_config('app.tenant_id', $1, true)")
        .bind(a.tenant.to_string())
        .execute(&mut *tx)
        .await
        .unwrap();
    let seen: i64 = sqlx::query_scalar("SELECT count(*) FROM tenants")
        .fetch_one(&mut *tx)
        .await
        .unwrap();
    assert_eq!(seen, 1);
    tx.commit().await.unwrap();
    let after: i64 = sqlx::query_scalar("SELECT count(*) FROM tenants")
        .fetch_one(&mut *conn)
        .await
        .unwrap();
    assert_eq!(after, 0);
}

#[sqlx::test(migrations = "../migrations")]
async fn writes_into_another_tenant_are_refused(pool: PgPool) {
    let db = app_db(&pool).await;
    let a = clinic(&db, "Alpha Clinic").await;
    let b = clinic(&db, "Beta Clinic").await;

    let mut tx = db.begin_tenant(a.tenant).await.unwrap();
    let renamed = sqlx::query("UPDATE tenants SET name = 'Taken over' WHERE id = $1")
        .bind(b.tenant)
        .execute(&mut *tx)
        .await
        .unwrap()
        .rows_affected();
    assert_eq!(renamed, 0, "an UPDATE cannot reach another tenant's row");
    let deleted = sqlx::query("DELETE FROM memberships WHERE tenant_id = $1")
        .bind(b.tenant)
        .execute(&mut *tx)
        .await
        .unwrap();
    assert_eq!(deleted.rows_affected(), 0);
    let insert =
        sqlx::query("INSERT INTO memberships (tenant_id, user_id, role) VALUES ($1, $2, 'owner')")
            .bind(b.tenant)
            .bind(a.owner)
            .execute(&mut *tx)
            .await;
    let err = insert.expect_err("inserting into another tenant must fail");
    assert!(err.to_string().contains("row-level security"), "{err}");
}

#[sqlx::test(migrations = "../migrations")]
async fn a_user_scope_shows_only_that_users_memberships(pool: PgPool) {
    let db = app_db(&pool).await;
    let a = clinic(&db, "Alpha Clinic").await;
    let b = clinic(&db, "Beta Clinic").await;
    common::member(&db, &b, "colleague@example.com", Role::Staff).await;

    let mut tx = db.begin_user(a.owner).await.unwrap();
    let rows: Vec<(uuid::Uuid, uuid::Uuid)> =
        sqlx::query_as("SELECT tenant_id, user_id FROM memberships")
            .fetch_all(&mut *tx)
            .await
            .unwrap();
    let tenants: Vec<uuid::Uuid> = sqlx::query_scalar("SELECT id FROM tenants")
        .fetch_all(&mut *tx)
        .await
        .unwrap();
    let invitations: i64 = sqlx::query_scalar("SELECT count(*) FROM invitations")
        .fetch_one(&mut *tx)
        .await
        .unwrap();
    assert_eq!(rows, vec![(a.tenant.0, a.owner.0)]);
    assert_eq!(tenants, vec![a.tenant.0]);
    assert_eq!(invitations, 0);
}

#[sqlx::test(migrations = "../migrations")]
async fn holders_of_a_key_or_a_link_may_only_read_their_row(pool: PgPool) {
    // Arrange: a clinic with an API key and a pending invitation.
    let db = app_db(&pool).await;
    let c = clinic(&db, "Holder Clinic").await;
    let (_, token) = tessera_core::api_keys::create(&db, c.tenant, c.owner(), "holder")
        .await
        .unwrap();
    let invitation = auth::invitations::create(
        &db,
        c.tenant,
        c.owner(),
        "holder@example.com",
        Role::Staff,
        time::Duration::days(1),
    )
    .await
    .unwrap();
    let sha = |t: &str| -> Vec<u8> {
        use sha2::Digest;
        sha2::Sha256::digest(t.trim().as_bytes()).to_vec()
    };

    // Act and assert: in each holder's scope the row is visible and cannot be changed.
    let tx = db.begin_api_key(&sha(&token)).await.unwrap();
    sees_one_row_and_changes_none(
        tx,
        "api_keys",
        &[
            "UPDATE api_keys SET revoked_at = NULL, name = 'taken'",
            "DELETE FROM api_keys",
        ],
    )
    .await;
    let tx = db.begin_invitation(&sha(&invitation.token)).await.unwrap();
    sees_one_row_and_changes_none(
        tx,
        "invitations",
        &[
            "UPDATE invitations SET role = 'owner'",
            "DELETE FROM invitations",
        ],
    )
    .await;

    // The key still works and the invitation can still be accepted, in the clinic's scope.
    assert!(tessera_core::api_keys::authenticate(&db, &token)
        .await
        .unwrap()
        .is_some());
    auth::invitations::accept(&db, &invitation.token, "Holder", common::PASSWORD)
        .await
        .unwrap();
}

#[sqlx::test(migrations = "../migrations")]
async fn security_definer_functions_look_in_pg_temp_last(pool: PgPool) {
    let configs: Vec<(String, Vec<String>)> = sqlx::query_as(
        "SELECT proname::text, coalesce(proconfig, '{}') FROM pg_proc
          WHERE prosecdef AND pronamespace = 'public'::regnamespace ORDER BY proname",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert!(!configs.is_empty());
    for (name, config) in configs {
        assert!(
            config.iter().any(|c| c == "search_path=public, pg_temp"),
            "{name}: {config:?}"
        );
    }
}

/// In a holder's scope (`tx`), `table` shows one row and none of `statements` changes it.
async fn sees_one_row_and_changes_none(
    mut tx: tessera_core::db::Tx,
    table: &str,
    statements: &[&str],
) {
    let seen: i64 = sqlx::query_scalar(&format!("SELECT count(*) FROM {table}"))
        .fetch_one(&mut *tx)
        .await
        .unwrap();
    assert_eq!(seen, 1);
    for statement in statements {
        let changed = sqlx::query(statement)
            .execute(&mut *tx)
            .await
            .unwrap()
            .rows_affected();
        assert_eq!(changed, 0, "{statement}");
    }
    tx.rollback().await.unwrap();
}

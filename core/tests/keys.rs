//! Provider keys (BYOK) stored encrypted in the real Postgres, as the app role.

mod common;

use common::{app_db, clinic, member, CHANGES};
use secrecy::ExposeSecret;
use sqlx::PgPool;
use tessera_core::auth::members::Actor;
use tessera_core::crypto::MasterKeys;
use tessera_core::provider_keys::{self as keys, KeyInput, ProviderKeyInfo};
use tessera_core::Error;
use tessera_core::Role;
use tessera_core::{Provider, TenantId};

const OPENAI_KEY: &str = "sk-test-abcdefghijklmnop1234";

/// Stores a key as an admin does (endpoints on this machine allowed).
async fn set_key(
    db: &tessera_core::Db,
    master: &MasterKeys,
    tenant: TenantId,
    actor: Actor,
    provider: Provider,
    secret: &str,
    base_url: &str,
) -> tessera_core::Result<ProviderKeyInfo> {
    let input = KeyInput {
        provider,
        secret,
        base_url,
    };
    keys::set(db, &CHANGES, master, tenant, actor, input, true).await
}

#[sqlx::test(migrations = "../migrations")]
async fn a_stored_key_is_listed_by_its_last_four_only(pool: PgPool) {
    let db = app_db(&pool).await;
    let master = MasterKeys::random("v1");
    let c = clinic(&db, "Alpha").await;

    let info = set_key(
        &db,
        &master,
        c.tenant,
        c.owner(),
        Provider::OpenAi,
        OPENAI_KEY,
        "",
    )
    .await
    .unwrap();
    assert_eq!(info.last_four.as_deref(), Some("1234"));
    assert_eq!(info.added_by.as_deref(), Some("Owner"));
    let listed = keys::list(&db, c.tenant, c.owner()).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert!(!format!("{listed:?}").contains("abcdefgh"));

    // The database holds only ciphertext.
    let mut tx = db.begin_tenant(c.tenant).await.unwrap();
    let stored: Vec<u8> = sqlx::query_scalar("SELECT ciphertext FROM provider_keys")
        .fetch_one(&mut *tx)
        .await
        .unwrap();
    tx.rollback().await.unwrap();
    assert!(!stored.windows(8).any(|w| w == b"abcdefgh"));

    let resolved = keys::resolve(&db, &master, c.tenant, Provider::OpenAi)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        resolved.secret.as_ref().unwrap().expose_secret(),
        OPENAI_KEY
    );
    assert!(!format!("{resolved:?}").contains("abcdefgh"));
    let used = keys::list(&db, c.tenant, c.owner()).await.unwrap();
    assert!(
        used[0].last_used_at.is_some(),
        "resolving records when the key was last used"
    );
}

#[sqlx::test(migrations = "../migrations")]
async fn a_ciphertext_moved_to_another_tenant_does_not_decrypt(pool: PgPool) {
    let db = app_db(&pool).await;
    let master = MasterKeys::random("v1");
    let a = clinic(&db, "Alpha").await;
    let b = clinic(&db, "Beta").await;
    set_key(
        &db,
        &master,
        a.tenant,
        a.owner(),
        Provider::OpenAi,
        OPENAI_KEY,
        "",
    )
    .await
    .unwrap();
    set_key(
        &db,
        &master,
        b.tenant,
        b.owner(),
        Provider::Anthropic,
        "sk-ant-bbbbbbbbbbbb",
        "",
    )
    .await
    .unwrap();

    // Someone with database access moves A's encrypted OpenAI key into B's rows.
    let mut tx = db.begin_tenant(a.tenant).await.unwrap();
    let row: (uuid::Uuid, i32, Vec<u8>, Vec<u8>) = sqlx::query_as(
        "SELECT id, version, nonce, ciphertext FROM provider_keys WHERE provider = 'openai'",
    )
    .fetch_one(&mut *tx)
    .await
    .unwrap();
    // Moved, not copied, so even the row id (part of the associated data) is the same.
    sqlx::query("DELETE FROM provider_keys WHERE provider = 'openai'")
        .execute(&mut *tx)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let mut tx = db.begin_tenant(b.tenant).await.unwrap();
    sqlx::query(
        "INSERT INTO provider_keys (id, tenant_id, provider, version, nonce, ciphertext, last_four)
         VALUES ($1, $2, 'openai', $3, $4, $5, '1234')",
    )
    .bind(row.0)
    .bind(b.tenant)
    .bind(row.1)
    .bind(&row.2)
    .bind(&row.3)
    .execute(&mut *tx)
    .await
    .unwrap();
    tx.commit().await.unwrap();

    let err = keys::resolve(&db, &master, b.tenant, Provider::OpenAi)
        .await
        .unwrap_err();
    assert!(matches!(
        err,
        Error::Internal(_) | Error::Database(_) | Error::Redis(_)
    ));
    assert!(!err.to_string().contains("abcdefgh"));
}

#[sqlx::test(migrations = "../migrations")]
async fn a_tampered_ciphertext_does_not_decrypt(pool: PgPool) {
    let db = app_db(&pool).await;
    let master = MasterKeys::random("v1");
    let c = clinic(&db, "Alpha").await;
    set_key(
        &db,
        &master,
        c.tenant,
        c.owner(),
        Provider::OpenAi,
        OPENAI_KEY,
        "",
    )
    .await
    .unwrap();
    let mut tx = db.begin_tenant(c.tenant).await.unwrap();
    sqlx::query("UPDATE provider_keys SET ciphertext = set_byte(ciphertext, 0, get_byte(ciphertext, 0) # 1)")
        .execute(&mut *tx)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert!(keys::resolve(&db, &master, c.tenant, Provider::OpenAi)
        .await
        .is_err());
}

#[sqlx::test(migrations = "../migrations")]
async fn rotating_the_master_key_rewraps_and_keys_still_decrypt(pool: PgPool) {
    let db = app_db(&pool).await;
    let v1 = MasterKeys::random("v1");
    let a = clinic(&db, "Alpha").await;
    let b = clinic(&db, "Beta").await;
    set_key(
        &db,
        &v1,
        a.tenant,
        a.owner(),
        Provider::OpenAi,
        OPENAI_KEY,
        "",
    )
    .await
    .unwrap();
    set_key(
        &db,
        &v1,
        b.tenant,
        b.owner(),
        Provider::Anthropic,
        "sk-ant-bbbbbbbbbbbb",
        "",
    )
    .await
    .unwrap();

    let v2 = MasterKeys::random("v2");
    let both = v1.rotated_to(&v2);
    assert_eq!(keys::rotate_master_key(&pool, &both).await.unwrap(), 2);
    assert_eq!(
        keys::rotate_master_key(&pool, &both).await.unwrap(),
        0,
        "a second run has nothing to do"
    );

    // After rotation v1 can be retired: v2 alone decrypts everything.
    let a_key = keys::resolve(&db, &v2, a.tenant, Provider::OpenAi)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(a_key.secret.unwrap().expose_secret(), OPENAI_KEY);
    let b_key = keys::resolve(&db, &v2, b.tenant, Provider::Anthropic)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(b_key.secret.unwrap().expose_secret(), "sk-ant-bbbbbbbbbbbb");
    assert!(keys::resolve(&db, &v1, a.tenant, Provider::OpenAi)
        .await
        .is_err());
}

#[sqlx::test(migrations = "../migrations")]
async fn replacing_and_deleting_keys(pool: PgPool) {
    let db = app_db(&pool).await;
    let master = MasterKeys::random("v1");
    let c = clinic(&db, "Alpha").await;
    set_key(
        &db,
        &master,
        c.tenant,
        c.owner(),
        Provider::OpenAi,
        OPENAI_KEY,
        "",
    )
    .await
    .unwrap();
    set_key(
        &db,
        &master,
        c.tenant,
        c.owner(),
        Provider::OpenAi,
        "sk-test-replacement-9999",
        "",
    )
    .await
    .unwrap();
    let resolved = keys::resolve(&db, &master, c.tenant, Provider::OpenAi)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        resolved.secret.unwrap().expose_secret(),
        "sk-test-replacement-9999"
    );

    let ollama = set_key(
        &db,
        &master,
        c.tenant,
        c.owner(),
        Provider::OpenAiCompatible,
        "",
        "http://localhost:11434/v1/",
    )
    .await
    .unwrap();
    assert_eq!(
        ollama.base_url.as_deref(),
        Some("http://localhost:11434/v1")
    );
    assert_eq!(ollama.last_four, None);
    assert_eq!(keys::list(&db, c.tenant, c.owner()).await.unwrap().len(), 2);

    keys::delete(&db, &CHANGES, c.tenant, c.owner(), Provider::OpenAi)
        .await
        .unwrap();
    assert!(keys::resolve(&db, &master, c.tenant, Provider::OpenAi)
        .await
        .unwrap()
        .is_none());
    assert!(matches!(
        keys::delete(&db, &CHANGES, c.tenant, c.owner(), Provider::OpenAi)
            .await
            .unwrap_err(),
        Error::NotFound
    ));
}

#[sqlx::test(migrations = "../migrations")]
async fn bad_keys_and_staff_are_refused(pool: PgPool) {
    let db = app_db(&pool).await;
    let master = MasterKeys::random("v1");
    let c = clinic(&db, "Alpha").await;
    let staff = member(&db, &c, "staff@example.com", Role::Staff).await;
    let staff = Actor {
        user: staff,
        role: Role::Staff,
    };

    let set = |provider, secret: &'static str, url: &'static str| {
        set_key(&db, &master, c.tenant, c.owner(), provider, secret, url)
    };
    assert!(matches!(
        set(Provider::OpenAi, "", "").await.unwrap_err(),
        Error::Invalid(_)
    ));
    assert!(matches!(
        set(Provider::OpenAi, "sk-a b c d e f", "")
            .await
            .unwrap_err(),
        Error::Invalid(_)
    ));
    assert!(matches!(
        set(Provider::OpenAiCompatible, "", "localhost:11434")
            .await
            .unwrap_err(),
        Error::Invalid(_)
    ));
    let err = set_key(
        &db,
        &master,
        c.tenant,
        staff,
        Provider::OpenAi,
        OPENAI_KEY,
        "",
    )
    .await
    .unwrap_err();
    assert!(matches!(err, Error::Forbidden(_) | Error::PlanLimit(_)));
    assert!(matches!(
        keys::list(&db, c.tenant, staff).await.unwrap_err(),
        Error::Forbidden(_) | Error::PlanLimit(_)
    ));
    assert!("mistral".parse::<Provider>().is_err());
}

//! API keys: shown once, stored as a hash, revocable, scoped to their clinic.

mod common;

use common::{app_db, clinic, member, CHANGES};
use sqlx::PgPool;
use tessera_core::api_keys;
use tessera_core::auth::members::Actor;
use tessera_core::Error;
use tessera_core::Role;

#[sqlx::test(migrations = "../migrations")]
async fn a_key_authenticates_until_revoked(pool: PgPool) {
    let db = app_db(&pool).await;
    let c = clinic(&db, "Alpha").await;
    let (info, token) = api_keys::create(&db, c.tenant, c.owner(), "  Front   desk ")
        .await
        .unwrap();
    assert!(token.starts_with("tsk_") && token.len() == 47, "{token}");
    assert_eq!(info.name, "Front desk");
    assert!(token.starts_with(&info.prefix));

    let caller = api_keys::authenticate(&db, &token).await.unwrap().unwrap();
    assert_eq!((caller.key_id, caller.tenant), (info.id, c.tenant));
    let listed = api_keys::list(&db, c.tenant, c.owner()).await.unwrap();
    assert!(listed[0].last_used_at.is_some());
    assert!(!format!("{listed:?}").contains(&token));

    // Only the hash is stored.
    let mut tx = db.begin_tenant(c.tenant).await.unwrap();
    let stored: Vec<u8> = sqlx::query_scalar("SELECT key_hash FROM api_keys")
        .fetch_one(&mut *tx)
        .await
        .unwrap();
    tx.rollback().await.unwrap();
    assert_eq!(stored.len(), 32);

    api_keys::revoke(&db, &CHANGES, c.tenant, c.owner(), info.id)
        .await
        .unwrap();
    assert_eq!(api_keys::authenticate(&db, &token).await.unwrap(), None);
    assert!(api_keys::list(&db, c.tenant, c.owner()).await.unwrap()[0]
        .revoked_at
        .is_some());
}

#[sqlx::test(migrations = "../migrations")]
async fn unknown_or_malformed_keys_are_refused(pool: PgPool) {
    let db = app_db(&pool).await;
    for token in [
        "",
        "sk-not-ours",
        "tsk_doesnotexist",
        &format!("tsk_{}", "x".repeat(500)),
    ] {
        assert_eq!(
            api_keys::authenticate(&db, token).await.unwrap(),
            None,
            "{token:?}"
        );
    }
}

#[sqlx::test(migrations = "../migrations")]
async fn keys_belong_to_their_clinic(pool: PgPool) {
    let db = app_db(&pool).await;
    let a = clinic(&db, "Alpha").await;
    let b = clinic(&db, "Beta").await;
    let (info, token) = api_keys::create(&db, a.tenant, a.owner(), "A's key")
        .await
        .unwrap();
    assert!(matches!(
        api_keys::revoke(&db, &CHANGES, b.tenant, b.owner(), info.id)
            .await
            .unwrap_err(),
        Error::NotFound
    ));
    assert!(api_keys::list(&db, b.tenant, b.owner())
        .await
        .unwrap()
        .is_empty());
    assert_eq!(
        api_keys::authenticate(&db, &token)
            .await
            .unwrap()
            .unwrap()
            .tenant,
        a.tenant
    );

    let staff = member(&db, &a, "staff@example.com", Role::Staff).await;
    let staff = Actor {
        user: staff,
        role: Role::Staff,
    };
    assert!(matches!(
        api_keys::create(&db, a.tenant, staff, "mine")
            .await
            .unwrap_err(),
        Error::Forbidden(_) | Error::PlanLimit(_)
    ));
    assert!(matches!(
        api_keys::create(&db, a.tenant, a.owner(), "   ")
            .await
            .unwrap_err(),
        Error::Invalid(_)
    ));
}

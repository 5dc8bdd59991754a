//! Helpers shared by the core's integration tests; clinics come from `testkit::fixtures`.
#![allow(dead_code, unused_imports)]

use std::sync::LazyLock;

use sqlx::PgPool;
use tessera_core::crypto::MasterKeys;
use tessera_core::{Changes, Db, Redis, Role, UserId};
pub use testkit::fixtures::{self, TestClinic as Clinic, PASSWORD};

/// Announcements stay in the test process (no replicas to tell).
pub static CHANGES: LazyLock<Changes> = LazyLock::new(Changes::local);
pub static MASTER: LazyLock<MasterKeys> = LazyLock::new(MasterKeys::development);

/// A pool on the test database as `tessera_app`, the role the server uses.
pub async fn app_db(owner_pool: &PgPool) -> Db {
    Db::connect_with(testkit::app_role_options(owner_pool), 5)
        .await
        .expect("connect as tessera_app")
}

/// Redis with a key prefix of its own, so tests never see each other's keys.
pub async fn redis() -> Redis {
    redis_with_prefix(&format!("test:{}:", uuid::Uuid::new_v4())).await
}

/// A connection of another process to the same Redis and key prefix as `r`.
pub async fn redis_like(r: &Redis) -> Redis {
    redis_with_prefix(r.prefix()).await
}

/// A connection to the tests' Redis (`REDIS_URL`, or the local one) under `prefix`.
async fn redis_with_prefix(prefix: &str) -> Redis {
    let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    Redis::connect(&url, prefix)
        .await
        .expect("connect to Redis")
}

/// What fixtures need, over `db`.
pub fn env(db: &Db) -> fixtures::Env<'_> {
    fixtures::Env {
        db,
        changes: &CHANGES,
        master: &MASTER,
        admin: None,
    }
}

/// Signs up a clinic whose owner's email is made from `name`.
pub async fn clinic(db: &Db, name: &str) -> Clinic {
    fixtures::clinic(name).create(&env(db)).await
}

/// Invites `email` with `role` into `clinic` and accepts, returning the new member's id.
pub async fn member(db: &Db, clinic: &Clinic, email: &str, role: Role) -> UserId {
    fixtures::member(db, clinic, email, role)
        .await
        .expect("invite and accept")
}

/// The services a server runs (gateway, metering, workers unstarted) over the test database
/// and a Redis prefix of their own, with provider calls going to a simulator of their own.
/// Ingestion workers are not started: tests run them.
pub async fn services(
    owner_pool: &PgPool,
    extra: &[(&str, &str)],
) -> (tessera_core::Services, std::net::SocketAddr) {
    let sim = testkit::spawn("127.0.0.1:0".parse().unwrap())
        .await
        .expect("start the simulator");
    let mut vars = std::collections::HashMap::new();
    vars.insert("OPENAI_BASE_URL".to_string(), format!("http://{sim}/v1"));
    vars.insert(
        "ANTHROPIC_BASE_URL".to_string(),
        format!("http://{sim}/anthropic"),
    );
    vars.insert(
        "TESSERA_REDIS_PREFIX".to_string(),
        format!("test:{}:", uuid::Uuid::new_v4()),
    );
    vars.insert("TESSERA_ALLOW_PRIVATE_ENDPOINTS".to_string(), "true".into());
    vars.insert("TESSERA_INGEST_WORKERS".to_string(), "0".into());
    if let Ok(url) = std::env::var("REDIS_URL") {
        vars.insert("REDIS_URL".to_string(), url);
    }
    for (k, v) in extra {
        vars.insert(k.to_string(), v.to_string());
    }
    let config = tessera_core::Config::from_vars(&vars).expect("test configuration");
    let redis = Redis::connect(&config.redis_url, &config.redis_prefix)
        .await
        .expect("connect to Redis");
    let db = app_db(owner_pool).await;
    (tessera_core::Services::new(config, db, redis), sim)
}
